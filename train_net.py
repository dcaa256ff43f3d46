"""Train a CIFAR ResNet with an attention unit in every block (the ANAS evaluation), or the
plain and SE-ResNet baselines.

Dang, "Exploring Attention Convolutional Neural Network via Neural Architecture Search", 2019
(reference code DangChuong-DC/Attention-Neural-Architecture-Search, `anas/train_net.py`); He et
al., CVPR 2016 (CIFAR ResNets); Hu et al., CVPR 2018 (SE).

    python train_net.py --net_type resnet20                               # the shipped ANAS unit
    python train_net.py --net_type resnet32 --arch_path runs/anas-exp1/genotype.json
    python train_net.py --net_type resnet56 --attention se                # SE-ResNet baseline
    python train_net.py --net_type resnet20 --attention none              # plain ResNet

The loop, logs, checkpoints and --resume are those of every train script (evaluation.train_main);
a trained.pt is tested with `test_CIFAR10.py --model_path` (or test_CIFAR100.py).
"""
import sys

import cli
import evaluation


@cli.cli
def main(argv=None):
    return evaluation.train_main(argv, 'anas')


if __name__ == '__main__':
    sys.exit(main())
