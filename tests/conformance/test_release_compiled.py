"""The conformance harness drops JAX's compiled executables before the process runs out of
memory mappings (a ci-profile run of a JAX backend compiles thousands of them)."""

from __future__ import annotations

import sys

import pytest

from rtrrl.conformance import harness

jax = pytest.importorskip("jax")
jnp = jax.numpy

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="counts mappings in /proc/self/maps"
)


def _compile_shapes(first: int, count: int) -> None:
    f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum())
    for n in range(first, first + count):
        f(jnp.ones((n, 3))).block_until_ready()


def test_release_clears_caches_past_the_budget(monkeypatch):
    _compile_shapes(1, 150)
    before = harness._memory_mappings()
    monkeypatch.setattr(harness, "MAPPINGS_BUDGET", before - 1)
    harness.release_compiled_code()
    after = harness._memory_mappings()
    # Each of the 150 executables holds a few mappings; clearing returns at least one each.
    assert after < before - 150, (before, after)


def test_release_keeps_caches_under_the_budget(monkeypatch):
    _compile_shapes(100, 60)
    before = harness._memory_mappings()
    monkeypatch.setattr(harness, "MAPPINGS_BUDGET", before + 10_000)
    harness.release_compiled_code()
    assert harness._memory_mappings() >= before - 20
