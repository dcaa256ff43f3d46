"""NAG: the open-domain DAG cell space, its one-shot supernet, and the conditional graph GAN.

Jing, Xu and Zhang, "A Neural Architecture Generator for Efficient Search Space", Neurocomputing 2021
(https://www.sciencedirect.com/science/article/pii/S0925231221016994; reference code kunjing96/NAG,
SPEC 6).  The generator follows DeepGMG (Li et al., "Learning Deep Generative Models of Graphs",
2018); the discriminator uses graph convolutions (Kipf and Welling, ICLR 2017); the loss is LSGAN
(Mao et al., ICCV 2017).

A cell (`CellSpec`) is a DAG over V vertices: 0 = 'input0' (c_{k-2}), 1 = 'input1' (c_{k-1}), the
last = 'output', and op vertices in between.  matrix[src][dst] = 1 is an edge; a vertex applies its
op to the sum of its predecessors; the cell output concatenates the output's predecessors.
An architecture (`DagArch`) is a (normal, reduce) pair of cells; its JSON form is
{"normal": {"matrix": [[0/1, ...], ...], "ops": [...]}, "reduce": {...}}, which genotypes.load
reads like any genotype.  The evaluation networks are model.NAGNetworkCIFAR / NAGNetworkImageNet
(the reference's NAO skeleton): inside a reduction cell a vertex whose predecessors are all cell
inputs runs its op at stride 2 on their sum; everywhere else cell inputs are first halved by a
FactorizedReduce.  The one-shot supernet follows the same rule, so the one-shot scores, the
parameter counts and the final training all see the same function.

Fixed with respect to the reference (SPEC 7.4): the NAS-dataset builder trains and scores the
sampled reduction cell (the reference used the normal cell twice); parameter counts are of the
evaluation network in one unit (M); identity vertices get no drop path (model.NAGVertex).
Deliberate deviation: LSGAN targets are the usual real = 1, fake = 0 (the reference swaps them,
which is the same game).
"""
import random
from collections import namedtuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from operations import OPS, FactorizedReduce, ReLUConvBN
from utils import UserError

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


# --------------------------------------------------------------------------------------------------
# Cell space
# --------------------------------------------------------------------------------------------------

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


def repair(spec):
    """Make a cell legal the NASNet way: op vertices no input reaches are dropped, and op vertices
    that feed nothing are joined to the output (concatenated).  None when no op vertex is left."""
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


def sample_cell(rng, max_vertices=MAX_VERTICES):
    """The reference's random cell (SPEC 6.1): V with weights 2^V, edges floor(U + bias) with
    bias ~ U(0, 1), uniform ops; then `repair`.  Resampled until legal."""
    sizes = list(range(4, max_vertices + 1))
    while True:
        V = rng.choices(sizes, weights=[2 ** v for v in sizes])[0]
        bias = rng.random()
        matrix = [[int(j > i and rng.random() + bias >= 1) for j in range(V)] for i in range(V)]
        cell = repair(make_cell(matrix, ('input0', 'input1', *rng.choices(NAG_OPS, k=V - 3), 'output')))
        if cell is not None:
            return cell


def sample_architectures(count, seed, max_vertices=MAX_VERTICES):
    """`count` distinct DagArchs."""
    rng = random.Random(seed)
    seen, archs = set(), []
    while len(archs) < count:
        arch = DagArch(sample_cell(rng, max_vertices), sample_cell(rng, max_vertices))
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


# The architecture the reference ships (SPEC 6.8, `train_cifar.py`).
REFERENCE_ARCH = DagArch(
    make_cell([[0, 0, 1, 0, 0, 0, 1, 0, 1], [0, 0, 1, 1, 1, 1, 0, 1, 1], [0, 0, 0, 0, 0, 0, 0, 1, 1],
               [0, 0, 0, 0, 1, 1, 1, 0, 1], [0, 0, 0, 0, 0, 1, 1, 0, 1], [0, 0, 0, 0, 0, 0, 0, 1, 0],
               [0, 0, 0, 0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0, 0, 0]],
              ['input0', 'input1', 'seqconv3x3', 'seqconv5x5', 'maxpool3x3', 'seqconv5x5', 'seqconv5x5',
               'seqconv5x5', 'output']),
    make_cell([[0, 0, 1, 1, 0, 1], [0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 0, 1], [0, 0, 0, 0, 0, 1],
               [0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0]],
              ['input0', 'input1', 'seqconv5x5', 'seqconv3x3', 'seqconv5x5', 'output']))


