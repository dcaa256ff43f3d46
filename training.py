"""The one training loop behind every search and train script.

A script parses its flags, builds a model and a per-batch `step`, and hands them to `fit`, which
owns the run directory, the epoch loop, progress bars, metrics logs, atomic checkpoints and exact
resume, and the non-finite-loss guard.

Run directory (`--save`): args.json, log.txt, metrics.jsonl (one JSON object per epoch) and
checkpoint.pt; search scripts add alphas.jsonl and genotype.json, train scripts trained.pt.
"""
import argparse
import functools
import json
import logging
import logging.handlers
import os
import signal
import sys
import threading
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

import datasets
import flags
import kernels
import presets
import userio
import utils
import visualize
from utils import UserError

logger = logging.getLogger('attnas')
CHECKPOINT = 'checkpoint.pt'


def cli(main):
    """Turn a script's `main(argv)` into an entry point: user errors become one line and exit 2."""
    @functools.wraps(main)
    def entry(argv=None):
        try:
            return main(argv) or 0
        except UserError as exc:
            print(f'error: {exc}', file=sys.stderr)
            return 2
        finally:
            if distributed():
                dist.destroy_process_group()
    return entry


AMP_DTYPES = ('auto', 'float16', 'bfloat16')
COMPILE_HELP = 'torch.compile the network (the first steps are slow while it compiles)'


