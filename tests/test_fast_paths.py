"""The speed and memory paths compute what the plain code computes: the fused BatchNorm mixture
and shared ReLU and pools of a search edge, the channels-last layout, the weighted-sum Gather-Excite gather,
the sliced stride of 1x1 convolutions, and torch.compile."""
import copy
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import attention
import genotypes
from architect import Architect
from model import NetworkCIFAR
from model_search import MixedEdge, NormalizedMixture, SearchNetwork
from operations import FactorizedReduce, StridedPointwiseConv, plain_autograd, subsample


def max_difference(a, b):
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


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
    fused = NormalizedMixture.apply(w, 1e-5, 0.1, *flat)
    plain = sum(w[k] * F.batch_norm(zs[k], *stats[1][k], gammas[k], betas[k], True, 0.1, 1e-5) for k in range(K))
    grad = torch.randn(*shape, generator=g, dtype=torch.float64)
    inputs = [w, *zs] + (gammas + betas if affine else [])
    assert float((fused - plain).detach().abs().max()) < 1e-12
    assert max_difference(torch.autograd.grad(fused, inputs, grad), torch.autograd.grad(plain, inputs, grad)) < 1e-10
    assert max_difference([s for pair in stats[0] for s in pair], [s for pair in stats[1] for s in pair]) < 1e-14


@pytest.mark.parametrize('location', ['after_every', 'double_mixed', 'end'])
@pytest.mark.parametrize('affine', [False, True])
def test_fused_search_edges_match_the_plain_mixture(location, affine):
    torch.manual_seed(0)
    net = SearchNetwork(4, 10, 3, location=location, steps=2, image_size=8, affine=affine).double()
    plain_net = copy.deepcopy(net)
    x, y = torch.randn(4, 3, 8, 8, dtype=torch.float64), torch.randint(0, 10, (4,))
    results = []
    for model, context in ((net, torch.enable_grad()), (plain_net, plain_autograd())):
        with context:
            loss = F.cross_entropy(model(x), y)
            grads = torch.autograd.grad(loss, list(model.parameters()))
        results.append((loss.detach(), grads, [b.clone() for b in model.buffers()]))
    (loss, grads, buffers), (plain_loss, plain_grads, plain_buffers) = results
    assert abs(float(loss - plain_loss)) < 1e-12
    assert max_difference(grads, plain_grads) < 1e-9
    assert max_difference(buffers, plain_buffers) < 1e-12


def test_pools_run_once_per_cell_state_and_every_edge_keeps_its_statistics():
    """The weight-free pools (and their non-affine BNs) of the edges leaving one state give equal
    outputs, so they run once per state; each edge's BN still moves its own running statistics."""
    torch.manual_seed(0)
    net = SearchNetwork(4, 10, 3, steps=2, image_size=8).double()
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):  # unequal statistics, as a checkpoint may hold
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    plain = copy.deepcopy(net)
    calls = {}
    for module in net.cells[0].modules():
        if isinstance(module, (torch.nn.MaxPool2d, torch.nn.AvgPool2d)):
            module.register_forward_hook(lambda m, i, o: calls.update({type(m): calls.get(type(m), 0) + 1}))
    x, y = torch.randn(4, 3, 8, 8, dtype=torch.float64), torch.randint(0, 10, (4,))
    F.cross_entropy(net(x), y).backward()
    # Two nodes: 5 edges read 3 states (the cell's two inputs and the first node).
    assert sorted(calls.values()) == [3, 3]
    with plain_autograd():
        F.cross_entropy(plain(x), y).backward()
    assert max_difference(list(net.buffers()), list(plain.buffers())) < 1e-12
    assert max_difference([p.grad for p in net.parameters()], [p.grad for p in plain.parameters()]) < 1e-10