# --------------------------------------------------------------------------------------------------
# Graph tensors and class labels
# --------------------------------------------------------------------------------------------------

def cell_tensors(spec, max_vertices=MAX_VERTICES, vocab=VOCAB):
    """(edges, nodes, n) zero-padded to max_vertices: edges[i][j] = 1 for j -> i (lower
    triangular, the reference's matrix.T), nodes one-hot over `vocab`."""
    V = len(spec.ops)
    edges = torch.zeros(max_vertices, max_vertices)
    edges[:V, :V] = torch.tensor(spec.matrix, dtype=torch.float32).t()
    nodes = torch.zeros(max_vertices, len(vocab))
    nodes[torch.arange(V), torch.tensor([vocab.index(op) for op in spec.ops])] = 1.
    return edges, nodes, V


def cell_from_tensors(edges, nodes, n):
    """The legal cell a generated graph describes (`edge_decisions`, argmax op, `repair`), or None."""
    n = int(n)
    kinds = nodes[:n].argmax(1).tolist()
    ops = ['input0', 'input1'] + [VOCAB[k] for k in kinds[2:n - 1]] + ['output']
    if any(op in ('output', 'input0', 'input1') for op in ops[2:-1]):
        return None
    matrix = [[0] * n for _ in range(n)]
    for v in range(2, n):
        for j in edge_decisions(edges[v, :v]).nonzero().flatten().tolist():
            matrix[j][v] = 1
    return repair(make_cell(matrix, ops))


def quantile_labels(values, num_classes):
    """The reference's quantile classes: split points sorted[len // n * i] (i = 1..n-1); a value's
    class is the first i whose split point it does not exceed, else n - 1 (the best/largest)."""
    ordered = sorted(values)
    splits = [ordered[len(ordered) // num_classes * i] for i in range(1, num_classes)]
    return [next((i for i, s in enumerate(splits) if v <= s), num_classes - 1) for v in values]


# --------------------------------------------------------------------------------------------------
# One-shot supernet (SPEC 6.2, `NASWSNetworkCIFAR`)
# --------------------------------------------------------------------------------------------------

class OneShotCell(nn.Module):
    """Every op vertex slot holds all NAG ops (plus stride-2 copies in a reduction cell, used when
    all of a vertex's predecessors are cell inputs, as in model.NAGVertex); the cell output sums
    per-slot 1x1 convs of the chosen predecessors (= one 1x1 conv over their concat), so it always
    has C channels whatever the cell."""

    def __init__(self, C_prev_prev, C_prev, C, reduction, reduction_prev, max_vertices):
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = FactorizedReduce(C_prev_prev, C) if reduction_prev else ReLUConvBN(C_prev_prev, C, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)
        slots = max_vertices - 3

        def op_slots(stride):
            return nn.ModuleList(nn.ModuleDict({op: OPS[op](C, stride, True) for op in NAG_OPS}) for _ in range(slots))

        self.ops = op_slots(1)
        if reduction:
            self.strided_ops = op_slots(2)
            self.halve_inputs = nn.ModuleList(FactorizedReduce(C, C) for _ in range(2))
        self.combine = nn.ModuleList(nn.Conv2d(C, C, 1, bias=False) for _ in range(max_vertices - 1))
        self.combine_bn = nn.BatchNorm2d(C)

    def forward(self, s0, s1, spec):
        inputs = [self.preprocess0(s0), self.preprocess1(s1)]
        states = list(inputs)
        if self.reduction:
            states = [halve(h) for halve, h in zip(self.halve_inputs, inputs)]
        last = len(spec.ops) - 1
        for t in range(2, last):
            preds = predecessors(spec, t)
            if self.reduction and all(p < 2 for p in preds):
                states.append(self.strided_ops[t - 2][spec.ops[t]](sum(inputs[p] for p in preds)))
            else:
                states.append(self.ops[t - 2][spec.ops[t]](sum(states[p] for p in preds)))
        return self.combine_bn(sum(self.combine[p](states[p].relu()) for p in predecessors(spec, last)))


class OneShotNetwork(nn.Module):
    """The weight-sharing supernet: DARTS CIFAR skeleton (stem 3C, reductions at layers//3 and
    2*layers//3), cells of `OneShotCell`.  forward(x, arch) runs the (normal, reduce) pair `arch`."""

    def __init__(self, C, num_classes, layers, max_vertices=MAX_VERTICES, in_channels=3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 3 * C, 3, padding=1, bias=False), nn.BatchNorm2d(3 * C))
        self.cells = nn.ModuleList()
        C_prev_prev, C_prev, C_curr, reduction_prev = 3 * C, 3 * C, C, False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            C_curr *= 2 if reduction else 1
            self.cells.append(OneShotCell(C_prev_prev, C_prev, C_curr, reduction, reduction_prev, max_vertices))
            C_prev_prev, C_prev, reduction_prev = C_prev, C_curr, reduction
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, x, arch):
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, arch[1] if cell.reduction else arch[0])
        return self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))


