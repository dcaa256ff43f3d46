"""`--preset`: one flag that selects a paper's protocol on the search and train scripts.

    python train_search.py --preset cnas                  # CNAS's search: its op set, batch 32, 6 layers, ...
    python train_CIFAR10.py --preset cnas --cutout        # CNAS's evaluation, plus Cutout
    python train_CIFAR10.py --preset nag --epochs 20      # NAG's final training, explicit flags win

A preset replaces the script's argparse defaults before the command line is parsed, so every flag
given explicitly still wins.  Its values are the reference implementation's defaults (docs/
differences.md lists them per family): `defaults` apply always; each `when` entry (flag, value,
settings) applies its settings when that flag, as given or by default, has that value (the
references change their defaults per data set, and ANAS's SE-ResNet baseline has its own
schedule).  A preset that belongs to another script's step names that script.

The six presets: attdarts (Nakai et al., IJCNN 2020; chomin/Att-DARTS), anas (Dang, 2019;
DangChuong-DC/Attention-Neural-Architecture-Search), cnas (Zhou et al., IEEE Access 2019;
tianbaochou/CNAS), slnas (Chen; Yee-Master/SLNAS), nag (Jing, Xu and Zhang, Neurocomputing 2021;
kunjing96/NAG), nb201 (Dong and Yang, ICLR 2020; D-X-Y/AutoDL-Projects: its search on the
NAS-Bench-201 space, and the benchmark's training of a cell).
"""
import argparse

import datasets
from utils import UserError

NAMES = ('attdarts', 'anas', 'cnas', 'slnas', 'nag', 'nb201')
LARGER_THAN_CIFAR = ('imagefolder', 'tiny-imagenet', 'imagenet', 'food101')

# Where each family's protocol runs, by step, for the one-line answer to a preset on another script.
SCRIPTS = {
    'search': {'attdarts': 'train_search.py', 'cnas': 'train_search.py', 'anas': 'search_net.py',
               'slnas': 'train_search_slnas.py', 'nag': 'build_nas_dataset.py', 'nb201': 'train_search.py'},
    'train': {'attdarts': 'train_CIFAR10.py', 'cnas': 'train_CIFAR10.py', 'nag': 'train_CIFAR10.py',
              'anas': 'train_net.py', 'slnas': 'retrain_slnas.py', 'nb201': 'train_CIFAR10.py'},
}

