"""Sweeps and reproductions on Ray (:mod:`rtrrl.distributed`, ``--ray``), on a local Ray
instance of 2 CPUs started once for the module: results equal to a local run, bit for bit; a
worker killed mid-unit and a driver killed mid-sweep lose and repeat nothing.

One sweep (MemoryChain-4, 4 settings × 2 seeds, 4 chunks of 2 members, every member trained
for its whole budget) is run locally once; every Ray run below runs the same sweep and is
compared with it. Without Ray installed these tests skip, but the ones for the errors (a
missing Ray is one line that says how to install it).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from rtrrl import distributed, sweeps

ROOT = Path(__file__).resolve().parents[2]

#: 10 epochs of 100 steps, an evaluation after each, patience above the budget: every chunk
#: runs as long as every other. One structure for every member (the settings differ in
#: numbers only), so each process compiles the fused epoch once.
TINY: dict[str, Any] = dict(
    steps=1000, epoch_steps=100, eval_every=1, eval_episodes=2, patience=15, n_hidden=8
)
GRID = {"lr_td": [1e-3, 3e-3, 1e-2, 3e-2]}
#: The same sweep on the command line.
ARGS = [
    "sweep",
    "--task",
    "MemoryChain-4",
    "--seeds",
    "2",
    "--steps",
    "1000",
    "--epoch-steps",
    "100",
    "--eval-every",
    "1",
    "--eval-episodes",
    "2",
    "--patience",
    "15",
    "--n-hidden",
    "8",
    "--grid",
    "lr_td=1e-3,3e-3,1e-2,3e-2",
    "--chunk-size",
    "2",
]
CHUNKS = 4


def _needs_jax() -> None:
    for name in ("jax", "gymnax", "matplotlib", "tqdm"):
        pytest.importorskip(name)


@pytest.fixture(scope="module")
def needs_ray() -> None:
    """Skip without Ray, before the module's sweep is trained for nothing."""
    pytest.importorskip("ray")


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A persistent compilation cache for the Ray workers (which inherit the environment of
    the Ray instance): they load the fused epoch compiled once, instead of each compiling it
    again (the slow part of these tests on 2 cores). Not for this process, whose JAX read its
    settings when it was imported: the other tests run as they always do."""
    _needs_jax()  # imports JAX, before the variables below are set
    cache = tmp_path_factory.mktemp("jax-cache")
    env = {
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        yield cache


@pytest.fixture(scope="module")
def ray_cluster(needs_ray: None, jax_cache: Path) -> Iterator[ModuleType]:
    """A local Ray instance of 2 CPUs, its files in a short folder of /tmp (Ray's socket
    paths must stay short), shut down after the module."""
    ray = pytest.importorskip("ray")
    temp = tempfile.mkdtemp(prefix="rtrrl-ray-", dir="/tmp")
    with warnings.catch_warnings():  # JAX warns of Ray's fork, which executes a new program
        warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=200 * 2**20,
            _temp_dir=temp,
            logging_level="WARNING",
        )
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory: pytest.TempPathFactory, jax_cache: Path) -> Path:
    """The sweep run here, one chunk after another, as `rtrrl sweep` without --ray does."""
    out = tmp_path_factory.mktemp("local") / "s"
    sweeps.sweep("MemoryChain-4", "jax", grid=GRID, seeds=2, chunk_size=2, out=out, **TINY)
    return out


# --- comparing two sweep folders -------------------------------------------------------------


def _csv(path: Path, drop: tuple[str, ...] = ("wall_time",)) -> list[dict[str, str]]:
    with open(path) as f:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(f)]


def _without(d: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in keys}


def assert_same_sweep(want: Path, got: Path) -> None:
    """Every result of the sweep in ``got`` equals the one in ``want``, bit for bit: the
    ranking, settings, curves, best setting and summary, and every chunk's agents (last and
    best), records and metric rows. Only wall times, paths and run ids may differ."""
    from rtrrl import checkpoint

    for name in ("settings.csv", "ranking.csv", "ranking.md"):
        assert (got / name).read_text() == (want / name).read_text(), name
    assert _csv(got / "curves.csv") == _csv(want / "curves.csv")
    best = (got / "best.toml").read_text().replace(str(got), "FOLDER")
    assert best == (want / "best.toml").read_text().replace(str(want), "FOLDER")
    paths = ("wall_time", "out", "best_file")
    got_summary, want_summary = (
        _without(json.loads((x / "summary.json").read_text()), *paths) for x in (got, want)
    )
    for s in (got_summary, want_summary):
        s["best_per_task"] = {t: _without(b, "file") for t, b in s["best_per_task"].items()}
    for g, w in zip(got_summary.pop("ranking"), want_summary.pop("ranking"), strict=True):
        assert g == w, {
            k: (g.get(k), w.get(k)) for k in g.keys() | w.keys() if g.get(k) != w.get(k)
        }
    assert got_summary == want_summary
    for c in range(CHUNKS):
        a, b = want / "chunks" / f"{c:03d}", got / "chunks" / f"{c:03d}"
        assert _csv(b / "metrics.csv") == _csv(a / "metrics.csv"), c
        sa, sb = (json.loads((x / "summary.json").read_text()) for x in (a, b))
        assert _without(sb, "wall_time") == _without(sa, "wall_time"), c
        for which in ("checkpoint.npz", "best.npz"):
            ca, cb = (checkpoint.load_checkpoint(x / which, state=False) for x in (a, b))
            assert sorted(ca["agents"]) == sorted(cb["agents"])
            for k in ca["agents"]:
                np.testing.assert_array_equal(cb["agents"][k], ca["agents"][k], err_msg=k)
            assert cb["best"] == ca["best"], (c, which)
        ra, rb = (checkpoint.load_checkpoint(x)["state"] for x in (a, b))
        assert rb["records"] == ra["records"], c
        assert [_without(r, "wall_time") for r in rb["rows"]] == [
            _without(r, "wall_time") for r in ra["rows"]
        ]


def _counted_once(out: Path) -> None:
    """Every member's epochs appear once each, 1..10, in the curves."""
    seen: dict[str, list[int]] = {}
    for row in _csv(out / "curves.csv"):
        seen.setdefault(row["member"], []).append(int(row["epoch"]))
    assert seen == {str(m): list(range(1, 11)) for m in range(8)}


