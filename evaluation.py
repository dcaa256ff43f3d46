"""Train a derived architecture from scratch and test it: the evaluation protocol of DARTS
(Liu et al., ICLR 2019, https://arxiv.org/abs/1806.09055) as used by Att-DARTS (Nakai et al.,
IJCNN 2020).  `train_CIFAR10.py` ... `test_ImageNet.py` are thin wrappers choosing a preset.
`train_net.py` (ANAS, Dang 2019) uses the 'anas' preset: a CIFAR ResNet (`anas.ResNetCIFAR`) with
no, SE or a searched attention unit, whose trained.pt the test scripts read like any other.
A NAG architecture (Jing, Xu and Zhang, Neurocomputing 2021: `--arch NAG` or a DAG JSON) is built
in the reference's NAO skeleton (`nag_networks.NAGNetworkCIFAR` / `NAGNetworkImageNet`), whose classifier
dropout `--keep_prob` defaults to the reference's (0.6 on CIFAR, 1.0 on ImageNet).

Fixed with respect to the Att-DARTS code: ImageNet uses StepLR(decay_period, gamma)
and the label-smoothing loss it declares; resuming needs no missing flag; drop path works on CPU.
"""
import argparse
import contextlib
import io
import json

import torch
import torch.nn as nn

import cli
import complexity
import datasets
import devices
import genotypes
import nag_cells
import presets
import runs
import training
import utils
from anas import RESNET_ATTENTIONS, RESNET_BLOCKS, SE_REDUCTION, ResNetCIFAR, check_net_type
from cli import logger
from model import REDUCE_LEVELS, NetworkCIFAR, NetworkImageNet
from nag_networks import NAGNetworkCIFAR, NAGNetworkImageNet, nag_stage_cells
from operations import SHUFFLE_GROUP_CHOICES
from utils import UserError

# DARTS / Att-DARTS defaults per task; nag_keep_prob is the NAG classifier's (train_cifar.py --keep_prob).
PRESETS = {
    'cifar10': dict(dataset='cifar10', batch_size=96, learning_rate=0.025, weight_decay=3e-4, epochs=600,
                    init_channels=36, layers=20, seed=2, drop_path_prob=0.2, scheduler='cosine',
                    label_smooth=0.0, test_batch_size=36, nag_keep_prob=0.6),
    'imagenet': dict(dataset='imagenet', batch_size=128, learning_rate=0.1, weight_decay=3e-5, epochs=250,
                     init_channels=48, layers=14, seed=0, drop_path_prob=0.0, scheduler='step',
                     label_smooth=0.1, test_batch_size=128, nag_keep_prob=1.0),
}
PRESETS['cifar100'] = dict(PRESETS['cifar10'], dataset='cifar100')
# ANAS anas/train_net.py: CIFAR ResNets with an attention unit; init_channels and layers are
# not used by ResNets (--net_type sets the depth) but every preset names them.
PRESETS['anas'] = dict(dataset='cifar10', batch_size=128, learning_rate=0.1, weight_decay=1e-4, epochs=180,
                       init_channels=16, layers=20, seed=0, drop_path_prob=0.0, scheduler='cosine',
                       label_smooth=0.0, test_batch_size=128, network='resnet')


def network_config(args, info, genotype):
    if getattr(args, 'net_type', None) is not None:
        return resnet_config(args, info)
    if isinstance(genotype, nag_cells.DagArch):
        return nag_config(args, info)
    if args.keep_prob is not None:
        raise UserError("--keep_prob is the classifier dropout of NAG networks; DARTS cell networks have none")
    imagenet = imagenet_skeleton(args)
    if imagenet and args.reduce_level:
        raise UserError("--reduce_level sets the stem of the CIFAR-style network; the ImageNet network has "
                        "its own stride-8 stems: drop --reduce_level or pass --network cifar")
    pooled_head = info.num_classes > 10 if args.pooled_head is None else args.pooled_head
    return {'type': 'imagenet' if imagenet else 'cifar', 'C': args.init_channels,
            'num_classes': info.num_classes, 'layers': args.layers, 'auxiliary': args.auxiliary,
            'in_channels': info.in_channels, 'image_size': info.image_size, 'pooled_head': pooled_head,
            'reduce_level': args.reduce_level, 'prune_none': args.prune_none, 'shuffle_groups': args.shuffle_groups}