def saved_bytes(run, context):
    """Bytes of the distinct storages autograd keeps for backward while `run()` records its graph."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    with context, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(storages.values())


def test_mixed_edge_shares_one_relu_and_keeps_no_batchnorm_output():
    """What autograd keeps for backward, counted: the fused edge holds fewer feature maps."""
    torch.manual_seed(0)
    edge = MixedEdge(genotypes.PRIMITIVES, 8, 1, 8, 8, affine=False)
    x = torch.randn(2, 8, 8, 8, requires_grad=True)
    weights = torch.softmax(torch.randn(len(genotypes.PRIMITIVES)), 0).requires_grad_()

    feature_map = x.numel() * x.element_size()
    # 3 ReLU copies and 6 BatchNorm outputs (4 convs, 2 pools) fewer, less a few per-channel statistics;
    # the depthwise convs' savings come on top
    run = lambda: edge(x, weights)  # noqa: E731
    assert saved_bytes(run, plain_autograd()) - saved_bytes(run, torch.enable_grad()) > 8.5 * feature_map


def search_step(channels_last, unrolled):
    torch.manual_seed(0)
    net = SearchNetwork(4, 10, 3, steps=2, image_size=16)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(1)
    x, x_valid = torch.randn(4, 3, 16, 16, generator=g), torch.randn(4, 3, 16, 16, generator=g)
    y, y_valid = torch.randint(0, 10, (4,), generator=g), torch.randint(0, 10, (4,), generator=g)
    optimizer = torch.optim.SGD(net.weight_parameters(), 0.1, momentum=0.9, weight_decay=3e-4)
    architect = Architect(net, torch.nn.CrossEntropyLoss(), arch_learning_rate=0.1, unrolled=unrolled)
    for _ in range(2):
        architect.step(x, y, x_valid, y_valid, 0.1, optimizer)
        optimizer.zero_grad()
        F.cross_entropy(net(x), y).backward()
        optimizer.step()
    return [p.detach().clone() for p in net.arch_parameters()], [p.detach().clone() for p in net.weight_parameters()]


@pytest.mark.parametrize('unrolled', [False, True])
def test_channels_last_search_steps_match_nchw(unrolled):
    alphas, weights = search_step(True, unrolled)
    nchw_alphas, nchw_weights = search_step(False, unrolled)
    assert max_difference(alphas, nchw_alphas) < 1e-5
    assert max_difference(weights, nchw_weights) < 1e-5


def test_channels_last_training_step_matches_nchw():
    results = []
    for layout in (torch.channels_last, torch.contiguous_format):
        torch.manual_seed(0)
        model = NetworkCIFAR(8, 10, 3, True, genotypes.Att_DARTS, image_size=16).to(memory_format=layout)
        model.drop_path_prob = 0.0
        x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
        logits, aux = model(x)
        (F.cross_entropy(logits, y) + 0.4 * F.cross_entropy(aux, y)).backward()
        results.append([logits.detach()] + [p.grad for p in model.parameters()])
    assert max_difference(*results) < 1e-5


def test_gather_excite_weighted_sum_is_its_full_extent_conv():
    torch.manual_seed(0)
    ge = attention.GEThetaPlus(8, 6, 6)
    x = torch.randn(3, 8, 6, 6, requires_grad=True)
    conv, bn = ge.gather
    expected = x * torch.sigmoid(ge.excite(bn(conv(x)).flatten(1)))[:, :, None, None]
    out = ge(x)
    grad = torch.randn_like(out)
    assert float((out - expected).detach().abs().max()) < 1e-6
    assert max_difference(torch.autograd.grad(out, [x, conv.weight], grad),
                          torch.autograd.grad(expected, [x, conv.weight], grad)) < 1e-5


def test_strided_pointwise_conv_is_a_stride_2_conv_and_survives_channels_last():
    """The shape that crashed oneDNN's channels-last stride-2 1x1 backward (8 channels, 64x64,
    batch 2) runs in a child process, so a heap corruption fails this test instead of pytest."""
    torch.manual_seed(0)
    conv = StridedPointwiseConv(8, 4, 2)
    x = torch.randn(2, 8, 9, 9)
    assert torch.allclose(conv(x), F.conv2d(x, conv.weight, stride=2), atol=1e-6)
    script = ("import torch; from operations import FactorizedReduce\n"
              "op = FactorizedReduce(8, 8).to(memory_format=torch.channels_last)\n"
              "for _ in range(5):\n"
              "    x = torch.randn(2, 8, 64, 64).contiguous(memory_format=torch.channels_last).requires_grad_()\n"
              "    op(x).sum().backward()\n"
              "print('fine')\n")
    from tests.helpers import ROOT
    result = subprocess.run([sys.executable, '-c', script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and 'fine' in result.stdout, result.stderr[-2000:]
    assert FactorizedReduce(8, 8).conv_1.subsample == 2


@pytest.mark.skipif(not (shutil.which('g++') or shutil.which('c++')),
                    reason='torch.compile on the CPU needs a C++ compiler (make test installs g++ where it can)')
def test_compiled_training_step_matches_eager():
    """--compile (torch.compile via training.place_model) on a tiny evaluation network: same loss
    and gradients as eager within float32 rounding (inductor reorders reductions)."""
    import torch._dynamo.utils

    import training
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()

    class Flags:
        channels_last, compile = True, True
    results = []
    for compiled in (True, False):
        torch.manual_seed(0)
        model = NetworkCIFAR(4, 10, 2, False, genotypes.DARTS_V2, image_size=8)
        Flags.compile = compiled
        training.place_model(model, Flags, torch.device('cpu'))
        x, y = torch.randn(2, 3, 8, 8), torch.randint(0, 10, (2,))
        logits, _ = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        results.append([loss.detach()] + [p.grad for p in model.parameters()])
        if compiled:
            assert torch._dynamo.utils.counters['stats']['unique_graphs'] > 0
    assert max_difference(*results) < 1e-4


# --------------------------------------------------------------------------- data on the device

def reference_augment(image, shift, flip, centre, padding, cutout_length, mean, std):
    """One image through torchvision's ops and Cutout's clipping, as build_transform does it."""
    import torchvision.transforms.functional as TF
    h, w = image.shape[-2:]
    x = TF.crop(TF.pad(image, [padding]), int(shift[0]), int(shift[1]), h, w)
    if flip:
        x = TF.hflip(x)
    x = TF.normalize(x.float() / 255, mean, std)
    if cutout_length:
        half = cutout_length // 2
        y, c = int(centre[0]), int(centre[1])
        x[:, max(0, y - half):min(h, y + half), max(0, c - half):min(w, c + half)] = 0
    return x


@pytest.mark.parametrize('channels, padding, cutout_length', [(3, 4, 16), (1, 2, 0), (3, 4, 5)])
def test_device_augmentation_is_crop_flip_normalise_cutout(channels, padding, cutout_length):
    from datasets import augment_on_device
    g = torch.Generator().manual_seed(0)
    n, h, w = 6, 12, 10
    images = torch.randint(0, 256, (n, channels, h, w), generator=g, dtype=torch.uint8)
    shift = torch.randint(0, 2 * padding + 1, (n, 2), generator=g)
    flip = torch.tensor([True, False, True, False, True, True])
    centre = torch.stack([torch.randint(0, h, (n,), generator=g), torch.randint(0, w, (n,), generator=g)], 1)
    mean, std = [0.4, 0.5, 0.3][:channels], [0.2, 0.25, 0.3][:channels]
    out = augment_on_device(images, shift, flip, centre, padding, cutout_length,
                            torch.tensor(mean)[None, :, None, None], torch.tensor(std)[None, :, None, None])
    expected = torch.stack([reference_augment(images[i], shift[i], flip[i], centre[i], padding, cutout_length,
                                              mean, std) for i in range(n)])
    assert out.shape == expected.shape
    assert float((out - expected).abs().max()) < 1e-5


def test_device_loader_replays_epochs_and_without_augmentation_equals_the_data_loader(tmp_path):
    import datasets
    import training
    from tests import data_factory
    root = data_factory.make_cifar10(str(tmp_path / 'cifar'), n_train=40, n_test=20)
    plain = datasets.build_dataset('cifar10', root, train=False, augment=False)
    subset = torch.utils.data.Subset(plain, list(range(3, 19)))
    device = torch.device('cpu')
    loader = training.make_loader(subset, 5, False, 0, device)
    on_device = training.make_loader(subset, 5, False, 0, device, on_device=('cifar10', False, 0))
    assert len(on_device) == len(loader) == 4
    for (x, y), (xd, yd) in zip(loader, on_device):
        assert torch.equal(y, yd) and float((x - xd).abs().max()) < 1e-6

    train = datasets.build_dataset('cifar10', root, train=True, augment=True, cutout_length=8)
    augmenting = training.make_loader(train, 8, True, 0, device, drop_last=True, on_device=('cifar10', True, 8))

    def epoch(seed):
        augmenting.generator.manual_seed(seed)
        return list(augmenting)
    first, again, other = epoch(1), epoch(1), epoch(2)
    assert len(first) == 5 and first[0][0].shape == (8, 3, 32, 32)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert not torch.equal(first[0][0], other[0][0])
    assert sorted(torch.cat([y for _, y in first]).tolist()) == sorted(train.targets)


def test_search_and_training_run_with_data_on_device(tmp_path):
    from tests import data_factory
    from tests.helpers import run
    from tests.test_scripts import TINY_SEARCH, TINY_TRAIN
    fashion = data_factory.make_fashion_mnist(str(tmp_path / 'fmnist'), n_train=64, n_test=32)
    run('train_search.py', *TINY_SEARCH, '--data', fashion, '--epochs', '1', '--data_on_device', '--cutout',
        '--save', tmp_path / 'search')
    result = run('train_CIFAR10.py', *TINY_TRAIN, '--dataset', 'fashion-mnist', '--data', fashion, '--epochs', '1',
                 '--arch_path', tmp_path / 'search' / 'genotype.json', '--data_on_device', '--save', tmp_path / 'train')
    assert 'test' in result.stdout + result.stderr
    refused = run('train_CIFAR10.py', *TINY_TRAIN, '--dataset', 'imagefolder', '--data', tmp_path, '--epochs', '1',
                  '--arch', 'DARTS', '--data_on_device', '--save', tmp_path / 'refused', check=False)
    assert refused.returncode == 2 and '--data_on_device holds only' in refused.stderr


@pytest.mark.parametrize('size, kernel, stride', [(8, 3, 1), (8, 5, 1), (16, 3, 2), (16, 5, 2), (7, 3, 1), (7, 3, 2),
                                                  (32, 3, 1)])
@pytest.mark.parametrize('channels_last', [True, False])
def test_polyphase_dilated_conv_is_the_dilated_conv(size, kernel, stride, channels_last, monkeypatch):
    """Even sizes take the polyphase paths (stride 2: one slice; stride 1: d^2 phases), odd sizes
    the dilated kernel itself; values that record no graph take the dilated kernel at stride 1 (its
    forward is the faster one); all must agree with Conv2d."""
    from operations import PolyphaseDilatedConv
    torch.manual_seed(0)
    padding = 2 * (kernel // 2)
    conv = PolyphaseDilatedConv(6, 6, kernel, stride, padding, dilation=2, groups=6, bias=False)
    x = torch.randn(3, 6, size, size, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    weight = conv.weight.detach().double().requires_grad_()
    with torch.no_grad():
        conv.weight.copy_(weight)
    conv.double()
    dilated_kernel_calls, plain = [], torch.nn.Conv2d._conv_forward
    monkeypatch.setattr(torch.nn.Conv2d, '_conv_forward',
                        lambda self, *args: dilated_kernel_calls.append(1) or plain(self, *args))
    out = conv(x)
    assert bool(dilated_kernel_calls) == (size % 2 == 1)
    expected = F.conv2d(x, weight, None, stride, padding, 2, 6)
    assert out.shape == expected.shape
    grad = torch.randn_like(expected)
    assert float((out - expected).detach().abs().max()) < 1e-12
    expected_grads = torch.autograd.grad(expected, [x, weight], grad)
    assert max_difference(torch.autograd.grad(out, [x, conv.weight], grad), expected_grads) < 1e-10
    # The hand-written backward's path (on 4x4 phases of a 5x5 kernel: the weight gradient by shifts).
    assert max_difference(conv.conv_backward(grad, x.detach(), weight.detach(), True, True), expected_grads) < 1e-10
    dilated_kernel_calls.clear()
    with torch.no_grad():
        values = conv(x)
    assert bool(dilated_kernel_calls) == (size % 2 == 1 or stride == 1)
    assert float((values - expected).detach().abs().max()) < 1e-12


@pytest.mark.parametrize('unrolled', [False, True])
def test_fused_attention_edges_give_the_plain_architecture_gradient(unrolled):
    """The attention layer's fused mixture (gates mixed as one product, BAM/CBAM/A2 weighting
    themselves and keeping no outputs) gives the plain gradient, also inside the architect's
    functional_call passes, and counts each batch once in the running statistics."""
    torch.manual_seed(0)
    net = SearchNetwork(4, 10, 3, steps=2, image_size=8).double()
    assert {type(c).__name__ for c in net.cells[0].second[0].candidates} >= {'BAM', 'CBAM', 'DoubleAttention'}
    g = torch.Generator().manual_seed(1)
    x, x_valid = (torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64) for _ in range(2))
    y, y_valid = (torch.randint(0, 10, (4,), generator=g) for _ in range(2))
    optimizer = torch.optim.SGD(net.weight_parameters(), 0.1, momentum=0.9, weight_decay=3e-4)
    F.cross_entropy(net(x), y).backward()
    optimizer.step()
    architect = Architect(net, torch.nn.CrossEntropyLoss(), unrolled=unrolled)
    buffers = [b.clone() for b in net.buffers()]

    def gradient():
        for b, saved in zip(net.buffers(), buffers):
            b.copy_(saved)
        if unrolled:
            return architect.unrolled_gradients(x, y, x_valid, y_valid, 0.1, optimizer)[0]
        return architect._alpha_grad(F.cross_entropy(net(x_valid), y_valid), net.arch_parameters())
    fused = gradient()
    fused_buffers = [b.clone() for b in net.buffers()]
    with plain_autograd():
        plain = gradient()
    assert max_difference(fused, plain) < 1e-10
    assert max_difference(fused_buffers, list(net.buffers())) < 1e-12



def test_double_attention_keeps_only_its_narrow_maps():
    """Besides x, A² keeps four maps of C/4 channels (A, both softmaxes, Z), not conv_abv's whole
    3C/4-channel output, which a view of A would hold."""
    torch.manual_seed(0)
    module = attention.DoubleAttention(16).to(memory_format=torch.channels_last)
    x = torch.randn(4, 16, 8, 8).to(memory_format=torch.channels_last).requires_grad_()
    weight = torch.tensor(0.3, requires_grad=True)
    feature_map = x.numel() * x.element_size()
    kept = saved_bytes(lambda: module.weighted(x, weight), torch.enable_grad())
    assert kept < 2.1 * feature_map

@pytest.mark.parametrize('stride, channels_last', [(1, False), (2, True), (1, True)])
def test_index_free_max_pool_matches_max_pool(stride, channels_last):
    """The search's max pool keeps its input instead of int64 indices; gradients (ties
    included: the same first-argmax rule) and second derivatives stay those of nn.MaxPool2d."""
    from operations import MaxPool2d
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 9, 9, generator=g, dtype=torch.float64).round()  # rounding makes ties
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_()
    ours, reference = MaxPool2d(3, stride, 1), torch.nn.MaxPool2d(3, stride, 1)
    out, expected = ours(x), reference(x)
    assert torch.equal(out, expected)
    grad = torch.randn(expected.shape, generator=g, dtype=torch.float64)
    assert torch.equal(torch.autograd.grad(out, x, grad)[0], torch.autograd.grad(expected, x, grad)[0])
    assert torch.autograd.gradgradcheck(lambda t: ours(t), (torch.randn(1, 2, 5, 5, dtype=torch.float64,
                                                                        requires_grad=True),))


@pytest.mark.parametrize('kernel, stride, dilation, size', [(3, 1, 1, 8), (5, 1, 1, 8), (5, 2, 1, 8), (3, 1, 2, 8),
                                                            (5, 2, 2, 8), (3, 1, 2, 7)])
@pytest.mark.parametrize('channels_last', [True, False])
@pytest.mark.parametrize('affine', [True, False])
@pytest.mark.parametrize('recomputed_map_bytes', [0, None])
def test_separable_conv_recomputes_the_depthwise_output_exactly(kernel, stride, dilation, size, channels_last, affine,
                                                                recomputed_map_bytes, monkeypatch):
    """DilConv's depthwise+pointwise pair and SepConv's two pairs with the BatchNorm and ReLU
    between them keep only their input for backward and give the plain graph's output, gradients
    and running statistics (dilated and strided cases take the polyphase paths)."""
    import operations
    from operations import DilConv, SepConv
    if recomputed_map_bytes is not None:  # SepConv's stages in one chain (by default: in two, at this size)
        monkeypatch.setattr(operations, 'RECOMPUTED_MAP_BYTES', recomputed_map_bytes)
    torch.manual_seed(0)
    padding = dilation * (kernel // 2)
    op = (DilConv(6, 8, kernel, stride, padding, dilation, affine) if dilation > 1
          else SepConv(6, 8, kernel, stride, padding, affine)).double()
    x = torch.randn(3, 6, size, size, dtype=torch.float64)
    if channels_last:
        op, x = op.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    plain_op = copy.deepcopy(op)
    results = []
    for model, context in ((op, torch.enable_grad()), (plain_op, plain_autograd())):
        with context:
            out = model(x)
            grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
            results.append([out.detach(), *torch.autograd.grad(out, [x, *model.parameters()], grad),
                            *[b.double() for b in model.buffers()]])
    assert max_difference(*results) < 1e-12


def test_separable_conv_keeps_no_depthwise_output_and_replays_autocast(monkeypatch):
    import operations
    from operations import SepConv
    torch.manual_seed(0)
    conv = SepConv(8, 8, 5, 1, 2, affine=True)
    x = torch.randn(2, 8, 8, 8).relu().requires_grad_()
    feature_map = x.numel() * x.element_size()
    run = lambda: conv(x)  # noqa: E731
    # both depthwise outputs and the middle ReLU's output
    assert saved_bytes(run, plain_autograd()) - saved_bytes(run, torch.enable_grad()) >= 3 * feature_map
    # and the middle BatchNorm's input, where the middle map is as large as RECOMPUTED_MAP_BYTES
    monkeypatch.setattr(operations, 'RECOMPUTED_MAP_BYTES', feature_map)
    assert saved_bytes(run, plain_autograd()) - saved_bytes(run, torch.enable_grad()) >= 4 * feature_map
    monkeypatch.setattr(operations, 'RECOMPUTED_MAP_BYTES', feature_map + 1)
    assert saved_bytes(run, plain_autograd()) - saved_bytes(run, torch.enable_grad()) < 4 * feature_map
    results = []
    for context in (torch.enable_grad(), plain_autograd()):
        with context, torch.autocast('cpu', dtype=torch.bfloat16):
            out = conv(x)
        assert out.dtype == torch.bfloat16
        grads = torch.autograd.grad(out.float().square().sum(), [x, *conv.parameters()])
        assert all(g.dtype == torch.float32 for g in grads)
        results.append(grads)
    assert max_difference(*results) < 1e-2


def test_architecture_only_passes_compute_no_weight_gradients():
    """The architect's passes to the alphas skip the depthwise weight gradients in the hand-written
    backward, as autograd skips them in its own (a 5x5 depthwise weight gradient costs more than its
    whole forward); the alpha gradient is the plain one."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class WeightGradientCalls(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.masks = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten.convolution_backward.default and args[-2] > 1:  # depthwise
                self.masks.append(tuple(args[-1]))
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    net = SearchNetwork(4, 10, 3, steps=2, image_size=8)
    plain_net = copy.deepcopy(net)
    x, y = torch.randn(2, 3, 8, 8), torch.randint(0, 10, (2,))
    with WeightGradientCalls() as calls:
        alpha_grads = Architect._alpha_grad(F.cross_entropy(net(x), y), net.arch_parameters())
    assert calls.masks and not any(mask[1] for mask in calls.masks)
    with plain_autograd():
        plain_grads = torch.autograd.grad(F.cross_entropy(plain_net(x), y), plain_net.arch_parameters())
    assert max_difference(alpha_grads, plain_grads) < 1e-5


