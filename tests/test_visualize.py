"""visualize.py: cell drawings of every named genotype, the no-dot fallback, run-directory reports
(built from a synthetic run directory in the format the search/train scripts write), TensorBoard no-op,
errors, and (when chromium is installed) the report loading in a headless browser."""
import json
import os
import random
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

import drawing
import genotypes
import plots
import registry
import tensorboard_logger
import visualize
from report import write_report
from tests.helpers import ROOT, run as run_script

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
HAS_DOT = shutil.which('dot') is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="graphviz's dot is not installed")


def _edge_lines(source):
    return [line.strip() for line in source.splitlines() if '->' in line]


def _label(entry):
    attn = genotypes.entry_attention(entry)
    return genotypes.entry_op(entry) + (f'\\n{attn}' if attn else '')


def _has_label(source, label):
    # graphviz quotes an ID only when it must: label=skip_connect, label="sep_conv_3x3\nCBAM"
    return re.search(r'label=("?)' + re.escape(label) + r'\1[ \]]', source) is not None


# ------------------------------------------------------------------------------------------------
# Genotype mode
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('name', [n for n, g in genotypes.NAMED.items() if isinstance(g, genotypes.Genotype)])
def test_dot_source_has_nodes_and_one_labelled_edge_per_entry(name):
    genotype = genotypes.NAMED[name]
    for cell in ('normal', 'reduce'):
        g = drawing.genotype_to_dot(genotype, cell)
        source = g.source
        assert 'rankdir=LR' in source
        entries = getattr(genotype, cell)
        concat = getattr(genotype, cell + '_concat')
        steps = len(entries) // 2
        assert re.search(r'"c_\{k-2\}" \[fillcolor=darkseagreen2\]', source)
        assert re.search(r'"c_\{k-1\}" \[fillcolor=darkseagreen2\]', source)
        assert re.search(r'"c_\{k\}" \[fillcolor=palegoldenrod\]', source)
        for node in range(steps):
            assert re.search(rf'^\s*{node} \[fillcolor=lightblue\]', source, re.M)
        edges = _edge_lines(source)
        labelled = [e for e in edges if 'label=' in e]
        assert len(labelled) == len(entries)
        for entry in entries:
            assert _has_label(source, _label(entry)), entry
        to_output = [e for e in edges if e.split('->')[1].strip().startswith('"c_{k}"')]
        assert len(to_output) == len(concat)
        assert len(edges) == len(entries) + len(concat)
        assert "c'_{k}" not in source


def test_att_darts_edge_label_has_op_and_attention():
    source = drawing.genotype_to_dot(genotypes.NAMED['Att_DARTS'], 'normal').source
    assert '"c_{k-2}" -> 0 [label="sep_conv_3x3\\nDoubleAttention"' in source


def test_only_concat_states_feed_the_output():
    # AmoebaNet's reduce cell concatenates states 3, 4, 6 -> nodes 1, 2, 4.
    source = drawing.genotype_to_dot(genotypes.NAMED['AmoebaNet'], 'reduce').source
    sources = sorted(e.split('->')[0].strip() for e in _edge_lines(source) if '"c_{k}"' in e.split('->')[1])
    assert sources == ['1', '2', '4']


def test_bottleneck_draws_c_prime():
    base = genotypes.NAMED['Att_DARTS']
    genotype = base._replace(normal_bottleneck='CBAM', reduce_bottleneck='')
    source = drawing.genotype_to_dot(genotype, 'normal').source
    edges = _edge_lines(source)
    assert '"c\'_{k}" [fillcolor=palegoldenrod]' in source
    assert sum(1 for e in edges if e.split('->')[1].strip().startswith('"c\'_{k}"')) == len(base.normal_concat)
    assert any(e.startswith('"c\'_{k}" -> "c_{k}" [label=CBAM') for e in edges)
    assert len(edges) == len(base.normal) + len(base.normal_concat) + 1
    assert "c'_{k}" not in drawing.genotype_to_dot(genotype, 'reduce').source


