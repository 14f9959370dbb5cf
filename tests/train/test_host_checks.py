"""The host loop's checks: the backend checks the first step of an epoch or evaluation in
full, later steps only when the environment's output is not finite (a NumPy test), so a NaN
from the environment gets the reference's message and the other steps run unchecked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rtrrl import host, training
from rtrrl.errors import DivergedError

gymnasium = pytest.importorskip("gymnasium")


def test_needs_check_on_the_first_step_and_on_non_finite_output() -> None:
    finite = np.zeros((2, 3), np.float32)
    assert host.needs_check(True, finite, np.zeros(2))
    assert not host.needs_check(False, finite, np.zeros(2))
    assert host.needs_check(False, np.array([[0.0, np.nan, 0.0]]), np.zeros(1))
    assert host.needs_check(False, finite, np.array([0.0, -np.inf]))


class _Recording:
    """A backend whose step records the ``check`` it was given (or that it got none)."""

    def __init__(self, takes_check: bool) -> None:
        self.calls: list[Any] = []
        if takes_check:
            self.step = self._step_with_check
        else:
            self.step = self._step

    def _step_with_check(self, *args: Any, check: bool = True) -> str:
        self.calls.append(check)
        return "stepped"

    def _step(self, *args: Any) -> str:
        self.calls.append("no keyword")
        return "stepped"


@pytest.mark.parametrize("takes_check", [True, False])
def test_stepper_passes_check_only_to_a_step_that_takes_it(takes_check: bool) -> None:
    backend = _Recording(takes_check)
    step = host.stepper(backend)
    assert step(1, 2, 3, 4, 5, 6, check=False) == "stepped"
    assert backend.calls == [False] if takes_check else ["no keyword"]


class NaNAtStep(gymnasium.Wrapper):
    """CartPole whose 5th step returns a NaN observation."""

    def __init__(self) -> None:
        super().__init__(gymnasium.make("CartPole-v1"))
        self.steps = 0

    def step(self, action: Any) -> Any:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        if self.steps == 5:
            obs = np.full_like(obs, np.nan)
        return obs, reward, terminated, truncated, info


def make_nan_env() -> Any:
    return NaNAtStep()


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_a_nan_from_the_environment_mid_epoch_gets_the_reference_message(
    backend: str, tmp_path: Path
) -> None:
    pytest.importorskip(backend)
    with pytest.raises(DivergedError, match="obs holds a non-finite value"):
        training.train(
            make_nan_env,
            backend,
            out=tmp_path / "run",
            fused=False,
            seeds=1,
            steps=40,
            epoch_steps=20,
            eval_every=1,
            eval_episodes=1,
            n_hidden=4,
        )
