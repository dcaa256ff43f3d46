"""Train a searched cell on ImageNet from scratch (the DARTS evaluation protocol and defaults).

    python train_ImageNet.py --auxiliary --arch Att_DARTS
    python train_ImageNet.py --auxiliary --arch_path runs/search-XYZ/genotype.json
    python train_ImageNet.py --arch Att_DARTS --dry_run
"""
import sys

import cli
from evaluation import train_main

main = cli.cli(lambda argv=None: train_main(argv, 'imagenet'))

if __name__ == '__main__':
    sys.exit(main())
