"""The backend registry: resolution, errors, the current backend, caching, entry points."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import threading

import pytest

import rtrrl
from rtrrl import _registry, _selection
from rtrrl.backends.base import REQUIRED_METHODS, Backend, BackendBase

# A complete backend that does no math: the registry only needs the protocol's shape.
FAKE_BACKEND_SOURCE = """
from rtrrl.backends.base import BackendBase

INSTANCES = []


class FakeBackend(BackendBase):
    name = "fake"
    supported_dtypes = ("float64",)

    def __init__(self):
        INSTANCES.append(self)

    def version(self): return "0"
    def device(self): return "cpu"
    def to_numpy(self, tree): return tree
    def from_numpy(self, tree): return tree
    def init(self, config, batch_size, seed, dtype="float32"): return {}
    def step(self, config, agent, obs, reward, done, noise): return agent, None, {}
    def rng(self, seed): return seed
    def draw_noise(self, config, batch_size, rng, dtype): return None, rng
    def rng_state(self, rng): return {"seed": rng}
    def rng_from_state(self, state): return state["seed"]
"""


class PlainBackend:
    """Satisfies the protocol without deriving from BackendBase."""

    name = "plain"
    supported_dtypes = ("float32",)

    def version(self) -> str:
        return "1"

    def device(self) -> str:
        return "cpu"

    def to_numpy(self, tree):
        return tree

    def from_numpy(self, tree):
        return tree

    def init(self, config, batch_size, seed, dtype="float32"):
        return {}

    def step(self, config, agent, obs, reward, done, noise):
        return agent, None, {}

    def rng(self, seed):
        return seed

    def draw_noise(self, config, batch_size, rng, dtype):
        return None, rng

    def rng_state(self, rng):
        return {"seed": rng}

    def rng_from_state(self, state):
        return state["seed"]

    def step_functions(self):
        return {}


class OtherBackend(PlainBackend, BackendBase):
    name = "other"


def fake_entry_points(monkeypatch: pytest.MonkeyPatch, **targets: str) -> list[str]:
    """Make importlib.metadata report ``targets`` (name -> "mod:Attr") in our group."""
    groups_asked: list[str] = []
    eps = importlib.metadata.EntryPoints(
        importlib.metadata.EntryPoint(name=n, value=v, group=_registry.ENTRY_POINT_GROUP)
        for n, v in targets.items()
    )

    def entry_points(*, group: str) -> importlib.metadata.EntryPoints:
        groups_asked.append(group)
        return eps if group == _registry.ENTRY_POINT_GROUP else importlib.metadata.EntryPoints()

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    return groups_asked


# --- import cost ----------------------------------------------------------------------------


def test_import_rtrrl_imports_no_backend_or_numpy() -> None:
    heavy = ("numpy", "rtrrl_spec", "rtrrl.backends.numpy", "jax", "torch", "keras")
    code = f"import sys, rtrrl; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_version_matches_distribution_metadata() -> None:
    assert rtrrl.__version__ == importlib.metadata.version("rtrrl")


# --- default and use() ----------------------------------------------------------------------


def test_default_backend_is_numpy() -> None:
    assert rtrrl.current().name == "numpy"
    assert rtrrl.get_backend() is rtrrl.current()


def test_default_comes_from_env_var(monkeypatch: pytest.MonkeyPatch, make_module) -> None:
    mod = make_module(FAKE_BACKEND_SOURCE)
    monkeypatch.setenv("RTRRL_BACKEND", f"{mod}:FakeBackend")
    assert rtrrl.current().name == "fake"
    assert rtrrl.use().name == "fake"  # use(None) resolves the same default


def test_unknown_env_var_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTRRL_BACKEND", "no-such-backend")
    with pytest.raises(rtrrl.BackendNotFoundError, match="RTRRL_BACKEND='no-such-backend'"):
        rtrrl.current()


def test_use_returns_backend_and_makes_it_current() -> None:
    other = OtherBackend()
    assert rtrrl.use(other) is other
    assert rtrrl.current() is other
    numpy_backend = rtrrl.use("numpy")
    assert isinstance(numpy_backend, Backend)
    assert rtrrl.current() is numpy_backend is not other


def test_use_normalizes_builtin_spelling() -> None:
    assert rtrrl.use(" NumPy ") is rtrrl.use("numpy")


def test_get_backend_with_name_does_not_switch() -> None:
    other = OtherBackend()
    rtrrl.use(other)
    assert rtrrl.get_backend("numpy").name == "numpy"
    assert rtrrl.current() is other


def test_use_rejects_non_backend_objects() -> None:
    with pytest.raises(rtrrl.InvalidBackendError, match="missing name, supported_dtypes, version"):
        rtrrl.use(object())  # type: ignore[arg-type]


# --- the context manager --------------------------------------------------------------------


def test_context_manager_restores_previous() -> None:
    before = rtrrl.current()
    other = OtherBackend()
    with rtrrl.use(other) as be:
        assert be is other
        assert rtrrl.current() is other
    assert rtrrl.current() is before


def test_context_managers_nest_and_restore_on_error() -> None:
    a, b = OtherBackend(), OtherBackend()
    rtrrl.use("numpy")
    with pytest.raises(RuntimeError, match="boom"), rtrrl.use(a):
        with rtrrl.use(b):
            assert rtrrl.current() is b
        assert rtrrl.current() is a
        raise RuntimeError("boom")
    assert rtrrl.current().name == "numpy"


def test_with_on_backend_obtained_earlier() -> None:
    other = rtrrl.use(OtherBackend())
    rtrrl.use("numpy")
    with other as be:
        assert be is other
        assert rtrrl.current() is other
    assert rtrrl.current().name == "numpy"


def test_protocol_only_backend_gets_context_support() -> None:
    plain = PlainBackend()
    handle = rtrrl.use(plain)
    assert handle == plain
    assert handle.name == "plain"  # attributes reach the backend
    assert rtrrl.current() is plain
    rtrrl.use("numpy")
    with rtrrl.use(plain) as be:
        assert be is plain
        assert rtrrl.current() is plain
    assert rtrrl.current().name == "numpy"


def test_unbalanced_exit_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="exited more often"):
        _selection.exit_()


# --- isolation between threads --------------------------------------------------------------


def test_current_backend_is_per_thread() -> None:
    other = OtherBackend()
    rtrrl.use(other)
    seen: dict[str, object] = {}

    def worker() -> None:
        seen["start"] = rtrrl.current()  # a new thread starts from the default
        seen["own"] = rtrrl.use(PlainBackend())
        seen["after"] = rtrrl.current()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen["start"].name == "numpy"
    assert seen["after"] == seen["own"]
    assert rtrrl.current() is other  # the worker's use() did not leak back


# --- caching --------------------------------------------------------------------------------


def test_backends_are_instantiated_once(make_module) -> None:
    mod = make_module(FAKE_BACKEND_SOURCE)
    first = rtrrl.use(f"{mod}:FakeBackend")
    second = rtrrl.get_backend(f"{mod}:FakeBackend")
    assert first is second
    assert len(sys.modules[mod].INSTANCES) == 1


def test_builtin_and_import_string_share_one_instance() -> None:
    by_name = rtrrl.use("numpy")
    by_target = rtrrl.use("rtrrl.backends.numpy:NumpyBackend")
    assert by_name is by_target


def test_switching_does_not_touch_sys_modules() -> None:
    rtrrl.use("numpy")
    rtrrl.use(OtherBackend())
    before = dict(sys.modules)
    rtrrl.use("numpy")
    rtrrl.use(OtherBackend())
    assert dict(sys.modules) == before


# --- entry points ---------------------------------------------------------------------------


def only_numpy_builtin(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide the framework backends, so available_backends() lists only what a test controls."""
    monkeypatch.setattr(
        _registry, "BUILTIN_BACKENDS", {"numpy": _registry.BUILTIN_BACKENDS["numpy"]}
    )


