"""NAG: the DAG cell space and its JSON form (nag_cells), the evaluation networks in the reference's
NAO skeleton, the one-shot supernet, the graph GAN (nag), and the build -> GAN -> generate -> train
pipeline from the command line."""
import json
import re
import signal
import time

import pytest
import torch
import torch.nn as nn

import build_nas_dataset
import gan
import gan_multiobj
import generate_archs
import generate_archs_multiobj
import genotypes
import model
import nag
import nag_cells
import nag_networks
import nasbench101
import train_CIFAR10
import train_ImageNet
import utils
import visualize
from nag_networks import NAGCell, NAGNetworkCIFAR, NAGNetworkImageNet, NAOFactorizedReduce
from tests import data_factory
from tests.helpers import assert_top1_in, run, start, top1_range

TINY_GAN = dict(latent_dim=8, label_dim=4, node_dim=12, graph_dim=6, layers=2, dropout=0.0)
TINY_GAN_FLAGS = ['--latent_dim', '8', '--label_embedding_size', '4', '--g_emb_size', '12', '--g_hidden_size', '6',
                  '--d_emb_size', '12', '--d_hidden_size', '6', '--batch_size', '8', '--workers', '0', '--no_progress']
TINY_BUILD = ['--dataset', 'cifar10', '--epochs', '1', '--init_channels', '4', '--layers', '2', '--batch_size', '8',
              '--eval_batch_size', '16', '--eval_init_channels', '4', '--eval_layers', '2', '--workers', '0',
              '--no_progress', '--report_freq', '0']
TINY_TRAIN = ['--init_channels', '4', '--layers', '2', '--batch_size', '16', '--test_batch_size', '16',
              '--workers', '0', '--no_progress', '--report_freq', '0']


def cell(matrix, ops):
    return nag_cells.make_cell(matrix, ['input0', 'input1', *ops, 'output'])


def exact_params(net):
    return sum(p.numel() for name, p in net.named_parameters() if 'auxiliary' not in name)


# ------------------------------------------------------------------------------------ cell space

def test_sampled_architectures_are_legal_and_survive_their_json_form(tmp_path):
    archs = nag_cells.sample_architectures(150, seed=3)
    assert len(set(archs)) == 150
    assert {len(c.ops) for a in archs for c in a} <= set(range(4, nag_cells.MAX_VERTICES + 1))
    for k, arch in enumerate(archs[:20]):
        assert all(nag_cells.is_valid(c) for c in arch)
        genotypes.save(arch, str(tmp_path / f'{k}.json'))
        back = genotypes.load(str(tmp_path / f'{k}.json'))
        assert isinstance(back, nag_cells.DagArch) and back == arch
    record = nag_cells.arch_to_dict(archs[0])
    with pytest.raises(utils.UserError, match='x.json: missing key reduce of a NAG architecture'):
        genotypes.from_dict({'normal': record['normal']}, source='x.json')


