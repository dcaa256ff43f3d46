"""Multi-trial architecture search on a NAS-Bench-201 benchmark table, where training a cell is a
look-up: random search, regularized evolution, REINFORCE and TPE, run many times each.

The protocol is that of the benchmark's paper (Dong and Yang, "NAS-Bench-201: Extending the Scope
of Reproducible Neural Architecture Search", ICLR 2020, Sec. 5; reference code D-X-Y/AutoDL-Projects
exps/NAS-Bench-201-algos and, for NATS-Bench, exps/NATS-algos): a search is rewarded with one
metric of the table (the validation accuracy after the 12-epoch schedule), spends a budget of
look-ups or of simulated training seconds, returns the cell of the highest reward it has seen, and
is judged by a second metric of that cell (the test accuracy after the 200-epoch schedule).  A
look-up whose cost would pass the budget ends the run uncounted, as in the reference's random
search, REA cycles and REINFORCE.

- random: a uniformly drawn cell per look-up (reference `RANDOM.py`).
- evolution: regularized (aging) evolution, Real et al., "Regularized Evolution for Image
  Classifier Architecture Search", AAAI 2019, Algorithm 1 (reference `R_EA.py`): a population of
  `population` random cells; each cycle the best of `sample_size` members drawn with replacement
  is mutated on one edge to a different op, the child joins and the oldest member leaves.
  Defaults 10 and 3, the reference's command (`R-EA.sh cifar10 3`).
- reinforce: Williams's REINFORCE with a categorical policy per edge (logits initialised to
  1e-3 N(0, 1)), Adam, and an exponential-moving-average baseline with momentum 0.9, bias-corrected
  (reference `reinforce.py`); learning rate 0.5, the reference's command (`REINFORCE.sh cifar10 0.5`).
- tpe: Optuna's Tree-structured Parzen Estimator (Bergstra et al., NeurIPS 2011) with one
  categorical parameter per edge, through `study.ask`/`study.tell`; the sampler is Optuna's.

`run_search` is one seeded run; `Experiment` owns a run directory of many runs (one JSON each,
written atomically, so a killed experiment resumes without redoing a finished run) and its summary.
"""
import json
import logging
import math
import multiprocessing
import os
import random
import signal
import statistics
import sys
import time

import nb201
from benchmark_table import CELLS, cell_index
from userio import UserError, atomic_write_json, atomic_write_text

logger = logging.getLogger('attnas')

STRATEGY_DEFAULTS = {
    'random': {},
    'evolution': {'population': 10, 'sample_size': 3},
    'reinforce': {'learning_rate': 0.5, 'ema_momentum': 0.9},
    'tpe': {},
}
STRATEGIES = tuple(STRATEGY_DEFAULTS)
CURVE_POINTS = 200


class BudgetSpent(Exception):
    """The next look-up does not fit in the budget: the run is over."""


class Evaluator:
    """The look-ups of one run: each returns the reward of a cell and spends its cost (1, or the
    table's simulated seconds); `history` keeps (cell index, reward, budget used after it)."""

    def __init__(self, table, reward_metric, time_metric, budget, seed):
        self.table, self.reward_metric, self.time_metric, self.budget = table, reward_metric, time_metric, budget
        # Trials of a table with several seeds per cell are drawn apart from the strategy's own draws.
        self.trial_rng = random.Random(f'trial-{seed}')
        self.used, self.history = 0.0, []

    def __call__(self, genotype):
        index = cell_index(genotype)
        metrics = (self.reward_metric,) if self.time_metric is None else (self.reward_metric, self.time_metric)
        values = self.table.trial(genotype, metrics, self.trial_rng)
        cost = 1.0 if self.time_metric is None else values[1]
        if not cost > 0:
            raise UserError(f"--time_column {self.time_metric}: cell {nb201.to_string(genotype)} costs {cost:g} s; "
                            f"a training time must be positive")
        if self.used + cost > self.budget:
            raise BudgetSpent
        self.used += cost
        self.history.append((index, values[0], self.used))
        return values[0]


def random_cell(rng):
    return nb201.NB201Genotype(tuple(rng.choice(nb201.OPS) for _ in nb201.EDGES))


