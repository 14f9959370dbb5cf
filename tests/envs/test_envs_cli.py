"""``rtrrl tasks``."""

from __future__ import annotations

import pytest

from rtrrl import envs
from rtrrl.cli import main


def test_tasks_lists_every_registered_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["task", "source", "obs", "action", "steps"]
    listed = {line.split()[0] for line in lines[1:] if line.strip()}
    assert {row["name"] for row in envs.describe_tasks()} <= listed
    cartpole = next(line for line in lines if line.startswith("CartPole-vel "))
    assert "gymnax" in cartpole and "CartPole-v1" in cartpole and "[1, 3]" in cartpole
    assert "gymnasium:<id>" in out and "gymnax id" in out


def test_tasks_verbose_adds_descriptions(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks", "-v"]) == 0
    assert "only the velocities" in capsys.readouterr().out
