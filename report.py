"""The HTML report of a run directory and of a comparison (compare.py): static pages with relative
image paths and no external assets.

`write_report(run_dir)` reads what the search and train scripts write (`args.json`,
`metrics.jsonl`, `alphas.jsonl`, `genotype.json`; any subset) and writes into RUNDIR/report/ the
cells (drawing.py), the figures (plots.py) and `report.html`: the derived cells first, then the
training curves and the search figures (architecture weights, diagnostics, collapse guards), a
summary and the per-epoch table, and the arguments last, folded.
"""
import html
import json
import os
import sys
import time

import genotypes
from drawing import as_genotype, draw_genotype, make_out_dir, render_hint
from plots import (ACCURACY_AGAINST, GUARD_SCHEDULES, benchmark_curve, finite_number, plot_benchmark, plot_curves,
                   plot_diagnostics, plot_guards, plot_heatmap, plot_latency, plot_skip_counts, plot_weights_over_epochs,
                   row_labels, skip_counts)
from userio import UserError, atomic_write_text, make_readable

RUN_FILES = ('args.json', 'metrics.jsonl', 'alphas.jsonl', 'genotype.json')



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


def genotype_json(genotype):
    """The genotype.json text with one entry per line (readable, and still valid JSON)."""
    record = genotypes.to_dict(as_genotype(genotype))
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
summary { font-size: 1.2em; font-weight: bold; cursor: pointer; margin-top: 1em; }
"""


class Page:
    """An HTML report page under construction (also tabular.py's)."""

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
            cells = ''.join(f'<td class="num">{html.escape(_format(v))}</td>' if finite_number(v)
                            else f'<td>{html.escape(_format(v))}</td>' for v in row)
            self.add(f'<tr>{cells}</tr>')
        self.add('</table>')

    def html(self):
        return '\n'.join(self.parts + ['</body></html>', ''])


def write_report(run_dir, out_dir=None, fmt='png', benchmark=None, benchmark_metric=None):
    """Draw everything for a run directory into out_dir (default RUNDIR/report) and write report.html
    there; returns its path.  Cells are always drawn as PNG for the page (and also as `fmt`).
    `benchmark` (a benchmark_table table) looks up each epoch's derived cell by `benchmark_metric`;
    without it the values the search logged (train_search.py --benchmark) are drawn."""
    run = load_run(run_dir)
    out_dir = out_dir or os.path.join(run_dir, 'report')
    make_out_dir(out_dir)
    metrics, alphas = run['metrics'], run['alphas']
    title = f'Run report: {os.path.basename(os.path.normpath(os.path.abspath(run_dir)))}'
    page = Page(title)
    page.para(f'Run directory: {os.path.abspath(run_dir)}. Written {time.strftime("%Y-%m-%d %H:%M:%S")}.')

    # What a reader came for first: the derived cells, the curves, then the search's figures.
    page.heading('Derived cells')
    if run['genotype'] is not None:
        genotype = run['genotype']
        page.para(f"From {run['genotype_source']}.")
        cells = draw_genotype(genotype, 'genotype', out_dir, 'png')
        if fmt != 'png':
            draw_genotype(genotype, 'genotype', out_dir, fmt)
        for path in cells:
            if path.endswith('.png'):
                page.image(path, f"{os.path.basename(path).split('_')[0]} cell")
        if not any(p.endswith('.png') for p in cells):
            page.para(f"graphviz's dot was not found, so only the sources "
                      f"{', '.join(os.path.basename(p) for p in cells)} were written; {render_hint()}.", 'note')
        page.add(f'<pre>{html.escape(genotype_json(genotype))}</pre>')
    else:
        page.para('No genotype.json and no genotype in metrics.jsonl.', 'note')

    # Curves.
    if metrics:
        page.heading('Training curves')
        curves = plot_curves(metrics, os.path.join(out_dir, 'curves.png'))
        if curves:
            page.image(curves, 'loss, accuracy and learning rate per epoch')
        latencies = plot_latency(metrics, os.path.join(out_dir, 'latency.png'))
        if latencies:
            page.image(latencies, "validation accuracy, and the latency table's milliseconds of the supernet "
                                  "(expected under its architecture weights) and of the derived cell, per epoch")
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

    # Architecture weights.
    if alphas:
        last = alphas[-1]
        edges = last.get('edges') or []
        page.heading(f"Architecture weights (softmaxed) minus uniform, epoch {last['epoch']}")
        for table, content in last.get('weights', {}).items():
            candidates, values = content['candidates'], content['values']
            if not values:
                continue
            labels = row_labels(table, len(values), edges)
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
            labels = row_labels(table, shape[0], edges)
            page.image(plot_weights_over_epochs(table, candidates, epochs, series, labels,
                                                os.path.join(out_dir, f'weights_{table}.png')),
                       f'{table} over epochs (skip_connect dashed black)')

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

    # Summary: parameters, time per epoch, accuracy.
    page.heading('Summary')
    summary = [('epochs logged', len(metrics))]
    params = [m['params_MB'] for m in metrics if finite_number(m.get('params_MB'))]
    summary.append(('parameters (params_MB, millions)', params[-1] if params else 'not logged'))
    times = [m['epoch_time'] for m in metrics if finite_number(m.get('epoch_time'))]
    if times:
        summary += [('time per epoch (mean)', _seconds(sum(times) / len(times))),
                    ('time per epoch (last)', _seconds(times[-1])), ('total time', _seconds(sum(times)))]
    else:
        summary.append(('time per epoch', 'not logged'))
    valid = [(m['valid_acc'], m['epoch']) for m in metrics if finite_number(m.get('valid_acc'))]
    if valid:
        summary += [('final valid_acc', valid[-1][0]),
                    ('best valid_acc', f'{max(valid)[0]:.6g} (epoch {max(valid)[1]})')]
    page.table(None, summary)

    if metrics:
        page.heading('Per epoch')
        keys = [k for k in ('epoch', 'lr', 'train_loss', 'train_acc', 'valid_loss', 'valid_acc',
                            'epoch_time', 'params_MB', 'genotype_stability', 'param_free_normal',
                            *GUARD_SCHEDULES, 'ranking_stable_epochs', 'tau', 'expected_latency_ms',
                            'derived_latency_ms')
                if any(k in m for m in metrics)]
        rows = [[m.get(k, '') for k in keys] for m in metrics]
        if any(isinstance(m.get('genotype'), dict) for m in metrics):
            keys.append('skip_connect (normal, reduce)')
            for row, m in zip(rows, metrics):
                counts = skip_counts(m['genotype']) if isinstance(m.get('genotype'), dict) else ()
                row.append(', '.join(str(n) for n in counts if n is not None))
        page.table(keys, rows)

    # The arguments last, folded: a reader opens them to check a setting.
    if run['args'] is not None:
        page.add(f'<details><summary>Arguments ({len(run["args"])})</summary>')
        page.table(('argument', 'value'), sorted(run['args'].items()))
        page.add('</details>')
    else:
        page.heading('Arguments')
        page.para('args.json not found.', 'note')

    path = os.path.join(out_dir, 'report.html')
    atomic_write_text(path, page.html())
    return make_readable(path)


def write_comparison_report(results, out_dir):
    """report.html of a comparison (compare.py's results.json): protocol, table and plot."""
    rows, protocol = results['architectures'], results['protocol']
    page = Page(f'Comparison: {os.path.basename(os.path.normpath(os.path.abspath(out_dir)))}')
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
    for _, what, name in ACCURACY_AGAINST.values():
        if os.path.isfile(os.path.join(out_dir, name)):
            page.image(os.path.join(out_dir, name),
                       f'test accuracy against {what}, one point per run (random cells grey)')
    page.heading('Runs')
    page.table(('architecture', 'seed', 'test top-1 (%)', 'test top-5 (%)', 'train time (min)', 'run directory'),
               [(row['label'], run['seed'], run['top1'], run['top5'], run['train_time_s'] / 60,
                 run['run_dir']) for row in rows for run in row['runs']])
    path = os.path.join(out_dir, 'report.html')
    atomic_write_text(path, page.html())
    return make_readable(path)


def write_ranking_report(result, out_dir, plots):
    """report.html of a training-free ranking (rank.py's scores.json): each proxy's rank correlation
    with the benchmark and its scatter plot (`plots`: {proxy: path}), then every score."""
    names, rows, protocol = result['protocol']['proxies'], result['architectures'], result['protocol']
    page = Page(f'Training-free ranking: {os.path.basename(os.path.normpath(os.path.abspath(out_dir)))}')
    page.para(f"{len(rows)} architectures scored at initialisation on {protocol['batch_size']} training images "
              f"of {protocol['dataset']} (seed {protocol['seed']}); a higher score predicts a better architecture.")
    truth = 'correlations' in result
    if truth:
        page.heading(f"Rank correlation with {result['benchmark']['metric']} ({result['benchmark']['path']})")
        page.table(('proxy', 'Spearman', 'Kendall', 'architectures'),
                   [(name, '–' if c['spearman'] is None else c['spearman'],
                     '–' if c['kendall'] is None else c['kendall'], c['n'])
                    for name, c in result['correlations'].items()])
        for name in names:
            page.image(plots[name], f"{name} score against {result['benchmark']['metric']}, one point per architecture")
    page.heading('Scores')
    page.table(('architecture', 'source', *names) + (('accuracy',) if truth else ()),
               [(row['label'], row['source'], *(row['scores'][name] for name in names))
                + ((('–' if row['accuracy'] is None else row['accuracy']),) if truth else ()) for row in rows])
    page.heading('Protocol')
    page.table(('setting', 'value'), sorted((k, v) for k, v in protocol.items() if k != 'architectures'))
    path = os.path.join(out_dir, 'report.html')
    atomic_write_text(path, page.html())
    return make_readable(path)