def imagenet_skeleton(args):
    """Whether --network (auto: for --dataset imagenet) asks for the ImageNet skeleton."""
    return args.network == 'imagenet' or (args.network == 'auto' and datasets.canonical_name(args.dataset) == 'imagenet')


def cnas_options_given(args):
    return args.reduce_level or args.prune_none or args.shuffle_groups != '1'


def resnet_config(args, info):
    check_net_type(args.net_type)
    if args.auxiliary or args.pooled_head or cnas_options_given(args):
        raise UserError("--auxiliary, --pooled_head, --reduce_level, --prune_none and --shuffle_groups belong to "
                        "DARTS cell networks, not to ResNets")
    return {'type': 'resnet', 'net_type': args.net_type, 'attention': args.attention,
            'se_reduction': args.se_reduction, 'num_classes': info.num_classes,
            'in_channels': info.in_channels, 'image_size': info.image_size}


def nag_config(args, info):
    """The NAO skeleton of a NAG architecture: CIFAR's, or ImageNet's stems for --dataset imagenet."""
    if args.pooled_head or cnas_options_given(args):
        raise UserError("--pooled_head, --reduce_level, --prune_none and --shuffle_groups belong to DARTS cell "
                        "networks, not to NAG cells")
    nag_stage_cells(args.layers)
    imagenet = imagenet_skeleton(args)
    return {'type': 'nag', 'imagenet': imagenet, 'C': args.init_channels,
            'num_classes': info.num_classes, 'layers': args.layers, 'auxiliary': args.auxiliary,
            'keep_prob': args.nag_keep_prob if args.keep_prob is None else args.keep_prob,
            'in_channels': info.in_channels, 'image_size': info.image_size}


def build_network(config, genotype):
    if config['type'] == 'nag':
        network = NAGNetworkImageNet if config['imagenet'] else NAGNetworkCIFAR
        return network(config['C'], config['num_classes'], config['layers'], config['auxiliary'], genotype,
                       keep_prob=config['keep_prob'], in_channels=config['in_channels'],
                       image_size=config['image_size'])
    if config['type'] == 'resnet':
        return ResNetCIFAR(config['net_type'], config['num_classes'], config['attention'], genotype,
                           se_reduction=config['se_reduction'], in_channels=config['in_channels'])
    cnas_options = dict(prune_none=config.get('prune_none', False), shuffle_groups=config.get('shuffle_groups', '1'))
    if config['type'] == 'imagenet':
        return NetworkImageNet(config['C'], config['num_classes'], config['layers'], config['auxiliary'],
                               genotype, in_channels=config['in_channels'], image_size=config['image_size'],
                               **cnas_options)
    return NetworkCIFAR(config['C'], config['num_classes'], config['layers'], config['auxiliary'], genotype,
                        in_channels=config['in_channels'], image_size=config['image_size'],
                        pooled_head=config['pooled_head'], reduce_level=config.get('reduce_level', 0), **cnas_options)


def add_resnet_arguments(parser):
    g = parser.add_argument_group('ResNet (ANAS)')
    g.add_argument('--net_type', default='resnet20', help=f"backbone: {', '.join(RESNET_BLOCKS)}")
    g.add_argument('--attention', default='anas',
                   help=f"unit after bn2 of every block: {', '.join(RESNET_ATTENTIONS)}; 'anas' is the "
                        f"searched unit of --arch/--arch_path (default: the shipped ANAS unit)")
    g.add_argument('--se_reduction', type=int, default=SE_REDUCTION, help="SE reduction ratio (--attention se)")
    parser.set_defaults(workers=4)


