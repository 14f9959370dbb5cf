"""Custom environments in training (issue 19): a factory or an environment object as the
task, a module of the user's imported with ``--import``, and environments that cannot be
snapshotted (a lambda in a wrapper), which still train to the end and resume."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

gymnasium = pytest.importorskip("gymnasium")

from rtrrl import training  # noqa: E402
from rtrrl.cli import main  # noqa: E402

pytestmark = pytest.mark.numpy

SMALL: dict[str, Any] = {
    "seeds": 2,
    "steps": 60,
    "epoch_steps": 20,
    "eval_every": 1,
    "eval_episodes": 2,
    "n_hidden": 4,
}


def _identity(obs: Any) -> Any:
    return obs


def make_picklable() -> Any:
    """CartPole behind an observation wrapper that pickles (a module-level function)."""
    env = gymnasium.make("CartPole-v1")
    return gymnasium.wrappers.TransformObservation(env, _identity, env.observation_space)


def make_unpicklable() -> Any:
    """The same environment, but its wrapper holds a lambda: it cannot be snapshotted."""
    env = gymnasium.make("CartPole-v1")
    return gymnasium.wrappers.TransformObservation(env, lambda o: o, env.observation_space)


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k != "wall_time"} for row in csv.DictReader(f)]


def test_an_environment_that_cannot_be_snapshotted_trains_to_the_end(tmp_path: Path) -> None:
    with pytest.warns(RuntimeWarning, match="cannot be snapshotted") as record:
        summary = training.train(make_unpicklable, "numpy", out=tmp_path / "a", **SMALL)
    assert sum("cannot be snapshotted" in str(w.message) for w in record) == 1  # said once
    assert [s["stopped"] for s in summary["seeds"]] == ["budget", "budget"]
    assert (tmp_path / "a" / "summary.json").exists()
    # Each seed kept its own environment between its epochs: the run is the one a picklable
    # (snapshotted and restored) environment gives, row for row.
    training.train(make_picklable, "numpy", out=tmp_path / "b", **SMALL)
    assert _rows(tmp_path / "a") == _rows(tmp_path / "b")
    assert len(_rows(tmp_path / "a")) == 6


def test_resume_restarts_such_an_environment_with_a_fresh_reset(
    tmp_path: Path, interrupt_after: Any
) -> None:
    run = tmp_path / "run"
    interrupt_after(1)
    with pytest.warns(RuntimeWarning, match="snapshotted"), pytest.raises(KeyboardInterrupt):
        training.train(lambda: make_unpicklable(), "numpy", out=run, **SMALL)
    config = json.loads((run / "config.json").read_text())
    assert config["protocol"]["task"].startswith("python:")
    with pytest.warns(RuntimeWarning) as record:
        summary = training.resume(run)
    messages = [str(w.message) for w in record]
    assert sum("restarts with a fresh reset" in m for m in messages) == 1, messages
    assert sum("cannot be snapshotted" in m for m in messages) == 1, messages  # this session
    assert [s["stopped"] for s in summary["seeds"]] == ["budget", "budget"]
    assert [s["epochs"] for s in summary["seeds"]] == [3, 3]


def test_a_factory_importable_by_name_is_saved_by_that_name(tmp_path: Path) -> None:
    summary = training.train(make_picklable, "numpy", out=tmp_path / "r", **{**SMALL, "seeds": 1})
    task = json.loads((tmp_path / "r" / "config.json").read_text())["protocol"]["task"]
    assert task == f"{__name__}:make_picklable" == summary["task"]


def test_an_environment_object_is_copied_never_stepped(tmp_path: Path) -> None:
    env = make_picklable()
    summary = training.train(env, "numpy", out=tmp_path / "r", **{**SMALL, "seeds": 1})
    assert summary["task"].startswith("python:CartPole-v1")
    assert env.unwrapped.state is None  # never reset, so never stepped


def _console(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The ``rtrrl`` console script (which does not put the working folder on sys.path)."""
    script = Path(sys.executable).parent / "rtrrl"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "rtrrl.cli"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_import_registers_the_task_for_train_and_eval_imports_it_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"rtrrl_user_envs_{os.getpid()}"
    env_id = f"RtrrlUserCartPole{os.getpid()}-v0"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            f"""
            import gymnasium
            gymnasium.register(
                id="{env_id}",
                entry_point="gymnasium.envs.classic_control:CartPoleEnv",
                max_episode_steps=50,
            )
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    run = tmp_path / "run"
    argv = ["train", "--import", name, "--task", f"gymnasium:{env_id}", "--backend", "numpy"]
    argv += ["--out", str(run), "--seeds", "1", "--steps", "40", "--epoch-steps", "20"]
    try:
        assert main([*argv, "--no-progress"]) == 0
    finally:
        sys.modules.pop(name, None)
    assert json.loads((run / "config.json").read_text())["protocol"]["imports"] == [name]
    # A new process: eval names the module the run needs but does not import it on the
    # checkpoint's word (checkpoints are shared files); --import says the user trusts it.
    refused = _console(["eval", str(run), "--episodes", "2"], tmp_path)
    assert refused.returncode == 2
    assert f"--import {name}" in refused.stderr and "Traceback" not in refused.stderr
    result = _console(["eval", str(run), "--episodes", "2", "--import", name], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "seed 0:" in result.stdout
