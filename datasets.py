"""Data sets: the built-in ones (registry.DATASETS), their transforms, Cutout, and the DARTS-style search split.

    info = dataset_info('cifar10')                      # DatasetInfo(num_classes=10, in_channels=3, ...)
    train = build_dataset('cifar10', 'data', train=True, augment=True, cutout_length=16)
    w_idx, a_idx = search_split(train, 0.5)             # first half: weights, second half: architecture

Every data set yields (float image tensor C x H x W, int label). Loading goes through torchvision's own
readers (CIFAR pickle batches, Fashion-MNIST idx files, ImageFolder); mistakes the user can fix (missing
or empty folders, no data offline, an unknown name) raise `utils.UserError` with a one-line message.

Folder data sets (imagefolder, tiny-imagenet, imagenet) count their classes from the sub-folders of
ROOT/train (sorted; hidden folders ignored); val/ is labelled with the train/ class indices. Food-101
is read from its archive's layout (ROOT/food-101/images and meta/{train,test}.json). An
unreadable image is reported once (a warning on the 'attnas' logger) and replaced by the next readable
one, so one bad file does not stop a training run.
"""
import collections
import contextlib
import gzip
import json
import logging
import math
import os
import shutil
import socket
import threading
import urllib.parse

import torch
from torch.utils.data import Dataset
from torchvision import datasets as tv_datasets
from torchvision import transforms as T
from torchvision.datasets import folder as tv_folder

from registry import DATASETS
from utils import UserError, atomic_write

logger = logging.getLogger('attnas')

# quark0/darts (`utils.py`) CIFAR-10 constants, and the Att-DARTS / ANAS CIFAR-100 ones.
CIFAR10_MEAN = (0.49139968, 0.48215827, 0.44653124)
CIFAR10_STD = (0.24703233, 0.24348505, 0.26158768)
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
# CNAS (tianbaochou/CNAS `utils.py`) and SLNAS (Yee-Master/SLNAS `data/data.py`) normalise CIFAR-10
# and CIFAR-100 alike with constants of their own.
CNAS_CIFAR_MEAN = (0.491, 0.482, 0.44653124)
CNAS_CIFAR_STD = (0.247, 0.243, 0.261)
SLNAS_CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
SLNAS_CIFAR_STD = (0.2023, 0.1994, 0.2010)
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Where the Debian package dataset-fashion-mnist puts its gzipped idx files (read at call time,
# so tests can point it elsewhere).
FASHION_MNIST_DEBIAN_DIR = '/usr/share/datasets/fashion-mnist'
# Seconds a download may wait on one DNS lookup or socket operation before it counts as offline.
DOWNLOAD_TIMEOUT = 10.0
# Set to 1 to never try a download.
OFFLINE_ENV = 'ATTNAS_OFFLINE'

DatasetInfo = collections.namedtuple('DatasetInfo', 'num_classes in_channels image_size mean std')
DatasetSpec = collections.namedtuple('DatasetSpec',
                                     'title num_classes in_channels image_size mean std builder')


def register_dataset(name, title, num_classes, in_channels, image_size, mean, std):
    """Register the decorated `builder(spec, root, train, transform)` as the data set `name` of
    `--dataset` (registry.DATASETS).  num_classes None: counted from the class folders of ROOT/train."""
    def add(builder):
        DATASETS.register(name, DatasetSpec(title, num_classes, in_channels, image_size, mean, std, builder))
        return builder
    return add


# ----------------------------------------------------------------------------- Cutout

class Cutout:
    """Zero one `length` x `length` square of a C x H x W tensor (DeVries & Taylor 2017, as in DARTS).

    The centre is uniform over the image and the square is clipped at the borders. Draws from torch's
    global RNG (or `generator`), so it is reproducible under torch.manual_seed and in DataLoader
    workers, which torch seeds per worker."""

    def __init__(self, length, generator=None):
        length = int(length)
        if length < 1:
            raise UserError(f"cutout length {length} must be a positive number of pixels, e.g. 16")
        self.length = length
        self.generator = generator

    def __call__(self, img):
        h, w = img.shape[-2], img.shape[-1]
        y = int(torch.randint(h, (1,), generator=self.generator))
        x = int(torch.randint(w, (1,), generator=self.generator))
        half = self.length // 2
        y1, y2 = max(0, y - half), min(h, y + half)
        x1, x2 = max(0, x - half), min(w, x + half)
        img = img.clone()
        img[..., y1:y2, x1:x2] = 0
        return img

    def __repr__(self):
        return f'{type(self).__name__}(length={self.length})'


# ----------------------------------------------------------------------------- transforms

# `--cifar_normalization`: the (mean, std) of CIFAR-10 and CIFAR-100 in each reference.  'darts' is
# quark0/darts's CIFAR-10 pair and Att-DARTS's and ANAS's CIFAR-100 pair.
CIFAR_NORMALIZATIONS = {
    'darts': {'cifar10': (CIFAR10_MEAN, CIFAR10_STD), 'cifar100': (CIFAR100_MEAN, CIFAR100_STD)},
    'cnas': dict.fromkeys(('cifar10', 'cifar100'), (CNAS_CIFAR_MEAN, CNAS_CIFAR_STD)),
    'slnas': dict.fromkeys(('cifar10', 'cifar100'), (SLNAS_CIFAR_MEAN, SLNAS_CIFAR_STD)),
}


def normalization(name, cifar_normalization='darts'):
    """(mean, std) that a data set is normalised with: for CIFAR those of `cifar_normalization`
    (a key of CIFAR_NORMALIZATIONS), for the others their own."""
    key, spec = _lookup(name)
    if cifar_normalization not in CIFAR_NORMALIZATIONS:
        raise UserError(f"unknown CIFAR normalisation '{cifar_normalization}'; choose from "
                        f"{', '.join(CIFAR_NORMALIZATIONS)}")
    return CIFAR_NORMALIZATIONS[cifar_normalization].get(key, (spec.mean, spec.std))


def _finish(ops, spec, augment, cutout_length):
    ops = list(ops) + [T.ToTensor(), T.Normalize(spec.mean, spec.std)]
    if augment and cutout_length:
        ops.append(Cutout(cutout_length))
    return T.Compose(ops)


def _small_image_transform(spec, augment, cutout_length, size, pad):
    """CIFAR / Fashion-MNIST: RandomCrop(size, pad) + flip for training (as DARTS); a resize first
    only when `size` differs from the native resolution."""
    ops = [T.Resize(size)] if size != spec.image_size else []
    if augment:
        ops += [T.RandomCrop(size, padding=pad), T.RandomHorizontalFlip()]
    return _finish(ops, spec, augment, cutout_length)


def _folder_transform(spec, augment, cutout_length, size):
    """imagefolder / tiny-imagenet: Resize + RandomCrop(pad 4) + flip, or Resize + CenterCrop."""
    if augment:
        ops = [T.Resize(size), T.RandomCrop(size, padding=4), T.RandomHorizontalFlip()]
    else:
        ops = [T.Resize(size), T.CenterCrop(size)]
    return _finish(ops, spec, augment, cutout_length)


def _scaled(size, reference_size, reference_resize):
    """A reference's resize before its centre crop, scaled to a crop of `size` pixels."""
    return int(round(size * reference_resize / reference_size))


def _imagenet_transform(spec, augment, cutout_length, size):
    """DARTS's ImageNet: RandomResizedCrop + flip + ColorJitter(0.4, 0.4, 0.4, 0.2), or Resize(256)
    + CenterCrop(224) (the resize scales with `size`)."""
    if augment:
        ops = [T.RandomResizedCrop(size), T.RandomHorizontalFlip(),
               T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2)]
    else:
        ops = [T.Resize(_scaled(size, 224, 256)), T.CenterCrop(size)]
    return _finish(ops, spec, augment, cutout_length)


