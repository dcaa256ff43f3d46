"""compare.py: several architectures under one protocol, side by side; resumable after a kill."""
import json
import os
import statistics
import sys
import time

import pytest
import torch

import compare
import datasets
import evaluation
import genotypes
import search_space
from tests import data_factory
from tests.helpers import kill_when, run

TINY = ['--dataset', 'fashion-mnist', '--epochs', '1', '--init_channels', '4', '--layers', '3', '--batch_size', '16',
        '--workers', '0', '--seeds', '2', '--latency_repeats', '2']


@pytest.fixture(scope='module')
def fashion(tmp_path_factory):
    return data_factory.make_fashion_mnist(str(tmp_path_factory.mktemp('fmnist')), n_train=64, n_test=32)


def processes_mentioning(text):
    """Pids of the processes whose command line contains `text` (Linux /proc)."""
    found = []
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                if text.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def test_compare_writes_the_table_and_resumes_without_redoing_finished_runs(tmp_path, fashion):
    save = tmp_path / 'cmp'
    args = ['DARTS_V2', 'random:1', *TINY, '--data', fashion, '--jobs', '2']
    first = save / 'runs' / 'DARTS_V2' / 'seed2' / 'trained.pt'
    kill_when('compare.py', args, save, first.exists)
    finished = {path: os.stat(path).st_mtime_ns for path in save.glob('runs/*/seed*/trained.pt')}
    assert first in finished and len(finished) < 4
    if sys.platform.startswith('linux'):  # the runs die with the comparison (no writer left behind)
        deadline = time.time() + 30
        while processes_mentioning(str(save)) and time.time() < deadline:
            time.sleep(0.1)
        assert processes_mentioning(str(save)) == []

    result = run('compare.py', *args, '--save', save, '--resume')
    assert f'{len(finished)} of 4 runs already finished' in result.stdout
    for path, mtime in finished.items():
        assert os.stat(path).st_mtime_ns == mtime  # not trained again

    results = json.loads((save / 'results.json').read_text())
    rows = {row['label']: row for row in results['architectures']}
    assert set(rows) == {'DARTS_V2', 'random_0'} and results['protocol']['seeds'] == [2, 3]
    assert rows['random_0']['random'] and not rows['DARTS_V2']['random']
    assert rows['DARTS_V2']['genotype'] == genotypes.to_dict(genotypes.DARTS_V2)
    sampled = search_space.sample_genotypes(1, seed=0, location='after_every')[0]
    assert rows['random_0']['genotype'] == genotypes.to_dict(sampled)
    for label, row in rows.items():
        assert [r['seed'] for r in row['runs']] == [2, 3]
        accuracies = []
        for r in row['runs']:
            trained = torch.load(save / r['run_dir'] / 'trained.pt', weights_only=False)
            assert r['top1'] == trained['metrics']['top1']
            accuracies.append(r['top1'])
        assert row['top1_mean'] == pytest.approx(statistics.fmean(accuracies))
        assert row['top1_std'] == pytest.approx(statistics.stdev(accuracies))
        model, config, _, _ = evaluation.load_trained(str(save / row['runs'][0]['run_dir'] / 'trained.pt'))
        assert row['params_M'] == sum(p.numel() for n, p in model.named_parameters() if 'auxiliary' not in n) / 1e6
        assert row['flops_M'] > 0 and row['latency_ms'] > 0 and row['init_channels'] == config['C'] == 4
    table = (save / 'results.md').read_text()
    assert '| DARTS_V2 |' in table and '| random_0 |' in table and '±' in table
    for plot in ('accuracy_vs_params.png', 'accuracy_vs_latency.png'):
        assert (save / plot).stat().st_size > 0
        assert f'src="{plot}"' in (save / 'report.html').read_text()

    # Every run is finished: a second resume trains nothing.
    again = run('compare.py', *args, '--save', save, '--resume')
    assert '4 of 4 runs already finished' in again.stdout and ' start ' not in again.stdout


def test_param_budget_gives_the_nearest_channel_count(fashion):
    args = evaluation.train_parser('cifar10').parse_args(['--layers', '3', '--dataset', 'fashion-mnist'])
    info = datasets.dataset_info('fashion-mnist', fashion)
    for genotype in (genotypes.DARTS_V2, genotypes.Att_DARTS):
        counts = {c: compare.parameters_at(args, info, genotype, c) for c in range(1, 25)}
        for budget in (0.004, 0.02, 0.05):
            chosen = compare.channels_for_budget(args, info, genotype, budget)
            assert abs(counts[chosen] - budget) == min(abs(p - budget) for p in counts.values())


def test_bad_input_gives_one_line_exit_2_and_overwrites_nothing(tmp_path, fashion):
    base = [*TINY, '--data', fashion]
    existing = tmp_path / 'existing'
    existing.mkdir()
    (existing / 'notes.txt').write_text('precious')
    not_a_search = tmp_path / 'empty-dir'
    not_a_search.mkdir()
    cases = [
        (['NoSuchNet', *base, '--save', tmp_path / 'a'], 'unknown genotype'),
        (['random:0', *base, '--save', tmp_path / 'b'], 'positive integer'),
        (['random:2', 'random:3', *base, '--save', tmp_path / 'c'], 'random:N once'),
        ([not_a_search, *base, '--save', tmp_path / 'd'], 'no genotype.json'),
        (['ANAS', *base, '--save', tmp_path / 'e'], 'not a cell architecture'),
        (['DARTS_V2', *base, '--save', existing], 'already exists'),
        (['DARTS_V2', *base, '--save', tmp_path / 'f', '--', '--seed', '3'], 'set by compare.py'),
        (['DARTS_V2', *base, '--save', tmp_path / 'g', '--', '--no_such_flag'], 'refused'),
        (['DARTS_V2', *base, '--save', tmp_path / 'h', '--devices', 'cuda:99'], 'not a visible GPU'),
        (['DARTS_V2', *base, '--save', tmp_path / 'i', '--resume'], 'nothing to resume'),
        (['DARTS_V2', *TINY, '--dataset', 'cifar10', '--data', tmp_path / 'no-data', '--save', tmp_path / 'j'],
         'CIFAR-10'),
    ]
    for argv, message in cases:
        result = run('compare.py', *argv, check=False)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith('error:'), (argv, result.stderr)
        assert message in lines[0], (argv, lines[0])
    assert (existing / 'notes.txt').read_text() == 'precious' and sorted(os.listdir(existing)) == ['notes.txt']
    assert not any((tmp_path / name).exists() for name in 'abcdefghij')

    # A comparison resumed with another protocol is refused before anything in it changes.
    save = tmp_path / 'other'
    save.mkdir()
    protocol, _ = compare.make_plan(compare.build_parser().parse_args(['DARTS_V2', *base]), [])
    (save / 'comparison.json').write_text(json.dumps(protocol))
    before = (save / 'comparison.json').read_text()
    result = run('compare.py', 'DARTS_V2', *base, '--epochs', '2', '--save', save, '--resume', check=False)
    assert result.returncode == 2 and 'another protocol' in result.stderr and 'flags' in result.stderr
    assert (save / 'comparison.json').read_text() == before and os.listdir(save) == ['comparison.json']
