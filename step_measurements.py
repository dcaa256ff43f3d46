"""Speed and memory of the search and training steps, measured the same way every time (bench.py).

Each measurement runs in its own process (so its peak memory is its own): warm-up steps, then the
median of `--repeats` timed steps.  Reported per measurement: median and all step times (wall, and
the process's CPU time over all its threads, which other load on a shared machine disturbs less), peak memory
(CPU max RSS, or CUDA max allocated), the step's own memory (the peak of tensor bytes live during one
more step above those live before it: what the batch's activations and gradients add to the model,
the same quantity on every device), FLOPs of the timed work (torch.utils.flop_counter: a
multiply-add counts 2) and the achieved fraction of this machine's fp32 matmul rate, measured in the
same run on a 2048x2048 matmul.  The record names the machine: torch, CUDA and cuDNN versions, the GPU,
the threads, cudnn.benchmark and every fp32 precision (TF32) setting the measurements ran under.
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

import cli
import genotypes
import kernels
import search
from architect import Architect, fp32_precision_settings
from devices import place_model
from model import NetworkCIFAR
from model_search import LOCATIONS, SearchNetwork
from utils import UserError, atomic_write_json

BENCH_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'bench.py')

MEASUREMENTS = ('search_first', 'search_second', 'search_forward_backward', 'train_step')


def synchronize(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def matmul_rate(device, size=2048, repeats=5):
    """fp32 GFLOP/s of a square matmul: the yardstick for the achieved fraction."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    for _ in range(2):
        a @ b
    synchronize(device)
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        a @ b
        synchronize(device)
        times.append(time.perf_counter() - began)
    return 2 * size ** 3 / statistics.median(times) / 1e9


def make_step(name, args, device):
    """(step function, flops of one step) for a measurement."""
    g = torch.Generator().manual_seed(0)
    criterion = nn.CrossEntropyLoss()
    if name == 'train_step':
        model = place_model(NetworkCIFAR(args.train_channels, 10, args.train_layers, True, genotypes.load(args.arch)),
                            args, device)
        model.drop_path_prob = 0.2
        batch = args.train_batch_size
        optimizer = torch.optim.SGD(model.parameters(), 0.025, momentum=0.9, weight_decay=3e-4)
        x = torch.randn(batch, 3, 32, 32, generator=g).to(device)
        y = torch.randint(0, 10, (batch,), generator=g).to(device)

        def step():
            optimizer.zero_grad(set_to_none=True)
            logits, aux = model(x)
            (criterion(logits, y) + 0.4 * criterion(aux, y)).backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5)
            optimizer.step()
        return step, batch

    model = place_model(SearchNetwork(args.init_channels, 10, args.layers, location=args.location, steps=args.nodes,
                                      partial_channels=args.partial_channels,
                                      edge_normalization=args.edge_normalization,
                                      recompute_cells=args.recompute_cells), args, device)
    batch = args.batch_size
    x, x_valid = (torch.randn(batch, 3, 32, 32, generator=g).to(device) for _ in range(2))
    y, y_valid = (torch.randint(0, 10, (batch,), generator=g).to(device) for _ in range(2))
    optimizer = torch.optim.SGD(model.weight_parameters(), 0.025, momentum=0.9, weight_decay=3e-4)
    architect = Architect(model, criterion, unrolled=name == 'search_second', hessian=args.hessian)

    def weight_step():
        optimizer.zero_grad(set_to_none=True)
        criterion(model(x), y).backward()
        nn.utils.clip_grad_norm_(model.weight_parameters(), 5)
        optimizer.step()

    if name == 'search_forward_backward':
        def step():
            model.zero_grad(set_to_none=True)
            criterion(model(x), y).backward()
        return step, batch

    def step():
        architect.step(x, y, x_valid, y_valid, 0.025, optimizer)
        weight_step()
    return step, batch


