"""The DARTS-style search: flags, signature and loop shared by every search script.

Liu, Simonyan and Yang, "DARTS: Differentiable Architecture Search", ICLR 2019
(https://arxiv.org/abs/1806.09055; reference code quark0/darts `cnn/train_search.py`), with the
attention search of Att-DARTS (Nakai, Matsubara and Uehara, IJCNN 2020; chomin/Att-DARTS
`train_search.py`).  `train_search.py` (the cell search) and `search_net.py` (ANAS) are thin mains
over this module: `build_parser()` / `build_anas_parser()`, then `run(args)` / `run_anas(args)`.

A run directory (--save) gets genotype.json every epoch, alphas.jsonl (softmaxed architecture
weights per epoch), metrics.jsonl (with the diagnostics of search_diagnostics.py), log.txt and
checkpoint.pt (resume with --resume).  The search signature (`search_signature`) holds the
supernet's settings and the candidate names of each layer, so a --resume after they changed (a
plug-in attention added) is refused, naming the difference.

Search strategies (`--strategy`) are looked up by name in `registry.STRATEGIES`; a strategy is a
`Strategy` subclass (docs/extending.md): `darts` (here: architecture weights by gradient) and
`rsws` (rsws.py: random search with weight sharing) and `gdas` (gdas.py: one sampled op per edge,
GDAS).  --space nb201: the NAS-Bench-201 cell space (nb201_search.py; --layers is then the cells
per stage, N; --preset nb201 the benchmark's search settings).  --partial_channels and --edge_normalization:
PC-DARTS (see model_search.py); the collapse guards of DARTS-, P-DARTS and DARTS+:
collapse_guards.py; --stage_layers and --stage_keep: P-DARTS's progressive search
(`progressive_search`).
"""
import argparse
import hashlib
import json
import os
import shutil

import torch
import torch.nn as nn

import benchmark_table
import cli
import collapse_guards
import datasets
import devices
import gdas
import genotypes
import latency
import nb201
import presets
import search_diagnostics
import search_space
import training
import utils
from anas import AttentionSearchResNet, check_net_type
from architect import HESSIAN_STENCILS, Architect
from cli import logger
from complexity import describe
from model import REDUCE_LEVELS
from model_search import LOCATIONS, SearchNetwork, strongest_candidates
from nb201_search import LOCATIONS as NB201_LOCATIONS
from nb201_search import NB201SearchNetwork
from operations import SHUFFLE_GROUP_CHOICES
from registry import STRATEGIES
from runs import Run, run_directory


# The plain supernet's forward compiles into one graph, but the architect's passes (substituted
# weights, gradients to the architecture weights only, full-fp32 switches) each compile anew, and
# a second-order step compiles for longer than a small search runs: a search runs eagerly (with
# the fast kernels, which step aside under torch.compile).
COMPILE_HELP = ('for the training scripts: this search accepts it and runs its supernet eagerly '
                '(torch.compile gains nothing on the Att-DARTS supernet yet)')


class Strategy:
    """A search strategy: how the architecture of a supernet is chosen.  Register a subclass by name
    with `@registry.STRATEGIES.register('name')`; `--strategy name` then selects it
    (docs/extending.md).  The search builds the supernet of its flags, then calls `search`."""

    help = ''
    # Whether it trains architecture weights by gradient: the options that act on them
    # (--edge_normalization, the collapse guards, --stage_layers) are refused otherwise.
    architecture_weights = False

    def add_arguments(self, parser):
        """Add the strategy's own flags (an argument group); every strategy's flags are offered."""

    def check(self, args, model):
        """Refuse bad flags with a UserError before anything is written (model: the built supernet)."""

    def search(self, args, model, info, device, signature, guards):
        """Search; returns whether a signal stopped it (the checkpoint is written; --resume continues).
        Its run directory is a `runs.Run`, which writes nothing until its `start()` (`training.fit`
        calls it): a strategy that writes files itself calls it once its data are found."""
        raise NotImplementedError