def _cnas_imagenet_transform(spec, augment, cutout_length, size):
    """CNAS's ImageNet pipeline (`utils.data_transforms_imagenet`, 128 px): as DARTS's, but the
    evaluation resize is Resize(256) before CenterCrop(128) (twice the crop)."""
    if augment:
        return _imagenet_transform(spec, augment, cutout_length, size)
    return _finish([T.Resize(_scaled(size, 128, 256)), T.CenterCrop(size)], spec, augment, cutout_length)


def _cnas_food101_transform(spec, augment, cutout_length, size):
    """CNAS's Food-101 pipeline (`utils.data_transforms_food101`, 128 px): RandomResizedCrop + flip
    + ColorJitter(0.2, 0.2, 0.2, 0.2), or Resize + CenterCrop at the crop size."""
    if augment:
        ops = [T.RandomResizedCrop(size), T.RandomHorizontalFlip(),
               T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.2)]
    else:
        ops = [T.Resize(size), T.CenterCrop(size)]
    return _finish(ops, spec, augment, cutout_length)


def _slnas_transform(spec, augment, cutout_length, size):
    """SLNAS's image-folder pipeline (`data.get_retrain_loaders`, 224 px, antialiased resizes): a
    random degradation (resize to 256, 128, 64 or 32 px with probabilities 0.55, 0.15, 0.15, 0.15),
    back to 256 x 256, ColorJitter(0.4, 0.4, 0.4, 0.1), RandomGrayscale(0.2), flip, RandomResizedCrop;
    for evaluation Resize to 256 x 256 and CenterCrop.  256 is scaled with `size`."""
    lanczos = T.InterpolationMode.LANCZOS
    full = _scaled(size, 224, 256)
    if augment:
        scales = [T.Resize((_scaled(full, 256, side),) * 2, interpolation=lanczos) for side in (256, 128, 64, 32)]
        ops = [T.RandomChoice(scales, p=[0.55, 0.15, 0.15, 0.15]), T.Resize((full, full), interpolation=lanczos),
               T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1), T.RandomGrayscale(0.2),
               T.RandomHorizontalFlip(), T.RandomResizedCrop(size, interpolation=lanczos)]
    else:
        ops = [T.Resize((full, full), interpolation=lanczos), T.CenterCrop(size)]
    return _finish(ops, spec, augment, cutout_length)


