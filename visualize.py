"""See the search: cell drawings, architecture-weight heat maps, curves, TensorBoard and a run report.

    python visualize.py Att_DARTS                          # normal and reduction cell of a named genotype
    python visualize.py runs/search-XYZ/genotype.json --format svg
    python visualize.py runs/search-XYZ/                   # a run directory: cells, heat maps, curves, report.html

Genotype mode (a name in `genotypes.NAMED` or a `genotype.json`, SLNAS and NAG DAG JSON included)
writes `normal_<name>.<fmt>` and `reduce_<name>.<fmt>` plus their `.dot` sources into `--out`
(default: the current directory for a name, the JSON file's directory for a path).  The drawing
follows the DARTS/Att-DARTS `visualize.py`: graphviz, `rankdir=LR`, inputs "c_{k-2}"/"c_{k-1}"
(darkseagreen2), intermediate nodes "0".."n-1" (lightblue), output "c_{k}" (palegoldenrod); each
edge is labelled with its op and, on a second line, its attention; only the concatenated states
feed the output; a bottleneck attention draws states -> "c'_{k}" -> (attention) -> "c_{k}".  A 'none'
edge (a sparse genotype) is drawn dashed and grey, labelled 'none', so the drawing still has one edge
per genotype entry.  A NAG cell labels its vertices "<n> <op>" and leaves its edges unlabelled.
Without graphviz's `dot` on PATH only the `.dot` sources are written, with a line saying how to
render them.

Run-directory mode reads the files the search and train scripts write (`args.json`, `metrics.jsonl`,
`alphas.jsonl`, `genotype.json`; any subset) and writes into `--out` (default RUNDIR/report/) the
cells, one heat map per weight table of the last epoch's deviation from uniform, the weights over
epochs, loss/accuracy curves, the skip_connect count per epoch, the search diagnostics per epoch
(search_diagnostics.py) and a static `report.html` (relative image paths, no external assets).  Scripts call `write_report(run_dir)` at the end of a run.

`TensorBoardLogger(run_dir)` writes scalars, weight histograms and cell images when tensorboard is
installed and does nothing otherwise.
"""
import argparse
import html
import io
import json
import math
import os
import shutil
import sys
import time

import benchmark_table
import flags
import genotypes
import nb201
import nag_cells
import search_diagnostics
import tabular
from userio import UserError, atomic_write, atomic_write_text

FORMATS = ('png', 'pdf', 'svg')
INPUT_COLOR = 'darkseagreen2'
NODE_COLOR = 'lightblue'
OUTPUT_COLOR = 'palegoldenrod'
RUN_FILES = ('args.json', 'metrics.jsonl', 'alphas.jsonl', 'genotype.json')


def render_hint(fmt='png'):
    return (f"install graphviz (apt-get install graphviz), then render each source with "
            f"dot -T{fmt} file.dot -o file.{fmt}")


# --------------------------------------------------------------------------------------------------
# Cells
# --------------------------------------------------------------------------------------------------

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


def _as_genotype(genotype):
    if isinstance(genotype, dict):
        return genotypes.from_dict(genotype)
    return genotype


def genotype_to_dot(genotype, cell, fmt='png'):
    """The graphviz Digraph of the 'normal' or 'reduce' cell of a DARTS/Att-DARTS genotype."""
    if cell not in ('normal', 'reduce'):
        raise ValueError(f"cell must be 'normal' or 'reduce', got {cell!r}")
    genotype = _as_genotype(genotype)
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


def nb201_cell_to_dot(genotype, fmt='png'):
    """A NAS-Bench-201 cell: node 0 its input, nodes 1 and 2, node 3 its output; every edge with
    its op (and attention), 'none' dashed."""
    edges = [(str(source), str(target), op, attention)
             for (target, source), op, attention in zip(nb201.EDGES, genotype.ops, genotype.attentions)]
    return cell_digraph(['0'], [str(n) for n in range(1, nb201.NODES - 1)], edges, [], join=str(nb201.NODES - 1),
                        fmt=fmt)


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
    _readable(dot_path)
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
    _readable(image_path)
    return [image_path, dot_path]


def draw_genotype(genotype, name, out_dir, fmt='png'):
    """Draw the normal and reduction cells into out_dir as normal_<name>.<fmt> and reduce_<name>.<fmt>
    (an ANAS AttGenotype: its unit as att_<name>.<fmt>; a NAS-Bench-201 cell as nb201_<name>.<fmt>),
    plus .dot sources; only the .dot sources when graphviz's `dot` is missing.  Returns the paths."""
    if fmt not in FORMATS:
        raise UserError(f"unknown format '{fmt}'; choose one of {', '.join(FORMATS)}")
    genotype = _as_genotype(genotype)
    _make_out_dir(out_dir)
    if isinstance(genotype, genotypes.AttGenotype):
        return render_digraph(attention_unit_to_dot(genotype, fmt), os.path.join(out_dir, f'att_{name}'), fmt)
    if isinstance(genotype, nb201.NB201Genotype):
        return render_digraph(nb201_cell_to_dot(genotype, fmt), os.path.join(out_dir, f'nb201_{name}'), fmt)
    written = []
    for cell in ('normal', 'reduce'):
        g = genotype_to_dot(genotype, cell, fmt=fmt)
        written += render_digraph(g, os.path.join(out_dir, f'{cell}_{name}'), fmt)
    return written


