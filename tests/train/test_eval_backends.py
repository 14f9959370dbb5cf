"""A checkpoint trained on the fused JAX path evaluates to the same scores on every backend.

Each evaluation runs ``python -m rtrrl.cli eval RUN --backend B`` in a fresh process with
``KERAS_BACKEND`` and ``KERAS_HOME`` unset, as from a plain shell: the CLI sets them for the
keras backends.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("jax")
pytest.importorskip("gymnax")
pytest.importorskip("matplotlib")

from rtrrl import training  # noqa: E402

pytestmark = pytest.mark.jax

BACKENDS = ("numpy", "torch", "keras-torch", "keras-jax")


def _eval(run: Path, backend: str, home: Path) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "KERAS_HOME")}
    env["HOME"] = str(home)  # anything written to ~/.keras would show up here
    proc = subprocess.run(
        [sys.executable, "-m", "rtrrl.cli", "eval", str(run), "--backend", backend]
        + ["--episodes", "6", "--seed", "3", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_jax_checkpoint_scores_the_same_on_every_backend(tmp_path: Path) -> None:
    # The keras backends count as installed when keras and their framework import (the
    # registry would say no here: this process has no KERAS_BACKEND, which is the point).
    missing = [m for m in ("torch", "keras") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"not installed: {missing}")
    run = tmp_path / "run"
    summary = training.train(
        "MemoryChain-4",
        "jax",
        seeds=2,
        out=run,
        steps=600,
        epoch_steps=200,
        eval_every=2,
        eval_episodes=3,
    )
    assert summary["engine"] == "fused"
    home = tmp_path / "home"
    home.mkdir()
    scores = {b: _eval(run, b, home) for b in BACKENDS}
    assert set(scores["numpy"]) == {"0", "1"}
    for backend in BACKENDS[1:]:
        assert scores[backend] == pytest.approx(scores["numpy"], abs=1e-6), backend
    assert not (home / ".keras").exists()


def test_keras_backend_conflict_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from rtrrl.cli import main

    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert main(["eval", str(tmp_path), "--backend", "keras-torch"]) == 2
    assert "KERAS_BACKEND=torch" in capsys.readouterr().err
