"""Each in-tree backend is the spec translated function for function: its module defines every
name of ``rtrrl_spec.STEP_FUNCTIONS``, at module level, in the spec's order.

Read from the source with ``ast``, so it runs without any framework installed.
"""

from __future__ import annotations

import ast
import difflib
import textwrap
from pathlib import Path

import pytest

from rtrrl_spec import STEP_FUNCTIONS

BACKENDS = Path(__file__).resolve().parents[1] / "backends"
# The backends that translate the spec (numpy.py hands out the reference's own functions).
TRANSLATED = ("jax", "torch", "keras")


def spec_functions_in(source: str) -> list[str]:
    """Names of ``STEP_FUNCTIONS`` defined at module level in ``source``, in source order.

    A ``def`` counts, and so does a module-level assignment to the name (a compiled wrapper
    bound under the spec's name, e.g. ``step = jax.jit(_step, ...)``); only the first
    definition of a name counts.
    """
    found: list[str] = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names = [node.name]
        elif isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names = [node.target.id]
        else:
            continue
        found += [n for n in names if n in STEP_FUNCTIONS and n not in found]
    return found


def shape_problems(source: str, label: str) -> str | None:
    """None when ``source`` defines every spec function in order; else a diff that says how."""
    found = spec_functions_in(source)
    if found == list(STEP_FUNCTIONS):
        return None
    missing = [n for n in STEP_FUNCTIONS if n not in found]
    diff = "\n".join(
        difflib.unified_diff(
            list(STEP_FUNCTIONS),
            found,
            fromfile="rtrrl_spec.STEP_FUNCTIONS",
            tofile=f"{label} (module-level, in source order)",
            lineterm="",
        )
    )
    return f"{label}: missing {missing}; spec order vs the module's:\n{diff}"


def _source(backend: str) -> tuple[Path, str]:
    path = BACKENDS / f"{backend}.py"
    if not path.exists():  # a backend grown into a package defines its functions in __init__
        path = BACKENDS / backend / "__init__.py"
    return path, path.read_text()


@pytest.mark.parametrize("backend", TRANSLATED)
def test_backend_defines_the_spec_functions_in_order(backend: str) -> None:
    path, source = _source(backend)
    problems = shape_problems(source, str(path.relative_to(BACKENDS.parent)))
    assert problems is None, problems


def _module(names: list[str]) -> str:
    return "\n".join(f"def {n}(*args):\n    return args\n" for n in names)


def test_a_module_in_spec_order_passes() -> None:
    source = "import numpy as np\n\n" + _module(list(STEP_FUNCTIONS)) + "\nclass Backend: ...\n"
    assert shape_problems(source, "ok.py") is None


def test_compiled_wrappers_under_the_spec_names_count() -> None:
    names = list(STEP_FUNCTIONS)
    source = _module(names[:-1]) + "\nstep: object = compile(_step)\n"
    assert spec_functions_in(source) == names


def test_a_missing_function_is_named() -> None:
    names = [n for n in STEP_FUNCTIONS if n != "rtrl_update"]
    problems = shape_problems(_module(names), "gap.py")
    assert problems is not None
    assert "missing ['rtrl_update']" in problems
    assert "-rtrl_update" in problems


def test_an_out_of_order_function_shows_in_the_diff() -> None:
    names = list(STEP_FUNCTIONS)
    names.remove("td_error")
    names.insert(0, "td_error")
    problems = shape_problems(_module(names), "swapped.py")
    assert problems is not None
    assert "missing []" in problems
    assert "+td_error" in problems and "-td_error" in problems


def test_nested_and_private_definitions_do_not_count() -> None:
    source = textwrap.dedent(
        """
        class Backend:
            def step(self): ...

        def _rflo_update(): ...

        def outer():
            def ctrnn_step(): ...
        """
    )
    assert spec_functions_in(source) == []
