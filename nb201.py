"""The NAS-Bench-201 search space: its cells, their string form, enumeration and sampling.

Dong and Yang, "NAS-Bench-201: Extending the Scope of Reproducible Neural Architecture Search",
ICLR 2020 (https://arxiv.org/abs/2001.00326), and its extension as the topology space of
NATS-Bench (Dong et al., TPAMI 2021); reference code D-X-Y/AutoDL-Projects and D-X-Y/NATS-Bench.

A cell has four nodes: node 0 is the cell's input, node j (1..3) sums one op on the edge from every
earlier node, and node 3 is the output.  Each of the 6 edges takes one of 5 ops, so the space holds
5^6 = 15,625 cells, every one of them trained in the benchmark.  The benchmark writes a cell as

    |nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|

one `+`-separated group per node, each `op~input` an edge.  `NB201Genotype` holds the 6 op names in
that order (`EDGES`) and, for the Att-DARTS-style searches of this space, an attention after each
edge's op ('' for none); a cell with an attention has no benchmark entry.  The genotype JSON is
`{"nb201": "<string>"}`, with `"attention": [6 names]` where a cell has attention.

Nothing here needs torch.
"""
import itertools
import random
import re
from collections import namedtuple

from userio import UserError

OPS = ('none', 'skip_connect', 'nor_conv_1x1', 'nor_conv_3x3', 'avg_pool_3x3')
NODES = 4
# (node, input) of each edge, in the order of the string form.
EDGES = tuple((node, source) for node in range(1, NODES) for source in range(node))
SPACE_SIZE = len(OPS) ** len(EDGES)
NO_ATTENTION = ('',) * len(EDGES)

NB201Genotype = namedtuple('NB201Genotype', 'ops attentions', defaults=(NO_ATTENTION,))

_EDGE = re.compile(r'([A-Za-z0-9_]+)~(\d+)')
# What a benchmark table's architecture column holds: an edge of the string form in the first group.
LOOKS_LIKE_ARCH = re.compile(r'^\|[A-Za-z0-9_]+~0\|\+')


def has_attention(genotype):
    return any(genotype.attentions)


def to_string(genotype):
    """The benchmark's string of a cell (its ops only: a cell with attention has no such entry)."""
    groups = []
    for node in range(1, NODES):
        edges = [f'{op}~{source}' for (n, source), op in zip(EDGES, genotype.ops) if n == node]
        groups.append('|' + '|'.join(edges) + '|')
    return '+'.join(groups)


def parse(text, source='--arch'):
    """A cell from its NAS-Bench-201 string; a UserError names what is wrong with it."""
    example = to_string(NB201Genotype(('nor_conv_3x3',) * len(EDGES)))
    if not isinstance(text, str):
        raise UserError(f"{source}: a NAS-Bench-201 cell is a string like {example}, got {text!r}")
    groups = text.strip().split('+')
    if len(groups) != NODES - 1:
        raise UserError(f"{source}: '{text}' has {len(groups)} node group(s) separated by '+'; a NAS-Bench-201 "
                        f"cell has {NODES - 1}, e.g. {example}")
    ops = []
    for node, group in enumerate(groups, start=1):
        edges = group.strip('|').split('|') if group.startswith('|') and group.endswith('|') else None
        if edges is None or len(edges) != node:
            raise UserError(f"{source}: node {node} must be written |op~0|...|op~{node - 1}| with {node} edge(s), "
                            f"got '{group}'")
        for expected_input, edge in enumerate(edges):
            match = _EDGE.fullmatch(edge)
            if not match:
                raise UserError(f"{source}: edge '{edge}' of node {node} must be op~input")
            op, index = match.group(1), int(match.group(2))
            if op not in OPS:
                raise UserError(f"{source}: unknown op '{op}' on edge '{edge}'; NAS-Bench-201 ops: {', '.join(OPS)}")
            if index != expected_input:
                raise UserError(f"{source}: edge '{edge}' of node {node} must read input {expected_input} "
                                f"(edges are listed in input order)")
            ops.append(op)
    return NB201Genotype(tuple(ops))


def validate(genotype, source='genotype', attentions=()):
    """Check op names and, where a cell has attention, that each is a known name."""
    if len(genotype.ops) != len(EDGES) or len(genotype.attentions) != len(EDGES):
        raise UserError(f"{source}: a NAS-Bench-201 cell has {len(EDGES)} edges, got {len(genotype.ops)} op(s) "
                        f"and {len(genotype.attentions)} attention(s)")
    for (node, edge_input), op in zip(EDGES, genotype.ops):
        if op not in OPS:
            raise UserError(f"{source}: unknown op '{op}' on edge {edge_input}->{node}; "
                            f"NAS-Bench-201 ops: {', '.join(OPS)}")
    for (node, edge_input), name in zip(EDGES, genotype.attentions):
        if name and name not in attentions:
            raise UserError(f"{source}: unknown attention '{name}' on edge {edge_input}->{node}; "
                            f"known attentions: {', '.join(attentions)}")
    return genotype


def to_dict(genotype):
    record = {'nb201': to_string(genotype)}
    if has_attention(genotype):
        record['attention'] = list(genotype.attentions)
    return record


def from_dict(record, source='genotype', attentions=()):
    genotype = parse(record['nb201'], source=f"{source}: 'nb201'")
    names = record.get('attention')
    if names is not None:
        if not isinstance(names, list) or len(names) != len(EDGES) or not all(isinstance(n, str) for n in names):
            raise UserError(f"{source}: 'attention' must list {len(EDGES)} attention names ('' for none), "
                            f"one per edge in the order of the string")
        genotype = genotype._replace(attentions=tuple(names))
    return validate(genotype, source, attentions)


def all_genotypes():
    """Every cell of the space (without attention), the last edge's op varying fastest."""
    return [NB201Genotype(ops) for ops in itertools.product(OPS, repeat=len(EDGES))]


def sample_genotypes(n, seed):
    """`n` distinct cells drawn uniformly without replacement; the same `seed` gives the same list."""
    if n < 1:
        raise UserError(f"the number of random architectures must be at least 1, got {n}")
    if n > SPACE_SIZE:
        raise UserError(f"the NAS-Bench-201 space holds only {SPACE_SIZE} cells; ask for at most that many")
    space = all_genotypes()
    return [space[index] for index in random.Random(seed).sample(range(SPACE_SIZE), n)]
