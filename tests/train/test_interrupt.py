"""Real signals: SIGINT, SIGTERM and SIGKILL on ``rtrrl train`` (a child process), and
SIGINT and SIGTERM in this process.

The child waits at a chosen place (inside an evaluation, inside an epoch, inside a jitted
call of the fused path) until the signal has been sent, so the signal lands there every time
without timing guesses. It must then save at the next safe point, exit 130 (SIGINT) or 143
(SIGTERM) with one line saying how to continue, and the resumed run must end exactly as an
uninterrupted one. Before the signals were deferred, a Ctrl-C inside an evaluation saved a
checkpoint that counted the epoch but not its evaluation (the resumed run lost it), on the
fused path the process could die in XLA, and SIGTERM saved nothing.
"""

from __future__ import annotations

import csv
import math
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("matplotlib")

import rtrrl_spec  # noqa: E402
from rtrrl import checkpoint, interrupts, loop, training  # noqa: E402
from rtrrl.cli import main  # noqa: E402
from rtrrl.settings import RunSettings  # noqa: E402

# The child: ``python -c CHILD PLACE CALL FOLDER rtrrl-args...``. At the CALL-th call of
# PLACE it writes FOLDER/waiting and waits for FOLDER/sent (the parent sends the signal first).
CHILD = r"""
import signal, sys, time
from pathlib import Path

# A child inherits an ignored SIGINT (a runner started in the background has one), which
# rtrrl leaves ignored, as it should: put the default back, as in a terminal.
signal.signal(signal.SIGINT, signal.default_int_handler)
place, call, folder = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])


def wait(*_):
    (folder / "waiting").touch()
    deadline = time.monotonic() + 120
    while not (folder / "sent").exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def waiting(function):
    calls = [0]

    def wrapped(*args, **kwargs):
        calls[0] += 1
        if calls[0] == call:
            if place == "xla":  # inside a jitted computation: a host callback that waits
                import jax
                import jax.numpy as jnp

                def paused(x):
                    wait()
                    return x

                shape = jax.ShapeDtypeStruct((), jnp.float32)
                jax.jit(lambda x: jax.pure_callback(paused, shape, x))(
                    jnp.float32(0)
                ).block_until_ready()
            else:
                wait()
        return function(*args, **kwargs)

    return wrapped


if place == "save":  # inside the call-th checkpoint write: temporary file whole, not renamed
    from rtrrl import checkpoint, run_folder

    def atomic_write(path, write, _calls=[0]):
        if path.name != checkpoint.CHECKPOINT:
            return run_folder.atomic_write(path, write)
        _calls[0] += 1
        held = write if _calls[0] != call else (lambda f: (write(f), f.flush(), wait()))
        return run_folder.atomic_write(path, held)

    checkpoint.atomic_write = atomic_write
elif place == "xla":
    from rtrrl import fused

    fused.FusedEngine.evaluate = waiting(fused.FusedEngine.evaluate)
else:
    from rtrrl import host

    setattr(host.HostEngine, place, waiting(getattr(host.HostEngine, place)))
from rtrrl.cli import main

sys.exit(main(sys.argv[4:]))
"""

HOST = ["--task", "gymnasium:CartPole-v1", "--backend", "numpy", "--n-hidden", "4"]
FUSED = ["--task", "MemoryChain-4", "--backend", "jax", "--n-hidden", "4"]
SMALL = ["--seeds", "2", "--steps", "80", "--epoch-steps", "10", "--eval-every", "2"]
SMALL += ["--eval-episodes", "2"]


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv") as f:
        return [{k: v for k, v in r.items() if k != "wall_time"} for r in csv.DictReader(f)]


def _waiting_child(tmp_path: Path, args: list[str], place: str, call: int) -> Any:
    """Start ``rtrrl train ARGS`` in a child and return it once it waits at the ``call``-th
    call of ``place`` (its run folder is ``tmp_path / "run"``)."""
    cmd = [sys.executable, "-c", CHILD, place, str(call), str(tmp_path), "train", *args]
    cmd += ["--out", str(tmp_path / "run"), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not (tmp_path / "waiting").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"the child never reached {place} #{call}: rc {proc.returncode}\n{err}")
        time.sleep(0.05)
    return proc


def _signalled(tmp_path: Path, args: list[str], place: str, call: int, signum: int) -> Path:
    """Run ``rtrrl train ARGS`` in a child, send ``signum`` while it waits at the ``call``-th
    call of ``place``, check its exit status and message; returns the run folder."""
    run = tmp_path / "run"
    proc = _waiting_child(tmp_path, args, place, call)
    proc.send_signal(signum)
    (tmp_path / "sent").touch()
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 128 + signum, err
    name = signal.Signals(signum).name
    line = f"interrupted ({name}); checkpoint saved. Continue with: rtrrl train --resume {run}"
    assert line in out
    assert "Traceback" not in err, err
    return run


