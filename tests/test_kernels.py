"""The fast kernels compute what the plain modules compute.

Every comparison runs both implementations in float64 on the same weights and batch, so that the
only difference is the order of a few thousand roundings of 1e-16: 1e-10 leaves a margin of 1e3
and more, on any CPU and thread count.
"""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import attention
import drawing
import genotypes
import kernels
from architect import Architect
from kernels import attention_kernels, convolution, mixture
from kernels.layout import subsample
from model import NetworkCIFAR
from model_search import LOCATIONS, MixedEdge, SearchNetwork
from operations import FactorizedReduce, ReLUConvBN, StridedPointwiseConv, make_candidate
from registry import ATTENTIONS, OPS

TOLERANCE = 1e-10


def max_difference(a, b):
    return max([float((x.double() - y.double()).abs().max()) for x, y in zip(a, b)], default=0.0)


def both_implementations(module):
    """(plain module, its fast copy) in float64, with randomised running statistics."""
    module = module.double()
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return module, kernels.accelerate(copy.deepcopy(module))


def outputs_and_gradients(module, inputs, seed=1):
    """Output, the gradients of the inputs and of every parameter for a random output gradient,
    and the buffers afterwards."""
    out = module(*inputs)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    differentiable = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    params = list(module.parameters())
    grads = torch.autograd.grad(out, differentiable + params, grad, allow_unused=True, materialize_grads=True)
    return [out.detach(), *grads, *[b.double() for b in module.buffers()]]


def random_batch(shape, channels_last, seed=0):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.requires_grad_()


def op_cases():
    for name in OPS:
        for stride in (1, 2):
            if name in ('channel_score', 'spatial_score') and stride == 2:
                continue  # attention-unit ops, stride 1 only
            yield name, stride


@pytest.mark.parametrize('name, stride', list(op_cases()))
@pytest.mark.parametrize('channels_last', [False, True])
def test_every_op_is_the_same_in_both_implementations(name, stride, channels_last):
    torch.manual_seed(0)
    plain, fast = both_implementations(make_candidate(name, 8, stride, 8, 8, affine=True, search=True))
    layout = torch.channels_last if channels_last else torch.contiguous_format
    plain, fast = plain.to(memory_format=layout), fast.to(memory_format=layout)
    x = random_batch((3, 8, 16, 16), channels_last)
    assert max_difference(outputs_and_gradients(plain, [x]), outputs_and_gradients(fast, [x])) < TOLERANCE


