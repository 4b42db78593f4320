"""
Where code lives: the scripts on top, the machinery in the nanogpt package beneath them, with no import circle;
model.py imports nothing of the project (it can be copied anywhere, as nanoGPT's can); the prepare scripts and
what they import need no torch.
"""
import ast
import os
import subprocess
import sys

from conftest import REPO

SCRIPTS = ['model.py', 'train.py', 'sample.py', 'bench.py', 'configurator.py', 'hellaswag.py', 'perplexity.py',
           'export_hf.py', 'plot.py']
PACKAGE = sorted(f'nanogpt/{f}' for f in os.listdir(os.path.join(REPO, 'nanogpt')) if f.endswith('.py'))


def module_name(path: str) -> str:
    return path.removesuffix('.py').removesuffix('/__init__').replace('/', '.')


def project_imports(path: str) -> set[str]:
    """The project modules a file imports anywhere in it (function-level imports included)."""
    ours = {module_name(p) for p in SCRIPTS + PACKAGE}
    found = set()
    for node in ast.walk(ast.parse(open(os.path.join(REPO, path)).read())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f'{node.module}.{a.name}' for a in node.names]
        else:
            continue
        found |= {n for n in names if n in ours}
    return found - {'nanogpt'}


def test_the_top_level_holds_only_scripts():
    top = sorted(f for f in os.listdir(REPO) if f.endswith('.py'))
    assert top == sorted(SCRIPTS)
    data = [f for _, _, files in os.walk(os.path.join(REPO, 'data')) for f in files if f.endswith('.py')]
    assert set(data) == {'prepare.py'}  # data/ holds the per-dataset prepare scripts only


def test_there_is_no_import_circle():
    graph = {module_name(p): project_imports(p) for p in SCRIPTS + PACKAGE}
    done, path = set(), []

    def visit(m):
        assert m not in path, f"import circle: {' -> '.join(path[path.index(m):] + [m])}"
        if m in done:
            return
        path.append(m)
        for n in graph.get(m, ()):
            visit(n)
        path.pop()
        done.add(m)
    for m in graph:
        visit(m)
    # nothing beneath the scripts imports a script but the model (which the checkpoint builds)
    for m, imported in graph.items():
        if m.startswith('nanogpt.'):
            assert imported <= {n for n in graph if n.startswith('nanogpt.')} | {'model'}, m


def test_model_imports_nothing_of_the_project():
    # at import time: from_pretrained reads its files through nanogpt.weights only when called
    code = ("import model, sys; print(sorted(m for m in sys.modules if m.split('.')[0] in "
            f"{sorted({module_name(p).split('.')[0] for p in SCRIPTS + PACKAGE})!r}))")
    out = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['model']"


def test_the_prepare_scripts_need_no_torch():
    code = ("import runpy, sys, glob\n"
            "for path in sorted(glob.glob('data/*/prepare.py')):\n"
            "    runpy.run_path(path, run_name='not_main')\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    out = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == '[]'
