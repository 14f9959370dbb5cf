"""The task registry: the paper's task names and how each is built.

A name resolves, in order, to: a Python environment registered in this process
(:func:`register_task`, what ``rtrrl.train(task=make_env)`` calls), a fixed registry entry, a
parametrised family (``MemoryChain-<k>``, ``DeepSea-<k>``, popgym
``<Task>-Easy|-Medium|-Hard``), ``brax:<env>[:KEY=VALUE...]`` (any brax environment,
:mod:`rtrrl.envs._brax`), ``gymnasium:<id>`` or ``popgym:<class>`` (popgym's own NumPy
environment, on the host), any gymnax id, or ``module:function`` (a function of the user's
returning a gymnasium environment, imported by name).

Every popgym task resolves to our pure-JAX port of it (:mod:`rtrrl.envs._popgym_jax`,
source ``"jax-port"``), which trains on the fused path as gymnax tasks do: the paper's six
under the paper's names, every popgym class under its own name too (``CountRecall-Hard``,
``PositionOnlyCartPole``); ``popgym:<class>`` still reaches popgym's originals.

brax tasks (``HalfCheetah``, the authors' brax preset, and every ``brax:`` name) are pure JAX
too (:mod:`rtrrl.envs._brax`).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import re
import sys
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from rtrrl.envs._core import HostEnv, TaskUnavailableError, UnknownTaskError


@dataclass(frozen=True)
class Task:
    """How to build one registry entry.

    Attributes:
        name: registry name (for families, the template, e.g. ``"MemoryChain-<k>"``).
        source: ``"gymnax"``, ``"jax-port"`` (our JAX port of a popgym class), ``"gymnasium"``,
            ``"popgym"``, ``"brax"`` or ``"python"`` (a user's environment factory).
        target: the underlying id (gymnax id, gymnasium id, popgym class name, or the
            ``module:function`` / registered name of a Python factory).
        description: one line for ``rtrrl tasks``.
        obs_indices: observed entries of the flattened observation, ``None`` for all.
        env_kwargs: keyword arguments of the gymnax (or brax) environment's constructor.
        params: overrides of the gymnax ``EnvParams``; for a brax task, rtrrl's options
            ``backend``, ``episode_length`` and ``mask`` (:mod:`rtrrl.envs._brax`).
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

#: Episode lengths of the paper's gymnax rows. The authors' code writes its ``max_ep_length``
#: into gymnax's ``EnvParams.max_steps_in_episode`` (and truncates there too): 1000 steps, the
#: code's default, for the rows of the appendix's Table 3; 500 steps, the default of its
#: ``EnvironmentParams``, for those of Table 2 (``-T500`` names where a row is in both tables).
#: docs/tasks.md, "Paper rows", gives the evidence.
PAPER_EPISODE_STEPS = 1000
PAPER_TABLE2_EPISODE_STEPS = 500


def _steps(n: int) -> dict[str, Any]:
    """The ``EnvParams`` override that cuts a gymnax task's episodes at ``n`` steps."""
    return {"max_steps_in_episode": n}


# The paper's tasks. CartPole observations are (x, x_dot, theta, theta_dot); MountainCar's are
# (position, velocity). The "-vel" / "-pos" masks are the authors' "odd" / "even" masks.
_FIXED: list[Task] = [
    Task(
        "CartPole-vel",
        "gymnax",
        "CartPole-v1",
        "CartPole, only the velocities (x_dot, theta_dot)",
        (1, 3),
        params=_steps(PAPER_TABLE2_EPISODE_STEPS),
    ),
    Task(
        "CartPole-pos",
        "gymnax",
        "CartPole-v1",
        "CartPole, only cart position and pole angle (x, theta)",
        (0, 2),
        params=_steps(PAPER_TABLE2_EPISODE_STEPS),
    ),
    Task(
        "MountainCarContinuous",
        "gymnax",
        "MountainCarContinuous-v0",
        "continuous MountainCar, fully observed (the paper's MountCarCont)",
        params=_steps(PAPER_TABLE2_EPISODE_STEPS),
    ),
    Task(
        "MountainCarContinuous-vel",
        "gymnax",
        "MountainCarContinuous-v0",
        "continuous MountainCar, velocity only",
        (1,),
        params=_steps(PAPER_TABLE2_EPISODE_STEPS),
    ),
    Task(
        "MountainCarContinuous-pos",
        "gymnax",
        "MountainCarContinuous-v0",
        "continuous MountainCar, position only",
        (0,),
        params=_steps(PAPER_TABLE2_EPISODE_STEPS),
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
        params=_steps(PAPER_EPISODE_STEPS),
    ),
    Task(
        "BernoulliBandit",
        "gymnax",
        "BernoulliBandit-misc",
        "two-armed Bernoulli bandit (meta-RL)",
        params=_steps(PAPER_EPISODE_STEPS),
    ),
    Task(
        "GaussianBandit",
        "gymnax",
        "GaussianBandit-misc",
        "two-armed Gaussian bandit (meta-RL)",
        params=_steps(PAPER_EPISODE_STEPS),
    ),
    Task(
        "MetaMaze",
        "gymnax",
        "MetaMaze-misc",
        "maze with a hidden goal, found again and again (meta-RL)",
        params=_steps(PAPER_EPISODE_STEPS),
    ),
    Task(
        "PointRobot",
        "gymnax",
        "PointRobot-misc",
        "point robot reaching a hidden goal again and again (meta-RL)",
        params=_steps(PAPER_EPISODE_STEPS),
    ),
    Task(
        "Reacher",
        "gymnax",
        "Reacher-misc",
        "two-link reacher with a hidden goal (meta-RL)",
        params=_steps(PAPER_EPISODE_STEPS),
    ),
    # Catch ends after 9 steps and UmbrellaChain (above) after 10, before any time limit: with
    # gymnax's defaults they are the authors' environments.
    Task("Catch", "gymnax", "Catch-bsuite", "bsuite catch (10x5 pixels)"),
    # The paper's Swimmer row is gymnax's: Table 2 of the appendix ("experiments on Gymnax")
    # lists it, and its returns (up to 465) fit Swimmer-misc's reward of at most 1 a step, not
    # a velocity reward. In both tables, so 1000 steps here and Swimmer-T500 for Table 2's.
    Task(
        "Swimmer",
        "gymnax",
        "Swimmer-misc",
        "point swimmer steering to a goal past urchins, 1000 steps (gymnax)",
        params=_steps(PAPER_EPISODE_STEPS),
    ),
    # brax (rtrrl.envs._brax): the authors' config/brax.yml preset, which no row of the paper's
    # tables reports; any other brax environment is "brax:<env>".
    Task(
        "HalfCheetah",
        "brax",
        "halfcheetah",
        "brax half-cheetah, spring pipeline (the authors' config/brax.yml); needs rtrrl[brax]",
        params={"backend": "spring", "episode_length": 1000},
    ),
    Task(
        "Swimmer-gymnasium",
        "gymnasium",
        "Swimmer-v5",
        "MuJoCo swimmer on gymnasium, host loop only; needs gymnasium[mujoco]",
    ),
]

#: The family that sets a gymnax task's episode length: ``<task>-T<steps>``.
_EPISODE_STEPS_FAMILY = "<task>-T<steps>"

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
    # The paper's deep sea (gymnax 0.0.8, the authors' pin) maps action 1 to "right" in every
    # cell; gymnax >= 1.0 draws a fixed random map per cell unless randomize_actions=False.
    (
        re.compile(r"DeepSea-(\d+)"),
        Task(
            "DeepSea-<k>",
            "gymnax",
            "DeepSea-bsuite",
            "bsuite deep sea, a k x k grid (exploration); action 1 always goes right",
            params={"randomize_actions": False},
            example="DeepSea-8",
        ),
    ),
    (
        re.compile(r"DeepSea-(\d+)-randomized"),
        Task(
            "DeepSea-<k>-randomized",
            "gymnax",
            "DeepSea-bsuite",
            "deep sea with a fixed random action map per cell (bsuite's; not the paper's)",
            params={"randomize_actions": True},
            example="DeepSea-8-randomized",
        ),
    ),
    (
        re.compile(r"([^:]+)-T(\d+)"),
        Task(
            _EPISODE_STEPS_FAMILY,
            "gymnax",
            "<the task's gymnax id>",
            "a gymnax task with its episodes cut at <steps> steps (Reacher-T500: Table 2's)",
            example="Reacher-T500",
        ),
    ),
]