# --------------------------------------------------------------------------------------------------
# Run directories
# --------------------------------------------------------------------------------------------------

def _make_out_dir(out_dir):
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output directory {out_dir} ({exc.strerror}); "
                        f"choose another with --out") from exc


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); it may be truncated") from exc


def read_jsonl(path):
    """The JSON objects of a .jsonl file.  A malformed last line (a run killed mid-write) is dropped
    with a warning; a malformed line elsewhere is a UserError naming it."""
    with open(path, encoding='utf-8', errors='replace') as f:
        lines = [(number, line) for number, line in enumerate(f, 1) if line.strip()]
    records = []
    for i, (number, line) in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if i == len(lines) - 1:
                print(f"warning: {path} line {number} is truncated; ignoring it", file=sys.stderr)
                break
            raise UserError(f"{path} line {number} is not valid JSON ({exc})") from exc
        if not isinstance(record, dict):
            raise UserError(f"{path} line {number}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    return records


def _by_epoch(records):
    """Records sorted by epoch, the last one logged winning (a resumed run may log an epoch twice)."""
    keyed, unkeyed = {}, []
    for record in records:
        epoch = record.get('epoch')
        if isinstance(epoch, (int, float)) and not isinstance(epoch, bool):
            keyed[int(epoch)] = record
        else:
            unkeyed.append(record)
    if keyed:
        return [keyed[e] for e in sorted(keyed)]
    return [dict(r, epoch=i) for i, r in enumerate(unkeyed)]


def _check_alphas(records, path):
    for record in records:
        where = f"{path} epoch {record.get('epoch')}"
        weights = record.get('weights', {})
        if not isinstance(weights, dict):
            raise UserError(f"{where}: 'weights' must be an object of tables")
        for table, content in weights.items():
            if not isinstance(content, dict) or not isinstance(content.get('candidates'), list) \
                    or not isinstance(content.get('values'), list):
                raise UserError(f"{where}: table {table} must have 'candidates' and 'values' lists")
            width = len(content['candidates'])
            for row in content['values']:
                if not isinstance(row, list) or len(row) != width or \
                        not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row):
                    raise UserError(f"{where}: table {table} has a row that is not {width} numbers "
                                    f"(one per candidate)")


def load_run(run_dir):
    """The parsed files of a run directory: dict with args, metrics, alphas, genotype (None if absent)."""
    if not os.path.isdir(run_dir):
        raise UserError(f"{run_dir} is not a directory")
    present = [name for name in RUN_FILES if os.path.isfile(os.path.join(run_dir, name))]
    if not present:
        raise UserError(f"{run_dir} has none of {', '.join(RUN_FILES)}; give a run directory written by "
                        f"a search or train script, a genotype name ({', '.join(genotypes.NAMED)}) "
                        f"or a genotype .json")
    run = {'dir': run_dir, 'args': None, 'metrics': [], 'alphas': [], 'genotype': None,
           'genotype_source': None}
    path = os.path.join(run_dir, 'args.json')
    if os.path.isfile(path):
        run['args'] = _read_json(path)
        if not isinstance(run['args'], dict):
            raise UserError(f"{path}: expected a JSON object of arguments")
    path = os.path.join(run_dir, 'metrics.jsonl')
    if os.path.isfile(path):
        run['metrics'] = _by_epoch(read_jsonl(path))
    path = os.path.join(run_dir, 'alphas.jsonl')
    if os.path.isfile(path):
        run['alphas'] = _by_epoch(read_jsonl(path))
        _check_alphas(run['alphas'], path)
    path = os.path.join(run_dir, 'genotype.json')
    if os.path.isfile(path):
        run['genotype'] = genotypes.load(path)
        run['genotype_source'] = 'genotype.json'
    else:
        for record in reversed(run['metrics']):
            if isinstance(record.get('genotype'), dict):
                source = f"metrics.jsonl epoch {record['epoch']}"
                run['genotype'] = genotypes.from_dict(record['genotype'], source=source)
                run['genotype_source'] = f"latest genotype ({source}); genotype.json not written yet"
                break
    return run


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _figure(width, height):
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone (Agg canvas)
    return Figure(figsize=(width, height), dpi=100)


def _readable(path):
    """Make a written file world-readable, like a plain open() would (atomic writes create it 0600)."""
    os.chmod(path, 0o644)
    return path


def _save_figure(fig, path):
    atomic_write(path, lambda f: fig.savefig(f, format='png', bbox_inches='tight'))
    return _readable(path)


def _integer_epochs(ax):
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def edge_labels(edges):
    """'node 2 <- c_{k-1}' for each [node, input] edge row ('node 2 <- node 1' for NAS-Bench-201's)."""
    if [tuple(edge) for edge in edges] == list(nb201.EDGES):
        return [f'node {node} <- node {source}' for node, source in nb201.EDGES]
    labels = []
    for edge in edges:
        try:
            node, index = int(edge[0]), int(edge[1])
        except (TypeError, ValueError, IndexError):
            labels.append(str(edge))
            continue
        source = state_name(index) if index < 2 else f'node {index - 2}'
        labels.append(f'node {node} <- {source}')
    return labels


