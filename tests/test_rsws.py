"""Random search with weight sharing (train_search.py --strategy rsws) and the supernet's sampled path."""
import json
import random

import pytest
import torch

import genotypes
import search_space
from model_search import TABLE_PREFIX, SearchNetwork
from tests import data_factory
from tests.helpers import kill_when, run

TINY_RSWS = ['--strategy', 'rsws', '--dataset', 'fashion-mnist', '--init_channels', '4', '--layers', '3',
             '--batch_size', '8', '--workers', '0', '--no_progress', '--num_meta_node', '2', '--report_freq', '0',
             '--rsws_samples', '12', '--rsws_eval_batches', '2', '--rsws_top', '3']


@pytest.fixture(scope='module')
def fashion(tmp_path_factory):
    return data_factory.make_fashion_mnist(str(tmp_path_factory.mktemp('fmnist')), n_train=64, n_test=32)


def one_hot_weights(net, genotype):
    """The mixture weights under which the supernet computes exactly `genotype`: one-hot rows on its
    edges' candidates, zero rows on the edges it does not use."""
    paths = net.path(genotype)
    weights = {}
    for cell_type in ('normal', 'reduce'):
        nodes, bottleneck = paths[cell_type]
        tables = {}
        for layer, names in net.lists.items():
            if names is None:
                continue
            rows = len(net.edges()) if layer != 'bottleneck' else None
            tables[layer] = torch.zeros((rows, len(names)) if rows else (len(names),), dtype=torch.float64)
        for edges in nodes:
            for row, _, first, second in edges:
                tables['first'][row, first] = 1
                if second is not None:
                    tables['second'][row, second] = 1
        if bottleneck is not None:
            tables['bottleneck'][bottleneck] = 1
        weights[cell_type] = {layer: tables.get(layer) for layer in TABLE_PREFIX}
    return weights


@pytest.mark.parametrize('location', list(search_space.LOCATIONS))
@pytest.mark.parametrize('partial_channels', [1, 2])
def test_the_sampled_path_is_the_mixture_with_one_hot_weights(location, partial_channels):
    """With partial channels an edge's bypassed channels are not weighted by its candidates, so
    the mixture equals the path when the edge weights (edge normalization) are one-hot too."""
    torch.manual_seed(0)
    net = SearchNetwork(4, 10, 3, location=location, steps=2, partial_channels=partial_channels,
                        edge_normalization=partial_channels > 1).double()
    genotype = search_space.sample_genotype(random.Random(3), net.lists, net.steps)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    weights = one_hot_weights(net, genotype)
    paths = net.path(genotype)
    if partial_channels > 1:
        for kind, (nodes, _) in paths.items():
            chosen = {row for edges in nodes for row, _, _, _ in edges}
            weights[kind]['edges'] = torch.tensor([float(row in chosen) for row in range(len(net.edges()))],
                                                  dtype=torch.float64)
    net.eval()  # running statistics: both forwards see the same normalisation
    with torch.no_grad():
        s0 = s1 = net.stem(x)
        for cell in net.cells:
            kind = 'reduce' if cell.reduction else 'normal'
            mixed = cell(s0, s1, weights[kind])
            path = cell.forward_path(s0, s1, paths[kind])
            torch.testing.assert_close(path, mixed, rtol=0, atol=1e-12)
            s0, s1 = s1, path
    # Training through the path gives gradients to the chosen candidates only.
    net.train()
    net(x, genotype).sum().backward()
    for cell in net.cells:
        nodes, bottleneck = paths['reduce' if cell.reduction else 'normal']
        chosen = {(row, first) for edges in nodes for row, _, first, _ in edges}
        for row, edge in enumerate(cell.first):
            for k, module in zip(edge.active, edge.candidates):
                grads = [p.grad for p in module.parameters()]
                if grads:
                    assert all(g is not None for g in grads) == ((row, k) in chosen), (row, k)


def test_rsws_writes_a_genotype_of_the_space_and_resumes_exactly(tmp_path, fashion):
    args = [*TINY_RSWS, '--data', fashion, '--epochs', '2', '--seed', '4', '--checkpoint_steps', '1']
    whole = tmp_path / 'whole'
    run('train_search.py', *args, '--save', whole)
    genotype = genotypes.load(str(whole / 'genotype.json'))
    lists = search_space.candidate_lists('after_every', genotypes.PRIMITIVES)
    for cell in ('normal', 'reduce'):
        entries = getattr(genotype, cell)
        assert len(entries) == 4
        for position, (op, j, attention) in enumerate(entries):
            assert op in lists['first'] and op != 'none' and attention in lists['second'] and j < position // 2 + 2
    ranking = json.loads((whole / 'rsws_ranking.json').read_text())
    assert len(ranking['scored']) == 12 and len(ranking['finalists']) == 3
    assert ranking['finalists'][0]['genotype'] == genotypes.to_dict(genotype)
    full = [record['full_valid_acc'] for record in ranking['finalists']]
    assert full == sorted(full, reverse=True)
    assert {json.dumps(r['genotype']) for r in ranking['finalists']} == \
        {json.dumps(r['genotype']) for r in ranking['scored'][:3]}
    metrics = [json.loads(line) for line in open(whole / 'metrics.jsonl')]
    assert [m['epoch'] for m in metrics] == [0, 1] and all(0 <= m['valid_acc'] <= 100 for m in metrics)

    save = tmp_path / 'killed'
    kill_when('train_search.py', args, save, lambda: (save / 'checkpoint.pt').exists())
    assert not (save / 'genotype.json').exists()  # killed while training the weights
    run('train_search.py', *args, '--save', save, '--resume')
    state, resumed = (torch.load(d / 'checkpoint.pt', weights_only=False)['state']['model'] for d in (whole, save))
    assert state.keys() == resumed.keys() and all(torch.equal(state[k], resumed[k]) for k in state)
    for name in ('genotype.json', 'rsws_ranking.json'):
        assert (whole / name).read_text() == (save / name).read_text()


def test_rsws_refuses_more_samples_than_the_space_holds(tmp_path, fashion):
    result = run('train_search.py', *TINY_RSWS, '--data', fashion, '--num_meta_node', '1', '--location', 'no_attention',
                 '--primitives', 'cnas', '--rsws_samples', '100000', '--save', tmp_path / 'r', check=False)
    assert result.returncode == 2 and 'more than the 2401 architectures' in result.stderr
    assert not (tmp_path / 'r').exists()
