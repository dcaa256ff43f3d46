"""rank.py and ranking.py: training-free ranking of architectures, and its rank correlations."""
import itertools
import json
import math

import pytest
from scipy import stats

import architectures
import genotypes
import nb201
import ranking
import search_space
from tests import data_factory
from tests.benchmark_tables import standard_metrics, write_csv
from tests.helpers import run

TINY = ['--dataset', 'fashion-mnist', '--init_channels', '4', '--layers', '3', '--batch_size', '8', '--no_progress']


@pytest.fixture(scope='module')
def fashion(tmp_path_factory):
    return data_factory.make_fashion_mnist(str(tmp_path_factory.mktemp('fmnist')), n_train=32, n_test=8)


def average_ranks(values):
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    for _, group in itertools.groupby(order, key=lambda i: values[i]):
        group = list(group)
        first = order.index(group[0])
        for i in group:
            ranks[i] = first + (len(group) + 1) / 2
    return ranks


def pearson(xs, ys):
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    covariance = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    return covariance / math.sqrt(sum((x - mx) ** 2 for x in xs) * sum((y - my) ** 2 for y in ys))


def kendall_tau_b(xs, ys):
    concordant = discordant = ties_x = ties_y = 0
    for i, j in itertools.combinations(range(len(xs)), 2):
        dx, dy = xs[i] - xs[j], ys[i] - ys[j]
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            ties_x += 1
        elif dy == 0:
            ties_y += 1
        elif dx * dy > 0:
            concordant += 1
        else:
            discordant += 1
    pairs = concordant + discordant
    return (concordant - discordant) / math.sqrt((pairs + ties_x) * (pairs + ties_y))


def test_rank_correlations_of_a_table_with_ties_and_gaps_are_spearman_and_kendall_tau_b():
    scores = [3.0, 1.0, 4.0, 1.0, 5.0, float('nan'), 9.0, 2.0, 6.0]
    truths = [70.0, 60.0, 71.5, 65.0, 71.5, 80.0, None, 50.0, 90.0]
    kept = [(s, t) for s, t in zip(scores, truths) if t is not None and not math.isnan(s)]
    xs, ys = [s for s, _ in kept], [t for _, t in kept]
    result = ranking.rank_correlations(scores, truths)
    assert result['n'] == 7
    assert result['spearman'] == pytest.approx(pearson(average_ranks(xs), average_ranks(ys)), rel=1e-12)
    assert result['kendall'] == pytest.approx(kendall_tau_b(xs, ys), rel=1e-12)
    assert ranking.rank_correlations([1.0, 2.0], [3.0, 4.0]) == {'n': 2, 'spearman': None, 'kendall': None}
    assert ranking.rank_correlations([1.0, 1.0, 1.0], [3.0, 4.0, 5.0])['spearman'] is None


def test_random_architectures_of_every_space_are_distinct_and_seeded():
    for space in architectures.SPACES:
        args = type('Args', (), dict(space=space, random_seed=4, location='after_every', primitives='darts',
                                     num_meta_node=4))()
        drawn = architectures.sample(6, args)
        assert len({json.dumps(genotypes.to_dict(g), sort_keys=True) for g in drawn}) == 6
        assert drawn == architectures.sample(6, args)
    units = architectures.sample_attention_units(50, 0)
    for unit in units:  # what the ANAS derivation can return: two distinct inputs per node, no 'none'
        genotypes.validate(unit)
        assert all(op != 'none' for op, _ in unit.att)
        assert all(unit.att[2 * n][1] < unit.att[2 * n + 1][1] for n in range(3))


def make_comparison(directory, accuracies):
    """A finished compare.py directory's results.json, as far as rank.py reads it."""
    directory.mkdir()
    rows = [{'label': label, 'genotype': genotypes.to_dict(genotype), 'top1_mean': accuracy}
            for label, genotype, accuracy in accuracies]
    (directory / 'results.json').write_text(json.dumps({'protocol': {}, 'architectures': rows}))
    return directory


