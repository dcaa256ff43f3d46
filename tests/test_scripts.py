"""The search, train and test scripts end to end, as a researcher runs them, on tiny data sets
written in the real on-disk formats."""
import json
import os
import re
import signal
import time

import pytest
import torch

import genotypes
import registry
from tests import data_factory
from tests.helpers import assert_top1_in, kill_and_resume, kill_when, run, start, top1_range

TINY_SEARCH = ['--dataset', 'fashion-mnist', '--init_channels', '4', '--layers', '3', '--batch_size', '8',
               '--workers', '0', '--no_progress', '--num_meta_node', '2', '--report_freq', '0']
TINY_TRAIN = ['--init_channels', '4', '--layers', '3', '--batch_size', '16', '--test_batch_size', '16',
              '--workers', '0', '--no_progress', '--report_freq', '0']




@pytest.fixture(scope='module')
def fashion(tmp_path_factory):
    return data_factory.make_fashion_mnist(str(tmp_path_factory.mktemp('fmnist')), n_train=64, n_test=32)


@pytest.fixture(scope='module')
def cifar(tmp_path_factory):
    return data_factory.make_cifar10(str(tmp_path_factory.mktemp('cifar')), n_train=64, n_test=32)


def final_state(run_dir):
    return torch.load(os.path.join(run_dir, 'checkpoint.pt'), weights_only=False)['state']


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for name in a['model']:
        assert torch.equal(a['model'][name], b['model'][name]), name




@pytest.mark.parametrize('location', ['after_every', 'end'])
def test_search_writes_genotype_and_is_reproducible(tmp_path, fashion, location):
    first, second = tmp_path / 'a', tmp_path / 'b'
    for save in (first, second):
        run('train_search.py', *TINY_SEARCH, '--data', fashion, '--epochs', '1', '--location', location,
            '--save', save, '--seed', '3')
    genotype = genotypes.load(str(first / 'genotype.json'))
    assert len(genotype.normal) == 4 and genotype.normal_concat == [2, 3]
    if location == 'end':
        assert genotype.normal_bottleneck in registry.ATTENTIONS.names()
    alphas = [json.loads(line) for line in open(first / 'alphas.jsonl')]
    assert len(alphas) == 1 and len(alphas[0]['edges']) == 5
    assert (first / 'genotype.json').read_text() == (second / 'genotype.json').read_text()
    assert (first / 'alphas.jsonl').read_text() == (second / 'alphas.jsonl').read_text()
    assert_same_state(final_state(first), final_state(second))

    # The report of a real run: every image it shows exists.
    run('visualize.py', '--heatmap', first)
    wrong = run('visualize.py', '--heatmap', 'Att_DARTS', check=False)
    assert wrong.returncode == 2 and 'run directory' in wrong.stderr
    report = (first / 'report' / 'report.html').read_text()
    images = re.findall(r'<img[^>]* src="([^"]+)"', report)
    assert any('heatmap_alphas_normal' in i for i in images) and any('curves' in i for i in images)
    assert all((first / 'report' / i).is_file() for i in images)


def test_second_order_search_runs_and_compile_leaves_it_eager(tmp_path, fashion):
    """--compile is for the training scripts; a search says so and runs eagerly (compiling this
    supernet would take minutes)."""
    run('train_search.py', *TINY_SEARCH, '--data', fashion, '--epochs', '1', '--unrolled', '--compile',
        '--save', tmp_path / 'r')
    metrics = [json.loads(line) for line in open(tmp_path / 'r' / 'metrics.jsonl')]
    assert metrics[0]['epoch'] == 0 and 0 <= metrics[0]['valid_acc'] <= 100
    assert '--compile applies to the training scripts only' in (tmp_path / 'r' / 'log.txt').read_text()


def test_killed_search_resumes_to_the_uninterrupted_result(tmp_path, fashion):
    args = [*TINY_SEARCH, '--data', fashion, '--epochs', '3', '--seed', '5', '--checkpoint_steps', '1']
    run('train_search.py', *args, '--save', tmp_path / 'whole')
    whole = tmp_path / 'whole'

    # Killed in the first epoch, before any checkpoint: --resume starts over.
    save = tmp_path / 'early'
    kill_when('train_search.py', args, save, lambda: (save / 'args.json').exists())
    run('train_search.py', *args, '--save', save, '--resume')
    assert_same_state(final_state(whole), final_state(save))

    # Killed at random moments (inside epochs, between steps, while checkpoints are written),
    # resumed each time from whatever checkpoint survived.
    save = tmp_path / 'killed'
    kill_and_resume('train_search.py', args, save, seed=0, kills=3)
    assert_same_state(final_state(whole), final_state(save))
    for name in ('genotype.json', 'alphas.jsonl'):
        assert (whole / name).read_text() == (save / name).read_text()
    epochs = [json.loads(line)['epoch'] for line in open(save / 'metrics.jsonl')]
    assert epochs == [0, 1, 2]


