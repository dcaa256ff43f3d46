"""ANAS: search the attention unit of a CIFAR ResNet (ResNet-20 by default) with DARTS.

Dang, "Exploring Attention Convolutional Neural Network via Neural Architecture Search", 2019
(reference code DangChuong-DC/Attention-Neural-Architecture-Search, `anas/search_net.py`,
`anas/model_search.py`); Liu, Simonyan and Yang, "DARTS", ICLR 2019 (https://arxiv.org/abs/1806.09055).

    python search_net.py --batch_size 128 --seed 1 --note exp1          # writes runs/anas-exp1/
    python search_net.py --unrolled                                       # second-order architect
    python search_net.py --dataset fashion-mnist --subset 256 --epochs 1 --batch_size 16

The bilevel loop is train_search.search: weights by SGD with cosine annealing on one half of the
training set, the one shared table `alphas` (9 edges x 9 ops) by Adam on the other half, its
gradient norm clipped to --arch_grad_clip (5, as the reference).  The run directory gets
genotype.json ({"att": [...]}, for train_net.py --arch_path) every epoch, alphas.jsonl,
metrics.jsonl, log.txt and checkpoint.pt (--resume).  Unlike the reference, validation runs every
epoch, not only in the last ten; CIFAR-100 is `--dataset cifar100`.

The reference's ANAS bugs: the skip-connect dropout (`--dropout_rate`, default 0) never
ran and is not offered; the evaluation unit's drop path works (model.AttentionUnit); trained models
are tested by test_CIFAR10.py / test_CIFAR100.py, which read the (logits, None) output; the paper's
"bottom-up top-down" op is in neither the reference code nor the shipped unit and is left out, so
the op set is the code's nine.
"""
import json
import os
import sys

import datasets
import latency
import presets
import training
import utils
from model import check_net_type
from model_search import AttentionSearchResNet
from train_search import add_search_arguments, search


def build_parser():
    parser = training.default_parser(__doc__.splitlines()[0])
    training.add_common_arguments(parser, batch_size=128, learning_rate=0.1, learning_rate_min=0.0,
                                  weight_decay=1e-4, epochs=50, seed=2, grad_clip=5.0, workers=2)
    g = parser.add_argument_group('ANAS')
    g.add_argument('--net_type', default='resnet20', help='backbone of the search: resnet20, resnet32, ...')
    g.add_argument('--note', default='try', help='run name: the run directory is runs/anas-NOTE unless --save')
    add_search_arguments(parser)
    parser.set_defaults(arch_grad_clip=5.0)
    return presets.add_argument(parser, 'anas_search')


@training.cli
def main(argv=None):
    args = training.parse(build_parser(), argv)
    check_net_type(args.net_type)
    args.save = args.save or os.path.join('runs', f'anas-{args.note}')
    device = training.select_device(args.device)
    info = training.dataset_info(args, need_data=not args.dry_run)
    objective = latency.objective(args, latency.anas_settings(args.net_type, info.image_size))
    utils.seed_everything(args.seed)
    model = training.place_model(AttentionSearchResNet(args.net_type, info.num_classes, in_channels=info.in_channels),
                                 args, device)
    signature = json.dumps({'kind': 'anas-search', 'net_type': args.net_type, 'classes': info.num_classes,
                            'in_channels': info.in_channels, **latency.signature(args)})
    search(args, model, info, device, signature, objective=objective)
    return 0


if __name__ == '__main__':
    sys.exit(main())
