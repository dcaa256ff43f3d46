"""Generate architectures of a wanted accuracy class with a trained NAG generator, then random-search them.

    python generate_archs.py --generator runs/gan-XYZ/generator.pt --acc_class 2 --num 100
    python generate_archs.py --generator G --acc_class 2 --search 5 --search_epochs 2 -- --dataset fashion-mnist
    python generate_archs_multiobj.py --generator G --acc_class 2 --params_class 0 --num 100

Jing, Xu and Zhang, "A Neural Architecture Generator for Efficient Search Space", Neurocomputing 2021
(reference `generate_archs*.py` and `build_nas_dataset/eval_archs.py`).  Every kept
architecture is a legal DAG (repaired as in nag_cells.repair, distinct within its class).

Run directory (--save): class_<label>/archs.jsonl (NAG cells) and class_<label>/arch_<k>.json (the
architecture's JSON that train_CIFAR10.py --arch_path and visualize.py read), for every class unless
--acc_class (and --params_class) pick one.  With --search N (default 50, as in the reference), the
first N architectures of the searched class (--acc_class, default the best; --params_class, default
0) are each trained with train_CIFAR10.py for --search_epochs with the reference's settings (batch
128, the first 50 epochs of a 600-epoch cosine schedule, the auxiliary head, Cutout, drop path 0.2;
--plain_search: train_CIFAR10.py's own defaults over exactly that budget) into search/arch_<k>/, and the one with
the best final held-out accuracy is written to best.json (and drawn as a DAG into
normal_best / reduce_best .dot/.png); search.jsonl lists every score.  Flags
after `--` go to train_CIFAR10.py (dataset, width, cells, ...).  As in the reference, that held-out
accuracy is train_CIFAR10.py's test-split accuracy.
"""
import sys

import cli
import nag_generator

main = cli.cli(lambda argv=None: nag_generator.generate(argv, ['accuracy']))

if __name__ == '__main__':
    sys.exit(main())
