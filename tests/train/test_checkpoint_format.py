"""Checkpoints hold arrays and JSON only: ``rtrrl eval`` never unpickles, a gymnasium
environment's state lives in a file only ``--resume`` reads, older formats still evaluate and
resume, damaged agents are named, and ``best.npz`` keeps each seed's best agent."""

from __future__ import annotations

import csv
import json
import pickle
import re
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("gymnax")
pytest.importorskip("matplotlib")

import rtrrl  # noqa: E402
import rtrrl_spec  # noqa: E402
from rtrrl import checkpoint, envs, loop, training  # noqa: E402
from rtrrl.cli import main  # noqa: E402
from rtrrl.settings import RunSettings  # noqa: E402

pytestmark = pytest.mark.numpy

# Two seeds, four epochs of 50 steps, an evaluation after each; a tiny agent.
TINY = dict(seeds=2, steps=200, epoch_steps=50, eval_every=1, eval_episodes=2, n_hidden=4)
RUN = dict(task="MemoryChain-4", backend="numpy", **TINY)


class _Evil:
    """Unpickling this creates ``marker``: proof that a pickle was read."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def _entries(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv") as f:
        return [{k: v for k, v in r.items() if k != "wall_time"} for r in csv.DictReader(f)]


def _train_interrupted(run: Path, after: int, sigint_after: Any, **kw: Any) -> Path:
    """Train, with a Ctrl-C request after the ``after``-th loop iteration."""
    with sigint_after(after), pytest.raises(KeyboardInterrupt):
        training.train(out=run, **kw)
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, sigint_after: Any) -> dict[str, Path]:
    """A finished run (``"straight"``) and the same run stopped after two of its four epochs
    (``"stopped"``), trained once for the module; tests work on copies."""
    root = tmp_path_factory.mktemp("runs")
    training.train(out=root / "straight", **RUN)
    return {
        "straight": root / "straight",
        "stopped": _train_interrupted(root / "stopped", 2, sigint_after, **RUN),
    }


def _copy(runs: dict[str, Path], which: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(runs[which], tmp_path / which))


def _legacy(run: Path, fmt: int, state: Any) -> None:
    """Rewrite ``run``'s checkpoint as rtrrl formats 1 and 2 wrote it: the agents, its
    config.json (no run id) and the resume state as a pickle, ``state.pkl``."""
    entries = _entries(run / "checkpoint.npz")
    run_json = json.loads(str(entries["config.json"]))
    run_json["format"] = fmt
    run_json.pop("run", None)
    old = {k: v for k, v in entries.items() if k.startswith("agent/")}
    old["config.json"] = np.asarray(json.dumps(run_json))
    old["state.pkl"] = np.frombuffer(pickle.dumps(state), dtype=np.uint8)
    np.savez(run / "checkpoint.npz", **old)
    (run / "config.json").write_text(json.dumps(run_json, indent=2))
    (run / "best.npz").unlink(missing_ok=True)


def test_eval_never_unpickles_a_crafted_legacy_checkpoint(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    run = _copy(runs, "straight", tmp_path)
    marker = tmp_path / "pwned"
    _legacy(run, 2, _Evil(marker))
    assert main(["eval", str(run), "--backend", "numpy", "--episodes", "2", "--json"]) == 0
    assert not marker.exists()  # the agents and config.json are arrays: nothing unpickled


def test_eval_never_opens_the_environment_state_file(runs: dict[str, Path], tmp_path: Path) -> None:
    run = _copy(runs, "straight", tmp_path)
    ckpt = checkpoint.load_checkpoint(run)
    marker = tmp_path / "pwned"
    ckpt["state"]["engine_state"]["extra"] = _Evil(marker)  # an object that is not arrays
    checkpoint.save_checkpoint(run, ckpt["agents"], ckpt["run"], ckpt["state"])
    (side,) = run.glob("env_state-*.pkl")
    assert "state.pkl" not in _entries(run / "checkpoint.npz")
    # Reading the checkpoint, resume state included, and scoring it unpickle nothing.
    state = checkpoint.load_checkpoint(run)["state"]
    assert isinstance(state["engine_state"]["extra"], checkpoint.Pickled)
    args = ["eval", str(run), "--which", "last", "--backend", "numpy", "--episodes", "2"]
    assert main(args) == 0
    assert not marker.exists()
    # Only resume reads it, checking first that it is the file the checkpoint wrote.
    side.write_bytes(side.read_bytes() + b"x")
    with pytest.raises(training.CheckpointError, match="SHA-256"):
        checkpoint.resolve(state["engine_state"]["extra"])
    assert not marker.exists()


def test_a_checkpoint_holds_arrays_and_json_only(runs: dict[str, Path]) -> None:
    run = runs["straight"]
    for name in ("checkpoint.npz", "best.npz"):
        with zipfile.ZipFile(run / name) as z:
            for member in z.namelist():
                header = z.read(member)[:200].decode("latin-1")
                assert "'O'" not in header and "|O" not in header, (name, member)
        entries = _entries(run / name)  # allow_pickle=False reads every entry
        assert "state.pkl" not in entries
    assert list(run.glob("env_state-*.pkl")) == []  # a gymnax task's state is arrays
    state = json.loads(bytes(_entries(run / "checkpoint.npz")["state.json"]).decode())
    assert state["pickles"] is None


def test_a_gymnasium_environment_resumes_exactly_from_its_side_file(
    tmp_path: Path, sigint_after: Any
) -> None:
    pytest.importorskip("gymnasium")
    kw = dict(RUN, task="gymnasium:CartPole-v1", seeds=1)
    straight = tmp_path / "a"
    training.train(out=straight, **kw)
    run = _train_interrupted(tmp_path / "b", 2, sigint_after, **kw)
    (side,) = run.glob("env_state-*.pkl")
    assert "state.pkl" not in _entries(run / "checkpoint.npz")
    training.resume(run)
    assert _rows(straight) == _rows(run)
    a, b = checkpoint.load_checkpoint(straight), checkpoint.load_checkpoint(run)
    for k in a["agents"]:
        np.testing.assert_array_equal(a["agents"][k], b["agents"][k], err_msg=k)
    # eval does not need the file: without it the agents still score.
    for f in run.glob("env_state-*.pkl"):
        f.unlink()
    assert set(training.evaluate_checkpoint(run, "numpy", episodes=2)) == {0}
    with pytest.raises(training.CheckpointError, match=r"env_state-.*cannot be read"):
        checkpoint.resolve(checkpoint.load_checkpoint(run)["state"]["engine_state"])


def test_a_format_2_checkpoint_evaluates_and_resumes_exactly(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    run = _copy(runs, "stopped", tmp_path)
    # The state as the previous version pickled it: environment states as live objects.
    state = checkpoint.load_checkpoint(run)["state"]
    env = envs.make_host("MemoryChain-4", num_envs=1)
    env.reset(0)
    template = {"boundary": [{"env": env.get_state()}] * 2}
    env.close()
    _legacy(run, 2, checkpoint.resolve(state, {"engine_state": template}))
    with pytest.warns(UserWarning, match="no best.npz"):
        assert set(training.evaluate_checkpoint(run, "numpy", episodes=2)) == {0, 1}
    with pytest.raises(training.CheckpointError, match="--which last"):
        training.evaluate_checkpoint(run, "numpy", episodes=2, which="best")
    training.resume(run)  # trusted: the run's own state.pkl
    assert _rows(runs["straight"]) == _rows(run)
    a, b = checkpoint.load_checkpoint(runs["straight"]), checkpoint.load_checkpoint(run)
    assert b["format"] == checkpoint.FORMAT_VERSION
    for k in a["agents"]:
        np.testing.assert_array_equal(a["agents"][k], b["agents"][k], err_msg=k)


def _edit_checkpoint(run: Path, agents: dict[str, np.ndarray] | None = None, **agent: Any) -> None:
    """Change agent arrays, or agent fields of the checkpoint's (and the folder's) config."""
    entries = _entries(run / "checkpoint.npz")
    for k, v in (agents or {}).items():
        entries[f"agent/{k}"] = v
    if agent:
        run_json = json.loads(str(entries["config.json"]))
        run_json["agent"].update(agent)
        entries["config.json"] = np.asarray(json.dumps(run_json))
        (run / "config.json").write_text(json.dumps(run_json, indent=2))
    np.savez(run / "checkpoint.npz", **entries)


def test_damaged_agent_arrays_are_named_not_called_divergence(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    run = _copy(runs, "stopped", tmp_path)
    W_A = checkpoint.load_checkpoint(run)["agents"]["W_A"].copy()
    W_A[1, 0, 0] = np.nan
    _edit_checkpoint(run, {"W_A": W_A})
    before = (run / "checkpoint.npz").read_bytes()
    with pytest.raises(training.CheckpointError, match=r"'W_A' holds NaN or inf \(seed\(s\) \[1\]"):
        training.resume(run)
    with pytest.raises(training.CheckpointError, match="'W_A' holds NaN"):
        training.evaluate_checkpoint(run, "numpy", which="last")
    assert (run / "checkpoint.npz").read_bytes() == before


def test_an_obs_dim_that_does_not_fit_the_arrays_is_named(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    run = _copy(runs, "stopped", tmp_path)
    _edit_checkpoint(run, obs_dim=4)  # MemoryChain-4 observes 3 numbers
    with pytest.raises(training.CheckpointError, match=r"agent array 'W' has shape \(2, 4, \d+\)"):
        training.resume(run)
    with pytest.raises(training.CheckpointError, match="agent array 'W' has shape"):
        training.evaluate_checkpoint(run, "numpy", which="last")


def test_a_task_whose_sizes_changed_is_named() -> None:
    class Spec:
        def agent_config(self) -> rtrrl_spec.Config:
            return rtrrl_spec.Config(obs_dim=4, n_actions=2)

    with pytest.raises(training.CheckpointError, match="obs_dim = 3.*now gives 4"):
        checkpoint.check_task(Spec(), rtrrl_spec.Config(obs_dim=3, n_actions=2), "T")


class _Scripted:
    """An engine whose agent is its epoch count and whose evaluations are scripted."""

    name = "host"

    def __init__(self, scores: list[list[float]]) -> None:
        self.scores, self.evals = scores, [0] * len(scores)
        self.epochs = np.zeros((len(scores), 1))

    def run_epoch(self, active: Any) -> dict[int, loop.EpochResult]:
        metrics = {"episodes": 1, "mean_return": 0.0, "mean_abs_td": 0.0, "mean_value": 0.0}
        for i in active:
            self.epochs[i] += 1
        return {i: loop.EpochResult(dict(metrics)) for i in active}

    def evaluate(self, seeds: dict[int, int]) -> dict[int, float]:
        out = {i: self.scores[i][self.evals[i]] for i in seeds}
        for i in seeds:
            self.evals[i] += 1
        return out

    def snapshot(self) -> tuple[dict[str, np.ndarray], Any]:
        return {"epochs": self.epochs.copy()}, {"evals": list(self.evals)}

    def close(self) -> None:
        pass


def test_best_npz_keeps_each_seed_agent_at_its_best_evaluation(tmp_path: Path) -> None:
    settings = RunSettings(
        task="MemoryChain-4",
        backend="numpy",
        seeds=(7, 8),
        steps=300,
        epoch_steps=100,
        eval_every=1,
        patience=10,
    )
    session = loop.Session(
        out=tmp_path,
        settings=settings,
        config=rtrrl_spec.Config(obs_dim=3, n_actions=2),
        engine="host",
        records=[loop.SeedRecord(seed=s) for s in settings.seeds],
    )
    loop.run(session, _Scripted([[0.1, 0.5, 0.3], [0.2, 0.1, 0.4]]), fresh=True)
    best = checkpoint.load_checkpoint(tmp_path / "best.npz")
    assert best["agents"]["epochs"][:, 0].tolist() == [2.0, 3.0]  # the agents evaluated best
    assert best["best"] == [
        {"seed": 7, "score": 0.5, "epoch": 2},
        {"seed": 8, "score": 0.4, "epoch": 3},
    ]
    assert checkpoint.load_checkpoint(tmp_path)["agents"]["epochs"][:, 0].tolist() == [3.0, 3.0]


def test_best_npz_of_a_resumed_run_is_the_straight_run_s(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    run = _copy(runs, "stopped", tmp_path)
    training.resume(run)
    a = checkpoint.load_checkpoint(runs["straight"] / "best.npz")
    b = checkpoint.load_checkpoint(run / "best.npz")
    assert a["best"] == b["best"]
    summary = json.loads((runs["straight"] / "summary.json").read_text())
    assert [s["score"] for s in a["best"]] == [s["best_eval"] for s in summary["seeds"]]
    for k in a["agents"]:
        np.testing.assert_array_equal(a["agents"][k], b["agents"][k], err_msg=k)


def test_eval_which_best_and_last(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    run = runs["straight"]
    args = ["eval", str(run), "--backend", "numpy", "--episodes", "3", "--seed", "5"]
    assert main([*args, "--json"]) == 0  # best, the default
    best = json.loads(capsys.readouterr().out)
    assert main([*args, "--json", "--which", "last"]) == 0
    last = json.loads(capsys.readouterr().out)
    on_best_file = training.evaluate_checkpoint(run / "best.npz", "numpy", 3, 5)
    assert best == {str(k): v for k, v in on_best_file.items()}
    on_last_file = training.evaluate_checkpoint(run / "checkpoint.npz", "numpy", 3, 5)
    assert last == {str(k): v for k, v in on_last_file.items()}
    assert main([*args, "--which", "best"]) == 0
    out = capsys.readouterr().out
    assert "best agent" in out and "best training evaluation" in out and "median" in out


def test_config_json_records_the_run_s_metadata(runs: dict[str, Path], tmp_path: Path) -> None:
    run = _copy(runs, "stopped", tmp_path)
    meta = json.loads((run / "config.json").read_text())["run"]
    assert re.fullmatch(r"[0-9a-f]{32}", meta["id"])
    assert meta["versions"]["rtrrl"] == rtrrl.__version__
    assert meta["versions"]["numpy"] == np.__version__
    assert meta["versions"]["backend"] == f"numpy: {np.__version__}"
    assert isinstance(meta["command"], list) and meta["date"].endswith("+00:00")
    if (Path(rtrrl.__file__).resolve().parent.parent / ".git").exists() and shutil.which("git"):
        assert re.fullmatch(r"[0-9a-f]{40}", meta["git"]["commit"])
    # Metadata is no setting: resuming (in another session) is not an "edit".
    training.resume(run)
    after = json.loads((run / "config.json").read_text())["run"]
    assert after["id"] == meta["id"] and after["date"] == meta["date"]
    assert len(after["resumed"]) == 1
    assert after["resumed"][0]["versions"]["rtrrl"] == rtrrl.__version__
    assert checkpoint.load_checkpoint(run)["run"]["run"] == after


@pytest.mark.jax
def test_the_fused_engine_restores_its_own_state_and_that_of_format_2() -> None:
    jax = pytest.importorskip("jax")
    from rtrrl import fused

    settings = RunSettings(task="MemoryChain-4", backend="jax", seeds=(0, 1), epoch_steps=10)
    config = training._spec_of("MemoryChain-4").agent_config(n_hidden=4)
    a = fused.FusedEngine(settings, config)
    agents, state = a.snapshot()
    want = [np.asarray(x) for x in jax.tree_util.tree_leaves(a.carry)]
    # Format 3 keeps the carry without its agent (stored once, as the agents); formats 1
    # and 2 kept the whole carry: both restore into an engine of other seeds.
    legacy = {"carry": want}  # what the previous snapshot() saved
    for saved in (state, legacy):
        b = fused.FusedEngine(RunSettings(**{**settings.to_json(), "seeds": (5, 6)}), config)
        b.restore(agents, saved)
        got = [np.asarray(x) for x in jax.tree_util.tree_leaves(b.carry)]
        assert len(got) == len(want)
        for x, y in zip(got, want, strict=True):
            np.testing.assert_array_equal(x, y)
    assert len(state["carry"]) < len(want)
    short = {"carry": [np.zeros(3)] + list(state["carry"][1:])}
    with pytest.raises(training.CheckpointError, match="leaf 0 has shape"):
        fused.FusedEngine(settings, config).restore(agents, short)


@pytest.mark.parametrize("field", ["imports", "task"])
def test_eval_does_not_import_a_module_a_checkpoint_names(
    runs: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    field: str,
) -> None:
    """A shared checkpoint whose config.json names a module (in ``imports``, or as a
    ``module:function`` task) beside which the user happens to stand: ``rtrrl eval`` names
    the module and ``--import`` instead of importing it."""
    run = _copy(runs, "straight", tmp_path)
    marker = tmp_path / "pwned"
    module = f"rtrrl_crafted_{field}"
    (tmp_path / f"{module}.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    entries = _entries(run / "checkpoint.npz")
    run_json = json.loads(str(entries["config.json"]))
    run_json["protocol"][field] = [module] if field == "imports" else f"{module}:make_env"
    entries["config.json"] = np.asarray(json.dumps(run_json))
    np.savez(run / "checkpoint.npz", **entries)
    args = ["eval", str(run / "checkpoint.npz"), "--backend", "numpy", "--episodes", "2"]
    assert main(args) == 2
    assert f"pass --import {module}" in capsys.readouterr().err
    assert not marker.exists()
    assert module not in sys.modules
    assert training.modules_named_by(run_json) == [module]
