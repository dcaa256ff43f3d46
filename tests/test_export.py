"""export.py / deploy.py: trained networks of every family to ONNX, run in ONNX Runtime against
PyTorch on the same input (eval mode, tiny networks), and the one-line refusals."""
import json

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn

import deploy
import evaluation
import genotypes
import nb201
import slnas
from tests import data_factory
from tests.helpers import run
from tests.test_scripts import TINY_TRAIN
from utils import UserError

ATOL = 1e-4
# Every registered attention once: after ops on both cell types, and as the cell-output bottleneck.
EVERY_ATTENTION = {
    'normal': [['sep_conv_3x3', 0, 'SE'], ['skip_connect', 1, 'BAM'], ['dil_conv_3x3', 0, 'CBAM'],
               ['max_pool_3x3', 2, 'GE_theta-plus']],
    'normal_concat': [2, 3],
    'reduce': [['avg_pool_3x3', 0, 'DoubleAttention'], ['skip_connect', 1, 'Identity'], ['sep_conv_5x5', 2, 'CBAM'],
               ['max_pool_3x3', 1, 'SE']],
    'reduce_concat': [2, 3], 'normal_bottleneck': 'BAM', 'reduce_bottleneck': 'GE_theta-plus'}


def randomized(model, seed=0):
    """`model` in eval mode with random weights and BatchNorm statistics, so that no layer is the
    identity its default initialisation would make it."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.copy_(torch.rand(module.running_mean.shape, generator=generator) - 0.5)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
                if module.affine:
                    module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                    module.bias.copy_(torch.rand(module.bias.shape, generator=generator) - 0.5)
    return model.eval()


def assert_matches(model, shape, batch=3):
    """Exported with a batch of 2, the ONNX model computes PyTorch's logits on another batch size."""
    model_bytes = deploy.to_onnx(model, torch.randn(2, *shape))
    batch_axis = onnx.load_from_string(model_bytes).graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_axis.dim_param and not batch_axis.dim_value  # symbolic: any batch size
    assert deploy.max_difference(model_bytes, model, torch.randn(batch, *shape)) <= ATOL


def test_export_script_att_darts_with_every_attention(tmp_path):
    fashion = data_factory.make_fashion_mnist(str(tmp_path / 'fmnist'), n_train=32, n_test=16)
    genotype = tmp_path / 'every_attention.json'
    genotype.write_text(json.dumps(EVERY_ATTENTION))
    run('train_CIFAR10.py', *TINY_TRAIN, '--dataset', 'fashion-mnist', '--data', fashion, '--epochs', 1,
        '--arch_path', genotype, '--save', tmp_path / 'train')
    result = run('export.py', tmp_path / 'train' / 'trained.pt', '--check_batch', 5, '--timing_repeats', 3)
    assert 'ONNX Runtime matches PyTorch' in result.stdout
    assert 'ONNX Runtime latency: ' in result.stdout and 'median of 3 passes' in result.stdout
    exported = tmp_path / 'train' / 'model.onnx'
    proto = onnx.load(str(exported))
    metadata = {entry.key: entry.value for entry in proto.metadata_props}
    assert metadata['dataset'] == 'fashion-mnist' and metadata['input_shape'] == 'N,1,28,28'
    model = evaluation.load_trained(str(tmp_path / 'train' / 'trained.pt'))[0].eval()
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        expected = model(x)[0].numpy()
    output = deploy.onnx_session(exported.read_bytes()).run(None, {deploy.INPUT_NAME: x.numpy()})[0]
    assert np.abs(output - expected).max() <= ATOL


def test_cnas_network_exports():
    config = {'type': 'cifar', 'C': 8, 'num_classes': 10, 'layers': 3, 'auxiliary': True, 'in_channels': 3,
              'image_size': 8, 'pooled_head': True, 'reduce_level': 1, 'prune_none': False, 'shuffle_groups': 'auto'}
    model = randomized(evaluation.build_network(config, genotypes.resolve('DARTS_MORE_V1', None)))
    assert any(m.groups > 1 for m in model.modules() if hasattr(m, 'groups') and isinstance(m.groups, int))
    assert_matches(model, (3, 8, 8))


def test_anas_network_exports():
    config = {'type': 'resnet', 'net_type': 'resnet20', 'attention': 'anas', 'se_reduction': 1, 'num_classes': 10,
              'in_channels': 3, 'image_size': 8}
    assert_matches(randomized(evaluation.build_network(config, genotypes.ANAS)), (3, 8, 8))


def test_nb201_network_with_attention_exports():
    config = {'type': 'nb201', 'C': 4, 'layers': 1, 'num_classes': 10, 'in_channels': 3, 'image_size': 7}
    genotype = nb201.parse('|nor_conv_3x3~0|+|avg_pool_3x3~0|skip_connect~1|+|none~0|nor_conv_1x1~1|nor_conv_3x3~2|')
    genotype = genotype._replace(attentions=('SE', 'CBAM', '', '', 'BAM', 'DoubleAttention'))
    model = randomized(evaluation.build_network(config, genotype))
    assert_matches(model, (3, 7, 7))  # odd sizes: the residual reduction's rounded-up shortcut


def test_slnas_network_exports():
    arch = genotypes.seq_from_lists([[0, 1, 0, 4, 1, 3, 0, 3, 0, 3, 0, 0, 1, 1, 0, 3, 0, 3, 1, 0],
                                     [0, 3, 1, 0, 0, 4, 1, 1, 1, 1, 0, 3, 0, 2, 1, 2, 1, 1, 0, 3]], [1, 1], '--arch')
    assert_matches(randomized(slnas.Network(4, arch.blocks, 10, arch=arch)), (3, 8, 8))


def test_unexportable_module_is_one_line():
    class DataDependent(nn.Module):
        def forward(self, input):
            return input if input.sum() > 0 else -input
    with pytest.raises(UserError, match='^cannot export DataDependent to ONNX: ') as error:
        deploy.to_onnx(DataDependent(), torch.randn(2, 3))
    assert '\n' not in str(error.value)


def test_export_refuses_bad_input_in_one_line(tmp_path):
    not_trained = tmp_path / 'checkpoint.pt'
    torch.save({'epoch': 1}, not_trained)
    cases = [((not_trained,), 'is not a trained.pt of a train script'),
             ((tmp_path / 'missing.pt',), 'does not exist'),
             ((not_trained, '--out', tmp_path / 'no' / 'model.onnx'), 'its folder does not exist'),
             ((not_trained, '--atol', 0), '--atol: 0 is out of range')]
    for args, message in cases:
        result = run('export.py', *args, check=False)
        assert result.returncode == 2 and message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ['checkpoint.pt']
