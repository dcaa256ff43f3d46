"""The search on one GPU, checked and timed in one go (README: "GPU check").

    tools/gpu_check.sh                                    # CUDA; results in $OUT or ./gpu_check_out
    python tools/gpu_check.py --device cpu --out DIR      # small sizes, to try the script on a CPU

Writes DIR/gpu_check.json, rewritten after every section, so that a run cut short keeps what it
measured.  Sections (`--only` picks some):

  float64         the supernet on the device in float64 against the CPU in float64: logits, weight
                  and architecture gradients, both memory layouts, every kernel choice
  hessian_tf32    the second-order (central-difference) Hessian term in float32 against float64:
                  TF32 off; TF32 allowed globally with the architect's full-fp32 passes (the code);
                  TF32 allowed with those passes unprotected (what the code prevents)
  host_syncs      host synchronisations per forward and per search step, first and second order
                  (torch.cuda.set_sync_debug_mode), and the lines they come from
  amp_search      train_search.py --amp --amp_dtype float16 (loss-scaled weight steps), first and
                  second order, on a tiny CIFAR-10 written to disk
  data_on_device  train_search.py --data_on_device on that data set, with its host synchronisations
  bench           bench.py at batch 64 for both memory layouts and both kernel implementations, and
                  the first-order step with --recompute_cells, at that batch and with
                  --partial_channels 4 at 4x the batch (channels-last)

On the CPU the CUDA-only parts say so ('skipped') and the rest runs at small sizes, so the whole
script is exercised by the test suite before a GPU ever runs it.
"""
import argparse
import collections
import contextlib
import copy
import json
import math
import os
import sys
import tempfile
import time
import traceback
import warnings
from unittest import mock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, 'tests')]  # tests/ for data_factory, the tiny on-disk data sets

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import architect as architect_module  # noqa: E402
import cli  # noqa: E402
import data_factory  # noqa: E402
import kernels  # noqa: E402
import search  # noqa: E402
import step_measurements  # noqa: E402
import training  # noqa: E402
from architect import Architect  # noqa: E402
from model_search import SearchNetwork  # noqa: E402
from utils import atomic_write_json  # noqa: E402

# The implementations to compare (kernels.apply, bench.py --kernels).
KERNEL_CHOICES = ('fast', 'plain')
LAYOUTS = {'channels_last': torch.channels_last, 'nchw': torch.contiguous_format}
SECTIONS = ('float64', 'hessian_tf32', 'host_syncs', 'amp_search', 'data_on_device', 'bench')
# float64 carries ~1e-16 relative rounding; sums of up to ~1e5 terms and BatchNorm's division by a
# batch deviation leave a CPU / GPU difference many orders below this, so anything near it is a bug.
FLOAT64_BOUND = 1e-8
ETA = 0.025  # the search's weight learning rate, which scales the Hessian term


def memory_variants(batch):
    """{name: bench.py flags} of the first-order steps that trade compute for memory."""
    return {'recompute_cells': ['--recompute_cells'],
            'partial_channels_4_recompute_cells_4x_batch': ['--partial_channels', 4, '--recompute_cells',
                                                            '--batch_size', 4 * batch]}


# Per device: the supernet of each section (C, layers, nodes, image size, batch) and the runs' sizes.
SIZES = {
    'cuda': {'float64': dict(C=8, layers=5, nodes=4, image=32, batch=8),
             'hessian_tf32': dict(C=8, layers=5, nodes=4, image=32, batch=32),
             'host_syncs': dict(C=16, layers=8, nodes=4, image=32, batch=64),
             'search': dict(C=16, layers=8, nodes=4, batch=64, images=512, subset=256),
             'bench': dict(C=16, layers=8, nodes=4, batch=64, only=['search_first', 'search_second'],
                           layouts=['channels_last', 'no-channels_last'], flags=[],
                           variants=memory_variants(64))},
    'cpu': {'float64': dict(C=4, layers=3, nodes=2, image=16, batch=4),
            'hessian_tf32': dict(C=4, layers=3, nodes=2, image=16, batch=4),
            'host_syncs': dict(C=4, layers=3, nodes=2, image=16, batch=4),
            'search': dict(C=4, layers=3, nodes=2, batch=8, images=64, subset=32),
            'bench': dict(C=4, layers=3, nodes=2, batch=2, only=['search_first'], layouts=['channels_last'],
                          flags=['--threads', '0', '--warmup', '0', '--repeats', '1'], variants=memory_variants(2))},
}


