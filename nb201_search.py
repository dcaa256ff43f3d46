"""The NAS-Bench-201 supernet: `train_search.py --space nb201`.

Dong and Yang, "NAS-Bench-201: Extending the Scope of Reproducible Neural Architecture Search",
ICLR 2020 (https://arxiv.org/abs/2001.00326); reference code D-X-Y/AutoDL-Projects,
`xautodl/models/cell_searchs/search_model_darts.py` (`TinyNetworkDarts`), `search_model_gdas.py`
and `search_cells.py` (`NAS201SearchCell`).

The benchmark's network (nb201_model.py: stem, N cells per stage at C, 2C, 4C, residual reduction
blocks, BN-ReLU, pooling, classifier) with every cell a search cell: each of its 6 edges a
`model_search.MixedEdge` of the 5 ops (non-affine BatchNorms, no BatchNorm after the pool, as the
reference), node j the sum of its edges from every earlier node, the output the last node.  One
table of architecture weights (`alphas_normal`, edges x ops) is shared by all cells, and the
machinery of the DARTS supernet (`model_search.SearchCell` and `SearchNetwork`, which these classes
extend) gives this space everything it gives the DARTS space: first and second order, the fast
kernels, partial channels and edge normalization (PC-DARTS), the auxiliary skip and the dropout of
parameter-free ops (DARTS-, P-DARTS), activation recomputation, RS-WS (`forward(x, genotype)`) and
GDAS (`gumbel_tau`).

`--location after_every` adds an attention layer (a mixture of the attentions, `betas_normal`)
after every edge's op, Att-DARTS's search on this space; the cells it derives have no benchmark
entry.  The other locations change the cell's shape (a bottleneck, attentions among the ops) and
have no NAS-Bench-201 form.

The derivation (`genotype`) is the reference's: every edge keeps its strongest op, 'none' included;
with an attention layer, also its strongest attention (none after a 'none' op; Identity is written
as no attention).
"""
import random

import torch
import torch.nn as nn

import nb201
from model_search import TABLE_PREFIX, SearchCell, SearchNetwork
from nb201_model import ResidualReduction, stage_layout
from search_space import candidate_lists, derivable
from userio import UserError

LOCATIONS = ('no_attention', 'after_every')


def bare(attention):
    """An attention's name in a NAS-Bench-201 genotype: '' for Identity, so that a cell whose edges
    chose no attention is the benchmark's cell."""
    return '' if attention == 'Identity' else attention


class NB201SearchCell(SearchCell):
    """A NAS-Bench-201 search cell of C channels (its input's and output's) at size x size."""

    def __init__(self, lists, C, size, affine=False, partial_channels=1, auxiliary_skip=False,
                 param_free_dropout=False):
        nn.Module.__init__(self)
        self.steps, self.reduction, self.bottleneck = nb201.NODES - 1, False, None
        self.build_edges(lists, [1] * len(nb201.EDGES), C, size, size, affine, partial_channels, auxiliary_skip,
                         param_free_dropout, pool_bn=False)

    def forward(self, x, weights):
        states, offset = [x], 0
        for _ in range(self.steps):
            edges = range(offset, offset + len(states))
            states.append(self.node(states, edges, weights))
            offset += len(edges)
        return states[-1]

    def forward_path(self, x, path):
        """The cell of one architecture (`NB201SearchNetwork.path`): per edge only its chosen op
        (and attention) runs; a 'none' edge adds zeros (and, with partial channels, its bypass)."""
        states = [x]
        for node in range(1, nb201.NODES):
            outs = []
            for e, (target, source) in enumerate(nb201.EDGES):
                if target != node:
                    continue
                first, second = path[e]
                h = self.mixed_channels(states[source])
                if first in self.first[e].active:
                    h = self.first[e].candidate(first)(h)
                    if second is not None:
                        h = self.second[e].candidate(second)(h)
                else:
                    h = h.mul(0.0)
                outs.append(self.merge(h, self.bypass(e, states[source])) if self.partial_channels > 1 else h)
            states.append(sum(outs))
        return states[-1]


