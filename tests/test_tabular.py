"""Benchmark tables (benchmark_table.py) and multi-trial search on them (tabular.py,
tabular_search.py), on tables of all 15,625 cells made here (tests/benchmark_tables.py)."""
import json
import math
import random
import statistics
import sys

import pytest

import benchmark_table
import nb201
import tabular
from benchmark_tables import (BEST_CELL, BEST_QUALITY, SEEDS, nats_info, quality, standard_metrics, write_csv,
                              write_nats_stand_in)
from helpers import kill_when, run
from userio import UserError

CELLS = nb201.all_genotypes()
EXAMPLE = '|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|'


@pytest.fixture(scope='module')
def table_path(tmp_path_factory):
    return write_csv(tmp_path_factory.mktemp('table') / 'table.csv')


@pytest.fixture(scope='module')
def table(table_path):
    return benchmark_table.load(table_path)


def test_csv_table_found_by_content(table, table_path):
    # The cells are under the header 'model', after a non-numeric column: found by their content.
    assert table.kind == 'csv' and table.source == table_path
    assert table.metrics == ('quality', 'accuracy', 'seconds') and table.default_metric == 'quality'
    assert table.architectures() == [nb201.to_string(g) for g in CELLS]
    for index in (0, 1234, 15624):
        genotype = CELLS[index]
        assert table.value(genotype) == quality(genotype)
        assert table.value(nb201.to_string(genotype), 'accuracy') == standard_metrics(genotype, index)['accuracy']
    assert table.value(EXAMPLE, 'seconds') == 10 + 5 * 3
    assert table.best() == (BEST_CELL, BEST_QUALITY)
    with pytest.raises(UserError, match='has attention'):
        table.value(nb201.parse(EXAMPLE)._replace(attentions=('SE', '', '', '', '', '')))


@pytest.mark.parametrize('case, says', [
    ('missing', 'does not exist'),
    ('binary', 'cannot be read as a CSV table'),
    ('no_arch', 'has no architecture column'),
    ('no_header', 'has no header row'),
    ('missing_cells', 'covers 15,622 of the 15,625 NAS-Bench-201 cells; 3 missing, e.g. |none~0|+'),
    ('duplicate', 'is already in row 2'),
    ('bad_cell', "unknown op 'conv_9x9'"),
    ('metric', "--benchmark_metric top1: the benchmark"),
    ('pth', 'read by nas_201_api'),
])
def test_bad_tables_are_one_line(tmp_path, table_path, case, says):
    path, metric = tmp_path / 'table.csv', None
    if case == 'binary':
        path.write_bytes(b'\xff\xfe\x00\x81' * 100)
    elif case == 'no_arch':
        path.write_text('a,b\n1,2\n3,4\n')
    elif case == 'no_header':
        path.write_text(f'{EXAMPLE},1\n{EXAMPLE},2\n')
    elif case == 'missing_cells':
        write_csv(path, drop=(0, 7, 99))
    elif case == 'duplicate':
        write_csv(path, extra_rows=[('again', nb201.to_string(CELLS[0]), 0, 0, 0)])
    elif case == 'bad_cell':
        write_csv(path, extra_rows=[('bad', EXAMPLE.replace('avg_pool_3x3', 'conv_9x9'), 0, 0, 0)])
    elif case == 'metric':
        path, metric = table_path, 'top1'
    elif case == 'pth':
        path = tmp_path / 'NAS-Bench-201-v1_1-096897.pth'
        path.write_bytes(b'')
    with pytest.raises(UserError) as error:
        benchmark_table.load(str(path), metric)
    assert says in str(error.value) and '\n' not in str(error.value), str(error.value)
    if case in ('missing', 'no_arch', 'missing_cells'):
        assert str(path) in str(error.value)


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    package, benchmark = write_nats_stand_in(str(tmp_path))
    monkeypatch.delitem(sys.modules, 'nats_bench', raising=False)
    monkeypatch.syspath_prepend(package)
    yield benchmark
    sys.modules.pop('nats_bench', None)


