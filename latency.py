"""Measured latency of the search space's candidates, and the expected latency of a supernet.

Hardware-aware differentiable NAS: Cai, Zhu and Han, "ProxylessNAS: Direct Neural Architecture
Search on Target Task and Hardware", ICLR 2019 (reference code mit-han-lab/proxylessnas); Wu et
al., "FBNet: Hardware-Aware Efficient ConvNet Design via Differentiable Neural Architecture
Search", CVPR 2019.  Both time every candidate of every layer once on the target device, keep
the times in a look-up table, and make the architecture's latency differentiable as its
expectation under the architecture weights: per mixed edge sum_k w_k * latency_k.

A candidate is a (name, channels C, input height H and width W, stride) as the supernet of a space
uses it, timed as the evaluation networks build it (`operations.make_candidate`, affine, eval
mode; a pool without the search's BatchNorm; an attention on a stride-2 edge with its
FactorizedReduce).  Spaces:

    darts   the DARTS / Att-DARTS / CNAS supernet of train_search.py: every first-layer candidate
            of every edge (stride 2 on a reduction cell's edges from its inputs), every attention
            of the second layer and of the cell-output bottleneck (C * steps channels), at the
            channels and sizes of each cell; with --partial_channels the table still holds the
            full-width candidates, the ones the derived network computes
    nb201   the NAS-Bench-201 supernet of train_search.py --space nb201: every op of each of the 6
            edges of every cell (stride 1; C, 2C, 4C channels at the image size, its half and its
            quarter) and, with --location after_every, every attention after it; the residual
            reduction blocks are fixed, the same in every architecture, and not in the table
    anas    the attention unit of ANAS's ResNet (search_net.py): its nine ops at each block's
            channels and size

The table (`measure_table`, written by measure_latency.py) is JSON: the space settings it was
measured for, how (backend, device, threads, batch, warm-up, repeats; the median of the repeats),
the library versions, and milliseconds per candidate key.  `check_table` refuses a table of
another space, location, op set, channel count, depth or image size in one line.

`expected_latency` is the supernet's: for every weight table (the softmaxed architecture
weights, shared by the cells of a type) sum(weights * costs), costs[row, k] being the summed
table latency of candidate k of that row over every cell that uses it.  The derived
architecture's table latency is the same sum with one-hot weights (`genotype_weights`).
`Objective` is ProxylessNAS's "add#linear" architecture loss term lambda * (E[latency] - T) / T
with T the target latency.
"""
import hashlib
import json
import math
import os
import platform
import statistics
import sys
import time
from collections import namedtuple

import torch
import torch.nn as nn
import torch.nn.functional as F

import nb201
from anas import check_net_type
from genotypes import ATT_PRIMITIVES, entry_attention, entry_input, entry_op
from model import build_cell_stack, halve, stem_size
from nb201_model import stage_layout
from operations import make_candidate
from search_space import candidate_lists, resolve_primitives
from utils import UserError, atomic_write_json

TABLE_FORMAT = 'attnas-latency-table'
TABLE_VERSION = 1
BACKENDS = ('torch', 'onnxruntime')
SPACES = ('darts', 'nb201', 'anas')

Candidate = namedtuple('Candidate', 'name C H W stride')


def key(candidate):
    """The table key of a candidate, e.g. 'sep_conv_3x3 C16 32x32 s2'."""
    return f'{candidate.name} C{candidate.C} {candidate.H}x{candidate.W} s{candidate.stride}'


# Which flag sets each space setting, for the mismatch messages.
SETTING_FLAGS = {'space': 'train_search.py --space darts or nb201, or search_net.py for anas',
                 'location': '--location', 'primitives': '--primitives', 'init_channels': '--init_channels',
                 'layers': '--layers', 'num_meta_node': '--num_meta_node', 'reduce_level': '--reduce_level',
                 'image_size': '--dataset / --image_size', 'net_type': '--net_type'}


def darts_settings(location, primitives, init_channels, layers, num_meta_node, image_size, reduce_level=0):
    """The settings of the DARTS-space supernet that fix its candidates (resolved op names)."""
    return {'space': 'darts', 'location': location, 'primitives': resolve_primitives(primitives),
            'init_channels': init_channels, 'layers': layers, 'num_meta_node': num_meta_node,
            'image_size': image_size, 'reduce_level': reduce_level}