# `--pipeline` of the folder data sets: 'crop' (resize, pad-4 random crop, flip: small images),
# 'imagenet' (DARTS), and the references' own.  'auto' is 'imagenet' for ImageNet and Food-101, else 'crop'.
FOLDER_PIPELINES = {'crop': _folder_transform, 'imagenet': _imagenet_transform,
                    'cnas-imagenet': _cnas_imagenet_transform, 'cnas-food101': _cnas_food101_transform,
                    'slnas': _slnas_transform}
PIPELINES = ('auto',) + tuple(FOLDER_PIPELINES)
FOLDER_DATASETS = ('imagefolder', 'tiny-imagenet', 'imagenet', 'food101')


def build_transform(name, augment, cutout_length=0, image_size=None, cifar_normalization='darts', pipeline='auto'):
    """The transform build_dataset uses: training augmentation if `augment`, else the evaluation one.
    Cutout is added only with augment and cutout_length > 0.  `pipeline` chooses a folder data
    set's (FOLDER_PIPELINES); CIFAR and Fashion-MNIST have their one."""
    key, spec = _lookup(name)
    mean, std = normalization(key, cifar_normalization)
    spec = spec._replace(mean=mean, std=std)
    size = _check_size(image_size, spec)
    cutout_length = _check_cutout(cutout_length)
    if pipeline not in PIPELINES:
        raise UserError(f"unknown --pipeline '{pipeline}'; choose from {', '.join(PIPELINES)}")
    if pipeline != 'auto' and key not in FOLDER_DATASETS:
        raise UserError(f"--pipeline {pipeline} is for image folders ({', '.join(FOLDER_DATASETS)}); {spec.title} "
                        f"has its own augmentation: drop --pipeline")
    if key in ('cifar10', 'cifar100'):
        return _small_image_transform(spec, augment, cutout_length, size, pad=4)
    if key == 'fashion-mnist':
        return _small_image_transform(spec, augment, cutout_length, size, pad=2)
    if pipeline == 'auto':
        pipeline = 'imagenet' if key in ('imagenet', 'food101') else 'crop'
    return FOLDER_PIPELINES[pipeline](spec, augment, cutout_length, size)


# ----------------------------------------------------------------------------- downloads

def _one_line(exc):
    text = ' '.join(str(exc).split())
    return f'{type(exc).__name__}: {text}' if text else type(exc).__name__


def _resolve_with_timeout(host, timeout):
    """getaddrinfo ignores socket timeouts, so look the host up in a daemon thread and give up
    after `timeout` seconds (the thread is left to finish on its own)."""
    result = {}

    def lookup():
        try:
            socket.getaddrinfo(host, 443)
        except BaseException as exc:  # reported to the caller below
            result['error'] = exc

    thread = threading.Thread(target=lookup, name='attnas-dns-lookup', daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f'looking up {host} took over {timeout:g} s')
    if 'error' in result:
        raise result['error']


def _remove_new_empty_dirs(dirs):
    """Undo the folders a failed download created (deepest first; only those now empty)."""
    for d in sorted(dirs, key=len, reverse=True):
        try:
            os.rmdir(d)
        except OSError:
            pass


@contextlib.contextmanager
def _download_guard(url, creates=()):
    """Fail fast when offline: honour ATTNAS_OFFLINE, bound the DNS lookup, and set a short socket
    timeout for the download itself (restored afterwards)."""
    if os.environ.get(OFFLINE_ENV, '').strip() not in ('', '0'):
        raise ConnectionError(f'{OFFLINE_ENV} is set')
    timeout = float(DOWNLOAD_TIMEOUT)
    _resolve_with_timeout(urllib.parse.urlsplit(url).hostname, timeout)
    new_dirs = [d for d in creates if not os.path.exists(d)]
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        yield
    except BaseException:
        _remove_new_empty_dirs(new_dirs)
        raise
    finally:
        socket.setdefaulttimeout(previous)


# ----------------------------------------------------------------------------- CIFAR

class _CIFAR10(tv_datasets.CIFAR10):
    """torchvision's CIFAR10 reader, checking that the batch files exist but not their md5 sums
    (hashing 170 MB on every start is slow, and test data written by tests/data_factory.py has
    other sums). The download still verifies the archive's md5."""
    train_list = [[name, None] for name, _ in tv_datasets.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in tv_datasets.CIFAR10.test_list]
    meta = dict(tv_datasets.CIFAR10.meta, md5=None)