def add_common_arguments(parser, compile_help=COMPILE_HELP, **defaults):
    """Flags every script shares; `defaults` overrides the per-script values (seed names kept,
    with the Att-DARTS spellings as aliases)."""
    d = dict(dataset='cifar10', data='data', batch_size=64, learning_rate=0.025, learning_rate_min=0.0,
             momentum=0.9, weight_decay=3e-4, epochs=50, init_channels=16, layers=8, grad_clip=5.0,
             seed=2, save=None, workers=2, report_freq=50, cutout_length=16, cifar_normalization='darts')
    d.update(defaults)
    parser.epilog = parser.epilog or flags.resume_epilog()
    g = parser.add_argument_group('common')
    g.add_argument('--dataset', default=d['dataset'],
                   help='cifar10, cifar100, fashion-mnist, imagefolder, tiny-imagenet, imagenet, food101 or '
                        'imagenet16-120')
    g.add_argument('--data', default=d['data'], help='dataset root directory')
    g.add_argument('--subset', type=int, default=None, help='use only the first N training images')
    g.add_argument('--batch_size', '--batchsz', type=int, default=d['batch_size'], help='batch size (per process)')
    g.add_argument('--learning_rate', '--lr', type=float, default=d['learning_rate'])
    g.add_argument('--learning_rate_min', '--lr_min', type=float, default=d['learning_rate_min'])
    g.add_argument('--momentum', type=float, default=d['momentum'])
    g.add_argument('--weight_decay', '--wd', type=float, default=d['weight_decay'])
    g.add_argument('--epochs', type=int, default=d['epochs'])
    g.add_argument('--init_channels', '--init_ch', type=int, default=d['init_channels'])
    g.add_argument('--layers', type=int, default=d['layers'])
    g.add_argument('--grad_clip', type=float, default=d['grad_clip'])
    g.add_argument('--cutout', action='store_true', help='use cutout augmentation')
    g.add_argument('--cutout_length', '--cutout_len', type=int, default=d['cutout_length'])
    g.add_argument('--seed', type=int, default=d['seed'])
    g.add_argument('--save', default=d['save'], help='run directory (default: runs/<kind>-<time>)')
    g.add_argument('--resume', action='store_true', help='continue the run in --save from its last checkpoint')
    g.add_argument('--dry_run', action='store_true', help='build the model, print parameters and FLOPs, exit')
    g.add_argument('--workers', type=int, default=d['workers'], help='data loader processes')
    g.add_argument('--device', default='auto', help="'auto', 'cpu', 'cuda' or 'cuda:N'")
    g.add_argument('--report_freq', type=int, default=d['report_freq'], help='log every N steps')
    g.add_argument('--skip_nonfinite', action='store_true',
                   help='skip a batch whose loss is NaN/inf (counted in the log) instead of stopping')
    g.add_argument('--no_progress', action='store_true', help='no progress bars')
    g.add_argument('--checkpoint_steps', type=int, default=0,
                   help='also checkpoint every N steps inside an epoch (0: only at epoch ends)')
    g.add_argument('--amp', action='store_true',
                   help='mixed precision (torch.amp): float16 with loss scaling on a GPU, bfloat16 on the CPU')
    g.add_argument('--amp_dtype', default='auto', choices=AMP_DTYPES,
                   help="with --amp: 'auto' is float16 on a GPU and bfloat16 on the CPU; float16 always comes "
                        "with loss scaling (bfloat16 needs none)")
    g.add_argument('--deterministic', action='store_true',
                   help='deterministic kernels (bit-identical reruns on CPU; slower on GPU)')
    g.add_argument('--channels_last', action=argparse.BooleanOptionalAction, default=True,
                   help='channels-last layout of weights and feature maps (the faster convolution layout on the '
                        'CPU, tensor-core friendly on a GPU); --no-channels_last keeps NCHW')
    g.add_argument('--image_size', type=int, default=d.get('image_size'),
                   help="side of the square images the network sees (default: the data set's own: 32 CIFAR, "
                        "28 Fashion-MNIST, 32 imagefolder, 64 Tiny-ImageNet, 224 ImageNet)")
    g.add_argument('--pipeline', choices=datasets.PIPELINES, default=d.get('pipeline', 'auto'),
                   help="image folders' preparation: crop (resize, pad-4 random crop, flip), imagenet (DARTS: "
                        "RandomResizedCrop, flip, colour jitter), cnas-imagenet, cnas-food101 or slnas (those "
                        "references' own); auto: imagenet for ImageNet and Food-101, crop for the others")
    g.add_argument('--cifar_normalization', choices=list(datasets.CIFAR_NORMALIZATIONS),
                   default=d['cifar_normalization'],
                   help="CIFAR mean and std: darts (DARTS's CIFAR-10 and Att-DARTS's CIFAR-100 constants), or the "
                        "one pair CNAS or SLNAS uses for both")
    g.add_argument('--data_on_device', action='store_true',
                   help='CIFAR / Fashion-MNIST: keep the training data on the device and crop, flip and cut out '
                        'there (for GPUs: no loader processes to wait for)')
    g.add_argument('--kernels', choices=kernels.CHOICES, default='auto',
                   help="the networks' implementation: 'plain' modules, 'fast' hand-written kernels (same "
                        "parameters and results, less memory), or 'auto': fast on the device types where they "
                        "were measured faster (today the CPU), plain elsewhere")
    g.add_argument('--compile', action='store_true', help=compile_help)
    return parser


def parse(parser, argv):
    """Parse `argv` after --preset (presets.py) has replaced the parser's defaults, every flag checked
    by flags.py, then check the common flags' combinations."""
    early = presets.apply(parser, argv)
    args = flags.parse_args(parser, argv)
    presets.check(args, early)
    if args.data_on_device and args.dataset not in datasets.DEVICE_CROP_PADDING:
        raise UserError(f"--data_on_device holds only {', '.join(datasets.DEVICE_CROP_PADDING)} on the device, "
                        f"not {args.dataset}; drop --data_on_device")
    if args.data_on_device and args.image_size not in (None, datasets.dataset_info(args.dataset).image_size):
        raise UserError("--data_on_device augments the images at their own size; drop --image_size or "
                        "--data_on_device")
    return args


def configure_logging(log_file=None, level=logging.INFO):
    """The 'attnas' logger to stdout and, for a run, to its log.txt."""
    logger.setLevel(level)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter('%(asctime)s %(message)s', datefmt='%m/%d %H:%M:%S')
    handlers = [logging.StreamHandler(sys.stdout)] + ([logging.FileHandler(log_file, delay=True)] if log_file else [])
    for handler in handlers:
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    logger.propagate = False


def distributed():
    return dist.is_available() and dist.is_initialized()


