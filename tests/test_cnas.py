"""CNAS (Zhou et al., IEEE Access 2019; reference code tianbaochou/CNAS): the cweight_com and shuffle_conv_3x3 ops,
the `cnas` primitive set with every attention location, 3..6 nodes per cell, the sparse derivation
and the evaluation network that skips 'none' edges, the CNAS genotypes, Tiny-ImageNet end to end,
the weight heat maps of a real search run, and the choice of the freest GPU."""
import json
import os
import struct

import pytest
import torch
import torch.nn as nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

import devices
import genotypes
import operations
from architect import Architect
from genotypes import Genotype
from model import Cell, NetworkCIFAR
from model_search import LOCATIONS, SearchNetwork
from operations import OPS, ChannelShuffle, ShuffleConv, shuffle_groups
from tests import data_factory
from tests.test_scripts import run

CNAS = genotypes.PRIMITIVE_SETS['cnas']
CNAS_GENOTYPES = list(genotypes.CNAS_NAMED)


def n_params(module):
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------------------------- ops

@pytest.mark.parametrize('name', ['cweight_com', 'shuffle_conv_3x3'])
@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('size', [8, 7])
def test_op_shapes_and_gradients(name, stride, size):
    """The shape, and the gradients of the input and of every parameter against finite differences
    (gradcheck in float64, along random directions)."""
    torch.manual_seed(0)
    op = OPS[name](16, stride, True).double()
    x = torch.randn(2, 16, size, size, dtype=torch.float64, requires_grad=True)
    expected = size if stride == 1 else (size + 1) // 2
    assert op(x).shape == (2, 16, expected, expected)
    names, params = zip(*op.named_parameters())

    def forward(x, *values):
        return functional_call(op, dict(zip(names, values)), (x,))
    assert torch.autograd.gradcheck(forward, (x, *params), fast_mode=True)


def test_parameter_counts_against_spec():
    # The reference's counts of its search ops (darts/operations.py), whose BNs are not affine (C = 16).
    assert n_params(OPS['cweight_com'](16, 1, False)) == 49      # Linear(16,1)+Linear(1,16), with biases
    assert n_params(OPS['cweight_com'](16, 2, False)) == 193     # + depthwise 3x3 (144)
    assert n_params(OPS['sep_conv_3x3'](16, 1, False)) == 800
    assert n_params(OPS['dil_conv_3x3'](16, 1, False)) == 400
    assert n_params(OPS['skip_connect'](16, 2, False)) == 256
    # The registered op is the reference's unit (groups=1): 1x1 (256) + depthwise 3x3 (144) + 1x1 (256).
    assert n_params(OPS['shuffle_conv_3x3'](16, 1, False)) == 656
    # The paper's grouped unit, g = 2 at 16 channels: 16 -> 8 in 2 groups (16*8/2), depthwise 3x3
    # on 8 (8*9), 8 -> 16 in 2 groups (8*16/2).
    assert n_params(ShuffleConv(16, 1, False, groups=2)) == 64 + 72 + 64 == 200
    # Affine BNs (evaluation, --use_sparse) add weight and bias per channel: 16 + 16 + 16 channels
    # dense, 8 + 8 + 16 grouped.
    assert n_params(OPS['shuffle_conv_3x3'](16, 2, True)) == 656 + 2 * 48
    assert n_params(ShuffleConv(16, 2, True, groups=2)) == 200 + 2 * 32
    assert n_params(OPS['cweight_com'](16, 2, True)) == 193 + 32


def test_regroup_gives_the_grouped_unit_everywhere_and_keeps_the_rest():
    net = NetworkCIFAR(16, 10, 3, False, genotypes.NAMED['DARTS_MORE_V1'], image_size=8)
    dense = [m for m in net.modules() if isinstance(m, ShuffleConv)]
    assert dense and all(m.groups == 1 for m in dense)
    others = {n: p.shape for n, p in net.named_parameters() if '.branch.' not in n}
    operations.regroup_shuffle_convs(net, 'auto')
    grouped = [m for m in net.modules() if isinstance(m, ShuffleConv)]
    assert [(m.C, m.stride, m.groups) for m in grouped] == [(m.C, m.stride, shuffle_groups(m.C)) for m in dense]
    assert all(m.groups > 1 for m in grouped)
    assert {n: p.shape for n, p in net.named_parameters() if '.branch.' not in n} == others
    assert net(torch.randn(2, 3, 8, 8))[0].shape == (2, 10)
    # The constructors take the choice too, and '1' leaves the reference's unit.
    assert n_params(NetworkCIFAR(16, 10, 3, False, genotypes.NAMED['DARTS_MORE_V1'], image_size=8,
                                 shuffle_groups='auto')) == n_params(net)
    with pytest.raises(ValueError, match='auto'):
        operations.regroup_shuffle_convs(net, '3')


