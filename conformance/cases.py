"""Conformance cases: a drawn config plus a seed that makes every array of the case.

Hypothesis draws the config (sizes, modes, hyper-parameters) and a few integers; the arrays
(warm-up inputs, step inputs, noise) come from a NumPy generator seeded by the case, in float64.
A case is therefore a small, printable value, and :func:`rtrrl.conformance.harness.replay`
rebuilds every array of a failure from it.

Inputs stay where the math is well conditioned: observations in [-2, 2], rewards in [-1, 1],
uniform noise in [0.01, 0.99], normal noise in [-3, 3], learning rates up to 0.1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

import rtrrl_spec
from rtrrl_spec import Config

__all__ = ["Case", "StepInputs", "configs", "cases", "cast_agent"]


@dataclass(frozen=True)
class StepInputs:
    """The inputs of one step, in float64 (``done`` bool)."""

    obs: np.ndarray
    reward: np.ndarray
    done: np.ndarray
    noise: np.ndarray

    def cast(self, dtype: str) -> StepInputs:
        """The same inputs with floats in ``dtype``."""
        return StepInputs(
            self.obs.astype(dtype),
            self.reward.astype(dtype),
            self.done.copy(),
            self.noise.astype(dtype),
        )


@dataclass(frozen=True)
class Case:
    """Everything needed to rebuild one conformance example."""

    config: Config
    batch_size: int
    seed: int
    warmup: int
    steps: int
    dtype: str
    done_rate: float = 0.2
    extreme_noise: bool = False
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def _inputs(self, rng: np.random.Generator, first: bool) -> StepInputs:
        cfg, B = self.config, self.batch_size
        obs = rng.uniform(-2.0, 2.0, (B, cfg.obs_dim))
        reward = rng.uniform(-1.0, 1.0, B)
        done = np.ones(B, bool) if first else rng.random(B) < self.done_rate
        if cfg.discrete:
            low, high = (1e-6, 1 - 1e-6) if self.extreme_noise else (0.01, 0.99)
            noise = rng.uniform(low, high, (B, cfg.n_actions))
        else:
            limit = 5.0 if self.extreme_noise else 3.0
            noise = np.clip(rng.standard_normal((B, cfg.action_dim)) * limit / 3, -limit, limit)
        return StepInputs(obs, reward, done, noise)

    def _build(self) -> tuple[dict[str, np.ndarray], list[StepInputs]]:
        if "built" not in self._cache:
            rng = np.random.default_rng(self.seed)
            agent = rtrrl_spec.init(self.config, self.batch_size, rng, dtype="float64")
            for t in range(self.warmup):
                x = self._inputs(rng, first=t == 0)
                agent, _, _ = rtrrl_spec.step(self.config, agent, x.obs, x.reward, x.done, x.noise)
            inputs = [
                self._inputs(rng, first=self.warmup == 0 and t == 0) for t in range(self.steps)
            ]
            self._cache["built"] = (agent, inputs)
        return self._cache["built"]

    def initial_agent(self) -> dict[str, np.ndarray]:
        """The agent after ``warmup`` reference steps, cast to the case's dtype."""
        return cast_agent(self._build()[0], self.dtype)

    def inputs(self) -> list[StepInputs]:
        """The inputs of the steps under test, cast to the case's dtype."""
        return [x.cast(self.dtype) for x in self._build()[1]]

    def replay_args(self) -> str:
        """Keyword arguments that rebuild this case, as Python source."""
        return (
            f"config=rtrrl_spec.{self.config!r}, batch_size={self.batch_size}, seed={self.seed}, "
            f"warmup={self.warmup}, steps={self.steps}, dtype={self.dtype!r}, "
            f"done_rate={self.done_rate!r}, extreme_noise={self.extreme_noise!r}"
        )