def test_subsample_is_the_strided_slice_with_a_gradient_in_the_input_layout():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 7, 6, generator=g, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    out = subsample(x, 1, 2)
    assert torch.equal(out, x[:, :, 1::2, 1::2])
    grad, = torch.autograd.grad((out ** 3).sum(), x, create_graph=True)
    expected, = torch.autograd.grad((x[:, :, 1::2, 1::2] ** 3).sum(), x, create_graph=True)
    assert torch.equal(grad, expected) and grad.is_contiguous(memory_format=torch.channels_last)
    # Differentiable twice, as the exact unrolled architecture gradient needs.
    assert torch.equal(torch.autograd.grad((grad ** 2).sum(), x)[0], torch.autograd.grad((expected ** 2).sum(), x)[0])


def test_channels_last_supernet_backward_stays_channels_last():
    """No convolution or BatchNorm backward of a channels-last supernet (every attention, the
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
    net = SearchNetwork(16, 10, 3, steps=2, image_size=8).to(memory_format=torch.channels_last)
    x, y = torch.randn(2, 3, 8, 8), torch.randint(0, 10, (2,))
    with ContiguousGradients() as mode:
        F.cross_entropy(net(x), y).backward()
    assert not mode.calls, mode.calls[:5]


def _attention_node(k, n, C, size, seed=0):
    torch.manual_seed(seed)
    edges = [MixedEdge(list(genotypes.ATTENTION_PRIMITIVES), C, 1, size, size, False).double()
             .to(memory_format=torch.channels_last) for _ in range(k)]
    for edge in edges:
        for p in edge.parameters():
            p.data.normal_(0, 0.5)  # away from the symmetric defaults, so a swapped edge would show
    xs = [torch.randn(n, C, size, size, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
          .requires_grad_() for _ in range(k)]
    weights = torch.randn(k, len(genotypes.ATTENTION_PRIMITIVES), dtype=torch.float64).softmax(1).requires_grad_()
    return edges, xs, weights


@pytest.mark.parametrize('k, n, C, size', [(2, 4, 16, 8), (5, 3, 32, 4), (3, 2, 64, 8), (4, 2, 4, 6)])
def test_edge_batched_attention_node_is_the_sum_of_its_edges(k, n, C, size, monkeypatch):
    """A node's attention edges run together on their stacked maps (each candidate once for all k,
    with each edge's parameters): output, every gradient and every edge's running statistics
    equal those of the k edges run one by one, and the node stays channels-last."""
    edges, xs, weights = _attention_node(k, n, C, size)
    plain_edges = copy.deepcopy(edges)
    per_edge_calls, forward = [], MixedEdge.forward

    def counted(self, *args, **kwargs):
        per_edge_calls.append(self)
        return forward(self, *args, **kwargs)
    monkeypatch.setattr(MixedEdge, 'forward', counted)
    node = MixedEdge.node_sum(edges, xs, weights)
    assert not per_edge_calls and node.is_contiguous(memory_format=torch.channels_last)
    plain = sum(edge(x, w) for edge, x, w in zip(plain_edges, xs, weights))
    grad = torch.randn_like(plain)
    inputs = [*xs, weights]
    grads = torch.autograd.grad(node, inputs + [p for e in edges for p in e.parameters()], grad)
    plain_grads = torch.autograd.grad(plain, inputs + [p for e in plain_edges for p in e.parameters()], grad)
    assert float((node - plain).detach().abs().max()) < 1e-12
    assert max_difference(grads, plain_grads) < 1e-10
    assert max_difference([b.double() for e in edges for b in e.buffers()],
                          [b.double() for e in plain_edges for b in e.buffers()]) < 1e-12


def test_edge_batched_attention_falls_back_where_it_cannot_apply():
    """One sample (BatchNorm1d's training error stays the per-edge one), autocast, an NCHW map, a
    map other than the Gather-Excite kernel's size and eval mode all run the edges one by one."""
    edges, xs, weights = _attention_node(2, 2, 16, 4)
    assert MixedEdge._edge_batchable(edges, xs)
    assert not MixedEdge._edge_batchable(edges, [x[:1] for x in xs])
    assert not MixedEdge._edge_batchable(edges, [x.contiguous() for x in xs])
    assert not MixedEdge._edge_batchable(edges, [F.pad(x, (1, 1, 1, 1)).contiguous(memory_format=torch.channels_last)
                                                 for x in xs])
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert not MixedEdge._edge_batchable(edges, xs)
    for edge in edges:
        edge.eval()
    assert not MixedEdge._edge_batchable(edges, xs)
    with pytest.raises(ValueError, match='more than 1 value per channel'):
        for edge in edges:
            edge.train()
        MixedEdge.node_sum(edges, [x[:1] for x in xs], weights)
