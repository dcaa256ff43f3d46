"""ANAS: search the attention unit of a CIFAR ResNet (ResNet-20 by default) with DARTS.

Dang, "Exploring Attention Convolutional Neural Network via Neural Architecture Search", 2019
(reference code DangChuong-DC/Attention-Neural-Architecture-Search, `anas/search_net.py`,
`anas/model_search.py`); Liu, Simonyan and Yang, "DARTS", ICLR 2019 (https://arxiv.org/abs/1806.09055).

    python search_net.py --batch_size 128 --seed 1 --note exp1          # writes runs/anas-exp1/
    python search_net.py --unrolled                                       # second-order architect
    python search_net.py --dataset fashion-mnist --subset 256 --epochs 1 --batch_size 16

The bilevel loop is search.py's (`run_anas`): weights by SGD with cosine annealing on one half of
the training set, the one shared table `alphas` (9 edges x 9 ops) by Adam on the other half, its
gradient norm clipped to --arch_grad_clip (5, as the reference).  The run directory gets
genotype.json ({"att": [...]}, for train_net.py --arch_path) every epoch, alphas.jsonl,
metrics.jsonl, log.txt and checkpoint.pt (--resume).  Unlike the reference, validation runs every
epoch, not only in the last ten; CIFAR-100 is `--dataset cifar100`.

The reference's ANAS bugs: the skip-connect dropout (`--dropout_rate`, default 0) never
ran and is not offered; the evaluation unit's drop path works (anas.AttentionUnit); trained models
are tested by test_CIFAR10.py / test_CIFAR100.py, which read the (logits, None) output; the paper's
"bottom-up top-down" op is in neither the reference code nor the shipped unit and is left out, so
the op set is the code's nine.
"""
import sys

import cli
import search


@cli.cli
def main(argv=None):
    return search.run_anas(search.parse_anas(argv))


if __name__ == '__main__':
    sys.exit(main())