def test_shuffle_groups_and_permutation():
    assert {C: shuffle_groups(C) for C in (4, 8, 16, 36, 50, 72, 144)} == \
        {4: 1, 8: 2, 16: 2, 36: 3, 50: 1, 72: 3, 144: 4}
    x = torch.arange(8.).view(1, 8, 1, 1)
    assert ChannelShuffle(2)(x).flatten().tolist() == [0, 4, 1, 5, 2, 6, 3, 7]


def _cross_group_gradient(op):
    """|d out[first output group] / d x[second input group]| of a 2-group unit, residual aside."""
    op.eval()
    x = torch.randn(2, 16, 6, 6, requires_grad=True)
    op.branch(x)[:, :8].square().sum().backward()
    return x.grad[:, 8:].abs().sum()


def test_shuffle_mixes_the_groups():
    torch.manual_seed(0)
    op = ShuffleConv(16, 1, True, groups=2)
    assert isinstance(op.branch[3], ChannelShuffle)
    assert _cross_group_gradient(op) > 0
    op.branch[3] = nn.Identity()  # without the shuffle the two groups never meet
    assert _cross_group_gradient(op) == 0


# ------------------------------------------------------------------------------------------- search

@pytest.mark.parametrize('location', list(LOCATIONS))
def test_cnas_set_searches_with_every_location(location):
    torch.manual_seed(0)
    net = SearchNetwork(4, 3, 2, location=location, primitives='cnas', steps=2, image_size=8)
    assert net.lists['first'][:len(CNAS)] == CNAS
    architect = Architect(net, nn.CrossEntropyLoss())
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([0, 2])
    before = [p.detach().clone() for p in net.arch_parameters()]
    optimizer = torch.optim.SGD(net.weight_parameters(), 0.1)
    validation_loss = nn.functional.cross_entropy(net(x), y)  # the same computation as the step's: equal bits
    assert torch.equal(architect.step(x, y, x, y, 0.1, optimizer), validation_loss.detach())
    assert any(not torch.equal(a, b) for a, b in zip(before, net.arch_parameters()))
    genotype = genotypes.validate(net.genotype())
    assert all(op in net.lists['first'] and op != 'none' for op, *_ in genotype.normal + genotype.reduce)


@pytest.mark.parametrize('steps', [3, 4, 5, 6])
def test_num_meta_node_in_search_and_evaluation(steps):
    net = SearchNetwork(4, 3, 2, location='no_attention', primitives='cnas', steps=steps, image_size=8)
    assert net.arch['alphas_normal'].shape == (sum(2 + i for i in range(steps)), len(CNAS))
    logits = net(torch.randn(2, 3, 8, 8))
    assert logits.shape == (2, 3)
    genotype = net.genotype()
    assert len(genotype.normal) == 2 * steps and genotype.normal_concat == list(range(2, steps + 2))
    eval_net = NetworkCIFAR(4, 3, 3, False, genotypes.validate(genotype), image_size=8)
    assert all(cell.multiplier == steps for cell in eval_net.cells)
    assert eval_net(torch.randn(2, 3, 8, 8))[0].shape == (2, 3)


