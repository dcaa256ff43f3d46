"""Train several architectures under one protocol and report them side by side.

    python compare.py DARTS_V2 Att_DARTS runs/search-X random:8 --dataset fashion-mnist --data data \\
        --epochs 20 --init_channels 16 --layers 8 --seeds 2 --save runs/compare-fmnist
    python compare.py ... --save runs/compare-fmnist --resume    # after a kill: finished runs are kept
    python compare.py ... --param_budget 0.5                      # channels scaled to 0.5 M parameters each
    python compare.py ... --jobs 2 --devices cuda:0,cuda:1        # two runs at a time, one per GPU
    python compare.py ... -- --label_smooth 0.1                   # flags after -- go to every training run

Architectures: named genotypes (DARTS_V2, Att_DARTS, ...), genotype JSON files, search run directories
(their genotype.json), and `random:N`: N distinct cells drawn uniformly from the space of --location,
--primitives and --num_meta_node with --random_seed (search_space.sample_genotypes), the random
baseline of Li and Talwalkar, "Random Search and Reproducibility for NAS" (UAI 2019) and Yang et al.,
"NAS evaluation is frustratingly hard" (ICLR 2020).

Each architecture is trained --seeds times (seeds --seed, --seed + 1, ...) by train_CIFAR10.py
(train_ImageNet.py for --dataset imagenet), one process per run, all with the same flags: the data
set, --subset of the training split, epochs, batch, learning rate and schedule, cutout, auxiliary
head, drop path, channels and layers.  The defaults are those train scripts' (the DARTS evaluation
protocol); only --init_channels differs per architecture, and only under --param_budget, which
gives each architecture the channel count whose parameter count is nearest the budget.  Test
accuracy is the trainer's: the test split after the last epoch.

The run directory (--save) holds comparison.json (the protocol and the architectures), archs/ (each
architecture's genotype JSON), runs/LABEL/seedS/ (each training run; its console output beside it
as seedS.out), and, when all runs are done: results.json, results.md (mean +- sample std of the test
accuracy, parameters, FLOPs, latency per image, training time), accuracy_vs_params.png (one point
per run) and report.html.  Parameters exclude the auxiliary head; FLOPs are one image's forward;
latency is the median over --latency_repeats forward passes of a --latency_batch batch divided by
the batch, measured in this process one architecture at a time after all training, on the first of
--devices (or --device), with the trained run's kernels and layout.

--resume continues a comparison: finished runs are kept, started ones continue from their checkpoint
(train_*.py --resume), the rest start.  A run that fails is reported and the others go on; running
again with --resume retries it.  SIGTERM or SIGINT stops every run at a checkpoint.
"""
import argparse
import copy
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time

import torch

import cli
import complexity
import datasets
import evaluation
import genotypes
import nag_cells
import plots
import search_space
import training
import utils
from cli import logger
from devices import place_model, select_device
from report import read_jsonl, write_comparison_report
from runs import signature_differences
from utils import UserError

ROOT = os.path.dirname(os.path.abspath(__file__))
# The trainer owns these per run; a comparison sets them itself.
RUN_FLAGS = ('--save', '--resume', '--seed', '--arch', '--arch_path', '--device', '--init_channels', '--init_ch')


# Protocol flags whose defaults are the trainer's preset (CIFAR's, or ImageNet's for --dataset imagenet).
PRESET_FLAGS = ('epochs', 'batch_size', 'learning_rate', 'init_channels', 'layers', 'drop_path_prob', 'seed')