@STRATEGIES.register('darts')
class GradientStrategy(Strategy):
    help = 'architecture weights by gradient (DARTS)'
    architecture_weights = True
    sampled = False  # GDAS: one op per edge drawn in every forward

    def check(self, args, model):
        # The --benchmark table (read before anything is written) looks up every epoch's derived cell.
        self.benchmark = benchmark_table.from_args(args)

    def search(self, args, model, info, device, signature, guards):
        return search(args, model, info, device, signature, compiled=False, guards=guards, sampled=self.sampled,
                      benchmark=self.benchmark)


@STRATEGIES.register('gdas')
class SampledStrategy(GradientStrategy):
    help = 'one op per edge sampled by hard Gumbel-softmax (GDAS, Dong and Yang 2019)'
    sampled = True

    def add_arguments(self, parser):
        gdas.add_arguments(parser)

    def check(self, args, model):
        gdas.check_arguments(args)
        super().check(args, model)

def strategy_help():
    return '; '.join(f'{name}: {STRATEGIES[name].help}' for name in STRATEGIES)


def build_parser(description='Att-DARTS / DARTS cell search.'):
    parser = cli.default_parser(description)
    cli.add_common_arguments(parser, compile_help=COMPILE_HELP, batch_size=64, learning_rate=0.025,
                             learning_rate_min=0.001, epochs=50, init_channels=16, layers=8, seed=2)
    g = parser.add_argument_group('search')
    g.add_argument('--space', default='darts', choices=search_space.SPACES,
                   help='the cell space: DARTS cells (normal and reduction), or NAS-Bench-201 cells in its network '
                        '(--layers cells per stage)')
    g.add_argument('--location', default=None, choices=list(LOCATIONS),
                   help='where attention is searched (default: after_every; no_attention with --space nb201, '
                        'whose cells with attention have no benchmark entry)')
    g.add_argument('--primitives', default='darts', help=f"op set: {', '.join(genotypes.PRIMITIVE_SETS)}")
    g.add_argument('--num_meta_node', type=int, default=4, help='intermediate nodes per cell')
    g.add_argument('--use_sparse', action='store_true',
                   help="CNAS: affine BN in the supernet and a derivation that may keep 'none' edges")
    g.add_argument('--stem_affine', action=argparse.BooleanOptionalAction, default=True,
                   help="affine stem BatchNorm (DARTS, Att-DARTS); --no-stem_affine: as the cells' BatchNorms, "
                        "affine only with --use_sparse (CNAS)")
    g.add_argument('--reduce_level', type=int, default=0, choices=REDUCE_LEVELS,
                   help='1 or 2: the stem halves the image (CNAS searches data sets larger than CIFAR with 1)')
    g.add_argument('--shuffle_groups', choices=SHUFFLE_GROUP_CHOICES, default='1',
                   help="shuffle_conv_3x3: 1, the CNAS code's dense unit; auto, ShuffleNet's grouped unit")
    g.add_argument('--drop_path_prob', type=float, default=0.3, help='unused in search; kept for the seeds\' CLI')
    g.add_argument('--strategy', choices=STRATEGIES.names(), default='darts', help=strategy_help())
    benchmark_table.add_arguments(parser)
    add_supernet_arguments(parser)
    g = parser.add_argument_group('progressive search (P-DARTS)')
    g.add_argument('--stage_layers', type=int, nargs='+', metavar='L',
                   help='search in stages of L cells each instead of one of --layers (P-DARTS: 5 11 17), each stage '
                        '--epochs epochs with fresh weights, into SAVE/stage-1, SAVE/stage-2, ...; the last stage\'s '
                        'genotype is also written to SAVE/genotype.json')
    g.add_argument('--stage_keep', type=int, nargs='+', metavar='K',
                   help='after each stage but the last, every edge keeps its K strongest op candidates for the next '
                        '(P-DARTS: 5 3, of 8 with none)')
    collapse_guards.add_arguments(parser)
    for name in STRATEGIES:
        STRATEGIES[name]().add_arguments(parser)
    add_search_arguments(parser)
    return presets.add_argument(parser, 'search')


