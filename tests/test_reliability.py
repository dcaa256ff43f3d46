"""Bad input gets one clear line and exit code 2, and leaves what earlier runs wrote untouched;
non-finite losses stop a run (or are skipped on request); atomic writes survive a crash."""
import hashlib
import json
import os
import shutil

import pytest
import torch

import utils
from tests import data_factory
from tests.helpers import run
from tests.test_scripts import TINY_SEARCH, TINY_TRAIN


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    """Tiny data sets, a finished search run and a finished training run to damage-check."""
    root = tmp_path_factory.mktemp('reliability')
    ws = {'root': root, 'fashion': data_factory.make_fashion_mnist(str(root / 'fmnist')),
          'cifar': data_factory.make_cifar10(str(root / 'cifar')),
          'folder': data_factory.make_image_folder(str(root / 'folder'))}
    ws['search'] = root / 'search'
    run('train_search.py', *TINY_SEARCH, '--data', ws['fashion'], '--epochs', '1', '--save', ws['search'])
    ws['train'] = root / 'train'
    run('train_CIFAR10.py', *TINY_TRAIN, '--data', ws['cifar'], '--epochs', '1', '--arch', 'DARTS_V2',
        '--save', ws['train'])
    (root / 'empty').mkdir()
    (root / 'a-file').write_text('not a directory')
    return ws


def snapshot(*dirs):
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for d in dirs for p in sorted(d.rglob('*')) if p.is_file()}


def genotype_file(ws, name, mutate):
    record = json.loads((ws['search'] / 'genotype.json').read_text())
    mutate(record)
    path = ws['root'] / name
    path.write_text(json.dumps(record))
    return path


CASES = {
    'unknown dataset': (lambda ws: ['train_search.py', '--dataset', 'mnist3d', '--save', ws['root'] / 'x1'],
                        "unknown dataset 'mnist3d'"),
    'search batch of one': (lambda ws: ['train_search.py', '--batch_size', '1', '--save', ws['search']],
                            '--batch_size must be at least 2'),
    'unknown op': (lambda ws: ['train_CIFAR10.py', '--dry_run', '--arch_path', genotype_file(
        ws, 'op.json', lambda r: r['normal'][0].__setitem__(0, 'sep_conv_9x9'))], "unknown op 'sep_conv_9x9'"),
    'unknown attention': (lambda ws: ['train_CIFAR10.py', '--dry_run', '--arch_path', genotype_file(
        ws, 'att.json', lambda r: r['normal'][0].__setitem__(2, 'Transformer'))], "unknown attention 'Transformer'"),
    'input out of range': (lambda ws: ['train_CIFAR10.py', '--dry_run', '--arch_path', genotype_file(
        ws, 'idx.json', lambda r: r['normal'][0].__setitem__(1, 7))], 'input 7 is out of range'),
    'truncated genotype json': (lambda ws: ['train_CIFAR10.py', '--dry_run', '--arch_path', _truncated_genotype(ws)],
                                'not valid JSON'),
    'arch and arch_path': (lambda ws: ['train_CIFAR10.py', '--arch', 'DARTS_V2', '--arch_path',
                                       ws['search'] / 'genotype.json'], 'not both'),
    'missing data dir': (lambda ws: ['train_CIFAR10.py', '--arch', 'DARTS_V2', '--dataset', 'imagefolder',
                                     '--data', ws['root'] / 'nowhere', '--save', ws['root'] / 'x2'], 'nowhere'),
    'empty data dir': (lambda ws: ['train_CIFAR10.py', '--arch', 'DARTS_V2', '--dataset', 'imagefolder',
                                   '--data', ws['root'] / 'empty', '--save', ws['root'] / 'x3'], 'empty'),
    'batch larger than data': (lambda ws: ['train_search.py', *TINY_SEARCH, '--data', ws['fashion'],
                                           '--batch_size', '4096', '--save', ws['root'] / 'x4'],
                               'larger than the search split'),
    'checkpoint of another architecture': (lambda ws: ['train_search.py', *TINY_SEARCH, '--data', ws['fashion'],
                                                       '--location', 'end', '--save', ws['search'], '--resume'],
                                           "--resume may not change --location end (the run's: after_every)"),
    'truncated checkpoint': (lambda ws: ['train_CIFAR10.py', *TINY_TRAIN, '--data', ws['cifar'], '--arch', 'DARTS_V2',
                                         '--epochs', '2', '--save', _truncated_run(ws), '--resume'],
                             'truncated or corrupt'),
    'model of another architecture': (lambda ws: ['test_CIFAR10.py', '--model_path', ws['train'] / 'trained.pt',
                                                  '--arch', 'Att_DARTS', '--data', ws['cifar']], 'another architecture'),
    'not a model file': (lambda ws: ['test_CIFAR10.py', '--model_path', ws['search'] / 'genotype.json'],
                         'truncated or corrupt'),
    'existing run directory': (lambda ws: ['train_search.py', *TINY_SEARCH, '--data', ws['fashion'],
                                           '--save', ws['search']], 'already exists'),
    'save under a file': (lambda ws: ['train_search.py', *TINY_SEARCH, '--data', ws['fashion'],
                                      '--save', ws['root'] / 'a-file' / 'run'], 'cannot write the run directory'),
    'resume without run': (lambda ws: ['train_search.py', '--resume', '--save', ws['root'] / 'never'],
                           'nothing to resume'),
}


