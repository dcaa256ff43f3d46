"""Train NAG's conditional graph GAN on a NAS dataset, conditioned on the accuracy class.

    python gan.py --nas_dataset runs/nasdata-XYZ/archs.jsonl
    python gan_multiobj.py --nas_dataset runs/nasdata-XYZ/archs.jsonl      # accuracy and params classes

Jing, Xu and Zhang, "A Neural Architecture Generator for Efficient Search Space", Neurocomputing
2021 (reference `gan.py` / `gan_multiobj.py`): least-squares GAN (Mao et al., ICCV 2017)
with Adam(2e-4, (0.5, 0.999)); each architecture of archs.jsonl (written by build_nas_dataset.py)
gets a quantile class per objective (class n-1 = best accuracy / most parameters).

Run directory (--save): generator.pt and discriminator.pt (read by generate_archs*.py), checkpoint.pt
(--resume), metrics.jsonl (d_loss, g_loss per epoch), log.txt.  gan_multiobj.py is this script
with the objectives accuracy and params_MB and without gradient clipping, as in the reference.
"""
import json
import os
import sys

import torch

import nag
import nag_cells
import training
import utils
from training import logger
from utils import UserError

OBJECTIVE_FLAGS = {'accuracy': 'n_perf_classes', 'params_MB': 'n_params_classes'}


def build_parser(objectives, clip_norm):
    parser = training.default_parser(__doc__.splitlines()[0])
    training.add_common_arguments(parser, batch_size=64, learning_rate=2e-4, epochs=200, seed=1997)
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


def train(argv, objectives, clip_norm):
    args = training.parse(build_parser(objectives, clip_norm), argv)
    if args.amp:
        raise UserError('--amp is not offered for the GAN: its graph networks are too small to gain from it')
    device = training.select_device(args.device)
    training.single_process()
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
    run = training.Run(args.save, args, args.resume, kind='gan', signature=signature)
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


main = training.cli(lambda argv=None: train(argv, ['accuracy'], clip_norm=0.01))

if __name__ == '__main__':
    sys.exit(main())
