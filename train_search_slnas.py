"""SLNAS search: a weight-sharing single-path supernet and a sampler, trained in alternation
(Chen, "Stage and Lite Search Technology in CNN Architecture Search"; ENAS-style; reference train_search_cifar.py).

    python train_search_slnas.py --save cifar10_searcher --seed 0 --batch_size 96 --child_out_filters 16 \\
        --dataset cifar10 --epochs 150 --blocks "[2,2]" --weight_decay 3e-4
    python train_search_slnas.py --dataset imagefolder --data data/AID_50 --controller ga

Every epoch: (1) one pass over 80% of the training set, each batch on a sampled architecture
(--controller lstm: the Stage LSTM; random and ga: uniform random); (2) the sampler's own step on
batches of the other 20% (REINFORCE updates, random draws, or GA generations), reward = top-1
accuracy (%) of the shared weights on one batch; (3) the best of --candidates architectures, scored
on --candidate_batches reward batches, is written to best_arch.json and validated on the test split.

Writes into the run directory: archs.jsonl (every scored architecture with its reward, epoch and
phase), best_arch.json (for retrain_slnas.py --arch_path and visualize.py), metrics.jsonl,
checkpoint.pt (--resume), log.txt.

Fixed with respect to the reference: --blocks is a flag of the CIFAR search too,
--droppath is a float, SGD gets the no-weight-decay groups for 1-D parameters, and the final
architecture is chosen by the script instead of by hand from the logs.
"""
import json
import sys

import torch
import torch.nn as nn

import cli
import complexity
import datasets
import devices
import genotypes
import presets
import runs
import slnas
import training
import utils
from cli import logger
from utils import UserError


def build_parser():
    parser = cli.default_parser(__doc__.splitlines()[0])
    cli.add_common_arguments(parser, dataset='cifar10', batch_size=96, learning_rate=0.025,
                             learning_rate_min=0.0, epochs=150, seed=2, weight_decay=3e-4,
                             cifar_normalization='slnas')
    slnas.add_slnas_arguments(parser, out_filters=48, blocks='[4,4]', drop_path=0.35, initialize=True)
    g = parser.add_argument_group('sampler')
    g.add_argument('--controller', choices=['lstm', 'random', 'ga'], default='lstm')
    g.add_argument('--controller_steps', type=int, default=150,
                   help='REINFORCE updates (lstm) or scored random draws (random) per epoch')
    g.add_argument('--controller_lr', type=float, default=3.5e-5)
    g.add_argument('--entropy_weight', type=float, default=1e-4)
    g.add_argument('--bl_dec', type=float, default=0.95, help='decay of the reward moving average')
    g.add_argument('--population', type=int, default=200, help='GA population')
    g.add_argument('--generations', type=int, default=10, help='GA generations per epoch')
    g.add_argument('--cross_rate', type=float, default=0.7)
    g.add_argument('--mutation_rate', type=float, default=0.001)
    g.add_argument('--train_portion', type=float, default=0.8,
                   help='share of the training set for the weights; the rest gives the rewards')
    g.add_argument('--candidates', type=int, default=10, help='architectures scored for best_arch.json per epoch')
    g.add_argument('--candidate_batches', type=int, default=5, help='reward batches scoring each candidate')
    return presets.add_argument(parser, 'slnas_search')


def make_sampler(args, blocks, device):
    if args.controller == 'lstm':
        return slnas.LSTMSampler(blocks, args.controller_lr, args.entropy_weight, args.bl_dec, device)
    if args.controller == 'random':
        return slnas.RandomSampler(blocks, args.seed)
    if args.population < 2:
        raise UserError(f"--population must be at least 2, got {args.population}")
    return slnas.GASampler(blocks, args.seed, args.population, args.cross_rate, args.mutation_rate)


def repeat(loader):
    while True:
        yield from loader


def check_counts(args):
    for name in ('controller_steps', 'candidates', 'candidate_batches', 'generations', 'child_out_filters'):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.child_out_filters % 2:
        raise UserError(f"--child_out_filters must be even (ShuffleNet units split channels in half), "
                        f"got {args.child_out_filters}")
    if not 0 <= args.droppath < 1:
        raise UserError(f"--droppath must lie in [0, 1), got {args.droppath}")


