"""bench.py end to end on a tiny configuration: the record has the documented fields, its derived
figures follow from the measured ones, the FLOPs are those of one step counted here independently,
the peak memory lies between the stepped weights' size and the machine's memory, and the step
memory is the peak of the tensor bytes live."""
import json
import os
import statistics
import types

import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

import bench
import genotypes
import step_measurements
from architect import fp32_precision_settings
from devices import place_model
from model import NetworkCIFAR
from model_search import SearchNetwork
from tests.helpers import run

RECORD_FIELDS = {'config', 'torch', 'cuda', 'cudnn', 'threads', 'cudnn_benchmark', 'fp32_precision', 'machine',
                 'processor', 'cpus', 'time', 'results'}
RESULT_FIELDS = {'measurement', 'kernels', 'batch_size', 'median_s', 'times_s', 'median_cpu_s', 'cpu_times_s',
                 'images_per_s', 'peak_memory_GB', 'step_memory_GB',
                 'peak_memory_kind', 'flops_per_step', 'achieved_GFLOPs', 'matmul_GFLOPs', 'fraction_of_matmul_rate'}
CHANNELS, LAYERS, NODES, BATCH = 4, 3, 2, 2


def flops_of_forward_backward(model, batch, loss):
    """FLOPs (a multiply-add counts 2) of one forward and backward of `model` on a random batch, as
    bench counts them: the plain autograd graph, the layout of the training scripts."""
    place_model(model, types.SimpleNamespace(channels_last=True, compile=False, kernels='plain'), torch.device('cpu'))
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    with FlopCounterMode(display=False) as counter:
        loss(model(x), y).backward()
    return counter.get_total_flops()


def test_bench_record_against_independent_figures(tmp_path):
    out = tmp_path / 'bench.json'
    run('bench.py', '--init_channels', CHANNELS, '--layers', LAYERS, '--nodes', NODES, '--batch_size', BATCH,
        '--train_channels', CHANNELS, '--train_layers', LAYERS, '--train_batch_size', BATCH, '--repeats', '2',
        '--warmup', '0', '--threads', '1', '--out', out)
    record = json.loads(out.read_text())
    assert set(record) == RECORD_FIELDS and record['torch'] == torch.__version__
    assert record['config']['init_channels'] == CHANNELS and record['config']['repeats'] == 2
    assert record['threads'] == 1 and record['torch'] == torch.__version__ and 'cudnn' in record
    assert record['fp32_precision'] == fp32_precision_settings() and 'gpu' not in record
    results = {r['measurement']: r for r in record['results']}
    assert set(results) == {'search_first', 'search_second', 'search_forward_backward', 'train_step'}

    # A process holds at least the weights it steps (a bare torch import's peak is no bound: which
    # library pages a process touches varies run to run).
    at_least = 4 * sum(p.numel() for p in NetworkCIFAR(CHANNELS, 10, LAYERS, True, genotypes.load('Att_DARTS'))
                       .parameters())
    physical = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    for r in results.values():
        assert set(r) == RESULT_FIELDS and r['batch_size'] == BATCH and len(r['times_s']) == 2
        assert r['median_s'] == statistics.median(r['times_s']) and r['images_per_s'] == BATCH / r['median_s']
        assert r['median_cpu_s'] == statistics.median(r['cpu_times_s']) and len(r['cpu_times_s']) == 2
        assert r['kernels'] == 'fast'  # --kernels auto on the CPU
        assert r['achieved_GFLOPs'] == r['flops_per_step'] / r['median_s'] / 1e9
        assert r['fraction_of_matmul_rate'] == r['achieved_GFLOPs'] / r['matmul_GFLOPs']
        assert r['peak_memory_kind'] == 'cpu_max_rss' and at_least <= r['peak_memory_GB'] * 1e9 <= physical, (r, at_least)
        assert 0 < r['step_memory_GB'] < r['peak_memory_GB']

    criterion = nn.CrossEntropyLoss()
    search = SearchNetwork(CHANNELS, 10, LAYERS, location='after_every', steps=NODES)
    assert results['search_forward_backward']['flops_per_step'] == flops_of_forward_backward(search, BATCH, criterion)
    train = NetworkCIFAR(CHANNELS, 10, LAYERS, True, genotypes.load('Att_DARTS'))
    with_auxiliary = lambda out, y: criterion(out[0], y) + 0.4 * criterion(out[1], y)  # noqa: E731
    assert results['train_step']['flops_per_step'] == flops_of_forward_backward(train, BATCH, with_auxiliary)
    # A first-order step adds a forward and a backward to the architecture weights to the weight step;
    # a second-order one also unrolls the weights and differences two more passes.
    flops = {name: r['flops_per_step'] for name, r in results.items()}
    assert flops['search_forward_backward'] < flops['search_first'] < flops['search_second'] / 2


def test_step_memory_is_the_peak_of_the_tensor_bytes_live_during_the_step():
    def step():
        first = torch.empty(250_000)  # 1 MB (float32)
        second = torch.empty(500_000)  # 2 MB: 3 MB live, the peak
        del first
        third = torch.empty(100_000)  # 2.4 MB live
        return second, third
    assert step_measurements.step_memory(step, torch.device('cpu')) == 3_000_000


@pytest.mark.parametrize('flags, message', [
    (['--partial_channels', '3'], '--partial_channels 3 must divide --init_channels 4'),
    (['--partial_channels', '0'], '--partial_channels must be at least 1'),
    (['--batch_size', '1'], '--batch_size and --train_batch_size must be at least 2'),
    (['--repeats', '0'], '--repeats must be at least 1'),
    (['--out', 'missing/bench.json'], 'does not exist; create it'),
])
def test_bad_input_is_one_line_before_any_measurement(tmp_path, capsys, monkeypatch, flags, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'bench.json').write_text('earlier')
    assert bench.main(['--only', 'search_first', '--init_channels', '4', *flags]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and message in err
    assert (tmp_path / 'bench.json').read_text() == 'earlier'
