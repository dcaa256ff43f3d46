"""The layout: no module imports a script (a top-level file with an `if __name__ == '__main__'`
block), read from the import graph; the training loop loads without the plotting libraries."""
import ast
import glob
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def is_script(tree):
    return any(isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
               and isinstance(node.test.left, ast.Name) and node.test.left.id == '__name__'
               for node in tree.body)


def imported_names(tree):
    """The top-level names of every module `tree` imports (absolute imports)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split('.')[0])
    return names


def repository_modules():
    """{path: parsed tree} of the repository's modules: top-level files, kernels/ and tools/."""
    paths = [p for pattern in ('*.py', 'kernels/*.py', 'tools/*.py') for p in glob.glob(os.path.join(ROOT, pattern))]
    return {os.path.relpath(p, ROOT): ast.parse(open(p).read(), p) for p in paths}


def test_no_module_imports_a_script():
    modules = repository_modules()
    scripts = {os.path.splitext(path)[0] for path, tree in modules.items() if os.sep not in path and is_script(tree)}
    assert {'train_search', 'search_net', 'bench', 'visualize', 'gan', 'generate_archs'} <= scripts
    offending = {path: sorted(imported_names(tree) & scripts) for path, tree in modules.items()
                 if imported_names(tree) & scripts}
    assert offending == {}


def test_the_search_library_is_no_script():
    modules = repository_modules()
    for library in ('search.py', 'training.py', 'cli.py', 'devices.py', 'runs.py', 'report.py', 'drawing.py',
                    'plots.py', 'tensorboard_logger.py', 'anas.py', 'nag_networks.py', 'step_measurements.py'):
        assert not is_script(modules[library]), library


def test_training_does_not_load_matplotlib_or_graphviz():
    code = ("import json, sys, training, runs; "
            "print(json.dumps([m for m in ('matplotlib', 'graphviz') if m in sys.modules]))")
    result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == []
