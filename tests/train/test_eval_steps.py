"""The authors' evaluation score (``eval_steps``), on the fused path and the host loop.

Their ``eval_model`` runs one environment for a fixed number of steps and divides the summed
reward by the number of episodes that ended. On CartPole every step pays 1, so the score of
S steps is exactly S / (episodes ended): a score that dropped the unfinished episode's reward,
or counted only complete episodes, would not divide S into a whole number.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

pytest.importorskip("gymnax")
pytest.importorskip("matplotlib")

from rtrrl import training  # noqa: E402

EVAL_STEPS = 701  # prime: S / score is whole only if the score is S / (episodes ended)


def _eval_scores(run: Path) -> list[float]:
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return [float(r["eval_reward"]) for r in rows if r["eval_reward"] not in ("", "nan")]


@pytest.mark.parametrize(
    "backend",
    [pytest.param("jax", marks=pytest.mark.jax), pytest.param("numpy", marks=pytest.mark.numpy)],
)
def test_score_is_the_steps_over_the_episodes_that_ended(tmp_path: Path, backend: str) -> None:
    run = tmp_path / "run"
    summary = training.train(
        "CartPole-v1",
        backend,
        seeds=2,
        steps=300,
        epoch_steps=100,
        eval_every=1,
        eval_steps=EVAL_STEPS,
        out=run,
    )
    assert summary["engine"] == ("fused" if backend == "jax" else "host")
    scores = _eval_scores(run)
    assert len(scores) == 2 * 3
    for score in scores:
        ended = EVAL_STEPS / score
        # The score is float32 (rel. rounding 6e-8); a dropped partial episode of p steps
        # would move `ended` by p / score, at least 1 / 500.
        assert ended == pytest.approx(round(ended), rel=1e-6), score
        # An untrained agent drops the pole within a few dozen steps: many episodes end.
        assert round(ended) > 3, score
    assert json.loads((run / "config.json").read_text())["protocol"]["eval_steps"] == EVAL_STEPS


@pytest.mark.numpy
def test_checkpoint_evaluation_scores_as_the_run_did(tmp_path: Path) -> None:
    run = tmp_path / "run"
    training.train(
        "CartPole-v1", "numpy", seeds=1, steps=100, epoch_steps=100, eval_steps=EVAL_STEPS, out=run
    )
    (score,) = training.evaluate_checkpoint(run).values()
    assert EVAL_STEPS / score == pytest.approx(round(EVAL_STEPS / score), abs=1e-6)
    # Asked for episodes, it scores complete episodes: returns of whole CartPole episodes.
    (mean,) = training.evaluate_checkpoint(run, episodes=4).values()
    assert math.isclose(mean * 4, round(mean * 4), abs_tol=1e-9)
    assert mean != score


@pytest.mark.parametrize("bad", [0, -5, 2.5, True])
def test_eval_steps_must_be_a_positive_int(bad: object) -> None:
    with pytest.raises(ValueError, match="eval_steps"):
        training.RunSettings(eval_steps=bad)  # type: ignore[arg-type]