def test_rank_scores_a_comparison_correlates_it_and_resumes(tmp_path, fashion):
    drawn = search_space.sample_genotypes(3, seed=5)
    comparison = make_comparison(tmp_path / 'compare', [('DARTS_V2', genotypes.DARTS_V2, 81.0),
                                                         ('random_0', drawn[0], 74.5), ('random_1', drawn[1], 79.0),
                                                         ('random_2', drawn[2], None)])
    save = tmp_path / 'rank'
    args = ['--benchmark', comparison, '--proxy', 'synflow', 'naswot', 'params', *TINY, '--data', fashion]
    result = run('rank.py', *args, '--save', save)
    scored = json.loads((save / 'scores.json').read_text())
    rows = scored['architectures']
    assert [row['label'] for row in rows] == ['DARTS_V2', 'random_0', 'random_1', 'random_2']
    assert [row['accuracy'] for row in rows] == [81.0, 74.5, 79.0, None]
    for name in ('synflow', 'naswot', 'params'):
        xs = [row['scores'][name] for row in rows[:3]]
        assert scored['correlations'][name]['n'] == 3
        assert scored['correlations'][name]['spearman'] == pytest.approx(
            stats.spearmanr(xs, [81.0, 74.5, 79.0]).statistic, rel=1e-12)
        assert scored['correlations'][name]['kendall'] == pytest.approx(
            stats.kendalltau(xs, [81.0, 74.5, 79.0]).statistic, rel=1e-12)
        assert (save / f'{name}_vs_accuracy.png').stat().st_size > 0
    assert '| proxy | Spearman | Kendall | architectures |' in result.stdout
    assert 'synflow_vs_accuracy.png' in (save / 'report.html').read_text()

    lines = (save / 'scores.jsonl').read_text()
    (save / 'scores.jsonl').write_text(''.join(lines.splitlines(keepends=True)[:2]) + '{"label": "cut')
    resumed = run('rank.py', *args, '--save', save, '--resume')
    assert '2 of 4 architectures already scored' in resumed.stderr + resumed.stdout
    again = json.loads((save / 'scores.json').read_text())
    assert again['architectures'] == rows  # the same seed scores the same architecture the same
    assert [json.loads(line)['label'] for line in (save / 'scores.jsonl').read_text().splitlines()] == \
        ['DARTS_V2', 'random_0', 'random_1', 'random_2']


def test_rank_correlates_nas_bench_201_cells_with_a_benchmark_table(tmp_path, fashion):
    table = write_csv(tmp_path / 'table.csv')
    save = tmp_path / 'rank'
    run('rank.py', 'random:5', '--space', 'nb201', '--random_seed', '3', '--benchmark', table, '--benchmark_metric',
        'accuracy', '--proxy', 'synflow', 'jacob_cov', '--dataset', 'fashion-mnist', '--init_channels', '4',
        '--layers', '1', '--batch_size', '8', '--no_progress', '--data', fashion, '--save', save)
    scored = json.loads((save / 'scores.json').read_text())
    cells = nb201.all_genotypes()
    drawn = nb201.sample_genotypes(5, 3)
    truths = [standard_metrics(g, cells.index(g))['accuracy'] for g in drawn]
    assert [row['accuracy'] for row in scored['architectures']] == truths
    assert scored['benchmark']['metric'] == 'accuracy'
    for name in ('synflow', 'jacob_cov'):
        xs = [row['scores'][name] for row in scored['architectures']]
        assert scored['correlations'][name]['spearman'] == pytest.approx(stats.spearmanr(xs, truths).statistic,
                                                                         rel=1e-12)
        assert scored['correlations'][name]['kendall'] == pytest.approx(stats.kendalltau(xs, truths).statistic,
                                                                        rel=1e-12)


def test_rank_refuses_bad_input_in_one_line_before_writing(tmp_path, fashion):
    write_csv(tmp_path / 'x.csv')
    cases = [(['DARTS_V2', '--proxy', 'nope'], 'unknown proxy nope'),
             ([], 'no architecture given'),
             (['DARTS_V2', '--benchmark', tmp_path / 'missing.csv'], 'does not exist'),
             (['DARTS_V2', '--batch_size', '0'], '--batch_size: 0 is out of range'),
             (['random:2', '--space', 'nb201', '--benchmark', tmp_path / 'x.csv', '--benchmark_metric', 'nope'],
              '--benchmark_metric nope')]
    for args, message in cases:
        save = tmp_path / 'never'
        result = run('rank.py', *args, *TINY[:2], '--data', fashion, '--save', save, check=False)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert not save.exists()
