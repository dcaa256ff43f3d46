"""latency.py and measure_latency.py: the candidates of a space against the modules its supernet
runs, the expected latency against a recomputation over the supernet's modules (and its gradient
against finite differences), the table's round trip and its one-line refusals."""
import json
import random

import pytest
import torch

import genotypes
import latency
import nb201
import report
import search_space
from anas import AttentionSearchResNet
from model_search import SearchNetwork
from nb201_search import NB201SearchNetwork
from tests.helpers import run
from utils import UserError

TINY_SPACE = dict(init_channels=4, layers=3, num_meta_node=2, image_size=8)
LOCATIONS = ('after_every', 'end', 'after_every_and_end', 'mixed_with_operation', 'double_mixed', 'no_attention')


def darts_settings(location='after_every', primitives='darts', **changes):
    return latency.darts_settings(location, primitives, **{**TINY_SPACE, **changes})


def supernet(settings, seed=0):
    torch.manual_seed(seed)
    model = SearchNetwork(settings['init_channels'], 10, settings['layers'], location=settings['location'],
                          primitives=settings['primitives'], steps=settings['num_meta_node'],
                          image_size=settings['image_size'], reduce_level=settings['reduce_level'])
    with torch.no_grad():
        for alpha in model.arch_parameters():
            alpha.normal_()  # far from uniform, so that every weight matters
    return model.eval()


def synthetic_table(settings, seed=0):
    """A table of the space with a distinct random latency per candidate."""
    rng = random.Random(seed)
    return {'format': latency.TABLE_FORMAT, 'version': latency.TABLE_VERSION, 'settings': settings,
            'latency_ms': {latency.key(c): rng.uniform(0.1, 2.0) for c in latency.candidates(latency.layout(settings))}}


def called_candidates(model, x, genotype=None):
    """[(weight table, row or None, candidate index, Candidate)] of every candidate module the DARTS
    supernet computes in a forward of x (the mixture, or the path of `genotype`), from the
    modules themselves: their edge's names and stride, the input shape they are called with."""
    calls, hooks = [], []

    def watch(module, table, row, k, name, stride):
        def hook(_, inputs):
            _, C, H, W = inputs[0].shape
            calls.append((table, row, k, latency.Candidate(name, C, H, W, stride)))
        hooks.append(module.register_forward_pre_hook(hook))
    for cell in (model.search_cells() if hasattr(model, 'search_cells') else model.cells):
        cell_type = 'reduce' if cell.reduction else 'normal'
        layers = [('alphas', 'first', cell.first, cell.strides), ('betas', 'second', cell.second, None)]
        for prefix, layer, edges, strides in layers:
            for row, edge in enumerate(edges or []):
                for k in edge.active:
                    watch(edge.candidate(k), f'{prefix}_{cell_type}', row, k, model.lists[layer][k],
                          strides[row] if strides else 1)
        if cell.bottleneck is not None:
            for k in cell.bottleneck.active:
                watch(cell.bottleneck.candidate(k), f'gammas_{cell_type}', None, k, model.lists['bottleneck'][k], 1)
    with torch.no_grad():
        model(x, genotype) if genotype is not None else model(x)
    for hook in hooks:
        hook.remove()
    return calls


@pytest.mark.parametrize('location', LOCATIONS)
def test_layout_is_what_the_supernet_runs_and_expected_latency_is_recomputed(location):
    settings = darts_settings(location, layers=4)
    model = supernet(settings)
    calls = called_candidates(model, torch.randn(2, 3, 8, 8))
    assert {c for *_, c in calls} == set(latency.candidates(latency.layout(settings)))
    table = synthetic_table(settings)
    weights = {name: w.detach().double() for name, w in latency.architecture_weights(model).items()}
    recomputed = sum(float((weights[t][row, k] if row is not None else weights[t][k]))
                     * table['latency_ms'][latency.key(c)] for t, row, k, c in calls)
    expected = latency.Objective(table, settings, 1.0, 1.0).expected(model)
    assert float(expected.detach()) == pytest.approx(recomputed, rel=1e-12)


def nb201_supernet(settings, seed=0):
    torch.manual_seed(seed)
    model = NB201SearchNetwork(settings['init_channels'], 10, settings['layers'], location=settings['location'],
                               image_size=settings['image_size'])
    with torch.no_grad():
        for alpha in model.arch_parameters():
            alpha.normal_()
    return model.eval()


