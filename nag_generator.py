"""NAG's generator, trained and used: the conditional graph GAN's training (gan.py, gan_multiobj.py)
and the generation and random search of architectures with it (generate_archs.py,
generate_archs_multiobj.py).

Jing, Xu and Zhang, "A Neural Architecture Generator for Efficient Search Space", Neurocomputing
2021 (reference `gan.py`, `gan_multiobj.py`, `generate_archs*.py` and
`build_nas_dataset/eval_archs.py`): least-squares GAN (Mao et al., ICCV 2017) with Adam(2e-4,
(0.5, 0.999)); each architecture of archs.jsonl (written by build_nas_dataset.py) gets a quantile
class per objective (class n-1 = best accuracy / most parameters).  The networks are nag.py's.

A GAN run directory (--save) gets generator.pt and discriminator.pt, checkpoint.pt (--resume),
metrics.jsonl (d_loss, g_loss per epoch) and log.txt; a generation run class_<label>/archs.jsonl,
class_<label>/arch_<k>.json and, with --search, search/arch_<k>/, search.jsonl and best.json.
"""
import itertools
import json
import os
import sys

import torch

import cli
import devices
import drawing
import genotypes
import nag
import nag_cells
import runs
import training
import utils
from cli import logger
from evaluation import train_main
from utils import UserError

GAN_DESCRIPTION = "Train NAG's conditional graph GAN on a NAS dataset, conditioned on the accuracy class."
GENERATE_DESCRIPTION = ('Generate architectures of a wanted accuracy class with a trained NAG generator, then '
                        'random-search them.')

OBJECTIVE_FLAGS = {'accuracy': 'n_perf_classes', 'params_MB': 'n_params_classes'}


def build_gan_parser(objectives, clip_norm):
    parser = cli.default_parser(GAN_DESCRIPTION)
    cli.add_common_arguments(parser, batch_size=64, learning_rate=2e-4, epochs=200, seed=1997)
    g = parser.add_argument_group('GAN')
    g.add_argument('--nas_dataset', required=True, help='archs.jsonl written by build_nas_dataset.py')
    g.add_argument('--b1', type=float, default=0.5, help='Adam beta1')
    g.add_argument('--b2', type=float, default=0.999, help='Adam beta2')
    g.add_argument('--n_critic', type=int, default=1, help='a generator step every N discriminator steps')
    g.add_argument('--clip_value', type=float, default=clip_norm, help='gradient-norm clip of both nets (0: off)')
    g.add_argument('--latent_dim', type=int, default=100)
    g.add_argument('--max_step', '--max_vertices', dest='max_vertices', type=int, default=nag_cells.MAX_VERTICES)
    g.add_argument('--g_emb_size', type=int, default=250)
    g.add_argument('--g_hidden_size', type=int, default=56)
    g.add_argument('--g_num_layers', type=int, default=3)
    g.add_argument('--g_dropout', type=float, default=0.5)
    g.add_argument('--d_emb_size', type=int, default=250)
    g.add_argument('--d_hidden_size', type=int, default=56)
    g.add_argument('--d_gnn_num_layers', type=int, default=3)
    g.add_argument('--d_mlp_num_layers', type=int, default=4)
    g.add_argument('--d_gnn_dropout', type=float, default=0.5)
    g.add_argument('--d_mlp_dropout', type=float, default=0.5)
    g.add_argument('--label_embedding_size', '--cls_perf_embedding_size', type=int, default=10)
    for objective in objectives:
        g.add_argument(f'--{OBJECTIVE_FLAGS[objective]}', type=int, default=3, help=f'quantile classes of {objective}')
    parser.set_defaults(objectives=list(objectives))
    return parser


def load_nas_dataset(path, objectives, classes, max_vertices):
    """(architectures, labels (N, K)) from archs.jsonl; labels are quantile classes per objective."""
    if not os.path.isfile(path):
        raise UserError(f"NAS dataset {path} does not exist; build one with build_nas_dataset.py")
    archs, values = [], []
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                archs.append(nag_cells.arch_from_dict(record, f'{path} line {number}'))
                values.append([float(record[o]) for o in objectives])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise UserError(f"{path} line {number} is not a NAS-dataset record ({type(exc).__name__}); "
                                f"use the archs.jsonl of build_nas_dataset.py") from exc
    too_big = [i for i, arch in enumerate(archs) if max(len(c.ops) for c in arch) > max_vertices]
    if too_big:
        raise UserError(f"{path}: architecture {too_big[0]} has more than --max_step {max_vertices} vertices; "
                        f"raise --max_step")
    if len(archs) < max(classes):
        raise UserError(f"{path} holds {len(archs)} architectures, fewer than the {max(classes)} classes asked for")
    labels = [nag.quantile_labels([v[k] for v in values], n) for k, n in enumerate(classes)]
    return archs, torch.tensor(labels).t().contiguous()


