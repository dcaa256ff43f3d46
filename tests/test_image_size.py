"""--image_size and the references' image-folder pipelines at 224 px on a tiny on-disk folder: the
transforms (the evaluation ones recomputed with PIL), the networks adapting their stems, pooling and
heads, and training and testing runs at 224."""
import numpy as np
import pytest
import torch
from PIL import Image

import datasets
import genotypes
import slnas
from model import NetworkCIFAR, NetworkImageNet
from tests import data_factory
from tests.helpers import run
from utils import UserError

TINY = ['--epochs', '1', '--batch_size', '4', '--workers', '0', '--no_progress', '--report_freq', '0']


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    # 40 x 40 and 40 x 48 images: every pipeline must scale up and cope with non-square input.
    return data_factory.make_image_folder(str(tmp_path_factory.mktemp('folder') / 'data'), classes=3, per_class=4)


@pytest.mark.parametrize('pipeline', list(datasets.FOLDER_PIPELINES))
@pytest.mark.parametrize('train', [True, False])
def test_every_pipeline_gives_224_px_normalised_images(folder, pipeline, train):
    torch.manual_seed(0)
    data = datasets.build_dataset('imagefolder', folder, train=train, augment=train, image_size=224, pipeline=pipeline)
    images = torch.stack([data[i][0] for i in range(len(data))])
    assert images.shape == (len(data), 3, 224, 224) and torch.isfinite(images).all()
    assert datasets.dataset_info('imagefolder', folder, image_size=224).image_size == 224


def _normalised(img):
    array = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)
    return (array - torch.tensor(datasets.IMAGENET_MEAN)[:, None, None]) / torch.tensor(datasets.IMAGENET_STD)[:, None, None]


def _center_crop(img, size):
    left, top = int(round((img.width - size) / 2)), int(round((img.height - size) / 2))
    return img.crop((left, top, left + size, top + size))


def test_evaluation_pipelines_are_the_references(folder):
    data = {p: datasets.build_dataset('imagefolder', folder, train=False, augment=False, image_size=s, pipeline=p)
            for p, s in (('slnas', 224), ('cnas-imagenet', 128), ('cnas-food101', 128))}
    path = data['slnas'].samples[1][0]  # a 40 x 48 image
    img = Image.open(path).convert('RGB')
    assert img.size == (48, 40)
    # SLNAS: Resize((256, 256), ANTIALIAS) then CenterCrop(224).
    slnas_expected = _normalised(_center_crop(img.resize((256, 256), Image.LANCZOS), 224))
    # CNAS ImageNet: Resize(256) of the shorter side, CenterCrop(128); Food-101: Resize(128), CenterCrop(128).
    # The longer side is truncated: 48 * 256 / 40 = 307.2 -> 307, 48 * 128 / 40 = 153.6 -> 153.
    cnas_expected = _normalised(_center_crop(img.resize((307, 256), Image.BILINEAR), 128))
    food_expected = _normalised(_center_crop(img.resize((153, 128), Image.BILINEAR), 128))
    # torchvision's PIL resizes are PIL's own, so only float32 rounding of the normalisation differs.
    for name, expected in (('slnas', slnas_expected), ('cnas-imagenet', cnas_expected), ('cnas-food101', food_expected)):
        assert float((data[name][1][0] - expected).abs().max()) < 1e-5, name


def test_pipeline_and_size_mistakes_are_one_line():
    with pytest.raises(UserError, match='has its own augmentation'):
        datasets.build_transform('cifar10', True, pipeline='slnas')
    with pytest.raises(UserError, match='unknown --pipeline'):
        datasets.build_transform('imagefolder', True, pipeline='bogus')
    with pytest.raises(UserError, match='positive whole number'):
        datasets.build_transform('imagefolder', True, image_size=0)


def test_networks_adapt_to_the_image_size():
    torch.manual_seed(0)
    genotype = genotypes.NAMED['DARTS_V2']
    for net, size in ((NetworkCIFAR(4, 3, 3, True, genotype, image_size=96, reduce_level=1), 96),
                      (NetworkImageNet(8, 3, 3, True, genotype, image_size=224), 224),
                      (NetworkImageNet(8, 3, 3, True, genotype, image_size=160), 160)):
        net.train()
        logits, aux = net(torch.randn(2, 3, size, size))
        assert logits.shape == aux.shape == (2, 3)
    # SLNAS's image-folder retrainer: two stride-2 steps in each stem (the second through BlurPool).
    arch = genotypes.seq_from_lists([[0, 1, 0, 4, 1, 3, 0, 3, 0, 3, 0, 0, 1, 1, 0, 3, 0, 3, 1, 0]] * 2, [1, 1], 'arch')
    net = slnas.Network(4, [1, 1], 3, arch=arch, stride4_stem=True, blurpool_stem=True)
    assert isinstance(net.stem_5x5[-1], slnas.BlurPool)
    x = torch.randn(2, 3, 224, 224)
    assert net.stem_3x3(x).shape == net.stem_5x5(x).shape == (2, 4, 56, 56)
    assert net(x)[0].shape == (2, 3)