@pytest.mark.parametrize('name', ATTENTIONS.names())
@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('channels_last', [False, True])
def test_every_attention_is_the_same_in_both_implementations(name, stride, channels_last):
    torch.manual_seed(0)
    plain, fast = both_implementations(make_candidate(name, 16, stride, 8 // stride, 8 // stride, affine=True))
    layout = torch.channels_last if channels_last else torch.contiguous_format
    plain, fast = plain.to(memory_format=layout), fast.to(memory_format=layout)
    x = random_batch((3, 16, 8, 8), channels_last)
    assert max_difference(outputs_and_gradients(plain, [x]), outputs_and_gradients(fast, [x])) < TOLERANCE


def search_step_results(net, x, y):
    loss = F.cross_entropy(net(x), y)
    grads = torch.autograd.grad(loss, list(net.parameters()), allow_unused=True, materialize_grads=True)
    return [loss.detach(), *grads, *[b.double() for b in net.buffers()]]


@pytest.mark.parametrize('location', list(LOCATIONS))
@pytest.mark.parametrize('primitives', ['darts', 'cnas'])
@pytest.mark.parametrize('channels_last', [False, True])
def test_every_location_is_the_same_in_both_implementations(location, primitives, channels_last):
    """The supernet's loss, the gradients of every weight and architecture weight, and the
    running statistics after the pass."""
    torch.manual_seed(0)
    net = SearchNetwork(8, 10, 3, location=location, primitives=primitives, steps=2, image_size=8)
    for alpha in net.arch_parameters():
        alpha.data.normal_()  # away from the uniform mixture, so a swapped candidate would show
    plain, fast = both_implementations(net)
    if channels_last:
        plain, fast = plain.to(memory_format=torch.channels_last), fast.to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = torch.randint(0, 10, (4,), generator=torch.Generator().manual_seed(2))
    assert max_difference(search_step_results(plain, x, y), search_step_results(fast, x, y)) < TOLERANCE


@pytest.mark.parametrize('unrolled', [False, True])
def test_architect_step_is_the_same_in_both_implementations(unrolled):
    """A whole search step (architecture step, first or second order, then the weight step)."""
    results = []
    torch.manual_seed(0)
    plain, fast = both_implementations(SearchNetwork(4, 10, 3, steps=2, image_size=8))
    g = torch.Generator().manual_seed(1)
    x, x_valid = (torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64) for _ in range(2))
    y, y_valid = (torch.randint(0, 10, (4,), generator=g) for _ in range(2))
    for net in (plain, fast):
        optimizer = torch.optim.SGD(net.weight_parameters(), 0.1, momentum=0.9, weight_decay=3e-4)
        architect = Architect(net, nn.CrossEntropyLoss(), arch_learning_rate=0.1, unrolled=unrolled)
        for _ in range(2):
            architect.step(x, y, x_valid, y_valid, 0.1, optimizer)
            optimizer.zero_grad()
            F.cross_entropy(net(x), y).backward()
            optimizer.step()
        results.append([p.detach() for p in net.parameters()] + [b.double() for b in net.buffers()])
    assert max_difference(*results) < TOLERANCE


@pytest.mark.parametrize('arch', ['Att_DARTS', 'DARTS_V2', 'DARTS_MORE_V1'])
def test_evaluation_network_is_the_same_in_both_implementations(arch):
    torch.manual_seed(0)
    plain, fast = both_implementations(NetworkCIFAR(8, 10, 3, True, genotypes.load(arch), image_size=16))
    x = random_batch((2, 3, 16, 16), False)
    for net in (plain, fast):
        net.drop_path_prob = 0.0
    results = []
    for net in (plain, fast):
        logits, aux = net(x)
        loss = F.cross_entropy(logits, torch.arange(2)) + 0.4 * F.cross_entropy(aux, torch.arange(2))
        results.append([loss.detach(), *torch.autograd.grad(loss, [x, *net.parameters()])])
    assert max_difference(*results) < TOLERANCE


def test_auto_picks_fast_kernels_only_where_they_were_measured_faster():
    assert kernels.resolve('auto', torch.device('cpu')) == 'fast'
    assert kernels.resolve('auto', torch.device('cuda', 0)) == 'plain'
    assert kernels.resolve('plain', 'cpu') == 'plain' and kernels.resolve('fast', 'cuda') == 'fast'
    with pytest.raises(ValueError, match="unknown kernels 'quick'"):
        kernels.resolve('quick', 'cpu')


def test_plain_network_has_no_fast_module_and_fast_network_keeps_its_parameters():
    torch.manual_seed(0)
    net = SearchNetwork(4, 10, 3, steps=2, image_size=8)
    assert not kernels.is_accelerated(net)
    names = [n for n, _ in net.named_parameters()] + [n for n, _ in net.named_buffers()]
    params = list(net.parameters())
    kernels.accelerate(net)
    assert kernels.is_accelerated(net)
    assert [n for n, _ in net.named_parameters()] + [n for n, _ in net.named_buffers()] == names
    assert all(a is b for a, b in zip(net.parameters(), params))
    fast_types = {type(m) for m in net.modules()}
    assert {mixture.FastMixedEdge, mixture.FastSearchCell, convolution.FastSepConv, attention_kernels.FastBAM} <= \
        fast_types


# --------------------------------------------------------------------------- a new candidate at run time

class ToyAttention(nn.Module):
    """A registered attention knowing nothing of the kernels: x scaled by a learned per-channel
    tanh gate on the mean map."""

    def __init__(self, C, height=None, width=None):
        super().__init__()
        self.gate = nn.Conv2d(C, C, 1)

    def forward(self, x):
        return x * torch.tanh(self.gate(x.mean((2, 3), keepdim=True)))


class ToyGate(attention.ChannelGate):
    """A registered channel gate: it opts into the fast mixture through `channel_scale`."""

    def __init__(self, C, height=None, width=None):
        super().__init__()
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, C))

    def channel_scale(self, x):
        return torch.sigmoid(self.scale * x.mean((2, 3)))[:, :, None, None]


class ToyOp(nn.Sequential):
    def __init__(self, C, stride, affine):
        super().__init__(nn.ReLU(), nn.Conv2d(C, C, 3, stride, 1, bias=False), nn.BatchNorm2d(C, affine=affine))


