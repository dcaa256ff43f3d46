"""Export a trained network to ONNX, checked in ONNX Runtime against PyTorch.

    python export.py runs/att-c10/trained.pt                       # writes runs/att-c10/model.onnx
    python export.py runs/anas56/trained.pt --out anas56.onnx --check_batch 4

Any family's trained.pt (train_*.py, train_net.py, retrain_slnas.py), exported as deploy.py
describes: eval mode, input `input` (N, C, H, W) with a dynamic batch axis N, output `logits`.
The input is what the training run fed the network, normalised as its data set's test split (the
model's metadata names the data set and the normalisation).  The check runs ONNX Runtime and
PyTorch on the same random batch of --check_batch images (a size other than the export's example
batch, so the dynamic axis is exercised) and writes nothing if any logit differs by more than
--atol.  Then the exported model's latency in ONNX Runtime is measured as measure_latency.py
times a table's candidates (latency.median_ms: one image, one thread, the median of
--timing_repeats passes after 10 untimed ones; 0 skips it).
"""
import os
import sys

import torch

import cli
import deploy
import flags
import latency
import utils
from utils import UserError

EXAMPLE_BATCH = 2


def build_parser():
    parser = cli.default_parser(__doc__.splitlines()[0])
    parser.add_argument('model_path', help='trained.pt written by a train script')
    parser.add_argument('--out', default=None, help='the ONNX file (default: model.onnx beside the trained.pt)')
    parser.add_argument('--check_batch', type=int, default=3,
                        help='images in the batch that ONNX Runtime and PyTorch compute for the check')
    parser.add_argument('--atol', type=float, default=1e-4, help='largest logit difference the check accepts')
    parser.add_argument('--seed', type=int, default=0, help='seed of the example and check inputs')
    parser.add_argument('--timing_repeats', type=int, default=50,
                        help="timed passes of one image through the ONNX Runtime model (0: no timing)")
    return parser


@cli.cli
def main(argv=None):
    args = flags.parse_args(build_parser(), argv)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.model_path)), 'model.onnx')
    if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise UserError(f"--out {out}: its folder does not exist; create it or pick another path")
    model, shape, metadata = deploy.load_network(args.model_path)
    generator = torch.Generator().manual_seed(args.seed)
    model_bytes = deploy.to_onnx(model, torch.randn(EXAMPLE_BATCH, *shape, generator=generator), metadata)
    difference = deploy.max_difference(model_bytes, model, torch.randn(args.check_batch, *shape, generator=generator))
    if not difference <= args.atol:
        raise UserError(f"ONNX Runtime's logits differ from PyTorch's by {difference:.3g} > --atol {args.atol} on a "
                        f"batch of {args.check_batch}; nothing was written")
    utils.atomic_write(out, lambda f: f.write(model_bytes))
    print(f"{out}: input '{deploy.INPUT_NAME}' (N, {', '.join(map(str, shape))}), output '{deploy.OUTPUT_NAME}'; "
          f"ONNX Runtime matches PyTorch to {difference:.2g} on a batch of {args.check_batch}")
    if args.timing_repeats:
        session = deploy.onnx_session(model_bytes, threads=1)
        feed = {deploy.INPUT_NAME: torch.randn(1, *shape, generator=generator).numpy()}
        milliseconds = latency.median_ms(lambda: session.run(None, feed), torch.device('cpu'), 10, args.timing_repeats)
        print(f"ONNX Runtime latency: {milliseconds:.3f} ms per image (batch 1, 1 thread, median of "
              f"{args.timing_repeats} passes after 10)")
    return 0


if __name__ == '__main__':
    sys.exit(main())
