"""Training-free choices: train_search.py --strategy proxy and compare.py --prescreen."""
import json

import pytest

import genotypes
import search_space
from model import NetworkCIFAR
from tests import data_factory
from tests.helpers import run

TINY = ['--dataset', 'fashion-mnist', '--init_channels', '4', '--layers', '3']


@pytest.fixture(scope='module')
def fashion(tmp_path_factory):
    return data_factory.make_fashion_mnist(str(tmp_path_factory.mktemp('fmnist')), n_train=64, n_test=16)


def parameter_counts(candidates):
    """Parameters of each candidate's Fashion-MNIST network (4 channels, 3 cells), counted on the
    built network."""
    return [sum(p.numel() for p in NetworkCIFAR(4, 10, 3, False, g, in_channels=1, image_size=28).parameters())
            for g in candidates]


def test_strategy_proxy_writes_the_arg_max_of_the_drawn_architectures(tmp_path, fashion):
    save = tmp_path / 'search'
    run('train_search.py', '--strategy', 'proxy', '--proxy', 'params', '--samples', '6', '--batch_size', '8',
        '--seed', '3', '--no_progress', *TINY, '--data', fashion, '--save', save)
    candidates = search_space.sample_genotypes(6, 'proxy-3', 'after_every', 'darts', 4)
    counts = parameter_counts(candidates)
    written = genotypes.to_dict(genotypes.load(str(save / 'genotype.json')))
    assert written == genotypes.to_dict(candidates[counts.index(max(counts))])
    ranked = json.loads((save / 'proxy_ranking.json').read_text())['architectures']
    assert [entry['score'] for entry in ranked] == sorted(map(float, counts), reverse=True)

    naswot = tmp_path / 'naswot'
    run('train_search.py', '--strategy', 'proxy', '--proxy', 'naswot', '--samples', '4', '--batch_size', '8',
        '--no_progress', *TINY, '--data', fashion, '--save', naswot)
    ranked = json.loads((naswot / 'proxy_ranking.json').read_text())['architectures']
    assert ranked[0]['score'] == max(entry['score'] for entry in ranked)
    assert genotypes.to_dict(genotypes.load(str(naswot / 'genotype.json'))) == ranked[0]['genotype']

    # a kill after two scores (the third line cut): --resume scores the rest and chooses the same
    lines = (naswot / 'proxy_scores.jsonl').read_text().splitlines(keepends=True)
    (naswot / 'proxy_scores.jsonl').write_text(''.join(lines[:2]) + lines[2][:10])
    run('train_search.py', '--strategy', 'proxy', '--proxy', 'naswot', '--samples', '4', '--batch_size', '8',
        '--no_progress', *TINY, '--data', fashion, '--save', naswot, '--resume')
    assert json.loads((naswot / 'proxy_ranking.json').read_text())['architectures'] == ranked
    assert [json.loads(line)['sample'] for line in (naswot / 'proxy_scores.jsonl').read_text().splitlines()] == \
        [0, 1, 2, 3]


def test_strategy_proxy_refuses_architecture_weight_options_in_one_line(tmp_path, fashion):
    result = run('train_search.py', '--strategy', 'proxy', '--edge_normalization', *TINY, '--data', fashion,
                 '--save', tmp_path / 'never', check=False)
    assert result.returncode == 2 and '--edge_normalization works with --strategy darts or gdas only' in result.stderr
    result = run('train_search.py', '--strategy', 'proxy', '--samples', '0', *TINY, '--data', fashion,
                 '--save', tmp_path / 'never', check=False)
    assert result.returncode == 2 and '--samples: 0 is out of range' in result.stderr
    assert not (tmp_path / 'never').exists()


def test_compare_prescreen_trains_only_the_k_best_by_the_proxy(tmp_path, fashion):
    save = tmp_path / 'compare'
    run('compare.py', 'random:3', '--prescreen', 'params', '--keep', '1', '--prescreen_batch', '8', *TINY,
        '--epochs', '1', '--batch_size', '32', '--seeds', '1', '--workers', '0', '--latency_repeats', '1',
        '--data', fashion, '--save', save)
    counts = parameter_counts(search_space.sample_genotypes(3, 0, 'after_every', 'darts', 4))
    labels = [f'random_{i}' for i in range(3)]
    protocol = json.loads((save / 'comparison.json').read_text())
    assert protocol['prescreen']['scores'] == dict(zip(labels, map(float, counts)))
    best = labels[counts.index(max(counts))]
    assert [entry['label'] for entry in protocol['architectures']] == [best]
    results = json.loads((save / 'results.json').read_text())
    assert [row['label'] for row in results['architectures']] == [best]


def test_compare_prescreen_flags_are_checked_before_anything_is_written(tmp_path, fashion):
    for flags, message in ((['--prescreen', 'nope', '--keep', '2'], 'unknown proxy nope'),
                           (['--prescreen', 'params'], '--prescreen needs --keep'),
                           (['--keep', '2'], '--keep needs --prescreen'),
                           (['--prescreen', 'params', '--keep', '5'], '--keep 5 keeps all 4')):
        result = run('compare.py', 'random:4', *flags, *TINY, '--data', fashion, '--save', tmp_path / 'never',
                     check=False)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert not (tmp_path / 'never').exists()
