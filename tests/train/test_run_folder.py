"""A run folder knows its identity: another run's checkpoint, an edited ``config.json``,
different settings with ``--resume`` and a folder of the user's files as ``--out`` are refused
with a message that says what to do; the folder is checked writable before any work; files
follow the umask; ``train(out=None)`` says where it wrote."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("gymnax")
pytest.importorskip("matplotlib")

from rtrrl import run_folder, training  # noqa: E402
from rtrrl.cli import main  # noqa: E402
from rtrrl.host import HostEngine  # noqa: E402

pytestmark = pytest.mark.numpy

TINY = dict(seeds=1, steps=200, epoch_steps=50, eval_every=1, eval_episodes=2, n_hidden=4)
CLI = ["--backend", "numpy", "--seeds", "1", "--steps", "200", "--epoch-steps", "50"]
CLI += ["--eval-every", "1", "--eval-episodes", "2", "--n-hidden", "4", "--no-progress"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, sigint_after: Any) -> dict[str, Path]:
    """A run stopped (Ctrl-C) after two of its four epochs (``"stopped"``) and another,
    finished run of two seeds (``"other"``), trained once for the module; tests use copies."""
    root = tmp_path_factory.mktemp("runs")
    with sigint_after(2), pytest.raises(KeyboardInterrupt):
        training.train("MemoryChain-4", "numpy", out=root / "stopped", **TINY)
    training.train("MemoryChain-4", "numpy", out=root / "other", **{**TINY, "seeds": 2})
    return {"stopped": root / "stopped", "other": root / "other"}


def _copy(runs: dict[str, Path], which: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(runs[which], tmp_path / which))


def _files(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir())}


def test_another_run_s_checkpoint_cannot_take_a_folder_over(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    run = _copy(runs, "stopped", tmp_path)
    shutil.copy(runs["other"] / "checkpoint.npz", run / "checkpoint.npz")
    before = _files(run)
    with pytest.raises(training.CheckpointError, match="belongs to another run.*copied here"):
        training.resume(run)
    assert _files(run) == before


def test_an_edited_config_json_is_refused_naming_the_fields(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    run = _copy(runs, "stopped", tmp_path)
    config = json.loads((run / "config.json").read_text())
    config["protocol"]["steps"] = 400
    config["agent"]["lr_td"] = 0.5
    (run / "config.json").write_text(json.dumps(config))
    before = _files(run)
    with pytest.raises(training.CheckpointError) as info:
        training.resume(run)
    message = str(info.value)
    assert "protocol.steps: 200 in the checkpoint, 400 in config.json" in message
    assert "agent.lr_td" in message and "undo the edit" in message
    assert "rtrrl train --out NEW_FOLDER --task MemoryChain-4 --backend numpy" in message
    assert "--steps 400" in message and "--set lr_td=0.5" in message
    assert _files(run) == before
    # Deleting config.json is the way back: resume rewrites it from the checkpoint.
    (run / "config.json").unlink()
    training.resume(run)
    assert json.loads((run / "config.json").read_text())["protocol"]["steps"] == 200


def test_resume_takes_the_run_s_own_settings_and_refuses_others(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(runs, "stopped", tmp_path)
    before = _files(run)
    for flags, named in (
        (["--backend", "torch"], "--backend torch (the run's: numpy)"),
        (["--dtype", "float64"], "--dtype float64 (the run's: float32)"),
        (["--fused"], "--fused true (the run's: the host engine)"),
        (["--steps", "400"], "--steps 400 (the run's: 200)"),
        (["--set", "lr_td=0.5"], "lr_td = 0.5 (the run's: "),
        (["--out", str(tmp_path / "elsewhere")], "--out"),
    ):
        assert main(["train", "--resume", str(run), "--no-progress", *flags]) == 2, flags
        err = capsys.readouterr().err
        assert named in err and "drop" in err, err
        assert _files(run) == before
    # The run's own values are accepted, as repeating them in a script does.
    args = ["--backend", "numpy", "--host", "--dtype", "float32", "--steps", "200", "--out"]
    assert main(["train", "--resume", str(run), "--no-progress", *args, str(run)]) == 0


def test_a_folder_of_other_files_is_not_an_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "metrics.csv").write_text("my,own\n1,2\n")
    (folder / "notes.txt").write_text("keep me")
    before = _files(folder)
    with pytest.raises(training.RunExistsError, match="not empty and holds no rtrrl run"):
        training.train("MemoryChain-4", "numpy", out=folder, **TINY)
    assert main(["train", "--task", "MemoryChain-4", "--out", str(folder), *CLI]) == 2
    assert "new or empty folder" in capsys.readouterr().err
    assert _files(folder) == before


def test_an_unwritable_folder_is_found_before_any_work(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _copy(runs, "stopped", tmp_path)
    epochs: list[int] = []
    run_epoch = HostEngine.run_epoch

    def counting(self: HostEngine, active: Any) -> Any:
        epochs.append(len(active))
        return run_epoch(self, active)

    monkeypatch.setattr(HostEngine, "run_epoch", counting)
    mkstemp = tempfile.mkstemp

    def refuse(*args: Any, dir: Any = None, **kw: Any) -> Any:  # a read-only folder
        if dir is not None and Path(dir) in (run, tmp_path / "new"):
            raise PermissionError(13, "Permission denied")
        return mkstemp(*args, dir=dir, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(training.RunFolderError, match="cannot write in .*Permission denied"):
        training.resume(run)
    assert epochs == []  # before: the remaining epochs ran, then the first save failed
    with pytest.raises(training.RunFolderError, match="choose a folder you can write to"):
        training.train("MemoryChain-4", "numpy", out=tmp_path / "new", **TINY)
    assert epochs == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_run_folder_is_refused_before_resuming(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    run = _copy(runs, "stopped", tmp_path)
    run.chmod(0o555)
    try:
        with pytest.raises(training.RunFolderError, match="cannot write in"):
            training.resume(run)
    finally:
        run.chmod(0o755)


def test_run_files_follow_the_umask(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = os.umask(0o022)
    try:
        # out=None also says where it wrote: on stderr and in the summary.
        summary = training.train("MemoryChain-4", "numpy", **TINY)
        os.umask(0o077)
        run_folder.write_json(tmp_path / "private.json", {})
    finally:
        os.umask(old)
    out = Path(summary["out"])
    try:
        assert str(out) in capsys.readouterr().err
        files = list(out.iterdir())
        names = {p.name for p in files}
        assert {"checkpoint.npz", "best.npz", "config.json", "metrics.csv"} <= names
        for p in files:
            assert stat.S_IMODE(p.stat().st_mode) == 0o644, p.name
        assert stat.S_IMODE((tmp_path / "private.json").stat().st_mode) == 0o600
    finally:
        shutil.rmtree(out)
