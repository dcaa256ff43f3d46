"""Attention modules searched by Att-DARTS.

Nakai, Matsubara and Uehara, "Att-DARTS: Differentiable Neural Architecture Search for Attention",
IJCNN 2020 (journal version: "Neural Architecture Search for Convolutional Neural Networks with
Attention", IEICE Trans. Inf. & Syst. E104.D(2), 2021); reference code: chomin/Att-DARTS
(`attentions.py`).

Every module registered in `registry.ATTENTIONS` is built as `ATTENTIONS[name](C, height, width)`
and maps (N, C, H, W) to (N, C, H, W).  `height`/`width` are the size of the map the module is
built for; only GE uses them (its gather kernel covers the whole map), and GE still accepts other
sizes (see `GEThetaPlus`).

The layer lists, bias flags and BatchNorm placement follow the Att-DARTS reference exactly, because
whole-network parameter counts are checked against the published ones (Att-DARTS on CIFAR-10:
3.2M).  Where we differ from the reference the change computes the same function:
  * masks are applied by broadcasting (N, C, 1, 1) / (N, 1, H, W) factors instead of materialising
    `expand_as(x)` copies;
  * global pooling is `mean`/`amax` over the spatial dims (global for any H, W; the reference's
    `avg_pool2d(x, H)` is global only for square maps);
  * MLPs that act on 1x1 maps are `nn.Linear` instead of 1x1 convs;
  * the three input 1x1 convs of A^2 are one fused conv.
The reduction ratio is 16 everywhere, with the hidden width clamped to at least 1 so that tiny test
networks (C < 16) can be built; for C >= 16 this is exactly the reference's `C // 16`.

BatchNorm on pooled (N, C) / (N, C, 1, 1) tensors (BAM's channel gate, GE's gather) cannot run in
training mode with a batch of one; that holds for the reference too, and eval mode is fine.

`kernels/` holds faster forms of these modules with the same parameters; this file is the
definition.
"""
import torch
import torch.nn as nn

from registry import ATTENTIONS

REDUCTION = 16


def hidden_width(C, reduction):
    return max(C // reduction, 1)


class ChannelGate(nn.Module):
    """An attention that rescales channels: forward(x) = x * channel_scale(x), the scale (N, C, 1, 1)."""

    def channel_scale(self, x):
        raise NotImplementedError

    def forward(self, x):
        return x * self.channel_scale(x)


@ATTENTIONS.register('Identity')
class Identity(ChannelGate):
    """No attention.  Takes the registry's (C, height, width) and ignores them."""

    def __init__(self, C=None, height=None, width=None):
        super().__init__()

    def channel_scale(self, x):
        return x.new_ones(())

    def forward(self, x):
        return x


@ATTENTIONS.register('SE')
class SE(ChannelGate):
    """Squeeze-and-Excitation.

    Hu, Shen and Sun, "Squeeze-and-Excitation Networks", CVPR 2018,
    https://arxiv.org/abs/1709.01507.

    Global average pool -> Linear(C, C/16) -> ReLU -> Linear(C/16, C) -> sigmoid, then x * mask.
    Without FC biases (the paper's excitation formula, the Att-DARTS reference and SLNAS's block
    fusion); CNAS's `cweight_com` has them (`bias=True`).
    """

    def __init__(self, C, height=None, width=None, reduction=REDUCTION, bias=False):
        super().__init__()
        hidden = hidden_width(C, reduction)
        self.excitation = nn.Sequential(
            nn.Linear(C, hidden, bias=bias),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, C, bias=bias),
        )

    def channel_scale(self, x):
        return torch.sigmoid(self.excitation(x.mean((2, 3))))[:, :, None, None]


@ATTENTIONS.register('BAM')
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
        hidden = hidden_width(C, reduction)
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

    def forward(self, x):
        mc = self.channel_gate(x.mean((2, 3)))[:, :, None, None]
        ms = self.spatial_gate(x)
        return x * (1 + torch.sigmoid(mc * ms))


