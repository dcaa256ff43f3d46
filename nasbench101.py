"""The NAS-Bench-101 cell space and its network, which NAG also searches.

Ying et al., "NAS-Bench-101: Towards Reproducible Neural Architecture Search", ICML 2019
(https://arxiv.org/abs/1902.09635; reference code google-research/nasbench `model_spec.py`,
`model_builder.py`); used by Jing, Xu and Zhang, "A Neural Architecture Generator for Efficient
Search Space", Neurocomputing 2021.

A cell is a DAG over at most 7 vertices and 9 edges: vertex 0 'input', the last 'output', the
others one of OPS.  A vertex sums its inputs (truncated to its width; the cell input goes through
a 1x1 projection), the output concatenates the vertices feeding it and adds the projected input
when the input feeds it directly.  Vertices off every input -> output path are pruned first.
The graph generator of nag.py builds these cells too (`VOCAB`, `spec_from_tensors`).
"""
import hashlib
from collections import namedtuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from nag import edge_decisions
from utils import UserError

OPS = ('conv3x3-bn-relu', 'conv1x1-bn-relu', 'maxpool3x3')
# Vertex types for the graph generator (nag.CellGenerator with input_kinds=(INPUT,)): output first, as in NAG.
VOCAB = ('output', 'input') + OPS
INPUT = VOCAB.index('input')
MAX_VERTICES = 7
MAX_EDGES = 9

Spec = namedtuple('Spec', 'matrix ops')


def make_spec(matrix, ops):
    return Spec(tuple(tuple(int(bool(x)) for x in row) for row in matrix), tuple(ops))


def prune(spec):
    """The spec without vertices that are not on an input -> output path; None when the output is
    not reachable from the input."""
    V = len(spec.ops)
    from_input = [v == 0 for v in range(V)]
    for v in range(1, V):
        from_input[v] = any(from_input[j] and spec.matrix[j][v] for j in range(v))
    to_output = [v == V - 1 for v in range(V)]
    for v in reversed(range(V - 1)):
        to_output[v] = any(to_output[w] and spec.matrix[v][w] for w in range(v + 1, V))
    if not from_input[V - 1]:
        return None
    keep = [v for v in range(V) if from_input[v] and to_output[v]]
    return make_spec([[spec.matrix[i][j] for j in keep] for i in keep], [spec.ops[i] for i in keep])


def spec_problem(spec):
    """Why `spec` is not a NAS-Bench-101 cell (a sentence), or None."""
    V = len(spec.ops)
    if len(spec.matrix) != V or any(len(row) != V for row in spec.matrix):
        return f'matrix must be {V}x{V} for {V} ops'
    if not 2 <= V <= MAX_VERTICES:
        return f'a cell has 2..{MAX_VERTICES} vertices, got {V}'
    if spec.ops[0] != 'input' or spec.ops[-1] != 'output':
        return "ops must start with 'input' and end with 'output'"
    bad = [op for op in spec.ops[1:-1] if op not in OPS]
    if bad:
        return f"unknown op '{bad[0]}'; NAS-Bench-101 ops: {', '.join(OPS)}"
    if any(spec.matrix[i][j] for i in range(V) for j in range(i + 1)):
        return 'matrix must be strictly upper triangular (a DAG in topological order)'
    edges = sum(map(sum, spec.matrix))
    if edges > MAX_EDGES:
        return f'{edges} edges; NAS-Bench-101 allows at most {MAX_EDGES}'
    if prune(spec) is None:
        return 'the output is not reachable from the input'
    return None


def check_spec(spec, source='NAS-Bench-101 cell'):
    problem = spec_problem(spec)
    if problem:
        raise UserError(f'{source}: {problem}')
    return prune(spec)


def graph_hash(matrix, labels):
    """NAS-Bench-101's isomorphism-invariant graph fingerprint (its `graph_util.hash_module`): every
    vertex starts as the MD5 of (out-degree, in-degree, label); V times, each vertex becomes the MD5
    of its predecessors' sorted hashes, '|', its successors' sorted hashes, '|', its own; the graph is
    the MD5 of the sorted list.  The strings hashed are those of the reference, so the fingerprints
    are the keys of the NAS-Bench-101 data set."""
    V = len(matrix)
    out_degree = [sum(matrix[v]) for v in range(V)]
    in_degree = [sum(matrix[w][v] for w in range(V)) for v in range(V)]
    hashes = [_md5(str((out_degree[v], in_degree[v], labels[v]))) for v in range(V)]
    for _ in range(V):
        hashes = [_md5(''.join(sorted(hashes[w] for w in range(V) if matrix[w][v])) + '|'
                       + ''.join(sorted(hashes[w] for w in range(V) if matrix[v][w])) + '|' + hashes[v])
                  for v in range(V)]
    return _md5(str(sorted(hashes)))


