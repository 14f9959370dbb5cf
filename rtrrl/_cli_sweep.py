"""``rtrrl sweep``: the command-line face of :mod:`rtrrl.sweeps`.

Takes every flag of ``rtrrl train`` (the run settings and the agent fields all members share,
``--config FILE`` included) and the search space: ``--grid NAME=V1,V2`` and ``--random
NAME=KIND:LOW:HIGH`` (repeatable), ``--samples``, ``--sweep-seed``, or a TOML file
(``--space``); ``--ray [ADDRESS]`` runs the chunks on Ray (:mod:`rtrrl.distributed`).
Nothing here imports a framework until the command runs.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from rtrrl import _cli_train, distributed, presets
from rtrrl.settings import RunSettings

__all__ = ["add_command"]

#: Flags of the search space and the sweep's folder, refused with ``--resume``.
_SWEEP_FLAGS = (
    "grid",
    "random",
    "samples",
    "sweep_seed",
    "space",
    "chunk_size",
    "out",
    "config",
    "tasks",
)


def _pairs(flag: str, items: list[str]) -> dict[str, str]:
    """``["lr_td=1e-4,1e-3"]`` → ``{"lr_td": "1e-4,1e-3"}``; a name given twice is an error."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name or not value.strip():
            example = "lr_td=1e-4,1e-3" if flag == "--grid" else "lr_td=loguniform:1e-5:1e-2"
            raise ValueError(f"{flag} expects NAME=VALUES, e.g. {flag} {example}; got {item!r}")
        if name in out:
            raise ValueError(f"{flag} {name} is given twice; give all its values in one")
        out[name] = value
    return out


def _ray_runner(args: argparse.Namespace) -> Any:
    """The runner of ``--ray`` (``None`` without it): checked before anything is written."""
    resources = distributed.resources_from_args(args, "chunk")
    return None if resources is None else distributed.ray_runner(args.ray, resources)


def _sweep(args: argparse.Namespace) -> int:
    from rtrrl import sweeps as sw

    run, agent, flags = _cli_train._given(args)
    progress = not args.no_progress
    runner = _ray_runner(args)
    if args.resume:
        given = [
            f"--{k.replace('_', '-')}" for k in _SWEEP_FLAGS if getattr(args, k) not in (None, [])
        ]
        given += flags + ["--set"] * bool(args.set) + ["--import"] * bool(args.imports)
        if given:
            raise ValueError(
                f"--resume continues the sweep in {args.resume} with the settings it started "
                f"with; drop {', '.join(given)}"
            )
        summary = sw.resume_sweep(args.resume, progress=progress, runner=runner)
    else:
        search = sw.space_of(
            _pairs("--grid", args.grid),
            _pairs("--random", args.random),
            args.samples,
            args.sweep_seed,
            args.space,
        )
        file_run, file_agent = _cli_train.read_config_file(args.config) if args.config else ({}, {})
        # The sweep varies what it sweeps, whatever the file says; flags given win.
        file_agent = {k: v for k, v in file_agent.items() if k not in search.names()}
        run = {**file_run, **run}
        overrides = {**file_agent, **_cli_train._agent_overrides(args, agent)}
        if args.imports:
            run["imports"] = tuple(args.imports)
        tasks = None
        if args.tasks:
            if "task" in run:
                raise ValueError("give either --task or --tasks")
            tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
            run["task"] = tasks[0]
        quick = "task" not in run
        settings = RunSettings(**({**_cli_train.QUICKSTART, **run} if quick else run))
        if quick:
            print(
                f"rtrrl sweep: no --task given: {settings.task}, {settings.steps} steps per "
                f"seed, evaluation every {settings.eval_every} epochs (the quick start's)"
            )
        own = [*overrides, *search.names()]
        body = presets.body_of(overrides)
        print(f"rtrrl sweep: {presets.describe(settings.preset, settings.task, body, own)}")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = "+".join(tasks) if tasks else settings.task
        out = args.out or f"sweeps/{name}-{stamp}"
        summary = sw.sweep(
            settings=settings,
            tasks=tasks,
            space=search,
            out=out,
            progress=progress,
            chunk_size=args.chunk_size,
            runner=runner,
            continue_same=runner is not None,  # a restarted driver runs its command again
            **overrides,
        )
    _report(summary)
    return 0