# --------------------------------------------------------------------------------------------------
# Generator (SPEC 6.4) and discriminator (SPEC 6.5)
# --------------------------------------------------------------------------------------------------

def mlp(*dims):
    """Linear layers with LeakyReLU(0.2) between them."""
    layers = []
    for i in range(len(dims) - 1):
        layers += [nn.Linear(dims[i], dims[i + 1])] + ([nn.LeakyReLU(0.2)] if i < len(dims) - 2 else [])
    return nn.Sequential(*layers)


class GatedSum(nn.Module):
    """Graph readout sum_v Linear(h_v) * sigmoid(gate(h_v)) over the present vertices, L2-normalised."""

    def __init__(self, node_dim, graph_dim):
        super().__init__()
        self.project = nn.Linear(node_dim, graph_dim)
        self.gate = nn.Linear(node_dim, 1)

    def forward(self, h, mask):
        weighted = self.project(h) * torch.sigmoid(self.gate(h)) * mask.unsqueeze(-1)
        return F.normalize(weighted.sum(1), dim=-1)


class MessagePassing(nn.Module):
    """Gated graph propagation: a message Linear(2d -> 2d) of (source, target) states along every edge
    and another along its reverse, summed per vertex, then a GRU update."""

    def __init__(self, dim, layers):
        super().__init__()
        self.forward_messages = nn.ModuleList(nn.Linear(2 * dim, 2 * dim) for _ in range(layers))
        self.reverse_messages = nn.ModuleList(nn.Linear(2 * dim, 2 * dim) for _ in range(layers))
        self.updates = nn.ModuleList(nn.GRUCell(2 * dim, dim) for _ in range(layers))

    def forward(self, h, adjacency):
        """h: (B, n, d); adjacency[b, i, j] = 1 for an edge j -> i."""
        B, n, d = h.shape
        for forward_message, reverse_message, update in zip(self.forward_messages, self.reverse_messages, self.updates):
            target = h.unsqueeze(2).expand(B, n, n, d)   # [b, i, j] -> h_i
            source = h.unsqueeze(1).expand(B, n, n, d)   # [b, i, j] -> h_j
            a = adjacency.unsqueeze(-1)
            incoming = (a * forward_message(torch.cat([source, target], -1))).sum(2)
            outgoing = (a * reverse_message(torch.cat([target, source], -1))).sum(1)
            h = update((incoming + outgoing).reshape(B * n, 2 * d), h.reshape(B * n, d)).view(B, n, d)
        return h


def edge_decisions(probabilities):
    """The edges a generated vertex takes from its row of edge probabilities over the earlier
    vertices: those above 0.5, and at least the likeliest one, so that every vertex has an input."""
    return (probabilities > 0.5) | F.one_hot(probabilities.argmax(-1), probabilities.size(-1)).bool()


