"""NAG's search strategy: the one-shot supernet that scores sampled cells, and the conditional graph
GAN that generates new ones.

Jing, Xu and Zhang, "A Neural Architecture Generator for Efficient Search Space", Neurocomputing 2021
(https://www.sciencedirect.com/science/article/pii/S0925231221016994; reference code kunjing96/NAG,
`gan.py`).  The generator follows DeepGMG (Li et al., "Learning Deep Generative Models of Graphs",
2018); the discriminator uses graph convolutions (Kipf and Welling, ICLR 2017); the loss is LSGAN
(Mao et al., ICCV 2017).

The cells and architectures themselves (`nag_cells.CellSpec`, `nag_cells.DagArch`) are data, in
nag_cells.py.  The evaluation networks are nag_networks.NAGNetworkCIFAR / NAGNetworkImageNet (the
reference's NAO skeleton): inside a reduction cell a vertex whose predecessors are all cell inputs
runs its op at stride 2 on their sum; everywhere else cell inputs are first halved by a
FactorizedReduce.  The one-shot supernet follows the same rule, so the one-shot scores, the
parameter counts and the final training all see the same function.

Fixed with respect to the reference: the NAS-dataset builder trains and scores the
sampled reduction cell (the reference used the normal cell twice); parameter counts are of the
evaluation network in one unit (M); identity vertices get no drop path (nag_networks.NAGVertex).
Deliberate deviation: LSGAN targets are the usual real = 1, fake = 0 (the reference swaps them,
which is the same game).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from model import AuxiliaryHeadCIFAR, build_cell_stack
from nag_cells import INPUT0, INPUT1, MAX_VERTICES, NAG_OPS, OUTPUT, VOCAB, DagArch, make_cell, predecessors, repair
from nag_networks import NAOFactorizedReduce
from operations import OPS, FactorizedReduce, ReLUConvBN
from utils import drop_path


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
# One-shot supernet (the reference's `NASWSNetworkCIFAR`, build_nas_dataset/model_search.py)
# --------------------------------------------------------------------------------------------------

def sep_conv_at_stride(sep_conv, x, stride):
    """An operations.SepConv with its first depthwise conv run at `stride`: the reference's one-shot
    separable convs share their weights between stride 1 and the stride-2 vertices of a reduction cell."""
    if stride == 1:
        return sep_conv(x)
    first, second = sep_conv
    depthwise = first[1]
    x = F.conv2d(F.relu(x), depthwise.weight, None, stride, depthwise.padding, depthwise.dilation, depthwise.groups)
    return second(first[3](first[2](x)))


class OneShotVertex(nn.Module):
    """One op vertex slot (the reference's `Node`): both separable convs, the weight-free pools and,
    in a reduction cell, the stride-2 identity (a NAO FactorizedReduce).  Identity gets no drop
    path."""

    def __init__(self, C, reduction):
        super().__init__()
        self.sep_convs = nn.ModuleDict({op: OPS[op](C, 1, True) for op in ('sep_conv_3x3', 'sep_conv_5x5')})
        self.identity_reduce = NAOFactorizedReduce(C, C) if reduction else None

    def forward(self, x, op, stride, drop_prob):
        if op in self.sep_convs:
            out = sep_conv_at_stride(self.sep_convs[op], x, stride)
        elif op == 'avg_pool_3x3':
            out = F.avg_pool2d(x, 3, stride, 1, count_include_pad=False)
        elif op == 'max_pool_3x3':
            out = F.max_pool2d(x, 3, stride, 1)
        else:
            return x if stride == 1 else self.identity_reduce(x)
        return drop_path(out, drop_prob) if self.training and drop_prob > 0 else out


class OneShotCell(nn.Module):
    """The weight-sharing cell: the inputs calibrated as NAO's `MaybeCalibrateSize` (nag_networks.NAGCell),
    one OneShotVertex per op slot, and the output a ReLU-1x1 conv-BN over the concatenated
    predecessors of the output vertex, whose weight holds one C x C block per possible predecessor
    (`WSReLUConvBN`), so the cell always outputs C channels.  In a reduction cell, a vertex whose
    predecessors are all cell inputs runs at stride 2 on their sum; otherwise each input among its
    predecessors is halved by that slot's own FactorizedReduce, and an input feeding the output by
    one of the cell's."""

    multiplier = 1  # output channels per C, as build_cell_stack reads it from a DARTS cell

    def __init__(self, C_prev_prev, C_prev, C, reduction, reduction_prev, max_vertices):
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = self.preprocess1 = None
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C)
        elif C_prev_prev != C:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0)
        if C_prev != C:
            self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)
        slots = max_vertices - 3
        self.vertices = nn.ModuleList(OneShotVertex(C, reduction) for _ in range(slots))
        if reduction:
            self.halve_inputs = nn.ModuleList(nn.ModuleList(NAOFactorizedReduce(C, C) for _ in range(2))
                                              for _ in range(slots))
            self.halve_outputs = nn.ModuleList(NAOFactorizedReduce(C, C) for _ in range(2))
        self.combine = nn.ModuleList(nn.Conv2d(C, C, 1, bias=False) for _ in range(max_vertices - 1))
        self.combine_bn = nn.BatchNorm2d(C)

    def forward(self, s0, s1, spec, drop_prob=0.):
        states = [s0 if self.preprocess0 is None else self.preprocess0(s0),
                  s1 if self.preprocess1 is None else self.preprocess1(s1)]
        last = len(spec.ops) - 1
        for t in range(2, last):
            preds = predecessors(spec, t)
            strided = self.reduction and all(p < 2 for p in preds)
            inputs = [self.halve_inputs[t - 2][p](states[p]) if self.reduction and not strided and p < 2
                      else states[p] for p in preds]
            states.append(self.vertices[t - 2](sum(inputs[1:], inputs[0]), spec.ops[t], 2 if strided else 1,
                                               drop_prob))
        outputs = [self.halve_outputs[p](states[p]) if self.reduction and p < 2 else states[p]
                   for p in predecessors(spec, last)]
        return self.combine_bn(sum(self.combine[p](h.relu()) for p, h in zip(predecessors(spec, last), outputs)))


