import pytest
import torch
import torch.nn as nn

import attention
import genotypes
import model
import operations
from genotypes import Genotype
from model import Cell, NetworkCIFAR, NetworkImageNet
from utils import count_parameters_in_MB, drop_path

NAMED = ['NASNet', 'AmoebaNet', 'DARTS_V1', 'DARTS_V2', 'Att_DARTS', 'MyDARTS']

# Exact parameter counts without the auxiliary head: NetworkCIFAR(36, 10, 20) and
# NetworkImageNet(48, 1000, 14).  Oracles:
#  * DARTS_V2 CIFAR 3,349,342 is the "param size = 3.349342MB" that quark0/darts `train.py` logs
#    (the README's 3.3M); the DARTS paper gives 4.7M for ImageNet.
#  * Att_DARTS: the Att-DARTS README gives 3.2M (CIFAR-10) and 4.6M (ImageNet).
#  * Every exact integer below was also reproduced by building the reference code itself outside
#    this repo: quark0/darts `cnn/model.py` + `cnn/operations.py` + `cnn/genotypes.py` for the
#    four DARTS-style genotypes, and chomin/Att-DARTS `model.py` Cell + `attentions.py`
#    constructors for Att_DARTS (ImageNet with the height fixed to 28; with the reference's 128
#    the count is the same because Att_DARTS has no GE).  NASNet / AmoebaNet / DARTS_V1 have no
#    published exact figure for this skeleton; the reference build is their only oracle.
PARAMS_CIFAR = {
    'NASNet': 3830950,
    'AmoebaNet': 3145078,
    'DARTS_V1': 3169414,
    'DARTS_V2': 3349342,
    'Att_DARTS': 3231343,
    # chomin/Att-DARTS@1b273a1 `model.NetworkCIFAR(36, 10, 20, True, MyDARTS)`, its 2-tuples given the
    # empty third element its model reads (the count without the auxiliary head).
    'MyDARTS': 1687654,
}
PARAMS_IMAGENET = {
    'NASNet': 5564320,
    'AmoebaNet': 4627360,
    'DARTS_V1': 4510432,
    'DARTS_V2': 4718752,
    'Att_DARTS': 4641666,
    'MyDARTS': 2965792,  # chomin/Att-DARTS@1b273a1 `model.NetworkImageNet(48, 1000, 14, True, ...)`
}


def _exact(net):
    return sum(p.numel() for name, p in net.named_parameters() if 'auxiliary' not in name)


@pytest.mark.parametrize('name', NAMED)
def test_parameter_count_cifar(name):
    net = NetworkCIFAR(36, 10, 20, True, genotypes.NAMED[name])
    assert _exact(net) == PARAMS_CIFAR[name]
    assert count_parameters_in_MB(net) == PARAMS_CIFAR[name] / 1e6
    # The auxiliary head exists and is excluded by its attribute name.
    assert sum(p.numel() for p in net.auxiliary_head.parameters()) > 0


@pytest.mark.parametrize('name', NAMED)
def test_parameter_count_imagenet(name):
    net = NetworkImageNet(48, 1000, 14, True, genotypes.NAMED[name])
    assert _exact(net) == PARAMS_IMAGENET[name]


def test_published_sizes():
    assert round(count_parameters_in_MB(NetworkCIFAR(36, 10, 20, True, genotypes.DARTS_V2)), 3) == 3.349
    assert round(count_parameters_in_MB(NetworkCIFAR(36, 10, 20, True, genotypes.Att_DARTS)), 3) == 3.231
    assert round(count_parameters_in_MB(NetworkImageNet(48, 1000, 14, True, genotypes.DARTS_V2)), 1) == 4.7
    assert round(count_parameters_in_MB(NetworkImageNet(48, 1000, 14, True, genotypes.Att_DARTS)), 1) == 4.6


