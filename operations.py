"""Candidate operations of the DARTS cell search space.

Liu, Simonyan and Yang, "DARTS: Differentiable Architecture Search", ICLR 2019
(https://arxiv.org/abs/1806.09055; reference code quark0/darts, `operations.py`), with the
NASNet/AmoebaNet extras (`sep_conv_7x7`, `conv_7x1_1x7`) needed to rebuild those genotypes.

Every op registered in `registry.OPS` is built as `OPS[name](C, stride, affine)`; its output has
C channels and the spatial size divided by `stride`.  Other families register their ops here too.
`kernels/` holds faster forms of these modules with the same parameters; this file is the
definition.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

import attention
from registry import ATTENTIONS, OPS


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
    """The `none` op.  Search cells skip it (its output is all zeros)."""

    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        return x[:, :, ::self.stride, ::self.stride].mul(0.0)


class StridedPointwiseConv(nn.Conv2d):
    """Conv2d(C_in, C_out, 1, stride) without bias on x[:, :, offset:, offset:], written as a 1x1
    convolution of every stride-th pixel: the same numbers.  A stride-2 1x1 convolution in
    channels-last layout corrupts the heap in its oneDNN backward for some shapes (torch 2.14.1,
    CPU; e.g. 8 -> 8 channels at 64x64, batch 2), so no layer here asks oneDNN for one."""

    def __init__(self, C_in, C_out, stride, offset=0):
        super().__init__(C_in, C_out, 1, bias=False)
        self.subsample, self.offset = stride, offset

    def forward(self, x):
        return super().forward(x[:, :, self.offset::self.subsample, self.offset::self.subsample])


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
        self.conv_1 = StridedPointwiseConv(C_in, C_out // 2, 2)
        self.conv_2 = StridedPointwiseConv(C_in, C_out // 2, 2, offset=1)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x):
        x = self.relu(x)
        even, odd = self.conv_1(x), self.conv_2(x)
        # An odd size leaves the offset branch one short: zeros, as a zero-padded input would give.
        if odd.shape[2:] != even.shape[2:]:
            odd = F.pad(odd, (0, even.shape[3] - odd.shape[3], 0, even.shape[2] - odd.shape[2]))
        return self.bn(torch.cat([even, odd], dim=1))


def skip_connect(C, stride, affine):
    return nn.Identity() if stride == 1 else FactorizedReduce(C, C, affine)


OPS.register('none', lambda C, stride, affine: Zero(stride))
OPS.register('avg_pool_3x3', lambda C, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1,
                                                                    count_include_pad=False))
OPS.register('max_pool_3x3', lambda C, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1))
OPS.register('skip_connect', skip_connect)
OPS.register('sep_conv_3x3', lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine))
OPS.register('sep_conv_5x5', lambda C, stride, affine: SepConv(C, C, 5, stride, 2, affine))
OPS.register('sep_conv_7x7', lambda C, stride, affine: SepConv(C, C, 7, stride, 3, affine))
OPS.register('dil_conv_3x3', lambda C, stride, affine: DilConv(C, C, 3, stride, 2, 2, affine))
OPS.register('dil_conv_5x5', lambda C, stride, affine: DilConv(C, C, 5, stride, 4, 2, affine))
OPS.register('conv_7x1_1x7', lambda C, stride, affine: Conv7x1x1x7(C, stride, affine))
# NAS-Bench-201 (Dong and Yang, ICLR 2020; AutoDL-Projects `cell_operations.py`): its plain convolutions.
OPS.register('nor_conv_1x1', lambda C, stride, affine: ReLUConvBN(C, C, 1, stride, 0, affine))
OPS.register('nor_conv_3x3', lambda C, stride, affine: ReLUConvBN(C, C, 3, stride, 1, affine))

# Ops without weights of their own; the search wraps them in a non-affine BN (DARTS convention).
POOLING_OPS = ('avg_pool_3x3', 'max_pool_3x3')


# --------------------------------------------------------------------------------------------------
# CNAS ops: Zhou et al., "Automatic Convolutional Neural Architecture Search for Image Classification
# under Different Scenes", IEEE Access 2019 (reference code tianbaochou/CNAS).
# --------------------------------------------------------------------------------------------------

class ChannelWeight(attention.SE):
    """`cweight_com`: squeeze-and-excitation channel weighting (Hu et al., CVPR 2018) with FC biases,
    as CNAS has it.  A stride-2 edge reduces the weighted map with a depthwise 3x3 conv and BN."""

    def __init__(self, C, stride, affine=True, reduction=attention.REDUCTION):
        super().__init__(C, reduction=reduction, bias=True)
        self.reduce = None
        if stride != 1:
            self.reduce = nn.Sequential(nn.Conv2d(C, C, 3, stride=stride, padding=1, groups=C, bias=False),
                                        nn.BatchNorm2d(C, affine=affine))

    def forward(self, x):
        out = super().forward(x)
        return out if self.reduce is None else self.reduce(out)


class ChannelShuffle(nn.Module):
    """ShuffleNet's channel shuffle: (N, g*n, H, W) -> (N, n*g, H, W), so that channel k of group i
    moves to position k*g + i and every group of the next grouped conv sees every group before it."""

    def __init__(self, groups):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


SHUFFLE_MAX_GROUPS = 4


def shuffle_groups(C, most=SHUFFLE_MAX_GROUPS):
    """The most groups g <= `most` for a C-channel grouped `shuffle_conv_3x3`: the C/g bottleneck
    must split into g groups (C % g^2 == 0) and each of them must get a channel from every group
    of the first conv after the shuffle (C/g^2 >= g).  1 (no shuffle) when none fits."""
    return next((g for g in range(most, 1, -1) if C % (g * g) == 0 and C >= g ** 3), 1)


class ShuffleConv(nn.Module):
    """`shuffle_conv_3x3`: a ShuffleNet v1 unit (Zhang et al., CVPR 2018): 1x1 conv to a C/g
    bottleneck in g groups, BN, ReLU, channel shuffle, depthwise 3x3 (the stride), BN, 1x1 conv
    back to C in g groups, BN; plus the shortcut (identity, or AvgPool 3x3 stride 2), then ReLU.
    Like the reference and unlike ShuffleNet, the stride-2 shortcut is added, not concatenated,
    because the op must keep C channels.

    The op of the CNAS code has g = 1 (its `operations.py` passes 1 into `groups`): dense 1x1
    convs and a shuffle that moves nothing.  That is the registered op, so parameter counts are
    the reference's; `regroup_shuffle_convs` (`--shuffle_groups auto`) gives a network the
    grouped unit the paper describes."""

    def __init__(self, C, stride, affine=True, groups=1):
        super().__init__()
        self.C, self.stride, self.affine, self.groups = C, stride, affine, groups
        mid = C // groups
        self.branch = nn.Sequential(
            nn.Conv2d(C, mid, 1, groups=groups, bias=False),
            nn.BatchNorm2d(mid, affine=affine),
            nn.ReLU(inplace=True),
            ChannelShuffle(groups),
            nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False),
            nn.BatchNorm2d(mid, affine=affine),
            nn.Conv2d(mid, C, 1, groups=groups, bias=False),
            nn.BatchNorm2d(C, affine=affine),
        )
        self.shortcut = nn.Identity() if stride == 1 else nn.AvgPool2d(3, stride=stride, padding=1)

    def forward(self, x):
        return F.relu(self.branch(x) + self.shortcut(x))


SHUFFLE_GROUP_CHOICES = ('1', 'auto')


def regroup_shuffle_convs(model, choice='auto'):
    """`--shuffle_groups`: '1' leaves `model` as built (the reference's dense unit); 'auto' rebuilds
    each `shuffle_conv_3x3` of `model` as the grouped unit with shuffle_groups(C) groups (2 at 16
    channels, 3 at 36), freshly initialised, in place.  Returns `model`."""
    if choice not in SHUFFLE_GROUP_CHOICES:
        raise ValueError(f"unknown shuffle groups '{choice}'; choose from {', '.join(SHUFFLE_GROUP_CHOICES)}")
    if choice == 'auto':
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, ShuffleConv):
                    setattr(parent, name, ShuffleConv(child.C, child.stride, child.affine, shuffle_groups(child.C)))
    return model


OPS.register('cweight_com', lambda C, stride, affine: ChannelWeight(C, stride, affine))
OPS.register('shuffle_conv_3x3', lambda C, stride, affine: ShuffleConv(C, stride, affine))


# --------------------------------------------------------------------------------------------------
# ANAS (Dang, "Exploring Attention Convolutional Neural Network via Neural Architecture Search",
# 2019; reference DangChuong-DC/Attention-Neural-Architecture-Search): the two scoring ops of the
# attention-unit search space.  Both produce a score map broadcast to x's shape (a view, no copy),
# so whatever op reads the node next sees a full-size map, as with the reference's `expand_as`.
# --------------------------------------------------------------------------------------------------

def _stride_one(name, stride):
    if stride != 1:
        raise ValueError(f"{name} is an attention-unit op and only has stride 1, got {stride}")


class ChannelScore(nn.Module):
    """`channel_score` (the reference's class `SpatialPool`): global average and max pooling,
    concatenated, then one Linear(2C, C) with bias (the paper says MLP; the code has one layer),
    no nonlinearity; one score per channel."""

    def __init__(self, C, stride=1):
        super().__init__()
        _stride_one('channel_score', stride)
        self.fc = nn.Linear(2 * C, C)

    def forward(self, x):
        pooled = torch.cat([x.mean((2, 3)), x.amax((2, 3))], dim=1)
        return self.fc(pooled)[:, :, None, None].expand_as(x)


class SpatialScore(nn.Module):
    """`spatial_score` (the reference's class `ChannelPool`): max and mean over channels, then a
    bias-free 1x1 Conv2d(2, 1), no nonlinearity; one score per position."""

    def __init__(self, C, stride=1):
        super().__init__()
        _stride_one('spatial_score', stride)
        self.conv = nn.Conv2d(2, 1, 1, bias=False)

    def forward(self, x):
        pooled = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], dim=1)
        return self.conv(pooled).expand_as(x)


OPS.register('relu_conv_bn_1x1', lambda C, stride, affine: ReLUConvBN(C, C, 1, stride, 0, affine))
OPS.register('channel_score', lambda C, stride, affine: ChannelScore(C, stride))
OPS.register('spatial_score', lambda C, stride, affine: SpatialScore(C, stride))


def make_candidate(name, C, stride, height, width, affine, search=False):
    """Build one edge candidate: a registered op or attention.

    An attention used as a first-layer candidate on a stride-2 edge is preceded by a
    non-affine FactorizedReduce, as in Att-DARTS; `height`/`width` are the edge's output size.
    In a search (`search=True`) a pool is followed by a BatchNorm with the supernet's `affine`:
    non-affine in DARTS, affine in CNAS's `--use_sparse` supernet.
    """
    if name in OPS:
        op = OPS[name](C, stride, affine)
        if search and name in POOLING_OPS:
            op = nn.Sequential(op, nn.BatchNorm2d(C, affine=affine))
        return op
    if name in ATTENTIONS:
        module = ATTENTIONS[name](C, height, width)
        if stride != 1:
            module = nn.Sequential(FactorizedReduce(C, C, affine=False), module)
        return module
    raise KeyError(f"unknown op or attention '{name}'")


def is_identity(module):
    return isinstance(module, (nn.Identity, attention.Identity))