PRESETS = {
    # train_search.py
    'search': {
        # Att-DARTS `train_search.py` (README: --unrolled).
        'attdarts': {'defaults': dict(location='after_every', primitives='darts', num_meta_node=4, unrolled=True,
                                      batch_size=64, learning_rate=0.025, learning_rate_min=0.001, momentum=0.9,
                                      weight_decay=3e-4, epochs=50, init_channels=16, layers=8, seed=2,
                                      grad_clip=5.0, train_portion=0.5, arch_learning_rate=3e-4,
                                      arch_weight_decay=1e-3, stem_affine=True, cifar_normalization='darts')},
        # CNAS `run/train_search.py`.
        'cnas': {'defaults': dict(location='no_attention', primitives='cnas', num_meta_node=4, unrolled=False,
                                  batch_size=32, learning_rate=0.025, learning_rate_min=0.003, momentum=0.9,
                                  weight_decay=3e-4, epochs=60, init_channels=16, layers=6, seed=2, grad_clip=5.0,
                                  train_portion=0.5, arch_learning_rate=3e-4, arch_weight_decay=1e-3,
                                  stem_affine=False, cifar_normalization='cnas'),
                 'when': [('dataset', 'cifar100', dict(epochs=50, init_channels=24)),
                          ('dataset', 'food101', dict(image_size=128, pipeline='cnas-food101'))]
                 + [('dataset', name, dict(reduce_level=1)) for name in LARGER_THAN_CIFAR]},
        # AutoDL-Projects configs/nas-benchmark/algos/DARTS.config and GDAS.config (50 and 250 epochs;
        # otherwise alike) with the arguments of scripts-search/NAS-Bench-201-algos/DARTS-V1.sh and GDAS.sh.
        'nb201': {'defaults': dict(space='nb201', location='no_attention', unrolled=False, batch_size=64,
                                   learning_rate=0.025, learning_rate_min=0.001, momentum=0.9, nesterov=True,
                                   weight_decay=5e-4, epochs=50, init_channels=16, layers=5, grad_clip=5.0,
                                   train_portion=0.5, arch_learning_rate=3e-4, arch_weight_decay=1e-3,
                                   tau_max=10.0, tau_min=0.1),
                  'when': [('strategy', 'gdas', dict(epochs=250))]},
    },
    # search_net.py
    'anas_search': {
        'anas': {'defaults': dict(net_type='resnet20', batch_size=128, learning_rate=0.1, learning_rate_min=0.0,
                                  momentum=0.9, weight_decay=1e-4, epochs=50, seed=2, grad_clip=5.0,
                                  train_portion=0.5, arch_learning_rate=3e-4, arch_weight_decay=1e-3,
                                  arch_grad_clip=5.0, unrolled=False, cifar_normalization='darts')},
    },
    # train_search_slnas.py
    'slnas_search': {
        # SLNAS `train_search_cifar.py`; `train_search.py` for image folders.
        'slnas': {'defaults': dict(batch_size=96, learning_rate=0.025, learning_rate_min=0.0, momentum=0.9,
                                   weight_decay=3e-4, epochs=150, seed=2, child_out_filters=48, blocks='[4,4]',
                                   droppath=0.35, controller='lstm', controller_lr=3.5e-5, entropy_weight=1e-4,
                                   bl_dec=0.95, controller_steps=150, train_portion=0.8, stride4_stem=True,
                                   initialize_weights=True, cifar_normalization='slnas'),
                  'when': [('dataset', 'imagefolder', dict(batch_size=32, learning_rate_min=1e-4, child_out_filters=16,
                                                           blocks='[1,1]', controller_lr=3.5e-4, image_size=224,
                                                           pipeline='slnas'))]},
    },
    # build_nas_dataset.py
    'nasdata': {
        # NAG `build_nas_dataset/build_nas_dataset.py` (its --cutout_size 16 means Cutout on).
        'nag': {'defaults': dict(batch_size=128, learning_rate=0.025, learning_rate_min=0.001, momentum=0.9,
                                 weight_decay=3e-4, epochs=150, init_channels=20, layers=11, seed=0, grad_clip=5.0,
                                 cutout=True, cutout_length=16, train_portion=0.9, eval_batch_size=500,
                                 num_archs=4000, max_vertices=10, auxiliary=True, auxiliary_weight=0.4,
                                 drop_path_prob=0.1, score_epochs=10, dead_ends='prune')},
    },
    # train_CIFAR10.py, train_CIFAR100.py, train_ImageNet.py
    'train': {
        # Att-DARTS `train_CIFAR10.py` / `train_imagenet.py` (README: --auxiliary --cutout on CIFAR).
        'attdarts': {'defaults': dict(preset_arch='Att_DARTS', auxiliary=True, auxiliary_weight=0.4,
                                      cifar_normalization='darts'),
                     'when': [('dataset', name, dict(cutout=True)) for name in ('cifar10', 'cifar100')]},
        # CNAS `run/train_cnn.py` (its default arch DARTS is DARTS_MORE_V1).
        'cnas': {'defaults': dict(preset_arch='DARTS_MORE_V1', batch_size=128, learning_rate=0.001, momentum=0.9,
                                  weight_decay=5e-4, epochs=200, init_channels=36, layers=20, seed=0,
                                  grad_clip=5.0, drop_path_prob=0.05, auxiliary_weight=0.4, scheduler='step',
                                  gamma=0.97, decay_period=1, label_smooth=None, test_batch_size=128,
                                  pooled_head=None, shuffle_groups='1', cifar_normalization='cnas'),
                 'when': [('dataset', 'cifar10', dict(scheduler='cosine')),
                          ('dataset', 'cifar100', dict(scheduler='cosine')),
                          ('dataset', 'imagenet', dict(weight_decay=3e-5, init_channels=50, drop_path_prob=0.0,
                                                       network='cifar', image_size=128, pipeline='cnas-imagenet')),
                          ('dataset', 'food101', dict(init_channels=48, network='cifar', image_size=128,
                                                      pipeline='cnas-food101'))]},
        # NAG `train_cifar.py` / `train_imagenet.py`: AdaBelief on CIFAR-10 and ImageNet (SGD, its commented-out
        # choice, on CIFAR-100), at a constant rate (the cosine schedule is built but never stepped).
        'nag': {'defaults': dict(preset_arch='NAG', batch_size=96, test_batch_size=500, epochs=600, init_channels=36,
                                 layers=20, seed=0, grad_clip=5.0, cutout=True, cutout_length=16, auxiliary=True,
                                 auxiliary_weight=0.4, drop_path_prob=0.2, optimizer='adabelief', learning_rate=1e-3,
                                 adabelief_eps=1e-8, weight_decay=5e-4, weight_decouple=False, scheduler='constant',
                                 cifar_normalization='darts'),
                'when': [('dataset', 'cifar100', dict(optimizer='sgd', learning_rate=0.025, momentum=0.9,
                                                      weight_decay=3e-4)),
                         ('dataset', 'imagenet', dict(batch_size=256, epochs=250, init_channels=48, layers=14,
                                                      cutout=False, drop_path_prob=0.0, weight_decay=1e-2,
                                                      weight_decouple=True, label_smooth=0.1))]},
        # AutoDL-Projects configs/nas-benchmark/CIFAR.config and ImageNet-16.config: the benchmark's 200-epoch
        # training of every cell (xautodl/procedures/funcs_nasbench.py clips no gradient: an infinite norm).
        'nb201': {'defaults': dict(batch_size=256, learning_rate=0.1, learning_rate_min=0.0, momentum=0.9,
                                   nesterov=True, weight_decay=5e-4, epochs=200, scheduler='cosine',
                                   drop_path_prob=0.0, auxiliary=False, cutout=False, grad_clip=float('inf'),
                                   test_batch_size=256)},
    },
    # train_net.py
    'anas_train': {
        # ANAS `anas/train_net.py`; its SE-ResNet baseline is `se_resnet_cifar/train.py`.
        'anas': {'defaults': dict(net_type='resnet20', batch_size=128, learning_rate=0.1, momentum=0.9,
                                  weight_decay=1e-4, epochs=180, seed=0, grad_clip=5.0, drop_path_prob=0.0,
                                  scheduler='cosine', cifar_normalization='darts'),
                 'when': [('attention', 'se', dict(scheduler='multistep', milestones=[90, 135], gamma=0.1,
                                                   se_reduction=1))]},
    },
    # retrain_slnas.py
    'slnas_train': {
        # SLNAS `retrainer_cifar.py`; `retrainer.py` for image folders.
        'slnas': {'defaults': dict(batch_size=32, learning_rate=0.025, momentum=0.9, weight_decay=3e-4, epochs=600,
                                   seed=2, grad_clip=5.0, child_out_filters=32, droppath=0.35, cutout=True,
                                   label_smooth=0.1, stride4_stem=False, blurpool_stem=False,
                                   initialize_weights=False, cifar_normalization='slnas'),
                  'when': [('dataset', 'imagefolder', dict(droppath=0.5, seed=1, report_freq=10, blocks='[2,2]',
                                                           cutout=False, stride4_stem=True, blurpool_stem=True,
                                                           initialize_weights=True, image_size=224,
                                                           pipeline='slnas'))]},
    },
}

