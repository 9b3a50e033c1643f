"""The package's shape, as docs/architecture.md describes it: no import circles, modules and
functions of a readable size, and TensorFlow/Keras imported at module level in render/
alone. (The layers themselves are import-linter's contract in pyproject.toml, checked by
`lint-imports` in .ci/run; the first test runs the same check.)"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "atlas"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# module -> why it may be longer than MAX_MODULE_LINES
LONG_MODULES: dict[str, str] = {}
# "module:function" -> why it may be longer than MAX_FUNCTION_LINES
LONG_FUNCTIONS: dict[str, str] = {}
FRAMEWORKS = ("tensorflow", "keras", "jax", "torch")


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    modules = sorted(graph.modules)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in modules:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    imported = graph.find_modules_directly_imported_by(child)
                    work.append((child, iter(sorted(imported))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_module_imports_itself_back_through_others() -> None:
    graph = grimp.build_graph("atlas")
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    graph = grimp.ImportGraph()
    for name in ("a", "a.b", "a.c", "a.d"):
        graph.add_module(name)
    graph.add_import(importer="a.b", imported="a.c")
    graph.add_import(importer="a.c", imported="a.b")
    graph.add_import(importer="a.c", imported="a.d")
    assert _cycles(graph) == [["a.b", "a.c"]]


@pytest.mark.skipif(shutil.which("lint-imports") is None, reason="import-linter not installed")
def test_the_layers_contract_holds() -> None:
    done = subprocess.run(["lint-imports"], cwd=PACKAGE.parent, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:]


def test_modules_stay_under_the_size_guide() -> None:
    long = {
        _name(path): lines
        for path in _modules()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert {name: n for name, n in long.items() if name not in LONG_MODULES} == {}
    assert set(LONG_MODULES) <= set(long), "a listed exception is short now: unlist it"


def _long_functions() -> dict[str, int]:
    found = {}
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    found[f"{_name(path)}:{node.name}"] = lines
    return found


def test_functions_fit_on_a_screen() -> None:
    long = _long_functions()
    assert {name: n for name, n in long.items() if name not in LONG_FUNCTIONS} == {}
    assert set(LONG_FUNCTIONS) <= set(long), "a listed exception is short now: unlist it"


def _module_level_imports(tree: ast.Module) -> list[str]:
    """Modules imported when the module is imported: its top level, outside functions
    (an ``if``/``try``/``with`` at top level counts)."""
    names = []
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        else:
            pending += [
                child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt)
            ]
    return names


def test_only_render_imports_a_framework_at_module_level() -> None:
    offenders = {}
    for path in _modules():
        name = _name(path)
        if name == "atlas.render" or name.startswith("atlas.render."):
            continue
        imported = _module_level_imports(ast.parse(path.read_text(encoding="utf-8")))
        bad = [m for m in imported if m.split(".")[0] in FRAMEWORKS or m.startswith("atlas.render")]
        if bad:
            offenders[name] = bad
    assert offenders == {}


def test_planning_and_the_site_import_without_tensorflow() -> None:
    code = (
        "import sys\n"
        "import atlas.cli, atlas.prepare, atlas.plan.report, atlas.site.pages, atlas.site.publish\n"
        "import atlas.analysis.metrics, atlas.analysis.scores, atlas.plan.estimate\n"
        "bad = [m for m in ('tensorflow', 'keras', 'jax') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
