"""The task registry: the paper's task names and how each is built.

A name resolves, in order, to: a fixed registry entry, a parametrised family
(``MemoryChain-<k>``, ``DeepSea-<k>``, popgym ``<Task>-Easy|-Medium|-Hard``), any gymnax id,
``gymnasium:<id>`` or ``popgym:<class>`` (popgym's own NumPy environment, on the host).

The paper's six popgym tasks resolve to our pure-JAX ports of them
(:mod:`rtrrl.envs._popgym_jax`, source ``"jax-port"``), which train on the fused path as
gymnax tasks do; ``popgym:<class>`` still reaches popgym's originals.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from typing import Any

from rtrrl.envs._core import HostEnv, UnknownTaskError


@dataclass(frozen=True)
class Task:
    """How to build one registry entry.

    Attributes:
        name: registry name (for families, the template, e.g. ``"MemoryChain-<k>"``).
        source: ``"gymnax"``, ``"jax-port"`` (our JAX port of a popgym class), ``"gymnasium"``
            or ``"popgym"``.
        target: the underlying id (gymnax id, gymnasium id or popgym class name).
        description: one line for ``rtrrl tasks``.
        obs_indices: observed entries of the flattened observation, ``None`` for all.
        env_kwargs: keyword arguments of the gymnax environment's constructor.
        params: overrides of the gymnax ``EnvParams``.
        example: for a family, a concrete name that ``task_names()`` lists and tests build.
    """

    name: str
    source: str
    target: str
    description: str
    obs_indices: tuple[int, ...] | None = None
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    example: str | None = None


_POPGYM_LEVELS = ("Easy", "Medium", "Hard")

# The paper's tasks. CartPole observations are (x, x_dot, theta, theta_dot); MountainCar's are
# (position, velocity).
_FIXED: list[Task] = [
    Task(
        "CartPole-vel",
        "gymnax",
        "CartPole-v1",
        "CartPole, only the velocities (x_dot, theta_dot)",
        (1, 3),
    ),
    Task(
        "CartPole-pos",
        "gymnax",
        "CartPole-v1",
        "CartPole, only cart position and pole angle (x, theta)",
        (0, 2),
    ),
    Task(
        "MountainCarContinuous-vel",
        "gymnax",
        "MountainCarContinuous-v0",
        "continuous MountainCar, velocity only",
        (1,),
    ),
    Task(
        "MountainCarContinuous-pos",
        "gymnax",
        "MountainCarContinuous-v0",
        "continuous MountainCar, position only",
        (0,),
    ),
    Task(
        "UmbrellaChain",
        "gymnax",
        "UmbrellaChain-bsuite",
        "bsuite umbrella chain (credit assignment)",
    ),
    Task(
        "DiscountingChain",
        "gymnax",
        "DiscountingChain-bsuite",
        "bsuite discounting chain (reward horizon)",
    ),
    Task(
        "BernoulliBandit", "gymnax", "BernoulliBandit-misc", "two-armed Bernoulli bandit (meta-RL)"
    ),
    Task("GaussianBandit", "gymnax", "GaussianBandit-misc", "two-armed Gaussian bandit (meta-RL)"),
    Task("MetaMaze", "gymnax", "MetaMaze-misc", "maze with a hidden, resampled goal (meta-RL)"),
    Task("PointRobot", "gymnax", "PointRobot-misc", "point robot reaching a hidden goal (meta-RL)"),
    Task("Reacher", "gymnax", "Reacher-misc", "two-link reacher with a hidden goal (meta-RL)"),
    Task("Catch", "gymnax", "Catch-bsuite", "bsuite catch (10x5 pixels)"),
    Task(
        "Swimmer",
        "gymnasium",
        "Swimmer-v5",
        "MuJoCo swimmer (brax in the paper); needs gymnasium[mujoco]",
    ),
]

_FAMILIES: list[tuple[re.Pattern[str], Task]] = [
    (
        re.compile(r"MemoryChain-(\d+)"),
        Task(
            "MemoryChain-<k>",
            "gymnax",
            "MemoryChain-bsuite",
            "bsuite memory chain: recall the first observation after k steps",
            example="MemoryChain-4",
        ),
    ),
    (
        re.compile(r"DeepSea-(\d+)"),
        Task(
            "DeepSea-<k>",
            "gymnax",
            "DeepSea-bsuite",
            "bsuite deep sea, a k x k grid (exploration)",
            example="DeepSea-8",
        ),
    ),
]

# The paper's popgym names -> popgym class names (without the difficulty suffix); each class
# has a JAX port in rtrrl.envs._popgym_jax.
_POPGYM: dict[str, tuple[str, str]] = {
    "StatelessCartPole": ("PositionOnlyCartPole", "CartPole with positions only (popgym)"),
    "NoisyStatelessCartPole": ("NoisyPositionOnlyCartPole", "noisy position-only CartPole"),
    "RepeatFirst": ("RepeatFirst", "repeat the first card seen"),
    "RepeatPrevious": ("RepeatPrevious", "repeat the card seen k steps ago"),
    "Minesweeper": ("MineSweeper", "minesweeper; MultiDiscrete (row, col) flattened"),
    "MultiArmedBandit": ("MultiarmedBandit", "multi-armed bandit with resampled arms"),
}


def _popgym_task(name: str) -> Task | None:
    base, _, level = name.partition("-")
    if base not in _POPGYM or (level and level not in _POPGYM_LEVELS):
        return None
    cls, desc = _POPGYM[base]
    level = level or "Easy"
    # Every class named in _POPGYM has a pure-JAX port (rtrrl.envs._popgym_jax); popgym's own
    # NumPy environments stay reachable as "popgym:<Class>".
    return Task(name, "jax-port", cls + level, f"{desc} ({level}; JAX port)")


def _gymnax_ids() -> list[str]:
    try:
        import gymnax
    except ImportError:
        return []
    return list(gymnax.registered_envs)


def _resolve(name: str) -> Task:
    """The :class:`Task` a name stands for, or :class:`UnknownTaskError`."""
    for task in _FIXED:
        if task.name == name:
            return task
    for pattern, family in _FAMILIES:
        match = pattern.fullmatch(name)
        if match:
            k = int(match.group(1))
            if k < 1:
                raise ValueError(f"{name}: the size must be at least 1")
            if family.target == "MemoryChain-bsuite":
                return Task(
                    name, "gymnax", family.target, family.description, params={"memory_length": k}
                )
            return Task(name, "gymnax", family.target, family.description, env_kwargs={"size": k})
    popgym_task = _popgym_task(name)
    if popgym_task is not None:
        return popgym_task
    if name.startswith("gymnasium:"):
        return Task(name, "gymnasium", name.removeprefix("gymnasium:"), "gymnasium environment")
    if name.startswith("popgym:"):
        return Task(name, "popgym", name.removeprefix("popgym:"), "popgym environment")
    if name in _gymnax_ids():
        return Task(name, "gymnax", name, "gymnax environment")
    raise UnknownTaskError(name, _all_candidates())


def _all_candidates() -> list[str]:
    return task_names() + [f.name for _, f in _FAMILIES] + _gymnax_ids()


def task_names() -> list[str]:
    """Every registered name, families represented by one example (``MemoryChain-4``...).

    Any ``MemoryChain-<k>`` / ``DeepSea-<k>``, gymnax id, ``gymnasium:<id>`` and
    ``popgym:<class>`` also works.
    """
    names = [t.name for t in _FIXED]
    names += [f.example for _, f in _FAMILIES if f.example]
    for base in _POPGYM:
        names += [base] + [f"{base}-{level}" for level in _POPGYM_LEVELS[1:]]
    return names


#: The memory-chain lengths and deep-sea sizes the paper reports results for.
PAPER_MEMORY_LENGTHS = (4, 8, 16, 32, 64)
PAPER_DEEP_SEA_SIZES = (4, 8, 16)


def paper_tasks() -> list[str]:
    """The paper's tasks as concrete names: every fixed entry, the memory chains and deep seas
    it reports, and the popgym tasks at their default level (Easy).

    The list ``benchmarks/reproduce.py`` sweeps by default.
    """
    names = [t.name for t in _FIXED]
    names += [f"MemoryChain-{k}" for k in PAPER_MEMORY_LENGTHS]
    names += [f"DeepSea-{k}" for k in PAPER_DEEP_SEA_SIZES]
    return names + list(_POPGYM)


def _make_gymnax(task: Task) -> Any:
    """The :class:`JaxEnv` of a gymnax task or of a JAX port (``source == "jax-port"``)."""
    try:
        import gymnax
    except ImportError as exc:
        raise ImportError(
            f"{task.name} is a gymnax task: pip install 'rtrrl[envs]' (gymnax, six)"
        ) from exc
    from rtrrl.envs._gymnax import JaxEnv

    if task.source == "jax-port":
        from rtrrl.envs._popgym_jax import make_port

        env, params = make_port(task.target)
        return JaxEnv(task.name, env, params, task.obs_indices)
    env, params = gymnax.make(task.target, **task.env_kwargs)
    if task.params:
        params = params.replace(**task.params)
    return JaxEnv(task.name, env, params, task.obs_indices)


def _gymnasium_factory(task: Task) -> Any:
    try:
        import gymnasium
    except ImportError as exc:
        raise ImportError(f"{task.name} needs gymnasium: pip install 'rtrrl[envs]'") from exc
    if task.source == "popgym":
        try:
            from popgym import envs as popgym_envs
        except ImportError as exc:
            raise ImportError(
                f"{task.name} is a popgym task: pip install popgym (see docs/tasks.md)"
            ) from exc

        def is_env(obj: Any) -> bool:
            return isinstance(obj, type) and issubclass(obj, gymnasium.Env)

        cls = getattr(popgym_envs, task.target, None)
        if not is_env(cls):
            known = sorted(n for n in dir(popgym_envs) if is_env(getattr(popgym_envs, n)))
            raise UnknownTaskError(task.name, [f"popgym:{n}" for n in known])
        return cls

    def make_one() -> Any:
        try:
            return gymnasium.make(task.target)
        except gymnasium.error.DependencyNotInstalled as exc:
            hint = " (the paper used brax's Swimmer)" if task.name == "Swimmer" else ""
            raise ImportError(
                f"{task.name} ({task.target}) needs extra packages{hint}: {exc}"
            ) from exc

    make_one()  # fail here, with the hint, rather than inside SyncVectorEnv
    return make_one


_JAX_SOURCES = ("gymnax", "jax-port")


def make_jax(task: str) -> Any:
    """The pure-JAX :class:`~rtrrl.envs.JaxEnv` of a gymnax-backed task."""
    resolved = _resolve(task)
    if resolved.source not in _JAX_SOURCES:
        raise ValueError(
            f"task {task!r} is backed by {resolved.source} ({resolved.target}); only "
            "gymnax-backed tasks (and our JAX ports of popgym tasks) have a pure-JAX form. "
            "Use make_host() for it."
        )
    return _make_gymnax(resolved)


def make_host(task: str, num_envs: int = 1) -> HostEnv:
    """A batch of ``num_envs`` auto-resetting environments with NumPy in and out."""
    resolved = _resolve(task)
    if resolved.source in _JAX_SOURCES:
        from rtrrl.envs._gymnax import GymnaxHostEnv

        return GymnaxHostEnv(_make_gymnax(resolved), num_envs)
    from rtrrl.envs._gymnasium import GymnasiumHostEnv

    factory = _gymnasium_factory(resolved)
    max_steps = None
    if resolved.source == "popgym":
        max_steps = getattr(factory(), "max_episode_length", None)
    return GymnasiumHostEnv(task, factory, num_envs, max_episode_steps=max_steps)


def _space_str(spec: Any) -> tuple[str, str]:
    obs = f"Box({spec.obs_dim},)"
    if spec.n_actions is not None:
        return obs, f"Discrete({spec.n_actions})"
    if spec.action_low is None:
        return obs, f"Box({spec.action_dim},) unbounded"
    return obs, f"Box({spec.action_dim},) [{min(spec.action_low):g}, {max(spec.action_high):g}]"


def _available(task: Task) -> str | None:
    """Why a task's package is missing, or ``None`` when it can be built here."""
    needs = {
        "gymnax": "gymnax",
        "jax-port": "gymnax",
        "gymnasium": "gymnasium",
        "popgym": "popgym",
    }[task.source]
    if importlib.util.find_spec(needs) is None:
        return f"needs {needs}"
    if task.name == "Swimmer" and importlib.util.find_spec("mujoco") is None:
        return "needs gymnasium[mujoco]"
    return None