def log(message):
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", flush=True)


def supernet(size, implementation, seed=0):
    torch.manual_seed(seed)
    net = SearchNetwork(size['C'], 10, size['layers'], steps=size['nodes'], image_size=size['image'])
    return kernels.apply(net, implementation, 'cpu')


def batch(size, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(size['batch'], 3, size['image'], size['image'], generator=g, dtype=dtype)
    return x, torch.randint(0, 10, (size['batch'],), generator=g)


def relative_error(a, b):
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm()) if b.norm() > 0 else float((a - b).norm())


def flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


# ----------------------------------------------------------------------------- sections

def check_float64(device, sizes, choices):
    size = sizes['float64']

    def forward_backward(net, x, y):
        net.zero_grad(set_to_none=True)
        logits = net(x)
        nn.functional.cross_entropy(logits, y).backward()
        return {'logits': logits, 'weight_grads': flat([p.grad for p in net.weight_parameters()]),
                'arch_grads': flat([p.grad for p in net.arch_parameters()])}

    results = {}
    for layout_name, layout in LAYOUTS.items():
        x, y = batch(size, torch.float64)
        x = x.to(memory_format=layout)
        net = supernet(size, 'plain').double()
        reference = forward_backward(net.to(memory_format=layout), x, y)
        for name in choices:
            on_device = supernet(size, name).double().to(device, memory_format=layout)
            result = forward_backward(on_device, x.to(device), y.to(device))
            results[f'{name}/{layout_name}'] = {k: relative_error(result[k], reference[k]) for k in reference}
    worst = max(error for errors in results.values() for error in errors.values())
    record = {'reference': 'CPU float64, plain kernels',
              'relative_errors': results, 'worst': worst, 'bound': FLOAT64_BOUND, 'ok': worst < FLOAT64_BOUND}
    if device.type != 'cuda':
        record['skipped'] = 'CUDA only: on the CPU this compares the CPU with itself (the code path is exercised)'
    return record


@contextlib.contextmanager
def tf32_allowed(allowed):
    """TF32 for cuBLAS matmuls and cuDNN convolutions, through torch's legacy switches (which set
    the per-operator fp32_precision settings consistently)."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def hessian_term(net, data, device, dtype, tf32=False, protected=True):
    """(implicit term -eta * H v of the second-order architecture gradient, the whole gradient),
    flattened, in float64 on the CPU."""
    model = copy.deepcopy(net).to(device=device, dtype=dtype)
    x, y, x_valid, y_valid = (t.to(device, dtype) if t.is_floating_point() else t.to(device) for t in data)
    optimizer = torch.optim.SGD(model.weight_parameters(), ETA, momentum=0.9, weight_decay=3e-4)
    architect = Architect(model, nn.CrossEntropyLoss(), unrolled=True)
    calls = []
    gradients = Architect._gradients

    def recorded(loss, inputs):
        calls.append(gradients(loss, inputs))
        return calls[-1]
    unprotected = mock.patch.object(architect_module, 'full_fp32', contextlib.nullcontext)
    with (mock.patch.object(Architect, '_gradients', staticmethod(recorded)), tf32_allowed(tf32),
          contextlib.nullcontext() if protected else unprotected):
        grads, _ = architect.unrolled_gradients(x, y, x_valid, y_valid, ETA, optimizer)
    first_term = calls[1][:len(grads)]  # grad_alpha L_val(w'), from the pass that also gives v
    return (flat([g - d for g, d in zip(grads, first_term)]).double().cpu(), flat(grads).double().cpu())


def check_hessian_tf32(device, sizes, choices):
    size = sizes['hessian_tf32']
    net = supernet(size, choices[0])
    with torch.no_grad():
        for alpha in net.arch_parameters():
            alpha.normal_(0, 0.5)  # architecture weights as a search grows them: a sizeable Hessian term
    data = (*batch(size, seed=1), *batch(size, seed=2))
    reference, whole = hessian_term(net, data, device, torch.float64)
    record = {'eta': ETA, 'hessian_term_share_of_gradient': float(reference.norm() / whole.norm()),
              'relative_error_vs_float64': {'fp32, TF32 off': relative_error(
                  hessian_term(net, data, device, torch.float32)[0], reference)}}
    if device.type != 'cuda':
        record['skipped'] = 'TF32 is CUDA only: the TF32 rows need a GPU'
        return record
    errors = record['relative_error_vs_float64']
    errors['fp32, TF32 allowed, full-fp32 differenced passes (the code)'] = relative_error(
        hessian_term(net, data, device, torch.float32, tf32=True)[0], reference)
    errors['fp32, TF32 allowed, differenced passes unprotected'] = relative_error(
        hessian_term(net, data, device, torch.float32, tf32=True, protected=False)[0], reference)
    record['gpu_capability'] = '.'.join(map(str, torch.cuda.get_device_capability(device)))
    return record


def counted_syncs(function):
    """Run `function` with torch's sync debug mode warning; (syncs, {file:line: count})."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        torch.cuda.set_sync_debug_mode('warn')
        try:
            function()
        finally:
            torch.cuda.set_sync_debug_mode('default')
    syncs = [w for w in caught if 'synchroniz' in str(w.message)]
    where = collections.Counter(f'{os.path.relpath(w.filename, ROOT)}:{w.lineno}' for w in syncs)
    return len(syncs), dict(where.most_common(12))


