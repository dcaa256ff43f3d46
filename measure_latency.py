"""Measure the latency look-up table of a search space's candidates on this device (latency.py).

    python measure_latency.py --out runs/latency-c16.json                    # train_search.py's defaults
    python measure_latency.py --dataset fashion-mnist --init_channels 8 --layers 5 --out runs/lat-fm.json
    python measure_latency.py --backend onnxruntime --out runs/lat-ort.json  # timed in ONNX Runtime
    python measure_latency.py --device cuda --batch 32 --out runs/lat-gpu.json
    python measure_latency.py --space nb201 --layers 5 --out runs/lat-nb201.json   # train_search.py --space nb201
    python measure_latency.py --space anas --net_type resnet20 --out runs/lat-anas.json

The space flags are the search's (train_search.py: --space, --location, --primitives,
--init_channels, --layers, --num_meta_node, --reduce_level, --dataset, --image_size; search_net.py:
--net_type, --dataset, --image_size); a search given the table with --latency_table refuses it if they differ.
Every candidate is timed alone, in eval mode, as the median of --repeats forward passes of a
random --batch after --warmup untimed ones, with --threads threads (PyTorch's intra-op threads, or
ONNX Runtime's), on the CPU through PyTorch or ONNX Runtime, or on a GPU through PyTorch with the
device synchronised around each pass.  The table is written atomically to --out, with the device,
the library versions and these settings.
"""
import argparse
import os
import sys

from tqdm import tqdm

import cli
import datasets
import devices
import flags
import genotypes
import latency
import search
from search_space import LOCATIONS
from utils import UserError


def build_parser():
    parser = cli.default_parser(__doc__.splitlines()[0])
    parser.add_argument('--out', required=True, help='the JSON table to write')
    g = parser.add_argument_group('search space (the search\'s flags)')
    g.add_argument('--space', choices=latency.SPACES, default='darts',
                   help='darts: the supernet of train_search.py; nb201: that of train_search.py --space nb201; '
                        'anas: the attention unit of search_net.py')
    g.add_argument('--location', default=None, choices=list(LOCATIONS),
                   help='default: after_every; no_attention with --space nb201 (as train_search.py)')
    g.add_argument('--primitives', default='darts', help=f"op set: {', '.join(genotypes.PRIMITIVE_SETS)}")
    g.add_argument('--init_channels', '--init_ch', type=int, default=16)
    g.add_argument('--layers', type=int, default=8)
    g.add_argument('--num_meta_node', type=int, default=4)
    g.add_argument('--reduce_level', type=int, default=0, choices=(0, 1, 2))
    g.add_argument('--net_type', default='resnet20', help='--space anas: the ResNet of the search')
    g.add_argument('--dataset', default='cifar10')
    g.add_argument('--data', default='data', help='dataset root (only folder data sets need it, for their classes)')
    g.add_argument('--image_size', type=int, default=None, help="default: the data set's own")
    g = parser.add_argument_group('measurement')
    g.add_argument('--backend', choices=latency.BACKENDS, default='torch',
                   help='torch: PyTorch on --device; onnxruntime: each candidate exported to ONNX and run in '
                        'ONNX Runtime on the CPU')
    g.add_argument('--device', default='cpu', help="'cpu', 'cuda', 'cuda:N' or 'auto'")
    g.add_argument('--threads', type=int, default=1, help='intra-op threads')
    g.add_argument('--batch', type=int, default=1, help='images per timed forward pass')
    g.add_argument('--warmup', type=int, default=10, help='untimed passes before the timed ones')
    g.add_argument('--repeats', type=int, default=50, help='timed passes; the table holds their median')
    g.add_argument('--no_progress', action='store_true')
    return parser


def space_settings(args):
    image_size = datasets.dataset_info(args.dataset, args.data, image_size=args.image_size, need_data=False).image_size
    if args.space == 'anas':
        return latency.anas_settings(args.net_type, image_size)
    # The search's own check of its space flags, the ones this script lacks at the search's defaults.
    search_args = argparse.Namespace(**{**vars(search.build_parser().parse_args([])), **vars(args)})
    search.check_space_options(search_args)
    if args.space == 'nb201':
        return latency.nb201_settings(search_args.location, args.init_channels, args.layers, image_size)
    return latency.darts_settings(search_args.location, args.primitives, args.init_channels, args.layers,
                                  args.num_meta_node, image_size, args.reduce_level)


@cli.cli
def main(argv=None):
    args = flags.parse_args(build_parser(), argv)
    if args.threads < 1:
        raise UserError(f"--threads must be at least 1 (a latency is measured with a fixed thread count), "
                        f"got {args.threads}")
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        raise UserError(f"--out {args.out}: its folder does not exist; create it or pick another path")
    settings = space_settings(args)
    device = devices.select_device(args.device)
    table = latency.measure_table(settings, args.backend, device, args.batch, args.warmup, args.repeats, args.threads,
                                  progress=lambda items: tqdm(items, desc='candidates',
                                                              disable=args.no_progress or None))
    latency.save_table(table, args.out)
    uniform = latency.Objective(table, settings, 0.0, 1.0).uniform()
    print(f"{args.out}: {len(table['latency_ms'])} candidates on {table['measurement']['device_name']}; the "
          f"supernet's expected latency under uniform weights is {uniform:.3f} ms")
    return 0


if __name__ == '__main__':
    sys.exit(main())