def test_auxiliary_heads_as_reference():
    cifar = model.AuxiliaryHeadCIFAR(16, 10)
    kinds = [type(m) for m in cifar.features]
    assert kinds == [nn.ReLU, nn.AvgPool2d, nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    pool = cifar.features[1]
    assert (pool.kernel_size, pool.stride, pool.count_include_pad) == (5, 3, False)
    imagenet = model.AuxiliaryHeadImageNet(16, 10)
    kinds = [type(m) for m in imagenet.features]
    assert kinds == [nn.ReLU, nn.AvgPool2d, nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Conv2d, nn.ReLU]  # no BN after 768
    pool = imagenet.features[1]
    assert (pool.kernel_size, pool.stride) == (5, 2)
    assert cifar(torch.randn(2, 16, 8, 8)).shape == (2, 10)
    assert imagenet(torch.randn(2, 16, 7, 7)).shape == (2, 10)


@pytest.mark.parametrize('size', [2, 3, 4, 5, 7, 8, 13, 14, 28])
def test_auxiliary_head_other_sizes(size):
    head = model.AuxiliaryHeadCIFAR(8, 10, size).eval()
    assert head(torch.randn(2, 8, size, size)).shape == (2, 10)
    head = model.AuxiliaryHeadImageNet(8, 10, size).eval()
    assert head(torch.randn(2, 8, size, size)).shape == (2, 10)


@pytest.mark.parametrize('name', NAMED)
def test_forward_cifar(name):
    torch.manual_seed(0)
    net = NetworkCIFAR(8, 10, 5, True, genotypes.NAMED[name])
    net.drop_path_prob = 0.2
    x = torch.randn(2, 3, 32, 32)
    logits, aux = net(x)
    assert logits.shape == (2, 10) and aux.shape == (2, 10)
    (logits.sum() + aux.sum()).backward()
    # Every parameter takes part (DDP without find_unused_parameters needs that).
    assert all(p.grad is not None for p in net.parameters())
    net.eval()
    with torch.no_grad():
        logits, aux = net(x)
    assert logits.shape == (2, 10) and aux is None


@pytest.mark.parametrize('name', NAMED)
def test_forward_imagenet(name):
    torch.manual_seed(0)
    net = NetworkImageNet(8, 7, 3, True, genotypes.NAMED[name])
    x = torch.randn(2, 3, 224, 224)
    logits, aux = net(x)
    assert logits.shape == (2, 7) and aux.shape == (2, 7)
    net.eval()
    with torch.no_grad():
        logits, aux = net(x)
    assert logits.shape == (2, 7) and aux is None


def test_no_auxiliary():
    net = NetworkCIFAR(8, 10, 5, False, genotypes.DARTS_V2)
    logits, aux = net(torch.randn(2, 3, 32, 32))
    assert aux is None and logits.shape == (2, 10)
    assert not any('auxiliary' in name for name, _ in net.named_parameters())


def test_grey_images():
    torch.manual_seed(0)
    net = NetworkCIFAR(8, 10, 5, True, genotypes.DARTS_V2, in_channels=1, image_size=28)
    logits, aux = net(torch.randn(2, 1, 28, 28))
    assert logits.shape == (2, 10) and aux.shape == (2, 10)
    pool = net.auxiliary_head.features[1]  # 7x7 input -> 2x2
    assert pool(torch.randn(1, 1, 7, 7)).shape[-2:] == (2, 2)


@pytest.mark.parametrize('size', [25, 27, 16])
def test_odd_sizes(size):
    net = NetworkCIFAR(8, 10, 5, True, genotypes.AmoebaNet, image_size=size)
    logits, aux = net(torch.randn(2, 3, size, size))
    assert logits.shape == (2, 10) and aux.shape == (2, 10)


def test_pooled_head():
    net = NetworkCIFAR(8, 100, 5, False, genotypes.DARTS_V2, pooled_head=True)
    C_prev = net.cells[-1].multiplier * 32
    assert net.classifier.in_features == 4 * C_prev
    logits, _ = net(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 100)


def _attention_sizes(net, x):
    """Run x through net and return, for each attention whose size matters (GE), its build
    kernel and the size it actually saw."""
    seen = []
    hooks = [m.register_forward_pre_hook(lambda mod, inp: seen.append((mod.kernel, tuple(inp[0].shape[-2:]))))
             for m in net.modules() if isinstance(m, attention.GEThetaPlus)]
    net.eval()
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return seen


GE_EVERYWHERE = Genotype(
    normal=[('sep_conv_3x3', 0, 'GE_theta-plus'), ('skip_connect', 1, 'GE_theta-plus'),
            ('GE_theta-plus', 0, ''), ('max_pool_3x3', 2, 'SE')],
    normal_concat=[2, 3],
    reduce=[('GE_theta-plus', 0, ''), ('sep_conv_3x3', 1, 'GE_theta-plus'),
            ('skip_connect', 2, 'GE_theta-plus'), ('avg_pool_3x3', 0, 'BAM')],
    reduce_concat=[2, 3],
    normal_bottleneck='GE_theta-plus', reduce_bottleneck='GE_theta-plus')


def test_attention_heights_imagenet():
    # Cells are built for their real output size: 28 after the stems, then 14 and 7 (Att-DARTS
    # used 128, which mis-sized GE's gather kernel).
    genotypes.validate(GE_EVERYWHERE)
    net = NetworkImageNet(8, 10, 3, False, GE_EVERYWHERE)
    seen = _attention_sizes(net, torch.randn(2, 3, 224, 224))
    assert seen and all(kernel == size for kernel, size in seen)
    assert {size for _, size in seen} == {(28, 28), (14, 14), (7, 7)}


@pytest.mark.parametrize('size', [32, 28])
def test_attention_heights_cifar(size):
    net = NetworkCIFAR(8, 10, 5, False, GE_EVERYWHERE, image_size=size)
    seen = _attention_sizes(net, torch.randn(2, 3, size, size))
    assert seen and all(kernel == got for kernel, got in seen)


def test_cell_stack_of_the_darts_search_network():
    """quark0/darts's 8-cell search network (C = 16, stem 48, multiplier 4) on 32x32 inputs:
    reductions at cells 2 and 5, each cell reading the two outputs before it."""
    calls = []

    def make_cell(*args):
        calls.append(args)
        cell = nn.Identity()
        cell.multiplier = 4
        return cell

    cells, outputs = model.build_cell_stack(make_cell, 8, 16, 48, 48, size=32)
    assert len(cells) == 8
    # (C_prev_prev, C_prev, C_curr, reduction, reduction_prev, size) per cell
    assert calls == [(48, 48, 16, False, False, 32), (48, 64, 16, False, False, 32),
                     (64, 64, 32, True, False, 16), (64, 128, 32, False, True, 16),
                     (128, 128, 32, False, False, 16), (128, 128, 64, True, False, 8),
                     (128, 256, 64, False, True, 8), (256, 256, 64, False, False, 8)]
    assert outputs[-1] == (256, 8)


# ----------------------------------------------------------------------------------------- drop path

def test_drop_path_helper():
    x = torch.ones(64, 3, 2, 2)
    assert drop_path(x, 0.) is x
    torch.manual_seed(0)
    y = drop_path(x, 0.5)
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    per_sample = y.flatten(1)
    # Whole samples are either dropped or scaled by 1 / keep.
    assert set(per_sample.unique().tolist()) <= {0., 2.}
    assert (per_sample == per_sample[:, :1]).all()
    assert 0 < (per_sample[:, 0] == 0).sum() < 64
    assert torch.equal(x, torch.ones_like(x))  # out of place
    half = drop_path(torch.ones(8, 3, dtype=torch.float16), 0.5)
    assert half.dtype == torch.float16
    # The mask is made on the input's device (the reference's was always CUDA); 'meta' stands in
    # for a GPU here.
    assert drop_path(torch.ones(4, 3, 2, 2, device='meta'), 0.5).device.type == 'meta'


def _cell_outputs(cell, drop_prob, seeds):
    torch.manual_seed(123)
    s0, s1 = torch.randn(8, 16, 8, 8), torch.randn(8, 16, 8, 8)
    outs = []
    for seed in seeds:
        torch.manual_seed(seed)
        outs.append(cell(s0, s1, drop_prob))
    return outs


def _one_node_cell(*entry):
    op, attn = entry[0], entry[1:]
    geno = Genotype(normal=[(op, 0) + attn, (op, 1) + attn], normal_concat=[2],
                    reduce=[(op, 0) + attn, (op, 1) + attn], reduce_concat=[2])
    return Cell(geno, 16, 16, 8, False, False, 8, 8).train()


@pytest.mark.parametrize('entry, droppable', [
    (('skip_connect',), False),
    (('sep_conv_3x3',), True),
    (('max_pool_3x3',), True),
    (('sep_conv_3x3', ''), True),
    (('skip_connect', 'CBAM'), False),        # Att-DARTS: the op is Identity
    (('sep_conv_3x3', 'Identity'), False),    # Att-DARTS: the attention is Identity
    (('sep_conv_3x3', 'SE'), True),
    (('SE', ''), True),                       # an attention as first layer
    (('Identity', ''), False),
])
def test_drop_path_rule_on_cell(entry, droppable):
    cell = _one_node_cell(*entry)
    a, b = _cell_outputs(cell, 0.5, [0, 1])
    (clean,) = _cell_outputs(cell, 0., [0])
    if droppable:
        assert not torch.equal(a, b)
    else:
        assert torch.equal(a, b) and torch.equal(a, clean)


def test_drop_path_network_seeds():
    net = NetworkCIFAR(8, 10, 5, True, genotypes.DARTS_V2)
    net.drop_path_prob = 0.5
    x = torch.randn(4, 3, 32, 32)

    def run(seed):
        torch.manual_seed(seed)
        with torch.no_grad():
            return net(x)[0]

    net.train()
    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))
    net.eval()
    assert torch.equal(run(0), run(1))
    net.drop_path_prob = 0.
    assert torch.equal(run(0), run(1))