# The paper's popgym names -> popgym class names (without the difficulty suffix); each class
# has a JAX port in rtrrl.envs._popgym_jax. paper_tasks() lists these six.
_POPGYM: dict[str, tuple[str, str]] = {
    "StatelessCartPole": ("PositionOnlyCartPole", "CartPole with positions only (popgym)"),
    "NoisyStatelessCartPole": ("NoisyPositionOnlyCartPole", "noisy position-only CartPole"),
    "RepeatFirst": ("RepeatFirst", "repeat the first card seen"),
    "RepeatPrevious": ("RepeatPrevious", "repeat the card seen k steps ago"),
    "Minesweeper": ("MineSweeper", "minesweeper; MultiDiscrete (row, col) flattened"),
    "MultiArmedBandit": ("MultiarmedBandit", "multi-armed bandit with resampled arms"),
}
# popgym's other classes, under popgym's names (each has a JAX port too).
_POPGYM_MORE: dict[str, str] = {
    "Autoencode": "watch a deck, then name its suits newest first",
    "Battleship": "battleship on a hidden board; MultiDiscrete (row, col) flattened",
    "Concentration": "concentration: turn cards two at a time to find pairs",
    "CountRecall": "say how often the queried kind of card has been dealt",
    "HigherLower": "guess whether the next card is higher or lower",
    "LabyrinthEscape": "escape a random maze seeing 3x3 cells",
    "LabyrinthExplore": "visit every cell of a random maze seeing 3x3 cells",
    "NoisyPositionOnlyPendulum": "noisy position-only pendulum",
    "PositionOnlyPendulum": "pendulum observing (cos, sin) of the angle only",
    "VelocityOnlyCartPole": "CartPole with velocities only (popgym)",
}
#: The popgym names that task_names() and `rtrrl tasks` list, each at every level.
_POPGYM_LISTED = [*_POPGYM, *_POPGYM_MORE]
# Every popgym name -> (class, description): the paper's names, popgym's other classes, and
# popgym's own names of the paper's six (not listed: they are the paper's rows again).
_POPGYM_NAMES: dict[str, tuple[str, str]] = {
    **{cls: (cls, desc) for cls, desc in _POPGYM.values()},
    **{cls: (cls, desc) for cls, desc in _POPGYM_MORE.items()},
    **_POPGYM,
}


