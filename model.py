"""Evaluation networks built from a genotype: DARTS cells, optionally with attention.

Liu, Simonyan and Yang, "DARTS: Differentiable Architecture Search", ICLR 2019
(https://arxiv.org/abs/1806.09055; reference code quark0/darts `cnn/model.py`), and
Nakai, Matsubara and Uehara, "Att-DARTS: Differentiable Neural Architecture Search for Attention",
IJCNN 2020 (reference code chomin/Att-DARTS `model.py`).

A genotype entry `(op, j)` or `(op, j, attention)` is one edge: `op` (an `operations.OPS` name, or
an attention name in Att-DARTS's mixed settings) applied to state j, then the optional second
layer.  Node i is the sum of its two edges; the cell outputs the concatenation of the `concat`
states, optionally followed by a bottleneck attention.  The networks are the DARTS CIFAR and
ImageNet skeletons (stem, 1/3 and 2/3 reductions, auxiliary head after the second reduction).
The other families' evaluation networks live with them: ANAS's ResNets in anas.py, NAG's DAG-cell
networks in nag_networks.py.

Differences from the references, all deliberate:
  * `none` edges (CNAS sparse genotypes) are built as the references build them, a Zero op that
    multiplies its input by 0, so the cell inputs that only such edges read keep their
    preprocessing and the parameter count is the reference's (DARTS_MORE_NONE_V3 and _V4 have
    such inputs).  `prune_none=True` (`--prune_none`) builds and computes neither: a node whose
    edges are all `none` outputs zeros.  Nodes that no output depends on are never built, so every
    parameter gets a gradient (DDP needs that); no named genotype has such nodes.
  * The drop-path mask is drawn on the input's device (the reference's was CUDA-only).
  * Each cell is given its true output size, starting at the real post-stem size (28 for a
    224 ImageNet input; Att-DARTS used 128, which only mattered for GE's gather kernel); odd
    sizes halve with ceil, as the stride-2 ops do.
  * The auxiliary heads' pooling is the reference's for CIFAR (8x8) and ImageNet (7x7) and is
    computed for other sizes so that it still yields the 2x2 map the 2x2 conv expects.
  * The first ReLU of an auxiliary head is not in-place (the reference's modified the cell output
    that the next cells read, harmlessly only because they start with a ReLU).
"""
import functools

import torch
import torch.nn as nn

from genotypes import entry_attention, entry_input, entry_op
from operations import FactorizedReduce, ReLUConvBN, Zero, is_identity, make_candidate, regroup_shuffle_convs
from utils import UserError, drop_path


def is_parameter_free_passthrough(op):
    """Identity and Zero edges get no drop path (the DARTS and CNAS cells)."""
    return is_identity(op) or isinstance(op, Zero)


def halve(size):
    """The size after a stride-2 op of this codebase (3x3 pad 1, pools pad 1, FactorizedReduce)."""
    return (size + 1) // 2


def build_cell_stack(make_cell, layers, C, C_prev_prev, C_prev, reduction_prev=False, size=None):
    """The DARTS cell stack (quark0/darts `NetworkCIFAR`): `layers` cells, of which the two at 1/3
    and 2/3 of the depth are reduction cells that double the channels and halve the feature map.

    `make_cell(C_prev_prev, C_prev, C_curr, reduction, reduction_prev, size)` builds one cell from
    the channels of its two inputs (the outputs of the two cells before it), its own channel count
    C_curr and its output size (None when the caller does not track sizes); the cell outputs
    `cell.multiplier * C_curr` channels.  `C_prev_prev`, `C_prev`, `reduction_prev` and `size`
    describe the stem outputs the first cell reads.  Returns the cells as an nn.ModuleList and the
    (channels, size) of every cell's output.
    """
    cells, outputs = nn.ModuleList(), []
    C_curr = C
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        if reduction:
            C_curr *= 2
            size = None if size is None else halve(size)
        cell = make_cell(C_prev_prev, C_prev, C_curr, reduction, reduction_prev, size)
        cells.append(cell)
        C_prev_prev, C_prev, reduction_prev = C_prev, cell.multiplier * C_curr, reduction
        outputs.append((C_prev, size))
    return cells, outputs


