"""Cell drawings with graphviz, after the DARTS/Att-DARTS `visualize.py` (quark0/darts `cnn/visualize.py`).

`draw_genotype` writes the normal and reduction cells of a genotype (DARTS, Att-DARTS, CNAS, SLNAS
and NAG DAG cells; an ANAS attention unit) as images plus their `.dot` sources; `rankdir=LR`,
inputs "c_{k-2}"/"c_{k-1}" (darkseagreen2), intermediate nodes "0".."n-1" (lightblue), output
"c_{k}" (palegoldenrod); each edge is labelled with its op and, on a second line, its attention.
Without graphviz's `dot` on PATH only the `.dot` sources are written.  graphviz is imported only
when a cell is drawn.
"""
import os
import shutil

import genotypes
import nag_cells
from userio import UserError, atomic_write, atomic_write_text, make_readable

FORMATS = ('png', 'pdf', 'svg')


INPUT_COLOR = 'darkseagreen2'


NODE_COLOR = 'lightblue'


OUTPUT_COLOR = 'palegoldenrod'



def render_hint(fmt='png'):
    return (f"install graphviz (apt-get install graphviz), then render each source with "
            f"dot -T{fmt} file.dot -o file.{fmt}")


def dot_available():
    return shutil.which('dot') is not None


def cell_digraph(inputs, nodes, edges, output_from, join='c_{k}', after=(), fmt='png'):
    """A generic cell drawing; every family's cell is drawn through this with a small adapter.

    inputs: names of the cell inputs (green); nodes: names of the intermediate nodes (blue);
    edges: (src, dst, op, attention) tuples, op 'none' drawn dashed grey; output_from: the names
    joined into the `join` node (yellow); after: (edge label, node name) steps that follow `join`
    (the Att-DARTS bottleneck is [('CBAM', 'c_{k}')] with join "c'_{k}"; an ANAS unit would be
    join 'mixed attention', after [('sigmoid', 'mask')]).
    """
    import graphviz

    g = graphviz.Digraph(
        format=fmt, engine='dot',
        edge_attr=dict(fontsize='20', fontname='times'),
        node_attr=dict(style='filled', shape='rect', align='center', fontsize='20', height='0.5',
                       width='0.5', penwidth='2', fontname='times'))
    g.attr(rankdir='LR')
    for name in inputs:
        g.node(name, fillcolor=INPUT_COLOR)
    for name in nodes:
        g.node(name, fillcolor=NODE_COLOR)
    g.node(join, fillcolor=OUTPUT_COLOR)
    for name in (step[1] for step in after):
        g.node(name, fillcolor=OUTPUT_COLOR)
    for src, dst, op, attn in edges:
        label = f'{op}\\n{attn}' if attn else op
        if op == 'none':
            g.edge(src, dst, label=label, fillcolor='gray', color='gray', fontcolor='gray', style='dashed')
        else:
            g.edge(src, dst, label=label, fillcolor='gray')
    for name in output_from:
        g.edge(name, join, fillcolor='gray')
    previous = join
    for label, name in after:
        g.edge(previous, name, label=label, fillcolor='gray')
        previous = name
    return g


def state_name(index):
    """Name of state `index` of a DARTS cell: 0 -> c_{k-2}, 1 -> c_{k-1}, k >= 2 -> node k-2."""
    return {0: 'c_{k-2}', 1: 'c_{k-1}'}.get(index, str(index - 2))


def as_genotype(genotype):
    if isinstance(genotype, dict):
        return genotypes.from_dict(genotype)
    return genotype


