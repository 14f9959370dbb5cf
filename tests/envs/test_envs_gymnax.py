"""gymnax tasks: observation masks, the auto-reset contract, truncation, host == pure JAX."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

pytest.importorskip("gymnax")
jax = pytest.importorskip("jax")
jnp = jax.numpy

from rtrrl import envs  # noqa: E402

pytestmark = pytest.mark.jax


def test_cartpole_vel_observes_exactly_the_velocities() -> None:
    env = envs.make_jax("CartPole-vel")
    step = jax.jit(env.step)
    state, obs = env.reset(jax.random.key(0))
    for i in range(20):
        inner = state.inner
        np.testing.assert_array_equal(obs, np.array([inner.x_dot, inner.theta_dot], np.float32))
        state, obs, *_ = step(jax.random.key(i + 1), state, i % 2)
    pos = envs.make_jax("CartPole-pos")
    state, obs = pos.reset(jax.random.key(0))
    np.testing.assert_array_equal(obs, np.array([state.inner.x, state.inner.theta], np.float32))


def test_mountain_car_masks() -> None:
    vel, pos = (
        envs.make_jax("MountainCarContinuous-vel"),
        envs.make_jax("MountainCarContinuous-pos"),
    )
    assert vel.spec.obs_dim == pos.spec.obs_dim == 1
    assert vel.spec.action_low == (-1.0,) and vel.spec.action_high == (1.0,)
    state, obs = vel.reset(jax.random.key(3))
    assert float(obs[0]) == pytest.approx(float(state.inner.velocity))
    state, obs = pos.reset(jax.random.key(3))
    assert float(obs[0]) == pytest.approx(float(state.inner.position))


def test_auto_reset_restarts_the_episode_and_returns_add_up() -> None:
    """CartPole pays 1 per step: each finished episode's return equals its length."""
    env = envs.make_host("CartPole-vel", num_envs=2)
    env.reset(seed=1)
    returns, lengths, finished = np.zeros(2), np.zeros(2, int), []
    for _ in range(200):
        obs, reward, terminated, truncated = env.step(np.zeros(2, int))  # always push left
        returns += reward
        lengths += 1
        done = terminated | truncated
        steps = np.asarray(env.get_state()["env_state"].episode_step)
        assert np.all(steps[done] == 0) and np.all(steps[~done] == lengths[~done])
        inner = env.get_state()["env_state"].inner
        # After a reset the observation is the new episode's: its velocities, not the old one's.
        np.testing.assert_array_equal(obs, np.stack([inner.x_dot, inner.theta_dot], 1))
        for i in np.flatnonzero(done):
            finished.append((returns[i], lengths[i]))
            assert terminated[i] and not truncated[i]
            assert np.all(np.abs(obs[i]) <= 0.05)  # gymnax resets CartPole to U(-0.05, 0.05)
            returns[i], lengths[i] = 0.0, 0
    assert len(finished) >= 4  # pushing left always falls over within tens of steps
    assert all(ret == length for ret, length in finished)


def test_truncated_at_500_without_a_true_terminal() -> None:
    env = envs.make_jax("CartPole-vel")
    assert env.spec.max_episode_steps == 500
    state, _ = env.reset(jax.random.key(0))
    near_end = state._replace(episode_step=jnp.int32(498))
    state, _, _, terminated, truncated = env.step(jax.random.key(1), near_end, 0)
    assert not truncated and not terminated and int(state.episode_step) == 499
    state, obs, reward, terminated, truncated = env.step(jax.random.key(2), state, 0)
    assert bool(truncated) and not bool(terminated) and float(reward) == 1.0
    assert int(state.episode_step) == 0 and int(state.inner.time) == 0  # auto-reset
    # A true terminal on the last step is `terminated`, not `truncated`.
    state, _ = env.reset(jax.random.key(0))
    falling = state._replace(
        inner=state.inner.replace(theta=jnp.float32(0.3), theta_dot=jnp.float32(5.0)),
        episode_step=jnp.int32(499),
    )
    _, _, _, terminated, truncated = env.step(jax.random.key(3), falling, 1)
    assert bool(terminated) and not bool(truncated)


def test_host_and_jax_env_agree_step_by_step() -> None:
    b, seed = 3, 7
    host = envs.make_host("CartPole-pos", num_envs=b)
    pure = envs.make_jax("CartPole-pos")
    # The host's documented key scheme, replayed with the pure functions.
    key, sub = jax.random.split(jax.random.key(seed))
    state, obs = jax.vmap(pure.reset)(jax.random.split(sub, b))
    np.testing.assert_array_equal(host.reset(seed), obs)
    step = jax.jit(jax.vmap(pure.step))
    rng = np.random.default_rng(0)
    dones = 0
    for _ in range(60):
        action = rng.integers(2, size=b)
        key, sub = jax.random.split(key)
        state, obs, reward, terminated, truncated = step(jax.random.split(sub, b), state, action)
        h_obs, h_reward, h_term, h_trunc = host.step(action)
        np.testing.assert_array_equal(h_obs, obs)
        np.testing.assert_array_equal(h_reward, reward)
        np.testing.assert_array_equal(h_term, terminated)
        np.testing.assert_array_equal(h_trunc, truncated)
        dones += int(h_term.sum())
    assert dones > 0  # the comparison crossed at least one auto-reset


def test_jax_env_scans() -> None:
    env = envs.make_jax("MemoryChain-3")

    def body(carry, key):
        state = carry
        state, obs, reward, terminated, truncated = env.step(key, state, 0)
        return state, (obs, terminated)

    state, _ = env.reset(jax.random.key(0))
    _, (obs, terminated) = jax.lax.scan(body, state, jax.random.split(jax.random.key(1), 20))
    assert obs.shape == (20, env.spec.obs_dim) and obs.dtype == jnp.float32
    # memory_length 3: an episode is the 3 steps of memory then the query step.
    assert int(terminated.sum()) == 5


def test_get_state_set_state_continue_exactly() -> None:
    env = envs.make_host("CartPole-vel", num_envs=2)
    env.reset(seed=3)
    actions = np.random.default_rng(1).integers(2, size=(40, 2))
    for a in actions[:10]:
        env.step(a)
    snapshot = pickle.loads(pickle.dumps(env.get_state()))
    first = [env.step(a) for a in actions[10:]]
    env.set_state(snapshot)
    second = [env.step(a) for a in actions[10:]]
    for a, b in zip(first, second, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    assert any(out[2].any() for out in first)  # continued across an auto-reset too


def test_discrete_observations_are_one_hot() -> None:
    env = envs.make_jax("FrozenLake-misc")
    assert env.spec.obs_dim == 16
    state, obs = env.reset(jax.random.key(0))
    for i in range(10):
        assert obs.dtype == jnp.float32 and float(obs.sum()) == 1.0
        assert int(jnp.argmax(obs)) == int(state.inner.position)
        state, obs, *_ = env.step(jax.random.key(i), state, 2)
