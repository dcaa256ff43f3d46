"""Mixed precision (bfloat16 autocast on the CPU) gives the float32 result within bfloat16's
precision, for a training step of an evaluation network and for a search step."""
import copy
import json
import math

import pytest
import torch

import devices
import genotypes
import training
from architect import Architect
from model import NetworkCIFAR
from model_search import SearchNetwork
from tests.helpers import run
from tests.test_scripts import TINY_SEARCH, TINY_TRAIN


class Flags:
    def __init__(self, amp, amp_dtype='auto'):
        self.amp, self.amp_dtype = amp, amp_dtype


def batch(n=8):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g)


def relative(a, b):
    return ((a - b).norm() / b.norm()).item()


def train_step(model, amp):
    x, y = batch()
    device = torch.device('cpu')
    optimizer = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9)
    with devices.autocast(Flags(amp), device):
        logits, aux = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y) + 0.4 * torch.nn.functional.cross_entropy(aux, y)
    assert (logits.dtype == torch.bfloat16) == amp
    guard = training.NonFiniteGuard(skip=False)
    assert training.optimize(loss, optimizer, model.parameters(), 5.0, guard, 'test',
                             devices.grad_scaler(Flags(amp), device))
    return loss.float(), [p.detach().clone() for p in model.parameters()]


def test_amp_training_step_matches_float32():
    torch.manual_seed(0)
    model = NetworkCIFAR(8, 10, 3, True, genotypes.Att_DARTS, image_size=16)
    loss_amp, weights_amp = train_step(copy.deepcopy(model), amp=True)
    loss_fp32, weights_fp32 = train_step(model, amp=False)
    assert abs(loss_amp - loss_fp32) < 0.02 * loss_fp32
    flat_amp = torch.cat([w.reshape(-1) for w in weights_amp])
    flat_fp32 = torch.cat([w.reshape(-1) for w in weights_fp32])
    assert relative(flat_amp, flat_fp32) < 1e-2


@pytest.mark.parametrize('amp_dtype', ['bfloat16', 'float16'])
def test_amp_search_weight_step_matches_float32(amp_dtype):
    """float16 goes through the GradScaler (on the CPU too): scaled backward, unscale, clip, step;
    its 11-bit mantissa is finer than bfloat16's 8, so the bfloat16 bounds hold for both."""
    torch.manual_seed(0)
    net = SearchNetwork(4, 10, 3, steps=2, image_size=16)
    x, y = batch()
    device = torch.device('cpu')
    results = {}
    for amp in (False, True):
        flags = Flags(amp, amp_dtype)
        model = copy.deepcopy(net)
        optimizer = torch.optim.SGD(model.weight_parameters(), 0.1, momentum=0.9)
        scaler = devices.grad_scaler(flags, device)
        assert scaler.is_enabled() == (amp and amp_dtype == 'float16')
        with devices.autocast(flags, device):
            logits = model(x)
            loss = torch.nn.functional.cross_entropy(logits, y)
        assert logits.dtype == (getattr(torch, amp_dtype) if amp else torch.float32)
        assert training.optimize(loss, optimizer, model.weight_parameters(), 5.0, training.NonFiniteGuard(False),
                                 'test', scaler)
        results[amp] = loss.float(), torch.cat([p.detach().reshape(-1) for p in model.weight_parameters()])
    assert abs(results[True][0] - results[False][0]) < 0.02 * results[False][0]
    assert relative(results[True][1], results[False][1]) < 1e-2


def test_hessian_term_is_computed_in_float32_under_autocast():
    """The finite-difference passes perturb weights by ~1e-4; in bfloat16 that perturbation would
    vanish, so with the rest in float32 the second-order gradient must not change under autocast
    beyond what the bfloat16 first term contributes."""
    torch.manual_seed(0)
    net = SearchNetwork(4, 10, 3, steps=2, image_size=16)
    x, y = batch()
    optimizer = torch.optim.SGD(net.weight_parameters(), 0.1, momentum=0.9)
    architect = Architect(net, torch.nn.CrossEntropyLoss(), unrolled=True)
    seen = []
    original = architect._virtual_gradients

    def spy(weights, buffers, xs, ys, inputs):
        seen.append(torch.is_autocast_enabled('cpu'))
        return original(weights, buffers, xs, ys, inputs)
    architect._virtual_gradients = spy
    with torch.autocast('cpu', dtype=torch.bfloat16):
        architect.unrolled_gradients(x, y, x, y, 0.1, optimizer)
    assert seen == [True, False, False]


@pytest.mark.parametrize('order', ['first', 'second'])
def test_float16_search_with_loss_scaling_runs_from_the_command_line(tmp_path, order):
    """The float16 search of a GPU (loss-scaled weight steps, float32 architecture steps), on the CPU."""
    from tests import data_factory
    fashion = data_factory.make_fashion_mnist(str(tmp_path / 'f'), n_train=64, n_test=32)
    save = tmp_path / 's'
    run('train_search.py', *TINY_SEARCH, '--data', fashion, '--epochs', '1', '--amp', '--amp_dtype', 'float16',
        *(['--unrolled'] if order == 'second' else []), '--save', save)
    scaler = torch.load(save / 'checkpoint.pt', weights_only=False)['state']['scaler']
    assert scaler['scale'] > 0  # a disabled scaler's state is empty
    metrics = json.loads((save / 'metrics.jsonl').read_text())
    assert math.isfinite(metrics['train_loss']) and 'skipped_batches' not in metrics


def test_amp_runs_from_the_command_line(tmp_path):
    from tests import data_factory
    fashion = data_factory.make_fashion_mnist(str(tmp_path / 'f'))
    cifar = data_factory.make_cifar10(str(tmp_path / 'c'))
    run('train_search.py', *TINY_SEARCH, '--data', fashion, '--epochs', '1', '--amp', '--save', tmp_path / 's')
    run('train_CIFAR10.py', *TINY_TRAIN, '--data', cifar, '--epochs', '1', '--arch', 'DARTS_V2', '--amp',
        '--auxiliary', '--save', tmp_path / 't')
    assert (tmp_path / 's' / 'genotype.json').exists() and (tmp_path / 't' / 'trained.pt').exists()
