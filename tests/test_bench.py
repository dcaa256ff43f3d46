"""bench.py end to end on a tiny configuration: every measurement runs and is recorded."""
import json

import torch

from architect import fp32_precision_settings
from tests.helpers import run


def test_bench_writes_every_measurement(tmp_path):
    out = tmp_path / 'bench.json'
    run('bench.py', '--init_channels', '4', '--layers', '3', '--nodes', '2', '--batch_size', '2', '--train_channels', '4',
        '--train_layers', '3', '--train_batch_size', '2', '--repeats', '2', '--warmup', '0', '--threads', '1',
        '--out', out)
    record = json.loads(out.read_text())
    assert record['threads'] == 1 and record['torch'] == torch.__version__ and 'cudnn' in record
    assert record['fp32_precision'] == fp32_precision_settings() and 'gpu' not in record
    results = {r['measurement']: r for r in record['results']}
    assert set(results) == {'search_first', 'search_second', 'search_forward_backward', 'train_step'}
    for r in results.values():
        assert len(r['times_s']) == 2 and r['median_s'] > 0 and r['peak_memory_GB'] > 0
        assert r['flops_per_step'] > 0 and 0 < r['fraction_of_matmul_rate']
    # A second-order step does the work of several first-order ones.
    assert results['search_second']['flops_per_step'] > 2 * results['search_first']['flops_per_step']
