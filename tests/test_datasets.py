"""datasets.py against tiny data written by tests/data_factory.py in the real on-disk formats."""
import gzip
import logging
import os
import pickle
import shutil
import socket
import threading
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import datasets
from datasets import (CIFAR10_MEAN, CIFAR10_STD, DATASETS, Cutout, build_dataset, dataset_info,
                      search_split)
from tests import data_factory as factory
from utils import UserError


@pytest.fixture
def attnas_log():
    """Records what reaches the 'attnas' logger (directly, whatever its propagation)."""
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    log = logging.getLogger('attnas')
    handler, old_level = Keep(logging.DEBUG), log.level
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    yield records
    log.removeHandler(handler)
    log.setLevel(old_level)


@pytest.fixture
def no_network(monkeypatch):
    """Downloads go to a host that cannot resolve, so no test ever fetches real data."""
    monkeypatch.setattr(datasets._CIFAR10, 'url', 'https://attnas-offline.invalid/cifar-10-python.tar.gz')
    monkeypatch.setattr(datasets._CIFAR100, 'url', 'https://attnas-offline.invalid/cifar-100-python.tar.gz')
    monkeypatch.setattr(datasets.tv_datasets.FashionMNIST, 'mirrors', ['https://attnas-offline.invalid/'])
    monkeypatch.setattr(datasets, 'DOWNLOAD_TIMEOUT', 3.0)


def test_registry_names():
    assert list(DATASETS) == ['cifar10', 'cifar100', 'fashion-mnist', 'imagefolder', 'tiny-imagenet', 'imagenet',
                             'food101', 'imagenet16-120']


# ----------------------------------------------------------------------------- CIFAR