def genotype_to_dot(genotype, cell, fmt='png'):
    """The graphviz Digraph of the 'normal' or 'reduce' cell of a DARTS/Att-DARTS genotype."""
    if cell not in ('normal', 'reduce'):
        raise ValueError(f"cell must be 'normal' or 'reduce', got {cell!r}")
    genotype = as_genotype(genotype)
    if isinstance(genotype, genotypes.SeqArch):
        return seq_cell_to_dot(genotype, cell, fmt)
    if isinstance(genotype, nag_cells.DagArch):
        return dag_cell_to_dot(getattr(genotype, cell), fmt)
    entries = list(getattr(genotype, cell))
    steps = len(entries) // 2
    edges = []
    for position, entry in enumerate(entries):
        edges.append((state_name(genotypes.entry_input(entry)), str(position // 2),
                      genotypes.entry_op(entry), genotypes.entry_attention(entry)))
    concat = [state_name(i) for i in getattr(genotype, cell + '_concat')]
    bottleneck = getattr(genotype, cell + '_bottleneck', '') or ''
    if bottleneck:
        return cell_digraph(['c_{k-2}', 'c_{k-1}'], [str(i) for i in range(steps)], edges, concat,
                            join="c'_{k}", after=[(bottleneck, 'c_{k}')], fmt=fmt)
    return cell_digraph(['c_{k-2}', 'c_{k-1}'], [str(i) for i in range(steps)], edges, concat, fmt=fmt)


def dag_cell_to_dot(spec, fmt='png'):
    """A NAG DAG cell (nag_cells.CellSpec): vertices labelled with their number and op (the sum of their
    predecessors goes through it), unlabelled edges, the output vertex concatenating."""
    last = len(spec.ops) - 1
    label = {0: 'c_{k-2}', 1: 'c_{k-1}', **{v: f'{v - 1} {spec.ops[v]}' for v in range(2, last)}}
    edges = [(label[j], label[v], '', '') for v in range(2, last) for j in nag_cells.predecessors(spec, v)]
    return cell_digraph(['c_{k-2}', 'c_{k-1}'], [label[v] for v in range(2, last)], edges,
                        [label[p] for p in nag_cells.predecessors(spec, last)], fmt=fmt)


def attention_unit_to_dot(genotype, fmt='png'):
    """The ANAS attention unit of an AttGenotype, drawn as the reference's `attention_block`:
    input_1 and input_2 (both the block's map) -> nodes 0..n-1 -> 'mixed attention' (their sum)
    -> sigmoid -> 'mask' (which multiplies the input)."""
    inputs = ['input_1', 'input_2']
    nodes = [str(i) for i in range(len(genotype.att) // 2)]
    edges = [(inputs[j] if j < 2 else str(j - 2), str(position // 2), op, '')
             for position, (op, j) in enumerate(genotype.att)]
    return cell_digraph(inputs, nodes, edges, nodes, join='mixed attention', after=[('sigmoid', 'mask')], fmt=fmt)


def seq_cell_to_dot(arch, cell, fmt='png'):
    """An SLNAS block: [in_x, op_x, in_y, op_y] per node; every node is concatenated
    and fused by BN, Mish, SE and a 1x1 conv."""
    seq = getattr(arch, cell)
    edges = [(state_name(seq[p]), str(p // 4), genotypes.SEQ_OPS[seq[p + 1]], '') for p in range(0, len(seq), 2)]
    nodes = [str(n) for n in range(len(seq) // 4)]
    return cell_digraph(['c_{k-2}', 'c_{k-1}'], nodes, edges, nodes, join='concat',
                        after=[('BN-Mish-SE-1x1', 'c_{k}')], fmt=fmt)


def render_digraph(g, path_stem, fmt='png'):
    """Write `<path_stem>.dot` and, when `dot` is on PATH, `<path_stem>.<fmt>`; return written paths."""
    import graphviz

    dot_path = path_stem + '.dot'
    atomic_write_text(dot_path, g.source)
    make_readable(dot_path)
    if not dot_available():
        return [dot_path]
    try:
        data = g.pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        return [dot_path]
    except graphviz.CalledProcessError as exc:
        raise UserError(f"graphviz failed to render {dot_path}: "
                        f"{(exc.stderr or b'').decode(errors='replace').strip()}") from exc
    image_path = f'{path_stem}.{fmt}'
    atomic_write(image_path, lambda f: f.write(data))
    make_readable(image_path)
    return [image_path, dot_path]


def draw_genotype(genotype, name, out_dir, fmt='png'):
    """Draw the normal and reduction cells into out_dir as normal_<name>.<fmt> and reduce_<name>.<fmt>
    (an ANAS AttGenotype: its unit as att_<name>.<fmt>), plus .dot sources; only the .dot sources
    when graphviz's `dot` is missing.  Returns the paths."""
    if fmt not in FORMATS:
        raise UserError(f"unknown format '{fmt}'; choose one of {', '.join(FORMATS)}")
    genotype = as_genotype(genotype)
    make_out_dir(out_dir)
    if isinstance(genotype, genotypes.AttGenotype):
        return render_digraph(attention_unit_to_dot(genotype, fmt), os.path.join(out_dir, f'att_{name}'), fmt)
    written = []
    for cell in ('normal', 'reduce'):
        g = genotype_to_dot(genotype, cell, fmt=fmt)
        written += render_digraph(g, os.path.join(out_dir, f'{cell}_{name}'), fmt)
    return written


def make_out_dir(out_dir):
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output directory {out_dir} ({exc.strerror}); "
                        f"choose another with --out") from exc
