"""Train several architectures under one protocol and report them side by side.

    python compare.py DARTS_V2 Att_DARTS runs/search-X random:8 --dataset fashion-mnist --data data \\
        --epochs 20 --init_channels 16 --layers 8 --seeds 2 --save runs/compare-fmnist
    python compare.py ... --save runs/compare-fmnist --resume    # after a kill: finished runs are kept
    python compare.py ... --param_budget 0.5                      # channels scaled to 0.5 M parameters each
    python compare.py ... --jobs 2 --devices cuda:0,cuda:1        # two runs at a time, one per GPU
    python compare.py ... -- --label_smooth 0.1                   # flags after -- go to every training run

Architectures (architectures.py): named genotypes (DARTS_V2, Att_DARTS, ...), genotype JSON files,
search run directories (their genotype.json), tabular-search run directories (tabular_search.py: the
cell each strategy's runs returned most often), and `random:N`: N distinct cells drawn uniformly from
the space of --space (DARTS cells of --location, --primitives and --num_meta_node, or NAS-Bench-201
cells) with --random_seed, the random baseline of Li and Talwalkar, "Random Search and
Reproducibility for NAS" (UAI 2019) and Yang et al., "NAS evaluation is frustratingly hard" (ICLR
2020).  NAS-Bench-201 cells (strings '|nor_conv_3x3~0|+|...|', their JSON, nb201 search runs) are
trained in the benchmark's network, by default with its C=16 and N=5 and without drop path; a
comparison does not mix them with DARTS cells.  --prescreen PROXY --keep K scores them all by a
zero-cost proxy (ranking.py, docs/proxies.md) and trains only the K best; comparison.json keeps
every score.

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
accuracy, parameters, FLOPs, latency per image, training time), accuracy_vs_params.png and
accuracy_vs_latency.png (one point per run) and report.html.  Parameters exclude the auxiliary
head; FLOPs are one image's forward;
latency is the median over --latency_repeats forward passes of a --latency_batch batch after 3
warm-up passes (latency.median_ms, the timer of measure_latency.py's tables) divided by the batch,
measured in this process one architecture at a time after all training, on the first of --devices
(or --device), with the trained run's kernels and layout.

--resume continues a comparison: finished runs are kept, started ones continue from their checkpoint
(train_*.py --resume), the rest start.  A run that fails is reported and the others go on; running
again with --resume retries it.  SIGTERM or SIGINT stops every run at a checkpoint.
"""
import argparse
import copy
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time

import torch
from tqdm import tqdm

import architectures
import benchmark_table
import cli
import complexity
import datasets
import evaluation
import flags
import genotypes
import latency
import nag_cells
import nb201
import nb201_model
import plots
import proxies
import ranking
import training
import userio
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
# Those of them that NAS-Bench-201 cells default otherwise: the benchmark's network has no drop path.
NB201_DEFAULTS = dict(init_channels=nb201_model.C_DEFAULT, layers=nb201_model.CELLS_PER_STAGE_DEFAULT,
                      drop_path_prob=0.0)
# The network flags `train_flags` gives every run explicitly (evaluation.network_config's `given`).
GIVEN = ('init_channels', 'layers', 'drop_path_prob')


def build_parser():
    parser = cli.default_parser(__doc__.splitlines()[0])
    parser.add_argument('archs', nargs='+', metavar='ARCH',
                        help='a named genotype, a genotype .json, a search run directory, a tabular-search directory '
                             '(the cell each strategy returned most often), or random:N')
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
    architectures.add_random_arguments(parser, spaces=('darts', 'nb201'))
    benchmark_table.add_arguments(parser)
    g = parser.add_argument_group('training-free pre-screening')
    g.add_argument('--prescreen', default=None, metavar='PROXY',
                   help=f"score every architecture by this zero-cost proxy ({', '.join(proxies.PROXIES)}) and "
                        f"train only the --keep best (docs/proxies.md)")
    g.add_argument('--keep', type=int, default=None, metavar='K', help='architectures --prescreen keeps')
    g.add_argument('--prescreen_batch', type=int, default=ranking.DEFAULT_BATCH,
                   help='training images (drawn with --seed) the proxy sees')
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


CELL_KINDS = (genotypes.Genotype, nag_cells.DagArch, nb201.NB201Genotype)
CELL_REFUSAL = ("is not a cell architecture (an ANAS unit or an SLNAS sequence); "
                "compare.py trains DARTS, NAG and NAS-Bench-201 cells")


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
    try:
        return cli.parse(evaluation.train_parser(preset), flags)
    except UserError as refusal:
        raise UserError(f"a training flag was refused: {refusal}") from None


