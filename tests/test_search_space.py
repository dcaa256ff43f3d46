"""Random architectures of a search space (`random:N`): valid by construction, distinct, seeded,
and exactly the cells the DARTS derivation can return."""
import itertools
import json
import os
import subprocess
import sys

import pytest
import torch

import genotypes
import search_space
from model import NetworkCIFAR
from model_search import SearchNetwork
from userio import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def key(genotype):
    return json.dumps(genotypes.to_dict(genotype))


@pytest.mark.parametrize('location', list(search_space.LOCATIONS))
def test_samples_are_cells_the_derivation_could_return(location):
    steps = 3
    lists = search_space.candidate_lists(location, genotypes.PRIMITIVES)
    # What a supernet of this location derives, as the reference shape of every entry.
    torch.manual_seed(0)
    derived = SearchNetwork(4, 10, 3, location=location, steps=steps).genotype()
    for genotype in search_space.sample_genotypes(20, seed=1, location=location, steps=steps):
        assert genotypes.validate(genotype) is genotype
        assert genotype.normal_concat == genotype.reduce_concat == [2, 3, 4]
        for cell in ('normal', 'reduce'):
            entries = getattr(genotype, cell)
            assert len(entries) == 2 * steps
            for node in range(steps):
                (op_a, a, attn_a), (op_b, b, attn_b) = entries[2 * node:2 * node + 2]
                assert 0 <= a < b < node + 2  # two distinct earlier states
                for op, attn in ((op_a, attn_a), (op_b, attn_b)):
                    assert op in lists['first'] and op != 'none'
                    if lists['second']:
                        assert attn in lists['second'] and attn != 'none'
                    else:
                        assert attn == ''
            bottleneck = getattr(genotype, cell + '_bottleneck')
            assert (bottleneck in lists['bottleneck']) if lists['bottleneck'] else bottleneck == ''
            assert [len(e) for e in entries] == [len(e) for e in getattr(derived, cell)]
            assert bool(bottleneck) == bool(getattr(derived, cell + '_bottleneck'))


def test_a_sample_builds_and_runs():
    genotype = search_space.sample_genotypes(1, seed=0, location='after_every_and_end')[0]
    net = NetworkCIFAR(4, 10, 3, False, genotype).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 3, 16, 16))[0].shape == (2, 10)


def test_samples_are_distinct_and_seeded():
    first = search_space.sample_genotypes(40, seed=7)
    assert len({key(g) for g in first}) == 40
    assert [key(g) for g in search_space.sample_genotypes(40, seed=7)] == [key(g) for g in first]
    other = search_space.sample_genotypes(40, seed=8)
    assert [key(g) for g in other] != [key(g) for g in first]
    # A longer list of the same seed starts with the shorter one.
    assert [key(g) for g in search_space.sample_genotypes(41, seed=7)][:40] == [key(g) for g in first]


def enumerate_space(ops, steps):
    """Every (normal, reduce) pair of a no_attention space, written out independently of the sampler."""
    def cells():
        per_node = [[((op_a, a, ''), (op_b, b, '')) for a, b in itertools.combinations(range(node + 2), 2)
                     for op_a in ops for op_b in ops] for node in range(steps)]
        for choice in itertools.product(*per_node):
            yield [entry for pair in choice for entry in pair]
    concat = list(range(2, 2 + steps))
    return {key(genotypes.Genotype(normal, concat, reduce, concat)) for normal in cells() for reduce in cells()}


@pytest.mark.parametrize('ops, steps', [(['none', 'skip_connect', 'max_pool_3x3'], 1), (['avg_pool_3x3'], 2)])
def test_space_size_is_exact_and_sampling_it_all_covers_it(ops, steps):
    space = enumerate_space([op for op in ops if op != 'none'], steps)
    lists = search_space.candidate_lists('no_attention', ops)
    assert search_space.space_size(lists, steps) == len(space)
    drawn = search_space.sample_genotypes(len(space), seed=0, location='no_attention', primitives=ops, steps=steps)
    assert {key(g) for g in drawn} == space
    with pytest.raises(UserError, match=f'only {len(space)} architecture'):
        search_space.sample_genotypes(len(space) + 1, seed=0, location='no_attention', primitives=ops, steps=steps)


def test_space_size_of_the_darts_space():
    # 14 edges choose 2 inputs per node: 1 * 3 * 6 * 10 input pairs, 7 ops on each of 8 kept edges.
    lists = search_space.candidate_lists('no_attention', genotypes.PRIMITIVES)
    assert search_space.space_size(lists, 4) == (180 * 7 ** 8) ** 2
    # after_every: 6 attentions (Identity included) after every op; end: 6 bottlenecks per cell.
    attentions = len(search_space.candidate_lists('end', genotypes.PRIMITIVES)['bottleneck'])
    assert search_space.space_size(search_space.candidate_lists('after_every', genotypes.PRIMITIVES), 4) == \
        (180 * (7 * attentions) ** 8) ** 2
    assert search_space.space_size(search_space.candidate_lists('end', genotypes.PRIMITIVES), 4) == \
        (180 * 7 ** 8 * attentions) ** 2


def test_the_module_loads_without_torch():
    code = "import sys, search_space; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == 'False'
