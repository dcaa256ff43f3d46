"""The DARTS supernet with searchable attention (Att-DARTS).

Liu, Simonyan and Yang, "DARTS: Differentiable Architecture Search", ICLR 2019
(https://arxiv.org/abs/1806.09055); Nakai, Matsubara and Uehara, "Att-DARTS: Differentiable
Neural Architecture Search for Attention", IJCNN 2020.

Every edge of a cell is a softmax-weighted mixture of candidates.  `--location` decides where
attention is searched (the locations of the Att-DARTS authors' code):

    after_every          ops (alpha), then attentions incl. Identity (beta) on every edge
    end                  ops (alpha); attention mixture (gamma) on the concatenated cell output
    after_every_and_end  both of the above
    mixed_with_operation ops and attentions compete in one softmax (alpha)
    double_mixed         two stacked mixtures of ops and attentions (alpha, beta)
    no_attention         plain DARTS

The architecture weights are registered parameters (`arch.*`) shared by all normal (resp. all
reduction) cells; they are in `state_dict` and are kept out of `weight_parameters()`.

Options against the memory and the collapse of DARTS (`train_search.py` flags; all off by default):

    partial_channels K   PC-DARTS (Xu et al., "PC-DARTS: Partial Channel Connections for
                         Memory-Efficient Architecture Search", ICLR 2020): each edge sends the
                         first C/K channels of its input through its mixture (both layers: ops, then
                         attentions on those C/K channels) and the other channels around it (a 2x2
                         max pool on stride-2 edges), then shuffles the channels in K groups
    edge_normalization   PC-DARTS's edge weights: node = sum_j softmax_j(edges) * edge_j, with the
                         softmax over the node's inputs; the derivation ranks edges by them too
    auxiliary_skip       DARTS- (Chu et al., "DARTS-: Robustly Stepping out of Performance Collapse
                         without Indicators", ICLR 2021): every op mixture adds a * skip(x), with `a`
                         (`MixedEdge.auxiliary_weight`) decayed to 0 by the search loop
    param_free_dropout   P-DARTS (Chen et al., "Progressive Differentiable Architecture Search",
                         ICCV 2019): dropout (rate `MixedEdge.dropout`, decayed by the search loop)
                         on the op layer's parameter-free candidates

P-DARTS's progressive search (`train_search.py --stage_layers`) builds the supernet of each stage
with `kept_ops`: on each edge only the op candidates the stage before kept (see
`strongest_candidates`) are built, and the softmax of the op layer runs over them alone.

And one against the memory that changes nothing the network computes:

    recompute_cells      activation checkpointing (Chen et al., "Training Deep Nets with Sublinear
                         Memory Cost", 2016) per cell: in training, each cell's forward keeps only
                         its inputs, and its activations are computed again in the backward pass;
                         a step then holds the cell boundaries and one cell's activations, for
                         about one more forward pass of compute
"""
from contextlib import contextmanager, nullcontext

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from genotypes import Genotype, entry_attention, entry_input, entry_op
from model import build_cell_stack, cifar_stem
from operations import (ChannelShuffle, FactorizedReduce, ReLUConvBN, make_candidate, regroup_shuffle_convs,
                        skip_connect)
from search_space import LOCATIONS, candidate_lists, resolve_primitives  # noqa: F401 (LOCATIONS re-exported)
from utils import substituted

# Arch-parameter prefix per layer (and of the edge weights), as named in the logs and the checkpoint.
TABLE_PREFIX = {'first': 'alphas', 'second': 'betas', 'bottleneck': 'gammas', 'edges': 'edges'}


def best_candidate(row, names, allow_none):
    """Index of the strongest candidate of a weight row ('none' excluded unless allowed; ties go
    to the first)."""
    scores = [(float(row[k]), -k) for k, name in enumerate(names) if allow_none or name != 'none']
    return -max(scores)[1]


