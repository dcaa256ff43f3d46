"""The NAS-Bench-201 space: string form, validation, JSON, enumeration and sampling."""
import json

import pytest

import genotypes
import nb201
from userio import UserError

# The cell the benchmark's paper draws as its example (Dong and Yang, ICLR 2020, Figure 1).
EXAMPLE = '|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|'


def test_string_round_trip_keeps_edge_order():
    genotype = nb201.parse(EXAMPLE)
    assert genotype.ops == ('nor_conv_3x3', 'nor_conv_3x3', 'avg_pool_3x3', 'skip_connect', 'nor_conv_3x3',
                            'skip_connect')
    assert nb201.EDGES == ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
    assert nb201.to_string(genotype) == EXAMPLE
    assert not nb201.has_attention(genotype)


@pytest.mark.parametrize('text, says', [
    ('|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|', "2 node group(s)"),
    ('|nor_conv_3x3~0|+|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|', 'node 2'),
    ('|conv_7x7~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|',
     "unknown op 'conv_7x7'"),
    ('|nor_conv_3x3~0|+|nor_conv_3x3~1|avg_pool_3x3~0|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|',
     'must read input 0'),
    ('|nor_conv_3x3|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|',
     'must be op~input'),
])
def test_bad_strings_are_one_line(text, says):
    with pytest.raises(UserError) as error:
        nb201.parse(text)
    assert says in str(error.value) and '\n' not in str(error.value)


def test_genotype_json_round_trip_with_and_without_attention(tmp_path):
    plain = nb201.parse(EXAMPLE)
    path = tmp_path / 'genotype.json'
    genotypes.save(plain, str(path))
    assert json.loads(path.read_text()) == {'nb201': EXAMPLE}
    assert genotypes.load(str(path)) == plain
    with_attention = plain._replace(attentions=('SE', '', '', 'CBAM', '', ''))
    genotypes.save(with_attention, str(path))
    assert genotypes.load(str(path)) == with_attention
    assert nb201.has_attention(with_attention)
    path.write_text(json.dumps({'nb201': EXAMPLE, 'attention': ['Nope', '', '', '', '', '']}))
    with pytest.raises(UserError, match="unknown attention 'Nope'"):
        genotypes.load(str(path))


def test_command_line_arch_may_be_a_string():
    assert genotypes.resolve(EXAMPLE, None) == nb201.parse(EXAMPLE)
    assert genotypes.load(EXAMPLE) == nb201.parse(EXAMPLE)


def test_enumeration_is_the_whole_space_once():
    space = nb201.all_genotypes()
    assert len(space) == nb201.SPACE_SIZE == 5 ** 6
    strings = {nb201.to_string(genotype) for genotype in space}
    assert len(strings) == len(space)
    assert all(nb201.parse(text) == nb201.NB201Genotype(nb201.parse(text).ops) for text in list(strings)[:50])


def test_sampling_is_distinct_and_seeded():
    drawn = nb201.sample_genotypes(200, seed=3)
    assert len(set(drawn)) == 200
    assert drawn == nb201.sample_genotypes(200, seed=3)
    assert drawn != nb201.sample_genotypes(200, seed=4)
    with pytest.raises(UserError, match='at most'):
        nb201.sample_genotypes(nb201.SPACE_SIZE + 1, seed=0)