def resolve_genotype(args):
    """The genotype of --arch/--arch_path.  A ResNet takes an ANAS attention unit (the shipped one
    by default) only with --attention anas, and None otherwise; cell networks take DARTS cells."""
    attention = getattr(args, 'attention', None)
    if attention is not None and attention != 'anas':
        if args.arch or args.arch_path:
            raise UserError(f"--arch/--arch_path choose a searched unit, which --attention {attention} "
                            f"does not use; drop them or pass --attention anas")
        return None
    if attention == 'anas' and not (args.arch or args.arch_path):
        return genotypes.ANAS
    if not (args.arch or args.arch_path) and getattr(args, 'preset_arch', None):
        args.arch = args.preset_arch  # the paper's architecture, under its --preset
    genotype = genotypes.resolve(args.arch, args.arch_path)
    name = args.arch or args.arch_path
    if attention is None and isinstance(genotype, genotypes.AttGenotype):
        raise UserError(f"{name} is an ANAS attention unit, not a cell; train it with train_net.py")
    if isinstance(genotype, genotypes.SeqArch):
        raise UserError(f"{name} is an SLNAS architecture, not a DARTS cell; train it with retrain_slnas.py")
    if attention == 'anas' and not isinstance(genotype, genotypes.AttGenotype):
        kind = 'a NAG architecture' if isinstance(genotype, nag_cells.DagArch) else 'a DARTS cell'
        raise UserError(f"{name} is {kind}, not an ANAS attention unit")
    return genotype


def genotype_record(genotype):
    """The JSON form of a genotype, None for a network without one (plain or SE ResNet)."""
    return None if genotype is None else genotypes.to_dict(genotype)


def train_parser(preset):
    p = PRESETS[preset]
    parser = cli.default_parser(f'Train a searched cell on {p["dataset"]} from scratch')
    cli.add_common_arguments(parser, **{k: p[k] for k in ('dataset', 'batch_size', 'learning_rate',
                                                               'weight_decay', 'epochs', 'init_channels',
                                                               'layers', 'seed')})
    g = parser.add_argument_group('architecture')
    g.add_argument('--arch', default=None, help=f"named genotype: {', '.join(genotypes.NAMED)}")
    g.add_argument('--arch_path', default=None, help='genotype.json written by a search')
    g.add_argument('--auxiliary', action='store_true', help='auxiliary head (loss weight --auxiliary_weight)')
    g.add_argument('--auxiliary_weight', type=float, default=0.4)
    g.add_argument('--drop_path_prob', type=float, default=p['drop_path_prob'],
                   help='drop-path rate, ramped linearly from 0 over the epochs')
    g.add_argument('--network', choices=('auto', 'cifar', 'imagenet'), default='auto',
                   help="cell networks' skeleton: cifar (full-resolution stem; with --reduce_level a strided one) "
                        "or imagenet (DARTS's stride-8 stems, for large images); auto: imagenet for --dataset "
                        "imagenet, cifar otherwise")
    g = parser.add_argument_group('CNAS network options')
    g.add_argument('--pooled_head', action=argparse.BooleanOptionalAction, default=False,
                   help='2x2 pooled classifier head (CNAS); with neither flag under --preset cnas: on for data '
                        'sets of more than 10 classes, as the CNAS network')
    g.add_argument('--reduce_level', type=int, default=0, choices=REDUCE_LEVELS,
                   help='CIFAR-style network: 1 or 2 halves the image in the stem (CNAS)')
    g.add_argument('--prune_none', action='store_true',
                   help="build no 'none' edges and no preprocessing of cell inputs only they read (fewer "
                        "parameters than the references for some CNAS sparse cells)")
    g.add_argument('--shuffle_groups', choices=SHUFFLE_GROUP_CHOICES, default='1',
                   help="shuffle_conv_3x3: 1, the CNAS code's dense unit; auto, ShuffleNet's grouped unit "
                        "(2-4 groups) with a real channel shuffle")
    if p.get('network') == 'resnet':
        add_resnet_arguments(parser)
    else:
        g.add_argument('--keep_prob', type=float, default=None,
                       help=f"NAG networks only: share of the pooled features the classifier's dropout keeps "
                            f"(default {p['nag_keep_prob']}, the reference's)")
        parser.set_defaults(nag_keep_prob=p['nag_keep_prob'])
    g = parser.add_argument_group('optimizer and schedule')
    g.add_argument('--optimizer', choices=OPTIMIZERS, default='sgd',
                   help='sgd (with --momentum) or adabelief (NAG: --preset nag on CIFAR-10 and ImageNet)')
    g.add_argument('--adabelief_eps', type=float, default=1e-8, help="AdaBelief's epsilon (NAG's 1e-8)")
    g.add_argument('--weight_decouple', action='store_true',
                   help="AdaBelief: decoupled weight decay (NAG's ImageNet training) instead of L2 in the gradient")
    g.add_argument('--scheduler', choices=SCHEDULERS, default=p['scheduler'],
                   help='cosine to --learning_rate_min over the epochs; step: x gamma every --decay_period '
                        'epochs; multistep: x gamma at each of --milestones; constant')
    g.add_argument('--gamma', type=float, default=None, help='learning-rate decay (default: 0.97 step, 0.1 multistep)')
    g.add_argument('--schedule_epochs', type=int, default=None,
                   help='epochs the cosine schedule and the drop-path ramp span, of which --epochs are trained '
                        "(default --epochs; NAG's random search trains 50 of a 600-epoch schedule)")
    g.add_argument('--decay_period', type=int, default=1, help='StepLR period in epochs')
    g.add_argument('--milestones', type=int, nargs='+', default=[90, 135],
                   help='multistep: the epochs at which the rate is multiplied by gamma')
    g.add_argument('--label_smooth', type=float, default=p['label_smooth'],
                   help='label smoothing (--preset cnas: 0.1 for 50 classes or more, none below, as CNAS)')
    g.add_argument('--test_batch_size', type=int, default=p['test_batch_size'])
    parser.set_defaults(preset_arch=None)
    return presets.add_argument(parser, 'anas_train' if p.get('network') == 'resnet' else 'train')


