"""A real Ctrl-C (SIGINT) on ``rtrrl train``: a checkpoint at the last epoch boundary."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("gymnax")
pytest.importorskip("matplotlib")

from rtrrl import training  # noqa: E402

pytestmark = [pytest.mark.numpy, pytest.mark.slow]


def test_sigint_saves_a_consistent_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    # A child inherits an ignored SIGINT (a runner started in the background has one), and
    # Python then installs no KeyboardInterrupt handler: the child puts the default one back.
    cmd = [
        sys.executable,
        "-c",
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from rtrrl.cli import main; sys.exit(main(sys.argv[1:]))",
        "train",
        "--task",
        "MemoryChain-4",
        "--backend",
        "numpy",
        "--seeds",
        "1",
        "--steps",
        "1000000",
        "--epoch-steps",
        "50",
        "--eval-every",
        "2",
        "--eval-episodes",
        "2",
        # Never stop early: the run must still be going when the signal arrives.
        "--patience",
        "1000000",
        "--out",
        str(run),
        "--no-progress",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    metrics = run / "metrics.csv"
    # Wait for the checkpoint after the first evaluation (epoch 2), then interrupt mid-run.
    while time.monotonic() < deadline and (
        not metrics.exists() or len(metrics.read_text().splitlines()) < 3
    ):
        time.sleep(0.2)
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--resume" in out
    ckpt = training.load_checkpoint(run)
    record = ckpt["state"]["records"][0]
    assert record["epoch"] >= 1
    # The checkpoint is at an epoch boundary: its metrics end exactly at its epoch.
    assert [r["epoch"] for r in ckpt["state"]["rows"]] == list(range(1, record["epoch"] + 1))
    assert ckpt["state"]["engine_state"]["boundary"][0] is not None
