"""Searches and training under torchrun with 2 CPU processes (gloo): every rank holds the same
architecture weights, only rank 0 writes the run directory, and a killed job resumes exactly."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests import data_factory
from tests.helpers import ROOT
from tests.test_scripts import TINY_SEARCH, TINY_TRAIN, assert_same_state, final_state

pytestmark = pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason='torch built without gloo')


def torchrun(script, *args):
    return [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
            script, *map(str, args)]


def run_job(script, *args):
    result = subprocess.run(torchrun(script, *args), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope='module')
def fashion(tmp_path_factory):
    return data_factory.make_fashion_mnist(str(tmp_path_factory.mktemp('fmnist')), n_train=64, n_test=32)


def test_two_process_search_agrees_and_writes_one_set_of_outputs(tmp_path, fashion):
    save = tmp_path / 'ddp'
    out = run_job('train_search.py', *TINY_SEARCH, '--data', fashion, '--epochs', '2', '--save', save)
    digests = dict(re.findall(r'rank (\d): architecture weights sha256 (\w+)', out))
    assert set(digests) == {'0', '1'} and digests['0'] == digests['1']
    assert sorted(os.listdir(save)) == ['alphas.jsonl', 'args.json', 'checkpoint.pt', 'genotype.json',
                                        'log.txt', 'metrics.jsonl']
    assert [line.count('"epoch"') for line in (save / 'metrics.jsonl').read_text().splitlines()] == [1, 1]
    assert (save / 'log.txt').read_text().count('epoch 1/2') == 1


def test_killed_two_process_search_resumes_exactly(tmp_path, fashion):
    args = [*TINY_SEARCH, '--data', fashion, '--epochs', '2', '--seed', '7', '--checkpoint_steps', '1']
    run_job('train_search.py', *args, '--save', tmp_path / 'whole')
    save = tmp_path / 'killed'
    job = subprocess.Popen(torchrun('train_search.py', *args, '--save', save), cwd=ROOT, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while job.poll() is None and time.time() < deadline and not (save / 'checkpoint.pt').exists():
        time.sleep(0.02)
    time.sleep(0.5)
    os.killpg(job.pid, signal.SIGKILL)  # the launcher and both workers
    job.wait()
    # Resumed recomputing its cells (under DistributedDataParallel), which changes no number.
    run_job('train_search.py', *args, '--save', save, '--resume', '--recompute_cells')
    assert_same_state(final_state(tmp_path / 'whole'), final_state(save))
    assert (tmp_path / 'whole' / 'genotype.json').read_text() == (save / 'genotype.json').read_text()


def test_two_process_training(tmp_path):
    cifar = data_factory.make_cifar10(str(tmp_path / 'cifar'))
    save = tmp_path / 'train'
    run_job('train_CIFAR10.py', *TINY_TRAIN, '--data', cifar, '--epochs', '1', '--arch', 'DARTS_V2',
            '--auxiliary', '--save', save)
    trained = torch.load(save / 'trained.pt', weights_only=False)
    assert 0 <= trained['metrics']['top1'] <= 100
    assert len((save / 'metrics.jsonl').read_text().splitlines()) == 1


def test_single_process_scripts_refuse_torchrun(tmp_path, fashion):
    result = subprocess.run(torchrun('train_search_slnas.py', '--dataset', 'fashion-mnist', '--data', fashion,
                                     '--save', tmp_path / 'slnas'), cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0 and 'runs in one process' in result.stderr
    assert not (tmp_path / 'slnas').exists()


def search_with_nan_on_rank_1(calls, data, *args):
    """A one-epoch search whose training criterion calls `calls` return NaN on rank 1 only; a
    hang (collectives unmatched) fails by the timeout."""
    return subprocess.run(torchrun('tests/nan_on_one_rank.py', *TINY_SEARCH, '--data', data, '--epochs', '1', *args),
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, 'NAN_CALLS': calls})


def test_nonfinite_loss_on_one_rank_is_skipped_by_both(tmp_path, fashion):
    """A NaN in rank 1's architecture loss of step 1 and weight loss of step 2 (criterion calls 3
    and 5 of a first-order search; 4 steps of batch 4): both ranks skip both steps and end with
    the same weights."""
    save = tmp_path / 'nan'
    result = search_with_nan_on_rank_1('3,5', fashion, '--batch_size', '4', '--skip_nonfinite', '--save', save)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    digests = {rank: (arch, weights) for rank, arch, weights in re.findall(
        r'rank (\d): architecture weights sha256 ([0-9a-f]{64}), network weights sha256 ([0-9a-f]{64})', result.stdout)}
    assert set(digests) == {'0', '1'} and digests['0'] == digests['1']
    metrics = [json.loads(line) for line in (save / 'metrics.jsonl').read_text().splitlines()]
    assert metrics[0]['skipped_batches'] == 2
    log = (save / 'log.txt').read_text()
    assert 'non-finite loss on another process at epoch 1 step 1 (architecture step)' in log
    assert 'non-finite loss on another process at epoch 1 step 2' in log


def test_nonfinite_loss_on_one_rank_stops_both(tmp_path, fashion):
    result = search_with_nan_on_rank_1('3', fashion, '--save', tmp_path / 'nan')
    assert result.returncode != 0
    assert 'error: non-finite loss (nan) at epoch 1 step 1 (architecture step)' in result.stderr
    assert 'error: non-finite loss on another process at epoch 1 step 1 (architecture step)' in result.stderr