def search_steps(model, size, device):
    """{name: function} for one forward and one search step of each order, as train_search.py's
    step: the architecture step, then the weight step, each behind the non-finite guard."""
    data = [t.to(device) for t in (*batch(size, seed=1), *batch(size, seed=2))]
    x, y, x_valid, y_valid = data
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.weight_parameters(), ETA, momentum=0.9, weight_decay=3e-4)
    guard = training.NonFiniteGuard(skip=False)

    def step(unrolled):
        def run():
            architect = Architect(model, criterion, unrolled=unrolled)
            architect.step(x, y, x_valid, y_valid, ETA, optimizer, check=lambda loss: guard.ok(loss, 'gpu_check'))
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(x), y)
            training.optimize(loss, optimizer, model.weight_parameters(), 5.0, guard, 'gpu_check')
        return run
    return {'forward': lambda: model(x), 'search_step_first_order': step(False),
            'search_step_second_order': step(True)}


def check_host_syncs(device, sizes, choices):
    size = sizes['host_syncs']
    record = {'config': size, 'per_kernel_choice': {}}
    for name in choices:
        model = supernet(size, name).to(device, memory_format=torch.channels_last)
        counts = {}
        for what, function in search_steps(model, size, device).items():
            function()  # warm-up: cuDNN's algorithm search, lazy initialisation
            if device.type == 'cuda':
                syncs, where = counted_syncs(function)
                counts[what] = {'syncs': syncs, 'where': where}
        record['per_kernel_choice'][name] = counts
    if device.type != 'cuda':
        record['skipped'] = 'torch.cuda.set_sync_debug_mode needs CUDA (the steps ran, uncounted)'
    return record


def run_search(device, sizes, data, save, *flags):
    """train_search.py in this process on the tiny CIFAR-10: its exit code, last metrics, scaler state."""
    size = sizes['search']
    argv = ['--dataset', 'cifar10', '--data', data, '--subset', size['subset'], '--epochs', '1',
            '--batch_size', size['batch'], '--init_channels', size['C'], '--layers', size['layers'],
            '--num_meta_node', size['nodes'], '--workers', '0', '--no_progress', '--report_freq', '0',
            '--device', str(device), '--save', save, *flags]
    began = time.time()
    code = cli.cli(lambda args: search.run(search.parse(args)))([str(a) for a in argv])
    result = {'flags': list(flags), 'exit_code': code, 'run_seconds': round(time.time() - began, 1), 'ok': code == 0}
    if code == 0:
        metrics = [json.loads(line) for line in open(os.path.join(save, 'metrics.jsonl'))]
        result['metrics'] = {k: v for k, v in metrics[-1].items() if k != 'genotype'}
        scaler = torch.load(os.path.join(save, 'checkpoint.pt'), map_location='cpu', weights_only=False)['state']['scaler']
        result['loss_scale'] = scaler.get('scale')
        result['ok'] = math.isfinite(metrics[-1]['train_loss']) and 'skipped_batches' not in metrics[-1]
    return result


def check_amp_search(device, sizes, work):
    record = {'weight_steps': 'float16 autocast with loss scaling; architecture steps in float32'}
    for order, flags in (('first_order', []), ('second_order', ['--unrolled'])):
        record[order] = run_search(device, sizes, work['data'], os.path.join(work['runs'], f'amp-{order}'),
                                   '--amp', '--amp_dtype', 'float16', *flags)
    return record