class Cell(nn.Module):
    """One evaluation cell.  `height`/`width` are the cell's output size (halved inputs if
    `reduction`); attentions are built for that size."""

    def __init__(self, genotype, C_prev_prev, C_prev, C, reduction, reduction_prev, height, width,
                 prune_none=False):
        super().__init__()
        self.reduction = reduction
        if reduction:
            entries, concat, bottleneck = genotype.reduce, genotype.reduce_concat, genotype.reduce_bottleneck
        else:
            entries, concat, bottleneck = genotype.normal, genotype.normal_concat, genotype.normal_bottleneck
        self._C = C
        self._concat = tuple(concat)
        self.multiplier = len(self._concat)
        steps = len(entries) // 2

        def is_none(entry):
            return prune_none and (entry_op(entry) == 'none' or entry_attention(entry) == 'none')

        # Liveness: which states does the output depend on?
        live = [False] * (steps + 2)
        for i in self._concat:
            live[i] = True
        for node in reversed(range(steps)):
            if live[node + 2]:
                for entry in entries[2 * node:2 * node + 2]:
                    if not is_none(entry):
                        live[entry_input(entry)] = True

        self.preprocess0 = self.preprocess1 = None
        if live[0]:
            self.preprocess0 = (FactorizedReduce(C_prev_prev, C) if reduction_prev
                                else ReLUConvBN(C_prev_prev, C, 1, 1, 0))
        if live[1]:
            self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)

        # _ops holds one module per built edge; _nodes[i] lists (input, op position, droppable)
        # for node i, or is None for a dead node.
        self._ops = nn.ModuleList()
        nodes = []
        for node in range(steps):
            if not live[node + 2]:
                nodes.append(None)
                continue
            edges = []
            for entry in entries[2 * node:2 * node + 2]:
                if is_none(entry):
                    continue
                j, attn = entry_input(entry), entry_attention(entry)
                stride = 2 if reduction and j < 2 else 1
                op = make_candidate(entry_op(entry), C, stride, height, width, affine=True)
                droppable = not is_parameter_free_passthrough(op)
                if attn:
                    second = make_candidate(attn, C, 1, height, width, affine=True)
                    droppable = droppable and not is_parameter_free_passthrough(second)
                    if not is_identity(second):
                        op = nn.Sequential(op, second)
                edges.append((j, len(self._ops), droppable))
                self._ops.append(op)
            nodes.append(tuple(edges))
        self._nodes = tuple(nodes)

        self.bottleneck = None
        if bottleneck:
            self.bottleneck = make_candidate(bottleneck, C * self.multiplier, 1, height, width, True)

    def forward(self, s0, s1, drop_prob=0.):
        states = [self.preprocess0(s0) if self.preprocess0 is not None else None,
                  self.preprocess1(s1) if self.preprocess1 is not None else None]
        drop = self.training and drop_prob > 0.
        for edges in self._nodes:
            out = None
            if edges is not None:
                for j, position, droppable in edges:
                    h = self._ops[position](states[j])
                    if drop and droppable:
                        h = drop_path(h, drop_prob)
                    out = h if out is None else out + h
                if out is None:  # every edge is 'none'
                    n, _, height, width = s1.shape
                    if self.reduction:
                        height, width = halve(height), halve(width)
                    out = s1.new_zeros(n, self._C, height, width)
            states.append(out)
        out = torch.cat([states[i] for i in self._concat], dim=1)
        if self.bottleneck is not None:
            out = self.bottleneck(out)
        return out