def _popgym_task(name: str) -> Task | None:
    base, _, level = name.partition("-")
    if base not in _POPGYM_NAMES or (level and level not in _POPGYM_LEVELS):
        return None
    cls, desc = _POPGYM_NAMES[base]
    level = level or "Easy"
    # Every popgym class has a pure-JAX port (rtrrl.envs._popgym_jax); popgym's own NumPy
    # environments stay reachable as "popgym:<Class>".
    return Task(name, "jax-port", cls + level, f"{desc} ({level}; JAX port)")


_GYMNAX_INSTALL = "pip install 'rtrrl[envs]' (gymnax, six)"


def _gymnax_ids() -> list[str]:
    if importlib.util.find_spec("gymnax") is None:
        return []
    gymnax = _import_framework("gymnax", "a gymnax id", _GYMNAX_INSTALL)
    return list(gymnax.registered_envs)


# --- brax: "brax:<env>[:KEY=VALUE...]" and the paper's brax rows -----------------------------

_BRAX_INSTALL = "pip install 'rtrrl[brax]'"


def _brax_task(name: str) -> Task:
    """The :class:`Task` of a ``brax:`` name (options parsed, checked when built)."""
    from rtrrl.envs._brax import parse_name

    env_name, options, kwargs = parse_name(name)
    return Task(name, "brax", env_name, "brax environment", env_kwargs=kwargs, params=options)