def random_search(evaluate, rng):
    while True:
        evaluate(random_cell(rng))


def mutate(genotype, rng):
    """The cell with the op of one edge, chosen uniformly, changed to another op."""
    ops = list(genotype.ops)
    edge = rng.randrange(len(ops))
    ops[edge] = rng.choice([op for op in nb201.OPS if op != ops[edge]])
    return nb201.NB201Genotype(tuple(ops))


def regularized_evolution(evaluate, rng, population, sample_size):
    members = []  # (cell, reward), oldest first
    while len(members) < population:
        cell = random_cell(rng)
        members.append((cell, evaluate(cell)))
    while True:
        sample = [rng.choice(members) for _ in range(sample_size)]
        parent = max(sample, key=lambda member: member[1])
        child = mutate(parent[0], rng)
        members.append((child, evaluate(child)))
        members.pop(0)


def reinforce(evaluate, seed, learning_rate, ema_momentum):
    import torch
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(seed)
    logits = torch.nn.Parameter(1e-3 * torch.randn(len(nb201.EDGES), len(nb201.OPS), generator=generator,
                                                   dtype=torch.float64))
    optimizer = torch.optim.Adam([logits], lr=learning_rate)
    numerator = denominator = 0.0
    while True:
        probabilities = torch.softmax(logits, dim=-1)
        actions = torch.multinomial(probabilities.detach(), 1, generator=generator).squeeze(1)
        log_probability = torch.log(probabilities.gather(1, actions[:, None])).sum()
        reward = evaluate(nb201.NB201Genotype(tuple(nb201.OPS[a] for a in actions.tolist())))
        numerator = ema_momentum * numerator + (1 - ema_momentum) * reward
        denominator = ema_momentum * denominator + (1 - ema_momentum)
        loss = -log_probability * (reward - numerator / denominator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def tpe(evaluate, seed):
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction='maximize', sampler=optuna.samplers.TPESampler(seed=seed))
    while True:
        trial = study.ask()
        cell = nb201.NB201Genotype(tuple(trial.suggest_categorical(f'edge_{source}_{node}', nb201.OPS)
                                         for node, source in nb201.EDGES))
        study.tell(trial, evaluate(cell))


def run_search(table, strategy, seed, budget, reward_metric, report_metric, time_metric=None, options=None):
    """One seeded run of `strategy`: its record (returned cell, its reward and report value, the
    best-so-far trajectory) and the full history of look-ups [(cell index, reward, budget used)]."""
    options = {**STRATEGY_DEFAULTS[strategy], **(options or {})}
    evaluate = Evaluator(table, reward_metric, time_metric, budget, seed)
    rng = random.Random(seed)
    try:
        if strategy == 'random':
            random_search(evaluate, rng)
        elif strategy == 'evolution':
            regularized_evolution(evaluate, rng, options['population'], options['sample_size'])
        elif strategy == 'reinforce':
            reinforce(evaluate, seed, options['learning_rate'], options['ema_momentum'])
        else:
            tpe(evaluate, seed)
    except BudgetSpent:
        pass
    history = evaluate.history
    if not history:
        raise UserError(f"the budget {budget} does not pay for a single look-up of {time_metric}; raise --budget")
    trajectory, best = [], None
    for index, reward, used in history:
        if best is None or reward > best[1]:
            best = (index, reward)
            trajectory.append([used, reward, table.value(CELLS[index], report_metric)])
    returned = CELLS[best[0]]
    record = {'strategy': strategy, 'seed': seed, 'lookups': len(history), 'budget_used': evaluate.used,
              'returned': nb201.to_dict(returned), 'returned_reward': best[1],
              'returned_report': trajectory[-1][2], 'trajectory': trajectory}
    return record, history


# --------------------------------------------------------------------------------------------------
# Many runs: the run directory
# --------------------------------------------------------------------------------------------------