def build_parser():
    parser = cli.default_parser(__doc__.splitlines()[0])
    parser.add_argument('archs', nargs='+', metavar='ARCH',
                        help='a named genotype, a genotype .json, a search run directory, or random:N')
    g = parser.add_argument_group('protocol (the same for every run)')
    g.add_argument('--dataset', default='cifar10')
    g.add_argument('--data', default='data', help='dataset root directory')
    g.add_argument('--subset', type=int, default=None, help='train on the first N training images')
    g.add_argument('--epochs', type=int, default=None, help="default: the trainer's (600 on CIFAR)")
    g.add_argument('--batch_size', type=int, default=None, help="default: the trainer's (96 on CIFAR)")
    g.add_argument('--learning_rate', type=float, default=None, help="default: the trainer's (0.025 on CIFAR)")
    g.add_argument('--init_channels', type=int, default=None, help="default: the trainer's (36 on CIFAR)")
    g.add_argument('--layers', type=int, default=None, help="default: the trainer's (20 on CIFAR)")
    g.add_argument('--param_budget', type=float, default=None,
                   help='millions of parameters: each architecture gets the --init_channels nearest to it')
    g.add_argument('--cutout', action='store_true', help='cutout augmentation')
    g.add_argument('--auxiliary', action='store_true', help='auxiliary head')
    g.add_argument('--drop_path_prob', type=float, default=None, help="default: the trainer's (0.2 on CIFAR)")
    g.add_argument('--seeds', type=int, default=2, help='training runs per architecture')
    g.add_argument('--seed', type=int, default=None,
                   help="seed of the first run of each architecture (default: the trainer's, 2 on CIFAR)")
    g = parser.add_argument_group('random:N')
    g.add_argument('--location', default='after_every', choices=list(search_space.LOCATIONS))
    g.add_argument('--primitives', default='darts', help=f"op set: {', '.join(genotypes.PRIMITIVE_SETS)}")
    g.add_argument('--num_meta_node', type=int, default=4, help='intermediate nodes per cell')
    g.add_argument('--random_seed', type=int, default=0)
    g = parser.add_argument_group('execution')
    g.add_argument('--save', default=None, help='comparison directory (default: runs/compare-<time>)')
    g.add_argument('--resume', action='store_true', help='continue the comparison in --save')
    g.add_argument('--jobs', type=int, default=1, help='runs at a time')
    g.add_argument('--devices', default=None,
                   help="comma-separated devices, e.g. cuda:0,cuda:1: each run starts on the one with the fewest "
                        "runs in progress (default: each run's --device auto)")
    g.add_argument('--workers', type=int, default=2, help='data loader processes per run')
    g.add_argument('--latency_batch', type=int, default=1, help='batch size of the latency measurement')
    g.add_argument('--latency_repeats', type=int, default=20, help='timed forward passes per architecture')
    return parser


def safe_label(text):
    return re.sub(r'[^A-Za-z0-9_.+-]', '_', text).strip('.') or 'arch'


def resolve_architectures(specs, args):
    """[(label, source, genotype)] for the architecture arguments, labels unique."""
    randoms = [spec for spec in specs if spec.startswith('random:')]
    if len(randoms) > 1:
        raise UserError(f"give random:N once (got {', '.join(randoms)}); N sets how many")
    found = []
    for spec in specs:
        if spec.startswith('random:'):
            count = spec[len('random:'):]
            if not count.isdigit() or int(count) < 1:
                raise UserError(f"{spec}: N must be a positive integer, e.g. random:8")
            if not 1 <= args.num_meta_node <= 8:
                raise UserError(f"--num_meta_node must be between 1 and 8, got {args.num_meta_node}")
            drawn = search_space.sample_genotypes(int(count), args.random_seed, args.location, args.primitives,
                                                  args.num_meta_node)
            width = len(str(len(drawn) - 1))
            found += [(f'random_{i:0{width}d}', f'random:{count} #{i}', g) for i, g in enumerate(drawn)]
            continue
        if os.path.isdir(spec):
            path = os.path.join(spec, 'genotype.json')
            if not os.path.isfile(path):
                raise UserError(f"{spec} has no genotype.json; give a search run directory (a search writes it "
                                f"after its first epoch), a genotype .json or a named genotype")
            label = os.path.basename(os.path.normpath(spec))
        else:
            path, label = spec, spec
            if spec not in genotypes.NAMED:
                stem = os.path.splitext(os.path.basename(spec))[0]
                label = os.path.basename(os.path.dirname(os.path.abspath(spec))) if stem == 'genotype' else stem
        genotype = genotypes.load(path)
        if not isinstance(genotype, (genotypes.Genotype, nag_cells.DagArch)):
            raise UserError(f"{spec} is not a cell architecture (an ANAS unit or an SLNAS sequence); "
                            f"compare.py trains DARTS and NAG cells")
        found.append((safe_label(label), spec, genotype))
    labels, unique = set(), []
    for label, source, genotype in found:
        name, k = label, 2
        while name in labels:
            name, k = f'{label}-{k}', k + 1
        labels.add(name)
        unique.append((name, source, genotype))
    return unique


