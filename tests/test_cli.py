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
