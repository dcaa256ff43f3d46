"""The matplotlib figures of a run and of a comparison: architecture-weight heat maps, weights over
epochs, training curves, skip_connect counts, the search diagnostics (search_diagnostics.py), the
collapse guards' schedules (collapse_guards.py), and test accuracy against parameters (compare.py).
matplotlib is imported only when a figure is drawn (no pyplot: the caller's backend is left alone).
"""
import math

import benchmark_table
import genotypes
import nb201
import search_diagnostics
from drawing import state_name
from userio import atomic_write, make_readable

def finite_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def new_figure(width, height):
    """A matplotlib Figure of width x height inches (also tabular.py's)."""
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone (Agg canvas)
    return Figure(figsize=(width, height), dpi=100)


def save_figure(fig, path):
    atomic_write(path, lambda f: fig.savefig(f, format='png', bbox_inches='tight'))
    return make_readable(path)


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


def row_labels(table, rows, edges):
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
    fig = new_figure(2.5 + 0.95 * cols, 1.4 + 0.38 * rows)
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
    return save_figure(fig, path)


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
    fig = new_figure(16, 3.6)
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
    return save_figure(fig, path)


GUARD_SCHEDULES = {'auxiliary_skip_weight': 'auxiliary skip weight (DARTS-)',
                   'param_free_dropout': 'dropout of parameter-free ops (P-DARTS)'}


def plot_guards(metrics, args, path):
    """The collapse guards of a search (collapse_guards.py) and what they did, per epoch: their
    schedules, the parameter-free ops and skip connections of the normal cell (with the
    --max_skip_connect and --early_stop_param_free lines), the epochs the ranking has been stable
    (with --early_stop_stable), and the epoch an early stop ended the search."""
    args = args or {}
    schedules = [key for key in GUARD_SCHEDULES if any(finite_number(m.get(key)) for m in metrics)]
    stable = [(m['epoch'], m['ranking_stable_epochs']) for m in metrics if finite_number(m.get('ranking_stable_epochs'))]
    limits = {name: args.get(name) for name in ('max_skip_connect', 'early_stop_param_free', 'early_stop_stable')}
    if not schedules and not stable and all(value is None for value in limits.values()):
        return None
    genotyped = [m for m in metrics if isinstance(m.get('genotype'), dict)]
    fig = new_figure(14, 3.6)
    axes = fig.subplots(1, 3)
    for c, key in enumerate(schedules):
        points = [(m['epoch'], m[key]) for m in metrics if finite_number(m.get(key))]
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
    return save_figure(fig, path)


def plot_weights_over_epochs(table, candidates, epochs, series, row_labels, path):
    """One subplot per row (edge), one line per candidate; skip_connect drawn thick black dashed."""
    import numpy as np

    data = np.asarray(series, dtype=float)  # epochs x rows x candidates
    rows = data.shape[1]
    ncols = min(rows, 5)
    nrows = math.ceil(rows / ncols)
    fig = new_figure(3.2 * ncols, 2.4 * nrows + 0.8)
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
    return save_figure(fig, path)


def plot_curves(metrics, path):
    """train/valid loss, train/valid accuracy and (when logged) learning rate against epoch."""
    panels = [('loss', ('train_loss', 'valid_loss')), ('accuracy (%)', ('train_acc', 'valid_acc')),
              ('learning rate', ('lr',))]
    panels = [(title, [k for k in keys if any(finite_number(m.get(k)) for m in metrics)]) for title, keys in panels]
    panels = [(title, keys) for title, keys in panels if keys]
    if not panels:
        return None
    return _plot_per_epoch(metrics, panels, path)


def _plot_per_epoch(metrics, panels, path, labels=None):
    """One panel per (title, keys), each key's logged values against epoch, labelled by `labels`."""
    fig = new_figure(4.6 * len(panels), 3.6)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, keys) in zip(axes, panels):
        for key in keys:
            points = [(m['epoch'], m[key]) for m in metrics if finite_number(m.get(key))]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker='.' if len(points) < 30 else None,
                    label=(labels or {}).get(key, key))
        ax.set_title(title)
        _integer_epochs(ax)
        ax.set_xlabel('epoch')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_latency(metrics, path):
    """A latency-aware search (--latency_table): validation accuracy, and the supernet's expected
    and the derived cell's table latency, against epoch."""
    keys = ('expected_latency_ms', 'derived_latency_ms')
    if not any(finite_number(m.get(k)) for m in metrics for k in keys):
        return None
    return _plot_per_epoch(metrics, [('validation accuracy (%)', ('valid_acc',)), ('table latency (ms)', keys)],
                           path, labels={'expected_latency_ms': 'supernet (expected)',
                                         'derived_latency_ms': 'derived cell'})


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
    fig = new_figure(5.5, 3.4)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([p[0] for p in shown], [p[1] for p in shown], marker='o')
    ax.set_title(f'benchmark {metric} of the derived cell')
    _integer_epochs(ax)
    ax.set_xlabel('epoch')
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_skip_counts(metrics, path):
    points = [(m['epoch'],) + skip_counts(m['genotype']) for m in metrics if isinstance(m.get('genotype'), dict)]
    if not points:
        return None
    fig = new_figure(5.5, 3.4)
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
    return save_figure(fig, path)


# compare.py's columns that test accuracy is plotted against: (axis label, what, file name).
ACCURACY_AGAINST = {'params_M': ('parameters (M)', 'parameters', 'accuracy_vs_params.png'),
                    'latency_ms': ('latency (ms/image)', 'measured latency', 'accuracy_vs_latency.png')}


def plot_accuracy_against(rows, column, path):
    """Test accuracy against `column` (a key of ACCURACY_AGAINST), one point per training run:
    random architectures grey, the others in colour with their label.  `rows` are compare.py's
    results per architecture."""
    fig = new_figure(6.4, 4.4)
    ax = fig.add_subplot(1, 1, 1)
    random_shown, colour = False, 0
    for row in rows:
        if not row['runs']:
            continue
        xs = [row[column]] * len(row['runs'])
        ys = [run['top1'] for run in row['runs']]
        if row['random']:
            ax.scatter(xs, ys, color='0.6', marker='o', s=22, label=None if random_shown else 'random cells')
            random_shown = True
        else:
            ax.scatter(xs, ys, color=f'C{colour % 10}', marker='D', s=34, label=row['label'], zorder=3)
            colour += 1
    label, what, _ = ACCURACY_AGAINST[column]
    ax.set_xlabel(label)
    ax.set_ylabel('test accuracy (%)')
    ax.set_title(f'test accuracy against {what}, one point per run')
    ax.grid(alpha=0.3)
    if random_shown or colour:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_scores_vs_accuracy(points, name, metric, title, path):
    """One point per architecture, (its `name` proxy score, its `metric`): rank.py's scatter plots."""
    fig = new_figure(4.8, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    if points:
        ax.scatter(*zip(*points), s=14, color='C0')
    ax.set_xlabel(f'{name} score')
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)