def test_factory_cifar_pickles_have_the_real_keys(tmp_path):
    factory.make_cifar10(tmp_path, n_train=10, n_test=4)
    base = tmp_path / 'cifar-10-batches-py'
    assert sorted(os.listdir(base)) == ['batches.meta'] + [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']
    with open(base / 'data_batch_1', 'rb') as f:
        batch = pickle.load(f, encoding='bytes')     # how the CIFAR web page reads them
    assert set(batch) == {b'batch_label', b'labels', b'data', b'filenames'}
    assert batch[b'data'].dtype == np.uint8 and batch[b'data'].shape == (2, 3072)
    assert all(isinstance(v, int) for v in batch[b'labels'])
    with open(base / 'batches.meta', 'rb') as f:
        assert pickle.load(f, encoding='latin1')['label_names'][0] == 'airplane'
    factory.make_cifar100(tmp_path, n_train=5, n_test=3)
    with open(tmp_path / 'cifar-100-python' / 'train', 'rb') as f:
        train = pickle.load(f, encoding='bytes')
    assert {b'fine_labels', b'coarse_labels', b'data'} <= set(train) and train[b'data'].shape == (5, 3072)


def test_cifar10_loads_with_real_reader(tmp_path):
    factory.make_cifar10(tmp_path, n_train=64, n_test=32)
    train = build_dataset('cifar10', tmp_path, train=True, augment=True)
    test = build_dataset('cifar10', str(tmp_path), train=False, augment=False)
    assert len(train) == 64 and len(test) == 32
    x, y = train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and isinstance(y, int)
    assert {y for _, y in test} <= set(range(10)) and len({y for _, y in train}) == 10
    # augment=False is exactly ToTensor + Normalize with quark0/darts's constants
    raw = test.data[0]                       # HWC uint8 as torchvision reads it
    expected = (torch.from_numpy(raw).permute(2, 0, 1).float() / 255 - torch.tensor(CIFAR10_MEAN)[:, None, None]) \
        / torch.tensor(CIFAR10_STD)[:, None, None]
    assert torch.allclose(test[0][0], expected, atol=1e-5)
    # --data pointing at the batch folder itself also works
    assert len(build_dataset('cifar10', tmp_path / 'cifar-10-batches-py', True, False)) == 64


@pytest.mark.parametrize('name', ['cifar10', 'cifar100'])
@pytest.mark.parametrize('choice, mean, std', [
    ('cnas', (0.491, 0.482, 0.44653124), (0.247, 0.243, 0.261)),        # tianbaochou/CNAS utils.py
    ('slnas', (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),      # Yee-Master/SLNAS data/data.py
])
def test_cnas_and_slnas_normalise_both_cifars_with_their_constants(tmp_path, name, choice, mean, std):
    make = factory.make_cifar10 if name == 'cifar10' else factory.make_cifar100
    make(tmp_path, n_train=8, n_test=4)
    test = build_dataset(name, tmp_path, train=False, augment=False, cifar_normalization=choice)
    raw = torch.from_numpy(test.data[0]).permute(2, 0, 1).float() / 255
    expected = (raw - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    assert torch.allclose(test[0][0], expected, atol=1e-5)
    assert datasets.normalization(name, choice) == (mean, std)
    # Other data sets keep their own constants whatever the choice.
    assert datasets.normalization('fashion-mnist', choice) == (datasets.FASHION_MNIST_MEAN, datasets.FASHION_MNIST_STD)


def test_slnas_scripts_default_to_the_slnas_constants():
    import retrain_slnas
    import train_search_slnas
    for module in (train_search_slnas, retrain_slnas):
        assert module.build_parser().parse_args([]).cifar_normalization == 'slnas'


def test_cifar100_loads_fine_labels(tmp_path):
    factory.make_cifar100(tmp_path, n_train=64, n_test=32)
    train = build_dataset('cifar100', tmp_path, train=True, augment=True, cutout_length=8)
    test = build_dataset('cifar100', tmp_path, train=False, augment=False)
    assert len(train) == 64 and len(test) == 32
    assert train[3][0].shape == (3, 32, 32)
    assert all(0 <= y < 100 for y in train.targets) and max(train.targets) >= 20   # fine, not coarse
    info = dataset_info('cifar100')
    assert info.num_classes == 100 and info.mean == (0.5071, 0.4867, 0.4408) and info.std == (0.2675, 0.2565, 0.2761)
    assert dataset_info('cifar10') == (10, 3, 32, CIFAR10_MEAN, CIFAR10_STD)


def test_cifar_offline_gives_user_error_quickly(tmp_path, monkeypatch, no_network):
    start = time.monotonic()
    with pytest.raises(UserError) as err:
        build_dataset('cifar10', tmp_path / 'nothing', train=True, augment=False)
    assert time.monotonic() - start < 10
    msg = str(err.value)
    assert 'CIFAR-10 not found' in msg and 'cifar-10-batches-py' in msg and '--data' in msg and '\n' not in msg
    with pytest.raises(UserError, match='cifar-100-python'):
        build_dataset('cifar100', tmp_path / 'nothing', train=False, augment=False)
    # past the DNS check, torchvision's own download fails too, and leaves no empty folder behind
    monkeypatch.setattr(datasets, '_resolve_with_timeout', lambda host, timeout: None)
    with pytest.raises(UserError, match='could not be downloaded'):
        build_dataset('cifar10', tmp_path / 'nothing', train=True, augment=False)
    assert not (tmp_path / 'nothing').exists()


def test_download_does_not_hang_on_a_stuck_dns_lookup(tmp_path, monkeypatch):
    release = threading.Event()
    real_getaddrinfo = socket.getaddrinfo

    def stuck(host, *args, **kwargs):
        if host == 'attnas-stuck.invalid':
            release.wait(30)
            raise socket.gaierror('released')
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, 'getaddrinfo', stuck)
    monkeypatch.setattr(datasets._CIFAR10, 'url', 'https://attnas-stuck.invalid/cifar-10-python.tar.gz')
    monkeypatch.setattr(datasets, 'DOWNLOAD_TIMEOUT', 0.5)
    start = time.monotonic()
    try:
        with pytest.raises(UserError, match='took over'):
            build_dataset('cifar10', tmp_path, train=True, augment=False)
    finally:
        release.set()
    assert time.monotonic() - start < 5
    assert socket.getdefaulttimeout() is None


def test_offline_env_skips_the_download(tmp_path, monkeypatch):
    monkeypatch.setenv(datasets.OFFLINE_ENV, '1')
    with pytest.raises(UserError, match=datasets.OFFLINE_ENV):
        build_dataset('cifar10', tmp_path, train=True, augment=False)


def test_corrupt_cifar_batch_is_a_user_error(tmp_path):
    factory.make_cifar10(tmp_path)
    path = tmp_path / 'cifar-10-batches-py' / 'data_batch_3'
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(UserError, match='truncated or corrupt'):
        build_dataset('cifar10', tmp_path, train=True, augment=False)


# ----------------------------------------------------------------------------- Fashion-MNIST

def test_fashion_mnist_loads_idx_files(tmp_path):
    factory.make_fashion_mnist(tmp_path, n_train=64, n_test=32)
    with open(tmp_path / 'FashionMNIST' / 'raw' / 'train-images-idx3-ubyte', 'rb') as f:
        assert f.read(16) == bytes([0, 0, 8, 3, 0, 0, 0, 64, 0, 0, 0, 28, 0, 0, 0, 28])
    train = build_dataset('fashion-mnist', tmp_path, train=True, augment=True, cutout_length=6)
    test = build_dataset('fashion-mnist', tmp_path, train=False, augment=False)
    assert len(train) == 64 and len(test) == 32
    x, y = test[0]
    assert x.shape == (1, 28, 28) and isinstance(y, int) and 0 <= y < 10
    assert dataset_info('fashion-mnist') == (10, 1, 28, (0.2860,), (0.3530,))
    assert build_dataset('fashion-mnist', tmp_path, False, False, image_size=32)[0][0].shape == (1, 32, 32)


def test_fashion_mnist_unpacked_from_debian_package(tmp_path, monkeypatch, no_network):
    package = factory.make_fashion_mnist_gz(tmp_path / 'pkg', n_train=20, n_test=10)
    monkeypatch.setattr(datasets, 'FASHION_MNIST_DEBIAN_DIR', package)
    root = tmp_path / 'data'
    train = build_dataset('fashion-mnist', root, train=True, augment=False)
    assert len(train) == 20 and train[0][0].shape == (1, 28, 28)
    raw = root / 'FashionMNIST' / 'raw'
    assert sorted(os.listdir(raw)) == sorted(factory.FASHION_MNIST_FILES)    # no temporary files left
    for name in factory.FASHION_MNIST_FILES:
        with gzip.open(os.path.join(package, name + '.gz'), 'rb') as f:
            assert (raw / name).read_bytes() == f.read()
    assert len(build_dataset('fashion-mnist', root, train=False, augment=False)) == 10


def test_fashion_mnist_missing_everywhere_names_the_package(tmp_path, monkeypatch, no_network):
    monkeypatch.setattr(datasets, 'FASHION_MNIST_DEBIAN_DIR', str(tmp_path / 'no-package'))
    with pytest.raises(UserError) as err:
        build_dataset('fashion-mnist', tmp_path / 'data', train=True, augment=False)
    assert 'apt-get install dataset-fashion-mnist' in str(err.value) and '--data' in str(err.value)


@pytest.mark.skipif(not os.path.isfile(os.path.join(datasets.FASHION_MNIST_DEBIAN_DIR, 't10k-images-idx3-ubyte.gz')),
                    reason='Debian package dataset-fashion-mnist is not installed')
def test_fashion_mnist_from_the_installed_debian_package(tmp_path, no_network):
    test = build_dataset('fashion-mnist', tmp_path, train=False, augment=False)
    assert len(test) == 10000 and test[0][0].shape == (1, 28, 28)


# ----------------------------------------------------------------------------- image folders

def test_image_folder_loads_and_counts_classes(tmp_path):
    factory.make_image_folder(tmp_path, classes=5, per_class=4, size=40)
    assert dataset_info('imagefolder', tmp_path).num_classes == 5
    assert dataset_info('imagefolder', tmp_path, image_size=48).image_size == 48
    train = build_dataset('imagefolder', tmp_path, train=True, augment=True)
    val = build_dataset('imagefolder', tmp_path, train=False, augment=False)
    assert len(train) == 20 and len(val) == 20
    x, y = next(iter(DataLoader(train, batch_size=8, shuffle=True)))   # non-square files batch fine
    assert x.shape == (8, 3, 32, 32) and y.min() >= 0 and y.max() < 5
    assert build_dataset('imagefolder', tmp_path, False, False, image_size=48)[0][0].shape == (3, 48, 48)
    assert sorted(set(val.targets)) == list(range(5))


def test_image_folder_val_keeps_train_indices(tmp_path):
    factory.make_image_folder(tmp_path, classes=3, per_class=2)
    shutil.rmtree(tmp_path / 'val' / 'class_00')
    val = build_dataset('imagefolder', tmp_path, train=False, augment=False)
    assert sorted(set(val.targets)) == [1, 2]
    assert dataset_info('imagefolder', tmp_path).num_classes == 3


def test_missing_and_empty_folders_are_user_errors(tmp_path):
    missing = tmp_path / 'missing'
    with pytest.raises(UserError, match=str(missing / 'train')):
        build_dataset('imagefolder', missing, train=True, augment=False)
    with pytest.raises(UserError, match=str(missing / 'train')):
        dataset_info('tiny-imagenet', missing)
    (tmp_path / 'empty' / 'train').mkdir(parents=True)
    with pytest.raises(UserError, match='no class sub-folders') as err:
        build_dataset('imagefolder', tmp_path / 'empty', train=True, augment=False)
    assert str(tmp_path / 'empty' / 'train') in str(err.value)
    (tmp_path / 'empty' / 'train' / 'cat').mkdir()
    with pytest.raises(UserError, match=str(tmp_path / 'empty' / 'train')):
        build_dataset('imagefolder', tmp_path / 'empty', train=True, augment=False)
    with pytest.raises(UserError, match='--data'):
        dataset_info('imagenet')


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UserError) as err:
        dataset_info('mnist')
    assert "'mnist'" in str(err.value) and 'cifar10' in str(err.value) and 'tiny-imagenet' in str(err.value)
    with pytest.raises(UserError, match='svhn'):
        build_dataset('svhn', 'data', train=True, augment=False)


def test_corrupt_image_is_skipped_with_one_warning(tmp_path, attnas_log):
    factory.make_image_folder(tmp_path, classes=2, per_class=3, corrupt=True)
    train = build_dataset('imagefolder', tmp_path, train=True, augment=False)
    assert len(train) == 7
    bad = [i for i, (p, _) in enumerate(train.samples) if p.endswith(factory.CORRUPT_FILE_NAME)]
    assert len(bad) == 1
    for _ in range(2):
        batches = list(DataLoader(train, batch_size=4))
        assert sum(len(y) for _, y in batches) == 7
    assert torch.equal(train[bad[0]][0], train[bad[0] + 1][0])          # replaced by the next sample
    warnings = [r for r in attnas_log if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and factory.CORRUPT_FILE_NAME in warnings[0].getMessage()
    assert os.path.join('class_00', factory.CORRUPT_FILE_NAME) in warnings[0].getMessage()


def test_tiny_imagenet_real_layout(tmp_path):
    factory.make_tiny_imagenet(tmp_path, classes=3, per_class=3)
    info = dataset_info('tiny-imagenet', tmp_path)
    assert info.num_classes == 3 and info.image_size == 64 and info.mean == datasets.IMAGENET_MEAN
    train = build_dataset('tiny-imagenet', tmp_path, train=True, augment=True, cutout_length=16)
    val = build_dataset('tiny-imagenet', tmp_path, train=False, augment=False)
    assert len(train) == 9 and len(val) == 9
    assert train[0][0].shape == (3, 64, 64) and val[0][0].shape == (3, 64, 64)   # greyscale JPEG -> RGB
    wnids = sorted(os.listdir(tmp_path / 'train'))
    with open(tmp_path / 'val' / 'val_annotations.txt') as f:
        expected = {line.split('\t')[0]: wnids.index(line.split('\t')[1]) for line in f}
    assert {os.path.basename(p): t for p, t in val.samples} == expected


def test_imagenet_transforms(tmp_path):
    factory.make_image_folder(tmp_path, classes=2, per_class=2, size=40)
    torch.manual_seed(0)
    train = build_dataset('imagenet', tmp_path, train=True, augment=True)
    val = build_dataset('imagenet', tmp_path, train=False, augment=False)
    assert train[0][0].shape == (3, 224, 224) and val[1][0].shape == (3, 224, 224)
    assert dataset_info('imagenet', tmp_path) == (2, 3, 224, datasets.IMAGENET_MEAN, datasets.IMAGENET_STD)


# ----------------------------------------------------------------------------- Cutout, determinism

def test_cutout_zeroes_one_clipped_square():
    torch.manual_seed(0)
    areas = set()
    for _ in range(200):
        out = Cutout(8)(torch.ones(3, 32, 32))
        zero = out[0] == 0
        assert torch.equal(zero, out[1] == 0) and torch.equal(zero, out[2] == 0)   # same mask per channel
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        assert zero[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()      # one rectangle
        assert zero.sum() == len(rows) * len(cols) and len(rows) <= 8 and len(cols) <= 8
        areas.add(int(zero.sum()))
    assert 64 in areas and min(areas) < 64                                         # clipped at borders
    torch.manual_seed(5)
    a = Cutout(16)(torch.ones(3, 32, 32))
    torch.manual_seed(5)
    assert torch.equal(a, Cutout(16)(torch.ones(3, 32, 32)))
    with pytest.raises(UserError):
        Cutout(0)


def test_augmented_samples_are_reproducible_with_a_seed(tmp_path):
    factory.make_cifar10(tmp_path)
    train = build_dataset('cifar10', tmp_path, train=True, augment=True, cutout_length=16)
    assert any(isinstance(t, Cutout) for t in train.transform.transforms)
    assert not any(isinstance(t, Cutout) for t in build_dataset('cifar10', tmp_path, False, False, 16).transform.transforms)
    torch.manual_seed(3)
    first = torch.stack([train[i][0] for i in range(8)])
    torch.manual_seed(3)
    assert torch.equal(first, torch.stack([train[i][0] for i in range(8)]))
    assert (first == 0).flatten(1).sum(1).min() > 0                                 # each has its hole


def test_search_split_sizes():
    w, a = search_split(list(range(64)), 0.5)
    assert (w, a) == (list(range(32)), list(range(32, 64)))
    w, a = search_split(100, 0.29)
    assert len(w) == 29 and len(a) == 71
    w, a = search_split(list(range(64)), 0.5, subset=20)
    assert w == list(range(10)) and a == list(range(10, 20))
    assert [len(x) for x in search_split(64, 0.9, subset=5)] == [4, 1]
    for bad in [(64, 0.0), (64, 1.0), (64, 1.5), (3, 0.1), (10, 0.05), (1, 0.5), (64, 0.5, 1)]:
        with pytest.raises(UserError):
            search_split(*bad)


def test_search_split_on_a_real_dataset(tmp_path):
    factory.make_cifar10(tmp_path, n_train=50)
    w, a = search_split(build_dataset('cifar10', tmp_path, True, False), 0.5)
    assert len(w) == 25 and len(a) == 25 and not set(w) & set(a)