@pytest.fixture
def toy_candidates():
    ATTENTIONS.register('ToyAttention', ToyAttention)
    ATTENTIONS.register('ToyGate', ToyGate)
    OPS.register('toy_conv', ToyOp)
    yield
    ATTENTIONS.unregister('ToyAttention')
    ATTENTIONS.unregister('ToyGate')
    OPS.unregister('toy_conv')


@pytest.mark.parametrize('implementation', ['plain', 'fast'])
def test_a_registered_attention_and_op_search_derive_train_and_draw(toy_candidates, implementation, tmp_path):
    primitives = ['none', 'skip_connect', 'toy_conv', 'max_pool_3x3']
    torch.manual_seed(0)
    net = kernels.apply(SearchNetwork(4, 10, 3, primitives=primitives, steps=2, image_size=8), implementation, 'cpu')
    assert net.lists['second'][-2:] == ['ToyAttention', 'ToyGate']
    g = torch.Generator().manual_seed(1)
    x, x_valid = (torch.randn(4, 3, 8, 8, generator=g) for _ in range(2))
    y, y_valid = (torch.randint(0, 10, (4,), generator=g) for _ in range(2))
    optimizer = torch.optim.SGD(net.weight_parameters(), 0.1, momentum=0.9)
    architect = Architect(net, nn.CrossEntropyLoss(), unrolled=True)
    architect.step(x, y, x_valid, y_valid, 0.1, optimizer)
    # Make the toys the strongest candidates, so that the derived cell holds them.
    with torch.no_grad():
        for name, table in net.arch.items():
            candidates = net.lists['first' if name.startswith('alphas') else 'second']
            for toy in ('toy_conv', 'ToyGate'):
                if toy in candidates:
                    table[:, candidates.index(toy)] += 10
    genotype = genotypes.validate(net.genotype())
    assert {e[0] for e in genotype.normal} == {'toy_conv'} and {e[2] for e in genotype.normal} == {'ToyGate'}
    model = kernels.apply(NetworkCIFAR(4, 10, 3, True, genotype, image_size=8), implementation, 'cpu')
    model.drop_path_prob = 0.0
    logits, aux = model(x)
    (F.cross_entropy(logits, y) + F.cross_entropy(aux, y)).backward()
    assert all(p.grad is not None for p in model.parameters())
    if drawing.dot_available():
        assert drawing.draw_genotype(genotype, 'toy', str(tmp_path))
        assert any(tmp_path.iterdir())


def test_a_registered_attention_is_the_same_in_both_implementations(toy_candidates):
    torch.manual_seed(0)
    plain, fast = both_implementations(SearchNetwork(4, 10, 3, steps=2, image_size=8))
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 10, (4,))
    assert max_difference(search_step_results(plain, x, y), search_step_results(fast, x, y)) < TOLERANCE


# --------------------------------------------------------------------------- the kernels themselves

@pytest.mark.parametrize('affine', [False, True])
def test_normalized_mixture_matches_weighted_batchnorms(affine):
    """Output, every gradient and the running statistics, against autograd through F.batch_norm."""
    g = torch.Generator().manual_seed(0)
    K, shape = 3, (4, 5, 6, 6)
    zs = [(3 * torch.randn(*shape, generator=g, dtype=torch.float64) + 2).requires_grad_() for _ in range(K)]
    gammas = [torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True) if affine else None
              for _ in range(K)]
    betas = [torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True) if affine else None
             for _ in range(K)]
    w = torch.randn(K, generator=g, dtype=torch.float64, requires_grad=True)
    stats = [[(torch.zeros(5, dtype=torch.float64), torch.ones(5, dtype=torch.float64)) for _ in range(K)]
             for _ in range(2)]
    flat = [t for k in range(K) for t in (zs[k], gammas[k], betas[k], *stats[0][k])]
    fused = mixture.NormalizedMixture.apply(w, 1e-5, 0.1, *flat)
    plain = sum(w[k] * F.batch_norm(zs[k], *stats[1][k], gammas[k], betas[k], True, 0.1, 1e-5) for k in range(K))
    grad = torch.randn(*shape, generator=g, dtype=torch.float64)
    inputs = [w, *zs] + (gammas + betas if affine else [])
    assert float((fused - plain).detach().abs().max()) < TOLERANCE
    assert max_difference(torch.autograd.grad(fused, inputs, grad), torch.autograd.grad(plain, inputs, grad)) < TOLERANCE
    assert max_difference([s for pair in stats[0] for s in pair], [s for pair in stats[1] for s in pair]) < TOLERANCE