def parse(argv=None):
    """The flags of a cell search (train_search.py)."""
    return cli.parse(build_parser(), argv)


def add_supernet_arguments(parser):
    """The supernet options that bench.py measures too: PC-DARTS's partial channels and edge
    normalisation, and recomputed cells."""
    g = parser.add_argument_group('partial channels (PC-DARTS)')
    g.add_argument('--partial_channels', type=int, default=1, metavar='K',
                   help='each edge mixes 1/K of its channels (K=4 in PC-DARTS) and passes the rest around; '
                        'K must divide --init_channels')
    g.add_argument('--edge_normalization', action='store_true',
                   help='PC-DARTS edge weights: softmax over each node\'s inputs, in the forward and the derivation')
    g = parser.add_argument_group('memory')
    g.add_argument('--recompute_cells', action='store_true',
                   help='keep only each cell\'s inputs in the forward and recompute its activations in the backward: '
                        'a step holds about one cell\'s activations instead of all cells\', for about one more '
                        'forward pass of compute; the search computes the same (a run may be resumed with or '
                        'without it)')
    return parser


def add_hessian_argument(group):
    group.add_argument('--hessian', default='central', choices=HESSIAN_STENCILS,
                       help='finite-difference stencil of the second-order Hessian-vector product: central (DARTS) '
                            'or forward (reuses the unrolling pass: one pass fewer per step, O(eps) error)')


def repeat(loader):
    while True:
        yield from loader


def search_signature(args, info, kept_ops=None):
    """What a --resume must match: the supernet's settings, the candidate names of each layer (the
    registered ops and attentions a --primitives set and --location select) and the strategy."""
    candidates = search_space.candidate_lists(args.location, search_space.resolve_primitives(args.primitives))
    return json.dumps({'kind': 'search', **({'space': args.space} if args.space != 'darts' else {}),
                       'location': args.location, 'primitives': args.primitives,
                       'C': args.init_channels, 'layers': args.layers, 'steps': args.num_meta_node,
                       'sparse': args.use_sparse, 'stem_affine': args.stem_affine,
                       'reduce_level': args.reduce_level, 'shuffle_groups': args.shuffle_groups,
                       'classes': info.num_classes, 'in_channels': info.in_channels,
                       # Only where not the default, so that earlier checkpoints stay resumable.
                       **{name: value for name, value in supernet_options(args).items() if value},
                       **({'strategy': args.strategy} if args.strategy != 'darts' else {}),
                       **({'kept_ops': kept_ops} if kept_ops else {}),
                       'candidates': {layer: names for layer, names in candidates.items() if names},
                       **latency.signature(args)})


def supernet_options(args):
    """The SearchNetwork options of PC-DARTS and the collapse guards that change its modules."""
    return {'partial_channels': args.partial_channels if args.partial_channels > 1 else 0,
            'edge_normalization': args.edge_normalization, 'auxiliary_skip': args.auxiliary_skip > 0,
            'param_free_dropout': args.param_free_dropout > 0}


def check_strategy_options(args):
    """The architecture-weight options work only with a strategy that trains architecture weights."""
    if STRATEGIES[args.strategy].architecture_weights:
        return
    trainers = [name for name, strategy in STRATEGIES.items() if strategy.architecture_weights]
    refuse_first_given((('--edge_normalization', args.edge_normalization),
                        ('--auxiliary_skip', args.auxiliary_skip),
                        ('--param_free_dropout', args.param_free_dropout),
                        ('--max_skip_connect', args.max_skip_connect is not None),
                        ('--early_stop_param_free', args.early_stop_param_free is not None),
                        ('--early_stop_stable', args.early_stop_stable is not None),
                        ('--early_stop_after', args.early_stop_after > 0),
                        ('--stage_layers', args.stage_layers is not None),
                        ('--latency_table', args.latency_table is not None)),
                       f"{{}} works with --strategy {' or '.join(trainers)} only (it acts on the architecture "
                       f"weights); drop it for --strategy {args.strategy}")


