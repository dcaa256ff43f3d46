"""ANAS: the attention-unit ops, the CIFAR ResNets with none / SE / searched units, the search
supernet with its one shared architecture table, AttGenotype, and search_net.py / train_net.py
end to end on a tiny Fashion-MNIST."""
import json
import signal
import time

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import genotypes
import search_net
import train_net
import visualize
from anas import AttentionSearchResNet, AttentionUnit, MixedAttentionUnit, ResNetCIFAR
from architect import Architect
from genotypes import ANAS, ATT_PRIMITIVES, AttGenotype
from operations import make_candidate
from tests import data_factory
from tests.helpers import assert_top1_in, run, start, top1_range

TINY = ['--dataset', 'fashion-mnist', '--workers', '0', '--no_progress', '--report_freq', '0']


@pytest.fixture(scope='module')
def fashion(tmp_path_factory):
    return data_factory.make_fashion_mnist(str(tmp_path_factory.mktemp('fmnist')), n_train=64, n_test=32)




def n_params(module):
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------------------------ ops, units

def test_every_unit_op_keeps_the_shape_and_the_scores_broadcast():
    x = torch.randn(2, 6, 5, 7)
    for name in ATT_PRIMITIVES:
        assert make_candidate(name, 6, 1, None, None, affine=False)(x).shape == x.shape, name
    channel = make_candidate('channel_score', 6, 1, None, None, affine=True)(x)
    spatial = make_candidate('spatial_score', 6, 1, None, None, affine=True)(x)
    assert torch.equal(channel, channel[:, :, :1, :1].expand_as(x))   # one score per channel
    assert torch.equal(spatial, spatial[:, :1].expand_as(x))          # one score per position
    # Linear(2C, C) with bias; bias-free Conv2d(2, 1, 1x1).
    assert n_params(make_candidate('channel_score', 6, 1, None, None, True)) == 2 * 6 * 6 + 6
    assert n_params(make_candidate('spatial_score', 6, 1, None, None, True)) == 2


def test_fixed_unit_masks_its_input():
    # float64: the sigmoid mask comes within 1e-5 of 1 here, where float32's out / x may round to 1.
    unit = AttentionUnit(ANAS, 8).double()
    x = torch.randn(3, 8, 6, 6, dtype=torch.float64)
    out = unit(x)
    assert out.shape == x.shape
    mask = out / x
    assert ((mask > 0) & (mask < 1)).all()
    # The shipped unit: 2 dil_conv, 1 sep_conv (2 stacked), 2 channel_score, 1 spatial_score.
    C = 8
    assert n_params(unit) == 2 * (C * C + 11 * C) + 2 * (C * C + 11 * C) + 2 * (2 * C * C + C) + 2


def test_search_unit_has_nine_mixed_edges_of_nine_ops_and_pools_without_bn():
    unit = MixedAttentionUnit(8)
    assert len(unit.edges) == 9
    for edge in unit.edges:
        assert len(edge.candidates) == 8  # 'none' is not built
        pools = [edge.candidates[edge.active.index(ATT_PRIMITIVES.index(name))]
                 for name in ('avg_pool_3x3', 'max_pool_3x3')]
        assert all(isinstance(p, (nn.AvgPool2d, nn.MaxPool2d)) for p in pools)
    x = torch.randn(2, 8, 4, 4)
    assert unit(x, F.softmax(torch.randn(9, 9), -1)).shape == x.shape


# ------------------------------------------------------------------------------------------ networks

# Oracles, from the reference structure (anas/res_att_cifar.py, se_resnet_cifar/):
#  * plain ResNet-20 with the identity (option A) shortcut has the well-known 269,722 parameters
#    (0.27M; ResNet-56: 853,018 = 0.85M); the ANAS code's option-B shortcut adds conv1x1 + BN at the
#    two stage changes: 16*32 + 2*32 + 32*64 + 2*64 = 2,752;
#  * SE with the se_resnet_cifar default reduction 1: two bias-free Linear(C, C) = 2C^2 per block;
#  * the shipped ANAS unit: dil_conv (C^2 + 11C) x2, sep_conv 2 x (C^2 + 11C), channel_score
#    (2C^2 + C) x2, spatial_score 2, i.e. 8C^2 + 46C + 2 per block.
def _expected(n, attention):
    per_block = {'none': lambda C: 0, 'se': lambda C: 2 * C * C, 'anas': lambda C: 8 * C * C + 46 * C + 2}
    option_a = {3: 269_722, 9: 853_018}[n]
    return option_a + 2_752 + n * sum(per_block[attention](C) for C in (16, 32, 64))