def _row_labels(table, rows, edges):
    if len(edges) == rows and not table.startswith('gammas'):
        return edge_labels(edges)
    if rows == 1:
        return ['cell output']
    return [f'row {i}' for i in range(rows)]


def plot_heatmap(table, candidates, values, row_labels, epoch, path):
    """Heat map of one weight table's deviation from uniform, weight - 1/K, on a diverging scale
    centred at 0 (red above uniform, blue below) and as wide as the largest deviation, so that a
    small but consistent preference is as visible as a large one; each cell is annotated with its
    deviation, the row maximum in bold."""
    import numpy as np

    data = np.asarray(values, dtype=float)
    rows, cols = data.shape
    deviation = data - 1.0 / cols
    fig = _figure(2.5 + 0.95 * cols, 1.4 + 0.38 * rows)
    ax = fig.add_subplot(1, 1, 1)
    finite = np.abs(deviation[np.isfinite(deviation)])
    limit = max(float(finite.max()), 1e-12) if finite.size else 1.0  # a diverged search logs NaN
    image = ax.imshow(deviation, cmap='RdBu_r', aspect='auto', vmin=-limit, vmax=limit)
    ax.set_xticks(range(cols))
    ax.set_xticklabels(candidates, rotation=40, ha='right')
    ax.set_yticks(range(rows))
    ax.set_yticklabels(row_labels)
    ax.set_title(f'{table} - 1/{cols} (epoch {epoch})')
    for r in range(rows):
        best = int(np.nanargmax(data[r])) if np.isfinite(data[r]).any() else -1
        for c in range(cols):
            ax.text(c, r, f'{deviation[r, c]:+.2g}', ha='center', va='center', fontsize=8,
                    color='white' if abs(deviation[r, c]) > 0.6 * limit else 'black',
                    fontweight='bold' if c == best else 'normal')
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label='weight - 1/K')
    return _save_figure(fig, path)


def plot_diagnostics(alphas, metrics, path):
    """Per epoch: how far the mean entropy of each table's edges lies below the uniform weights' log K
    (the mean KL divergence from uniform), the mean distance from uniform, the derived genotype's stability and the normal cell's
    parameter-free op count (search_diagnostics)."""
    series = [(record['epoch'], search_diagnostics.table_statistics(record.get('weights', {}))) for record in alphas]
    tables = list(dict.fromkeys(name for _, statistics in series for name in statistics))
    genotypes_by_epoch = [(m['epoch'], m['genotype']) for m in metrics if isinstance(m.get('genotype'), dict)]
    stability = [(epoch, search_diagnostics.genotype_stability(before, after))
                 for (_, before), (epoch, after) in zip(genotypes_by_epoch, genotypes_by_epoch[1:])]
    free = [(epoch, search_diagnostics.parameter_free_ops(record)) for epoch, record in genotypes_by_epoch]
    free = [(epoch, count) for epoch, count in free if count is not None]
    if not tables and not stability and not free:
        return None
    fig = _figure(16, 3.6)
    axes = fig.subplots(1, 4)
    for c, name in enumerate(tables):
        points = [(epoch, s[name]) for epoch, s in series if name in s]
        epochs = [p[0] for p in points]
        axes[0].plot(epochs, [s['max_entropy'] - s['entropy_mean'] for _, s in points], marker='.',
                     color=f'C{c % 10}', label=name)
        axes[1].plot(epochs, [s['uniform_distance_mean'] for _, s in points], marker='.', color=f'C{c % 10}', label=name)
    axes[0].set_title('log K - mean entropy (0: uniform)')
    axes[1].set_title('mean distance from uniform (total variation)')
    axes[2].plot([p[0] for p in stability], [p[1] for p in stability], marker='o', color='black')
    axes[2].set_ylim(-0.05, 1.05)
    axes[2].set_title('genotype edges kept from the epoch before')
    axes[3].plot([p[0] for p in free], [p[1] for p in free], marker='s', color='C3')
    axes[3].yaxis.get_major_locator().set_params(integer=True)
    axes[3].set_title('parameter-free ops in the normal cell')
    for ax in axes:
        _integer_epochs(ax)
        ax.set_xlabel('epoch')
        ax.grid(alpha=0.3)
    if tables:
        axes[0].legend(fontsize=7)
    fig.tight_layout()
    return _save_figure(fig, path)


GUARD_SCHEDULES = {'auxiliary_skip_weight': 'auxiliary skip weight (DARTS-)',
                   'param_free_dropout': 'dropout of parameter-free ops (P-DARTS)'}


