"""Test a trained model on the CIFAR10 test split: top-1 and top-5 accuracy.

    python test_CIFAR10.py --auxiliary --model_path runs/train-XYZ/trained.pt
"""
import sys

import cli
from evaluation import test_main

main = cli.cli(lambda argv=None: test_main(argv, 'cifar10'))

if __name__ == '__main__':
    sys.exit(main())