def check_extra_flags(extra):
    owned = [flag for flag in extra if flag.split('=')[0] in RUN_FLAGS]
    if owned:
        raise UserError(f"{', '.join(owned)} after -- is set by compare.py for each run; "
                        f"use its own flags (--seed, --seeds, --init_channels, --param_budget, --devices)")


def train_flags(args, extra):
    """The flags every run gets (the protocol), before its architecture, channels, seed and directory."""
    flags = ['--dataset', args.dataset, '--data', args.data, '--epochs', args.epochs, '--batch_size', args.batch_size,
             '--learning_rate', args.learning_rate, '--layers', args.layers, '--drop_path_prob', args.drop_path_prob,
             '--workers', args.workers, '--no_progress']
    if args.subset is not None:
        flags += ['--subset', args.subset]
    flags += ['--cutout'] * args.cutout + ['--auxiliary'] * args.auxiliary
    # The runs read the plug-ins' data sets and attentions too; --plugins goes last (it takes several).
    return [str(flag) for flag in flags + extra + (['--plugins', *args.plugins] if args.plugins else [])]


def trainer_of(dataset):
    preset = 'imagenet' if dataset == 'imagenet' else 'cifar10'
    return preset, f'train_{"ImageNet" if preset == "imagenet" else "CIFAR10"}.py'


def parse_run_flags(preset, flags):
    """The trainer's arguments for `flags`, or one line naming what it refused."""
    parser = evaluation.train_parser(preset)

    def refuse(message):
        raise UserError(f"a training flag was refused: {message}")
    parser.error = refuse
    return cli.parse(parser, flags)


def network_for(run_args, info, genotype, channels):
    run_args = copy.copy(run_args)
    run_args.init_channels = channels
    return evaluation.build_network(evaluation.network_config(run_args, info, genotype), genotype)


def parameters_at(run_args, info, genotype, channels):
    return utils.count_parameters_in_MB(network_for(run_args, info, genotype, channels))


def channels_for_budget(run_args, info, genotype, budget):
    """The --init_channels whose parameter count (in millions) is nearest `budget`; parameters grow
    with the channels, so a bisection finds the first count at or above it."""
    low, high = 1, 1
    while parameters_at(run_args, info, genotype, high) < budget:
        low, high = high, high * 2
        if high > 4096:
            raise UserError(f"--param_budget {budget} needs more than 4096 channels; lower it")
    while low < high:
        middle = (low + high) // 2
        if parameters_at(run_args, info, genotype, middle) < budget:
            low = middle + 1
        else:
            high = middle
    if high > 1 and budget - parameters_at(run_args, info, genotype, high - 1) < \
            parameters_at(run_args, info, genotype, high) - budget:
        return high - 1
    return high


def parse_devices(text):
    if text is None:
        return [None]
    devices = [d.strip() for d in text.split(',') if d.strip()]
    for name in devices:
        try:
            device = torch.device(name)
        except RuntimeError as exc:
            raise UserError(f"--devices: '{name}' is not a device; write e.g. cpu or cuda:0,cuda:1") from exc
        if device.type == 'cuda' and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
            raise UserError(f"--devices: {name} is not a visible GPU ({torch.cuda.device_count()} visible)")
    if not devices:
        raise UserError("--devices is empty; write e.g. cuda:0,cuda:1")
    return devices


