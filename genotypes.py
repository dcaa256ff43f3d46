"""Genotypes: the discrete architectures a search derives and the evaluation networks build.

A cell genotype lists two entries per intermediate node.  An entry is a DARTS 2-tuple
`(op, input)` or an Att-DARTS 3-tuple `(op, input, attention)`; inputs 0 and 1 are the two
cell inputs, input k >= 2 is intermediate node k - 2.  `normal_bottleneck`/`reduce_bottleneck`
name an attention applied to the concatenated cell output ('' for none).

Named genotypes: DARTS (Liu et al., ICLR 2019), NASNet (Zoph et al., CVPR 2018), AmoebaNet
(Real et al., AAAI 2019) and Att-DARTS (Nakai, Matsubara and Uehara, IJCNN 2020).

The JSON format is the one Att-DARTS writes (`genotype.json`):
    {"normal": [["sep_conv_3x3", 0, "CBAM"], ...], "normal_concat": [2, 3, 4, 5],
     "reduce": [...], "reduce_concat": [...], "normal_bottleneck": "", "reduce_bottleneck": ""}
"""
import json
import os
from collections import namedtuple

import attention
import operations
from utils import UserError, atomic_write_json

Genotype = namedtuple('Genotype', 'normal normal_concat reduce reduce_concat normal_bottleneck reduce_bottleneck',
                      defaults=('', ''))

PRIMITIVES = ['none', 'max_pool_3x3', 'avg_pool_3x3', 'skip_connect',
              'sep_conv_3x3', 'sep_conv_5x5', 'dil_conv_3x3', 'dil_conv_5x5']

# Candidate op sets selectable with `--primitives`.
PRIMITIVE_SETS = {'darts': PRIMITIVES}

ATTENTION_PRIMITIVES = ['Identity', 'SE', 'BAM', 'CBAM', 'GE_theta-plus', 'DoubleAttention']


def entry_op(entry):
    return entry[0]


def entry_input(entry):
    return entry[1]


def entry_attention(entry):
    """The attention following the op on this edge ('' for none)."""
    return entry[2] if len(entry) > 2 else ''


NASNet = Genotype(
    normal=[('sep_conv_5x5', 1), ('sep_conv_3x3', 0), ('sep_conv_5x5', 0), ('sep_conv_3x3', 0),
            ('avg_pool_3x3', 1), ('skip_connect', 0), ('avg_pool_3x3', 0), ('avg_pool_3x3', 0),
            ('sep_conv_3x3', 1), ('skip_connect', 1)],
    normal_concat=[2, 3, 4, 5, 6],
    reduce=[('sep_conv_5x5', 1), ('sep_conv_7x7', 0), ('max_pool_3x3', 1), ('sep_conv_7x7', 0),
            ('avg_pool_3x3', 1), ('sep_conv_5x5', 0), ('skip_connect', 3), ('avg_pool_3x3', 2),
            ('sep_conv_3x3', 2), ('max_pool_3x3', 1)],
    reduce_concat=[4, 5, 6])

AmoebaNet = Genotype(
    normal=[('avg_pool_3x3', 0), ('max_pool_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_5x5', 2),
            ('sep_conv_3x3', 0), ('avg_pool_3x3', 3), ('sep_conv_3x3', 1), ('skip_connect', 1),
            ('skip_connect', 0), ('avg_pool_3x3', 1)],
    normal_concat=[4, 5, 6],
    reduce=[('avg_pool_3x3', 0), ('sep_conv_3x3', 1), ('max_pool_3x3', 0), ('sep_conv_7x7', 2),
            ('sep_conv_7x7', 0), ('avg_pool_3x3', 1), ('max_pool_3x3', 0), ('max_pool_3x3', 1),
            ('conv_7x1_1x7', 0), ('sep_conv_3x3', 5)],
    reduce_concat=[3, 4, 6])

DARTS_V1 = Genotype(
    normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), ('sep_conv_3x3', 1),
            ('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 0),
            ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('avg_pool_3x3', 0)],
    reduce_concat=[2, 3, 4, 5])

DARTS_V2 = Genotype(
    normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1),
            ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1),
            ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)],
    reduce_concat=[2, 3, 4, 5])

DARTS = DARTS_V2

Att_DARTS = Genotype(
    normal=[('sep_conv_3x3', 0, 'DoubleAttention'), ('sep_conv_3x3', 1, 'CBAM'),
            ('sep_conv_3x3', 0, 'CBAM'), ('skip_connect', 2, 'CBAM'),
            ('skip_connect', 0, 'CBAM'), ('sep_conv_3x3', 1, 'CBAM'),
            ('skip_connect', 0, 'CBAM'), ('skip_connect', 2, 'CBAM')],
    normal_concat=[2, 3, 4, 5],
    reduce=[('max_pool_3x3', 0, 'BAM'), ('dil_conv_3x3', 1, 'DoubleAttention'),
            ('avg_pool_3x3', 0, 'BAM'), ('skip_connect', 2, 'CBAM'),
            ('skip_connect', 2, 'CBAM'), ('avg_pool_3x3', 0, 'BAM'),
            ('skip_connect', 2, 'CBAM'), ('avg_pool_3x3', 0, 'BAM')],
    reduce_concat=[2, 3, 4, 5])

