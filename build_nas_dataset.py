"""Build a NAS dataset for NAG: sample cells, train a weight-sharing one-shot supernet on them, score each.

    python build_nas_dataset.py --dataset cifar10 --num_archs 4000
    python build_nas_dataset.py --dataset fashion-mnist --num_archs 50 --epochs 2 --subset 500 --layers 5

Jing, Xu and Zhang, "A Neural Architecture Generator for Efficient Search Space", Neurocomputing
2021 (reference `build_nas_dataset/build_nas_dataset.py`).  The training set is split:
the first --train_portion trains the supernet (one uniformly drawn architecture per step, both
of its cells), the rest scores every architecture with batch statistics.

As the reference by default: the cells are sampled with their dead ends pruned (`--dead_ends join`
joins them to the output instead), the supernet (nag.OneShotNetwork, 1,725,270 parameters at the
defaults) trains with its auxiliary head (`--no-auxiliary`), depth-scaled drop path
(`--drop_path_prob`, 0 for none) and Cutout (`--no_cutout`), and an architecture's accuracy is the
mean over the last --score_epochs epochs of its top-1 on one freshly drawn scoring batch each epoch.
`--score_epochs 0` scores each architecture once instead, after training, on --eval_batches fixed
batches: --score_epochs times cheaper, as the 4000 architectures are then scored once.

Run directory (--save): pool.jsonl (the sampled architectures), checkpoint.pt and metrics.jsonl of
the supernet training, scores.jsonl (one line per scoring epoch), and archs.jsonl, one line per
scored architecture:
    {"index", "normal": {"matrix", "ops"}, "reduce": {...}, "accuracy", "params_MB", "flops"}
appended as it is written, so `--resume` after a kill skips what is already there.  params_MB and
flops are those of the evaluation network (`--eval_init_channels`, `--eval_layers` = 3N+2 cells)
that train_CIFAR10.py builds from the architecture (nag_networks.NAGNetworkCIFAR), in one unit (the
reference mixed units).
The GAN scripts turn accuracy and params_MB into quantile classes.
"""
import argparse
import json
import os
import random
import sys

import torch
import torch.nn as nn

import cli
import complexity
import datasets
import devices
import nag
import nag_cells
import presets
import runs
import training
import utils
from cli import logger
from nag_networks import NAGNetworkCIFAR, nag_stage_cells
from utils import UserError

ARCHS = 'archs.jsonl'
POOL = 'pool.jsonl'
SCORES = 'scores.jsonl'


def build_parser():
    parser = cli.default_parser(__doc__.splitlines()[0])
    cli.add_common_arguments(parser, batch_size=128, learning_rate=0.025, learning_rate_min=0.001,
                             epochs=150, init_channels=20, layers=11, seed=0)
    g = parser.add_argument_group('NAS dataset')
    g.add_argument('--num_archs', '--num_sampled_arch', type=int, default=4000,
                   help='architectures to sample and score')
    g.add_argument('--max_vertices', type=int, default=nag_cells.MAX_VERTICES,
                   help='vertices per cell, inputs and output included')
    g.add_argument('--train_portion', type=float, default=0.9,
                   help='share of the training set that trains the supernet')
    g.add_argument('--eval_batch_size', type=int, default=500)
    g.add_argument('--eval_batches', type=int, default=1, help='validation batches scoring each architecture')
    g.add_argument('--eval_init_channels', type=int, default=36,
                   help='width of the network whose params/FLOPs are recorded')
    g.add_argument('--eval_layers', type=int, default=20,
                   help='cells (3N+2) of the network whose params/FLOPs are recorded')
    g.add_argument('--dead_ends', choices=list(nag_cells.DEAD_ENDS), default='prune',
                   help="sampled cells' op vertices that reach no output: pruned (the reference) or joined to it")
    g.add_argument('--score_epochs', type=int, default=10,
                   help='accuracy = mean over the last N epochs of one fresh scoring batch each (the reference); '
                        '0: once after training on --eval_batches fixed batches')
    g = parser.add_argument_group('supernet training')
    g.add_argument('--auxiliary', action=argparse.BooleanOptionalAction, default=True,
                   help='auxiliary head after the second reduction (loss weight --auxiliary_weight)')
    g.add_argument('--auxiliary_weight', type=float, default=0.4)
    g.add_argument('--drop_path_prob', type=float, default=0.1,
                   help="drop-path rate of the last cell (the reference's keep probability 0.9), smaller with "
                        "depth, ramped up over the epochs")
    g.add_argument('--no_cutout', dest='cutout', action='store_false', help='no Cutout (on by default, as the reference)')
    parser.set_defaults(cutout=True)
    return presets.add_argument(parser, 'nasdata')


