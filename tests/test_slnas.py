"""SLNAS (Yee-Master/SLNAS): the integer encoding, the lite ops, the supernet, the Stage-LSTM controller and
its baselines, and the search and retraining scripts end to end on tiny data."""
import json
import time

import numpy as np
import pytest
import torch

import genotypes
import retrain_slnas
import slnas
import train_search_slnas
from tests import data_factory
from tests.helpers import run, start
from utils import UserError

# The SLNAS README's architecture and the default of its retrainer_cifar.py.
README_ARCH = [[0, 1, 0, 4, 1, 3, 0, 3, 0, 3, 0, 0, 1, 1, 0, 3, 0, 3, 1, 0],
               [0, 3, 1, 0, 0, 4, 1, 1, 1, 1, 0, 3, 0, 2, 1, 2, 1, 1, 0, 3]]
RETRAINER_ARCH = [[0, 4, 0, 1, 0, 4, 1, 1, 0, 1, 3, 4, 1, 0, 0, 3, 1, 1, 0, 4],
                  [0, 3, 0, 0, 1, 0, 1, 0, 1, 0, 0, 0, 1, 4, 1, 0, 1, 1, 1, 4]]
TINY = ['--epochs', '1', '--batch_size', '4', '--child_out_filters', '4', '--blocks', '[1,1]', '--workers', '0',
        '--no_progress', '--report_freq', '0']




# ----------------------------------------------------------------------------- encoding

def test_seq_arch_json_round_trip(tmp_path):
    arch = genotypes.seq_from_lists(README_ARCH, [2, 2])
    genotypes.save(arch, tmp_path / 'arch.json')
    assert genotypes.load(str(tmp_path / 'arch.json')) == arch
    assert json.loads((tmp_path / 'arch.json').read_text()) == {'normal': README_ARCH[0], 'reduce': README_ARCH[1],
                                                                 'blocks': [2, 2]}


@pytest.mark.parametrize('cell, position, value, expected', [
    (0, 4, 3, 'normal[4] = 3 (node 1) must be an input 0..2'),   # node 1 reading node 1: forward
    (1, 17, 5, 'reduce[17] = 5 (node 4) must be an op id 0..4'),
    (0, 0, -1, 'normal[0] = -1 (node 0) must be an input 0..1'),
    (1, 3, True, 'reduce[3] = True'),
])
def test_seq_validation_names_the_position(cell, position, value, expected):
    cells = [list(README_ARCH[0]), list(README_ARCH[1])]
    cells[cell][position] = value
    with pytest.raises(UserError) as info:
        genotypes.seq_from_lists(cells, [2, 2])
    assert expected in str(info.value) and '\n' not in str(info.value)


def test_seq_validation_rejects_wrong_length_and_blocks():
    with pytest.raises(UserError, match='normal sequence must hold 20 ints.*got 19'):
        genotypes.seq_from_lists([README_ARCH[0][:-1], README_ARCH[1]], [2, 2])
    with pytest.raises(UserError, match='blocks'):
        genotypes.seq_from_lists(README_ARCH, [])


def test_every_valid_position_value_is_accepted():
    limits = slnas.input_limits()
    assert limits == [2, 5, 2, 5, 3, 5, 3, 5, 4, 5, 4, 5, 5, 5, 5, 5, 6, 5, 6, 5]   # the GA's bounds (nas_ga.py)
    genotypes.validate_seq_cell([limit - 1 for limit in limits], 'test', 'normal')


# ----------------------------------------------------------------------------- ops

@pytest.mark.parametrize('op_id', range(5))
@pytest.mark.parametrize('stride', [1, 2])
def test_op_shapes(op_id, stride):
    nout = 8 * stride
    op = slnas.make_op(op_id, 8, nout, stride, batch_stats=True)
    out = op(torch.randn(2, 8, 12, 12))
    # conv1x1_bn keeps the resolution even in reduction blocks (the block resizes its output).
    size = 12 if stride == 1 or op_id == 4 else 6
    assert out.shape == (2, nout, size, size)


def test_blurpool_is_a_normalised_low_pass_filter():
    blur = slnas.BlurPool(3)
    constant = torch.full((1, 3, 8, 8), 2.5)
    assert torch.allclose(blur(constant), torch.full((1, 3, 4, 4), 2.5))
    checkerboard = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2
    assert blur(checkerboard.float().expand(1, 3, 8, 8)).std() < 0.2   # aliasing removed