def _assert_resumes_exactly(tmp_path: Path, run: Path, args: list[str]) -> None:
    """``rtrrl train --resume RUN`` finishes as the same run uninterrupted does."""
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    straight = tmp_path / "straight"
    assert main(["train", *args, "--out", str(straight), "--no-progress"]) == 0
    assert _rows(run) == _rows(straight)
    a, b = checkpoint.load_checkpoint(straight), checkpoint.load_checkpoint(run)
    for k in a["agents"]:
        np.testing.assert_array_equal(a["agents"][k], b["agents"][k], err_msg=k)


@pytest.mark.numpy
@pytest.mark.slow
def test_sigint_inside_an_evaluation_saves_after_it(tmp_path: Path) -> None:
    pytest.importorskip("gymnasium")
    args = HOST + SMALL
    # The second evaluation: after epoch 4, with a checkpoint (epoch 2) on disk already.
    run = _signalled(tmp_path, args, "evaluate", 2, signal.SIGINT)
    ckpt = checkpoint.load_checkpoint(run)
    records = ckpt["state"]["records"]
    # Saved after the evaluation it interrupted: epoch 4, evaluated, nothing pending.
    assert [(r["epoch"], r["eval_pending"]) for r in records] == [(4, False)] * 2
    assert all(not math.isnan(r["eval_reward"]) for r in ckpt["state"]["rows"] if r["epoch"] == 4)
    _assert_resumes_exactly(tmp_path, run, args)


@pytest.mark.numpy
@pytest.mark.slow
def test_sigterm_inside_an_epoch_saves_at_its_end(tmp_path: Path) -> None:
    pytest.importorskip("gymnasium")
    args = HOST + SMALL
    # The third epoch (no evaluation after it): SIGTERM used to kill the run unsaved.
    run = _signalled(tmp_path, args, "run_epoch", 3, signal.SIGTERM)
    records = checkpoint.load_checkpoint(run)["state"]["records"]
    assert [(r["epoch"], r["eval_pending"]) for r in records] == [(3, False)] * 2
    _assert_resumes_exactly(tmp_path, run, args)


@pytest.mark.jax
@pytest.mark.slow
def test_sigint_inside_a_jitted_call_of_the_fused_path(tmp_path: Path) -> None:
    """The signal arrives while XLA runs (a host callback holds the computation), in the
    second evaluation; it used to end in ``pure virtual method called`` or a segfault."""
    pytest.importorskip("jax")
    pytest.importorskip("gymnax")
    args = FUSED + SMALL
    run = _signalled(tmp_path, args, "xla", 2, signal.SIGINT)
    records = checkpoint.load_checkpoint(run)["state"]["records"]
    assert [(r["epoch"], r["eval_pending"]) for r in records] == [(4, False)] * 2
    _assert_resumes_exactly(tmp_path, run, args)


def _killed(tmp_path: Path, args: list[str], place: str, call: int) -> Path:
    """Run ``rtrrl train ARGS`` in a child and SIGKILL it while it waits at the ``call``-th
    call of ``place``: no handler runs, the folder holds what the last whole save left."""
    proc = _waiting_child(tmp_path, args, place, call)
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return tmp_path / "run"


@pytest.mark.numpy
@pytest.mark.slow
@pytest.mark.parametrize(
    ("place", "call", "saved_epoch"),
    [("evaluate", 2, 2), ("save", 3, 2)],
    ids=["inside-an-evaluation", "inside-a-checkpoint-write"],
)
def test_sigkill_resumes_exactly_from_the_last_whole_save(
    tmp_path: Path, place: str, call: int, saved_epoch: int
) -> None:
    """SIGKILL in the 2nd evaluation (epoch 4), or with the 3rd checkpoint (epoch 4) written
    to its temporary file but not yet renamed: the checkpoint of epoch 2 is what remains, and
    resuming from it repeats epochs 3-4 to the same bits."""
    pytest.importorskip("gymnasium")
    args = HOST + SMALL
    run = _killed(tmp_path, args, place, call)
    records = checkpoint.load_checkpoint(run)["state"]["records"]
    assert [r["epoch"] for r in records] == [saved_epoch] * 2
    _assert_resumes_exactly(tmp_path, run, args)


# --- in this process, through the loop with a scripted engine -------------------------------


class CountingEngine:
    """Epochs and evaluations that only count; every evaluation improves."""

    name = "host"

    def __init__(self, seeds: int) -> None:
        self.epochs = [0] * seeds

    def run_epoch(self, active: Any) -> dict[int, loop.EpochResult]:
        for i in active:
            self.epochs[i] += 1
        metrics = {"episodes": 1, "mean_return": 0.0, "mean_abs_td": 0.0, "mean_value": 0.0}
        return {i: loop.EpochResult(dict(metrics)) for i in active}

    def evaluate(self, seeds: dict[int, int]) -> dict[int, float]:
        return {i: float(self.epochs[i]) for i in seeds}

    def snapshot(self) -> tuple[dict[str, np.ndarray], Any]:
        return {"epochs": np.array(self.epochs, float)[:, None]}, {}

    def restore(self, agents: dict[str, np.ndarray], state: Any) -> None:
        self.epochs = [int(e) for e in agents["epochs"][:, 0]]

    def close(self) -> None:
        pass