class CellGenerator(nn.Module):
    """DeepGMG-style generation of one cell, vertex by vertex, after the input vertices
    (`input_kinds`, indices into a vocabulary of `vocab_size` types whose type 0 is the output;
    NAG's by default, nasbench101.VOCAB works too): propagate, choose the vertex type (never an
    input, not yet the output; the output is forced at the last slot), initialise it, then decide
    each edge from every earlier vertex (at least one).  Returns soft (edges (B, M, M), nodes
    (B, M, vocab_size)) that are differentiable in the generator, and the vertex counts n (B,);
    hard decisions drive the autoregression."""

    def __init__(self, condition_dim, node_dim, graph_dim, layers, dropout, max_vertices,
                 input_kinds=(INPUT0, INPUT1), vocab_size=len(VOCAB)):
        super().__init__()
        self.max_vertices, self.input_kinds, self.vocab_size = max_vertices, tuple(input_kinds), vocab_size
        self.type_embedding = nn.Embedding(vocab_size, node_dim)
        self.dropout = nn.Dropout(dropout)
        self.propagate = MessagePassing(node_dim, layers)
        self.readout = GatedSum(node_dim, graph_dim)
        self.init_readout = GatedSum(node_dim, graph_dim)
        self.choose_type = mlp(condition_dim + graph_dim, graph_dim, vocab_size)
        self.init_input = mlp(node_dim + condition_dim, node_dim + graph_dim, node_dim)
        self.init_vertex = mlp(node_dim + graph_dim + condition_dim, node_dim + graph_dim, node_dim)
        self.choose_edge = mlp(2 * node_dim + graph_dim + condition_dim, node_dim + graph_dim, 1)

    def forward(self, condition):
        B, M, device = condition.size(0), self.max_vertices, condition.device
        first = len(self.input_kinds)
        kinds = torch.tensor(self.input_kinds, device=device).expand(B, first)
        h = self.init_input(torch.cat([self.type_embedding(kinds), condition.unsqueeze(1).expand(B, first, -1)], -1))
        edges = condition.new_zeros(B, M, M)
        nodes = condition.new_zeros(B, M, self.vocab_size)
        nodes[:, range(first), self.input_kinds] = 1.
        hard_edges = condition.new_zeros(B, M, M)
        open_ = torch.ones(B, dtype=torch.bool, device=device)
        count = torch.full((B,), M, dtype=torch.long, device=device)
        forbidden = torch.zeros(self.vocab_size, dtype=torch.bool, device=device)
        forbidden[list(self.input_kinds)] = True
        for t in range(first, M):
            mask = condition.new_ones(B, t)
            h = F.normalize(self.propagate(self.dropout(h), hard_edges[:, :t, :t].clone()), dim=-1)
            graph, graph_init = self.readout(h, mask), self.init_readout(h, mask)
            if t == M - 1:
                probs = F.one_hot(torch.full((B,), OUTPUT, device=device), self.vocab_size).to(condition.dtype)
            else:
                # A cell needs an op vertex, so the first one may not be the output.
                forbid = forbidden.clone()
                forbid[OUTPUT] = t == first
                logits = self.choose_type(torch.cat([condition, graph], -1)).masked_fill(forbid, float('-inf'))
                probs = logits.softmax(-1)
            kind = probs.argmax(-1)
            live = open_.to(condition.dtype).unsqueeze(-1)
            nodes[:, t] = probs * live
            new = self.init_vertex(torch.cat([self.type_embedding(kind), graph_init, condition], -1))
            new = F.normalize(new, dim=-1)
            pair = torch.cat([h, new.unsqueeze(1).expand(B, t, -1), graph.unsqueeze(1).expand(B, t, -1),
                              condition.unsqueeze(1).expand(B, t, -1)], -1)
            p = torch.sigmoid(self.choose_edge(pair).squeeze(-1))
            chosen = edge_decisions(p.detach())
            edges[:, t, :t] = p * live
            hard_edges[:, t, :t] = chosen.to(condition.dtype) * live
            finished = open_ & (kind == OUTPUT)
            count[finished] = t + 1
            open_ = open_ & ~finished
            h = torch.cat([h, new.unsqueeze(1)], 1)
            if not open_.any():
                break
        return edges, nodes, count


