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

from utils import memory_layout, spatial_mean

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
    """Sums a broadcast gradient back to the shape of the factor it came from."""
    dims = tuple(d for d, (n, m) in enumerate(zip(t.shape, shape)) if m == 1 and n != 1)
    return t.sum(dims, keepdim=True) if dims else t


class _SpatialChannelGate(torch.autograd.Function):
    """weight * x * (1 + sigmoid(mc * ms))  (BAM) or  weight * x * mc * sigmoid(ms)  (CBAM), for
    x (N, C, H, W), a channel factor mc (N, C, 1, 1) and a spatial factor ms (N, 1, H, W).

    Autograd would keep the full-size sigmoid (and, in a weighted mixture, the output for the
    weight's gradient): here only x and the small factors are kept and the rest is recomputed in
    backward, so the module costs no activation memory beyond its input.  `weight` may be None."""

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
                grad_weight = gx.sum() + (gx * gate).sum()
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
                grad_weight = (by_channel * spatial).sum() if need_weight else None
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
