"""Training-free ranking: architectures scored at initialisation by zero-cost proxies (proxies.py),
and the rank correlation of each proxy with the accuracy a benchmark measured.  rank.py is its
command line; compare.py --prescreen and train_search.py --strategy proxy use it to choose.

Every architecture is scored in its evaluation network, built untrained with the same seed, on the
same batch of training images (drawn with the seed, without augmentation), as NASWOT (Mellor et
al., ICML 2021) and the zero-cost proxies of Abdelfattah et al. (ICLR 2021) score NAS-Bench-201:
one batch of 64 images by default, the latter's (`nasbench2_pred.py --batch_size`).  The rank
correlations are Spearman's rho and Kendall's tau-b (scipy.stats), the statistics both papers report.
"""
import json
import math
import os

import torch

import datasets
import evaluation
import genotypes
import nb201
import proxies
from anas import ResNetCIFAR
from nb201_model import CELLS_PER_STAGE_DEFAULT, NB201Network
from userio import atomic_write_text
from utils import UserError

DEFAULT_BATCH = 64


def network_factory(dataset, info, init_channels=None, layers=None, net_type='resnet20'):
    """function(genotype) -> its untrained evaluation network for `dataset` (`info` its
    datasets.DatasetInfo): DARTS, Att-DARTS, CNAS and NAG cells in the trainer's skeleton with
    `init_channels` and `layers` (default the trainer's: 36 and 20 on CIFAR); NAS-Bench-201 cells in
    the benchmark's network (default 16 channels and 5 cells per stage, `layers` cells per stage);
    ANAS units in the ResNet `net_type`."""
    preset = 'imagenet' if datasets.canonical_name(dataset) == 'imagenet' else 'cifar10'
    flags = ['--dataset', dataset]
    for flag, value in (('--init_channels', init_channels), ('--layers', layers)):
        if value is not None:
            if value < 1:
                raise UserError(f"{flag} must be at least 1, got {value}")
            flags += [flag, str(value)]
    cell_args = evaluation.train_parser(preset).parse_args(flags)
    if info.image_size is None:
        raise UserError(f"--dataset {dataset} has no fixed image size; pass --image_size")

    def build(genotype):
        if isinstance(genotype, genotypes.AttGenotype):
            return ResNetCIFAR(net_type, info.num_classes, 'anas', genotype, in_channels=info.in_channels)
        if isinstance(genotype, nb201.NB201Genotype):
            return NB201Network(genotype, C=init_channels or 16, cells_per_stage=layers or CELLS_PER_STAGE_DEFAULT,
                                num_classes=info.num_classes, in_channels=info.in_channels,
                                image_size=info.image_size)
        return evaluation.build_network(evaluation.network_config(cell_args, info, genotype), genotype)
    return build


def proxy_batch(dataset, data, batch_size, seed, image_size=None):
    """(images, labels): `batch_size` training images of `dataset` drawn with `seed`, prepared as the
    test split is (normalised, no augmentation)."""
    split = datasets.build_dataset(dataset, data, train=True, augment=False, image_size=image_size)
    if not 1 <= batch_size <= len(split):
        raise UserError(f"--batch_size {batch_size}: the proxies' batch must hold 1 to {len(split)} images "
                        f"(the training split of {dataset})")
    chosen = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:batch_size]
    images, labels = zip(*(split[i] for i in chosen.tolist()))
    return torch.stack(images), torch.as_tensor(labels)


def score_architecture(build, genotype, names, batch, seed, device):
    """{proxy: score} of `genotype`'s network, initialised with `seed`."""
    torch.manual_seed(seed)
    network = build(genotype).to(device)
    return proxies.score_all(network, names, batch, seed)


def read_records(path):
    """The records of a JSON-lines file written one line per scored architecture.  A line cut by a
    kill ends it and is dropped from the file, so that the next record starts on a line of its own."""
    records, kept = [], []
    if os.path.isfile(path):
        with open(path) as f:
            lines = f.readlines()
        for line in lines:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
            kept.append(line if line.endswith('\n') else line + '\n')
        if kept != lines:
            atomic_write_text(path, ''.join(kept))
    return records


def append_record(path, record):
    with open(path, 'a') as f:
        f.write(json.dumps(record) + '\n')
        f.flush()
        os.fsync(f.fileno())


def best(scored, name):
    """The entry of `scored` ([(item, {proxy: score})]) with the highest `name` score; NaN never wins,
    and ties go to the first."""
    finite = [(item, scores) for item, scores in scored if math.isfinite(scores[name])]
    if not finite:
        raise UserError(f"every architecture's {name} score is NaN; choose another proxy")
    return max(finite, key=lambda entry: entry[1][name])


