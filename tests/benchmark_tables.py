"""NAS-Bench-201 benchmark tables made by the tests: a CSV of every cell with metrics computed from
the cell's ops, and a stand-in for the authors' `nats_bench` package serving the official file's
API from a small JSON description."""
import csv
import json
import os
import textwrap

import nb201

# Each op's worth in `quality`: a cell's quality is the sum over its edges, so the one best cell
# has nor_conv_3x3 everywhere (quality 6 * 4 = 24), and a better op on any edge is always better:
# a gradient of quality a search can climb.
WORTH = {'none': 0, 'skip_connect': 1, 'avg_pool_3x3': 2, 'nor_conv_1x1': 3, 'nor_conv_3x3': 4}
BEST_QUALITY = 4 * len(nb201.EDGES)
BEST_CELL = '|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|'


def quality(genotype):
    return sum(WORTH[op] for op in genotype.ops)


def convolutions(genotype):
    return sum(op.startswith('nor_conv') for op in genotype.ops)


def standard_metrics(genotype, index):
    """quality; accuracy, a reported metric rising with quality (its maximum at the best cell);
    seconds, a training time of 10 s plus 5 s per convolution."""
    return {'quality': quality(genotype), 'accuracy': 50 + 2 * quality(genotype) - 0.001 * (index % 7),
            'seconds': 10 + 5 * convolutions(genotype)}


def write_csv(path, metrics=standard_metrics, drop=(), extra_rows=(), columns_first=('name',)):
    """A table of every cell but those at the indices in `drop`: a non-numeric 'name' column, the
    cell strings under the misleading header 'model', then `metrics(genotype, index)`'s columns."""
    cells = nb201.all_genotypes()
    names = list(metrics(cells[0], 0))
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow([*columns_first, 'model', *names])
        for index, genotype in enumerate(cells):
            if index in drop:
                continue
            values = metrics(genotype, index)
            writer.writerow([f'cell-{index}', nb201.to_string(genotype), *(values[n] for n in names)])
        for row in extra_rows:
            writer.writerow(row)
    return str(path)


STAND_IN = textwrap.dedent('''
    """A stand-in for the nats_bench package: the API of its topology benchmark, its numbers from
    tests/benchmark_tables.py's nats_info."""
    import json
    import os

    import nb201
    from benchmark_tables import SEEDS, nats_info

    CALLS = []


    class StandIn:
        def __init__(self, archs):
            self.meta_archs = archs

        def __len__(self):
            return len(self.meta_archs)

        def __getitem__(self, index):
            return self.meta_archs[index]

        def query_by_index(self, arch_index, dataname=None, hp='12'):
            return {seed: object() for seed in SEEDS[hp]}

        def get_more_info(self, index, dataset, iepoch=None, hp='12', is_random=True):
            genotype = nb201.parse(self.meta_archs[index])
            if is_random is False:
                infos = [nats_info(genotype, dataset, hp, seed) for seed in SEEDS[hp]]
                return {key: sum(info[key] for info in infos) / len(infos) for key in infos[0]}
            assert is_random in SEEDS[hp], is_random
            return nats_info(genotype, dataset, hp, is_random)


    def create(file_path_or_dict, search_space, fast_mode=False, verbose=True):
        CALLS.append((file_path_or_dict, search_space, fast_mode, verbose))
        with open(os.path.join(file_path_or_dict, 'meta.json')) as f:
            return StandIn(json.load(f))
''')

SEEDS = {'12': (111, 777), '200': (777, 888, 999)}


def nats_info(genotype, dataset, hp, seed):
    """get_more_info's dict for one trial: every number follows from the cell, data set and seed."""
    q = quality(genotype)
    shift = {'cifar10-valid': 0, 'cifar10': 1, 'cifar100': -20, 'ImageNet16-120': -40}[dataset]
    accuracy = 40 + 2 * q + shift + (0.5 if hp == '200' else 0) * q + 0.01 * seed
    info = {'train-all-time': 100.0 + 10 * convolutions(genotype) + (seed % 7), 'train-accuracy': accuracy + 5}
    if dataset != 'cifar10':
        info.update({'valid-accuracy': accuracy, 'valid-per-time': 2.0 + q / 8})
    info.update({'test-accuracy': accuracy - 0.5})
    return info


def write_nats_stand_in(directory):
    """(package directory to put on sys.path, benchmark directory): the stand-in package and a
    'simple' archive directory it reads, its cells listed in reverse of nb201.all_genotypes()."""
    package = os.path.join(directory, 'stand_in')
    os.makedirs(os.path.join(package, 'nats_bench'))
    with open(os.path.join(package, 'nats_bench', '__init__.py'), 'w') as f:
        f.write(STAND_IN)
    benchmark = os.path.join(directory, 'NATS-tss-v1_0-3ffb9-simple')
    os.makedirs(benchmark)
    with open(os.path.join(benchmark, 'meta.json'), 'w') as f:
        json.dump([nb201.to_string(g) for g in nb201.all_genotypes()[::-1]], f)
    return package, benchmark