def make_plan(args, extra):
    """Everything a comparison does, checked before anything is written: the protocol (what must
    match on --resume) and the runs."""
    preset, script = trainer_of(args.dataset)
    for name in PRESET_FLAGS:
        if getattr(args, name) is None:
            setattr(args, name, evaluation.PRESETS[preset][name])
    for name in ('epochs', 'batch_size', 'layers', 'init_channels', 'seeds', 'jobs', 'latency_batch',
                 'latency_repeats'):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.param_budget is not None and args.param_budget <= 0:
        raise UserError(f"--param_budget must be positive (millions of parameters), got {args.param_budget}")
    check_extra_flags(extra)
    devices = parse_devices(args.devices)
    architectures = resolve_architectures(args.archs, args)
    flags = train_flags(args, extra)
    run_args = parse_run_flags(preset, flags + ['--init_channels', str(args.init_channels)])
    info = datasets.dataset_info(args.dataset, args.data)
    datasets.build_dataset(args.dataset, args.data, train=False, augment=False)  # the data are there
    entries = []
    for label, source, genotype in architectures:
        evaluation.network_config(run_args, info, genotype)  # a NAG cell needs 3N+2 layers, ...
        channels = (channels_for_budget(run_args, info, genotype, args.param_budget)
                    if args.param_budget is not None else args.init_channels)
        entries.append({'label': label, 'source': source, 'init_channels': channels,
                        'random': source.startswith('random:'), 'genotype': genotypes.to_dict(genotype)})
    protocol = {'trainer': script, 'flags': flags, 'seeds': [args.seed + k for k in range(args.seeds)],
                'param_budget': args.param_budget, 'architectures': entries,
                'latency': {'batch': args.latency_batch, 'repeats': args.latency_repeats}}
    if any(e['random'] for e in entries):
        protocol['random_space'] = {'location': args.location, 'primitives': args.primitives,
                                    'num_meta_node': args.num_meta_node, 'seed': args.random_seed}
    return protocol, devices


class Comparison:
    """The comparison directory: its protocol, architectures and training runs."""

    def __init__(self, save, protocol, resume):
        self.dir = save or os.path.join('runs', f"compare-{time.strftime('%Y%m%d-%H%M%S')}")
        self.protocol = protocol
        record = self.path('comparison.json')
        if resume:
            if not save or not os.path.isfile(record):
                raise UserError(f"nothing to resume: {self.dir} has no comparison.json; start without --resume")
            with open(record) as f:
                stored = json.load(f)
            if stored != protocol:
                differs = signature_differences(json.dumps(stored), json.dumps(protocol))
                raise UserError(f"{self.dir} holds a comparison with another protocol or architectures "
                                f"(differs in: {differs}); resume with the command of that comparison")
            return
        if os.path.isdir(self.dir) and os.listdir(self.dir):
            raise UserError(f"comparison directory {self.dir} already exists; pass --resume to continue it "
                            f"or choose a new --save")
        try:
            os.makedirs(self.path('archs'), exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot write the comparison directory {self.dir} ({exc.strerror}); "
                            f"choose a writable --save") from exc
        for entry in protocol['architectures']:
            utils.atomic_write_json(self.arch_path(entry['label']), entry['genotype'])
        utils.atomic_write_json(record, protocol)

    def path(self, *names):
        return os.path.join(self.dir, *names)

    def arch_path(self, label):
        return self.path('archs', f'{label}.json')

    def run_dir(self, label, seed):
        return self.path('runs', label, f'seed{seed}')

    def runs(self):
        """(label, seed) of every run, seed by seed, so that an interrupted comparison has whole seeds."""
        return [(entry['label'], seed) for seed in self.protocol['seeds'] for entry in self.protocol['architectures']]

    def finished(self, label, seed):
        return os.path.isfile(os.path.join(self.run_dir(label, seed), 'trained.pt'))

    def command(self, label, seed, device):
        entry = next(e for e in self.protocol['architectures'] if e['label'] == label)
        run_dir = self.run_dir(label, seed)
        command = [sys.executable, os.path.join(ROOT, self.protocol['trainer']), *self.protocol['flags'],
                   '--arch_path', os.path.abspath(self.arch_path(label)), '--init_channels', str(entry['init_channels']),
                   '--seed', str(seed), '--save', os.path.abspath(run_dir)]
        if device is not None:
            command += ['--device', device]
        if os.path.isfile(os.path.join(run_dir, 'args.json')):
            command.append('--resume')
        elif os.path.isdir(run_dir):
            shutil.rmtree(run_dir)  # killed before the trainer wrote args.json: it never started
        return command


def _die_with_parent(parent):
    """In a child before exec (Linux): be killed when the comparison dies, so that a killed
    comparison leaves no run writing into the directory it resumes; other systems lack prctl."""
    def arrange():
        if sys.platform.startswith('linux'):
            import ctypes
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGKILL)
    return arrange