@ATTENTIONS.register('CBAM')
class CBAM(nn.Module):
    """Convolutional Block Attention Module.

    Woo, Park, Lee and Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018,
    https://arxiv.org/abs/1807.06521.

    Channel attention Mc = sigmoid(MLP(avgpool x) + MLP(maxpool x)) with a shared
    MLP Linear(C, C/16) -> ReLU -> Linear(C/16, C) (biases on).  Spatial attention on y = Mc * x:
    Ms = sigmoid(BN(Conv7x7([max_c y, mean_c y]), no bias; BN eps 1e-5, momentum 0.01)).
    out = y * Ms.  Follows the official code, which differs from the paper's formula by the BN
    after the 7x7 conv and the [max, mean] channel order (the paper writes [avg; max]).  The
    official code's optional 'lp'/'lse' pools are unused and omitted.  The global max pool is
    `amax`, whose backward is deterministic on CUDA (adaptive_max_pool2d's is not); the two differ
    only where several positions tie for the maximum (amax shares the gradient among them).
    """

    def __init__(self, C, height=None, width=None, reduction=REDUCTION, kernel_size=7):
        super().__init__()
        hidden = hidden_width(C, reduction)
        self.mlp = nn.Sequential(
            nn.Linear(C, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, C),
        )
        self.spatial = nn.Sequential(
            nn.Conv2d(2, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False),
            nn.BatchNorm2d(1, eps=1e-5, momentum=0.01),
        )

    def forward(self, x):
        mc = torch.sigmoid(self.mlp(x.mean((2, 3))) + self.mlp(x.amax((2, 3))))[:, :, None, None]
        y = x * mc
        # [max, mean], the official ChannelPool's order, so that 7x7 weights are compatible.
        pooled = torch.stack((y.amax(1), y.mean(1)), 1)
        return y * torch.sigmoid(self.spatial(pooled))


@ATTENTIONS.register('GE_theta-plus')
class GEThetaPlus(ChannelGate):
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
    """

    def __init__(self, C, height, width=None, reduction=REDUCTION):
        super().__init__()
        width = height if width is None else width
        self.kernel = (int(height), int(width))
        hidden = hidden_width(C, reduction)
        self.gather = nn.Sequential(
            nn.Conv2d(C, C, self.kernel, groups=C, bias=False),
            nn.BatchNorm2d(C),
        )
        self.excite = nn.Sequential(
            nn.Linear(C, hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, C, bias=False),
        )

    def global_extent(self, x):
        """x, average-pooled to the build size where it differs, so that the gather stays global."""
        if tuple(x.shape[-2:]) != self.kernel:
            return nn.functional.adaptive_avg_pool2d(x, self.kernel)
        return x

    def channel_scale(self, x):
        gathered = self.gather(self.global_extent(x))
        return torch.sigmoid(self.excite(gathered.flatten(1)))[:, :, None, None]


@ATTENTIONS.register('DoubleAttention')
class DoubleAttention(nn.Module):
    """A^2 double attention block (k = 1), residual form.

    Chen, Kalantidis, Li, Yan and Feng, "A^2-Nets: Double Attention Networks", NeurIPS 2018,
    https://arxiv.org/abs/1810.11579.

    A = conv_A(x) (c_m maps), B = conv_B(x), V = conv_V(x) (c_n maps each), 1x1 convs with bias,
    c_m = c_n = C/4.  Gather: G = A softmax_HW(B)^T (c_m x c_n global descriptors).  Distribute:
    Z = G softmax_cn(V) (c_m x HW).  out = conv_Z(Z) + x, conv_Z a 1x1 conv with bias.

    Same as the paper and the reference, except that conv_A/B/V are one fused 1x1 conv of
    c_m + 2 c_n outputs (same parameters and default initialisation).  conv_Z keeps PyTorch's
    default init, as in the reference (no zero-init).
    """

    def __init__(self, C, height=None, width=None, c_m=None, c_n=None):
        super().__init__()
        self.c_m = c_m if c_m is not None else max(C // 4, 1)
        self.c_n = c_n if c_n is not None else max(C // 4, 1)
        self.conv_abv = nn.Conv2d(C, self.c_m + 2 * self.c_n, 1)
        self.conv_z = nn.Conv2d(self.c_m, C, 1)

    def distributed(self, x):
        """Z (N, c_m, H, W): the global descriptors distributed to every position."""
        n, _, h, w = x.shape
        a, b, v = self.conv_abv(x).flatten(2).split((self.c_m, self.c_n, self.c_n), 1)
        descriptors = torch.bmm(a, b.softmax(2).transpose(1, 2))   # (N, c_m, c_n)
        z = torch.bmm(descriptors, v.softmax(1))                    # (N, c_m, HW)
        return z.view(n, self.c_m, h, w)

    def forward(self, x):
        return self.conv_z(self.distributed(x)) + x