def plot_guards(metrics, args, path):
    """The collapse guards of a search (collapse_guards.py) and what they did, per epoch: their
    schedules, the parameter-free ops and skip connections of the normal cell (with the
    --max_skip_connect and --early_stop_param_free lines), the epochs the ranking has been stable
    (with --early_stop_stable), and the epoch an early stop ended the search."""
    args = args or {}
    schedules = [key for key in GUARD_SCHEDULES if any(_number(m.get(key)) for m in metrics)]
    stable = [(m['epoch'], m['ranking_stable_epochs']) for m in metrics if _number(m.get('ranking_stable_epochs'))]
    limits = {name: args.get(name) for name in ('max_skip_connect', 'early_stop_param_free', 'early_stop_stable')}
    if not schedules and not stable and all(value is None for value in limits.values()):
        return None
    genotyped = [m for m in metrics if isinstance(m.get('genotype'), dict)]
    fig = _figure(14, 3.6)
    axes = fig.subplots(1, 3)
    for c, key in enumerate(schedules):
        points = [(m['epoch'], m[key]) for m in metrics if _number(m.get(key))]
        axes[0].plot([p[0] for p in points], [p[1] for p in points], marker='.', color=f'C{c}', label=GUARD_SCHEDULES[key])
    axes[0].set_title('guard schedules')
    if not schedules:
        axes[0].text(0.5, 0.5, 'none (--auxiliary_skip, --param_free_dropout)', ha='center', va='center',
                     transform=axes[0].transAxes, color='grey')
        axes[0].set_yticks([])
    epochs = [m['epoch'] for m in genotyped]
    axes[1].plot(epochs, [search_diagnostics.parameter_free_ops(m['genotype']) for m in genotyped], marker='s',
                 color='C3', label='parameter-free ops')
    axes[1].plot(epochs, [skip_counts(m['genotype'])[0] for m in genotyped], marker='o', color='black',
                 label='skip_connect')
    for name, style in (('max_skip_connect', ':'), ('early_stop_param_free', '--')):
        if limits[name] is not None:
            axes[1].axhline(limits[name], color='grey', linestyle=style, label=f'--{name} {limits[name]}')
    axes[1].yaxis.get_major_locator().set_params(integer=True)
    axes[1].set_title('normal cell of the derived genotype')
    axes[2].plot([p[0] for p in stable], [p[1] for p in stable], marker='o', color='C2')
    if not stable:
        axes[2].text(0.5, 0.5, 'not logged (without --early_stop_stable)', ha='center', va='center',
                     transform=axes[2].transAxes, color='grey')
        axes[2].set_yticks([])
        axes[2].set_xlim(axes[1].get_xlim())
    if limits['early_stop_stable'] is not None:
        axes[2].axhline(limits['early_stop_stable'], color='grey', linestyle='--',
                        label=f"--early_stop_stable {limits['early_stop_stable']}")
    axes[2].set_title('epochs the learnable ranking has been stable')
    stopped = [m['epoch'] for m in metrics if m.get('early_stop')]
    for ax in axes:
        for epoch in stopped:
            ax.axvline(epoch, color='C3', alpha=0.5, label='early stop')
        _integer_epochs(ax)
        ax.set_xlabel('epoch')
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return _save_figure(fig, path)


def plot_weights_over_epochs(table, candidates, epochs, series, row_labels, path):
    """One subplot per row (edge), one line per candidate; skip_connect drawn thick black dashed."""
    import numpy as np

    data = np.asarray(series, dtype=float)  # epochs x rows x candidates
    rows = data.shape[1]
    ncols = min(rows, 5)
    nrows = math.ceil(rows / ncols)
    fig = _figure(3.2 * ncols, 2.4 * nrows + 0.8)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
    handles = []
    for r in range(nrows * ncols):
        ax = axes[r // ncols][r % ncols]
        if r >= rows:
            ax.set_visible(False)
            continue
        for c, name in enumerate(candidates):
            if name == 'skip_connect':
                style = dict(color='black', linestyle='--', linewidth=2.2)
            else:
                style = dict(color=f'C{c % 10}', linewidth=1.3)
            (line,) = ax.plot(epochs, data[:, r, c], marker='.' if len(epochs) < 20 else None,
                              label=name, **style)
            if r == 0:
                handles.append(line)
        ax.set_title(row_labels[r], fontsize=9)
        _integer_epochs(ax)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        if r + ncols >= rows:  # nothing below it: show the epoch axis
            ax.set_xlabel('epoch')
            ax.xaxis.set_tick_params(labelbottom=True)
    fig.suptitle(f'{table} over epochs')
    height = 2.4 * nrows + 0.8
    fig.legend(handles=handles, loc='lower center', ncol=min(len(candidates), 8), fontsize=8,
               bbox_to_anchor=(0.5, 0.0))
    # Fixed margins (in inches) instead of tight_layout: many subplots make tight_layout slow.
    fig.subplots_adjust(left=0.5 / (3.2 * ncols), right=1 - 0.15 / (3.2 * ncols), top=1 - 0.55 / height,
                        bottom=0.85 / height, wspace=0.12, hspace=0.35)
    return _save_figure(fig, path)


def plot_curves(metrics, path):
    """train/valid loss, train/valid accuracy and (when logged) learning rate against epoch."""
    panels = [('loss', ('train_loss', 'valid_loss')), ('accuracy (%)', ('train_acc', 'valid_acc')),
              ('learning rate', ('lr',))]
    panels = [(title, [k for k in keys if any(_number(m.get(k)) for m in metrics)]) for title, keys in panels]
    panels = [(title, keys) for title, keys in panels if keys]
    if not panels:
        return None
    fig = _figure(4.6 * len(panels), 3.6)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, keys) in zip(axes, panels):
        for key in keys:
            points = [(m['epoch'], m[key]) for m in metrics if _number(m.get(key))]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker='.' if len(points) < 30 else None,
                    label=key)
        ax.set_title(title)
        _integer_epochs(ax)
        ax.set_xlabel('epoch')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save_figure(fig, path)


