"""Architectures are data: the records load in a fresh interpreter without torch and without NAG's
GAN (nag.py), and the evaluation networks build NAG cells without the GAN."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def loaded_after_import(module):
    """Which of torch and nag a fresh interpreter holds after `import module`."""
    code = f"import json, sys, {module}; print(json.dumps([m for m in ('torch', 'nag') if m in sys.modules]))"
    result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def test_the_nag_cell_grammar_loads_without_torch():
    assert loaded_after_import('nag_cells') == []


@pytest.mark.parametrize('module', ['genotypes', 'model'])
def test_genotypes_and_networks_do_not_import_the_gan(module):
    assert 'nag' not in loaded_after_import(module)


def test_genotypes_load_without_torch():
    """The op and attention names come from the registries, which load the modules defining them
    only when a name is looked up."""
    assert 'torch' not in loaded_after_import('genotypes')
