"""Genotypes: the discrete architectures a search derives and the evaluation networks build.

A cell genotype lists two entries per intermediate node.  An entry is a DARTS 2-tuple
`(op, input)` or an Att-DARTS 3-tuple `(op, input, attention)`; inputs 0 and 1 are the two
cell inputs, input k >= 2 is intermediate node k - 2.  `normal_bottleneck`/`reduce_bottleneck`
name an attention applied to the concatenated cell output ('' for none).

Named genotypes: DARTS (Liu et al., ICLR 2019), NASNet (Zoph et al., CVPR 2018), AmoebaNet
(Real et al., AAAI 2019), Att-DARTS (Nakai, Matsubara and Uehara, IJCNN 2020) and CNAS
(Zhou et al., "Automatic Convolutional Neural Architecture Search for Image Classification under
Different Scenes", IEEE Access 2019; the DARTS_MORE_* cells).

The JSON format is the one Att-DARTS writes (`genotype.json`):
    {"normal": [["sep_conv_3x3", 0, "CBAM"], ...], "normal_concat": [2, 3, 4, 5],
     "reduce": [...], "reduce_concat": [...], "normal_bottleneck": "", "reduce_bottleneck": ""}
The same files may hold the other families' architectures: an ANAS unit ({"att": ...}), an SLNAS
`SeqArch` ({"normal": [20 ints], ...}) or a NAG `nag_cells.DagArch` ({"normal": {"matrix", "ops"}, ...}).
"""
import json
import os
from collections import namedtuple

import nag_cells
from registry import ATTENTIONS, OPS
from userio import UserError, atomic_write_json

Genotype = namedtuple('Genotype', 'normal normal_concat reduce reduce_concat normal_bottleneck reduce_bottleneck',
                      defaults=('', ''))

PRIMITIVES = ['none', 'max_pool_3x3', 'avg_pool_3x3', 'skip_connect',
              'sep_conv_3x3', 'sep_conv_5x5', 'dil_conv_3x3', 'dil_conv_5x5']

# Candidate op sets selectable with `--primitives`.
PRIMITIVE_SETS = {'darts': PRIMITIVES}

# CNAS (Zhou et al., IEEE Access 2019): channel weighting and channel shuffle in, the 5x5 convs out.
PRIMITIVE_SETS['cnas'] = ['none', 'skip_connect', 'cweight_com', 'avg_pool_3x3', 'max_pool_3x3',
                          'sep_conv_3x3', 'dil_conv_3x3', 'shuffle_conv_3x3']

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

# Shipped by Att-DARTS (`genotypes.py`) without a note: an attention-free cell of max pools in the
# normal cell, dilated and separable 5x5 convs in the reduction cell.
MyDARTS = Genotype(
    normal=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('max_pool_3x3', 0), ('max_pool_3x3', 2),
            ('max_pool_3x3', 2), ('max_pool_3x3', 0), ('max_pool_3x3', 2), ('max_pool_3x3', 0)],
    normal_concat=[2, 3, 4, 5],
    reduce=[('dil_conv_5x5', 1), ('dil_conv_5x5', 0), ('max_pool_3x3', 2), ('sep_conv_5x5', 1),
            ('dil_conv_5x5', 3), ('sep_conv_5x5', 0), ('dil_conv_5x5', 2), ('sep_conv_5x5', 3)],
    reduce_concat=[2, 3, 4, 5])

NAMED = {
    'NASNet': NASNet, 'AmoebaNet': AmoebaNet, 'DARTS_V1': DARTS_V1, 'DARTS_V2': DARTS_V2,
    'DARTS': DARTS, 'Att_DARTS': Att_DARTS, 'MyDARTS': MyDARTS,
}

# CNAS genotypes (tianbaochou/CNAS `darts/geno_types.py`), searched on CIFAR-10 except _TY2
# (Tiny-ImageNet).  _V1.._V4 have 3..6 nodes per cell; DARTS_MORE_NONE_* come from the sparse
# derivation and keep 'none' edges.  The reference's alias DARTS = DARTS_MORE_V1 is not copied:
# here DARTS stays DARTS_V2.
DARTS_MORE_V1 = Genotype(
    normal=[('cweight_com', 1), ('sep_conv_3x3', 0), ('cweight_com', 0), ('cweight_com', 1),
            ('cweight_com', 0), ('cweight_com', 1)],
    normal_concat=[2, 3, 4],
    reduce=[('cweight_com', 0), ('shuffle_conv_3x3', 1), ('shuffle_conv_3x3', 2), ('max_pool_3x3', 0),
            ('shuffle_conv_3x3', 3), ('shuffle_conv_3x3', 2)],
    reduce_concat=[2, 3, 4])