def network_config(args):
    classes = [getattr(args, OBJECTIVE_FLAGS[o]) for o in args.objectives]
    generator = dict(classes=classes, latent_dim=args.latent_dim, label_dim=args.label_embedding_size,
                     node_dim=args.g_emb_size, graph_dim=args.g_hidden_size, layers=args.g_num_layers,
                     dropout=args.g_dropout, max_vertices=args.max_vertices)
    discriminator = dict(classes=classes, label_dim=args.label_embedding_size, node_dim=args.d_emb_size,
                         graph_dim=args.d_hidden_size, gcn_layers=args.d_gnn_num_layers,
                         mlp_layers=args.d_mlp_num_layers, gcn_dropout=args.d_gnn_dropout,
                         mlp_dropout=args.d_mlp_dropout)
    return generator, discriminator


def load_generator(path):
    """(ArchGenerator, its record) from a generator.pt written by gan.py / gan_multiobj.py."""
    record = utils.load_checkpoint_file(path, 'generator')
    if not isinstance(record, dict) or not {'config', 'state_dict', 'objectives'} <= record.keys():
        raise UserError(f"{path} is not a generator.pt written by gan.py or gan_multiobj.py")
    generator = nag.ArchGenerator(**record['config'])
    generator.load_state_dict(record['state_dict'])
    return generator, record


def train_gan(argv, objectives, clip_norm):
    """gan.py (objectives accuracy) and gan_multiobj.py (accuracy, params_MB)."""
    args = cli.parse(build_gan_parser(objectives, clip_norm), argv)
    if args.amp:
        raise UserError('--amp is not offered for the GAN: its graph networks are too small to gain from it')
    if args.n_critic < 1:
        raise UserError(f"--n_critic must be at least 1, got {args.n_critic}")
    device = devices.select_device(args.device)
    devices.single_process()
    g_config, d_config = network_config(args)
    archs, labels = load_nas_dataset(args.nas_dataset, objectives, g_config['classes'], args.max_vertices)
    if args.batch_size > len(archs):
        raise UserError(f"--batch_size {args.batch_size} is larger than the NAS dataset ({len(archs)} architectures)")
    utils.seed_everything(args.seed)
    generator = nag.ArchGenerator(**g_config).to(device)
    discriminator = nag.ArchDiscriminator(**d_config).to(device)
    if args.dry_run:
        print(f'generator params: {utils.count_parameters_in_MB(generator):.6f} M\n'
              f'discriminator params: {utils.count_parameters_in_MB(discriminator):.6f} M')
        return 0
    signature = json.dumps({'kind': 'gan', 'objectives': objectives, 'generator': g_config, 'discriminator': d_config})
    run = runs.Run(args.save, args, args.resume, kind='gan', signature=signature)
    (normal, reduce) = nag.arch_batch(archs, args.max_vertices)
    data = torch.utils.data.TensorDataset(*normal, *reduce, labels)
    loader = training.make_loader(data, args.batch_size, True, args.workers, device, drop_last=True)
    betas = (args.b1, args.b2)
    optimizer_g = torch.optim.Adam(generator.parameters(), args.learning_rate, betas=betas)
    optimizer_d = torch.optim.Adam(discriminator.parameters(), args.learning_rate, betas=betas)
    logger.info('GAN on %d architectures of %s, objectives %s', len(archs), args.nas_dataset, ', '.join(objectives))

    def run_epoch(ctx):
        generator.train()
        discriminator.train()
        d_losses, g_losses = utils.AverageMeter(), utils.AverageMeter()
        for i, batch in enumerate(loader):
            batch = [t.to(device) for t in batch]
            real, real_labels = (tuple(batch[0:3]), tuple(batch[3:6])), batch[6]
            d_loss = nag.discriminator_step(generator, discriminator, optimizer_d, real, real_labels, args.clip_value)
            ctx.guard.ok(d_loss, f'epoch {ctx.epoch} step {i} (discriminator)')
            d_losses.update(d_loss.item())
            if i % args.n_critic == 0:
                g_loss = nag.generator_step(generator, discriminator, optimizer_g, args.batch_size, device,
                                            args.clip_value)
                ctx.guard.ok(g_loss, f'epoch {ctx.epoch} step {i} (generator)')
                g_losses.update(g_loss.item())
        return {'d_loss': d_losses.avg, 'g_loss': g_losses.avg}

    stateful = {'generator': generator, 'discriminator': discriminator,
                'optimizer_g': optimizer_g, 'optimizer_d': optimizer_d}
    preempted, _ = training.fit(run, args, stateful, run_epoch, loaders=(loader,))
    if preempted:
        return 0
    for name, net, config in (('generator', generator, g_config), ('discriminator', discriminator, d_config)):
        utils.atomic_torch_save({'config': config, 'state_dict': net.state_dict(), 'objectives': objectives},
                                run.path(f'{name}.pt'))
    logger.info('generator written to %s', run.path('generator.pt'))
    return 0