@pytest.mark.parametrize('net_type,n,attention,count', [
    ('resnet20', 3, 'none', 272_474), ('resnet20', 3, 'se', 304_730), ('resnet20', 3, 'anas', 416_972),
    ('resnet56', 9, 'none', 855_770), ('resnet56', 9, 'se', 952_538), ('resnet56', 9, 'anas', 1_289_264)])
def test_parameter_counts_match_the_reference(net_type, n, attention, count):
    net = ResNetCIFAR(net_type, 10, attention, ANAS)
    assert n_params(net) == count == _expected(n, attention)
    if (net_type, attention) == ('resnet20', 'none'):
        assert round(count / 1e6, 2) == 0.27


def test_resnet_shapes_depths_and_working_drop_path():
    x = torch.randn(2, 1, 28, 28)
    for net_type, blocks in (('resnet20', 9), ('resnet32', 15), ('resnet44', 21), ('resnet110', 54)):
        net = ResNetCIFAR(net_type, 7, 'none', in_channels=1)
        assert len(net.blocks) == blocks
    logits, aux = net(x)
    assert logits.shape == (2, 7) and aux is None
    net = ResNetCIFAR('resnet20', 7, 'anas', ANAS, in_channels=1)
    net.drop_path_prob = 0.5
    # The reference's drop path was inert; here two training passes differ, eval ones don't.
    assert not torch.equal(net(x)[0], net(x)[0])
    net.eval()
    assert torch.equal(net(x)[0], net(x)[0])