def test_pools_run_once_per_cell_state():
    """The weight-free pools (and their non-affine BNs) of the edges leaving one state give equal
    outputs, so they run once per state; each edge's BN still moves its own running statistics
    (checked against the plain network by the location test above)."""
    torch.manual_seed(0)
    _, net = both_implementations(SearchNetwork(4, 10, 3, steps=2, image_size=8))
    calls = {}
    for module in net.cells[0].modules():
        if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            module.register_forward_hook(lambda m, i, o: calls.update({type(m): calls.get(type(m), 0) + 1}))
    F.cross_entropy(net(torch.randn(4, 3, 8, 8, dtype=torch.float64)), torch.randint(0, 10, (4,))).backward()
    # Two nodes: 5 edges read 3 states (the cell's two inputs and the first node).
    assert sorted(calls.values()) == [3, 3]


def test_partial_channel_bypass_is_pooled_once_per_state():
    """A reduction cell's stride-2 edges reading one state pool the same bypassed channels: the
    fast cell pools them once per state (the plain cell once per edge, as PC-DARTS does)."""
    torch.manual_seed(0)
    plain, fast = both_implementations(SearchNetwork(4, 10, 3, steps=2, image_size=8, partial_channels=2))
    for net, expected in ((plain, 4), (fast, 2)):  # two nodes, each with a stride-2 edge from both inputs
        calls = []
        net.cells[1].bypass_pool.register_forward_hook(lambda m, i, o: calls.append(m))
        F.cross_entropy(net(torch.randn(4, 3, 8, 8, dtype=torch.float64)), torch.randint(0, 10, (4,))).backward()
        assert net.cells[1].reduction and len(calls) == expected