DARTS_MORE_V2 = Genotype(
    normal=[('shuffle_conv_3x3', 0), ('cweight_com', 1), ('cweight_com', 1), ('cweight_com', 0),
            ('cweight_com', 1), ('cweight_com', 0), ('cweight_com', 0), ('cweight_com', 1)],
    normal_concat=[2, 3, 4, 5],
    reduce=[('cweight_com', 1), ('avg_pool_3x3', 0), ('avg_pool_3x3', 0), ('cweight_com', 1),
            ('avg_pool_3x3', 0), ('shuffle_conv_3x3', 2), ('shuffle_conv_3x3', 2), ('shuffle_conv_3x3', 3)],
    reduce_concat=[2, 3, 4, 5])

DARTS_MORE_V3 = Genotype(
    normal=[('shuffle_conv_3x3', 0), ('cweight_com', 1), ('cweight_com', 2), ('dil_conv_3x3', 0),
            ('cweight_com', 2), ('skip_connect', 0), ('cweight_com', 1), ('cweight_com', 0),
            ('cweight_com', 0), ('cweight_com', 1)],
    normal_concat=[2, 3, 4, 5, 6],
    reduce=[('max_pool_3x3', 0), ('shuffle_conv_3x3', 1), ('max_pool_3x3', 0), ('shuffle_conv_3x3', 2),
            ('shuffle_conv_3x3', 3), ('shuffle_conv_3x3', 0), ('dil_conv_3x3', 3), ('shuffle_conv_3x3', 2),
            ('shuffle_conv_3x3', 4), ('shuffle_conv_3x3', 2)],
    reduce_concat=[2, 3, 4, 5, 6])

DARTS_MORE_V4 = Genotype(
    normal=[('sep_conv_3x3', 1), ('shuffle_conv_3x3', 0), ('skip_connect', 0), ('cweight_com', 1),
            ('cweight_com', 3), ('cweight_com', 1), ('cweight_com', 4), ('cweight_com', 3),
            ('cweight_com', 3), ('cweight_com', 4), ('cweight_com', 4), ('cweight_com', 3)],
    normal_concat=[2, 3, 4, 5, 6, 7],
    reduce=[('max_pool_3x3', 1), ('cweight_com', 0), ('max_pool_3x3', 1), ('skip_connect', 2),
            ('skip_connect', 2), ('max_pool_3x3', 1), ('skip_connect', 3), ('skip_connect', 4),
            ('skip_connect', 4), ('skip_connect', 3), ('skip_connect', 4), ('skip_connect', 3)],
    reduce_concat=[2, 3, 4, 5, 6, 7])

DARTS_MORE_NONE_V1 = Genotype(
    normal=[('shuffle_conv_3x3', 1), ('sep_conv_3x3', 0), ('none', 2), ('none', 1), ('none', 3), ('none', 2)],
    normal_concat=[2, 3, 4],
    reduce=[('max_pool_3x3', 0), ('shuffle_conv_3x3', 1), ('max_pool_3x3', 0), ('shuffle_conv_3x3', 2),
            ('dil_conv_3x3', 3), ('cweight_com', 0)],
    reduce_concat=[2, 3, 4])

DARTS_MORE_NONE_V2 = Genotype(
    normal=[('cweight_com', 1), ('sep_conv_3x3', 0), ('none', 2), ('cweight_com', 1), ('none', 3),
            ('none', 2), ('none', 4), ('none', 3)],
    normal_concat=[2, 3, 4, 5],
    reduce=[('shuffle_conv_3x3', 1), ('shuffle_conv_3x3', 0), ('shuffle_conv_3x3', 2), ('shuffle_conv_3x3', 0),
            ('sep_conv_3x3', 2), ('avg_pool_3x3', 1), ('none', 4), ('shuffle_conv_3x3', 3)],
    reduce_concat=[2, 3, 4, 5])

DARTS_MORE_NONE_V3 = Genotype(
    normal=[('shuffle_conv_3x3', 0), ('none', 1), ('none', 2), ('shuffle_conv_3x3', 0), ('none', 3),
            ('none', 2), ('none', 4), ('none', 3), ('none', 5), ('none', 4)],
    normal_concat=[2, 3, 4, 5, 6],
    reduce=[('cweight_com', 1), ('shuffle_conv_3x3', 0), ('shuffle_conv_3x3', 2), ('cweight_com', 1),
            ('cweight_com', 1), ('shuffle_conv_3x3', 2), ('dil_conv_3x3', 2), ('avg_pool_3x3', 0),
            ('shuffle_conv_3x3', 1), ('none', 5)],
    reduce_concat=[2, 3, 4, 5, 6])

