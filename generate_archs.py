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
import itertools
import json
import os
import sys

import flags
import genotypes
import nag
import nag_cells
import training
import visualize
from evaluation import train_main
from gan import load_generator
from training import logger
from utils import UserError

CLASS_FLAGS = {'accuracy': 'acc_class', 'params_MB': 'params_class'}
# The reference's `build_nas_dataset/eval_archs.py`: batch 128, SGD 0.025 (momentum 0.9, wd 3e-4) on a
# 600-epoch cosine schedule of which --search_epochs are trained, the auxiliary head, Cutout 16 and
# drop path 0.2 (keep 0.8), at train_CIFAR10.py's width (36 channels, 20 cells) and classifier dropout 0.4.
REFERENCE_SEARCH_FLAGS = ['--batch_size', '128', '--learning_rate', '0.025', '--momentum', '0.9', '--weight_decay',
                          '3e-4', '--scheduler', 'cosine', '--schedule_epochs', '600', '--auxiliary', '--cutout',
                          '--cutout_length', '16', '--drop_path_prob', '0.2']


def build_parser(objectives):
    parser = training.default_parser(__doc__.splitlines()[0])
    parser.add_argument('--generator', required=True, help='generator.pt written by gan.py / gan_multiobj.py')
    parser.add_argument('--acc_class', type=int, default=None, help='accuracy class (default: every class)')
    if 'params_MB' in objectives:
        parser.add_argument('--params_class', type=int, default=None, help='parameter class (default: every class)')
    parser.add_argument('--num', type=int, default=100, help='architectures per class')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--save', default=None, help='run directory (default: runs/gen-<time>)')
    parser.add_argument('--search', type=int, default=50,
                        help='random search over the first N of the searched class (0: off)')
    parser.add_argument('--search_epochs', type=int, default=50, help='training epochs of each searched architecture')
    parser.add_argument('--plain_search', action='store_true',
                        help="train searched architectures with train_CIFAR10.py's defaults (SGD cosine over "
                             "--search_epochs, no auxiliary head, Cutout or drop path) instead of the reference's "
                             "eval_archs.py settings")
    parser.add_argument('--device', default='auto')
    return parser


def class_name(labels):
    return 'class_' + '_'.join(map(str, labels))


def main_for(argv, objectives):
    argv = list(sys.argv[1:] if argv is None else argv)
    train_args = argv[argv.index('--') + 1:] if '--' in argv else []
    args = flags.parse_args(build_parser(objectives), argv[:argv.index('--')] if '--' in argv else argv)
    generator, record = load_generator(args.generator)
    if record['objectives'] != objectives:
        raise UserError(f"{args.generator} is conditioned on {', '.join(record['objectives'])}; use "
                        f"{'generate_archs_multiobj.py' if len(record['objectives']) > 1 else 'generate_archs.py'}")
    generator.to(training.select_device(args.device))
    choices = []
    for objective, classes in zip(objectives, generator.classes):
        wanted = getattr(args, CLASS_FLAGS[objective])
        if wanted is not None and not 0 <= wanted < classes:
            raise UserError(f"--{CLASS_FLAGS[objective]} {wanted} is out of range; "
                            f"the generator has classes 0..{classes - 1}")
        choices.append([wanted] if wanted is not None else list(range(classes)))
    searched = [c[0] if len(c) == 1 else (classes - 1 if o == 'accuracy' else 0)
                for c, o, classes in zip(choices, objectives, generator.classes)]

    run = training.Run(args.save, args, kind='gen')
    run.start()
    generated = {}
    for labels in itertools.product(*choices):
        archs = nag.generate(generator, list(labels), args.num, seed=args.seed)
        folder = run.path(class_name(labels))
        os.makedirs(folder, exist_ok=True)
        for k, arch in enumerate(archs):
            run.append_jsonl(os.path.join(class_name(labels), 'archs.jsonl'), nag_cells.arch_to_dict(arch))
            genotypes.save(arch, os.path.join(folder, f'arch_{k:03d}.json'))
        generated[tuple(labels)] = archs
        logger.info('%s: %d legal architectures%s', class_name(labels), len(archs),
                    '' if len(archs) == args.num else f' (of {args.num} asked; the generator repeats itself)')
    if args.search:
        search_flags = train_args if args.plain_search else REFERENCE_SEARCH_FLAGS + train_args
        search(run, generated[tuple(searched)][:args.search], class_name(searched), args.search_epochs, search_flags)
    return 0


def search(run, archs, folder, epochs, train_args):
    """Train each architecture briefly with train_CIFAR10.py; write the best one to best.json."""
    if not archs:
        raise UserError(f'{folder} has no architecture to search; train the GAN longer or ask for another class')
    best = None
    for k, arch in enumerate(archs):
        arch_path = run.path(os.path.join(folder, f'arch_{k:03d}.json'))
        save = run.path(os.path.join('search', f'arch_{k:03d}'))
        train_main(['--epochs', str(epochs), *train_args, '--arch_path', arch_path, '--save', save], 'cifar10')
        training.configure_logging(run.path('log.txt'))  # the training run had taken the logger over
        with open(os.path.join(save, 'metrics.jsonl')) as f:
            accuracy = json.loads(f.read().splitlines()[-1])['valid_acc']
        run.append_jsonl('search.jsonl', {'arch': arch_path, 'accuracy': accuracy, **nag_cells.arch_to_dict(arch)})
        if best is None or accuracy > best[0]:
            best = (accuracy, arch)
    genotypes.save(best[1], run.path('best.json'))
    visualize.draw_genotype(best[1], 'best', run.dir)
    logger.info('best of %d: %.2f%% -> %s', len(archs), best[0], run.path('best.json'))


main = training.cli(lambda argv=None: main_for(argv, ['accuracy']))

if __name__ == '__main__':
    sys.exit(main())