def strongest_edges(alphas, names, steps, allow_none=False):
    """The DARTS derivation: for each node, its two input edges whose best candidate is strongest.
    `alphas` has one row per edge (node 0's 2 inputs, node 1's 3, ...); returns (row, input, best
    candidate index) per kept edge, two per node, strongest first."""
    kept, start = [], 0
    for i in range(steps):
        rows = alphas[start:start + 2 + i]
        best = [best_candidate(rows[j], names, allow_none) for j in range(2 + i)]
        chosen = sorted(range(2 + i), key=lambda j: -float(rows[j][best[j]]))[:2]
        kept += [(start + j, j, best[j]) for j in chosen]
        start += 2 + i
    return kept


def strongest_candidates(weights, keep):
    """P-DARTS's pruning between stages: per edge (row of `weights`, a softmaxed op table), the
    indices of its `keep` strongest candidates ('none' counts like any other, as in P-DARTS), in
    candidate order; ties go to the earlier candidate."""
    return [sorted(sorted(range(len(row)), key=lambda k: -float(row[k]))[:keep]) for row in weights]


class MixedEdge(nn.Module):
    """sum_k w_k * candidate_k(x), the DARTS mixed operation.  `none` is never built: its term is
    zero.  `pool_bn` wraps the weight-free pools in a BN with the supernet's `affine` (DARTS; ANAS's
    unit does not).

    `auxiliary_skip` adds `auxiliary_weight * skip(x)` (DARTS-; skip: identity, or a non-affine
    FactorizedReduce on a stride-2 edge); `param_free_dropout` drops out the outputs of the
    candidates without parameters at the rate `dropout` (P-DARTS).  The search loop sets both
    rates every epoch.  `kept`: the indices of the candidates to build (all by default; P-DARTS's
    later stages)."""

    def __init__(self, names, C, stride, height, width, affine, pool_bn=True, auxiliary_skip=False,
                 param_free_dropout=False, kept=None):
        super().__init__()
        self.active = [k for k in (range(len(names)) if kept is None else kept) if names[k] != 'none']
        self.candidates = nn.ModuleList(
            make_candidate(names[k], C, stride, height, width, affine, search=pool_bn) for k in self.active)
        self.auxiliary = skip_connect(C, stride, affine=False) if auxiliary_skip else None
        self.auxiliary_weight = 0.0
        self.droppable = [param_free_dropout and not list(op.parameters()) for op in self.candidates]
        self.dropout = 0.0

    def forward(self, x, weights):
        out = sum(weights[k] * self.dropped(j, op(x)) for j, (k, op) in enumerate(zip(self.active, self.candidates)))
        return self.add_auxiliary(out, x)

    def dropped(self, j, h):
        """Candidate j's output h, dropped out if it is a parameter-free candidate."""
        return F.dropout(h, self.dropout, self.training) if self.droppable[j] and self.dropout > 0 else h

    def add_auxiliary(self, out, x):
        return out if self.auxiliary is None else out + self.auxiliary_weight * self.auxiliary(x)

    def candidate(self, k):
        """The module of candidate k (of the names the edge was built from)."""
        return self.candidates[self.active.index(k)]


@contextmanager
def own_buffers(module):
    """Inside, `module`'s buffers are copies: a forward computed again for the backward pass
    (`recompute_cells`) updates the BatchNorm running statistics of the copies, so that the
    model's are updated once per step, as without recomputation."""
    with substituted(module, {name: buffer.clone() for name, buffer in module.named_buffers()}):
        yield


def node_sizes(steps):
    """Input edges of each intermediate node: 2, 3, 4, ..."""
    return [2 + i for i in range(steps)]


def node_softmax(edge_logits, steps):
    """PC-DARTS's edge weights: a softmax over each node's input edges (the rows of its node)."""
    return torch.cat([F.softmax(group, dim=-1) for group in torch.split(edge_logits, node_sizes(steps))])


