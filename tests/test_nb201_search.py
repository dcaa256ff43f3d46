"""The NAS-Bench-201 supernet (train_search.py --space nb201) and GDAS (--strategy gdas)."""
import json
import random
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import gdas
import kernels
import model_search
import nb201
import nb201_model
import nb201_search
import plots
import search_space
from data_factory import make_fashion_mnist
from helpers import ROOT, kill_and_resume, run
from userio import UserError

CELL = nb201.parse('|nor_conv_3x3~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|skip_connect~0|none~1|nor_conv_3x3~2|')
TINY_SEARCH = ['--space', 'nb201', '--dataset', 'fashion-mnist', '--init_channels', '4', '--layers', '1',
               '--batch_size', '8', '--workers', '0', '--no_progress', '--report_freq', '0']


@pytest.fixture(scope='module')
def fashion(tmp_path_factory):
    return make_fashion_mnist(str(tmp_path_factory.mktemp('fmnist')), n_train=48, n_test=16)


def randomize(module):
    """Random BatchNorm affine parameters, so that copying them is tested too."""
    for bn in (m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d) and m.affine):
        torch.nn.init.normal_(bn.weight)
        torch.nn.init.normal_(bn.bias)
    return module


def copy_cell(search_cell, eval_cell, genotype):
    """The evaluation cell's weights into the search cell's candidates of `genotype`'s ops."""
    for e, op in enumerate(genotype.ops):
        if op in ('nor_conv_1x1', 'nor_conv_3x3'):
            search_cell.first[e].candidate(nb201.OPS.index(op)).load_state_dict(eval_cell.edges[e].state_dict())


def test_a_one_hot_mixture_is_the_evaluation_cell():
    torch.manual_seed(0)
    lists = {'first': list(nb201.OPS), 'second': None, 'bottleneck': None}
    search_cell = nb201_search.NB201SearchCell(lists, 4, 6, affine=True).double().train()
    eval_cell = randomize(nb201_model.NB201Cell(CELL, 4, 6)).double().train()
    copy_cell(search_cell, eval_cell, CELL)
    one_hot = F.one_hot(torch.tensor([nb201.OPS.index(op) for op in CELL.ops]), len(nb201.OPS)).double()
    x = torch.randn(3, 4, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(search_cell(x, {'first': one_hot, 'second': None, 'edges': None}), eval_cell(x),
                               rtol=1e-12, atol=1e-12)


def test_the_supernet_path_of_a_cell_is_the_benchmark_network():
    """RS-WS's forward(x, genotype) with the evaluation network's weights computes that network."""
    torch.manual_seed(0)
    supernet = nb201_search.NB201SearchNetwork(C=4, layers=2, image_size=8, affine=True).double().train()
    network = randomize(nb201_model.NB201Network(CELL, 4, 2, 10, image_size=8)).double().train()
    for s, n in zip(supernet.cells, network.cells):
        if isinstance(s, nb201_search.NB201SearchCell):
            copy_cell(s, n, CELL)
        else:
            s.load_state_dict(n.state_dict())
    for name in ('stem', 'lastact', 'classifier'):
        getattr(supernet, name).load_state_dict(getattr(network, name).state_dict())
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(supernet(x, CELL), network(x)[0], rtol=1e-12, atol=1e-12)


def test_derivation_keeps_each_edges_strongest_op_none_included():
    supernet = nb201_search.NB201SearchNetwork(C=4, layers=1, image_size=8)
    with torch.no_grad():
        supernet.arch['alphas_normal'].copy_(F.one_hot(torch.tensor([0, 1, 2, 3, 4, 1]), 5).float())
        supernet.arch['alphas_normal'][5] *= 0.5  # the weaker of the two skip connections
    assert supernet.genotype().ops == ('none', 'skip_connect', 'nor_conv_1x1', 'nor_conv_3x3', 'avg_pool_3x3',
                                       'skip_connect')
    # P-DARTS's limit: the weaker skip edge takes its next strongest op (ties: the first, none).
    assert supernet.genotype(max_skip_connect=1).ops == ('none', 'skip_connect', 'nor_conv_1x1', 'nor_conv_3x3',
                                                         'avg_pool_3x3', 'none')
    assert supernet.space_size() == nb201.SPACE_SIZE == 15625
    attention = nb201_search.NB201SearchNetwork(C=4, layers=1, image_size=8, location='after_every')
    with torch.no_grad():
        attention.arch['alphas_normal'].copy_(F.one_hot(torch.tensor([0, 3, 3, 3, 3, 3]), 5).float())
        attention.arch['betas_normal'].zero_()
        attention.arch['betas_normal'][:, attention.lists['second'].index('SE')] = 1
        attention.arch['betas_normal'][5] = F.one_hot(torch.tensor(attention.lists['second'].index('Identity')),
                                                      len(attention.lists['second']))
    assert attention.genotype().attentions == ('', 'SE', 'SE', 'SE', 'SE', '')


def test_fast_kernels_compute_the_plain_supernet():
    for location, partial in (('no_attention', 1), ('after_every', 2)):
        torch.manual_seed(0)
        plain = nb201_search.NB201SearchNetwork(C=4, layers=1, image_size=8, location=location,
                                                partial_channels=partial).double()
        fast = kernels.accelerate(plain.new().double())
        fast.load_state_dict(plain.state_dict())
        assert type(fast.cells[0]).__name__ == 'FastNB201SearchCell'
        x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
        a, b = plain(x), fast(x)
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        for ga, gb in zip(torch.autograd.grad(a.sum(), plain.arch_parameters()),
                          torch.autograd.grad(b.sum(), fast.arch_parameters())):
            torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)


