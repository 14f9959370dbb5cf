"""Run settings: everything about a training run except the agent's hyper-parameters.

:class:`RunSettings` is the one place where a run's defaults are written. ``rtrrl.train``
takes it (or keyword overrides of its fields), ``rtrrl train`` builds its flags from its
fields, and ``config.json`` stores it under ``"protocol"``. The defaults are the paper's
(appendix Table 1): epochs of 1000 steps, evaluation every 100 epochs on 10 episodes, early
stop after 20 evaluations without improvement, at most 50 million steps, batch size 1.

The protocol (``docs/training.md``):

- training is cut into epochs of ``epoch_steps`` agent steps (``num_envs`` environments each);
- every ``eval_every`` epochs (and after the last epoch of the budget) the agent is evaluated
  on ``eval_episodes`` episodes with its parameters frozen: a *copy* of the agent runs with
  ``config.replace(lr_td=0, lr_rnn=0)`` on separate evaluation environments and is then thrown
  away. Adam with a learning rate of 0 moves no parameter, so this is exactly "frozen"; actions
  are sampled from the policy, as in training;
- a seed stops after ``patience`` evaluations without improvement, or when its budget of
  ``steps`` environment steps is spent; its score is its best evaluation reward;
- with ``eval_steps`` set, an evaluation scores as the first public version of the authors'
  code did (their commit 0ad6c8f; since a40fe02 they score as the default does): one
  environment runs ``eval_steps`` steps (episodes restarting as in training), and the score is
  the summed reward divided by the number of episodes that ended in them. The reward of the
  unfinished last episode counts while the episode does not, so this reads higher than the
  mean over complete episodes.

``done`` for the agent is ``terminated | truncated``: a time-limit truncation is treated as
termination, as the spec does; bootstrapping through truncation is not offered.

Numbers are checked the same way wherever they come from (Python, the command line, a
``config.json``): an integer setting takes any integer, NumPy's included (``np.int64(5)`` is
stored as ``5``), never a bool or a float; zero is zero (an error where a setting must be
positive), never "the default".

This module imports nothing beyond the standard library, :mod:`rtrrl._registry` and
:mod:`rtrrl.presets` (both framework-free), so ``rtrrl train --help`` stays cheap.
"""

from __future__ import annotations

import dataclasses
import importlib
import numbers
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal

from rtrrl._registry import canonical_name
from rtrrl.presets import DEFAULT_PRESET, PRESETS

__all__ = [
    "DEFAULT_TASK",
    "EVAL_MAX_STEPS",
    "TASK_FIELDS",
    "ModuleImportError",
    "RunSettings",
    "eval_seed",
    "import_user_module",
    "noise_seed",
    "parse_seeds",
]

#: The task a run trains on when none is named (the quick start of ``rtrrl train``).
DEFAULT_TASK = "MemoryChain-4"
#: Evaluation length bound for tasks without a time limit.
EVAL_MAX_STEPS = 10_000
#: ``rtrrl_spec.Config`` fields that the task decides (``EnvSpec.agent_config``); a run
#: cannot set them.
TASK_FIELDS = ("obs_dim", "n_actions", "action_dim", "action_low", "action_high")


