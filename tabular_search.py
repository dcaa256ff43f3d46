"""Multi-trial search on a NAS-Bench-201 benchmark table (tabular.py): random search, regularized
evolution, REINFORCE and TPE, each run --runs times with its own seed, in parallel processes.

    python tabular_search.py --benchmark table.csv --strategy random evolution reinforce tpe \\
        --runs 100 --budget 150
    python tabular_search.py --benchmark NATS-tss-v1_0-3ffb9-simple --time_column cifar10/time_12 \\
        --budget 12000 --runs 500            # the NAS-Bench-201 paper's protocol on CIFAR-10

Writes into --save settings.json, runs/<strategy>/run-NNNN.json (one per run: returned cell, its
reward and report value, best-so-far trajectory), results.json, results.md, best_so_far.png,
report.html and log.txt; --resume continues a killed experiment without redoing finished runs.
"""
import argparse
import logging
import os
import shlex
import sys
import time

import benchmark_table
import cli
import flags
import runs
import tabular
from utils import UserError

logger = logging.getLogger('attnas')


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--benchmark', required=True, metavar='FILE',
                        help='a CSV table (a column of NAS-Bench-201 strings, numeric metric columns) or the '
                             'NATS-Bench topology file (NATS-tss-v1_0-3ffb9-simple, needs nats_bench)')
    parser.add_argument('--benchmark_metric', default=None,
                        help="the reward a look-up returns (default: the table's first metric; for the NATS-Bench "
                             "file cifar10/valid_acc_12)")
    parser.add_argument('--report_metric', default=None,
                        help='the metric the returned cell is judged by (default: for the NATS-Bench file the '
                             '200-epoch test accuracy of the reward\'s data set, for a CSV the reward itself)')
    parser.add_argument('--time_column', default=None,
                        help='a metric holding the simulated seconds of a look-up: --budget is then in seconds '
                             '(NATS-Bench: cifar10/time_12 etc.); without it --budget counts look-ups')
    parser.add_argument('--strategy', nargs='+', default=list(tabular.STRATEGIES), metavar='NAME',
                        help=f"one or more of {', '.join(tabular.STRATEGIES)} (default: all)")
    parser.add_argument('--runs', type=int, default=100, help='seeded runs per strategy (default 100)')
    parser.add_argument('--budget', type=float, required=True,
                        help='look-ups per run, or simulated seconds with --time_column')
    parser.add_argument('--seed', type=int, default=0, help='run r of every strategy has seed SEED + r')
    parser.add_argument('--jobs', type=int, default=os.cpu_count() or 1, help='runs at a time (processes)')
    parser.add_argument('--save', default=None, help='run directory (default: runs/tabular-<time>)')
    parser.add_argument('--resume', action='store_true', help='continue the experiment in --save')
    parser.add_argument('--no_progress', action='store_true', help='no progress bar')
    g = parser.add_argument_group('strategies (defaults: the NAS-Bench-201 reference commands)')
    defaults = tabular.STRATEGY_DEFAULTS
    g.add_argument('--population', type=int, default=defaults['evolution']['population'],
                   help='evolution: population size')
    g.add_argument('--sample_size', type=int, default=defaults['evolution']['sample_size'],
                   help='evolution: tournament size')
    g.add_argument('--rl_learning_rate', type=float, default=defaults['reinforce']['learning_rate'],
                   help="reinforce: Adam's learning rate")
    g.add_argument('--ema_momentum', type=float, default=defaults['reinforce']['ema_momentum'],
                   help="reinforce: the moving-average baseline's momentum")
    return parser


def check(args):
    unknown = [name for name in args.strategy if name not in tabular.STRATEGIES]
    if unknown:
        raise UserError(f"unknown strategy '{unknown[0]}'; --strategy takes {', '.join(tabular.STRATEGIES)}")
    tabular.check_budget(args.budget)


@cli.cli
def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = flags.parse_args(build_parser(), argv)
    check(args)
    directory = runs.run_directory(args.save, args.resume, 'tabular', marker='settings.json', checkpointed=False)
    table = benchmark_table.load(args.benchmark, args.benchmark_metric)
    reward = table.check_metric(args.benchmark_metric)
    report = table.check_metric(args.report_metric or table.report_metric_for(reward), '--report_metric')
    if args.time_column is not None:
        table.check_metric(args.time_column, '--time_column')
    settings = {'benchmark': args.benchmark, 'benchmark_kind': table.kind, 'benchmark_metric': reward,
                'report_metric': report, 'time_column': args.time_column, 'budget': args.budget, 'seed': args.seed,
                'runs': args.runs, 'strategies': list(dict.fromkeys(args.strategy)),
                'options': {'evolution': {'population': args.population, 'sample_size': args.sample_size},
                            'reinforce': {'learning_rate': args.rl_learning_rate,
                                          'ema_momentum': args.ema_momentum}}}
    experiment = tabular.Experiment.create(directory, settings, args.resume)
    cli.configure_logging(experiment.path('log.txt'))
    logger.info('tabular search in %s: %s x %d runs, reward %s, reported %s%s, budget %g %s', experiment.dir,
                ', '.join(settings['strategies']), args.runs, reward, report,
                ' (the same metric)' if report == reward else '', args.budget, tabular.budget_unit(settings))
    began = time.time()
    tabular.execute(experiment, table, args.jobs, progress=not args.no_progress)
    logger.info('runs done in %.1f s', time.time() - began)
    results = tabular.write_results(experiment, table, shlex.join(['python', 'tabular_search.py', *argv]))
    with open(experiment.path('results.md')) as f:
        print(f.read())
    logger.info('wrote %s, %s and %s', experiment.path('results.md'), experiment.path('results.json'),
                experiment.path('report.html'))
    return 0 if results['strategies'] else 1


if __name__ == '__main__':
    sys.exit(main())
