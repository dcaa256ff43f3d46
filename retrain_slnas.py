"""Train an SLNAS architecture from scratch (Chen, "Stage and Lite Search Technology in CNN
Architecture Search"; the reference's retrainer_cifar.py / retrainer.py).

    python retrain_slnas.py --save aid_retrain --seed 2 --batch_size 32 --child_out_filters 40 \\
        --dataset imagefolder --data data/AID_50 --epochs 600 --blocks "[2,2]" \\
        --arch "[[0,1,0,4,1,3,0,3,0,3,0,0,1,1,0,3,0,3,1,0],[0,3,1,0,0,4,1,1,1,1,0,3,0,2,1,2,1,1,0,3]]"
    python retrain_slnas.py --arch_path runs/search-slnas-XYZ/best_arch.json --amp

Label smoothing over the data set's own classes, Cutout, SGD with weight decay on >= 2-D
parameters only, cosine schedule, gradient clipping, auxiliary heads after every stage but the
last, drop path ramped up over the first --drop_path_ramp of the epochs then held, and mixed
precision with --amp (torch.amp: float16 with loss scaling on a GPU, bfloat16 on the CPU).

Writes metrics.jsonl, log.txt, checkpoint.pt (--resume) and trained.pt into the run directory.
Fixed with respect to the reference: --drop_prob is a float, label smoothing uses the
real class count, apex is replaced by torch.amp.
"""
import json
import sys

import torch
import torch.nn as nn

import cli
import complexity
import datasets
import devices
import evaluation
import genotypes
import presets
import runs
import slnas
import training
import utils
from cli import logger
from utils import UserError

# The default architecture and stage layout of the reference's retrainer_cifar.py.
DEFAULT_ARCH = '[[0,4,0,1,0,4,1,1,0,1,3,4,1,0,0,3,1,1,0,4],[0,3,0,0,1,0,1,0,1,0,0,0,1,4,1,0,1,1,1,4]]'
DEFAULT_BLOCKS = [4, 4]


def build_parser():
    parser = cli.default_parser(__doc__.splitlines()[0])
    cli.add_common_arguments(parser, dataset='cifar10', batch_size=32, learning_rate=0.025,
                             learning_rate_min=0.0, epochs=600, seed=2, weight_decay=3e-4, grad_clip=5.0,
                             cifar_normalization='slnas')
    slnas.add_slnas_arguments(parser, out_filters=32, blocks=None, drop_path=0.35, initialize=False)
    parser.set_defaults(cutout=True)
    g = parser.add_argument_group('retraining')
    g.add_argument('--no_cutout', dest='cutout', action='store_false', help='no Cutout (on by default)')
    g.add_argument('--arch', default=None,
                   help=f'[normal, reduce] sequences as JSON (default: the reference retrainer\'s {DEFAULT_ARCH})')
    g.add_argument('--arch_path', default=None, help='best_arch.json written by train_search_slnas.py')
    g.add_argument('--label_smooth', type=float, default=0.1)
    g.add_argument('--drop_path_ramp', type=float, default=0.7,
                   help='share of the epochs over which drop path grows to --droppath, then held')
    g.add_argument('--test_batch_size', type=int, default=None, help='default: --batch_size')
    return presets.add_argument(parser, 'slnas_train')


def resolve_arch(args):
    """The architecture of --arch or --arch_path; --blocks overrides the file's stage layout."""
    if args.arch and args.arch_path:
        raise UserError("give either --arch or --arch_path, not both")
    if args.arch_path:
        arch = genotypes.load(args.arch_path)
        if not isinstance(arch, genotypes.SeqArch):
            raise UserError(f"{args.arch_path} is not an SLNAS architecture (no 'blocks' key); "
                            f"pass the best_arch.json of train_search_slnas.py")
        return arch._replace(blocks=slnas.parse_blocks(args.blocks)) if args.blocks else arch
    text = args.arch or DEFAULT_ARCH
    try:
        cells = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError("--arch is not JSON; write two lists of 20 ints: \"[[0,1,...],[...]]\"") from exc
    blocks = slnas.parse_blocks(args.blocks) if args.blocks else DEFAULT_BLOCKS
    return genotypes.seq_from_lists(cells, blocks, '--arch')


@cli.cli
def main(argv=None):
    args = cli.parse(build_parser(), argv)
    if args.child_out_filters < 2 or args.child_out_filters % 2:
        raise UserError(f"--child_out_filters must be even and at least 2, got {args.child_out_filters}")
    if not 0 <= args.droppath < 1 or not 0 < args.drop_path_ramp <= 1:
        raise UserError("--droppath must lie in [0, 1) and --drop_path_ramp in (0, 1]")
    arch = resolve_arch(args)
    stride4 = bool(args.stride4_stem)
    device = devices.select_device(args.device)
    info = training.dataset_info(args, need_data=not args.dry_run)
    slnas.check_input(info, arch.blocks, stride4, args.blurpool_stem)
    utils.seed_everything(args.seed)
    network = slnas.Network(args.child_out_filters, arch.blocks, info.num_classes, arch=arch, stride4_stem=stride4,
                            blurpool_stem=args.blurpool_stem)
    if args.initialize_weights:
        slnas.initialize_weights(network)
    model = devices.place_model(network, args, device)
    input_shape = (info.in_channels, info.image_size, info.image_size)
    if args.dry_run:
        print(complexity.describe(model, input_shape)[2])
        return 0

    network = {'C': args.child_out_filters, 'classes': info.num_classes, 'stride4': stride4,
               'blurpool_stem': args.blurpool_stem,
               'arch': genotypes.seq_to_dict(arch)}
    run = runs.Run(args.save, args, args.resume, kind='retrain-slnas',
                   signature=json.dumps({'kind': 'slnas-retrain', **network, 'amp': args.amp}))
    loaders = evaluation.build_loaders(args, device)

    params, _, description = complexity.describe(model, input_shape)
    logger.info('retrain %s on %s: %s', genotypes.seq_to_dict(arch), args.dataset, description.replace('\n', ', '))
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smooth)
    optimizer = torch.optim.SGD(slnas.no_decay_groups(model, args.weight_decay), args.learning_rate,
                                momentum=args.momentum)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs, eta_min=args.learning_rate_min)
    ramp_epochs = max(1, int(args.drop_path_ramp * args.epochs))
    result = evaluation.train_and_test(
        args, run, model, device, loaders, optimizer, scheduler,
        lambda outputs, y: criterion(outputs[0], y) + args.aux_weight * slnas.aux_loss(criterion, outputs[1], y),
        lambda epoch: args.droppath * min(epoch, ramp_epochs) / args.epochs, params)
    if result is None:
        return 0
    if devices.is_main():
        utils.atomic_torch_save({'state_dict': model.state_dict(), 'network': network, 'args': vars(args),
                                 'metrics': result}, run.path('trained.pt'))
    logger.info('test top1 %.2f%% (error %.2f%%); model written to %s', result['top1'], 100 - result['top1'],
                run.path('trained.pt'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
