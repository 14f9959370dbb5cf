"""Hyper-parameter sweeps: many agents of one structure, differing in numbers, in ONE vmapped
fused scan: :func:`sweep` (``rtrrl sweep``) and :func:`resume_sweep` (``rtrrl sweep --resume``).

A sweep trains every *setting* of a search space (a grid, random draws, or both) with every
seed of its run settings. A setting changes only numbers of the agent (``rtrrl_spec.numbers_of``:
learning rates, discount, trace decays, clip norm, Adam's constants, ``dt``, ``tau_min``, ...),
never its structure (``rtrrl_spec.structure_of``: task, body, Jacobian, sizes, modes), so
all *members* (setting × seed) run in one population of the fused JAX engine
(:class:`rtrrl.fused.FusedEngine` with per-member numbers), under the one training loop
(:func:`rtrrl.loop.run`): each member is evaluated, early-stopped and checkpointed as a seed of
``rtrrl train`` is, and computes what ``rtrrl train`` computes with its setting and seed (to
float rounding: a vmapped computation rounds differently with the population's size). A
member whose agent diverges stops (its best evaluation so far stands); the others go on.

Several tasks that are one environment at different parameters (``tasks``: the memory
chains' lengths, ``MemoryChain-16``, ``-32``, ``-64``) share one population too: every
setting runs on each task, each member stepping its task's environment parameters
(:func:`rtrrl.envs.make_jax_tasks`), and each task's settings are ranked on their own.

The members are cut into *chunks* (``chunk_size``; one chunk by default), each a unit of its
own: a folder ``chunks/NNN/`` with its checkpoint, ``best.npz``, ``metrics.csv`` and
``config.json``, run by :func:`run_chunk` and resumed on its own. Locally the chunks run one
after another; a scheduler can run them anywhere that sees the sweep folder. The sweep folder:

- ``sweep.json``: the sweep's identity (run settings, base agent, space, settings, members);
- ``settings.csv``: member → setting, seed and the setting's values;
- ``ranking.csv`` / ``ranking.md``: per setting, the median ± std over seeds of the best
  evaluation reward, the steps taken, why the seeds stopped; best first;
- ``curves.csv`` (every member's metric rows, with its setting) and ``curves.png`` (median
  evaluation reward over seeds against steps, for the five best settings);
- ``best.toml``: the best setting as a file ``rtrrl train --config best.toml`` runs (with
  several tasks, ``best-<task>.toml`` per task);
- ``summary.json``: the ranking and the best setting as JSON.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import difflib
import io
import itertools
import json
import math
import os
import sys
import tomllib
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import rtrrl_spec
from rtrrl import checkpoint, loop, run_folder
from rtrrl.errors import CheckpointError, RunExistsError
from rtrrl.settings import TASK_FIELDS, RunSettings
from rtrrl_spec.config import NUMERIC_FIELDS

__all__ = [
    "CURVE_FIELDS",
    "SWEEPABLE",
    "Distribution",
    "SearchSpace",
    "config_toml",
    "member_configs",
    "parse_distribution",
    "parse_values",
    "read_space",
    "resume_sweep",
    "run_chunk",
    "space_of",
    "sweep",
    "write_results",
]

#: The agent fields a sweep may vary: the numbers of ``rtrrl_spec.numbers_of`` (and the LRU's
#: initialization ranges), ``clip_norm`` (``None`` included) and ``reward_rate_lr``.
SWEEPABLE = (*NUMERIC_FIELDS, "clip_norm", "reward_rate_lr")
#: Fields that take ``None`` ("none" on the command line and in files).
_OPTIONAL = ("clip_norm", "reward_rate_lr")
#: The version of ``sweep.json`` this rtrrl writes and reads.
SWEEP_FORMAT = 1
SWEEP_JSON = "sweep.json"
CHUNKS = "chunks"
_KINDS = ("uniform", "loguniform", "choice")
_RUN_FIELDS = tuple(f.name for f in dataclasses.fields(RunSettings))
_AGENT_FIELDS = tuple(
    f.name for f in dataclasses.fields(rtrrl_spec.Config) if f.name not in TASK_FIELDS
)
_UNTOUCHED = "nothing was written"


# --- the search space ------------------------------------------------------------------------


def _check_name(name: str) -> None:
    """A one-line error unless ``name`` is an agent number a sweep may vary."""
    if name in SWEEPABLE:
        return
    if name in TASK_FIELDS:
        raise ValueError(f"{name} comes from the task's spaces; a sweep cannot vary it")
    if name in _AGENT_FIELDS:
        raise ValueError(
            f"{name} is part of the agent's structure (its arrays or its code), which all "
            f"members of a sweep share; run one sweep per value (--{name.replace('_', '-')} "
            f"VALUE). A sweep varies: {', '.join(SWEEPABLE)}"
        )
    if name in _RUN_FIELDS:
        raise ValueError(
            f"{name} is a run setting, the same for every member of a sweep; give it as "
            f"--{name.replace('_', '-')} (seeds: every setting is trained with each seed)"
        )
    close = difflib.get_close_matches(name, SWEEPABLE, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ValueError(f"unknown parameter {name!r}{hint}; a sweep varies: {', '.join(SWEEPABLE)}")


def _number(name: str, value: Any) -> float | None:
    """``value`` as a float, or ``None`` ("none") where the field takes it."""
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("none", "null"):
            value = None
        else:
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"{name}: expected a number, got {value!r}") from None
    if value is None:
        if name not in _OPTIONAL:
            raise ValueError(f"{name} cannot be none (only {' and '.join(_OPTIONAL)} can)")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return float(value)


def parse_values(name: str, values: str | Sequence[Any]) -> tuple[float | None, ...]:
    """A grid axis: ``"1e-4,1e-3"`` or a list of numbers (``none`` where the field takes it)."""
    _check_name(name)
    items = values.split(",") if isinstance(values, str) else list(values)
    if not items or any(isinstance(v, str) and not v.strip() for v in items):
        raise ValueError(f"--grid {name}: give comma-separated values, e.g. {name}=0.1,0.2")
    out = tuple(_number(name, v) for v in items)
    twice = sorted({str(v) for v in out if out.count(v) > 1})
    if twice:
        raise ValueError(f"--grid {name} lists {', '.join(twice)} more than once")
    return out


@dataclass(frozen=True)
class Distribution:
    """How a random search draws one parameter: ``uniform`` or ``loguniform`` on
    ``[low, high]`` (log-uniform: uniform in ``log``, for scales that span decades, such as
    learning rates), or ``choice`` among ``values``."""

    kind: str
    low: float = math.nan
    high: float = math.nan
    values: tuple[float | None, ...] = ()

    def draw(self, rng: np.random.Generator) -> float | None:
        """One value from ``rng`` (one draw of it, whatever the kind)."""
        u = float(rng.random())
        if self.kind == "choice":
            return self.values[min(int(u * len(self.values)), len(self.values) - 1)]
        if self.kind == "loguniform":
            return float(
                math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
            )
        return float(self.low + u * (self.high - self.low))

    def text(self) -> str:
        """The form :func:`parse_distribution` reads (``loguniform:1e-05:0.01``)."""
        if self.kind == "choice":
            return "choice:" + ",".join("none" if v is None else repr(v) for v in self.values)
        return f"{self.kind}:{self.low!r}:{self.high!r}"


def parse_distribution(name: str, spec: str | Mapping[str, Any]) -> Distribution:
    """``"loguniform:1e-5:1e-2"``, ``"uniform:0.9:0.999"``, ``"choice:none,0.5,1"``, or a
    table ``{dist = "loguniform", low = 1e-5, high = 1e-2}`` (``values = [...]`` for choice)."""
    _check_name(name)
    if isinstance(spec, Mapping):
        kind = str(spec.get("dist", ""))
        low, high, values = spec.get("low"), spec.get("high"), spec.get("values")
    elif isinstance(spec, str):
        kind, _, rest = spec.partition(":")
        parts = rest.split(":")
        low, high = (parts + [None, None])[:2] if kind != "choice" else (None, None)
        values = rest.split(",") if kind == "choice" else None
        if kind in ("uniform", "loguniform") and len(parts) != 2:
            raise ValueError(f"--random {name}={spec}: write {kind}:LOW:HIGH")
    else:
        raise ValueError(f"--random {name}: expected KIND:LOW:HIGH, got {spec!r}")
    kind = kind.strip().lower()
    if kind not in _KINDS:
        raise ValueError(
            f"--random {name}: unknown distribution {kind!r}; use uniform:LOW:HIGH, "
            "loguniform:LOW:HIGH (scales that span decades) or choice:V1,V2,..."
        )
    if kind == "choice":
        if not values:
            raise ValueError(f"--random {name}: choice needs values, e.g. choice:0.9,0.99")
        return Distribution(kind, values=parse_values(name, values))
    lo, hi = _number(name, low), _number(name, high)
    if lo is None or hi is None or not lo < hi:
        raise ValueError(f"--random {name}: needs LOW < HIGH, got {low!r} and {high!r}")
    if kind == "loguniform" and lo <= 0:
        raise ValueError(f"--random {name}: loguniform needs 0 < LOW < HIGH, got LOW = {lo!r}")
    return Distribution(kind, lo, hi)


@dataclass
class SearchSpace:
    """What a sweep tries: a grid (every combination of its axes) crossed with ``samples``
    random draws (each drawing every random parameter), reproducible from ``seed``; or
    ``listed`` settings, each a ``{name: value}`` of the same names, tried as they are (what
    ``benchmarks/reproduce.py --pack`` runs: the columns of a table that differ in numbers)."""

    grid: dict[str, tuple[float | None, ...]] = field(default_factory=dict)
    random: dict[str, Distribution] = field(default_factory=dict)
    samples: int | None = None
    seed: int = 0
    listed: tuple[dict[str, float | None], ...] = ()

    def __post_init__(self) -> None:
        both = sorted(set(self.grid) & set(self.random))
        if both:
            raise ValueError(f"{', '.join(both)}: both on the grid and random; give one")
        if self.listed:
            self._check_listed()
            return
        if not self.grid and not self.random:
            raise ValueError(
                "nothing to sweep: give --grid NAME=V1,V2 or --random NAME=KIND:LOW:HIGH "
                "(or --space FILE)"
            )
        if self.random and self.samples is None:
            raise ValueError("--random needs --samples N: how many settings to draw")
        if self.samples is not None and not self.random:
            raise ValueError("--samples counts random draws: give --random NAME=KIND:LOW:HIGH")
        if self.samples is not None and (
            isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1
        ):
            raise ValueError(f"--samples must be a positive int, got {self.samples!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"--sweep-seed must be an int >= 0, got {self.seed!r}")

    def _check_listed(self) -> None:
        if self.grid or self.random or self.samples is not None:
            raise ValueError(
                "listed settings are the whole space: give them without a grid, random "
                "parameters or samples"
            )
        names = list(self.listed[0])
        if not names:
            raise ValueError("a listed setting needs at least one value, e.g. {lr_td = 1e-3}")
        for i, values in enumerate(self.listed):
            if sorted(values) != sorted(names):
                raise ValueError(
                    f"listed setting {i} gives {sorted(values)}, setting 0 {sorted(names)}: "
                    "every listed setting gives the same parameters (a value for each)"
                )
        for name in names:
            _check_name(name)
        self.listed = tuple({n: _number(n, v[n]) for n in names} for v in self.listed)

    def settings(self) -> list[dict[str, float | None]]:
        """Every setting: the listed ones as they are; else the grid's combinations (the
        first axis slowest) × the draws.

        The draws come first, all from ``numpy.random.default_rng(seed)``, parameters in
        name order: the same seed and random space give the same draws, whatever the grid.
        """
        if self.listed:
            return [dict(v) for v in self.listed]
        rng = np.random.default_rng(self.seed)
        names = sorted(self.random)
        draws = [{n: self.random[n].draw(rng) for n in names} for _ in range(self.samples or 1)]
        axes = list(self.grid.items())
        points = [
            dict(zip([n for n, _ in axes], combo, strict=True))
            for combo in itertools.product(*[v for _, v in axes])
        ]
        return [{**point, **draw} for point in points for draw in draws]

    def names(self) -> list[str]:
        """The varied parameters: the listed settings' names; else the grid's axes, then the
        random ones in name order."""
        if self.listed:
            return list(self.listed[0])
        return [*self.grid, *sorted(self.random)]

    def to_json(self) -> dict[str, Any]:
        """The space as ``sweep.json`` stores it."""
        return {
            "grid": {k: list(v) for k, v in self.grid.items()},
            "random": {k: d.text() for k, d in self.random.items()},
            "samples": self.samples,
            "seed": self.seed,
            **({"listed": [dict(v) for v in self.listed]} if self.listed else {}),
        }

    @classmethod
    def from_json(cls, saved: Mapping[str, Any]) -> SearchSpace:
        """The space :meth:`to_json` wrote."""
        return cls(
            grid={k: parse_values(k, v) for k, v in saved["grid"].items()},
            random={k: parse_distribution(k, v) for k, v in saved["random"].items()},
            samples=saved["samples"],
            seed=saved["seed"],
            listed=tuple(saved.get("listed", ())),
        )


def read_space(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A space file (TOML): ``[grid]`` (lists), ``[random]`` (``"KIND:LOW:HIGH"`` or
    tables), ``samples`` and ``seed``; returns :func:`space_of`'s keywords."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"--space {path}: not valid TOML ({err})") from err
    unknown = sorted(set(data) - {"grid", "random", "samples", "seed", "settings"})
    if unknown:
        raise ValueError(
            f"--space {path}: unknown key(s) {unknown}; a space file has [grid], [random], "
            "samples and seed, or [[settings]] (run settings and fixed agent fields go in "
            "--config FILE)"
        )
    listed = data.get("settings", [])
    if not isinstance(listed, list) or not all(isinstance(v, dict) for v in listed):
        raise ValueError(
            f"--space {path}: settings must be an array of tables, each [[settings]] with "
            "one value per parameter"
        )
    for table in ("grid", "random"):
        if not isinstance(data.get(table, {}), dict):
            raise ValueError(f"--space {path}: {table} must be a table ([{table}])")
    grid = data.get("grid", {})
    for name, values in grid.items():
        if not isinstance(values, list):
            raise ValueError(f"--space {path}: grid {name} must be a list, e.g. [0.1, 0.2]")
    return {
        "grid": grid,
        "random": data.get("random", {}),
        "samples": data.get("samples"),
        "sweep_seed": data.get("seed"),
        "listed": listed,
    }


def space_of(
    grid: Mapping[str, Any] | None = None,
    random: Mapping[str, Any] | None = None,
    samples: int | None = None,
    sweep_seed: int | None = None,
    space: str | os.PathLike[str] | None = None,
) -> SearchSpace:
    """The search space from keywords and a space file; a parameter in both is an error."""
    from_file = read_space(space) if space is not None else {}
    g, r = dict(from_file.get("grid") or {}), dict(from_file.get("random") or {})
    for name in sorted((set(grid or {}) | set(random or {})) & (set(g) | set(r))):
        raise ValueError(f"{name} is in --space {space} and on the command line; give it once")
    g.update(grid or {})
    r.update(random or {})
    for given, key in ((samples, "samples"), (sweep_seed, "sweep_seed")):
        if given is not None and from_file.get(key) not in (None, given):
            raise ValueError(f"--{key.replace('_', '-')} {given} contradicts --space {space}")
    return SearchSpace(
        grid={k: parse_values(k, v) for k, v in g.items()},
        random={k: parse_distribution(k, v) for k, v in r.items()},
        samples=samples if samples is not None else from_file.get("samples"),
        seed=sweep_seed if sweep_seed is not None else (from_file.get("sweep_seed") or 0),
        listed=tuple(from_file.get("listed") or ()),
    )


# --- the sweep's members and folder ----------------------------------------------------------


def _describe(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={'none' if v is None else f'{v:.4g}'}" for k, v in values.items())


def member_configs(
    base: rtrrl_spec.Config, settings: Sequence[Mapping[str, Any]]
) -> list[rtrrl_spec.Config]:
    """The agent config of every setting: ``base`` with the setting's values; a value the
    config refuses (``gamma = 1.5``, ``tau_min < dt``) is an error naming the setting."""
    configs = []
    for i, values in enumerate(settings):
        try:
            configs.append(base.replace(**values))
        except rtrrl_spec.SpecError as err:
            raise ValueError(
                f"setting {i} ({_describe(values)}): {err}; narrow the sweep's ranges"
            ) from None
    if len({c.reward_rate_lr is None for c in configs}) > 1:
        raise ValueError(
            "reward_rate_lr none and a number change the agent's arrays, which a sweep's "
            "members share: sweep the numbers in one sweep and run none in another"
        )
    return configs


@dataclass
class _Sweep:
    """A sweep folder's ``sweep.json``, read and checked, with what follows from it."""

    folder: Path
    saved: dict[str, Any]
    settings: RunSettings
    base: rtrrl_spec.Config
    space: SearchSpace
    #: Per setting: its values and agent config. With several tasks, every setting of the
    #: space on each task, task by task.
    values: list[dict[str, float | None]]
    configs: list[rtrrl_spec.Config]
    chunk_size: int
    #: The sweep's tasks.
    tasks: list[str]

    @property
    def id(self) -> str:
        return str(self.saved["run"]["id"])

    def task_of(self, setting: int) -> str:
        """A setting's task (the settings are the space's on each task, task by task)."""
        return self.tasks[setting * len(self.tasks) // len(self.values)]

    def members(self) -> list[tuple[int, int, int]]:
        """``(member, setting, seed)``: every setting with each seed, setting by setting."""
        seeds = self.settings.seeds
        return [
            (s * len(seeds) + k, s, seed)
            for s in range(len(self.values))
            for k, seed in enumerate(seeds)
        ]

    def chunks(self) -> list[list[tuple[int, int, int]]]:
        """The members cut into chunks of ``chunk_size``, in member order."""
        m = self.members()
        return [m[i : i + self.chunk_size] for i in range(0, len(m), self.chunk_size)]

    def chunk_folder(self, chunk: int) -> Path:
        return self.folder / CHUNKS / f"{chunk:03d}"


def _read_sweep(folder: str | os.PathLike[str]) -> _Sweep:
    """The sweep in ``folder``, or a one-line ``CheckpointError`` that says what is wrong."""
    path = Path(folder) / SWEEP_JSON
    if not path.exists():
        raise CheckpointError(
            f"no sweep at {folder} (no {SWEEP_JSON}): expected a folder written by "
            f"`rtrrl sweep`; {_UNTOUCHED}"
        )
    try:
        saved = json.loads(path.read_text())
        if saved.get("format") != SWEEP_FORMAT:
            raise ValueError(f"format {saved.get('format')!r}, this rtrrl reads {SWEEP_FORMAT}")
        settings = RunSettings.from_json(saved["protocol"])
        base = rtrrl_spec.Config(**saved["agent"])
        space = SearchSpace.from_json(saved["space"])
        values = [dict(v) for v in saved["settings"]]
        chunk_size = int(saved["chunk_size"])
        tasks = [str(t) for t in saved.get("tasks") or [settings.task]]
        if tasks[0] != settings.task:
            raise ValueError(f"its tasks {tasks} do not start with its task {settings.task!r}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size {chunk_size} is not a positive int")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path} cannot be read ({err}); {_UNTOUCHED}") from err
    if values != space.settings():
        raise CheckpointError(
            f"{path}: its settings are not those of its space (was it edited?); a sweep "
            f"continues as it started: undo the edit or start a new sweep; {_UNTOUCHED}"
        )
    values = [v for _ in tasks for v in values]
    configs = member_configs(base, values)
    return _Sweep(
        Path(folder),
        saved,
        settings,
        base,
        space,
        values,
        configs,
        chunk_size,
        tasks,
    )


