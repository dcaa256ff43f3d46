"""Rank architectures without training them: zero-cost proxies of their untrained networks.

    python rank.py DARTS_V2 Att_DARTS random:100 --proxy synflow naswot --dataset cifar10 --save runs/rank-darts
    python rank.py random:200 --space nb201 --benchmark nb201-cifar10.csv --save runs/rank-nb201
    python rank.py --benchmark runs/compare-fmnist --dataset fashion-mnist --init_channels 16 --layers 8
    python rank.py ... --save runs/rank-darts --resume           # after a kill: scored architectures are kept

Architectures (ARCH): as compare.py's (named genotypes, genotype JSON files, search run directories,
NAS-Bench-201 cell strings, `random:N` from the space of --space); none with --benchmark DIR means
the architectures of that comparison.  Each is built untrained with --seed (ranking.network_factory:
the trainer's network, --init_channels and --layers as compare.py's; a NAS-Bench-201 cell in the
benchmark's network, --layers cells per stage; an ANAS unit in --net_type) and scored by every
--proxy (proxies.py) on the same --batch_size training images drawn with --seed.

The run directory (--save) holds rank.json (the protocol), scores.jsonl (one line per scored
architecture, what --resume keeps), scores.json and scores.md (the table), report.html and, given
--benchmark (a benchmark table file, or a compare.py directory whose mean test accuracies are the
truth), the Spearman and Kendall rank correlation of each proxy with the accuracy and a scatter plot
per proxy (PROXY_vs_accuracy.png).
"""
import json
import os
import sys
import time

from tqdm import tqdm

import architectures
import cli
import datasets
import devices
import flags
import genotypes
import nag_cells
import nb201
import proxies
import ranking
import runs
import utils
from cli import logger
from utils import UserError

KINDS = (genotypes.Genotype, nag_cells.DagArch, genotypes.AttGenotype, nb201.NB201Genotype)
REFUSAL = "is an SLNAS architecture; rank.py scores DARTS, Att-DARTS, CNAS, NAG and NAS-Bench-201 cells and ANAS units"


def build_parser():
    parser = cli.default_parser(__doc__.splitlines()[0])
    parser.add_argument('archs', nargs='*', metavar='ARCH',
                        help='a named genotype, a genotype .json, a search run directory, a NAS-Bench-201 cell '
                             'string, or random:N')
    parser.add_argument('--proxy', nargs='+', default=list(proxies.PROXIES), metavar='PROXY',
                        help=f"zero-cost proxies: {', '.join(proxies.PROXIES)}")
    g = parser.add_argument_group('networks and data')
    g.add_argument('--dataset', default='cifar10')
    g.add_argument('--data', default='data', help='dataset root directory')
    g.add_argument('--image_size', type=int, default=None, help="default: the data set's own")
    g.add_argument('--batch_size', type=int, default=ranking.DEFAULT_BATCH, help='images the proxies see')
    g.add_argument('--init_channels', type=int, default=None,
                   help="cells' initial channels (default: the trainer's, 36 on CIFAR; NAS-Bench-201: 16)")
    g.add_argument('--layers', type=int, default=None,
                   help="cells (default: the trainer's, 20 on CIFAR); NAS-Bench-201: cells per stage (5)")
    g.add_argument('--net_type', default='resnet20', help='the ResNet of ANAS units')
    g.add_argument('--seed', type=int, default=0, help='initialisation of every network and the batch drawn')
    g = parser.add_argument_group('ground truth')
    g.add_argument('--benchmark', default=None, metavar='FILE_OR_DIR',
                   help='a benchmark table (NAS-Bench-201) or a finished compare.py directory')
    g.add_argument('--benchmark_metric', default=None, help="a benchmark table's accuracy column (default: its first)")
    architectures.add_random_arguments(parser)
    g = parser.add_argument_group('execution')
    g.add_argument('--save', default=None, help='run directory (default: runs/rank-<time>)')
    g.add_argument('--resume', action='store_true', help='continue the ranking in --save')
    g.add_argument('--device', default='auto', help="'auto', 'cpu', 'cuda' or 'cuda:N'")
    g.add_argument('--no_progress', action='store_true', help='no progress bar')
    return parser