def nb201_settings(location, init_channels, layers, image_size):
    """The settings of the NAS-Bench-201 supernet that fix its candidates (`layers`: cells per stage)."""
    return {'space': 'nb201', 'location': location, 'init_channels': init_channels, 'layers': layers,
            'image_size': image_size}


def anas_settings(net_type, image_size):
    return {'space': 'anas', 'net_type': net_type, 'image_size': image_size}


def _darts_cells(settings):
    """(reduction, channels, input size, output size) of every cell of the supernet."""
    cells = []

    def make_cell(C_prev_prev, C_prev, C, reduction, reduction_prev, size):
        cells.append((reduction, C, size))
        cell = nn.Module()
        cell.multiplier = settings['num_meta_node']
        return cell
    C, size = settings['init_channels'], stem_size(settings['image_size'], settings['reduce_level'])
    build_cell_stack(make_cell, settings['layers'], C, 3 * C, 3 * C, size=size)
    inputs = [size] + [out for _, _, out in cells[:-1]]
    return [(reduction, C, size_in, out) for (reduction, C, out), size_in in zip(cells, inputs)]


def layout(settings):
    """{weight table name: costs layout} of the supernet of `settings`: for an edge table a list
    of rows (edges), each a list over the table's candidates of the Candidates it stands for in
    every cell of that type ([] for 'none'); for a bottleneck table one such list over candidates."""
    if settings['space'] == 'anas':
        return _anas_layout(settings)
    if settings['space'] == 'nb201':
        return _nb201_layout(settings)
    lists = candidate_lists(settings['location'], settings['primitives'])
    steps = settings['num_meta_node']
    rows = sum(2 + i for i in range(steps))
    tables = {}
    for reduction, C, size_in, size in _darts_cells(settings):
        cell_type = 'reduce' if reduction else 'normal'
        first = tables.setdefault(f'alphas_{cell_type}', [[[] for _ in lists['first']] for _ in range(rows)])
        row = 0
        for node in range(steps):
            for j in range(2 + node):
                stride = 2 if reduction and j < 2 else 1
                edge_size = size_in if stride == 2 else size
                for k, name in enumerate(lists['first']):
                    if name != 'none':
                        first[row][k].append(Candidate(name, C, edge_size, edge_size, stride))
                if lists['second']:
                    second = tables.setdefault(f'betas_{cell_type}',
                                               [[[] for _ in lists['second']] for _ in range(rows)])
                    for k, name in enumerate(lists['second']):
                        if name != 'none':
                            second[row][k].append(Candidate(name, C, size, size, 1))
                row += 1
        if lists['bottleneck']:
            bottleneck = tables.setdefault(f'gammas_{cell_type}', [[] for _ in lists['bottleneck']])
            for k, name in enumerate(lists['bottleneck']):
                bottleneck[k].append(Candidate(name, C * steps, size, size, 1))
    return tables


def _nb201_layout(settings):
    """The NAS-Bench-201 cell's tables (edges x ops, and edges x attentions after every edge), over
    every cell of the three stages; the reduction blocks between stages are not searched."""
    lists = candidate_lists(settings['location'], nb201.OPS)
    names = {f'{prefix}_normal': lists[layer] for layer, prefix in (('first', 'alphas'), ('second', 'betas'))
             if lists[layer]}
    tables = {table: [[[] for _ in candidates] for _ in nb201.EDGES] for table, candidates in names.items()}
    size = settings['image_size']
    for C, reduction in stage_layout(settings['init_channels'], settings['layers']):
        if reduction:
            size = halve(size)
            continue
        for table, candidates in names.items():
            for row in tables[table]:
                for k, name in enumerate(candidates):
                    if name != 'none':
                        row[k].append(Candidate(name, C, size, size, 1))
    return tables


def _anas_layout(settings):
    """The ANAS unit's one table (edges x ATT_PRIMITIVES), over every block of the ResNet."""
    blocks, size = check_net_type(settings['net_type']), settings['image_size']
    steps = 3
    rows = [[[] for _ in ATT_PRIMITIVES] for _ in range(sum(2 + i for i in range(steps)))]
    for stage, planes in enumerate((16, 32, 64)):
        if stage:
            size = halve(size)
        for _ in range(blocks):
            for row in rows:
                for k, name in enumerate(ATT_PRIMITIVES):
                    if name != 'none':
                        row[k].append(Candidate(name, planes, size, size, 1))
    return {'alphas_att': rows}


