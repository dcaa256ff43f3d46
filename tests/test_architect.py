"""The architecture step against autograd: first order is grad of the validation loss, second
order (finite-difference Hessian-vector product) agrees with differentiating through the
unrolled SGD step exactly."""
import pytest
import torch
from torch.func import functional_call

import genotypes
import kernels
from architect import FP32_PRECISION, HESSIAN_STENCILS, Architect, fp32_precision_settings, full_fp32
from model import NetworkCIFAR
from model_search import LOCATIONS, SearchNetwork
from utils import UserError


# Finite differences converge to the derivative only where the loss is smooth; ReLU and max-pool
# kinks within the 0.01 radius dominate a 4-channel toy net.  The gradient tests therefore swap in
# GELU and leave max_pool out, so what is compared is the architect's algebra, not the kinks.
SMOOTH_PRIMITIVES = ['none', 'avg_pool_3x3', 'skip_connect', 'sep_conv_3x3', 'dil_conv_3x3']


def smoothed(module):
    for name, child in module.named_children():
        if isinstance(child, torch.nn.ReLU):
            setattr(module, name, torch.nn.GELU())
        else:
            smoothed(child)
    return module


def tiny_supernet(location='after_every', dtype=torch.float64, primitives='darts'):
    torch.manual_seed(0)
    net = SearchNetwork(C=4, num_classes=3, layers=3, location=location, steps=2, image_size=8,
                        primitives=primitives).to(dtype)
    # Larger architecture weights than the 1e-3 init make the second-order term clearly non-zero.
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_(0, 0.5)
    return net


def batches(dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    x_train, x_valid = torch.randn(6, 3, 8, 8, generator=g, dtype=dtype), torch.randn(6, 3, 8, 8, generator=g, dtype=dtype)
    y_train, y_valid = torch.randint(0, 3, (6,), generator=g), torch.randint(0, 3, (6,), generator=g)
    return x_train, y_train, x_valid, y_valid


def weight_optimizer_with_momentum(net, x, y):
    """An SGD optimizer that has taken one step, so the momentum buffer enters the unrolled step."""
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4)
    torch.nn.functional.cross_entropy(net(x), y).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    for p in net.arch_parameters():
        p.grad = None
    return opt


def exact_unrolled_gradient(net, x_train, y_train, x_valid, y_valid, eta, opt):
    """d/d alpha of L_val(w - eta * (m*buf + grad_w L_train + wd*w), alpha) by double backward."""
    named = net.named_weight_parameters()
    weights = [p for _, p in named]
    buffers = {n: b.clone() for n, b in net.named_buffers()}
    loss = torch.nn.functional.cross_entropy(functional_call(net, {**buffers}, (x_train,)), y_train)
    grads = torch.autograd.grad(loss, weights, create_graph=True)
    group = opt.param_groups[0]
    unrolled = {}
    for (name, w), g in zip(named, grads):
        buf = opt.state[w]['momentum_buffer']
        unrolled[name] = w - eta * (group['momentum'] * buf + g + group['weight_decay'] * w)
    out = functional_call(net, {**unrolled, **buffers}, (x_valid,))
    return torch.autograd.grad(torch.nn.functional.cross_entropy(out, y_valid), net.arch_parameters())


@pytest.mark.parametrize('implementation', ['plain', 'fast'])
@pytest.mark.parametrize('location, radius, rtol', [
    ('no_attention', 0.01, 1e-3),  # the DARTS radius itself
    # The attentions keep their max poolings (CBAM) and their kinks, within 1e-4 of these weights:
    # a radius inside the smooth region, where the O(r^2) error is ~1e-10 and float64 rounding
    # ~eps / r = 1e-11.
    ('after_every', 1e-5, 1e-6),
    ('end', 1e-5, 1e-6),
])
def test_second_order_gradient_matches_autograd(location, radius, rtol, implementation):
    """The exact gradient by double backward through the plain network; the architect's
    finite-difference one through either implementation, switched in place (same parameters)."""
    net = smoothed(tiny_supernet(location, primitives=SMOOTH_PRIMITIVES))
    x_train, y_train, x_valid, y_valid = batches()
    opt = weight_optimizer_with_momentum(net, x_train, y_train)
    eta = 0.1
    exact = exact_unrolled_gradient(net, x_train, y_train, x_valid, y_valid, eta, opt)
    kernels.apply(net, implementation, 'cpu')
    architect = Architect(net, torch.nn.CrossEntropyLoss(), unrolled=True, hessian_radius=radius)
    approx, _ = architect.unrolled_gradients(x_train, y_train, x_valid, y_valid, eta, opt)
    first_order = torch.autograd.grad(torch.nn.functional.cross_entropy(
        functional_call(net, {n: b.clone() for n, b in net.named_buffers()}, (x_valid,)), y_valid),
        net.arch_parameters())
    for e, a, f in zip(exact, approx, first_order):
        # The implicit term must matter, or this test would not tell the orders apart.
        assert (e - f).norm() > 1e-3 * e.norm()
        assert (a - e).norm() <= rtol * e.norm()


