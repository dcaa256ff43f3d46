"""Random search with weight sharing (RS-WS) on the DARTS / Att-DARTS supernet: `train_search.py --strategy rsws`
(registered in registry.STRATEGIES as 'rsws').

Li and Talwalkar, "Random Search and Reproducibility for Neural Architecture Search", UAI 2019
(reference code liamcli/randomNAS_release, `searchers/random_weight_share.py` and
`benchmarks/cnn/darts/darts_wrapper_discrete.py`).  The weight half of the search split trains the
supernet's shared weights, every batch through one architecture drawn uniformly from the space
(`SearchNetwork.forward(x, genotype)`: only its edges and candidates run); there is no architecture
step.  At the end, --rsws_samples architectures (distinct, drawn with their own seed) are scored by
their one-shot accuracy on the first --rsws_eval_batches batches of the architecture half, the best
--rsws_top of them on the whole architecture half, and the best of those is written to genotype.json.

As in the reference: the weights' schedule and optimiser are the DARTS search's, one-shot scores use
the running BatchNorm statistics (eval mode), and 1000 / 10 / 10 are the defaults.  Unlike it:
architectures are those the DARTS derivation can return (search_space.sample_genotype: no 'none'
edge, so that the result is comparable with the DARTS search's and with `compare.py random:N`),
every architecture is scored on the same un-augmented batches instead of the next batches of a
shuffled stream, and per epoch the run logs the one-shot accuracy of random architectures (one per
architecture-half batch, drawn with a seed of their own) instead of one fixed architecture's.

The run directory gets metrics.jsonl per epoch, checkpoint.pt (--resume, exact as the DARTS search),
rsws_ranking.json (every scored architecture) and genotype.json at the end.  A resume after the
weights are trained redoes only the ranking.
"""
import random

import torch
import torch.nn as nn

import datasets
import devices
import genotypes
import search_space
import training
import utils
from cli import logger
from complexity import describe
from registry import STRATEGIES
from runs import Run
from search import Strategy, search_loaders


@STRATEGIES.register('rsws')
class RandomSearchStrategy(Strategy):
    help = 'random search with weight sharing (Li and Talwalkar 2019) on the same supernet'

    def add_arguments(self, parser):
        g = parser.add_argument_group('random search with weight sharing (--strategy rsws)')
        g.add_argument('--rsws_samples', type=int, default=1000, help='architectures ranked at the end')
        g.add_argument('--rsws_eval_batches', type=int, default=10,
                       help='batches of the architecture half that score each of them')
        g.add_argument('--rsws_top', type=int, default=10,
                       help='best of them scored again on the whole architecture half')

    def check(self, args, model):
        check_arguments(args, model)

    def search(self, args, model, info, device, signature, guards):
        return random_search(args, model, info, device, signature)


def check_arguments(args, model):
    for name in ('rsws_samples', 'rsws_eval_batches', 'rsws_top'):
        if getattr(args, name) < 1:
            raise utils.UserError(f"--{name} must be at least 1, got {getattr(args, name)}")
    size = search_space.space_size(model.lists, model.steps)
    if args.rsws_samples > size:
        raise utils.UserError(f"--rsws_samples {args.rsws_samples} is more than the {size} architectures of the "
                              f"space; lower it")
    # One architecture per step leaves most weights without a gradient, which DDP cannot average.
    devices.single_process()


def scoring_loader(args, device):
    """The architecture half of the search split, un-augmented and in order: every architecture is
    scored on the same images."""
    data = datasets.build_dataset(args.dataset, args.data, train=True, augment=False)
    _, arch_idx = datasets.search_split(data, args.train_portion, args.subset)
    return training.make_loader(torch.utils.data.Subset(data, arch_idx), args.batch_size, False, args.workers, device)


@torch.no_grad()
def one_shot(model, batches, architectures, criterion, device):
    """Mean loss and top-1 (%) over `batches`, the k-th batch through `architectures(k)`."""
    model.eval()
    loss_sum = correct = count = 0.0
    for k, (x, y) in enumerate(batches):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x, architectures(k))
        loss_sum += criterion(logits, y).item() * y.size(0)
        correct += utils.accuracy(logits, y)[0] * y.size(0) / 100
        count += y.size(0)
    return {'loss': loss_sum / max(count, 1), 'top1': 100 * correct / max(count, 1)}


