"""Test a trained model on the CIFAR100 test split: top-1 and top-5 accuracy.

    python test_CIFAR100.py --auxiliary --model_path runs/train-XYZ/trained.pt
"""
import sys

import cli
from evaluation import test_main

main = cli.cli(lambda argv=None: test_main(argv, 'cifar100'))

if __name__ == '__main__':
    sys.exit(main())
