"""Errors of setup and of the environment, through the command line: one line on stderr that
says what to do, exit status 2, no traceback, and no run folder left behind (issue 19).

Cases whose framework state cannot be undone in this process (a device variable read when
the framework starts, a cached backend) run ``rtrrl`` in a subprocess.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rtrrl.cli import main

pytestmark = pytest.mark.numpy


def _one_line_error(err: str, command: str = "train") -> str:
    assert err.startswith(f"rtrrl {command}: error: "), err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _rtrrl(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``rtrrl ARGS`` in a fresh interpreter with ``env`` added to the environment."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "RTRRL_"))}
    environ.update(env)
    code = "import sys; from rtrrl.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _small(run: Path) -> list[str]:
    return ["--out", str(run), "--seeds", "1", "--steps", "20", "--epoch-steps", "10"]


def test_unknown_gymnasium_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("gymnasium")
    run = tmp_path / "run"
    argv = ["train", "--task", "gymnasium:Nonexistent-v0", "--backend", "numpy", *_small(run)]
    assert main(argv) == 2
    err = _one_line_error(capsys.readouterr().err)
    assert "unknown task 'gymnasium:Nonexistent-v0' (gymnasium: " in err, err
    assert "--import MODULE" in err
    assert not run.exists()


@pytest.mark.skipif(importlib.util.find_spec("mujoco") is not None, reason="mujoco is installed")
def test_a_mujoco_task_without_mujoco(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("gymnasium")
    run = tmp_path / "run"
    argv = ["train", "--task", "Swimmer-gymnasium", "--backend", "numpy", *_small(run)]
    assert main(argv) == 2
    err = _one_line_error(capsys.readouterr().err)
    assert "needs packages that are not installed" in err and "gymnasium[mujoco]" in err, err
    assert not run.exists()


def test_float64_on_jax_without_x64(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    jax = pytest.importorskip("jax")
    if jax.config.read("jax_enable_x64"):
        pytest.skip("x64 is enabled in this process")
    run = tmp_path / "run"
    argv = ["train", "--task", "MemoryChain-4", "--backend", "jax", "--dtype", "float64"]
    assert main([*argv, *_small(run)]) == 2
    err = _one_line_error(capsys.readouterr().err)
    assert "cannot compute in float64 here" in err and "JAX_ENABLE_X64=1" in err, err
    assert "--dtype float32" in err
    assert not run.exists()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_torch_on_cuda_without_cuda(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    run = tmp_path / "run"
    args = ["train", "--task", "MemoryChain-4", "--backend", "torch", *_small(run)]
    result = _rtrrl(args, tmp_path, RTRRL_TORCH_DEVICE="cuda")
    assert result.returncode == 2, result.stderr
    err = _one_line_error(result.stderr)
    assert "cannot start here" in err and "RTRRL_TORCH_DEVICE='cuda'" in err, err
    assert not run.exists()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_jax_platforms_cuda_without_a_gpu(tmp_path: Path) -> None:
    import jax

    if any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("a GPU is available here")
    run = tmp_path / "run"
    args = ["train", "--task", "MemoryChain-4", "--backend", "jax", *_small(run)]
    result = _rtrrl(args, tmp_path, JAX_PLATFORMS="cuda")
    assert result.returncode == 2, result.stderr
    err = _one_line_error(result.stderr)
    assert "JAX_PLATFORMS='cuda'" in err, err
    assert not run.exists()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_a_bad_jax_enable_x64_is_named_not_a_corrupt_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train", "--task", "MemoryChain-4", "--backend", "jax", *_small(run)]
    result = _rtrrl(args, tmp_path, JAX_ENABLE_X64="maybe")
    assert result.returncode == 2, result.stderr
    err = _one_line_error(result.stderr)
    assert "invalid truth value 'maybe'" in err and "JAX_ENABLE_X64='maybe'" in err, err
    assert not run.exists()
    # A run evaluated on jax with the bad variable: the backend, loaded before the
    # checkpoint is read, is what the message names.
    from rtrrl import training

    training.train("MemoryChain-4", "numpy", out=run, seeds=1, steps=20, epoch_steps=10)
    result = _rtrrl(["eval", str(run), "--backend", "jax"], tmp_path, JAX_ENABLE_X64="maybe")
    assert result.returncode == 2, result.stderr
    err = _one_line_error(result.stderr, "eval")
    assert "JAX_ENABLE_X64='maybe'" in err and "corrupt" not in err, err