def test_sparse_derivation_on_hand_set_weights():
    net = SearchNetwork(4, 3, 2, location='no_attention', primitives='cnas', steps=2, image_size=8)
    index = {name: k for k, name in enumerate(CNAS)}
    logits = torch.zeros(5, len(CNAS))
    # Rows: node 0 <- 0, node 0 <- 1, node 1 <- 0, node 1 <- 1, node 1 <- node 0.
    logits[0, index['none']], logits[0, index['sep_conv_3x3']] = 5., 1.
    logits[1, index['cweight_com']] = 3.
    logits[2, index['none']] = 4.
    logits[3, index['skip_connect']] = 2.
    logits[4, index['shuffle_conv_3x3']] = 1.
    with torch.no_grad():
        net.arch['alphas_normal'].copy_(logits)
    # 'none' counts when ranking edges and may be the chosen op ...
    assert [e[:2] for e in net.genotype(sparse=True).normal] == \
        [('none', 0), ('cweight_com', 1), ('none', 0), ('skip_connect', 1)]
    # ... and is ignored by the DARTS rule.
    assert [e[:2] for e in net.genotype().normal] == \
        [('cweight_com', 1), ('sep_conv_3x3', 0), ('skip_connect', 1), ('shuffle_conv_3x3', 2)]


def test_use_sparse_supernet_is_affine_and_copies_keep_it():
    net = SearchNetwork(4, 3, 2, location='no_attention', primitives='cnas', steps=2, image_size=8, affine=True)
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    # Every BN follows the flag, the pool wrappers' too (CNAS's `MixedOp`), with eps untouched (the
    # reference put the affine flag into eps).
    assert net.stem[1].affine and net.cells[0].preprocess1[2].affine
    assert all(m.eps == 1e-5 and m.affine for m in norms)
    pool_norms = [edge.candidates[edge.active.index(CNAS.index('avg_pool_3x3'))][1]
                  for cell in net.cells for edge in cell.first]
    assert pool_norms and all(m.affine for m in pool_norms)
    # The reference's Network.new() dropped use_sparse; the copy must stay affine.
    copy = net.new()
    assert [m.affine for m in copy.modules() if isinstance(m, nn.BatchNorm2d)] == [m.affine for m in norms]
    assert torch.equal(copy.arch['alphas_normal'], net.arch['alphas_normal'])
    plain = SearchNetwork(4, 3, 2, location='no_attention', primitives='cnas', steps=2, image_size=8)
    assert n_params(net) > n_params(plain)
    # Without --use_sparse only the stem's BN is affine (DARTS's and Att-DARTS's stem); CNAS's
    # follows its cells (stem_affine=False).
    assert [m.affine for m in plain.modules() if isinstance(m, nn.BatchNorm2d)].count(True) == 1
    assert plain.stem[1].affine
    cnas_stem = SearchNetwork(4, 3, 2, location='no_attention', primitives='cnas', steps=2, image_size=8,
                              stem_affine=False)
    assert not any(m.affine for m in cnas_stem.modules() if isinstance(m, nn.BatchNorm2d))
    assert n_params(plain) - n_params(cnas_stem) == 2 * 3 * 4
    # The second-order step unrolls every weight, the affine BN ones included (the reference's
    # mismatched copy could not: darts/architecture.py): the validation loss it returns is L(w - eta grad L(w)),
    # recomputed here with autograd, and not the loss with the BN weights left where they were.
    # In float64 the two computations of that loss differ by rounding (~1e-15 relative).
    net = net.double()
    x, y = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.tensor([0, 1])
    named = net.named_weight_parameters()
    norm_weights = {f'{name}.{kind}' for name, m in net.named_modules()
                    if isinstance(m, nn.BatchNorm2d) and m.affine for kind in ('weight', 'bias')}
    assert norm_weights and norm_weights <= {name for name, _ in named}

    def loss_with_buffers(weights):
        buffers = {name: b.clone() for name, b in net.named_buffers()}  # the real running statistics stay
        return nn.functional.cross_entropy(functional_call(net, {**weights, **buffers}, (x,)), y)
    grads = torch.autograd.grad(loss_with_buffers({}), [p for _, p in named])

    def unrolled_loss(stepped):
        return loss_with_buffers({name: (p - 0.1 * g if stepped(name) else p).detach()
                                  for (name, p), g in zip(named, grads)}).detach()
    expected = unrolled_loss(lambda name: True)
    without_norms = unrolled_loss(lambda name: name not in norm_weights)
    step = Architect(net, nn.CrossEntropyLoss(), unrolled=True).step(
        x, y, x, y, 0.1, torch.optim.SGD(net.weight_parameters(), 0.1))
    assert abs(step - expected) <= 1e-10 * abs(expected) < 1e-3 * abs(without_norms - expected)


def _flops(module, *inputs):
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return counter.get_total_flops()