def is_main():
    """Rank 0 of a torchrun job, or a single process: the one that writes the run directory."""
    return not distributed() or dist.get_rank() == 0


def init_distributed():
    """Join the process group when started by torchrun (WORLD_SIZE > 1): NCCL on GPUs, gloo on CPU."""
    if int(os.environ.get('WORLD_SIZE', '1')) > 1 and not distributed():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', '0')))
        dist.init_process_group('nccl' if torch.cuda.is_available() else 'gloo')


def all_sum(values, device):
    """Sum a list of numbers over all processes (identity in a single process)."""
    if not distributed():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def single_process():
    """For scripts whose steps differ per process (sampled sub-networks, GAN), which DDP cannot average."""
    if distributed():
        script = os.path.basename(sys.argv[0])
        raise UserError(f"{script} runs in one process; start it with python, not torchrun")


def wrap_distributed(model, device):
    """DistributedDataParallel around `model` under torchrun (it averages the weight gradients)."""
    if not distributed():
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == 'cuda' else None)


def select_device(name):
    """`--device`: 'auto' takes the visible GPU with the most free memory (as CNAS does, so that
    runs started one after another on a shared machine spread out), or the CPU without one.
    Under torchrun each process takes the GPU of its LOCAL_RANK.  On a GPU, cuDNN times its
    algorithms for each convolution shape (cudnn.benchmark, as the DARTS reference code sets it;
    `fit` turns it off again for --deterministic)."""
    device = _device(name)
    if device.type == 'cuda':
        if device.index is not None:
            torch.cuda.set_device(device)  # so that anything created on plain 'cuda' lands there too
        torch.backends.cudnn.benchmark = True
    return device


def _device(name):
    init_distributed()
    if distributed() and name == 'auto' and torch.cuda.is_available():
        return torch.device('cuda', torch.cuda.current_device())
    if name == 'auto':
        if not torch.cuda.is_available():
            return torch.device('cpu')
        count = torch.cuda.device_count()
        if count == 1:
            return torch.device('cuda', 0)
        # mem_get_info opens a context on each GPU it asks; with one GPU there is nothing to choose.
        return torch.device('cuda', max(range(count), key=lambda i: torch.cuda.mem_get_info(i)[0]))
    device = torch.device(name)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise UserError(f"--device {name} asked for CUDA but no GPU is visible; use --device cpu")
    return device


def place_model(model, args, device, compiled=True):
    """`model` in the implementation of --kernels, on `device` in the layout of --channels_last,
    compiled with --compile where `compiled`.  Only the weights are converted: a convolution gives
    its output the layout of its weight, so the feature maps are channels-last from the stem on,
    whatever layout the loader delivers."""
    kernels.apply(model, args.kernels, device)
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    model.to(device, memory_format=layout)
    if args.compile and compiled:
        model.compile()
    return model


def amp_dtype(args, device):
    """--amp_dtype; 'auto': float16 (with loss scaling) on a GPU, bfloat16 on the CPU, where float16
    kernels are slow or missing."""
    if args.amp_dtype != 'auto':
        return getattr(torch, args.amp_dtype)
    return torch.float16 if device.type == 'cuda' else torch.bfloat16


def autocast(args, device):
    return torch.autocast(device.type, dtype=amp_dtype(args, device), enabled=args.amp)


def grad_scaler(args, device):
    """Loss scaling for float16; a pass-through otherwise.  Checkpointed with the optimizer."""
    return torch.amp.GradScaler(device.type, enabled=args.amp and amp_dtype(args, device) == torch.float16)


def count_flops(model, input_shape, batch=1):
    """Forward FLOPs of one image (torch.utils.flop_counter), in eval mode, counted on a batch of
    `batch` images: a network whose BatchNorms use batch statistics even in eval mode (SLNAS's
    supernet) needs two, and the counted convolutions and products scale exactly with the batch."""
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(batch, *input_shape, device=param.device, dtype=param.dtype))
        return counter.get_total_flops() // batch
    finally:
        model.train(was_training)