def test_entry_point_backend_is_found(monkeypatch: pytest.MonkeyPatch, make_module) -> None:
    only_numpy_builtin(monkeypatch)
    mod = make_module(FAKE_BACKEND_SOURCE)
    asked = fake_entry_points(monkeypatch, epfake=f"{mod}:FakeBackend")
    backend = rtrrl.use("epfake")
    assert backend.name == "fake"
    assert asked == [_registry.ENTRY_POINT_GROUP]
    assert rtrrl.available_backends() == {"numpy": True, "epfake": True}


def test_builtin_name_wins_over_entry_point(monkeypatch: pytest.MonkeyPatch, make_module) -> None:
    mod = make_module(FAKE_BACKEND_SOURCE)
    fake_entry_points(monkeypatch, numpy=f"{mod}:FakeBackend")
    assert rtrrl.use("numpy").name == "numpy"


def test_entry_point_with_missing_dependency(monkeypatch: pytest.MonkeyPatch, make_module) -> None:
    mod = make_module("import rtrrl_no_such_framework_xyz\n")
    fake_entry_points(monkeypatch, broken=f"{mod}:Backend")
    with pytest.raises(rtrrl.BackendNotInstalledError) as info:
        rtrrl.use("broken")
    assert info.value.name == "rtrrl_no_such_framework_xyz"
    assert "provides the module 'rtrrl_no_such_framework_xyz'" in str(info.value)
    assert rtrrl.available_backends()["broken"] is False