def test_none_edges_are_dashed_grey():
    base = genotypes.NAMED['DARTS_V2']
    normal = list(base.normal)
    normal[1] = ('none', 1)
    source = drawing.genotype_to_dot(base._replace(normal=normal), 'normal').source
    none_edges = [e for e in _edge_lines(source) if 'label=none' in e]
    assert len(none_edges) == 1 and 'style=dashed' in none_edges[0] and 'color=gray' in none_edges[0]


def test_genotype_dict_is_accepted():
    record = genotypes.to_dict(genotypes.NAMED['DARTS'])
    assert drawing.genotype_to_dot(record, 'reduce').source == \
        drawing.genotype_to_dot(genotypes.NAMED['DARTS'], 'reduce').source


@needs_dot
@pytest.mark.parametrize('name', list(genotypes.NAMED))
def test_render_every_named_genotype_png_and_svg(name, tmp_path):
    png = drawing.draw_genotype(genotypes.NAMED[name], name, str(tmp_path), 'png')
    svg = drawing.draw_genotype(genotypes.NAMED[name], name, str(tmp_path), 'svg')
    for cell in ('normal', 'reduce'):
        png_path = tmp_path / f'{cell}_{name}.png'
        svg_path = tmp_path / f'{cell}_{name}.svg'
        assert str(png_path) in png and str(svg_path) in svg
        assert str(tmp_path / f'{cell}_{name}.dot') in png
        data = png_path.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 5000
        root = ET.parse(svg_path).getroot()
        assert root.tag.endswith('svg')
        texts = ''.join(root.itertext())
        assert 'c_{k}' in texts and 'c_{k-2}' in texts


@needs_dot
def test_cli_json_path_writes_next_to_the_json(tmp_path, capsys):
    path = tmp_path / 'genotype.json'
    genotypes.save(genotypes.NAMED['Att_DARTS'], str(path))
    assert visualize.main([str(path), '--format', 'pdf']) == 0
    for cell in ('normal', 'reduce'):
        assert (tmp_path / f'{cell}_genotype.pdf').read_bytes().startswith(b'%PDF')
        assert (tmp_path / f'{cell}_genotype.dot').exists()
    assert 'normal_genotype.pdf' in capsys.readouterr().out


