"""Test a trained model on the ImageNet test split: top-1 and top-5 accuracy.

    python test_ImageNet.py --auxiliary --model_path runs/train-XYZ/trained.pt
"""
import sys

import cli
from evaluation import test_main

main = cli.cli(lambda argv=None: test_main(argv, 'imagenet'))

if __name__ == '__main__':
    sys.exit(main())