def read_records(path):
    """The complete JSON lines of `path`; a line cut by a kill (and anything after it) is dropped from the file."""
    if not os.path.exists(path):
        return []
    records, kept = [], []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
            kept.append(line)
    if len(kept) < sum(1 for _ in open(path)):
        utils.atomic_write_text(path, ''.join(kept))
    return records


def architecture_pool(run, args):
    pool = read_records(run.path(POOL))
    if len(pool) == args.num_archs:
        return [nag_cells.arch_from_dict(record, f'{run.path(POOL)} line {i + 1}') for i, record in enumerate(pool)]
    archs = nag_cells.sample_architectures(args.num_archs, args.seed, args.max_vertices, args.dead_ends)
    utils.atomic_write_text(run.path(POOL), ''.join(json.dumps(nag_cells.arch_to_dict(a)) + '\n' for a in archs))
    return archs


def scoring_mode(supernet):
    """Evaluation mode (no drop path, no auxiliary head) with batch statistics in every BatchNorm, as
    the reference scores (`bn_train=True`): shared weights fit no one architecture's running statistics."""
    supernet.eval()
    for module in supernet.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.train()


@torch.no_grad()
def one_shot_accuracy(supernet, arch, batches, device):
    """Top-1 (percent) of `arch` in the supernet on `batches`, in scoring_mode."""
    scoring_mode(supernet)
    correct = total = 0
    for x, y in batches:
        logits, _ = supernet(x.to(device), arch)
        correct += (logits.argmax(1) == y.to(device)).sum().item()
        total += y.numel()
    return 100.0 * correct / total


def repeat(loader):
    while True:
        yield from loader


def mean_scores(run, count):
    """Each architecture's mean accuracy over the recorded scoring epochs."""
    epochs = run.read_jsonl(SCORES)
    if not epochs:
        raise UserError(f"{run.path(SCORES)} holds no scores; rerun without --resume or with --score_epochs 0")
    return [sum(record['scores'][i] for record in epochs) / len(epochs) for i in range(count)]