def skip_counts(genotype_record):
    """(normal, reduce) number of skip_connect entries of a genotype dict (reduce None for a
    NAS-Bench-201 cell, which is the only cell)."""
    if 'nb201' in genotype_record:
        return nb201.parse(genotype_record['nb201']).ops.count('skip_connect'), None
    counts = []
    for cell in ('normal', 'reduce'):
        entries = genotype_record.get(cell) or []
        counts.append(sum(1 for e in entries if isinstance(e, (list, tuple)) and e and e[0] == 'skip_connect'))
    return tuple(counts)


def benchmark_curve(metrics, table=None, metric=None):
    """[(epoch, value or None)]: the benchmark value of each epoch's derived cell, looked up in
    `table` (benchmark_table) from the epoch's genotype, or else as the search logged it."""
    points = []
    for m in metrics:
        if table is not None and isinstance(m.get('genotype'), dict):
            genotype = genotypes.from_dict(m['genotype'], source=f"metrics.jsonl epoch {m['epoch']}")
            points.append((m['epoch'], benchmark_table.derived_value(table, metric, genotype)[0]))
        elif 'benchmark' in m:
            points.append((m['epoch'], m['benchmark']))
    return points


def plot_benchmark(points, metric, path):
    shown = [(epoch, value) for epoch, value in points if value is not None]
    if not shown:
        return None
    fig = _figure(5.5, 3.4)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([p[0] for p in shown], [p[1] for p in shown], marker='o')
    ax.set_title(f'benchmark {metric} of the derived cell')
    _integer_epochs(ax)
    ax.set_xlabel('epoch')
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save_figure(fig, path)


def plot_skip_counts(metrics, path):
    points = [(m['epoch'],) + skip_counts(m['genotype']) for m in metrics if isinstance(m.get('genotype'), dict)]
    if not points:
        return None
    fig = _figure(5.5, 3.4)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([p[0] for p in points], [p[1] for p in points], marker='o', label='normal cell')
    if any(p[2] is not None for p in points):
        ax.plot([p[0] for p in points], [p[2] for p in points], marker='s', label='reduction cell')
    ax.set_title('skip_connect edges in the derived genotype')
    _integer_epochs(ax)
    ax.set_xlabel('epoch')
    ax.set_ylabel('count')
    most = max(len(m['genotype'].get(cell) or []) for m in metrics if isinstance(m.get('genotype'), dict)
               for cell in ('normal', 'reduce'))
    ax.set_ylim(-0.3, max(most, 1) + 0.3)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save_figure(fig, path)


def genotype_json(genotype):
    """The genotype.json text with one entry per line (readable, and still valid JSON)."""
    record = genotypes.to_dict(_as_genotype(genotype))
    lines = []
    for key, value in record.items():
        if isinstance(value, list) and value and isinstance(value[0], list):
            body = ',\n'.join('    ' + json.dumps(entry) for entry in value)
            lines.append(f'  {json.dumps(key)}: [\n{body}\n  ]')
        else:
            lines.append(f'  {json.dumps(key)}: {json.dumps(value)}')
    return '{\n' + ',\n'.join(lines) + '\n}'


def _format(value):
    if isinstance(value, float):
        return f'{value:.6g}'
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _seconds(seconds):
    if seconds >= 3600:
        return f'{seconds / 3600:.2f} h'
    if seconds >= 60:
        return f'{seconds / 60:.1f} min'
    return f'{seconds:.1f} s'


