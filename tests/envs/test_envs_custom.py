"""Custom environments in the task registry: factories, environment objects, ``module:function``
names, and the errors of each (issue 19)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

gymnasium = pytest.importorskip("gymnasium")

from rtrrl import envs  # noqa: E402

pytestmark = pytest.mark.numpy


def _cartpole() -> Any:
    return gymnasium.make("CartPole-v1")


def test_a_factory_by_module_and_name_needs_no_registration(make_module: Any) -> None:
    module = make_module(
        """
        import gymnasium

        def make():
            return gymnasium.make("CartPole-v1")
        """
    )
    env = envs.make_host(f"{module}:make", num_envs=2)
    try:
        assert env.spec.obs_dim == 4 and env.spec.n_actions == 2
        assert env.reset(0).shape == (2, 4)
    finally:
        env.close()
    with pytest.raises(envs.UnknownTaskError, match="has no attribute 'missing'"):
        envs.make_host(f"{module}:missing")


def test_an_unimportable_factory_gets_a_name_of_this_process() -> None:
    def local_factory() -> Any:
        return _cartpole()

    name = envs.register_task(local_factory)
    assert name.startswith("python:") and "local_factory" in name
    assert envs.register_task(local_factory) == name  # the same object, the same name
    env = envs.make_host(name, num_envs=1)
    env.close()
    with pytest.raises(envs.UnknownTaskError, match="register it again"):
        envs.make_host("python:made_in_another_process")


def test_an_environment_object_is_a_template() -> None:
    template = _cartpole()
    name = envs.register_task(template)
    env = envs.make_host(name, num_envs=2)
    try:
        env.reset(3)
        env.step(np.zeros(2, np.int64))
    finally:
        env.close()
    assert template.unwrapped.state is None  # copies were stepped, not the object


def test_a_factory_must_return_a_new_gymnasium_env() -> None:
    shared = _cartpole()
    with pytest.raises(ValueError, match="same environment object twice"):
        envs.make_host(envs.register_task(lambda: shared), num_envs=2)
    with pytest.raises(ValueError, match="returned int, not a gymnasium.Env"):
        envs.make_host(envs.register_task(lambda: 3))
    with pytest.raises(ValueError, match="a task is a name"):
        envs.register_task(42)


def test_an_unknown_gymnasium_id_is_an_unknown_task() -> None:
    with pytest.raises(envs.UnknownTaskError) as info:
        envs.make_host("gymnasium:Nonexistent-v0")
    message = str(info.value)
    assert "gymnasium: " in message and "--import MODULE" in message
    assert "\n" not in message


def test_get_state_of_an_unpicklable_environment_warns_once_and_gives_none() -> None:
    def make() -> Any:
        env = _cartpole()
        return gymnasium.wrappers.TransformObservation(env, lambda o: o, env.observation_space)

    env = envs.make_host(envs.register_task(make), num_envs=1)
    try:
        env.reset(0)
        with pytest.warns(RuntimeWarning, match="cannot be snapshotted"):
            assert env.get_state() is None
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert env.get_state() is None  # said once
        assert env.snapshots is False
        # detach/attach hand the live environments over and back.
        live = env.detach()
        env.reset(1)
        assert env._vec.envs is not live
        env.attach(live)
        assert env._vec.envs is live
    finally:
        env.close()


def test_task_modules_names_the_user_code_a_task_would_import() -> None:
    from rtrrl import envs

    assert envs.task_modules("my_envs:make_maze") == ["my_envs"]
    assert envs.task_modules("gymnasium:my_envs:Maze-v0") == ["my_envs"]
    for own in ("MemoryChain-4", "gymnasium:CartPole-v1", "CartPole-v1", "popgym:RepeatFirstEasy"):
        assert envs.task_modules(own) == [], own
