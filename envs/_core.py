"""The environment contract shared by every adapter: :class:`EnvSpec`, :class:`HostEnv`.

Everything here is NumPy-only so that ``import rtrrl.envs`` costs nothing when JAX, gymnax or
gymnasium are absent; the adapters import their frameworks lazily.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

import rtrrl_spec


@dataclass(frozen=True)
class EnvSpec:
    """What an agent needs to know about a task, independent of the framework behind it.

    Attributes:
        name: the registry name the task was made from, e.g. ``"CartPole-vel"``.
        obs_dim: length of the flattened observation (Box flattened, Discrete one-hot encoded,
            MultiDiscrete one-hot per component and concatenated), after any observation mask.
        n_actions: number of discrete actions, or ``None`` for continuous actions. A
            MultiDiscrete action space ``nvec`` is flattened to ``prod(nvec)`` actions; index
            ``a`` maps to ``np.unravel_index(a, nvec)`` (first component most significant).
        action_dim: dimension of a continuous action, or ``None`` for discrete actions.
        action_low, action_high: per-dimension bounds of a continuous action, or ``None`` when
            the action space is unbounded (any infinite bound).
        max_episode_steps: the time limit after which an episode is truncated, or ``None``.
    """

    name: str
    obs_dim: int
    n_actions: int | None
    action_dim: int | None
    action_low: tuple[float, ...] | None
    action_high: tuple[float, ...] | None
    max_episode_steps: int | None

    @property
    def discrete(self) -> bool:
        """Whether actions are discrete (``n_actions`` set)."""
        return self.n_actions is not None

    def agent_config(self, **overrides: Any) -> rtrrl_spec.Config:
        """A :class:`rtrrl_spec.Config` sized for this task; ``overrides`` set the rest."""
        sizes: dict[str, Any] = {"obs_dim": self.obs_dim}
        if self.n_actions is not None:
            sizes["n_actions"] = self.n_actions
        else:
            sizes["action_dim"] = self.action_dim
            sizes["action_low"] = self.action_low
            sizes["action_high"] = self.action_high
        sizes.update(overrides)
        return rtrrl_spec.Config(**sizes)


@runtime_checkable
class HostEnv(Protocol):
    """A batch of ``num_envs`` auto-resetting environments, NumPy in and NumPy out.

    ``step`` returns ``(obs, reward, terminated, truncated)`` with shapes ``(B, obs_dim)``
    float32, ``(B,)`` float32, ``(B,)`` bool, ``(B,)`` bool. Where ``terminated | truncated``,
    ``obs`` is already the first observation of the next episode (same-step auto-reset).
    """

    spec: EnvSpec
    num_envs: int

    def reset(self, seed: int) -> np.ndarray:
        """Start every environment from ``seed``; return the first observations."""
        ...

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Advance every environment by one step (auto-resetting finished ones)."""
        ...

    def get_state(self) -> Any:
        """Everything needed to continue exactly from here (RNG and environment states), or
        ``None`` when the environment cannot be snapshotted (the run then has no resumable
        environment state; see :class:`rtrrl.envs.GymnasiumHostEnv`)."""
        ...

    def set_state(self, state: Any) -> None:
        """Restore a state returned by :meth:`get_state`."""
        ...

    def close(self) -> None:
        """Release the environments' resources."""
        ...


class UnknownTaskError(KeyError):
    """No task of that name; the message suggests close matches.

    ``detail`` (what the package behind the name said) and ``advice`` (what to do instead of
    the generic listing) make the message specific where the name's form is known.
    """

    def __init__(
        self, name: str, candidates: list[str], detail: str = "", advice: str = ""
    ) -> None:
        close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        detail = f" ({detail})" if detail else ""
        self.name = name
        self.suggestions = close
        self.message = f"unknown task {name!r}{detail}.{hint} " + (
            advice
            or "`rtrrl tasks` lists them all; any gymnax id (e.g. 'Acrobot-v1'), "
            "'gymnasium:<id>', 'popgym:<class>' and 'module:function' (a function of yours "
            "returning a gymnasium environment) work too; --import MODULE imports a module "
            "that registers its environments first."
        )
        super().__init__(self.message)

    def __str__(self) -> str:
        # KeyError's own __str__ repr()s the message, which would quote it.
        return self.message


class TaskUnavailableError(ImportError):
    """The task is known but cannot be built here: a package it needs is missing, or
    installed but failing to load (the message says which, and what to install or set)."""


def flat_to_multi_discrete(nvec: np.ndarray, action: np.ndarray) -> np.ndarray:
    """Map flat action indices ``(B,)`` to MultiDiscrete actions ``(B, len(nvec))``.

    Mixed radix with the first component most significant, i.e. ``np.unravel_index``.
    """
    parts = np.unravel_index(np.asarray(action, dtype=np.int64), tuple(int(n) for n in nvec))
    return np.stack(parts, axis=-1)
