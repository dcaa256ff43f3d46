"""Partial channels and edge normalization (PC-DARTS), the collapse guards (DARTS-, P-DARTS,
DARTS+), the progressive search (P-DARTS) and the recomputed cells of the DARTS supernet and
train_search.py."""
import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

import collapse_guards
from model_search import LOCATIONS, MixedEdge, SearchNetwork, strongest_candidates
from report import write_report
from tests import data_factory
from tests.helpers import kill_and_resume, kill_when, run
from tests.test_kernels import TOLERANCE, both_implementations, max_difference, search_step_results
from tests.test_scripts import TINY_SEARCH, assert_same_state, final_state

GUARDED = ['--partial_channels', '2', '--edge_normalization', '--auxiliary_skip', '1', '--param_free_dropout', '0.3',
           '--max_skip_connect', '1']


@pytest.fixture(scope='module')
def fashion(tmp_path_factory):
    return data_factory.make_fashion_mnist(str(tmp_path_factory.mktemp('fmnist')), n_train=64, n_test=32)


def batch(seed=1, n=4, size=8, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g, dtype=dtype), torch.randint(0, 10, (n,), generator=g)


def test_one_partial_channel_group_is_the_full_supernet():
    """K=1 builds the same modules and parameters and computes the same loss and gradients."""
    results = []
    for options in ({}, {'partial_channels': 1}):
        torch.manual_seed(0)
        net = SearchNetwork(8, 10, 3, steps=2, image_size=8, **options).double()
        results.append((list(net.state_dict()), search_step_results(net, *batch())))
    assert results[0][0] == results[1][0]
    assert max_difference(results[0][1], results[1][1]) == 0


def shuffled(x, groups):
    """ShuffleNet's channel shuffle written as a permutation: output channel k * groups + i is
    input channel i * (C / groups) + k."""
    per_group = x.shape[1] // groups
    order = [i * per_group + k for k in range(per_group) for i in range(groups)]
    return x[:, order]


