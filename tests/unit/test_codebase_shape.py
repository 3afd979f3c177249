"""The shape the codebase keeps: no import cycle between modules, no module over 500 lines, no function over
60 (migrations aside), `domain/` free of frameworks, and every backend the registry names importable. The
tests keep to the 500 lines per module too (their functions may be longer)."""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest

import mlgate
from mlgate.adapters import registry

SOURCE = Path(mlgate.__file__).resolve().parent
TESTS = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60
DOMAIN_MAY_IMPORT = {"numpy", "scipy", "cryptography", "mlgate"}  # maths and signatures: no I/O


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(SOURCE.rglob("*.py")):
        relative = path.relative_to(SOURCE.parent)
        if "migrations" in relative.parts:
            continue
        name = ".".join(relative.with_suffix("").parts).removesuffix(".__init__")
        found[name] = path
    return found


MODULES = _modules()


def _runtime_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, except those under `if TYPE_CHECKING:`."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _imported(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join([*package, base] if base else package)
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        targets = {t for node in _runtime_imports(tree) for t in _imported(module, path, node)}
        graph[module] = {t for t in targets if t in MODULES and t != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
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
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_between_modules() -> None:
    assert _cycles(_graph()) == []


def test_no_module_over_500_lines_and_no_function_over_60() -> None:
    long_modules, long_functions = [], []
    for module, path in MODULES.items():
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            long_modules.append(f"{module}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{module}.{node.name}: {length} lines")
    assert long_modules == [] and long_functions == []


def test_no_test_module_over_500_lines() -> None:
    long_modules = []
    for path in sorted(TESTS.rglob("*.py")):
        lines = len(path.read_text().splitlines())
        if lines > MAX_MODULE_LINES:
            long_modules.append(f"{path.relative_to(TESTS.parent)}: {lines} lines")
    assert long_modules == []


def test_domain_imports_no_framework() -> None:
    outside = []
    for module, path in MODULES.items():
        if module.startswith("mlgate.domain"):
            for node in _runtime_imports(ast.parse(path.read_text())):
                for target in _imported(module, path, node):
                    top = target.split(".")[0]
                    if top and top not in DOMAIN_MAY_IMPORT and not _standard_library(top):
                        outside.append(f"{module} imports {target}")
    assert outside == []


def _standard_library(name: str) -> bool:
    import sys

    return name in sys.stdlib_module_names or name == "__future__"


@pytest.mark.parametrize("backend", registry.BACKENDS, ids=lambda b: f"{b.seam}-{b.name}")
def test_every_registered_backend_imports_and_builds_from_settings(backend: registry.Backend) -> None:
    module, _, attribute = backend.target.partition(":")
    implementation = getattr(importlib.import_module(module), attribute)
    assert callable(implementation.from_settings)