@cli.cli
def main(argv=None):
    args = cli.parse(build_parser(), argv)
    for name, least in (('num_archs', 1), ('eval_batches', 1), ('eval_batch_size', 1), ('max_vertices', 4),
                        ('score_epochs', 0)):
        if getattr(args, name) < least:
            raise UserError(f'--{name} must be at least {least}, got {getattr(args, name)}')
    if not 0 <= args.drop_path_prob < 1:
        raise UserError(f'--drop_path_prob must lie in [0, 1), got {args.drop_path_prob}')
    nag_stage_cells(args.eval_layers, '--eval_layers')
    device = devices.select_device(args.device)
    devices.single_process()
    info = training.dataset_info(args, need_data=not args.dry_run)
    utils.seed_everything(args.seed)
    nag_stage_cells(args.layers)
    supernet = devices.place_model(nag.OneShotNetwork(args.init_channels, info.num_classes, args.layers,
                                                       args.max_vertices, info.in_channels, args.auxiliary,
                                                       info.image_size), args, device)
    input_shape = (info.in_channels, info.image_size, info.image_size)
    if args.dry_run:
        print(f'params: {utils.count_parameters_in_MB(supernet):.6f} M (supernet, every op of every slot)')
        return 0

    signature = json.dumps({'kind': 'nasdata', 'dataset': args.dataset, 'C': args.init_channels, 'layers': args.layers,
                            'max_vertices': args.max_vertices, 'num_archs': args.num_archs, 'seed': args.seed,
                            'auxiliary': args.auxiliary, 'dead_ends': args.dead_ends,
                            'score_epochs': args.score_epochs})
    run = runs.Run(args.save, args, args.resume, kind='nasdata', signature=signature)
    run.truncate_jsonl(SCORES, run.checkpoint['epoch'] if run.checkpoint else 0)
    archs = architecture_pool(run, args)
    train_data = training.load_split(args, train=True)
    weight_idx, arch_idx = datasets.search_split(train_data, args.train_portion, args.subset)
    weight_loader = training.make_loader(torch.utils.data.Subset(train_data, weight_idx), args.batch_size, True,
                                         args.workers, device, drop_last=True)
    if len(weight_loader) == 0:
        raise UserError(f"--batch_size {args.batch_size} is larger than the supernet's training split "
                        f"({len(weight_idx)} images); lower --batch_size")
    scoring_data = torch.utils.data.Subset(training.load_split(args, train=True, augment=False), arch_idx)
    scoring_loader = training.make_loader(scoring_data, args.eval_batch_size, True, args.workers, device)

    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(supernet.parameters(), args.learning_rate, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs, eta_min=args.learning_rate_min)

    scaler = devices.grad_scaler(args, device)

    def run_epoch(ctx):
        lr = scheduler.get_last_lr()[0]
        supernet.train()
        supernet.drop_path_prob = args.drop_path_prob * ctx.epoch / args.epochs

        def step(batch, where, guard):
            x, y = (t.to(device, non_blocking=True) for t in batch)
            arch = archs[random.randrange(len(archs))]
            optimizer.zero_grad(set_to_none=True)
            with devices.autocast(args, device):
                logits, logits_aux = supernet(x, arch)
                loss = criterion(logits, y)
                if logits_aux is not None:
                    loss = loss + args.auxiliary_weight * criterion(logits_aux, y)
            if not training.optimize(loss, optimizer, supernet.parameters(), args.grad_clip, guard, where, scaler):
                return None
            return loss.detach().float(), logits.float(), y

        loss, acc = ctx.train(weight_loader, step, len(weight_loader), f'supernet {ctx.epoch + 1}/{args.epochs}')
        scheduler.step()
        if ctx.epoch >= args.epochs - args.score_epochs:
            batches = repeat(scoring_loader)
            scores = [one_shot_accuracy(supernet, arch, [next(batches)], device) for arch in archs]
            run.append_jsonl(SCORES, {'epoch': ctx.epoch, 'scores': scores})
        return {'lr': lr, 'train_loss': loss, 'train_acc': acc}

    stateful = {'model': supernet, 'optimizer': optimizer, 'scheduler': scheduler, 'scaler': scaler}
    preempted, _ = training.fit(run, args, stateful, run_epoch, loaders=(weight_loader, scoring_loader))
    if preempted:
        return 0

    if args.score_epochs:
        accuracies = mean_scores(run, len(archs))
    else:
        loader = torch.utils.data.DataLoader(scoring_data, batch_size=args.eval_batch_size, shuffle=False,
                                             num_workers=args.workers)
        batches = [batch for _, batch in zip(range(args.eval_batches), loader)]
    done = {record['index'] for record in read_records(run.path(ARCHS))}
    if done:
        logger.info('%d of %d architectures already scored', len(done), len(archs))
    for index, arch in enumerate(archs):
        if index in done:
            continue
        network = NAGNetworkCIFAR(args.eval_init_channels, info.num_classes, args.eval_layers, False, arch,
                                  in_channels=info.in_channels, image_size=info.image_size)
        params, flops, _ = complexity.describe(network, input_shape)
        accuracy = accuracies[index] if args.score_epochs else one_shot_accuracy(supernet, arch, batches, device)
        record = {'index': index, **nag_cells.arch_to_dict(arch), 'accuracy': accuracy, 'params_MB': params, 'flops': flops}
        run.append_jsonl(ARCHS, record)
        if args.report_freq and index % args.report_freq == 0:
            logger.info('arch %d/%d: one-shot accuracy %.2f%%, %.3f M params', index + 1, len(archs),
                        record['accuracy'], params)
    logger.info('NAS dataset written to %s', run.path(ARCHS))
    return 0


if __name__ == '__main__':
    sys.exit(main())