def refuse_first_given(flags_given, message):
    """A UserError `message` (with '{}' for the flag) for the first flag of (flag, given) pairs given."""
    used = [flag for flag, given in flags_given if given]
    if used:
        raise utils.UserError(message.format(used[0]))


def add_search_arguments(parser):
    """Flags of every gradient-based (DARTS-style) search: the cell search's and ANAS's."""
    parser.add_argument('--nesterov', action='store_true',
                        help="Nesterov momentum for the network weights (NAS-Bench-201's search)")
    g = parser.add_argument_group('architecture step')
    g.add_argument('--train_portion', type=float, default=0.5,
                   help='share of the training set for the weights; the rest trains the architecture')
    g.add_argument('--unrolled', action='store_true', help='second-order architecture gradient')
    add_hessian_argument(g)
    g.add_argument('--arch_learning_rate', '--arch_lr', type=float, default=3e-4)
    g.add_argument('--arch_weight_decay', '--arch_wd', type=float, default=1e-3)
    g.add_argument('--arch_grad_clip', type=float, default=None, help='clip the architecture gradient norm')
    latency.add_arguments(parser)
    return parser


def check_space_options(args):
    """--space nb201 has one cell type, a fixed op set and its own skeleton: the DARTS space's
    options of those are refused, and --location defaults to no_attention."""
    if args.location is None:
        args.location = 'no_attention' if args.space == 'nb201' else 'after_every'
    if args.space != 'nb201':
        return
    if args.location not in NB201_LOCATIONS:
        raise utils.UserError(f"--location {args.location} has no NAS-Bench-201 form; with --space nb201 use "
                              f"{' or '.join(NB201_LOCATIONS)}")
    refuse_first_given((('--primitives', args.primitives != 'darts'),
                        ('--num_meta_node', args.num_meta_node != 4), ('--use_sparse', args.use_sparse),
                        ('--no-stem_affine', not args.stem_affine), ('--reduce_level', args.reduce_level),
                        ('--shuffle_groups', args.shuffle_groups != '1'),
                        ('--stage_layers', args.stage_layers is not None)),
                       "{} belongs to the DARTS space; the NAS-Bench-201 space (--space nb201) has its own ops, "
                       "nodes and network: drop it")


def check_partial_channels(args):
    """--partial_channels K (also bench.py's): a divisor of --init_channels."""
    if args.init_channels % args.partial_channels:
        raise utils.UserError(f"--partial_channels {args.partial_channels} must divide --init_channels "
                              f"{args.init_channels}; pick a divisor (PC-DARTS uses 4 with 16 channels)")


def check_stages(args):
    """--stage_layers and --stage_keep: one K per transition, each at least 3 (two ops besides none,
    SearchNetwork's kept_ops) and at most the candidates of the stage before."""
    if args.stage_layers is None:
        if args.stage_keep is not None:
            raise utils.UserError("--stage_keep needs --stage_layers (the stages it prunes between)")
        return
    keep = args.stage_keep or []
    if len(keep) != len(args.stage_layers) - 1:
        raise utils.UserError(f"--stage_keep needs one value per transition between stages: {len(args.stage_layers)} "
                              f"stages take {len(args.stage_layers) - 1}, got {len(keep)}")
    lists = search_space.candidate_lists(args.location, search_space.resolve_primitives(args.primitives))
    candidates = len(lists['first'])
    for before, k in zip([candidates, *keep], keep):
        if not 3 <= k <= before:
            raise utils.UserError(f"--stage_keep {k}: each value must be at least 3 and at most the candidates of the "
                                  f"stage before ({before}); P-DARTS keeps 5, then 3, of 8")


