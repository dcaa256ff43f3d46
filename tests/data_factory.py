"""Tiny data sets written to disk in the real on-disk formats, for tests across the project.

Every `make_*` function writes under `root` and returns `root` as a str. The images carry a class
signal (a class-dependent mean colour or brightness plus noise), so a short training run can learn.

  make_cifar10(root)        root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
  make_cifar100(root)       root/cifar-100-python/{train, test, meta}
  make_fashion_mnist(root)  root/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte
  make_fashion_mnist_gz(d)  d/*-ubyte.gz, the flat layout of the Debian package dataset-fashion-mnist
  make_image_folder(root)   root/{train,val}/class_XX/*.png (optionally one corrupt file)
  make_tiny_imagenet(root)  root/{wnids.txt, words.txt, train/<wnid>/images/*.JPEG,
                            train/<wnid>/<wnid>_boxes.txt, val/images/*.JPEG,
                            val/val_annotations.txt, test/images/*.JPEG}
  make_imagenet16(root)     root/{train_data_batch_1..10, val_data}: ImageNet16 pickles (NAS-Bench-201's
                            ImageNet16-120 keeps labels 1..120 of their 1..1000)

The CIFAR pickles are written the way the Python 2 originals were: keys and strings are pickled as
Python 2 `str` (BINSTRING opcodes), so `pickle.load(f, encoding='bytes')` gives b'data', b'labels'
(as on the CIFAR web page) and `encoding='latin1'` gives 'data', 'labels' (as torchvision reads them).
"""
import gzip
import json
import io
import os
import pickle
import struct

import numpy as np
from PIL import Image

CIFAR10_LABEL_NAMES = ['airplane', 'automobile', 'bird', 'cat', 'deer',
                       'dog', 'frog', 'horse', 'ship', 'truck']
FASHION_MNIST_FILES = ['train-images-idx3-ubyte', 'train-labels-idx1-ubyte',
                       't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte']
CORRUPT_FILE_NAME = 'corrupt.png'   # make_image_folder(corrupt=True): root/train/class_00/corrupt.png


# ----------------------------------------------------------------------------- pickles