def describe(model, input_shape, batch=1):
    """(parameters in M, FLOPs per image, a description).  The FLOPs are the plain network's: a fast
    kernel may compute the same function with other operations."""
    params = utils.count_parameters_in_MB(model)
    accelerated = kernels.is_accelerated(model)
    flops = count_flops(kernels.plain_copy(model) if accelerated else model, input_shape, batch)
    implementation = 'fast' if accelerated else 'plain'
    return params, flops, (f'params: {params:.6f} M\nflops: {flops / 1e6:.2f} MFLOPs per image\n'
                           f'kernels: {implementation}')


def _differences(stored, wanted):
    """The names of the settings in which two run signatures (JSON objects) differ."""
    try:
        a, b = json.loads(stored), json.loads(wanted)
    except (TypeError, json.JSONDecodeError):
        return 'its format'

    def walk(x, y, prefix):
        if isinstance(x, dict) and isinstance(y, dict):
            return [name for key in sorted(set(x) | set(y))
                    for name in walk(x.get(key), y.get(key), f'{prefix}{key}.')]
        return [] if x == y else [prefix.rstrip('.')]
    return ', '.join(walk(a, b, '')) or 'nothing'


def run_directory(save, resume, kind, marker='args.json'):
    """The directory of a run: `save`, or a new one named by `kind` and the time.  A `resume` needs
    `save` to hold `marker` (what a started run has written); a new run needs it new or empty, so
    that nothing already there is overwritten."""
    directory = save or os.path.join('runs', f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}")
    if resume:
        if not save:
            raise UserError('--resume needs --save RUN_DIR, the run directory to continue')
        if not os.path.isfile(os.path.join(directory, marker)):
            raise UserError(f"nothing to resume: {directory} is not a run directory (no {marker}); "
                            f"start the run without --resume")
    elif os.path.isdir(directory) and os.listdir(directory):
        if os.path.isfile(os.path.join(directory, marker)) and not any(
                name == CHECKPOINT for _, _, names in os.walk(directory) for name in names):
            raise UserError(f"run directory {directory} holds a run stopped before its first checkpoint; pass "
                            f"--resume to start it over there with these flags, or choose a new --save")
        raise UserError(f"run directory {directory} already exists; pass --resume to continue it "
                        f"or choose a new --save")
    return directory


class Run:
    """A run directory, created fresh or reopened with `resume`.  `signature` identifies the
    architecture and setting.

    The constructor only checks and writes nothing: the directory, a new flag set or another run's
    checkpoint is refused (`flags.resume_changes`: a flag that defines the run and differs is named
    as typed).  `start` (called by `fit`, or by a script before it writes anything else) creates the
    directory, log.txt and args.json once the script has found its data, so that a command refused
    before then leaves nothing behind.  On resume, the flags `flags.ON_RESUME` lets change are
    applied: logged and appended to args.json's 'history'."""

    def __init__(self, save, args, resume=False, kind='run', signature=None):
        self.dir = run_directory(save, resume, kind)
        self.args, self.resume, self.signature, self.checkpoint = args, resume, signature, None
        self.record = flags.as_json(vars(args))  # the flags as they are now, for args.json
        self.changes, self.started = {}, False
        if resume:
            stored = userio.read_json(self.path('args.json'), 'the run\'s flags')
            if os.path.exists(self.path(CHECKPOINT)):
                self.checkpoint = utils.load_checkpoint_file(self.path(CHECKPOINT))
            self.changes = flags.resume_changes(stored, args, started=self.checkpoint is not None)
            self.history = stored.get('history', [])
            if self.checkpoint is not None:
                self._check_checkpoint()
        # Until `start`, log lines are kept for log.txt.
        configure_logging(level=logging.INFO if is_main() else logging.WARNING)
        self._early_log = logging.handlers.MemoryHandler(10 ** 6, flushLevel=logging.CRITICAL + 1)
        logger.addHandler(self._early_log)

    def _check_checkpoint(self):
        done = self.checkpoint['epoch']
        if self.checkpoint.get('signature') != self.signature:
            raise UserError(f"{self.path(CHECKPOINT)} belongs to another architecture or setting "
                            f"(differs in: {_differences(self.checkpoint.get('signature'), self.signature)}); "
                            f"resume with the flags of that run")
        epochs = getattr(self.args, 'epochs', None)
        if epochs is not None and epochs < done and not self.checkpoint.get('early_stop'):
            raise UserError(f"--resume: --epochs {epochs} is fewer than the {done} epochs the run has done; "
                            f"give --epochs {done} or more")

    def start(self):
        """Create the run directory (once): log.txt, and args.json (with the history of resumes)."""
        if self.started:
            return
        self.started = True
        if distributed():
            # Every rank has checked the directory before rank 0 creates it.
            dist.barrier()
        if not is_main():
            logger.removeHandler(self._early_log)
            configure_logging(level=logging.WARNING)
            self.tensorboard = visualize.TensorBoardLogger(None)
            return
        try:
            os.makedirs(self.dir, exist_ok=True)
            probe = self.path('.write-test')
            with open(probe, 'w'):
                pass
            os.unlink(probe)
        except OSError as exc:
            raise UserError(f"cannot write the run directory {self.dir} ({exc.strerror}); "
                            f"choose a writable --save") from exc
        early = self._early_log
        configure_logging(self.path('log.txt'))
        for record in early.buffer:
            if record.levelno >= logging.INFO:
                logger.handlers[-1].handle(record)  # to log.txt; stdout has had them
        early.close()
        self.tensorboard = visualize.TensorBoardLogger(self.dir)
        record = self.record
        if self.resume and self.changes:
            said = '; '.join(f'--{name} {flags.shown(now)}, was {flags.shown(was)}'
                             for name, (was, now) in self.changes.items())
            logger.info('resuming with %s', said)
            entry = {'resumed': time.strftime('%Y-%m-%dT%H:%M:%S'),
                     'changed': {name: {'was': was, 'now': now} for name, (was, now) in self.changes.items()}}
            if self.checkpoint is None:
                entry['note'] = 'no checkpoint yet: started over with these flags'
            utils.atomic_write_json(self.path('args.json'), {**record, 'history': [*self.history, entry]})
        elif not self.resume:
            utils.atomic_write_json(self.path('args.json'), record)

    def path(self, name):
        return os.path.join(self.dir, name)

    def append_jsonl(self, name, record):
        if not is_main():
            return
        with open(self.path(name), 'a') as f:
            f.write(json.dumps(record) + '\n')
            f.flush()
            os.fsync(f.fileno())

    def read_jsonl(self, name):
        if not os.path.exists(self.path(name)):
            return []
        with open(self.path(name)) as f:
            return [json.loads(line) for line in f if line.strip()]

    def truncate_jsonl(self, name, epochs_done):
        """Drop records of epochs past the checkpoint (written after it, before a kill)."""
        if not is_main() or not os.path.exists(self.path(name)):
            return
        with open(self.path(name)) as f:
            lines = [line for line in f if line.strip()]
        kept = []
        for line in lines:
            try:
                if json.loads(line)['epoch'] < epochs_done:
                    kept.append(line)
            except (json.JSONDecodeError, KeyError):
                break  # a line cut by the kill, and anything after it
        if len(kept) != len(lines):
            utils.atomic_write_text(self.path(name), ''.join(kept))


class NonFiniteGuard:
    """Stops a run at the first NaN/inf loss, or skips such batches with `--skip_nonfinite`.
    Under torchrun the processes decide together: a non-finite loss on any of them stops or skips
    the step on all of them, since one process skipping a step that the others take would leave
    their collectives unmatched (a hang) and their weights apart."""

    def __init__(self, skip):
        self.skip = skip
        self.skipped = 0

    def ok(self, loss, where):
        nonfinite = torch.logical_not(torch.isfinite(loss).all()).to(torch.int32)
        if distributed():
            dist.all_reduce(nonfinite, op=dist.ReduceOp.MAX)
        if not nonfinite.item():
            return True
        here = f'({loss.item()})' if not torch.isfinite(loss).all() else 'on another process'
        if not self.skip:
            raise UserError(f"non-finite loss {here} at {where}; the last good checkpoint is kept. "
                            f"Lower --learning_rate, or pass --skip_nonfinite to skip such batches")
        self.skipped += 1
        logger.warning('skipping batch with non-finite loss %s at %s', here, where)
        return False


