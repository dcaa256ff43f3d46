"""Fast kernels for the attention modules of `attention.py` (see kernels/__init__.py).

Each class subclasses the plain module with the same parameters and adds what the fast mixture of
`kernels/mixture.py` uses: `channel_scale(x)` for modules that rescale channels (a mixture of them
is x * sum_k w_k scale_k), `weighted(x, w)` = w * forward(x) without keeping a full-size output for
w's gradient, and the edge-batched forms that run one candidate for all k input edges of a node on
their maps stacked along the batch, each edge with its own parameters and running statistics:

    edge_batchable(modules, x)                  whether the edge-batched form applies
    edge_channel_scales(modules, x, k)          (k, N, C) scales, for channel gates
    edge_weighted(modules, x, k, weights)       sum_e weights[e] * modules[e](x_e), stacked as x is

Reductions and full-size products keep their gradients in the input's memory layout.
"""
import torch
import torch.nn.functional as F

import attention
from kernels.layout import memory_layout, running_variance, spatial_mean
from registry import FAST_KERNELS


def _channel_max_and_mean(x):
    """(N, 2, H, W) in x's layout: max and mean over channels, reduced over the innermost memory
    dim, so that the max's scatter-to-argmax gradient is allocated in x's layout too."""
    if memory_layout(x) == torch.channels_last and not x.is_contiguous():
        positions = x.permute(0, 2, 3, 1)
        return torch.stack((positions.max(3).values, positions.sum(3) / x.shape[1]), 3).permute(0, 3, 1, 2)
    return torch.stack((x.max(1).values, x.sum(1) / x.shape[1]), 1)


def _global_max(x):
    """x.amax((2, 3)) as a max pool with indices, whose backward is a scatter to the argmax rather
    than a full-size comparison with the maximum; amax where deterministic algorithms are asked
    for (the pool's CUDA backward has none).  The two differ only at ties."""
    if torch.are_deterministic_algorithms_enabled():
        return x.amax((2, 3))
    return F.adaptive_max_pool2d(x, 1).flatten(1)


def _outer(mc, ms, like):
    """mc (N, C, 1, 1) times ms (N, 1, H, W) as a full-size map in the layout of `like`."""
    if torch.is_grad_enabled() and (mc.requires_grad or ms.requires_grad):
        return mc * ms  # differentiating a backward (out= records no graph): layout does not matter there
    return torch.mul(mc, ms, out=torch.empty(like.shape, dtype=torch.result_type(mc, ms), device=like.device,
                                             memory_format=memory_layout(like)))


def _reduce_to(t, shape):
    """Sums a broadcast gradient back to the shape of the factor it came from (a 0-d one too)."""
    if len(shape) == 0:
        return t.sum()
    dims = tuple(d for d, (n, m) in enumerate(zip(t.shape, shape)) if m == 1 and n != 1)
    return t.sum(dims, keepdim=True) if dims else t


def _edge_linear(h, layers):
    """Each edge's own nn.Linear (or 1x1 Conv2d) on its rows: h (k, M, C_in) -> (k, M, C_out)."""
    weight = torch.stack([layer.weight.reshape(layer.weight.shape[0], -1) for layer in layers]).transpose(1, 2)
    if layers[0].bias is None:
        return torch.bmm(h, weight)
    return torch.baddbmm(torch.stack([layer.bias for layer in layers]).unsqueeze(1), h, weight)


def _edge_conv(h, convs):
    """Each edge's own Conv2d on its channel group: h (N, k * C_in, H, W), one grouped conv."""
    conv = convs[0]
    bias = torch.cat([c.bias for c in convs]) if conv.bias is not None else None
    return F.conv2d(h, torch.cat([c.weight for c in convs]), bias, conv.stride, conv.padding, conv.dilation,
                    len(convs))


