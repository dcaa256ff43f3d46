"""Memory-layout helpers of the fast kernels.

On the CPU a channels-last feature map that receives a contiguous gradient makes every later kernel
on it, and the sum it is accumulated into, a slow mixed-layout one.  These helpers compute what
their plain counterparts compute while keeping gradients in the input's layout.
"""
import torch
import torch.nn as nn


def memory_layout(x):
    """The memory format a 4-d tensor is stored in (channels-last, else contiguous)."""
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format


def recording():
    """Whether this forward records a graph that a hand-written backward may serve: gradients on,
    and not under torch.compile (which plans its own memory)."""
    return torch.is_grad_enabled() and not torch.compiler.is_compiling()


def spatial_mean(x):
    """x.mean((2, 3)) whose backward is a broadcast view of the small gradient: mean's backward
    materialises a full-size contiguous one."""
    return x.sum((2, 3)) / (x.shape[2] * x.shape[3])


class _DenseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.layout = memory_layout(x)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous(memory_format=ctx.layout)


class GlobalAveragePool(nn.AdaptiveAvgPool2d):
    """nn.AdaptiveAvgPool2d(1) for a classifier head, its gradient materialised once in x's layout:
    as a broadcast view it would reach every layer of the last cell, each making its own
    (contiguous) copy."""

    def forward(self, x):
        return spatial_mean(_DenseGradient.apply(x))[:, :, None, None]


def running_variance(x, invstd, eps):
    """The unbiased batch variance that BatchNorm puts into its running average, from the batch
    invstd of x (N, C, ...) that a training-mode normalisation returned."""
    count = x.numel() // x.shape[1]
    return (invstd.pow(-2) - eps) * (count / max(count - 1, 1))


class _Subsample(torch.autograd.Function):
    """x[:, :, start::step, start::step] copied into x's memory layout, with a gradient in that
    layout too.  A strided view sends the convolution after it down a reordering path, and
    autograd's slice backward allocates a contiguous gradient.  Differentiable twice."""

    @staticmethod
    def forward(ctx, x, start, step):
        ctx.shape, ctx.layout, ctx.start, ctx.step = x.shape, memory_layout(x), start, step
        return x[:, :, start::step, start::step].contiguous(memory_format=memory_layout(x))

    @staticmethod
    def backward(ctx, grad):
        return subsample_backward(grad, ctx.shape, ctx.layout, ctx.start, ctx.step), None, None


def subsample_backward(grad, shape, layout, start, step):
    grad_x = torch.empty(shape, dtype=grad.dtype, device=grad.device, memory_format=layout).zero_()
    grad_x[:, :, start::step, start::step] = grad
    return grad_x


def subsample(x, start, step):
    """x[:, :, start::step, start::step] in x's layout, with a gradient in that layout."""
    return _Subsample.apply(x, start, step)