@pytest.mark.parametrize('location', ('no_attention', 'after_every'))
def test_nb201_layout_is_what_the_supernet_runs_and_latencies_are_recomputed(location):
    """Odd sizes (7, then 4, then 2) and two cells per stage; the derived cell's latency is the sum
    over the modules its path runs, 'none' edges (and their attentions) costing nothing."""
    settings = latency.nb201_settings(location, init_channels=4, layers=2, image_size=7)
    model = nb201_supernet(settings)
    x = torch.randn(2, 3, 7, 7)
    calls = called_candidates(model, x)
    assert {c for *_, c in calls} == set(latency.candidates(latency.layout(settings)))
    assert {c.H for *_, c in calls} == {7, 4, 2}
    table = synthetic_table(settings)
    objective = latency.Objective(table, settings, 1.0, 1.0)
    weights = {name: w.detach().double() for name, w in latency.architecture_weights(model).items()}
    assert float(objective.expected(model).detach()) == pytest.approx(
        sum(float(weights[t][row, k]) * table['latency_ms'][latency.key(c)] for t, row, k, c in calls), rel=1e-12)
    rng = random.Random(1)
    for _ in range(5):
        genotype = model.sample_architecture(rng)._replace(ops=('none', *model.sample_architecture(rng).ops[1:]))
        path = called_candidates(model, x, genotype)
        assert objective.of_genotype(genotype) == pytest.approx(
            sum(table['latency_ms'][latency.key(c)] for *_, c in path), rel=1e-12)


def test_anas_layout_is_what_the_supernet_runs():
    settings = latency.anas_settings('resnet20', 8)
    model = AttentionSearchResNet('resnet20').eval()
    seen = set()
    hooks = [op.register_forward_pre_hook(lambda m, inputs, name=name: seen.add(latency.Candidate(
        name, *inputs[0].shape[1:], 1)))
        for unit in (b.attention for b in model.blocks) for edge in unit.edges
        for name, op in ((genotypes.ATT_PRIMITIVES[k], edge.candidate(k)) for k in edge.active)]
    with torch.no_grad():
        model(torch.randn(2, 3, 8, 8))
    for hook in hooks:
        hook.remove()
    assert seen == set(latency.candidates(latency.layout(settings)))
    costs = latency.costs(synthetic_table(settings), settings)
    assert costs['alphas_att'].shape == model.alphas.shape


@pytest.mark.parametrize('location', ('after_every_and_end', 'double_mixed'))
def test_derived_cell_latency_is_the_sum_over_its_path(location):
    settings = darts_settings(location, layers=4)
    model = supernet(settings, seed=1)
    genotype = search_space.sample_genotype(random.Random(3), model.lists, settings['num_meta_node'])
    table = synthetic_table(settings, seed=2)
    path = called_candidates(model, torch.randn(2, 3, 8, 8), genotype)
    objective = latency.Objective(table, settings, 1.0, 1.0)
    assert objective.of_genotype(genotype) == pytest.approx(
        sum(table['latency_ms'][latency.key(c)] for *_, c in path), rel=1e-12)


def test_expected_latency_gradient_matches_finite_differences():
    settings = darts_settings('after_every_and_end')
    model = supernet(settings)
    objective = latency.Objective(synthetic_table(settings), settings, 0.5, 3.0)
    names = list(model.arch.keys())

    def loss(*alphas):
        weights = {name: torch.softmax(a, dim=-1) for name, a in zip(names, alphas)}
        return 0.5 * (latency.expected_latency(weights, objective.costs) - 3.0) / 3.0
    alphas = [p.detach().double().requires_grad_() for p in model.arch_parameters()]
    assert torch.autograd.gradcheck(loss, alphas)
    model.arch_parameters()[0].grad = None
    objective.loss(model).backward()
    for p, expected in zip(model.arch_parameters(), torch.autograd.grad(loss(*alphas), alphas)):
        assert torch.allclose(p.grad.double(), expected, atol=1e-6)