class Preempted(Exception):
    """SIGTERM/SIGINT arrived; a checkpoint at the current step has been written."""


class _StopRequest:
    """Turns SIGTERM and SIGINT (what schedulers send before preemption) into a flag that the
    loop checks between steps, so the checkpoint it writes is consistent."""

    def __init__(self):
        self.signal = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signal = signal.Signals(signum).name

    def agree(self, device):
        if all_sum([1.0 if self.signal else 0.0], device)[0] and not self.signal:
            self.signal = 'SIGTERM on another rank'

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def optimize(loss, optimizer, parameters, grad_clip, guard, where, scaler=None):
    """Backward, gradient-norm clipping and an optimizer step, unless `guard` vetoes a non-finite
    loss (then False).  With a GradScaler (fp16) the loss is scaled and the gradients unscaled
    before clipping."""
    if not guard.ok(loss, where):
        return False
    if scaler is None:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
        scaler.step(optimizer)
        scaler.update()
    return True


class EpochContext:
    """What `run_epoch` gets: the epoch number, the non-finite guard, and `train()`, which runs the
    training steps of the epoch and can stop and resume in the middle of it."""

    def __init__(self, epoch, guard, args, save, stop, resume_point=None, device=None):
        self.epoch, self.guard, self.args, self._device = epoch, guard, args, device
        self._save, self._stop = save, stop
        self._resume = resume_point

    def train(self, batches, step, total, desc):
        """Call `step(batch, where, guard)` on every batch; it returns (loss, logits, target), or
        None for a skipped batch.  Returns the epoch's mean loss and top-1 accuracy.

        `batches` must yield the same sequence when iterated again after the same re-seeding (fit
        re-seeds the loaders' generators every epoch), so a resume replays the skipped part."""
        losses, top1 = utils.AverageMeter(), utils.AverageMeter()
        iterator, first = iter(batches), 0
        if self._resume:
            first = self._resume['step']
            for _ in range(first):
                next(iterator)  # the data order and augmentation draws of the finished steps
            (losses.sum, losses.count), (top1.sum, top1.count) = self._resume['meters']
            self.guard.skipped = self._resume['skipped']
            utils.set_rng_state(self._resume['rng'])
            self._resume = None
        every = self.args.checkpoint_steps
        bar = tqdm(iterator, total=total, initial=first, desc=desc, leave=False, dynamic_ncols=True,
                   disable=self.args.no_progress or None)
        for i, batch in enumerate(bar, start=first):
            result = step(batch, f'epoch {self.epoch} step {i}', self.guard)
            if result is not None:
                loss, logits, target = result
                n = target.size(0)
                losses.update(loss.item(), n)
                top1.update(utils.accuracy(logits.detach(), target)[0], n)
                bar.set_postfix(loss=f'{losses.avg:.3f}', acc=f'{top1.avg:.1f}')
            if self.args.report_freq and i % self.args.report_freq == 0:
                logger.info('%s %03d loss %.4f top1 %.2f', desc, i, losses.avg, top1.avg)
            done = i + 1
            if distributed():
                # All ranks must stop at the same step, whichever of them got the signal.
                self._stop.agree(self._device)
            if done < total and (self._stop.signal or (every and done % every == 0)):
                self._save(self.epoch, done, [(losses.sum, losses.count), (top1.sum, top1.count)], self.guard.skipped)
                if self._stop.signal:
                    raise Preempted
        loss_sum, count, top1_sum = all_sum([losses.sum, losses.count, top1.sum], self._device)
        return loss_sum / max(count, 1), top1_sum / max(count, 1)


