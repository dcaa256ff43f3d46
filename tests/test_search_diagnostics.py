"""Search diagnostics: entropy, distance from uniform, genotype stability and parameter-free ops,
against values known in closed form and against a recomputation from what a search logged."""
import json
import math

import pytest

import genotypes
import search_diagnostics as sd
from tests import data_factory
from tests.helpers import run

# Each value is a sum of at most 8 terms of size <= 1: a few ulps of 1 at most.
TOL = 1e-12


@pytest.mark.parametrize('k', [2, 6, 8, 11])
def test_uniform_and_one_hot_rows(k):
    uniform, one_hot = [1 / k] * k, [1.0] + [0.0] * (k - 1)
    assert sd.entropy(uniform) == pytest.approx(math.log(k), abs=TOL)
    assert sd.uniform_distance(uniform) == pytest.approx(0, abs=TOL)
    assert sd.entropy(one_hot) == 0
    assert sd.uniform_distance(one_hot) == pytest.approx(1 - 1 / k, abs=TOL)


def test_a_known_table():
    tables = {'alphas_normal': {'candidates': ['a', 'b', 'c'], 'values': [[0.5, 0.25, 0.25], [1 / 3] * 3]},
              'gammas_normal': {'candidates': ['x', 'y'], 'values': [[0.75, 0.25]]}}
    stats = sd.table_statistics(tables)
    alphas = stats['alphas_normal']
    assert alphas['entropy'] == pytest.approx([1.5 * math.log(2), math.log(3)], abs=TOL)
    assert alphas['entropy_mean'] == pytest.approx((1.5 * math.log(2) + math.log(3)) / 2, abs=TOL)
    assert alphas['max_entropy'] == math.log(3)
    # 1/2 (|1/2 - 1/3| + 2 |1/4 - 1/3|) = 1/6
    assert alphas['uniform_distance'] == pytest.approx([1 / 6, 0], abs=TOL)
    gammas = stats['gammas_normal']
    assert gammas['entropy'] == pytest.approx([-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))], abs=TOL)
    assert gammas['uniform_distance_mean'] == pytest.approx(0.25, abs=TOL)


def test_genotype_stability_and_parameter_free_ops():
    base = genotypes.to_dict(genotypes.Att_DARTS)
    assert sd.genotype_stability(None, base) is None
    assert sd.genotype_stability(base, base) == 1
    swapped = json.loads(json.dumps(base))
    swapped['normal'][0], swapped['normal'][1] = swapped['normal'][1], swapped['normal'][0]
    assert sd.genotype_stability(base, swapped) == 1  # the same node, listed in another order
    changed = json.loads(json.dumps(base))
    changed['reduce'][5] = ['sep_conv_5x5', 0, 'BAM']
    assert sd.genotype_stability(base, changed) == 15 / 16
    moved = json.loads(json.dumps(base))
    moved['normal'][2], moved['normal'][4] = moved['normal'][4], moved['normal'][2]  # to another node
    assert sd.genotype_stability(base, moved) == 14 / 16
    with_bottleneck = dict(base, normal_bottleneck='SE')
    assert sd.genotype_stability(base, with_bottleneck) == 16 / 17
    anas = genotypes.to_dict(genotypes.ANAS)
    assert sd.genotype_stability(anas, anas) == 1 and sd.parameter_free_ops(anas) is None
    # DARTS_V2's normal cell: two skip_connect edges; Att_DARTS's: four.
    assert sd.parameter_free_ops(genotypes.to_dict(genotypes.DARTS_V2)) == 2
    assert sd.parameter_free_ops(base) == 4


def test_a_search_logs_diagnostics_that_recompute_from_its_tables(tmp_path):
    data = data_factory.make_fashion_mnist(str(tmp_path / 'data'), n_train=64, n_test=32)
    save = tmp_path / 'search'
    run('train_search.py', '--dataset', 'fashion-mnist', '--data', data, '--init_channels', '4', '--layers', '3',
        '--batch_size', '8', '--workers', '0', '--no_progress', '--num_meta_node', '2', '--report_freq', '0',
        '--epochs', '2', '--arch_learning_rate', '0.3', '--save', save)
    metrics = [json.loads(line) for line in open(save / 'metrics.jsonl')]
    alphas = [json.loads(line) for line in open(save / 'alphas.jsonl')]
    for record, logged in zip(metrics, alphas):
        for table, content in logged['weights'].items():
            entropies = [-sum(p * math.log(p) for p in row) for row in content['values']]
            assert record['entropy'][table] == pytest.approx(entropies, abs=TOL)
            assert record['entropy_mean'][table] == pytest.approx(sum(entropies) / len(entropies), abs=TOL)
            k = len(content['candidates'])
            assert record['uniform_distance'][table] == \
                pytest.approx([sum(abs(p - 1 / k) for p in row) / 2 for row in content['values']], abs=TOL)
        normal = record['genotype']['normal']
        assert record['param_free_normal'] == sum(e[0] in ('max_pool_3x3', 'avg_pool_3x3', 'skip_connect')
                                                  for e in normal)
    assert 'genotype_stability' not in metrics[0]
    first, second = metrics[0]['genotype'], metrics[1]['genotype']
    kept = sum(sorted(map(tuple, second[cell][2 * n:2 * n + 2]))[i] in sorted(map(tuple, first[cell][2 * n:2 * n + 2]))
               for cell in ('normal', 'reduce') for n in range(2) for i in range(2))
    assert metrics[1]['genotype_stability'] == kept / 8

    run('visualize.py', save)
    report = (save / 'report' / 'report.html').read_text()
    assert 'Search diagnostics' in report and 'src="diagnostics.png"' in report
    assert (save / 'report' / 'diagnostics.png').stat().st_size > 0