class _CIFAR100(tv_datasets.CIFAR100):
    """torchvision's CIFAR100 reader without the md5 checks (see _CIFAR10)."""
    train_list = [[name, None] for name, _ in tv_datasets.CIFAR100.train_list]
    test_list = [[name, None] for name, _ in tv_datasets.CIFAR100.test_list]
    meta = dict(tv_datasets.CIFAR100.meta, md5=None)


def _build_cifar(cls, spec, root, train, transform):
    root = os.path.abspath(root)
    if os.path.basename(root.rstrip(os.sep)) == cls.base_folder:   # --data pointing at the batch folder
        root = os.path.dirname(root.rstrip(os.sep))
    base = os.path.join(root, cls.base_folder)
    needed = [name for name, _ in cls.train_list + cls.test_list] + [cls.meta['filename']]
    if not all(os.path.isfile(os.path.join(base, name)) for name in needed):
        try:
            with _download_guard(cls.url, creates=[root]):
                return cls(root, train=train, transform=transform, download=True)
        except Exception as exc:
            raise UserError(f"{spec.title} not found under {root} and could not be downloaded (offline?) "
                            f"[{_one_line(exc)}]: put {cls.base_folder} there or pass --data DIR") from exc
    try:
        return cls(root, train=train, transform=transform, download=False)
    except Exception as exc:
        raise UserError(f"{spec.title} files in {base} are truncated or corrupt [{_one_line(exc)}]: "
                        f"replace {cls.base_folder} with an intact copy or pass --data DIR") from exc


@register_dataset('cifar10', 'CIFAR-10', 10, 3, 32, CIFAR10_MEAN, CIFAR10_STD)
def _build_cifar10(spec, root, train, transform):
    return _build_cifar(_CIFAR10, spec, root, train, transform)


@register_dataset('cifar100', 'CIFAR-100', 100, 3, 32, CIFAR100_MEAN, CIFAR100_STD)
def _build_cifar100(spec, root, train, transform):
    return _build_cifar(_CIFAR100, spec, root, train, transform)


# ----------------------------------------------------------------------------- Fashion-MNIST

_FASHION_FILES = [os.path.splitext(name)[0] for name, _ in tv_datasets.FashionMNIST.resources]


def _install_fashion_mnist_from_package(raw_dir, package_dir):
    """Gunzip the Debian package's files into raw_dir (each through a temporary file and a rename).
    Returns False when the package's files are not there."""
    sources = {name: os.path.join(package_dir, name + '.gz') for name in _FASHION_FILES}
    if not all(os.path.isfile(src) for src in sources.values()):
        return False
    try:
        os.makedirs(raw_dir, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {raw_dir} [{_one_line(exc)}]: pass a writable --data DIR") from exc
    for name, src in sources.items():
        dst = os.path.join(raw_dir, name)
        if os.path.isfile(dst):
            continue

        def copy(out, src=src):
            with gzip.open(src, 'rb') as f:
                shutil.copyfileobj(f, out, 1 << 20)

        try:
            atomic_write(dst, copy)
        except (OSError, EOFError) as exc:
            raise UserError(f"could not unpack {src} into {raw_dir} [{_one_line(exc)}]: reinstall "
                            f"dataset-fashion-mnist or pass a writable --data DIR") from exc
    logger.info('unpacked Fashion-MNIST from %s into %s', package_dir, raw_dir)
    return True


@register_dataset('fashion-mnist', 'Fashion-MNIST', 10, 1, 28, FASHION_MNIST_MEAN, FASHION_MNIST_STD)
def _build_fashion_mnist(spec, root, train, transform):
    root = os.path.abspath(root)
    cls = tv_datasets.FashionMNIST
    raw = os.path.join(root, cls.__name__, 'raw')
    processed = os.path.join(root, cls.__name__, 'processed')

    def present():
        return (all(os.path.isfile(os.path.join(raw, n)) for n in _FASHION_FILES)
                or all(os.path.isfile(os.path.join(processed, n)) for n in ('training.pt', 'test.pt')))

    if not present():
        _install_fashion_mnist_from_package(raw, FASHION_MNIST_DEBIAN_DIR)
    if not present():
        try:
            with _download_guard(cls.mirrors[0], creates=[root, os.path.dirname(raw), raw]):
                return cls(root, train=train, transform=transform, download=True)
        except Exception as exc:
            raise UserError(f"Fashion-MNIST not found in {raw} nor in {FASHION_MNIST_DEBIAN_DIR} and could not "
                            f"be downloaded (offline?) [{_one_line(exc)}]: run `apt-get install "
                            f"dataset-fashion-mnist` or put the idx files there or pass --data DIR") from exc
    try:
        return cls(root, train=train, transform=transform, download=False)
    except Exception as exc:
        raise UserError(f"Fashion-MNIST files in {raw} are truncated or corrupt [{_one_line(exc)}]: "
                        f"delete them to unpack or download them again, or pass --data DIR") from exc


# ----------------------------------------------------------------------------- image folders

def _list_classes(directory):
    """Sorted class sub-folder names of `directory` (hidden ones ignored); UserError if none."""
    if not os.path.isdir(directory):
        raise UserError(f"data folder {directory} does not exist: create it with one sub-folder per "
                        f"class, or pass --data DIR")
    classes = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith('.'))
    if not classes:
        raise UserError(f"data folder {directory} has no class sub-folders: put the images in "
                        f"{directory}/<class>/, or pass --data DIR")
    return classes