def test_pruned_none_edges_have_no_module_and_no_compute():
    # Node 0 = sep_conv(state 0) + none(state 1); node 1 = none + none; output = nodes 0 and 1.
    sparse = Genotype(normal=[('sep_conv_3x3', 0), ('none', 1), ('none', 0), ('none', 2)], normal_concat=[2, 3],
                      reduce=[('sep_conv_3x3', 0), ('none', 1), ('none', 0), ('none', 2)], reduce_concat=[2, 3])
    cell = Cell(sparse, 8, 8, 8, False, False, 6, 6, prune_none=True).eval()
    assert len(cell._ops) == 1 and cell.preprocess1 is None
    assert not any(isinstance(m, operations.Zero) for m in cell.modules())
    s0, s1 = torch.randn(2, 8, 6, 6), torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        out = cell(s0, s1)
        expected = cell._ops[0](cell.preprocess0(s0))
    assert torch.equal(out[:, :8], expected) and torch.equal(out[:, 8:], torch.zeros(2, 8, 6, 6))
    assert _flops(cell, s0, s1) == _flops(cell.preprocess0, s0) + _flops(cell._ops[0], cell.preprocess0(s0))


# ------------------------------------------------------------------------------------------- genotypes

def test_cnas_genotypes_are_named_and_use_the_cnas_ops():
    assert CNAS_GENOTYPES == [f'DARTS_MORE_V{v}' for v in range(1, 5)] + \
        [f'DARTS_MORE_NONE_V{v}' for v in range(1, 5)] + ['DARTS_MORE_TY2']
    for version, nodes in zip(range(1, 5), range(3, 7)):
        for prefix in ('DARTS_MORE_V', 'DARTS_MORE_NONE_V'):
            genotype = genotypes.load(f'{prefix}{version}')
            assert len(genotype.normal) == len(genotype.reduce) == 2 * nodes
    used = {e[0] for name in CNAS_GENOTYPES for e in genotypes.NAMED[name].normal + genotypes.NAMED[name].reduce}
    assert used <= set(CNAS) and {'cweight_com', 'shuffle_conv_3x3', 'none'} <= used


@pytest.mark.parametrize('name', CNAS_GENOTYPES)
def test_every_cnas_genotype_builds_and_trains_one_step(name):
    torch.manual_seed(0)
    genotype = genotypes.NAMED[name]
    net = NetworkCIFAR(8, 5, 3, True, genotype, image_size=16)
    for cell in net.cells:
        entries = genotype.reduce if cell.reduction else genotype.normal
        assert len(cell._ops) == len(entries)  # 'none' edges too, as Zero ops
    optimizer = torch.optim.SGD(net.parameters(), 0.05)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    logits, aux = net(torch.randn(4, 3, 16, 16))
    assert logits.shape == aux.shape == (4, 5)
    target = torch.arange(4)
    loss = nn.functional.cross_entropy(logits, target) + 0.4 * nn.functional.cross_entropy(aux, target)
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())
    optimizer.step()
    changed = [k for k, v in net.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith('cells.') for k in changed) and 'classifier.weight' in changed


# The reference's own counts: tianbaochou/CNAS @ 4f49b82ad3bb80ae5c7bc6bee4067fec1f45ab79,
# `EvalNetwork(36, classes, 0, 20, False, geno_types.<name>)` (no auxiliary head; its 2x2 pooled head
# for more than 10 classes), summed over `parameters()`, built on the CPU with PyTorch 2.
REFERENCE_COUNTS = {
    'DARTS_MORE_V1': (1726349, 1894919), 'DARTS_MORE_V2': (2046510, 2271240),
    'DARTS_MORE_V3': (2800612, 3081502), 'DARTS_MORE_V4': (2952509, 3289559),
    'DARTS_MORE_NONE_V1': (1886387, 2054957), 'DARTS_MORE_NONE_V2': (2104930, 2329660),
    'DARTS_MORE_NONE_V3': (2671717, 2952607), 'DARTS_MORE_NONE_V4': (3115211, 3452261),
    'DARTS_MORE_TY2': (3359065, 3583795),
}


def test_every_shipped_genotype_has_a_reference_count():
    assert sorted(REFERENCE_COUNTS) == sorted(CNAS_GENOTYPES)


