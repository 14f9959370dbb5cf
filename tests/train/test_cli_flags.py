"""``rtrrl train``'s flags, generated from ``RunSettings`` and ``rtrrl_spec.Config``: every
field listed with its type and default, a flag not given is the default, a flag given is
checked (no silent fallback), the old spellings still work."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

import rtrrl_spec
from rtrrl import training
from rtrrl._cli_train import QUICKSTART
from rtrrl.cli import main
from rtrrl.settings import TASK_FIELDS, RunSettings

pytestmark = pytest.mark.numpy


def _help(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    """``rtrrl train --help``, as ``{flag: its help text}``."""
    monkeypatch.setenv("COLUMNS", "2000")
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    entries: dict[str, str] = {}
    flag = None
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("  --"):
            flag = line.split()[0].rstrip(",")
            entries[flag] = line
        elif flag is not None and line.startswith(" " * 4):  # help under a long flag
            entries[flag] += " " + line.strip()
        else:
            flag = None
    return entries


def _expected(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:_}"
    return str(value)


def test_help_lists_every_config_field_with_type_and_default(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    entries = _help(monkeypatch, capsys)
    fields = [f for f in dataclasses.fields(rtrrl_spec.Config) if f.name not in TASK_FIELDS]
    assert len(fields) >= 25
    for f in fields:
        flag = "--" + f.name.replace("_", "-")
        assert flag in entries, flag
        text = entries[flag]
        assert f"default: {_expected(f.default)})" in text, text
        kind = type(f.default).__name__ if f.default is not None else "none"
        assert f"({kind}" in text or "or none" in text or "({" in text, text
    for f in (f for f in dataclasses.fields(rtrrl_spec.Config) if f.name in TASK_FIELDS):
        assert "--" + f.name.replace("_", "-") not in entries


def test_help_lists_every_run_setting_with_its_default(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    entries = _help(monkeypatch, capsys)
    for f in dataclasses.fields(RunSettings):
        text = entries[f.metadata.get("cli", "--" + f.name.replace("_", "-"))]
        shown = f.metadata.get("shown", _expected(f.default))
        assert f"default: {shown}" in text, text
    assert "quick start: 30_000" in entries["--steps"]
    assert "--no-fused" in entries["--fused"] and "--host" in entries


def _captured(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def fake_train(**kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs)
        return {
            "task": kwargs["settings"].task,
            "backend": kwargs["settings"].backend,
            "engine": "host",
            "seeds": [],
            "median": None,
            "std": None,
            "wall_time": 0.0,
        }

    monkeypatch.setattr(training, "train", fake_train)
    return calls


def test_flags_reach_the_settings_and_the_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _captured(monkeypatch)
    argv = ["train", "--task", "CartPole-vel", "--backend", "numpy", "--out", str(tmp_path)]
    argv += ["--patience", "3", "--seeds", "0,5", "--host", "--threads", "2", "--steps", "5_000"]
    argv += ["--no-meta-rl", "--clip-norm", "none", "--lr-td", "3e-3", "--freeze-rnn"]
    assert main([*argv, "--set", "n_hidden=8", "--no-progress"]) == 0
    (call,) = calls
    expected = RunSettings(
        task="CartPole-vel",
        backend="numpy",
        patience=3,
        seeds=(0, 5),
        fused=False,
        threads=2,
        steps=5000,
    )
    assert call["settings"] == expected  # every flag not given kept its default
    overrides = {k: v for k, v in call.items() if k not in ("settings", "out", "progress")}
    assert overrides == {
        "meta_rl": False,
        "clip_norm": None,
        "lr_td": 0.003,
        "freeze_rnn": True,
        "n_hidden": 8,
    }


def test_the_quick_start_fills_what_is_not_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = _captured(monkeypatch)
    assert main(["train", "--out", str(tmp_path), "--patience", "7", "--no-progress"]) == 0
    settings = calls[0]["settings"]
    assert settings == RunSettings(**{**QUICKSTART, "patience": 7})
    assert "quick start" in capsys.readouterr().out
    assert main(["train", "--out", str(tmp_path), "--steps", "900", "--no-progress"]) == 0
    assert calls[1]["settings"].steps == 900
    assert calls[1]["settings"].eval_every == QUICKSTART["eval_every"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--patience", "0"], "patience must be a positive int, got 0"),
        (["--steps", "0"], "steps must be a positive int, got 0"),
        (["--seeds", "0"], "seeds must be at least 1"),
        (["--epoch-steps", "0"], "epoch_steps must be a positive int, got 0"),
        (["--eval-every", "0"], "eval_every must be a positive int, got 0"),
        (["--eval-episodes", "0"], "eval_episodes must be a positive int, got 0"),
        (["--eval-steps", "0"], "eval_steps must be None or a positive int, got 0"),
        (["--threads", "0"], "threads must be None or a positive int, got 0"),
        (["--num-envs", "0"], "num_envs must be a positive int, got 0"),
        (["--n-hidden", "0"], "n_hidden must be a positive int, got 0"),
        (["--gamma", "1.5"], r"gamma must lie in \[0, 1\]"),
        (["--jacobian", "bptt"], "unknown jacobian 'bptt'; choose one of rflo, rtrl"),
        (["--set", "steps=5"], "steps is a run setting, not an agent field: give --steps"),
        (["--lr-td", "1e-3", "--set", "lr_td=0.1"], "--lr-td contradicts --set lr_td=0.1"),
    ],
)
def test_values_given_are_checked_never_replaced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    run = tmp_path / "run"
    argv = ["train", "--task", "MemoryChain-4", "--backend", "numpy", "--out", str(run), *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("rtrrl train: error: ")
    assert err.count("\n") == 1 and re.search(message, err), err
    assert not run.exists()


def test_values_that_do_not_parse_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for flags in (["--patience", "many"], ["--lr-td", "fast"], ["--seeds", "a,b"]):
        with pytest.raises(SystemExit) as info:
            main(["train", *flags])
        assert info.value.code == 2
        assert f"argument {flags[0]}" in capsys.readouterr().err


def test_resume_refuses_every_setting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for flags, named in (
        (["--backend", "numpy"], "--backend"),
        (["--no-meta-rl"], "--meta-rl"),
        (["--threads", "1"], "--threads"),
        (["--out", str(tmp_path)], "--out"),
    ):
        assert main(["train", "--resume", str(tmp_path), *flags]) == 2
        assert f"drop {named}" in capsys.readouterr().err


def test_framework_threads_are_set_for_the_run_and_put_back() -> None:
    torch = pytest.importorskip("torch")
    from rtrrl.threads import framework_threads

    before = torch.get_num_threads()
    with framework_threads(None, 1):
        assert torch.get_num_threads() == 1
    with framework_threads(3, 1):
        assert torch.get_num_threads() == 3
    with framework_threads(None, None):
        assert torch.get_num_threads() == before
    assert torch.get_num_threads() == before


# --- zero is zero everywhere; names in any case; --import (issue 19) --------------------------


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished numpy run of one seed (a fraction of a second)."""
    pytest.importorskip("gymnax")
    run = tmp_path_factory.mktemp("small") / "run"
    training.train(
        "MemoryChain-4",
        "numpy",
        out=run,
        seeds=1,
        steps=40,
        epoch_steps=20,
        eval_every=1,
        eval_episodes=1,
        n_hidden=4,
    )
    return run


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--episodes", "0"], "eval_episodes must be a positive int, got 0"),
        (["--episodes", "-2"], "eval_episodes must be a positive int, got -2"),
    ],
)
def test_eval_episodes_zero_is_an_error_not_the_default(
    small_run: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    assert main(["eval", str(small_run), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rtrrl eval: error: ") and err.count("\n") == 1, err
    assert message in err


def test_backend_flag_in_any_case_is_the_registry_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _captured(monkeypatch)
    argv = ["train", "--task", "MemoryChain-4", "--out", str(tmp_path), "--no-progress"]
    assert main([*argv, "--backend", "NumPy"]) == 0
    assert calls[0]["settings"].backend == "numpy"


def test_keras_backend_in_any_case_sets_keras_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import sys

    from rtrrl import cli

    monkeypatch.setenv("KERAS_BACKEND", "unset below; put back afterwards")
    monkeypatch.delenv("KERAS_BACKEND")
    monkeypatch.setenv("KERAS_HOME", "/tmp/keras-home")
    monkeypatch.delitem(sys.modules, "keras", raising=False)  # as in a fresh `rtrrl` process
    assert cli._keras_environment("Keras-Torch") is None
    assert os.environ["KERAS_BACKEND"] == "torch"


def test_import_flag_imports_the_module_and_is_saved(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    make_module: Any,
) -> None:
    calls = _captured(monkeypatch)
    name = make_module("import os\nos.environ['RTRRL_TEST_IMPORTED'] = __name__\n")
    monkeypatch.delenv("RTRRL_TEST_IMPORTED", raising=False)
    argv = ["train", "--task", "MemoryChain-4", "--backend", "numpy", "--out", str(tmp_path)]
    assert main([*argv, "--import", name, "--no-progress"]) == 0
    import os

    assert os.environ["RTRRL_TEST_IMPORTED"] == name
    assert calls[0]["settings"].imports == (name,)


def test_import_of_a_missing_module_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    argv = ["train", "--task", "MemoryChain-4", "--backend", "numpy", "--out", str(run)]
    assert main([*argv, "--import", "rtrrl_no_such_module_xyz"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot import module 'rtrrl_no_such_module_xyz'" in err, err
    assert "run from the folder that holds rtrrl_no_such_module_xyz.py" in err
    assert not run.exists()