def saved_bytes(run):
    """Bytes of the distinct storages autograd keeps for backward while `run()` records its graph."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(storages.values())


def test_fast_mixed_edge_shares_one_relu_and_keeps_no_batchnorm_output():
    """What autograd keeps for backward, counted: the fast edge holds fewer feature maps."""
    torch.manual_seed(0)
    plain, fast = both_implementations(MixedEdge(genotypes.PRIMITIVES, 8, 1, 8, 8, affine=False))
    x = torch.randn(2, 8, 8, 8, dtype=torch.float64, requires_grad=True)
    weights = torch.softmax(torch.randn(len(genotypes.PRIMITIVES), dtype=torch.float64), 0).requires_grad_()
    feature_map = x.numel() * x.element_size()
    # 3 ReLU copies and 6 BatchNorm outputs (4 convs, 2 pools) fewer, less a few per-channel
    # statistics; the depthwise convs' savings come on top.
    assert saved_bytes(lambda: plain(x, weights)) - saved_bytes(lambda: fast(x, weights)) > 8.5 * feature_map


@pytest.mark.parametrize('size, kernel, stride', [(8, 3, 1), (8, 5, 1), (16, 3, 2), (16, 5, 2), (7, 3, 1), (7, 3, 2),
                                                  (32, 3, 1)])
@pytest.mark.parametrize('channels_last', [True, False])
def test_polyphase_dilated_conv_is_the_dilated_conv(size, kernel, stride, channels_last, monkeypatch):
    """Even sizes take the polyphase paths (stride 2: one slice; stride 1: d^2 phases), odd sizes
    the dilated kernel itself; values that record no graph take the dilated kernel at stride 1;
    all must agree with Conv2d, and so must the hand-written backward's path."""
    torch.manual_seed(0)
    padding = 2 * (kernel // 2)
    conv = convolution.PolyphaseDilatedConv(6, 6, kernel, stride, padding, dilation=2, groups=6, bias=False).double()
    x = random_batch((3, 6, size, size), channels_last)
    weight = conv.weight.detach().clone().requires_grad_()
    dilated_kernel_calls, plain = [], nn.Conv2d._conv_forward
    monkeypatch.setattr(nn.Conv2d, '_conv_forward', lambda self, *args: dilated_kernel_calls.append(1) or plain(self, *args))
    out = conv(x)
    assert bool(dilated_kernel_calls) == (size % 2 == 1)
    expected = F.conv2d(x, weight, None, stride, padding, 2, 6)
    grad = torch.randn_like(expected)
    assert out.shape == expected.shape and float((out - expected).detach().abs().max()) < TOLERANCE
    expected_grads = torch.autograd.grad(expected, [x, weight], grad)
    assert max_difference(torch.autograd.grad(out, [x, conv.weight], grad), expected_grads) < TOLERANCE
    assert max_difference(conv.conv_backward(grad, x.detach(), weight.detach(), True, True), expected_grads) < TOLERANCE
    dilated_kernel_calls.clear()
    with torch.no_grad():
        values = conv(x)
    assert bool(dilated_kernel_calls) == (size % 2 == 1 or stride == 1)
    assert float((values - expected.detach()).abs().max()) < TOLERANCE


@pytest.mark.parametrize('kernel, stride, dilation, size', [(3, 1, 1, 8), (5, 1, 1, 8), (5, 2, 1, 8), (3, 1, 2, 8),
                                                            (5, 2, 2, 8), (3, 1, 2, 7)])
@pytest.mark.parametrize('channels_last', [True, False])
@pytest.mark.parametrize('affine', [True, False])
@pytest.mark.parametrize('recomputed_map_bytes', [0, None])
def test_separable_conv_recomputes_exactly(kernel, stride, dilation, size, channels_last, affine, recomputed_map_bytes,
                                           monkeypatch):
    """DilConv's depthwise+pointwise pair and SepConv's two pairs with the BatchNorm and ReLU
    between them, in one recomputing chain or two, give the plain output, gradients and running
    statistics."""
    import operations
    if recomputed_map_bytes is not None:  # SepConv's stages in one chain (by default: in two, at this size)
        monkeypatch.setattr(convolution, 'RECOMPUTED_MAP_BYTES', recomputed_map_bytes)
    torch.manual_seed(0)
    padding = dilation * (kernel // 2)
    op = (operations.DilConv(6, 8, kernel, stride, padding, dilation, affine) if dilation > 1
          else operations.SepConv(6, 8, kernel, stride, padding, affine))
    plain, fast = both_implementations(op)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    plain, fast = plain.to(memory_format=layout), fast.to(memory_format=layout)
    x = random_batch((3, 6, size, size), channels_last)
    assert max_difference(outputs_and_gradients(plain, [x]), outputs_and_gradients(fast, [x])) < TOLERANCE


def test_separable_conv_keeps_no_depthwise_output_and_replays_autocast(monkeypatch):
    torch.manual_seed(0)
    import operations
    plain = operations.SepConv(8, 8, 5, 1, 2, affine=True)
    fast = kernels.accelerate(copy.deepcopy(plain))
    x = torch.randn(2, 8, 8, 8).relu().requires_grad_()
    feature_map = x.numel() * x.element_size()
    kept = saved_bytes(lambda: plain(x))
    # both depthwise outputs and the middle ReLU's output
    assert kept - saved_bytes(lambda: fast(x)) >= 3 * feature_map
    # and the middle BatchNorm's input, where the middle map is as large as RECOMPUTED_MAP_BYTES
    monkeypatch.setattr(convolution, 'RECOMPUTED_MAP_BYTES', feature_map)
    assert kept - saved_bytes(lambda: fast(x)) >= 4 * feature_map
    monkeypatch.setattr(convolution, 'RECOMPUTED_MAP_BYTES', feature_map + 1)
    assert kept - saved_bytes(lambda: fast(x)) < 4 * feature_map
    for conv in (plain, fast):
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = conv(x)
        assert out.dtype == torch.bfloat16
        grads = torch.autograd.grad(out.float().square().sum(), [x, *conv.parameters()])
        assert all(g.dtype == torch.float32 for g in grads)


def test_architecture_only_passes_compute_no_weight_gradients():
    """The architect's passes to the alphas freeze the weights, so that no backward (autograd's
    or a hand-written one) computes a depthwise weight gradient; the alpha gradient is unchanged."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class DepthwiseWeightGradients(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.masks = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten.convolution_backward.default and args[-2] > 1:  # depthwise
                self.masks.append(tuple(args[-1]))
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    plain, fast = both_implementations(SearchNetwork(4, 10, 3, steps=2, image_size=8))
    x, y = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.randint(0, 10, (2,))
    grads = []
    for net in (plain, fast):
        architect = Architect(net, nn.CrossEntropyLoss())
        with DepthwiseWeightGradients() as calls, architect.weights_frozen():
            grads.append(torch.autograd.grad(F.cross_entropy(net(x), y), net.arch_parameters()))
        assert calls.masks and not any(mask[1] for mask in calls.masks)
        assert all(p.requires_grad for p in net.weight_parameters())
    assert max_difference(*grads) < TOLERANCE


def test_subsample_is_the_strided_slice_with_a_gradient_in_the_input_layout():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 7, 6, generator=g, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    out = subsample(x, 1, 2)
    assert torch.equal(out, x[:, :, 1::2, 1::2])
    grad, = torch.autograd.grad((out ** 3).sum(), x, create_graph=True)
    expected, = torch.autograd.grad((x[:, :, 1::2, 1::2] ** 3).sum(), x, create_graph=True)
    assert torch.equal(grad, expected) and grad.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(torch.autograd.grad((grad ** 2).sum(), x)[0], torch.autograd.grad((expected ** 2).sum(), x)[0])


@pytest.mark.parametrize('kernel, stride, padding, ceil_mode, channels_last',
                         [(3, 1, 1, False, False), (3, 2, 1, False, True), (3, 1, 1, False, True),
                          (2, 2, 0, True, False)])  # the last: PC-DARTS's bypass, 9 -> 5 in ceil mode
def test_index_free_max_pool_matches_max_pool(kernel, stride, padding, ceil_mode, channels_last):
    """The max pool keeps its input instead of int64 indices; gradients (ties included: the same
    first-argmax rule) and second derivatives stay those of nn.MaxPool2d."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 9, 9, generator=g, dtype=torch.float64).round()  # rounding makes ties
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_()
    geometry = dict(kernel_size=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode)
    ours, reference = convolution.IndexFreeMaxPool(**geometry), nn.MaxPool2d(**geometry)
    out, expected = ours(x), reference(x)
    assert torch.equal(out, expected)
    grad = torch.randn(expected.shape, generator=g, dtype=torch.float64)
    assert torch.equal(torch.autograd.grad(out, x, grad)[0], torch.autograd.grad(expected, x, grad)[0])
    assert torch.autograd.gradgradcheck(ours, (torch.randn(1, 2, 5, 5, dtype=torch.float64, requires_grad=True),))


class TwoPreprocessings(nn.Module):
    """The preprocessing of one cell output by the next two cells."""

    def __init__(self):
        super().__init__()
        self.next, self.after_next = ReLUConvBN(8, 4, 1, 1, 0), ReLUConvBN(8, 4, 1, 1, 0)

    def forward(self, h):
        return torch.cat([self.next(h), self.after_next(h)], 1)


@pytest.mark.parametrize('channels_last', [False, True])
def test_preprocessing_keeps_its_input_once_for_the_cells_reading_it(channels_last):
    """Each plain ReLUConvBN keeps its own ReLU of the cell output for backward, the fast ones keep
    the one input: exactly one feature map less, and the same outputs, gradients and running
    statistics."""
    torch.manual_seed(0)
    plain, fast = both_implementations(TwoPreprocessings())
    assert type(fast.next) is convolution.FastReLUConvBN
    x = random_batch((2, 8, 5, 5), channels_last)
    assert max_difference(outputs_and_gradients(plain, [x]), outputs_and_gradients(fast, [x])) < TOLERANCE
    feature_map = x.numel() * x.element_size()
    assert saved_bytes(lambda: plain(x)) - saved_bytes(lambda: fast(x)) == feature_map


def test_strided_pointwise_conv_is_a_stride_2_conv():
    torch.manual_seed(0)
    plain, fast = both_implementations(StridedPointwiseConv(8, 4, 2))
    x = random_batch((2, 8, 9, 9), True)
    expected = F.conv2d(x, plain.weight, stride=2)
    for conv in (plain, fast):
        assert float((conv(x) - expected).detach().abs().max()) < TOLERANCE
    assert FactorizedReduce(8, 8).conv_1.subsample == 2


@pytest.mark.parametrize('residual', [True, False])
def test_spatial_channel_gate_gradients(residual):
    """BAM's and CBAM's output product keeps only its factors: first and second derivatives
    against finite differences."""
    g = torch.Generator().manual_seed(0)
    x, mc, ms = (torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
                 for shape in ((2, 3, 4, 5), (2, 3, 1, 1), (2, 1, 4, 5)))
    weight = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    for w in (weight, None):
        inputs = (x, mc, ms) + ((w,) if w is not None else ())
        fn = lambda *t: attention_kernels._SpatialChannelGate.apply(*t[:3], t[3] if len(t) > 3 else None, residual)  # noqa: E731
        assert torch.autograd.gradcheck(fn, inputs)
        assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize('name', ['BAM', 'CBAM', 'DoubleAttention'])
def test_weighted_is_weight_times_forward(name):
    torch.manual_seed(0)
    plain, fast = both_implementations(ATTENTIONS[name](32, 6, 6))
    x = torch.randn(3, 32, 6, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(3, 32, 6, 6, dtype=torch.float64)
    out, expected = fast.weighted(x, weight), weight * plain(x)
    assert float((out - expected).detach().abs().max()) < TOLERANCE
    assert max_difference(torch.autograd.grad(out, [x, weight, *fast.parameters()], grad),
                          torch.autograd.grad(expected, [x, weight, *plain.parameters()], grad)) < TOLERANCE


def test_double_attention_keeps_only_its_narrow_maps():
    """Besides x, A² keeps four maps of C/4 channels (A, both softmaxes, Z), not conv_abv's whole
    3C/4-channel output, which a view of A would hold."""
    torch.manual_seed(0)
    module = kernels.accelerate(attention.DoubleAttention(16)).to(memory_format=torch.channels_last)
    x = torch.randn(4, 16, 8, 8).to(memory_format=torch.channels_last).requires_grad_()
    weight = torch.tensor(0.3, requires_grad=True)
    assert saved_bytes(lambda: module.weighted(x, weight)) < 2.1 * x.numel() * x.element_size()


def test_channels_last_supernet_backward_stays_channels_last():
    """No convolution or BatchNorm backward of a fast channels-last supernet (every attention, the
    reduction cells, the classifier head) gets a gradient in the contiguous layout: on the CPU such
    a mixed-layout kernel, and every sum it is accumulated into, is several times slower."""
    from torch.utils._python_dispatch import TorchDispatchMode

    def contiguous_only(t):
        return (isinstance(t, torch.Tensor) and t.dim() == 4 and t.is_contiguous()
                and not t.is_contiguous(memory_format=torch.channels_last))

    class ContiguousGradients(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.calls = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in (torch.ops.aten.convolution_backward.default,
                        torch.ops.aten.native_batch_norm_backward.default) and contiguous_only(args[0]):
                self.calls.append((str(func), tuple(args[0].shape)))
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    net = kernels.accelerate(SearchNetwork(16, 10, 3, steps=2, image_size=8)).to(memory_format=torch.channels_last)
    x, y = torch.randn(2, 3, 8, 8), torch.randint(0, 10, (2,))
    with ContiguousGradients() as mode:
        F.cross_entropy(net(x), y).backward()
    assert not mode.calls, mode.calls[:5]


def attention_node(k, n, C, size, seed=0):
    torch.manual_seed(seed)
    names = ATTENTIONS.names()
    edges = [MixedEdge(names, C, 1, size, size, False).double().to(memory_format=torch.channels_last)
             for _ in range(k)]
    for edge in edges:
        for p in edge.parameters():
            p.data.normal_(0, 0.5)  # away from the symmetric defaults, so a swapped edge would show
    xs = [random_batch((n, C, size, size), True, seed=1 + e) for e in range(k)]
    weights = torch.randn(k, len(names), dtype=torch.float64).softmax(1).requires_grad_()
    return edges, [kernels.accelerate(copy.deepcopy(edge)) for edge in edges], xs, weights


@pytest.mark.parametrize('k, n, C, size', [(2, 4, 16, 8), (5, 3, 32, 4), (3, 2, 64, 8), (4, 2, 4, 6)])
def test_edge_batched_attention_node_is_the_sum_of_its_edges(k, n, C, size, monkeypatch):
    """A node's attention edges run together on their stacked maps (each candidate once for all k,
    with each edge's parameters): output, every gradient and every edge's running statistics
    equal those of the k plain edges run one by one, and the node stays channels-last."""
    plain_edges, edges, xs, weights = attention_node(k, n, C, size)
    per_edge_calls, forward = [], mixture.FastMixedEdge.forward
    monkeypatch.setattr(mixture.FastMixedEdge, 'forward',
                        lambda self, *args, **kwargs: per_edge_calls.append(self) or forward(self, *args, **kwargs))
    node = mixture.FastMixedEdge.node_sum(edges, xs, weights)
    assert not per_edge_calls and node.is_contiguous(memory_format=torch.channels_last)
    plain = sum(edge(x, w) for edge, x, w in zip(plain_edges, xs, weights))
    grad = torch.randn_like(plain)
    inputs = [*xs, weights]
    grads = torch.autograd.grad(node, inputs + [p for e in edges for p in e.parameters()], grad)
    plain_grads = torch.autograd.grad(plain, inputs + [p for e in plain_edges for p in e.parameters()], grad)
    assert float((node - plain).detach().abs().max()) < TOLERANCE
    assert max_difference(grads, plain_grads) < TOLERANCE
    assert max_difference([b.double() for e in edges for b in e.buffers()],
                          [b.double() for e in plain_edges for b in e.buffers()]) < TOLERANCE


def test_edge_batched_attention_falls_back_where_it_cannot_apply():
    """One sample (BatchNorm1d's training error stays the per-edge one), autocast, an NCHW map, a
    map other than the Gather-Excite kernel's size and eval mode all run the edges one by one."""
    _, edges, xs, weights = attention_node(2, 2, 16, 4)
    batchable = mixture.FastMixedEdge._edge_batchable
    assert batchable(edges, xs)
    assert not batchable(edges, [x[:1] for x in xs])
    assert not batchable(edges, [x.contiguous() for x in xs])
    assert not batchable(edges, [F.pad(x, (1, 1, 1, 1)).contiguous(memory_format=torch.channels_last) for x in xs])
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert not batchable(edges, xs)
    for edge in edges:
        edge.eval()
    assert not batchable(edges, xs)
    for edge in edges:
        edge.train()
    with pytest.raises(ValueError, match='more than 1 value per channel'):
        mixture.FastMixedEdge.node_sum(edges, [x[:1] for x in xs], weights)


def test_deterministic_cbam_uses_amax():
    """adaptive_max_pool2d's CUDA backward has no deterministic form: with deterministic
    algorithms asked for, the fast CBAM pools with amax, as the plain one always does."""
    torch.manual_seed(0)
    plain, fast = both_implementations(attention.CBAM(16))
    x = random_batch((3, 16, 6, 6), False)
    calls, pool = [], F.adaptive_max_pool2d
    previous = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        import unittest.mock
        with unittest.mock.patch.object(attention_kernels.F, 'adaptive_max_pool2d',
                                        lambda *a, **k: calls.append(1) or pool(*a, **k)):
            results = outputs_and_gradients(fast, [x])
    finally:
        torch.use_deterministic_algorithms(previous)
    assert not calls
    assert max_difference(outputs_and_gradients(plain, [x]), results) < TOLERANCE


@pytest.mark.parametrize('implementation', ['plain', 'fast'])
@pytest.mark.parametrize('location', ['after_every', 'double_mixed'])
def test_a_search_pass_builds_no_index_tensor(implementation, location):
    """No tensor is made from Python values (lift_fresh) nor indexes by one during a forward and
    backward: on CUDA each would be a host-to-device copy and a synchronisation, per edge."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class HostTensors(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.calls = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in (torch.ops.aten.index.Tensor, torch.ops.aten.lift_fresh.default):
                self.calls.append(str(func))
            return func(*args, **(kwargs or {}))

    with HostTensors() as probe:
        torch.tensor([1, 3])
    assert probe.calls == ['aten.lift_fresh.default']  # the probe sees what it is looking for
    torch.manual_seed(0)
    net = kernels.apply(SearchNetwork(4, 10, 3, location=location, steps=2, image_size=8), implementation, 'cpu')
    x, y = torch.randn(2, 3, 8, 8), torch.randint(0, 10, (2,))
    with HostTensors() as probe:
        F.cross_entropy(net(x), y).backward()
    assert not probe.calls


def test_plain_copy_undoes_accelerate():
    torch.manual_seed(0)
    net = NetworkCIFAR(8, 10, 3, True, genotypes.load('Att_DARTS'), image_size=16)
    plain = kernels.plain_copy(kernels.accelerate(copy.deepcopy(net)))
    assert [type(m) for m in plain.modules()] == [type(m) for m in net.modules()]
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), net.state_dict().values()))
