"""The command line every script shares: the common flags, parsing with presets, `--plugins`, the
`cli` entry wrapper (a user error is one line and exit status 2) and the 'attnas' logger."""
import argparse
import functools
import importlib
import importlib.util
import logging
import os
import sys

import datasets
import devices
import kernels
import presets
from registry import DATASETS
from utils import UserError

logger = logging.getLogger('attnas')


def cli(main):
    """Turn a script's `main(argv)` into an entry point: the modules of --plugins are imported first,
    and user errors become one line and exit status 2."""
    @functools.wraps(main)
    def entry(argv=None):
        try:
            load_plugins(sys.argv[1:] if argv is None else argv)
            return main(argv) or 0
        except UserError as exc:
            print(f'error: {exc}', file=sys.stderr)
            return 2
        finally:
            devices.leave_process_group()
    return entry


COMPILE_HELP = 'torch.compile the network (the first steps are slow while it compiles)'


def add_common_arguments(parser, compile_help=COMPILE_HELP, **defaults):
    """Flags every script shares; `defaults` overrides the per-script values (seed names kept,
    with the Att-DARTS spellings as aliases)."""
    d = dict(dataset='cifar10', data='data', batch_size=64, learning_rate=0.025, learning_rate_min=0.0,
             momentum=0.9, weight_decay=3e-4, epochs=50, init_channels=16, layers=8, grad_clip=5.0,
             seed=2, save=None, workers=2, report_freq=50, cutout_length=16, cifar_normalization='darts')
    d.update(defaults)
    g = parser.add_argument_group('common')
    g.add_argument('--dataset', default=d['dataset'], help=f"{', '.join(DATASETS)} (registry.DATASETS)")
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
    g.add_argument('--amp_dtype', default='auto', choices=devices.AMP_DTYPES,
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
                        f"were measured faster ({', '.join(kernels.MEASURED_FASTER)}), plain elsewhere")
    g.add_argument('--compile', action='store_true', help=compile_help)
    return parser


def parse(parser, argv):
    """Parse `argv` after --preset (presets.py) has replaced the parser's defaults, then check the
    common flags."""
    early = presets.apply(parser, argv)
    args = parser.parse_args(argv)
    presets.check(args, early)
    for name in ('batch_size', 'epochs', 'init_channels', 'layers'):
        if getattr(args, name, 1) < 1:
            raise UserError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.subset is not None and args.subset < 2:
        raise UserError(f"--subset must be at least 2, got {args.subset}")
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


def add_plugins_argument(parser):
    parser.add_argument('--plugins', nargs='+', default=[], metavar='MODULE',
                        help='import these modules first (a .py file or a dotted module name), so that the ops, '
                             'attentions, data sets or search strategies they register can be named on the '
                             'command line (docs/extending.md)')
    return parser


def default_parser(description):
    """A script's parser: the defaults shown in --help, and --plugins."""
    return add_plugins_argument(argparse.ArgumentParser(description=description,
                                                        formatter_class=argparse.ArgumentDefaultsHelpFormatter))


def load_plugins(argv):
    """Import the modules of `--plugins` in `argv`, before any parser reads a registry for its choices."""
    early = add_plugins_argument(argparse.ArgumentParser(add_help=False, allow_abbrev=False))
    for plugin in early.parse_known_args(argv)[0].plugins:
        import_plugin(plugin)


def import_plugin(plugin):
    """Import a plug-in: a path to a .py file (imported under its file name) or a dotted module name."""
    if plugin.endswith('.py') or os.sep in plugin:
        path = os.path.abspath(plugin)
        if not os.path.isfile(path):
            raise UserError(f"--plugins {plugin}: no such file; give a .py file or an importable module name")
        name = os.path.splitext(os.path.basename(path))[0]
        loaded = sys.modules.get(name)
        if loaded is not None:
            if os.path.abspath(getattr(loaded, '__file__', '') or '') != path:
                raise UserError(f"--plugins {plugin}: a module named '{name}' is already loaded from elsewhere; "
                                f"rename the file")
            return loaded
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        return module
    try:
        return importlib.import_module(plugin)
    except ModuleNotFoundError as exc:
        if not (plugin == exc.name or plugin.startswith(f'{exc.name}.')):
            raise  # a module the plug-in itself imports is missing: its own traceback says which
        raise UserError(f"--plugins {plugin}: no module named '{exc.name}'; give a .py file or a module "
                        f"importable from here") from exc
