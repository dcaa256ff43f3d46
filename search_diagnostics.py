"""Is a differentiable search deciding anything?  Diagnostics of the architecture weights and the
derived genotype, per epoch, from what a search logs (alphas.jsonl tables, genotype dicts).

    entropy            per edge, H(p) = -sum_k p_k log p_k of its softmaxed weights (natural log);
                       log K for the uniform weights of K candidates, 0 for a one-hot row
    uniform_distance   per edge, the total variation distance from uniform, 1/2 sum_k |p_k - 1/K|:
                       0 for uniform, 1 - 1/K for one-hot
    genotype_stability the share of the genotype's edges (and bottlenecks) that the previous
                       epoch's genotype had at the same node
    param_free_normal  how many edges of the normal cell have a parameter-free op (none, pooling,
                       skip_connect, Identity) as their first entry: the DARTS failure mode of
                       cells collapsing onto them (Zela et al., "Understanding and Robustifying
                       Differentiable Architecture Search", ICLR 2020)

A search whose weights stay near uniform (entropy near log K, distance near 0) and whose genotype
keeps changing has not preferred anything: its cell is a draw, not a choice.  A NAS-Bench-201
genotype ({"nb201": ...}) counts as a normal cell of one edge per (node, input).  No torch here.
"""
import math

import nb201

PARAMETER_FREE = ('none', 'max_pool_3x3', 'avg_pool_3x3', 'skip_connect', 'Identity')
# The genotype keys that hold edges, two per node (DARTS/Att-DARTS cells, the ANAS unit).
EDGE_LISTS = ('normal', 'reduce', 'att')


def entropy(row):
    return -sum(p * math.log(p) for p in row if p > 0)


def uniform_distance(row):
    return 0.5 * sum(abs(p - 1 / len(row)) for p in row)


def table_statistics(tables):
    """{table: per-edge entropies, their mean, log K, per-edge distances from uniform, their mean}
    of alphas.jsonl-style tables {name: {'candidates': [...], 'values': [[...], ...]}}."""
    out = {}
    for name, content in tables.items():
        rows = content['values']
        if not rows:
            continue
        entropies = [entropy(row) for row in rows]
        distances = [uniform_distance(row) for row in rows]
        out[name] = {'entropy': entropies, 'entropy_mean': sum(entropies) / len(rows),
                     'max_entropy': math.log(len(content['candidates'])),
                     'uniform_distance': distances, 'uniform_distance_mean': sum(distances) / len(rows)}
    return out


def nb201_entries(record):
    """The (op, input, attention) entries of a NAS-Bench-201 genotype dict, in nb201.EDGES order."""
    attentions = record.get('attention') or nb201.NO_ATTENTION
    return [(op, source, attention) for (_, source), op, attention in
            zip(nb201.EDGES, nb201.parse(record['nb201']).ops, attentions)]


def _edges_by_node(record):
    """[(key, node, sorted entries of that node)] plus the bottlenecks, of a genotype dict."""
    if 'nb201' in record:
        entries = nb201_entries(record)
        return [(('nb201', node), sorted(e for e, (target, _) in zip(entries, nb201.EDGES) if target == node))
                for node in range(1, nb201.NODES)]
    items = []
    for key in EDGE_LISTS:
        entries = record.get(key) or []
        for node in range(len(entries) // 2):
            items.append(((key, node), sorted(map(tuple, entries[2 * node:2 * node + 2]))))
    return items


def genotype_stability(previous, current):
    """Share of `current`'s edges (and non-empty bottlenecks) that `previous` has at the same
    node (genotype dicts); None without a previous genotype."""
    if previous is None:
        return None
    before = dict(_edges_by_node(previous))
    kept = total = 0
    for place, entries in _edges_by_node(current):
        remaining = list(before.get(place, []))
        for entry in entries:
            total += 1
            if entry in remaining:
                remaining.remove(entry)
                kept += 1
    for key in ('normal_bottleneck', 'reduce_bottleneck'):
        if current.get(key) or previous.get(key):
            total += 1
            kept += current.get(key) == previous.get(key)
    return kept / total if total else None


def parameter_free_ops(record, cell='normal'):
    """How many edges of `cell` open with a parameter-free op; None if the genotype has no such cell."""
    if 'nb201' in record and cell == 'normal':
        return sum(1 for entry in nb201_entries(record) if entry[0] in PARAMETER_FREE)
    if cell not in record:
        return None
    return sum(1 for entry in record[cell] if entry[0] in PARAMETER_FREE)


def epoch_record(tables, genotype, previous_genotype):
    """The diagnostics a search adds to an epoch's metrics: per table the per-edge entropies and
    distances and their means, the genotype's stability against the previous epoch's and the
    normal cell's parameter-free op count (keys left out where they do not apply)."""
    statistics = table_statistics(tables)
    record = {'entropy': {name: s['entropy'] for name, s in statistics.items()},
              'entropy_mean': {name: s['entropy_mean'] for name, s in statistics.items()},
              'uniform_distance': {name: s['uniform_distance'] for name, s in statistics.items()},
              'uniform_distance_mean': {name: s['uniform_distance_mean'] for name, s in statistics.items()}}
    stability = genotype_stability(previous_genotype, genotype)
    if stability is not None:
        record['genotype_stability'] = stability
    free = parameter_free_ops(genotype)
    if free is not None:
        record['param_free_normal'] = free
    return record