def test_official_file_through_nats_bench(stand_in):
    table = benchmark_table.load(stand_in)
    import nats_bench
    assert nats_bench.CALLS == [(stand_in, 'tss', True, False)]  # a directory: fast mode
    assert table.kind == 'nats' and table.default_metric == 'cifar10/valid_acc_12'
    assert table.report_metric_for('cifar10/valid_acc_12') == 'cifar10/test_acc_200'
    assert table.report_metric_for('ImageNet16-120/valid_acc_12') == 'ImageNet16-120/test_acc_200'
    assert sorted(table.architectures()) == sorted(nb201.to_string(g) for g in CELLS)
    genotype = nb201.parse(EXAMPLE)

    def mean(dataset, hp, key):
        return statistics.fmean(nats_info(genotype, dataset, hp, seed)[key] for seed in SEEDS[hp])
    # The reward: cifar10's 12-epoch results are those trained on half its training set.
    assert table.value(EXAMPLE) == pytest.approx(mean('cifar10-valid', '12', 'valid-accuracy'), abs=1e-12)
    assert table.value(genotype, 'cifar10/test_acc_200') == pytest.approx(mean('cifar10', '200', 'test-accuracy'),
                                                                          abs=1e-12)
    assert table.value(EXAMPLE, 'cifar100/valid_acc_12') == pytest.approx(mean('cifar100', '12', 'valid-accuracy'),
                                                                          abs=1e-12)
    time = mean('cifar10-valid', '12', 'train-all-time') + mean('cifar10-valid', '12', 'valid-per-time')
    assert table.value(EXAMPLE, 'cifar10/time_12') == pytest.approx(time, abs=1e-12)
    # One trial: the reward and its cost come from the same seed, drawn by the caller's generator.
    for draw in range(5):
        seed = random.Random(draw).choice(sorted(SEEDS['12']))
        info = nats_info(genotype, 'cifar10-valid', '12', seed)
        assert table.trial(EXAMPLE, ['cifar10/valid_acc_12', 'cifar10/time_12'], random.Random(draw)) == \
            (info['valid-accuracy'], info['train-all-time'] + info['valid-per-time'])
    with pytest.raises(UserError, match='--report_metric cifar10/top1: .* its metrics: cifar10/valid_acc_12'):
        table.check_metric('cifar10/top1', '--report_metric')


def test_official_file_without_nats_bench_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'nats_bench', None)  # import fails
    (tmp_path / 'NATS-tss-v1_0-3ffb9-simple').mkdir()
    with pytest.raises(UserError, match='install it \\(pip install nats_bench\\)'):
        benchmark_table.load(str(tmp_path / 'NATS-tss-v1_0-3ffb9-simple'))


@pytest.mark.parametrize('strategy', tabular.STRATEGIES)
def test_returned_cell_is_the_arg_max_of_the_look_ups(table, strategy):
    budget = 60
    record, history = tabular.run_search(table, strategy, 3, budget, 'quality', 'accuracy')
    assert len(history) == record['lookups'] == budget and record['budget_used'] == budget
    rewards = [reward for _, reward, _ in history]
    assert all(reward == table.value(CELLS[index]) for index, reward, _ in history)
    first_best = CELLS[history[rewards.index(max(rewards))][0]]
    assert record['returned'] == {'nb201': nb201.to_string(first_best)}
    assert record['returned_reward'] == max(rewards)
    assert record['returned_report'] == table.value(first_best, 'accuracy')
    improvements, best = [], None
    for _, reward, used in history:
        if best is None or reward > best:
            best = reward
            improvements.append([used, reward])
    assert [step[:2] for step in record['trajectory']] == improvements


@pytest.mark.parametrize('strategy', tabular.STRATEGIES)
def test_time_budget_stops_before_a_look_up_that_does_not_fit(table, strategy):
    budget = 400.5
    record, history = tabular.run_search(table, strategy, 1, budget, 'quality', 'quality', 'seconds')
    costs = [table.value(CELLS[index], 'seconds') for index, _, _ in history]
    assert [used for _, _, used in history] == [sum(costs[:k + 1]) for k in range(len(costs))]
    # Every cost is 10..40 s: a run stops with less than the dearest look-up left.
    assert budget - 40 < record['budget_used'] <= budget


def test_same_seed_same_run(table):
    for strategy in tabular.STRATEGIES:
        first = tabular.run_search(table, strategy, 7, 40, 'quality', 'accuracy')
        assert tabular.run_search(table, strategy, 7, 40, 'quality', 'accuracy') == first
        assert tabular.run_search(table, strategy, 8, 40, 'quality', 'accuracy')[1] != first[1]