DARTS_MORE_NONE_V4 = Genotype(
    normal=[('sep_conv_3x3', 0), ('none', 1), ('none', 2), ('shuffle_conv_3x3', 0), ('none', 3),
            ('none', 2), ('none', 4), ('none', 3), ('none', 5), ('none', 4), ('none', 5), ('none', 6)],
    normal_concat=[2, 3, 4, 5, 6, 7],
    reduce=[('sep_conv_3x3', 0), ('skip_connect', 1), ('max_pool_3x3', 1), ('shuffle_conv_3x3', 2),
            ('shuffle_conv_3x3', 2), ('avg_pool_3x3', 1), ('cweight_com', 4), ('shuffle_conv_3x3', 2),
            ('shuffle_conv_3x3', 2), ('shuffle_conv_3x3', 4), ('none', 5), ('none', 6)],
    reduce_concat=[2, 3, 4, 5, 6, 7])

DARTS_MORE_TY2 = Genotype(
    normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 0), ('shuffle_conv_3x3', 2),
            ('max_pool_3x3', 0), ('cweight_com', 1), ('sep_conv_3x3', 3), ('cweight_com', 1)],
    normal_concat=[2, 3, 4, 5],
    reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('cweight_com', 1), ('sep_conv_3x3', 2),
            ('dil_conv_3x3', 0), ('cweight_com', 1), ('cweight_com', 0), ('shuffle_conv_3x3', 3)],
    reduce_concat=[2, 3, 4, 5])

CNAS_NAMED = {
    'DARTS_MORE_V1': DARTS_MORE_V1, 'DARTS_MORE_V2': DARTS_MORE_V2, 'DARTS_MORE_V3': DARTS_MORE_V3,
    'DARTS_MORE_V4': DARTS_MORE_V4, 'DARTS_MORE_NONE_V1': DARTS_MORE_NONE_V1,
    'DARTS_MORE_NONE_V2': DARTS_MORE_NONE_V2, 'DARTS_MORE_NONE_V3': DARTS_MORE_NONE_V3,
    'DARTS_MORE_NONE_V4': DARTS_MORE_NONE_V4, 'DARTS_MORE_TY2': DARTS_MORE_TY2,
}
NAMED.update(CNAS_NAMED)

# NAG (Jing, Xu and Zhang, "A Neural Architecture Generator for Efficient Search Space",
# Neurocomputing 2021; its `train_cifar.py`): the reference's shipped pair of DAG cells, a nag_cells.DagArch
# that the train scripts build as nag_networks.NAGNetworkCIFAR / NAGNetworkImageNet.
NAMED['NAG'] = nag_cells.REFERENCE_ARCH

# ANAS (Dang, "Exploring Attention Convolutional Neural Network via Neural Architecture Search",
# 2019; `anas/genotypes.py`): one attention unit, shared by every residual block, whose two inputs are both the
# block's feature map.  `att` lists two (op, input) entries per node; inputs 0 and 1 are that map,
# k >= 2 is node k - 2.  JSON: {"att": [["dil_conv_3x3", 1], ...]}.  Kept out of NAMED because
# these are not cells: the DARTS-cell scripts cannot build them.
ATT_PRIMITIVES = ['none', 'skip_connect', 'relu_conv_bn_1x1', 'sep_conv_3x3', 'dil_conv_3x3',
                  'avg_pool_3x3', 'max_pool_3x3', 'channel_score', 'spatial_score']

AttGenotype = namedtuple('AttGenotype', 'att')

ANAS = AttGenotype(att=[('dil_conv_3x3', 1), ('dil_conv_3x3', 0), ('sep_conv_3x3', 1),
                        ('channel_score', 2), ('spatial_score', 2), ('channel_score', 3)])

# 'ATTENTION' is the reference's name for the same unit (train_net.py --arch ATTENTION).
ATT_NAMED = {'ANAS': ANAS, 'ATTENTION': ANAS}

# SLNAS (Chen, "Stage and Lite Search Technology in Convolutional Neural Network Architecture
# Search"; Yee-Master/SLNAS): one integer sequence per block type, [in_x, op_x, in_y, op_y] for each of 5
# nodes; input 0/1 are the two previous blocks, 2 + m is node m.  `blocks` is the number of normal
# blocks per stage (a reduction block follows every stage).
# JSON: {"normal": [20 ints], "reduce": [20 ints], "blocks": [2, 2]}.
SEQ_OPS = ['shuffle_k3', 'shuffle_k5', 'conv1x1_avg_pool', 'conv1x1_max_pool', 'conv1x1_bn']
SEQ_NODES = 5

SeqArch = namedtuple('SeqArch', 'normal reduce blocks')