def test_default_drop_path_prob():
    assert NetworkCIFAR(8, 10, 5, False, genotypes.DARTS_V2).drop_path_prob == 0
    assert NetworkImageNet(8, 10, 3, False, genotypes.DARTS_V2).drop_path_prob == 0


# ------------------------------------------------------------------------------------ sparse genotypes

SPARSE = Genotype(
    normal=[('none', 0), ('none', 1),                  # node 2: zeros
            ('sep_conv_3x3', 0), ('none', 2),
            ('skip_connect', 1), ('sep_conv_3x3', 3),
            ('none', 0), ('max_pool_3x3', 4)],
    normal_concat=[2, 3, 4, 5],
    reduce=[('max_pool_3x3', 0), ('none', 1),
            ('none', 0), ('none', 1),                  # node 3: zeros
            ('skip_connect', 3), ('sep_conv_3x3', 0),
            ('none', 2), ('dil_conv_3x3', 1)],
    reduce_concat=[2, 3, 4, 5])


@pytest.mark.parametrize('prune_none', [False, True])
def test_sparse_genotype_none_modules(prune_none):
    # As the references by default ('none' is a Zero op on its edge), none at all with prune_none.
    genotypes.validate(SPARSE)
    net = NetworkCIFAR(8, 10, 5, True, SPARSE, prune_none=prune_none)
    zeros = [m for m in net.modules() if isinstance(m, operations.Zero)]
    for cell in net.cells:
        entries = SPARSE.reduce if cell.reduction else SPARSE.normal
        assert len(cell._ops) == sum(prune_none is False or op != 'none' for op, _ in entries)
    assert len(zeros) == (0 if prune_none else sum(
        op == 'none' for cell in net.cells for op, _ in (SPARSE.reduce if cell.reduction else SPARSE.normal)))
    logits, aux = net(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10) and aux.shape == (2, 10)
    (logits.sum() + aux.sum()).backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize('reduction', [False, True])