class _Py2Pickler(pickle._Pickler):
    """Protocol-2 pickler that writes `bytes` as Python 2 `str` (SHORT_BINSTRING / BINSTRING)."""
    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack('<i', len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def _write_py2_pickle(path, obj):
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    with open(path, 'wb') as f:
        f.write(buf.getvalue())


def _class_colours(num_classes, rng):
    return rng.uniform(40, 215, size=(num_classes, 3))


def _cifar_images(labels, colours, rng):
    """uint8 (N, 3072) rows in CIFAR order: 1024 red, 1024 green, 1024 blue values, row-major."""
    n = len(labels)
    imgs = colours[labels][:, :, None, None] + rng.normal(0, 25, size=(n, 3, 32, 32))
    return np.clip(imgs, 0, 255).astype(np.uint8).reshape(n, 3072)


def _balanced_labels(n, num_classes, rng):
    labels = np.arange(n) % num_classes
    rng.shuffle(labels)
    return labels.astype(np.int64)


def make_cifar10(root, n_train=64, n_test=32, seed=0):
    root = os.fspath(root)
    base = os.path.join(root, 'cifar-10-batches-py')
    os.makedirs(base, exist_ok=True)
    rng = np.random.default_rng(seed)
    colours = _class_colours(10, rng)
    train_labels = _balanced_labels(n_train, 10, rng)
    train_data = _cifar_images(train_labels, colours, rng)
    parts = np.array_split(np.arange(n_train), 5)
    for b, idx in enumerate(parts, start=1):
        _write_py2_pickle(os.path.join(base, f'data_batch_{b}'), {
            b'batch_label': f'training batch {b} of 5'.encode(),
            b'labels': [int(v) for v in train_labels[idx]],
            b'data': train_data[idx],
            b'filenames': [f'img_{int(i):05d}.png'.encode() for i in idx],
        })
    test_labels = _balanced_labels(n_test, 10, rng)
    _write_py2_pickle(os.path.join(base, 'test_batch'), {
        b'batch_label': b'testing batch 1 of 1',
        b'labels': [int(v) for v in test_labels],
        b'data': _cifar_images(test_labels, colours, rng),
        b'filenames': [f'test_{i:05d}.png'.encode() for i in range(n_test)],
    })
    _write_py2_pickle(os.path.join(base, 'batches.meta'), {
        b'num_cases_per_batch': max(len(p) for p in parts),
        b'label_names': [name.encode() for name in CIFAR10_LABEL_NAMES],
        b'num_vis': 3072,
    })
    return root


def make_cifar100(root, n_train=64, n_test=32, seed=0):
    root = os.fspath(root)
    base = os.path.join(root, 'cifar-100-python')
    os.makedirs(base, exist_ok=True)
    rng = np.random.default_rng(seed)
    colours = _class_colours(100, rng)
    for split, n in (('train', n_train), ('test', n_test)):
        fine = _balanced_labels(n, 100, rng)
        _write_py2_pickle(os.path.join(base, split), {
            b'filenames': [f'{split}_{i:05d}.png'.encode() for i in range(n)],
            b'batch_label': f'{split}ing batch 1 of 1'.encode(),
            b'fine_labels': [int(v) for v in fine],
            b'coarse_labels': [int(v) // 5 for v in fine],
            b'data': _cifar_images(fine, colours, rng),
        })
    _write_py2_pickle(os.path.join(base, 'meta'), {
        b'fine_label_names': [f'fine_{i:02d}'.encode() for i in range(100)],
        b'coarse_label_names': [f'coarse_{i:02d}'.encode() for i in range(20)],
    })
    return root


# ----------------------------------------------------------------------------- Fashion-MNIST

def _idx_bytes(array):
    """The big-endian idx format: 0x00 0x00, type code 0x08 (ubyte), ndim, then int32 dims."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack('>BBBB', 0, 0, 0x08, array.ndim) + struct.pack('>' + 'I' * array.ndim, *array.shape)
    return header + array.tobytes()


def _fashion_arrays(n_train, n_test, seed):
    rng = np.random.default_rng(seed)
    levels = np.linspace(30, 220, 10)
    out = {}
    for prefix, n in (('train', n_train), ('t10k', n_test)):
        labels = _balanced_labels(n, 10, rng)
        imgs = levels[labels][:, None, None] + rng.normal(0, 20, size=(n, 28, 28))
        # a class-dependent bright column as a spatial cue as well
        imgs[np.arange(n), :, 2 + 2 * labels] = 255
        out[f'{prefix}-images-idx3-ubyte'] = _idx_bytes(np.clip(imgs, 0, 255))
        out[f'{prefix}-labels-idx1-ubyte'] = _idx_bytes(labels)
    return out


def make_fashion_mnist(root, n_train=64, n_test=32, seed=0):
    root = os.fspath(root)
    raw = os.path.join(root, 'FashionMNIST', 'raw')
    os.makedirs(raw, exist_ok=True)
    for name, data in _fashion_arrays(n_train, n_test, seed).items():
        with open(os.path.join(raw, name), 'wb') as f:
            f.write(data)
    return root


def make_fashion_mnist_gz(directory, n_train=64, n_test=32, seed=0):
    """The four gzipped idx files, flat, as /usr/share/datasets/fashion-mnist/ of the Debian package."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    for name, data in _fashion_arrays(n_train, n_test, seed).items():
        with gzip.open(os.path.join(directory, name + '.gz'), 'wb') as f:
            f.write(data)
    return directory


# ----------------------------------------------------------------------------- image folders

def _signal_image(colour, size, rng, mode='RGB'):
    h, w = size
    arr = np.clip(colour[None, None, :] + rng.normal(0, 25, size=(h, w, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr, 'RGB')
    return img.convert('L') if mode == 'L' else img


def make_image_folder(root, classes=3, per_class=4, size=40, corrupt=False, seed=0):
    """root/train/class_XX/img_YYY.png and root/val/class_XX/img_YYY.png, `per_class` each.

    Every second image is (size + 8) wide, so transforms must cope with non-square input.
    With corrupt=True, root/train/class_00/corrupt.png is a file that is not a valid PNG."""
    root = os.fspath(root)
    rng = np.random.default_rng(seed)
    colours = _class_colours(classes, rng)
    for split in ('train', 'val'):
        for c in range(classes):
            d = os.path.join(root, split, f'class_{c:02d}')
            os.makedirs(d, exist_ok=True)
            for j in range(per_class):
                shape = (size, size + 8 * (j % 2))
                _signal_image(colours[c], shape, rng).save(os.path.join(d, f'img_{j:03d}.png'))
    if corrupt:
        with open(os.path.join(root, 'train', 'class_00', CORRUPT_FILE_NAME), 'wb') as f:
            f.write(b'\x89PNG\r\n\x1a\n' + b'this is not image data' * 4)
    return root


def make_tiny_imagenet(root, classes=3, per_class=3, seed=0):
    """The Tiny-ImageNet-200 layout with `classes` wnids and `per_class` train and val images each.

    One train image per class is greyscale, as some real Tiny-ImageNet JPEGs are."""
    root = os.fspath(root)
    rng = np.random.default_rng(seed)
    colours = _class_colours(classes, rng)
    wnids = [f'n{1443537 + 1000 * c:08d}' for c in range(classes)]
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, 'wnids.txt'), 'w') as f:
        f.write(''.join(w + '\n' for w in wnids))
    with open(os.path.join(root, 'words.txt'), 'w') as f:
        f.write(''.join(f'{w}\tthing number {c}\n' for c, w in enumerate(wnids)))
    for c, wnid in enumerate(wnids):
        d = os.path.join(root, 'train', wnid, 'images')
        os.makedirs(d, exist_ok=True)
        boxes = []
        for j in range(per_class):
            name = f'{wnid}_{j}.JPEG'
            mode = 'L' if j == 0 else 'RGB'
            _signal_image(colours[c], (64, 64), rng, mode).save(os.path.join(d, name), format='JPEG', quality=95)
            boxes.append(f'{name}\t0\t0\t63\t63\n')
        with open(os.path.join(root, 'train', wnid, f'{wnid}_boxes.txt'), 'w') as f:
            f.write(''.join(boxes))
    val_dir = os.path.join(root, 'val', 'images')
    os.makedirs(val_dir, exist_ok=True)
    val_labels = list(rng.permutation(np.repeat(np.arange(classes), per_class)))
    lines = []
    for k, c in enumerate(val_labels):
        name = f'val_{k}.JPEG'
        _signal_image(colours[c], (64, 64), rng).save(os.path.join(val_dir, name), format='JPEG', quality=95)
        lines.append(f'{name}\t{wnids[c]}\t{k % 10}\t{k % 7}\t{40 + k % 20}\t{50 + k % 10}\n')
    with open(os.path.join(root, 'val', 'val_annotations.txt'), 'w') as f:
        f.write(''.join(lines))
    test_dir = os.path.join(root, 'test', 'images')
    os.makedirs(test_dir, exist_ok=True)
    for k in range(2):
        _signal_image(colours[k % classes], (64, 64), rng).save(os.path.join(test_dir, f'test_{k}.JPEG'), format='JPEG')
    return root


def make_food101(root, classes=3, per_class=4, test_per_class=2, size=40, seed=0):
    """root/food-101 as the Food-101 archive unpacks: images/<class>/<id>.jpg and meta/train.json,
    meta/test.json ({class: ['<class>/<id>', ...]}) and meta/classes.txt."""
    root = os.fspath(root)
    base = os.path.join(root, 'food-101')
    rng = np.random.default_rng(seed)
    colours = _class_colours(classes, rng)
    listing = {'train': {}, 'test': {}}
    for c in range(classes):
        name = f'dish_{c:02d}'
        os.makedirs(os.path.join(base, 'images', name), exist_ok=True)
        for j in range(per_class + test_per_class):
            _signal_image(colours[c], (size, size + 8 * (j % 2)), rng).save(
                os.path.join(base, 'images', name, f'{1000 + j}.jpg'))
            listing['train' if j < per_class else 'test'].setdefault(name, []).append(f'{name}/{1000 + j}')
    os.makedirs(os.path.join(base, 'meta'), exist_ok=True)
    for split, entries in listing.items():
        with open(os.path.join(base, 'meta', f'{split}.json'), 'w') as f:
            json.dump(entries, f)
    with open(os.path.join(base, 'meta', 'classes.txt'), 'w') as f:
        f.write(''.join(f'dish_{c:02d}\n' for c in range(classes)))
    return root


def make_imagenet16(root, n_train=60, n_val=24, seed=0):
    """The downsampled-ImageNet 16x16 pickles: dicts of b'data' (uint8 rows of 768 values, red, green,
    blue planes) and b'labels' (1..1000), the training images spread over 10 batches.  A sixth of the
    images carry labels above 120, which ImageNet16-120 drops; the rest are of classes 1..3."""
    root = os.fspath(root)
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(seed)
    colours = _class_colours(3, rng)

    def split(n):
        labels = np.where(np.arange(n) % 6 == 5, rng.integers(121, 1001, size=n), np.arange(n) % 3 + 1)
        images = colours[np.minimum(labels, 3) - 1][:, :, None, None] + rng.normal(0, 25, size=(n, 3, 16, 16))
        return np.clip(images, 0, 255).astype(np.uint8).reshape(n, 768), labels

    data, labels = split(n_train)
    for b, idx in enumerate(np.array_split(np.arange(n_train), 10), start=1):
        _write_py2_pickle(os.path.join(root, f'train_data_batch_{b}'),
                          {b'data': data[idx], b'labels': [int(v) for v in labels[idx]]})
    data, labels = split(n_val)
    _write_py2_pickle(os.path.join(root, 'val_data'), {b'data': data, b'labels': [int(v) for v in labels]})
    return root