def build_loaders(args, device):
    """(train loader, test loader) of --dataset; --subset keeps the first N training images."""
    def loader(train):
        data = training.load_split(args, train)
        if train and args.subset is not None:
            data = torch.utils.data.Subset(data, range(min(args.subset, len(data))))
        batch = args.batch_size if train else (args.test_batch_size or args.batch_size)
        if train and batch > len(data):
            raise UserError(f"--batch_size {batch} is larger than the training set ({len(data)} images); "
                            f"lower --batch_size")
        return training.make_loader(data, batch, train, args.workers, device, drop_last=train,
                                    on_device=training.device_augmentation(args, train))
    return loader(True), loader(False)


def train_and_test(args, run, model, device, loaders, optimizer, scheduler, loss_of, drop_path_prob, params):
    """Train `model` from scratch, evaluating on the test split after every epoch, then test it.
    `loss_of(outputs, target)` turns the network's (logits, auxiliary logits) into the training loss;
    `drop_path_prob(epoch)` is the drop-path rate of an epoch.  Returns the test metrics, or None
    when the run was stopped by a signal (its checkpoint is written)."""
    train_loader, test_loader = loaders
    scaler = devices.grad_scaler(args, device)
    train_model = devices.wrap_distributed(model, device)
    test_criterion = nn.CrossEntropyLoss()

    def run_epoch(ctx):
        lr = scheduler.get_last_lr()[0]
        model.drop_path_prob = drop_path_prob(ctx.epoch)
        model.train()

        def step(batch, where, guard):
            x, y = (t.to(device, non_blocking=True) for t in batch)
            optimizer.zero_grad(set_to_none=True)
            with devices.autocast(args, device):
                outputs = train_model(x)
                loss = loss_of(outputs, y)
            if not training.optimize(loss, optimizer, model.parameters(), args.grad_clip, guard, where, scaler):
                return None
            return loss.detach().float(), outputs[0].float(), y

        train_loss, train_acc = ctx.train(train_loader, step, len(train_loader), f'train {ctx.epoch + 1}/{args.epochs}')
        scheduler.step()
        valid = training.evaluate(model, test_loader, test_criterion, device, no_progress=args.no_progress)
        return {'lr': lr, 'train_loss': train_loss, 'train_acc': train_acc, 'valid_loss': valid['loss'],
                'valid_acc': valid['top1'], 'valid_top5': valid['top5'], 'params_MB': params}

    stateful = {'model': model, 'optimizer': optimizer, 'scheduler': scheduler, 'scaler': scaler}
    preempted, _ = training.fit(run, args, stateful, run_epoch, loaders=loaders, device=device)
    if preempted:
        return None
    return training.evaluate(model, test_loader, test_criterion, device, desc='test', no_progress=args.no_progress)


