"""Candidate operations of the DARTS cell search space.

Liu, Simonyan and Yang, "DARTS: Differentiable Architecture Search", ICLR 2019
(https://arxiv.org/abs/1806.09055), with the NASNet/AmoebaNet extras (`sep_conv_7x7`,
`conv_7x1_1x7`) needed to rebuild those genotypes.

Every entry of `OPS` is a constructor `OPS[name](C, stride, affine)` whose output has C channels
and the spatial size divided by `stride`.  Other families register their ops in the same table.
"""
import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F

import attention
from utils import memory_layout, spatial_mean

_hand_written_backward = {'enabled': True, 'weight_gradients': True}


@contextlib.contextmanager
def plain_autograd():
    """Layers record their plain autograd graph instead of the memory-saving backward passes written
    here and in model_search (first derivatives only): needed to differentiate twice (create_graph=True)."""
    _hand_written_backward['enabled'] = False
    try:
        yield
    finally:
        _hand_written_backward['enabled'] = True


@contextlib.contextmanager
def architecture_gradients_only():
    """The backward passes run inside want no weight gradients (the architect's passes to the
    alphas): hand-written backward passes skip them, as autograd itself would."""
    _hand_written_backward['weight_gradients'] = False
    try:
        yield
    finally:
        _hand_written_backward['weight_gradients'] = True


def weight_gradients_wanted():
    return _hand_written_backward['weight_gradients']


def hand_written_backward():
    """Whether a layer may use its hand-written backward now: recording a graph, outside
    `plain_autograd()`, and not under torch.compile (which plans its own memory)."""
    return _hand_written_backward['enabled'] and torch.is_grad_enabled() and not torch.compiler.is_compiling()


class ReLUConvBN(nn.Sequential):
    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class _Subsample(torch.autograd.Function):
    """x[:, :, start::step, start::step] copied into x's memory layout, with a gradient in that
    layout too.  A strided view sends the convolution after it down a reordering path, and
    autograd's slice backward allocates a contiguous gradient, which makes the rest of a
    channels-last backward pass mixed-layout and several times slower on the CPU.  Differentiable
    twice."""

    @staticmethod
    def forward(ctx, x, start, step):
        ctx.shape, ctx.layout, ctx.start, ctx.step = x.shape, memory_layout(x), start, step
        return x[:, :, start::step, start::step].contiguous(memory_format=memory_layout(x))

    @staticmethod
    def backward(ctx, grad):
        return _subsample_backward(grad, ctx.shape, ctx.layout, ctx.start, ctx.step), None, None


def _subsample_backward(grad, shape, layout, start, step):
    grad_x = torch.empty(shape, dtype=grad.dtype, device=grad.device, memory_format=layout).zero_()
    grad_x[:, :, start::step, start::step] = grad
    return grad_x


def subsample(x, start, step):
    """x[:, :, start::step, start::step] in x's layout, with a gradient in that layout."""
    return _Subsample.apply(x, start, step)


