"""The fused JAX path: scan of environment and agent, populations, resume, divergence."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("gymnax")
pytest.importorskip("matplotlib")

from rtrrl import training  # noqa: E402

pytestmark = pytest.mark.jax

TINY = dict(steps=600, epoch_steps=200, eval_every=2, eval_episodes=3)


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv") as f:
        return [{k: v for k, v in r.items() if k != "wall_time"} for r in csv.DictReader(f)]


def test_fused_path_is_chosen_and_writes_a_run(tmp_path: Path) -> None:
    summary = training.train("MemoryChain-4", "jax", seeds=3, out=tmp_path / "r", **TINY)
    assert summary["engine"] == "fused"
    rows = _rows(tmp_path / "r")
    assert len(rows) == 3 * 3  # one row per seed per epoch
    # 200 steps of MemoryChain-4 (5-step episodes) finish 40 episodes per epoch.
    assert {r["episodes"] for r in rows} == {"40"}
    assert all(-1.0 <= float(r["mean_return"]) <= 1.0 for r in rows)
    # Seeds differ: independent agents, not one agent copied.
    agents = training.load_checkpoint(tmp_path / "r")["agents"]
    assert not np.array_equal(agents["W"][0], agents["W"][1])
    assert (tmp_path / "r" / "curve.png").stat().st_size > 1000


def test_fused_resume_is_exact(tmp_path: Path, interrupt_after) -> None:
    kwargs = dict(backend="jax", seeds=2, steps=800, epoch_steps=200, eval_every=1, eval_episodes=2)
    training.train("MemoryChain-4", out=tmp_path / "a", **kwargs)
    interrupt_after(2)
    with pytest.raises(KeyboardInterrupt):
        training.train("MemoryChain-4", out=tmp_path / "b", **kwargs)
    assert len(_rows(tmp_path / "b")) == 2 * 2
    training.resume(tmp_path / "b")
    assert _rows(tmp_path / "a") == _rows(tmp_path / "b")
    a = training.load_checkpoint(tmp_path / "a")
    b = training.load_checkpoint(tmp_path / "b")
    for k in a["agents"]:
        np.testing.assert_array_equal(a["agents"][k], b["agents"][k], err_msg=k)
    for x, y in zip(
        a["state"]["engine_state"]["carry"], b["state"]["engine_state"]["carry"], strict=True
    ):
        np.testing.assert_array_equal(x, y)


def test_fused_nan_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(training.DivergedError, match="non-finite"):
        training.train(
            "MemoryChain-4", "jax", seeds=2, out=tmp_path / "r", lr_td=1e38, lr_rnn=1e38, **TINY
        )
    agents = training.load_checkpoint(tmp_path / "r")["agents"]
    assert all(np.all(np.isfinite(v)) for v in agents.values())


def test_early_stop_by_patience(tmp_path: Path) -> None:
    # With lr 0 nothing improves after the first evaluation: patience 2 stops at epoch 3.
    summary = training.train(
        "MemoryChain-4",
        "jax",
        seeds=1,
        out=tmp_path / "r",
        steps=2000,
        epoch_steps=100,
        eval_every=1,
        eval_episodes=2,
        patience=2,
        lr_td=0.0,
        lr_rnn=0.0,
    )
    seed = summary["seeds"][0]
    assert seed["stopped"] == "patience"
    assert seed["epochs"] < 20


def test_checkpoint_evaluates_on_other_backends(tmp_path: Path) -> None:
    training.train("MemoryChain-4", "jax", seeds=2, out=tmp_path / "r", **TINY)
    on_jax = training.evaluate_checkpoint(tmp_path / "r", "jax", episodes=6, seed=3)
    on_numpy = training.evaluate_checkpoint(tmp_path / "r", "numpy", episodes=6, seed=3)
    assert set(on_jax) == {0, 1}
    assert on_jax == pytest.approx(on_numpy, abs=1e-6)
    pytest.importorskip("torch")
    on_torch = training.evaluate_checkpoint(tmp_path / "r", "torch", episodes=6, seed=3)
    assert on_torch == pytest.approx(on_numpy, abs=1e-6)


def test_host_loop_on_jax_can_be_forced(tmp_path: Path) -> None:
    summary = training.train(
        "MemoryChain-4",
        "jax",
        seeds=1,
        out=tmp_path / "r",
        fused=False,
        steps=200,
        epoch_steps=100,
        eval_every=1,
        eval_episodes=2,
    )
    assert summary["engine"] == "host"
    assert len(_rows(tmp_path / "r")) == 2


def test_popgym_port_trains_fused(tmp_path: Path) -> None:
    """A popgym task takes the fused path through its JAX port; episodes are popgym's 51 steps."""
    pytest.importorskip("popgym")
    summary = training.train("RepeatPrevious", "jax", seeds=2, out=tmp_path / "r", **TINY)
    assert summary["engine"] == "fused"
    rows = _rows(tmp_path / "r")
    # 200 steps of 51-step episodes end 3 or 4 episodes an epoch; returns lie in [-1, 1].
    assert {r["episodes"] for r in rows} <= {"3", "4"}
    assert all(-1.0 <= float(r["mean_return"]) <= 1.0 for r in rows)


def test_fused_stops_when_parameters_explode(tmp_path: Path) -> None:
    """Finite but exploded parameters (a learning rate of 1e30) stop the run, as on the host
    loop: the seed, the parameter, the epoch, what to change; the last good checkpoint. The
    clip keeps each update finite, so the parameters pass 1e8 before any inf or NaN."""
    message = (
        r"seeds 0, 1: parameter \w+ reached [0-9.e+]+ in magnitude \(beyond 1e\+08: it "
        r"exploded\).* during epoch 1; .*last good checkpoint .* lower the learning rates "
        r"\(lr_td, lr_rnn\), clip the updates \(clip_norm"
    )
    with pytest.raises(training.DivergedError, match=message):
        training.train(
            "MemoryChain-4",
            "jax",
            seeds=2,
            out=tmp_path / "r",
            lr_td=1e30,
            lr_rnn=1e30,
            clip_norm=1.0,
            **TINY,
        )
    saved = training.load_checkpoint(tmp_path / "r")
    assert [r["epoch"] for r in saved["state"]["records"]] == [0, 0]
    assert np.abs(saved["agents"]["W"]).max() < 10


# Train both dtypes through the command line in one child with JAX_ENABLE_X64=1 (read when
# JAX starts, so it cannot be switched in this process).
X64_CHILD = """
import sys
from rtrrl.cli import main

out = sys.argv[1]
for dtype in ("float32", "float64"):
    args = ["train", "--task", "MemoryChain-4", "--backend", "jax", "--dtype", dtype]
    args += ["--seeds", "2", "--steps", "200", "--epoch-steps", "100", "--eval-every", "1"]
    args += ["--eval-episodes", "2", "--n-hidden", "4", "--no-progress"]
    if main([*args, "--out", f"{out}/{dtype}"]) != 0:
        sys.exit(f"{dtype} failed")
"""


@pytest.mark.slow
def test_fused_trains_both_dtypes_with_jax_enable_x64(tmp_path: Path) -> None:
    env = {**os.environ, "JAX_ENABLE_X64": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", X64_CHILD, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for dtype in ("float32", "float64"):
        ckpt = training.load_checkpoint(tmp_path / dtype)
        assert ckpt["run"]["engine"] == "fused"
        assert {str(v.dtype) for k, v in ckpt["agents"].items() if k.startswith("W")} == {dtype}
        rows = _rows(tmp_path / dtype)
        assert len(rows) == 2 * 2 and all(r["eval_reward"] for r in rows)
