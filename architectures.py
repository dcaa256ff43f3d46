"""The architectures a command line names (compare.py, rank.py): named genotypes (DARTS_V2,
Att_DARTS, ANAS, ...), genotype JSON files, search run directories (their genotype.json),
tabular-search run directories (tabular_search.py: per strategy, the cell its runs returned most
often), NAS-Bench-201 cell strings, and `random:N`, N distinct architectures drawn uniformly from the
space of --space: the DARTS / Att-DARTS cells of --location, --primitives and --num_meta_node
(`search_space.sample_genotypes`; --primitives cnas for CNAS's), the NAS-Bench-201 cells
(`nb201.sample_genotypes`), ANAS attention units or NAG cells (`nag_cells.sample_architectures`),
with --random_seed.  Random architectures are the baseline of Li and Talwalkar, "Random Search and
Reproducibility for NAS" (UAI 2019) and Yang et al., "NAS evaluation is frustratingly hard" (ICLR
2020), and what a training-free ranking screens.
"""
import os
import random
import re

import genotypes
import nag_cells
import nb201
import search_space
import tabular
from utils import UserError

SPACES = ('darts', 'nb201', 'anas', 'nag')
ANAS_UNIT_NODES = 3  # the ANAS unit's intermediate nodes (AttentionSearchResNet's steps)


def add_random_arguments(parser, spaces=SPACES):
    """The flags of `random:N`; `spaces` lists the --space choices (no --space flag for one)."""
    g = parser.add_argument_group('random:N')
    if len(spaces) > 1:
        g.add_argument('--space', default=spaces[0], choices=spaces,
                       help='the space random:N draws from: darts (DARTS / Att-DARTS / CNAS cells of --location, '
                            '--primitives, --num_meta_node), nb201 (NAS-Bench-201 cells), anas (ANAS attention '
                            'units), nag (NAG cells)')
    g.add_argument('--location', default='after_every', choices=list(search_space.LOCATIONS))
    g.add_argument('--primitives', default='darts', help=f"op set: {', '.join(genotypes.PRIMITIVE_SETS)}")
    g.add_argument('--num_meta_node', type=int, default=4, help='intermediate nodes per cell')
    g.add_argument('--random_seed', type=int, default=0)
    return g


def safe_label(text):
    return re.sub(r'[^A-Za-z0-9_.+-]', '_', text).strip('.') or 'arch'


def sample_attention_units(count, seed, steps=ANAS_UNIT_NODES):
    """`count` distinct ANAS units, uniformly among those the ANAS derivation can return: per node
    two distinct inputs, each through an op other than 'none'."""
    ops = search_space.derivable(genotypes.ATT_PRIMITIVES)
    size = 1
    for node in range(steps):
        size *= (node + 2) * (node + 1) // 2 * len(ops) ** 2
    if count > size:
        raise UserError(f"the ANAS space holds only {size} units; ask for at most that many")
    rng, drawn, seen = random.Random(seed), [], set()
    while len(drawn) < count:
        unit = genotypes.AttGenotype(att=[(rng.choice(ops), j) for node in range(steps)
                                          for j in sorted(rng.sample(range(node + 2), 2))])
        if tuple(unit.att) not in seen:
            seen.add(tuple(unit.att))
            drawn.append(unit)
    return drawn


def sample(count, args):
    """`count` random architectures of the space of --space (darts where a script has no --space)."""
    space = getattr(args, 'space', 'darts')
    if space == 'nb201':
        return nb201.sample_genotypes(count, args.random_seed)
    if space == 'anas':
        return sample_attention_units(count, args.random_seed)
    if space == 'nag':
        return nag_cells.sample_architectures(count, args.random_seed)
    if not 1 <= args.num_meta_node <= 8:
        raise UserError(f"--num_meta_node must be between 1 and 8, got {args.num_meta_node}")
    return search_space.sample_genotypes(count, args.random_seed, args.location, args.primitives, args.num_meta_node)


def resolve(specs, args, kinds, refusal):
    """[(label, source, genotype)] for the architecture arguments, labels unique.  A genotype that is
    not one of `kinds` is refused with the line "<the argument> <refusal>", `refusal` saying what the script takes."""
    randoms = [spec for spec in specs if spec.startswith('random:')]
    if len(randoms) > 1:
        raise UserError(f"give random:N once (got {', '.join(randoms)}); N sets how many")
    found = []
    for spec in specs:
        if spec.startswith('random:'):
            count = spec[len('random:'):]
            if not count.isdigit() or int(count) < 1:
                raise UserError(f"{spec}: N must be a positive integer, e.g. random:8")
            drawn = sample(int(count), args)
            width = len(str(len(drawn) - 1))
            found += [(f'random_{i:0{width}d}', f'random:{count} #{i}', g) for i, g in enumerate(drawn)]
            continue
        if os.path.isdir(spec) and tabular.is_experiment(spec):
            # A tabular search: per strategy, the cell its runs returned most often.
            name = os.path.basename(os.path.normpath(spec))
            found += [(safe_label(f'{name}-{strategy}'), source, genotype)
                      for strategy, source, genotype in tabular.returned_cells(spec)]
            continue
        if os.path.isdir(spec):
            path = os.path.join(spec, 'genotype.json')
            if not os.path.isfile(path):
                raise UserError(f"{spec} has no genotype.json; give a search run directory (a search writes it "
                                f"after its first epoch), a genotype .json or a named genotype")
            label = os.path.basename(os.path.normpath(spec))
        else:
            path, label = spec, spec
            if spec not in genotypes.NAMED and spec not in genotypes.ATT_NAMED and not spec.startswith('|'):
                stem = os.path.splitext(os.path.basename(spec))[0]
                label = os.path.basename(os.path.dirname(os.path.abspath(spec))) if stem == 'genotype' else stem
        genotype = genotypes.load(path)
        if not isinstance(genotype, kinds):
            raise UserError(f"{spec} {refusal}")
        found.append((safe_label(label), spec, genotype))
    labels, unique = set(), []
    for label, source, genotype in found:
        name, k = label, 2
        while name in labels:
            name, k = f'{label}-{k}', k + 1
        labels.add(name)
        unique.append((name, source, genotype))
    return unique
