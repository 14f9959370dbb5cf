"""gymnax tasks as a pure-JAX :class:`JaxEnv`, and the same code jitted on the host.

gymnax's own ``step`` already auto-resets; we call ``step_env`` / ``reset_env`` ourselves and
count the episode's steps in our own state, so that the time limit (truncation) is explicit
and independent of how an environment folds ``time`` into its ``done``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from rtrrl.envs._core import EnvSpec


class EnvState(NamedTuple):
    """State of one :class:`JaxEnv`: the gymnax state and the steps taken this episode."""

    inner: Any
    episode_step: Any  # int32 scalar; 0 right after a reset


def _flat_obs_size(space: Any) -> int:
    from gymnax.environments import spaces

    if isinstance(space, spaces.Discrete):
        return int(space.n)
    if isinstance(space, spaces.Box):
        return int(np.prod(space.shape, dtype=np.int64))
    raise NotImplementedError(f"observation space {space!r} has no flat encoding yet")


def _bounds(space: Any) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    low = np.broadcast_to(np.asarray(space.low, dtype=np.float64), space.shape).ravel()
    high = np.broadcast_to(np.asarray(space.high, dtype=np.float64), space.shape).ravel()
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        return None, None
    return tuple(float(x) for x in low), tuple(float(x) for x in high)


class JaxEnv:
    """One gymnax environment as pure functions (``jax.vmap`` it for batches).

    ``reset(key) -> (state, obs)`` and ``step(key, state, action) -> (state, obs, reward,
    terminated, truncated)``; ``step`` auto-resets (where ``terminated | truncated`` the returned
    state and obs are those of a fresh episode drawn with ``key``), and is jit/vmap/scan-safe.
    Observations are flat float32 of length ``spec.obs_dim``.

    Attributes:
        spec: the task's :class:`EnvSpec`.
        env, params: the underlying gymnax environment and its parameters.
        obs_indices: indices of the flattened gymnax observation that are observed (the
            paper's partially observable variants), or ``None`` for all of them.
    """

    def __init__(
        self,
        name: str,
        env: Any,
        params: Any,
        obs_indices: tuple[int, ...] | None = None,
        max_episode_steps: int | None = None,
    ) -> None:
        from gymnax.environments import spaces

        self.env = env
        self.params = params
        self.obs_indices = obs_indices
        self._obs_space = env.observation_space(params)
        obs_dim = _flat_obs_size(self._obs_space)
        if obs_indices is not None:
            obs_dim = len(obs_indices)
        if max_episode_steps is None:
            max_episode_steps = int(params.max_steps_in_episode)
        act = env.action_space(params)
        if isinstance(act, spaces.Discrete):
            self.spec = EnvSpec(name, obs_dim, int(act.n), None, None, None, max_episode_steps)
        elif isinstance(act, spaces.Box):
            low, high = _bounds(act)
            dim = int(np.prod(act.shape, dtype=np.int64))
            self._act_shape = tuple(act.shape)
            self.spec = EnvSpec(name, obs_dim, None, dim, low, high, max_episode_steps)
        else:
            raise NotImplementedError(f"{name}: action space {act!r} is not supported")

    def observe(self, raw_obs: Any) -> Any:
        """Flatten (one-hot for Discrete) and mask a raw gymnax observation to float32."""
        import jax
        import jax.numpy as jnp
        from gymnax.environments import spaces

        if isinstance(self._obs_space, spaces.Discrete):
            flat = jax.nn.one_hot(raw_obs, int(self._obs_space.n), dtype=jnp.float32)
        else:
            flat = jnp.reshape(jnp.asarray(raw_obs), (-1,)).astype(jnp.float32)
        if self.obs_indices is not None:
            flat = flat[jnp.asarray(self.obs_indices)]
        return flat

    def _action(self, action: Any) -> Any:
        import jax.numpy as jnp

        if self.spec.discrete:
            return jnp.asarray(action).astype(jnp.int32)
        return jnp.reshape(jnp.asarray(action, jnp.float32), self._act_shape)

    def reset(self, key: Any) -> tuple[EnvState, Any]:
        """Start an episode; return ``(state, obs)``."""
        import jax.numpy as jnp

        raw, inner = self.env.reset_env(key, self.params)
        return EnvState(inner, jnp.zeros((), jnp.int32)), self.observe(raw)

    def step(self, key: Any, state: EnvState, action: Any) -> tuple[EnvState, Any, Any, Any, Any]:
        """One step with same-step auto-reset; see the class docstring."""
        import jax
        import jax.numpy as jnp

        key_step, key_reset = jax.random.split(key)
        raw_st, inner_st, reward, terminated, _ = self.env.step_env(
            key_step, state.inner, self._action(action), self.params
        )
        t = state.episode_step + 1
        terminated = jnp.asarray(terminated).astype(bool).reshape(())
        # A true terminal on the last allowed step counts as terminated, not truncated.
        truncated = jnp.logical_and(t >= self.spec.max_episode_steps, ~terminated)
        done = jnp.logical_or(terminated, truncated)
        raw_re, inner_re = self.env.reset_env(key_reset, self.params)

        # Reshape/cast the stepped leaves to the reset ones so the state keeps a fixed
        # structure under scan even if an environment lets a shape (1,) action broadcast.
        def pick(reset_leaf: Any, step_leaf: Any) -> Any:
            reset_leaf = jnp.asarray(reset_leaf)
            step_leaf = jnp.reshape(step_leaf, reset_leaf.shape).astype(reset_leaf.dtype)
            return jnp.where(done, reset_leaf, step_leaf)

        inner = jax.tree.map(pick, inner_re, inner_st)
        obs = jnp.where(done, self.observe(raw_re), self.observe(raw_st))
        new_state = EnvState(inner, jnp.where(done, 0, t).astype(jnp.int32))
        reward = jnp.asarray(reward, jnp.float32).reshape(())
        return new_state, obs, reward, terminated, truncated


class GymnaxHostEnv:
    """A :class:`JaxEnv` vmapped over ``num_envs`` and jitted on the CPU, NumPy in and out.

    Key scheme (so a pure-JAX run can reproduce it): ``reset(seed)`` takes
    ``key = jax.random.key(seed)``, splits ``key, sub = split(key)`` and resets env ``i`` with
    ``split(sub, B)[i]``; every ``step`` does the same split and steps env ``i`` with
    ``split(sub, B)[i]``.
    """

    def __init__(self, jax_env: JaxEnv, num_envs: int = 1) -> None:
        import jax

        self.jax_env = jax_env
        self.spec = jax_env.spec
        self.num_envs = int(num_envs)
        # Environments are cheap and branchy: keep them on the CPU even when JAX has an
        # accelerator, and hand NumPy to whichever backend trains the agent.
        self._device = jax.devices("cpu")[0]
        b = self.num_envs

        def reset(key: Any) -> tuple[Any, EnvState, Any]:
            key, sub = jax.random.split(key)
            state, obs = jax.vmap(jax_env.reset)(jax.random.split(sub, b))
            return key, state, obs

        def step(key: Any, state: EnvState, action: Any) -> tuple[Any, ...]:
            key, sub = jax.random.split(key)
            out = jax.vmap(jax_env.step)(jax.random.split(sub, b), state, action)
            return (key, *out)

        self._reset = jax.jit(reset)
        self._step = jax.jit(step)
        self._key: Any = None
        self._state: EnvState | None = None

    def reset(self, seed: int) -> np.ndarray:
        """Start every environment from ``seed``; return ``(B, obs_dim)`` float32."""
        import jax

        key = jax.device_put(jax.random.key(int(seed)), self._device)
        self._key, self._state, obs = self._reset(key)
        return np.asarray(obs, dtype=np.float32)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step every environment; finished ones restart in the same step."""
        if self._state is None:
            raise RuntimeError("call reset(seed) before step()")
        action = np.asarray(action)
        if self.spec.discrete:
            action = action.astype(np.int32).reshape(self.num_envs)
        else:
            action = action.astype(np.float32).reshape(self.num_envs, -1)
        self._key, self._state, obs, reward, terminated, truncated = self._step(
            self._key, self._state, action
        )
        return (
            np.asarray(obs, dtype=np.float32),
            np.asarray(reward, dtype=np.float32),
            np.asarray(terminated, dtype=bool),
            np.asarray(truncated, dtype=bool),
        )

    def get_state(self) -> dict[str, Any]:
        """The RNG key data and the batched environment states as NumPy (picklable)."""
        import jax

        if self._state is None:
            raise RuntimeError("call reset(seed) before get_state()")
        return {
            "key_data": np.asarray(jax.random.key_data(self._key)),
            "env_state": jax.tree.map(np.asarray, self._state),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`get_state` snapshot."""
        import jax

        self._key = jax.device_put(jax.random.wrap_key_data(state["key_data"]), self._device)
        self._state = jax.device_put(state["env_state"], self._device)

    def close(self) -> None:
        """Nothing to release; drops the state."""
        self._state = None
