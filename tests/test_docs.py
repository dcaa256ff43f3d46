"""The Python examples of docs/extending.md run as written.

Each fenced python block is a self-contained example: it runs in a fresh interpreter (forked from
the tests' script server, which has imported torch) in the repository root, so that what one
example registers cannot leak into another or into the rest of the suite.  The blocks whose first
line names a file (`# noise_data.py`) are the page's plug-ins: its `sh` blocks' commands run, in
page order, in a folder holding them."""
import os
import re
import shlex

import pytest

from helpers import ROOT, run

DOC = os.path.join(ROOT, 'docs', 'extending.md')
BLOCK = re.compile(r'^```python\n(.*?)^```$', re.S | re.M)
COMMANDS = re.compile(r'^```sh\n(.*?)^```$', re.S | re.M)
PLUGIN_FILE = re.compile(r'# (\w+\.py)\n')


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


def test_the_commands_run_with_the_plugin_files(tmp_path):
    with open(DOC) as f:
        text = f.read()
    plugins = [PLUGIN_FILE.match(block) for block in BLOCK.findall(text)]
    for match, block in zip(plugins, BLOCK.findall(text)):
        if match:
            (tmp_path / match.group(1)).write_text(block)
    commands = [shlex.split(line) for block in COMMANDS.findall(text) for line in block.splitlines() if line.strip()]
    assert len([m for m in plugins if m]) >= 4 and len(commands) >= 4
    for argv in commands:
        assert argv[0] == 'python', argv
        run(os.path.join(ROOT, argv[1]), *argv[2:], cwd=tmp_path)

