"""Every flag of every script is checked before anything is written (flags.py), and a --resume says
what it keeps and what it changes (issue 40)."""
import glob
import hashlib
import importlib
import json
import os
import re
import signal
import time

import pytest
import torch

import flags
from tests import data_factory
from tests.helpers import ROOT, run, start
from tests.test_scripts import TINY_SEARCH, TINY_TRAIN
from utils import UserError


class _Parsed(Exception):
    """Raised in place of parsing: the script has built its parser."""


def script_names():
    """Every script of the repository: a top-level module that runs as __main__."""
    names = []
    for path in sorted(glob.glob(os.path.join(ROOT, '*.py'))):
        with open(path) as f:
            if "if __name__ == '__main__':" in f.read():
                names.append(os.path.splitext(os.path.basename(path))[0])
    return names


def script_parser(name, monkeypatch):
    """The parser `name`'s main builds, with the checks of flags.py installed."""
    captured = []

    def capture(parser, argv):
        captured.append(flags.install(parser))
        raise _Parsed

    monkeypatch.setattr(flags, 'parse_args', capture)
    with pytest.raises(_Parsed):
        importlib.import_module(name).main([])
    return captured[0]


SCRIPTS = script_names()


def test_scripts_are_found():
    assert {'train_search', 'train_CIFAR10', 'test_CIFAR10', 'bench', 'compare', 'gan', 'visualize'} <= set(SCRIPTS)


def shown(action):
    return action.option_strings[0]


@pytest.mark.parametrize('script', SCRIPTS)
def test_every_numeric_flag_refuses_what_it_cannot_mean_in_one_line(script, monkeypatch):
    """Every int or float flag (found in the script's parser, not listed here) has a range in
    flags.CHECKS; zero, a negative number, NaN and a non-number are each refused with one line
    naming the flag, the value and what is accepted, or accepted as its --help says."""
    parser = script_parser(script, monkeypatch)
    help_text = ' '.join(parser.format_help().split())
    numeric = list(flags.numeric_actions(parser))
    for action, kind in numeric:
        if action.choices is not None:  # argparse checks the choices
            continue
        check = getattr(action.type, 'range', None)
        assert isinstance(check, flags.Range), f'{script}: {shown(action)} has no range in flags.CHECKS'
        assert ' '.join(check.describe(kind).split()) in help_text, (script, shown(action))
        for value in ('0', '-1', 'nan', 'x'):
            try:
                number = kind(value)
            except ValueError:
                number = None
            if number is not None and check.accepts(number):
                continue  # documented acceptance: the range is in --help (asserted above)
            with pytest.raises(UserError) as refusal:
                parser.parse_args([shown(action), value])
            message = str(refusal.value)
            assert '\n' not in message and shown(action) in message and value in message, message
            assert check.describe(kind) in message, message


@pytest.mark.parametrize('script', SCRIPTS)
def test_a_bad_flag_is_one_line_and_exit_2_from_main(script, capsys, monkeypatch):
    """Through the script's entry point (the cli wrapper): a non-number, an unknown flag (with the
    script's required arguments given, an existing file each or 1 for a number, so that the flag is what
    is wrong)."""
    parser = script_parser(script, monkeypatch)
    monkeypatch.undo()
    main = importlib.import_module(script).main
    required = [arg for action in parser._actions if action.required
                for arg in [*action.option_strings[:1],
                            '1' if getattr(action.type, 'kind', None) in (int, float) else os.path.join(ROOT, 'README.md')]]
    numeric = [action for action, _ in flags.numeric_actions(parser) if action.choices is None]
    cases = [['--no_such_flag']] + ([[shown(numeric[0]), 'x']] if numeric else [])
    for argv in cases:
        assert main([*argv, *required]) == 2
        out, err = capsys.readouterr()
        assert len(err.strip().splitlines()) == 1 and err.startswith('error: ') and argv[0] in err, err


def test_ranges_and_their_descriptions():
    clip = flags.CHECKS['grad_clip']
    assert clip.accepts(0.5) and clip.accepts(float('inf')) and not clip.accepts(0.0) and not clip.accepts(-1.0)
    assert not clip.accepts(float('nan'))
    portion = flags.CHECKS['train_portion']
    assert not portion.accepts(0.0) and portion.accepts(0.5) and not portion.accepts(1.0)
    assert not flags.CHECKS['learning_rate'].accepts(float('inf'))
    assert flags.CHECKS['workers'].describe(int) == 'an integer at least 0 (0: load in the main process)'
    assert portion.describe(float) == 'a number from 0 (excluded) to 1 (excluded)'


# --- the cases of issue 40, each as the user runs them ------------------------------------------

@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('flags')
    return {'root': root, 'fashion': data_factory.make_fashion_mnist(str(root / 'fmnist')),
            'cifar': data_factory.make_cifar10(str(root / 'cifar'))}