def test_sparse_cell_zero_node(reduction):
    cell = Cell(SPARSE, 16, 16, 8, reduction, False, 4 if reduction else 8, 4 if reduction else 8)
    out = cell(torch.randn(2, 16, 8, 8), torch.randn(2, 16, 8, 8))
    size = 4 if reduction else 8
    assert out.shape == (2, 32, size, size)
    zero_node = 1 if reduction else 0   # position of the all-'none' node in concat
    assert torch.equal(out[:, 8 * zero_node:8 * (zero_node + 1)], torch.zeros(2, 8, size, size))


def test_dead_parts_not_built():
    # State 0 is never read and node 2 feeds nothing in the output: neither is built.
    geno = Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 1),
                            ('skip_connect', 1), ('sep_conv_5x5', 1)],
                    normal_concat=[3],
                    reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1),
                            ('skip_connect', 2), ('max_pool_3x3', 1)],
                    reduce_concat=[2, 3])
    cell = Cell(geno, 16, 16, 8, False, False, 8, 8)
    assert cell.preprocess0 is None and len(cell._ops) == 2
    assert cell(torch.randn(2, 16, 8, 8), torch.randn(2, 16, 8, 8)).shape == (2, 8, 8, 8)


def test_att_darts_cell_structure():
    cell = Cell(genotypes.Att_DARTS, 16, 16, 8, False, False, 8, 8)
    assert len(cell._ops) == 8 and cell.bottleneck is None
    # skip_connect followed by CBAM: the attention is kept as the second layer.
    kinds = [[type(m) for m in op] if isinstance(op, nn.Sequential) else [type(op)] for op in cell._ops]
    assert kinds[3] == [nn.Identity, attention.CBAM]
    bottleneck = Genotype(*genotypes.Att_DARTS[:4], normal_bottleneck='SE', reduce_bottleneck='CBAM')
    cell = Cell(bottleneck, 16, 16, 8, True, False, 4, 4)
    assert isinstance(cell.bottleneck, attention.CBAM)
    assert cell(torch.randn(2, 16, 8, 8), torch.randn(2, 16, 8, 8)).shape == (2, 32, 4, 4)