def cast_agent(agent: dict[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
    """Float arrays to ``dtype``; integer arrays unchanged."""
    return {k: v.astype(dtype) if v.dtype.kind == "f" else v.copy() for k, v in agent.items()}


@st.composite
def configs(draw: st.DrawFn, body: str | None = None) -> Config:
    """Any valid config, with small sizes."""
    discrete = draw(st.booleans())
    kwargs: dict = {"obs_dim": draw(st.integers(1, 4))}
    if discrete:
        kwargs["n_actions"] = draw(st.integers(2, 4))
    else:
        D = draw(st.integers(1, 3))
        kwargs["action_dim"] = D
        if draw(st.booleans()):
            low = draw(st.lists(st.floats(-2.0, 0.0), min_size=D, max_size=D))
            width = draw(st.lists(st.floats(0.5, 3.0), min_size=D, max_size=D))
            kwargs["action_low"] = tuple(low)
            kwargs["action_high"] = tuple(lo + w for lo, w in zip(low, width, strict=True))
        kwargs["var_scaling"] = draw(st.booleans())
    kwargs["body"] = body or draw(st.sampled_from(["ctrnn", "ctrnn", "lru", "lru", "linear"]))
    kwargs["n_hidden"] = draw(st.integers(1, 6))
    if kwargs["body"] != "linear":
        kwargs["freeze_rnn"] = draw(st.sampled_from([False, False, False, True]))
    if kwargs["body"] == "lru":
        kwargs["lru_r_min"] = draw(st.sampled_from([0.0, 0.5, 0.9]))
        kwargs["lru_max_phase"] = draw(st.sampled_from([6.283185307179586, 0.314]))
    kwargs["jacobian"] = draw(st.sampled_from(["rflo", "rtrl"]))
    kwargs["feedback_alignment"] = draw(st.booleans())
    kwargs["meta_rl"] = draw(st.booleans())
    kwargs["dt"] = draw(st.sampled_from([1.0, 1.0, 0.5, 0.2]))
    kwargs["tau_min"] = draw(st.sampled_from([1.0, 1.0, 2.0]))
    unit = st.floats(0.0, 1.0)
    kwargs["gamma"] = draw(unit)
    kwargs["lambda_actor"] = draw(unit)
    kwargs["lambda_critic"] = draw(unit)
    kwargs["lambda_rnn"] = draw(unit)
    kwargs["eta_pi"] = draw(st.floats(0.0, 2.0))
    kwargs["entropy_rate"] = draw(st.sampled_from([0.0, 1e-5, 1e-2, 0.5]))
    kwargs["trace"] = draw(st.sampled_from(["accumulating", "dutch"]))
    kwargs["reward_rate_lr"] = draw(st.one_of(st.none(), st.floats(1e-3, 0.1)))
    kwargs["lr_td"] = draw(st.floats(1e-4, 0.1))
    kwargs["lr_rnn"] = draw(st.floats(1e-4, 0.1))
    kwargs["adam_b1"] = draw(st.sampled_from([0.9, 0.5, 0.0]))
    kwargs["adam_b2"] = draw(st.sampled_from([0.999, 0.9]))
    kwargs["adam_eps"] = draw(st.sampled_from([1e-8, 1e-4]))
    kwargs["clip_norm"] = draw(st.one_of(st.none(), st.floats(0.01, 10.0)))
    return Config(**kwargs)


ONE_STEP = st.just(1)
SHORT_WARMUP = st.integers(0, 6)


@st.composite
def cases(
    draw: st.DrawFn,
    dtype: str,
    steps: st.SearchStrategy[int] = ONE_STEP,
    warmup: st.SearchStrategy[int] = SHORT_WARMUP,
    extreme_noise: bool = False,
) -> Case:
    """A case of ``steps`` steps after ``warmup`` reference steps."""
    return Case(
        config=draw(configs()),
        batch_size=draw(st.integers(1, 4)),
        seed=draw(st.integers(0, 2**32 - 1)),
        warmup=draw(warmup),
        steps=draw(steps),
        dtype=dtype,
        done_rate=draw(st.sampled_from([0.0, 0.2, 0.5])),
        extreme_noise=extreme_noise,
    )