def make_plan(args):
    """The protocol, the architectures and the benchmark, checked before anything is written."""
    names = proxies.check_names(args.proxy)
    benchmark = ranking.Benchmark(args.benchmark, args.benchmark_metric) if args.benchmark else None
    if args.archs:
        archs = architectures.resolve(args.archs, args, KINDS, REFUSAL)
    elif benchmark is not None and benchmark.comparison is not None:
        archs = [(label, f'{args.benchmark} {label}', genotype) for label, genotype in benchmark.comparison]
    else:
        raise UserError("no architecture given: name some (ARCH...), random:N, or --benchmark a compare.py directory")
    info = datasets.dataset_info(args.dataset, args.data, image_size=args.image_size)
    build = ranking.network_factory(args.dataset, info, args.init_channels, args.layers, args.net_type)
    protocol = {'proxies': names, 'dataset': args.dataset, 'image_size': info.image_size,
                'batch_size': args.batch_size, 'seed': args.seed, 'init_channels': args.init_channels,
                'layers': args.layers, 'net_type': args.net_type,
                'architectures': [{'label': label, 'source': source, 'genotype': genotypes.to_dict(genotype)}
                                  for label, source, genotype in archs]}
    return protocol, archs, build, benchmark


def open_directory(save, resume, protocol):
    directory = runs.run_directory(save, resume, 'rank', marker='rank.json')
    record = os.path.join(directory, 'rank.json')
    if resume:
        with open(record) as f:
            stored = json.load(f)
        if stored != protocol:
            raise UserError(f"{directory} holds a ranking with other flags or architectures (differs in: "
                            f"{runs.signature_differences(json.dumps(stored), json.dumps(protocol))}); resume with "
                            f"the command of that ranking")
        return directory
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot write the run directory {directory} ({exc.strerror}); choose a writable --save") \
            from exc
    utils.atomic_write_json(record, protocol)
    return directory


@cli.cli
def main(argv=None):
    args = flags.parse_args(build_parser(), argv)
    protocol, archs, build, benchmark = make_plan(args)
    device = devices.select_device(args.device)
    batch = ranking.proxy_batch(args.dataset, args.data, args.batch_size, args.seed, args.image_size)
    directory = open_directory(args.save, args.resume, protocol)
    cli.configure_logging(os.path.join(directory, 'log.txt'))
    lines = os.path.join(directory, 'scores.jsonl')
    done = {record['label']: record for record in ranking.read_records(lines)}
    if done:
        logger.info('%d of %d architectures already scored', len(done), len(archs))
    rows = []
    for label, source, genotype in tqdm(archs, desc='scoring', disable=args.no_progress):
        if label not in done:
            began = time.perf_counter()
            scores = ranking.score_architecture(build, genotype, protocol['proxies'], batch, args.seed, device)
            done[label] = {'label': label, 'scores': scores, 'seconds': time.perf_counter() - began}
            ranking.append_record(lines, done[label])
        rows.append({'label': label, 'source': source, 'genotype': genotypes.to_dict(genotype),
                     'scores': done[label]['scores']})
    result = {'protocol': protocol, 'architectures': rows}
    correlations = None
    if benchmark is not None:
        for row, (_, _, genotype) in zip(rows, archs):
            row['accuracy'] = benchmark.value(genotype)
        missing = sum(row['accuracy'] is None for row in rows)
        if missing:
            logger.info('%d of %d architectures have no accuracy in %s; the correlations leave them out', missing,
                        len(rows), args.benchmark)
        correlations = {name: ranking.rank_correlations([row['scores'][name] for row in rows],
                                                        [row['accuracy'] for row in rows])
                        for name in protocol['proxies']}
        result.update(benchmark={'path': args.benchmark, 'metric': benchmark.metric}, correlations=correlations)
    utils.atomic_write_json(os.path.join(directory, 'scores.json'), result)
    command = ' '.join(['rank.py', *(argv if argv is not None else sys.argv[1:])])
    table = ranking.markdown(rows, protocol['proxies'], correlations, benchmark.metric if benchmark else None)
    utils.atomic_write_text(os.path.join(directory, 'scores.md'),
                            f"# Training-free ranking {os.path.basename(os.path.normpath(directory))}\n\n"
                            f"{table}\nCommand: `{command}`\n")
    report = ranking.write_report(result, directory)
    logger.info('scores: %s, %s; report: %s', os.path.join(directory, 'scores.md'),
                os.path.join(directory, 'scores.json'), report)
    print(table)
    return 0


if __name__ == '__main__':
    sys.exit(main())