def test_no_dot_writes_sources_and_says_how_to_render(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('PATH', str(tmp_path / 'empty'))
    out = tmp_path / 'out'
    assert visualize.main(['Att_DARTS', '--out', str(out)]) == 0
    assert sorted(os.listdir(out)) == ['normal_Att_DARTS.dot', 'reduce_Att_DARTS.dot']
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    assert 'apt-get install graphviz' in lines[0] and 'dot -Tpng file.dot -o file.png' in lines[0]


def test_no_dot_via_which(tmp_path, monkeypatch):
    monkeypatch.setattr(drawing.shutil, 'which', lambda name: None)
    written = drawing.draw_genotype(genotypes.NAMED['DARTS'], 'DARTS', str(tmp_path), 'svg')
    assert sorted(os.path.basename(p) for p in written) == ['normal_DARTS.dot', 'reduce_DARTS.dot']


# ------------------------------------------------------------------------------------------------
# Run-directory mode
# ------------------------------------------------------------------------------------------------

EDGES = [[node, inp] for node in range(4) for inp in range(node + 2)]


def _softmax_rows(rows, cols, rng, bias=None):
    values = []
    for _ in range(rows):
        raw = [rng.random() + (3.0 if bias == c else 0.0) for c in range(cols)]
        total = sum(raw)
        values.append([v / total for v in raw])
    return values


def make_run_dir(path, epochs=3, bottleneck=False, extra_garbage_line=False, tables=None):
    """A synthetic after_every search run: alphas + betas tables, 14 edges, 8 ops, 6 attentions
    (`bottleneck`: alphas + gammas instead; `tables`: keep only these, to keep a test fast)."""
    rng = random.Random(0)
    os.makedirs(path, exist_ok=True)
    ops, attns = genotypes.PRIMITIVES, registry.ATTENTIONS.names()
    with open(os.path.join(path, 'args.json'), 'w') as f:
        json.dump({'batch_size': 64, 'learning_rate': 0.025, 'epochs': epochs, 'location': 'after_every',
                   'save': str(path), 'note': '<script>alert(1)</script>'}, f)
    genotype = genotypes.to_dict(genotypes.NAMED['Att_DARTS'])
    with open(os.path.join(path, 'metrics.jsonl'), 'w') as f, \
            open(os.path.join(path, 'alphas.jsonl'), 'w') as g:
        for epoch in range(epochs):
            record = {'epoch': epoch, 'lr': 0.025 * (1 - epoch / epochs), 'train_loss': 2.0 - 0.3 * epoch,
                      'train_acc': 30.0 + 10 * epoch, 'valid_loss': 2.1 - 0.25 * epoch,
                      'valid_acc': 28.0 + 9 * epoch, 'epoch_time': 12.5 + epoch, 'params_MB': 1.93,
                      'genotype': genotype}
            if epoch == 1:
                del record['valid_loss'], record['params_MB']  # missing keys must not crash
            f.write(json.dumps(record) + '\n')
            skip = ops.index('skip_connect')
            weights = {
                'alphas_normal': {'candidates': ops, 'values': _softmax_rows(14, 8, rng, skip if epoch else None)},
                'alphas_reduce': {'candidates': ops, 'values': _softmax_rows(14, 8, rng)},
                'betas_normal': {'candidates': attns, 'values': _softmax_rows(14, 6, rng)},
                'betas_reduce': {'candidates': attns, 'values': _softmax_rows(14, 6, rng)},
            }
            if bottleneck:
                weights = {k: v for k, v in weights.items() if k.startswith('alphas')}
                weights['gammas_normal'] = {'candidates': attns, 'values': _softmax_rows(1, 6, rng)}
                weights['gammas_reduce'] = {'candidates': attns, 'values': _softmax_rows(1, 6, rng)}
            if tables is not None:
                weights = {k: v for k, v in weights.items() if k in tables}
            g.write(json.dumps({'epoch': epoch, 'edges': EDGES, 'weights': weights}) + '\n')
        if extra_garbage_line:
            f.write('{"epoch": 3, "lr": 0.0')  # a run killed mid-write
    with open(os.path.join(path, 'genotype.json'), 'w') as f:
        json.dump(genotype, f)
    return path


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs = []

    def handle_starttag(self, tag, attrs):
        if tag == 'img':
            self.srcs.append(dict(attrs)['src'])


def _img_srcs(report):
    parser = _Images()
    parser.feed(open(report).read())
    return parser.srcs


@pytest.fixture(scope='module')
def full_report(tmp_path_factory):
    """One full after_every report through the CLI, shared by the tests that only read it."""
    tmp_path = tmp_path_factory.mktemp('full')
    run = make_run_dir(str(tmp_path / 'run'), extra_garbage_line=True)
    result = run_script('visualize.py', run, check=False)
    return run, result


def test_run_dir_report(full_report):
    run, result = full_report
    assert result.returncode == 0, result.stderr
    out = Path(run) / 'report'
    report = out / 'report.html'
    assert f'wrote {report}' in result.stdout
    assert 'metrics.jsonl line 4 is truncated' in result.stderr
    files = set(os.listdir(out))
    for table in ('alphas_normal', 'alphas_reduce', 'betas_normal', 'betas_reduce'):
        assert f'heatmap_{table}.png' in files and f'weights_{table}.png' in files
    assert {'curves.png', 'skip_connect.png', 'report.html'} <= files
    if HAS_DOT:
        assert {'normal_genotype.png', 'reduce_genotype.png'} <= files
    for name in files:
        if name.endswith('.png'):
            data = (out / name).read_bytes()
            assert data.startswith(PNG_SIGNATURE) and len(data) > 5000, name
    srcs = _img_srcs(report)
    assert len(srcs) == len([n for n in files if n.endswith('.png')])
    for src in srcs:
        assert not os.path.isabs(src) and '://' not in src
        assert (out / src).is_file(), src
    text = report.read_text()
    assert 'http://' not in text and 'https://' not in text
    assert '<script>alert' not in text and '&lt;script&gt;' in text  # arguments are escaped
    assert 'learning_rate' in text and '1.93' in text and 'time per epoch' in text
    assert 'sep_conv_3x3' in text  # the final genotype


def test_write_report_out_dir_bottleneck_tables(tmp_path):
    run = make_run_dir(str(tmp_path / 'run'), epochs=2, bottleneck=True,
                       tables=('alphas_normal', 'gammas_normal', 'gammas_reduce'))
    path = write_report(run, str(tmp_path / 'elsewhere'))
    assert path == str(tmp_path / 'elsewhere' / 'report.html')
    files = set(os.listdir(tmp_path / 'elsewhere'))
    assert {'heatmap_gammas_normal.png', 'weights_gammas_reduce.png', 'heatmap_alphas_normal.png'} <= files
    assert 'heatmap_betas_normal.png' not in files and 'heatmap_alphas_reduce.png' not in files
    for src in _img_srcs(path):
        assert (tmp_path / 'elsewhere' / src).is_file()


def test_run_dir_without_dot_links_no_missing_images(tmp_path, monkeypatch, capsys):
    run = make_run_dir(str(tmp_path / 'run'), epochs=2, tables=())
    monkeypatch.setattr(drawing.shutil, 'which', lambda name: None)
    assert visualize.main([run, '--out', str(tmp_path / 'out')]) == 0
    files = set(os.listdir(tmp_path / 'out'))
    assert {'normal_genotype.dot', 'reduce_genotype.dot'} <= files and 'normal_genotype.png' not in files
    for src in _img_srcs(str(tmp_path / 'out' / 'report.html')):
        assert (tmp_path / 'out' / src).is_file()
    assert 'apt-get install graphviz' in (tmp_path / 'out' / 'report.html').read_text()
    assert 'dot -Tpng file.dot -o file.png' in capsys.readouterr().out


def test_nan_weights_and_metrics_do_not_crash(tmp_path):
    run = make_run_dir(str(tmp_path / 'run'), epochs=2, tables=('alphas_normal',))
    path = os.path.join(run, 'alphas.jsonl')
    with open(path) as f:
        records = [json.loads(line) for line in f]
    records[-1]['weights']['alphas_normal']['values'][0] = [float('nan')] * 8
    with open(path, 'w') as f:
        f.writelines(json.dumps(r) + '\n' for r in records)
    with open(os.path.join(run, 'metrics.jsonl'), 'a') as f:
        f.write(json.dumps({'epoch': 2, 'train_loss': float('nan'), 'valid_acc': 10.0}) + '\n')
    report = write_report(run)
    assert os.path.isfile(os.path.join(os.path.dirname(report), 'heatmap_alphas_normal.png'))


def test_edge_labels():
    labels = plots.edge_labels(EDGES)
    assert len(labels) == 14
    assert labels[:3] == ['node 0 <- c_{k-2}', 'node 0 <- c_{k-1}', 'node 1 <- c_{k-2}']
    assert labels[4] == 'node 1 <- node 0' and labels[-1] == 'node 3 <- node 2'


def test_train_run_without_alphas_or_genotype(tmp_path):
    run = tmp_path / 'train'
    run.mkdir()
    with open(run / 'metrics.jsonl', 'w') as f:
        f.write(json.dumps({'epoch': 0, 'train_loss': 1.0}) + '\n')
        f.write(json.dumps({'epoch': 1}) + '\n')
    path = write_report(str(run))
    assert set(os.listdir(run / 'report')) == {'report.html', 'curves.png'}
    for src in _img_srcs(path):
        assert (run / 'report' / src).is_file()
    assert 'not logged' in open(path).read()


def test_latest_genotype_is_drawn_when_genotype_json_is_missing(tmp_path):
    run = make_run_dir(str(tmp_path / 'run'), epochs=2, tables=())
    os.remove(os.path.join(run, 'genotype.json'))
    text = open(write_report(run)).read()
    assert 'metrics.jsonl epoch 1' in text


def test_skip_counts():
    assert plots.skip_counts(genotypes.to_dict(genotypes.NAMED['Att_DARTS'])) == (4, 3)
    assert plots.skip_counts({}) == (0, 0)


# ------------------------------------------------------------------------------------------------
# TensorBoard
# ------------------------------------------------------------------------------------------------

def test_tensorboard_logger_is_a_noop_without_tensorboard(tmp_path, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith('torch.utils.tensorboard') or name.startswith('tensorboard'):
            raise ImportError(f'No module named {name!r}')
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, '__import__', no_tensorboard)
    with tensorboard_logger.TensorBoardLogger(str(tmp_path)) as logger:
        assert not logger.enabled
        logger.log_scalars({'train_loss': 1.0, 'note': 'x'}, 0)
        logger.log_weights({'alphas_normal': [[0.5, 0.5]]}, 0)
        logger.log_genotype(genotypes.NAMED['DARTS'], 0)
    assert os.listdir(tmp_path) == []


def test_tensorboard_logger_writes_through_summary_writer(tmp_path, monkeypatch):
    import types
    calls = []

    class FakeWriter:
        def __init__(self, log_dir):
            calls.append(('init', log_dir))

        def __getattr__(self, name):
            return lambda *args, **kwargs: calls.append((name,) + args[:1])

    module = types.ModuleType('torch.utils.tensorboard')
    module.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, 'torch.utils.tensorboard', module)
    logger = tensorboard_logger.TensorBoardLogger(str(tmp_path))
    assert logger.enabled
    logger.log_scalars({'train_loss': 1.0, 'valid_acc': 50, 'note': 'x', 'bad': float('nan')}, 3)
    logger.log_weights({'alphas_normal': {'candidates': ['a', 'b'], 'values': [[0.4, 0.6]]},
                        'betas_normal': [[0.5, 0.5]]}, 3)
    logger.log_genotype(genotypes.NAMED['DARTS'], 3)
    logger.close()
    names = [c[0] for c in calls]
    assert calls[0] == ('init', os.path.join(str(tmp_path), 'tensorboard'))
    assert ('add_scalar', 'train_loss') in calls and ('add_scalar', 'valid_acc') in calls
    assert names.count('add_scalar') == 2 and names.count('add_histogram') == 2
    assert names.count('add_image') == (2 if HAS_DOT else 0) and names[-1] == 'close'


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------