def mean_std(values):
    """Mean and sample standard deviation (None for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


class Experiment:
    """A run directory: settings.json (what defines every run), runs/<strategy>/<run>.json, log.txt,
    results.json, results.md, best_so_far.png and report.html."""

    def __init__(self, directory, settings):
        self.dir, self.settings = directory, settings

    @classmethod
    def create(cls, directory, settings, resume):
        """`directory` as `runs.run_directory` checked it: new and empty, or one to resume with
        the same settings (strategies and runs may be added)."""
        experiment = cls(directory, settings)
        path = experiment.path('settings.json')
        if resume:
            stored = read(directory).settings
            differing = sorted(k for k in set(stored) | set(settings)
                               if k not in ('strategies', 'runs') and stored.get(k) != settings.get(k))
            if differing:
                raise UserError(f"{directory} was started with other settings (differs in: {', '.join(differing)}); "
                                f"resume with that run's flags or choose a new --save")
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the run directory {directory} ({exc.strerror}); choose a writable "
                            f"--save") from exc
        atomic_write_json(path, settings)
        return experiment

    def path(self, *names):
        return os.path.join(self.dir, *names)

    def run_path(self, strategy, run):
        return self.path('runs', strategy, f'run-{run:04d}.json')

    def jobs(self):
        return [(strategy, run) for strategy in self.settings['strategies'] for run in range(self.settings['runs'])]

    def finished(self, strategy, run):
        return os.path.isfile(self.run_path(strategy, run))

    def save_run(self, strategy, run, record):
        os.makedirs(os.path.dirname(self.run_path(strategy, run)), exist_ok=True)
        atomic_write_json(self.run_path(strategy, run), record)

    def records(self, strategy):
        found = []
        for run in range(self.settings['runs']):
            if self.finished(strategy, run):
                with open(self.run_path(strategy, run)) as f:
                    found.append(json.load(f))
        return found


_WORKER = {}


def _work(job):
    strategy, run = job
    s = _WORKER['settings']
    record, _ = run_search(_WORKER['table'], strategy, s['seed'] + run, s['budget'], s['benchmark_metric'],
                           s['report_metric'], s['time_column'], s['options'].get(strategy))
    return strategy, run, record


def _worker_start(parent):
    # Killed with the experiment (Linux), so that a resumed experiment is the only writer; Ctrl-C is
    # the parent's to handle.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith('linux'):
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)


def execute(experiment, table, jobs, progress=True):
    """Run every unfinished (strategy, run), `jobs` processes at a time; the parent writes each
    finished run's file, so that a kill loses only the runs in flight."""
    from tqdm import tqdm
    pending = [job for job in experiment.jobs() if not experiment.finished(*job)]
    done = len(experiment.jobs()) - len(pending)
    if done:
        logger.info('%d of %d runs already finished', done, len(experiment.jobs()))
    _WORKER.update(table=table, settings=experiment.settings)
    bar = tqdm(total=len(experiment.jobs()), initial=done, desc='runs', disable=not progress)
    if jobs == 1 or len(pending) <= 1:
        results = map(_work, pending)
        pool = None
    else:
        # fork: the workers inherit the loaded table instead of reading it again.
        pool = multiprocessing.get_context('fork').Pool(jobs, initializer=_worker_start, initargs=(os.getpid(),))
        results = pool.imap_unordered(_work, pending)
    try:
        for strategy, run, record in results:
            experiment.save_run(strategy, run, record)
            bar.update(1)
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()


def summarize(experiment, table):
    """results.json's content: per strategy the mean and std of the returned cells' report metric and
    reward, their look-ups and budget used, and the best cell of the table by each metric."""
    s = experiment.settings
    rows = []
    for strategy in s['strategies']:
        records = experiment.records(strategy)
        if not records:
            continue
        report_mean, report_std = mean_std([r['returned_report'] for r in records])
        reward_mean, reward_std = mean_std([r['returned_reward'] for r in records])
        rows.append({'strategy': strategy, 'runs': len(records), 'report_mean': report_mean, 'report_std': report_std,
                     'reward_mean': reward_mean, 'reward_std': reward_std,
                     'lookups_mean': statistics.fmean(r['lookups'] for r in records),
                     'options': {**STRATEGY_DEFAULTS[strategy], **s['options'].get(strategy, {})}})
    best_report = table.best(s['report_metric'])
    best_reward = table.best(s['benchmark_metric'])
    return {'settings': s, 'strategies': rows,
            'best_cell': {'by_report': {'nb201': best_report[0], s['report_metric']: best_report[1]},
                          'by_reward': {'nb201': best_reward[0], s['benchmark_metric']: best_reward[1],
                                        s['report_metric']: table.value(best_reward[0], s['report_metric'])}}}


