"""A NAS-Bench-201 benchmark table: the trained result of every cell of the space, by metric.

Dong and Yang, "NAS-Bench-201: Extending the Scope of Reproducible Neural Architecture Search",
ICLR 2020, and its topology space in Dong et al., "NATS-Bench: Benchmarking NAS Algorithms for
Architecture Topology and Size", TPAMI 2021 (reference code and file format: D-X-Y/NATS-Bench,
D-X-Y/AutoDL-Projects).

`load(path)` reads one of two kinds of file:

- a portable table: a CSV file with a header row, one column of NAS-Bench-201 cell strings (found
  by its content, whatever its header) and any number of numeric metric columns, one row per cell
  of the space;
- the official NATS-Bench topology file (`NATS-tss-v1_0-3ffb9-simple`, a directory, or the single
  `.pickle.pbz2` file), read through the authors' `nats_bench` package, imported only then.  Its
  metrics follow the benchmark's search protocol for each data set D (cifar10, cifar100,
  ImageNet16-120): `D/valid_acc_12`, the validation accuracy after the 12-epoch schedule (the
  reward of the authors' multi-trial searches; for cifar10 trained on half of the training set,
  'cifar10-valid'), `D/time_12`, the simulated cost of that training and its evaluation
  (`train-all-time + valid-per-time`, as `simulate_train_eval`), and `D/test_acc_200`, the test
  accuracy after the full 200-epoch schedule (what the benchmark's tables report).

Either kind covers the whole space (5^6 cells; a missing cell is named).  `value(arch, metric)` is a
cell's value, for the official file the mean over its trials (seeds); `trial(arch, metrics, rng)`
is the values of one trial drawn with `rng`, as the authors' simulated training draws one
(`get_more_info(..., is_random=True)`).  A bad file or metric is one line (`UserError`).
"""
import csv
import logging
import math
import os

import nb201
from userio import UserError

logger = logging.getLogger('attnas')

NATS_DATASETS = ('cifar10', 'cifar100', 'ImageNet16-120')
# The official file's metrics per data set: (hyper-parameter set, the get_more_info keys summed).
NATS_METRICS = {'valid_acc_12': ('12', ('valid-accuracy',)),
                'test_acc_200': ('200', ('test-accuracy',)),
                'time_12': ('12', ('train-all-time', 'valid-per-time'))}
NATS_SUFFIXES = ('.pbz2',)

# Every cell of the space in `nb201.all_genotypes()` order, and the index of each by its string.
CELLS = nb201.all_genotypes()
_CELL_INDEX = {nb201.to_string(g): i for i, g in enumerate(CELLS)}


def cell_string(arch):
    """The benchmark string of `arch` (a string or an NB201Genotype without attention)."""
    if isinstance(arch, nb201.NB201Genotype):
        if nb201.has_attention(arch):
            raise UserError(f"the cell {nb201.to_string(arch)} has attention, so the benchmark has no entry for it")
        return nb201.to_string(arch)
    return arch


def cell_index(arch):
    """The position of a cell in `nb201.all_genotypes()` (the last edge's op varying fastest)."""
    text = cell_string(arch)
    if text not in _CELL_INDEX:
        return _CELL_INDEX[nb201.to_string(nb201.parse(text, source='cell'))]
    return _CELL_INDEX[text]


class Table:
    """What both kinds share: the metric names, the checks, the whole-space look-ups."""
    kind = None

    def __init__(self, source, metrics):
        self.source, self.metrics = source, tuple(metrics)

    @property
    def default_metric(self):
        return self.metrics[0]

    def check_metric(self, metric, flag='--benchmark_metric'):
        """`metric`, or the default for None; a UserError names a metric the table lacks."""
        if metric is None:
            return self.default_metric
        if metric not in self.metrics:
            raise UserError(f"{flag} {metric}: the benchmark {self.source} has no such metric; its metrics: "
                            f"{', '.join(self.metrics)}")
        return metric

    def report_metric_for(self, metric):
        """The metric a search with reward `metric` is judged by, by the benchmark's protocol."""
        return metric

    def architectures(self):
        return list(_CELL_INDEX)

    def value(self, arch, metric=None):
        return self._value(cell_index(arch), self.check_metric(metric))

    def trial(self, arch, metrics, rng):
        return self._trial(cell_index(arch), [self.check_metric(m) for m in metrics], rng)

    def column(self, metric=None):
        """The values of `metric` for every cell, in `nb201.all_genotypes()` order."""
        metric = self.check_metric(metric)
        return [self._value(index, metric) for index in range(nb201.SPACE_SIZE)]

    def best(self, metric=None):
        """(cell string, value) of the highest value of `metric` (the first such cell on a tie)."""
        values = self.column(metric)
        index = max(range(len(values)), key=values.__getitem__)
        return nb201.to_string(CELLS[index]), values[index]