def test_measured_table_round_trips(tmp_path):
    settings = darts_settings('end', layers=2)
    table = latency.measure_table(settings, warmup=0, repeats=2)
    assert set(table['latency_ms']) == {latency.key(c) for c in latency.candidates(latency.layout(settings))}
    assert all(value > 0 for value in table['latency_ms'].values())
    assert table['measurement']['threads'] == 1 and table['versions']['torch'] == torch.__version__
    path = tmp_path / 'table.json'
    latency.save_table(table, path)
    loaded = latency.load_table(str(path))
    assert loaded == table
    latency.check_table(loaded, settings)


def test_measure_latency_script_writes_a_table_a_search_can_check(tmp_path):
    out = tmp_path / 'anas.json'
    result = run('measure_latency.py', '--space', 'anas', '--dataset', 'fashion-mnist', '--image_size', 8,
                 '--warmup', 0, '--repeats', 1, '--no_progress', '--out', out)
    assert 'expected latency under uniform weights' in result.stdout
    table = latency.load_table(str(out))
    latency.check_table(table, latency.anas_settings('resnet20', 8))
    assert table['command'].endswith(str(out))


@pytest.mark.parametrize('change, message', [
    (dict(location='end'), 'was measured for location after_every, this search has end (--location)'),
    (dict(init_channels=8), 'was measured for init_channels 4, this search has 8 (--init_channels)'),
    (dict(reduce_level=1), 'was measured for reduce_level 0, this search has 1 (--reduce_level)'),
    (dict(image_size=16), 'was measured for image_size 8, this search has 16'),
    (dict(primitives='cnas'), 'was measured for primitives none max_pool_3x3'),
])
def test_table_of_another_space_is_one_line(change, message):
    table = synthetic_table(darts_settings())
    with pytest.raises(UserError) as error:
        latency.check_table(table, darts_settings(**change))
    assert message in str(error.value) and '\n' not in str(error.value)


def test_bad_table_files_are_one_line(tmp_path):
    settings = darts_settings()
    table = synthetic_table(settings)
    missing = dict(table, latency_ms=dict(list(table['latency_ms'].items())[1:]))
    with pytest.raises(UserError, match='has no latency for .* more candidates of this search'):
        latency.check_table(missing, settings)
    cases = {'not-json.json': ('{', 'is not JSON'),
             'other.json': (json.dumps({'epoch': 1}), 'is not a latency table'),
             'version.json': (json.dumps(dict(table, version=0)), 'has version 0'),
             'negative.json': (json.dumps(dict(table, latency_ms={'x': -1})), 'not a finite number >= 0')}
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(UserError, match=message) as error:
            latency.load_table(str(tmp_path / name))
        assert '\n' not in str(error.value)
    with pytest.raises(UserError, match='does not exist'):
        latency.load_table(str(tmp_path / 'absent.json'))


@pytest.mark.parametrize('unrolled', (False, True))
def test_architect_adds_the_latency_term_to_the_architecture_gradient(unrolled):
    """With SGD at rate 1 as the architecture optimizer, a step moves the weights by their gradient:
    first order, that of CE + the latency term by autograd; second order, the step without the
    term plus the term's gradient (it depends on the architecture weights alone)."""
    import copy

    from architect import Architect
    settings = darts_settings('after_every')
    model = supernet(settings).double().train()
    objective = latency.Objective(synthetic_table(settings), settings, 0.7, 2.0)
    x, y = torch.randn(4, 3, 8, 8, dtype=torch.float64), torch.randint(0, 10, (4,))
    criterion = torch.nn.CrossEntropyLoss()

    def step(net, regularized):
        architect = Architect(net, criterion, unrolled=unrolled,
                              regularizer=(lambda: objective.loss(net)) if regularized else None)
        architect.optimizer = torch.optim.SGD(net.arch_parameters(), lr=1.0)
        weights = torch.optim.SGD(net.weight_parameters(), lr=0.01, momentum=0.9)
        before = [p.detach().clone() for p in net.arch_parameters()]
        architect.step(x, y, x, y, 0.01, weights)
        return [b - p.detach() for b, p in zip(before, net.arch_parameters())]
    term = torch.autograd.grad(objective.loss(model), model.arch_parameters())
    with_term = step(copy.deepcopy(model), True)
    if unrolled:
        expected = [d + t for d, t in zip(step(copy.deepcopy(model), False), term)]
    else:
        expected = torch.autograd.grad(criterion(model(x), y) + objective.loss(model), model.arch_parameters())
    for got, want in zip(with_term, expected):
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------------- the searches