def _md5(text):
    return hashlib.md5(text.encode('utf-8')).hexdigest()


def spec_hash(spec):
    """The NAS-Bench-101 key of a cell (its `ModelSpec.hash_spec` with the canonical op order OPS):
    the graph hash of the pruned cell, input labelled -1, output -2, ops by their index in OPS.
    Isomorphic cells, and cells that differ only in pruned vertices, share it."""
    spec = check_spec(spec)
    labels = [-1] + [OPS.index(op) for op in spec.ops[1:-1]] + [-2]
    return graph_hash(spec.matrix, labels)


def unique_specs(specs):
    """`specs` without the cells isomorphic to an earlier one (the first of each hash is kept)."""
    seen, unique = set(), []
    for spec in specs:
        key = spec_hash(spec)
        if key not in seen:
            seen.add(key)
            unique.append(spec)
    return unique


def spec_from_tensors(edges, nodes, n):
    """The pruned NAS-Bench-101 cell a generated graph describes (nag.edge_decisions, argmax
    types), or None when it is not one (an input type inside, too many edges, no path)."""
    n = int(n)
    ops = [VOCAB[k] for k in nodes[:n].argmax(1).tolist()]
    matrix = [[0] * n for _ in range(n)]
    for v in range(1, n):
        for j in edge_decisions(edges[v, :v]).nonzero().flatten().tolist():
            matrix[j][v] = 1
    spec = make_spec(matrix, ops)
    return None if spec_problem(spec) else prune(spec)


def vertex_channels(in_channels, out_channels, matrix):
    """NAS-Bench-101's widths: vertices feeding the output split out_channels (the remainder going
    to the first ones); every other vertex is as wide as its widest successor."""
    V = len(matrix)
    channels = [0] * V
    channels[0], channels[-1] = in_channels, out_channels
    if V == 2:
        return channels
    feeding = [v for v in range(1, V - 1) if matrix[v][-1]]
    share, extra = divmod(out_channels, len(feeding))  # pruned cells with V > 2 have feeding vertices
    for k, v in enumerate(feeding):
        channels[v] = share + (k < extra)
    for v in range(V - 2, 0, -1):
        if not matrix[v][-1]:
            channels[v] = max(channels[w] for w in range(v + 1, V - 1) if matrix[v][w])
    return channels


class ConvBNReLU(nn.Sequential):
    def __init__(self, C_in, C_out, kernel_size):
        super().__init__(nn.Conv2d(C_in, C_out, kernel_size, padding=kernel_size // 2, bias=False),
                         nn.BatchNorm2d(C_out), nn.ReLU(inplace=False))


def make_op(name, channels):
    if name == 'maxpool3x3':
        return nn.MaxPool2d(3, stride=1, padding=1)
    return ConvBNReLU(channels, channels, 3 if name == 'conv3x3-bn-relu' else 1)


class Cell(nn.Module):
    def __init__(self, spec, in_channels, out_channels):
        super().__init__()
        self.spec = spec
        self.channels = vertex_channels(in_channels, out_channels, spec.matrix)
        V = len(spec.ops)
        self.ops = nn.ModuleDict({str(v): make_op(spec.ops[v], self.channels[v]) for v in range(1, V - 1)})
        self.projections = nn.ModuleDict({str(v): ConvBNReLU(in_channels, self.channels[v], 1)
                                          for v in range(1, V) if spec.matrix[0][v]})

    def forward(self, x):
        V, matrix = len(self.spec.ops), self.spec.matrix
        states = [x]
        for v in range(1, V - 1):
            inputs = [states[j][:, :self.channels[v]] for j in range(1, v) if matrix[j][v]]
            if matrix[0][v]:
                inputs.append(self.projections[str(v)](x))
            states.append(self.ops[str(v)](sum(inputs)))
        outputs = [states[v] for v in range(1, V - 1) if matrix[v][-1]]
        out = torch.cat(outputs, 1) if outputs else 0
        if matrix[0][-1]:
            out = out + self.projections[str(V - 1)](x)
        return out


class Network(nn.Module):
    """NAS-Bench-101's network: 3x3 conv stem, `stacks` stacks of `cells_per_stack` cells with a
    2x2 max pool (and doubled width) between stacks, global pooling, a linear classifier."""

    def __init__(self, spec, num_classes=10, stem_channels=128, stacks=3, cells_per_stack=3, in_channels=3):
        super().__init__()
        spec = check_spec(spec)
        layers = [ConvBNReLU(in_channels, stem_channels, 3)]
        C_in = C = stem_channels
        for stack in range(stacks):
            if stack:
                layers.append(nn.MaxPool2d(2, stride=2))
                C *= 2
            for _ in range(cells_per_stack):
                layers.append(Cell(spec, C_in, C))
                C_in = C
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(C, num_classes)

    def forward(self, x):
        return self.classifier(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))