class NB201SearchNetwork(SearchNetwork):
    """The supernet of the NAS-Bench-201 space.  `layers`: cells per stage (N); `affine`: affine
    BatchNorms in the cells (the reference's are not); the other options are SearchNetwork's."""

    CELL_INPUTS = 1

    def __init__(self, C=16, num_classes=10, layers=5, location='no_attention', in_channels=3, image_size=32,
                 affine=False, partial_channels=1, edge_normalization=False, auxiliary_skip=False,
                 param_free_dropout=False, recompute_cells=False):
        nn.Module.__init__(self)
        if location not in LOCATIONS:
            raise UserError(f"--location {location} has no NAS-Bench-201 form; with --space nb201 use "
                            f"{' or '.join(LOCATIONS)}")
        if partial_channels < 1 or C % partial_channels:
            raise ValueError(f"partial channels {partial_channels} must divide the {C} initial channels")
        self.config = dict(C=C, num_classes=num_classes, layers=layers, location=location, in_channels=in_channels,
                           image_size=image_size, affine=affine, partial_channels=partial_channels,
                           edge_normalization=edge_normalization, auxiliary_skip=auxiliary_skip,
                           param_free_dropout=param_free_dropout, recompute_cells=recompute_cells)
        self.recompute_cells = recompute_cells
        self.steps = nb201.NODES - 1
        self.lists = candidate_lists(location, nb201.OPS)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        self.cells = nn.ModuleList()
        C_prev, size = C, image_size
        for C_curr, reduction in stage_layout(C, layers):
            if reduction:
                size = (size + 1) // 2
                self.cells.append(ResidualReduction(C_prev, C_curr))
            else:
                self.cells.append(NB201SearchCell(self.lists, C_curr, size, affine, partial_channels, auxiliary_skip,
                                                  param_free_dropout))
            C_prev = C_curr
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_prev), nn.ReLU(inplace=False))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)
        edges = len(nb201.EDGES)
        self.arch = nn.ParameterDict()
        for layer in ('first', 'second'):
            if self.lists[layer]:
                shape = (edges, len(self.lists[layer]))
                self.arch[f'{TABLE_PREFIX[layer]}_normal'] = nn.Parameter(1e-3 * torch.randn(*shape))
        if edge_normalization:
            self.arch[f'{TABLE_PREFIX["edges"]}_normal'] = nn.Parameter(1e-3 * torch.randn(edges))

    def search_cells(self):
        return [cell for cell in self.cells if isinstance(cell, NB201SearchCell)]

    def trunk(self, x, run):
        feature = self.stem(x)
        for cell in self.cells:
            feature = run(cell, 'normal', feature) if isinstance(cell, NB201SearchCell) else cell(feature)
        return self.classifier(self.global_pooling(self.lastact(feature)).flatten(1))

    def set_guards(self, auxiliary_skip_weight, dropout):
        for cell in self.search_cells():
            for edge in cell.first:
                edge.auxiliary_weight, edge.dropout = auxiliary_skip_weight, dropout

    def edges(self):
        """(node, input) of every edge, in the row order of the weight tables (nb201.EDGES)."""
        return [list(edge) for edge in nb201.EDGES]

    def path(self, genotype):
        """{'normal': per edge (op candidate index, attention candidate index or None)} of a cell."""
        first, second = self.lists['first'], self.lists['second']
        return {'normal': [(first.index(op), second.index(attention or 'Identity') if second and op != 'none' else None)
                           for op, attention in zip(genotype.ops, genotype.attentions)]}

    def genotype(self, sparse=False, max_skip_connect=None):
        """Every edge's strongest op ('none' included, as the reference; `sparse` changes nothing)
        and, with an attention layer, its strongest attention.  `max_skip_connect` M (P-DARTS):
        while more than M edges keep skip_connect, the weakest of them takes its next op."""
        with torch.no_grad():
            tables = {k: v.detach().cpu() for k, v in self.softmaxed().items()}
        alphas, betas = tables['alphas_normal'].clone(), tables.get('betas_normal')
        first, second = self.lists['first'], self.lists['second']
        skip = first.index('skip_connect')
        while True:
            ops = [first[int(row.argmax())] for row in alphas]
            skips = [e for e, op in enumerate(ops) if op == 'skip_connect']
            if max_skip_connect is None or len(skips) <= max_skip_connect:
                break
            alphas[min(skips, key=lambda e: float(alphas[e, skip])), skip] = -1.0
        attentions = tuple(bare(second[int(betas[e].argmax())]) if betas is not None and op != 'none' else ''
                           for e, op in enumerate(ops))
        return nb201.NB201Genotype(tuple(ops), attentions)

    def edge_choices(self):
        """What an edge of a derived cell can be: (op, attention) pairs ('' after none, or without an
        attention layer)."""
        second = [bare(attention) for attention in derivable(self.lists['second'])]
        return [(op, attention) for op in nb201.OPS
                for attention in (second if second and op != 'none' else [''])]

    def space_size(self):
        return len(self.edge_choices()) ** len(nb201.EDGES)

    def sample_architecture(self, rng):
        """A cell drawn uniformly from the cells this supernet can derive."""
        choices = self.edge_choices()
        edges = [rng.choice(choices) for _ in nb201.EDGES]
        return nb201.NB201Genotype(tuple(op for op, _ in edges), tuple(attention for _, attention in edges))

    def sample_architectures(self, n, seed):
        """`n` distinct cells: without an attention layer nb201.sample_genotypes (compare.py's
        random:N), with one drawn as `sample_architecture` does."""
        if not self.lists['second']:
            return nb201.sample_genotypes(n, seed)
        if n > self.space_size():
            raise UserError(f"the space holds only {self.space_size()} cells; ask for at most that many")
        rng, drawn = random.Random(seed), {}
        while len(drawn) < n:
            genotype = self.sample_architecture(rng)
            drawn.setdefault(genotype, genotype)
        return list(drawn)
