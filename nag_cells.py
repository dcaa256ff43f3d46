"""NAG's cell grammar: the DAG cells and architectures of the open-domain space, as data.

Jing, Xu and Zhang, "A Neural Architecture Generator for Efficient Search Space", Neurocomputing 2021
(https://www.sciencedirect.com/science/article/pii/S0925231221016994; reference code kunjing96/NAG,
`build_nas_dataset/`).

A cell (`CellSpec`) is a DAG over V vertices: 0 = 'input0' (c_{k-2}), 1 = 'input1' (c_{k-1}), the
last = 'output', and op vertices in between.  matrix[src][dst] = 1 is an edge; a vertex applies its
op to the sum of its predecessors; the cell output concatenates the output's predecessors.
An architecture (`DagArch`) is a (normal, reduce) pair of cells; its JSON form is
{"normal": {"matrix": [[0/1, ...], ...], "ops": [...]}, "reduce": {...}}, which genotypes.load
reads like any genotype.  This module holds the vocabulary, validation, repair, random sampling
and the JSON form; it imports no torch, so architectures load without building anything.  The
networks are nag_networks.NAGNetworkCIFAR / NAGNetworkImageNet; the one-shot supernet and the graph GAN
that generates cells are in nag.py.
"""
import random
from collections import namedtuple

from userio import UserError

NAG_OPS = ('sep_conv_3x3', 'sep_conv_5x5', 'avg_pool_3x3', 'max_pool_3x3', 'skip_connect')
# The reference's CODE order (output 0, input0 1, input1 2, ops 3..7), with this project's op names.
VOCAB = ('output', 'input0', 'input1') + NAG_OPS
OUTPUT, INPUT0, INPUT1 = 0, 1, 2
# Reference spellings, accepted when reading specs.
REFERENCE_NAMES = {'seqconv3x3': 'sep_conv_3x3', 'seqconv5x5': 'sep_conv_5x5', 'avgpool3x3': 'avg_pool_3x3',
                   'maxpool3x3': 'max_pool_3x3', 'identity': 'skip_connect'}
MAX_VERTICES = 10

CellSpec = namedtuple('CellSpec', 'matrix ops')
DagArch = namedtuple('DagArch', 'normal reduce')


def make_cell(matrix, ops):
    """A CellSpec with tuple rows (hashable) and project op names."""
    return CellSpec(tuple(tuple(int(bool(x)) for x in row) for row in matrix),
                    tuple(REFERENCE_NAMES.get(op, op) for op in ops))


def predecessors(spec, vertex):
    return [j for j in range(vertex) if spec.matrix[j][vertex]]


def cell_problem(spec, max_vertices=MAX_VERTICES):
    """Why `spec` is not a legal cell (a sentence), or None when it is."""
    V = len(spec.ops)
    if len(spec.matrix) != V or any(len(row) != V for row in spec.matrix):
        return f'matrix must be {V}x{V} for {V} ops'
    if not 4 <= V <= max_vertices:
        return f'a cell needs 4..{max_vertices} vertices (two inputs, at least one op, the output), got {V}'
    if spec.ops[:2] != ('input0', 'input1') or spec.ops[-1] != 'output':
        return "ops must start with 'input0', 'input1' and end with 'output'"
    bad = [op for op in spec.ops[2:-1] if op not in NAG_OPS]
    if bad:
        return f"unknown op '{bad[0]}'; NAG ops: {', '.join(NAG_OPS)}"
    if any(spec.matrix[i][j] for i in range(V) for j in range(i + 1)):
        return 'matrix must be strictly upper triangular (edges go from lower to higher vertices)'
    if spec.matrix[0][1]:
        return 'there is no edge between the two inputs'
    for v in range(2, V - 1):
        if not predecessors(spec, v):
            return f'vertex {v} ({spec.ops[v]}) has no input'
        if not any(spec.matrix[v][w] for w in range(v + 1, V)):
            return f'vertex {v} ({spec.ops[v]}) feeds nothing'
    return None


def is_valid(spec, max_vertices=MAX_VERTICES):
    return cell_problem(spec, max_vertices) is None


def check_cell(spec, source='cell', max_vertices=MAX_VERTICES):
    problem = cell_problem(spec, max_vertices)
    if problem:
        raise UserError(f'{source}: {problem}')
    return spec


def keep_vertices(spec, keep):
    """The cell restricted to the vertices where keep[v] is true (inputs and output always kept)."""
    index = [v for v in range(len(spec.ops)) if keep[v] or v < 2 or v == len(spec.ops) - 1]
    return make_cell([[spec.matrix[i][j] for j in index] for i in index], [spec.ops[i] for i in index])