@pytest.mark.parametrize('reduction', [False, True])
def test_partial_channel_node_is_the_pc_darts_formula(reduction):
    """A node of a K=4 cell against PC-DARTS recomputed here: each edge mixes the first C/K channels,
    passes the others (2x2 max pooled on stride-2 edges), shuffles, and the node sums the edges
    with their node-softmaxed weights."""
    torch.manual_seed(0)
    net = SearchNetwork(16, 10, 3, steps=2, image_size=8, partial_channels=4, edge_normalization=True).double()
    for p in net.arch_parameters():
        p.data.normal_()
    cell = next(c for c in net.cells if c.reduction == reduction)
    cell.train()
    weights = {layer: table for layer, table in
               zip(('first', 'second', 'bottleneck', 'edges'),
                   [net.softmaxed().get(f'{prefix}_{"reduce" if reduction else "normal"}')
                    for prefix in ('alphas', 'betas', 'gammas', 'edges')])}
    C = cell.preprocess1[1].out_channels
    g = torch.Generator().manual_seed(3)
    states = [torch.randn(2, C, 8, 8, generator=g, dtype=torch.float64) for _ in range(2)]
    node = cell.node(states, range(0, 2), weights)

    edge_weights = F.softmax(net.arch[f'edges_{"reduce" if reduction else "normal"}'][:2], dim=-1)
    expected = 0
    for e, h in enumerate(states):
        mixed = cell.second[e](cell.first[e](h[:, :C // 4], weights['first'][e]), weights['second'][e])
        rest = h[:, C // 4:]
        if reduction:
            rest = F.max_pool2d(rest, 2, 2)
        expected = expected + edge_weights[e] * shuffled(torch.cat([mixed, rest], 1), 4)
    assert node.shape == (2, C, 4 if reduction else 8, 4 if reduction else 8)
    assert max_difference([node.detach()], [expected.detach()]) < TOLERANCE


@pytest.mark.parametrize('location', list(LOCATIONS))
@pytest.mark.parametrize('channels_last', [False, True])
def test_pc_darts_and_guards_are_the_same_in_both_implementations(location, channels_last):
    """Partial channels, edge weights, the auxiliary skip and the dropout of parameter-free
    candidates through the plain and the fast supernet (same dropout masks: same seed)."""
    torch.manual_seed(0)
    net = SearchNetwork(8, 10, 3, location=location, steps=2, image_size=8, partial_channels=2,
                        edge_normalization=True, auxiliary_skip=True, param_free_dropout=True)
    for p in net.arch_parameters():
        p.data.normal_()
    net.set_guards(0.7, 0.3)
    plain, fast = both_implementations(net)
    if channels_last:
        plain, fast = plain.to(memory_format=torch.channels_last), fast.to(memory_format=torch.channels_last)
    results = []
    for implementation in (plain, fast):
        torch.manual_seed(5)
        results.append(search_step_results(implementation, *batch()))
    assert max_difference(*results) < TOLERANCE


def test_partial_channels_must_divide_the_channels(tmp_path):
    with pytest.raises(ValueError, match='must divide'):
        SearchNetwork(6, 10, 3, steps=2, partial_channels=4)
    result = run('train_search.py', '--partial_channels', '3', '--init_channels', '16', '--dry_run', check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        'error: --partial_channels 3 must divide --init_channels 16; pick a divisor (PC-DARTS uses 4 with 16 channels)']


def test_edge_weights_rank_the_edges_in_the_derivation():
    """With edge normalization a node keeps the two inputs with the largest edge weight times best
    op weight, as PC-DARTS derives."""
    torch.manual_seed(0)
    net = SearchNetwork(8, 10, 3, steps=2, image_size=8, location='no_attention', edge_normalization=True)
    ops = net.lists['first']
    conv = ops.index('sep_conv_3x3')
    with torch.no_grad():
        for p in net.arch_parameters():
            p.zero_()
        # Node 1 (rows 2, 3, 4: inputs 0, 1, 2): the op weights favour inputs 0 and 1 ...
        net.arch['alphas_normal'][2, conv] = 2.0
        net.arch['alphas_normal'][3, conv] = 1.9
        net.arch['alphas_normal'][4, conv] = 1.0
    assert sorted(j for _, j, _ in net.genotype().normal[2:]) == [0, 1]
    with torch.no_grad():  # ... the edge weights inputs 2 and 0
        net.arch['edges_normal'][4] = 3.0
        net.arch['edges_normal'][2] = 1.0
    assert sorted(j for _, j, _ in net.genotype().normal[2:]) == [0, 2]
    products = (F.softmax(net.arch['alphas_normal'], -1) * net.softmaxed()['edges_normal'][:, None]).detach()
    node1 = products[2:5].max(dim=1).values
    assert sorted(node1.argsort(descending=True)[:2].tolist()) == [0, 2]


def test_edge_weights_are_softmaxed_per_node():
    net = SearchNetwork(8, 10, 3, steps=3, image_size=8, edge_normalization=True)
    with torch.no_grad():
        net.arch['edges_normal'].copy_(torch.arange(9.0))
    weights = net.softmaxed()['edges_normal']
    for rows in ((0, 2), (2, 5), (5, 9)):
        assert torch.allclose(weights[slice(*rows)], F.softmax(torch.arange(9.0)[slice(*rows)], -1), rtol=0, atol=1e-7)


@pytest.mark.parametrize('limit', [0, 1, 2])
def test_skip_limit_holds_and_drops_the_weakest_skips(limit):
    torch.manual_seed(0)
    net = SearchNetwork(8, 10, 3, steps=4, image_size=8, location='no_attention')
    ops = net.lists['first']
    skip = ops.index('skip_connect')
    with torch.no_grad():
        net.arch['alphas_normal'].zero_()
        net.arch['alphas_normal'][:, ops.index('sep_conv_3x3')] = 1.0
        strength = torch.arange(14, dtype=torch.float32) / 14
        net.arch['alphas_normal'][:, skip] = 2.0 + strength  # every edge prefers skip, later rows more
    unlimited = net.genotype()
    assert [op for op, _, _ in unlimited.normal] == ['skip_connect'] * 8
    # The weakest skip is dropped and the cell derived again until `limit` are left: those of the
    # strongest rows, the last node's (inputs 4 and 3).
    limited = net.genotype(max_skip_connect=limit).normal
    assert [(op, j) for op, j, _ in limited if op == 'skip_connect'] == [('skip_connect', 4), ('skip_connect', 3)][:limit]
    # The reduction cell has no limit.
    assert net.genotype(max_skip_connect=limit).reduce == unlimited.reduce


def test_auxiliary_skip_adds_the_decayed_skip_connection():
    torch.manual_seed(0)
    for stride in (1, 2):
        edge = MixedEdge(['max_pool_3x3', 'sep_conv_3x3'], 4, stride, 8, 8, affine=False, auxiliary_skip=True).double()
        plain = MixedEdge(['max_pool_3x3', 'sep_conv_3x3'], 4, stride, 8, 8, affine=False).double()
        plain.load_state_dict(edge.state_dict(), strict=False)
        x, w = torch.randn(2, 4, 8, 8, dtype=torch.float64), torch.tensor([0.3, 0.7], dtype=torch.float64)
        edge.auxiliary_weight = 0.25
        expected = plain(x, w) + 0.25 * edge.auxiliary(x)
        assert max_difference([edge(x, w).detach()], [expected.detach()]) < TOLERANCE
        assert edge.auxiliary(x).shape == plain(x, w).shape


def test_guard_schedules():
    epochs = 8
    assert [collapse_guards.auxiliary_skip_weight(1.0, e, epochs) for e in range(epochs)] == \
        [1 - e / 8 for e in range(epochs)]
    cosine = [collapse_guards.auxiliary_skip_weight(2.0, e, epochs, 'cosine') for e in range(epochs)]
    assert cosine[0] == 2.0 and abs(cosine[4] - 1.0) < 1e-15
    assert all(a > b for a, b in zip(cosine, cosine[1:]))
    assert collapse_guards.dropout_rate(0.4, 0, 0.2) == 0.4
    assert collapse_guards.dropout_rate(0.4, 3, 0.2) == 0.4 * math.exp(-0.6)


def test_dropout_reaches_only_the_parameter_free_op_candidates():
    names = ['none', 'max_pool_3x3', 'avg_pool_3x3', 'skip_connect', 'sep_conv_3x3']
    assert MixedEdge(names, 4, 1, 8, 8, False, param_free_dropout=True).droppable == [True, True, True, False]
    # On a stride-2 edge skip_connect is a FactorizedReduce, with weights (as in P-DARTS, only the
    # identity is dropped).
    assert MixedEdge(names, 4, 2, 8, 8, False, param_free_dropout=True).droppable == [True, True, False, False]
    edge = MixedEdge(['skip_connect'], 4, 1, 8, 8, False, param_free_dropout=True)
    edge.dropout = 0.5
    x, w = torch.ones(2, 4, 8, 8), torch.ones(1)
    edge.eval()
    assert torch.equal(edge(x, w), x)
    edge.train()
    out = edge(x, w)
    assert set(out.unique().tolist()) <= {0.0, 2.0} and 0 < int((out == 0).sum()) < out.numel()


def test_learnable_ranking_and_stopping_rules():
    tables = {'alphas_normal': {'candidates': ['skip_connect', 'sep_conv_3x3', 'dil_conv_3x3'],
                                'values': [[0.5, 0.2, 0.3], [0.1, 0.6, 0.3]]}}
    assert collapse_guards.learnable_ranking(tables) == {
        'alphas_normal': [['dil_conv_3x3', 'sep_conv_3x3'], ['sep_conv_3x3', 'dil_conv_3x3']]}

    def epochs(early_stop_after, param_free_counts):
        args = type('Args', (), dict(auxiliary_skip=0.0, param_free_dropout=0.0, param_free_dropout_decay=0.2,
                                     max_skip_connect=None, early_stop_param_free=3, early_stop_stable=2,
                                     early_stop_after=early_stop_after))()
        guards, records, previous = collapse_guards.Guards(args), [], None
        for epoch, free in enumerate(param_free_counts):
            previous = guards.end_epoch(epoch, {'param_free_normal': free}, tables, previous)
            records.append(previous)
        return records

    first, second, third = epochs(0, [2, 2, 3])
    assert first['ranking_stable_epochs'] == 0 and 'early_stop' not in first
    assert second['ranking_stable_epochs'] == 1 and 'early_stop' not in second
    assert third['ranking_stable_epochs'] == 2
    assert third['early_stop'] == ("the learnable candidates' ranking has been stable for 2 epochs; the normal cell "
                                   "has 3 parameter-free ops (--early_stop_param_free 3)")
    # Both rules hold from the first epoch on (6 pools, then a stable ranking); after 3 epochs they stop it.
    delayed = epochs(3, [6, 6, 6, 6])
    assert ['early_stop' in record for record in delayed] == [False, False, False, True]
    assert delayed[3]['early_stop'].startswith("the learnable candidates' ranking has been stable for 3 epochs")


@pytest.mark.parametrize('flags, message', [
    (['--early_stop_after', '2'], '--early_stop_after delays the DARTS+ rules: add --early_stop_param_free N or '
                                  '--early_stop_stable E, or drop it'),
    (['--early_stop_after', '-1', '--early_stop_stable', '2'], 'argument --early_stop_after: -1 is out of range; give an '
                                                             'integer at least 0 (0: from the first epoch)'),
    (['--strategy', 'rsws', '--early_stop_after', '2'], '--early_stop_after works with --strategy darts or gdas only '
                                                        '(it acts on the architecture weights); drop it for '
                                                        '--strategy rsws'),
])
def test_early_stop_after_is_refused_where_it_means_nothing(flags, message):
    result = run('train_search.py', *flags, '--dry_run', check=False)
    assert result.returncode == 2 and result.stderr.strip() == f'error: {message}'


def test_guarded_search_logs_its_schedules_and_resumes_exactly(tmp_path, fashion):
    args = [*TINY_SEARCH, *GUARDED, '--data', fashion, '--epochs', '3', '--seed', '5', '--checkpoint_steps', '1']
    whole = tmp_path / 'whole'
    run('train_search.py', *args, '--save', whole)
    metrics = [json.loads(line) for line in open(whole / 'metrics.jsonl')]
    assert [m['auxiliary_skip_weight'] for m in metrics] == [1 - e / 3 for e in range(3)]
    assert [m['param_free_dropout'] for m in metrics] == [0.3 * math.exp(-0.2 * e) for e in range(3)]
    assert all(sum(op == 'skip_connect' for op, _, _ in m['genotype']['normal']) <= 1 for m in metrics)
    alphas = [json.loads(line) for line in open(whole / 'alphas.jsonl')]
    assert all(len(a['edge_weights']['normal']) == 5 for a in alphas)
    report = write_report(str(whole))
    assert (whole / 'report' / 'guards.png').exists() and 'Collapse guards' in open(report).read()

    save = tmp_path / 'killed'
    kill_and_resume('train_search.py', args, save, seed=0, kills=2)
    assert_same_state(final_state(whole), final_state(save))
    for name in ('genotype.json', 'alphas.jsonl'):
        assert (whole / name).read_text() == (save / name).read_text()
    assert [json.loads(line)['epoch'] for line in open(save / 'metrics.jsonl')] == [0, 1, 2]


def test_early_stopping_stops_and_a_resume_trains_nothing_more(tmp_path, fashion):
    # Architecture weights that do not move: the ranking is the same in every epoch.
    args = [*TINY_SEARCH, '--data', fashion, '--epochs', '4', '--seed', '5', '--arch_learning_rate', '0']
    save = tmp_path / 'stable'
    run('train_search.py', *args, '--early_stop_stable', '1', '--save', save)
    metrics = [json.loads(line) for line in open(save / 'metrics.jsonl')]
    assert [m['ranking_stable_epochs'] for m in metrics] == [0, 1]
    assert 'stable for 1 epochs' in metrics[-1]['early_stop']
    assert 'The search stopped early after epoch 1' in open(write_report(str(save))).read()
    before = (save / 'metrics.jsonl').read_text(), final_state(save)
    run('train_search.py', *args, '--early_stop_stable', '1', '--save', save, '--resume')
    assert (save / 'metrics.jsonl').read_text() == before[0]
    assert_same_state(before[1], final_state(save))

    free = metrics[0]['param_free_normal']
    assert free >= 1  # of the initial weights of seed 5
    save = tmp_path / 'free'
    run('train_search.py', *args, '--early_stop_param_free', str(free), '--save', save)
    assert [json.loads(line)['epoch'] for line in open(save / 'metrics.jsonl')] == [0]
    # The same rule, from the third epoch on (the architecture weights do not move, so it holds in every epoch).
    delayed = [*args, '--early_stop_param_free', str(free), '--early_stop_after', '2', '--checkpoint_steps', '1']
    save = tmp_path / 'free-after-2'
    run('train_search.py', *delayed, '--save', save)
    metrics = [json.loads(line) for line in open(save / 'metrics.jsonl')]
    assert [(m['epoch'], 'early_stop' in m) for m in metrics] == [(0, False), (1, False), (2, True)]
    killed = tmp_path / 'free-after-2-killed'
    kill_and_resume('train_search.py', delayed, killed, seed=1, kills=2)
    untimed = [{**m, 'epoch_time': None} for m in metrics]
    assert [{**json.loads(line), 'epoch_time': None} for line in open(killed / 'metrics.jsonl')] == untimed
    assert_same_state(final_state(save), final_state(killed))


def test_architecture_guards_need_the_darts_strategy():
    result = run('train_search.py', '--strategy', 'rsws', '--auxiliary_skip', '1', '--dry_run', check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == ('error: --auxiliary_skip works with --strategy darts or gdas only (it acts on the '
                                     'architecture weights); drop it for --strategy rsws')


def cell_forward_counter(net):
    calls = []
    for cell in net.cells:
        cell.register_forward_pre_hook(lambda module, args: calls.append(module))
    return calls


@pytest.mark.parametrize('implementation', ['plain', 'fast'])
@pytest.mark.parametrize('location', list(LOCATIONS))
@pytest.mark.parametrize('options', [{}, {'partial_channels': 2, 'edge_normalization': True, 'auxiliary_skip': True,
                                          'param_free_dropout': True}])
def test_recomputed_cells_give_the_same_step(implementation, location, options):
    """Loss, every gradient, the running statistics after the step (updated once, not again by the
    recomputation) and the random-number state (the dropout masks drawn once) are those of the
    step without recomputation, bit for bit; the cells' forwards did run twice."""
    torch.manual_seed(0)
    net = SearchNetwork(8, 10, 3, location=location, steps=2, image_size=8, **options)
    for p in net.arch_parameters():
        p.data.normal_()
    net.set_guards(0.7, 0.3)
    net = both_implementations(net)[implementation == 'fast']
    results = []
    for recompute in (False, True):
        twin = copy.deepcopy(net)
        twin.recompute_cells = recompute
        calls = cell_forward_counter(twin)
        torch.manual_seed(5)
        results.append([*search_step_results(twin, *batch()), torch.rand(1)])
        assert len(calls) == len(twin.cells) * (2 if recompute else 1)
    assert max_difference(*results) == 0


def test_recomputed_cells_give_the_same_weight_sharing_step():
    """One architecture's path through the shared weights (--strategy rsws), recomputed."""
    torch.manual_seed(0)
    net = SearchNetwork(8, 10, 3, steps=2, image_size=8, partial_channels=2).double()
    genotype = net.genotype()
    x, y = batch()
    results = []
    for recompute in (False, True):
        twin = copy.deepcopy(net)
        twin.recompute_cells = recompute
        loss = F.cross_entropy(twin(x, genotype), y)
        grads = torch.autograd.grad(loss, list(twin.parameters()), allow_unused=True, materialize_grads=True)
        results.append([loss.detach(), *grads, *twin.buffers()])
    assert max_difference(*results) == 0


def test_cells_are_recomputed_only_for_a_training_backward():
    torch.manual_seed(0)
    net = SearchNetwork(8, 10, 3, steps=2, image_size=8, recompute_cells=True).double()
    calls = cell_forward_counter(net)
    x, y = batch()
    with torch.no_grad():
        net(x)
    net.eval()
    F.cross_entropy(net(x), y).backward()
    assert len(calls) == 2 * len(net.cells)
    assert net.new().recompute_cells


def test_search_with_recomputed_cells_is_the_same_and_resumes_with_or_without_it(tmp_path, fashion):
    args = [*TINY_SEARCH, *GUARDED, '--data', fashion, '--epochs', '2', '--seed', '5', '--checkpoint_steps', '1']
    recomputed, stored, switched = tmp_path / 'recomputed', tmp_path / 'stored', tmp_path / 'switched'
    run('train_search.py', *args, '--recompute_cells', '--save', recomputed)
    run('train_search.py', *args, '--save', stored)
    kill_when('train_search.py', args, switched, lambda: (switched / 'checkpoint.pt').exists(), 0.5)
    run('train_search.py', *args, '--recompute_cells', '--save', switched, '--resume')
    for other in (stored, switched):
        assert_same_state(final_state(recomputed), final_state(other))
        assert (recomputed / 'alphas.jsonl').read_text() == (other / 'alphas.jsonl').read_text()


def test_strongest_candidates_keep_the_top_k_of_each_edge_in_candidate_order():
    weights = [[0.1, 0.4, 0.2, 0.3], [0.25, 0.25, 0.25, 0.25], [0.7, 0.1, 0.1, 0.1]]
    assert strongest_candidates(weights, 2) == [[1, 3], [0, 1], [0, 1]]
    assert strongest_candidates(weights, 4) == [[0, 1, 2, 3]] * 3


def test_pruned_supernet_builds_and_weighs_only_the_kept_candidates():
    """Each edge builds its kept op candidates (none is never built); the op layer's softmax runs
    over them alone (recomputed here), the others weigh exactly 0 and are never derived, not even
    where the skip limit removes a kept skip_connect (each edge keeps two ops besides none); the
    implementations agree; the state dict is that of the pruned modules, without the masks."""
    torch.manual_seed(0)
    names = SearchNetwork(8, 10, 3, steps=2, image_size=8).lists['first']
    skip, pool = names.index('skip_connect'), names.index('max_pool_3x3')
    normal = [[0, skip, pool], [skip, pool], [0, skip, 4], [1, 2, 5], [skip, 6, 7]]
    kept = {'normal': normal, 'reduce': [[1, 2, 3, 4, 5, 6, 7]] * 5}
    net = SearchNetwork(8, 10, 3, steps=2, image_size=8, kept_ops=kept)
    for p in net.arch_parameters():
        p.data.normal_()
    cell = next(c for c in net.cells if not c.reduction)
    assert [edge.active for edge in cell.first] == [[k for k in row if names[k] != 'none'] for row in normal]
    weights = net.softmaxed()['alphas_normal']
    for row, candidates in enumerate(normal):
        expected = torch.zeros(len(names))
        expected[candidates] = F.softmax(net.arch['alphas_normal'][row, candidates], dim=0)
        assert torch.equal(weights[row], expected)
    for limit in (None, 0):
        derived = net.genotype(max_skip_connect=limit).normal
        for i, (op, j, _) in enumerate(derived):
            node = i // 2
            assert names.index(op) in normal[node * (node + 3) // 2 + j]
    assert all(op != 'skip_connect' for op, _, _ in net.genotype(max_skip_connect=0).normal)
    plain, fast = both_implementations(net)
    assert max_difference(search_step_results(plain, *batch()), search_step_results(fast, *batch())) < TOLERANCE
    twin = SearchNetwork(8, 10, 3, steps=2, image_size=8, kept_ops=kept)
    twin.load_state_dict(net.state_dict())
    assert not any(name.startswith('kept_') for name in net.state_dict())
    # An edge of none and skip_connect alone would have nothing to derive in place of a limited skip.
    with pytest.raises(ValueError, match=r"kept_ops\['normal'\]\[1\] keeps fewer than two candidates besides none"):
        SearchNetwork(8, 10, 3, steps=2, image_size=8, kept_ops={**kept, 'normal': [normal[0], [0, skip], *normal[2:]]})


@pytest.mark.parametrize('flags, message', [
    (['--stage_keep', '3'], '--stage_keep needs --stage_layers (the stages it prunes between)'),
    (['--stage_layers', '3', '4'], '--stage_keep needs one value per transition between stages: 2 stages take 1, '
                                   'got 0'),
    (['--stage_layers', '3', '0', '4', '--stage_keep', '3', '2'], 'argument --stage_layers: 0 is out of range; give an '
                                                                   'integer at least 1'),
    (['--stage_layers', '3', '4', '--stage_keep', '9'], '--stage_keep 9: each value must be at least 3 and at most the '
                                                        'candidates of the stage before (8); P-DARTS keeps 5, then 3, '
                                                        'of 8'),
    (['--stage_layers', '3', '4', '5', '--stage_keep', '3', '4'], '--stage_keep 4: each value must be at least 3 and '
                                                                  'at most the candidates of the stage before (3); '
                                                                  'P-DARTS keeps 5, then 3, of 8'),
    (['--strategy', 'rsws', '--stage_layers', '3'], '--stage_layers works with --strategy darts or gdas only (it acts on the '
                                                    'architecture weights); drop it for --strategy rsws'),
])
def test_bad_stages_are_refused(flags, message):
    result = run('train_search.py', *flags, '--dry_run', check=False)
    assert result.returncode == 2 and result.stderr.strip() == f'error: {message}'


def test_progressive_search_prunes_between_stages_and_resumes_exactly(tmp_path, fashion):
    args = [*TINY_SEARCH, '--data', fashion, '--epochs', '2', '--seed', '3', '--checkpoint_steps', '1',
            '--stage_layers', '3', '4', '--stage_keep', '3', '--max_skip_connect', '1']
    whole = tmp_path / 'whole'
    run('train_search.py', *args, '--save', whole)
    assert sorted(p.name for p in whole.iterdir()) == ['genotype.json', 'stage-1', 'stage-2']
    assert (whole / 'genotype.json').read_text() == (whole / 'stage-2' / 'genotype.json').read_text()
    first = [json.loads(line) for line in open(whole / 'stage-1' / 'alphas.jsonl')][-1]['weights']
    second = [json.loads(line) for line in open(whole / 'stage-2' / 'alphas.jsonl')]
    for name in ('alphas_normal', 'alphas_reduce'):
        kept = strongest_candidates(first[name]['values'], 3)
        for epoch in second:
            assert [[k for k, w in enumerate(row) if w > 0] for row in epoch['weights'][name]['values']] == kept

    # Killed in the first stage, resumed and killed in the second, resumed to the end.
    save = tmp_path / 'killed'
    kill_when('train_search.py', args, save, lambda: (save / 'stage-1' / 'checkpoint.pt').exists(), 0.3)
    kill_when('train_search.py', [*args, '--resume'], save, lambda: (save / 'stage-2' / 'checkpoint.pt').exists(), 0.3)
    run('train_search.py', *args, '--save', save, '--resume')
    for stage in ('stage-1', 'stage-2'):
        assert_same_state(final_state(whole / stage), final_state(save / stage))
        assert (whole / stage / 'alphas.jsonl').read_text() == (save / stage / 'alphas.jsonl').read_text()
    assert (whole / 'genotype.json').read_text() == (save / 'genotype.json').read_text()

    result = run('train_search.py', *args, '--save', save, check=False)
    assert result.returncode == 2 and 'already exists; pass --resume' in result.stderr
    for where, message in ((['--save', tmp_path / 'none'], 'nothing to resume'), ([], '--resume needs --save')):
        result = run('train_search.py', *args, *where, '--resume', check=False)
        assert result.returncode == 2 and message in result.stderr
