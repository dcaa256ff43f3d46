"""The Python examples of docs/extending.md run as written.

Each fenced python block is a self-contained example: it runs in a fresh interpreter (forked from
the tests' script server, which has imported torch) in the repository root, so that what one
example registers cannot leak into another or into the rest of the suite."""
import os
import re

import pytest

from helpers import ROOT, run

DOC = os.path.join(ROOT, 'docs', 'extending.md')
BLOCK = re.compile(r'^```python\n(.*?)^```$', re.S | re.M)


def python_blocks(path):
    with open(path) as f:
        return BLOCK.findall(f.read())


def test_every_section_of_the_guide_has_an_example():
    with open(DOC) as f:
        sections = re.split(r'^## ', f.read(), flags=re.M)[1:]
    assert len(sections) >= 4
    assert all(BLOCK.search(section) for section in sections), [s.splitlines()[0] for s in sections]


@pytest.mark.parametrize('index', range(len(python_blocks(DOC))))
def test_example_runs(index, tmp_path):
    script = tmp_path / f'example_{index}.py'
    # The script's own directory is sys.path[0]; the examples import the project from the root.
    script.write_text(f'import sys\nsys.path.insert(0, {ROOT!r})\n' + python_blocks(DOC)[index])
    run(script, cwd=ROOT)
