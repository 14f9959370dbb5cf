"""Pure-JAX ports of popgym's ``PositionOnlyPendulum`` and ``NoisyPositionOnlyPendulum``.

popgym wraps gymnasium's ``PendulumEnv`` (the dynamics of Pendulum-v1, which gymnax's
``Pendulum`` reproduces): the observation keeps ``(cos θ, sin θ)`` and drops the angular
velocity; the reward ``r ∈ [−16.27, 0]`` is mapped linearly onto ``[−1, 1]`` and divided by
the episode length ``L``; episodes are truncated after ``L`` steps and never terminate.
The noisy version adds N(0, σ²) to both observed entries, the first observation of an episode
included, and clips them to [−1, 1].

popgym steps in float64 (NumPy), the port in float32: ``tests/envs/test_popgym_ports.py``
re-synchronizes the port's state from popgym's each step and compares with a float32
tolerance.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from gymnax.environments import environment, spaces
from gymnax.environments.classic_control.pendulum import Pendulum

#: Half the width of popgym's reward range [−16.2736044, 0] (the worst cost is
#: π² + 0.1 · 8² + 0.001 · 2²).
_HALF_RANGE = 16.2736044 / 2


class PositionOnlyPendulum(environment.Environment[Any, Any]):
    """popgym's ``PositionOnlyPendulum`` and, with ``noise_sigma > 0``, its noisy version.

    Args:
        max_episode_length: ``L``: the time limit and the reward scale.
        noise_sigma: standard deviation of the observation noise (0: none, no clipping).
    """

    def __init__(self, max_episode_length: int = 200, noise_sigma: float = 0.0) -> None:
        super().__init__()
        self.pendulum = Pendulum()
        self.max_episode_length = int(max_episode_length)
        self.noise_sigma = float(noise_sigma)

    @property
    def default_params(self) -> Any:
        return self.pendulum.default_params.replace(max_steps_in_episode=self.max_episode_length)

    def observe(self, key: jax.Array, state: Any) -> jax.Array:
        """``(cos θ, sin θ)``, with the noise (drawn from ``key``) and clipping if noisy."""
        obs = jnp.stack([jnp.cos(state.theta), jnp.sin(state.theta)]).astype(jnp.float32)
        if self.noise_sigma > 0.0:
            noise = self.noise_sigma * jax.random.normal(key, (2,), jnp.float32)
            obs = jnp.clip(obs + noise, -1.0, 1.0)
        return obs

    def reset_env(self, key: jax.Array, params: Any) -> tuple[jax.Array, Any]:
        key_state, key_noise = jax.random.split(key)
        _, state = self.pendulum.reset_env(key_state, params)
        return self.observe(key_noise, state), state

    def step_env(
        self, key: jax.Array, state: Any, action: jax.Array, params: Any
    ) -> tuple[jax.Array, Any, jax.Array, jax.Array, dict[str, Any]]:
        _, state, reward, _, _ = self.pendulum.step_env(key, state, action, params)
        reward = (reward + _HALF_RANGE) / _HALF_RANGE / self.max_episode_length
        return self.observe(key, state), state, reward.astype(jnp.float32), jnp.bool_(False), {}

    def action_space(self, params: Any = None) -> spaces.Box:
        return self.pendulum.action_space(params)

    def observation_space(self, params: Any) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, (2,), jnp.float32)

    @property
    def num_actions(self) -> int:
        return 1

    @property
    def name(self) -> str:
        return "NoisyPositionOnlyPendulum" if self.noise_sigma > 0 else "PositionOnlyPendulum"