def check_data_on_device(device, sizes, work):
    save = os.path.join(work['runs'], 'data-on-device')
    size = sizes['search']
    steps = size['subset'] // 2 // size['batch']
    if device.type != 'cuda':
        return {**run_search(device, sizes, work['data'], save, '--data_on_device'), 'steps': steps,
                'skipped': 'host synchronisations are counted on CUDA only'}
    result = {}

    def run():
        result.update(run_search(device, sizes, work['data'], save, '--data_on_device'))
    syncs, where = counted_syncs(run)
    return {**result, 'steps': steps, 'syncs_whole_run': syncs, 'where': where,
            'note': 'the whole run: set-up, the epoch\'s steps, validation and the checkpoint'}


def check_bench(device, sizes, choices, work):
    size = sizes['bench']
    record = {'kernels_dimension': list(choices), 'runs': {}}

    def measure(name, layout, implementation, only, variant_flags=()):
        out = os.path.join(work['bench'], name.replace('/', '-') + '.json')
        argv = ['--device', str(device), '--only', *only, '--batch_size', size['batch'],
                '--init_channels', size['C'], '--layers', size['layers'], '--nodes', size['nodes'],
                f'--{layout}', '--out', out, *size['flags'], '--kernels', implementation, *variant_flags]
        log(f'bench {name}')
        argv = [str(a) for a in argv]
        step_measurements.run(step_measurements.build_parser().parse_args(argv), argv)
        with open(out) as f:
            record['runs'][name] = json.load(f)

    for layout in size['layouts']:
        for implementation in choices:
            measure(f'{layout}/{implementation}', layout, implementation, size['only'])
    for variant, flags in size['variants'].items():
        for implementation in choices:
            measure(f'channels_last/{implementation}/{variant}', 'channels_last', implementation, ['search_first'],
                    flags)
    return record


# ----------------------------------------------------------------------------- driver

def all_ok(result):
    """False where any part of a section's record says ok: false."""
    if isinstance(result, dict):
        return result.get('ok', True) is not False and all(all_ok(v) for v in result.values())
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cuda', help="'cuda' (the check) or 'cpu' (small sizes, to try it)")
    parser.add_argument('--out', default='gpu_check_out', help='folder for gpu_check.json')
    parser.add_argument('--only', nargs='+', choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument('--kernels', nargs='+', default=list(KERNEL_CHOICES),
                        help='the kernel implementations to compare')
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        print('error: --device cuda but no GPU is visible; use --device cpu to try the script', file=sys.stderr)
        return 2
    sizes = SIZES[device.type]
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, 'gpu_check.json')
    record = {'device': str(device), 'environment': step_measurements.environment(device),
              'started': time.strftime('%Y-%m-%dT%H:%M:%S'), 'sections': {}}
    with tempfile.TemporaryDirectory(prefix='gpu-check-') as tmp:
        work = {'data': data_factory.make_cifar10(os.path.join(tmp, 'cifar'), n_train=sizes['search']['images'],
                                                  n_test=32),
                'runs': os.path.join(tmp, 'runs'), 'bench': os.path.join(tmp, 'bench')}
        os.makedirs(work['bench'])
        checks = {'float64': lambda: check_float64(device, sizes, args.kernels),
                  'hessian_tf32': lambda: check_hessian_tf32(device, sizes, args.kernels),
                  'host_syncs': lambda: check_host_syncs(device, sizes, args.kernels),
                  'amp_search': lambda: check_amp_search(device, sizes, work),
                  'data_on_device': lambda: check_data_on_device(device, sizes, work),
                  'bench': lambda: check_bench(device, sizes, args.kernels, work)}
        for name in args.only:
            log(f'{name} ...')
            began = time.time()
            try:
                result = checks[name]()
                result = {'status': 'skipped' if 'skipped' in result else 'ok' if all_ok(result) else 'check failed',
                          **result}
            except Exception:
                result = {'status': 'failed', 'error': traceback.format_exc()}
            result['seconds'] = round(time.time() - began, 1)
            record['sections'][name] = result
            log(f"{name}: {result['status']} ({result['seconds']} s)")
            atomic_write_json(path, record)
    failed = [name for name, result in record['sections'].items() if result['status'] in ('failed', 'check failed')]
    log(f'written {path}' + (f'; failed: {", ".join(failed)}' if failed else ''))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
