"""``rtrrl train --body`` / ``--freeze-rnn`` and ``rtrrl.train(body=..., freeze_rnn=...)``: the
choice reaches the agent, the run folder records it, resume and eval restore it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("gymnax")
pytest.importorskip("matplotlib")

from rtrrl import training  # noqa: E402
from rtrrl.cli import main  # noqa: E402

pytestmark = pytest.mark.numpy

ARGS = [
    "--task",
    "MemoryChain-4",
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
    "--set",
    "n_hidden=4",
]


def _agent(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())["agent"]


def test_body_and_freeze_flags_reach_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "lru-frozen"
    assert main(["train", *ARGS, "--out", str(run), "--body", "lru", "--freeze-rnn"]) == 0
    agent = _agent(run)
    assert (agent["body"], agent["freeze_rnn"]) == ("lru", True)
    arrays = training.load_checkpoint(run)["agents"]
    # A frozen LRU: its parameters and state, but no sensitivities, traces or rnn optimizer.
    assert {"log_nu", "B_re", "C_im", "h_re"} <= set(arrays)
    assert not {"e_log_nu", "J_lam_re", "mu_log_nu", "count_rnn", "B_A"} & set(arrays)
    capsys.readouterr()
    assert main(["eval", str(run), "--backend", "numpy", "--episodes", "2", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"0"}

    run = tmp_path / "linear"
    assert main(["train", *ARGS, "--out", str(run), "--body", "linear"]) == 0
    assert (_agent(run)["body"], _agent(run)["freeze_rnn"]) == ("linear", False)
    assert "W" not in training.load_checkpoint(run)["agents"]


def test_wrong_body_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "bad"
    assert main(["train", *ARGS, "--out", str(run), "--body", "lstm"]) == 2
    err = capsys.readouterr().err
    assert "unknown body 'lstm'" in err and "ctrnn, lru, linear" in err
    assert not run.exists()
    assert main(["train", *ARGS, "--out", str(run), "--set", "body=gru"]) == 2
    assert "unknown body 'gru'" in capsys.readouterr().err
    assert main(["train", *ARGS, "--out", str(run), "--body", "lru", "--set", "body=ctrnn"]) == 2
    assert "--body contradicts --set body='ctrnn'" in capsys.readouterr().err
    assert main(["train", *ARGS, "--out", str(run), "--body", "linear", "--freeze-rnn"]) == 2
    assert "freeze_rnn needs a recurrent body" in capsys.readouterr().err
    assert not run.exists()
    with pytest.raises(ValueError, match="unknown body 'lstm'"):
        training.train("MemoryChain-4", "numpy", seeds=1, steps=100, body="lstm")


def test_resume_restores_the_body(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], interrupt_after
) -> None:
    run = tmp_path / "run"
    kwargs = dict(seeds=1, steps=300, epoch_steps=100, eval_every=1, eval_episodes=2)
    interrupt_after(1)
    with pytest.raises(KeyboardInterrupt):
        training.train("MemoryChain-4", "numpy", out=run, n_hidden=4, body="lru", **kwargs)
    before = training.load_checkpoint(run)
    assert before["state"]["records"][0]["epoch"] == 1
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--body", "ctrnn"]) == 2
    assert "drop --body" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    after = training.load_checkpoint(run)
    assert after["state"]["records"][0]["epoch"] == 3
    assert (_agent(run)["body"], _agent(run)["freeze_rnn"]) == ("lru", False)
    # The body learned across the resume: its parameters moved from the checkpoint's.
    assert not (after["agents"]["log_nu"] == before["agents"]["log_nu"]).all()
    assert set(after["agents"]) == set(before["agents"])


@pytest.mark.parametrize(
    ("changes", "label"),
    [
        ({}, "CT-RNN, RFLO"),
        ({"jacobian": "rtrl", "feedback_alignment": False}, "CT-RNN, RTRL, no FA"),
        ({"freeze_rnn": True, "clip_norm": None}, "CT-RNN, RFLO, frozen body, no clip"),
        ({"body": "lru"}, "LRU"),
        ({"body": "linear", "feedback_alignment": False}, "linear TD(λ)"),
    ],
)
def test_agent_label_names_the_variant(changes: dict, label: str) -> None:
    """The learning-curve title says which agent it is (a reproduction table links many)."""
    import rtrrl_spec

    config = rtrrl_spec.Config(obs_dim=3, n_actions=2).replace(**changes)
    assert training.agent_label(config) == label
