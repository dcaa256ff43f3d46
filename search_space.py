"""The discrete search space of the DARTS / Att-DARTS supernet, and architectures drawn from it at random.

A `--location` (where attention is searched, Att-DARTS) and a `--primitives` set fix which candidates
fill each layer of an edge: the first layer (ops, or ops and attentions), an optional second layer
(attentions, or ops and attentions) and an optional attention on the concatenated cell output (the
bottleneck).  `model_search.SearchNetwork` builds its mixed edges from `candidate_lists`.

A cell of the space is what the DARTS derivation can return: every intermediate node reads two
distinct earlier states, each through one candidate per layer other than 'none'.  `sample_genotypes`
draws architectures (a normal and a reduction cell, and their bottlenecks) uniformly from that set,
as the random baselines of Li and Talwalkar, "Random Search and Reproducibility for Neural
Architecture Search" (UAI 2019) and Yang et al., "NAS evaluation is frustratingly hard" (ICLR
2020) do.  Their code also samples 'none', which the DARTS derivation never keeps; here the random
cells are the cells a search could have returned.

`--space nb201` (SPACES) is the cell space of NAS-Bench-201 instead (nb201.py; Dong and Yang, ICLR
2020): `sample_genotypes(..., space='nb201')` draws its cells uniformly from the 15,625 the
benchmark trained, none with attention.

Nothing here needs torch: the candidate names come from the registries, which load the modules
defining them only when asked.
"""
import json
import math
import random
from collections import namedtuple

import nb201
from genotypes import PRIMITIVE_SETS, Genotype, to_dict
from registry import ATTENTIONS
from userio import UserError

# `--space`: the DARTS cell space (two-input nodes, normal and reduction cells) or NAS-Bench-201's.
SPACES = ('darts', 'nb201')

# Which candidate lists fill the first layer, second layer and cell-output bottleneck.
Layout = namedtuple('Layout', 'first second bottleneck')
LOCATIONS = {
    'after_every': Layout('ops', 'attentions', None),
    'end': Layout('ops', None, 'attentions'),
    'after_every_and_end': Layout('ops', 'attentions', 'attentions'),
    'mixed_with_operation': Layout('ops+attentions', None, None),
    'double_mixed': Layout('ops+attentions', 'ops+attentions', None),
    'no_attention': Layout('ops', None, None),
}


def candidate_lists(location, primitives):
    """The candidate names of each layer for a `--location`, or None where it has no layer."""
    if location not in LOCATIONS:
        raise UserError(f"unknown --location '{location}'; choose from {', '.join(LOCATIONS)}")
    ops = list(primitives)
    attentions = ATTENTIONS.names()
    choices = {'ops': ops, 'attentions': attentions,
               # Identity would duplicate skip_connect when mixed with ops.
               'ops+attentions': ops + [a for a in attentions if a != 'Identity']}
    return {layer: (choices[kind] if kind else None) for layer, kind in LOCATIONS[location]._asdict().items()}


def resolve_primitives(primitives):
    if isinstance(primitives, str):
        if primitives not in PRIMITIVE_SETS:
            raise UserError(f"unknown --primitives '{primitives}'; choose from {', '.join(PRIMITIVE_SETS)}")
        return list(PRIMITIVE_SETS[primitives])
    return list(primitives)


def derivable(names):
    """The candidates of a layer that the DARTS derivation may choose: all but 'none'."""
    return [name for name in names if name != 'none'] if names else []


def space_size(lists, steps):
    """How many distinct architectures (normal cell, reduction cell, their bottlenecks) the space holds."""
    per_edge = len(derivable(lists['first'])) * (len(derivable(lists['second'])) if lists['second'] else 1)
    cell = math.prod(math.comb(node + 2, 2) * per_edge ** 2 for node in range(steps))
    if lists['bottleneck']:
        cell *= len(lists['bottleneck'])
    return cell ** 2


def sample_genotype(rng, lists, steps):
    """One architecture, uniformly: per cell and node two distinct inputs (listed in input order)
    and, on each of their edges, a candidate per layer; a bottleneck attention where the location
    has one.  Entries are (op, input, attention) as `SearchNetwork.genotype` derives them."""
    first, second = derivable(lists['first']), derivable(lists['second'])

    def cell():
        entries = []
        for node in range(steps):
            for j in sorted(rng.sample(range(node + 2), 2)):
                entries.append((rng.choice(first), j, rng.choice(second) if second else ''))
        return entries

    def bottleneck():
        return rng.choice(lists['bottleneck']) if lists['bottleneck'] else ''

    normal, normal_bottleneck = cell(), bottleneck()
    reduce, reduce_bottleneck = cell(), bottleneck()
    concat = list(range(2, 2 + steps))
    return Genotype(normal=normal, normal_concat=concat, reduce=reduce, reduce_concat=concat,
                    normal_bottleneck=normal_bottleneck, reduce_bottleneck=reduce_bottleneck)


def sample_genotypes(n, seed, location='after_every', primitives='darts', steps=4, space='darts'):
    """`n` distinct architectures drawn uniformly without replacement from the space of `location`,
    `primitives` (a set name or a list) and `steps` nodes per cell; the same `seed` gives the same list.
    `space='nb201'`: NAS-Bench-201 cells instead (nb201.sample_genotypes; the other arguments do not apply)."""
    if space not in SPACES:
        raise UserError(f"unknown --space '{space}'; choose from {', '.join(SPACES)}")
    if space == 'nb201':
        return nb201.sample_genotypes(n, seed)
    if n < 1:
        raise UserError(f"the number of random architectures must be at least 1, got {n}")
    if steps < 1:
        raise UserError(f"cells need at least 1 intermediate node, got {steps}")
    lists = candidate_lists(location, resolve_primitives(primitives))
    if not derivable(lists['first']) or (lists['second'] is not None and not derivable(lists['second'])):
        raise UserError(f"--primitives {primitives} has no candidate but 'none' in some layer; add ops")
    size = space_size(lists, steps)
    if n > size:
        raise UserError(f"the space of --location {location} with {steps} node(s) holds only {size} "
                        f"architecture(s); ask for at most that many")
    rng = random.Random(seed)
    drawn, seen = [], set()
    while len(drawn) < n:
        genotype = sample_genotype(rng, lists, steps)
        key = json.dumps(to_dict(genotype))
        if key not in seen:
            seen.add(key)
            drawn.append(genotype)
    return drawn