def normalized_labels(embeddings, labels):
    """Concatenated L2-normalised embeddings of the class labels (B, K) of the K objectives."""
    return torch.cat([F.normalize(embedding(labels[:, k]), dim=-1) for k, embedding in enumerate(embeddings)], -1)


class ArchGenerator(nn.Module):
    """G(z, labels): a (normal, reduce) pair of generated cells conditioned on one class label per
    objective (`classes` lists each objective's class count: [3] accuracy, [3, 3] accuracy and params)."""

    def __init__(self, classes, latent_dim=100, label_dim=10, node_dim=250, graph_dim=56, layers=3, dropout=0.5,
                 max_vertices=MAX_VERTICES):
        super().__init__()
        self.classes, self.latent_dim = list(classes), latent_dim
        self.label_embeddings = nn.ModuleList(nn.Embedding(n, label_dim) for n in classes)
        condition_dim = latent_dim + label_dim * len(classes)
        self.normal = CellGenerator(condition_dim, node_dim, graph_dim, layers, dropout, max_vertices)
        self.reduce = CellGenerator(condition_dim, node_dim, graph_dim, layers, dropout, max_vertices)

    def forward(self, z, labels):
        condition = torch.cat([z, normalized_labels(self.label_embeddings, labels)], -1)
        return self.normal(condition), self.reduce(condition)


class GraphConvolution(nn.Module):
    """X -> Â X W with Â = D^-1/2 (A + A^T + I) D^-1/2 (Kipf and Welling), dropout on X."""

    def __init__(self, dim, dropout):
        super().__init__()
        self.weight = nn.Linear(dim, dim, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, normalized_adjacency):
        return normalized_adjacency @ self.weight(self.dropout(x))


class CellEmbedder(nn.Module):
    """Graph embedding of one (soft) cell: node Linear, GCN layers, gated-sum readout over the n vertices."""

    def __init__(self, node_dim, graph_dim, layers, dropout):
        super().__init__()
        self.embed = nn.Linear(len(VOCAB), node_dim, bias=False)
        self.convolutions = nn.ModuleList(GraphConvolution(node_dim, dropout) for _ in range(layers))
        self.readout = GatedSum(node_dim, graph_dim)

    def forward(self, edges, nodes, n):
        M = edges.size(1)
        mask = (torch.arange(M, device=edges.device) < n.unsqueeze(-1)).to(edges.dtype)
        present = mask.unsqueeze(1) * mask.unsqueeze(2)
        adjacency = (edges + edges.transpose(1, 2)) * present + torch.eye(M, device=edges.device)
        scale = adjacency.sum(-1).rsqrt()
        adjacency = scale.unsqueeze(-1) * adjacency * scale.unsqueeze(1)
        x = self.embed(nodes)
        for i, convolution in enumerate(self.convolutions):
            x = convolution(x, adjacency)
            if i < len(self.convolutions) - 1:
                x = F.leaky_relu(x, 0.2)
        return self.readout(F.normalize(x, dim=-1), mask)


