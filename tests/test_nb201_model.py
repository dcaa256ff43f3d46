"""The NAS-Bench-201 evaluation network: parameter counts of the reference, ops and cells recomputed."""
import pytest
import torch
import torch.nn.functional as F

import nb201
import nb201_model

EXAMPLE = '|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|'

# Parameter counts of the reference network, computed by running D-X-Y/AutoDL-Projects at commit
# f46486e21b71ae6459a700be720d7648b5429569: sum(p.numel() for p in TinyNetwork(C, N,
# Structure.str2structure(cell), classes).parameters()) (xautodl/models/cell_infers/tiny_network.py).
# Keys: (C, N, classes).  The all-conv3x3 count at (16, 5, 10) is the benchmark's largest network
# (1.53 MB in its table); the three random cells are nb201.sample_genotypes(3, seed=0).
REFERENCE_COUNTS = {
    '|none~0|+|none~0|none~1|+|none~0|none~1|none~2|':
        {(16, 5, 10): 73306, (16, 5, 100): 79156, (16, 5, 120): 80456, (8, 1, 10): 18738},
    '|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|':
        {(16, 5, 10): 73306, (16, 5, 100): 79156, (16, 5, 120): 80456, (8, 1, 10): 18738},
    '|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|':
        {(16, 5, 10): 1531546, (16, 5, 100): 1537396, (16, 5, 120): 1538696, (8, 1, 10): 91986},
    '|nor_conv_1x1~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|nor_conv_1x1~0|nor_conv_1x1~1|nor_conv_1x1~2|':
        {(16, 5, 10): 241306, (16, 5, 100): 247156, (16, 5, 120): 248456, (8, 1, 10): 27474},
    EXAMPLE:
        {(16, 5, 10): 802426, (16, 5, 100): 808276, (16, 5, 120): 809576, (8, 1, 10): 55362},
    '|avg_pool_3x3~0|+|nor_conv_1x1~0|none~1|+|nor_conv_3x3~0|nor_conv_1x1~1|none~2|':
        {(16, 5, 10): 372346, (16, 5, 100): 378196, (16, 5, 120): 379496, (8, 1, 10): 33858},
    '|nor_conv_1x1~0|+|none~0|none~1|+|nor_conv_1x1~0|nor_conv_1x1~1|skip_connect~2|':
        {(16, 5, 10): 157306, (16, 5, 100): 163156, (16, 5, 120): 164456, (8, 1, 10): 23106},
    '|nor_conv_3x3~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|':
        {(16, 5, 10): 802426, (16, 5, 100): 808276, (16, 5, 120): 809576, (8, 1, 10): 55362},
}


def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize('cell', list(REFERENCE_COUNTS))
def test_parameter_counts_equal_the_reference_network(cell):
    genotype = nb201.parse(cell)
    for (C, N, classes), expected in REFERENCE_COUNTS[cell].items():
        assert count(nb201_model.NB201Network(genotype, C, N, classes)) == expected, (C, N, classes)


def test_the_random_cells_pinned_are_the_seeded_draw():
    assert [nb201.to_string(g) for g in nb201.sample_genotypes(3, seed=0)] == list(REFERENCE_COUNTS)[-3:]


def test_default_network_is_C16_N5_with_three_stages():
    network = nb201_model.NB201Network(nb201.parse(EXAMPLE))
    kinds = [type(cell).__name__ for cell in network.cells]
    assert kinds == ['NB201Cell'] * 5 + ['ResidualReduction'] + ['NB201Cell'] * 5 + ['ResidualReduction'] + \
        ['NB201Cell'] * 5
    assert network.classifier.in_features == 64
    logits, aux = network(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10) and aux is None


def batch_norm(x, bn):
    """Training-mode BatchNorm from its definition: per channel, minus the batch mean, over the
    biased batch standard deviation, then scaled and shifted."""
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + bn.eps) * bn.weight[None, :, None, None] + bn.bias[None, :, None, None]