def _error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ')
    return err[0]


def test_unknown_name_exits_2(capsys):
    assert visualize.main(['NoSuchNet']) == 2
    assert 'NoSuchNet' in _error_line(capsys)


def test_malformed_json_exits_2(tmp_path, capsys):
    path = tmp_path / 'bad.json'
    path.write_text('{"normal": [')
    assert visualize.main([str(path), '--out', str(tmp_path)]) == 2
    assert 'not valid JSON' in _error_line(capsys)


def test_empty_dir_exits_2(tmp_path, capsys):
    assert visualize.main([str(tmp_path)]) == 2
    assert 'args.json' in _error_line(capsys)


def test_malformed_metrics_line_exits_2(tmp_path, capsys):
    run = make_run_dir(str(tmp_path / 'run'), epochs=2, tables=())
    with open(os.path.join(run, 'metrics.jsonl')) as f:
        lines = f.readlines()
    with open(os.path.join(run, 'metrics.jsonl'), 'w') as f:
        f.writelines([lines[0], '{oops\n', lines[1]])
    assert visualize.main([run]) == 2
    assert 'metrics.jsonl line 2' in _error_line(capsys)


def test_bad_alphas_table_exits_2(tmp_path, capsys):
    run = tmp_path / 'run'
    run.mkdir()
    (run / 'alphas.jsonl').write_text(json.dumps(
        {'epoch': 0, 'edges': [[0, 0]], 'weights': {'alphas_normal': {'candidates': ['a', 'b'],
                                                                       'values': [[1.0]]}}}) + '\n')
    assert visualize.main([str(run)]) == 2
    assert 'alphas_normal' in _error_line(capsys)