@pytest.mark.parametrize('name', CNAS_GENOTYPES)
@pytest.mark.parametrize('classes', [10, 100])
def test_parameter_count_is_the_reference_codes(name, classes):
    net = NetworkCIFAR(36, classes, 20, False, genotypes.NAMED[name], pooled_head=classes > 10)
    assert n_params(net) == REFERENCE_COUNTS[name][classes == 100]


def test_pruned_none_edges_and_grouped_shuffle_are_smaller():
    # DARTS_MORE_NONE_V3's normal cell reads input 1 only through 'none' edges: the reference still
    # preprocesses it (a ReLU-1x1 conv-BN), --prune_none does not.
    genotype = genotypes.NAMED['DARTS_MORE_NONE_V3']
    reference = NetworkCIFAR(36, 10, 20, False, genotype)
    pruned = NetworkCIFAR(36, 10, 20, False, genotype, prune_none=True)
    normal = [i for i, cell in enumerate(reference.cells) if not cell.reduction]
    assert all(reference.cells[i].preprocess1 is not None and pruned.cells[i].preprocess1 is None for i in normal)
    saved = sum(n_params(reference.cells[i].preprocess1) for i in normal)
    assert n_params(pruned) == n_params(reference) - saved
    grouped = NetworkCIFAR(36, 10, 20, False, genotypes.NAMED['DARTS_MORE_V1'], shuffle_groups='auto')
    assert n_params(grouped) < REFERENCE_COUNTS['DARTS_MORE_V1'][0]


def test_none_edges_compute_zeros_without_drop_path():
    # A reference cell: the 'none' edges are Zero ops, exact zeros, and drop path skips them.
    sparse = Genotype(normal=[('sep_conv_3x3', 0), ('none', 1), ('none', 0), ('none', 2)], normal_concat=[2, 3],
                      reduce=[('sep_conv_3x3', 0), ('none', 1), ('none', 0), ('none', 2)], reduce_concat=[2, 3])
    cell = Cell(sparse, 8, 8, 8, False, False, 6, 6)
    assert len(cell._ops) == 4 and cell.preprocess1 is not None
    assert [droppable for edges in cell._nodes for _, _, droppable in edges] == [True, False, False, False]
    cell.train()
    torch.manual_seed(0)
    s0, s1 = torch.randn(2, 8, 6, 6), torch.randn(2, 8, 6, 6)
    out = cell(s0, s1, drop_prob=0.5)
    assert torch.equal(out[:, 8:], torch.zeros(2, 8, 6, 6))
    out.sum().backward()
    # The preprocessing only 'none' reads is in the graph (DDP needs every parameter there) with
    # a zero gradient.
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in cell.preprocess1.parameters())


# ------------------------------------------------------------------------------------------- device

def test_auto_device_takes_the_gpu_with_most_free_memory(monkeypatch):
    free = {0: 2 << 30, 1: 9 << 30, 2: 5 << 30}
    chosen = []
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 3)
    monkeypatch.setattr(torch.cuda, 'mem_get_info', lambda i: (free[i], 16 << 30))
    monkeypatch.setattr(torch.cuda, 'set_device', lambda device: chosen.append(device.index))
    monkeypatch.setattr(torch.backends.cudnn, 'benchmark', False)
    assert devices.select_device('auto') == torch.device('cuda', 1) and chosen == [1]
    assert torch.backends.cudnn.benchmark  # on a GPU cuDNN picks its algorithms per shape
    assert devices.select_device('cuda:2') == torch.device('cuda', 2) and chosen == [1, 2]  # an explicit choice stands

    def unexpected(i):
        raise AssertionError('one GPU: nothing to compare')
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    monkeypatch.setattr(torch.cuda, 'mem_get_info', unexpected)
    assert devices.select_device('auto') == torch.device('cuda', 0)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert devices.select_device('auto') == torch.device('cpu')


# ------------------------------------------------------------------------------------------- scripts

TINY = ['--init_channels', '4', '--layers', '3', '--batch_size', '2', '--workers', '0', '--no_progress',
        '--report_freq', '0']


def png_size(path):
    with open(path, 'rb') as f:
        header = f.read(24)
    assert header[:8] == b'\x89PNG\r\n\x1a\n', path
    return struct.unpack('>II', header[16:24])