def _check_coverage(source, cells):
    """Every cell of the space must be in `cells` (strings); name the missing ones."""
    missing = [cell for cell in _CELL_INDEX if cell not in cells]
    if missing:
        raise UserError(f"{source} covers {nb201.SPACE_SIZE - len(missing):,} of the {nb201.SPACE_SIZE:,} "
                        f"NAS-Bench-201 cells; {len(missing):,} missing, e.g. {', '.join(missing[:3])}; a "
                        f"benchmark table has a row for every cell")


class CsvTable(Table):
    """A portable table: one row per cell, one value per metric (no trials)."""
    kind = 'csv'

    def __init__(self, source, metrics, values):
        super().__init__(source, metrics)
        self._values = values  # {metric: [value per cell index]}

    def _value(self, index, metric):
        return self._values[metric][index]

    def _trial(self, index, metrics, rng):
        return tuple(self._values[m][index] for m in metrics)


def _number(text):
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _read_csv(path):
    try:
        with open(path, newline='') as f:
            rows = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"benchmark {path} cannot be read as a CSV table ({exc}); give a CSV file with a "
                        f"header row or the NATS-Bench topology file") from exc
    if len(rows) < 2:
        raise UserError(f"benchmark {path} has no data rows; a table has a header row and one row per cell")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    if any(nb201.LOOKS_LIKE_ARCH.match(h) for h in header):
        raise UserError(f"benchmark {path} has no header row (its first row holds a cell); add one naming "
                        f"the columns")
    first = body[0]
    arch_columns = [j for j in range(min(len(header), len(first))) if nb201.LOOKS_LIKE_ARCH.match(first[j].strip())]
    if not arch_columns:
        raise UserError(f"benchmark {path} has no architecture column (no column of NAS-Bench-201 strings like "
                        f"{nb201.to_string(nb201.NB201Genotype(('nor_conv_3x3',) * len(nb201.EDGES)))})")
    arch_column = arch_columns[0]
    columns = {}
    for j, name in enumerate(header):
        if j == arch_column:
            continue
        values = [_number(row[j]) if j < len(row) else None for row in body]
        if all(v is not None for v in values):
            columns[name or f'column {j + 1}'] = values
    if not columns:
        raise UserError(f"benchmark {path} has no numeric metric column (every column besides the cells' "
                        f"'{header[arch_column]}' has a value that is not a finite number)")
    cells = {}
    for n, row in enumerate(body, start=2):
        text = row[arch_column].strip() if arch_column < len(row) else ''
        index = cell_index(nb201.to_string(nb201.parse(text, source=f"{path} row {n}")))
        if index in cells:
            raise UserError(f"{path} row {n}: cell {text} is already in row {cells[index] + 2}; a table has one "
                            f"row per cell")
        cells[index] = n - 2
    _check_coverage(path, {nb201.to_string(CELLS[i]) for i in cells})
    order = [cells[i] for i in range(nb201.SPACE_SIZE)]
    return CsvTable(path, columns, {name: [values[r] for r in order] for name, values in columns.items()})


class NatsTable(Table):
    """The official NATS-Bench topology file through `nats_bench` (one API object, cached look-ups)."""
    kind = 'nats'

    def __init__(self, source, api):
        metrics = [f'{dataset}/{name}' for dataset in NATS_DATASETS for name in NATS_METRICS]
        super().__init__(source, metrics)
        self.api = api
        self._index = {}
        self._infos, self._trial_seeds = {}, {}
        cells = set()
        for i in range(len(api)):
            text = api[i]
            self._index[text] = i
            cells.add(text)
        _check_coverage(source, cells)

    def report_metric_for(self, metric):
        dataset, _, name = metric.rpartition('/')
        return f'{dataset}/test_acc_200' if name == 'valid_acc_12' else metric

    def _info(self, index, dataset, hp, seed):
        """get_more_info of one trial (`seed`) or of the mean over trials (seed False), cached."""
        key = (index, dataset, hp, seed)
        if key not in self._infos:
            api_index = self._index[nb201.to_string(CELLS[index])]
            try:
                self._infos[key] = self.api.get_more_info(api_index, dataset, hp=hp, is_random=seed)
            except Exception as exc:  # nats_bench raises ValueError, KeyError, OSError for a damaged archive
                raise UserError(f"benchmark {self.source}: no {hp}-epoch result of {dataset} for cell {api_index} "
                                f"({type(exc).__name__}: {exc}); the file is incomplete or damaged") from exc
        return self._infos[key]

    def _seeds(self, index, dataset, hp):
        key = (index, dataset, hp)
        if key in self._trial_seeds:
            return self._trial_seeds[key]
        api_index = self._index[nb201.to_string(CELLS[index])]
        try:
            self._trial_seeds[key] = sorted(self.api.query_by_index(api_index, dataset, hp=hp))
            return self._trial_seeds[key]
        except Exception as exc:
            raise UserError(f"benchmark {self.source}: no {hp}-epoch trials of {dataset} for cell {api_index} "
                            f"({type(exc).__name__}: {exc}); the file is incomplete or damaged") from exc

    def _lookup(self, index, metric, seed):
        dataset, _, name = metric.rpartition('/')
        hp, keys = NATS_METRICS[name]
        # The 12-epoch results of cifar10 are trained on half of its training set ('cifar10-valid'),
        # which is what the authors' searches are rewarded with.
        split = 'cifar10-valid' if dataset == 'cifar10' and hp == '12' else dataset
        if seed is None:
            seed = False
        info = self._info(index, split, hp, seed)
        missing = [key for key in keys if info.get(key) is None]
        if missing:
            raise UserError(f"benchmark {self.source}: the {hp}-epoch result of {split} has no "
                            f"{', '.join(missing)}; choose another metric")
        return float(sum(info[key] for key in keys))

    def _value(self, index, metric):
        return self._lookup(index, metric, None)

    def _trial(self, index, metrics, rng):
        """One trial for the metrics of one schedule and data set (reward and its cost together)."""
        drawn, values = {}, []
        for metric in metrics:
            dataset, _, name = metric.rpartition('/')
            hp = NATS_METRICS[name][0]
            split = 'cifar10-valid' if dataset == 'cifar10' and hp == '12' else dataset
            if (split, hp) not in drawn:
                drawn[split, hp] = rng.choice(self._seeds(index, split, hp))
            values.append(self._lookup(index, metric, drawn[split, hp]))
        return tuple(values)