_CSS = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0; font-size: .9em; }
td, th { border: 1px solid #ccc; padding: .2em .6em; text-align: left; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #eee; margin: .3em 0; display: block; }
figure { margin: 1em 0; } figcaption { font-size: .9em; color: #555; }
pre { background: #f7f7f7; padding: .6em; overflow-x: auto; font-size: .85em; }
.note { color: #8a5a00; }
"""


class _Page:
    def __init__(self, title):
        self.parts = ['<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">',
                      f'<title>{html.escape(title)}</title>', f'<style>{_CSS}</style></head><body>',
                      f'<h1>{html.escape(title)}</h1>']

    def add(self, text):
        self.parts.append(text)

    def heading(self, text):
        self.add(f'<h2>{html.escape(text)}</h2>')

    def para(self, text, cls=None):
        self.add(f'<p{f" class={cls!r}" if cls else ""}>{html.escape(text)}</p>')

    def image(self, path, caption):
        src = html.escape(os.path.basename(path), quote=True)
        self.add(f'<figure><img src="{src}" alt="{html.escape(caption, quote=True)}">'
                 f'<figcaption>{html.escape(caption)}</figcaption></figure>')

    def table(self, header, rows):
        self.add('<table>')
        if header:
            self.add('<tr>' + ''.join(f'<th>{html.escape(h)}</th>' for h in header) + '</tr>')
        for row in rows:
            cells = ''.join(f'<td class="num">{html.escape(_format(v))}</td>' if _number(v)
                            else f'<td>{html.escape(_format(v))}</td>' for v in row)
            self.add(f'<tr>{cells}</tr>')
        self.add('</table>')

    def html(self):
        return '\n'.join(self.parts + ['</body></html>', ''])


def write_report(run_dir, out_dir=None, fmt='png', benchmark=None, benchmark_metric=None):
    """Draw everything for a run directory into out_dir (default RUNDIR/report) and write report.html
    there; returns its path.  Cells are always drawn as PNG for the page (and also as `fmt`).
    `benchmark` (a benchmark_table table) looks up each epoch's derived cell by `benchmark_metric`;
    without it the values the search logged (train_search.py --benchmark) are drawn.  A tabular-search
    directory (tabular_search.py) gets its own report."""
    if tabular.is_experiment(run_dir):
        return tabular.write_report(run_dir, out_dir)
    run = load_run(run_dir)
    out_dir = out_dir or os.path.join(run_dir, 'report')
    _make_out_dir(out_dir)
    metrics, alphas = run['metrics'], run['alphas']
    title = f'Run report: {os.path.basename(os.path.normpath(os.path.abspath(run_dir)))}'
    page = _Page(title)
    page.para(f'Run directory: {os.path.abspath(run_dir)}. Written {time.strftime("%Y-%m-%d %H:%M:%S")}.')

    # Summary: parameters, time per epoch, accuracy.
    page.heading('Summary')
    summary = [('epochs logged', len(metrics))]
    params = [m['params_MB'] for m in metrics if _number(m.get('params_MB'))]
    summary.append(('parameters (params_MB, millions)', params[-1] if params else 'not logged'))
    times = [m['epoch_time'] for m in metrics if _number(m.get('epoch_time'))]
    if times:
        summary += [('time per epoch (mean)', _seconds(sum(times) / len(times))),
                    ('time per epoch (last)', _seconds(times[-1])), ('total time', _seconds(sum(times)))]
    else:
        summary.append(('time per epoch', 'not logged'))
    valid = [(m['valid_acc'], m['epoch']) for m in metrics if _number(m.get('valid_acc'))]
    if valid:
        summary += [('final valid_acc', valid[-1][0]),
                    ('best valid_acc', f'{max(valid)[0]:.6g} (epoch {max(valid)[1]})')]
    page.table(None, summary)

    page.heading('Arguments')
    if run['args'] is not None:
        page.table(('argument', 'value'), sorted(run['args'].items()))
    else:
        page.para('args.json not found.', 'note')

    # Genotype and cells.
    page.heading('Genotype')
    if run['genotype'] is not None:
        genotype = run['genotype']
        page.para(f"From {run['genotype_source']}.")
        page.add(f'<pre>{html.escape(genotype_json(genotype))}</pre>')
        cells = draw_genotype(genotype, 'genotype', out_dir, 'png')
        if fmt != 'png':
            draw_genotype(genotype, 'genotype', out_dir, fmt)
        for path in cells:
            if path.endswith('.png'):
                page.image(path, f"{os.path.basename(path).split('_')[0]} cell")
        if not any(p.endswith('.png') for p in cells):
            page.para(f"graphviz's dot was not found, so only the sources "
                      f"{', '.join(os.path.basename(p) for p in cells)} were written; {render_hint()}.", 'note')
    else:
        page.para('No genotype.json and no genotype in metrics.jsonl.', 'note')

    # Architecture weights.
    if alphas:
        last = alphas[-1]
        edges = last.get('edges') or []
        page.heading(f"Architecture weights (softmaxed) minus uniform, epoch {last['epoch']}")
        for table, content in last.get('weights', {}).items():
            candidates, values = content['candidates'], content['values']
            if not values:
                continue
            labels = _row_labels(table, len(values), edges)
            page.image(plot_heatmap(table, candidates, values, labels, last['epoch'],
                                    os.path.join(out_dir, f'heatmap_{table}.png')),
                       f'{table}: deviation of the last epoch\'s weights from uniform 1/K '
                       f'(red above, blue below; row maximum in bold)')
        page.heading('Architecture weights over epochs')
        for table, content in last.get('weights', {}).items():
            candidates, shape = content['candidates'], (len(content['values']), len(content['candidates']))
            epochs, series = [], []
            for record in alphas:
                other = record.get('weights', {}).get(table)
                if other and other['candidates'] == candidates and \
                        (len(other['values']), len(other['candidates'])) == shape:
                    epochs.append(record['epoch'])
                    series.append(other['values'])
            if not series or not shape[0]:
                continue
            labels = _row_labels(table, shape[0], edges)
            page.image(plot_weights_over_epochs(table, candidates, epochs, series, labels,
                                                os.path.join(out_dir, f'weights_{table}.png')),
                       f'{table} over epochs (skip_connect dashed black)')

    # Curves.
    if metrics:
        page.heading('Training curves')
        curves = plot_curves(metrics, os.path.join(out_dir, 'curves.png'))
        if curves:
            page.image(curves, 'loss, accuracy and learning rate per epoch')
        skips = plot_skip_counts(metrics, os.path.join(out_dir, 'skip_connect.png'))
        if skips:
            page.image(skips, 'skip_connect count per epoch in the normal and reduction cells')
        metric = benchmark_metric if benchmark is not None else (run['args'] or {}).get('benchmark_metric')
        points = benchmark_curve(metrics, benchmark, metric)
        curve = plot_benchmark(points, metric, os.path.join(out_dir, 'benchmark.png'))
        if curve:
            page.heading('Benchmark')
            page.image(curve, f'the NAS-Bench-201 benchmark\'s {metric} of the cell derived after each epoch '
                              f'(epochs whose cell has no entry are left out)')
            page.table(('epoch', metric), [(epoch, 'no entry' if value is None else value) for epoch, value in points])
    if alphas or any(isinstance(m.get('genotype'), dict) for m in metrics):
        diagnostics = plot_diagnostics(alphas, metrics, os.path.join(out_dir, 'diagnostics.png'))
        if diagnostics:
            page.heading('Search diagnostics')
            page.image(diagnostics, 'is the search deciding? Entropy of the architecture weights, their distance '
                                    'from uniform, genotype stability and parameter-free ops per epoch')
    guards = plot_guards(metrics, run['args'], os.path.join(out_dir, 'guards.png')) if metrics else None
    if guards:
        page.heading('Collapse guards')
        page.image(guards, 'the guards\' schedules, the normal cell they act on, the ranking stability and any early stop')
    stop = next((m for m in metrics if m.get('early_stop')), None)
    if stop:
        page.para(f"The search stopped early after epoch {stop['epoch']}: {html.escape(stop['early_stop'])}.")
    if metrics:
        page.heading('Per epoch')
        keys = [k for k in ('epoch', 'lr', 'train_loss', 'train_acc', 'valid_loss', 'valid_acc',
                            'epoch_time', 'params_MB', 'genotype_stability', 'param_free_normal',
                            *GUARD_SCHEDULES, 'ranking_stable_epochs', 'tau')
                if any(k in m for m in metrics)]
        rows = [[m.get(k, '') for k in keys] for m in metrics]
        if any(isinstance(m.get('genotype'), dict) for m in metrics):
            keys.append('skip_connect (normal, reduce)')
            for row, m in zip(rows, metrics):
                counts = skip_counts(m['genotype']) if isinstance(m.get('genotype'), dict) else ()
                row.append(', '.join(str(n) for n in counts if n is not None))
        page.table(keys, rows)

    path = os.path.join(out_dir, 'report.html')
    atomic_write_text(path, page.html())
    return _readable(path)


# --------------------------------------------------------------------------------------------------
# Comparisons (compare.py)
# --------------------------------------------------------------------------------------------------

def plot_accuracy_vs_params(rows, path):
    """Test accuracy against parameters, one point per training run: random architectures grey,
    the others in colour with their label.  `rows` are compare.py's results per architecture."""
    fig = _figure(6.4, 4.4)
    ax = fig.add_subplot(1, 1, 1)
    random_shown, colour = False, 0
    for row in rows:
        if not row['runs']:
            continue
        xs = [row['params_M']] * len(row['runs'])
        ys = [run['top1'] for run in row['runs']]
        if row['random']:
            ax.scatter(xs, ys, color='0.6', marker='o', s=22, label=None if random_shown else 'random cells')
            random_shown = True
        else:
            ax.scatter(xs, ys, color=f'C{colour % 10}', marker='D', s=34, label=row['label'], zorder=3)
            colour += 1
    ax.set_xlabel('parameters (M)')
    ax.set_ylabel('test accuracy (%)')
    ax.set_title('test accuracy against parameters, one point per run')
    ax.grid(alpha=0.3)
    if random_shown or colour:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save_figure(fig, path)


def write_comparison_report(results, out_dir):
    """report.html of a comparison (compare.py's results.json): protocol, table and plot."""
    rows, protocol = results['architectures'], results['protocol']
    page = _Page(f'Comparison: {os.path.basename(os.path.normpath(os.path.abspath(out_dir)))}')
    page.para(f'Written {time.strftime("%Y-%m-%d %H:%M:%S")}. Every architecture is trained with the same '
              f'flags and seeds; test accuracy is the mean and sample standard deviation over the seeds.')
    page.heading('Protocol')
    page.table(('setting', 'value'), sorted(protocol.items()))
    page.heading('Results')
    header = ('architecture', 'source', 'C', 'params (M)', 'FLOPs (M)', 'latency (ms/image)', 'test acc. mean (%)',
              'test acc. std', 'runs', 'train time (min)')
    table = []
    for row in rows:
        if row['runs']:
            table.append((row['label'], row['source'], row['init_channels'], row['params_M'], row['flops_M'],
                          row['latency_ms'], row['top1_mean'], '' if row['top1_std'] is None else row['top1_std'],
                          len(row['runs']), row['train_time_s_mean'] / 60))
        else:
            table.append((row['label'], row['source'], row['init_channels'], '', '', '', 'not trained', '', 0, ''))
    if results.get('benchmark'):
        header += (f"benchmark {results['benchmark']['metric']}",)
        table = [entry + ('no entry' if row.get('benchmark') is None else row['benchmark'],)
                 for entry, row in zip(table, rows)]
    page.table(header, table)
    plot = os.path.join(out_dir, 'accuracy_vs_params.png')
    if os.path.isfile(plot):
        page.image(plot, 'test accuracy against parameters, one point per run (random cells grey)')
    page.heading('Runs')
    page.table(('architecture', 'seed', 'test top-1 (%)', 'test top-5 (%)', 'train time (min)', 'run directory'),
               [(row['label'], run['seed'], run['top1'], run['top5'], run['train_time_s'] / 60,
                 run['run_dir']) for row in rows for run in row['runs']])
    path = os.path.join(out_dir, 'report.html')
    atomic_write_text(path, page.html())
    return _readable(path)


# --------------------------------------------------------------------------------------------------
# TensorBoard
# --------------------------------------------------------------------------------------------------

class TensorBoardLogger:
    """TensorBoard scalars, weight histograms and cell images in run_dir; a no-op (`enabled` False)
    when tensorboard is not installed.  metrics.jsonl stays the record; this is only a viewer."""

    def __init__(self, run_dir):
        """run_dir None: a disabled logger (processes other than rank 0 of a torchrun job)."""
        self.writer = None
        if run_dir is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # ImportError, or a broken tensorboard/protobuf install
            return
        self.writer = SummaryWriter(log_dir=os.path.join(run_dir, 'tensorboard'))

    @property
    def enabled(self):
        return self.writer is not None

    def log_scalars(self, scalars, step):
        if not self.enabled:
            return
        for key, value in scalars.items():
            if _number(value):
                self.writer.add_scalar(key, value, step)

    def log_weights(self, tables, step):
        """tables: {name: array-like} or the alphas.jsonl form {name: {'candidates', 'values'}}."""
        if not self.enabled:
            return
        import numpy as np
        for name, values in tables.items():
            if isinstance(values, dict):
                values = values.get('values', [])
            if hasattr(values, 'detach'):
                values = values.detach().cpu().numpy()
            values = np.asarray(values, dtype=float)
            if values.size:
                self.writer.add_histogram(name, values, step)

    def log_genotype(self, genotype, step):
        if not self.enabled or not dot_available():
            return
        from matplotlib.image import imread
        for cell in ('normal', 'reduce'):
            try:
                data = genotype_to_dot(genotype, cell).pipe(format='png')
            except Exception:  # a drawing is not worth failing a run for
                continue
            self.writer.add_image(f'cell/{cell}', imread(io.BytesIO(data), format='png'), step,
                                  dataformats='HWC')

    def close(self):
        if self.enabled:
            self.writer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(
        description='Draw the cells of a genotype, or everything for a run directory (cells, weight heat '
                    'maps, weights over epochs, curves, report.html).')
    parser.add_argument('target', metavar='NAME_OR_JSON_OR_RUNDIR',
                        help=f"a named genotype ({', '.join(genotypes.NAMED)}), a genotype .json, "
                             f"or a run directory")
    parser.add_argument('--format', default='png', choices=FORMATS, help='cell image format (default png)')
    parser.add_argument('--out', default=None,
                        help='output directory (default: . for a name, the .json file\'s directory, '
                             'RUNDIR/report for a run directory)')
    parser.add_argument('--heatmap', action='store_true',
                        help='insist on a run directory (CNAS spelling); its report holds the heat maps')
    benchmark_table.add_arguments(parser)
    return parser


def main(argv=None):
    try:
        args = flags.parse_args(build_parser(), argv)
        if args.heatmap and not os.path.isdir(args.target):
            raise UserError(f"--heatmap needs a search run directory (with alphas.jsonl), not {args.target}")
        benchmark = benchmark_table.from_args(args)
        if os.path.isdir(args.target):
            path = write_report(args.target, args.out, args.format, benchmark, args.benchmark_metric)
            print(f'wrote {path}')
            if not dot_available():
                print(f"graphviz's dot was not found: the cells were written as .dot sources only; {render_hint(args.format)}")
            return 0
        if args.target not in genotypes.NAMED and not os.path.exists(args.target) and os.sep in args.target:
            raise UserError(f"{args.target} does not exist; give a genotype name "
                            f"({', '.join(genotypes.NAMED)}), a genotype .json or a run directory")
        genotype = genotypes.load(args.target)
        if benchmark is not None:
            value, why = benchmark_table.derived_value(benchmark, args.benchmark_metric, genotype)
            print(f'{args.benchmark_metric}: {value:.6g}' if why is None else f'{args.benchmark_metric}: {why}')
        if args.target in genotypes.NAMED:
            name, out_dir = args.target, args.out or '.'
        else:
            name = os.path.splitext(os.path.basename(args.target))[0]
            out_dir = args.out or os.path.dirname(os.path.abspath(args.target))
        written = draw_genotype(genotype, name, out_dir, args.format)
        if not dot_available():
            print(f"graphviz's dot was not found; wrote {', '.join(written)}; {render_hint(args.format)}")
        else:
            for path in written:
                print(f'wrote {path}')
        return 0
    except UserError as exc:
        message = ' '.join(str(exc).split())
        print(f'error: {message}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