class _SkipUnreadable:
    """Mixin for data sets with `samples` [(path, target)] and a `loader`: an unreadable image is
    logged once and replaced by the next readable sample (cyclically), so the result for an index
    does not depend on the order in which bad files are found. The 'bad' flags live in shared memory,
    so DataLoader workers (and later epochs) see each other's finds and warn only once."""

    def _init_skip(self):
        if not self.samples:
            raise UserError(f"no images found under {self.root}: add images "
                            f"({', '.join(tv_folder.IMG_EXTENSIONS)}) or pass --data DIR")
        self._unreadable = torch.zeros(len(self.samples), dtype=torch.uint8).share_memory_()

    def __getitem__(self, index):
        n = len(self.samples)
        for step in range(n):
            i = (int(index) + step) % n
            if self._unreadable[i]:
                continue
            path, target = self.samples[i]
            try:
                img = self.loader(path)
            except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, ... for bad files
                if not self._unreadable[i]:
                    self._unreadable[i] = 1
                    logger.warning('skipping unreadable image %s [%s]', path, _one_line(exc))
                continue
            if self.transform is not None:
                img = self.transform(img)
            if self.target_transform is not None:
                target = self.target_transform(target)
            return img, target
        raise UserError(f"none of the {n} images under {self.root} can be read: check the files or pass --data DIR")