def relu_conv_bn(x, module):
    relu, conv, bn = module
    return batch_norm(F.conv2d(x.clamp(min=0), conv.weight, stride=conv.stride, padding=conv.padding), bn)


def avg_pool_without_padding(x):
    """Mean of each pixel's 3x3 neighbourhood inside the image (count_include_pad=False)."""
    ones = torch.ones_like(x[:1, :1])
    window = torch.ones(1, 1, 3, 3, dtype=x.dtype)
    sums = F.conv2d(x.reshape(-1, 1, *x.shape[2:]), window, padding=1).reshape(x.shape)
    return sums / F.conv2d(ones, window, padding=1)


def recompute_op(op, module, x):
    if op == 'none':
        return torch.zeros_like(x)
    if op == 'skip_connect':
        return x
    if op == 'avg_pool_3x3':
        return avg_pool_without_padding(x)
    return relu_conv_bn(x, module)


def random_affine(module):
    for bn in (m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        torch.nn.init.normal_(bn.weight)
        torch.nn.init.normal_(bn.bias)
    return module


@pytest.mark.parametrize('op', nb201.OPS)
def test_every_op_equals_its_definition(op):
    torch.manual_seed(0)
    module = random_affine(nb201_model.make_edge(op, '', 4, 6)).double().train()
    x = torch.randn(3, 4, 6, 6, dtype=torch.float64)
    assert sum(p.numel() for p in module.parameters()) == {'nor_conv_1x1': 16 + 8, 'nor_conv_3x3': 144 + 8}.get(op, 0)
    torch.testing.assert_close(module(x), recompute_op(op, module, x), rtol=1e-12, atol=1e-12)


def test_a_cell_equals_the_sums_of_its_edges_recomputed():
    torch.manual_seed(0)
    genotype = nb201.parse('|nor_conv_3x3~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|skip_connect~0|none~1|nor_conv_3x3~2|')
    cell = random_affine(nb201_model.NB201Cell(genotype, 4, 6)).double().train()
    x = torch.randn(3, 4, 6, 6, dtype=torch.float64)
    edge = {e: (op, module) for e, (op, module) in enumerate(zip(genotype.ops, cell.edges))}

    def through(e, h):
        return recompute_op(edge[e][0], edge[e][1], h)
    node1 = through(0, x)
    node2 = through(1, x) + through(2, node1)
    node3 = through(3, x) + through(4, node1) + through(5, node2)
    torch.testing.assert_close(cell(x), node3, rtol=1e-12, atol=1e-12)


def test_the_reduction_block_is_a_strided_residual_block():
    torch.manual_seed(0)
    block = random_affine(nb201_model.ResidualReduction(4, 8)).double().train()
    x = torch.randn(3, 4, 6, 6, dtype=torch.float64)
    residual = relu_conv_bn(relu_conv_bn(x, block.conv_a), block.conv_b)
    shortcut = F.conv2d(F.avg_pool2d(x, 2), block.shortcut[1].weight)
    torch.testing.assert_close(block(x), shortcut + residual, rtol=1e-12, atol=1e-12)
    assert block(torch.randn(2, 4, 7, 7, dtype=torch.float64)).shape == (2, 8, 4, 4)


def test_an_edge_with_attention_applies_it_after_the_op():
    genotype = nb201.parse(EXAMPLE)._replace(attentions=('SE', '', '', '', '', 'CBAM'))
    cell = nb201_model.NB201Cell(genotype, 8, 4)
    assert type(cell.edges[0][1]).__name__ == 'SE' and type(cell.edges[5][1]).__name__ == 'CBAM'
    plain = nb201_model.NB201Cell(nb201.parse(EXAMPLE), 8, 4)
    assert count(cell) > count(plain)
    assert cell(torch.randn(2, 8, 4, 4)).shape == (2, 8, 4, 4)