SCHEDULERS = ('cosine', 'step', 'multistep', 'constant')
OPTIMIZERS = ('sgd', 'adabelief')


def make_optimizer(args, parameters):
    """--optimizer: SGD with --momentum, or AdaBelief (Zhuang et al., NeurIPS 2020; the authors'
    package adabelief-pytorch, as NAG's final training uses it) with betas (0.9, 0.999), eps
    --adabelief_eps, no rectification, and weight decay added to the gradient, or decoupled from it
    with --weight_decouple."""
    if args.optimizer == 'sgd':
        return torch.optim.SGD(parameters, args.learning_rate, momentum=args.momentum, weight_decay=args.weight_decay)
    try:
        from adabelief_pytorch import AdaBelief
    except ImportError as exc:
        raise UserError("--optimizer adabelief needs the package adabelief-pytorch: pip install -r requirements.txt "
                        "(or pass --optimizer sgd)") from exc
    with contextlib.redirect_stdout(io.StringIO()):  # its notes on the version's defaults
        return AdaBelief(parameters, lr=args.learning_rate, betas=(0.9, 0.999), eps=args.adabelief_eps,
                         weight_decay=args.weight_decay, weight_decouple=args.weight_decouple, rectify=False,
                         print_change_log=False)


def schedule_epochs(args):
    span = getattr(args, 'schedule_epochs', None) or args.epochs
    if span < args.epochs:
        raise UserError(f"--schedule_epochs {span} is shorter than --epochs {args.epochs}; the schedule must span "
                        f"the training")
    return span


def make_scheduler(args, optimizer):
    """The learning-rate schedule of --scheduler, stepped once per epoch."""
    if args.scheduler == 'cosine':
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, schedule_epochs(args), eta_min=args.learning_rate_min)
    if args.scheduler == 'step':
        return torch.optim.lr_scheduler.StepLR(optimizer, args.decay_period,
                                               gamma=0.97 if args.gamma is None else args.gamma)
    if args.scheduler == 'multistep':
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, args.milestones,
                                                    gamma=0.1 if args.gamma is None else args.gamma)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def train_main(argv, preset):
    args = cli.parse(train_parser(preset), argv)
    genotype = resolve_genotype(args)
    device = devices.select_device(args.device)
    info = training.dataset_info(args, need_data=not args.dry_run)
    config = network_config(args, info, genotype)
    utils.seed_everything(args.seed)
    model = devices.place_model(build_network(config, genotype), args, device)
    input_shape = (info.in_channels, info.image_size, info.image_size)
    if args.dry_run:
        print(complexity.describe(model, input_shape)[2])
        return 0

    signature = json.dumps({'kind': 'train', 'network': config, 'genotype': genotype_record(genotype)})
    run = runs.Run(args.save, args, args.resume, kind='train', signature=signature)
    loaders = build_loaders(args, device)
    params, _, description = complexity.describe(model, input_shape)
    logger.info('train %s on %s: %s', args.arch or args.arch_path, args.dataset, description.replace('\n', ', '))
    label_smooth = args.label_smooth
    if label_smooth is None:  # CNAS: smoothing for many classes only
        label_smooth = 0.1 if info.num_classes >= 50 else 0.0
    criterion = nn.CrossEntropyLoss(label_smoothing=label_smooth)

    def loss_of(outputs, y):
        logits, logits_aux = outputs
        loss = criterion(logits, y)
        return loss if logits_aux is None else loss + args.auxiliary_weight * criterion(logits_aux, y)

    optimizer = make_optimizer(args, model.parameters())
    scheduler = make_scheduler(args, optimizer)
    result = train_and_test(args, run, model, device, loaders, optimizer, scheduler, loss_of,
                            lambda epoch: args.drop_path_prob * epoch / schedule_epochs(args), params)
    if result is None:
        return 0
    if devices.is_main():
        utils.atomic_torch_save({'state_dict': model.state_dict(), 'network': config,
                                 'genotype': genotype_record(genotype), 'args': vars(args), 'metrics': result},
                                run.path('trained.pt'))
    report_test(result)
    logger.info('trained model written to %s', run.path('trained.pt'))
    return 0