def _edge_batch_norm(h, norms):
    """Each edge's own training-mode BatchNorm on its channel group of h (N, k * C, ...): one
    normalisation, and each edge's running statistics moved as BatchNorm moves them."""
    first = norms[0]
    affine = first.affine
    weight = torch.cat([bn.weight for bn in norms]) if affine else None
    bias = torch.cat([bn.bias for bn in norms]) if affine else None
    y, mean, invstd = torch.native_batch_norm(h, weight, bias, None, None, True, 0.0, first.eps)
    with torch.no_grad():
        variance = running_variance(h, invstd, first.eps)
        torch._foreach_lerp_([bn.running_mean for bn in norms], list(mean.chunk(len(norms))), first.momentum)
        torch._foreach_lerp_([bn.running_var for bn in norms], list(variance.chunk(len(norms))), first.momentum)
        torch._foreach_add_([bn.num_batches_tracked for bn in norms], 1)
    return y


def edge_batch_norm_usable(norms):
    """Whether `_edge_batch_norm` does what each of these BatchNorms would do itself."""
    first = norms[0]
    return all(bn.training and bn.track_running_stats and bn.momentum is not None and bn.momentum == first.momentum
               and bn.eps == first.eps and bn.affine == first.affine for bn in norms)


def _positions(x, k):
    """A channels-last (k * N, C, H, W) map as (k, N * H * W, C) rows, a view."""
    return x.permute(0, 2, 3, 1).reshape(k, -1, x.shape[1])


def _per_sample(weights, n):
    """Edge weights (k,) as one per sample of a (k * N, ...) batch, (k * N, 1, 1, 1)."""
    return weights.view(-1, 1).expand(-1, n).reshape(-1, 1, 1, 1)


def _by_edge_channels(t, k):
    """(k * N, C, H, W) -> (N, k * C, H, W), channels-last: the edges' maps side by side as channel groups."""
    n, (C, H, W) = t.shape[0] // k, t.shape[1:]
    return _channels_last(t.permute(0, 2, 3, 1).reshape(k, n, H, W, C).permute(1, 2, 3, 0, 4).reshape(n, H, W, k * C))