def _make_brax(task: Task) -> Any:
    """The :class:`~rtrrl.envs._brax.BraxJaxEnv` of a brax task; one line if brax is missing."""
    from rtrrl.envs._brax import AUTHORS_EPISODE_LENGTH, make_brax_env, quiet_mjx

    with quiet_mjx():
        _import_framework("brax", f"task {task.name!r}", _BRAX_INSTALL)
        _import_framework("brax.envs", f"task {task.name!r}", _BRAX_INSTALL)

    return make_brax_env(
        task.name,
        task.target,
        backend=task.params.get("backend"),
        episode_length=task.params.get("episode_length", AUTHORS_EPISODE_LENGTH),
        mask=task.params.get("mask"),
        kwargs=task.env_kwargs,
    )


def _brax_observed(task: Task) -> str | list[int]:
    """The mask of a brax task as ``rtrrl tasks`` shows it (a name, indices or ``"all"``)."""
    mask = task.params.get("mask")
    return "all" if mask is None else mask if isinstance(mask, str) else list(mask)


# --- Python environments: register_task and "module:function" -------------------------------

#: Environments given as Python objects in this process: name -> (the object, its factory).
_PYTHON: dict[str, tuple[Any, Callable[[], Any]]] = {}
#: ``module:function`` (dotted names on both sides): a factory found by importing it.
_IMPORT_NAME = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
#: Every environment a user's factory returned, to catch one object returned twice (two
#: "copies" that would step each other's state).
_RETURNED: weakref.WeakSet[Any] = weakref.WeakSet()


def register_task(task: Any, name: str | None = None) -> str:
    """Make a Python environment a task; returns the task name to train on.

    ``rtrrl.train(task=...)`` calls this for anything that is not a name. A run needs several
    environments (``num_envs`` to train, ``eval_episodes`` to evaluate), so:

    - a *factory* (any callable returning a new ``gymnasium.Env`` per call) is called once per
      environment;
    - an *environment object* is a template: every environment is a ``copy.deepcopy`` of it,
      and the object itself is never stepped (one that cannot be deep-copied is refused:
      give a factory).

    The name is ``"module:function"`` when the factory can be imported by that name (a
    module-level function of an importable module: ``rtrrl eval`` and ``--resume`` find it
    again in any process), else ``"python:<its name>"`` (or ``name``), known in this process
    only: resuming such a run elsewhere needs ``register_task(factory, name)`` first.
    """
    if isinstance(task, str):
        return task
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    factory, label = _factory_of(task)
    if name is None:
        importable = _import_name(task)
        if importable is not None:
            return importable
        base = name = f"python:{label}"
        n = 1
        while name in _PYTHON and _PYTHON[name][0] is not task:
            n += 1
            name = f"{base}-{n}"
    _PYTHON[name] = (task, factory)
    return name


def _is_env(obj: Any) -> bool:
    gymnasium = sys.modules.get("gymnasium")
    return gymnasium is not None and isinstance(obj, gymnasium.Env)


def _factory_of(task: Any) -> tuple[Callable[[], Any], str]:
    """``(factory, label)`` of an environment object or factory given as a task."""
    if _is_env(task):
        spec = getattr(task, "spec", None)
        label = getattr(spec, "id", None) or type(task.unwrapped).__name__

        def copy_of() -> Any:
            try:
                return copy.deepcopy(task)
            except Exception as err:
                raise ValueError(
                    f"the environment object given as the task cannot be copied ({err}); a "
                    "run needs several environments: give a function that returns a new one"
                ) from err

        return copy_of, label
    if callable(task):
        return task, getattr(task, "__qualname__", None) or type(task).__name__
    raise ValueError(
        f"a task is a name (`rtrrl tasks`), a gymnasium environment, or a function returning "
        f"one; got {task!r}"
    )