def latency_objective(args, info):
    """latency.objective of --latency_table for the supernet of these flags: ANAS's (--net_type),
    the NAS-Bench-201 one's of --layers cells per stage, or the DARTS one's of --layers cells;
    None without a table."""
    if getattr(args, 'net_type', None) is not None:
        return latency.objective(args, latency.anas_settings(args.net_type, info.image_size))
    if args.space == 'nb201':
        return latency.objective(args, latency.nb201_settings(args.location, args.init_channels, args.layers,
                                                              info.image_size))
    return latency.objective(args, latency.darts_settings(args.location, args.primitives, args.init_channels,
                                                          args.layers, args.num_meta_node, info.image_size,
                                                          args.reduce_level))


def build_supernet(args, info, layers, kept_ops=None):
    options = supernet_options(args)
    if args.space == 'nb201':
        return NB201SearchNetwork(args.init_channels, info.num_classes, layers, location=args.location,
                                  in_channels=info.in_channels, image_size=info.image_size,
                                  partial_channels=args.partial_channels,
                                  edge_normalization=options['edge_normalization'],
                                  auxiliary_skip=options['auxiliary_skip'],
                                  param_free_dropout=options['param_free_dropout'],
                                  recompute_cells=args.recompute_cells)
    return SearchNetwork(args.init_channels, info.num_classes, layers, location=args.location,
                         primitives=args.primitives, steps=args.num_meta_node, affine=args.use_sparse,
                         stem_affine=args.stem_affine, reduce_level=args.reduce_level,
                         shuffle_groups=args.shuffle_groups, in_channels=info.in_channels,
                         image_size=info.image_size, partial_channels=args.partial_channels,
                         edge_normalization=options['edge_normalization'],
                         auxiliary_skip=options['auxiliary_skip'], param_free_dropout=options['param_free_dropout'],
                         recompute_cells=args.recompute_cells, kept_ops=kept_ops)


def run(args):
    """The cell search of parsed flags (`parse`); returns the exit status."""
    if args.batch_size < 2:
        # The supernet's BatchNorms (and BAM's and GE's on pooled vectors) normalise over the batch.
        raise utils.UserError(f"--batch_size must be at least 2 in a search (batch statistics), got {args.batch_size}")
    check_space_options(args)
    check_partial_channels(args)
    check_strategy_options(args)
    check_stages(args)
    if args.benchmark and not STRATEGIES[args.strategy].architecture_weights:
        name = {'rsws': 'RS-WS'}.get(args.strategy, f'--strategy {args.strategy}')
        raise utils.UserError(f'--benchmark looks up the cell a search derives each epoch; {name} derives one at its '
                              f'end: look its genotype.json up with compare.py --benchmark')
    if args.strategy == 'gdas' and not args.dry_run:
        devices.single_process()  # every process would draw its own architecture
    guards = collapse_guards.Guards(args)
    device = devices.select_device(args.device)
    info = training.dataset_info(args, need_data=not args.dry_run)
    for layers in args.stage_layers or [args.layers]:  # bad latency flags or tables before anything is written
        latency_objective(argparse.Namespace(**{**vars(args), 'layers': layers}), info)
    utils.seed_everything(args.seed)
    if args.stage_layers:
        return progressive_search(args, info, device, guards, benchmark_table.from_args(args))
    model = devices.place_model(build_supernet(args, info, args.layers), args, device, compiled=False)
    if args.dry_run:
        search(args, model, info, device, None)
        return 0
    strategy = STRATEGIES[args.strategy]()
    strategy.check(args, model)
    strategy.search(args, model, info, device, search_signature(args, info), guards)
    return 0