def _truncated_genotype(ws):
    path = ws['root'] / 'truncated.json'
    path.write_text((ws['search'] / 'genotype.json').read_text()[:40])
    return path


def _truncated_run(ws):
    copy = ws['root'] / 'truncated-run'
    if not copy.exists():
        shutil.copytree(ws['train'], copy)
        data = (copy / 'checkpoint.pt').read_bytes()
        (copy / 'checkpoint.pt').write_bytes(data[:len(data) // 2])
    return copy


@pytest.mark.parametrize('case', list(CASES))
def test_bad_input(workspace, case):
    argv, message = CASES[case]
    argv = argv(workspace)
    before = snapshot(workspace['search'], workspace['train'])
    result = run(*argv, check=False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith('error: ') and message in lines[0], lines
    assert snapshot(workspace['search'], workspace['train']) == before


def test_nan_loss_stops_the_run_and_keeps_the_checkpoint(workspace, tmp_path):
    save = tmp_path / 'nan'
    args = [*TINY_TRAIN, '--data', workspace['cifar'], '--arch', 'DARTS_V2', '--learning_rate', '1e12',
            '--grad_clip', '1e30', '--epochs', '3', '--save', save]
    result = run('train_CIFAR10.py', *args, check=False)
    assert result.returncode == 2 and 'non-finite loss' in result.stderr and '--skip_nonfinite' in result.stderr
    assert 'epoch ' in result.stderr and 'step ' in result.stderr

    skipped = tmp_path / 'skip'
    run('train_CIFAR10.py', *args[:-1], skipped, '--skip_nonfinite')
    metrics = [json.loads(line) for line in open(skipped / 'metrics.jsonl')]
    assert len(metrics) == 3 and sum(m.get('skipped_batches', 0) for m in metrics) > 0


def test_atomic_write_keeps_the_old_file_when_the_writer_dies(tmp_path):
    path = tmp_path / 'checkpoint.pt'
    utils.atomic_torch_save({'epoch': 1}, path)

    def dies_half_way(f):
        f.write(b'partial bytes')
        raise KeyboardInterrupt  # what a kill during the write looks like to the writer

    with pytest.raises(KeyboardInterrupt):
        utils.atomic_write(path, dies_half_way)
    assert torch.load(path, weights_only=False) == {'epoch': 1}
    assert os.listdir(tmp_path) == ['checkpoint.pt']