NAMED = {
    'NASNet': NASNet, 'AmoebaNet': AmoebaNet, 'DARTS_V1': DARTS_V1, 'DARTS_V2': DARTS_V2,
    'DARTS': DARTS, 'Att_DARTS': Att_DARTS,
}


def _known_names():
    return sorted(operations.OPS), sorted(attention.ATTENTIONS)


def validate(genotype, source='genotype'):
    """Check names, input indices and concat lists; raise UserError naming the bad entry."""
    ops, attns = _known_names()
    candidates = set(ops) | set(attns)
    for cell in ('normal', 'reduce'):
        entries = getattr(genotype, cell)
        if not entries or len(entries) % 2:
            raise UserError(f"{source}: '{cell}' must list two entries per node, got {len(entries)} entries")
        for position, entry in enumerate(entries):
            where = f"{source}: {cell}[{position}] = {list(entry)}"
            if len(entry) not in (2, 3):
                raise UserError(f"{where} must be [op, input] or [op, input, attention]")
            op, index, attn = entry_op(entry), entry_input(entry), entry_attention(entry)
            if op not in candidates:
                raise UserError(f"{where}: unknown op '{op}'; known ops: {', '.join(ops)}; "
                                f"known attentions: {', '.join(attns)}")
            if attn and attn not in candidates:
                raise UserError(f"{where}: unknown attention '{attn}'; known attentions: {', '.join(attns)}")
            node = position // 2
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < node + 2:
                raise UserError(f"{where}: input {index!r} is out of range; node {node} may take "
                                f"inputs 0..{node + 1}")
        states = len(entries) // 2 + 2
        concat = list(getattr(genotype, cell + '_concat'))
        if not concat or any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < states for i in concat):
            raise UserError(f"{source}: {cell}_concat {concat} must list states in 0..{states - 1}")
        bottleneck = getattr(genotype, cell + '_bottleneck')
        if bottleneck and bottleneck not in attns:
            raise UserError(f"{source}: {cell}_bottleneck '{bottleneck}' is unknown; "
                            f"known attentions: {', '.join(attns)}")
    return genotype


def to_dict(genotype):
    record = genotype._asdict()
    for cell in ('normal', 'reduce'):
        record[cell] = [list(entry) for entry in record[cell]]
        record[cell + '_concat'] = list(record[cell + '_concat'])
    return record


def from_dict(record, source='genotype'):
    if not isinstance(record, dict):
        raise UserError(f"{source}: expected a JSON object with keys normal, normal_concat, reduce, reduce_concat")
    missing = [k for k in ('normal', 'normal_concat', 'reduce', 'reduce_concat') if k not in record]
    if missing:
        raise UserError(f"{source}: missing key(s) {', '.join(missing)}")
    cells = {}
    for cell in ('normal', 'reduce'):
        entries = record[cell]
        if not isinstance(entries, list) or not all(isinstance(e, (list, tuple)) for e in entries):
            raise UserError(f"{source}: '{cell}' must be a list of [op, input] or [op, input, attention]")
        cells[cell] = [tuple(e) for e in entries]
        if not isinstance(record[cell + '_concat'], list):
            raise UserError(f"{source}: '{cell}_concat' must be a list of state indices")
    genotype = Genotype(
        normal=cells['normal'], normal_concat=list(record['normal_concat']),
        reduce=cells['reduce'], reduce_concat=list(record['reduce_concat']),
        normal_bottleneck=record.get('normal_bottleneck', '') or '',
        reduce_bottleneck=record.get('reduce_bottleneck', '') or '')
    return validate(genotype, source)


def load(name_or_path):
    """A named genotype (`Att_DARTS`) or a `genotype.json` path."""
    if name_or_path in NAMED:
        return NAMED[name_or_path]
    if not os.path.exists(name_or_path):
        if name_or_path.endswith('.json') or os.sep in name_or_path:
            raise UserError(f"genotype file {name_or_path} does not exist")
        raise UserError(f"unknown genotype '{name_or_path}'; named genotypes: {', '.join(NAMED)}, "
                        f"or give the path of a genotype.json")
    try:
        with open(name_or_path) as f:
            record = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{name_or_path} is not valid JSON ({exc}); it may be truncated") from exc
    return from_dict(record, source=name_or_path)


def save(genotype, path):
    atomic_write_json(path, to_dict(genotype))


def resolve(arch, arch_path):
    """The genotype chosen on a command line with `--arch NAME` or `--arch_path FILE.json`."""
    if arch and arch_path:
        raise UserError("give either --arch or --arch_path, not both")
    if arch_path:
        return load(arch_path)
    if not arch:
        raise UserError(f"no architecture given; use --arch NAME ({', '.join(NAMED)}) or --arch_path FILE.json")
    if arch not in NAMED:
        raise UserError(f"unknown --arch '{arch}'; named genotypes: {', '.join(NAMED)}")
    return NAMED[arch]