class _ImageFolder(_SkipUnreadable, tv_datasets.ImageFolder):
    """torchvision ImageFolder with a fixed class list (the train/ folders), so val/ gets the train
    indices even when it lacks a class; a class folder missing from this split is allowed."""

    def __init__(self, root, classes, transform=None):
        self._fixed_classes = list(classes)
        try:
            super().__init__(root, transform=transform)
        except FileNotFoundError as exc:  # torchvision: "Found no valid file for the classes ..."
            raise UserError(f"{root}: {_one_line(exc)}; remove the empty class folders or add images") from exc
        self._init_skip()

    def find_classes(self, directory):
        return list(self._fixed_classes), {c: i for i, c in enumerate(self._fixed_classes)}

    @staticmethod
    def make_dataset(directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
        present = {c: i for c, i in class_to_idx.items() if os.path.isdir(os.path.join(directory, c))}
        return tv_folder.make_dataset(directory, present, extensions, is_valid_file)


class _ImageList(_SkipUnreadable, Dataset):
    """(path, target) samples read with torchvision's default image loader."""

    def __init__(self, root, samples, classes, transform=None):
        self.root = root
        self.samples = list(samples)
        self.targets = [t for _, t in self.samples]
        self.classes = list(classes)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.loader = tv_folder.default_loader
        self.transform = transform
        self.target_transform = None
        self._init_skip()

    def __len__(self):
        return len(self.samples)


def _split_folder(root, split):
    path = os.path.join(root, split)
    if not os.path.isdir(path):
        raise UserError(f"data folder {path} does not exist: the data set needs {root}/train and "
                        f"{root}/val with one sub-folder per class, or pass --data DIR")
    return path


def _folder_split(root, train, transform):
    classes = _list_classes(_split_folder(root, 'train'))
    path = _split_folder(root, 'train' if train else 'val')
    if not train:
        extra = sorted(set(_list_classes(path)) - set(classes))
        if extra:
            raise UserError(f"{path} has class folders that {root}/train lacks ({', '.join(extra[:5])}): "
                            f"make the class folders of train/ and val/ match")
    return _ImageFolder(path, classes, transform)


@register_dataset('imagefolder', 'image folder', None, 3, 32, IMAGENET_MEAN, IMAGENET_STD)
def _build_image_folder(spec, root, train, transform):
    return _folder_split(root, train, transform)


@register_dataset('tiny-imagenet', 'Tiny-ImageNet', None, 3, 64, IMAGENET_MEAN, IMAGENET_STD)
def _build_tiny_imagenet(spec, root, train, transform):
    """Tiny-ImageNet-200: train/<wnid>/images/*.JPEG (ImageFolder finds them recursively and skips the
    *_boxes.txt files), val/images/*.JPEG labelled by val/val_annotations.txt (file, wnid, bbox...).
    A val/ already sorted into val/<wnid>/ folders is read as an ImageFolder."""
    if train:
        return _folder_split(root, True, transform)
    classes = _list_classes(_split_folder(root, 'train'))
    val = _split_folder(root, 'val')
    annotations = os.path.join(val, 'val_annotations.txt')
    if not os.path.isfile(annotations):
        if os.path.isdir(os.path.join(val, 'images')):
            raise UserError(f"{annotations} is missing: Tiny-ImageNet labels val/images/ with it; "
                            f"restore it from the tiny-imagenet-200 archive or pass --data DIR")
        return _folder_split(root, False, transform)
    index = {c: i for i, c in enumerate(classes)}
    samples = []
    with open(annotations) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = line.rstrip('\n').split('\t')
            if len(fields) < 2:
                raise UserError(f"{annotations} line {lineno} is not 'file<TAB>wnid<TAB>...': fix or "
                                f"restore the file")
            name, wnid = fields[0].strip(), fields[1].strip()
            if wnid not in index:
                raise UserError(f"{annotations} line {lineno} names class {wnid}, which has no folder in "
                                f"{root}/train: restore train/{wnid} or fix the file")
            path = os.path.join(val, 'images', name)
            if not os.path.isfile(path):
                raise UserError(f"{annotations} line {lineno} names {path}, which does not exist: restore "
                                f"the image or fix the file")
            samples.append((path, index[wnid]))
    if not samples:
        raise UserError(f"{annotations} lists no images: restore it from the tiny-imagenet-200 archive")
    return _ImageList(val, samples, classes, transform)


@register_dataset('imagenet', 'ImageNet', None, 3, 224, IMAGENET_MEAN, IMAGENET_STD)
def _build_imagenet(spec, root, train, transform):
    return _folder_split(root, train, transform)


def _food101_base(root):
    """ROOT/food-101 (or ROOT itself when --data points at it): images/<class>/<id>.jpg and
    meta/{train,test}.json listing '<class>/<id>' per class, as the archive unpacks."""
    root = os.path.abspath(os.fspath(root))
    return root if os.path.basename(root.rstrip(os.sep)) == 'food-101' else os.path.join(root, 'food-101')


def _food101_split(base, split):
    path = os.path.join(base, 'meta', f'{split}.json')
    try:
        with open(path) as f:
            listing = json.load(f)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is missing or not JSON [{_one_line(exc)}]: restore food-101/meta from the "
                        f"Food-101 archive or pass --data DIR") from exc
    if not isinstance(listing, dict) or not listing:
        raise UserError(f"{path} should map each class to its images; restore it from the Food-101 archive")
    return listing


@register_dataset('food101', 'Food-101', None, 3, 224, IMAGENET_MEAN, IMAGENET_STD)
def _build_food101(spec, root, train, transform):
    """Food-101 (Bossard et al., ECCV 2014), read as torchvision's `Food101` does: the classes are
    the keys of meta/train.json, a split's images those its JSON lists."""
    base = _food101_base(root)
    if not os.path.isdir(os.path.join(base, 'meta')):
        try:
            with _download_guard(tv_datasets.Food101._URL, creates=[os.path.dirname(base)]):
                tv_datasets.Food101(os.path.dirname(base), download=True)
        except Exception as exc:
            raise UserError(f"Food-101 not found in {base} and could not be downloaded (offline?) "
                            f"[{_one_line(exc)}]: unpack food-101.tar.gz there or pass --data DIR") from exc
    classes = sorted(_food101_split(base, 'train'))
    listing = _food101_split(base, 'train' if train else 'test')
    unknown = sorted(set(listing) - set(classes))
    if unknown:
        raise UserError(f"{base}/meta/test.json names classes that train.json lacks ({', '.join(unknown[:5])}); "
                        f"restore meta/ from the Food-101 archive")
    index = {c: i for i, c in enumerate(classes)}
    samples = [(os.path.join(base, 'images', *f'{name}.jpg'.split('/')), index[c])
               for c in sorted(listing) for name in listing[c]]
    return _ImageList(os.path.join(base, 'images'), samples, classes, transform)


# ----------------------------------------------------------------------------- names

_ALIASES = {'cifar-10': 'cifar10', 'cifar-100': 'cifar100', 'fashionmnist': 'fashion-mnist',
            'image-folder': 'imagefolder', 'tinyimagenet': 'tiny-imagenet', 'food-101': 'food101'}


def _lookup(name):
    key = str(name).strip().lower().replace('_', '-')
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise UserError(f"unknown dataset '{name}': choose one of {', '.join(DATASETS)}")
    return key, DATASETS[key]