# --- a sweep on Ray ---------------------------------------------------------------------------


@pytest.mark.ray
def test_a_sweep_on_ray_equals_the_local_sweep(
    ray_cluster: ModuleType, local_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """`rtrrl sweep ... --ray` (this process already on the 2-CPU instance): one task per
    chunk, a progress bar fed by the chunks, a live row per finished chunk, and the same
    results as the local sweep; run again, the same command trains nothing."""
    from rtrrl.cli import main

    out = tmp_path / "s"
    assert main([*ARGS, "--out", str(out), "--ray"]) == 0
    assert_same_sweep(local_sweep, out)
    _counted_once(out)
    captured = capsys.readouterr()
    table = [line.split() for line in captured.out.splitlines() if line.strip()[:3].isdigit()]
    assert sorted(row[0] for row in table) == [f"{c:03d}" for c in range(CHUNKS)]
    assert all(row[3] == "2,000" for row in table)  # 2 members × 1000 steps per chunk
    assert "Best on " in captured.out and "chunks=4/4" in captured.err
    for c in range(CHUNKS):  # each chunk names the worker that ran it
        holder = json.loads((out / "chunks" / f"{c:03d}.lock").read_text())
        assert holder["pid"] != os.getpid() and holder["host"]
    stamp = (out / "chunks" / "000" / "checkpoint.npz").stat().st_mtime_ns
    assert main([*ARGS, "--out", str(out), "--ray", "--no-progress"]) == 0
    assert "4 of 4 chunks finished earlier, kept" in capsys.readouterr().out
    assert (out / "chunks" / "000" / "checkpoint.npz").stat().st_mtime_ns == stamp
    assert len(json.loads((out / "sweep.json").read_text())["run"]["resumed"]) == 1


@pytest.mark.ray
def test_a_killed_worker_is_retried_and_loses_nothing(
    ray_cluster: ModuleType, local_sweep: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker of chunk 0 is killed (SIGKILL, that process only, by the pid the unit wrote
    beside its folder) after its first checkpoint: Ray starts the chunk again, it goes on
    from the checkpoint, and the sweep's results are the local sweep's."""
    out, held = tmp_path / "s", tmp_path / "held"
    real_unit = distributed._chunk_unit

    def unit(folder: str, chunk: int, progress: Any = None) -> dict[str, Any]:
        from rtrrl import loop

        def hold(session: Any) -> None:  # after the first epoch and its checkpoint
            held.write_text(str(os.getpid()))
            time.sleep(600)

        first = chunk == 0 and not held.exists()
        loop._epoch_done = hold if first else (lambda session: None)
        return real_unit(folder, chunk, progress)

    monkeypatch.setattr(distributed, "_chunk_unit", unit)
    killed: list[int] = []

    def kill() -> None:
        deadline = time.monotonic() + 240
        while not held.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # the pid is written before the hook's marker; this is slack
        pid = json.loads((out / "chunks" / "000.lock").read_text())["pid"]
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    killer = threading.Thread(target=kill, daemon=True)
    killer.start()
    runner = distributed.ray_runner(resources=distributed.Resources(retries=2))
    sweeps.sweep(
        "MemoryChain-4", "jax", grid=GRID, seeds=2, chunk_size=2, out=out, runner=runner, **TINY
    )
    killer.join(timeout=5)
    assert killed == [int(held.read_text())]  # the process that held chunk 0, by its pid
    assert json.loads((out / "chunks" / "000.lock").read_text())["pid"] != killed[0]
    chunk = json.loads((out / "chunks" / "000" / "config.json").read_text())
    assert len(chunk["run"]["resumed"]) == 1  # continued from its checkpoint, not restarted
    assert_same_sweep(local_sweep, out)
    _counted_once(out)


@pytest.mark.ray
def test_a_failing_unit_is_one_line_and_the_others_finish(ray_cluster: ModuleType) -> None:
    """An error in a unit's own code fails that unit only (not retried: it would fail
    again); the others finish, and the failure is one line."""

    def unit(k: int) -> int:
        if k == 1:
            raise ValueError("a bad\nvalue")
        return 10 * k

    seen: list[Any] = []
    options = distributed.Resources(cpus=0.5).options()
    failed = distributed.run_units(
        unit, {k: (k,) for k in range(3)}, options, lambda done, _: seen.extend(done)
    )
    assert sorted(seen) == [(0, 0), (2, 20)]
    assert failed == {1: "ValueError: a bad value"}


def _finished(out: Path) -> list[int]:
    return [c for c in range(CHUNKS) if (out / "chunks" / f"{c:03d}" / "summary.json").exists()]


@pytest.mark.ray
@pytest.mark.slow
def test_a_killed_driver_restarted_with_the_same_command_counts_every_unit_once(
    ray_cluster: ModuleType, local_sweep: Path, tmp_path: Path
) -> None:
    """`rtrrl sweep ... --ray ADDRESS` in a process of its own, one chunk at a time (each asks
    for both CPUs), killed (SIGKILL) once the first chunk has finished; the same command again
    keeps the finished chunks as they are, runs the others, and gives the local results."""
    out = tmp_path / "s"
    address = ray_cluster.get_runtime_context().gcs_address
    command = [sys.executable, "-m", "rtrrl.cli", *ARGS, "--out", str(out), "--no-progress"]
    command += ["--ray", address, "--ray-cpus", "2"]
    log = tmp_path / "driver.log"
    with open(log, "w") as f:
        driver = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 240
        while not _finished(out) and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        driver.kill()
        driver.wait()
    done = _finished(out)
    assert done and len(done) < CHUNKS, log.read_text()[-3000:]
    stamps = {c: (out / "chunks" / f"{c:03d}" / "checkpoint.npz").stat().st_mtime_ns for c in done}
    again = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{len(done)} of {CHUNKS} chunks finished earlier, kept" in again.stdout
    for c, stamp in stamps.items():  # not trained again
        assert (out / "chunks" / f"{c:03d}" / "checkpoint.npz").stat().st_mtime_ns == stamp
    assert len(json.loads((out / "sweep.json").read_text())["run"]["resumed"]) == 1
    assert_same_sweep(local_sweep, out)
    _counted_once(out)


# --- a reproduction on Ray ---------------------------------------------------------------------


def _reproduce() -> ModuleType:
    import importlib.util

    path = ROOT / "benchmarks" / "reproduce.py"
    spec = importlib.util.spec_from_file_location("rtrrl_bench_reproduce_ray", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.ray
def test_a_reproduction_on_ray_equals_the_local_one(
    ray_cluster: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """`benchmarks/reproduce.py ... --ray`: one task per cell, the same records and run
    folders as the local run; the same command again keeps every cell."""
    reproduce = _reproduce()
    argv = ["--tasks", "MemoryChain-4", "--variants", "frozen,linear", "--backend", "numpy"]
    argv += ["--seeds", "2", "--host-steps", "200", "--epoch-steps", "100"]
    argv += ["--host-eval-every", "1", "--eval-episodes", "2", "--set", "n_hidden=4"]
    records = {}
    for where in ("local", "ray"):
        files = ["--results", str(tmp_path / where / "r.jsonl")]
        files += ["--md", str(tmp_path / where / "table.md")]
        files += ["--runs", str(tmp_path / where / "runs")]
        extra = ["--ray"] if where == "ray" else []
        assert reproduce.main([*argv, *files, *extra]) == 0
        records[where] = reproduce.read_results(tmp_path / where / "r.jsonl")
    keys = ("task", "variant", "status", "engine", "bests", "median", "std", "seed_steps")
    local = sorted(tuple(r.get(k) for k in keys) for r in records["local"])
    assert sorted(tuple(r.get(k) for k in keys) for r in records["ray"]) == local
    assert [r[2] for r in local] == ["ok", "ok"]
    for variant in ("frozen", "linear"):
        a, b = (tmp_path / w / "runs" / "r" / f"MemoryChain-4-{variant}" for w in ("local", "ray"))
        assert _csv(b / "metrics.csv") == _csv(a / "metrics.csv")
        assert (b.parent / f"MemoryChain-4-{variant}.lock").exists()
    assert "MemoryChain-4 / linear: " in capsys.readouterr().out
    files = ["--results", str(tmp_path / "ray" / "r.jsonl"), "--md", str(tmp_path / "t.md")]
    assert reproduce.main([*argv, *files, "--runs", str(tmp_path / "ray" / "runs"), "--ray"]) == 0
    assert len(reproduce.read_results(tmp_path / "ray" / "r.jsonl")) == 2


# --- errors, with or without Ray -------------------------------------------------------------


def test_a_missing_ray_is_one_line_that_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from rtrrl.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if not installed
    out = tmp_path / "s"
    assert main([*ARGS, "--out", str(out), "--ray"]) == 2
    err = capsys.readouterr().err
    assert 'pip install "rtrrl[ray]"' in err and err.count("\n") == 1, err
    assert not out.exists()  # refused before anything was written
    with pytest.raises(distributed.RayNotInstalledError, match="rtrrl\\[ray\\]"):
        distributed.ray_runner()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--ray-cpus", "2"], "--ray-cpus apply to chunks on Ray: add --ray"),
        (["--ray", "--ray-cpus", "-1"], "--ray-cpus must be a finite number >= 0"),
        (["--ray", "--ray-cpus", "0", "--ray-gpus", "0"], "asks for nothing"),
        (["--ray", "--ray-gpus", "1.5"], "--ray-gpus above 1 must be a whole number"),
        (["--ray", "--ray-retries", "-2"], "--ray-retries must be >= 0, or -1 for no limit"),
    ],
)
def test_bad_ray_flags_are_one_line_errors(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from rtrrl.cli import main

    out = tmp_path / "s"  # all refused before Ray is looked for: no Ray needed
    assert main([*ARGS, "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not out.exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--ray-gpus", "1"], "--ray-gpus apply to cells on Ray: add --ray"),
        # A zero is still a flag given: it must not pass for "not given".
        (["--ray-retries", "0"], "--ray-retries apply to cells on Ray: add --ray"),
        (["--ray", "--ray-gpus", "1.5"], "--ray-gpus above 1 must be a whole number"),
    ],
)
def test_reproduce_refuses_bad_ray_flags_before_running(
    flags: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    reproduce = _reproduce()
    with pytest.raises(SystemExit) as stop:
        reproduce.parse_args(flags)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.ray
def test_another_sweep_in_the_folder_is_refused(
    needs_ray: None, local_sweep: Path, tmp_path: Path
) -> None:
    """The same command continues its sweep (what a restarted driver needs with --ray); a
    command with other settings does not take a sweep folder over. (Ray itself is not needed,
    but the sweep of the Ray tests is.)"""
    from rtrrl.errors import RunExistsError

    copy = tmp_path / "s"
    shutil.copytree(local_sweep, copy)
    same = dict(grid=GRID, seeds=2, chunk_size=2, out=copy, continue_same=True)
    refused = "holds another sweep \\(protocol: not this command's\\)"
    with pytest.raises(RunExistsError, match=refused):
        sweeps.sweep("MemoryChain-4", "jax", **same, **{**TINY, "steps": 500})
    summary = sweeps.sweep("MemoryChain-4", "jax", **same, **TINY)
    assert summary["ranking"] == json.loads((local_sweep / "summary.json").read_text())["ranking"]