@cli.cli
def main(argv=None):
    args = cli.parse(build_parser(), argv)
    check_counts(args)
    blocks = slnas.parse_blocks(args.blocks)
    stride4 = True if args.stride4_stem is None else args.stride4_stem
    device = devices.select_device(args.device)
    devices.single_process()
    info = training.dataset_info(args, need_data=not args.dry_run)
    slnas.check_input(info, blocks, stride4, args.blurpool_stem)
    utils.seed_everything(args.seed)
    network = slnas.Network(args.child_out_filters, blocks, info.num_classes, stride4_stem=stride4,
                            blurpool_stem=args.blurpool_stem)
    if args.initialize_weights:
        slnas.initialize_weights(network)
    model = devices.place_model(network, args, device)
    sampler = make_sampler(args, blocks, device)
    input_shape = (info.in_channels, info.image_size, info.image_size)
    if args.dry_run:
        # The supernet's FLOPs depend on the path; report the first sampled one.  Its BatchNorms
        # normalise over the batch even in eval mode, which one image cannot give.
        model.arch = sampler.sample()
        print(complexity.describe(model, input_shape, batch=2)[2])
        return 0

    signature = json.dumps({'kind': 'slnas-search', 'C': args.child_out_filters, 'blocks': blocks,
                            'stride4': stride4, 'blurpool_stem': args.blurpool_stem, 'controller': args.controller,
                            'classes': info.num_classes})
    run = runs.Run(args.save, args, args.resume, kind='search-slnas', signature=signature)
    # Records of an epoch cut short by a kill are written again when it is replayed.
    run.truncate_jsonl('archs.jsonl', run.checkpoint['epoch'] if run.checkpoint else 0)
    train_data = training.load_split(args, train=True)
    weight_idx, reward_idx = datasets.search_split(train_data, args.train_portion, args.subset)
    if args.batch_size > min(len(weight_idx), len(reward_idx)):
        raise UserError(f"--batch_size {args.batch_size} is larger than the search split "
                        f"({len(weight_idx)} / {len(reward_idx)} images); lower --batch_size")
    train_loader = training.make_loader(torch.utils.data.Subset(train_data, weight_idx), args.batch_size,
                                        True, args.workers, device, drop_last=True)
    reward_loader = training.make_loader(torch.utils.data.Subset(train_data, reward_idx), args.batch_size,
                                         True, args.workers, device, drop_last=True)
    valid_loader = training.make_loader(training.load_split(args, train=False), args.batch_size, False,
                                        args.workers, device)

    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(slnas.no_decay_groups(model, args.weight_decay), args.learning_rate,
                                momentum=args.momentum)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs, eta_min=args.learning_rate_min)
    logger.info('SLNAS search (%s) on %s: supernet %.3f M parameters', args.controller, args.dataset,
                utils.count_parameters_in_MB(model))

    scaler = devices.grad_scaler(args, device)

    def run_epoch(ctx):
        lr = scheduler.get_last_lr()[0]
        model.drop_path_prob = args.droppath * ctx.epoch / args.epochs
        model.train()

        def step(batch, where, guard):
            x, y = (t.to(device, non_blocking=True) for t in batch)
            arch = sampler.sample()
            optimizer.zero_grad(set_to_none=True)
            with devices.autocast(args, device):
                logits, aux = model(x, arch)
                loss = criterion(logits, y) + args.aux_weight * slnas.aux_loss(criterion, aux, y)
            if not training.optimize(loss, optimizer, model.parameters(), args.grad_clip, guard, where, scaler):
                return None
            return loss.detach().float(), logits.float(), y

        train_loss, train_acc = ctx.train(train_loader, step, len(train_loader),
                                          f'search {ctx.epoch + 1}/{args.epochs}')
        scheduler.step()

        rewards = repeat(reward_loader)
        model.eval()

        @torch.no_grad()
        def reward(arch, batches=1):
            correct = total = 0
            for _ in range(batches):
                x, y = (t.to(device, non_blocking=True) for t in next(rewards))
                correct += (model(x, arch)[0].argmax(1) == y).sum().item()
                total += y.numel()
            return 100.0 * correct / total

        def log(arch, value, phase):
            run.append_jsonl('archs.jsonl', {'epoch': ctx.epoch, 'phase': phase, 'reward': value,
                                             'arch': genotypes.seq_to_dict(arch)})

        budget = args.generations if args.controller == 'ga' else args.controller_steps
        sampler.search(reward, budget, log)
        scored = [(reward(arch, args.candidate_batches), arch) for arch in sampler.candidates(args.candidates)]
        for value, arch in scored:
            log(arch, value, 'candidate')
        best_reward, best = max(scored, key=lambda pair: pair[0])
        genotypes.save(best, run.path('best_arch.json'))
        model.arch = best
        valid = training.evaluate(model, valid_loader, criterion, device, no_progress=args.no_progress)
        logger.info('best arch %s (reward %.2f, valid %.2f)', genotypes.seq_to_dict(best), best_reward, valid['top1'])
        return {'lr': lr, 'train_loss': train_loss, 'train_acc': train_acc, 'best_reward': best_reward,
                'valid_loss': valid['loss'], 'valid_acc': valid['top1'], 'arch': genotypes.seq_to_dict(best)}

    stateful = {'model': model, 'optimizer': optimizer, 'scheduler': scheduler, 'sampler': sampler,
                'scaler': scaler}
    preempted, _ = training.fit(run, args, stateful, run_epoch, loaders=(train_loader, reward_loader, valid_loader))
    if preempted:
        return 0
    logger.info('search done; best architecture written to %s', run.path('best_arch.json'))
    print(run.path('best_arch.json'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
