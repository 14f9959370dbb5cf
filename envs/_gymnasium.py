"""gymnasium (and popgym, whose environments are gymnasium environments) on the host.

A :class:`gymnasium.vector.SyncVectorEnv` in ``SAME_STEP`` auto-reset mode: where an episode
ends, the returned observation is already the next episode's first one, which is our contract
(the default ``NEXT_STEP`` mode returns it one call late and ignores that call's action).
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from rtrrl.envs._core import EnvSpec, flat_to_multi_discrete


def _obs_size(space: Any) -> int:
    from gymnasium import spaces

    if isinstance(space, spaces.Box):
        return int(np.prod(space.shape, dtype=np.int64))
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    if isinstance(space, spaces.MultiDiscrete):
        return int(np.sum(space.nvec))
    if isinstance(space, spaces.MultiBinary):
        return int(np.prod(space.shape, dtype=np.int64))
    raise NotImplementedError(f"observation space {space!r} has no flat encoding yet")


def _flatten_batch(space: Any, obs: Any, batch: int) -> np.ndarray:
    """``(B, obs_dim)`` float32: Box/MultiBinary flattened, Discrete(-components) one-hot."""
    from gymnasium import spaces

    obs = np.asarray(obs)
    if isinstance(space, spaces.Discrete):
        return np.eye(int(space.n), dtype=np.float32)[obs.reshape(batch) - int(space.start)]
    if isinstance(space, spaces.MultiDiscrete):
        comps = (obs - space.start).reshape(batch, -1)
        nvec = space.nvec.reshape(-1)
        return np.concatenate(
            [np.eye(int(n), dtype=np.float32)[comps[:, i]] for i, n in enumerate(nvec)], axis=1
        )
    return obs.reshape(batch, -1).astype(np.float32)


def _action_spec(space: Any) -> dict[str, Any]:
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        return {"n_actions": int(space.n), "action_dim": None, "low": None, "high": None}
    if isinstance(space, spaces.MultiDiscrete):
        n = int(np.prod(space.nvec, dtype=np.int64))
        return {"n_actions": n, "action_dim": None, "low": None, "high": None}
    if isinstance(space, spaces.Box):
        low = np.asarray(space.low, dtype=np.float64).ravel()
        high = np.asarray(space.high, dtype=np.float64).ravel()
        bounded = bool(np.all(np.isfinite(low)) and np.all(np.isfinite(high)))
        return {
            "n_actions": None,
            "action_dim": int(low.size),
            "low": tuple(float(x) for x in low) if bounded else None,
            "high": tuple(float(x) for x in high) if bounded else None,
        }
    raise NotImplementedError(f"action space {space!r} is not supported")


class GymnasiumHostEnv:
    """``num_envs`` copies of a gymnasium environment, auto-resetting in the same step.

    Seeding: ``reset(seed)`` seeds sub-environment ``i`` with ``seed + i`` (gymnasium's rule).
    ``get_state`` pickles the sub-environments (wrappers, time-limit counters and their
    ``np_random`` included); that works for pure-Python environments such as classic control
    and popgym. An environment that cannot be pickled (a lambda in a wrapper, a renderer, a
    simulator handle, an external process) has no snapshot: ``get_state`` warns once and
    returns ``None`` from then on (``snapshots`` is ``False``). A run on it still trains every
    seed on its own continuing environment: :meth:`detach` hands the live sub-environments
    over to the caller and the next :meth:`reset` builds fresh ones, :meth:`attach` takes
    them back; only a run resumed in a new process has to restart it with a fresh reset.
    """

    def __init__(
        self,
        name: str,
        make_one: Callable[[], Any],
        num_envs: int = 1,
        max_episode_steps: int | None = None,
    ) -> None:
        import gymnasium

        self.num_envs = int(num_envs)
        self._make_one = make_one
        self._vec = gymnasium.vector.SyncVectorEnv(
            [make_one for _ in range(self.num_envs)],
            autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP,
        )
        if len({id(e) for e in self._vec.envs}) != self.num_envs:
            raise ValueError(
                f"{name}: the environment factory returned one object several times; it must "
                "build a new environment on every call"
            )
        #: ``False`` once a snapshot failed: :meth:`get_state` then returns ``None``.
        self.snapshots = True
        self._detached = False
        # Sub-environment lists handed out by detach(), closed with this object.
        self._handed_out: list[list[Any]] = []
        self._obs_space = self._vec.single_observation_space
        self._act_space = self._vec.single_action_space
        if max_episode_steps is None:
            first = self._vec.envs[0]
            spec = getattr(first, "spec", None)
            max_episode_steps = getattr(spec, "max_episode_steps", None)
        act = _action_spec(self._act_space)
        self.spec = EnvSpec(
            name=name,
            obs_dim=_obs_size(self._obs_space),
            n_actions=act["n_actions"],
            action_dim=act["action_dim"],
            action_low=act["low"],
            action_high=act["high"],
            max_episode_steps=max_episode_steps,
        )

    def reset(self, seed: int) -> np.ndarray:
        """Start every environment (env ``i`` from ``seed + i``); return the observations."""
        if self._detached:  # the previous sub-environments belong to someone else now
            self._vec.envs = [self._make_one() for _ in range(self.num_envs)]
            self._detached = False
        obs, _ = self._vec.reset(seed=int(seed))
        return _flatten_batch(self._obs_space, obs, self.num_envs)

    def _env_action(self, action: np.ndarray) -> np.ndarray:
        from gymnasium import spaces

        action = np.asarray(action)
        space = self._act_space
        if isinstance(space, spaces.Discrete):
            return action.reshape(self.num_envs).astype(np.int64) + int(space.start)
        if isinstance(space, spaces.MultiDiscrete):
            multi = flat_to_multi_discrete(space.nvec.reshape(-1), action.reshape(self.num_envs))
            return (multi + space.start.reshape(-1)).astype(space.dtype)
        return action.reshape((self.num_envs, *space.shape)).astype(space.dtype)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step every environment; finished ones restart in the same step."""
        obs, reward, terminated, truncated, _ = self._vec.step(self._env_action(action))
        return (
            _flatten_batch(self._obs_space, obs, self.num_envs),
            np.asarray(reward, dtype=np.float32).reshape(self.num_envs),
            np.asarray(terminated, dtype=bool).reshape(self.num_envs),
            np.asarray(truncated, dtype=bool).reshape(self.num_envs),
        )

    def get_state(self) -> bytes | None:
        """The pickled sub-environments (state, wrappers and RNGs), or ``None`` for an
        environment that cannot be pickled (said once, in a ``RuntimeWarning``)."""
        if not self.snapshots:
            return None
        try:
            return pickle.dumps(self._vec.envs)
        except Exception as exc:  # what fails to pickle depends on the environment
            self.snapshots = False
            warnings.warn(
                f"{self.spec.name}: this environment cannot be snapshotted ({exc}); the run "
                "goes on without resumable environment state (each seed keeps its own "
                "environment), and a resumed run restarts the environment with a fresh reset",
                RuntimeWarning,
                stacklevel=2,
            )
            return None

    def set_state(self, state: bytes) -> None:
        """Continue from a :meth:`get_state` snapshot."""
        envs = pickle.loads(state)
        if len(envs) != self.num_envs:
            raise ValueError(f"state holds {len(envs)} environments, this has {self.num_envs}")
        # SAME_STEP mode keeps no per-env bookkeeping besides the sub-environments themselves.
        self._vec.envs = envs
        self._detached = False

    def detach(self) -> list[Any]:
        """Hand over the live sub-environments (the state of an environment without
        snapshots); the next :meth:`reset` builds new ones, :meth:`attach` takes them back."""
        envs = self._vec.envs
        if all(envs is not other for other in self._handed_out):
            self._handed_out.append(envs)
        self._detached = True
        return envs

    def attach(self, envs: list[Any]) -> None:
        """Continue with sub-environments that :meth:`detach` handed out."""
        if len(envs) != self.num_envs:
            raise ValueError(f"{len(envs)} environments given, this has {self.num_envs}")
        self._vec.envs = envs
        self._detached = False

    def close(self) -> None:
        """Close the sub-environments, those handed out by :meth:`detach` included."""
        current = self._vec.envs
        for envs in self._handed_out:
            if envs is not current:
                for env in envs:
                    env.close()
        self._handed_out = []
        self._vec.close()
