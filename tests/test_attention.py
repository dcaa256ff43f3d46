import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import attention
from attention import ATTENTIONS

NAMES = list(ATTENTIONS)


def _count(module):
    return sum(p.numel() for p in module.parameters())


def test_registry_names():
    assert NAMES == ['Identity', 'SE', 'BAM', 'CBAM', 'GE_theta-plus', 'DoubleAttention']


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('size', [8, 7])
def test_shape_preserved(name, size):
    torch.manual_seed(0)
    module = ATTENTIONS[name](16, size, size)
    x = torch.randn(2, 16, size, size)
    assert module(x).shape == x.shape
    module.eval()
    assert module(x).shape == x.shape


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('size', [28, 14, 7])
def test_grey_sizes_batch_of_one_in_eval(name, size):
    module = ATTENTIONS[name](8, size, size).eval()
    x = torch.randn(1, 8, size, size)
    with torch.no_grad():
        assert module(x).shape == x.shape


@pytest.mark.parametrize('name', NAMES)
def test_small_channel_counts(name):
    # C < 16 would give a zero hidden width without the clamp.
    module = ATTENTIONS[name](3, 4, 4)
    x = torch.randn(2, 3, 4, 4)
    assert module(x).shape == x.shape


@pytest.mark.parametrize('name', NAMES)
def test_gradients_reach_every_parameter(name):
    """Every parameter gets a non-zero gradient, except the biases of layers right before a
    training-mode BatchNorm, whose mean subtraction cancels them: exactly zero.

    Asserted at a generic point, in float64.  At initialisation BatchNorm's bias is 0, and a ReLU
    after it commutes with its scale; with one hidden channel (C = 16) the next BatchNorm then
    removes that scale, so BAM's spatial_gate.1.weight has a gradient that is zero up to the eps
    of BatchNorm (float32 gives exactly 0 on some CPUs, a rounding-sized value on others).  Random
    BatchNorm scales and shifts move the module off that point, and C = 64 (four hidden channels)
    keeps a hidden ReLU from being dead for the whole batch.  Inputs are uniform draws (integer
    arithmetic: the same bits on every machine).  A gradient that exact algebra makes zero comes
    out of float64 below 1e-12 of the largest one (rounding of ~10^3 terms at 2^-53); the others
    are within a few orders of the largest."""
    g = torch.Generator().manual_seed(0)
    uniform = lambda *shape: torch.rand(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    module = ATTENTIONS[name](64, 8, 8).double()
    with torch.no_grad():
        for norm in module.modules():
            if isinstance(norm, torch.nn.modules.batchnorm._BatchNorm):
                norm.weight.copy_(0.5 + uniform(*norm.weight.shape))
                norm.bias.copy_(uniform(*norm.bias.shape) - 0.5)
    x = (2 * uniform(4, 64, 8, 8) - 1).requires_grad_()
    (module(x) * (2 * uniform(4, 64, 8, 8) - 1)).sum().backward()
    assert x.grad.abs().sum() > 0
    cancelled = biases_before_batch_norm(module)
    grads = {pname: p.grad for pname, p in module.named_parameters()}
    assert all(grad is not None for grad in grads.values())
    largest = max((float(grad.abs().max()) for grad in grads.values()), default=0.0)
    for pname, grad in grads.items():
        if pname in cancelled:
            assert grad.abs().max() <= 1e-12 * largest, pname
        else:
            assert grad.abs().max() > 1e-6 * largest, pname


def biases_before_batch_norm(module):
    names = set()
    for prefix, parent in module.named_modules():
        children = list(parent.named_children())
        for (name, child), (_, following) in zip(children, children[1:]):
            if getattr(child, 'bias', None) is not None and isinstance(following, torch.nn.modules.batchnorm._BatchNorm):
                names.add(f'{prefix}.{name}.bias'.lstrip('.'))
    return names


def test_ge_other_input_size_falls_back_to_global_gather():
    module = attention.GEThetaPlus(16, 8, 8)
    for size in (4, 7, 11):
        x = torch.randn(2, 16, size, size)
        assert module(x).shape == x.shape


# Parameter counts for C = 64, height = width = 8, r = 16 (hidden = 4), written out from the layer lists of
# the Att-DARTS reference (`attentions.py`), independently of how attention.py builds the modules.
C, H, HID = 64, 8, 64 // 16

EXPECTED_PARAMS = {
    'Identity': 0,
    # Linear(C, C/16, no bias) + Linear(C/16, C, no bias)
    'SE': C * HID + HID * C,                                        # 256 + 256 = 512
    'BAM': (
        # channel gate: Linear(C, C/16)+b, BN1d(C/16), Linear(C/16, C)+b
        (C * HID + HID) + 2 * HID + (HID * C + C)                   # 260 + 8 + 320 = 588
        # spatial gate: Conv1x1(C, C/16)+b, BN, 2 x [Conv3x3(C/16, C/16)+b, BN], Conv1x1(C/16, 1)+b
        + (C * HID + HID) + 2 * HID                                  # 260 + 8
        + 2 * ((HID * HID * 9 + HID) + 2 * HID)                      # 2 * (148 + 8) = 312
        + (HID * 1 + 1)                                              # 5
    ),                                                               # 588 + 585 = 1173
    'CBAM': (
        # shared MLP: Linear(C, C/16)+b, Linear(C/16, C)+b
        (C * HID + HID) + (HID * C + C)                             # 260 + 320 = 580
        # Conv7x7(2, 1, no bias) + BN(1)
        + 2 * 7 * 7 + 2                                              # 98 + 2 = 100
    ),                                                               # 680
    'GE_theta-plus': (
        # depthwise Conv(k = H, groups = C, no bias) + BN(C)
        C * H * H + 2 * C                                            # 4096 + 128
        # Conv1x1(C, C/16, no bias) + Conv1x1(C/16, C, no bias)
        + C * HID + HID * C                                          # 512
    ),                                                               # 4736
    'DoubleAttention': (
        # A, B, V: Conv1x1(C, C/4)+b each; Z: Conv1x1(C/4, C)+b
        3 * (C * (C // 4) + C // 4) + ((C // 4) * C + C)             # 3 * 1040 + 1088
    ),                                                               # 4208
}


@pytest.mark.parametrize('name', NAMES)
def test_param_counts(name):
    assert _count(ATTENTIONS[name](C, H, H)) == EXPECTED_PARAMS[name]


# The formula tests compute each module a second way, in float64: the two differ by rounding (~1e-15),
# far inside assert_close's float64 tolerance (1e-7), and a wrong formula by O(1).

def test_se_matches_independent_formula():
    torch.manual_seed(0)
    module = attention.SE(32, 6, 6).double()
    w1, w2 = (layer.weight for layer in module.modules() if isinstance(layer, nn.Linear))
    x = torch.randn(3, 32, 6, 6, dtype=torch.float64)
    squeezed = x.flatten(2).sum(-1) / 36
    mask = torch.sigmoid(F.relu(squeezed @ w1.t()) @ w2.t())
    expected = x * mask.view(3, 32, 1, 1)
    torch.testing.assert_close(module(x), expected)


def test_bam_formula():
    torch.manual_seed(0)
    module = attention.BAM(32, 6, 6).double().eval()
    x = torch.randn(3, 32, 6, 6, dtype=torch.float64)
    mc = module.channel_gate(x.mean((2, 3))).view(3, 32, 1, 1)
    ms = module.spatial_gate(x)
    torch.testing.assert_close(module(x), x * (torch.sigmoid(mc * ms) + 1))


def test_cbam_formula():
    torch.manual_seed(0)
    module = attention.CBAM(32, 6, 6).double().eval()
    x = torch.randn(3, 32, 6, 6, dtype=torch.float64)
    mc = torch.sigmoid(module.mlp(x.mean((2, 3))) + module.mlp(x.flatten(2).max(-1)[0])).view(3, 32, 1, 1)
    y = mc * x
    ms = torch.sigmoid(module.spatial(torch.cat((y.max(1, keepdim=True)[0], y.mean(1, keepdim=True)), 1)))
    torch.testing.assert_close(module(x), x * (ms * mc))


def test_ge_mask_is_channelwise():
    torch.manual_seed(0)
    module = attention.GEThetaPlus(32, 6, 6).double().eval()
    x = torch.rand(2, 32, 6, 6, dtype=torch.float64) + 0.5
    ratio = module(x) / x
    # One sigmoid value per (sample, channel), constant over space (nearest upsampling of 1x1).
    torch.testing.assert_close(ratio, ratio[:, :, :1, :1].expand_as(ratio))
    assert ((ratio > 0) & (ratio < 1)).all()


def test_double_attention_matches_reference_formula():
    torch.manual_seed(0)
    module = attention.DoubleAttention(16, 5, 5).double()
    x = torch.randn(2, 16, 5, 5, dtype=torch.float64)
    cm = cn = 4
    w, b = module.conv_abv.weight.view(cm + 2 * cn, 16), module.conv_abv.bias
    abv = torch.einsum('oc,nchw->nohw', w, x) + b.view(1, -1, 1, 1)
    a, bb, v = abv[:, :cm], abv[:, cm:cm + cn], abv[:, cm + cn:]
    out = []
    for i in range(2):  # per sample, straight from the paper's equations
        A = a[i].reshape(cm, 25)
        Bs = torch.softmax(bb[i].reshape(cn, 25), dim=1)
        Vs = torch.softmax(v[i].reshape(cn, 25), dim=0)
        Z = (A @ Bs.t()) @ Vs
        out.append(module.conv_z(Z.view(1, cm, 5, 5))[0] + x[i])
    torch.testing.assert_close(module(x), torch.stack(out))


def test_double_attention_zero_final_conv_is_residual():
    module = attention.DoubleAttention(16, 8, 8)
    nn.init.zeros_(module.conv_z.weight)
    nn.init.zeros_(module.conv_z.bias)
    x = torch.randn(2, 16, 8, 8)
    torch.testing.assert_close(module(x), x)


def test_identity():
    module = ATTENTIONS['Identity'](16, 8, 8)
    assert isinstance(module, attention.Identity)
    x = torch.randn(2, 16, 8, 8)
    assert module(x) is x
    assert _count(module) == 0


def test_bam_batch_of_one_needs_eval_mode():
    # Documented limitation shared with the reference: BN1d on the pooled vector.
    module = attention.BAM(16, 8, 8)
    x = torch.randn(1, 16, 8, 8)
    with pytest.raises(ValueError):
        module(x)
    module.eval()
    assert module(x).shape == x.shape