def progressive_search(args, info, device, guards, benchmark=None):
    """P-DARTS (Chen et al., "Progressive Differentiable Architecture Search", ICCV 2019): stage s
    searches a supernet of --stage_layers[s] cells, fresh weights and architecture weights (seed
    --seed + s), for --epochs epochs into SAVE/stage-{s+1}; then every edge keeps its --stage_keep[s]
    strongest op candidates (by the op layer's weights, none included), the only candidates built in
    the next stage.  The attention layers are not pruned.  A --resume continues in the stage a kill
    stopped, after reading the completed stages' results from their checkpoints."""
    if args.dry_run:
        search(args, devices.place_model(build_supernet(args, info, args.stage_layers[0]), args, device,
                                         compiled=False), info, device, None)
        return 0
    args.save = run_directory(args.save, args.resume, 'search', marker=os.path.join('stage-1', 'args.json'))
    kept_ops = None
    for stage, layers in enumerate(args.stage_layers):
        save = os.path.join(args.save, f'stage-{stage + 1}')
        stage_args = argparse.Namespace(**{**vars(args), 'layers': layers, 'save': save,
                                           'resume': os.path.isfile(os.path.join(save, 'args.json'))})
        utils.seed_everything(args.seed + stage)
        model = devices.place_model(build_supernet(args, info, layers, kept_ops), stage_args, device, compiled=False)
        if search(stage_args, model, info, device, search_signature(stage_args, info, kept_ops), compiled=False,
                  guards=guards, sampled=getattr(STRATEGIES[args.strategy], 'sampled', False), benchmark=benchmark):
            return 0
        if stage + 1 < len(args.stage_layers):
            tables = model.weight_tables()
            kept_ops = {cell_type: strongest_candidates(tables[f'alphas_{cell_type}']['values'], args.stage_keep[stage])
                        for cell_type in ('normal', 'reduce')}
            logger.info('stage %d done: every edge keeps its %d strongest op candidates for stage %d',
                        stage + 1, args.stage_keep[stage], stage + 2)
    result = os.path.join(args.save, 'genotype.json')
    if devices.is_main():
        shutil.copyfile(os.path.join(save, 'genotype.json'), result + '.tmp')
        os.replace(result + '.tmp', result)
    print(result)
    return 0


def latency_record(objective, model, genotype):
    """The epoch's latencies in the table's milliseconds: the supernet's expectation under its
    architecture weights, and the derived architecture's."""
    with torch.no_grad():
        expected = float(objective.expected(model))
    return {'expected_latency_ms': expected, 'derived_latency_ms': objective.of_genotype(genotype)}


def search_loaders(args, device):
    """The loaders of the two halves of the training split (--train_portion): the weights' and the
    architecture's, both shuffled and augmented."""
    train_data = training.load_split(args, train=True)
    weight_idx, arch_idx = datasets.search_split(train_data, args.train_portion, args.subset)
    if args.batch_size > min(len(weight_idx), len(arch_idx)):
        raise utils.UserError(f"--batch_size {args.batch_size} is larger than the search split "
                              f"({len(weight_idx)} / {len(arch_idx)} images); lower --batch_size")
    on_device = training.device_augmentation(args, augment=True)
    return [training.make_loader(torch.utils.data.Subset(train_data, idx), args.batch_size, True, args.workers, device,
                                 drop_last=True, on_device=on_device) for idx in (weight_idx, arch_idx)]


