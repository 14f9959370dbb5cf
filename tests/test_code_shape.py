"""The shape of the code: no import cycle in the package, no function longer than the spec's step.

Both read the source with ``ast`` (nothing is imported), so they run without any framework.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Source folder -> import name, as pyproject.toml's package-dir maps them.
PACKAGES = {
    "rtrrl_spec": "rtrrl_spec",
    "rtrrl": "rtrrl",
    "backends": "rtrrl.backends",
    "envs": "rtrrl.envs",
    "conformance": "rtrrl.conformance",
}


def _modules() -> dict[str, Path]:
    found = {}
    for folder, name in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([name, *parts])] = path
    return found


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Modules of the package that ``module`` imports, at module level or inside functions."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` imports pkg.sub when that is a module, else pkg itself.
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                out.add(name)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    graph = {}
    for module, path in modules.items():
        # A package importing its own submodules (its __init__), or a submodule importing its
        # package's __init__ for a name, is how packages are built, not a cycle between modules.
        graph[module] = {
            dep
            for dep in _imports(module, path, known)
            if not dep.startswith(module + ".") and not module.startswith(dep + ".")
        }
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycle_in_the_package() -> None:
    graph = _graph()
    assert "rtrrl._registry" in graph and "rtrrl.backends.base" in graph  # the walk saw them
    assert _cycles(graph) == []


def _function_lengths(folder: str) -> list[tuple[int, str]]:
    rows = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                rows.append((length, f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"))
    return rows


def _spec_step_length() -> int:
    lengths = {where.split()[-1]: n for n, where in _function_lengths("rtrrl_spec")}
    return lengths["step_unchecked"]


@pytest.mark.parametrize("folder", ["backends", "rtrrl"])
def test_no_function_longer_than_the_spec_step(folder: str) -> None:
    limit = _spec_step_length()
    too_long = [f"{where}: {n} lines" for n, where in _function_lengths(folder) if n > limit]
    assert not too_long, f"longer than rtrrl_spec's step ({limit} lines): {too_long}"