def validate_seq_cell(seq, source, cell):
    """Check one 20-int sequence; the error names the position and what it may hold."""
    if not isinstance(seq, (list, tuple)) or len(seq) != 4 * SEQ_NODES:
        size = len(seq) if isinstance(seq, (list, tuple)) else type(seq).__name__
        raise UserError(f"{source}: the {cell} sequence must hold {4 * SEQ_NODES} ints "
                        f"([in_x, op_x, in_y, op_y] per node), got {size}")
    for position, value in enumerate(seq):
        node, is_op = position // 4, position % 2 == 1
        limit = len(SEQ_OPS) if is_op else node + 2
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < limit:
            what = f"an op id 0..{limit - 1}" if is_op else f"an input 0..{limit - 1} (no forward reference)"
            raise UserError(f"{source}: {cell}[{position}] = {value!r} (node {node}) must be {what}")
    return list(seq)


def validate_blocks(blocks, source='--blocks'):
    if (not isinstance(blocks, (list, tuple)) or not blocks
            or any(isinstance(b, bool) or not isinstance(b, int) or b < 0 for b in blocks)):
        raise UserError(f"{source} must be a non-empty JSON list of normal-block counts per stage, e.g. [2,2]; "
                        f"got {blocks!r}")
    return list(blocks)


def seq_from_lists(cells, blocks, source='--arch'):
    """A SeqArch from [normal_seq, reduce_seq] (the reference's `arc`) and the stage layout."""
    if not isinstance(cells, (list, tuple)) or len(cells) != 2:
        raise UserError(f"{source} must be two sequences [normal, reduce] of {4 * SEQ_NODES} ints each")
    return SeqArch(validate_seq_cell(cells[0], source, 'normal'), validate_seq_cell(cells[1], source, 'reduce'),
                   validate_blocks(blocks, f"{source}: blocks"))


def seq_to_dict(arch):
    return {'normal': list(arch.normal), 'reduce': list(arch.reduce), 'blocks': list(arch.blocks)}


def seq_from_dict(record, source):
    missing = [k for k in ('normal', 'reduce', 'blocks') if k not in record]
    if missing:
        raise UserError(f"{source}: missing key(s) {', '.join(missing)} of an SLNAS architecture")
    return seq_from_lists([record['normal'], record['reduce']], record['blocks'], source)


def _validate_att(genotype, source):
    entries = genotype.att
    if not entries or len(entries) % 2:
        raise UserError(f"{source}: 'att' must list two entries per node, got {len(entries)} entries")
    for position, entry in enumerate(entries):
        where = f"{source}: att[{position}] = {list(entry)}"
        if len(entry) != 2:
            raise UserError(f"{where} must be [op, input]")
        op, index = entry
        if op not in ATT_PRIMITIVES:
            raise UserError(f"{where}: unknown op '{op}'; attention-unit ops: {', '.join(ATT_PRIMITIVES)}")
        node = position // 2
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < node + 2:
            raise UserError(f"{where}: input {index!r} is out of range; node {node} may take inputs 0..{node + 1}")
    return genotype


def _known_names():
    return sorted(OPS), sorted(ATTENTIONS)


def validate(genotype, source='genotype'):
    """Check names, input indices and concat lists; raise UserError naming the bad entry."""
    if isinstance(genotype, AttGenotype):
        return _validate_att(genotype, source)
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
    if isinstance(genotype, AttGenotype):
        return {'att': [list(entry) for entry in genotype.att]}
    if isinstance(genotype, SeqArch):
        return seq_to_dict(genotype)
    if isinstance(genotype, nag_cells.DagArch):
        return nag_cells.arch_to_dict(genotype)
    record = genotype._asdict()
    for cell in ('normal', 'reduce'):
        record[cell] = [list(entry) for entry in record[cell]]
        record[cell + '_concat'] = list(record[cell + '_concat'])
    return record


def from_dict(record, source='genotype'):
    if isinstance(record, dict) and 'att' in record:
        if not isinstance(record['att'], list) or not all(isinstance(e, (list, tuple)) for e in record['att']):
            raise UserError(f"{source}: 'att' must be a list of [op, input]")
        return validate(AttGenotype(att=[tuple(e) for e in record['att']]), source)
    if isinstance(record, dict) and 'blocks' in record:
        return seq_from_dict(record, source)
    if isinstance(record, dict) and isinstance(record.get('normal'), dict):
        if 'reduce' not in record:
            raise UserError(f"{source}: missing key reduce of a NAG architecture")
        return nag_cells.arch_from_dict(record, source)
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
    if name_or_path in ATT_NAMED:
        return ATT_NAMED[name_or_path]
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
    if arch in ATT_NAMED:
        return ATT_NAMED[arch]
    if arch not in NAMED:
        raise UserError(f"unknown --arch '{arch}'; named genotypes: {', '.join(NAMED)}")
    return NAMED[arch]
