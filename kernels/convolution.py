"""Fast kernels for the convolutions and pools of the DARTS search space (see kernels/__init__.py).

Each class here subclasses the plain module of `operations.py` (or torch.nn) with the same
parameters and computes the same function with other rounding: less memory kept for backward, or
kernels that are faster where `kernels.MEASURED_FASTER` says they were measured so.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

import operations
from kernels.layout import memory_layout, recording, subsample, subsample_backward
from registry import FAST_KERNELS


class PolyphaseDilatedConv(nn.Conv2d):
    """A depthwise Conv2d that, when dilated (dilation d, padding a multiple of d, even sizes),
    computes without dilation on the d x d polyphase components of its input: the same products
    and sums.  oneDNN's dilated depthwise backward is slow on the CPU.  At stride d the components
    are one slice of the input; at stride 1 they are d^2 images of 1/d^2 the size, whose backward
    is faster, but whose forward with its two copies is slower than the dilated kernel, so values
    nothing will differentiate through (a hand-written backward's forward and recomputation) take
    that kernel (docs/benchmarks.md has the measurements)."""

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
            grad_x = subsample_backward(grad_x, x.shape, memory_layout(x), 0, d)
        elif needs_input and path == 'phases':
            grad_x = self._from_phases(grad_x, x.shape[0])
        return grad_x, grad_weight


def _depthwise_weight_grad_by_shifts(grad, x, kernel_size, padding):
    """The weight gradient of a depthwise conv (stride 1, no dilation) as its k*k sums of grad times
    the shifted input: on images smaller than the kernel (dil_conv_5x5's 4x4 phases of an 8x8 map)
    oneDNN's kernel is slow on the CPU."""
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
        needs = [tuple(ctx.needs_input_grad[2 + 4 * i + k] for k in range(4)) for i in range(len(stages))]
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


@FAST_KERNELS.register(operations.DilConv)
class FastDilConv(operations.DilConv):
    """DilConv whose depthwise and pointwise convs keep only their input for backward
    (`_SeparableConv`), the depthwise one a `PolyphaseDilatedConv`."""

    def accelerate(self):
        self[1].__class__ = PolyphaseDilatedConv

    def forward(self, x):
        return self[3](self.separable(self[0](x)))

    def separable(self, x):
        """The depthwise and pointwise convs; with `_SeparableConv`'s backward when recording a graph."""
        depthwise, pointwise = self[1], self[2]
        if recording():
            return _SeparableConv.apply(x, ((depthwise, None),), depthwise.weight, pointwise.weight, None, None)
        return pointwise(depthwise(x))

    def stages(self):
        """What forward applies in order (FastMixedEdge shares the ReLU and fuses the BatchNorm)."""
        return [self[0], self.separable, self[3]]


# Recomputing a map costs one more conv call in backward; below a megabyte a call's fixed cost
# outweighs the memory saved (on the CPU; docs/benchmarks.md).
RECOMPUTED_MAP_BYTES = 2 ** 20


@FAST_KERNELS.register(operations.SepConv)
class FastSepConv(operations.SepConv):
    """SepConv whose two separable stages run in `_SeparableConv`s that keep only their input."""

    def forward(self, x):
        return self[1][3](self.separable(self[0][0](x)))

    def separable(self, x):
        """Both separable convs with the first's BatchNorm and the second's ReLU between them; when
        recording a graph with batch statistics, in `_SeparableConv`s that keep only their input:
        one for both stages where the middle map is large (it is recomputed in backward), else one
        per stage."""
        first, second = self
        bn = first[3]
        if not (recording() and isinstance(second[0], nn.ReLU) and bn.training and bn.track_running_stats
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
        """What forward applies in order (FastMixedEdge shares the ReLU and fuses the last BatchNorm)."""
        return [self[0][0], self.separable, self[1][3]]


@FAST_KERNELS.register(operations.StridedPointwiseConv)
class FastStridedPointwiseConv(operations.StridedPointwiseConv):
    """The subsampled 1x1 conv on a copy in x's layout, with its gradient in that layout."""

    def forward(self, x):
        return self._conv_forward(subsample(x, self.offset, self.subsample), self.weight, self.bias)


class _IndexFreeMaxPool(torch.autograd.Function):
    """max_pool2d that keeps its input for backward instead of int64 argmax indices (twice the
    size of the output in float32), and finds the argmax again in backward.  A cell state feeds
    several edges, so the input is usually kept once for all of them while indices were per edge."""

    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, ceil_mode):
        ctx.geometry = (kernel_size, stride, padding, 1, ceil_mode)
        ctx.save_for_backward(x)
        return F.max_pool2d(x, kernel_size, stride, padding, ceil_mode=ceil_mode)

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        _, indices = torch.ops.aten.max_pool2d_with_indices(x, *ctx.geometry)
        grad_x = torch.ops.aten.max_pool2d_with_indices_backward(grad, x, *ctx.geometry, indices)
        return grad_x, None, None, None, None


@FAST_KERNELS.register(nn.MaxPool2d)
class IndexFreeMaxPool(nn.MaxPool2d):
    """nn.MaxPool2d (dilation 1) with the index-free backward of `_IndexFreeMaxPool`."""

    def forward(self, x):
        if not (torch.is_grad_enabled() and x.requires_grad):
            return super().forward(x)
        return _IndexFreeMaxPool.apply(x, self.kernel_size, self.stride, self.padding, self.ceil_mode)


class _ReLUConv(torch.autograd.Function):
    """conv(relu(x)) keeping x for backward instead of relu(x), which is recomputed there.  A cell's
    output feeds the preprocessing of the next two cells, each of which kept its own ReLU of it:
    now both keep the one x."""

    @staticmethod
    def forward(ctx, x, weight, conv):
        ctx.conv = conv
        ctx.save_for_backward(x, weight)
        return conv._conv_forward(F.relu(x), weight, None)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        conv = ctx.conv
        grad_relu, grad_weight, _ = torch.ops.aten.convolution_backward(
            grad, F.relu(x), weight, None, conv.stride, conv.padding, conv.dilation, False, [0, 0], conv.groups,
            [ctx.needs_input_grad[0], ctx.needs_input_grad[1], False])
        grad_x = grad_relu.masked_fill_(x <= 0, 0) if grad_relu is not None else None
        return grad_x, grad_weight, None


@FAST_KERNELS.register(operations.ReLUConvBN)
class FastReLUConvBN(operations.ReLUConvBN):
    """ReLUConvBN (a cell's preprocessing) whose ReLU and conv keep only their input (`_ReLUConv`)."""

    def forward(self, x):
        relu, conv, bn = self
        if not (recording() and isinstance(relu, nn.ReLU) and conv.bias is None and conv.padding_mode == 'zeros'
                and not torch.is_autocast_enabled(x.device.type)):
            return super().forward(x)
        return bn(_ReLUConv.apply(x, conv.weight, conv))