def network_for(run_args, info, genotype, channels):
    run_args = copy.copy(run_args)
    run_args.init_channels = channels
    return evaluation.build_network(evaluation.network_config(run_args, info, genotype, GIVEN), genotype)


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
    found = architectures.resolve(args.archs, args, CELL_KINDS, CELL_REFUSAL)
    nb201_cells = isinstance(found[0][2], nb201.NB201Genotype)
    if any(isinstance(genotype, nb201.NB201Genotype) != nb201_cells for _, _, genotype in found):
        raise UserError("NAS-Bench-201 cells and DARTS or NAG cells train in different networks; compare them "
                        "in separate comparisons")
    for name in PRESET_FLAGS:
        if getattr(args, name) is None:
            setattr(args, name, NB201_DEFAULTS[name] if nb201_cells and name in NB201_DEFAULTS
                    else evaluation.PRESETS[preset][name])
    check_extra_flags(extra)
    devices = parse_devices(args.devices)
    check_prescreen(args)
    if args.prescreen and args.keep >= len(found):
        raise UserError(f"--keep {args.keep} keeps all {len(found)} architectures; lower it or drop --prescreen")
    flags = train_flags(args, extra)
    run_args = parse_run_flags(preset, flags + ['--init_channels', str(args.init_channels)])
    info = datasets.dataset_info(args.dataset, args.data)
    datasets.build_dataset(args.dataset, args.data, train=False, augment=False)  # the data are there
    for _, _, genotype in found:
        evaluation.network_config(run_args, info, genotype, GIVEN)  # a NAG cell needs 3N+2 layers, ...
    prescreen = None
    if args.prescreen:
        found, prescreen = prescreened(found, args, run_args, info, devices[0])
    entries = []
    for label, source, genotype in found:
        channels = (channels_for_budget(run_args, info, genotype, args.param_budget)
                    if args.param_budget is not None else args.init_channels)
        entries.append({'label': label, 'source': source, 'init_channels': channels,
                        'random': source.startswith('random:'), 'genotype': genotypes.to_dict(genotype)})
    protocol = {'trainer': script, 'flags': flags, 'seeds': [args.seed + k for k in range(args.seeds)],
                'param_budget': args.param_budget, 'architectures': entries,
                'latency': {'batch': args.latency_batch, 'repeats': args.latency_repeats}}
    if any(e['random'] for e in entries):
        protocol['random_space'] = ({'space': 'nb201', 'seed': args.random_seed} if args.space == 'nb201' else
                                    {'location': args.location, 'primitives': args.primitives,
                                     'num_meta_node': args.num_meta_node, 'seed': args.random_seed})
    if prescreen is not None:
        protocol['prescreen'] = prescreen
    return protocol, devices


def check_prescreen(args):
    if args.prescreen is None:
        if args.keep is not None:
            raise UserError("--keep needs --prescreen PROXY, the proxy that chooses which architectures to train")
        return
    proxies.check_names([args.prescreen], '--prescreen')
    if args.keep is None:
        raise UserError("--prescreen needs --keep K, how many of the architectures to train")
    for name in ('keep', 'prescreen_batch'):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be at least 1, got {getattr(args, name)}")


def stored_prescreen(args, labels):
    """The scores of the comparison --resume continues, where it pre-screened the same way: scored
    again, they could differ in the last bits on a GPU and change which architectures are trained."""
    record = os.path.join(args.save, 'comparison.json') if args.resume and args.save else None
    if record is None or not os.path.isfile(record):
        return None
    with open(record) as f:
        stored = json.load(f).get('prescreen')
    if not stored or (stored['proxy'], stored['keep'], stored['batch']) != \
            (args.prescreen, args.keep, args.prescreen_batch) or list(stored['scores']) != labels:
        return None
    return stored['scores']


def prescreened(found, args, run_args, info, device_name):
    """The --keep architectures of `found` with the best --prescreen scores (in their order; ties to
    the first), and the record of every score.  Each is scored in its network at --init_channels,
    initialised with --seed, on --prescreen_batch training images drawn with --seed (ranking.py)."""
    labels = [label for label, _, _ in found]
    scores = stored_prescreen(args, labels)
    if scores is None:
        device = torch.device(device_name) if device_name else select_device('auto')
        batch = ranking.proxy_batch(args.dataset, args.data, args.prescreen_batch, args.seed)
        scores = {}
        for label, _, genotype in tqdm(found, desc=f'prescreen {args.prescreen}'):
            scores[label] = ranking.score_architecture(
                lambda g: network_for(run_args, info, g, args.init_channels), genotype, [args.prescreen], batch,
                args.seed, device)[args.prescreen]
    ranked = sorted(range(len(found)), key=lambda i: (math.isnan(scores[labels[i]]), -scores[labels[i]], i))
    kept = sorted(ranked[:args.keep])
    logger.info('prescreen: %s keeps %s of %d', args.prescreen, ', '.join(labels[i] for i in kept), len(found))
    return [found[i] for i in kept], {'proxy': args.prescreen, 'keep': args.keep, 'batch': args.prescreen_batch,
                                      'scores': scores}


