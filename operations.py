"""Candidate operations of the DARTS cell search space.

Liu, Simonyan and Yang, "DARTS: Differentiable Architecture Search", ICLR 2019
(https://arxiv.org/abs/1806.09055), with the NASNet/AmoebaNet extras (`sep_conv_7x7`,
`conv_7x1_1x7`) needed to rebuild those genotypes.

Every entry of `OPS` is a constructor `OPS[name](C, stride, affine)` whose output has C channels
and the spatial size divided by `stride`.  Other families register their ops in the same table.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

import attention


class ReLUConvBN(nn.Sequential):
    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class DilConv(nn.Sequential):
    """ReLU, depthwise (dilated) conv, pointwise conv, BN."""

    def __init__(self, C_in, C_out, kernel_size, stride, padding, dilation, affine=True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride, padding, dilation=dilation, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """Two stacked depthwise-separable convs; only the first one strides."""

    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True):
        super().__init__(
            DilConv(C_in, C_in, kernel_size, stride, padding, 1, affine),
            DilConv(C_in, C_out, kernel_size, 1, padding, 1, affine),
        )


class Conv7x1x1x7(nn.Sequential):
    """The factorised 7x7 conv of AmoebaNet."""

    def __init__(self, C, stride, affine=True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C, C, (1, 7), stride=(1, stride), padding=(0, 3), bias=False),
            nn.Conv2d(C, C, (7, 1), stride=(stride, 1), padding=(3, 0), bias=False),
            nn.BatchNorm2d(C, affine=affine),
        )


class Zero(nn.Module):
    """The `none` op.  Cells skip it (its output is all zeros), so it is never on a hot path."""

    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, ::self.stride, ::self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halves the resolution with two offset stride-2 1x1 convs whose outputs are concatenated.

    For odd sizes (7x7 Fashion-MNIST maps) the offset branch is padded on the bottom/right so
    both branches give the same size; even sizes compute exactly what DARTS computes.
    """

    def __init__(self, C_in, C_out, affine=True):
        super().__init__()
        if C_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {C_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x):
        x = self.relu(x)
        shifted = x[:, :, 1:, 1:]
        if x.size(2) % 2 or x.size(3) % 2:
            shifted = F.pad(shifted, (0, 1, 0, 1))
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


def skip_connect(C, stride, affine):
    return nn.Identity() if stride == 1 else FactorizedReduce(C, C, affine)


OPS = {
    'none': lambda C, stride, affine: Zero(stride),
    'avg_pool_3x3': lambda C, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
    'max_pool_3x3': lambda C, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
    'skip_connect': skip_connect,
    'sep_conv_3x3': lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine),
    'sep_conv_5x5': lambda C, stride, affine: SepConv(C, C, 5, stride, 2, affine),
    'sep_conv_7x7': lambda C, stride, affine: SepConv(C, C, 7, stride, 3, affine),
    'dil_conv_3x3': lambda C, stride, affine: DilConv(C, C, 3, stride, 2, 2, affine),
    'dil_conv_5x5': lambda C, stride, affine: DilConv(C, C, 5, stride, 4, 2, affine),
    'conv_7x1_1x7': lambda C, stride, affine: Conv7x1x1x7(C, stride, affine),
}

# Ops without weights of their own; the search wraps them in a non-affine BN (DARTS convention).
POOLING_OPS = ('avg_pool_3x3', 'max_pool_3x3')


def make_candidate(name, C, stride, height, width, affine, search=False):
    """Build one edge candidate: a cell op from `OPS` or an attention module from `attention`.

    An attention used as a first-layer candidate on a stride-2 edge is preceded by a
    non-affine FactorizedReduce, as in Att-DARTS; `height`/`width` are the edge's output size.
    """
    if name in OPS:
        op = OPS[name](C, stride, affine)
        if search and name in POOLING_OPS:
            op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
        return op
    if name in attention.ATTENTIONS:
        module = attention.ATTENTIONS[name](C, height, width)
        if stride != 1:
            module = nn.Sequential(FactorizedReduce(C, C, affine=False), module)
        return module
    raise KeyError(name)


def is_identity(module):
    return isinstance(module, (nn.Identity, attention.Identity))