def candidates(tables):
    """The distinct Candidates of a layout, in a fixed order."""
    found = set()

    def walk(node):
        if isinstance(node, Candidate):
            found.add(node)
        else:
            for child in node:
                walk(child)
    walk(list(tables.values()))
    return sorted(found, key=key)


# ------------------------------------------------------------------------------------ measurement

def median_ms(run, device, warmup, repeats):
    """The median wall time of `run()` over `repeats` calls after `warmup` untimed ones, in
    milliseconds; on CUDA the device is synchronised before and after each call."""
    times = []
    for k in range(warmup + repeats):
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        began = time.perf_counter()
        run()
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        if k >= warmup:
            times.append(time.perf_counter() - began)
    return 1000 * statistics.median(times)


def candidate_module(candidate):
    """The candidate as an evaluation network builds it, in eval mode."""
    stride = candidate.stride
    height, width = (halve(candidate.H), halve(candidate.W)) if stride == 2 else (candidate.H, candidate.W)
    return make_candidate(candidate.name, candidate.C, stride, height, width, affine=True).eval()


def time_module(module, shape, backend, device, batch, warmup, repeats, threads):
    """The median latency (ms) of a forward of `module` in eval mode on a random (batch, *shape)
    input: in PyTorch on `device`, or in ONNX Runtime on the CPU (exported by deploy.to_onnx)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, *shape, generator=generator)
    if backend == 'onnxruntime':
        import deploy
        session = deploy.onnx_session(deploy.to_onnx(module, x), threads)
        feed = {deploy.INPUT_NAME: x.numpy()}
        return median_ms(lambda: session.run(None, feed), torch.device('cpu'), warmup, repeats)
    module = module.to(device).eval()
    x = x.to(device)
    with torch.no_grad():
        return median_ms(lambda: module(x), device, warmup, repeats)


def library_versions(backend):
    versions = {'python': platform.python_version(), 'torch': torch.__version__}
    if backend == 'onnxruntime':
        import onnx
        import onnxruntime
        versions.update(onnx=onnx.__version__, onnxruntime=onnxruntime.__version__)
    return versions


def device_description(device):
    """The GPU's name, or the CPU's model (Linux's /proc/cpuinfo; the architecture elsewhere): a
    table measured on an Intel CPU says little about an AMD one."""
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return f'{cpu_model()} ({os.cpu_count()} logical CPUs)'


def cpu_model():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure_table(settings, backend='torch', device=torch.device('cpu'), batch=1, warmup=10, repeats=50, threads=1,
                  progress=None):
    """The look-up table (a JSON-ready dict) of every candidate of the supernet of `settings`.
    `progress(iterable)` may wrap the candidates (a progress bar)."""
    if backend == 'onnxruntime' and device.type != 'cpu':
        raise UserError("--backend onnxruntime times on the CPU; drop --device or use --backend torch")
    torch.set_num_threads(threads)
    todo = candidates(layout(settings))
    latencies = {}
    for candidate in (progress or (lambda items: items))(todo):
        shape = (candidate.C, candidate.H, candidate.W)
        latencies[key(candidate)] = time_module(candidate_module(candidate), shape, backend, device, batch, warmup,
                                                repeats, threads)
    return {'format': TABLE_FORMAT, 'version': TABLE_VERSION, 'settings': settings,
            'measurement': {'backend': backend, 'device': str(device), 'device_name': device_description(device),
                            'threads': threads, 'batch': batch, 'warmup': warmup, 'repeats': repeats,
                            'statistic': 'median', 'unit': 'ms per forward of the batch', 'dtype': 'float32'},
            'versions': library_versions(backend), 'created': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
            'command': ' '.join(sys.argv), 'latency_ms': latencies}


def save_table(table, path):
    atomic_write_json(path, table)


def load_table(path):
    """A latency table written by measure_latency.py; anything else is one UserError line."""
    if not os.path.isfile(path):
        raise UserError(f"latency table {path} does not exist; measure one with measure_latency.py")
    try:
        with open(path) as f:
            table = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"latency table {path} is not JSON ({exc}); measure it again with measure_latency.py") from exc
    if not isinstance(table, dict) or table.get('format') != TABLE_FORMAT:
        raise UserError(f"{path} is not a latency table of measure_latency.py (no format '{TABLE_FORMAT}')")
    if table.get('version') != TABLE_VERSION:
        raise UserError(f"latency table {path} has version {table.get('version')}, this code reads {TABLE_VERSION}; "
                        f"measure it again with measure_latency.py")
    latencies, settings = table.get('latency_ms'), table.get('settings')
    if not isinstance(settings, dict) or not isinstance(latencies, dict) or not all(
            isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in latencies.values()):
        raise UserError(f"latency table {path} has no settings or a latency that is not a finite number >= 0; "
                        f"measure it again with measure_latency.py")
    return table


def check_table(table, settings, path='the latency table'):
    """Refuse, in one line, a table measured for other space settings than `settings`, or one that
    lacks a candidate of that space.  The depth (`layers`) only needs the table to hold every
    candidate: a table measured for a deeper supernet serves a shallower one, and P-DARTS's stages."""
    for name, value in settings.items():
        measured = table['settings'].get(name)
        if measured != value and name != 'layers':
            raise UserError(f"{path} was measured for {name} {_shown(measured)}, this search has {_shown(value)} "
                            f"({SETTING_FLAGS.get(name, name)}); measure a table for it with measure_latency.py")
    missing = [key(c) for c in candidates(layout(settings)) if key(c) not in table['latency_ms']]
    if missing:
        depth = (f" (it was measured for layers {table['settings'].get('layers')}, this search has "
                 f"{settings['layers']})" if table['settings'].get('layers') != settings.get('layers') else '')
        raise UserError(f"{path} has no latency for {missing[0]} (and {len(missing) - 1} more candidates of this "
                        f"search){depth}; measure the table again with measure_latency.py")


def _shown(value):
    return ' '.join(map(str, value)) if isinstance(value, list) else value


# ------------------------------------------------------------------------------------ objective

def costs(table, settings):
    """{weight table name: tensor of the weight table's shape}, each entry the summed table latency
    (ms) of that candidate over the cells or blocks that share the weight."""
    latencies = table['latency_ms']

    def total(node):
        # A leaf is the list of Candidates that one weight stands for (empty for 'none').
        if all(isinstance(c, Candidate) for c in node):
            return sum(latencies[key(c)] for c in node)
        return [total(child) for child in node]
    return {name: torch.tensor(total(rows), dtype=torch.float64) for name, rows in layout(settings).items()}


def expected_latency(weights, cost_tables):
    """sum over weight tables of sum(weights * costs): the expected table latency (ms) of the
    architecture under `weights` ({name: softmaxed weights}, differentiable), in float64."""
    return sum((weights[name].double() * cost.to(weights[name].device)).sum() for name, cost in cost_tables.items())


def genotype_weights(genotype, settings):
    """One-hot weight tables of a derived architecture: `expected_latency` with them is its table
    latency."""
    if settings['space'] == 'anas':
        rows = torch.zeros(sum(2 + i for i in range(3)), len(ATT_PRIMITIVES), dtype=torch.float64)
        for index, (op, j) in enumerate(genotype.att):
            node = index // 2
            rows[node * (node + 3) // 2 + j, ATT_PRIMITIVES.index(op)] = 1
        return {'alphas_att': rows}
    if settings['space'] == 'nb201':
        return _nb201_genotype_weights(genotype, settings)
    lists = candidate_lists(settings['location'], settings['primitives'])
    steps = settings['num_meta_node']
    rows = sum(2 + i for i in range(steps))
    out = {}
    for cell_type in ('normal', 'reduce'):
        first = out[f'alphas_{cell_type}'] = torch.zeros(rows, len(lists['first']), dtype=torch.float64)
        if lists['second']:
            second = out[f'betas_{cell_type}'] = torch.zeros(rows, len(lists['second']), dtype=torch.float64)
        for index, entry in enumerate(getattr(genotype, cell_type)):
            node = index // 2
            row = node * (node + 3) // 2 + entry_input(entry)  # the rows of the nodes before: 2 + 3 + ...
            first[row, lists['first'].index(entry_op(entry))] = 1
            if lists['second']:
                second[row, lists['second'].index(entry_attention(entry))] = 1
        if lists['bottleneck']:
            bottleneck = out[f'gammas_{cell_type}'] = torch.zeros(len(lists['bottleneck']), dtype=torch.float64)
            bottleneck[lists['bottleneck'].index(getattr(genotype, cell_type + '_bottleneck'))] = 1
    return out


def _nb201_genotype_weights(genotype, settings):
    """A NAS-Bench-201 cell's one-hot tables: per edge its op and, after an op other than none,
    its attention (Identity where the genotype has none)."""
    lists = candidate_lists(settings['location'], nb201.OPS)
    first = torch.zeros(len(nb201.EDGES), len(lists['first']), dtype=torch.float64)
    out = {'alphas_normal': first}
    if lists['second']:
        second = out['betas_normal'] = torch.zeros(len(nb201.EDGES), len(lists['second']), dtype=torch.float64)
    for edge, (op, attention) in enumerate(zip(genotype.ops, genotype.attentions)):
        first[edge, lists['first'].index(op)] = 1
        if lists['second'] and op != 'none':
            second[edge, lists['second'].index(attention or 'Identity')] = 1
    return out


def architecture_weights(model):
    """{weight table name: softmaxed architecture weights} of a supernet, differentiable; the edge
    weights of edge normalization are left out (every edge's candidates run in the supernet)."""
    if hasattr(model, 'softmaxed'):
        return {name: w for name, w in model.softmaxed().items() if not name.startswith('edges')}
    return {'alphas_att': F.softmax(model.alphas, dim=-1)}


class Objective:
    """ProxylessNAS's "add#linear" latency term of the architecture loss,
    weight * (E[latency] - target) / target, E[latency] the supernet's expected table latency (ms).
    Dividing by the target makes `weight` a trade-off between the loss and the relative latency,
    whatever the device and the size of the network."""

    def __init__(self, table, settings, weight, target):
        self.settings, self.weight, self.target = settings, weight, target
        self.costs = costs(table, settings)

    def expected(self, model):
        return expected_latency(architecture_weights(model), self.costs)

    def of_genotype(self, genotype):
        return float(expected_latency(genotype_weights(genotype, self.settings), self.costs))

    def uniform(self):
        """The expected latency under uniform weights over each table's candidates."""
        return float(expected_latency({name: torch.full_like(cost, 1 / cost.shape[-1])
                                       for name, cost in self.costs.items()}, self.costs))

    def loss(self, model):
        return self.weight * (self.expected(model) - self.target) / self.target


def add_arguments(parser):
    g = parser.add_argument_group('latency (ProxylessNAS, FBNet; docs/latency.md)')
    g.add_argument('--latency_table', default=None, metavar='FILE',
                   help="a table of measure_latency.py for this search's space: the supernet's expected latency is "
                        "logged every epoch with the derived cell's, and with --latency_weight > 0 added to the "
                        "architecture loss")
    g.add_argument('--latency_weight', type=float, default=None, metavar='LAMBDA',
                   help='lambda of the architecture loss term lambda * (E[latency] - target) / target '
                        "(ProxylessNAS's add#linear; default 0.1, its value; 0 only logs)")
    g.add_argument('--latency_target', type=float, default=None, metavar='MS',
                   help='the target latency T in ms of the same table (ProxylessNAS\'s reference value)')


def objective(args, settings):
    """The Objective of --latency_table / --latency_weight / --latency_target for a search of the
    space `settings`, or None without a table; bad flags and tables are one UserError line."""
    if args.latency_table is None:
        if args.latency_weight is not None or args.latency_target is not None:
            raise UserError("--latency_weight and --latency_target need --latency_table FILE (measure one with "
                            "measure_latency.py)")
        return None
    weight = 0.1 if args.latency_weight is None else args.latency_weight
    table = load_table(args.latency_table)
    check_table(table, settings, args.latency_table)
    result = Objective(table, settings, weight, args.latency_target)
    if weight > 0 and args.latency_target is None:
        raise UserError(f"--latency_weight {weight} needs --latency_target MS, the latency the search aims at (in "
                        f"{args.latency_table} this supernet has {result.uniform():.3f} ms under uniform weights); "
                        f"or --latency_weight 0 to only log latencies")
    return result


def signature(args):
    """What a resumed search must share with the run it continues: the table's latencies, the
    weight and the target (empty without a table, so that earlier checkpoints stay resumable)."""
    if args.latency_table is None:
        return {}
    with open(args.latency_table, 'rb') as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return {'latency': {'table_sha256': digest, 'weight': args.latency_weight, 'target': args.latency_target}}