def _toml(value: Any) -> str:
    if value is None:
        return '"none"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))


def config_toml(settings: RunSettings, config: rtrrl_spec.Config, comment: str = "") -> str:
    """A file ``rtrrl train --config FILE`` reads: the run settings (those set) and every
    agent field the task does not decide, one ``key = value`` a line (``none`` for None)."""
    lines = [f"# {line}" for line in comment.splitlines()]
    for key, value in settings.to_json().items():
        if value is not None and not (key == "imports" and not value):
            lines.append(f"{key} = {_toml(value)}")
    for key in _AGENT_FIELDS:
        lines.append(f"{key} = {_toml(getattr(config, key))}")
    return "\n".join(lines) + "\n"


def _write_settings_csv(sweep: _Sweep) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    names = sweep.space.names()
    several = len(sweep.tasks) > 1
    writer.writerow(["member", "setting", *["task"] * several, "seed", *names])
    for member, s, seed in sweep.members():
        values = sweep.values[s]
        writer.writerow(
            [member, s, *[sweep.task_of(s)] * several, seed]
            + ["none" if values[n] is None else repr(values[n]) for n in names]
        )
    text = buf.getvalue()
    run_folder.atomic_write(sweep.folder / "settings.csv", lambda f: f.write(text.encode()))


# --- chunks: units of members, each a run of the one training loop ---------------------------

