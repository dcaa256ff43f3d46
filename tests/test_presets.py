"""--preset: each paper's defaults replace the parser's before parsing, explicit flags win, the
per-data-set and per-baseline refinements apply, and a preset of another step names its script."""
import pytest
import torch

import build_nas_dataset
import cli
import datasets
import evaluation
import presets
import retrain_slnas
import search
import train_search_slnas
from utils import UserError

PARSERS = {
    'search': search.build_parser,
    'anas_search': search.build_anas_parser,
    'slnas_search': train_search_slnas.build_parser,
    'nasdata': build_nas_dataset.build_parser,
    'train': lambda: evaluation.train_parser('cifar10'),
    'anas_train': lambda: evaluation.train_parser('anas'),
    'slnas_train': retrain_slnas.build_parser,
}


def parse(kind, *argv):
    return cli.parse(PARSERS[kind](), list(argv))


def test_every_script_kind_has_a_parser_and_every_preset_name_a_home():
    assert set(PARSERS) == set(presets.PRESETS) == set(presets.STEP_OF_KIND)
    for step in presets.SCRIPTS.values():
        assert set(step) == set(presets.NAMES)


@pytest.mark.parametrize('kind, name', [(kind, name) for kind, table in presets.PRESETS.items() for name in table])
def test_every_setting_of_a_preset_is_a_flag_of_its_script_and_takes_effect(kind, name):
    table = presets.PRESETS[kind][name]
    when = list(table.get('when', ()))
    script_defaults = {flag: PARSERS[kind]().get_default(flag) for flag, _, _ in when}
    for case in [None] + when:
        given = dict(script_defaults)
        if case:
            given[case[0]] = case[1]
        args = vars(parse(kind, '--preset', name, *[f'--{flag}={value}' for flag, value in given.items()]))
        expected = dict(table['defaults'])
        for flag, value, extra in when:
            if given[flag] == value:
                expected.update(extra)
        for key, value in expected.items():
            assert key in args, f'{kind}/{name}: {key} is no flag of the script'
            assert args[key] == value, f'{kind}/{name}: {key}'


def test_an_explicit_flag_beats_the_preset():
    assert parse('search', '--preset', 'cnas').batch_size == 32
    args = parse('search', '--preset', 'cnas', '--batch_size', '7', '--primitives', 'darts', '--stem_affine')
    assert (args.batch_size, args.primitives, args.stem_affine) == (7, 'darts', True)
    # Per data set: CNAS searches CIFAR-100 50 epochs at 24 channels, larger images with a strided stem.
    args = parse('search', '--preset', 'cnas', '--dataset', 'CIFAR-100')
    assert (args.epochs, args.init_channels, args.reduce_level) == (50, 24, 0)
    assert parse('search', '--preset', 'cnas', '--dataset', 'cifar100', '--epochs', '3').epochs == 3
    assert parse('search', '--preset', 'cnas', '--dataset', 'tiny-imagenet').reduce_level == 1
    # Without a preset the script's own defaults stand.
    assert parse('search').batch_size == 64 and parse('search').primitives == 'darts'


def test_the_preset_replaces_the_defaults_before_parsing():
    parser = search.build_parser()
    presets.apply(parser, ['--preset', 'cnas', '--epochs', '2'])
    assert parser.get_default('batch_size') == 32 and parser.get_default('primitives') == 'cnas'
    assert parser.get_default('epochs') == 60  # the default; the explicit 2 is the parse's business


def test_a_preset_of_another_step_names_its_script():
    with pytest.raises(UserError, match=r'search_net.py --preset anas'):
        parse('search', '--preset', 'anas')
    with pytest.raises(UserError, match=r'retrain_slnas.py --preset slnas'):
        parse('train', '--preset', 'slnas')
    with pytest.raises(SystemExit):
        parse('search', '--preset', 'darts')  # not a choice: argparse's own message


def test_an_abbreviated_preset_or_dataset_is_refused():
    with pytest.raises(UserError, match='write --preset in full'):
        parse('search', '--pres', 'cnas')
    with pytest.raises(UserError, match='write --dataset in full'):
        parse('search', '--preset', 'cnas', '--datase', 'cifar100')
    assert parse('search', '--datase', 'cifar100').dataset == 'cifar100'  # no preset: nothing to miss


def test_train_presets_choose_the_papers_architecture_unless_one_is_given():
    for name, arch in (('attdarts', 'Att_DARTS'), ('cnas', 'DARTS_MORE_V1'), ('nag', 'NAG')):
        args = parse('train', '--preset', name)
        evaluation.resolve_genotype(args)
        assert args.arch == arch
    args = parse('train', '--preset', 'cnas', '--arch_path', 'genotype.json')
    assert args.arch is None and args.preset_arch == 'DARTS_MORE_V1'


def test_cnas_label_smoothing_and_head_follow_the_class_count(capsys):
    args = parse('train', '--preset', 'cnas', '--dataset', 'imagefolder')
    assert args.label_smooth is None and args.pooled_head is None and args.scheduler == 'step'
    info = datasets.DatasetInfo(101, 3, 32, None, None)
    assert evaluation.network_config(args, info, None)['pooled_head']
    assert not evaluation.network_config(args, info._replace(num_classes=10), None)['pooled_head']
    assert parse('train', '--preset', 'cnas', '--no-pooled_head').pooled_head is False


def test_a_schedule_longer_than_the_training_is_cut_as_nags_random_search_cuts_it():
    import math
    args = parse('train', '--epochs', '50', '--schedule_epochs', '600', '--learning_rate', '0.025')
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.025)
    scheduler = evaluation.make_scheduler(args, optimizer)
    for _ in range(50):
        optimizer.step()
        scheduler.step()
    assert scheduler.get_last_lr()[0] == pytest.approx(0.025 * (1 + math.cos(math.pi * 50 / 600)) / 2, rel=1e-12)
    with pytest.raises(UserError, match='must span the training'):
        evaluation.make_scheduler(parse('train', '--epochs', '50', '--schedule_epochs', '10'), optimizer)


def test_anas_preset_trains_the_se_resnet_baseline_with_its_multistep_schedule():
    args = parse('anas_train', '--preset', 'anas', '--attention', 'se')
    assert (args.scheduler, args.milestones, args.gamma, args.se_reduction) == ('multistep', [90, 135], 0.1, 1)
    assert parse('anas_train', '--preset', 'anas').scheduler == 'cosine'
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    scheduler = evaluation.make_scheduler(args, optimizer)
    rates = []
    for _ in range(180):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    # x0.1 at epochs 90 and 135, as se_resnet_cifar's MultiStepLR([90, 135], 0.1).
    assert rates[89] == 0.1 and rates[90] == pytest.approx(0.01, rel=1e-15) and rates[134] == rates[90]
    assert rates[135] == pytest.approx(0.001, rel=1e-15) and rates[179] == rates[135]