class Comparison:
    """The comparison directory: its protocol, architectures and training runs."""

    def __init__(self, save, protocol, resume):
        self.dir = save or os.path.join('runs', f"compare-{time.strftime('%Y%m%d-%H%M%S')}")
        self.protocol = protocol
        record = self.path('comparison.json')
        if resume:
            if not save or not os.path.isfile(record):
                raise UserError(f"nothing to resume: {self.dir} has no comparison.json; start without --resume")
            stored = userio.read_json(record, 'the comparison record')
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
    run_args = userio.read_json(run_args_path, "the run's flags")
    layout = argparse.Namespace(kernels=run_args.get('kernels', 'auto'), compile=False,
                                channels_last=run_args.get('channels_last', True))
    place_model(model, layout, device)
    shape = (config['in_channels'], config['image_size'], config['image_size'])
    params, flops, _ = complexity.describe(model, shape)
    model.eval()
    x = torch.randn(batch, *shape, device=device)
    if layout.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        milliseconds = latency.median_ms(lambda: model(x), device, warmup=3, repeats=repeats)
    return {'params_M': params, 'flops_M': flops / 1e6, 'latency_ms': milliseconds / batch,
            'latency_batch': batch, 'latency_device': str(device),
            'latency_device_name': latency.device_description(device), 'latency_threads': torch.get_num_threads()}


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
                row.update(userio.read_json(cache, 'the measurement'))
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


def add_benchmark(rows, table, metric):
    """Each row's 'benchmark': the table's `metric` of its cell, None where the table has no entry."""
    for row in rows:
        genotype = genotypes.from_dict(row['genotype'], source=row['label'])
        row['benchmark'] = benchmark_table.derived_value(table, metric, genotype)[0]


def markdown_table(rows, seeds, benchmark_metric=None):
    extra = f' benchmark {benchmark_metric} |' if benchmark_metric else ''
    lines = ['| architecture | source | C | params (M) | FLOPs (M) | latency (ms/image) | test acc. (%) | runs | '
             'train time (min) |' + extra, '|---|---|---|---|---|---|---|---|---|' + ('---|' if extra else '')]
    for row in rows:
        looked_up = f" {_cell(row.get('benchmark'), 2)} |" if extra else ''
        if not row['runs']:
            lines.append(f"| {row['label']} | {row['source']} | {row['init_channels']} | – | – | – | not trained "
                         f"| 0/{len(seeds)} | – |{looked_up}")
            continue
        accuracy = f"{row['top1_mean']:.2f}" + (f" ± {row['top1_std']:.2f}" if row['top1_std'] is not None else '')
        lines.append(f"| {row['label']} | {row['source']} | {row['init_channels']} | {row['params_M']:.4f} | "
                     f"{row['flops_M']:.2f} | {row['latency_ms']:.3f} | {accuracy} | {len(row['runs'])}/{len(seeds)} | "
                     f"{_cell(row['train_time_s_mean'] / 60, 1)} |{looked_up}")
    return '\n'.join(lines) + '\n'


def write_results(comparison, rows, benchmark=None):
    """`benchmark`: {'file', 'metric'} of the --benchmark whose values the rows hold, or None."""
    protocol = comparison.protocol
    results = {'protocol': {k: v for k, v in protocol.items() if k != 'architectures'}, 'architectures': rows,
               **({'benchmark': benchmark} if benchmark else {})}
    utils.atomic_write_json(comparison.path('results.json'), results)
    command = ' '.join(sys.argv) if sys.argv and sys.argv[0] else 'compare.py'
    budget = f", parameter budget {protocol['param_budget']} M" if protocol['param_budget'] else ''
    text = (f"# Comparison {os.path.basename(os.path.normpath(comparison.dir))}\n\n"
            f"Trainer: `{protocol['trainer']} {' '.join(protocol['flags'])}`, seeds {protocol['seeds']}{budget}.  "
            f"Test accuracy: mean ± sample standard deviation over the seeds.\n\n"
            f"{markdown_table(rows, protocol['seeds'], benchmark and benchmark['metric'])}\nCommand: `{command}`\n")
    utils.atomic_write_text(comparison.path('results.md'), text)
    for column, (_, _, name) in plots.ACCURACY_AGAINST.items():
        plots.plot_accuracy_against(rows, column, comparison.path(name))
    return write_comparison_report(results, comparison.dir)


@cli.cli
def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index('--') + 1:] if '--' in argv else []
    args = flags.parse_args(build_parser(), argv[:argv.index('--')] if '--' in argv else argv)
    table = benchmark_table.from_args(args)
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
    if table is not None:
        add_benchmark(rows, table, args.benchmark_metric)
    report = write_results(comparison, rows, table and {'file': args.benchmark, 'metric': args.benchmark_metric})
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