class PolyphaseDilatedConv(nn.Conv2d):
    """A depthwise Conv2d that, when dilated (dilation d, padding a multiple of d, even sizes),
    computes without dilation on the d x d polyphase components of its input: the same products
    and sums.  oneDNN's dilated depthwise backward is slow on the CPU: at stride d the components
    are one slice of the input (7-14x faster, forward and backward); at stride 1 they are d^2
    images of 1/d^2 the size, whose backward is 2-6x faster (weight gradient 3-8x) at every size of
    the search.  The stride-1 forward, though, is 2-8x faster on the dilated kernel itself than on
    the phases with their two copies (AMD EPYC, batch 16, 8x8 to 32x32), so values nothing will
    differentiate through (a hand-written backward's forward and recomputation) take that kernel."""

    def forward(self, x):
        return self.conv(x, self.weight)

    def _path(self, x):
        """'slice' (stride d: one polyphase component), 'phases' (stride 1) or 'dilated'."""
        d, stride, padding = self.dilation[0], self.stride[0], self.padding[0]
        usable = (d > 1 and self.dilation[1] == d and self.stride[1] == stride and self.padding[1] == padding
                  and padding % d == 0 and x.shape[2] % d == 0 and x.shape[3] % d == 0)
        return 'slice' if usable and stride == d else 'phases' if usable and stride == 1 else 'dilated'

    def _to_phases(self, x):
        """(n, c, h, w) -> (n * d * d, c, h / d, w / d), channels-last: phase (i, j) holds x[i::d, j::d]."""
        d, (n, c, h, w) = self.dilation[0], x.shape
        phases = x.permute(0, 2, 3, 1).reshape(n, h // d, d, w // d, d, c).permute(0, 2, 4, 1, 3, 5)
        return phases.reshape(n * d * d, h // d, w // d, c).permute(0, 3, 1, 2)

    def _from_phases(self, phases, n):
        d, (_, c, h, w) = self.dilation[0], phases.shape
        out = phases.permute(0, 2, 3, 1).reshape(n, d, d, h, w, c).permute(0, 3, 1, 4, 2, 5)
        return out.reshape(n, h * d, w * d, c).permute(0, 3, 1, 2)

    def conv(self, x, weight):
        """This convolution with `weight` in place of its own."""
        path, d, padding = self._path(x), self.dilation[0], self.padding[0]
        if path == 'slice':
            return F.conv2d(subsample(x, 0, d), weight, self.bias, 1, padding // d, 1, self.groups)
        recorded = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
        if path == 'dilated' or not recorded:
            return self._conv_forward(x, weight, self.bias)
        return self._from_phases(F.conv2d(self._to_phases(x), weight, self.bias, 1, padding // d, 1, self.groups),
                                 x.shape[0])

    def conv_backward(self, grad, x, weight, needs_input, needs_weight):
        """(grad of x or None, grad of weight or None) of `conv(x, weight)` (no bias), by the
        convolution's own backward kernel on the same path."""
        path, d, padding = self._path(x), self.dilation[0], self.padding[0]
        geometry = [1, 1], [padding // d] * 2, [1, 1]
        inputs = x
        if path == 'dilated':
            geometry = list(self.stride), list(self.padding), list(self.dilation)
        elif path == 'slice':
            inputs = subsample(x, 0, d)
        else:
            inputs, grad = self._to_phases(x), self._to_phases(grad)
        # The shifted sums pair output channel c with input channel c: depthwise without a multiplier.
        by_shifts = (needs_weight and path != 'dilated' and weight.shape[1] == 1 and weight.shape[0] == inputs.shape[1]
                     and max(inputs.shape[2:]) < max(weight.shape[2:]))
        grad_x, grad_weight, _ = torch.ops.aten.convolution_backward(
            grad, inputs, weight, None, *geometry, False, [0, 0], self.groups,
            [needs_input, needs_weight and not by_shifts, False])
        if by_shifts:
            grad_weight = _depthwise_weight_grad_by_shifts(grad, inputs, weight.shape[2:], padding // d)
        if needs_input and path == 'slice':
            grad_x = _subsample_backward(grad_x, x.shape, memory_layout(x), 0, d)
        elif needs_input and path == 'phases':
            grad_x = self._from_phases(grad_x, x.shape[0])
        return grad_x, grad_weight


def _depthwise_weight_grad_by_shifts(grad, x, kernel_size, padding):
    """The weight gradient of a depthwise conv (stride 1, no dilation) as its k*k sums of grad times
    the shifted input.  On images smaller than the kernel (dil_conv_5x5's 4x4 phases of an 8x8 map)
    oneDNN's kernel takes 3x as long (3.8 against 1.3 ms at batch 16 on an AMD EPYC)."""
    (kh, kw), (h, w) = kernel_size, grad.shape[2:]
    padded = F.pad(x, (padding,) * 4)
    sums = [(grad * padded[:, :, i:i + h, j:j + w]).sum((0, 2, 3)) for i in range(kh) for j in range(kw)]
    return torch.stack(sums, 1).view(-1, 1, kh, kw)


class _SeparableConv(torch.autograd.Function):
    """A chain of depthwise-separable stages, stage i being pointwise_i(depthwise_i(x)) or, with a
    training-mode BatchNorm in front, pointwise_i(depthwise_i(relu(batchnorm_i(x)))), keeping only
    the chain's input x (the layer before keeps it anyway) and the batch statistics: every stage's
    input, normalised input and depthwise output is recomputed in backward.  SepConv's two stages in
    one chain keep one feature map instead of three (the second stage's input costs one more
    pointwise conv in backward, and a depthwise one in a pass to the architecture weights), in two
    chains two; DilConv's one stage keeps one instead of two.  `stages` holds per stage (depthwise conv,
    norm): norm is (running mean, running var, momentum, eps) of its BatchNorm or None; `weights`
    are per stage (depthwise weight, pointwise weight, BatchNorm weight, BatchNorm bias), the last
    two None without a norm or affine parameters.  Autocast is replayed in backward."""

    @staticmethod
    def forward(ctx, x, stages, *weights):
        h, statistics = x, []
        for (depthwise, norm), (depthwise_weight, pointwise_weight, gamma, beta) in zip(stages, _by_stage(weights)):
            if norm is not None:
                running_mean, running_var, momentum, eps = norm
                h, mean, invstd = torch.native_batch_norm(h, gamma, beta, running_mean, running_var, True, momentum,
                                                          eps)
                h = h.relu_()
                statistics += [mean, invstd]
            h = F.conv2d(depthwise.conv(h, depthwise_weight), pointwise_weight)
        ctx.stages, ctx.dtype = stages, h.dtype
        ctx.save_for_backward(x, *weights, *statistics)
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, *rest = ctx.saved_tensors
        stages, dtype = ctx.stages, ctx.dtype
        weights, statistics = rest[:4 * len(stages)], iter(rest[4 * len(stages):])
        wanted = weight_gradients_wanted()
        needs = [tuple(wanted and ctx.needs_input_grad[2 + 4 * i + k] for k in range(4)) for i in range(len(stages))]
        # Forward again, keeping each stage's input, normalised input and (where the pointwise
        # weight's gradient needs it, or the next stage's input does) depthwise output.
        recomputed, h = [], x
        for i, ((depthwise, norm), (depthwise_weight, pointwise_weight, gamma, beta)) in enumerate(
                zip(stages, _by_stage(weights))):
            stage_input, stats = h, None
            if norm is not None:
                mean, invstd = next(statistics), next(statistics)
                scale = invstd if gamma is None else invstd * gamma
                shift = -mean * scale if beta is None else beta - mean * scale
                h = torch.addcmul(shift.view(1, -1, 1, 1).to(h.dtype), h, scale.view(1, -1, 1, 1).to(h.dtype)).relu_()
                stats = mean, invstd, norm[3]
            last = i == len(stages) - 1
            h_ = h.to(dtype)
            y = depthwise.conv(h_, depthwise_weight.to(dtype)) if needs[i][1] or not last else None
            recomputed.append((stage_input, h, y, stats))
            if not last:
                h = F.conv2d(y, pointwise_weight.to(dtype))
        grads = [None] * len(weights)
        for i in reversed(range(len(stages))):
            needs_earlier = ctx.needs_input_grad[0] or any(any(n) for n in needs[:i])
            grad, grads[4 * i:4 * i + 4] = _separable_stage_backward(
                grad, *recomputed[i], stages[i][0], *weights[4 * i:4 * i + 4], dtype, needs_earlier, needs[i])
            if grad is None:
                break
        return (grad if ctx.needs_input_grad[0] else None, None, *grads)


def _by_stage(weights):
    return [weights[4 * i:4 * i + 4] for i in range(len(weights) // 4)]


def _separable_stage_backward(grad, x, h, y, stats, depthwise, depthwise_weight, pointwise_weight, gamma, beta, dtype,
                              needs_x, needs):
    """(grad of x or None, [grads of the stage's four weights]) for one stage of `_SeparableConv`
    from its recomputed input x, normalised input h and depthwise output y (None if unneeded)."""
    needs_depthwise, needs_pointwise, needs_gamma, needs_beta = needs
    needs_h = needs_x or needs_gamma or needs_beta
    h_, weight_ = h.to(dtype), depthwise_weight.to(dtype)
    grad, pointwise_weight_ = grad.to(dtype), pointwise_weight.to(dtype)
    grad_y = grad_pointwise = None
    if needs_pointwise:
        grad_y, grad_pointwise, _ = torch.ops.aten.convolution_backward(
            grad, y, pointwise_weight_, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
            [needs_h or needs_depthwise, True, False])
    elif needs_h or needs_depthwise:
        grad_y = F.conv2d(grad, pointwise_weight_.transpose(0, 1))
    grad_h = grad_depthwise = None
    if needs_h or needs_depthwise:
        grad_h, grad_depthwise = depthwise.conv_backward(grad_y, h_, weight_, needs_h, needs_depthwise)
    grad_h = grad_h.to(h.dtype) if needs_h else None
    grad_x = grad_gamma = grad_beta = None
    if stats is not None and needs_h:
        mean, invstd, eps = stats
        grad_x, grad_gamma, grad_beta = torch.ops.aten.native_batch_norm_backward(
            torch.ops.aten.threshold_backward(grad_h, h, 0), x, gamma, None, None, mean, invstd, True, eps,
            [needs_x, needs_gamma, needs_beta])
    elif needs_x:
        grad_x = grad_h
    return grad_x, [grad_depthwise.to(depthwise_weight.dtype) if needs_depthwise else None,
                    grad_pointwise.to(pointwise_weight.dtype) if needs_pointwise else None, grad_gamma, grad_beta]


class DilConv(nn.Sequential):
    """ReLU, depthwise (dilated) conv, pointwise conv, BN."""

    def __init__(self, C_in, C_out, kernel_size, stride, padding, dilation, affine=True):
        super().__init__(
            nn.ReLU(inplace=False),
            PolyphaseDilatedConv(C_in, C_in, kernel_size, stride, padding, dilation=dilation, groups=C_in,
                                 bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x):
        return self[3](self.separable(self[0](x)))

    def separable(self, x):
        """The depthwise and pointwise convs; with `_SeparableConv`'s backward when recording a graph."""
        depthwise, pointwise = self[1], self[2]
        if hand_written_backward():
            return _SeparableConv.apply(x, ((depthwise, None),), depthwise.weight, pointwise.weight, None, None)
        return pointwise(depthwise(x))

    def stages(self):
        """What forward applies in order (MixedEdge shares the ReLU and fuses the BatchNorm)."""
        return [self[0], self.separable, self[3]]


# Recomputing a map costs one more conv call in backward, and below a megabyte a call's fixed cost
# (~0.2 ms on the CPU) outweighs the memory: a batch-16 search recomputes only its 32x32 maps.
RECOMPUTED_MAP_BYTES = 2 ** 20


class SepConv(nn.Sequential):
    """Two stacked depthwise-separable convs; only the first one strides."""

    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True):
        super().__init__(
            DilConv(C_in, C_in, kernel_size, stride, padding, 1, affine),
            DilConv(C_in, C_out, kernel_size, 1, padding, 1, affine),
        )

    def forward(self, x):
        return self[1][3](self.separable(self[0][0](x)))

    def separable(self, x):
        """Both separable convs with the first's BatchNorm and the second's ReLU between them; when
        recording a graph with batch statistics, in `_SeparableConv`s that keep only their input:
        one for both stages where the middle map is large (it is recomputed in backward), else one
        per stage."""
        first, second = self
        bn = first[3]
        if not (hand_written_backward() and isinstance(second[0], nn.ReLU) and bn.training and bn.track_running_stats
                and bn.momentum is not None):
            return second.separable(second[0](bn(first.separable(x))))
        bn.num_batches_tracked.add_(1)
        outer = ((first[1], None),), (first[1].weight, first[2].weight, None, None)
        inner = (((second[1], (bn.running_mean, bn.running_var, bn.momentum, bn.eps)),),
                 (second[1].weight, second[2].weight, bn.weight, bn.bias))
        if x.numel() * x.element_size() // first[1].stride[0] ** 2 >= RECOMPUTED_MAP_BYTES:
            return _SeparableConv.apply(x, outer[0] + inner[0], *outer[1], *inner[1])
        return _SeparableConv.apply(_SeparableConv.apply(x, outer[0], *outer[1]), inner[0], *inner[1])

    def stages(self):
        """What forward applies in order (MixedEdge shares the ReLU and fuses the last BatchNorm)."""
        return [self[0][0], self.separable, self[1][3]]


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


class StridedPointwiseConv(nn.Conv2d):
    """Conv2d(C_in, C_out, 1, stride) without bias on x[:, :, offset:, offset:], computed as a slice
    with that stride followed by a stride-1 1x1 convolution: the same numbers.  A stride-2 1x1
    convolution in channels-last layout corrupts the heap in its oneDNN backward for some shapes
    (torch 2.14.1, CPU; e.g. 8 -> 8 channels at 64x64, batch 2), so no layer here asks oneDNN for one."""

    def __init__(self, C_in, C_out, stride, offset=0):
        super().__init__(C_in, C_out, 1, bias=False)
        self.subsample, self.offset = stride, offset

    def forward(self, x):
        return super().forward(subsample(x, self.offset, self.subsample))


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


class _IndexFreeMaxPool(torch.autograd.Function):
    """max_pool2d that keeps its input for backward instead of int64 argmax indices (twice the
    size of the output in float32), and finds the argmax again in backward.  A cell state feeds
    several edges, so the input is usually kept once for all of them while indices were per edge."""

    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding):
        ctx.geometry = (kernel_size, stride, padding)
        ctx.save_for_backward(x)
        return F.max_pool2d(x, kernel_size, stride, padding)

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        kernel_size, stride, padding = ctx.geometry
        _, indices = torch.ops.aten.max_pool2d_with_indices(x, kernel_size, stride, padding)
        grad_x = torch.ops.aten.max_pool2d_with_indices_backward(grad, x, kernel_size, stride, padding, 1, False,
                                                                 indices)
        return grad_x, None, None, None


class MaxPool2d(nn.MaxPool2d):
    """nn.MaxPool2d (dilation 1, floor mode) with the index-free backward of `_IndexFreeMaxPool`."""

    def forward(self, x):
        if not (torch.is_grad_enabled() and x.requires_grad):
            return super().forward(x)
        return _IndexFreeMaxPool.apply(x, self.kernel_size, self.stride, self.padding)


def skip_connect(C, stride, affine):
    return nn.Identity() if stride == 1 else FactorizedReduce(C, C, affine)


OPS = {
    'none': lambda C, stride, affine: Zero(stride),
    'avg_pool_3x3': lambda C, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
    'max_pool_3x3': lambda C, stride, affine: MaxPool2d(3, stride=stride, padding=1),
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


# --------------------------------------------------------------------------------------------------
# CNAS ops: Zhou et al., "Automatic Convolutional Neural Architecture Search for Image Classification
# under Different Scenes", IEEE Access 2019 (reference code tianbaochou/CNAS, SPEC 4.1).
# --------------------------------------------------------------------------------------------------

class ChannelWeight(nn.Module):
    """`cweight_com`: squeeze-and-excitation channel weighting (Hu et al., CVPR 2018) with FC biases,
    as CNAS has it (attention.SE is the bias-free Att-DARTS variant).  A stride-2 edge reduces the
    weighted map with a depthwise 3x3 conv and BN."""

    def __init__(self, C, stride, affine=True, reduction=attention.REDUCTION):
        super().__init__()
        hidden = attention._hidden(C, reduction)  # the SE width rule, clamped to >= 1 for tiny nets
        self.excitation = nn.Sequential(nn.Linear(C, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, C))
        self.reduce = None
        if stride != 1:
            self.reduce = nn.Sequential(nn.Conv2d(C, C, 3, stride=stride, padding=1, groups=C, bias=False),
                                        nn.BatchNorm2d(C, affine=affine))

    def forward(self, x):
        out = x * torch.sigmoid(self.excitation(spatial_mean(x)))[:, :, None, None]
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
    """The most groups g <= `most` for a C-channel `shuffle_conv_3x3`: the C/g bottleneck must split
    into g groups (C % g^2 == 0) and each of them must get a channel from every group of the first
    conv after the shuffle (C/g^2 >= g).  1 (the reference's unit, no shuffle) when none fits."""
    return next((g for g in range(most, 1, -1) if C % (g * g) == 0 and C >= g ** 3), 1)


class ShuffleConv(nn.Module):
    """`shuffle_conv_3x3`: a ShuffleNet v1 unit (Zhang et al., CVPR 2018): grouped 1x1 conv to a
    C/g bottleneck, BN, ReLU, channel shuffle, depthwise 3x3 (the stride), BN, grouped 1x1 conv back
    to C, BN; plus the shortcut (identity, or AvgPool 3x3 stride 2), then ReLU.

    The reference passes 1 into `groups` (SPEC 4.1), which makes the convs dense and the shuffle a
    no-op; here g = shuffle_groups(C) (2 at 16 channels, 3 at 36) unless `groups` is given.  Like
    the reference and unlike ShuffleNet, the stride-2 shortcut is added, not concatenated, because
    the op must keep C channels."""

    def __init__(self, C, stride, affine=True, groups=None):
        super().__init__()
        groups = groups or shuffle_groups(C)
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


OPS['cweight_com'] = lambda C, stride, affine: ChannelWeight(C, stride, affine)
OPS['shuffle_conv_3x3'] = lambda C, stride, affine: ShuffleConv(C, stride, affine)


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
        pooled = torch.cat([spatial_mean(x), x.amax((2, 3))], dim=1)
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


OPS['relu_conv_bn_1x1'] = lambda C, stride, affine: ReLUConvBN(C, C, 1, stride, 0, affine)
OPS['channel_score'] = lambda C, stride, affine: ChannelScore(C, stride)
OPS['spatial_score'] = lambda C, stride, affine: SpatialScore(C, stride)


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
