"""Train a searched cell on CIFAR10 from scratch (the DARTS evaluation protocol and defaults).

    python train_CIFAR10.py --auxiliary --cutout --arch Att_DARTS
    python train_CIFAR10.py --auxiliary --arch_path runs/search-XYZ/genotype.json
    python train_CIFAR10.py --arch Att_DARTS --dry_run
"""
import sys

import cli
from evaluation import train_main

main = cli.cli(lambda argv=None: train_main(argv, 'cifar10'))

if __name__ == '__main__':
    sys.exit(main())