def search(args, model, info, device, signature, compiled=True, guards=None, sampled=False, benchmark=None):
    """The bilevel search loop for any supernet with arch_parameters(), weight_parameters(),
    named_weight_parameters(), genotype(), edges() and weight_tables().  `compiled`: whether
    `model` was placed with --compile honoured; `guards`: the collapse_guards.Guards of a
    SearchNetwork (schedules, derivation, early stopping), or None; `sampled`: GDAS (gdas.py: the
    supernet samples its ops at the epoch's temperature, the weights step first); `benchmark`: a
    benchmark_table table, whose value of each epoch's derived cell goes into metrics.jsonl.  With
    --latency_table the latency term of latency.Objective joins the architecture loss and both
    latencies are logged every epoch.  Returns whether a signal stopped it (the checkpoint is
    written; --resume continues)."""
    objective = latency_objective(args, info)
    input_shape = (info.in_channels, info.image_size, info.image_size)
    if args.dry_run:
        print(describe(model, input_shape)[2])
        return False

    run = Run(args.save, args, args.resume, kind='search', signature=signature)
    train_loader, valid_loader = search_loaders(args, device)

    params, flops, description = describe(model, input_shape)
    logger.info('search on %s: %s', args.dataset, description.replace('\n', ', '))
    if args.compile and not compiled:
        logger.info('--compile applies to the training scripts only: this search runs its supernet eagerly')
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.weight_parameters(), args.learning_rate, momentum=args.momentum,
                                weight_decay=args.weight_decay, nesterov=args.nesterov)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs, eta_min=args.learning_rate_min)
    regularizer = (lambda: objective.loss(model)) if objective is not None and objective.weight > 0 else None
    architect = Architect(model, criterion, args.arch_learning_rate, args.arch_weight_decay,
                          unrolled=args.unrolled, arch_grad_clip=args.arch_grad_clip, hessian=args.hessian,
                          regularizer=regularizer)

    scaler = devices.grad_scaler(args, device)
    # The weight step goes through DDP (averaged weight gradients); the architect uses the bare
    # supernet and averages the architecture gradients itself.
    weight_model = devices.wrap_distributed(model, device)

    def run_epoch(ctx):
        lr = scheduler.get_last_lr()[0]
        model.train()
        schedules = guards.begin_epoch(model, ctx.epoch) if guards else {}
        if sampled:
            model.gumbel_tau = gdas.temperature(ctx.epoch, args.epochs, args.tau_max, args.tau_min)
            schedules['tau'] = model.gumbel_tau

        def step(batch, where, guard):
            (x, y), (x_valid, y_valid) = ((t.to(device, non_blocking=True) for t in pair) for pair in batch)

            def check(loss):
                return guard.ok(loss, where + ' (architecture step)')

            def architecture_step():
                # The architecture step stays in float32 even with --amp: bfloat16 architecture
                # gradients come out too far off the float32 ones on small supernets.
                return architect.step(x, y, x_valid, y_valid, lr, optimizer, check=check) is not None
            # DARTS steps the architecture first; GDAS (its reference) the weights first.
            if not sampled and not architecture_step():
                return None
            optimizer.zero_grad(set_to_none=True)
            with devices.autocast(args, device):
                logits = weight_model(x)
                loss = criterion(logits, y)
            if not training.optimize(loss, optimizer, model.weight_parameters(), args.grad_clip, guard, where, scaler):
                return None
            if sampled and not architecture_step():
                return None
            return loss.detach().float(), logits.float(), y

        # Each weight batch is paired with the next architecture batch; the architecture half is
        # walked through in order (not re-sampled per step as in the reference code).
        train_loss, train_acc = ctx.train(zip(train_loader, repeat(valid_loader)), step, len(train_loader),
                                          f'search {ctx.epoch + 1}/{args.epochs}')
        scheduler.step()
        valid = training.evaluate(model, valid_loader, criterion, device, no_progress=args.no_progress)
        genotype = guards.derive(model) if guards else model.genotype()
        if devices.is_main():
            genotypes.save(genotype, run.path('genotype.json'))
        tables = model.weight_tables()
        edge_weights = model.edge_weights() if guards else {}
        run.append_jsonl('alphas.jsonl', {'epoch': ctx.epoch, 'edges': model.edges(), 'weights': tables,
                                          **({'edge_weights': edge_weights} if edge_weights else {})})
        run.tensorboard.log_weights(tables, ctx.epoch)
        run.tensorboard.log_genotype(genotype, ctx.epoch)
        if isinstance(genotype, nb201.NB201Genotype):
            logger.info('genotype = %s', json.dumps(genotypes.to_dict(genotype)))
            if nb201.has_attention(genotype):
                logger.info('the derived cell has attention: it has no NAS-Bench-201 benchmark entry')
        else:
            logger.info('genotype = %s', genotype)
        previous = next((m for m in run.read_jsonl('metrics.jsonl') if m['epoch'] == ctx.epoch - 1), None)
        record = {'lr': lr, 'train_loss': train_loss, 'train_acc': train_acc, 'valid_loss': valid['loss'],
                  'valid_acc': valid['top1'], 'params_MB': params, 'genotype': genotypes.to_dict(genotype),
                  **search_diagnostics.epoch_record(tables, genotypes.to_dict(genotype),
                                                    previous and previous.get('genotype')),
                  **schedules, **(benchmark_table.epoch_record(benchmark, args.benchmark_metric, genotype)
                                  if benchmark else {}),
                  **(latency_record(objective, model, genotype) if objective is not None else {})}
        return {**record, **(guards.end_epoch(ctx.epoch, record, tables, previous) if guards else {})}

    stateful = {'model': model, 'optimizer': optimizer, 'scheduler': scheduler, 'architect': architect.optimizer,
                'scaler': scaler}
    preempted, _ = training.fit(run, args, stateful, run_epoch, loaders=(train_loader, valid_loader),
                                 device=device)
    if preempted:
        return True
    if devices.distributed():
        arch, weights = (hashlib.sha256(b''.join(p.detach().cpu().numpy().tobytes() for p in params)).hexdigest()
                         for params in (model.arch_parameters(), model.weight_parameters()))
        print(f'rank {torch.distributed.get_rank()}: architecture weights sha256 {arch}, '
              f'network weights sha256 {weights}', flush=True)
    logger.info('search done; genotype written to %s', run.path('genotype.json'))
    print(run.path('genotype.json'))
    return False