# --- errors ---------------------------------------------------------------------------------


def test_unknown_name_lists_known_and_how_to_register(
    monkeypatch: pytest.MonkeyPatch, make_module
) -> None:
    mod = make_module(FAKE_BACKEND_SOURCE)
    fake_entry_points(monkeypatch, epfake=f"{mod}:FakeBackend")
    with pytest.raises(rtrrl.BackendNotFoundError) as info:
        rtrrl.use("nope")
    message = str(info.value)
    assert isinstance(info.value, LookupError)
    assert "'nope'" in message
    assert "numpy (built-in)" in message
    assert "epfake (entry point)" in message
    assert '[project.entry-points."rtrrl.backends"]' in message
    assert "package.module:YourBackend" in message


def test_missing_framework_gives_install_hint(monkeypatch: pytest.MonkeyPatch, make_module) -> None:
    only_numpy_builtin(monkeypatch)
    mod = make_module("import rtrrl_no_such_framework_xyz\n\nclass Backend: ...\n")
    _registry.BUILTIN_BACKENDS["fakefw"] = (f"{mod}:Backend", "fakefw")
    with pytest.raises(rtrrl.BackendNotInstalledError) as info:
        rtrrl.use("fakefw")
    message = str(info.value)
    assert isinstance(info.value, ImportError)
    assert info.value.name == "rtrrl_no_such_framework_xyz"
    assert "'rtrrl_no_such_framework_xyz'" in message
    assert 'pip install "rtrrl[fakefw]"' in message
    assert rtrrl.available_backends() == {"numpy": True, "fakefw": False}
    assert rtrrl.current().name == "numpy"  # a failed use() leaves the current one alone


def test_import_string_module_missing() -> None:
    with pytest.raises(rtrrl.BackendNotFoundError, match="cannot import module 'no_such_pkg.mod'"):
        rtrrl.use("no_such_pkg.mod:Backend")


def test_import_string_attribute_missing(make_module) -> None:
    mod = make_module(FAKE_BACKEND_SOURCE)
    with pytest.raises(rtrrl.BackendNotFoundError, match="has no attribute 'Nope'"):
        rtrrl.use(f"{mod}:Nope")


def test_import_string_object_lacking_protocol(make_module) -> None:
    mod = make_module("class Half:\n    name = 'half'\n    def version(self): return '0'\n")
    with pytest.raises(rtrrl.InvalidBackendError) as info:
        rtrrl.use(f"{mod}:Half")
    message = str(info.value)
    assert isinstance(info.value, TypeError)
    assert "supported_dtypes" in message
    for method in set(REQUIRED_METHODS) - {"version"}:
        assert method in message
    assert "missing version" not in message


def test_import_string_constructor_needing_arguments(make_module) -> None:
    mod = make_module(
        FAKE_BACKEND_SOURCE + "\nclass Needy(FakeBackend):\n    def __init__(self, x): ...\n"
    )
    with pytest.raises(rtrrl.InvalidBackendError, match="with no arguments"):
        rtrrl.use(f"{mod}:Needy")


def test_import_string_module_level_instance(make_module) -> None:
    mod = make_module(FAKE_BACKEND_SOURCE + "\nBACKEND = FakeBackend()\n")
    assert rtrrl.use(f"{mod}:BACKEND") is sys.modules[mod].BACKEND


@pytest.mark.parametrize("spec", ["nomodule:", ":Class", "a.b:"])
def test_malformed_import_string(spec: str) -> None:
    with pytest.raises(rtrrl.BackendNotFoundError, match="package.module:Class"):
        rtrrl.use(spec)