@pytest.mark.parametrize('implementation', ['plain', 'fast'])
@pytest.mark.parametrize('stencil', HESSIAN_STENCILS)
def test_second_order_gradient_is_the_same_with_recomputed_cells(implementation, stencil):
    """The virtual passes compute with substituted weights: a cell recomputed in their backward
    passes must compute with the same ones (a recomputation with the network's own weights would
    save other tensors, and torch refuses it).  Gradient, loss and running statistics bit for bit."""
    results = []
    for recompute in (False, True):
        net = tiny_supernet()
        x_train, y_train, x_valid, y_valid = batches()
        opt = weight_optimizer_with_momentum(net, x_train, y_train)
        kernels.apply(net, implementation, 'cpu')
        net.recompute_cells = recompute
        architect = Architect(net, torch.nn.CrossEntropyLoss(), unrolled=True, hessian=stencil)
        grads, loss = architect.unrolled_gradients(x_train, y_train, x_valid, y_valid, 0.1, opt)
        results.append([*grads, loss.detach(), *net.buffers()])
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_first_order_step_uses_validation_gradient():
    net = tiny_supernet()
    x_train, y_train, x_valid, y_valid = batches()
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9)
    before = [p.detach().clone() for p in net.arch_parameters()]
    expected = torch.autograd.grad(torch.nn.functional.cross_entropy(net(x_valid), y_valid), net.arch_parameters())
    architect = Architect(net, torch.nn.CrossEntropyLoss(), arch_learning_rate=1e-2, arch_weight_decay=0.0)
    architect.step(x_train, y_train, x_valid, y_valid, 0.1, opt)
    for b, p, g in zip(before, net.arch_parameters(), expected):
        # Adam's first step without weight decay: after the bias corrections the moments are g and
        # g^2, so every coordinate moves by -lr g / (|g| + eps); float64 rounding is ~1e-14 of that.
        torch.testing.assert_close(p.detach() - b, -1e-2 * g / (g.abs() + 1e-8), rtol=1e-9, atol=1e-15)
    assert all(p.grad is None for p in net.weight_parameters())


def test_architect_step_changes_only_architecture_parameters():
    net = tiny_supernet()
    x_train, y_train, x_valid, y_valid = batches()
    opt = weight_optimizer_with_momentum(net, x_train, y_train)
    weights = [p.detach().clone() for p in net.weight_parameters()]
    alphas = [p.detach().clone() for p in net.arch_parameters()]
    Architect(net, torch.nn.CrossEntropyLoss(), unrolled=True).step(x_train, y_train, x_valid, y_valid, 0.1, opt)
    assert all(torch.equal(w, p.detach()) for w, p in zip(weights, net.weight_parameters()))
    assert all(not torch.equal(a, p.detach()) for a, p in zip(alphas, net.arch_parameters()))


def test_network_without_normal_cell_gets_zero_gradient_for_unused_alphas():
    torch.manual_seed(0)
    net = SearchNetwork(C=4, num_classes=3, layers=2, steps=2, image_size=8)
    x_train, y_train, x_valid, y_valid = batches(torch.float32)
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9)
    architect = Architect(net, torch.nn.CrossEntropyLoss(), unrolled=True)
    grads, _ = architect.unrolled_gradients(x_train, y_train, x_valid, y_valid, 0.1, opt)
    names = list(net.arch.keys())
    assert torch.count_nonzero(grads[names.index('alphas_normal')]) == 0
    assert torch.count_nonzero(grads[names.index('alphas_reduce')]) > 0


@pytest.mark.parametrize('unrolled', [False, True])
@pytest.mark.parametrize('location', list(LOCATIONS))
def test_every_location_takes_a_search_step_and_derives_a_valid_genotype(location, unrolled):
    net = tiny_supernet(location, dtype=torch.float32)
    x_train, y_train, x_valid, y_valid = batches(torch.float32)
    opt = weight_optimizer_with_momentum(net, x_train, y_train)
    before = [p.detach().clone() for p in net.arch_parameters()]
    Architect(net, torch.nn.CrossEntropyLoss(), unrolled=unrolled).step(x_train, y_train, x_valid, y_valid, 0.1, opt)
    assert any(not torch.equal(b, p.detach()) for b, p in zip(before, net.arch_parameters()))
    genotype = genotypes.validate(net.genotype())
    layout = LOCATIONS[location]
    assert all(bool(genotypes.entry_attention(e)) == (layout.second is not None) for e in genotype.normal)
    assert bool(genotype.normal_bottleneck) == (layout.bottleneck is not None)
    assert NetworkCIFAR(4, 3, 3, False, genotype, image_size=8)(x_train)[0].shape == (6, 3)


