"""``rtrrl train`` and ``rtrrl eval``: arguments, outputs, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("gymnax")
pytest.importorskip("matplotlib")

from rtrrl._cli_train import QUICKSTART, parse_overrides  # noqa: E402
from rtrrl.cli import main  # noqa: E402

pytestmark = pytest.mark.numpy

ARGS = [
    "--backend",
    "numpy",
    "--seeds",
    "1",
    "--steps",
    "200",
    "--epoch-steps",
    "100",
    "--eval-every",
    "1",
    "--eval-episodes",
    "2",
    "--no-progress",
]


def test_train_then_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert (
        main(["train", "--task", "MemoryChain-4", "--out", str(run), *ARGS, "--set", "n_hidden=4"])
        == 0
    )
    out = capsys.readouterr().out
    assert "best evaluation reward" in out and str(run) in out
    assert (run / "summary.md").read_text().startswith("# MemoryChain-4 on numpy")
    assert main(["eval", str(run), "--backend", "numpy", "--episodes", "3"]) == 0
    out = capsys.readouterr().out
    assert "seed 0:" in out and "median" in out


def test_refuses_to_overwrite_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["train", "--task", "MemoryChain-4", "--out", str(run), *ARGS]) == 0
    before = (run / "checkpoint.npz").read_bytes()
    capsys.readouterr()
    assert main(["train", "--task", "MemoryChain-4", "--out", str(run), *ARGS]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (run / "checkpoint.npz").read_bytes() == before


def test_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--task", "CartPole-vle", "--out", str(tmp_path / "a"), *ARGS]) == 2
    err = capsys.readouterr().err
    assert "unknown task 'CartPole-vle'" in err and "CartPole-vel" in err
    args = [a if a != "numpy" else "numpyy" for a in ARGS]
    assert main(["train", "--task", "MemoryChain-4", "--out", str(tmp_path / "b"), *args]) == 2
    assert "Unknown rtrrl backend 'numpyy'" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                "--task",
                "MemoryChain-4",
                "--out",
                str(tmp_path / "c"),
                *ARGS,
                "--set",
                "no_such_field=1",
            ]
        )
        == 2
    )
    assert "no_such_field" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "missing"), "--no-progress"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert "nothing was overwritten" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--no-such-flag"])


def test_resume_refuses_new_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--resume", str(tmp_path), "--steps", "5"]) == 2
    assert "drop --steps" in capsys.readouterr().err


def test_parse_overrides() -> None:
    assert parse_overrides(["lr_td=3e-3", "meta_rl=False", "clip_norm=null", "body=linear"]) == {
        "lr_td": 0.003,
        "meta_rl": False,
        "clip_norm": None,
        "body": "linear",
    }
    assert parse_overrides(["clip_norm=None", "reward_rate_lr=none"]) == {
        "clip_norm": None,
        "reward_rate_lr": None,
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_overrides(["lr_td"])
    assert QUICKSTART["steps"] > 0
