"""gymnasium and popgym tasks on the host: same-step auto-reset, truncation, snapshots."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

pytest.importorskip("gymnasium")

from rtrrl import envs  # noqa: E402
from rtrrl.envs import flat_to_multi_discrete  # noqa: E402


def _elapsed(env: envs.GymnasiumHostEnv) -> list[int]:
    return [sub.get_wrapper_attr("_elapsed_steps") for sub in env._vec.envs]


def test_cartpole_auto_resets_in_the_same_step() -> None:
    env = envs.make_host("gymnasium:CartPole-v1", num_envs=2)
    assert env.spec.n_actions == 2 and env.spec.max_episode_steps == 500
    env.reset(seed=0)
    ends = 0
    for _ in range(100):
        obs, reward, terminated, truncated = env.step(np.ones(2, int))  # always push right
        assert np.all(reward == 1.0) and not truncated.any()
        for i in np.flatnonzero(terminated):
            ends += 1
            # The sub-env was already reset: the returned obs is its new state, step count 0.
            assert _elapsed(env)[i] == 0
            np.testing.assert_array_equal(obs[i], np.float32(env._vec.envs[i].unwrapped.state))
            assert np.all(np.abs(obs[i]) <= 0.05)
    assert ends >= 4


def test_pendulum_truncates_at_200_and_never_terminates() -> None:
    env = envs.make_host("gymnasium:Pendulum-v1", num_envs=2)
    assert env.spec.action_low == (-2.0,) and env.spec.action_high == (2.0,)
    env.reset(seed=0)
    for t in range(1, 201):
        _, reward, terminated, truncated = env.step(np.zeros((2, 1), np.float32))
        assert not terminated.any() and np.all(reward <= 0)
        assert truncated.all() == (t == 200) and truncated.any() == (t == 200)
    assert _elapsed(env) == [0, 0]


def test_get_state_set_state_continue_exactly() -> None:
    env = envs.make_host("gymnasium:CartPole-v1", num_envs=2)
    env.reset(seed=5)
    actions = np.random.default_rng(0).integers(2, size=(60, 2))
    for a in actions[:5]:
        env.step(a)
    snapshot = pickle.loads(pickle.dumps(env.get_state()))
    first = [env.step(a) for a in actions[5:]]
    env.set_state(snapshot)
    second = [env.step(a) for a in actions[5:]]
    for a, b in zip(first, second, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    # Reset draws come from the restored np_random, so this crossed an auto-reset exactly too.
    assert any(out[2].any() for out in first)


def test_discrete_observations_are_one_hot() -> None:
    env = envs.make_host("gymnasium:FrozenLake-v1", num_envs=2)
    assert env.spec.obs_dim == 16
    obs = env.reset(seed=0)
    np.testing.assert_array_equal(obs[:, 0], [1.0, 1.0])  # both start in cell 0
    for _ in range(20):
        obs, *_ = env.step(np.array([1, 2]))
        assert np.all(obs.sum(axis=1) == 1.0) and set(np.unique(obs)) <= {0.0, 1.0}
        positions = [sub.unwrapped.s for sub in env._vec.envs]
        np.testing.assert_array_equal(obs.argmax(axis=1), positions)


def test_multi_discrete_actions_unravel_first_component_most_significant() -> None:
    nvec = np.array([4, 3])
    np.testing.assert_array_equal(flat_to_multi_discrete(nvec, np.array([0, 1, 3, 11])),
                                  [[0, 0], [0, 1], [1, 0], [3, 2]])  # fmt: skip


def test_minesweeper_multi_discrete_actions_reach_the_env() -> None:
    pytest.importorskip("popgym")
    env = envs.make_host("popgym:MineSweeperEasy", num_envs=1)
    assert env.spec.n_actions == 16  # MultiDiscrete([4, 4])
    assert env._env_action(np.array([6])).tolist() == [[1, 2]]
    env.reset(seed=0)
    env.step(np.array([6]))
    env.close()


def test_popgym_stateless_cartpole_observes_positions() -> None:
    pytest.importorskip("popgym")
    env = envs.make_host("popgym:PositionOnlyCartPoleEasy", num_envs=1)
    assert env.spec.obs_dim == 2 and env.spec.max_episode_steps == 200
    obs = env.reset(seed=0)
    assert obs.shape == (1, 2)
    env.close()