def test_shuffle_unit_stride1_passes_half_the_channels_through():
    unit = slnas.ShuffleUnit(8, 8, 3, 1, batch_stats=True)
    x = torch.randn(2, 8, 6, 6)
    out = unit(x)
    # After the shuffle the untouched half sits on the even channels.
    assert torch.equal(out[:, 0::2], x[:, :4])


# ----------------------------------------------------------------------------- supernet

def test_supernet_runs_sampled_archs_and_trains_only_the_chosen_path():
    rng = np.random.default_rng(0)
    net = slnas.Network(4, [1, 1], 5)
    x, y = torch.randn(3, 3, 16, 16), torch.tensor([0, 1, 2])
    for _ in range(4):
        arch = slnas.random_arch(rng, [1, 1])
        logits, aux = net(x, arch)
        assert logits.shape == (3, 5) and [a.shape for a in aux] == [(3, 5)]
    net.zero_grad()
    logits, aux = net(x, arch)
    torch.nn.functional.cross_entropy(logits, y).backward()
    node = net.cells[0].nodes[0]
    chosen = arch.normal[1]
    assert all(p.grad is not None for p in node.x_ops[str(chosen)].parameters())
    others = [o for o in range(5) if o != chosen]
    assert all(p.grad is None for o in others for p in node.x_ops[str(o)].parameters())


def test_child_inherits_the_supernet_weights_of_its_ops():
    arch = genotypes.seq_from_lists(README_ARCH, [1, 1])
    supernet = slnas.Network(4, [1, 1], 5)
    child = slnas.inherit(slnas.Network(4, [1, 1], 5, arch=arch), supernet)
    supernet_params = dict(supernet.named_parameters())
    for name, param in child.named_parameters():
        assert torch.equal(param, supernet_params[name]), name
    assert sum(p.numel() for p in child.parameters()) < sum(p.numel() for p in supernet.parameters())
    supernet.eval(), child.eval()
    assert child(torch.randn(2, 3, 16, 16))[0].shape == (2, 5)


