"""Presets: what a run starts from (rtrrl.presets), where each comes from, who wins."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

pytest.importorskip("gymnax")

import rtrrl_spec  # noqa: E402
from rtrrl import cli, loop, presets, training  # noqa: E402
from rtrrl.settings import RunSettings  # noqa: E402
from rtrrl.sweeps import SWEEPABLE  # noqa: E402

pytestmark = pytest.mark.numpy

ROOT = Path(__file__).resolve().parents[2]
TABLE_1 = rtrrl_spec.Config(obs_dim=1, n_actions=2)


def _agent_numbers(config: rtrrl_spec.Config) -> dict:
    skip = {"obs_dim", "n_actions", "action_dim", "action_low", "action_high"}
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in skip}


def test_paper_is_table_1_and_tuned_is_the_default() -> None:
    assert RunSettings().preset == presets.DEFAULT_PRESET == "tuned"
    assert presets.body_of({}) == TABLE_1.body and presets.body_of({"body": "lru"}) == "lru"
    keys = [("StatelessCartPole", "ctrnn"), ("MemoryChain-4", "lru"), *presets.TASK_PRESETS]
    for task, body in keys:
        assert presets.preset_fields("paper", task, body) == {}
        tuned = presets.preset_fields("tuned", task, body)
        own = presets.TASK_PRESETS.get((task, body))
        assert tuned == {**presets.TUNED.fields, **(own.fields if own else {})}
    assert presets.TUNED.fields, "the tuned preset changes nothing: then it is Table 1"
    with pytest.raises(ValueError, match="unknown preset 'fast'; choose one of tuned, paper"):
        presets.preset_fields("fast", "MemoryChain-4")
    with pytest.raises(ValueError, match="preset must be one of tuned, paper, got 'Paper'"):
        RunSettings(preset="Paper")


def test_every_preset_field_is_an_agent_number_that_changes_something() -> None:
    tuned = TABLE_1.replace(**presets.TUNED.fields)
    for key, value in presets.TUNED.fields.items():
        assert key in SWEEPABLE, key  # a number a sweep varies: one found it
        assert getattr(TABLE_1, key) != value, f"{key}={value!r} is Table 1's already"
    for (task, body), preset in presets.TASK_PRESETS.items():
        for key, value in preset.fields.items():
            assert key in SWEEPABLE, key
            assert getattr(tuned, key) != value, f"{task}/{body}: {key}={value!r} is tuned's"
        TABLE_1.replace(**{**presets.TUNED.fields, **preset.fields})  # the agent accepts them


def test_every_preset_names_a_recorded_sweep_with_its_command() -> None:
    for preset in [presets.TUNED, *presets.TASK_PRESETS.values()]:
        record = ROOT / preset.chosen_by
        assert record.is_file(), f"{preset.chosen_by} is not in the project"
        text = record.read_text()
        # The runs that chose it: a sweep, or runs of benchmarks/learn.py, one per setting.
        command = r"(rtrrl sweep|benchmarks/learn\.py) --task \S+"
        assert re.search(command, text), f"{record}: no command"
        for key, value in preset.fields.items():
            shown = "none" if value is None else str(value)
            assert f"{key}={shown}" in text or f"{key} = {shown}" in text, (record, key)


def test_train_starts_from_the_preset_and_the_runs_own_fields_win(
    tmp_path: Path, captured_sessions: list[loop.Session]
) -> None:
    task = "MemoryChain-4"
    kw = {"backend": "numpy", "steps": 500}
    training.train(task, out=tmp_path / "paper", preset="paper", **kw)
    training.train(task, out=tmp_path / "tuned", **kw)
    training.train(task, out=tmp_path / "own", clip_norm=0.5, lr_td=0.01, **kw)
    paper, tuned, own = (s.config for s in captured_sessions)
    assert _agent_numbers(paper) == _agent_numbers(TABLE_1)
    expected = TABLE_1.replace(**presets.preset_fields("tuned", task))
    assert _agent_numbers(tuned) == _agent_numbers(expected)
    assert own == tuned.replace(clip_norm=0.5, lr_td=0.01)
    assert [s.settings.preset for s in captured_sessions] == ["paper", "tuned", "tuned"]


def test_the_cli_prints_the_preset_and_saves_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], captured_sessions: list[loop.Session]
) -> None:
    base = ["train", "--task", "MemoryChain-4", "--backend", "numpy", "--steps", "500"]
    assert cli.main([*base, "--out", str(tmp_path / "a"), "--clip-norm", "2"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "preset tuned" in x)
    assert presets.TUNED.chosen_by in line
    assert "the run's own value wins for clip_norm" in line
    assert captured_sessions[-1].config.clip_norm == 2.0
    assert cli.main([*base, "--out", str(tmp_path / "b"), "--preset", "paper"]) == 0
    assert "preset paper: the paper's Table 1, unchanged" in capsys.readouterr().out
    assert captured_sessions[-1].config.clip_norm == TABLE_1.clip_norm
    assert captured_sessions[-1].settings.preset == "paper"
    assert cli.main([*base, "--out", str(tmp_path / "c"), "--preset", "best"]) == 2
    err = capsys.readouterr().err
    assert "preset must be one of tuned, paper, got 'best'" in err


def test_a_sweep_starts_from_the_same_preset(tmp_path: Path) -> None:
    pytest.importorskip("jax")
    from rtrrl import sweeps

    made = {}
    for preset in presets.PRESETS:
        summary = sweeps.sweep(
            "MemoryChain-4",
            grid={"lr_td": [1e-3]},
            seeds=1,
            steps=200,
            epoch_steps=100,
            eval_every=1,
            eval_episodes=1,
            preset=preset,
            out=tmp_path / preset,
        )
        made[preset] = sweeps._read_sweep(summary["out"]).saved["agent"]
    fields = presets.preset_fields("tuned", "MemoryChain-4")
    assert {k: made["tuned"][k] for k in fields} == fields
    assert {k: made["paper"][k] for k in fields} == {k: getattr(TABLE_1, k) for k in fields}
