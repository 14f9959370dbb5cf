"""The protocol on the host loop (numpy backend): files, metrics, resume, divergence, errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gymnax")
pytest.importorskip("matplotlib")

import rtrrl  # noqa: E402
import rtrrl_spec  # noqa: E402
from rtrrl import loop, training  # noqa: E402

pytestmark = pytest.mark.numpy

# Tiny budgets: 3 epochs of 100 steps, evaluation every 2 epochs (and after the last one).
TINY = dict(steps=300, epoch_steps=100, eval_every=2, eval_episodes=3)


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


def _without_wall(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in rows]


def test_run_folder_has_every_output(tmp_path: Path) -> None:
    run = tmp_path / "run"
    summary = training.train("MemoryChain-4", backend="numpy", seeds=2, out=run, **TINY)
    for name in ("config.json", "metrics.csv", "curve.png", "summary.json", "summary.md"):
        assert (run / name).stat().st_size > 0, name
    rows = _rows(run)
    # One row per seed per epoch; evaluations after epochs 2 (eval_every) and 3 (last).
    assert [(r["seed"], r["epoch"]) for r in rows] == [
        (s, e) for s in ("0", "1") for e in ("1", "2", "3")
    ]
    assert [r["eval_reward"] != "" for r in rows] == [False, True, True] * 2
    assert all(int(r["episodes"]) > 0 for r in rows)  # MemoryChain-4 episodes last 5 steps
    config = json.loads((run / "config.json").read_text())
    assert config["protocol"]["task"] == "MemoryChain-4" and config["engine"] == "host"
    assert config["agent"]["obs_dim"] == 3 and config["agent"]["n_hidden"] == 32
    # The score is the best evaluation reward of each seed.
    for seed in (0, 1):
        evals = [
            float(r["eval_reward"]) for r in rows if r["seed"] == str(seed) and r["eval_reward"]
        ]
        assert summary["seeds"][seed]["best_eval"] == pytest.approx(max(evals))
    assert summary["steps"] == 2 * 300
    ckpt = training.load_checkpoint(run)
    assert ckpt["agents"]["W"].shape[0] == 2  # every seed's agent, stacked


def test_config_overrides_reach_the_agent(tmp_path: Path) -> None:
    training.train("MemoryChain-4", "numpy", seeds=1, out=tmp_path / "r", n_hidden=5, **TINY)
    ckpt = training.load_checkpoint(tmp_path / "r")
    assert ckpt["run"]["agent"]["n_hidden"] == 5
    assert ckpt["agents"]["W"].shape[-2] == 5


def test_resume_is_exact_on_numpy(tmp_path: Path, interrupt_after) -> None:
    kwargs = dict(
        backend="numpy", seeds=[3, 4], steps=400, epoch_steps=100, eval_every=1, eval_episodes=2
    )
    straight = training.train("MemoryChain-4", out=tmp_path / "a", **kwargs)
    # Interrupted after 3 of the 4 epochs of both seeds, as Ctrl-C would.
    interrupt_after(3)
    with pytest.raises(KeyboardInterrupt):
        training.train("MemoryChain-4", out=tmp_path / "b", **kwargs)
    partial = _rows(tmp_path / "b")
    assert [(r["seed"], r["epoch"]) for r in partial] == [
        (s, e) for s in ("3", "4") for e in ("1", "2", "3")
    ]
    resumed = training.resume(tmp_path / "b")
    assert _without_wall(_rows(tmp_path / "a")) == _without_wall(_rows(tmp_path / "b"))
    a = training.load_checkpoint(tmp_path / "a")["agents"]
    b = training.load_checkpoint(tmp_path / "b")["agents"]
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert [s["best_eval"] for s in straight["seeds"]] == [s["best_eval"] for s in resumed["seeds"]]


def test_resume_warns_when_the_task_now_stands_for_another_environment(
    tmp_path: Path, interrupt_after, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run records what its task name stands for; resuming it after rtrrl redefined the
    name (as the paper rows were) warns, names the change and records it."""
    import warnings

    from rtrrl import envs
    from rtrrl.errors import TaskChangedWarning

    run = tmp_path / "r"
    kwargs = dict(backend="numpy", seeds=[3], steps=400, epoch_steps=100, eval_every=1)
    interrupt_after(1)
    with pytest.raises(KeyboardInterrupt):
        training.train("MemoryChain-4", out=run, eval_episodes=2, **kwargs)
    saved = json.loads((run / "config.json").read_text())["run"]["task_definition"]
    assert saved == envs.task_definition("MemoryChain-4") and saved["source"] == "gymnax"
    interrupt_after(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TaskChangedWarning)  # unchanged: no warning
        with pytest.raises(KeyboardInterrupt):
            training.resume(run)
    changed = {**saved, "target": "MemoryChain-redefined"}
    monkeypatch.setattr(envs, "task_definition", lambda name: changed)
    change = "target: 'MemoryChain-bsuite' → 'MemoryChain-redefined'"
    with pytest.warns(TaskChangedWarning, match=change):
        training.resume(run)
    meta = json.loads((run / "config.json").read_text())["run"]
    assert meta["resumed"][-1]["task_changed"] == {"was": saved, "now": changed}
    assert "task_changed" not in meta["resumed"][0]
    assert meta["task_definition"] == changed