@pytest.mark.parametrize('stencil, order, passes', [('central', 2, 4), ('forward', 1, 3)])
def test_hessian_stencil_converges_at_its_order(stencil, order, passes):
    """Shrinking the radius 10x shrinks the error against the exact unrolled gradient 10^order x;
    the forward stencil saves one pass by reusing the unrolling pass's architecture gradient."""
    errors = []
    for radius in (1e-3, 1e-4):
        net = smoothed(tiny_supernet('no_attention', primitives=SMOOTH_PRIMITIVES))
        x_train, y_train, x_valid, y_valid = batches()
        opt = weight_optimizer_with_momentum(net, x_train, y_train)
        exact = exact_unrolled_gradient(net, x_train, y_train, x_valid, y_valid, 0.1, opt)
        calls = []
        net.register_forward_hook(lambda *_: calls.append(1))
        architect = Architect(net, torch.nn.CrossEntropyLoss(), unrolled=True, hessian_radius=radius, hessian=stencil)
        approx, _ = architect.unrolled_gradients(x_train, y_train, x_valid, y_valid, 0.1, opt)
        assert len(calls) == passes
        errors.append(max(float((a - e).norm() / e.norm()) for a, e in zip(approx, exact)))
    assert 0.5 * 10 ** order < errors[0] / errors[1] < 2 * 10 ** order


def test_unknown_hessian_stencil_is_refused():
    with pytest.raises(UserError, match="unknown Hessian stencil 'backward'"):
        Architect(tiny_supernet(), torch.nn.CrossEntropyLoss(), unrolled=True, hessian='backward')


TF32_SETTINGS = {
    # What a user may have set for speed, through either of torch's APIs.
    'legacy API': lambda: (torch.set_float32_matmul_precision('medium'),
                           setattr(torch.backends.cudnn, 'allow_tf32', True)),
    'fp32_precision API': lambda: (setattr(torch.backends, 'fp32_precision', 'tf32'),
                                   setattr(torch.backends.mkldnn.matmul, 'fp32_precision', 'bf16')),
}


@pytest.fixture
def global_precision():
    """Puts torch's precision settings back to its defaults after the test."""
    defaults = fp32_precision_settings()
    yield
    torch.backends.fp32_precision = 'none'
    torch.set_float32_matmul_precision('highest')
    torch.backends.cudnn.allow_tf32 = True
    for name in ('cuda.matmul', 'mkldnn.matmul', 'mkldnn.conv', 'mkldnn.rnn'):  # cuDNN's: allow_tf32 above
        FP32_PRECISION[name].fp32_precision = 'none'
    assert fp32_precision_settings() == defaults


FULL_FP32 = {**{name: 'ieee' for name in FP32_PRECISION}, 'float32_matmul_precision': 'highest',
             'cudnn.allow_tf32': False}


@pytest.mark.parametrize('user', list(TF32_SETTINGS))
@pytest.mark.parametrize('stencil, differenced', [('central', [False, False, True, True]),
                                                  ('forward', [True, False, True])])
def test_differenced_passes_run_in_full_fp32_and_the_settings_come_back(global_precision, user, stencil,
                                                                        differenced):
    """A TF32 or bfloat16 product rounds away the eps * v perturbation; the passes that are not
    differenced keep the user's faster setting."""
    TF32_SETTINGS[user]()
    users = fp32_precision_settings()
    assert users != FULL_FP32
    net = tiny_supernet(dtype=torch.float32)
    x_train, y_train, x_valid, y_valid = batches(torch.float32)
    opt = weight_optimizer_with_momentum(net, x_train, y_train)
    seen = []
    net.register_forward_pre_hook(lambda *_: seen.append(fp32_precision_settings()))
    architect = Architect(net, torch.nn.CrossEntropyLoss(), unrolled=True, hessian=stencil)
    architect.unrolled_gradients(x_train, y_train, x_valid, y_valid, 0.1, opt)
    assert seen == [FULL_FP32 if full else users for full in differenced]
    assert fp32_precision_settings() == users


def test_full_fp32_restores_the_settings_after_an_exception_and_nests(global_precision):
    TF32_SETTINGS['legacy API']()
    users = fp32_precision_settings()
    net = tiny_supernet(dtype=torch.float32)
    x_train, y_train, x_valid, y_valid = batches(torch.float32)
    opt = weight_optimizer_with_momentum(net, x_train, y_train)
    architect = Architect(net, torch.nn.CrossEntropyLoss(), unrolled=True)
    calls = []

    def fails_in_the_plus_pass(*_):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError('out of memory')
    net.register_forward_pre_hook(fails_in_the_plus_pass)
    with pytest.raises(RuntimeError, match='out of memory'):
        architect.unrolled_gradients(x_train, y_train, x_valid, y_valid, 0.1, opt)
    assert fp32_precision_settings() == users
    with full_fp32():
        with full_fp32():
            assert fp32_precision_settings() == FULL_FP32
        assert fp32_precision_settings() == FULL_FP32
    assert fp32_precision_settings() == users