def _import_name(task: Any) -> str | None:
    """``"module:qualname"`` when ``task`` is reachable by importing that name, else None."""
    module, qualname = getattr(task, "__module__", None), getattr(task, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<" in qualname:
        return None
    obj: Any = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return f"{module}:{qualname}" if obj is task else None


def _python_factory(task: Task) -> Callable[[], Any]:
    """The checked factory of a ``"python"`` task: each call returns a new gymnasium.Env."""
    if task.target in _PYTHON:
        factory = _PYTHON[task.target][1]
    else:
        from rtrrl.settings import import_user_module

        module_name, _, qualname = task.target.partition(":")
        obj: Any = import_user_module(module_name)
        for part in qualname.split("."):
            if not hasattr(obj, part):
                raise UnknownTaskError(
                    task.name,
                    [],
                    detail=f"module {module_name!r} has no attribute {qualname!r}",
                    advice="name a function of that module that returns a gymnasium environment.",
                )
            obj = getattr(obj, part)
        factory = _factory_of(obj)[0]

    def make_one() -> Any:
        import gymnasium

        env = factory()
        if not isinstance(env, gymnasium.Env):
            raise ValueError(
                f"task {task.name!r}: the factory returned {type(env).__name__}, not a "
                "gymnasium.Env; it must return a new gymnasium environment on every call"
            )
        if env in _RETURNED:
            raise ValueError(
                f"task {task.name!r}: the factory returned the same environment object twice; "
                "a run steps several environments at once, so it must build a new one on "
                "every call (or give the object itself as the task: rtrrl copies it)"
            )
        with contextlib.suppress(TypeError):  # no weak references: nothing to track
            _RETURNED.add(env)
        return env

    return make_one


def _family_member(name: str, family: Task, match: re.Match[str]) -> Task:
    """The concrete :class:`Task` of ``name``, which ``family``'s pattern matched."""
    if family.name == _EPISODE_STEPS_FAMILY:
        return _with_episode_steps(name, match.group(1), int(match.group(2)))
    k = int(match.group(1))
    if k < 1:
        raise ValueError(f"{name}: the size must be at least 1")
    if family.target == "MemoryChain-bsuite":
        return Task(name, "gymnax", family.target, family.description, params={"memory_length": k})
    return Task(
        name,
        "gymnax",
        family.target,
        family.description,
        env_kwargs={"size": k},
        params=dict(family.params),
    )


def _with_episode_steps(name: str, base_name: str, steps: int) -> Task:
    """``base_name``'s task with episodes cut at ``steps`` steps (``<task>-T<steps>``).

    The paper's two tables ran the same gymnax task at two episode lengths (1000 and 500
    steps), which is also what separates rtrrl's gymnax defaults from the paper's; the
    suffix names either without a registry entry per length.
    """
    base = _resolve(base_name)
    if base.source != "gymnax":
        raise ValueError(
            f"{name}: -T<steps> sets the episode length of a gymnax task, and {base_name!r} is "
            f"a {base.source} task; use {base_name!r} as it is"
        )
    if steps < 1:
        raise ValueError(f"{name}: an episode must be at least 1 step long")
    return replace(
        base,
        name=name,
        description=f"{base_name} with its episodes cut at {steps} steps",
        params={**base.params, **_steps(steps)},
    )


def _resolve(name: str) -> Task:
    """The :class:`Task` a name stands for, or :class:`UnknownTaskError`."""
    if name in _PYTHON:
        return Task(name, "python", name, "Python environment (this process)")
    for task in _FIXED:
        if task.name == name:
            return task
    for pattern, family in _FAMILIES:
        match = pattern.fullmatch(name)
        if match:
            return _family_member(name, family, match)
    popgym_task = _popgym_task(name)
    if popgym_task is not None:
        return popgym_task
    if name.startswith("brax:"):
        return _brax_task(name)
    if name.startswith("gymnasium:"):
        return Task(name, "gymnasium", name.removeprefix("gymnasium:"), "gymnasium environment")
    if name.startswith("popgym:"):
        return Task(name, "popgym", name.removeprefix("popgym:"), "popgym environment")
    if name.startswith("python:"):
        raise UnknownTaskError(
            name,
            list(_PYTHON),
            advice="It was a Python environment given to rtrrl.train in another process: "
            "register it again with rtrrl.envs.register_task(make_env, "
            f"{name!r}) before rtrrl.resume / rtrrl.evaluate_checkpoint (a module-level "
            "function of an importable module is found by name, from the command line too).",
        )
    if name in _gymnax_ids():
        return Task(name, "gymnax", name, "gymnax environment")
    if _IMPORT_NAME.fullmatch(name):
        return Task(name, "python", name, "Python environment factory")
    raise UnknownTaskError(name, _all_candidates())


def task_definition(name: str) -> dict[str, Any]:
    """What the registry builds for ``name``, as JSON values: its source, the underlying id,
    the observed entries, the constructor's arguments and the parameters (episode length,
    options). A run records it (``config.json``) so that resuming it after rtrrl changed what
    a name stands for (the paper rows did: episode lengths, DeepSea's action mapping,
    Swimmer's source) can say so; it builds nothing.

    Raises:
        UnknownTaskError: ``name`` is not a task.
    """
    task = _resolve(name)
    fields = {
        "source": task.source,
        "target": task.target,
        "obs_indices": task.obs_indices,
        "env_kwargs": task.env_kwargs,
        "params": task.params,
    }
    return json.loads(json.dumps(fields, sort_keys=True, default=repr))


def task_modules(name: str) -> list[str]:
    """The modules of the user's that building task ``name`` would import: the module of a
    ``module:function`` task, or of a gymnasium id written ``gymnasium:module:Env-v0``
    (gymnasium imports it); none for the registry's own tasks and for Python environments
    registered in this process."""
    target = name.removeprefix("gymnasium:")
    if name.startswith("gymnasium:") and ":" in target:
        return [target.partition(":")[0]]
    if name in _PYTHON or not _IMPORT_NAME.fullmatch(name):
        return []
    try:
        source = _resolve(name).source
    except Exception:  # an unknown task is reported when the task is built
        return []
    return [name.partition(":")[0]] if source == "python" else []


def _all_candidates() -> list[str]:
    try:
        gymnax_ids = _gymnax_ids()
    except TaskUnavailableError:
        gymnax_ids = []
    return task_names() + [f.name for _, f in _FAMILIES] + gymnax_ids


def task_names() -> list[str]:
    """Every registered name, families represented by one example (``MemoryChain-4``...).

    Any ``MemoryChain-<k>`` / ``DeepSea-<k>``, gymnax id, ``brax:<env>``, ``gymnasium:<id>``
    and ``popgym:<class>`` also works.
    """
    names = [t.name for t in _FIXED]
    names += [f.example for _, f in _FAMILIES if f.example]
    for base in _POPGYM_LISTED:
        names += [base] + [f"{base}-{level}" for level in _POPGYM_LEVELS[1:]]
    return names


#: The memory-chain lengths and deep-sea sizes the paper reports results for.
PAPER_MEMORY_LENGTHS = (4, 8, 16, 32, 64)
PAPER_DEEP_SEA_SIZES = (4, 8, 16)
#: Fixed entries that are no row of the paper's tables: another version of a row under a
#: distinct name (the paper's own has the row's name), or the authors' brax preset. Not among
#: paper_tasks().
NOT_PAPER_ROWS = frozenset({"Swimmer-gymnasium", "HalfCheetah"})

_T2 = f"-T{PAPER_TABLE2_EPISODE_STEPS}"
#: The environment of every row of the appendix's Tables 2 and 3 (Lemmel & Grosu, AAAI 2025):
#: table -> the row as printed -> the task. Table 3's "MemoryChain" and "DeepSea" rows do not
#: say their length and size, so they have no entry. docs/tasks.md ("Paper rows") gives each
#: row's evidence.
PAPER_ROWS: dict[int, dict[str, str]] = {
    2: {
        "CartPole-vel": "CartPole-vel",
        "CartPole-pos": "CartPole-pos",
        "MetaMaze": "MetaMaze" + _T2,
        "DiscountingChain": "DiscountingChain" + _T2,
        "UmbrellaChain": "UmbrellaChain",
        "BernoulliBandit": "BernoulliBandit" + _T2,
        "GaussianBandit": "GaussianBandit" + _T2,
        "Reacher": "Reacher" + _T2,
        "Swimmer": "Swimmer" + _T2,
        "MountCarCont": "MountainCarContinuous",
        "MountCarCont-vel": "MountainCarContinuous-vel",
        "MountCarCont-pos": "MountainCarContinuous-pos",
        **{f"MemoryChain-{k}": f"MemoryChain-{k}" for k in PAPER_MEMORY_LENGTHS},
        **{f"DeepSea-{k}": f"DeepSea-{k}" for k in PAPER_DEEP_SEA_SIZES},
    },
    3: {
        name: name
        for name in (
            "MetaMaze",
            "DiscountingChain",
            "UmbrellaChain",
            "Catch",
            "BernoulliBandit",
            "GaussianBandit",
            "PointRobot",
            "Reacher",
            "Swimmer",
            "StatelessCartPole",
            "NoisyStatelessCartPole",
            "Minesweeper",
            "MultiArmedBandit",
            "RepeatFirst",
            "RepeatPrevious",
        )
    },
}


def paper_tasks() -> list[str]:
    """The paper's tasks as concrete names: every fixed entry (but ``NOT_PAPER_ROWS``), the
    memory chains and deep seas it reports, and the popgym tasks at their default level (Easy).

    The list ``benchmarks/reproduce.py`` sweeps by default.
    """
    names = [t.name for t in _FIXED if t.name not in NOT_PAPER_ROWS]
    names += [f"MemoryChain-{k}" for k in PAPER_MEMORY_LENGTHS]
    names += [f"DeepSea-{k}" for k in PAPER_DEEP_SEA_SIZES]
    return names + list(_POPGYM)


def _make_gymnax(task: Task) -> Any:
    """The :class:`JaxEnv` of a gymnax task or of a JAX port (``source == "jax-port"``)."""
    gymnax = _import_framework("gymnax", f"task {task.name!r}", _GYMNAX_INSTALL)
    from rtrrl.envs._gymnax import JaxEnv

    if task.source == "jax-port":
        from rtrrl.envs._popgym_jax import make_port

        env, params = make_port(task.target)
        return JaxEnv(task.name, env, params, task.obs_indices)
    env, params = gymnax.make(task.target, **task.env_kwargs)
    if task.params:
        # An override takes its field's type: BernoulliBandit declares max_steps_in_episode a
        # float, which its observation_space selects against other floats.
        params = params.replace(
            **{
                k: float(v) if isinstance(getattr(params, k, None), float) else v
                for k, v in task.params.items()
            }
        )
    return JaxEnv(task.name, env, params, task.obs_indices)


def _import_framework(module: str, what: str, install: str) -> Any:
    """Import the package behind ``task``; a missing one, or one that fails to start (a bad
    ``JAX_ENABLE_X64``), is a one-line :class:`TaskUnavailableError` saying what to do."""
    from rtrrl._registry import described, framework_hint, one_line

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise TaskUnavailableError(
            f"{what} needs {module}, which cannot be imported ({one_line(exc)}): {install}"
        ) from exc
    except Exception as exc:
        raise TaskUnavailableError(
            f"{what} needs {module}, whose import failed with {described(exc)}{framework_hint()}"
        ) from exc


def _gymnasium_make(task: Task) -> Any:
    """``gymnasium.make(task.target)``, its errors made one-line and specific."""
    import gymnasium

    from rtrrl._registry import one_line

    try:
        return gymnasium.make(task.target)
    except gymnasium.error.DependencyNotInstalled as exc:
        hint = ""
        if task.name == "Swimmer-gymnasium":
            hint = " (the paper's Swimmer is gymnax's Swimmer-misc, task 'Swimmer')"
        raise TaskUnavailableError(
            f"task {task.name!r} ({task.target}) needs packages that are not installed{hint}: "
            f"{one_line(exc)}"
        ) from exc
    except (gymnasium.error.UnregisteredEnv, gymnasium.error.DeprecatedEnv) as exc:
        raise UnknownTaskError(
            task.name,
            [f"gymnasium:{k}" for k in gymnasium.registry],
            detail=f"gymnasium: {one_line(exc)}",
            advice="gymnasium.pprint_registry() lists gymnasium's ids; if a module of yours "
            "registers this one, import it first (--import MODULE on the command line).",
        ) from exc
    except ImportError as exc:
        raise TaskUnavailableError(
            f"task {task.name!r} ({task.target}) cannot be made: {one_line(exc)}"
        ) from exc


def _gymnasium_factory(task: Task) -> Any:
    gymnasium = _import_framework("gymnasium", f"task {task.name!r}", "pip install 'rtrrl[envs]'")
    if task.source == "python":
        make_one = _python_factory(task)
        make_one().close()  # fail here, with a clear message, rather than inside SyncVectorEnv
        return make_one
    if task.source == "popgym":
        try:
            from popgym import envs as popgym_envs
        except ImportError as exc:
            raise TaskUnavailableError(
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
        return _gymnasium_make(task)

    make_one().close()  # fail here, with a clear message, rather than inside SyncVectorEnv
    return make_one


_JAX_SOURCES = ("gymnax", "jax-port", "brax")


def _make_pure(task: Task) -> Any:
    """The pure-JAX environment of a task whose source is in ``_JAX_SOURCES``."""
    return _make_brax(task) if task.source == "brax" else _make_gymnax(task)


def make_jax(task: str) -> Any:
    """The pure-JAX :class:`~rtrrl.envs.JaxEnv` of a gymnax-backed or brax task."""
    resolved = _resolve(task)
    if resolved.source not in _JAX_SOURCES:
        raise ValueError(
            f"task {task!r} is backed by {resolved.source} ({resolved.target}); only "
            "gymnax-backed tasks, our JAX ports of popgym tasks and brax tasks have a pure-JAX "
            "form. Use make_host() for it."
        )
    return _make_pure(resolved)


def make_jax_tasks(tasks: Sequence[str]) -> tuple[Any, Any]:
    """One pure-JAX environment for ``tasks`` that are one gymnax environment at different
    parameters (``MemoryChain-16``, ``-32``, ``-64``), and their parameters stacked on a
    leading axis, task by task: what a population whose members train on different tasks
    (:func:`rtrrl.sweep` with several tasks) steps, each member with its task's row. A
    one-line ``ValueError`` for tasks that differ in more (spaces, episode length, the
    environment itself)."""
    from rtrrl.envs._gymnax import stack_params

    tasks = list(tasks)
    if not tasks:
        raise ValueError("make_jax_tasks needs at least one task")
    jax_envs = [make_jax(t) for t in tasks]
    return jax_envs[0], stack_params(tasks, jax_envs)


def make_host(task: str, num_envs: int = 1) -> HostEnv:
    """A batch of ``num_envs`` auto-resetting environments with NumPy in and out."""
    resolved = _resolve(task)
    if resolved.source in _JAX_SOURCES:
        from rtrrl.envs._gymnax import GymnaxHostEnv

        return GymnaxHostEnv(_make_pure(resolved), num_envs)
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
        "brax": "brax",
    }[task.source]
    if importlib.util.find_spec(needs) is None:
        return f"needs {needs}: {_BRAX_INSTALL}" if needs == "brax" else f"needs {needs}"
    if task.name == "Swimmer-gymnasium" and not all(
        importlib.util.find_spec(m) for m in ("mujoco", "imageio")
    ):  # gymnasium[mujoco]
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
    for base in _POPGYM_LISTED:
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
            **({"observed": _brax_observed(task)} if task.source == "brax" else {}),
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
        return _make_pure(task).spec
    env = make_host(name, 1)
    try:
        return env.spec
    finally:
        env.close()