# NumPy warns of the overflow this test causes on purpose; the DivergedError is what it checks.
@pytest.mark.filterwarnings(
    "ignore:overflow encountered:RuntimeWarning", "ignore:invalid value encountered:RuntimeWarning"
)
def test_nan_stops_training_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(training.DivergedError, match="non-finite") as info:
        training.train("MemoryChain-4", "numpy", seeds=1, out=run, lr_td=1e38, lr_rnn=1e38, **TINY)
    assert "last good checkpoint" in str(info.value)
    ckpt = training.load_checkpoint(run)
    assert all(np.all(np.isfinite(v)) for v in ckpt["agents"].values())


def test_existing_run_is_not_overwritten(tmp_path: Path) -> None:
    run = tmp_path / "run"
    training.train("MemoryChain-4", "numpy", seeds=1, out=run, **TINY)
    before = (run / "checkpoint.npz").read_bytes()
    with pytest.raises(training.RunExistsError, match="--resume"):
        training.train("MemoryChain-4", "numpy", seeds=1, out=run, **TINY)
    assert (run / "checkpoint.npz").read_bytes() == before


def test_unknown_task_lists_close_matches(tmp_path: Path) -> None:
    from rtrrl import envs

    with pytest.raises(envs.UnknownTaskError, match="MemoryChain"):
        training.train("MemoryChian-4", "numpy", out=tmp_path / "r", **TINY)
    assert not (tmp_path / "r").exists()  # nothing written before the name was checked


def test_unknown_backend_is_a_registry_error(tmp_path: Path) -> None:
    with pytest.raises(rtrrl.BackendNotFoundError, match="Known backends"):
        training.train("MemoryChain-4", "nunpy", out=tmp_path / "r", **TINY)


def test_corrupt_and_missing_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(training.CheckpointError, match="no checkpoint.*nothing was overwritten"):
        training.resume(tmp_path / "nowhere")
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.npz").write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(training.CheckpointError, match="corrupt.*nothing was overwritten"):
        training.resume(run)
    assert (run / "checkpoint.npz").read_bytes() == b"PK\x03\x04 definitely not a zip"
    np.savez(run / "checkpoint.npz", x=np.zeros(2))
    with pytest.raises(training.CheckpointError, match="not an rtrrl checkpoint"):
        training.resume(run)


def test_a_failed_checkpoint_write_leaves_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    training.train("MemoryChain-4", "numpy", seeds=1, out=run, **TINY)
    before = (run / "checkpoint.npz").read_bytes()

    def torn(f, **arrays):  # writes half a file, then dies like a killed process
        f.write(b"PK\x03\x04partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", torn)

    class Engine:  # only what Session.save asks of an engine
        def snapshot(self):
            return {"W_A": np.zeros((1, 2, 2))}, {}

    session = loop.Session(
        out=run,
        settings=training.RunSettings(task="MemoryChain-4", backend="numpy", seeds=(0,)),
        config=rtrrl_spec.Config(obs_dim=3, n_actions=2),
        engine="host",
        records=[loop.SeedRecord(seed=0)],
    )
    with pytest.raises(KeyboardInterrupt):
        session.save(Engine())
    assert (run / "checkpoint.npz").read_bytes() == before
    assert [p.name for p in run.iterdir() if p.name.endswith(".tmp")] == []


def test_eval_is_frozen_and_deterministic(tmp_path: Path) -> None:
    run = tmp_path / "run"
    training.train("MemoryChain-4", "numpy", seeds=1, out=run, **TINY)
    first = training.evaluate_checkpoint(run, "numpy", episodes=4, seed=7)
    again = training.evaluate_checkpoint(run, "numpy", episodes=4, seed=7)
    assert first == again and set(first) == {0}
    assert -1.0 <= first[0] <= 1.0