def test_sigterm_writes_a_mid_epoch_checkpoint_and_exits_0(tmp_path, fashion):
    args = [*TINY_SEARCH, '--data', fashion, '--epochs', '2', '--seed', '6']
    run('train_search.py', *args, '--save', tmp_path / 'whole')
    save = tmp_path / 'term'
    proc = start('train_search.py', *args, '--save', save, '--checkpoint_steps', '1', capture=True)
    while proc.poll() is None and not (save / 'checkpoint.pt').exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    checkpoint = torch.load(save / 'checkpoint.pt', weights_only=False)
    assert checkpoint['epoch'] == 0 and checkpoint['step'] > 0
    run('train_search.py', *args, '--save', save, '--resume')
    assert_same_state(final_state(tmp_path / 'whole'), final_state(save))
    assert json.loads((save / 'metrics.jsonl').read_text().splitlines()[0])['train_loss'] == \
        json.loads((tmp_path / 'whole' / 'metrics.jsonl').read_text().splitlines()[0])['train_loss']


def test_train_then_test_cifar10(tmp_path, cifar):
    save = tmp_path / 'train'
    run('train_CIFAR10.py', *TINY_TRAIN, '--data', cifar, '--epochs', '2', '--arch', 'Att_DARTS', '--auxiliary',
        '--cutout', '--save', save)
    trained = torch.load(save / 'trained.pt', weights_only=False)
    assert trained['genotype'] == genotypes.to_dict(genotypes.Att_DARTS)
    assert trained['network']['auxiliary'] and 0 <= trained['metrics']['top1'] <= 100
    metrics = [json.loads(line) for line in open(save / 'metrics.jsonl')]
    assert [m['epoch'] for m in metrics] == [0, 1]

    result = run('test_CIFAR10.py', '--model_path', save / 'trained.pt', '--data', cifar, '--workers', '0',
                 '--no_progress', '--auxiliary')
    # Training evaluates channels-last in batches of 16, test_CIFAR10.py in NCHW in batches of 36:
    # both against a float64 evaluation.
    bounds = top1_range(save / 'trained.pt', 'cifar10', cifar)
    assert_top1_in(json.loads(result.stdout.strip().splitlines()[-1])['top1'], bounds)
    assert_top1_in(trained['metrics']['top1'], bounds)

    other = run('test_CIFAR10.py', '--model_path', save / 'trained.pt', '--data', cifar, '--arch', 'DARTS_V2',
                check=False)
    assert other.returncode == 2 and 'another architecture' in other.stderr


def test_killed_training_resumes(tmp_path, cifar):
    args = [*TINY_TRAIN, '--data', cifar, '--epochs', '2', '--arch', 'DARTS_V2', '--auxiliary', '--seed', '4',
            '--checkpoint_steps', '1']
    run('train_CIFAR10.py', *args, '--save', tmp_path / 'whole')
    save = tmp_path / 'part'
    kill_and_resume('train_CIFAR10.py', args, save, seed=1, kills=2)
    assert_same_state(final_state(tmp_path / 'whole'), final_state(save))
    whole = torch.load(tmp_path / 'whole' / 'trained.pt', weights_only=False)
    resumed = torch.load(save / 'trained.pt', weights_only=False)
    assert whole['metrics'] == resumed['metrics']
    assert [json.loads(line)['epoch'] for line in open(save / 'metrics.jsonl')] == [0, 1]


@pytest.mark.parametrize('script', ['train_CIFAR10.py', 'train_CIFAR100.py', 'train_ImageNet.py', 'train_search.py'])
def test_dry_run_needs_no_data(tmp_path, script):
    extra = [] if script == 'train_search.py' else ['--arch', 'DARTS_V2', '--auxiliary']
    result = run(script, '--dry_run', '--data', tmp_path / 'nothing-here', *extra)
    assert 'params:' in result.stdout and 'flops:' in result.stdout
    assert 'kernels: fast' in result.stdout  # --kernels auto on the CPU
    plain = run(script, '--dry_run', '--data', tmp_path / 'nothing-here', '--kernels', 'plain', *extra)
    assert 'kernels: plain' in plain.stdout
    flops = [line for line in result.stdout.splitlines() if line.startswith('flops:')]
    assert flops and flops == [line for line in plain.stdout.splitlines() if line.startswith('flops:')]


def test_bad_input_gives_one_line_and_exit_2(tmp_path, cifar):
    broken = tmp_path / 'broken.json'
    broken.write_text('{"normal": [["sep_conv_3x3", 0]')
    cases = [
        (['train_CIFAR10.py', '--arch', 'DARTS_V2', '--arch_path', broken], 'not both'),
        (['train_CIFAR10.py', '--arch_path', broken, '--dry_run'], 'not valid JSON'),
        (['train_CIFAR10.py', '--arch', 'NoSuchNet', '--dry_run'], 'unknown --arch'),
        (['train_search.py', '--dataset', 'mnist3d', '--dry_run'], 'mnist3d'),
        (['train_search.py', '--dataset', 'cifar10', '--data', tmp_path / 'empty', '--save', tmp_path / 's'],
         'CIFAR-10'),
        (['test_CIFAR10.py', '--model_path', tmp_path / 'missing.pt'], 'does not exist'),
    ]
    for argv, message in cases:
        result = run(*argv, check=False)
        assert result.returncode == 2, (argv, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith('error:') and message in lines[0], (argv, result.stderr)


def test_existing_run_directory_is_not_overwritten(tmp_path, cifar):
    save = tmp_path / 'run'
    save.mkdir()
    (save / 'genotype.json').write_text('precious')
    result = run('train_search.py', '--dataset', 'cifar10', '--data', cifar, '--save', save, check=False)
    assert result.returncode == 2 and '--resume' in result.stderr
    assert (save / 'genotype.json').read_text() == 'precious'
