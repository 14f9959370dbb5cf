"""Shared fixtures: every test starts with a clean registry state and no RTRRL_BACKEND."""

from __future__ import annotations

import itertools
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rtrrl import _registry, _selection, threads

# Two JAX CPU devices, as on a 2-core machine, whatever machine runs the tests, so that they see
# a population's members shared out over devices (rtrrl.fused._over_devices).
threads.cpu_devices_before_jax_starts(2)

_counter = itertools.count()


@pytest.fixture(autouse=True)
def clean_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Isolate tests from each other's ``use()`` calls, cache entries and environment."""
    monkeypatch.delenv(_registry.ENV_VAR, raising=False)
    monkeypatch.setattr(_registry, "_cache", {})
    monkeypatch.setattr(_registry, "BUILTIN_BACKENDS", dict(_registry.BUILTIN_BACKENDS))
    token = _selection._state.set(_selection.Selection())
    yield
    _selection._state.reset(token)


@pytest.fixture
def make_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], str]]:
    """Write ``source`` as a uniquely named importable module; return the module's name."""
    monkeypatch.syspath_prepend(str(tmp_path))
    created: list[str] = []

    def make(source: str) -> str:
        name = f"rtrrl_testmod_{next(_counter)}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        created.append(name)
        return name

    yield make
    for name in created:
        sys.modules.pop(name, None)
