"""The task registry: every name builds and steps, unknown names fail helpfully."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from rtrrl import envs
from rtrrl.envs import UnknownTaskError

PAPER_NAMES = [
    "CartPole-vel",
    "CartPole-pos",
    "MountainCarContinuous-vel",
    "MountainCarContinuous-pos",
    "UmbrellaChain",
    "DiscountingChain",
    "BernoulliBandit",
    "GaussianBandit",
    "MetaMaze",
    "PointRobot",
    "Reacher",
    "Catch",
    "Swimmer",
    "StatelessCartPole",
    "NoisyStatelessCartPole",
    "RepeatFirst",
    "RepeatPrevious",
    "Minesweeper",
    "MultiArmedBandit",
]


def _needs(name: str) -> str:
    source = envs._registry._resolve(name).source
    if source == "gymnasium" and name == "Swimmer-gymnasium":
        return "mujoco"
    return "gymnax" if source == "jax-port" else source


def test_task_names_cover_the_paper() -> None:
    names = envs.task_names()
    assert set(PAPER_NAMES) <= set(names)
    assert len(names) == len(set(names))


def test_paper_tasks_are_concrete_registered_names() -> None:
    tasks = envs.paper_tasks()
    assert set(PAPER_NAMES) <= set(tasks) and len(tasks) == len(set(tasks))
    assert {"MemoryChain-4", "MemoryChain-64", "DeepSea-4", "DeepSea-16"} <= set(tasks)
    for name in tasks:  # resolves without building (no framework needed)
        assert envs._registry._resolve(name).name == name


@pytest.mark.parametrize("name", envs.task_names())
def test_every_task_builds_and_steps(name: str) -> None:
    pytest.importorskip(_needs(name))
    if _needs(name) == "mujoco":
        pytest.importorskip("imageio")
    env = envs.make_host(name, num_envs=2)
    try:
        spec = env.spec
        assert spec.name == name
        assert (spec.n_actions is None) != (spec.action_dim is None)
        obs = env.reset(seed=0)
        assert obs.shape == (2, spec.obs_dim) and obs.dtype == np.float32
        rng = np.random.default_rng(0)
        for _ in range(3):
            if spec.n_actions is not None:
                action = rng.integers(spec.n_actions, size=2)
            else:
                low = np.asarray(spec.action_low if spec.action_low else -1.0)
                high = np.asarray(spec.action_high if spec.action_high else 1.0)
                action = rng.uniform(low, high, size=(2, spec.action_dim)).astype(np.float32)
            obs, reward, terminated, truncated = env.step(action)
            assert obs.shape == (2, spec.obs_dim) and obs.dtype == np.float32
            assert reward.shape == (2,) and reward.dtype == np.float32
            assert terminated.shape == truncated.shape == (2,)
            assert terminated.dtype == truncated.dtype == np.bool_
            assert np.all(np.isfinite(obs))
        config = spec.agent_config(n_hidden=8)
        assert config.obs_dim == spec.obs_dim and config.n_hidden == 8
    finally:
        env.close()


def test_families_take_any_size() -> None:
    pytest.importorskip("gymnax")
    chain = envs.make_jax("MemoryChain-17")
    assert int(chain.params.memory_length) == 17
    sea = envs.make_jax("DeepSea-5")
    assert sea.spec.obs_dim == 25 and sea.spec.max_episode_steps == 5


def test_gymnax_ids_and_gymnasium_ids_work_directly() -> None:
    pytest.importorskip("gymnax")
    assert envs.make_jax("Acrobot-v1").spec.n_actions == 3
    env = envs.make_host("gymnasium:Pendulum-v1", num_envs=1)
    assert env.spec.action_dim == 1 and env.spec.action_high == (2.0,)
    assert env.spec.max_episode_steps == 200
    env.close()


def test_unknown_task_suggests_close_names() -> None:
    with pytest.raises(UnknownTaskError) as info:
        envs.make_host("CartPole-velocity")
    message = str(info.value)
    assert "CartPole-vel" in message
    assert "`rtrrl tasks`" in message
    assert isinstance(info.value, KeyError)
    assert not message.startswith("'")  # not KeyError's repr-quoted form


def test_unknown_task_without_close_match_still_points_to_the_list() -> None:
    with pytest.raises(UnknownTaskError, match="rtrrl tasks") as info:
        envs.make_jax("zzzzzzzz")
    assert info.value.suggestions == []


def test_make_jax_rejects_non_gymnax_tasks() -> None:
    with pytest.raises(ValueError, match="only gymnax-backed tasks") as info:
        envs.make_jax("gymnasium:CartPole-v1")
    assert "gymnasium:CartPole-v1" in str(info.value)


def test_popgym_names_map_to_popgym_classes() -> None:
    resolve = envs._registry._resolve
    assert resolve("StatelessCartPole").target == "PositionOnlyCartPoleEasy"
    assert resolve("NoisyStatelessCartPole").target == "NoisyPositionOnlyCartPoleEasy"
    assert resolve("MultiArmedBandit-Hard").target == "MultiarmedBanditHard"
    assert resolve("Minesweeper-Medium").target == "MineSweeperMedium"
    with pytest.raises(UnknownTaskError):
        resolve("RepeatFirst-Impossible")


def test_describe_tasks_rows() -> None:
    rows = envs.describe_tasks()
    by_name = {row["name"]: row for row in rows}
    assert "MemoryChain-<k>" in by_name and "CartPole-vel" in by_name
    assert by_name["CartPole-vel"]["observed"] == [1, 3]
    assert by_name["CartPole-vel"]["target"] == "CartPole-v1"
    if importlib.util.find_spec("gymnax") is not None:
        assert by_name["CartPole-vel"]["obs"] == "Box(2,)"
        assert by_name["CartPole-vel"]["action"] == "Discrete(2)"
        assert by_name["CartPole-vel"]["max_steps"] == 500
        assert by_name["MountainCarContinuous-pos"]["action"] == "Box(1,) [-1, 1]"