class OneShotNetwork(nn.Module):
    """The weight-sharing supernet: stem 3C, `layers` = 3N+2 OneShotCells (reductions at N and 2N+1),
    the DARTS CIFAR auxiliary head after the second reduction (`auxiliary`), global pool, Linear;
    Kaiming-normal initialisation of every parameter of two or more dimensions.  forward(x, arch)
    runs the (normal, reduce) pair `arch` and returns (logits, auxiliary logits or None); drop path
    (`drop_path_prob`) grows with depth, as in nag_networks.NAGNetworkCIFAR."""

    def __init__(self, C, num_classes, layers, max_vertices=MAX_VERTICES, in_channels=3, auxiliary=True,
                 image_size=32):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 3 * C, 3, padding=1, bias=False), nn.BatchNorm2d(3 * C))
        self.drop_path_prob = 0.

        def make_cell(C_prev_prev, C_prev, C_curr, reduction, reduction_prev, size):
            return OneShotCell(C_prev_prev, C_prev, C_curr, reduction, reduction_prev, max_vertices)

        self.cells, outputs = build_cell_stack(make_cell, layers, C, 3 * C, 3 * C, size=image_size)
        self._aux_index = 2 * layers // 3
        C_aux, size_aux = outputs[self._aux_index]
        self.auxiliary_head = AuxiliaryHeadCIFAR(C_aux, num_classes, size_aux) if auxiliary else None
        self.classifier = nn.Linear(outputs[-1][0], num_classes)
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.kaiming_normal_(p)

    def forward(self, x, arch):
        s0 = s1 = self.stem(x)
        logits_aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, arch[1] if cell.reduction else arch[0],
                              self.drop_path_prob * (i + 1) / len(self.cells))
            if i == self._aux_index and self.auxiliary_head is not None and self.training:
                logits_aux = self.auxiliary_head(s1)
        return self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1)), logits_aux


# --------------------------------------------------------------------------------------------------
# Generator (the reference's generator.py) and discriminator (discriminator.py)
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