@torch.no_grad()
def evaluate(model, loader, criterion, device, desc='valid', no_progress=False):
    """Mean loss, top-1 and top-5 accuracy (percent) of `model` in eval mode."""
    model.eval()
    losses, top1, top5 = utils.AverageMeter(), utils.AverageMeter(), utils.AverageMeter()
    for x, y in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True, disable=no_progress or None):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        out = model(x)
        logits = out[0] if isinstance(out, tuple) else out
        n = y.size(0)
        losses.update(criterion(logits, y).item(), n)
        acc1, acc5 = utils.accuracy(logits, y, topk=(1, 5))
        top1.update(acc1, n)
        top5.update(acc5, n)
    loss_sum, count, top1_sum, top5_sum = all_sum([losses.sum, losses.count, top1.sum, top5.sum], device)
    count = max(count, 1)
    return {'loss': loss_sum / count, 'top1': top1_sum / count, 'top5': top5_sum / count}


# What a learning-rate scheduler's state says about its position, as opposed to its schedule.
_SCHEDULE_POSITION = ('base_lrs', 'last_epoch', '_step_count', '_is_initial', '_get_lr_called_within_step', '_last_lr')


def _reschedule(scheduler, fresh):
    """After a resume loaded `scheduler`'s state: where `fresh` (the state of the scheduler the
    script built from this command's flags) has another schedule (--epochs, --learning_rate_min
    changed on resume), keep the checkpoint's position and take the new schedule, with the learning
    rate the new schedule has at that position (its closed form).  Returns whether it changed."""
    schedule = {key: value for key, value in fresh.items() if key not in _SCHEDULE_POSITION}
    if all(getattr(scheduler, key) == value for key, value in schedule.items()):
        return False
    scheduler.__dict__.update(schedule)
    for group, lr in zip(scheduler.optimizer.param_groups, scheduler._get_closed_form_lr()):
        group['lr'] = lr
    scheduler._last_lr = [group['lr'] for group in scheduler.optimizer.param_groups]
    return True


def fit(run, args, stateful, run_epoch, loaders=(), device=None):
    """The epoch loop.  `stateful` maps names to objects with state_dict/load_state_dict (model,
    optimizers, scheduler, architect optimizer); `run_epoch(ctx)` trains and evaluates one epoch
    (through `ctx.train`) and returns its metrics; `loaders` are the DataLoaders whose generators
    are re-seeded from (--seed, epoch) so every epoch's data order can be replayed.

    A checkpoint with all state and every RNG state is written atomically after every epoch, every
    --checkpoint_steps steps, and on SIGTERM/SIGINT (then the run stops and returns preempted=True).
    `--resume` continues from it and replays exactly what an uninterrupted run would have done.
    An epoch whose metrics hold `early_stop` (the reason) ends the run there; a resume of it
    trains nothing more.  Returns (preempted, last epoch's metrics)."""
    if args.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    run.start()
    start, resume_point, checkpoint, stopped = 0, None, run.checkpoint, None
    if run.resume and checkpoint is None:
        logger.info('no checkpoint in %s yet (killed in the first epoch): starting from epoch 0', run.dir)
    elif run.resume:
        schedules = {name: obj.state_dict() for name, obj in stateful.items()
                     if isinstance(obj, torch.optim.lr_scheduler.LRScheduler)}
        for name, obj in stateful.items():
            obj.load_state_dict(checkpoint['state'][name])
        for name, schedule in schedules.items():
            if _reschedule(stateful[name], schedule):
                logger.info('%s: the learning rate follows the new schedule from epoch %d on: %s', name,
                            checkpoint['epoch'] + 1, ' '.join(f'{lr:.6g}' for lr in stateful[name].get_last_lr()))
        start, stopped = checkpoint['epoch'], checkpoint.get('early_stop')
        if stopped:
            logger.info('the run stopped early after epoch %d (%s): nothing to resume', start, stopped)
        if checkpoint.get('step'):
            resume_point = checkpoint
        else:
            utils.set_rng_state(checkpoint['rng'])
        logger.info('resumed %s: %d epochs done, %d steps of the next', run.dir, start, checkpoint.get('step', 0))
    if run.resume:
        for name in ('metrics.jsonl', 'alphas.jsonl'):
            run.truncate_jsonl(name, start)

    def save(epoch, step, meters=None, skipped=0, early_stop=None):
        if not is_main():
            return
        utils.atomic_torch_save({'epoch': epoch, 'step': step, 'meters': meters, 'skipped': skipped,
                                 **({'early_stop': early_stop} if early_stop else {}),
                                 'signature': run.signature, 'rng': utils.rng_state(),
                                 'state': {name: obj.state_dict() for name, obj in stateful.items()}},
                                run.path(CHECKPOINT))

    record = None
    with _StopRequest() as stop:
        for epoch in range(start, start if stopped else args.epochs):
            for index, loader in enumerate(loaders):
                loader.generator.manual_seed(args.seed * 1_000_003 + epoch * 101 + index)
                if isinstance(loader.sampler, torch.utils.data.DistributedSampler):
                    loader.sampler.seed = args.seed * 1_000_003 + index
                    loader.sampler.set_epoch(epoch)
            began = time.time()
            guard = NonFiniteGuard(args.skip_nonfinite)
            ctx = EpochContext(epoch, guard, args, save, stop, resume_point, device)
            resume_point = None
            try:
                record = {'epoch': epoch, **run_epoch(ctx)}
            except Preempted:
                logger.info('%s: checkpoint written in epoch %d; continue with --resume', stop.signal, epoch + 1)
                return True, record
            record['epoch_time'] = time.time() - began
            if guard.skipped:
                record['skipped_batches'] = guard.skipped
            run.append_jsonl('metrics.jsonl', record)
            run.tensorboard.log_scalars({k: v for k, v in record.items() if isinstance(v, (int, float))}, epoch)
            logger.info('epoch %d/%d %s', epoch + 1, args.epochs,
                        ' '.join(f'{k} {v:.4g}' for k, v in record.items() if isinstance(v, float)))
            save(epoch + 1, 0, early_stop=record.get('early_stop'))
            if record.get('early_stop'):
                logger.info('stopping early after epoch %d: %s', epoch + 1, record['early_stop'])
                break
            if stop.signal:
                logger.info('%s: checkpoint written after epoch %d; continue with --resume', stop.signal, epoch + 1)
                return True, record
    return False, record


