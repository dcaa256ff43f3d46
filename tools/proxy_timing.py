"""Time the zero-cost proxies (proxies.py) per architecture in each space, as rank.py scores them.

    OMP_NUM_THREADS=1 python tools/proxy_timing.py --samples 3 --out benchmarks/cpu-proxies.json

For each space (DARTS / Att-DARTS cells, CNAS cells, NAS-Bench-201 cells, ANAS units), --samples
architectures are drawn as rank.py's random:N draws them and each proxy is timed on each: building
the untrained network at rank.py's defaults for CIFAR-10 (ranking.network_factory) and scoring it
on a batch of --batch_size 3x32x32 images (random values: the time does not depend on them).  The
JSON holds every time (wall clock, and the CPU time of this single-threaded process, which other
processes on the machine inflate less), the mean per architecture and that mean times 100.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import architectures  # noqa: E402
import datasets  # noqa: E402
import proxies  # noqa: E402
import ranking  # noqa: E402
import userio  # noqa: E402

# space -> the random:N flags that draw it (rank.py --space ...)
SPACES = {
    'darts_att': dict(space='darts', location='after_every', primitives='darts'),
    'darts': dict(space='darts', location='no_attention', primitives='darts'),
    'cnas': dict(space='darts', location='no_attention', primitives='cnas'),
    'nb201': dict(space='nb201'),
    'anas': dict(space='anas'),
}


def summary(flags, times, cpu_times, load_before):
    measured = {name: t for name, t in times.items() if t}
    return {'random_flags': flags, 'seconds': measured, 'cpu_seconds': {n: cpu_times[n] for n in measured},
            'load_average_1_5_15_min': {'before': load_before, 'after': os.getloadavg()},
            'mean_s_per_architecture': {n: statistics.fmean(t) for n, t in measured.items()},
            'estimated_s_per_100': {n: 100 * statistics.fmean(t) for n, t in measured.items()},
            'mean_cpu_s_per_architecture': {n: statistics.fmean(cpu_times[n]) for n in measured},
            'estimated_cpu_s_per_100': {n: 100 * statistics.fmean(cpu_times[n]) for n in measured}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--samples', type=int, default=3, help='architectures timed per space')
    parser.add_argument('--batch_size', type=int, default=ranking.DEFAULT_BATCH)
    parser.add_argument('--spaces', nargs='+', default=list(SPACES), choices=list(SPACES),
                        help='spaces, measured in this order')
    parser.add_argument('--proxy', nargs='+', default=list(proxies.PROXIES), choices=list(proxies.PROXIES))
    parser.add_argument('--out', required=True)
    args = parser.parse_args()
    info = datasets.dataset_info('cifar10', need_data=False)
    build = ranking.network_factory('cifar10', info)
    generator = torch.Generator().manual_seed(0)
    batch = (torch.randn(args.batch_size, info.in_channels, info.image_size, info.image_size, generator=generator),
             torch.randint(0, info.num_classes, (args.batch_size,), generator=generator))
    commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    result = {'date': time.strftime('%Y-%m-%d'), 'commit': commit,
              'machine': platform.processor() or platform.machine(), 'cpus': os.cpu_count(),
              'threads': torch.get_num_threads(), 'torch': torch.__version__,
              'command': ' '.join([os.path.basename(sys.executable), *sys.argv]), 'batch_size': args.batch_size,
              'note': 'the CPU was shared with other processes (see the load averages): the times are upper bounds',
              'spaces': {}}
    for space in args.spaces:
        flags = argparse.Namespace(random_seed=0, num_meta_node=4, **SPACES[space])
        drawn = architectures.sample(args.samples, flags)
        times = {name: [] for name in args.proxy}
        cpu_times = {name: [] for name in args.proxy}
        load_before = os.getloadavg()
        for genotype in drawn:
            for name in args.proxy:
                began, began_cpu = time.perf_counter(), time.process_time()
                ranking.score_architecture(build, genotype, [name], batch, 0, torch.device('cpu'))
                times[name].append(time.perf_counter() - began)
                cpu_times[name].append(time.process_time() - began_cpu)
                print(space, name, f'{times[name][-1]:.2f} s, CPU {cpu_times[name][-1]:.2f} s', flush=True)
                # written after every measurement: a stopped run keeps what it measured
                result['spaces'][space] = summary(SPACES[space], times, cpu_times, load_before)
                userio.atomic_write_json(args.out, result)
    print(json.dumps({space: r['estimated_cpu_s_per_100'] for space, r in result['spaces'].items()}, indent=1))


if __name__ == '__main__':
    main()