class ArchDiscriminator(nn.Module):
    """D(arch, labels): embeddings of both cells and the class labels, then an MLP halving its width
    `mlp_layers` times down to one realism score."""

    def __init__(self, classes, label_dim=10, node_dim=250, graph_dim=56, gcn_layers=3, mlp_layers=4,
                 gcn_dropout=0.5, mlp_dropout=0.5):
        super().__init__()
        self.normal = CellEmbedder(node_dim, graph_dim, gcn_layers, gcn_dropout)
        self.reduce = CellEmbedder(node_dim, graph_dim, gcn_layers, gcn_dropout)
        self.label_embeddings = nn.ModuleList(nn.Embedding(n, label_dim) for n in classes)
        dims = [2 * graph_dim + label_dim * len(classes)]
        dims += [max(dims[0] // 2 ** i, 1) for i in range(1, mlp_layers)] + [1]
        layers = []
        for i in range(len(dims) - 1):
            layers += [nn.Dropout(mlp_dropout), nn.Linear(dims[i], dims[i + 1])]
            if i < len(dims) - 2:
                layers.append(nn.LeakyReLU(0.2))
        self.score = nn.Sequential(*layers)

    def forward(self, normal, reduce, labels):
        features = [self.normal(*normal), self.reduce(*reduce), normalized_labels(self.label_embeddings, labels)]
        return self.score(torch.cat(features, -1)).squeeze(-1)


# --------------------------------------------------------------------------------------------------
# LSGAN training and generation
# --------------------------------------------------------------------------------------------------

REAL, FAKE = 1.0, 0.0


def random_labels(generator, batch_size, device):
    return torch.stack([torch.randint(n, (batch_size,), device=device) for n in generator.classes], -1)


def _update(module, optimizer, loss, max_norm):
    """Backpropagate and step, unless the loss is not finite (the caller's guard decides then)."""
    optimizer.zero_grad(set_to_none=True)
    if not torch.isfinite(loss):
        return
    loss.backward()
    if max_norm:
        nn.utils.clip_grad_norm_(module.parameters(), max_norm)
    optimizer.step()


def discriminator_step(generator, discriminator, optimizer, real, labels, clip_norm=0.):
    """One LSGAN critic step: ½[(D(real, y) - 1)² + D(G(z, y'), y')²]; returns the loss."""
    normal, reduce = real
    batch = labels.size(0)
    z = torch.randn(batch, generator.latent_dim, device=labels.device)
    fake_labels = random_labels(generator, batch, labels.device)
    with torch.no_grad():
        fake = generator(z, fake_labels)
    real_score = discriminator(normal, reduce, labels)
    fake_score = discriminator(*fake, fake_labels)
    loss = 0.5 * (F.mse_loss(real_score, torch.full_like(real_score, REAL))
                  + F.mse_loss(fake_score, torch.full_like(fake_score, FAKE)))
    _update(discriminator, optimizer, loss, clip_norm)
    return loss.detach()


def generator_step(generator, discriminator, optimizer, batch, device, clip_norm=0.):
    """One LSGAN generator step: (D(G(z, y), y) - 1)² with fresh z and y; returns the loss."""
    z = torch.randn(batch, generator.latent_dim, device=device)
    labels = random_labels(generator, batch, device)
    score = discriminator(*generator(z, labels), labels)
    loss = F.mse_loss(score, torch.full_like(score, REAL))
    _update(generator, optimizer, loss, clip_norm)
    return loss.detach()


@torch.no_grad()
def generate(generator, labels, count, seed, batch_size=64, max_batches=100):
    """`count` legal, distinct architectures for one label tuple (a list of class indices), drawing
    z ~ N(0, I) from a generator seeded with `seed`.  Fewer if `max_batches` batches do not yield
    enough (a collapsed generator)."""
    was_training = generator.training
    generator.eval()
    device = next(generator.parameters()).device
    rng = torch.Generator().manual_seed(seed)
    found, seen = [], set()
    try:
        for _ in range(max_batches):
            z = torch.randn(batch_size, generator.latent_dim, generator=rng).to(device)
            y = torch.tensor([labels] * batch_size, device=device)
            cells = generator(z, y)
            for b in range(batch_size):
                arch = DagArch(*(cell_from_tensors(*(t[b] for t in graph)) for graph in cells))
                if None not in arch and arch not in seen:
                    seen.add(arch)
                    found.append(arch)
                    if len(found) == count:
                        return found
        return found
    finally:
        generator.train(was_training)


def arch_batch(archs, max_vertices=MAX_VERTICES):
    """Stacked graph tensors ((edges, nodes, n) of the normal cells, same of the reduce cells)."""
    cells = []
    for which in range(2):
        tensors = [cell_tensors(arch[which], max_vertices) for arch in archs]
        cells.append((torch.stack([t[0] for t in tensors]), torch.stack([t[1] for t in tensors]),
                      torch.tensor([t[2] for t in tensors])))
    return cells
