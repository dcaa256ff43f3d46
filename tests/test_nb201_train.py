"""NAS-Bench-201 cells trained and tested by the train scripts; ImageNet16-120 in its real format."""
import json
import pickle

import numpy as np
import pytest
import torch

import compare
import datasets
import nb201
from data_factory import make_cifar10, make_fashion_mnist, make_imagenet16
from helpers import run
from userio import UserError

EXAMPLE = '|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|'
TINY = ['--init_channels', '4', '--layers', '1', '--batch_size', '8', '--test_batch_size', '8', '--workers', '0',
        '--no_progress', '--report_freq', '0']


def test_imagenet16_keeps_labels_1_to_120_in_the_reference_layout(tmp_path):
    root = make_imagenet16(tmp_path)
    train = datasets.build_dataset('imagenet16-120', root, train=True, augment=False)
    val = datasets.build_dataset('imagenet16-120', root, train=False, augment=False)
    assert (len(train), len(val)) == (50, 20)  # 60 and 24 written, a sixth labelled above 120
    assert sorted(set(train.targets)) == [0, 1, 2]
    with open(tmp_path / 'train_data_batch_1', 'rb') as f:
        entry = pickle.load(f, encoding='latin1')
    first = np.asarray(entry['data'][0], dtype=np.float64).reshape(3, 16, 16) / 255
    mean, std = (torch.tensor(v, dtype=torch.float64)[:, None, None] for v in
                 ([122.68 / 255, 116.66 / 255, 104.01 / 255], [63.22 / 255, 61.26 / 255, 65.09 / 255]))
    image, label = train[0]
    assert label == entry['labels'][0] - 1
    torch.testing.assert_close(image.double(), (torch.from_numpy(first) - mean) / std, rtol=0, atol=1e-6)
    info = datasets.dataset_info('imagenet16-120')
    assert (info.num_classes, info.in_channels, info.image_size) == (120, 3, 16)


def test_imagenet16_missing_or_broken_files_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match='train_data_batch_1..10 and val_data'):
        datasets.build_dataset('imagenet16-120', tmp_path, train=True, augment=False)
    root = make_imagenet16(tmp_path / 'ImageNet16')
    (tmp_path / 'ImageNet16' / 'val_data').write_bytes(b'not a pickle')
    assert len(datasets.build_dataset('imagenet16-120', tmp_path, train=True, augment=False)) == 50
    with pytest.raises(UserError, match='val_data is not an ImageNet16 batch'):
        datasets.build_dataset('imagenet16-120', root, train=False, augment=False)


def test_a_cell_string_trains_and_tests_in_the_benchmark_network(tmp_path):
    data = make_imagenet16(tmp_path / 'data')
    save = tmp_path / 'run'
    run('train_CIFAR10.py', *TINY, '--dataset', 'imagenet16-120', '--data', data, '--epochs', '1',
        '--arch', EXAMPLE, '--save', save)
    trained = torch.load(save / 'trained.pt', weights_only=False)
    assert trained['genotype'] == {'nb201': EXAMPLE}
    assert trained['network'] == {'type': 'nb201', 'C': 4, 'layers': 1, 'num_classes': 120, 'in_channels': 3,
                                  'image_size': 16}
    result = run('test_CIFAR10.py', '--model_path', save / 'trained.pt', '--dataset', 'imagenet16-120', '--data',
                 data, '--arch', EXAMPLE, '--workers', '0', '--no_progress')
    assert 0 <= json.loads(result.stdout.strip().splitlines()[-1])['top1'] <= 100


def test_dry_run_prints_the_reference_parameter_count(tmp_path):
    genotype = tmp_path / 'genotype.json'
    genotype.write_text(json.dumps({'nb201': EXAMPLE}))
    for source in (['--arch', EXAMPLE], ['--arch_path', genotype]):
        out = run('train_CIFAR10.py', *source, '--dry_run').stdout
        assert 'params: 0.802426 M' in out  # TinyNetwork(16, 5, example, 10): tests/test_nb201_model.py
    assert 'params: 0.809576 M' in run('train_CIFAR10.py', '--arch', EXAMPLE, '--dataset', 'imagenet16-120',
                                       '--dry_run').stdout


@pytest.mark.parametrize('flag', [['--auxiliary'], ['--drop_path_prob', '0.3'], ['--pooled_head']])
def test_options_of_other_networks_are_refused(tmp_path, flag):
    make_cifar10(tmp_path)
    result = run('train_CIFAR10.py', '--arch', EXAMPLE, '--data', tmp_path, '--dry_run', *flag, check=False)
    assert result.returncode == 2 and 'NAS-Bench-201 network has none of them' in result.stderr


def test_compare_draws_benchmark_cells_and_trains_them_in_the_benchmark_network(tmp_path):
    fashion = make_fashion_mnist(tmp_path / 'data', n_train=32, n_test=16)
    args = compare.build_parser().parse_args(['random:2', '--space', 'nb201', '--dataset', 'fashion-mnist',
                                              '--data', fashion])
    protocol, _ = compare.make_plan(args, [])
    flags = protocol['flags']
    assert flags[flags.index('--layers') + 1] == '5' and flags[flags.index('--drop_path_prob') + 1] == '0.0'
    assert [e['init_channels'] for e in protocol['architectures']] == [16, 16]
    drawn = nb201.sample_genotypes(2, 0)
    assert [e['genotype'] for e in protocol['architectures']] == [nb201.to_dict(g) for g in drawn]
    assert protocol['random_space'] == {'space': 'nb201', 'seed': 0}

    save = tmp_path / 'cmp'
    run('compare.py', 'random:1', EXAMPLE, '--space', 'nb201', '--dataset', 'fashion-mnist', '--data', fashion,
        '--epochs', '1', '--init_channels', '4', '--layers', '1', '--batch_size', '16', '--seeds', '1',
        '--workers', '0', '--latency_repeats', '1', '--save', save)
    rows = json.loads((save / 'results.json').read_text())['architectures']
    assert [row['genotype'] for row in rows] == [nb201.to_dict(nb201.sample_genotypes(1, 0)[0]), {'nb201': EXAMPLE}]
    trained = torch.load(save / rows[1]['runs'][0]['run_dir'] / 'trained.pt', weights_only=False)
    assert trained['network']['type'] == 'nb201' and trained['network']['C'] == 4

    mixed = run('compare.py', 'DARTS_V2', EXAMPLE, '--dataset', 'fashion-mnist', '--data', fashion, check=False)
    assert mixed.returncode == 2 and 'separate comparisons' in mixed.stderr