def report_test(result):
    logger.info('test top1 %.2f%% top5 %.2f%% (error %.2f%%) loss %.4f',
                result['top1'], result['top5'], 100 - result['top1'], result['loss'])


def test_parser(preset):
    p = PRESETS[preset]
    parser = cli.default_parser(f'Test a trained model on the {p["dataset"]} test split')
    parser.add_argument('--model_path', required=True, help='trained.pt written by a train script')
    parser.add_argument('--arch', default=None, help='optional: the genotype the model must have')
    parser.add_argument('--arch_path', default=None, help='optional: genotype.json the model must have')
    parser.add_argument('--auxiliary', action='store_true', help='accepted for the seeds\' CLI; the head is read '
                        'from the model file and is not used at test time')
    parser.add_argument('--dataset', default=p['dataset'])
    parser.add_argument('--data', default='data')
    parser.add_argument('--batch_size', '--batchsz', type=int, default=p['test_batch_size'])
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--device', default='auto')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--dry_run', action='store_true', help='load the model, print parameters and FLOPs, exit')
    parser.add_argument('--no_progress', action='store_true')
    return parser


def load_trained(path, expected_genotype=None):
    """(model, config, genotype, training arguments) from a trained.pt, refusing files of another
    architecture."""
    checkpoint = utils.load_checkpoint_file(path, 'model file')
    if not isinstance(checkpoint, dict) or not {'state_dict', 'network', 'genotype'} <= checkpoint.keys():
        raise UserError(f"{path} is not a trained.pt written by train_*.py (no network/genotype record)")
    genotype = None if checkpoint['genotype'] is None else genotypes.from_dict(checkpoint['genotype'], source=path)
    if expected_genotype is not None and genotypes.to_dict(expected_genotype) != genotype_record(genotype):
        raise UserError(f"{path} holds a model of another architecture than the one given with "
                        f"--arch/--arch_path; drop those flags or pass the matching model")
    model = build_network(checkpoint['network'], genotype)
    try:
        model.load_state_dict(checkpoint['state_dict'])
    except RuntimeError as exc:
        raise UserError(f"{path}: weights do not fit the recorded architecture ({str(exc).splitlines()[0]})") from exc
    return model, checkpoint['network'], genotype, checkpoint.get('args', {})


def test_split(args, config, trained_args):
    """The test split of --dataset prepared as the model's training prepared its test split."""
    preparation = argparse.Namespace(dataset=args.dataset, data=args.data, cutout=False, cutout_length=0,
                                     image_size=config['image_size'], pipeline=trained_args.get('pipeline', 'auto'),
                                     cifar_normalization=trained_args.get('cifar_normalization', 'darts'))
    return training.load_split(preparation, train=False)


def test_main(argv, preset):
    args = test_parser(preset).parse_args(argv)
    expected = genotypes.resolve(args.arch, args.arch_path) if (args.arch or args.arch_path) else None
    device = devices.select_device(args.device)
    model, config, genotype, trained_args = load_trained(args.model_path, expected)
    model.to(device)
    if args.dry_run:
        print(complexity.describe(model, (config['in_channels'], config['image_size'], config['image_size']))[2])
        return 0
    info = datasets.dataset_info(args.dataset, args.data)
    if info.num_classes != config['num_classes']:
        raise UserError(f"{args.model_path} classifies {config['num_classes']} classes but --dataset "
                        f"{args.dataset} has {info.num_classes}; pass the dataset it was trained on")
    utils.seed_everything(args.seed)
    loader = training.make_loader(test_split(args, config, trained_args), args.batch_size, False, args.workers,
                                  device)
    cli.configure_logging()
    result = training.evaluate(model, loader, nn.CrossEntropyLoss(), device, desc='test', no_progress=args.no_progress)
    report_test(result)
    print(json.dumps({'top1': result['top1'], 'top5': result['top5'], 'error': 100 - result['top1']}))
    return 0