def add_arguments(parser):
    """--benchmark and --benchmark_metric, for a script that looks up its architectures."""
    g = parser.add_argument_group('benchmark (NAS-Bench-201 ground truth)')
    g.add_argument('--benchmark', default=None, metavar='FILE',
                   help='a NAS-Bench-201 table: a CSV (a column of cell strings, numeric metric columns) or the '
                        'NATS-Bench topology file (NATS-tss-v1_0-3ffb9-simple, read through nats_bench)')
    g.add_argument('--benchmark_metric', default=None, metavar='NAME',
                   help="the table's metric to look up (default: its first; cifar10/valid_acc_12 in the NATS-Bench "
                        "file)")
    return parser


def from_args(args):
    """The table of --benchmark (None without it), its metric checked; args.benchmark_metric is set
    to the metric used, so that args.json records it."""
    if args.benchmark is None:
        if args.benchmark_metric is not None:
            raise UserError('--benchmark_metric names a metric of a --benchmark FILE; give the file too')
        return None
    table = load(args.benchmark, args.benchmark_metric)
    args.benchmark_metric = table.check_metric(args.benchmark_metric)
    return table


def epoch_record(table, metric, genotype):
    """metrics.jsonl's entry for an epoch's derived cell: {'benchmark': its value, or None}; the log
    says the value or why there is none."""
    value, why = derived_value(table, metric, genotype)
    if why:
        logger.info('benchmark: no %s for this epoch: %s', metric, why)
    else:
        logger.info('benchmark: %s of the derived cell = %.6g', metric, value)
    return {'benchmark': value}


def derived_value(table, metric, genotype):
    """(value, None) of a search's derived cell, or (None, why) where the table has no entry for it:
    a DARTS-space cell, or a NAS-Bench-201 cell with attention."""
    if not isinstance(genotype, nb201.NB201Genotype):
        return None, ('the derived cell is a DARTS-space cell; a NAS-Bench-201 benchmark has entries for '
                      '--space nb201 cells only')
    if nb201.has_attention(genotype):
        return None, 'the derived cell has attention: it has no NAS-Bench-201 benchmark entry'
    return table.value(genotype, metric), None


def _read_nats(path):
    try:
        import nats_bench
    except ImportError as exc:
        raise UserError(f"benchmark {path} is a NATS-Bench file, read through the authors' nats_bench package; "
                        f"install it (pip install nats_bench) or give a CSV table") from exc
    try:
        api = nats_bench.create(path, 'tss', fast_mode=os.path.isdir(path), verbose=False)
    except Exception as exc:  # nats_bench raises ValueError, OSError, EOFError, pickle errors
        raise UserError(f"benchmark {path} cannot be read by nats_bench as the topology (tss) benchmark "
                        f"({type(exc).__name__}: {exc}); give NATS-tss-v1_0-3ffb9-simple or its .pickle.pbz2 "
                        f"file") from exc
    return NatsTable(path, api)


def load(path, metric=None, flag='--benchmark'):
    """The table in `path` (the kind found by the name: a directory or .pbz2 is the official file,
    anything else a CSV); `metric`, if given, is checked against it."""
    if not os.path.exists(path):
        raise UserError(f"{flag} {path} does not exist; give a CSV table or the NATS-Bench topology file")
    if path.endswith('.pth'):
        raise UserError(f"{flag} {path}: the NAS-Bench-201 .pth files are read by nas_201_api; give the "
                        f"NATS-Bench topology file (NATS-tss-v1_0-3ffb9-simple, the same 15,625 cells) or a CSV table")
    if os.path.isdir(path) or path.endswith(NATS_SUFFIXES):
        table = _read_nats(path)
    else:
        table = _read_csv(path)
    table.check_metric(metric)
    return table