def _statistic(value):
    return None if value is None or not math.isfinite(value) else float(value)


def rank_correlations(scores, truths):
    """{'n', 'spearman', 'kendall'} between two lists; pairs with a missing truth (None) or a NaN
    score are left out, and a correlation of fewer than 3 pairs, or of a constant list, is None."""
    from scipy import stats
    pairs = [(s, t) for s, t in zip(scores, truths) if t is not None and s is not None and math.isfinite(s)]
    result = {'n': len(pairs), 'spearman': None, 'kendall': None}
    if len(pairs) < 3 or len({s for s, _ in pairs}) < 2 or len({t for _, t in pairs}) < 2:
        return result
    xs, ys = zip(*pairs)
    result['spearman'] = _statistic(stats.spearmanr(xs, ys).statistic)
    result['kendall'] = _statistic(stats.kendalltau(xs, ys).statistic)
    return result


def _genotype_key(genotype):
    return json.dumps(genotypes.to_dict(genotype), sort_keys=True)


class Benchmark:
    """The true accuracies of architectures: a compare.py directory (the mean test accuracy of each
    trained architecture) or a NAS-Bench-201 benchmark table (`benchmark_table.load`: a CSV table or
    the NATS-Bench topology file), `metric` one of its columns."""

    def __init__(self, path, metric=None):
        self.path = path
        results = os.path.join(path, 'results.json')
        if os.path.isdir(path) and (os.path.isfile(results) or os.path.isfile(os.path.join(path, 'comparison.json'))):
            if not os.path.isfile(results):
                raise UserError(f"--benchmark {path}: the comparison has no results.json yet; finish it "
                                f"(compare.py ... --resume) first")
            if metric is not None:
                raise UserError("--benchmark_metric chooses a benchmark table's column; a comparison has one accuracy")
            with open(results) as f:
                rows = json.load(f)['architectures']
            self.metric = 'test top-1 (%), mean over seeds'
            self.comparison = [(row['label'], genotypes.from_dict(row['genotype'], source=results))
                               for row in rows]
            self._values = {_genotype_key(genotype): row.get('top1_mean')
                            for row, (_, genotype) in zip(rows, self.comparison)}
            self._table = None
            return
        import benchmark_table
        self._table = benchmark_table.load(path, flag='--benchmark')
        self.metric = self._table.check_metric(metric)
        self.comparison = None

    def value(self, genotype):
        """The accuracy of `genotype`, None where the benchmark has none."""
        if self._table is None:
            return self._values.get(_genotype_key(genotype))
        if not isinstance(genotype, nb201.NB201Genotype) or nb201.has_attention(genotype):
            return None
        return float(self._table.value(genotype, self.metric))


def format_number(value, digits=4):
    if value is None:
        return '–'
    if isinstance(value, float) and not math.isfinite(value):
        return 'NaN'
    return f'{value:.{digits}g}'


def markdown(rows, names, correlations=None, metric=None):
    """The scores (and accuracies) as a markdown table, then each proxy's correlation with them."""
    truth = correlations is not None
    header = ['architecture', 'source', *names] + ([metric] if truth else [])
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for row in rows:
        cells = [row['label'], row['source'], *(format_number(row['scores'][name], 6) for name in names)]
        if truth:
            cells.append(format_number(row.get('accuracy'), 6))
        lines.append('| ' + ' | '.join(cells) + ' |')
    text = '\n'.join(lines) + '\n'
    if truth:
        text += '\n| proxy | Spearman | Kendall | architectures |\n|---|---|---|---|\n' + ''.join(
            f"| {name} | {format_number(c['spearman'], 3)} | {format_number(c['kendall'], 3)} | {c['n']} |\n"
            for name, c in correlations.items())
    return text


def write_report(result, out_dir):
    """report.html of a ranking and, with a benchmark, a scatter plot per proxy (PROXY_vs_accuracy.png)."""
    import plots
    import report
    drawn = {}
    if 'correlations' in result:
        metric = result['benchmark']['metric']
        for name in result['protocol']['proxies']:
            points = [(row['scores'][name], row['accuracy']) for row in result['architectures']
                      if row['accuracy'] is not None and math.isfinite(row['scores'][name])]
            c = result['correlations'][name]
            title = (f"{name}: Spearman {format_number(c['spearman'], 3)}, Kendall {format_number(c['kendall'], 3)} "
                     f"(n={c['n']})")
            drawn[name] = plots.plot_scores_vs_accuracy(points, name, metric, title,
                                                        os.path.join(out_dir, f'{name}_vs_accuracy.png'))
    return report.write_ranking_report(result, out_dir, drawn)