STEP_OF_KIND = {'search': 'search', 'anas_search': 'search', 'slnas_search': 'search', 'nasdata': 'search',
                'train': 'train', 'anas_train': 'train', 'slnas_train': 'train'}


def add_argument(parser, kind):
    """Give a script's parser `--preset`; `kind` names its table in PRESETS."""
    parser.add_argument('--preset', choices=NAMES, default=None,
                        help="a paper's protocol: sets that reference's defaults (explicit flags still win); "
                             "see docs/differences.md")
    parser.preset_kind = kind
    return parser


def _canonical(flag, value):
    if flag == 'dataset':
        try:
            return datasets.canonical_name(value)
        except UserError:
            return value  # the script reports an unknown data set itself
    return value


def settings(kind, name, given):
    """The defaults preset `name` sets on a script of `kind`; `given` maps each flag a `when`
    entry tests to its value in this run."""
    table = PRESETS[kind]
    if name not in table:
        step = STEP_OF_KIND[kind]
        raise UserError(f"--preset {name} has no {step} step in this script; {name} runs its {step} with "
                        f"{SCRIPTS[step][name]} --preset {name}")
    chosen = dict(table[name]['defaults'])
    for flag, value, extra in table[name].get('when', ()):
        if _canonical(flag, given.get(flag)) == value:
            chosen.update(extra)
    return chosen


def apply(parser, argv):
    """Replace `parser`'s defaults by those of the --preset in `argv`, if any, before it parses
    `argv`.  Returns what that early look read: {'preset': name or None, and each flag a `when`
    entry tests}, for `check` to compare with the full parse."""
    kind = getattr(parser, 'preset_kind', None)
    if kind is None:
        return {}
    tested = sorted({flag for preset in PRESETS[kind].values() for flag, _, _ in preset.get('when', ())})
    early = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    early.add_argument('--preset', default=None)
    for flag in tested:
        early.add_argument(f'--{flag}', default=parser.get_default(flag))
    known = vars(early.parse_known_args(argv)[0])
    if known['preset'] in NAMES:  # argparse itself reports a bad choice
        parser.set_defaults(**settings(kind, known['preset'], known))
    return known


def check(args, early):
    """The early look must have read what the full parse did: an abbreviated --preset or --dataset
    is understood by argparse but not by the early look, and would silently miss the defaults."""
    if getattr(args, 'preset', None) is None:
        return
    for flag, value in early.items():
        if getattr(args, flag) != value:
            raise UserError(f"write --{flag} in full: the preset's defaults are chosen before the "
                            f"abbreviation is expanded")