def execute(comparison, devices, jobs, stop):
    """Run every unfinished run, `jobs` at a time; returns the (label, seed) of the failed ones."""
    pending = [run for run in comparison.runs() if not comparison.finished(*run)]
    done = len(comparison.runs()) - len(pending)
    if done:
        logger.info('%d of %d runs already finished', done, len(comparison.runs()))
    environment = dict(os.environ)
    if devices == ['cpu'] or (devices == [None] and not torch.cuda.is_available()):
        # Runs side by side on the CPU share its cores instead of each taking all of them.
        environment.setdefault('OMP_NUM_THREADS', str(max(1, (os.cpu_count() or 1) // jobs)))
    running, failed, signalled = {}, [], False
    while running or (pending and not stop.signal):
        while pending and len(running) < jobs and not stop.signal:
            label, seed = pending.pop(0)
            load = {d: sum(1 for _, _, used in running.values() if used == d) for d in devices}
            device = min(devices, key=lambda d: load[d])
            command = comparison.command(label, seed, device)
            console = comparison.run_dir(label, seed) + '.out'
            os.makedirs(os.path.dirname(console), exist_ok=True)
            with open(console, 'a') as out:
                process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=environment,
                                           preexec_fn=_die_with_parent(os.getpid()))
            logger.info('%s %s seed %d%s', 'resume' if command[-1] == '--resume' else 'start', label, seed,
                        f' on {device}' if device else '')
            running[process] = (label, seed, device)
        if stop.signal and not signalled:
            for process in running:
                process.send_signal(signal.SIGTERM)  # each writes a checkpoint and exits
            signalled = True
        time.sleep(0.2)
        for process in [p for p in running if p.poll() is not None]:
            label, seed, _ = running.pop(process)
            if comparison.finished(label, seed):
                logger.info('finished %s seed %d', label, seed)
            elif process.returncode == 0 and stop.signal:
                logger.info('stopped %s seed %d at a checkpoint', label, seed)
            else:
                failed.append((label, seed))
                logger.info('FAILED %s seed %d (exit %d); see %s', label, seed, process.returncode,
                            comparison.run_dir(label, seed) + '.out')
    return failed


def measure(trained_path, run_args_path, device, batch, repeats):
    """Parameters (millions, no auxiliary head), FLOPs of one image and latency per image (ms)."""
    model, config, _, _ = evaluation.load_trained(trained_path)
    with open(run_args_path) as f:
        run_args = json.load(f)
    layout = argparse.Namespace(kernels=run_args.get('kernels', 'auto'), compile=False,
                                channels_last=run_args.get('channels_last', True))
    place_model(model, layout, device)
    shape = (config['in_channels'], config['image_size'], config['image_size'])
    params, flops, _ = complexity.describe(model, shape)
    model.eval()
    x = torch.randn(batch, *shape, device=device)
    if layout.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    times = []
    with torch.no_grad():
        for k in range(3 + repeats):
            if device.type == 'cuda':
                torch.cuda.synchronize(device)
            began = time.perf_counter()
            model(x)
            if device.type == 'cuda':
                torch.cuda.synchronize(device)
            if k >= 3:  # three warm-up passes
                times.append(time.perf_counter() - began)
    return {'params_M': params, 'flops_M': flops / 1e6, 'latency_ms': 1000 * statistics.median(times) / batch,
            'latency_batch': batch, 'latency_device': str(device), 'latency_threads': torch.get_num_threads()}


def mean_std(values):
    """Mean and sample standard deviation (None for a single value)."""
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def collect(comparison, device):
    """The results of the finished runs, measuring each architecture once (cached in measure.json)."""
    rows = []
    for entry in comparison.protocol['architectures']:
        label, runs = entry['label'], []
        for seed in comparison.protocol['seeds']:
            if not comparison.finished(label, seed):
                continue
            run_dir = comparison.run_dir(label, seed)
            trained = utils.load_checkpoint_file(os.path.join(run_dir, 'trained.pt'), 'model file')
            epochs = read_jsonl(os.path.join(run_dir, 'metrics.jsonl'))
            runs.append({'seed': seed, 'top1': trained['metrics']['top1'], 'top5': trained['metrics']['top5'],
                         'train_time_s': sum(m.get('epoch_time', 0.0) for m in epochs),
                         'run_dir': os.path.relpath(run_dir, comparison.dir)})
        row = {key: entry[key] for key in ('label', 'source', 'random', 'init_channels', 'genotype')}
        row['runs'] = runs
        if runs:
            cache = comparison.path('runs', label, 'measure.json')
            if os.path.isfile(cache):
                with open(cache) as f:
                    row.update(json.load(f))
            else:
                first = comparison.run_dir(label, runs[0]['seed'])
                measured = measure(os.path.join(first, 'trained.pt'), os.path.join(first, 'args.json'), device,
                                   comparison.protocol['latency']['batch'], comparison.protocol['latency']['repeats'])
                utils.atomic_write_json(cache, measured)
                row.update(measured)
            row['top1_mean'], row['top1_std'] = mean_std([r['top1'] for r in runs])
            row['train_time_s_mean'] = statistics.fmean(r['train_time_s'] for r in runs)
        rows.append(row)
    return rows


def _cell(value, digits):
    return '–' if value is None else f'{value:.{digits}f}'


def markdown_table(rows, seeds):
    lines = ['| architecture | source | C | params (M) | FLOPs (M) | latency (ms/image) | test acc. (%) | runs | '
             'train time (min) |', '|---|---|---|---|---|---|---|---|---|']
    for row in rows:
        if not row['runs']:
            lines.append(f"| {row['label']} | {row['source']} | {row['init_channels']} | – | – | – | not trained | "
                         f"0/{len(seeds)} | – |")
            continue
        accuracy = f"{row['top1_mean']:.2f}" + (f" ± {row['top1_std']:.2f}" if row['top1_std'] is not None else '')
        lines.append(f"| {row['label']} | {row['source']} | {row['init_channels']} | {row['params_M']:.4f} | "
                     f"{row['flops_M']:.2f} | {row['latency_ms']:.3f} | {accuracy} | {len(row['runs'])}/{len(seeds)} | "
                     f"{_cell(row['train_time_s_mean'] / 60, 1)} |")
    return '\n'.join(lines) + '\n'


def write_results(comparison, rows):
    protocol = comparison.protocol
    results = {'protocol': {k: v for k, v in protocol.items() if k != 'architectures'}, 'architectures': rows}
    utils.atomic_write_json(comparison.path('results.json'), results)
    command = ' '.join(sys.argv) if sys.argv and sys.argv[0] else 'compare.py'
    budget = f", parameter budget {protocol['param_budget']} M" if protocol['param_budget'] else ''
    text = (f"# Comparison {os.path.basename(os.path.normpath(comparison.dir))}\n\n"
            f"Trainer: `{protocol['trainer']} {' '.join(protocol['flags'])}`, seeds {protocol['seeds']}{budget}.  "
            f"Test accuracy: mean ± sample standard deviation over the seeds.\n\n"
            f"{markdown_table(rows, protocol['seeds'])}\nCommand: `{command}`\n")
    utils.atomic_write_text(comparison.path('results.md'), text)
    plots.plot_accuracy_vs_params(rows, comparison.path('accuracy_vs_params.png'))
    return write_comparison_report(results, comparison.dir)


@cli.cli
def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index('--') + 1:] if '--' in argv else []
    args = build_parser().parse_args(argv[:argv.index('--')] if '--' in argv else argv)
    protocol, devices = make_plan(args, extra)
    comparison = Comparison(args.save, protocol, args.resume)
    cli.configure_logging(comparison.path('log.txt'))
    logger.info('comparison %s: %d architectures x %d seeds', comparison.dir, len(protocol['architectures']),
                len(protocol['seeds']))
    with training.StopRequest() as stop:
        failed = execute(comparison, devices, args.jobs, stop)
    if stop.signal:
        logger.info('%s: the runs stopped at checkpoints; continue with --resume', stop.signal)
        return 0
    measure_device = torch.device(devices[0]) if devices[0] else select_device('auto')
    rows = collect(comparison, measure_device)
    report = write_results(comparison, rows)
    logger.info('results: %s, %s, %s', comparison.path('results.md'), comparison.path('results.json'), report)
    print(open(comparison.path('results.md')).read())
    if failed:
        names = ', '.join(f'{label} seed {seed}' for label, seed in failed)
        print(f"error: {len(failed)} run(s) failed ({names}); the table leaves them out; see their .out files "
              f"under {comparison.path('runs')}, then retry them with --resume", file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