def rank(args, model, loader, criterion, device, steps):
    """Score --rsws_samples distinct architectures on --rsws_eval_batches batches, the best
    --rsws_top on all of `loader`; returns the records of both rounds, best first."""
    candidates = search_space.sample_genotypes(args.rsws_samples, f'rsws-ranking-{args.seed}', args.location,
                                               args.primitives, steps)
    first_batches = []
    for batch in loader:
        first_batches.append(batch)
        if len(first_batches) == args.rsws_eval_batches:
            break
    scored = []
    for index, genotype in enumerate(candidates):
        score = one_shot(model, first_batches, lambda k: genotype, criterion, device)
        scored.append({'sample': index, 'valid_acc': score['top1'], 'valid_loss': score['loss'],
                       'genotype': genotypes.to_dict(genotype)})
    # Ties keep the order of drawing.
    scored.sort(key=lambda record: -record['valid_acc'])
    finalists = []
    for record in scored[:args.rsws_top]:
        genotype = candidates[record['sample']]
        score = one_shot(model, loader, lambda k: genotype, criterion, device)
        finalists.append({**record, 'full_valid_acc': score['top1'], 'full_valid_loss': score['loss']})
    finalists.sort(key=lambda record: -record['full_valid_acc'])
    return scored, finalists


def random_search(args, model, info, device, signature):
    """RS-WS on `model` (a SearchNetwork); the run directory and the split as search.search's (the
    weights train on the first half).  Returns whether a signal stopped it."""
    run = Run(args.save, args, args.resume, kind='search', signature=signature)
    train_loader, _ = search_loaders(args, device)
    valid_loader = scoring_loader(args, device)
    shape = (info.in_channels, info.image_size, info.image_size)
    params, _, description = describe(model, shape)
    logger.info('RS-WS on %s: %s', args.dataset, description.replace('\n', ', '))
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.weight_parameters(), args.learning_rate, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs, eta_min=args.learning_rate_min)
    scaler = devices.grad_scaler(args, device)
    lists, steps = model.lists, model.steps

    def run_epoch(ctx):
        lr = scheduler.get_last_lr()[0]
        model.train()

        def step(batch, where, guard):
            x, y = (t.to(device, non_blocking=True) for t in batch)
            # The global Python RNG is in every checkpoint, so a resume draws the same architectures.
            genotype = search_space.sample_genotype(random, lists, steps)
            optimizer.zero_grad(set_to_none=True)
            with devices.autocast(args, device):
                logits = model(x, genotype)
                loss = criterion(logits, y)
            if not training.optimize(loss, optimizer, model.weight_parameters(), args.grad_clip, guard, where, scaler):
                return None
            return loss.detach().float(), logits.float(), y

        train_loss, train_acc = ctx.train(train_loader, step, len(train_loader), f'rsws {ctx.epoch + 1}/{args.epochs}')
        scheduler.step()
        drawing = random.Random(f'rsws-valid-{args.seed}-{ctx.epoch}')
        valid = one_shot(model, valid_loader, lambda k: search_space.sample_genotype(drawing, lists, steps),
                         criterion, device)
        return {'lr': lr, 'train_loss': train_loss, 'train_acc': train_acc, 'valid_loss': valid['loss'],
                'valid_acc': valid['top1'], 'params_MB': params}

    stateful = {'model': model, 'optimizer': optimizer, 'scheduler': scheduler, 'scaler': scaler}
    preempted, _ = training.fit(run, args, stateful, run_epoch, loaders=(train_loader,), device=device)
    if preempted:
        return True
    logger.info('ranking %d architectures on %d batches, the best %d on all %d', args.rsws_samples,
                args.rsws_eval_batches, args.rsws_top, len(valid_loader))
    scored, finalists = rank(args, model, valid_loader, criterion, device, steps)
    utils.atomic_write_json(run.path('rsws_ranking.json'), {'finalists': finalists, 'scored': scored})
    best = genotypes.from_dict(finalists[0]['genotype'])
    genotypes.save(best, run.path('genotype.json'))
    logger.info('genotype = %s (one-shot valid_acc %.2f%%)', best, finalists[0]['full_valid_acc'])
    logger.info('search done; genotype written to %s', run.path('genotype.json'))
    print(run.path('genotype.json'))
    return False