#: The columns of a chunk's ``metrics.csv`` and of the sweep's ``curves.csv``.
CURVE_FIELDS = ("member", "setting", *run_folder.METRIC_FIELDS)


def _write_rows(
    path: Path, rows: Sequence[Mapping[str, Any]], setting_of: Mapping[int, int]
) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CURVE_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in sorted(rows, key=lambda r: (r["member"], r["epoch"])):
        out = {k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        writer.writerow({**out, "setting": setting_of[row["member"]]})
    text = buf.getvalue()
    run_folder.atomic_write(path, lambda f: f.write(text.encode()))


@dataclass
class _ChunkSession(loop.Session):
    """A chunk's bookkeeping: a :class:`rtrrl.loop.Session` whose records are sweep members
    (``SeedRecord.member``), whose ``config.json`` names them (``"sweep"``), and whose files
    are ``config.json``, ``metrics.csv`` (with the member and its setting) and, at the end,
    ``summary.json``."""

    sweep: dict[str, Any] = field(default_factory=dict)

    def run_json(self) -> dict[str, Any]:
        return {**super().run_json(), "sweep": self.sweep}

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        for entry, rec in zip(out["seeds"], self.records, strict=True):
            entry["member"] = rec.member
        return out

    def bar_best(self) -> float:
        """The best setting's median, as the ranking scores it: per setting of this chunk, the
        median over its members evaluated so far of their best evaluation reward; the largest
        of those. (A median over all members would mix settings.)"""
        setting_of = {m: s for m, s, _ in self.sweep["members"]}
        by_setting: dict[int, list[float]] = {}
        for rec in self.records:
            if rec.best > -math.inf:
                by_setting.setdefault(setting_of[rec.member], []).append(rec.best)
        return max((float(np.median(b)) for b in by_setting.values()), default=math.nan)

    def write_files(self, final: bool) -> None:
        run_folder.write_json(self.out / "config.json", self.run_json())
        setting_of = {m: s for m, s, _ in self.sweep["members"]}
        _write_rows(self.out / "metrics.csv", self.rows, setting_of)
        if final:
            run_folder.write_json(self.out / "summary.json", self.summary())


def _load_chunk(sweep: _Sweep, chunk: int) -> dict[str, Any] | None:
    """Chunk ``chunk``'s checkpoint (``None`` before it started), checked to be this sweep's
    and unedited."""
    out = sweep.chunk_folder(chunk)
    if not (out / checkpoint.CHECKPOINT).exists():
        return None
    ckpt = checkpoint.load_checkpoint(out, trusted=False)
    saved = ckpt["run"]
    members = [list(m) for m in sweep.chunks()[chunk]]
    ours = (saved.get("sweep") or {}).get("id") == sweep.id
    if not ours or saved["sweep"].get("members") != members:
        raise CheckpointError(
            f"{ckpt['path']} is not a chunk of the sweep in {sweep.folder} (another sweep's, "
            f"or its {SWEEP_JSON} was edited); {_UNTOUCHED}"
        )
    if (
        saved.get("protocol") != sweep.saved["protocol"]
        or saved.get("agent") != sweep.saved["agent"]
    ):
        raise CheckpointError(
            f"{sweep.folder / SWEEP_JSON} differs from the settings of {ckpt['path']}: it was "
            f"edited. A sweep continues with the settings it started with: undo the edit, or "
            f"start a new sweep; {_UNTOUCHED}"
        )
    checkpoint.check_identity(out, ckpt)
    size = dataclasses.replace(sweep.settings, seeds=tuple(range(len(members))))
    # A member's config: the base may lack what every member sets (a reward rate).
    config = sweep.configs[members[0][1]]
    checkpoint.check_agents(ckpt["agents"], size, config, ckpt["path"])
    return ckpt


def _finished(ckpt: Mapping[str, Any] | None, out: Path) -> bool:
    return (
        ckpt is not None
        and not any(r["active"] for r in ckpt["state"]["records"])
        and (out / "summary.json").exists()
    )


def run_chunk(
    folder: str | os.PathLike[str], chunk: int, *, progress: bool = False, bar: Any = None
) -> dict[str, Any]:
    """Train chunk ``chunk`` of the sweep in ``folder`` to its end: from the start, or on from
    its checkpoint (exactly as if it had not stopped); a finished chunk is left as it is.
    Returns the chunk's summary (``summary.json``).

    Each chunk is a unit of its own (its folder ``chunks/NNN/`` holds everything it needs
    beside ``sweep.json``), so chunks may run one after another (:func:`sweep`) or apart.
    ``bar``: a progress bar to update (the sweep's, over every chunk); else ``progress``
    shows one for this chunk.
    """
    from rtrrl import _registry, fused, threads, training

    sweep = _read_sweep(folder)
    members = sweep.chunks()[chunk]
    out = sweep.chunk_folder(chunk)
    ckpt = _load_chunk(sweep, chunk)
    if _finished(ckpt, out):
        return json.loads((out / "summary.json").read_text())
    settings = sweep.settings
    threads.before_frameworks_load(settings.threads)
    be = _registry.get_backend(settings.backend)
    if ckpt is None:
        out.mkdir(parents=True, exist_ok=True)
        records = [loop.SeedRecord(seed=seed, member=m) for m, _, seed in members]
        meta = {**training._session_meta(be), "id": f"{sweep.id}-{chunk:03d}", "resumed": []}
        rows, wall = [], 0.0
    else:
        records = [loop.SeedRecord(**r) for r in ckpt["state"]["records"]]
        meta = training._resumed_meta(ckpt["run"], be)
        rows, wall = list(ckpt["state"]["rows"]), float(ckpt["state"]["wall"])
    session = _ChunkSession(
        out=out,
        settings=settings,
        config=sweep.base,
        engine="sweep",
        records=records,
        rows=rows,
        wall=wall,
        progress=progress and bar is None,
        meta=meta,
        stop_diverged=True,
        resume_command=f"rtrrl sweep --resume {sweep.folder}",
        shared_bar=bar,
        sweep={"id": sweep.id, "chunk": chunk, "members": [list(m) for m in members]},
    )
    with threads.framework_threads(settings.threads, None):
        engine = fused.FusedEngine(
            settings,
            sweep.base,
            members=[(sweep.configs[s], seed) for _, s, seed in members],
            tasks=[sweep.task_of(s) for _, s, _ in members],
        )
        if ckpt is not None:
            engine.restore(ckpt["agents"], ckpt["state"]["engine_state"])
        return loop.run(session, engine, fresh=ckpt is None)


# --- results: ranking, curves, the best setting ----------------------------------------------


def _member_results(sweep: _Sweep) -> tuple[dict[int, dict[str, Any]], list[dict], float]:
    """Every member's record (as saved, ``None`` for a chunk not started), all metric rows,
    and the wall time of the chunks."""
    records: dict[int, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    wall = 0.0
    for c in range(len(sweep.chunks())):
        ckpt = _load_chunk(sweep, c)
        if ckpt is None:
            continue
        state = ckpt["state"]
        records.update({int(r["member"]): r for r in state["records"]})
        rows += state["rows"]
        wall += float(state["wall"])
    return records, rows, wall


def _rank(sweep: _Sweep, records: Mapping[int, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One entry per setting, best first: the median over its seeds of their best evaluation
    rewards, over the seeds evaluated (equal medians: the higher mean first); a setting with a
    seed not evaluated (not started yet, or diverged before its first evaluation) ranks below
    every setting whose seeds all were. With several tasks, each task's settings are ranked
    on their own (``"rank"`` within the task), task by task."""
    by_setting: dict[int, list[tuple[int, Mapping[str, Any] | None]]] = {}
    for m, s, seed in sweep.members():
        by_setting.setdefault(s, []).append((seed, records.get(m)))
    spe = sweep.settings.steps_per_epoch
    entries = []
    for s, seeds in by_setting.items():
        bests = [
            None if r is None or r["best"] == -math.inf else float(r["best"]) for _, r in seeds
        ]
        done = [b for b in bests if b is not None]
        reasons = [
            "not started" if r is None else (r["stop_reason"] or "running") for _, r in seeds
        ]
        entries.append(
            {
                "setting": s,
                "task": sweep.task_of(s),
                "values": sweep.values[s],
                "median": float(np.median(done)) if done else None,
                "std": float(np.std(done)) if done else None,
                "evaluated": len(done),
                "seeds": [seed for seed, _ in seeds],
                "best": bests,
                "steps": [0 if r is None else int(r["epoch"]) * spe for _, r in seeds],
                # How many seeds stopped for each reason (in order of first appearance), and
                # each seed's reason.
                "stopped": dict(collections.Counter(reasons)),
                "stop_reasons": reasons,
            }
        )

    def key(e: dict[str, Any]) -> tuple[int, bool, float, float, int]:
        # Equal medians (a task's maximum reached by most seeds) rank by the mean over seeds:
        # five seeds at the maximum above three.
        complete = e["evaluated"] == len(e["seeds"])
        done = [b for b in e["best"] if b is not None]
        median = -e["median"] if e["median"] is not None else math.inf
        mean = -float(np.mean(done)) if done else math.inf
        return (sweep.tasks.index(e["task"]), not complete, median, mean, e["setting"])

    entries.sort(key=key)
    for task in sweep.tasks:
        for rank, e in enumerate((e for e in entries if e["task"] == task), 1):
            e["rank"] = rank
    return entries


def _best_of_each_task(ranking: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Each task's best setting (its first, where it was evaluated)."""
    return {e["task"]: e for e in ranking if e["rank"] == 1 and e["median"] is not None}


def _best_file(sweep: _Sweep, task: str) -> Path:
    """``best.toml``; with several tasks, ``best-<task>.toml``."""
    if len(sweep.tasks) == 1:
        return sweep.folder / "best.toml"
    return sweep.folder / f"best-{task.replace('/', '_').replace(':', '_')}.toml"


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.4g}"


def _value(v: float | None) -> str:
    return "none" if v is None else f"{v:.4g}"


def _ranking_files(sweep: _Sweep, ranking: Sequence[Mapping[str, Any]]) -> None:
    names = sweep.space.names()
    several = len(sweep.tasks) > 1
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        [
            "rank",
            *["task"] * several,
            "setting",
            *names,
            "median",
            "std",
            "evaluated",
            "seeds",
            "best_per_seed",
            "steps_per_seed",
            "stopped",
        ]
    )
    for e in ranking:
        writer.writerow(
            [e["rank"], *[e["task"]] * several, e["setting"]]
            + ["none" if e["values"][n] is None else repr(e["values"][n]) for n in names]
            + [
                "" if e["median"] is None else repr(e["median"]),
                "" if e["std"] is None else repr(e["std"]),
            ]
            + [
                e["evaluated"],
                len(e["seeds"]),
                ";".join("" if b is None else repr(b) for b in e["best"]),
            ]
            + [
                ";".join(map(str, e["steps"])),
                ";".join(f"{k}:{n}" for k, n in e["stopped"].items()),
            ]
        )
    text = buf.getvalue()
    run_folder.atomic_write(sweep.folder / "ranking.csv", lambda f: f.write(text.encode()))
    s = sweep.settings
    per_task = len(sweep.values) // len(sweep.tasks)
    if several:
        head = f"{', '.join(sweep.tasks)}: {per_task} settings × {len(sweep.tasks)} tasks"
        best_files = "per task, best-<task>.toml (each task's settings ranked on their own)"
    else:
        head, best_files = f"{s.task}: {per_task} settings", "best.toml"
    lines = [
        f"# Sweep on {head} × {len(s.seeds)} seeds",
        "",
        f"Score: each seed's best evaluation reward; per setting the median ± std over its "
        f"seeds, best first. Budget {s.steps} steps per seed, evaluation every {s.eval_every} "
        f"epochs of {s.steps_per_epoch} steps on {s.eval_episodes} episodes, patience "
        f"{s.patience}. Values: settings.csv; curves: curves.csv; the best setting: "
        f"{best_files}.",
        "",
        "| rank | "
        + "task | " * several
        + "setting | "
        + " | ".join(names)
        + " | median ± std | evaluated | steps per seed (median) | stopped |",
        "|---:|" + "---|" * several + "---:|" + "---:|" * len(names) + "---|---:|---:|---|",
    ]
    for e in ranking:
        cells = [_value(e["values"][n]) for n in names]
        stopped = ", ".join(f"{k} {n}" for k, n in e["stopped"].items())
        task = f"{e['task']} | " if several else ""
        lines.append(
            f"| {e['rank']} | {task}{e['setting']} | {' | '.join(cells)} | {_fmt(e['median'])} ± "
            f"{_fmt(e['std'])} | {e['evaluated']}/{len(e['seeds'])} | "
            f"{int(np.median(e['steps']))} | {stopped} |"
        )
    text = "\n".join(lines) + "\n"
    run_folder.atomic_write(sweep.folder / "ranking.md", lambda f: f.write(text.encode()))


def _plot_curves(
    sweep: _Sweep, ranking: Sequence[Mapping[str, Any]], rows: Sequence[Mapping]
) -> None:
    """``curves.png``: the median over seeds of the evaluation reward against steps, for the
    five best settings (with several tasks, each task's best)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    setting_of = {m: s for m, s, _ in sweep.members()}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    several = len(sweep.tasks) > 1
    for e in list(_best_of_each_task(ranking).values()) if several else ranking[:5]:
        evals: dict[int, list[float]] = {}
        for row in rows:
            score = row["eval_reward"]
            if setting_of[row["member"]] == e["setting"] and not math.isnan(score):
                evals.setdefault(int(row["steps"]), []).append(float(score))
        if evals:
            steps = sorted(evals)
            label = f"#{e['rank']}: " + _describe(e["values"])
            if several:
                label = f"{e['task']} {label}"
            ax.plot(steps, [float(np.median(evals[t])) for t in steps], marker="o", label=label)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    ax.set_xlabel("environment steps (per seed)")
    ax.set_ylabel("evaluation reward (median over seeds)")
    title = "each task's best setting" if several else "the five best settings"
    ax.set_title(f"{', '.join(sweep.tasks)}: {title}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    run_folder.atomic_write(sweep.folder / "curves.png", lambda f: f.write(buf.getvalue()))


def write_results(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Write the sweep's results from its chunks as they stand (``ranking.csv`` / ``.md``,
    ``curves.csv`` / ``.png``, ``best.toml`` or one ``best-<task>.toml`` per task,
    ``summary.json``) and return the summary."""
    sweep = _read_sweep(folder)
    records, rows, wall = _member_results(sweep)
    ranking = _rank(sweep, records)
    _ranking_files(sweep, ranking)
    setting_of = {m: s for m, s, _ in sweep.members()}
    _write_rows(sweep.folder / "curves.csv", rows, setting_of)
    _plot_curves(sweep, ranking, rows)
    best = {}
    for task, top in _best_of_each_task(ranking).items():
        best_file = _best_file(sweep, task)
        comment = (
            f"The best setting on {task} of the sweep in {sweep.folder}: setting "
            f"{top['setting']}, median best evaluation reward {_fmt(top['median'])} ± "
            f"{_fmt(top['std'])} over {top['evaluated']} seeds.\n"
            f"Train it: rtrrl train --config {best_file} --out FOLDER"
        )
        settings = dataclasses.replace(sweep.settings, task=task)
        text = config_toml(settings, sweep.configs[top["setting"]], comment)
        run_folder.atomic_write(best_file, lambda f, text=text: f.write(text.encode()))
        best[task] = {
            "setting": top["setting"],
            "values": top["values"],
            "median": top["median"],
            "std": top["std"],
            "file": str(best_file),
        }
    s = sweep.settings
    single = best.get(s.task) if len(sweep.tasks) == 1 else None
    summary = {
        "task": s.task,
        "tasks": sweep.tasks,
        "backend": s.backend,
        "engine": "sweep",
        "settings": len(sweep.values) // len(sweep.tasks),
        "seeds": list(s.seeds),
        "members": len(sweep.members()),
        "names": sweep.space.names(),
        "ranking": ranking,
        # One task: its best setting's values and file. Several: None, and each task's best
        # in best_per_task.
        "best": None if single is None else single["values"],
        "best_file": None if single is None else single["file"],
        "best_per_task": best,
        "steps": sum(int(r["epoch"]) for r in records.values()) * s.steps_per_epoch,
        "wall_time": round(wall, 2),
        "out": str(sweep.folder),
    }
    run_folder.write_json(sweep.folder / "summary.json", summary)
    return summary


# --- sweep and resume ------------------------------------------------------------------------


def _run_all(folder: Path, progress: bool) -> dict[str, Any]:
    """Every chunk, one after another, under one progress bar; then the results (written on
    an interrupt too, from the chunks' checkpoints)."""
    sweep = _read_sweep(folder)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        s = sweep.settings
        total = len(sweep.members()) * s.max_epochs * s.steps_per_epoch
        done = 0
        for c in range(len(sweep.chunks())):
            ckpt = _load_chunk(sweep, c)
            if ckpt is not None:
                done += sum(int(r["epoch"]) for r in ckpt["state"]["records"]) * s.steps_per_epoch
        bar = tqdm(total=total, initial=done, unit="step", unit_scale=True, smoothing=0.1)
    summary: dict[str, Any] = {}
    try:
        for c in range(len(sweep.chunks())):
            run_chunk(folder, c, bar=bar)
            summary = write_results(folder)  # the ranking so far, after each chunk
    except BaseException:
        try:
            write_results(folder)
        except Exception as err:  # the interrupt or error that got here is the one to report
            print(f"rtrrl sweep: the results could not be written ({err})", file=sys.stderr)
        raise
    finally:
        if bar is not None:
            bar.close()
    return summary


def _check_engine(settings: RunSettings) -> None:
    """Sweeps run on the fused JAX engine only: a one-line error otherwise."""
    from rtrrl import training

    if settings.backend != "jax":
        raise ValueError(
            f"sweeps run on the JAX backend only (every member in one vmapped, jitted scan); "
            f"got backend {settings.backend!r}: use --backend jax, or train one setting at a "
            f"time with rtrrl train --backend {settings.backend}"
        )
    if settings.fused is False:
        raise ValueError("sweeps run on the fused JAX engine; drop --no-fused / --host")
    if training._pick_engine(settings) != "fused":
        raise ValueError(
            f"sweeps run on the fused JAX engine, which needs a task with a JAX implementation "
            f"(a gymnax task or one of the popgym ports: `rtrrl tasks`); {settings.task!r} "
            "has none: train its settings one at a time with rtrrl train"
        )


def _new_folder(out: str | os.PathLike[str] | None) -> Path:
    from rtrrl import training

    if out is not None and (Path(out) / SWEEP_JSON).exists():
        raise RunExistsError(
            f"{out} already holds a sweep; refusing to overwrite it. Continue it with "
            f"`rtrrl sweep --resume {out}` (rtrrl.resume_sweep({str(out)!r})) or choose "
            "another --out"
        )
    return training._prepare_out(out)


def sweep(
    task: str | None = None,
    backend: str | None = None,
    *,
    tasks: Sequence[str] | None = None,
    grid: Mapping[str, Any] | None = None,
    random: Mapping[str, Any] | None = None,
    samples: int | None = None,
    sweep_seed: int | None = None,
    space: str | os.PathLike[str] | SearchSpace | None = None,
    settings: RunSettings | None = None,
    out: str | os.PathLike[str] | None = None,
    progress: bool = False,
    chunk_size: int | None = None,
    runner: Callable[[Path, bool], dict[str, Any]] | None = None,
    continue_same: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """Train every setting of a search space with every seed, all in one population on the
    fused JAX engine, and write a sweep folder (see the module docstring); returns the
    summary (``"ranking"``: per setting, best first; ``"best"``: the best setting's values;
    ``"best_file"``: ``best.toml``; ``"out"``: the folder).

    Args:
        task, backend, settings, **overrides: as for :func:`rtrrl.train`: the run settings
            (seeds are every setting's seeds) and the agent fields that all members share.
        tasks: several tasks that are one environment at different gymnax parameters
            (:func:`rtrrl.envs.make_jax_tasks`: ``["MemoryChain-16", "MemoryChain-32"]``),
            every setting trained on each in the one population and ranked per task
            (``task`` then is the first, or not given).
        grid: ``{name: values}``; every combination is a setting (``"none"`` or ``None`` for
            ``clip_norm``: no clip).
        random: ``{name: "loguniform:1e-5:1e-2"}`` (or ``uniform``, ``choice:a,b``):
            ``samples`` settings drawn with ``numpy.random.default_rng(sweep_seed)``, crossed
            with the grid.
        space: a TOML file with ``[grid]``, ``[random]``, ``samples`` and ``seed`` (merged
            with the keywords), or a :class:`SearchSpace` (then alone).
        out: a new or empty folder; ``None`` writes to a fresh temporary one.
        progress: one tqdm bar over every member's steps.
        chunk_size: members per chunk (a unit with its own folder and checkpoint); ``None``:
            one chunk of every member.
        runner: what runs the chunks, ``runner(folder, progress)`` returning the summary;
            ``None``: one after another, here (:func:`rtrrl.distributed.ray_runner`: on Ray).
        continue_same: when ``out`` holds a sweep of exactly these settings, continue it (as
            :func:`resume_sweep`) instead of refusing: a restarted driver runs its command
            again.

    Raises:
        ValueError: an unknown or structural parameter, a bad range, a setting the agent
            refuses, a backend other than JAX or a task without a JAX implementation.
        RunExistsError: ``out`` holds a sweep, a run, or other files.
    """
    from rtrrl import _registry, envs, threads, training

    if isinstance(space, SearchSpace):
        if grid or random or samples is not None or sweep_seed is not None:
            raise ValueError("give the space either as a SearchSpace or by keywords, not both")
        search = space
    else:
        search = space_of(grid, random, samples, sweep_seed, space)
    run_kw, agent_kw = training._split_overrides(overrides)
    both = sorted(set(agent_kw) & set(search.names()))
    if both:
        raise ValueError(f"{', '.join(both)}: both fixed and swept; give each once")
    if tasks is not None:
        task = _check_tasks(task, tasks)
    if task is not None:
        run_kw["task"] = envs.register_task(task)
    if backend is not None:
        run_kw["backend"] = backend
    run_settings = dataclasses.replace(settings or RunSettings(), **run_kw)
    if run_settings.backend != "jax" or run_settings.fused is False:
        _check_engine(run_settings)  # before a framework loads: the error is all there is
    threads.before_frameworks_load(run_settings.threads)
    be = _registry.get_backend(run_settings.backend)
    training._check_backend_runs(be, run_settings)
    _check_engine(run_settings)
    base = training.agent_config(run_settings, agent_kw)
    task_list = list(tasks) if tasks is not None else [run_settings.task]
    if len(task_list) > 1:
        _check_shared(run_settings, agent_kw, base, task_list)
    values = search.settings()
    member_configs(base, values)
    members = len(task_list) * len(values) * len(run_settings.seeds)
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    saved = {
        "format": SWEEP_FORMAT,
        "protocol": run_settings.to_json(),
        "agent": dataclasses.asdict(base),
        "space": search.to_json(),
        "settings": values,
        **({"tasks": task_list} if len(task_list) > 1 else {}),
        "chunk_size": min(chunk_size or members, members),
        "run": {"id": uuid.uuid4().hex, **training._session_meta(be), "resumed": []},
    }
    if continue_same and out is not None and (Path(out) / SWEEP_JSON).exists():
        _check_same(Path(out), saved)
        return resume_sweep(out, progress=progress, runner=runner)
    folder = _new_folder(out)
    run_folder.write_json(folder / SWEEP_JSON, saved)
    _write_settings_csv(_read_sweep(folder))
    return (runner or _run_all)(folder, progress)


def _check_tasks(task: str | None, tasks: Sequence[str]) -> str:
    """The sweep's task (its first of ``tasks``), or a one-line error for a bad list."""
    if isinstance(tasks, str) or not all(isinstance(t, str) for t in tasks):
        raise ValueError(f"tasks must be a list of task names, got {tasks!r}")
    if not tasks or len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks must name at least one task, each once; got {list(tasks)}")
    if task is not None and task != tasks[0]:
        raise ValueError(f"task {task!r} and tasks {list(tasks)}: give tasks alone")
    return tasks[0]


def _check_shared(
    settings: RunSettings, agent_kw: Mapping[str, Any], base: rtrrl_spec.Config, tasks: list[str]
) -> None:
    """Several tasks in one population: each a fused JAX task whose agent is the first's
    (presets included) and whose environment is the first's at other parameters."""
    from rtrrl import envs, training

    others = [dataclasses.replace(settings, task=envs.register_task(t)) for t in tasks[1:]]
    for other in others:
        _check_engine(other)
    envs.make_jax_tasks(tasks)
    for task, other in zip(tasks[1:], others, strict=True):
        config = training.agent_config(other, agent_kw)
        if config != base:
            differ = [
                f.name
                for f in dataclasses.fields(config)
                if getattr(config, f.name) != getattr(base, f.name)
            ]
            raise ValueError(
                f"{tasks[0]} and {task} give the agent different {', '.join(differ)} (a task's "
                "preset): set those fields yourself, or sweep the tasks apart"
            )


def _check_same(folder: Path, saved: Mapping[str, Any]) -> None:
    """A one-line ``RunExistsError`` unless the sweep in ``folder`` is the one ``saved``
    describes (its identity: everything but the sessions that ran it)."""
    on_disk = _read_sweep(folder).saved
    keys = ("format", "protocol", "agent", "space", "settings", "tasks", "chunk_size")
    differ = [k for k in keys if on_disk.get(k) != json.loads(json.dumps(saved.get(k)))]
    if differ:
        raise RunExistsError(
            f"{folder} holds another sweep ({', '.join(differ)}: not this command's); "
            f"continue it with `rtrrl sweep --resume {folder}` or choose another --out"
        )


def resume_sweep(
    folder: str | os.PathLike[str],
    *,
    progress: bool = False,
    runner: Callable[[Path, bool], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Continue the sweep in ``folder``: finished chunks stay, a stopped one continues from
    its checkpoint exactly, the others start; returns the summary, as :func:`sweep` does.
    ``runner``: as for :func:`sweep`."""
    from rtrrl import _registry, threads, training

    sweep = _read_sweep(folder)
    run_folder.check_writable(
        sweep.folder, "make it writable (or copy the sweep folder somewhere writable)"
    )
    for chunk in range(len(sweep.chunks())):  # every chunk this sweep's, before any write
        _load_chunk(sweep, chunk)
    threads.before_frameworks_load(sweep.settings.threads)
    be = _registry.get_backend(sweep.settings.backend)
    saved = dict(sweep.saved)
    saved["run"] = {
        **saved["run"],
        "resumed": [*saved["run"].get("resumed", []), training._session_meta(be)],
    }
    run_folder.write_json(sweep.folder / SWEEP_JSON, saved)
    return (runner or _run_all)(sweep.folder, progress)
