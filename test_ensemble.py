"""Test an ensemble of trained models on a test split: NAG's `test_ensemble.py` (hard or soft voting).

    python test_ensemble.py --model_paths runs/train-A/trained.pt runs/train-B/trained.pt runs/train-C/trained.pt
    python test_ensemble.py --model_paths A B C --voting soft --dataset cifar100

Jing, Xu and Zhang, "A Neural Architecture Generator for Efficient Search Space", Neurocomputing 2021
(reference `build_nas_dataset/test_ensemble.py`).  Soft voting averages the members' logits; hard
voting takes, at each rank r of the top 5, the class most members rank r-th (ties to the smaller
class index), and a sample counts as a top-k hit when its label is among the first k of these.
Unlike the reference, a label voted at two ranks counts once.  Every member reads the test split
as its own training prepared it.
"""
import json
import sys

import torch
import torch.nn.functional as F

import cli
import datasets
import devices
import training
import utils
from evaluation import load_trained, test_split
from utils import UserError

VOTINGS = ('hard', 'soft')


def ensemble_accuracy(logits, target, voting, topk=(1, 5)):
    """Top-k accuracies (percent) of the members' `logits` (a list of N x C tensors) against `target`."""
    maxk = max(topk)
    if voting == 'soft':
        ranked = torch.stack(logits).mean(0).topk(maxk, 1).indices
    else:
        ranks = torch.stack([member.topk(maxk, 1).indices for member in logits])  # members x N x maxk
        ranked = F.one_hot(ranks, logits[0].shape[1]).sum(0).argmax(-1)           # N x maxk
    hits = ranked == target[:, None]
    return [100.0 * int(hits[:, :k].any(1).sum()) / len(target) for k in topk]


@torch.no_grad()
def member_logits(model, loader, device):
    model.to(device).eval()
    outputs, targets = [], []
    for x, y in loader:
        out = model(x.to(device))
        outputs.append((out[0] if isinstance(out, tuple) else out).float().cpu())
        targets.append(y)
    return torch.cat(outputs), torch.cat(targets)


def build_parser():
    parser = cli.default_parser(__doc__.splitlines()[0])
    parser.add_argument('--model_paths', nargs='+', required=True, help='trained.pt files written by train_*.py')
    parser.add_argument('--voting', choices=VOTINGS, default='hard')
    parser.add_argument('--dataset', default='cifar10')
    parser.add_argument('--data', default='data')
    parser.add_argument('--batch_size', type=int, default=500)
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--device', default='auto')
    parser.add_argument('--seed', type=int, default=0)
    return parser


@cli.cli
def main(argv=None):
    args = build_parser().parse_args(argv)
    device = devices.select_device(args.device)
    info = datasets.dataset_info(args.dataset, args.data)
    utils.seed_everything(args.seed)
    cli.configure_logging()
    logits, target = [], None
    for path in args.model_paths:
        model, config, _, trained_args = load_trained(path)
        if config['num_classes'] != info.num_classes:
            raise UserError(f"{path} classifies {config['num_classes']} classes but --dataset {args.dataset} has "
                            f"{info.num_classes}; pass the dataset the members were trained on")
        loader = training.make_loader(test_split(args, config, trained_args), args.batch_size, False, args.workers,
                                      device)
        member, labels = member_logits(model, loader, device)
        if target is not None and not torch.equal(labels, target):
            raise UserError(f"{path} reads the test split in another order or size than the first member")
        logits.append(member)
        target = labels
    top1, top5 = ensemble_accuracy(logits, target, args.voting)
    cli.logger.info('%s voting over %d models: top1 %.2f%% top5 %.2f%%', args.voting, len(logits), top1, top5)
    print(json.dumps({'voting': args.voting, 'members': len(logits), 'top1': top1, 'top5': top5, 'error': 100 - top1}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