def prune(spec):
    """The reference's pruning (its `build_nas_dataset/utils.prune`, NAS-Bench-101's): op vertices
    that no input reaches or that reach no output are dropped.  None when no op vertex is left.
    Unlike the reference, an input that reaches nothing stays (unread) instead of being deleted,
    which would shift the other input into its place."""
    V = len(spec.ops)
    reached = [v < 2 for v in range(V)]
    for v in range(2, V - 1):
        reached[v] = any(reached[j] for j in predecessors(spec, v))
    reaches = [v == V - 1 for v in range(V)]
    for v in reversed(range(2, V - 1)):
        reaches[v] = any(spec.matrix[v][w] and reaches[w] for w in range(v + 1, V))
    matrix = [list(row) for row in spec.matrix]
    matrix[0][1] = 0
    cell = keep_vertices(make_cell(matrix, spec.ops), [r and s for r, s in zip(reached, reaches)])
    return cell if is_valid(cell, max_vertices=len(cell.ops)) else None


def repair(spec):
    """Make a cell legal the NASNet way: op vertices no input reaches are dropped, and op vertices
    that feed nothing are joined to the output (concatenated).  None when no op vertex is left.
    The generated cells are repaired this way, keeping what the generator drew."""
    V = len(spec.ops)
    reached = [v < 2 for v in range(V)]
    for v in range(2, V - 1):
        reached[v] = any(reached[j] for j in predecessors(spec, v))
    matrix = [list(row) for row in spec.matrix]
    matrix[0][1] = 0
    for v in range(2, V - 1):
        if reached[v] and not any(matrix[v][w] and (reached[w] or w == V - 1) for w in range(v + 1, V)):
            matrix[v][V - 1] = 1
    cell = keep_vertices(make_cell(matrix, spec.ops), reached)
    return cell if is_valid(cell, max_vertices=len(cell.ops)) else None


# How a sampled cell's dead ends (op vertices that reach no output) are made legal.
DEAD_ENDS = {'prune': prune, 'join': repair}


def sample_cell(rng, max_vertices=MAX_VERTICES, dead_ends='prune'):
    """The reference's random cell (`build_nas_dataset/utils.py`): V with weights 2^V, edges floor(U + bias) with
    bias ~ U(0, 1), uniform ops; then dead ends pruned as the reference does, or joined to the
    output (`dead_ends='join'`, `repair`).  Resampled until legal (the reference's 3-vertex cells
    without an op are never legal here)."""
    sizes = list(range(4, max_vertices + 1))
    while True:
        V = rng.choices(sizes, weights=[2 ** v for v in sizes])[0]
        bias = rng.random()
        matrix = [[int(j > i and rng.random() + bias >= 1) for j in range(V)] for i in range(V)]
        cell = DEAD_ENDS[dead_ends](make_cell(matrix, ('input0', 'input1', *rng.choices(NAG_OPS, k=V - 3), 'output')))
        if cell is not None:
            return cell


def sample_architectures(count, seed, max_vertices=MAX_VERTICES, dead_ends='prune'):
    """`count` distinct DagArchs."""
    rng = random.Random(seed)
    seen, archs = set(), []
    while len(archs) < count:
        arch = DagArch(sample_cell(rng, max_vertices, dead_ends), sample_cell(rng, max_vertices, dead_ends))
        if arch not in seen:
            seen.add(arch)
            archs.append(arch)
    return archs


def cell_to_dict(spec):
    return {'matrix': [list(row) for row in spec.matrix], 'ops': list(spec.ops)}


def cell_from_dict(record, source='cell'):
    try:
        spec = make_cell(record['matrix'], record['ops'])
    except (KeyError, TypeError) as exc:
        raise UserError(f"{source}: expected {{'matrix': [[0/1, ...], ...], 'ops': [...]}}") from exc
    return check_cell(spec, source, max_vertices=len(spec.ops))


def arch_to_dict(arch):
    return {'normal': cell_to_dict(arch[0]), 'reduce': cell_to_dict(arch[1])}


def arch_from_dict(record, source='architecture'):
    return DagArch(cell_from_dict(record['normal'], f'{source} normal'),
                   cell_from_dict(record['reduce'], f'{source} reduce'))


# The architecture the reference ships (`train_cifar.py`).
REFERENCE_ARCH = DagArch(
    make_cell([[0, 0, 1, 0, 0, 0, 1, 0, 1], [0, 0, 1, 1, 1, 1, 0, 1, 1], [0, 0, 0, 0, 0, 0, 0, 1, 1],
               [0, 0, 0, 0, 1, 1, 1, 0, 1], [0, 0, 0, 0, 0, 1, 1, 0, 1], [0, 0, 0, 0, 0, 0, 0, 1, 0],
               [0, 0, 0, 0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0, 0, 0]],
              ['input0', 'input1', 'seqconv3x3', 'seqconv5x5', 'maxpool3x3', 'seqconv5x5', 'seqconv5x5',
               'seqconv5x5', 'output']),
    make_cell([[0, 0, 1, 1, 0, 1], [0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 0, 1], [0, 0, 0, 0, 0, 1],
               [0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0]],
              ['input0', 'input1', 'seqconv5x5', 'seqconv3x3', 'seqconv5x5', 'output']))