def is_experiment(directory):
    return os.path.isfile(os.path.join(directory, 'settings.json')) and os.path.isdir(os.path.join(directory, 'runs'))


def read(directory):
    """The experiment in `directory`, as its settings.json describes it."""
    try:
        with open(os.path.join(directory, 'settings.json')) as f:
            settings = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{directory}/settings.json cannot be read ({exc}); is {directory} a tabular-search "
                        f"directory?") from exc
    return Experiment(directory, settings)


def returned_cells(directory):
    """[(strategy, source, genotype)]: for each strategy of a tabular-search directory the cell its
    runs returned most often (on a tie, the one an earlier run returned)."""
    experiment = read(directory)
    found = []
    for strategy in experiment.settings['strategies']:
        cells = [record['returned']['nb201'] for record in experiment.records(strategy)]
        if not cells:
            continue
        cell = max(dict.fromkeys(cells), key=cells.count)
        found.append((strategy, f'{directory}: {strategy}, returned by {cells.count(cell)} of {len(cells)} runs',
                      nb201.from_dict({'nb201': cell}, source=f'{directory} ({strategy})')))
    if not found:
        raise UserError(f"{directory} has no finished tabular-search run yet; run or resume it first")
    return found


def _pm(mean, std, digits=2):
    return f'{mean:.{digits}f}' + ('' if std is None else f' ± {std:.{digits}f}')


def budget_unit(settings):
    return 'look-ups' if settings['time_column'] is None else f"simulated seconds ({settings['time_column']})"


def markdown(results, command):
    s, best = results['settings'], results['best_cell']
    same = s['report_metric'] == s['benchmark_metric']
    lines = [f"# Tabular search on {s['benchmark']}", '',
             f"Reward: `{s['benchmark_metric']}`; reported: `{s['report_metric']}`"
             + (' (the same metric: the table has one, or --report_metric was not given)' if same else '')
             + f"; budget {s['budget']:g} {budget_unit(s)}; seeds {s['seed']}..{s['seed'] + s['runs'] - 1}.  "
             f"Mean ± sample standard deviation over the runs of the returned cell's `{s['report_metric']}`.", '',
             f"| strategy | runs | {s['report_metric']} | reward {s['benchmark_metric']} | look-ups per run |",
             '|---|---|---|---|---|']
    for row in results['strategies']:
        lines.append(f"| {row['strategy']} | {row['runs']} | {_pm(row['report_mean'], row['report_std'])} | "
                     f"{_pm(row['reward_mean'], row['reward_std'])} | {row['lookups_mean']:.1f} |")
    lines.append(f"| best cell of the table | – | {best['by_report'][s['report_metric']]:.2f} | – | – |")
    lines += ['', f"Best cell by `{s['report_metric']}`: `{best['by_report']['nb201']}`; by the reward: "
                  f"`{best['by_reward']['nb201']}` ({s['report_metric']} {best['by_reward'][s['report_metric']]:.2f}).",
              '', f'Command: `{command}`', '']
    return '\n'.join(lines)


def best_so_far_curves(experiment):
    """{strategy: (budget points, mean, std, runs)} of the best-so-far report metric over the runs;
    a point counts the runs that have looked up at least one cell by then."""
    import numpy as np
    s = experiment.settings
    if s['time_column'] is None:
        points = np.arange(1, int(s['budget']) + 1, dtype=float)
    else:
        points = np.linspace(0, s['budget'], CURVE_POINTS + 1)[1:]
    curves = {}
    for strategy in s['strategies']:
        records = experiment.records(strategy)
        if not records:
            continue
        values = np.full((len(records), len(points)), np.nan)
        for r, record in enumerate(records):
            used = np.array([step[0] for step in record['trajectory']])
            report = np.array([step[2] for step in record['trajectory']])
            position = np.searchsorted(used, points, side='right') - 1
            values[r, position >= 0] = report[position[position >= 0]]
        counted = (~np.isnan(values)).sum(0)
        keep = counted > 0
        mean = np.nanmean(values[:, keep], 0)
        std = np.array([np.std(column[~np.isnan(column)], ddof=1) if (~np.isnan(column)).sum() > 1 else 0.0
                        for column in values[:, keep].T])
        curves[strategy] = (points[keep], mean, std, counted[keep])
    return curves


