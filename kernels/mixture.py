"""The fast mixed edge and cell of the DARTS supernet (see kernels/__init__.py).

While training, the candidates opening with a ReLU share one ReLU(x), the pools are computed once
per input (`SharedInput`: a cell state feeds up to four edges), and the convs closing with a
BatchNorm are summed by `NormalizedMixture`: per edge that is 3 and 6 fewer feature maps kept for
backward in the DARTS space (a pool keeps its normalised output, not its input), fewer again when
a state's edges share the pools.  Attentions that scale channels only (a `channel_scale`) are
mixed as x * sum_k w_k scale_k: one product at full resolution instead of two per attention, and
none of their outputs kept.  Attentions with a `weighted(x, w)` apply their own mixture weight so
that the gradient of w needs no saved output.  The attention layer of a node runs its edges
together where every candidate has an edge-batched form (`FastMixedEdge.node_sum`).  Same
results as `model_search`, other rounding.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

import anas
import attention
import model_search
from kernels.layout import memory_layout, recording, running_variance
from registry import FAST_KERNELS


def leaf_modules(module):
    """The steps a module applies in order: those of its `stages()` where it has them, of the
    children of an nn.Sequential, else [module]."""
    if hasattr(module, 'stages'):
        parts = module.stages()
    elif isinstance(module, nn.Sequential):
        parts = list(module)
    else:
        return [module]
    return [leaf for part in parts for leaf in leaf_modules(part)]


def rescales_channels(op):
    """Whether op computes x * op.channel_scale(x): a ChannelGate whose forward is that product, or
    Identity's (x itself, the product with 1).  CNAS's ChannelWeight, for one, reduces after it."""
    return (isinstance(op, attention.ChannelGate)
            and type(op).forward in (attention.ChannelGate.forward, attention.Identity.forward))


class NormalizedMixture(torch.autograd.Function):
    """sum_k w_k * BN_k(z_k) with training-mode BatchNorms, keeping only the z_k for backward.

    In the DARTS mixture every conv and pool candidate ends in a BatchNorm, and autograd would
    keep both its input z_k and its output (for d/dw_k).  The output is a cheap function of z_k and
    the batch statistics, so here the gradient of w_k is recovered from z_k:
    sum(g * BN(z)) = sum_c gamma_c * dot_c + beta_c * sum(g)_c with dot_c = sum(g * (z - mean) * invstd)_c,
    which is the BatchNorm backward's own weight gradient.  w_k is folded into the BatchNorm's scale
    and shift, so each candidate costs one normalisation pass and one backward kernel.  Running
    statistics are updated as BatchNorm2d updates them.  First derivatives only (the second-order
    architect uses finite differences).
    """

    @staticmethod
    def _scale(weight, gamma, channels):
        return weight * gamma if gamma is not None else weight.expand(channels).contiguous()

    @staticmethod
    def forward(ctx, weights, eps, momentum, *flat):
        out, saved = None, []
        for k in range(len(flat) // 5):
            z, gamma, beta, running_mean, running_var = flat[5 * k:5 * k + 5]
            scale = NormalizedMixture._scale(weights[k], gamma, z.shape[1])
            shift = weights[k] * beta if beta is not None else None
            y, mean, invstd = torch.native_batch_norm(z, scale, shift, running_mean, running_var, True, momentum, eps)
            out = y if out is None else out.add_(y)
            saved += [z, gamma, beta, running_mean, running_var, mean, invstd]
        ctx.eps, ctx.count = eps, len(flat) // 5
        ctx.save_for_backward(weights, *saved)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        weights, *saved = ctx.saved_tensors
        grad_weights = torch.zeros_like(weights)
        flat = []
        for k in range(ctx.count):
            z, gamma, beta, running_mean, running_var, mean, invstd = saved[7 * k:7 * k + 7]
            w = weights[k]
            grad_z, dot, grad_sum = torch.ops.aten.native_batch_norm_backward(
                grad.to(z.dtype), z, NormalizedMixture._scale(w, gamma, z.shape[1]), running_mean, running_var,
                mean, invstd, True, ctx.eps, [True, True, gamma is not None])
            if gamma is None:
                grad_weights[k] = dot.sum()
                flat += [grad_z, None, None, None, None]
            else:
                grad_weights[k] = (gamma * dot).sum() + (beta * grad_sum).sum()
                flat += [grad_z, w * dot, w * grad_sum, None, None]
        return (grad_weights, None, None, *flat)


class BatchNormKeepingOutput(torch.autograd.Function):
    """Training-mode non-affine BatchNorm that keeps its output y instead of its input for backward:
    grad_z = invstd * (g - mean_c(g) - y * mean_c(g * y)).  A shared pool's y is kept anyway, for
    the gradients of the mixture weights, so the pool output z need not be.  Returns (y, batch mean,
    batch invstd), the last two without gradient; first derivatives only."""

    @staticmethod
    def forward(ctx, z, running_mean, running_var, momentum, eps):
        y, mean, invstd = torch.native_batch_norm(z, None, None, running_mean, running_var, True, momentum, eps)
        ctx.save_for_backward(y, invstd)
        ctx.mark_non_differentiable(mean, invstd)
        return y, mean, invstd

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad, _mean, _invstd):
        y, invstd = ctx.saved_tensors
        # BatchNorm's own backward kernel, told that y is its input with mean 0 and invstd 1 and
        # that invstd is the scale, computes exactly the formula above.
        grad_z, _, _ = torch.ops.aten.native_batch_norm_backward(
            grad.to(y.dtype), y, invstd, None, None, torch.zeros_like(invstd), torch.ones_like(invstd), True, 0.0,
            [True, False, False])
        return grad_z, None, None, None, None


class SharedInput:
    """What the edges reading one tensor x would each compute alike, computed once: ReLU(x), and
    the weight-free pools with their optional non-affine BatchNorm.  A training-mode BatchNorm
    normalises with the batch's own statistics, so equal inputs give equal outputs; each edge's
    BatchNorm still gets its running statistics updated, from the shared batch statistics."""

    def __init__(self, x):
        self.x = x
        self._relu = None
        self._pooled = {}

    def relu(self):
        if self._relu is None:
            self._relu = F.relu(self.x)
        return self._relu

    @staticmethod
    def _signature(body, bn):
        """What fixes the pooled output, or None if `body` is not one pooling layer."""
        if len(body) != 1 or not isinstance(body[0], (nn.AvgPool2d, nn.MaxPool2d)):
            return None
        pool = body[0]
        if isinstance(pool, nn.MaxPool2d) and (pool.dilation not in (1, (1, 1)) or pool.return_indices):
            return None
        if bn is not None and (bn.affine or not bn.track_running_stats or bn.momentum is None):
            return None
        geometry = tuple(getattr(pool, name, None) for name in
                         ('kernel_size', 'stride', 'padding', 'ceil_mode', 'count_include_pad', 'divisor_override'))
        return type(pool), geometry, None if bn is None else (bn.eps, bn.momentum)

    def pooled(self, body, bn):
        """BN(pool(x)) for the candidate [pool, bn] (bn may be None), or None if it is no pool."""
        signature = self._signature(body, bn)
        if signature is None:
            return None
        if signature not in self._pooled:
            z = body[0](self.x)
            if bn is None:
                self._pooled[signature] = z, None
            else:
                y, mean, invstd = BatchNormKeepingOutput.apply(z, bn.running_mean, bn.running_var, bn.momentum,
                                                               bn.eps)
                bn.num_batches_tracked.add_(1)
                self._pooled[signature] = y, (bn, mean, running_variance(z, invstd, bn.eps))
            return self._pooled[signature][0]
        y, statistics = self._pooled[signature]
        if statistics is not None and statistics[0] is not bn:
            _, mean, variance = statistics
            with torch.no_grad():
                bn.running_mean.lerp_(mean, bn.momentum)
                bn.running_var.lerp_(variance, bn.momentum)
            bn.num_batches_tracked.add_(1)
        return y


@FAST_KERNELS.register(model_search.MixedEdge)
class FastMixedEdge(model_search.MixedEdge):
    """MixedEdge with the shared inputs, fused BatchNorms and weighted attentions above."""

    def fused(self):
        return self.training and recording()

    @staticmethod
    def _plan(op):
        """(opens with ReLU, modules between that ReLU and a final BatchNorm2d, that BatchNorm2d)."""
        leaves = leaf_modules(op)
        relu = isinstance(leaves[0], nn.ReLU)
        final = leaves[-1] if isinstance(leaves[-1], nn.BatchNorm2d) and len(leaves) > 1 else None
        return relu, leaves[int(relu):len(leaves) - (final is not None)], final

    def forward(self, x, weights, shared=None):
        """`shared`: the SharedInput of x if the caller has one (x feeds several edges)."""
        if not self.fused():
            return super().forward(x, weights)
        shared = SharedInput(x) if shared is None else shared
        out, normalized, gates = None, [], None
        for j, (k, op) in enumerate(zip(self.active, self.candidates)):
            if self.droppable[j] and self.dropout > 0:
                term = weights[k] * self.dropped(j, op(x))
                out = term if out is None else out + term
                continue
            if rescales_channels(op):
                gate = weights[k] * op.channel_scale(x)
                gates = gate if gates is None else gates + gate
                continue
            if hasattr(op, 'weighted'):
                term = op.weighted(x, weights[k])
                out = term if out is None else out + term
                continue
            # Planned on every call: modules may have been swapped since construction.
            opens_with_relu, body, final_bn = self._plan(op)
            pooled = shared.pooled(body, final_bn) if not opens_with_relu else None
            if pooled is not None:
                out = weights[k] * pooled if out is None else torch.addcmul(out, pooled, weights[k])
                continue
            h = shared.relu() if opens_with_relu else x
            for module in body:
                h = module(h)
            if final_bn is not None and final_bn.track_running_stats:
                normalized.append((k, h, final_bn))
                continue
            if final_bn is not None:
                h = final_bn(h)
            out = weights[k] * h if out is None else out + weights[k] * h
        if normalized:
            mixture = self._normalized_mixture(weights, normalized)
            out = mixture if out is None else out + mixture
        if gates is not None:
            out = x * gates if out is None else torch.addcmul(out, x, gates)
        return self.add_auxiliary(out, x)

    @staticmethod
    def node_sum(edges, xs, weights):
        """sum_e edges[e](xs[e], weights[e]): a node's input edges.  Where every candidate is an
        attention with an edge-batched form (the attention layer of `after_every`), the k edges
        run together on their maps stacked along the batch, each candidate once for all k, with
        each edge's own parameters (stacked per call) and running statistics: at search sizes most
        of an attention's cost is per call, not per pixel.  Same result, other rounding."""
        if not FastMixedEdge._edge_batchable(edges, xs):
            return sum(edge(x, w) for edge, x, w in zip(edges, xs, weights))
        k, n, first = len(xs), xs[0].shape[0], edges[0]
        x = torch.cat(xs)
        out = gates = None
        for j, index in enumerate(first.active):
            modules = [edge.candidates[j] for edge in edges]
            kind = type(modules[0])
            if hasattr(kind, 'edge_channel_scales'):
                scale = kind.edge_channel_scales(modules, x, k)
                gate = weights[:, index, None, None] if scale is None else scale * weights[:, index, None, None]
                gates = gate if gates is None else gates + gate
            else:
                term = kind.edge_weighted(modules, x, k, weights[:, index])
                out = term if out is None else out + term
        if gates is not None:
            gates = gates.expand(k, n, x.shape[1]).reshape(k * n, x.shape[1], 1, 1)
            out = x * gates if out is None else torch.addcmul(out, x, gates)
        # Summed over the positions-by-channels view, so that the node stays channels-last.
        return out.permute(0, 2, 3, 1).reshape(k, n, *out.shape[2:], out.shape[1]).sum(0).permute(0, 3, 1, 2)

    @staticmethod
    def _edge_batchable(edges, xs):
        first, x = edges[0], xs[0]
        if (len(edges) < 2 or not first.fused() or x.dim() != 4 or x.shape[0] < 2
                or torch.is_autocast_enabled(x.device.type)):
            return False
        if any(t.shape != x.shape or memory_layout(t) != torch.channels_last for t in xs):
            return False
        kinds = [type(c) for c in first.candidates]
        if not all(hasattr(kind, 'edge_batchable') for kind in kinds) or any(
                [type(c) for c in edge.candidates] != kinds or edge.active != first.active for edge in edges):
            return False
        return all(kind.edge_batchable([edge.candidates[j] for edge in edges], x) for j, kind in enumerate(kinds))

    @staticmethod
    def _normalized_mixture(weights, normalized):
        rows, flat = [], []
        eps, momentum = normalized[0][2].eps, normalized[0][2].momentum
        for k, z, bn in normalized:
            if (bn.eps, bn.momentum) != (eps, momentum) or bn.momentum is None:
                raise ValueError('a mixed edge needs the same eps and momentum on all its BatchNorms')
            bn.num_batches_tracked.add_(1)
            rows.append(weights[k])
            flat += [z, bn.weight, bn.bias, bn.running_mean, bn.running_var]
        # Integer indexing is a view: a list index would copy it to the device (a sync on CUDA).
        return NormalizedMixture.apply(torch.stack(rows), eps, momentum, *flat)