def test_gdas_runs_only_the_sampled_op_and_its_gradient_reaches_every_weight_of_the_edge():
    torch.manual_seed(0)
    names = list(nb201.OPS)
    edge = model_search.MixedEdge(names, 4, 1, 6, 6, affine=False, pool_bn=False).double()
    calls = []
    for k, module in zip(edge.active, edge.candidates):
        module.register_forward_hook(lambda m, i, o, k=k: calls.append(k))
    logits = torch.randn(len(names), dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    grad_out = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    seen = set()
    for draw in range(40):
        torch.manual_seed(draw)
        hard, index = model_search.hard_gumbel_softmax(logits[None], tau=1.0)
        k = int(index)
        calls.clear()
        out = edge(x, model_search.Sampled(hard[0], k))
        assert calls == ([k] if names[k] != 'none' else [])
        seen.add(k)
        (gradient,) = torch.autograd.grad((out * grad_out).sum(), logits)
        # Recomputed: d out / d hard_j is candidate_j(x) for the drawn j, the all-ones map otherwise;
        # hard = one_hot - p.detach() + p with p = softmax((log_softmax(logits) + g) / tau).
        torch.manual_seed(draw)
        gumbels = -torch.empty_like(logits[None]).exponential_().log()
        with torch.no_grad():
            d_hard = torch.stack([(grad_out * (edge.candidate(j)(x) if j == k and names[j] != 'none'
                                               else torch.zeros_like(x) if j == k else torch.ones_like(x))).sum()
                                  for j in range(len(names))])
        p = F.softmax((logits.log_softmax(-1) + gumbels[0]) / 1.0, -1)
        (expected,) = torch.autograd.grad((p * d_hard).sum(), logits)
        torch.testing.assert_close(gradient, expected, rtol=1e-10, atol=1e-12)
        assert (gradient != 0).all()
    assert seen == set(range(len(names)))


def test_gdas_temperature_falls_linearly_from_tau_max_to_tau_min():
    assert [gdas.temperature(e, 5, 10, 0.1) for e in range(5)] == pytest.approx([10, 7.525, 5.05, 2.575, 0.1])
    assert gdas.temperature(0, 1, 10, 0.1) == 10


def test_gdas_supernet_computes_one_candidate_per_edge(fashion):
    torch.manual_seed(0)
    supernet = nb201_search.NB201SearchNetwork(C=4, layers=1, image_size=8)
    supernet.gumbel_tau = 10.0
    calls = []
    for cell in supernet.search_cells():
        for edge in cell.first:
            for module in edge.candidates:
                module.register_forward_hook(lambda m, i, o: calls.append(m))
    logits = supernet(torch.randn(2, 3, 8, 8))
    assert len(calls) <= 3 * len(nb201.EDGES)  # 3 cells, at most one candidate per edge
    logits.sum().backward()
    assert (supernet.arch['alphas_normal'].grad != 0).all()


@pytest.mark.parametrize('strategy', ['darts', 'gdas'])
def test_a_tiny_search_writes_nb201_genotypes_and_resumes_exactly(tmp_path, fashion, strategy):
    args = [*TINY_SEARCH, '--data', fashion, '--epochs', '2', '--seed', '3', '--checkpoint_steps', '1',
            '--strategy', strategy]
    whole, part = tmp_path / 'whole', tmp_path / 'part'
    run('train_search.py', *args, '--save', whole)
    kill_and_resume('train_search.py', args, part, seed=2, kills=1)
    a = torch.load(whole / 'checkpoint.pt', weights_only=False)['state']['model']
    b = torch.load(part / 'checkpoint.pt', weights_only=False)['state']['model']
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (whole / 'genotype.json').read_text() == (part / 'genotype.json').read_text()
    metrics = [json.loads(line) for line in open(part / 'metrics.jsonl')]
    assert [m['epoch'] for m in metrics] == [0, 1]
    for m in metrics:
        nb201.parse(m['genotype']['nb201'])
        assert 0 <= m['param_free_normal'] <= 6
    alphas = json.loads((part / 'alphas.jsonl').read_text().splitlines()[-1])
    assert alphas['edges'] == [list(e) for e in nb201.EDGES]
    assert alphas['weights']['alphas_normal']['candidates'] == list(nb201.OPS)


def test_gdas_search_with_attention_says_the_cell_has_no_benchmark_entry(tmp_path, fashion):
    result = run('train_search.py', *TINY_SEARCH, '--data', fashion, '--epochs', '2', '--strategy', 'gdas',
                 '--location', 'after_every', '--save', tmp_path / 'run')
    metrics = [json.loads(line) for line in open(tmp_path / 'run' / 'metrics.jsonl')]
    assert [m['tau'] for m in metrics] == pytest.approx([10.0, 0.1])  # the reference's formula: 10 - 9.9
    genotype = nb201.from_dict(metrics[-1]['genotype'], attentions=model_search.candidate_lists(
        'after_every', nb201.OPS)['second'])
    assert nb201.has_attention(genotype) == ('no NAS-Bench-201 benchmark entry' in result.stdout)


@pytest.mark.parametrize('flags, says', [
    (['--primitives', 'cnas'], '--primitives belongs to the DARTS space'),
    (['--location', 'end'], '--location end has no NAS-Bench-201 form'),
    (['--strategy', 'gdas', '--unrolled'], "GDAS's architecture step is first order"),
])
def test_bad_combinations_are_one_line_errors(tmp_path, fashion, flags, says):
    result = run('train_search.py', *TINY_SEARCH, '--data', fashion, *flags, '--save', tmp_path / 'x', check=False)
    assert result.returncode == 2 and says in result.stderr and not (tmp_path / 'x').exists()


def test_rsws_and_random_n_draw_benchmark_cells():
    supernet = nb201_search.NB201SearchNetwork(C=4, layers=1, image_size=8)
    assert supernet.sample_architectures(3, 0) == nb201.sample_genotypes(3, 0) == \
        search_space.sample_genotypes(3, 0, space='nb201')
    with pytest.raises(UserError, match="unknown --space 'nas101'"):
        search_space.sample_genotypes(3, 0, space='nas101')
    rng = random.Random(0)
    drawn = [supernet.sample_architecture(rng) for _ in range(200)]
    assert all(not nb201.has_attention(g) for g in drawn)
    assert any('none' in g.ops for g in drawn)


def test_the_report_draws_the_nb201_cell(tmp_path, fashion):
    save = tmp_path / 'run'
    run('train_search.py', *TINY_SEARCH, '--data', fashion, '--epochs', '1', '--save', save)
    run('visualize.py', save)
    dot = (save / 'report' / 'nb201_genotype.dot').read_text()
    genotype = nb201.from_dict(json.loads((save / 'genotype.json').read_text()))
    for (target, source), op in zip(nb201.EDGES, genotype.ops):
        assert f'{source} -> {target} [label={op}' in dot
    assert 'nb201 cell' in (save / 'report' / 'report.html').read_text()
    assert plots.edge_labels(nb201_search.NB201SearchNetwork(C=4, layers=1).edges())[2] == 'node 2 <- node 1'


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason='torch built without gloo')
def test_two_process_nb201_search_agrees(tmp_path, fashion):
    command = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
               'train_search.py', *TINY_SEARCH, '--data', fashion, '--epochs', '1', '--partial_channels', '2', '--save', tmp_path / 'ddp']
    result = subprocess.run(list(map(str, command)), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    digests = dict(re.findall(r'rank (\d): architecture weights sha256 (\w+)', result.stdout))
    assert set(digests) == {'0', '1'} and digests['0'] == digests['1']
    nb201.parse(json.loads((tmp_path / 'ddp' / 'genotype.json').read_text())['nb201'])