def plot_best_so_far(experiment, best_value, path):
    from plots import new_figure, save_figure
    s = experiment.settings
    fig = new_figure(6.4, 4.4)
    ax = fig.add_subplot(1, 1, 1)
    for k, (strategy, (x, mean, std, _)) in enumerate(best_so_far_curves(experiment).items()):
        ax.plot(x, mean, color=f'C{k}', label=strategy)
        ax.fill_between(x, mean - std, mean + std, color=f'C{k}', alpha=0.2, linewidth=0)
    ax.axhline(best_value, color='black', linestyle='--', linewidth=1, label='best cell of the table')
    ax.set_xlabel(f"budget ({budget_unit(s)})")
    if s['time_column'] is None and s['budget'] > 20:
        ax.set_xscale('log')
    ax.set_ylabel(f"best-so-far {s['report_metric']}")
    ax.set_title('returned cell after each budget: mean ± std over runs')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def write_report(directory, out_dir=None):
    """best_so_far.png and report.html of a tabular-search directory (from its results.json and run
    files) in `out_dir` (default: the directory itself); returns the report's path."""
    from report import Page
    experiment, out_dir = read(directory), out_dir or directory
    try:
        with open(experiment.path('results.json')) as f:
            results = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{directory} has no readable results.json ({exc}); resume the tabular search to write "
                        f"it") from exc
    s = results['settings']
    os.makedirs(out_dir, exist_ok=True)
    plot = plot_best_so_far(experiment, results['best_cell']['by_report'][s['report_metric']],
                            os.path.join(out_dir, 'best_so_far.png'))
    page = Page(f'Tabular search: {os.path.basename(os.path.normpath(os.path.abspath(directory)))}')
    page.para(f'Written {time.strftime("%Y-%m-%d %H:%M:%S")}. Each run searches the NAS-Bench-201 space by '
              f'looking up {s["benchmark_metric"]} and returns the cell of its highest reward; the table gives its '
              f'{s["report_metric"]}: mean and sample standard deviation over the runs.')
    page.heading('Settings')
    page.table(('setting', 'value'), sorted((k, v) for k, v in s.items()))
    page.heading('Results')
    best = results['best_cell']
    rows = [(row['strategy'], row['runs'], row['report_mean'], '' if row['report_std'] is None else row['report_std'],
             row['reward_mean'], row['lookups_mean']) for row in results['strategies']]
    rows.append(('best cell of the table', '', best['by_report'][s['report_metric']], '', '', ''))
    page.table(('strategy', 'runs', f"{s['report_metric']} mean", 'std', f"reward {s['benchmark_metric']} mean",
                'look-ups per run'), rows)
    page.para(f"Best cell by {s['report_metric']}: {best['by_report']['nb201']}.")
    page.heading('Returned cells')
    page.table(('strategy', 'the cell its runs returned most often', 'of the runs'),
               [(strategy, nb201.to_string(genotype), source.rpartition(', ')[2])
                for strategy, source, genotype in returned_cells(directory)])
    page.image(plot, f"best-so-far {s['report_metric']} against the budget, mean and ± one standard deviation "
                     f"over the runs; dashed: the best cell of the table")
    path = os.path.join(out_dir, 'report.html')
    atomic_write_text(path, page.html())
    return path


def write_results(experiment, table, command):
    results = summarize(experiment, table)
    atomic_write_json(experiment.path('results.json'), results)
    atomic_write_text(experiment.path('results.md'), markdown(results, command))
    write_report(experiment.dir)
    return results


def check_budget(budget):
    if not (budget >= 1 and math.isfinite(budget)):
        raise UserError(f"--budget must be at least 1 (look-ups, or seconds with --time_column), got {budget:g}")