def test_tiny_imagenet_sparse_search_heat_map_and_pooled_training(tmp_path):
    data = data_factory.make_tiny_imagenet(str(tmp_path / 'tiny'), classes=3, per_class=4)
    search_dir = tmp_path / 'search'
    run('train_search.py', *TINY, '--dataset', 'tiny-imagenet', '--data', data, '--primitives', 'cnas',
        '--location', 'no_attention', '--use_sparse', '--num_meta_node', '3', '--epochs', '2',
        '--save', search_dir)
    genotype = genotypes.load(str(search_dir / 'genotype.json'))
    assert len(genotype.normal) == 6 and genotype.normal_concat == [2, 3, 4]
    alphas = [json.loads(line) for line in open(search_dir / 'alphas.jsonl')]
    assert [a['epoch'] for a in alphas] == [0, 1]
    assert alphas[-1]['weights']['alphas_normal']['candidates'] == CNAS
    assert len(alphas[-1]['weights']['alphas_normal']['values']) == 9  # 2 + 3 + 4 edges
    state = torch.load(search_dir / 'checkpoint.pt', weights_only=False)
    assert json.loads(state['signature'])['sparse'] is True
    assert 'stem.1.weight' in state['state']['model']  # --use_sparse: affine BN

    result = run('visualize.py', search_dir)
    assert 'report.html' in result.stdout
    for table in ('alphas_normal', 'alphas_reduce'):
        width, height = png_size(search_dir / 'report' / f'heatmap_{table}.png')
        assert width > 400 and height > 300
        assert png_size(search_dir / 'report' / f'weights_{table}.png')[0] > 400

    train_dir = tmp_path / 'train'
    run('train_CIFAR10.py', *TINY, '--dataset', 'tiny-imagenet', '--data', data, '--arch_path',
        search_dir / 'genotype.json', '--pooled_head', '--epochs', '1', '--test_batch_size', '4',
        '--save', train_dir)
    trained = torch.load(train_dir / 'trained.pt', weights_only=False)
    assert trained['network']['pooled_head'] and trained['network']['num_classes'] == 3
    classifier = trained['state_dict']['classifier.weight']
    assert classifier.shape[0] == 3 and classifier.shape[1] % 4 == 0  # 2x2 pooled map


def test_cnas_named_genotype_dry_run():
    result = run('train_CIFAR10.py', '--arch', 'DARTS_MORE_V1', '--auxiliary', '--cutout', '--dry_run',
                 '--data', os.devnull, '--init_channels', '8', '--layers', '5')
    assert 'params:' in result.stdout


@pytest.mark.parametrize('level', [0, 1, 2])
def test_reduce_level_stems_halve_the_image(level):
    from model import cifar_stem
    stem, size = cifar_stem(3, 12, level)
    out = stem(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 12, size(16), size(16)) and size(16) == (16 if level == 0 else 8)
    genotype = genotypes.NAMED['DARTS_MORE_V1']
    net = NetworkCIFAR(4, 5, 3, True, genotype, image_size=16, reduce_level=level).train()
    logits, aux = net(torch.randn(2, 3, 16, 16))
    assert logits.shape == aux.shape == (2, 5)
    search = SearchNetwork(4, 5, 3, location='no_attention', primitives='cnas', steps=3, image_size=16,
                           reduce_level=level)
    assert search(torch.randn(2, 3, 16, 16)).shape == (2, 5)
    assert search.new().config['reduce_level'] == level


def test_cnas_network_flags_reach_the_network():
    common = ['--arch', 'DARTS_MORE_NONE_V3', '--dry_run', '--data', os.devnull, '--init_channels', '8',
              '--layers', '5']
    counts = {}
    for extra in ([], ['--prune_none'], ['--shuffle_groups', 'auto'], ['--reduce_level', '1']):
        result = run('train_CIFAR10.py', *common, *extra)
        counts[' '.join(extra)] = float(result.stdout.split('params:')[1].split()[0])
    reference = NetworkCIFAR(8, 10, 5, False, genotypes.NAMED['DARTS_MORE_NONE_V3'])
    assert counts[''] == pytest.approx(n_params(reference) / 1e6, abs=5e-7)
    assert counts['--prune_none'] < counts[''] and counts['--shuffle_groups auto'] < counts['']
    assert counts['--reduce_level 1'] == counts['']  # a strided stem, same weights
