"""A benchmark table as ground truth (--benchmark): each epoch's derived cell looked up by
train_search.py, drawn by the report, a column of compare.py, which also trains the cells a tabular
search returned."""
import json

import pytest

import benchmark_table
import genotypes
import nb201
import tabular
from benchmark_tables import write_csv
from data_factory import make_fashion_mnist
from helpers import run

TINY_NB201 = ['--space', 'nb201', '--dataset', 'fashion-mnist', '--init_channels', '4', '--layers', '1',
              '--batch_size', '8', '--workers', '0', '--no_progress', '--report_freq', '0']


@pytest.fixture(scope='module')
def fashion(tmp_path_factory):
    return make_fashion_mnist(str(tmp_path_factory.mktemp('fmnist')), n_train=48, n_test=16)


@pytest.fixture(scope='module')
def table_path(tmp_path_factory):
    return write_csv(tmp_path_factory.mktemp('table') / 'table.csv')


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_nb201_search_logs_the_benchmark_value_of_every_epochs_cell(tmp_path, fashion, table_path):
    save = tmp_path / 'search'
    run('train_search.py', *TINY_NB201, '--data', fashion, '--epochs', '3', '--benchmark', table_path,
        '--benchmark_metric', 'accuracy', '--save', save)
    table = benchmark_table.load(table_path)
    metrics = read_jsonl(save / 'metrics.jsonl')
    assert len(metrics) == 3
    for record in metrics:
        cell = genotypes.from_dict(record['genotype'])
        assert isinstance(cell, nb201.NB201Genotype)
        assert record['benchmark'] == table.value(cell, 'accuracy')
    assert json.loads((save / 'args.json').read_text())['benchmark_metric'] == 'accuracy'
    assert (save / 'log.txt').read_text().count('benchmark: accuracy of the derived cell = ') == 3

    run('visualize.py', save)
    page = (save / 'report' / 'report.html').read_text()
    assert (save / 'report' / 'benchmark.png').is_file()
    assert '<h2>Benchmark</h2>' in page and 'benchmark.png' in page
    # Another metric of the same table, looked up from the logged cells.
    run('visualize.py', save, '--benchmark', table_path, '--benchmark_metric', 'seconds', '--out', tmp_path / 'seconds')
    seconds = (tmp_path / 'seconds' / 'report.html').read_text()
    for record in metrics:
        value = table.value(genotypes.from_dict(record['genotype']), 'seconds')
        assert f'<td class="num">{record["epoch"]}</td><td class="num">{value:.6g}</td>' in seconds


def test_a_cell_without_an_entry_logs_why(tmp_path, fashion, table_path):
    save = tmp_path / 'attention'
    run('train_search.py', *TINY_NB201, '--data', fashion, '--epochs', '1', '--location', 'after_every',
        '--benchmark', table_path, '--save', save)
    record = read_jsonl(save / 'metrics.jsonl')[0]
    assert nb201.has_attention(genotypes.from_dict(record['genotype']))
    assert record['benchmark'] is None
    assert 'benchmark: no quality for this epoch: the derived cell has attention' in (save / 'log.txt').read_text()
    cell, why = benchmark_table.derived_value(benchmark_table.load(table_path), 'quality',
                                              genotypes.load('DARTS_V2'))
    assert cell is None and 'DARTS-space cell' in why


@pytest.mark.parametrize('flags, says', [
    (['--benchmark', 'no-such-table.csv'], '--benchmark no-such-table.csv does not exist'),
    (['--benchmark', 'TABLE', '--benchmark_metric', 'top1'], '--benchmark_metric top1: the benchmark'),
    (['--benchmark_metric', 'quality'], '--benchmark_metric names a metric of a --benchmark FILE'),
    (['--benchmark', 'TABLE', '--strategy', 'rsws'], 'RS-WS derives one at its end'),
])
def test_bad_benchmark_flags_are_one_line_before_training(tmp_path, fashion, table_path, flags, says):
    save = tmp_path / 'search'
    flags = [table_path if flag == 'TABLE' else flag for flag in flags]
    result = run('train_search.py', *TINY_NB201, '--data', fashion, *flags, '--save', save, check=False)
    assert result.returncode == 2 and result.stderr.count('\n') == 1 and says in result.stderr, result.stderr
    assert not save.exists()


def test_compare_trains_a_tabular_searchs_cells_with_a_benchmark_column(tmp_path, fashion, table_path):
    tabular_dir = tmp_path / 'tabular'
    run('tabular_search.py', '--benchmark', table_path, '--strategy', 'random', 'evolution', '--runs', '3',
        '--budget', '20', '--jobs', '1', '--no_progress', '--save', tabular_dir)
    save = tmp_path / 'cmp'
    run('compare.py', tabular_dir, '--space', 'nb201', '--dataset', 'fashion-mnist', '--data', fashion,
        '--epochs', '1', '--init_channels', '4', '--layers', '1', '--batch_size', '16', '--seeds', '1',
        '--workers', '0', '--latency_repeats', '1', '--benchmark', table_path, '--benchmark_metric', 'accuracy',
        '--save', save)
    results = json.loads((save / 'results.json').read_text())
    table = benchmark_table.load(table_path)
    assert results['benchmark'] == {'file': table_path, 'metric': 'accuracy'}
    assert [row['label'] for row in results['architectures']] == ['tabular-random', 'tabular-evolution']
    for row, (strategy, _, cell) in zip(results['architectures'], tabular.returned_cells(str(tabular_dir))):
        assert row['genotype'] == nb201.to_dict(cell) and row['runs']
        assert row['benchmark'] == table.value(cell, 'accuracy')
    assert '| benchmark accuracy |' in (save / 'results.md').read_text()
    assert 'benchmark accuracy' in (save / 'report.html').read_text()
    # visualize.py on a tabular-search directory writes its report.
    run('visualize.py', tabular_dir, '--out', tmp_path / 'tabular-report')
    assert (tmp_path / 'tabular-report' / 'best_so_far.png').is_file()