CLASS_FLAGS = {'accuracy': 'acc_class', 'params_MB': 'params_class'}
# The reference's `build_nas_dataset/eval_archs.py`: batch 128, SGD 0.025 (momentum 0.9, wd 3e-4) on a
# 600-epoch cosine schedule of which --search_epochs are trained, the auxiliary head, Cutout 16 and
# drop path 0.2 (keep 0.8), at train_CIFAR10.py's width (36 channels, 20 cells) and classifier dropout 0.4.
REFERENCE_SEARCH_FLAGS = ['--batch_size', '128', '--learning_rate', '0.025', '--momentum', '0.9', '--weight_decay',
                          '3e-4', '--scheduler', 'cosine', '--schedule_epochs', '600', '--auxiliary', '--cutout',
                          '--cutout_length', '16', '--drop_path_prob', '0.2']


def build_generate_parser(objectives):
    parser = cli.default_parser(GENERATE_DESCRIPTION)
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


def generate(argv, objectives):
    """generate_archs.py (objectives accuracy) and generate_archs_multiobj.py (accuracy, params_MB)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    train_args = argv[argv.index('--') + 1:] if '--' in argv else []
    args = build_generate_parser(objectives).parse_args(argv[:argv.index('--')] if '--' in argv else argv)
    if args.num < 1 or args.search < 0 or args.search_epochs < 1:
        raise UserError('--num and --search_epochs must be at least 1 and --search at least 0')
    generator, record = load_generator(args.generator)
    if record['objectives'] != objectives:
        raise UserError(f"{args.generator} is conditioned on {', '.join(record['objectives'])}; use "
                        f"{'generate_archs_multiobj.py' if len(record['objectives']) > 1 else 'generate_archs.py'}")
    generator.to(devices.select_device(args.device))
    choices = []
    for objective, classes in zip(objectives, generator.classes):
        wanted = getattr(args, CLASS_FLAGS[objective])
        if wanted is not None and not 0 <= wanted < classes:
            raise UserError(f"--{CLASS_FLAGS[objective]} {wanted} is out of range; "
                            f"the generator has classes 0..{classes - 1}")
        choices.append([wanted] if wanted is not None else list(range(classes)))
    searched = [c[0] if len(c) == 1 else (classes - 1 if o == 'accuracy' else 0)
                for c, o, classes in zip(choices, objectives, generator.classes)]

    run = runs.Run(args.save, args, kind='gen')
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
        flags = train_args if args.plain_search else REFERENCE_SEARCH_FLAGS + train_args
        search_generated(run, generated[tuple(searched)][:args.search], class_name(searched), args.search_epochs, flags)
    return 0


def search_generated(run, archs, folder, epochs, train_args):
    """Train each architecture briefly with train_CIFAR10.py; write the best one to best.json."""
    if not archs:
        raise UserError(f'{folder} has no architecture to search; train the GAN longer or ask for another class')
    best = None
    for k, arch in enumerate(archs):
        arch_path = run.path(os.path.join(folder, f'arch_{k:03d}.json'))
        save = run.path(os.path.join('search', f'arch_{k:03d}'))
        train_main(['--epochs', str(epochs), *train_args, '--arch_path', arch_path, '--save', save], 'cifar10')
        cli.configure_logging(run.path('log.txt'))  # the training run had taken the logger over
        with open(os.path.join(save, 'metrics.jsonl')) as f:
            accuracy = json.loads(f.read().splitlines()[-1])['valid_acc']
        run.append_jsonl('search.jsonl', {'arch': arch_path, 'accuracy': accuracy, **nag_cells.arch_to_dict(arch)})
        if best is None or accuracy > best[0]:
            best = (accuracy, arch)
    genotypes.save(best[1], run.path('best.json'))
    drawing.draw_genotype(best[1], 'best', run.dir)
    logger.info('best of %d: %.2f%% -> %s', len(archs), best[0], run.path('best.json'))