@pytest.mark.parametrize('matrix, ops, problem', [
    ([[0, 0, 1, 0], [0, 0, 0, 0], [1, 0, 0, 1], [0, 0, 0, 0]], ['sep_conv_3x3'], 'upper triangular'),
    ([[0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]], ['sep_conv_3x3'], 'between the two inputs'),
    ([[0, 0, 1, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
     ['sep_conv_3x3', 'avg_pool_3x3'], 'vertex 3 (avg_pool_3x3) feeds nothing'),
    ([[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]], ['sep_conv_3x3'],
     'vertex 2 (sep_conv_3x3) has no input'),
    ([[0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]], ['conv_9x9'], "unknown op 'conv_9x9'"),
    ([[0, 0, 1], [0, 0, 0], [0, 0, 0]], [], 'at least one op'),
])
def test_illegal_cells_are_refused_with_the_reason(matrix, ops, problem):
    spec = cell(matrix, ops)
    assert not nag_cells.is_valid(spec)
    with pytest.raises(utils.UserError, match=re.escape(problem)):
        nag_cells.cell_from_dict(nag_cells.cell_to_dict(spec))


def test_repair_drops_unreached_vertices_and_concatenates_dead_ends():
    #   2 reads input0 and feeds nothing; 3 has no input; 4 reads 2 and feeds the output
    spec = cell([[0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 1, 0],
                 [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]], ['avg_pool_3x3', 'max_pool_3x3', 'sep_conv_5x5'])
    fixed = nag_cells.repair(spec)
    assert fixed.ops == ('input0', 'input1', 'avg_pool_3x3', 'sep_conv_5x5', 'output')
    assert fixed.matrix == ((0, 0, 1, 0, 0), (0, 0, 0, 0, 0), (0, 0, 0, 1, 0), (0, 0, 0, 0, 1), (0, 0, 0, 0, 0))
    assert nag_cells.repair(cell([[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]], ['sep_conv_3x3'])) is None


# ------------------------------------------------------------------------------------ evaluation networks

def reference_params(C, stage_cells, num_classes, imagenet=False):
    """The parameter count (auxiliary head excluded) of the shipped architecture in the reference's
    NASNetworkCIFAR / NASNetworkImageNet, derived by hand from its structure (`build_nas_dataset/model.py`):
      * SepConv(k) on C channels: two (depthwise k x k, pointwise 1x1, BN) = 2 (k^2 C + C^2 + 2C);
        a FactorizedReduce or ReLU-1x1 conv-BN from c to C: c C + 2C; pools have none;
      * normal cell (preds: v2 {0,1}, v3 {1}, v4 {1,3}, v5 {1,3,4}, v6 {0,3,4}, v7 {1,2,5,6};
        output {0,1,2,3,4,7}): sep3 + 4 sep5 + maxpool, 6C out;
      * reduction cell: v2 sep5 reads inputs only (stride 2 on their sum), v3 sep3 reads {0,1,2}
        so both inputs are halved for it (2 FactorizedReduce), v4 sep5 reads input 1 (stride 2),
        the output concatenates {0,1,2,3,4} so both inputs are halved again (2 more): 5C out;
      * MaybeCalibrateSize: c_{k-2} halved after a reduction, else 1x1 to C if it has other than
        C channels; c_{k-1} 1x1 to C if it has other than C channels;
      * stems (Conv3x3 3 -> 3C + BN; or the DARTS ImageNet stems) and the final Linear."""
    def sep(k, c):
        return 2 * (k * k * c + c * c + 2 * c)

    def to(c_in, c):
        return c_in * c + 2 * c

    if imagenet:
        total = 3 * 9 * (C // 2) + C + (C // 2) * 9 * C + 2 * C + C * 9 * C + 2 * C
        c_pp, c_p, reduction_prev = C, C, True
    else:
        total = 3 * 9 * 3 * C + 2 * 3 * C
        c_pp, c_p, reduction_prev = 3 * C, 3 * C, False
    c = C
    for i in range(3 * stage_cells + 2):
        reduction = i in (stage_cells, 2 * stage_cells + 1)
        c *= 2 if reduction else 1
        total += to(c_pp, c) if reduction_prev or c_pp != c else 0
        total += to(c_p, c) if c_p != c else 0
        total += 2 * sep(5, c) + sep(3, c) + 4 * to(c, c) if reduction else sep(3, c) + 4 * sep(5, c)
        c_pp, c_p, reduction_prev = c_p, (5 if reduction else 6) * c, reduction
    return total + c_p * num_classes + num_classes


# The exact counts of the shipped architecture.  Besides the hand derivation above, they were
# reproduced outside this repo by a transcription of kunjing96/NAG `build_nas_dataset/model.py`
# and `base_ops.py` (NASNetworkCIFAR(layers=6, channels=36), NASNetworkImageNet(layers=4,
# channels=48 and 42)), whose eval-mode outputs also matched these networks' with shared weights.
# NAG's README: 4.3M on CIFAR-10; its train_imagenet.py defaults give 6.3M and C=42 gives 4.97M.
NAG_CIFAR10_PARAMS = 4274326
NAG_IMAGENET_PARAMS = {48: 6276448, 42: 4971763}


def test_shipped_architecture_has_the_reference_parameter_counts():
    assert genotypes.resolve('NAG', None) is nag_cells.REFERENCE_ARCH
    cifar = NAGNetworkCIFAR(36, 10, 20, True, nag_cells.REFERENCE_ARCH, keep_prob=0.6)
    assert exact_params(cifar) == reference_params(36, 6, 10) == NAG_CIFAR10_PARAMS
    assert round(utils.count_parameters_in_MB(cifar), 1) == 4.3
    for C, count in NAG_IMAGENET_PARAMS.items():
        assert exact_params(NAGNetworkImageNet(C, 1000, 14, True, nag_cells.REFERENCE_ARCH)) == count
        assert reference_params(C, 4, 1000, imagenet=True) == count
    for C, cells, classes in ((8, 5, 10), (6, 2, 3)):
        assert exact_params(NAGNetworkCIFAR(C, classes, cells, False, nag_cells.REFERENCE_ARCH)) == \
            reference_params(C, (cells - 2) // 3, classes)


def test_cell_count_must_be_3n_plus_2():
    assert [nag_networks.nag_stage_cells(n) for n in (2, 8, 14, 20)] == [0, 2, 4, 6]
    for layers in (1, 3, 19):
        with pytest.raises(utils.UserError, match=rf'--layers {layers}: a NAG network has 3N\+2 cells'):
            NAGNetworkCIFAR(4, 10, layers, False, nag_cells.REFERENCE_ARCH)


def test_reduction_cell_strides_sums_of_inputs_and_halves_mixed_ones():
    normal, reduce = nag_cells.REFERENCE_ARCH
    c = NAGCell(reduce, 24, 24, 8, reduction=True, reduction_prev=False)
    v2, v3, v4 = c.vertices  # preds {0,1}, {0,1,2}, {1}
    assert v2.op[0][1].stride == (2, 2) and len(v2.halve_inputs) == 0
    assert v3.op[0][1].stride == (1, 1) and set(v3.halve_inputs) == {'0', '1'}
    assert v4.op[0][1].stride == (2, 2) and len(v4.halve_inputs) == 0
    assert set(c.halve_outputs) == {'0', '1'} and c.multiplier == 5
    assert all(isinstance(m, NAOFactorizedReduce) for m in [*v3.halve_inputs.values(), *c.halve_outputs.values()])
    assert c(torch.randn(2, 24, 8, 8), torch.randn(2, 24, 8, 8)).shape == (2, 40, 4, 4)
    # A strided identity is a FactorizedReduce; a normal cell's identity is the identity.
    spec = cell([[0, 0, 1, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]], ['skip_connect'])
    assert isinstance(NAGCell(spec, 8, 8, 8, True, False).vertices[0].op, NAOFactorizedReduce)
    assert isinstance(NAGCell(spec, 8, 8, 8, False, False).vertices[0].op, nn.Identity)
    # Calibration: c_{k-2} is halved after a reduction; inputs with C channels are taken as they are.
    after_reduction = NAGCell(normal, 8, 16, 16, False, reduction_prev=True)
    assert type(after_reduction.preprocess0) is model.FactorizedReduce and after_reduction.preprocess1 is None


def test_nao_factorized_reduce_has_no_relu():
    torch.manual_seed(0)
    reduce = NAOFactorizedReduce(4, 6).double().eval()
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64)
    # NAO: AvgPool(1, stride 2) (= take every second pixel) and a 1x1 conv on x and on x shifted by
    # one pixel (zero-padded at the far edge), concatenated, BN; no ReLU, so negatives pass.
    shifted = nn.functional.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
    paths = [nn.functional.conv2d(path[:, :, ::2, ::2], conv.weight)
             for path, conv in ((x, reduce.conv_1), (shifted, reduce.conv_2))]
    # Two float64 computations of 4-term sums: they differ by ~1e-16 of the terms.
    torch.testing.assert_close(reduce(x), reduce.bn(torch.cat(paths, 1)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('network, size, in_channels', [(NAGNetworkCIFAR, 32, 3), (NAGNetworkCIFAR, 28, 1),
                                                        (NAGNetworkImageNet, 64, 3)])
def test_forward_shapes_with_and_without_the_auxiliary_head(network, size, in_channels):
    torch.manual_seed(0)
    net = network(4, 7, 5, True, nag_cells.REFERENCE_ARCH, keep_prob=0.6, in_channels=in_channels, image_size=size)
    net.drop_path_prob = 0.2
    x = torch.randn(2, in_channels, size, size)
    logits, aux = net.train()(x)
    assert logits.shape == aux.shape == (2, 7)
    logits, aux = net.eval()(x)
    assert logits.shape == (2, 7) and aux is None
    assert isinstance(net.classifier[0], nn.Dropout) and net.classifier[0].p == pytest.approx(0.4)
    head = [type(m) for m in net.auxiliary_head.features]
    assert head.count(nn.BatchNorm2d) == 2  # NAO's ImageNet head has BN after its 768-channel conv too
    if network is NAGNetworkImageNet:  # the stem outputs C channels at half the resolution of stem0's
        assert type(net.cells[0].preprocess0) is model.FactorizedReduce and net.cells[0].preprocess1 is None


def test_drop_path_spares_identity_vertices_and_grows_with_depth():
    # Vertex 2 is an identity of input 1, vertex 3 max-pools it; the output concatenates both.
    spec = cell([[0, 0, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]],
                ['skip_connect', 'max_pool_3x3'])
    c = NAGCell(spec, 4, 4, 4, reduction=False, reduction_prev=False)
    s1 = torch.rand(16, 4, 6, 6) + 1
    torch.manual_seed(0)
    out = c.train()(torch.zeros_like(s1), s1, drop_prob=0.5)
    assert torch.equal(out[:, :4], s1)  # never dropped (the reference dropped it)
    pooled = nn.functional.max_pool2d(s1, 3, 1, 1)
    kept = out[:, 4:].flatten(1).any(1)
    assert 0 < kept.sum() < 16
    assert torch.allclose(out[kept, 4:], 2 * pooled[kept]) and not out[~kept, 4:].any()
    assert torch.equal(c.eval()(torch.zeros_like(s1), s1, drop_prob=0.5)[:, 4:], pooled)

    net = NAGNetworkCIFAR(4, 10, 5, False, nag_cells.REFERENCE_ARCH)
    net.drop_path_prob = 0.3
    rates = []
    for k in net.cells:
        k.register_forward_hook(lambda module, args, output: rates.append(args[2]))
    net.train()(torch.randn(2, 3, 16, 16))
    assert rates == pytest.approx([0.3 * (i + 1) / 5 for i in range(5)])  # NAO: rate * (i + 1) / L


def test_drawing_shows_the_dag_with_ops_on_vertices(tmp_path, capsys):
    path = tmp_path / 'arch.json'
    genotypes.save(nag_cells.REFERENCE_ARCH, str(path))
    assert visualize.main([str(path)]) == 0
    dot = (tmp_path / 'normal_arch.dot').read_text()
    assert (tmp_path / 'reduce_arch.dot').exists()
    assert '"5 sep_conv_5x5" -> "6 sep_conv_5x5"' in dot and '"c_{k-2}" -> "c_{k}"' in dot
    assert dot.count('->') == sum(map(sum, nag_cells.REFERENCE_ARCH.normal.matrix))


def test_graph_tensors_encode_the_cell():
    spec = nag_cells.REFERENCE_ARCH[1]
    edges, nodes, n = nag.cell_tensors(spec)
    assert n == 6 and edges.shape == (10, 10) and nodes.shape == (10, len(nag_cells.VOCAB))
    assert torch.equal(edges.triu(), torch.zeros(10, 10))  # edge j -> i sits at [i][j], i > j
    assert edges[5, 4] == 1 and edges[4, 1] == 1 and edges[4, 0] == 0
    assert nodes[n:].sum() == 0 and nodes[n - 1, nag_cells.OUTPUT] == 1
    assert nag.cell_from_tensors(edges, nodes, n) == spec


def test_quantile_labels_follow_the_reference_split_points():
    values = [5, 1, 9, 3, 7, 2, 8, 4, 6]
    # split points sorted[3] = 4 and sorted[6] = 7
    assert nag.quantile_labels(values, 3) == [1, 0, 2, 0, 1, 0, 2, 0, 1]


# ------------------------------------------------------------------------------------ one-shot supernet

def test_one_shot_supernet_runs_both_sampled_cells():
    torch.manual_seed(0)
    supernet = nag.OneShotNetwork(4, 10, 5, max_vertices=6, image_size=16)
    x = torch.randn(4, 3, 16, 16)
    a, b = nag_cells.sample_architectures(2, seed=1, max_vertices=6)
    supernet.eval()
    with torch.no_grad():
        base, aux = supernet(x, a)
        assert base.shape == (4, 10) and aux is None
        assert not torch.allclose(base, supernet(x, (a[0], b[1]))[0])  # the reduction cell is used
        assert not torch.allclose(base, supernet(x, (b[0], a[1]))[0])  # and so is the normal cell
    supernet.train()
    small = cell([[0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]], ['sep_conv_3x3'])
    logits, aux = supernet(x, (small, small))
    assert aux.shape == (4, 10)
    logits.sum().backward()
    normal = supernet.cells[0]
    assert all(p.grad is not None for p in normal.vertices[0].sep_convs['sep_conv_3x3'].parameters())
    assert all(p.grad is None for p in normal.vertices[0].sep_convs['sep_conv_5x5'].parameters())
    assert all(p.grad is None for p in normal.vertices[1:].parameters())  # weights are shared, not all trained


# kunjing96/NAG @ e8dbeb4e6a27f9a55670a7bbb3065f31dd84b157, `build_nas_dataset/model_search.py`:
# NASWSNetworkCIFAR(args, 10, layers=3, max_num_vertices=10, channels=20, keep_prob=1.0,
# drop_path_keep_prob=0.9, use_aux_head, steps), its build_nas_dataset.py defaults, on the CPU.
REFERENCE_ONE_SHOT_PARAMS = {False: 1_725_270, True: 2_138_208}


@pytest.mark.parametrize('auxiliary', [False, True])
def test_one_shot_supernet_has_the_reference_codes_parameter_count(auxiliary):
    supernet = nag.OneShotNetwork(20, 10, 11, max_vertices=10, auxiliary=auxiliary)
    assert sum(p.numel() for p in supernet.parameters()) == REFERENCE_ONE_SHOT_PARAMS[auxiliary]


def test_one_shot_strided_vertex_shares_the_stride_one_weights():
    torch.manual_seed(0)
    vertex = nag.OneShotVertex(6, reduction=True).eval()
    x = torch.randn(2, 6, 8, 8)
    with torch.no_grad():
        for op in ('sep_conv_3x3', 'sep_conv_5x5'):
            sep = vertex.sep_convs[op]
            strided = type(sep)(6, 6, 3 if op == 'sep_conv_3x3' else 5, 2, 1 if op == 'sep_conv_3x3' else 2).eval()
            strided.load_state_dict(sep.state_dict())
            assert torch.equal(vertex(x, op, 2, 0.), strided(x))
        assert torch.equal(vertex(x, 'avg_pool_3x3', 2, 0.), torch.nn.functional.avg_pool2d(x, 3, 2, 1, count_include_pad=False))
        assert vertex(x, 'skip_connect', 2, 0.).shape == (2, 6, 4, 4)
        assert vertex(x, 'skip_connect', 1, 0.) is x


def test_sampled_cells_prune_dead_ends_as_the_reference():
    # Vertex 2 feeds only vertex 3, which feeds nothing: both are dead ends; vertex 4 stays.
    spec = nag_cells.make_cell([[0, 0, 1, 0, 1, 0], [0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0],
                                [0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0]],
                               ['input0', 'input1', 'sep_conv_3x3', 'max_pool_3x3', 'avg_pool_3x3', 'output'])
    pruned = nag_cells.prune(spec)
    assert pruned.ops == ('input0', 'input1', 'avg_pool_3x3', 'output')
    assert pruned.matrix == ((0, 0, 1, 0), (0, 0, 0, 0), (0, 0, 0, 1), (0, 0, 0, 0))
    joined = nag_cells.repair(spec)
    assert joined.ops == spec.ops and joined.matrix[3][5] == 1  # the dead end concatenated instead
    archs = nag_cells.sample_architectures(40, seed=3)
    assert archs != nag_cells.sample_architectures(40, seed=3, dead_ends='join')
    for arch in archs:
        for c in arch:
            assert nag_cells.prune(c) == c  # nothing left to prune


# ------------------------------------------------------------------------------------ generator and discriminator

@pytest.fixture
def tiny_gan():
    torch.manual_seed(0)
    generator = nag.ArchGenerator([3], max_vertices=7, **TINY_GAN)
    discriminator = nag.ArchDiscriminator([3], label_dim=4, node_dim=12, graph_dim=6, gcn_dropout=0, mlp_dropout=0)
    return generator, discriminator


def test_generator_output_is_a_legal_dag_for_every_class(tiny_gan):
    generator, _ = tiny_gan
    z = torch.randn(16, generator.latent_dim)
    for label in range(3):
        for edges, nodes, n in generator(z, torch.full((16, 1), label)):
            assert torch.equal(edges.triu(), torch.zeros_like(edges))
            assert ((n >= 3) & (n <= 7)).all()
            assert torch.allclose(nodes[:, :, nag_cells.INPUT0:nag_cells.INPUT1 + 1].sum((1, 2)), torch.full((16,), 2.))
            for b in range(16):
                assert nodes[b, n[b] - 1].argmax() == nag_cells.OUTPUT and nodes[b, n[b]:].sum() == 0
        archs = nag.generate(generator, [label], 8, seed=label, batch_size=16)
        assert len(archs) == 8 and len(set(archs)) == 8
        assert all(nag_cells.is_valid(c, max_vertices=7) for arch in archs for c in arch)


def test_conditioning_changes_what_is_generated(tiny_gan):
    generator, _ = tiny_gan
    generator.eval()
    z = torch.randn(16, generator.latent_dim)
    with torch.no_grad():
        low = generator(z, torch.zeros(16, 1, dtype=torch.long))
        high = generator(z, torch.full((16, 1), 2))
    assert not torch.allclose(low[0][1], high[0][1])


def test_discriminator_step_lowers_its_loss_and_generator_step_only_moves_the_generator(tiny_gan):
    generator, discriminator = tiny_gan
    real = nag.arch_batch(nag_cells.sample_architectures(16, seed=2, max_vertices=7), max_vertices=7)
    labels = torch.randint(3, (16, 1))
    torch.manual_seed(5)
    fixed_fake_labels = torch.randint(3, (16, 1))
    with torch.no_grad():
        fixed_fake = generator(torch.randn(16, generator.latent_dim), fixed_fake_labels)

    def d_loss():
        with torch.no_grad():
            return 0.5 * (((discriminator(*real, labels) - nag.REAL) ** 2).mean()
                          + ((discriminator(*fixed_fake, fixed_fake_labels) - nag.FAKE) ** 2).mean())

    optimizer_d = torch.optim.Adam(discriminator.parameters(), 1e-2, betas=(0.5, 0.999))
    before = d_loss()
    nag.discriminator_step(generator, discriminator, optimizer_d, real, labels)
    assert d_loss() < before

    optimizer_g = torch.optim.Adam(generator.parameters(), 1e-3, betas=(0.5, 0.999))
    g_before = [p.detach().clone() for p in generator.parameters()]
    d_before = [p.detach().clone() for p in discriminator.parameters()]
    loss = nag.generator_step(generator, discriminator, optimizer_g, 16, torch.device('cpu'))
    assert loss > 0
    assert any(not torch.equal(a, p) for a, p in zip(g_before, generator.parameters()))
    assert all(torch.equal(a, p) for a, p in zip(d_before, discriminator.parameters()))


# ------------------------------------------------------------------------------------ scripts

@pytest.fixture(scope='module')
def cifar(tmp_path_factory):
    return data_factory.make_cifar10(str(tmp_path_factory.mktemp('cifar')), n_train=64, n_test=32)


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_killed_dataset_build_resumes_without_redoing_entries(tmp_path, cifar):
    save = tmp_path / 'nasdata'
    args = [*TINY_BUILD, '--data', cifar, '--num_archs', '60', '--save', save]
    archs = save / 'archs.jsonl'
    proc = start('build_nas_dataset.py', *args)
    deadline = time.time() + 120
    def scored():
        return len(archs.read_text().splitlines()) if archs.exists() else 0

    while proc.poll() is None and time.time() < deadline and scored() < 3:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    scored = archs.read_text().splitlines()
    assert 3 <= len(scored) < 60, 'the kill must land while architectures are being scored'
    complete = [json.loads(line) for line in scored if line.endswith('}')]

    run('build_nas_dataset.py', *args, '--resume')
    records = read_jsonl(archs)
    assert sorted(r['index'] for r in records) == list(range(60))
    assert records[:len(complete)] == complete  # finished entries kept, not redone
    pool = read_jsonl(save / 'pool.jsonl')
    for record in records:
        arch = nag_cells.arch_from_dict(record)
        assert nag_cells.arch_to_dict(arch) == pool[record['index']]
        assert 0 <= record['accuracy'] <= 100 and record['params_MB'] > 0 and record['flops'] > 0
    assert len(read_jsonl(save / 'metrics.jsonl')) == 1  # training was not repeated

    whole = tmp_path / 'whole'
    assert build_nas_dataset.main([*map(str, args[:-1]), str(whole)]) == 0
    assert read_jsonl(whole / 'archs.jsonl') == records  # as if it had never been killed


def test_pipeline_gan_generate_search_and_train(tmp_path, cifar, capsys):
    # In-process where the test only needs the outputs; the researcher's last two commands as subprocesses.
    build = tmp_path / 'nasdata'
    assert build_nas_dataset.main([*TINY_BUILD, '--data', cifar, '--num_archs', '24', '--max_vertices', '7',
                                   '--save', str(build)]) == 0
    dataset = str(build / 'archs.jsonl')
    record = read_jsonl(dataset)[0]
    assert record['params_MB'] == exact_params(NAGNetworkCIFAR(4, 10, 2, False, nag_cells.arch_from_dict(record))) / 1e6
    gan_single, gan_multi = tmp_path / 'gan', tmp_path / 'gan_multi'
    assert gan.main(['--nas_dataset', dataset, '--epochs', '2', '--max_step', '7', *TINY_GAN_FLAGS,
                     '--save', str(gan_single)]) == 0
    assert [m['epoch'] for m in read_jsonl(gan_single / 'metrics.jsonl')] == [0, 1]
    resumed = tmp_path / 'gan_resumed'
    gan_args = ['--nas_dataset', dataset, '--max_step', '7', *TINY_GAN_FLAGS, '--save', str(resumed)]
    assert gan.main([*gan_args, '--epochs', '1']) == 0
    assert gan.main([*gan_args, '--epochs', '2', '--resume']) == 0
    whole = torch.load(gan_single / 'generator.pt', weights_only=False)['state_dict']
    again = torch.load(resumed / 'generator.pt', weights_only=False)['state_dict']
    assert all(torch.equal(whole[k], again[k]) for k in whole)  # resuming continues the same run exactly
    assert gan_multiobj.main(['--nas_dataset', dataset, '--epochs', '1', '--max_step', '7', *TINY_GAN_FLAGS,
                              '--save', str(gan_multi)]) == 0

    gen = tmp_path / 'gen'
    run('generate_archs.py', '--generator', gan_single / 'generator.pt', '--acc_class', '2', '--num', '4',
        '--search', '2', '--search_epochs', '1', '--save', gen, '--', '--data', cifar, '--init_channels', '4',
        '--layers', '2', '--batch_size', '16', '--test_batch_size', '16', '--workers', '0', '--no_progress',
        '--report_freq', '0')
    kept = read_jsonl(gen / 'class_2' / 'archs.jsonl')
    assert len(kept) == 4 and all(all(nag_cells.is_valid(c, 7) for c in nag_cells.arch_from_dict(r)) for r in kept)
    searched = read_jsonl(gen / 'search.jsonl')
    assert len(searched) == 2
    best = max(searched, key=lambda r: r['accuracy'])
    best_arch = nag_cells.arch_from_dict(best)
    assert genotypes.load(str(gen / 'best.json')) == best_arch
    assert (gen / 'normal_best.dot').exists() and (gen / 'reduce_best.dot').exists()
    trained = torch.load(gen / 'search' / 'arch_000' / 'trained.pt', weights_only=False)
    assert trained['network']['type'] == 'nag' and trained['genotype'] == kept[0]
    # The reference's eval_archs.py settings, under the flags given after `--`.
    assert trained['network']['auxiliary'] and trained['args']['cutout'] and trained['args']['schedule_epochs'] == 600
    assert trained['args']['batch_size'] == 16 and trained['args']['drop_path_prob'] == 0.2
    result = run('train_CIFAR10.py', '--arch_path', gen / 'best.json', '--dry_run', '--init_channels', '4',
                 '--layers', '2')
    assert f'params: {exact_params(NAGNetworkCIFAR(4, 10, 2, False, best_arch)) / 1e6:.6f} M' in result.stdout

    multi = tmp_path / 'gen_multi'
    assert generate_archs_multiobj.main(['--generator', str(gan_multi / 'generator.pt'), '--acc_class', '1',
                                         '--num', '3', '--search', '0', '--save', str(multi)]) == 0
    assert sorted(p.name for p in multi.iterdir() if p.is_dir()) == ['class_1_0', 'class_1_1', 'class_1_2']
    assert len(read_jsonl(multi / 'class_1_2' / 'archs.jsonl')) == 3

    capsys.readouterr()
    assert generate_archs.main(['--generator', str(gan_multi / 'generator.pt'), '--save', str(tmp_path / 'x')]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error:') and 'generate_archs_multiobj.py' in lines[0]


def test_train_scripts_build_the_shipped_architecture_in_the_reference_skeleton(capsys):
    result = run('train_CIFAR10.py', '--arch', 'NAG', '--dry_run')
    assert f'params: {NAG_CIFAR10_PARAMS / 1e6:.6f} M' in result.stdout
    capsys.readouterr()
    assert train_ImageNet.main(['--arch', 'NAG', '--init_channels', '42', '--dry_run']) == 0
    assert f'params: {NAG_IMAGENET_PARAMS[42] / 1e6:.6f} M' in capsys.readouterr().out
    cases = [
        (['--arch', 'NAG', '--layers', '19'], '--layers 19: a NAG network has 3N+2 cells'),
        (['--arch', 'NAG', '--pooled_head'], 'belong to DARTS cell networks, not to NAG cells'),
        (['--arch', 'NAG', '--shuffle_groups', 'auto'], 'belong to DARTS cell networks, not to NAG cells'),
        (['--arch', 'DARTS', '--keep_prob', '0.5'], '--keep_prob is the classifier dropout of NAG networks'),
        (['--arch', 'NAG', '--keep_prob', '0'], '--keep_prob 0.0: the classifier keeps a share'),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert train_CIFAR10.main([*argv, '--dry_run']) == 2, argv
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith('error:') and message in lines[0], (argv, lines)


def test_dag_json_trains_and_tests_and_other_architectures_are_refused(tmp_path, cifar):
    arch = nag_cells.sample_architectures(1, seed=5, max_vertices=6)[0]
    assert arch != nag_cells.REFERENCE_ARCH
    arch_path = tmp_path / 'arch.json'
    arch_path.write_text(json.dumps(nag_cells.arch_to_dict(arch)))
    save = tmp_path / 'train'
    run('train_CIFAR10.py', '--arch_path', arch_path, '--data', cifar, '--epochs', '1', '--auxiliary', *TINY_TRAIN,
        '--save', save)
    trained = torch.load(save / 'trained.pt', weights_only=False)
    assert trained['network']['type'] == 'nag' and not trained['network']['imagenet']
    assert trained['network']['keep_prob'] == 0.6 and trained['genotype'] == nag_cells.arch_to_dict(arch)
    result = run('test_CIFAR10.py', '--model_path', save / 'trained.pt', '--arch_path', arch_path, '--data', cifar,
                 '--batch_size', '16', '--workers', '0', '--no_progress')
    # Training evaluates channels-last, test_CIFAR10.py in NCHW: both against a float64 evaluation.
    bounds = top1_range(save / 'trained.pt', 'cifar10', cifar)
    assert_top1_in(json.loads(result.stdout.strip().splitlines()[-1])['top1'], bounds)
    assert_top1_in(trained['metrics']['top1'], bounds)
    for other in (['--arch', 'NAG'], ['--arch', 'DARTS']):
        refused = run('test_CIFAR10.py', '--model_path', save / 'trained.pt', *other, '--data', cifar, check=False)
        assert refused.returncode == 2 and 'another architecture' in refused.stderr


# ------------------------------------------------------------------------------------ NAS-Bench-101

NB101_OPS = ['input', 'conv1x1-bn-relu', 'conv3x3-bn-relu', 'conv3x3-bn-relu', 'conv3x3-bn-relu', 'maxpool3x3',
             'output']
NB101_MATRIX = [[0, 1, 1, 1, 0, 1, 0], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 1, 0, 0],
                [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0]]


def test_nasbench101_specs_build_and_run():
    spec = nasbench101.make_spec(NB101_MATRIX, NB101_OPS)
    assert nasbench101.spec_problem(spec) is None
    assert nasbench101.vertex_channels(8, 30, spec.matrix) == [8, 8, 8, 7, 7, 7, 30]  # 30 = 8 + 8 + 7 + 7
    with_skip = nasbench101.make_spec([[0, 1, 0, 1], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]],
                                      ['input', 'maxpool3x3', 'conv3x3-bn-relu', 'output'])
    for s in (spec, with_skip):
        net = nasbench101.Network(s, num_classes=10, stem_channels=8, stacks=2, cells_per_stack=1)
        assert net(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_nasbench101_limits_and_pruning():
    too_many_edges = nasbench101.make_spec([[int(j > i) for j in range(6)] for i in range(6)],
                                           ['input'] + ['conv1x1-bn-relu'] * 4 + ['output'])
    assert '15 edges' in nasbench101.spec_problem(too_many_edges)
    eight = nasbench101.make_spec([[int(j == i + 1) for j in range(8)] for i in range(8)],
                                  ['input'] + ['maxpool3x3'] * 6 + ['output'])
    assert '2..7 vertices' in nasbench101.spec_problem(eight)
    cut = nasbench101.make_spec([[0, 1, 0], [0, 0, 0], [0, 0, 0]], ['input', 'maxpool3x3', 'output'])
    with pytest.raises(utils.UserError, match='not reachable'):
        nasbench101.check_spec(cut)
    dangling = nasbench101.make_spec([[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]],
                                     ['input', 'conv3x3-bn-relu', 'maxpool3x3', 'output'])
    assert nasbench101.prune(dangling) == nasbench101.make_spec([[0, 1, 0], [0, 0, 1], [0, 0, 0]],
                                                                 ['input', 'conv3x3-bn-relu', 'output'])


def test_user_mistakes_give_one_error_line(tmp_path, capsys):
    not_a_dataset = tmp_path / 'archs.jsonl'
    not_a_dataset.write_text('{"index": 0}\n')
    cases = [
        (gan.main, ['--nas_dataset', str(tmp_path / 'missing.jsonl')], 'build one with build_nas_dataset.py'),
        (gan.main, ['--nas_dataset', str(not_a_dataset)], 'line 1 is not a NAS-dataset record'),
        (generate_archs.main, ['--generator', str(tmp_path / 'missing.pt')], 'does not exist'),
        (build_nas_dataset.main, ['--num_archs', '0', '--dry_run'], '--num_archs must be at least 1'),
    ]
    for main, argv, message in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith('error:') and message in lines[0], (argv, lines)


def test_the_graph_generator_builds_nasbench101_cells():
    spec = nasbench101.make_spec(NB101_MATRIX, NB101_OPS)
    assert nasbench101.spec_from_tensors(*nag.cell_tensors(spec, 7, nasbench101.VOCAB)) == spec
    torch.manual_seed(0)
    generator = nag.CellGenerator(8, 12, 6, 2, 0.0, nasbench101.MAX_VERTICES, input_kinds=(nasbench101.INPUT,),
                                  vocab_size=len(nasbench101.VOCAB))
    edges, nodes, n = generator(torch.randn(32, 8))
    assert (nodes[:, 0, nasbench101.INPUT] == 1).all() and (nodes[:, 1:, nasbench101.INPUT] == 0).all()
    specs = [nasbench101.spec_from_tensors(edges[b], nodes[b], n[b]) for b in range(32)]
    assert any(specs)
    for s in filter(None, specs):
        assert nasbench101.spec_problem(s) is None and sum(map(sum, s.matrix)) <= nasbench101.MAX_EDGES
        net = nasbench101.Network(s, stem_channels=4, stacks=1, cells_per_stack=1)
        assert net(torch.randn(1, 3, 8, 8)).shape == (1, 10)


@pytest.mark.parametrize('decouple', [False, True])
def test_adabelief_takes_the_papers_steps(decouple):
    """Zhuang et al. (NeurIPS 2020), Algorithm 2 with bias correction, as NAG configures it: three
    steps recomputed in float64 from the formula (rounding ~1e-16 per operation; the bound is 1e-12)."""
    import argparse

    import evaluation
    args = argparse.Namespace(optimizer='adabelief', learning_rate=1e-3, adabelief_eps=1e-8, weight_decay=5e-4,
                              weight_decouple=decouple, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    p = torch.randn(7, dtype=torch.float64, generator=g).requires_grad_()
    optimizer = evaluation.make_optimizer(args, [p])
    lr, (beta1, beta2), eps, wd = 1e-3, (0.9, 0.999), 1e-8, 5e-4
    theta, m, s = p.detach().clone(), torch.zeros(7, dtype=torch.float64), torch.zeros(7, dtype=torch.float64)
    for t in (1, 2, 3):
        grad = torch.randn(7, dtype=torch.float64, generator=g)
        p.grad = grad.clone()
        optimizer.step()
        if decouple:
            theta = theta * (1 - lr * wd)
        else:
            grad = grad + wd * theta
        m = beta1 * m + (1 - beta1) * grad
        s = beta2 * s + (1 - beta2) * (grad - m) ** 2 + eps
        theta = theta - lr / (1 - beta1 ** t) * m / ((s / (1 - beta2 ** t)).sqrt() + eps)
        assert float((p.detach() - theta).abs().max()) < 1e-12, t


def test_nag_preset_trains_with_adabelief_at_a_constant_rate():
    import evaluation
    import cli
    parser = evaluation.train_parser('cifar10')
    args = cli.parse(parser, ['--preset', 'nag'])
    assert (args.optimizer, args.learning_rate, args.weight_decay, args.scheduler) == ('adabelief', 1e-3, 5e-4, 'constant')
    optimizer = evaluation.make_optimizer(args, [torch.zeros(2, requires_grad=True)])
    assert type(optimizer).__name__ == 'AdaBelief' and optimizer.defaults['eps'] == 1e-8
    scheduler = evaluation.make_scheduler(args, optimizer)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    assert scheduler.get_last_lr() == [1e-3]
    cifar100 = cli.parse(evaluation.train_parser('cifar100'), ['--preset', 'nag'])
    assert (cifar100.optimizer, cifar100.learning_rate) == ('sgd', 0.025)


def test_dataset_accuracy_is_the_mean_of_the_last_scoring_epochs(tmp_path, cifar):
    save = tmp_path / 'scored'
    assert build_nas_dataset.main([*TINY_BUILD, '--data', cifar, '--num_archs', '5', '--max_vertices', '6',
                                   '--epochs', '3', '--score_epochs', '2', '--save', str(save)]) == 0
    epochs = read_jsonl(save / 'scores.jsonl')
    assert [e['epoch'] for e in epochs] == [1, 2] and all(len(e['scores']) == 5 for e in epochs)
    for record in read_jsonl(save / 'archs.jsonl'):
        assert record['accuracy'] == (epochs[0]['scores'][record['index']] + epochs[1]['scores'][record['index']]) / 2
    once = tmp_path / 'once'
    assert build_nas_dataset.main([*TINY_BUILD, '--data', cifar, '--num_archs', '5', '--max_vertices', '6',
                                   '--score_epochs', '0', '--no-auxiliary', '--save', str(once)]) == 0
    assert not (once / 'scores.jsonl').exists() and len(read_jsonl(once / 'archs.jsonl')) == 5


# kunjing96/NAG @ e8dbeb4e6a27f9a55670a7bbb3065f31dd84b157, `build_nas_dataset/graph_util.hash_module`
# (NAS-Bench-101's), run on these graphs (random, seed 7) on the CPU.
NB101_HASHES = [
    ([[0, 0, 1, 1, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]], [-1, 0, 0, 2, -2],
     '948e927aa106887b2aa502bd7e9ecfe4'),
    ([[0, 1, 0, 0, 0, 0], [0, 0, 1, 0, 1, 1], [0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0],
      [0, 0, 0, 0, 0, 0]], [-1, 2, 0, 0, 2, -2], '344a50c49f76d2f36db4edeb043bf165'),
    ([[0, 1, 1, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 1],
      [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]], [-1, 2, 2, 2, 1, 1, -2],
     '3ad49ce274b74961db29bd80897da4cf'),
    ([[0, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 0, 1], [0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 1],
      [0, 0, 0, 0, 0, 0]], [-1, 0, 1, 2, 1, -2], '8ff52ddaa9fa48c6e9610de579f5baec'),
    ([[0, 1, 1, 0, 0, 1, 0], [0, 0, 1, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0, 1],
      [0, 0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]], [-1, 0, 0, 1, 2, 0, -2],
     '2b16d85552d899024881ee375eed3525'),
    ([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 0, 0]], [-1, 2, 2, -2], '6799886eeaf54b1a7051b0f7562f14d5'),
]


@pytest.mark.parametrize('matrix, labels, expected', NB101_HASHES)
def test_nasbench101_graph_hash_is_the_references(matrix, labels, expected):
    assert nasbench101.graph_hash(matrix, labels) == expected


def test_nasbench101_spec_hash_identifies_isomorphic_cells():
    ops = nasbench101.OPS
    spec = nasbench101.make_spec([[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0]],
                                 ['input', ops[0], ops[2], 'output'])
    swapped = nasbench101.make_spec(spec.matrix, ['input', ops[2], ops[0], 'output'])  # vertices 1 and 2 relabelled
    other = nasbench101.make_spec(spec.matrix, ['input', ops[1], ops[2], 'output'])
    # A vertex off every path is pruned before hashing, as NAS-Bench-101's ModelSpec does.
    padded = nasbench101.make_spec([[0, 1, 1, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0],
                                    [0, 0, 0, 0, 0]], ['input', ops[0], ops[2], ops[1], 'output'])
    assert nasbench101.spec_hash(spec) == nasbench101.spec_hash(swapped) == nasbench101.spec_hash(padded)
    assert nasbench101.spec_hash(other) != nasbench101.spec_hash(spec)
    assert nasbench101.unique_specs([spec, other, swapped, padded]) == [spec, other]


def test_ensemble_voting_on_hand_made_logits():
    import test_ensemble
    target = torch.tensor([0, 1, 2])
    # Three members, three samples, four classes.
    members = [torch.tensor([[9., 5, 0, 0], [0, 9, 5, 0], [5, 9, 0, 0]]),
               torch.tensor([[9., 0, 5, 0], [9, 5, 0, 0], [0, 9, 5, 0]]),
               torch.tensor([[0., 9, 5, 0], [0, 9, 0, 5], [0, 0, 9, 5]])]
    # Hard: rank-0 votes (0, 0, 1) -> 0; (1, 0, 1) -> 1; (1, 1, 2) -> 1: samples 0 and 1 right.
    assert test_ensemble.ensemble_accuracy(members, target, 'hard', topk=(1,)) == [200 / 3]
    # Rank-1 votes of sample 2: (0, 2, 3) -> a tie, the smaller class 0; label 2 is not in the top 2.
    assert test_ensemble.ensemble_accuracy(members, target, 'hard', topk=(2,)) == [200 / 3]
    # Soft: the mean logits rank 0 first for sample 0, 1 for sample 1 and 1 for sample 2 (6 > 14/3).
    assert test_ensemble.ensemble_accuracy(members, target, 'soft', topk=(1, 2)) == [200 / 3, 100.0]


def test_ensemble_of_one_model_thrice_is_that_model(tmp_path, cifar):
    save = tmp_path / 'member'
    run('train_CIFAR10.py', *TINY_TRAIN, '--data', cifar, '--arch', 'NAG', '--epochs', '1', '--save', save)
    # The same batches as the single test, so each member's logits are those of test_CIFAR10.py.
    single = json.loads(run('test_CIFAR10.py', '--data', cifar, '--model_path', save / 'trained.pt', '--workers', '0',
                            '--batch_size', '16', '--no_progress').stdout.splitlines()[-1])
    for voting in ('hard', 'soft'):
        result = json.loads(run('test_ensemble.py', '--data', cifar, '--model_paths', *[save / 'trained.pt'] * 3,
                                '--voting', voting, '--workers', '0', '--batch_size', '16').stdout.splitlines()[-1])
        # Accuracies are counts over the 32 test images: equal predictions give equal numbers.
        assert result['members'] == 3 and result['top1'] == pytest.approx(single['top1'], abs=1e-4)