def test_one_alpha_table_is_shared_and_collects_the_gradient_of_every_block():
    torch.manual_seed(0)
    net = AttentionSearchResNet('resnet20', 10, in_channels=1).double()
    assert [p is net.alphas for p in net.arch_parameters()] == [True] and net.alphas.shape == (9, 9)
    assert sum(1 for name, _ in net.named_parameters() if 'alphas' in name) == 1
    assert not any(p is net.alphas for p in net.weight_parameters())
    assert len(net.weight_parameters()) + 1 == len(list(net.parameters()))
    units = [block.attention for block in net.blocks]
    assert len(units) == 9 and len({id(u) for u in units}) == 9  # own weights, shared alphas

    x, y = torch.randn(2, 1, 28, 28, dtype=torch.float64), torch.tensor([1, 2])
    F.cross_entropy(net(x), y).backward()
    total = net.alphas.grad.clone()

    # The same pass with a separate copy of the weights per block: the shared table's gradient is
    # the softmax Jacobian applied to the sum of the per-block gradients, and every block adds some.
    weights = F.softmax(net.alphas, -1)
    copies = [weights.detach().clone().requires_grad_() for _ in units]
    h = net.stem(x)
    for block, w in zip(net.blocks, copies):
        h = block(h, (w,))
    loss = F.cross_entropy(net.classifier(h.mean((2, 3))), y)
    per_block = torch.autograd.grad(loss, copies)
    assert all(g.abs().sum() > 0 for g in per_block)
    summed = torch.autograd.grad(weights, net.alphas, grad_outputs=sum(per_block), retain_graph=True)[0]
    # In float64 the two differ by the order of nine additions, ~1e-16 of the entries (~1e-2 here);
    # leaving out one block's share changes the entries by about their own size.
    torch.testing.assert_close(total, summed, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(total, torch.autograd.grad(weights, net.alphas, grad_outputs=per_block[0])[0])


def test_architect_updates_the_shared_table_first_and_second_order():
    torch.manual_seed(1)
    net = AttentionSearchResNet('resnet20', 10, in_channels=1)
    optimizer = torch.optim.SGD(net.weight_parameters(), 0.1, momentum=0.9)
    x, y = torch.randn(2, 1, 28, 28), torch.tensor([0, 3])
    for unrolled in (False, True):
        before = net.alphas.detach().clone()
        architect = Architect(net, nn.CrossEntropyLoss(), unrolled=unrolled, arch_grad_clip=5.0)
        assert torch.isfinite(architect.step(x, y, x, y, 0.1, optimizer))
        assert not torch.equal(before, net.alphas.detach())


# ------------------------------------------------------------------------------------------ genotypes

def test_genotype_is_derived_like_darts_and_round_trips_through_json(tmp_path):
    net = AttentionSearchResNet('resnet20', 10)
    op = ATT_PRIMITIVES.index
    table = torch.zeros(9, 9)
    # rows: node 0 <- (0, 1); node 1 <- (0, 1, 2); node 2 <- (0, 1, 2, 3)
    picks = {0: ('sep_conv_3x3', 3.0), 1: ('channel_score', 2.0),
             2: ('max_pool_3x3', 1.0), 3: ('skip_connect', 4.0), 4: ('spatial_score', 5.0),
             5: ('dil_conv_3x3', 6.0), 6: ('avg_pool_3x3', 0.5), 7: ('relu_conv_bn_1x1', 2.5),
             8: ('channel_score', 7.0)}
    for row, (name, value) in picks.items():
        table[row, op(name)] = value
    table[2, op('none')] = 9.0  # 'none' is never chosen, and its weight does not make an edge strong
    table[6, op('none')] = 9.0
    with torch.no_grad():
        net.alphas.copy_(table)
    genotype = net.genotype()
    assert genotype == AttGenotype(att=[('sep_conv_3x3', 0), ('channel_score', 1),
                                        ('spatial_score', 2), ('skip_connect', 1),
                                        ('channel_score', 3), ('dil_conv_3x3', 0)])
    path = tmp_path / 'genotype.json'
    genotypes.save(genotype, str(path))
    assert json.loads(path.read_text()) == {'att': [list(e) for e in genotype.att]}
    assert genotypes.load(str(path)) == genotype
    assert genotypes.load('ANAS') == genotypes.load('ATTENTION') == ANAS
    assert genotypes.from_dict(genotypes.to_dict(genotypes.DARTS)) == genotypes.DARTS  # cells unchanged


@pytest.mark.parametrize('record,message', [
    ({'att': [['conv_9x9', 0], ['skip_connect', 1]]}, "unknown op 'conv_9x9'"),
    ({'att': [['skip_connect', 0], ['skip_connect', 2]]}, 'out of range'),
    ({'att': [['skip_connect', 0]]}, 'two entries per node'),
    ({'att': 'dil_conv_3x3'}, 'list of [op, input]'),
])
def test_bad_att_genotypes_are_user_errors(record, message):
    with pytest.raises(genotypes.UserError, match=message.replace('[', r'\[').replace(']', r'\]')):
        genotypes.from_dict(record, source='g.json')


def test_visualize_draws_the_attention_unit(tmp_path, capsys):
    assert visualize.main(['ANAS', '--out', str(tmp_path), '--format', 'svg']) == 0
    source = (tmp_path / 'att_ANAS.dot').read_text()
    labelled = [line for line in source.splitlines() if '->' in line and 'label=' in line]
    assert len(labelled) == len(ANAS.att) + 1  # one per entry, plus the sigmoid
    for op, j in ANAS.att:
        assert any(line.strip().startswith(f'{"input_1" if j == 0 else "input_2" if j == 1 else j - 2} ->')
                   and f'label={op}' in line for line in labelled), (op, j)
    assert '"mixed attention" -> mask [label=sigmoid' in source
    assert sum('-> "mixed attention"' in line for line in source.splitlines()) == 3


# ------------------------------------------------------------------------------------------ scripts

def test_search_then_train_then_test_from_the_command_line(tmp_path, fashion):
    search = tmp_path / 'search'
    run('search_net.py', *TINY, '--data', fashion, '--subset', 8, '--batch_size', 4, '--epochs', 1,
        '--unrolled', '--save', search)
    genotype = genotypes.load(str(search / 'genotype.json'))
    assert isinstance(genotype, AttGenotype) and len(genotype.att) == 6
    alphas = json.loads((search / 'alphas.jsonl').read_text().splitlines()[0])
    table = alphas['weights']['alphas_att']
    assert table['candidates'] == ATT_PRIMITIVES and len(table['values']) == 9
    assert json.loads((search / 'args.json').read_text())['arch_grad_clip'] == 5.0

    train = tmp_path / 'train'
    run('train_net.py', *TINY, '--data', fashion, '--subset', 32, '--batch_size', 16, '--test_batch_size', 32,
        '--epochs', 2, '--arch_path', search / 'genotype.json', '--drop_path_prob', 0.2, '--save', train)
    trained = torch.load(train / 'trained.pt', weights_only=False)
    assert trained['genotype'] == genotypes.to_dict(genotype)
    assert trained['network']['type'] == 'resnet' and trained['network']['attention'] == 'anas'
    assert [json.loads(line)['epoch'] for line in open(train / 'metrics.jsonl')] == [0, 1]

    tested = run('test_CIFAR10.py', '--model_path', train / 'trained.pt', '--dataset', 'fashion-mnist',
                 '--data', fashion, '--workers', 0, '--no_progress')
    # Training evaluates channels-last, test_CIFAR10.py in NCHW: both against a float64 evaluation.
    bounds = top1_range(train / 'trained.pt', 'fashion-mnist', fashion)
    assert_top1_in(json.loads(tested.stdout.strip().splitlines()[-1])['top1'], bounds)
    assert_top1_in(trained['metrics']['top1'], bounds)


def test_interrupted_se_resnet_training_resumes_to_the_uninterrupted_result(tmp_path, fashion):
    args = [*TINY, '--data', fashion, '--attention', 'se', '--batch_size', 4, '--test_batch_size', 32,
            '--epochs', 2, '--seed', 3, '--checkpoint_steps', 1]
    run('train_net.py', *args, '--save', tmp_path / 'whole')
    save = tmp_path / 'part'
    proc = start('train_net.py', *args, '--save', save, capture=True)
    while proc.poll() is None and not (save / 'checkpoint.pt').exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    stopped = torch.load(save / 'checkpoint.pt', weights_only=False)
    assert (stopped['epoch'], stopped['step']) < (2, 0)  # stopped early: 16 steps per epoch
    run('train_net.py', *args, '--save', save, '--resume')
    whole = torch.load(tmp_path / 'whole' / 'checkpoint.pt', weights_only=False)['state']['model']
    part = torch.load(save / 'checkpoint.pt', weights_only=False)['state']['model']
    assert whole.keys() == part.keys() and all(torch.equal(whole[k], part[k]) for k in whole)


def test_dry_run_prints_parameters_and_flops(capsys):
    assert train_net.main(['--dry_run', '--net_type', 'resnet56', '--attention', 'se']) == 0
    assert 'params: 0.952538 M' in capsys.readouterr().out
    assert search_net.main(['--dry_run', '--dataset', 'fashion-mnist', '--data', 'nowhere']) == 0
    out = capsys.readouterr().out
    assert 'params:' in out and 'flops:' in out


def test_bad_input_gives_one_line_and_exit_2(tmp_path, capsys):
    broken = tmp_path / 'broken.json'
    broken.write_text('{"att": [["dil_conv_3x3", 1]')
    darts = tmp_path / 'darts.json'
    genotypes.save(genotypes.DARTS, str(darts))
    cases = [
        (train_net.main, ['--net_type', 'resnet18', '--dry_run'], "unknown --net_type 'resnet18'"),
        (search_net.main, ['--net_type', 'vgg', '--dry_run'], "unknown --net_type 'vgg'"),
        (train_net.main, ['--arch_path', broken, '--dry_run'], 'not valid JSON'),
        (train_net.main, ['--arch_path', darts, '--dry_run'], 'not an ANAS attention unit'),
        (train_net.main, ['--attention', 'cbam', '--dry_run'], "unknown --attention 'cbam'"),
        (train_net.main, ['--attention', 'se', '--arch', 'ANAS', '--dry_run'], 'drop them'),
    ]
    for main, argv, message in cases:
        assert main([str(a) for a in argv]) == 2, argv
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith('error:') and message in lines[0], (argv, lines)
    result = run('train_net.py', '--net_type', 'resnet18', '--dry_run', check=False)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: unknown --net_type 'resnet18'; choose from resnet20, resnet32, resnet44, resnet56, resnet110"]