def build_anas_parser(description='ANAS: search the attention unit of a CIFAR ResNet (ResNet-20 by default) with DARTS.'):
    """The flags of ANAS's search (search_net.py; Dang 2019, reference `anas/search_net.py`)."""
    parser = cli.default_parser(description)
    cli.add_common_arguments(parser, batch_size=128, learning_rate=0.1, learning_rate_min=0.0,
                             weight_decay=1e-4, epochs=50, seed=2, grad_clip=5.0, workers=2)
    g = parser.add_argument_group('ANAS')
    g.add_argument('--net_type', default='resnet20', help='backbone of the search: resnet20, resnet32, ...')
    g.add_argument('--note', default='try', help='run name: the run directory is runs/anas-NOTE unless --save')
    add_search_arguments(parser)
    parser.set_defaults(arch_grad_clip=5.0)
    return presets.add_argument(parser, 'anas_search')


def parse_anas(argv=None):
    return cli.parse(build_anas_parser(), argv)


def run_anas(args):
    """ANAS's search of parsed flags (`parse_anas`): the DARTS loop on an AttentionSearchResNet."""
    check_net_type(args.net_type)
    args.save = args.save or os.path.join('runs', f'anas-{args.note}')
    device = devices.select_device(args.device)
    info = training.dataset_info(args, need_data=not args.dry_run)
    latency_objective(args, info)  # bad latency flags or tables before anything is written
    utils.seed_everything(args.seed)
    model = devices.place_model(AttentionSearchResNet(args.net_type, info.num_classes, in_channels=info.in_channels),
                                args, device)
    signature = json.dumps({'kind': 'anas-search', 'net_type': args.net_type, 'classes': info.num_classes,
                            'in_channels': info.in_channels, **latency.signature(args)})
    search(args, model, info, device, signature)
    return 0