@pytest.fixture(scope='module')
def search_run(data):
    """A finished one-epoch search to resume."""
    save = data['root'] / 'search'
    run('train_search.py', *TINY_SEARCH, '--data', data['fashion'], '--epochs', '1', '--save', save)
    return save


def snapshot(directory):
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.rglob('*')) if p.is_file()}


def one_line_error(result):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith('error: '), result.stderr[-2000:]
    return lines[0]


def search_args(data):
    return [*TINY_SEARCH, '--data', data['fashion'], '--epochs', '1']


FLAG_CASES = {
    'negative grad clip': (['train_search.py', '--grad_clip', '-1'], 'argument --grad_clip: -1 is out of range'),
    'zero grad clip': (['train_search.py', '--grad_clip', '0'], 'argument --grad_clip: 0 is out of range'),
    'negative arch grad clip': (['train_search.py', '--arch_grad_clip', '-1'], '--arch_grad_clip: -1'),
    'negative grad clip (training)': (['train_CIFAR10.py', '--grad_clip', '-1'], '--grad_clip: -1'),
    'unknown device': (['train_search.py', '--device', 'gpu'], "unknown device 'gpu'"),
    'negative workers': (['train_search.py', '--workers', '-1'], '--workers: -1 is out of range'),
    'negative learning rate': (['train_CIFAR10.py', '--learning_rate', '-1'], '--learning_rate/--lr: -1'),
    'NaN learning rate': (['train_search.py', '--lr', 'nan'], '--learning_rate/--lr: nan'),
    'non-number': (['gan.py', '--b1', 'half'], "'half' is not a number"),
}


@pytest.mark.parametrize('case', list(FLAG_CASES))
def test_flag_case_is_one_line_and_writes_nothing(case, data):
    argv, message = FLAG_CASES[case]
    save = data['root'] / f'never-{case.replace(" ", "-")}'
    line = one_line_error(run(*argv, '--save', save, check=False))
    assert message in line, line
    assert not save.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason='a GPU is visible')
def test_cuda_without_a_gpu_is_one_line(data):
    assert 'no GPU is visible' in one_line_error(run('train_search.py', '--device', 'cuda', check=False))
    assert 'no GPU is visible' in one_line_error(run('bench.py', '--device', 'cuda', check=False))


def test_paths_of_the_wrong_kind_are_named(data, search_run):
    line = one_line_error(run('train_CIFAR10.py', '--arch_path', search_run, '--dry_run', check=False))
    assert f'--arch_path: {search_run} is a directory' in line
    line = one_line_error(run('test_CIFAR10.py', '--model_path', search_run, check=False))
    assert f'--model_path: {search_run} is a directory' in line
    line = one_line_error(run('test_CIFAR10.py', '--model_path', data['root'] / 'none.pt', check=False))
    assert 'does not exist' in line


@pytest.mark.parametrize('bad, message', [
    (['--dataset', 'fashion-mnist', '--pipeline', 'imagenet'], '--pipeline imagenet'),
    (['--dataset', 'cifar10', '--data', 'no-such-dir'], 'CIFAR-10'),
    (['--batch_size', '4096'], 'larger than the search split'),
])
def test_a_refused_run_leaves_nothing_that_blocks_the_corrected_command(data, tmp_path, bad, message):
    save = tmp_path / 'run'
    argv = search_args(data)
    line = one_line_error(run('train_search.py', *argv, *bad, '--save', save, check=False))
    assert message in line and not save.exists(), line
    run('train_search.py', *argv, '--save', save)  # the corrected command: no "already exists"
    assert (save / 'checkpoint.pt').is_file()


@pytest.mark.parametrize('changed, named', [
    (['--learning_rate', '0.1'], '--learning_rate 0.1 (the run\'s: 0.025)'),
    (['--seed', '5'], "--seed 5 (the run's: 2)"),
    (['--batch_size', '4'], "--batch_size 4 (the run's: 8)"),
    (['--init_channels', '8'], "--init_channels 8 (the run's: 4)"),
    (['--dataset', 'cifar10'], "--dataset cifar10 (the run's: fashion-mnist)"),
    (['--unrolled', '--layers', '4'], "--layers 4 (the run's: 3), --unrolled on (the run's: off)"),
    (['--epochs', '0'], '--epochs: 0 is out of range'),
])
def test_resume_refuses_a_flag_that_defines_the_run_by_its_name(data, search_run, changed, named):
    before = snapshot(search_run)
    line = one_line_error(run('train_search.py', *search_args(data), *changed, '--save', search_run, '--resume',
                              check=False))
    assert named in line, line
    assert snapshot(search_run) == before


def test_resume_refuses_fewer_epochs_than_done(data, tmp_path, search_run):
    save = tmp_path / 'two'
    run('train_search.py', *TINY_SEARCH, '--data', data['fashion'], '--epochs', '2', '--save', save)
    before = snapshot(save)
    line = one_line_error(run('train_search.py', *search_args(data), '--save', save, '--resume', check=False))
    assert 'fewer than the 2 epochs' in line and snapshot(save) == before


