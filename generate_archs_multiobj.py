"""Generate architectures of a wanted accuracy and parameter class with a multi-objective NAG generator.

    python generate_archs_multiobj.py --generator runs/gan-XYZ/generator.pt --acc_class 2 --params_class 0 --num 100

Jing, Xu and Zhang, "A Neural Architecture Generator for Efficient Search Space", Neurocomputing 2021
(reference `generate_archs_multiobj.py`).  generate_archs.py with the second label; the
output folders are class_<acc>_<params>.
"""
import sys

import cli
import nag_generator

main = cli.cli(lambda argv=None: nag_generator.generate(argv, ['accuracy', 'params_MB']))

if __name__ == '__main__':
    sys.exit(main())
