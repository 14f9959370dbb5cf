"""Environments for RTRRL: the paper's task registry and adapters with one contract.

Installed as ``rtrrl.envs``. Every task is available on the host (:func:`make_host`: a batch
of auto-resetting environments, NumPy in and out, for every backend); gymnax-backed tasks are
also available as pure JAX (:func:`make_jax`). See ``docs/tasks.md`` for the registry and the
contract (same-step auto-reset, ``terminated`` vs ``truncated``).

Importing this package needs only NumPy; gymnax, gymnasium and popgym load when a task of
theirs is made (``pip install "rtrrl[envs]"``).

Custom environments (``docs/tasks.md``): a gymnasium environment registered by a module of
yours (``--import MODULE``, then ``gymnasium:<id>``), a function of yours returning one
(``"module:function"``), or, in Python, the function or an environment object itself
(``rtrrl.train(task=make_env)``, :func:`register_task`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rtrrl.envs._core import (
    EnvSpec,
    HostEnv,
    TaskUnavailableError,
    UnknownTaskError,
    flat_to_multi_discrete,
)
from rtrrl.envs._registry import (
    Task,
    describe_tasks,
    make_host,
    make_jax,
    make_jax_tasks,
    paper_tasks,
    register_task,
    task_definition,
    task_modules,
    task_names,
)

if TYPE_CHECKING:
    from rtrrl.envs._gymnasium import GymnasiumHostEnv
    from rtrrl.envs._gymnax import EnvState, GymnaxHostEnv, JaxEnv, batch_reset, batch_step

__all__ = [
    "EnvSpec",
    "EnvState",
    "GymnasiumHostEnv",
    "GymnaxHostEnv",
    "HostEnv",
    "JaxEnv",
    "Task",
    "TaskUnavailableError",
    "UnknownTaskError",
    "batch_reset",
    "batch_step",
    "describe_tasks",
    "flat_to_multi_discrete",
    "make_host",
    "make_jax",
    "make_jax_tasks",
    "paper_tasks",
    "register_task",
    "task_definition",
    "task_modules",
    "task_names",
]

_LAZY = {
    "EnvState": "rtrrl.envs._gymnax",
    "JaxEnv": "rtrrl.envs._gymnax",
    "GymnaxHostEnv": "rtrrl.envs._gymnax",
    "batch_reset": "rtrrl.envs._gymnax",
    "batch_step": "rtrrl.envs._gymnax",
    "GymnasiumHostEnv": "rtrrl.envs._gymnasium",
}


def __getattr__(name: str) -> Any:
    # The adapter classes live in modules that are cheap to import, but keeping them lazy
    # leaves room for them to import their frameworks at module level later.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rtrrl.envs' has no attribute {name!r}")
