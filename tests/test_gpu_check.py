"""tools/gpu_check.py end to end on the CPU (small sizes), so that the first GPU runs a script that
has run: every section writes its record, and the CUDA-only parts say why they were skipped."""
import json
import math

from tests.helpers import run


def test_gpu_check_runs_on_the_cpu_and_names_what_needs_cuda(tmp_path):
    run('tools/gpu_check.py', '--device', 'cpu', '--out', tmp_path)
    record = json.loads((tmp_path / 'gpu_check.json').read_text())
    sections = record['sections']
    assert list(sections) == ['float64', 'hessian_tf32', 'host_syncs', 'amp_search', 'data_on_device', 'bench']
    assert {name: s['status'] for name, s in sections.items()} == {
        'float64': 'skipped', 'hessian_tf32': 'skipped', 'host_syncs': 'skipped', 'amp_search': 'ok',
        'data_on_device': 'skipped', 'bench': 'ok'}
    assert all('CUDA' in s['skipped'] for s in sections.values() if s['status'] == 'skipped')
    # The skipped sections still ran what the CPU can run.
    assert sections['float64']['worst'] < sections['float64']['bound']
    assert math.isfinite(sections['hessian_tf32']['relative_error_vs_float64']['fp32, TF32 off'])
    assert sections['data_on_device']['exit_code'] == 0
    for order in ('first_order', 'second_order'):
        assert sections['amp_search'][order]['ok'] and sections['amp_search'][order]['loss_scale'] > 0
    runs = sections['bench']['runs']
    variants = ['', '/recompute_cells', '/partial_channels_4_recompute_cells_4x_batch']
    assert set(runs) == {f'channels_last/{implementation}{variant}' for implementation in ('fast', 'plain')
                         for variant in variants}
    for implementation in ('fast', 'plain'):
        bench = runs[f'channels_last/{implementation}']
        assert [(r['measurement'], r['kernels']) for r in bench['results']] == [('search_first', implementation)]
        assert record['environment']['torch'] == bench['torch']
        cheap = runs[f'channels_last/{implementation}/partial_channels_4_recompute_cells_4x_batch']
        assert cheap['config']['recompute_cells'] and cheap['config']['partial_channels'] == 4
        assert cheap['results'][0]['batch_size'] == 4 * bench['results'][0]['batch_size']