def test_missing_run_dir_and_unwritable_out_exit_2(tmp_path, capsys):
    assert visualize.main([str(tmp_path / 'runs' / 'typo') + os.sep]) == 2
    assert 'does not exist' in _error_line(capsys)
    (tmp_path / 'file').write_text('')
    assert visualize.main(['DARTS', '--out', str(tmp_path / 'file')]) == 2
    assert 'output directory' in _error_line(capsys)


def test_script_exit_code_and_one_line_error(tmp_path):
    result = run_script(os.path.join(ROOT, 'visualize.py'), tmp_path / 'missing.json', check=False, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count('\n') == 0 and result.stderr.startswith('error: ')


# ------------------------------------------------------------------------------------------------
# The report in a headless browser
# ------------------------------------------------------------------------------------------------

def _chromium():
    for name in ('chromium', 'chromium-browser', 'chromium-headless-shell', 'google-chrome', 'google-chrome-stable'):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _browser_test_missing():
    return [package for package, present in (('chromium', _chromium()), ('graphviz', HAS_DOT)) if not present]


@pytest.mark.skipif(bool(_browser_test_missing()),
                    reason=f"needs the Debian package(s) {' '.join(_browser_test_missing())}: 'sudo apt-get install "
                           f"{' '.join(_browser_test_missing())}' (make's system step installs them where it can)")
def test_report_loads_in_headless_chromium(full_report, tmp_path):
    run, result = full_report
    assert result.returncode == 0, result.stderr
    report = os.path.join(run, 'report', 'report.html')
    # A copy of the page with a probe that writes how many images decoded into the DOM.
    probe = ('<script>window.addEventListener("load", function () {'
             'var all = Array.prototype.slice.call(document.images);'
             'var ok = all.filter(function (i) { return i.complete && i.naturalWidth > 0; });'
             'document.body.setAttribute("data-images", ok.length + "/" + all.length); });</script>')
    text = open(report).read().replace('</body>', probe + '</body>')
    counts = {}
    for variant, page_text in (('intact', text), ('broken', text.replace('src="curves.png"', 'src="gone.png"'))):
        checked = os.path.join(os.path.dirname(report), f'probe_{variant}.html')
        with open(checked, 'w') as f:
            f.write(page_text)
        try:
            result = _run_chromium(checked, tmp_path / variant)
        finally:
            os.remove(checked)
        match = re.search(r'data-images="(\d+)/(\d+)"', result.stdout)
        assert match, result.stderr[-2000:]
        counts[variant] = int(match.group(1)), int(match.group(2))
    loaded, total = counts['intact']
    assert total == len(_img_srcs(report)) and total >= 10
    assert loaded == total
    assert counts['broken'] == (total - 1, total)  # the probe does notice a missing image


def _run_chromium(page, profile):
    return subprocess.run(
        [_chromium(), '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--no-first-run',
         f'--user-data-dir={profile}', '--virtual-time-budget=10000', '--dump-dom',
         'file://' + os.path.abspath(page)],
        capture_output=True, text=True, timeout=120)