def _aux_pool(size, kernel, stride):
    """AvgPool giving the 2x2 map the auxiliary head's 2x2 conv expects from a size x size input:
    the reference pool when it already does (CIFAR 8x8, ImageNet 7x7), else one computed for this
    size (stride ~ 3/8 of it, kernel = size - stride, which is exactly 2 windows)."""
    if size >= kernel and (size - kernel) // stride + 1 == 2:
        return nn.AvgPool2d(kernel, stride=stride, padding=0, count_include_pad=False)
    if size >= 2:
        stride = max(1, (3 * size + 4) // 8)
        return nn.AvgPool2d(size - stride, stride=stride, padding=0, count_include_pad=False)
    return nn.AdaptiveAvgPool2d(2)


class AuxiliaryHeadCIFAR(nn.Module):
    """DARTS's CIFAR auxiliary classifier; `size` is its input size (8 on CIFAR)."""

    def __init__(self, C, num_classes, size=8):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            _aux_pool(size, 5, 3),  # 2x2
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class AuxiliaryHeadImageNet(nn.Module):
    """DARTS's ImageNet auxiliary classifier: no BN after the 768-channel conv (as in the paper's
    experiments); NAO's and NAG's `AuxHeadImageNet` has one (`batchnorm=True`).  The reference's
    docstring says 14x14 input; the real input is 7x7 at 224."""

    def __init__(self, C, num_classes, size=7, batchnorm=False):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            _aux_pool(size, 5, 2),  # 2x2
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            *([nn.BatchNorm2d(768)] if batchnorm else []),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class _Network(nn.Module):
    """The cell stack shared by the skeletons: reductions at layers//3 and 2*layers//3 (channels
    double), auxiliary head after cell 2*layers//3, global pool and a linear classifier.
    Subclasses choose the cell (`_make_cell`) and whether each cell's drop-path rate grows with
    its depth."""

    # NAO and NAG drop paths in cell i of L at rate * (i + 1) / L; DARTS uses one rate everywhere.
    depth_scaled_drop_path = False

    prune_none = False

    def _make_cell(self, genotype, C_prev_prev, C_prev, C, reduction, reduction_prev, size):
        return Cell(genotype, C_prev_prev, C_prev, C, reduction, reduction_prev, size, size, self.prune_none)

    def _build_cells(self, genotype, C, C_prev_prev, C_prev, layers, reduction_prev, size):
        """The cells; returns the channels of the last one's output and the (channels, size) of the
        auxiliary head's input."""
        self._layers = layers
        self._aux_index = 2 * layers // 3
        self.drop_path_prob = 0.
        self.cells, outputs = build_cell_stack(functools.partial(self._make_cell, genotype), layers, C,
                                               C_prev_prev, C_prev, reduction_prev, size)
        return outputs[-1][0], outputs[self._aux_index]

    def _cells_forward(self, s0, s1):
        logits_aux = None
        want_aux = self.auxiliary_head is not None and self.training
        for i, cell in enumerate(self.cells):
            rate = self.drop_path_prob * ((i + 1) / len(self.cells) if self.depth_scaled_drop_path else 1.)
            s0, s1 = s1, cell(s0, s1, rate)
            if want_aux and i == self._aux_index:
                logits_aux = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        return logits, logits_aux


REDUCE_LEVELS = (0, 1, 2)


def cifar_stem(in_channels, C_stem, reduce_level=0, affine=True):
    """The stem of the CIFAR-style networks by CNAS's `reduce_level` (its `model.py`): 0, DARTS's
    Conv3x3 + BN; 1, the same conv at stride 2; 2, Conv3x3 to C_stem/2 + BN + ReLU, then Conv3x3
    stride 2 + BN (the reference's last BN had C_stem/2 channels, which cannot run).  Levels 1 and
    2 halve the image; returns (stem, output size of a `size` input as a function)."""
    if reduce_level not in REDUCE_LEVELS:
        raise UserError(f"--reduce_level {reduce_level}: choose from {', '.join(map(str, REDUCE_LEVELS))}")
    if reduce_level == 0:
        layers = [nn.Conv2d(in_channels, C_stem, 3, padding=1, bias=False), nn.BatchNorm2d(C_stem, affine=affine)]
    elif reduce_level == 1:
        layers = [nn.Conv2d(in_channels, C_stem, 3, stride=2, padding=1, bias=False),
                  nn.BatchNorm2d(C_stem, affine=affine)]
    else:
        layers = [nn.Conv2d(in_channels, C_stem // 2, 3, padding=1, bias=False),
                  nn.BatchNorm2d(C_stem // 2, affine=affine), nn.ReLU(inplace=True),
                  nn.Conv2d(C_stem // 2, C_stem, 3, stride=2, padding=1, bias=False),
                  nn.BatchNorm2d(C_stem, affine=affine)]
    return nn.Sequential(*layers), (lambda size: stem_size(size, reduce_level))


def stem_size(size, reduce_level=0):
    """The side of `cifar_stem`'s output for a `size` x `size` image."""
    return size if reduce_level == 0 else halve(size)


class NetworkCIFAR(_Network):
    """The DARTS CIFAR network.  forward returns (logits, logits_aux); logits_aux is None unless
    `auxiliary` and training.  `in_channels=1, image_size=28` gives the Fashion-MNIST variant.
    CNAS options: `pooled_head=True` pools to 2x2 instead of 1x1 before the classifier (its
    network does for more than 10 classes), `reduce_level` 1 or 2 halves the image in the stem
    (`cifar_stem`), `prune_none` (see `Cell`), and `shuffle_groups='auto'` the grouped
    `shuffle_conv_3x3` (operations.regroup_shuffle_convs)."""

    def __init__(self, C, num_classes, layers, auxiliary, genotype, in_channels=3, image_size=32,
                 pooled_head=False, reduce_level=0, prune_none=False, shuffle_groups='1'):
        super().__init__()
        self.prune_none = prune_none
        C_stem = 3 * C
        self.stem, stem_size = cifar_stem(in_channels, C_stem, reduce_level)
        C_prev, (C_aux, size_aux) = self._build_cells(genotype, C, C_stem, C_stem, layers, False,
                                                      stem_size(image_size))
        self.auxiliary_head = AuxiliaryHeadCIFAR(C_aux, num_classes, size_aux) if auxiliary else None
        pooled = 2 if pooled_head else 1
        self.global_pooling = nn.AdaptiveAvgPool2d(pooled)
        self.classifier = nn.Linear(C_prev * pooled * pooled, num_classes)
        regroup_shuffle_convs(self, shuffle_groups)

    def forward(self, x):
        s = self.stem(x)
        return self._cells_forward(s, s)


class NetworkImageNet(_Network):
    """The DARTS ImageNet network (224x224 inputs: 56x56 after stem0, 28x28 after stem1)."""

    # DARTS's ImageNet auxiliary head has no BN after its 768-channel conv; NAO's has one.
    auxiliary_batchnorm = False

    def __init__(self, C, num_classes, layers, auxiliary, genotype, in_channels=3, image_size=224,
                 prune_none=False, shuffle_groups='1'):
        super().__init__()
        self.prune_none = prune_none
        self.stem0 = nn.Sequential(
            nn.Conv2d(in_channels, C // 2, kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=False),  # s0 is read again by the first cell
            nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        size = halve(halve(halve(image_size)))
        C_prev, (C_aux, size_aux) = self._build_cells(genotype, C, C, C, layers, True, size)
        self.auxiliary_head = (AuxiliaryHeadImageNet(C_aux, num_classes, size_aux, self.auxiliary_batchnorm)
                               if auxiliary else None)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)  # the reference's AvgPool2d(7) at 224
        self.classifier = nn.Linear(C_prev, num_classes)
        regroup_shuffle_convs(self, shuffle_groups)

    def forward(self, x):
        s0 = self.stem0(x)
        s1 = self.stem1(s0)
        return self._cells_forward(s0, s1)
