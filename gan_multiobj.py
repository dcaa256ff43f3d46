"""Train NAG's conditional graph GAN on accuracy and parameter-count classes (multi-objective NAG).

    python gan_multiobj.py --nas_dataset runs/nasdata-XYZ/archs.jsonl --n_perf_classes 3 --n_params_classes 3

Jing, Xu and Zhang, "A Neural Architecture Generator for Efficient Search Space", Neurocomputing 2021
(reference `gan_multiobj.py`).  The same training as gan.py, with a second label (the
quantile class of params_MB) and, as in the reference, no gradient clipping (--clip_value 0).
"""
import sys

import cli
import nag_generator

main = cli.cli(lambda argv=None: nag_generator.train_gan(argv, ['accuracy', 'params_MB'], clip_norm=0.0))

if __name__ == '__main__':
    sys.exit(main())