def configure(args, device):
    """The process-wide settings a measurement runs under."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = args.cudnn_benchmark


def environment(device):
    """What the figures depend on besides the code: versions, the device, threads, precision."""
    record = {'torch': torch.__version__, 'cuda': torch.version.cuda,
              'cudnn': torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
              'threads': torch.get_num_threads(), 'cudnn_benchmark': torch.backends.cudnn.benchmark,
              'fp32_precision': fp32_precision_settings(),
              'machine': platform.machine(), 'processor': platform.processor(), 'cpus': os.cpu_count()}
    if device.type == 'cuda':
        record['gpu'] = torch.cuda.get_device_name(device)
        record['gpu_capability'] = '.'.join(map(str, torch.cuda.get_device_capability(device)))
    return record


def step_memory(step, device):
    """Peak bytes of tensors live during `step()` above those live before it.  CUDA: the caching
    allocator's statistics; CPU: the allocations and frees the profiler records (which are not in
    the max RSS's library pages, allocator caches and fragmentation)."""
    synchronize(device)
    if device.type == 'cuda':
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profiler:
        step()
    events = sorted((e for e in profiler.profiler.kineto_results.events()
                     if e.name() == '[memory]' and e.device_type() == torch._C._autograd.DeviceType.CPU),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def measure(name, args):
    device = torch.device(args.device)
    configure(args, device)
    torch.manual_seed(0)
    step, batch = make_step(name, args, device)
    for _ in range(args.warmup):
        step()
    synchronize(device)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    times, cpu_times = [], []
    for _ in range(args.repeats):
        began, began_cpu = time.perf_counter(), time.process_time()
        step()
        synchronize(device)
        times.append(time.perf_counter() - began)
        cpu_times.append(time.process_time() - began_cpu)
    median = statistics.median(times)
    # Read the peak before the FLOP-counting step, which keeps extra tensors alive.
    peak = (torch.cuda.max_memory_allocated(device) if device.type == 'cuda'
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    own_memory = step_memory(step, device)
    # The FLOPs of the plain implementation without recomputed cells: FlopCounterMode's module hooks
    # cannot follow a recomputing backward, and recomputation is not useful work anyway.
    plain_step, _ = make_step(name, argparse.Namespace(**{**vars(args), 'kernels': 'plain', 'recompute_cells': False}),
                              device)
    with FlopCounterMode(display=False) as counter:
        plain_step()
    flops = counter.get_total_flops()
    rate = matmul_rate(device)
    return {'measurement': name, 'kernels': kernels.resolve(args.kernels, device), 'batch_size': batch,
            'median_s': median, 'times_s': times, 'median_cpu_s': statistics.median(cpu_times), 'cpu_times_s': cpu_times,
            'images_per_s': batch / median, 'peak_memory_GB': peak / 1e9,
            'peak_memory_kind': 'cuda_max_allocated' if device.type == 'cuda' else 'cpu_max_rss',
            'step_memory_GB': own_memory / 1e9,
            'flops_per_step': flops, 'achieved_GFLOPs': flops / median / 1e9,
            'matmul_GFLOPs': rate, 'fraction_of_matmul_rate': flops / median / 1e9 / rate}


def build_parser():
    parser = cli.default_parser(__doc__.splitlines()[0].replace(' (bench.py)', ''))
    parser.add_argument('--only', nargs='+', choices=MEASUREMENTS, default=list(MEASUREMENTS))
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=len(os.sched_getaffinity(0)),
                        help="CPU threads: this process's cores unless given; 0: torch's default")
    parser.add_argument('--cudnn_benchmark', action=argparse.BooleanOptionalAction, default=True,
                        help='CUDA: let cuDNN time its algorithms for each convolution shape '
                             '(torch.backends.cudnn.benchmark)')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--batch_size', type=int, default=32, help='search batch')
    parser.add_argument('--init_channels', type=int, default=16)
    parser.add_argument('--layers', type=int, default=8)
    parser.add_argument('--nodes', type=int, default=4)
    parser.add_argument('--location', default='after_every', choices=list(LOCATIONS))
    search.add_hessian_argument(parser)
    search.add_supernet_arguments(parser)
    parser.add_argument('--channels_last', action=argparse.BooleanOptionalAction, default=True,
                        help='as the training scripts: channels-last weights and feature maps')
    parser.add_argument('--kernels', choices=kernels.CHOICES, default='auto', help='as the training scripts')
    parser.add_argument('--compile', action='store_true', help='as the training scripts: torch.compile the network')
    parser.add_argument('--arch', default='Att_DARTS', help='genotype of the train_step measurement')
    parser.add_argument('--train_channels', type=int, default=36)
    parser.add_argument('--train_layers', type=int, default=20)
    parser.add_argument('--train_batch_size', type=int, default=96)
    parser.add_argument('--out', default='bench.json')
    parser.add_argument('--child', default=None, help=argparse.SUPPRESS)
    return parser


def check_arguments(args):
    """Refuse, before minutes of measuring, what would fail in a step or when writing `--out`."""
    if args.repeats < 1 or args.warmup < 0:
        raise UserError(f"--repeats must be at least 1 and --warmup at least 0, got {args.repeats} and {args.warmup}")
    if args.batch_size < 2 or args.train_batch_size < 2:
        raise UserError(f"--batch_size and --train_batch_size must be at least 2 (batch statistics), "
                        f"got {args.batch_size} and {args.train_batch_size}")
    search.check_partial_channels(args)
    folder = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(folder):
        raise UserError(f"--out {args.out}: the folder {folder} does not exist; create it or pick another path")


def run(args, argv):
    """Measure `args.only`, each in a process of its own (bench.py with `argv` and --child), and
    write the record to --out; returns the exit status."""
    if args.child:
        print(json.dumps(measure(args.child, args)))
        return 0
    check_arguments(args)
    passthrough = list(argv if argv is not None else sys.argv[1:])
    results = []
    for name in args.only:
        out = subprocess.run([sys.executable, BENCH_SCRIPT, *passthrough, '--child', name], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f'the {name} measurement failed (exit {out.returncode}):\n{out.stderr[-4000:]}')
        result = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(result)
        print(f"{name:24s} batch {result['batch_size']:3d}  median {result['median_s']:7.3f} s  "
              f"{result['images_per_s']:7.1f} img/s  peak {result['peak_memory_GB']:5.2f} GB  "
              f"step {result['step_memory_GB']:5.2f} GB  "
              f"{result['achieved_GFLOPs']:6.1f} GFLOP/s ({100 * result['fraction_of_matmul_rate']:.0f}% of matmul)")
    config = {k: v for k, v in vars(args).items() if k not in ('child', 'out', 'only')}
    device = torch.device(args.device)
    configure(args, device)
    record = {'config': config, **environment(device), 'time': time.strftime('%Y-%m-%dT%H:%M:%S'),
              'results': results}
    atomic_write_json(args.out, record)
    print(f'written {args.out}')
    return 0
