"""Train a searched cell on CIFAR100 from scratch (the DARTS evaluation protocol and defaults).

    python train_CIFAR100.py --auxiliary --cutout --arch Att_DARTS
    python train_CIFAR100.py --auxiliary --arch_path runs/search-XYZ/genotype.json
    python train_CIFAR100.py --arch Att_DARTS --dry_run
"""
import sys

import cli
from evaluation import train_main

main = cli.cli(lambda argv=None: train_main(argv, 'cifar100'))

if __name__ == '__main__':
    sys.exit(main())