class SearchCell(nn.Module):
    """A DARTS search cell.  With `partial_channels` K > 1 (PC-DARTS) the mixed edges are built
    for C/K channels: `mixed_channels` is what enters them, `bypass` what goes around, `merge`
    joins the two."""

    def __init__(self, lists, steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev,
                 height, width, affine, partial_channels=1, auxiliary_skip=False, param_free_dropout=False,
                 kept_ops=None):
        super().__init__()
        self.steps, self.multiplier, self.reduction = steps, multiplier, reduction
        self.partial_channels = partial_channels
        self.preprocess0 = (FactorizedReduce(C_prev_prev, C, affine) if reduction_prev
                            else ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine))
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine)
        C_mixed = C // partial_channels
        self.first = nn.ModuleList()
        self.second = nn.ModuleList() if lists['second'] else None
        self.strides = []
        for i in range(steps):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                self.strides.append(stride)
                self.first.append(MixedEdge(lists['first'], C_mixed, stride, height, width, affine,
                                            auxiliary_skip=auxiliary_skip, param_free_dropout=param_free_dropout,
                                            kept=kept_ops[len(self.strides) - 1] if kept_ops else None))
                if self.second is not None:
                    self.second.append(MixedEdge(lists['second'], C_mixed, 1, height, width, affine))
        self.bottleneck = (MixedEdge(lists['bottleneck'], C * multiplier, 1, height, width, affine)
                           if lists['bottleneck'] else None)
        if partial_channels > 1:
            # ceil_mode: on odd sizes the stride-2 candidates round up (7 -> 4), and so must the bypass.
            self.bypass_pool = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.shuffle = ChannelShuffle(partial_channels)

    def forward(self, s0, s1, weights):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self.steps):
            edges = range(offset, offset + len(states))
            states.append(self.node(states, edges, weights))
            offset += len(edges)
        out = torch.cat(states[-self.multiplier:], dim=1)
        if self.bottleneck is not None:
            out = self.bottleneck(out, weights['bottleneck'])
        return out

    def node(self, states, edges, weights):
        """An intermediate node: the sum of its input edges, edge e reading states[e - edges[0]]."""
        outs = [self.first[e](self.mixed_channels(h), weights['first'][e]) for e, h in zip(edges, states)]
        if self.second is not None:
            outs = [self.second[e](h, weights['second'][e]) for e, h in zip(edges, outs)]
        return self.join(outs, edges, states, weights)

    def join(self, outs, edges, states, weights):
        """The node from its edges' mixture outputs: each merged with its bypassed channels (partial
        channels), then summed (weighted under edge normalization)."""
        if self.partial_channels > 1:
            outs = [self.merge(out, self.bypass(e, h)) for e, out, h in zip(edges, outs, states)]
        return self.edge_sum(outs, edges, weights)

    def mixed_channels(self, h):
        return h[:, :h.shape[1] // self.partial_channels] if self.partial_channels > 1 else h

    def bypass(self, e, h):
        """The channels of h that edge e sends around its mixture, at the edge's output size."""
        rest = h[:, h.shape[1] // self.partial_channels:]
        return self.bypass_pool(rest) if self.strides[e] == 2 else rest

    def merge(self, mixed, bypassed):
        return self.shuffle(torch.cat([mixed, bypassed], dim=1))

    @staticmethod
    def edge_sum(outs, edges, weights):
        """sum_e outs[e], or with edge normalization sum_e edge_weight_e * outs[e]."""
        if weights.get('edges') is None:
            return sum(outs)
        return sum(w * out for w, out in zip(weights['edges'][edges[0]:edges[-1] + 1], outs))

    def forward_path(self, s0, s1, path):
        """The cell of one discrete architecture (`SearchNetwork.path`): each node sums only its two
        chosen edges, each edge computes only its chosen candidates."""
        nodes, bottleneck = path
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for edges in nodes:
            outs = [self.first[row].candidate(first)(self.mixed_channels(states[j])) for row, j, first, _ in edges]
            if self.second is not None:
                outs = [self.second[row].candidate(second)(h) for (row, _, _, second), h in zip(edges, outs)]
            if self.partial_channels > 1:
                outs = [self.merge(out, self.bypass(row, states[j])) for (row, j, _, _), out in zip(edges, outs)]
            states.append(sum(outs))
        out = torch.cat(states[-self.multiplier:], dim=1)
        return out if bottleneck is None else self.bottleneck.candidate(bottleneck)(out)


class SearchNetwork(nn.Module):
    """The supernet: a stem, `layers` search cells (reduction at 1/3 and 2/3 depth), a classifier.

    `affine` gives the cells' BatchNorms (preprocessing, ops, pool wrappers) weights, as CNAS's
    `--use_sparse` does; DARTS's are non-affine.  The stem's BatchNorm is affine when
    `stem_affine` or `affine`: DARTS and Att-DARTS have an affine stem, CNAS's follows its cells
    (stem_affine=False).  `reduce_level` 1 or 2 halves the image in the stem (CNAS, for data
    sets larger than CIFAR; model.cifar_stem); `shuffle_groups='auto'` the grouped
    `shuffle_conv_3x3`.  `partial_channels`, `edge_normalization`, `auxiliary_skip`,
    `param_free_dropout`, `recompute_cells` and `kept_ops` ({'normal': per edge the indices of the
    op candidates to keep, 'reduce': ...}): see the module docstring."""

    def __init__(self, C=16, num_classes=10, layers=8, location='after_every', primitives='darts',
                 steps=4, multiplier=None, stem_multiplier=3, in_channels=3, image_size=32, affine=False,
                 stem_affine=True, reduce_level=0, shuffle_groups='1', partial_channels=1,
                 edge_normalization=False, auxiliary_skip=False, param_free_dropout=False, recompute_cells=False,
                 kept_ops=None):
        super().__init__()
        if partial_channels < 1 or C % partial_channels:
            raise ValueError(f"partial channels {partial_channels} must divide the {C} initial channels")
        self.config = dict(C=C, num_classes=num_classes, layers=layers, location=location,
                           primitives=resolve_primitives(primitives), steps=steps,
                           multiplier=multiplier or steps, stem_multiplier=stem_multiplier,
                           in_channels=in_channels, image_size=image_size, affine=affine,
                           stem_affine=stem_affine, reduce_level=reduce_level, shuffle_groups=shuffle_groups,
                           partial_channels=partial_channels, edge_normalization=edge_normalization,
                           auxiliary_skip=auxiliary_skip, param_free_dropout=param_free_dropout,
                           recompute_cells=recompute_cells, kept_ops=kept_ops)
        self.recompute_cells = recompute_cells
        self.steps, self.multiplier = steps, multiplier or steps
        self.lists = candidate_lists(location, self.config['primitives'])

        C_stem = stem_multiplier * C
        self.stem, stem_size = cifar_stem(in_channels, C_stem, reduce_level, affine=stem_affine or affine)

        def make_cell(C_prev_prev, C_prev, C_curr, reduction, reduction_prev, size):
            return SearchCell(self.lists, steps, self.multiplier, C_prev_prev, C_prev, C_curr, reduction,
                              reduction_prev, size, size, affine, partial_channels, auxiliary_skip,
                              param_free_dropout, kept_ops and kept_ops['reduce' if reduction else 'normal'])
        self.cells, outputs = build_cell_stack(make_cell, layers, C, C_stem, C_stem, size=stem_size(image_size))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(outputs[-1][0], num_classes)
        regroup_shuffle_convs(self, shuffle_groups)

        num_edges = sum(2 + i for i in range(steps))
        self.arch = nn.ParameterDict()
        for layer, names in self.lists.items():
            if names is None:
                continue
            shape = (num_edges, len(names)) if layer != 'bottleneck' else (len(names),)
            for cell_type in ('normal', 'reduce'):
                self.arch[f'{TABLE_PREFIX[layer]}_{cell_type}'] = nn.Parameter(1e-3 * torch.randn(*shape))
        if edge_normalization:
            for cell_type in ('normal', 'reduce'):
                self.arch[f'{TABLE_PREFIX["edges"]}_{cell_type}'] = nn.Parameter(1e-3 * torch.randn(num_edges))
        for cell_type, kept in (kept_ops or {}).items():
            if len(kept) != num_edges:
                raise ValueError(f"kept_ops['{cell_type}'] has {len(kept)} edges, the cells {num_edges}")
            mask = torch.zeros(num_edges, len(self.lists['first']), dtype=torch.bool)
            for row, candidates in enumerate(kept):
                # Two ops besides none: where the skip limit zeroes a kept skip_connect, another kept op
                # (weight > 0) is derived, never a pruned one (weight 0).
                if sum(self.lists['first'][k] != 'none' for k in candidates) < 2:
                    raise ValueError(f"kept_ops['{cell_type}'][{row}] keeps fewer than two candidates besides none")
                mask[row, candidates] = True
            # Not in the state dict: it is the configuration, rebuilt from kept_ops.
            self.register_buffer(f'kept_{cell_type}', mask, persistent=False)

    def new(self):
        """A fresh supernet with the same configuration and a copy of the architecture weights."""
        clone = type(self)(**self.config)
        clone.arch.load_state_dict(self.arch.state_dict())
        return clone

    def arch_parameters(self):
        return list(self.arch.values())

    def named_weight_parameters(self):
        return [(n, p) for n, p in self.named_parameters() if not n.startswith('arch.')]

    def weight_parameters(self):
        return [p for _, p in self.named_weight_parameters()]

    def softmaxed(self):
        """{table name: softmax over candidates}, e.g. alphas_normal of shape (edges, candidates), over
        the kept candidates only under `kept_ops` (the others weigh 0); the edge weights (edge
        normalization) softmaxed over each node's inputs."""
        return {name: node_softmax(p, self.steps) if name.startswith(TABLE_PREFIX['edges'])
                else F.softmax(self.masked_logits(name, p), dim=-1) for name, p in self.arch.items()}

    def masked_logits(self, name, logits):
        mask = self._buffers.get('kept_' + name.split('_')[-1]) if name.startswith(TABLE_PREFIX['first']) else None
        return logits if mask is None else logits.masked_fill(~mask, float('-inf'))

    def set_guards(self, auxiliary_skip_weight, dropout):
        """This epoch's weight of the auxiliary skip connections and dropout rate of the
        parameter-free candidates (see the module docstring)."""
        for cell in self.cells:
            for edge in cell.first:
                edge.auxiliary_weight, edge.dropout = auxiliary_skip_weight, dropout

    def forward(self, x, genotype=None):
        """The supernet, every edge a mixture weighted by the softmaxed architecture weights; or,
        given `genotype` (an architecture of this space), only that architecture's path through the
        shared weights, the other candidates neither computed nor given gradients: the weight step
        of random search with weight sharing (Li and Talwalkar, UAI 2019)."""
        if genotype is None:
            tables = self.softmaxed()
            weights = {cell_type: {layer: tables.get(f'{prefix}_{cell_type}') for layer, prefix in TABLE_PREFIX.items()}
                       for cell_type in ('normal', 'reduce')}

            def apply(cell, s0, s1, cell_type):
                return cell(s0, s1, weights[cell_type])
        else:
            paths = self.path(genotype)

            def apply(cell, s0, s1, cell_type):
                return cell.forward_path(s0, s1, paths[cell_type])
        if self.recompute_cells and self.training and torch.is_grad_enabled():
            def apply_recomputed(cell, s0, s1, cell_type):
                # The recomputation runs under the forward's autocast and random-number state (the
                # same dropout masks) but with the tensors the cell holds during the backward: a
                # caller that substitutes weights keeps them through the backward (utils.substituted).
                return checkpoint(apply, cell, s0, s1, cell_type, use_reentrant=False,
                                  context_fn=lambda: (nullcontext(), own_buffers(cell)))
            run = apply_recomputed
        else:
            run = apply
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, run(cell, s0, s1, 'reduce' if cell.reduction else 'normal')
        return self.classifier(self.global_pooling(s1).flatten(1))

    def path(self, genotype):
        """{cell type: (nodes, bottleneck)} of a discrete architecture of this space: per node its two
        (weight-table row, input, first-layer candidate, second-layer candidate or None), and the
        bottleneck candidate or None."""
        paths = {}
        for cell_type in ('normal', 'reduce'):
            entries = getattr(genotype, cell_type)
            if len(entries) != 2 * self.steps:
                raise ValueError(f'{cell_type}: {len(entries)} entries for {self.steps} nodes')
            nodes = []
            for node in range(self.steps):
                offset = node * (node + 3) // 2  # rows of the nodes before: 2 + 3 + ...
                nodes.append([(offset + entry_input(entry), entry_input(entry), self.lists['first'].index(entry_op(entry)),
                               self.lists['second'].index(entry_attention(entry)) if self.lists['second'] else None)
                              for entry in entries[2 * node:2 * node + 2]])
            bottleneck = getattr(genotype, cell_type + '_bottleneck')
            paths[cell_type] = (nodes, self.lists['bottleneck'].index(bottleneck) if self.lists['bottleneck'] else None)
        return paths

    def edges(self):
        """(node, input) of every edge, in the row order of the weight tables."""
        return [(i, j) for i in range(self.steps) for j in range(2 + i)]

    def genotype(self, sparse=False, max_skip_connect=None):
        """Derive the discrete cell (DARTS, section 2.4): per node keep the two strongest input edges, ranked
        by their best first-layer weight (times the edge weight under edge normalization, as in
        PC-DARTS); on each, the best op and the best attention.  'none' is excluded unless `sparse`
        (CNAS), where a node may keep a `none` edge.  `max_skip_connect` M (P-DARTS): while the
        normal cell has more than M skip_connect edges, the weakest of their skip_connect weights is
        set to 0 and the cell derived again."""
        with torch.no_grad():
            tables = {k: v.cpu() for k, v in self.softmaxed().items()}
        cells = {}
        for cell_type in ('normal', 'reduce'):
            alphas = tables[f'alphas_{cell_type}']
            edge_weights = tables.get(f'edges_{cell_type}')
            if edge_weights is not None:
                alphas = alphas * edge_weights[:, None]
            limit = max_skip_connect if cell_type == 'normal' else None
            cells[cell_type] = self._derive_cell(alphas, tables.get(f'betas_{cell_type}'), sparse, limit)
            gammas = tables.get(f'gammas_{cell_type}')
            cells[cell_type + '_bottleneck'] = (self.lists['bottleneck'][int(gammas.argmax())]
                                                if gammas is not None else '')
        concat = list(range(2, 2 + self.steps))
        return Genotype(normal=cells['normal'], normal_concat=concat, reduce=cells['reduce'],
                        reduce_concat=concat, normal_bottleneck=cells['normal_bottleneck'],
                        reduce_bottleneck=cells['reduce_bottleneck'])

    def _derive_cell(self, alphas, betas, sparse, max_skip_connect=None):
        first, second = self.lists['first'], self.lists['second']
        while True:
            kept = strongest_edges(alphas, first, self.steps, sparse)
            skips = [row for row, _, k in kept if first[k] == 'skip_connect']
            if max_skip_connect is None or len(skips) <= max_skip_connect:
                break
            skip = first.index('skip_connect')
            alphas = alphas.clone()
            alphas[min(skips, key=lambda row: float(alphas[row, skip])), skip] = 0
        return [(first[k], j, second[best_candidate(betas[row], second, False)] if betas is not None else '')
                for row, j, k in kept]

    def weight_tables(self):
        """The softmaxed tables with their candidate names, as logged to alphas.jsonl (the edge
        weights of edge normalization are `edge_weights`)."""
        with torch.no_grad():
            tables = self.softmaxed()
        out = {}
        for name, values in tables.items():
            layer = next(layer for layer, prefix in TABLE_PREFIX.items() if name.startswith(prefix))
            if layer != 'edges':
                rows = values.reshape(-1, values.shape[-1]).cpu().tolist()
                out[name] = {'candidates': self.lists[layer], 'values': rows}
        return out

    def edge_weights(self):
        """{cell type: the normalised weight of each edge} under edge normalization, else {}."""
        with torch.no_grad():
            return {name.split('_')[-1]: table.cpu().tolist() for name, table in self.softmaxed().items()
                    if name.startswith(TABLE_PREFIX['edges'])}