def parse_seeds(text: str) -> int | tuple[int, ...]:
    """``"5"`` → ``5`` (seeds 0..4); ``"0,3,7"`` → ``(0, 3, 7)``: what ``--seeds`` reads."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError(f"--seeds expects N or a comma-separated list of seeds, got {text!r}")
    values = [int(p) for p in parts]
    return values[0] if len(values) == 1 and "," not in text else tuple(values)


def _doc(help: str, **extra: Any) -> dict[str, Any]:
    # Each field's help lives beside its default, for the generated command line.
    return {"help": help, **extra}


@dataclass(frozen=True)
class RunSettings:
    """Everything about a run except the agent's hyper-parameters (see the module docstring).

    ``seeds`` may be given as a count ``N`` (seeds ``0..N-1``) or as the seeds themselves; it
    is stored as a tuple. Every value is checked here, so a zero budget or patience is an
    error wherever it comes from (Python, the command line, a checkpoint). ``backend`` is
    stored as the registry spells it (``"Jax"`` becomes ``"jax"``), so the engine choice and
    the saved run never depend on the case typed.

    ``preset`` names the agent settings the run starts from (:mod:`rtrrl.presets`): the
    agent's hyper-parameters themselves are ``rtrrl_spec.Config``'s, saved beside these.

    ``imports`` names modules that register the task (custom environments, e.g. with
    ``gymnasium.register``); they are imported when the settings are made, so a run read back
    from its ``config.json`` (``rtrrl eval``, ``--resume``) finds its task again.
    """

    task: str = field(
        default=DEFAULT_TASK, metadata=_doc("task name (`rtrrl tasks`)", metavar="TASK")
    )
    backend: str = field(
        default="jax",
        metadata=_doc("backend name (`rtrrl backends`; any case)", metavar="NAME"),
    )
    seeds: tuple[int, ...] = field(
        default=(0, 1, 2, 3, 4),
        metadata=_doc(
            "N trains seeds 0..N-1; a comma-separated list trains those seeds",
            parse=parse_seeds,
            metavar="N|LIST",
            shown="5",
        ),
    )
    steps: int = field(default=50_000_000, metadata=_doc("budget of environment steps per seed"))
    epoch_steps: int = field(default=1000, metadata=_doc("agent steps per epoch"))
    eval_every: int = field(
        default=100, metadata=_doc("evaluate every N epochs (and after the last one)")
    )
    eval_episodes: int = field(default=10, metadata=_doc("episodes per evaluation"))
    eval_steps: int | None = field(
        default=None,
        metadata=_doc(
            "score evaluations as the first public version of the authors' code did: one "
            "environment for S steps (their default 10000), summed reward / episodes ended; "
            "reads higher than the default mean over complete episodes (docs/training.md)",
            metavar="S",
        ),
    )
    patience: int = field(
        default=20, metadata=_doc("stop a seed after this many evaluations without improvement")
    )
    num_envs: int = field(default=1, metadata=_doc("environments per agent (batch size)"))
    dtype: Literal["float32", "float64"] = field(
        default="float32", metadata=_doc("floating-point type of the agent")
    )
    fused: bool | None = field(
        default=None,
        metadata=_doc(
            "the fused JAX engine (environment and agent in one jitted scan): unset picks it "
            "whenever it can run (backend jax, a gymnax task); --no-fused (or --host) forces "
            "the host loop",
            shown="auto",
        ),
    )
    threads: int | None = field(
        default=None,
        metadata=_doc(
            "threads of the framework: torch.set_num_threads for torch and keras-torch; for "
            "JAX it sets XLA_FLAGS, which XLA reads once, before JAX starts. Unset: 1 for "
            "torch on the host loop (one small step does not pay for a second thread), the "
            "framework's own choice otherwise",
            metavar="N",
            shown="auto",
        ),
    )
    preset: str = field(
        default=DEFAULT_PRESET,
        metadata=_doc(
            "the agent settings the run starts from, before its own flags: 'tuned' is "
            "rtrrl's setting and the task's own where it has one (each chosen by a recorded "
            "sweep, printed at the start of the run; rtrrl.presets); 'paper' is the paper's "
            "Table 1 exactly",
            metavar="{" + ",".join(PRESETS) + "}",
        ),
    )
    imports: tuple[str, ...] = field(
        default=(),
        metadata=_doc(
            "import MODULE before the task is looked up (a module of yours that registers a "
            "custom environment, e.g. with gymnasium.register); repeat for several. Saved with "
            "the run, so `rtrrl eval` and --resume import it again",
            cli="--import",
            metavar="MODULE",
            shown="none",
        ),
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", _as_seeds(self.seeds))
        for name in ("steps", "epoch_steps", "eval_every", "eval_episodes", "patience", "num_envs"):
            object.__setattr__(self, name, _positive_int(name, getattr(self, name)))
        for name in ("eval_steps", "threads"):
            if getattr(self, name) is not None:
                value = _positive_int(name, getattr(self, name), "None or ")
                object.__setattr__(self, name, value)
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}")
        for name in ("task", "backend"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise ValueError(f"{name} must be a non-empty string, got {getattr(self, name)!r}")
        object.__setattr__(self, "backend", canonical_name(self.backend))
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if type(self.fused).__name__ == "bool_":  # NumPy's bool is a bool
            object.__setattr__(self, "fused", bool(self.fused))
        if self.fused is not None and not isinstance(self.fused, bool):
            raise ValueError(f"fused must be None, True or False, got {self.fused!r}")
        object.__setattr__(self, "imports", _as_modules(self.imports))
        for module in self.imports:
            import_user_module(module)

    @classmethod
    def from_json(cls, saved: Mapping[str, Any]) -> RunSettings:
        """The settings a ``config.json`` saved (``"protocol"``); settings added since then
        take their defaults, except ``preset``: a run saved before presets existed started
        from Table 1, which is ``"paper"``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(saved) - known)
        if unknown:
            raise ValueError(
                f"run settings {unknown} are unknown to this rtrrl (written by a newer one?)"
            )
        return cls(**{"preset": "paper", **saved})  # ``imports`` are imported again here

    def to_json(self) -> dict[str, Any]:
        """The settings as JSON values (what ``config.json`` stores under ``"protocol"``)."""
        return dataclasses.asdict(self)

    @property
    def steps_per_epoch(self) -> int:
        """Environment steps one epoch of one seed takes."""
        return self.epoch_steps * self.num_envs

    @property
    def max_epochs(self) -> int:
        """Epochs the step budget allows (at least one)."""
        return max(1, self.steps // self.steps_per_epoch)

    def eval_due(self, epoch: int) -> bool:
        """Whether to evaluate after completed epoch ``epoch`` (1-based)."""
        return epoch % self.eval_every == 0 or epoch == self.max_epochs


def _is_int(value: object) -> bool:
    """An integer, NumPy's included, and not a bool (``True`` is no count)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _positive_int(name: str, value: object, prefix: str = "") -> int:
    """``value`` as a Python int, or a ``ValueError`` naming the setting."""
    if not _is_int(value) or int(value) < 1:  # type: ignore[call-overload]
        raise ValueError(f"{name} must be {prefix}a positive int, got {value!r}")
    return int(value)  # type: ignore[call-overload]


def _as_seeds(seeds: int | Sequence[int]) -> tuple[int, ...]:
    if _is_int(seeds):  # a count: ints and NumPy integers alike
        count = int(seeds)  # type: ignore[call-overload]
        if count < 1:
            raise ValueError(f"seeds must be at least 1 (seeds 0..N-1), got {count}")
        return tuple(range(count))
    if isinstance(seeds, str | bytes | Mapping) or not isinstance(seeds, Iterable):
        raise ValueError(f"seeds must be a count or a list of seeds, got {seeds!r}")
    out = tuple(seeds)
    bad = [s for s in out if not _is_int(s) or int(s) < 0]
    if bad:
        raise ValueError(f"seeds must be integers >= 0, got {bad[0]!r} in {seeds!r}")
    if not out:
        raise ValueError("give at least one seed")
    return tuple(int(s) for s in out)


def _as_modules(modules: object) -> tuple[str, ...]:
    if isinstance(modules, str):
        modules = (modules,)
    if not isinstance(modules, Sequence) or not all(
        isinstance(m, str) and m.strip() for m in modules
    ):
        raise ValueError(f"imports must be module names, got {modules!r}")
    return tuple(m.strip() for m in modules)


class ModuleImportError(ModuleNotFoundError):
    """A module named by ``--import`` / ``RunSettings.imports`` / a ``module:function`` task
    is not found; the message says where to put it."""


def import_user_module(name: str) -> ModuleType:
    """Import a module of the user's (``--import``, ``RunSettings.imports``, a task given as
    ``"module:function"``), looking in the working folder too, as ``python -m`` does.

    The ``rtrrl`` console script does not put the working folder on ``sys.path``, so
    ``--import my_envs`` beside ``my_envs.py`` would otherwise not find it. Raises
    :class:`ModuleImportError` (a ``ModuleNotFoundError``) that says where to put the module
    when it cannot be found.
    """
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name is None or not (name == err.name or name.startswith(err.name + ".")):
            raise  # the module was found but imports something missing: its own traceback
        here = os.getcwd()
        if here not in sys.path and "" not in sys.path:
            sys.path.insert(0, here)
            return import_user_module(name)
        raise ModuleImportError(
            f"cannot import module {name!r} ({err}); run from the folder that holds "
            f"{name.split('.')[0]}.py, or install the package that provides it",
            name=name,
        ) from None


def noise_seed(seed: int) -> int:
    """Seed of the training noise generator of agent ``seed`` (not the init's stream)."""
    return 1_000_003 + int(seed)


def eval_seed(seed: int, epoch: int) -> int:
    """Environment and noise seed of the evaluation of agent ``seed`` after ``epoch``."""
    return (2_000_003 * (int(seed) + 1) + int(epoch)) % (2**31 - 1)
