"""Presets: the agent settings a run starts from, before its own flags.

``rtrrl_spec.Config``'s defaults are the paper's appendix Table 1, and the spec keeps them:
they define the method. What ``rtrrl train`` (and :func:`rtrrl.train`, :func:`rtrrl.sweep`)
starts from is a *preset*, a run setting (``RunSettings.preset``, ``--preset``):

- ``"tuned"`` (the default): rtrrl's setting for every task, :data:`TUNED`, then the task's
  own preset for the run's body (``ctrnn``, ``lru``, ...) where :data:`TASK_PRESETS` has
  one. Each names in its ``chosen_by`` the results file of the runs that chose it, which
  holds their commands.
- ``"paper"``: Table 1 exactly, nothing changed.

A run's own agent fields (flags, ``--set``, ``--config FILE``, keywords of ``rtrrl.train``)
win over its preset. ``config.json`` stores the resolved agent fields, so a saved run never
depends on a preset that changes later; it also stores the preset's name.

This module imports only the standard library, so ``rtrrl train --help`` stays cheap.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

__all__ = [
    "DEFAULT_PRESET",
    "PRESETS",
    "TASK_PRESETS",
    "TUNED",
    "Preset",
    "body_of",
    "describe",
    "preset_fields",
]


@dataclass(frozen=True)
class Preset:
    """Agent fields that replace Table 1's, and the sweep that chose them."""

    fields: Mapping[str, Any]
    #: The evidence: the results file under ``benchmarks/results/sweeps/`` (which holds the
    #: command that produced it).
    chosen_by: str
    #: What the evidence shows, in one line (printed at the start of a run).
    why: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", MappingProxyType(dict(self.fields)))


#: Names ``--preset`` accepts, the default first.
PRESETS: tuple[str, ...] = ("tuned", "paper")
DEFAULT_PRESET = PRESETS[0]

_SWEEPS = "benchmarks/results/sweeps"

#: rtrrl's setting for every task (``--preset tuned``), over Table 1's.
TUNED = Preset(
    {"clip_norm": None, "lr_rnn": 3e-4},
    chosen_by=f"{_SWEEPS}/defaults.md",
    why="Table 1's clip biases the critic: StatelessCartPole gets 1.00 without it, < 0.2 with it",
)

#: A task's own preset for one body, over :data:`TUNED`, where one setting does not serve
#: every task: ``(task, body) -> Preset``.
_LRU_POPGYM = Preset(
    {"lr_td": 1e-4, "lr_rnn": 1e-4},
    chosen_by="benchmarks/results/learning.md",
    why="the LRU on popgym: 1.00 on every seed at 1e-4, 0.55 at Table 1's 1e-3 (no clip, 5 seeds)",
)
_DEEP_SEA_16 = Preset(
    {"clip_norm": 1.0, "lr_rnn": 1e-3},
    chosen_by=f"{_SWEEPS}/DeepSea-16.md",
    why="DeepSea-16 with Table 1's clip: 0.99 on every seed, 0.00 (median) without it",
)
_CARTPOLE_VEL = Preset(
    {"clip_norm": 1.0, "lr_rnn": 1e-3},
    chosen_by="benchmarks/results/learning.md",
    why=(
        "CartPole-vel at the paper's evaluation interval: Table 1 (clip 1.0) a median of 495.6 "
        "over 20 seeds, 9 at 500; without the clip 374 (two 5-seed runs)"
    ),
)
_SWIMMER = Preset(
    {"lr_td": 3e-4},
    chosen_by=f"{_SWEEPS}/Swimmer.md",
    why="Swimmer: every seed 458 or more with lr_td 3e-4, two of five near 23 at Table 1's 1e-3",
)
TASK_PRESETS: Mapping[tuple[str, str], Preset] = MappingProxyType(
    {
        ("CartPole-vel", "ctrnn"): _CARTPOLE_VEL,
        ("DeepSea-16", "ctrnn"): _DEEP_SEA_16,
        ("Swimmer", "ctrnn"): _SWIMMER,
        ("RepeatPrevious", "lru"): _LRU_POPGYM,
        ("StatelessCartPole", "lru"): _LRU_POPGYM,
    }
)


def body_of(fields: Mapping[str, Any]) -> str:
    """The body a run with agent fields ``fields`` trains: ``rtrrl_spec.Config``'s default
    (``"ctrnn"``; this module does not import the spec, a test checks the two agree) unless
    ``fields`` names one."""
    return str(fields.get("body", "ctrnn"))


def preset_fields(preset: str, task: str, body: str = "ctrnn") -> dict[str, Any]:
    """The agent fields preset ``preset`` sets for ``task`` with ``body`` (empty for
    ``"paper"``)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if preset == "paper":
        return {}
    own = TASK_PRESETS.get((task, body))
    return {**TUNED.fields, **(own.fields if own else {})}


def describe(preset: str, task: str, body: str = "ctrnn", own: Iterable[str] = ()) -> str:
    """One line for the start of a run: the preset, what it changes, where it comes from, and
    which of its fields the run sets itself (``own``)."""
    if preset == "paper":
        return "preset paper: the paper's Table 1, unchanged"
    fields = preset_fields(preset, task, body)
    changes = ", ".join(f"{k}={'none' if v is None else v}" for k, v in fields.items())
    task_own = TASK_PRESETS.get((task, body))
    sources = [f"{p.chosen_by}: {p.why}" for p in (TUNED, task_own) if p is not None]
    scope = f"rtrrl's setting and {task}'s own for {body}" if task_own else "rtrrl's setting"
    yours = sorted(set(own) & set(fields))
    kept = f"; the run's own value wins for {', '.join(yours)}" if yours else ""
    return (
        f"preset {preset} ({scope}, over the paper's Table 1; --preset paper for Table 1 "
        f"alone): {changes or 'nothing'}{kept} (chosen by {'; '.join(sources)})"
    )
