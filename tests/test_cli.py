"""The ``rtrrl`` command line."""

from __future__ import annotations

import pytest

from rtrrl import _registry
from rtrrl.cli import main


def test_backends_lists_installed_and_missing(
    capsys: pytest.CaptureFixture[str], make_module
) -> None:
    mod = make_module("import rtrrl_no_such_framework_xyz\n")
    _registry.BUILTIN_BACKENDS["fakefw"] = (f"{mod}:Backend", "fakefw")
    assert main(["backends"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["backend", "status", "source"]
    numpy_line = next(line for line in lines if line.startswith("numpy"))
    fake_line = next(line for line in lines if line.startswith("fakefw"))
    assert "installed" in numpy_line and "not installed" not in numpy_line
    assert "not installed" in fake_line
    assert 'pip install "rtrrl[fakefw]"' in fake_line


def test_backends_verbose_says_why(capsys: pytest.CaptureFixture[str], make_module) -> None:
    mod = make_module("import rtrrl_no_such_framework_xyz\n")
    _registry.BUILTIN_BACKENDS["fakefw"] = (f"{mod}:Backend", "fakefw")
    assert main(["backends", "-v"]) == 0
    assert "'rtrrl_no_such_framework_xyz'" in capsys.readouterr().out


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "usage: rtrrl" in capsys.readouterr().err


@pytest.mark.keras
@pytest.mark.slow
def test_backends_says_keras_needs_keras_backend_when_it_is_unset(tmp_path) -> None:
    """Keras and JAX installed, KERAS_BACKEND unset: not "not installed", but what to set."""
    import importlib.util
    import os
    import subprocess
    import sys

    if any(importlib.util.find_spec(m) is None for m in ("keras", "jax")):
        pytest.skip("needs keras and jax")
    if importlib.util.find_spec("tensorflow") is not None:
        pytest.skip("tensorflow is installed, so Keras's default backend loads")
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["KERAS_HOME"] = str(tmp_path)
    code = "from rtrrl.cli import main; main(['backends'])"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    line = next(line for line in out.stdout.splitlines() if line.startswith("keras-jax"))
    assert "not installed" not in line and "needs setting" in line, line
    assert "KERAS_BACKEND=jax" in line and "rtrrl train/eval --backend keras-jax" in line, line


def test_backend_names_are_spelled_once_by_the_registry() -> None:
    assert _registry.canonical_name("Jax") == "jax"
    assert _registry.canonical_name(" KERAS_torch ") == "keras-torch"
    assert _registry.canonical_name("Pkg.Mod:Backend") == "Pkg.Mod:Backend"


def test_a_backend_that_fails_to_start_is_one_line(
    capsys: pytest.CaptureFixture[str], make_module, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A framework that raises while it starts (not an ImportError): a BackendStartError
    naming the framework variables that are set, one line on the command line."""
    mod = make_module("raise ValueError('invalid truth value\\nfor a variable')\n")
    _registry.BUILTIN_BACKENDS["brokenfw"] = (f"{mod}:Backend", None)
    monkeypatch.setenv("JAX_ENABLE_X64", "maybe")
    with pytest.raises(_registry.BackendStartError, match="JAX_ENABLE_X64='maybe'"):
        _registry.get_backend("BrokenFW")
    assert main(["eval", "no-such-run", "--backend", "brokenfw"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid truth value for a variable" in err, err