def _report(summary: dict[str, Any]) -> None:
    out = summary["out"]
    tasks = summary["tasks"]
    head = (
        f"{', '.join(tasks)}: {summary['settings']} setting(s) × "
        + (f"{len(tasks)} tasks × " if len(tasks) > 1 else "")
        + f"{len(summary['seeds'])} seed(s), {summary['wall_time']:.1f} s."
    )
    if not summary["best_per_task"]:
        print(f"{head} No setting was evaluated yet. Ranking in {out}/ranking.md")
        return
    print(f"{head} Ranking in {out}/ranking.md")
    for task, best in summary["best_per_task"].items():
        values = ", ".join(
            f"{k}={'none' if v is None else f'{v:.4g}'}" for k, v in best["values"].items()
        )
        print(
            f"Best on {task}: {values} (median best evaluation reward {best['median']:.4g} ± "
            f"{best['std']:.3g}); train it with: rtrrl train --config {best['file']}"
        )


def add_command(sub: Any) -> None:
    """Add ``sweep`` to the ``rtrrl`` subparsers ``sub``."""
    p = sub.add_parser(
        "sweep",
        help="train a population over hyper-parameters (fused JAX) and rank the settings",
        description="Train every setting of a search space with every seed, all members in one "
        "vmapped scan of the fused JAX engine, each stopping early on its own, and write a "
        "sweep folder: sweep.json, settings.csv, ranking.md/.csv, curves.csv/.png, best.toml "
        "(rtrrl train --config best.toml trains the best setting), summary.json, and a "
        "checkpoint per chunk of members. Settings vary numbers only (learning rates, "
        "discount, trace decays, clip norm, Adam's constants, dt, tau_min, ...); every other "
        "flag is shared by all members. JAX only (see docs/sweeps.md).",
    )
    p.add_argument("--out", help="sweep folder (default: sweeps/TASK-TIME)")
    p.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the stopped sweep in folder DIR with its own settings",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--tasks",
        metavar="T1,T2,...",
        help="several tasks that are one environment at different parameters (the memory "
        "chains' lengths: MemoryChain-16,MemoryChain-32), every setting on each in one "
        "population, ranked per task, each task's best in best-TASK.toml (instead of --task)",
    )
    space = p.add_argument_group("search space (docs/sweeps.md)")
    space.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="NAME=V1,V2,...",
        help="a grid axis, e.g. --grid lr_td=1e-4,1e-3 --grid clip_norm=none,1; every "
        "combination of the axes is a setting (repeat for several axes)",
    )
    space.add_argument(
        "--random",
        action="append",
        default=[],
        metavar="NAME=KIND:LOW:HIGH",
        help="a random parameter: loguniform:LOW:HIGH (scales spanning decades, e.g. learning "
        "rates), uniform:LOW:HIGH or choice:V1,V2,...; --samples settings are drawn, crossed "
        "with the grid (repeat for several)",
    )
    space.add_argument("--samples", type=int, metavar="N", help="random settings to draw")
    space.add_argument(
        "--sweep-seed",
        type=int,
        metavar="S",
        help="seed of the random draws (default 0): the same seed draws the same settings",
    )
    space.add_argument(
        "--space",
        metavar="FILE",
        help='the space as a TOML file: [grid] (lists), [random] ("KIND:LOW:HIGH"), samples, '
        "seed; or [[settings]], each tried as it is",
    )
    space.add_argument(
        "--chunk-size",
        type=int,
        metavar="K",
        help="members per chunk, each with its own folder and checkpoint, run one after "
        "another (default: one chunk of all members)",
    )
    distributed.add_ray_flags(
        p,
        "chunk",
        where=". The sweep folder (--out) must be on storage every node reaches; the same "
        "command run again continues the sweep",
    )
    _cli_train.add_config_flag(p)
    _cli_train._add_train_flags(p)
    p.set_defaults(func=_sweep)