def test_evolution_and_reinforce_beat_random_search(table):
    """On a table whose quality rises with every better op, the returned cells of evolution and
    REINFORCE are better than random search's: a Welch t statistic above 4 over 20 runs each."""
    def returned(strategy, options=None):
        return [tabular.run_search(table, strategy, seed, 100, 'quality', 'quality', None, options)[0]
                ['returned_reward'] for seed in range(20)]

    def welch(a, b):
        return (statistics.fmean(a) - statistics.fmean(b)) / math.sqrt(
            statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
    random_search = returned('random')
    assert welch(returned('evolution'), random_search) > 4
    # The reference's learning rate, 0.5, is tuned to its accuracies; on this table 0.1 learns.
    assert welch(returned('reinforce', {'learning_rate': 0.1}), random_search) > 4


def run_script(*args, check=True):
    return run('tabular_search.py', *args, '--no_progress', check=check)


def test_script_writes_table_report_and_resumes_a_killed_run(table_path, tmp_path):
    common = ['--benchmark', table_path, '--benchmark_metric', 'quality', '--report_metric', 'accuracy',
              '--runs', '6', '--budget', '30', '--strategy', 'random', 'evolution', 'reinforce', 'tpe']
    whole = tmp_path / 'whole'
    result = run_script(*common, '--jobs', '1', '--save', whole)
    assert '| evolution | 6 |' in result.stdout
    for name in ('results.md', 'results.json', 'best_so_far.png', 'report.html', 'log.txt', 'settings.json'):
        assert (whole / name).is_file(), name
    results = json.loads((whole / 'results.json').read_text())
    assert [row['strategy'] for row in results['strategies']] == ['random', 'evolution', 'reinforce', 'tpe']
    assert results['best_cell']['by_report'] == {'nb201': BEST_CELL, 'accuracy': 50 + 2 * BEST_QUALITY - 0.001 * (
        nb201.all_genotypes().index(nb201.parse(BEST_CELL)) % 7)}
    records = {(s, r): json.loads((whole / 'runs' / s / f'run-{r:04d}.json').read_text())
               for s in tabular.STRATEGIES for r in range(6)}
    evolution = [records['evolution', r]['returned_report'] for r in range(6)]
    assert results['strategies'][1]['report_mean'] == pytest.approx(statistics.fmean(evolution), abs=1e-12)
    assert 'best_so_far.png' in (whole / 'report.html').read_text()
    assert 'best cell of the table' in (whole / 'results.md').read_text()
    # Its returned cells are genotypes: per strategy the one most runs returned.
    returned = tabular.returned_cells(str(whole))
    assert [strategy for strategy, _, _ in returned] == list(tabular.STRATEGIES)
    for strategy, source, genotype in returned:
        cells = [records[strategy, r]['returned']['nb201'] for r in range(6)]
        assert max(cells.count(c) for c in cells) == cells.count(nb201.to_string(genotype))
        assert source.endswith(f'returned by {cells.count(nb201.to_string(genotype))} of 6 runs')
    assert tabular.write_report(str(whole), str(tmp_path / 'again')) == str(tmp_path / 'again' / 'report.html')
    assert (tmp_path / 'again' / 'best_so_far.png').is_file()

    # Killed after some runs are written, then resumed with two processes: the same runs, and the
    # runs finished before the kill are not redone.
    killed = tmp_path / 'killed'
    kill_when('tabular_search.py', [*common, '--jobs', '2', '--no_progress'], killed,
              lambda: len(list(killed.glob('runs/*/run-*.json'))) >= 3)
    before = {p: p.stat().st_mtime_ns for p in killed.glob('runs/*/run-*.json')}
    assert 3 <= len(before) < 24
    run_script(*common, '--jobs', '2', '--save', killed, '--resume')
    assert all(p.stat().st_mtime_ns == mtime for p, mtime in before.items())
    for (strategy, r), record in records.items():
        assert json.loads((killed / 'runs' / strategy / f'run-{r:04d}.json').read_text()) == record
    assert (killed / 'results.md').read_text().split('Command:')[0] == (whole / 'results.md').read_text().split(
        'Command:')[0]


@pytest.mark.parametrize('flags, says', [
    (['--strategy', 'annealing'], "unknown strategy 'annealing'"),
    (['--budget', '0'], '--budget: 0 is out of range'),
    (['--benchmark_metric', 'top1'], '--benchmark_metric top1: the benchmark'),
    (['--report_metric', 'top1'], '--report_metric top1: the benchmark'),
    (['--time_column', 'hours'], '--time_column hours: the benchmark'),
    (['--runs', '0'], '--runs: 0 is out of range'),
])
def test_script_bad_input_is_one_line(table_path, tmp_path, flags, says):
    save = tmp_path / 'run'
    result = run_script('--benchmark', table_path, '--budget', '10', '--save', save, *flags, check=False)
    assert result.returncode == 2 and result.stderr.count('\n') == 1 and says in result.stderr, result.stderr
    assert not save.exists()


def test_script_table_missing_cells_is_one_line(tmp_path):
    path = write_csv(tmp_path / 'partial.csv', drop=range(5))
    result = run_script('--benchmark', path, '--budget', '10', '--save', tmp_path / 'run', check=False)
    assert result.returncode == 2 and '5 missing' in result.stderr and result.stderr.count('\n') == 1


def test_resume_with_other_settings_is_refused_and_runs_can_be_added(table_path, tmp_path):
    save = tmp_path / 'run'
    common = ['--benchmark', table_path, '--strategy', 'random', '--jobs', '1', '--save', save]
    run_script(*common, '--runs', '1', '--budget', '5')
    settings = (save / 'settings.json').read_text()
    result = run_script(*common, '--runs', '1', '--budget', '6', '--resume', check=False)
    assert result.returncode == 2 and 'differs in: budget' in result.stderr and result.stderr.count('\n') == 1
    assert (save / 'settings.json').read_text() == settings
    first = (save / 'runs' / 'random' / 'run-0000.json').read_text()
    run_script(*common, '--runs', '2', '--budget', '5', '--resume')
    assert (save / 'runs' / 'random' / 'run-0000.json').read_text() == first
    assert json.loads((save / 'results.json').read_text())['strategies'][0]['runs'] == 2