TINY_SEARCH = ['--dataset', 'fashion-mnist', '--init_channels', '4', '--layers', '3', '--batch_size', '8',
               '--workers', '0', '--no_progress', '--num_meta_node', '2', '--report_freq', '0', '--subset', '64',
               '--epochs', '2', '--arch_learning_rate', '0.01']
FASHION_SPACE = dict(init_channels=4, layers=3, num_meta_node=2, image_size=28)


@pytest.fixture(scope='module')
def fashion(tmp_path_factory):
    from tests import data_factory
    return data_factory.make_fashion_mnist(str(tmp_path_factory.mktemp('fmnist')), n_train=64, n_test=16)


def write_table(path, settings, seed=0):
    path.write_text(json.dumps(synthetic_table(settings, seed)))
    return path


def metrics(save):
    return [json.loads(line) for line in (save / 'metrics.jsonl').read_text().splitlines()]


def test_latency_weight_lowers_the_derived_cell_latency(tmp_path, fashion):
    settings = latency.darts_settings('after_every', 'darts', **FASHION_SPACE)
    table = write_table(tmp_path / 'table.json', settings)
    flags = [*TINY_SEARCH, '--data', fashion, '--latency_table', table, '--latency_target', 1.0]
    run('train_search.py', *TINY_SEARCH, '--data', fashion, '--save', tmp_path / 'plain')
    run('train_search.py', *flags, '--latency_weight', 0, '--save', tmp_path / 'logged')
    run('train_search.py', *flags, '--latency_weight', 50, '--save', tmp_path / 'weighted')
    plain, logged, weighted = (metrics(tmp_path / name) for name in ('plain', 'logged', 'weighted'))
    # Weight 0 only logs: the search is the one without a table.
    assert [m['genotype'] for m in logged] == [m['genotype'] for m in plain]
    assert 'expected_latency_ms' not in plain[-1]
    assert weighted[-1]['derived_latency_ms'] < logged[-1]['derived_latency_ms']
    assert weighted[-1]['expected_latency_ms'] < logged[-1]['expected_latency_ms']
    page = report.write_report(str(tmp_path / 'weighted'))
    assert (tmp_path / 'weighted' / 'report' / 'latency.png').stat().st_size > 0
    assert 'src="latency.png"' in open(page).read()
    # The logged latencies are those of the logged architecture weights and genotype.
    objective = latency.Objective(latency.load_table(str(table)), settings, 0.0, 1.0)
    for save, records in (('logged', logged), ('weighted', weighted)):
        for record, alphas in zip(records, metrics_of(tmp_path / save / 'alphas.jsonl')):
            weights = {name: torch.tensor(t['values'], dtype=torch.float64) for name, t in alphas['weights'].items()}
            assert record['expected_latency_ms'] == pytest.approx(float(
                latency.expected_latency(weights, objective.costs)), rel=1e-9)
            assert record['derived_latency_ms'] == pytest.approx(
                objective.of_genotype(genotypes.from_dict(record['genotype'])), rel=1e-12)