def test_resume_applies_more_epochs_and_a_new_minimum_rate_and_records_them(data, tmp_path):
    """--epochs 1 -> 3 and --learning_rate_min 0.001 -> 0.01: the log says so, args.json holds the new
    values and the change in its history, and the learning rate of the epochs after the resume is
    the cosine schedule of 3 epochs ending at 0.01 (its closed form), not the old schedule's."""
    save = tmp_path / 'grow'
    run('train_search.py', *search_args(data), '--save', save)
    args = [*TINY_SEARCH, '--data', data['fashion'], '--epochs', '3', '--learning_rate_min', '0.01',
            '--report_freq', '5']
    result = run('train_search.py', *args, '--save', save, '--resume')
    log = (save / 'log.txt').read_text()
    said = 'resuming with --epochs 3, was 1; --learning_rate_min 0.01, was 0.001; --report_freq 5, was 0'
    assert said in log and said in result.stdout
    record = json.loads((save / 'args.json').read_text())
    assert record['epochs'] == 3 and record['learning_rate_min'] == 0.01
    assert record['history'][0]['changed'] == {'epochs': {'was': 1, 'now': 3},
                                               'learning_rate_min': {'was': 0.001, 'now': 0.01},
                                               'report_freq': {'was': 0, 'now': 5}}
    lrs = [json.loads(line)['lr'] for line in open(save / 'metrics.jsonl')]
    base, low = 0.025, 0.01
    import math
    assert lrs[0] == base and len(lrs) == 3
    assert lrs[1:] == pytest.approx([low + (base - low) * (1 + math.cos(math.pi * e / 3)) / 2 for e in (1, 2)],
                                    rel=1e-12)


def test_a_run_stopped_before_its_first_checkpoint_starts_over_with_new_flags(data, tmp_path):
    """A training run whose loss is NaN in its first epoch stops with no checkpoint: the same command
    without --resume says how to start over; --resume with a corrected learning rate does, and
    records it."""
    save = tmp_path / 'nan'
    args = [*TINY_TRAIN, '--data', data['cifar'], '--arch', 'DARTS_V2', '--epochs', '1', '--grad_clip', '1e30']
    result = run('train_CIFAR10.py', *args, '--learning_rate', '1e12', '--save', save, check=False)
    assert result.returncode == 2 and 'non-finite loss' in result.stderr
    assert not (save / 'checkpoint.pt').exists()
    line = one_line_error(run('train_CIFAR10.py', *args, '--save', save, check=False))
    assert 'stopped before its first checkpoint; pass --resume to start it over' in line
    run('train_CIFAR10.py', *args, '--save', save, '--resume')
    record = json.loads((save / 'args.json').read_text())
    assert record['learning_rate'] == 0.025 and (save / 'trained.pt').is_file()
    entry = record['history'][0]
    assert entry['changed']['learning_rate'] == {'was': 1e12, 'now': 0.025} and 'started over' in entry['note']


def test_sigterm_counts_epochs_from_1_as_the_log(data, tmp_path):
    save = tmp_path / 'term'
    process = start('train_search.py', *TINY_SEARCH, '--data', data['fashion'], '--epochs', '3', '--report_freq', '1',
                    '--save', save, capture=True)
    log = save / 'log.txt'
    deadline = time.time() + 120
    # A step line: the loop, with its signal handler, is running.
    while process.poll() is None and not (log.exists() and ' loss ' in log.read_text()) and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    assert process.wait(120) == 0
    said = re.search(r'SIGTERM: checkpoint written (in|after) epoch (\d+)', (save / 'log.txt').read_text())
    done = sum(1 for _ in open(save / 'metrics.jsonl')) if (save / 'metrics.jsonl').exists() else 0
    assert said, (save / 'log.txt').read_text()
    assert int(said.group(2)) == (done + 1 if said.group(1) == 'in' else done)


def test_truncated_comparison_record_under_resume_is_one_line(data, tmp_path):
    save = tmp_path / 'cmp'
    save.mkdir()
    (save / 'comparison.json').write_text('{"architectures": [')
    line = one_line_error(run('compare.py', 'DARTS_V2', '--dataset', 'fashion-mnist', '--data', data['fashion'],
                              '--save', save, '--resume', check=False))
    assert 'comparison.json is not valid JSON' in line
    assert os.listdir(save) == ['comparison.json']


def test_the_flags_a_resume_may_change_are_documented():
    with open(os.path.join(ROOT, 'docs', 'flags.md')) as f:
        table = f.read().split('## What a resume keeps and changes')[1]
    documented = set(re.findall(r'^\| (.*?) \|', table, re.M)[1:])  # after the header
    listed = {flag.strip('`') for row in documented for flag in row.split(', ')}
    assert listed == {f'--{name}' for name in flags.ON_RESUME}
    epilog = ' '.join(flags.resume_epilog().split())
    assert all(f'--{name}' in epilog for name in flags.ON_RESUME)