def _by_edge_batch(t, k):
    """(N, k * C, H, W) -> (k * N, C, H, W), channels-last: the inverse of `_by_edge_channels`."""
    n, (C, H, W) = t.shape[0], (t.shape[1] // k, *t.shape[2:])
    return _channels_last(t.permute(0, 2, 3, 1).reshape(n, H, W, k, C).permute(3, 0, 1, 2, 4).reshape(k * n, H, W, C))


def _channels_last(positions):
    """(N, H, W, C) positions by channels -> a channels-last (N, C, H, W) map.  Where the reshape
    before was a view (one channel per edge) the strides are not channels-last: then a copy."""
    return positions.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


class _SpatialChannelGate(torch.autograd.Function):
    """weight * x * (1 + sigmoid(mc * ms))  (BAM) or  weight * x * mc * sigmoid(ms)  (CBAM), for
    x (N, C, H, W), a channel factor mc (N, C, 1, 1) and a spatial factor ms (N, 1, H, W).

    Autograd would keep the full-size sigmoid (and, in a weighted mixture, the output for the
    weight's gradient): here only x and the small factors are kept and the rest is recomputed in
    backward, so the module costs no activation memory beyond its input.  `weight` may be None, a
    0-d tensor, or one per sample (N, 1, 1, 1) when the batch holds several edges' maps."""

    @staticmethod
    def forward(ctx, x, mc, ms, weight, residual):
        ctx.residual = residual
        ctx.save_for_backward(x, mc, ms, weight)
        if residual:
            out = torch.addcmul(x, x, _outer(mc, ms, x).sigmoid_())
        else:
            out = x * _outer(mc, torch.sigmoid(ms), x)
        return out if weight is None else out.mul_(weight)

    @staticmethod
    def backward(ctx, grad):
        x, mc, ms, weight = ctx.saved_tensors
        need_x, need_mc, need_ms, need_weight = ctx.needs_input_grad[:4]
        grad_x = grad_mc = grad_ms = grad_weight = None
        # Everything for weight 1; the weight scales the small results (and grad_x) at the end.
        gx = grad * x
        if ctx.residual:
            gate = _outer(mc, ms, x).sigmoid_()
            if need_x:
                grad_x = torch.addcmul(grad, grad, gate)
            if need_weight:
                grad_weight = _reduce_to(torch.addcmul(gx, gx, gate), weight.shape)
            if need_mc or need_ms:
                pre = torch.ops.aten.sigmoid_backward(gx, gate)
                grad_mc = _reduce_to(pre * ms, mc.shape) if need_mc else None
                grad_ms = _reduce_to(pre * mc, ms.shape) if need_ms else None
        else:
            spatial = torch.sigmoid(ms)
            if need_x:
                grad_x = grad * _outer(mc, spatial, x)
            if need_ms or need_weight:
                by_channel = _reduce_to(gx * mc, ms.shape)
                grad_weight = _reduce_to(by_channel * spatial, weight.shape) if need_weight else None
                grad_ms = torch.ops.aten.sigmoid_backward(by_channel, spatial) if need_ms else None
            if need_mc:
                grad_mc = _reduce_to(gx * spatial, mc.shape)
        if weight is not None:
            grad_x = grad_x if grad_x is None else grad_x.mul_(weight)
            grad_mc = grad_mc if grad_mc is None else grad_mc * weight
            grad_ms = grad_ms if grad_ms is None else grad_ms * weight
        cast = lambda g, like: None if g is None else g.reshape(like.shape).to(like.dtype)
        return cast(grad_x, x), cast(grad_mc, mc), cast(grad_ms, ms), cast(grad_weight, weight), None


@FAST_KERNELS.register(attention.Identity)
class FastIdentity(attention.Identity):
    @staticmethod
    def edge_batchable(modules, x):
        return True

    @staticmethod
    def edge_channel_scales(modules, x, k):
        """None: the scale is 1 (see FastMixedEdge.node_sum)."""
        return None


@FAST_KERNELS.register(attention.SE)
class FastSE(attention.SE):
    def channel_scale(self, x):
        return torch.sigmoid(self.excitation(spatial_mean(x)))[:, :, None, None]

    @staticmethod
    def edge_batchable(modules, x):
        return True

    @staticmethod
    def edge_channel_scales(modules, x, k):
        """The (k, N, C) scales of k SE modules, module e on x[e * N:(e + 1) * N]."""
        pooled = spatial_mean(x).view(k, -1, x.shape[1])
        hidden = F.relu(_edge_linear(pooled, [m.excitation[0] for m in modules]))
        return torch.sigmoid(_edge_linear(hidden, [m.excitation[2] for m in modules]))


@FAST_KERNELS.register(attention.BAM)
class FastBAM(attention.BAM):
    def weighted(self, x, weight):
        """weight * forward(x) (weight a 0-d tensor or None), keeping only x and the gates."""
        mc = self.channel_gate(spatial_mean(x))[:, :, None, None]
        return _SpatialChannelGate.apply(x, mc, self.spatial_gate(x), weight, True)

    @staticmethod
    def edge_batchable(modules, x):
        return all(edge_batch_norm_usable([m.channel_gate[1] for m in modules] if i is None
                                          else [m.spatial_gate[i] for m in modules]) for i in (None, 1, 4, 7))

    @staticmethod
    def edge_weighted(modules, x, k, weights):
        """sum_e weights[e] * modules[e](x[e * N:(e + 1) * N]) for k BAMs, stacked as x is (see
        FastMixedEdge.node_sum); the spatial gates' narrow maps run as grouped convs, one per layer."""
        n, C, H, W = x.shape[0] // k, *x.shape[1:]
        channel = [m.channel_gate for m in modules]
        h = _edge_linear(spatial_mean(x).view(k, n, C), [g[0] for g in channel])
        hidden = h.shape[2]
        h = F.relu(_edge_batch_norm(h.transpose(0, 1).reshape(n, k * hidden), [g[1] for g in channel]))
        mc = _edge_linear(h.view(n, k, hidden).transpose(0, 1), [g[3] for g in channel])
        spatial = [m.spatial_gate for m in modules]
        s = _edge_linear(_positions(x, k), [g[0] for g in spatial])
        s = _channels_last(s.view(k, n, H, W, hidden).permute(1, 2, 3, 0, 4).reshape(n, H, W, k * hidden))
        for norm, conv in ((1, 3), (4, 6), (7, 9)):
            s = _edge_conv(F.relu(_edge_batch_norm(s, [g[norm] for g in spatial])), [g[conv] for g in spatial])
        return _SpatialChannelGate.apply(x, mc.reshape(k * n, C, 1, 1), _by_edge_batch(s, k), _per_sample(weights, n),
                                         True)

    def forward(self, x):
        return self.weighted(x, None)


@FAST_KERNELS.register(attention.CBAM)
class FastCBAM(attention.CBAM):
    def weighted(self, x, weight):
        """weight * forward(x) (weight a 0-d tensor or None), keeping only x and the gates."""
        n = x.shape[0]
        # Both pooled descriptors go through the shared MLP in one batched call.
        pooled = torch.cat((spatial_mean(x), _global_max(x)), 0)
        mc = torch.sigmoid(self.mlp(pooled).view(2, n, -1).sum(0))[:, :, None, None]
        y = x * mc
        # Channel order [max, mean] matches the official ChannelPool, so 7x7 weights are compatible.
        return _SpatialChannelGate.apply(x, mc, self.spatial(_channel_max_and_mean(y)), weight, False)

    @staticmethod
    def edge_batchable(modules, x):
        return edge_batch_norm_usable([m.spatial[1] for m in modules])

    @staticmethod
    def edge_weighted(modules, x, k, weights):
        """sum_e weights[e] * modules[e](x[e * N:(e + 1) * N]) for k CBAMs, stacked as x is (see
        FastMixedEdge.node_sum); the 7x7 convs of the pooled maps run as one grouped conv."""
        n, C = x.shape[0] // k, x.shape[1]
        pooled = torch.cat((spatial_mean(x).view(k, n, C), _global_max(x).view(k, n, C)), 1)
        mlp = [m.mlp for m in modules]
        scores = _edge_linear(F.relu(_edge_linear(pooled, [p[0] for p in mlp])), [p[2] for p in mlp])
        mc = torch.sigmoid(scores.view(k, 2, n, C).sum(1)).reshape(k * n, C, 1, 1)
        spatial = [m.spatial for m in modules]
        s = _edge_conv(_by_edge_channels(_channel_max_and_mean(x * mc), k), [p[0] for p in spatial])
        ms = _by_edge_batch(_edge_batch_norm(s, [p[1] for p in spatial]), k)
        return _SpatialChannelGate.apply(x, mc, ms, _per_sample(weights, n), False)

    def forward(self, x):
        return self.weighted(x, None)


@FAST_KERNELS.register(attention.GEThetaPlus)
class FastGEThetaPlus(attention.GEThetaPlus):
    """The gather conv evaluated as the weighted sum it is (its kernel covers the whole map): the
    same numbers, and much faster than a convolution kernel of that size on the CPU."""

    def channel_scale(self, x):
        src = self.global_extent(x)
        conv, bn = self.gather
        # The kernel as a (1, C, H, W) map in the input's layout, so src's gradient gets it too.
        kernel = conv.weight.transpose(0, 1).contiguous(memory_format=memory_layout(src))
        gathered = (src * kernel).sum((2, 3), keepdim=True)
        return torch.sigmoid(self.excite(bn(gathered).flatten(1)))[:, :, None, None]

    @staticmethod
    def edge_batchable(modules, x):
        return (all(m.kernel == tuple(x.shape[-2:]) for m in modules)
                and edge_batch_norm_usable([m.gather[1] for m in modules]))

    @staticmethod
    def edge_channel_scales(modules, x, k):
        """The (k, N, C) scales of k GE modules, module e on x[e * N:(e + 1) * N] (see FastMixedEdge.node_sum)."""
        n, C, H, W = x.shape[0] // k, *x.shape[1:]
        kernels = torch.stack([m.gather[0].weight.reshape(C, H * W) for m in modules]).transpose(1, 2)
        gathered = (_positions(x, k).view(k, n, H * W, C) * kernels.unsqueeze(1)).sum(2)
        normalized = _edge_batch_norm(gathered.transpose(0, 1).reshape(n, k * C), [m.gather[1] for m in modules])
        hidden = F.relu(_edge_linear(normalized.view(n, k, C).transpose(0, 1), [m.excite[0] for m in modules]))
        return torch.sigmoid(_edge_linear(hidden, [m.excite[2] for m in modules]))


@FAST_KERNELS.register(attention.DoubleAttention)
class FastDoubleAttention(attention.DoubleAttention):
    def weighted(self, x, weight):
        """weight * forward(x) (weight a 0-d tensor or None).  The weight scales conv_z's (small)
        parameters and multiplies x inside addcmul, so no full-size output is kept for its gradient."""
        if weight is None:
            return self.forward(x)
        z = self.distributed(x)
        return torch.addcmul(F.conv2d(z, weight * self.conv_z.weight, weight * self.conv_z.bias), x, weight)

    @staticmethod
    def edge_batchable(modules, x):
        return True

    @staticmethod
    def edge_weighted(modules, x, k, weights):
        """sum_e weights[e] * modules[e](x[e * N:(e + 1) * N]) for k A2 blocks, stacked as x is (see
        FastMixedEdge.node_sum); the 1x1 convs are batched matrix products over positions."""
        first, (n, C, H, W) = modules[0], (x.shape[0] // k, *x.shape[1:])
        tokens = _edge_linear(_positions(x, k), [m.conv_abv for m in modules]).view(k * n, H * W, -1)
        a, b, v = tokens.split((first.c_m, first.c_n, first.c_n), 2)
        descriptors = torch.bmm(a.contiguous().transpose(1, 2), b.softmax(1))
        z = torch.bmm(v.softmax(2), descriptors.transpose(1, 2)).view(k, n * H * W, first.c_m)
        scale = weights.view(k, 1, 1)
        weight = torch.stack([m.conv_z.weight.reshape(C, -1) for m in modules]).transpose(1, 2) * scale
        bias = torch.stack([m.conv_z.bias for m in modules]).unsqueeze(1) * scale
        out = torch.baddbmm(bias, z, weight).view(k * n, H, W, C).permute(0, 3, 1, 2)
        return torch.addcmul(out, x, _per_sample(weights, n))

    def distributed(self, x):
        n, _, h, w = x.shape
        # Positions by channels (n, hw, c): a view of a channels-last map, and Z comes out
        # channels-last; bmm takes the transposed views directly.
        tokens = self.conv_abv(x).permute(0, 2, 3, 1).reshape(n, h * w, -1)
        a, b, v = tokens.split((self.c_m, self.c_n, self.c_n), 2)
        # bmm keeps `a` for backward: a copy of its c_m channels lets the c_m + 2 c_n of conv_abv go.
        a = a.contiguous()
        attention_maps = b.softmax(1)
        attention_vectors = v.softmax(2)
        descriptors = torch.bmm(a.transpose(1, 2), attention_maps)
        z = torch.bmm(attention_vectors, descriptors.transpose(1, 2))
        return z.view(n, h, w, self.c_m).permute(0, 3, 1, 2).contiguous(memory_format=memory_layout(x))