def closed_form_parameters(arch, c, blocks, classes):
    """Parameter count of an SLNAS network written out from the reference's model_arc/ (no auxiliary heads)."""
    def bn(n):
        return 2 * n

    def op(op_id, nin, nout, stride):
        if op_id >= 2:
            return nin * nout + bn(nout)
        k, h = (3 if op_id == 0 else 5), nout // 2
        if stride == 1:
            return h * h + bn(h) + h * k * k + bn(h) + h * h + bn(h)
        branch1 = nin * k * k + bn(nin) + nin * h + bn(h)
        branch2 = nin * h + bn(h) + h * k * k + bn(h) + h * h + bn(h)
        return branch1 + branch2

    def block(nin, nout, reduction):
        seq, stride = (arch[1], 2) if reduction else (arch[0], 1)
        total = sum(op(seq[4 * n + 1], nin, nout, stride) + op(seq[4 * n + 3], nin, nout, stride) for n in range(5))
        fused = 5 * nin
        total += bn(fused) + 2 * fused * (fused // 16) + fused * nout        # BN, SE (no bias), 1x1
        return total + (nout * nin + nin * nout if reduction else 0)         # calibrate + skip projection

    total = 3 * c * 9 + bn(c) + 3 * c * 25 + bn(c)                           # the two stems
    width = c
    for repeat in blocks:
        total += repeat * block(width, width, False) + block(width, 2 * width, True)
        width *= 2
    return total + width * classes


@pytest.mark.parametrize('arch', [README_ARCH, RETRAINER_ARCH])
def test_parameter_count_matches_the_spec_structure(arch):
    """The oracle is the reference's structure (model_arc/) counted by hand (it gives no exact count);
    the reference's retrainer setting is 32 filters, [4, 4], 10 classes."""
    seq = genotypes.seq_from_lists(arch, [4, 4])
    net = slnas.Network(32, [4, 4], 10, arch=seq)
    counted = sum(p.numel() for name, p in net.named_parameters() if 'auxiliary' not in name)
    assert counted == closed_form_parameters(arch, 32, [4, 4], 10)


def test_controller_parameter_counts_match_the_reference():
    """Counted on the reference's controller: LSTM_index 658,944 and LSTM_operation 1,056,773 parameters."""
    controller = slnas.StageController()
    assert sum(p.numel() for p in controller.index_lstm.parameters()) == 658_944
    assert sum(p.numel() for p in controller.op_lstm.parameters()) == 1_056_773


# ----------------------------------------------------------------------------- controller and baselines

def test_controller_samples_valid_archs_and_scores_them_consistently():
    torch.manual_seed(0)
    controller = slnas.StageController()
    for _ in range(5):
        arch, log_prob, entropy = controller([2, 2])
        genotypes.seq_from_lists([arch.normal, arch.reduce], arch.blocks)
        _, rescored, _ = controller([2, 2], given=arch)
        # Scoring repeats the sampling pass with the drawn indices given: the same computation.
        assert torch.equal(log_prob, rescored) and entropy > 0


@pytest.mark.parametrize('reward, direction', [(50.0, 1), (-50.0, -1)])
def test_reinforce_step_moves_log_prob_with_the_advantage(reward, direction):
    torch.manual_seed(0)
    sampler = slnas.LSTMSampler([1, 1], lr=0.01)
    sampler.baseline = 0.0
    arch, log_prob, _ = sampler.controller([1, 1])
    sampler.update(log_prob, reward)
    with torch.no_grad():
        after = sampler.controller([1, 1], given=arch)[1]
    assert direction * (after - log_prob.detach()) > 0
    assert sampler.baseline == pytest.approx(0.05 * reward)   # b <- b - (1 - 0.95)(b - R)


def test_lookahead_pulls_weights_back_every_k_steps():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = slnas.Lookahead(torch.optim.SGD([param], lr=1.0), k=2, alpha=0.5)
    for _ in range(2):
        param.grad = torch.ones(1)
        optimizer.step()
    assert param.item() == pytest.approx(-1.0)   # fast weights reached -2; halfway back from 0


def test_ga_children_are_valid_and_follow_the_masks():
    ga = slnas.GASampler([1, 1], seed=0, population=6, cross_rate=1.0, mutation_rate=0.0)
    ga.fitness = [0, 0, 0, 0, 0, 90.0]   # only the fittest can be selected
    fittest = ga.population[5]
    ga.breed()
    # The selected half are copies of the fittest (every gene from the first parent, no mutation).
    assert ga.population[:3] == [fittest] * 3 and len(ga.population) == 6
    mutant = slnas.GASampler([1, 1], seed=1, population=4, mutation_rate=1.0)
    children = [mutant.child(mutant.population[0], mutant.population[1]) for _ in range(20)]
    for arch in children + mutant.population:
        genotypes.seq_from_lists([arch.normal, arch.reduce], arch.blocks)
    assert len({tuple(a.normal) for a in children}) > 1


def test_ga_search_keeps_its_best_as_candidates():
    ga = slnas.GASampler([1, 1], seed=0, population=4)
    seen = []
    ga.search(lambda arch: float(sum(arch.normal)), 3, lambda arch, value, phase: seen.append(value))
    assert len(seen) == 12
    best = ga.candidates(1)[0]
    assert sum(best.normal) == max(ga.fitness)


# ----------------------------------------------------------------------------- scripts

@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    return data_factory.make_image_folder(str(tmp_path_factory.mktemp('slnas_folder')), classes=3, per_class=8,
                                          corrupt=True)


@pytest.fixture(scope='module')
def cifar(tmp_path_factory):
    return data_factory.make_cifar10(str(tmp_path_factory.mktemp('slnas_cifar')), n_train=40, n_test=10)


FOLDER_SEARCH = [*TINY, '--epochs', '2', '--dataset', 'imagefolder', '--controller_steps', '2', '--candidates', '2',
                 '--candidate_batches', '1']


@pytest.fixture(scope='module')
def folder_search(tmp_path_factory, folder):
    """An uninterrupted two-epoch Stage-LSTM search on the image folder: (run directory, output)."""
    save = tmp_path_factory.mktemp('slnas_search') / 'run'
    return save, run('train_search_slnas.py', *FOLDER_SEARCH, '--data', folder, '--save', save)


def test_search_then_retrain_on_an_image_folder(tmp_path, folder, folder_search):
    save, search = folder_search
    assert 'corrupt.png' in search.stdout + search.stderr   # reported and skipped
    records = [json.loads(line) for line in open(save / 'archs.jsonl')]
    assert [r['phase'] for r in records] == (['controller'] * 2 + ['candidate'] * 2) * 2
    best = genotypes.load(str(save / 'best_arch.json'))
    assert genotypes.seq_to_dict(best) == max(records[-2:], key=lambda r: r['reward'])['arch']
    run('retrain_slnas.py', *TINY, '--dataset', 'imagefolder', '--data', folder, '--amp',
        '--arch_path', save / 'best_arch.json', '--save', tmp_path / 'retrain')
    trained = torch.load(tmp_path / 'retrain' / 'trained.pt', weights_only=False)
    assert trained['network']['classes'] == 3 and trained['network']['arch'] == genotypes.seq_to_dict(best)
    drawn = run('visualize.py', save / 'best_arch.json', '--out', tmp_path / 'draw')
    assert (tmp_path / 'draw' / 'normal_best_arch.dot').exists(), drawn.stdout


def test_killed_search_resumes_exactly(tmp_path, folder, folder_search):
    reference, _ = folder_search
    save = tmp_path / 'run'
    proc = start('train_search_slnas.py', *FOLDER_SEARCH, '--data', folder, '--save', save)
    while proc.poll() is None and not (save / 'metrics.jsonl').exists():
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    run('train_search_slnas.py', *FOLDER_SEARCH, '--data', folder, '--save', save, '--resume')
    for name in ('archs.jsonl', 'best_arch.json'):
        assert (save / name).read_text() == (reference / name).read_text(), name
    resumed, uninterrupted = (torch.load(d / 'checkpoint.pt', weights_only=False)['state'] for d in (save, reference))
    for part in ('model', 'sampler'):
        flat = resumed[part] if part == 'model' else resumed[part]['controller']
        other = uninterrupted[part] if part == 'model' else uninterrupted[part]['controller']
        assert all(torch.equal(flat[k], other[k]) for k in flat), part


@pytest.mark.parametrize('controller', ['ga', 'random'])
def test_baseline_search_on_cifar(tmp_path, cifar, controller):
    run('train_search_slnas.py', *TINY, '--dataset', 'cifar10', '--data', cifar, '--controller', controller,
        '--population', '3', '--generations', '2', '--controller_steps', '2', '--candidates', '2',
        '--candidate_batches', '1', '--save', tmp_path / 'search')
    records = [json.loads(line) for line in open(tmp_path / 'search' / 'archs.jsonl')]
    scored = 6 if controller == 'ga' else 2
    assert [r['phase'] for r in records] == [controller] * scored + ['candidate'] * 2
    assert all(0 <= r['reward'] <= 100 for r in records)
    genotypes.load(str(tmp_path / 'search' / 'best_arch.json'))


@pytest.mark.parametrize('args, message', [
    (['--arch', '[[0,1],[0,1]]'], 'must hold 20 ints'),
    (['--arch', json.dumps([README_ARCH[0], README_ARCH[1][:-1] + [7]])], 'reduce[19] = 7'),
    (['--blocks', '[2,'], 'is not JSON'),
    (['--child_out_filters', '5'], 'must be even'),
])
def test_retrain_reports_bad_input_in_one_line(capsys, args, message):
    assert retrain_slnas.main(['--dry_run', *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith('error: ') and err.count('\n') == 1


def test_search_refuses_a_batch_larger_than_the_split(tmp_path, capsys, cifar):
    assert train_search_slnas.main([*TINY, '--data', cifar, '--batch_size', '64', '--save', str(tmp_path / 'r')]) == 2
    assert 'lower --batch_size' in capsys.readouterr().err


def test_search_dry_run_describes_the_supernet(capsys):
    # The supernet's BatchNorms use batch statistics even in eval mode, so one image cannot be
    # counted; the description runs two and reports per image.
    assert train_search_slnas.main(['--dry_run', '--data', 'absent', '--child_out_filters', '8', '--blocks', '[1,1]']) == 0
    out = capsys.readouterr().out
    assert 'params:' in out and 'MFLOPs per image' in out


def test_flops_per_image_do_not_depend_on_the_counting_batch():
    import complexity
    torch.manual_seed(0)
    net = slnas.Network(8, [1, 1], 10, arch=genotypes.seq_from_lists(README_ARCH, [1, 1], 'arch'))
    assert complexity.count_flops(net, (3, 32, 32), batch=2) == complexity.count_flops(net, (3, 32, 32)) > 0