def canonical_name(name):
    """The registry key of a data set name or alias ('CIFAR-100' -> 'cifar100'); UserError if unknown."""
    return _lookup(name)[0]


def _check_size(image_size, spec):
    if image_size is None:
        return spec.image_size
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise UserError(f"image size {image_size!r} must be a positive whole number of pixels, e.g. {spec.image_size}")
    return image_size


def _check_cutout(cutout_length):
    if cutout_length is None:
        return 0
    if isinstance(cutout_length, bool) or not isinstance(cutout_length, int) or cutout_length < 0:
        raise UserError(f"cutout length {cutout_length!r} must be 0 (off) or a positive number of pixels, e.g. 16")
    return cutout_length


# Class counts of the standard folder data sets, for a --dry_run without the data on disk.
NOMINAL_CLASSES = {'imagenet': 1000, 'tiny-imagenet': 200, 'food101': 101}


def dataset_info(name, root=None, image_size=None, need_data=True):
    """DatasetInfo(num_classes, in_channels, image_size, mean, std) of a registered data set. Folder
    data sets count num_classes from the class sub-folders of ROOT/train, so they need `root`;
    with need_data=False, ImageNet and Tiny-ImageNet fall back to their standard class counts."""
    key, spec = _lookup(name)
    num_classes = spec.num_classes
    if key == 'food101':
        on_disk = root is not None and os.path.isdir(os.path.join(_food101_base(root), 'meta'))
        if on_disk or need_data:
            num_classes = len(_food101_split(_food101_base(root if root is not None else 'data'), 'train'))
    if num_classes is None and not need_data and key in NOMINAL_CLASSES:
        if root is None or not os.path.isdir(os.path.join(os.fspath(root), 'train')):
            num_classes = NOMINAL_CLASSES[key]
    if num_classes is None:
        if root is None:
            raise UserError(f"dataset '{key}' counts its classes from DIR/train: pass --data DIR")
        num_classes = len(_list_classes(_split_folder(os.fspath(root), 'train')))
    return DatasetInfo(num_classes, spec.in_channels, _check_size(image_size, spec), spec.mean, spec.std)


def build_dataset(name, root, train, augment, cutout_length=0, image_size=None, cifar_normalization='darts',
                  pipeline='auto'):
    """The train (train=True) or test/val split of a registered data set, yielding (tensor, int).

    augment=True gives the training augmentation (and Cutout when cutout_length > 0, after
    normalisation); augment=False gives ToTensor + Normalize (after the resize/crop for folders).
    image_size defaults to the data set's own (32, 28, 32, 64, 224). root=None means 'data'.
    CIFAR is normalised with the constants of `cifar_normalization` (see CIFAR_NORMALIZATIONS);
    folder data sets are prepared by `pipeline` (FOLDER_PIPELINES)."""
    key, spec = _lookup(name)
    transform = build_transform(key, augment, cutout_length, image_size, cifar_normalization, pipeline)
    root = os.fspath(root) if root is not None else 'data'
    return spec.builder(spec, root, bool(train), transform)


def search_split(dataset, train_portion, subset=None):
    """DARTS split of a training set for search: of the first `subset` samples (all if None), the
    first floor(train_portion * n) train the weights and the rest the architecture.

    `dataset` may be a data set or its length. Returns (weight_indices, arch_indices) as lists."""
    n = dataset if isinstance(dataset, int) else len(dataset)
    if subset is not None:
        if isinstance(subset, bool) or not isinstance(subset, int) or subset < 2:
            raise UserError(f"subset {subset!r} must be a whole number of at least 2 samples")
        if subset > n:
            logger.warning('subset %d is larger than the data set (%d samples); using all of it', subset, n)
        n = min(n, subset)
    try:
        portion = float(train_portion)
    except (TypeError, ValueError):
        portion = float('nan')
    if not 0.0 < portion < 1.0:
        raise UserError(f"train portion {train_portion!r} must lie strictly between 0 and 1, e.g. 0.5")
    split = int(math.floor(portion * n + 1e-9))   # the epsilon only absorbs float error, e.g. 0.29*100
    if split < 1 or split >= n:
        raise UserError(f"train portion {portion:g} of {n} samples leaves {split} for the weights and "
                        f"{n - split} for the architecture; both need at least one: use more samples or a "
                        f"portion nearer 0.5")
    return list(range(split)), list(range(split, n))


# ----------------------------------------------------------------------------- data on the device

# Zero padding of the random crop of the small-image data sets (as _small_image_transform).
DEVICE_CROP_PADDING = {'cifar10': 4, 'cifar100': 4, 'fashion-mnist': 2}