def test_nb201_search_with_a_measured_table(tmp_path, fashion):
    """measure_latency.py --space nb201 writes the table train_search.py --space nb201 checks; a
    large weight lowers the derived cell's table latency, and the logged latencies (DARTS's and
    GDAS's) are the table's."""
    space = ['--init_channels', 4, '--layers', 1, '--location', 'after_every']
    table = tmp_path / 'nb201.json'
    run('measure_latency.py', '--space', 'nb201', *space, '--dataset', 'fashion-mnist', '--warmup', 0, '--repeats', 1,
        '--no_progress', '--out', table)
    settings = latency.nb201_settings('after_every', 4, 1, 28)
    latency.check_table(latency.load_table(str(table)), settings)
    write_table(table, settings)  # distinct latencies, whatever this machine measured
    search = ['--space', 'nb201', *space, '--dataset', 'fashion-mnist', '--data', fashion, '--batch_size', 8,
              '--workers', 0, '--no_progress', '--report_freq', 0, '--subset', 64, '--epochs', 2,
              '--arch_learning_rate', 0.05, '--latency_table', table, '--latency_target', 1.0]
    run('train_search.py', *search, '--latency_weight', 0, '--save', tmp_path / 'logged')
    run('train_search.py', *search, '--latency_weight', 50, '--save', tmp_path / 'weighted')
    run('train_search.py', *search, '--latency_weight', 50, '--strategy', 'gdas', '--save', tmp_path / 'gdas')
    logged, weighted = metrics(tmp_path / 'logged'), metrics(tmp_path / 'weighted')
    assert weighted[-1]['derived_latency_ms'] < logged[-1]['derived_latency_ms']
    objective = latency.Objective(latency.load_table(str(table)), settings, 0.0, 1.0)
    for record in logged + weighted + metrics(tmp_path / 'gdas'):
        genotype = nb201.from_dict(record['genotype'], attentions=search_space.derivable(
            search_space.candidate_lists('after_every', nb201.OPS)['second']))
        assert record['derived_latency_ms'] == pytest.approx(objective.of_genotype(genotype), rel=1e-12)
    darts_table = write_table(tmp_path / 'darts.json', latency.darts_settings('after_every', 'darts', **FASHION_SPACE))
    result = run('train_search.py', *search, '--latency_table', darts_table, '--save', tmp_path / 'refused',
                 check=False)
    assert result.returncode == 2 and 'was measured for space darts, this search has nb201' in result.stderr
    result = run('measure_latency.py', '--space', 'nb201', '--num_meta_node', 3, '--out', tmp_path / 'x.json',
                 check=False)
    assert result.returncode == 2 and '--num_meta_node belongs to the DARTS space' in result.stderr
    assert not (tmp_path / 'refused').exists() and not (tmp_path / 'x.json').exists()


def metrics_of(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_anas_search_logs_latencies(tmp_path, fashion):
    table = write_table(tmp_path / 'anas.json', latency.anas_settings('resnet20', 28))
    run('search_net.py', '--dataset', 'fashion-mnist', '--workers', '0', '--no_progress', '--report_freq', '0',
        '--data', fashion, '--subset', 8, '--batch_size', 4, '--epochs', 1, '--latency_table', table,
        '--latency_weight', 1, '--latency_target', 5, '--save', tmp_path / 'anas')
    record = metrics(tmp_path / 'anas')[0]
    objective = latency.Objective(latency.load_table(str(table)), latency.anas_settings('resnet20', 28), 1.0, 5.0)
    assert record['derived_latency_ms'] == pytest.approx(
        objective.of_genotype(genotypes.from_dict(record['genotype'])), rel=1e-12)
    assert 0 < record['expected_latency_ms'] < objective.uniform() * 1.01


def test_bad_latency_flags_are_one_line(tmp_path, fashion):
    settings = latency.darts_settings('after_every', 'darts', **FASHION_SPACE)
    table = write_table(tmp_path / 'table.json', settings)
    other = write_table(tmp_path / 'end.json', dict(settings, location='end'))
    truncated = tmp_path / 'truncated.json'
    entries = synthetic_table(settings)
    truncated.write_text(json.dumps(dict(entries, latency_ms=dict(list(entries['latency_ms'].items())[1:]))))
    cases = [(['--latency_table', other, '--latency_weight', 0], 'was measured for location end, this search has '
                                                                 'after_every (--location)'),
             (['--latency_table', table, '--init_channels', 8, '--latency_weight', 0],
              'was measured for init_channels 4, this search has 8'),
             (['--latency_table', table, '--num_meta_node', 3, '--latency_weight', 0],
              'was measured for num_meta_node 2, this search has 3'),
             (['--latency_table', truncated, '--latency_weight', 0], 'has no latency for '),
             (['--latency_table', table], '--latency_weight 0.1 needs --latency_target MS'),
             (['--latency_weight', 1], 'need --latency_table FILE'),
             (['--latency_table', table, '--latency_weight', -1], '--latency_weight: -1 is out of range'),
             (['--latency_table', table, '--latency_target', 0], '--latency_target: 0 is out of range'),
             (['--latency_table', tmp_path / 'absent.json'], 'does not exist'),
             (['--latency_table', table, '--latency_target', 1, '--strategy', 'rsws'],
              '--latency_table works with --strategy darts or gdas only')]
    for extra, message in cases:
        result = run('train_search.py', *TINY_SEARCH, '--data', fashion, *extra, '--save', tmp_path / 'run',
                     check=False)
        assert result.returncode == 2 and message in result.stderr, (extra, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert not (tmp_path / 'run').exists()