def dataset_info(args, need_data=True):
    """datasets.dataset_info of --dataset at --image_size."""
    return datasets.dataset_info(args.dataset, args.data, image_size=args.image_size, need_data=need_data)


def load_split(args, train, augment=None):
    """The train or test split of --dataset as the script's flags prepare it: augmented (with
    Cutout under --cutout) when `augment` (default: for the train split), --image_size,
    --pipeline, --cifar_normalization."""
    augment = train if augment is None else augment
    return datasets.build_dataset(args.dataset, args.data, train=train, augment=augment,
                                  cutout_length=args.cutout_length if augment and args.cutout else 0,
                                  image_size=args.image_size, cifar_normalization=args.cifar_normalization,
                                  pipeline=args.pipeline)


def device_augmentation(args, augment):
    """`make_loader`'s on_device under --data_on_device (else None): the augmentation of load_split."""
    if not args.data_on_device:
        return None
    return dict(name=args.dataset, augment=augment, cutout_length=args.cutout_length if augment and args.cutout else 0,
                cifar_normalization=args.cifar_normalization)


def make_loader(dataset, batch_size, shuffle, workers, device, drop_last=False, on_device=None):
    """A DataLoader with its own generator, which `fit` re-seeds every epoch; under torchrun each
    process reads its own shard (batch_size is per process).  `on_device` (device_augmentation),
    given with --data_on_device, holds the split on `device` and augments it there
    (datasets.DeviceLoader) instead."""
    if on_device is not None:
        return datasets.DeviceLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                                     device=device, **on_device)
    sampler = (torch.utils.data.DistributedSampler(dataset, shuffle=shuffle, drop_last=drop_last)
               if distributed() else None)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
        num_workers=workers, drop_last=drop_last, pin_memory=device.type == 'cuda', generator=torch.Generator())


def default_parser(description):
    return argparse.ArgumentParser(description=description,
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