def _session(out: Path) -> loop.Session:
    s = RunSettings(
        task="MemoryChain-4", backend="numpy", seeds=1, steps=600, epoch_steps=100, eval_every=2
    )
    return loop.Session(
        out=out,
        settings=s,
        config=rtrrl_spec.Config(obs_dim=3, n_actions=2),
        engine="host",
        records=[loop.SeedRecord(seed=0)],
    )


@pytest.fixture(autouse=True)
def _ctrl_c_as_in_a_terminal() -> Any:
    """Ctrl-C raises ``KeyboardInterrupt`` in these tests however pytest was started: a job
    started in the background by a non-interactive shell (``cmd &``, as ``nohup``-ed CI runs
    are) inherits SIGINT ignored, which a run rightly leaves alone (the test of that sets it
    itself)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _signal_at(monkeypatch: pytest.MonkeyPatch, phase: str, epoch: int, *signums: int) -> None:
    """Send ``signums`` to this process at safe point ``phase`` of epoch ``epoch``."""

    def hook(session: loop.Session, where: str) -> None:
        if where == phase and session.records[0].epoch == epoch:
            for s in signums:
                signal.raise_signal(s)

    monkeypatch.setattr(loop, "_phase_done", hook)


def test_sigterm_saves_and_exits_143(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = signal.getsignal(signal.SIGTERM)
    _signal_at(monkeypatch, "epoch", 3, signal.SIGTERM)
    with pytest.raises(interrupts.Terminated) as info:
        loop.run(_session(tmp_path), CountingEngine(1), fresh=True)
    assert info.value.code == 143
    assert "interrupted (SIGTERM); checkpoint saved. Continue with:" in capsys.readouterr().out
    assert checkpoint.load_checkpoint(tmp_path)["state"]["records"][0]["epoch"] == 3
    assert signal.getsignal(signal.SIGTERM) is before  # put back after the run


def test_a_request_between_an_epoch_and_its_evaluation_leaves_it_pending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _signal_at(monkeypatch, "epoch", 4, signal.SIGINT)  # epoch 4 is due an evaluation
    with pytest.raises(KeyboardInterrupt):
        loop.run(_session(tmp_path), CountingEngine(1), fresh=True)
    saved = checkpoint.load_checkpoint(tmp_path)
    record = saved["state"]["records"][0]
    assert (record["epoch"], record["eval_pending"]) == (4, True)
    assert math.isnan(saved["state"]["rows"][-1]["eval_reward"])
    # The resumed run evaluates epoch 4 first, with the saved agent, then goes on.
    monkeypatch.setattr(loop, "_phase_done", lambda session, where: None)
    session = _session(tmp_path)
    session.records = [loop.SeedRecord(**record)]
    session.rows = list(saved["state"]["rows"])
    engine = CountingEngine(1)
    engine.restore(saved["agents"], None)
    loop.run(session, engine, fresh=False)
    evaluated = [(r["epoch"], r["eval_reward"]) for r in session.rows if r["epoch"] % 2 == 0]
    assert evaluated == [(2, 2.0), (4, 4.0), (6, 6.0)]


def test_a_second_ctrl_c_stops_at_once_without_saving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _signal_at(monkeypatch, "epoch", 3, signal.SIGINT, signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        loop.run(_session(tmp_path), CountingEngine(1), fresh=True)
    assert "interrupted at once" in capsys.readouterr().out
    # The checkpoint of the last save (after epoch 2's evaluation) is kept.
    assert checkpoint.load_checkpoint(tmp_path)["state"]["records"][0]["epoch"] == 2


def test_an_ignored_sigint_stays_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``nohup`` and background jobs ignore SIGINT; a run must not take it back."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _signal_at(monkeypatch, "epoch", 3, signal.SIGINT)
        summary = loop.run(_session(tmp_path), CountingEngine(1), fresh=True)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    assert summary["seeds"][0]["epochs"] == 6


@pytest.mark.numpy
def test_the_cli_reports_sigterm_with_143(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def hook(session: loop.Session, where: str) -> None:
        if where == "save" and session.records[0].epoch == 2:
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(loop, "_phase_done", hook)
    pytest.importorskip("gymnasium")
    args = ["train", *HOST, "--seeds", "1", "--steps", "80", "--epoch-steps", "20"]
    args += ["--eval-every", "2", "--eval-episodes", "2", "--no-progress"]
    args += ["--out", str(tmp_path / "r")]
    assert main(args) == 143
    assert f"Continue with: rtrrl train --resume {tmp_path / 'r'}" in capsys.readouterr().out
    monkeypatch.setattr(loop, "_phase_done", lambda session, where: None)
    assert main(["train", "--resume", str(tmp_path / "r"), "--no-progress"]) == 0
    assert training.load_checkpoint(tmp_path / "r")["state"]["records"][0]["epoch"] == 4
