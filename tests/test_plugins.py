"""--plugins: a user's attention in a file outside the repository is searched, derived, trained and
drawn from the command line, and a --resume after it was added is refused in one line."""
import json
import sys

import pytest

from cli import import_plugin, load_plugins
from tests import data_factory
from tests.helpers import run
from utils import UserError

PLUGIN = '''"""A user's attention, outside the repository."""
import torch
import torch.nn as nn

from registry import ATTENTIONS


@ATTENTIONS.register('PlugGate')
class PlugGate(nn.Module):
    def __init__(self, C, height=None, width=None):
        super().__init__()
        self.logit = nn.Parameter(torch.zeros(1, C, 1, 1))

    def forward(self, x):
        return 2 * x * torch.sigmoid(self.logit)
'''
TINY_SEARCH = ['--dataset', 'fashion-mnist', '--init_channels', '4', '--layers', '3', '--batch_size', '8',
               '--workers', '0', '--no_progress', '--num_meta_node', '2', '--report_freq', '0', '--epochs', '1']
TINY_TRAIN = ['--dataset', 'fashion-mnist', '--init_channels', '4', '--layers', '3', '--batch_size', '16',
              '--test_batch_size', '16', '--workers', '0', '--no_progress', '--report_freq', '0', '--epochs', '1']


@pytest.fixture(scope='module')
def fashion(tmp_path_factory):
    return data_factory.make_fashion_mnist(str(tmp_path_factory.mktemp('fmnist')), n_train=32, n_test=16)


@pytest.fixture(scope='module')
def plugin(tmp_path_factory):
    path = tmp_path_factory.mktemp('elsewhere') / 'plug_gate.py'
    path.write_text(PLUGIN)
    return str(path)


def test_a_plugin_attention_is_searched_derived_trained_and_drawn(tmp_path, fashion, plugin):
    search = tmp_path / 'search'
    run('train_search.py', *TINY_SEARCH, '--data', fashion, '--save', search, '--plugins', plugin)
    alphas = [json.loads(line) for line in open(search / 'alphas.jsonl')]
    assert alphas[-1]['weights']['betas_normal']['candidates'][-1] == 'PlugGate'
    # The derived cell, with the plug-in attention on its first edge as a user may choose it.
    derived = json.load(open(search / 'genotype.json'))
    derived['normal'][0][2] = 'PlugGate'
    arch = tmp_path / 'plug.json'
    arch.write_text(json.dumps(derived))
    refused = run('train_CIFAR10.py', *TINY_TRAIN, '--data', fashion, '--arch_path', arch, '--save',
                  tmp_path / 'refused', check=False)
    assert refused.returncode == 2 and 'PlugGate' in refused.stderr and len(refused.stderr.splitlines()) == 1
    run('train_CIFAR10.py', *TINY_TRAIN, '--data', fashion, '--arch_path', arch, '--save', tmp_path / 'train',
        '--plugins', plugin)
    assert json.loads(open(tmp_path / 'train' / 'metrics.jsonl').readline())['epoch'] == 0
    run('visualize.py', arch, '--out', tmp_path / 'drawn', '--plugins', plugin)
    assert 'PlugGate' in (tmp_path / 'drawn' / 'normal_plug.dot').read_text()


def test_a_resume_after_a_plugin_was_added_is_refused_in_one_line(tmp_path, fashion, plugin):
    save = tmp_path / 'search'
    run('train_search.py', *TINY_SEARCH, '--data', fashion, '--save', save)
    checkpoint = (save / 'checkpoint.pt').read_bytes()
    result = run('train_search.py', *TINY_SEARCH[:-1], '2', '--data', fashion, '--save', save, '--resume',
                 '--plugins', plugin, check=False)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert 'candidates.second (added PlugGate)' in result.stderr
    assert (save / 'checkpoint.pt').read_bytes() == checkpoint


def test_a_missing_plugin_is_one_line(tmp_path):
    result = run('train_search.py', '--plugins', tmp_path / 'absent.py', '--dry_run', check=False)
    assert result.returncode == 2 and result.stderr.startswith('error: --plugins') and 'no such file' in result.stderr
    result = run('visualize.py', 'DARTS', '--plugins', 'no_such_plugin_module', check=False)
    assert result.returncode == 2 and "no module named 'no_such_plugin_module'" in result.stderr


def test_a_plugin_file_is_imported_once_under_its_name(tmp_path):
    path = tmp_path / 'counted_plugin.py'
    path.write_text('import builtins\nbuiltins.counted_plugin_imports = getattr(builtins, "counted_plugin_imports", 0) + 1\n')
    import builtins
    try:
        load_plugins(['--epochs', '1', '--plugins', str(path), '--seed', '2'])
        module = import_plugin(str(path))
        assert module.__name__ == 'counted_plugin' and builtins.counted_plugin_imports == 1
        other = tmp_path / 'other'
        other.mkdir()
        (other / 'counted_plugin.py').write_text('')
        with pytest.raises(UserError, match='already loaded from elsewhere'):
            import_plugin(str(other / 'counted_plugin.py'))
    finally:
        del builtins.counted_plugin_imports
        sys.modules.pop('counted_plugin', None)