class SharedInputs:
    """For a cell or unit: what a forward computes once per state for the edges reading it to share,
    a `SharedInput` (and, in a partial-channel cell, the bypassed channels)."""

    def forward(self, *args):
        self._shared = {}
        try:
            return super().forward(*args)
        finally:
            self._shared = None

    def shared(self, h):
        """The SharedInput of what state h's edges mix (`edge_input(h)`)."""
        # The states are alive until the forward ends, so their ids are not reused before then.
        if id(h) not in self._shared:
            self._shared[id(h)] = SharedInput(self.edge_input(h))
        return self._shared[id(h)]

    @staticmethod
    def edge_input(h):
        return h


@FAST_KERNELS.register(model_search.SearchCell)
class FastSearchCell(SharedInputs, model_search.SearchCell):
    def edge_input(self, h):
        # A copy of the mixed channels, not a view: what the candidates keep for backward (a max
        # pool's input) then holds C/K channels rather than the whole state.
        mixed = self.mixed_channels(h)
        return mixed if mixed is h else mixed.contiguous(memory_format=memory_layout(h))

    def bypass(self, e, h):
        # The edges reading h send the same channels around their mixtures: pooled once per state.
        if getattr(self, '_shared', None) is None:
            return super().bypass(e, h)
        key = 'bypass', id(h), self.strides[e]
        if key not in self._shared:
            self._shared[key] = super().bypass(e, h)
        return self._shared[key]

    def node(self, states, edges, weights):
        inputs = [self.shared(h) for h in states]
        outs = [self.first[e](shared.x, weights['first'][e], shared) for e, shared in zip(edges, inputs)]
        if self.second is None:
            return self.join(outs, edges, states, weights)
        # The attention layer of the node's edges summed in one call: an edge's output is linear in
        # its mixture weights, so an edge weight scales them, and shuffle(cat(.)) is linear too.
        rows = weights['second'][edges[0]:edges[-1] + 1]
        edge_weights = weights.get('edges')
        if edge_weights is not None:
            rows = rows * edge_weights[edges[0]:edges[-1] + 1, None]
        mixed = FastMixedEdge.node_sum([self.second[e] for e in edges], outs, rows)
        if self.partial_channels == 1:
            return mixed
        return self.merge(mixed, self.edge_sum([self.bypass(e, h) for e, h in zip(edges, states)], edges, weights))


@FAST_KERNELS.register(anas.MixedAttentionUnit)
class FastMixedAttentionUnit(SharedInputs, anas.MixedAttentionUnit):
    def node(self, states, edges, weights):
        return sum(self.edges[e](h, weights[e], self.shared(h)) for e, h in zip(edges, states))
