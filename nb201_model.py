"""The evaluation network of NAS-Bench-201: every cell of the space is trained in this skeleton.

Dong and Yang, "NAS-Bench-201: Extending the Scope of Reproducible Neural Architecture Search",
ICLR 2020 (https://arxiv.org/abs/2001.00326); reference code D-X-Y/AutoDL-Projects,
`xautodl/models/cell_infers/tiny_network.py` (`TinyNetwork`), `cell_infers/cells.py` (`InferCell`)
and `cell_operations.py` (the ops and `ResNetBasicblock`).

    stem: 3x3 conv (C channels) + BN
    N cells at C, a residual reduction block to 2C, N cells at 2C, one to 4C, N cells at 4C
    BN + ReLU, global average pooling, a linear classifier

A cell (`NB201Cell`) keeps its channels: node 0 is its input, node j sums one op on the edge from
every earlier node, node 3 is its output.  Its ops are the registered `nor_conv_1x1`/`nor_conv_3x3`
(ReLU-Conv-BN, `operations.py`), `avg_pool_3x3` (no padded pixels counted), `skip_connect`
(identity) and `none` (zeros): at stride 1 and equal channels these are exactly the reference's
modules, so the parameter counts equal `TinyNetwork`'s (tests/test_nb201_model.py pins them).
An edge with an attention (the Att-DARTS searches of this space) applies it after the op.

The reduction block (`ResidualReduction`) is the reference's `ResNetBasicblock(C, 2C, stride=2)`:
ReLU-Conv3x3(stride 2)-BN, ReLU-Conv3x3-BN, plus a 2x2 average pool and a 1x1 conv on the shortcut.
The one difference: the shortcut's pool rounds odd sizes up (ceil_mode), as the strided conv does,
where the reference's would fail to add two maps of different sizes; even sizes are unchanged.
"""
import torch.nn as nn

import nb201
from model import halve
from operations import ReLUConvBN, make_candidate

C_DEFAULT, CELLS_PER_STAGE_DEFAULT = 16, 5


def make_edge(op, attention, C, size):
    """One edge of an evaluation cell: the op, followed by its attention ('' for none).  A `none`
    edge contributes zeros whatever its attention, so none is built after it."""
    module = make_candidate(op, C, 1, size, size, affine=True)
    if attention and op != 'none':
        module = nn.Sequential(module, make_candidate(attention, C, 1, size, size, affine=True))
    return module


class NB201Cell(nn.Module):
    """A NAS-Bench-201 cell of `genotype` (`nb201.NB201Genotype`) at C channels and size x size."""

    def __init__(self, genotype, C, size=None):
        super().__init__()
        self.edges = nn.ModuleList(make_edge(op, attention, C, size)
                                   for op, attention in zip(genotype.ops, genotype.attentions))

    def forward(self, x):
        nodes = [x]
        for node in range(1, nb201.NODES):
            nodes.append(sum(self.edges[e](nodes[source]) for e, (target, source) in enumerate(nb201.EDGES)
                             if target == node))
        return nodes[-1]


class ResidualReduction(nn.Module):
    """The reference's ResNetBasicblock with stride 2: C_in -> C_out channels, half the size."""

    def __init__(self, C_in, C_out):
        super().__init__()
        self.conv_a = ReLUConvBN(C_in, C_out, 3, 2, 1)
        self.conv_b = ReLUConvBN(C_out, C_out, 3, 1, 1)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2, ceil_mode=True), nn.Conv2d(C_in, C_out, 1, bias=False))

    def forward(self, x):
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


def stage_layout(C, cells_per_stage):
    """(channels, is a reduction block) of every block after the stem, as `TinyNetwork` stacks them."""
    layout = []
    for stage in range(3):
        if stage:
            layout.append((C << stage, True))
        layout += [(C << stage, False)] * cells_per_stage
    return layout


class NB201Network(nn.Module):
    """The NAS-Bench-201 network of `genotype`: C initial channels, `cells_per_stage` (N) cells per
    stage.  Like the other evaluation networks, forward returns (logits, None): it has no auxiliary
    head, and no drop path (the benchmark trains without)."""

    def __init__(self, genotype, C=C_DEFAULT, cells_per_stage=CELLS_PER_STAGE_DEFAULT, num_classes=10,
                 in_channels=3, image_size=32):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        self.cells = nn.ModuleList()
        C_prev, size = C, image_size
        for C_curr, reduction in stage_layout(C, cells_per_stage):
            if reduction:
                size = None if size is None else halve(size)
                self.cells.append(ResidualReduction(C_prev, C_curr))
            else:
                self.cells.append(NB201Cell(genotype, C_curr, size))
            C_prev = C_curr
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_prev), nn.ReLU(inplace=False))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, x):
        feature = self.stem(x)
        for cell in self.cells:
            feature = cell(feature)
        return self.classifier(self.global_pooling(self.lastact(feature)).flatten(1)), None
