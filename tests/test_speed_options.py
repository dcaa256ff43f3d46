"""Speed options compute what the defaults compute: the channels-last layout (in both kernel
implementations), torch.compile, and the training data kept on the device."""
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import genotypes
import kernels
from architect import Architect
from model import NetworkCIFAR
from model_search import SearchNetwork

# float64 throughout: the two layouts' kernels sum in different orders, which float64 keeps to 1e-13.
TOLERANCE = 1e-10


def max_difference(a, b):
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def search_step(channels_last, unrolled, implementation):
    torch.manual_seed(0)
    net = kernels.apply(SearchNetwork(4, 10, 3, steps=2, image_size=16).double(), implementation, 'cpu')
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(1)
    x, x_valid = (torch.randn(4, 3, 16, 16, generator=g, dtype=torch.float64) for _ in range(2))
    y, y_valid = torch.randint(0, 10, (4,), generator=g), torch.randint(0, 10, (4,), generator=g)
    optimizer = torch.optim.SGD(net.weight_parameters(), 0.1, momentum=0.9, weight_decay=3e-4)
    architect = Architect(net, torch.nn.CrossEntropyLoss(), arch_learning_rate=0.1, unrolled=unrolled)
    for _ in range(2):
        architect.step(x, y, x_valid, y_valid, 0.1, optimizer)
        optimizer.zero_grad()
        F.cross_entropy(net(x), y).backward()
        optimizer.step()
    return [p.detach().clone() for p in net.arch_parameters()], [p.detach().clone() for p in net.weight_parameters()]


@pytest.mark.parametrize('implementation', ['plain', 'fast'])
@pytest.mark.parametrize('unrolled', [False, True])
def test_channels_last_search_steps_match_nchw(unrolled, implementation):
    alphas, weights = search_step(True, unrolled, implementation)
    nchw_alphas, nchw_weights = search_step(False, unrolled, implementation)
    assert max_difference(alphas, nchw_alphas) < TOLERANCE
    assert max_difference(weights, nchw_weights) < TOLERANCE


@pytest.mark.parametrize('implementation', ['plain', 'fast'])
def test_channels_last_training_step_matches_nchw(implementation):
    results = []
    for layout in (torch.channels_last, torch.contiguous_format):
        torch.manual_seed(0)
        model = NetworkCIFAR(8, 10, 3, True, genotypes.Att_DARTS, image_size=16).double()
        model = kernels.apply(model, implementation, 'cpu').to(memory_format=layout)
        model.drop_path_prob = 0.0
        x, y = torch.randn(4, 3, 16, 16, dtype=torch.float64), torch.randint(0, 10, (4,))
        logits, aux = model(x)
        (F.cross_entropy(logits, y) + 0.4 * F.cross_entropy(aux, y)).backward()
        results.append([logits.detach()] + [p.grad for p in model.parameters()])
    assert max_difference(*results) < TOLERANCE


def test_factorized_reduce_survives_channels_last():
    """The shape that crashed oneDNN's channels-last stride-2 1x1 backward (8 channels, 64x64,
    batch 2) runs in a child process, in both implementations, so that a heap corruption fails
    this test instead of pytest."""
    script = ("import torch, kernels; from operations import FactorizedReduce\n"
              "for op in (FactorizedReduce(8, 8), kernels.accelerate(FactorizedReduce(8, 8))):\n"
              "  op = op.to(memory_format=torch.channels_last)\n"
              "  for _ in range(5):\n"
              "    x = torch.randn(2, 8, 64, 64).contiguous(memory_format=torch.channels_last).requires_grad_()\n"
              "    op(x).sum().backward()\n"
              "print('fine')\n")
    from tests.helpers import ROOT
    result = subprocess.run([sys.executable, '-c', script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and 'fine' in result.stdout, result.stderr[-2000:]


@pytest.mark.skipif(not (shutil.which('g++') or shutil.which('c++')),
                    reason='torch.compile on the CPU needs a C++ compiler (make test installs g++ where it can)')
def test_compiled_training_step_matches_eager():
    """--compile (torch.compile via devices.place_model) on a tiny evaluation network: same loss
    and gradients as eager, in float64 (inductor reorders reductions)."""
    import torch._dynamo.utils

    import devices
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()

    class Flags:
        channels_last, compile, kernels = True, True, 'auto'
    results = []
    for compiled in (True, False):
        torch.manual_seed(0)
        model = NetworkCIFAR(4, 10, 2, False, genotypes.DARTS_V2, image_size=8).double()
        Flags.compile = compiled
        devices.place_model(model, Flags, torch.device('cpu'))
        x, y = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.randint(0, 10, (2,))
        logits, _ = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        results.append([loss.detach()] + [p.grad for p in model.parameters()])
        if compiled:
            assert torch._dynamo.utils.counters['stats']['unique_graphs'] > 0
    assert max_difference(*results) < TOLERANCE


# --------------------------------------------------------------------------- data on the device

def float32_rounding(x):
    """A bound for two float32 evaluations of the same few elementwise operations on x: 8 units in
    the last place of its largest value."""
    return 8 * torch.finfo(torch.float32).eps * float(x.abs().max())


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
    assert float((out - expected).abs().max()) <= float32_rounding(expected)


def test_device_loader_replays_epochs_and_without_augmentation_equals_the_data_loader(tmp_path):
    import datasets
    import training
    from tests import data_factory
    root = data_factory.make_cifar10(str(tmp_path / 'cifar'), n_train=40, n_test=20)
    plain = datasets.build_dataset('cifar10', root, train=False, augment=False)
    subset = torch.utils.data.Subset(plain, list(range(3, 19)))
    device = torch.device('cpu')
    loader = training.make_loader(subset, 5, False, 0, device)
    on_device = training.make_loader(subset, 5, False, 0, device, on_device=dict(name='cifar10', augment=False))
    assert len(on_device) == len(loader) == 4
    for (x, y), (xd, yd) in zip(loader, on_device):
        assert torch.equal(y, yd) and float((x - xd).abs().max()) <= float32_rounding(x)

    train = datasets.build_dataset('cifar10', root, train=True, augment=True, cutout_length=8)
    augmenting = training.make_loader(train, 8, True, 0, device, drop_last=True, on_device=dict(name='cifar10', augment=True, cutout_length=8))

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


