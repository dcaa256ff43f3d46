"""Attention modules searched by Att-DARTS.

Nakai, Matsubara and Uehara, "Att-DARTS: Differentiable Neural Architecture Search for Attention",
IJCNN 2020 (journal version: "Neural Architecture Search for Convolutional Neural Networks with
Attention", IEICE Trans. Inf. & Syst. E104.D(2), 2021); reference code: chomin/Att-DARTS
(`attentions.py`).

Every entry of `ATTENTIONS` is a constructor `ATTENTIONS[name](C, height, width)` returning a
shape-preserving module (N, C, H, W) -> (N, C, H, W).  `height`/`width` are the size of the map the
module is built for; only GE uses them (its gather kernel covers the whole map), and GE still accepts
other sizes (see `GEThetaPlus`).

The layer lists, bias flags and BatchNorm placement follow the Att-DARTS reference exactly, because
whole-network parameter counts are checked against the published ones (Att-DARTS on CIFAR-10:
3.2M).  Where we differ from the reference the change is numerically equivalent (same parameters,
same function up to float rounding) and exists for speed:
  * masks are applied by broadcasting (N, C, 1, 1) / (N, 1, H, W) factors instead of materialising
    `expand_as(x)` copies;
  * global pooling is `mean`/`amax` over the spatial dims (global for any H, W; the reference's
    `avg_pool2d(x, H)` is global only for square maps);
  * MLPs that act on 1x1 maps are `nn.Linear` instead of 1x1 convs;
  * the three input 1x1 convs of A^2 are one fused conv;
  * reductions and full-size products are written so that their gradients keep the input's memory
    layout (a channels-last map getting a contiguous gradient makes every later kernel on it, and
    the sum it is accumulated into, a slow mixed-layout one: on the CPU 3-10x slower).
The reduction ratio is 16 everywhere, with the hidden width clamped to at least 1 so that tiny test
networks (C < 16) can be built; for C >= 16 this is exactly the reference's `C // 16`.

BatchNorm on pooled (N, C) / (N, C, 1, 1) tensors (BAM's channel gate, GE's gather) cannot run in
training mode with a batch of one; that holds for the reference too, and eval mode is fine.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils import memory_layout, running_variance, spatial_mean

REDUCTION = 16


def _hidden(C, reduction):
    return max(C // reduction, 1)


def _channel_max_and_mean(x):
    """(N, 2, H, W) in x's layout: max and mean over channels, reduced over the innermost memory
    dim, so that the max's scatter-to-argmax gradient is allocated in x's layout too."""
    if memory_layout(x) == torch.channels_last and not x.is_contiguous():
        positions = x.permute(0, 2, 3, 1)
        return torch.stack((positions.max(3).values, positions.sum(3) / x.shape[1]), 3).permute(0, 3, 1, 2)
    return torch.stack((x.max(1).values, x.sum(1) / x.shape[1]), 1)


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


class Identity(nn.Identity):
    """No attention.  Takes the registry's (C, height, width) and ignores them.

    A class of its own (rather than a lambda returning `nn.Identity`) so that
    `operations.is_identity` and drop-path logic can recognise it.
    """

    def __init__(self, C=None, height=None, width=None):
        super().__init__()

    def channel_scale(self, x):
        return x.new_ones(())

    @staticmethod
    def edge_batchable(modules, x):
        return True

    @staticmethod
    def edge_channel_scales(modules, x, k):
        """None: the scale is 1 (see MixedEdge.node_sum)."""
        return None


class SE(nn.Module):
    """Squeeze-and-Excitation.

    Hu, Shen and Sun, "Squeeze-and-Excitation Networks", CVPR 2018,
    https://arxiv.org/abs/1709.01507.

    Global average pool -> Linear(C, C/16, no bias) -> ReLU -> Linear(C/16, C, no bias) -> sigmoid,
    then x * mask.  Same as the paper (whose excitation formula has no FC biases) and the
    reference.
    """

    def __init__(self, C, height=None, width=None, reduction=REDUCTION):
        super().__init__()
        hidden = _hidden(C, reduction)
        self.excitation = nn.Sequential(
            nn.Linear(C, hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, C, bias=False),
        )

    def channel_scale(self, x):
        return torch.sigmoid(self.excitation(spatial_mean(x)))[:, :, None, None]

    @staticmethod
    def edge_batchable(modules, x):
        return True

    @staticmethod
    def edge_channel_scales(modules, x, k):
        """The (k, N, C) scales of k SE modules, module e on x[e * N:(e + 1) * N] (see MixedEdge.node_sum)."""
        pooled = spatial_mean(x).view(k, -1, x.shape[1])
        hidden = F.relu(_edge_linear(pooled, [m.excitation[0] for m in modules]))
        return torch.sigmoid(_edge_linear(hidden, [m.excitation[2] for m in modules]))

    def forward(self, x):
        return x * self.channel_scale(x)


class BAM(nn.Module):
    """Bottleneck Attention Module (the official code's `paper=False` variant).

    Park, Woo, Lee and Kweon, "BAM: Bottleneck Attention Module", BMVC 2018,
    https://arxiv.org/abs/1807.06514.

    Channel gate Mc: global avg pool -> Linear(C, C/16) -> BN1d -> ReLU -> Linear(C/16, C).
    Spatial gate Ms: Conv1x1(C, C/16) -> BN -> ReLU -> 2 x [Conv3x3(dilation 4) -> BN -> ReLU]
    -> Conv1x1(C/16, 1); all convs and linears have biases.
    out = x * (1 + sigmoid(Mc * Ms)).

    Differences from the paper (inherited from the official code and the Att-DARTS reference):
    the paper combines the branches as Mc + Ms and puts BN after the final layers; here they are
    multiplied and BN follows the hidden layers.  The BN1d on the pooled (N, C/16) vector fails in
    training mode for N = 1 (as in the reference).
    """

    def __init__(self, C, height=None, width=None, reduction=REDUCTION, dilation=4):
        super().__init__()
        hidden = _hidden(C, reduction)
        self.channel_gate = nn.Sequential(
            nn.Linear(C, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, C),
        )
        dilated = []
        for _ in range(2):
            dilated += [
                nn.Conv2d(hidden, hidden, 3, padding=dilation, dilation=dilation),
                nn.BatchNorm2d(hidden),
                nn.ReLU(inplace=True),
            ]
        self.spatial_gate = nn.Sequential(
            nn.Conv2d(C, hidden, 1),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            *dilated,
            nn.Conv2d(hidden, 1, 1),
        )

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
        MixedEdge.node_sum); the spatial gates' narrow maps run as grouped convs, one per layer."""
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


class CBAM(nn.Module):
    """Convolutional Block Attention Module.

    Woo, Park, Lee and Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018,
    https://arxiv.org/abs/1807.06521.

    Channel attention Mc = sigmoid(MLP(avgpool x) + MLP(maxpool x)) with a shared
    MLP Linear(C, C/16) -> ReLU -> Linear(C/16, C) (biases on).  Spatial attention on y = Mc * x:
    Ms = sigmoid(BN(Conv7x7([max_c y, mean_c y]), no bias; BN eps 1e-5, momentum 0.01)).
    out = x * (Ms * Mc), computed as y * Ms.  Follows the official code, which differs from the
    paper's formula by the BN after the 7x7 conv and the [max, mean] channel order (the paper
    writes [avg; max]).  The official code's optional 'lp'/'lse' pools are unused and omitted.
    """

    def __init__(self, C, height=None, width=None, reduction=REDUCTION, kernel_size=7):
        super().__init__()
        hidden = _hidden(C, reduction)
        self.mlp = nn.Sequential(
            nn.Linear(C, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, C),
        )
        self.spatial = nn.Sequential(
            nn.Conv2d(2, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False),
            nn.BatchNorm2d(1, eps=1e-5, momentum=0.01),
        )

    def weighted(self, x, weight):
        """weight * forward(x) (weight a 0-d tensor or None), keeping only x and the gates."""
        n = x.shape[0]
        # Both pooled descriptors go through the shared MLP in one batched call.
        # max with indices (not amax), as the official code's max pools: backward is a scatter to
        # the argmax, not a full-size comparison against the maximum.
        pooled = torch.cat((spatial_mean(x), F.adaptive_max_pool2d(x, 1).flatten(1)), 0)
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
        MixedEdge.node_sum); the 7x7 convs of the pooled maps run as one grouped conv."""
        n, C = x.shape[0] // k, x.shape[1]
        pooled = torch.cat((spatial_mean(x).view(k, n, C), F.adaptive_max_pool2d(x, 1).view(k, n, C)), 1)
        mlp = [m.mlp for m in modules]
        scores = _edge_linear(F.relu(_edge_linear(pooled, [p[0] for p in mlp])), [p[2] for p in mlp])
        mc = torch.sigmoid(scores.view(k, 2, n, C).sum(1)).reshape(k * n, C, 1, 1)
        spatial = [m.spatial for m in modules]
        s = _edge_conv(_by_edge_channels(_channel_max_and_mean(x * mc), k), [p[0] for p in spatial])
        ms = _by_edge_batch(_edge_batch_norm(s, [p[1] for p in spatial]), k)
        return _SpatialChannelGate.apply(x, mc, ms, _per_sample(weights, n), False)

    def forward(self, x):
        return self.weighted(x, None)


class GEThetaPlus(nn.Module):
    """Gather-Excite, theta-plus variant (global extent, parametric gather, MLP excite).

    Hu, Shen, Albanie, Sun and Vedaldi, "Gather-Excite: Exploiting Feature Context in
    Convolutional Neural Networks", NeurIPS 2018, https://arxiv.org/abs/1810.12348.

    Gather: depthwise conv whose kernel covers the whole (height x width) map (no bias, no
    padding) -> BN.  Excite: Linear(C, C/16, no bias) -> ReLU -> Linear(C/16, C, no bias)
    -> sigmoid; out = x * mask.  The reference (after BayesWatch's unofficial port) nearest-
    upsamples the 1x1 mask to H x W; broadcasting is the same thing without the copy.

    Differences from the reference: the kernel is (height, width) rather than (height, height),
    identical for the square maps the reference supports; and an input whose size differs from
    the build size is first adaptive-average-pooled to the build size so the gather stays global
    (the reference would crash on smaller inputs and gather non-globally on larger ones).
    The BN on the gathered (N, C, 1, 1) tensor fails in training mode for N = 1.
    The gather conv is evaluated as the weighted sum it is (its kernel covers the whole map): the
    same numbers, 3-5x faster than a convolution kernel of that size, backward included, on CPU.
    """

    def __init__(self, C, height, width=None, reduction=REDUCTION):
        super().__init__()
        width = height if width is None else width
        self.kernel = (int(height), int(width))
        hidden = _hidden(C, reduction)
        self.gather = nn.Sequential(
            nn.Conv2d(C, C, self.kernel, groups=C, bias=False),
            nn.BatchNorm2d(C),
        )
        self.excite = nn.Sequential(
            nn.Linear(C, hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, C, bias=False),
        )

    def channel_scale(self, x):
        src = x
        if tuple(x.shape[-2:]) != self.kernel:
            src = F.adaptive_avg_pool2d(x, self.kernel)
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
        """The (k, N, C) scales of k GE modules, module e on x[e * N:(e + 1) * N] (see MixedEdge.node_sum)."""
        n, C, H, W = x.shape[0] // k, *x.shape[1:]
        kernels = torch.stack([m.gather[0].weight.reshape(C, H * W) for m in modules]).transpose(1, 2)
        gathered = (_positions(x, k).view(k, n, H * W, C) * kernels.unsqueeze(1)).sum(2)
        normalized = _edge_batch_norm(gathered.transpose(0, 1).reshape(n, k * C), [m.gather[1] for m in modules])
        hidden = F.relu(_edge_linear(normalized.view(n, k, C).transpose(0, 1), [m.excite[0] for m in modules]))
        return torch.sigmoid(_edge_linear(hidden, [m.excite[2] for m in modules]))

    def forward(self, x):
        return x * self.channel_scale(x)


class DoubleAttention(nn.Module):
    """A^2 double attention block (k = 1), residual form.

    Chen, Kalantidis, Li, Yan and Feng, "A^2-Nets: Double Attention Networks", NeurIPS 2018,
    https://arxiv.org/abs/1810.11579.

    A = conv_A(x) (c_m maps), B = conv_B(x), V = conv_V(x) (c_n maps each), 1x1 convs with bias,
    c_m = c_n = C/4.  Gather: G = A softmax_HW(B)^T (c_m x c_n global descriptors).  Distribute:
    Z = G softmax_cn(V) (c_m x HW).  out = conv_Z(Z) + x, conv_Z a 1x1 conv with bias.

    Same as the paper and the reference, except that conv_A/B/V are one fused 1x1 conv of
    c_m + 2 c_n outputs (same parameters and default initialisation, one kernel launch instead of
    three).  conv_Z keeps PyTorch's default init, as in the reference (no zero-init).
    """

    def __init__(self, C, height=None, width=None, c_m=None, c_n=None):
        super().__init__()
        self.c_m = c_m if c_m is not None else max(C // 4, 1)
        self.c_n = c_n if c_n is not None else max(C // 4, 1)
        self.conv_abv = nn.Conv2d(C, self.c_m + 2 * self.c_n, 1)
        self.conv_z = nn.Conv2d(self.c_m, C, 1)

    def weighted(self, x, weight):
        """weight * forward(x) (weight a 0-d tensor or None).  The weight scales conv_z's (small)
        parameters and multiplies x inside addcmul, so no full-size output is kept for its gradient."""
        if weight is None:
            return self.forward(x)
        z = self._distributed(x)
        return torch.addcmul(F.conv2d(z, weight * self.conv_z.weight, weight * self.conv_z.bias), x, weight)

    @staticmethod
    def edge_batchable(modules, x):
        return True

    @staticmethod
    def edge_weighted(modules, x, k, weights):
        """sum_e weights[e] * modules[e](x[e * N:(e + 1) * N]) for k A2 blocks, stacked as x is (see
        MixedEdge.node_sum); the 1x1 convs are batched matrix products over positions."""
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

    def _distributed(self, x):
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

    def forward(self, x):
        return self.conv_z(self._distributed(x)) + x


ATTENTIONS = {
    'Identity': Identity,
    'SE': SE,
    'BAM': BAM,
    'CBAM': CBAM,
    'GE_theta-plus': GEThetaPlus,
    'DoubleAttention': DoubleAttention,
}