def describe_tasks() -> list[dict[str, Any]]:
    """One row per registry entry for ``rtrrl tasks``.

    Keys: ``name``, ``source``, ``target``, ``observed`` (the observation mask), ``obs``,
    ``action``, ``max_steps``, ``description``, ``available`` (``None`` or why not). Spaces
    are read from the built environment (families: from their example), ``"?"`` when the
    package is missing.
    """
    entries: list[tuple[Task, str]] = [(t, t.name) for t in _FIXED]
    entries += [(f, f.example or f.name) for _, f in _FAMILIES]
    for base in _POPGYM:
        for level in _POPGYM_LEVELS:
            name = base if level == "Easy" else f"{base}-{level}"
            task = _popgym_task(name)
            assert task is not None
            entries.append((task, name))
    rows = []
    for task, concrete in entries:
        missing = _available(task)
        row: dict[str, Any] = {
            "name": task.name,
            "source": task.source,
            "target": _resolve(concrete).target,
            "observed": "all" if task.obs_indices is None else list(task.obs_indices),
            "obs": "?",
            "action": "?",
            "max_steps": None,
            "description": task.description,
            "available": missing,
        }
        if missing is None:
            try:
                spec = _spec_of(concrete)
            except Exception as exc:  # report, don't crash the listing
                row["available"] = f"fails to build: {exc}"
            else:
                row["obs"], row["action"] = _space_str(spec)
                row["max_steps"] = spec.max_episode_steps
        rows.append(row)
    return rows


def _spec_of(name: str) -> Any:
    task = _resolve(name)
    if task.source in _JAX_SOURCES:
        return _make_gymnax(task).spec
    env = make_host(name, 1)
    try:
        return env.spec
    finally:
        env.close()