class DeviceLoader:
    """Batches of a CIFAR / Fashion-MNIST split held on `device` as uint8, augmented there: the
    random crop with zero padding, horizontal flip, normalisation and Cutout of build_transform,
    drawn per image, for a whole batch at once, so that a GPU never waits for loader processes.

    Behaves as the DataLoaders that `training.fit` drives: `generator` (re-seeded every epoch)
    decides the order and every augmentation draw of the epoch when iteration starts, so the
    same seed replays the same batches; under torchrun each process takes its shard of the
    order.  Batches come out channels-last, as the crop builds them."""

    def __init__(self, dataset, name, batch_size, shuffle, drop_last, device, augment, cutout_length=0,
                 cifar_normalization='darts'):
        key, _ = _lookup(name)
        mean, std = normalization(key, cifar_normalization)
        indices = list(range(len(dataset)))
        while isinstance(dataset, torch.utils.data.Subset):
            indices = [dataset.indices[i] for i in indices]
            dataset = dataset.dataset
        images = torch.as_tensor(dataset.data)
        images = images[:, None] if images.dim() == 3 else images.permute(0, 3, 1, 2)  # N x C x H x W
        self.images = images[indices].to(device)
        self.labels = torch.as_tensor(dataset.targets)[indices].to(device)
        self.mean = torch.tensor(mean, device=device)[None, :, None, None]
        self.std = torch.tensor(std, device=device)[None, :, None, None]
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.padding = DEVICE_CROP_PADDING[key] if augment else 0
        self.flip = augment
        self.cutout_length = _check_cutout(cutout_length) if augment else 0
        self.generator, self.sampler = torch.Generator(), None

    @staticmethod
    def _world():
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_world_size(), torch.distributed.get_rank()
        return 1, 0

    def _order(self):
        n, (world, rank) = len(self.labels), self._world()
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        return order[:n - n % world][rank::world]

    def __len__(self):
        world, _ = self._world()
        n = len(self.labels) // world
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        order = self._order()
        n, (_, _, h, w) = len(order), self.images.shape
        draws = {'shift': torch.randint(0, 2 * self.padding + 1, (n, 2), generator=self.generator),
                 'flip': torch.randint(0, 2, (n,), generator=self.generator).bool() & self.flip,
                 'centre': torch.stack([torch.randint(0, h, (n,), generator=self.generator),
                                        torch.randint(0, w, (n,), generator=self.generator)], 1)}
        device = self.images.device
        order, draws = order.to(device), {k: v.to(device) for k, v in draws.items()}
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            rows = slice(start, min(start + self.batch_size, n))
            index = order[rows]
            yield (augment_on_device(self.images[index], draws['shift'][rows], draws['flip'][rows],
                                     draws['centre'][rows], self.padding, self.cutout_length, self.mean, self.std),
                   self.labels[index])


def augment_on_device(images, shift, flip, centre, padding, cutout_length, mean, std):
    """uint8 N x C x H x W -> normalised float N x C x H x W (channels-last): crop the zero-padded
    image at offset `shift` (row, column; 0..2*padding), mirror it where `flip`, normalise, and zero
    the cutout_length square around `centre` (clipped at the borders, as Cutout)."""
    n, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    device = images.device
    rows = shift[:, :1] + torch.arange(h, device=device)                       # N x H
    columns = torch.arange(w, device=device).expand(n, w)
    columns = torch.where(flip[:, None], w - 1 - columns, columns) + shift[:, 1:]  # N x W
    batch = torch.arange(n, device=device)[:, None, None]
    crops = padded[batch, :, rows[:, :, None], columns[:, None, :]]          # N x H x W x C
    x = (crops.permute(0, 3, 1, 2).float() / 255 - mean) / std
    if cutout_length:
        half = cutout_length // 2
        y = torch.arange(h, device=device)[None, :]
        xs = torch.arange(w, device=device)[None, :]
        keep_rows = (y < centre[:, :1] - half) | (y >= centre[:, :1] + half)      # N x H
        keep_columns = (xs < centre[:, 1:] - half) | (xs >= centre[:, 1:] + half)  # N x W
        keep = keep_rows[:, :, None] | keep_columns[:, None, :]
        x = x * keep[:, None]
    return x


__all__ = ['DATASETS', 'register_dataset', 'DeviceLoader', 'augment_on_device', 'DatasetInfo', 'DatasetSpec', 'Cutout', 'build_dataset', 'build_transform',
           'dataset_info', 'search_split', 'CIFAR10_MEAN', 'CIFAR10_STD', 'CIFAR100_MEAN', 'CIFAR100_STD',
           'CIFAR_NORMALIZATIONS', 'normalization', 'PIPELINES', 'FOLDER_PIPELINES', 'canonical_name', 'FASHION_MNIST_MEAN', 'FASHION_MNIST_STD', 'IMAGENET_MEAN', 'IMAGENET_STD',
           'FASHION_MNIST_DEBIAN_DIR', 'DOWNLOAD_TIMEOUT', 'OFFLINE_ENV']