def test_slnas_initialisation_is_the_references():
    torch.manual_seed(0)
    net = slnas.initialize_weights(slnas.Network(8, [1, 1], 10, stride4_stem=True))
    linear = torch.cat([m.weight.detach().flatten() for m in net.modules() if isinstance(m, torch.nn.Linear)])
    # 480 draws of N(0, 0.01): the sample std's standard error is 3.2%, so a 10% band (seed fixed) tells
    # it from PyTorch's default, whose std is 1 / sqrt(3 * 32) = 0.10 for the 32-input classifier.
    assert abs(float(linear.std()) - 0.01) < 1e-3
    # 216 draws of Kaiming normal with fan out 8 * 3 * 3: std sqrt(2 / 72) = 0.167 (standard error 5%);
    # PyTorch's default would give 1 / sqrt(3 * 27) = 0.111.
    conv = net.stem_3x3[0].weight.detach()
    assert abs(float(conv.std()) / (2 / 72) ** 0.5 - 1) < 0.2


def test_darts_network_trains_and_tests_at_224(tmp_path, folder):
    run('train_CIFAR10.py', *TINY, '--dataset', 'imagefolder', '--data', folder, '--image_size', '224',
        '--pipeline', 'imagenet', '--network', 'imagenet', '--arch', 'DARTS_V2', '--init_channels', '8',
        '--layers', '2', '--save', tmp_path / 'darts')
    trained = torch.load(tmp_path / 'darts' / 'trained.pt', weights_only=False)
    assert trained['network']['type'] == 'imagenet' and trained['network']['image_size'] == 224
    result = run('test_CIFAR10.py', '--dataset', 'imagefolder', '--data', folder, '--model_path',
                 tmp_path / 'darts' / 'trained.pt', '--workers', '0', '--no_progress')
    assert '"top1"' in result.stdout


def test_slnas_preset_retrains_an_image_folder_at_224(tmp_path, folder):
    run('retrain_slnas.py', *TINY, '--preset', 'slnas', '--dataset', 'imagefolder', '--data', folder,
        '--child_out_filters', '4', '--blocks', '[1,1]', '--save', tmp_path / 'slnas')
    trained = torch.load(tmp_path / 'slnas' / 'trained.pt', weights_only=False)
    assert trained['args']['image_size'] == 224 and trained['args']['pipeline'] == 'slnas'
    assert trained['network']['stride4'] and trained['network']['blurpool_stem']


def test_food101_reads_the_archive_layout_and_trains_as_cnas_does(tmp_path):
    root = data_factory.make_food101(str(tmp_path / 'data'), classes=3, per_class=4, test_per_class=2)
    info = datasets.dataset_info('food101', root, image_size=128)
    assert info.num_classes == 3 and info.image_size == 128
    assert datasets.dataset_info('food-101', tmp_path / 'absent', need_data=False).num_classes == 101
    train = datasets.build_dataset('food101', root, train=True, augment=True, image_size=128, pipeline='cnas-food101')
    test = datasets.build_dataset('food101', str(tmp_path / 'data' / 'food-101'), train=False, augment=False,
                                  image_size=128, pipeline='cnas-food101')
    assert (len(train), len(test)) == (12, 6) and sorted(set(test.targets)) == [0, 1, 2]
    assert train[0][0].shape == test[5][0].shape == (3, 128, 128)
    with pytest.raises(UserError, match='not found'):
        datasets.build_dataset('food101', tmp_path / 'missing', train=True, augment=False)
    run('train_CIFAR10.py', *TINY, '--preset', 'cnas', '--dataset', 'food101', '--data', root, '--init_channels', '4',
        '--layers', '3', '--save', tmp_path / 'cnas')
    trained = torch.load(tmp_path / 'cnas' / 'trained.pt', weights_only=False)
    assert trained['network']['type'] == 'cifar' and trained['network']['image_size'] == 128
    assert trained['args']['pipeline'] == 'cnas-food101' and trained['args']['scheduler'] == 'step'
