"""``rtrrl train`` and ``rtrrl eval``: the command-line face of :mod:`rtrrl.train`.

Kept apart from :mod:`rtrrl.cli` so that the command stays import-cheap: nothing here imports
a framework until a subcommand runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["BODIES", "QUICKSTART", "add_commands", "agent_overrides", "parse_overrides"]

#: What ``rtrrl train`` without ``--task`` runs: a small memory task that the fused JAX path
#: learns in about a minute on a laptop CPU (README's first command). Flags given explicitly win.
QUICKSTART = {"task": "MemoryChain-4", "steps": 30_000, "eval_every": 2, "patience": 20}


#: Values of ``--set`` read as Python constants whatever their case (JSON's and Python's names).
_CONSTANTS: dict[str, Any] = {"true": True, "false": False, "null": None, "none": None}


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["lr_td=3e-3", "meta_rl=false"]`` → ``{"lr_td": 0.003, "meta_rl": False}``.

    Values are read as JSON (numbers, ``true``/``false``, ``null``, lists), else as strings;
    ``none`` (any case) is ``None`` too, as Python spells it (``clip_norm=None``).
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE (an agent Config field), got {item!r}")
        word = raw.strip().lower()
        if word in _CONSTANTS:
            value = _CONSTANTS[word]
        else:
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
        out[key.strip()] = value
    return out


#: The recurrent bodies ``--body`` chooses from (the same as ``rtrrl_spec.config.BODIES``,
#: kept here so that ``rtrrl train --help`` does not import the reference).
BODIES = ("ctrnn", "lru", "linear")


def agent_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The agent Config overrides of ``rtrrl train``: ``--set`` items, then ``--body`` and
    ``--freeze-rnn`` (sugar for ``--set body=…`` and ``--set freeze_rnn=true``).

    A flag that contradicts a ``--set`` of the same field is an error, not a silent choice.
    """
    out = parse_overrides(args.set)
    sugar: dict[str, Any] = {}
    if args.body is not None:
        if args.body not in BODIES:
            raise ValueError(f"unknown body {args.body!r}; choose one of {', '.join(BODIES)}")
        sugar["body"] = args.body
    if args.freeze_rnn:
        sugar["freeze_rnn"] = True
    for key, value in sugar.items():
        if key in out and out[key] != value:
            flag = f"--{key.replace('_', '-')}"
            raise ValueError(f"{flag} contradicts --set {key}={out[key]!r}; give only one")
    out.update(sugar)
    if "body" in out and out["body"] not in BODIES:
        raise ValueError(f"unknown body {out['body']!r}; choose one of {', '.join(BODIES)}")
    return out


def _train(args: argparse.Namespace) -> int:
    from rtrrl import train as training

    progress = not args.no_progress
    if args.resume:
        given = [
            f"--{k.replace('_', '-')}"
            for k in ("task", "steps", "eval_every", "seeds", "out", "body")
            if getattr(args, k) is not None
        ]
        given += ["--freeze-rnn"] * bool(args.freeze_rnn) + ["--set"] * bool(args.set)
        if given:
            raise ValueError(
                f"--resume continues a run with its saved settings; drop {', '.join(given)}"
            )
        summary = training.resume(args.resume, progress=progress)
        out = Path(args.resume)
    else:
        overrides = agent_overrides(args)
        quick = args.task is None
        task = args.task or QUICKSTART["task"]
        defaults = QUICKSTART if quick else {}
        steps = args.steps or defaults.get("steps", 50_000_000)
        eval_every = args.eval_every or defaults.get("eval_every", 100)
        patience = args.patience or defaults.get("patience", 20)
        out = Path(args.out or f"runs/{task}-{args.backend}-{time.strftime('%Y%m%d-%H%M%S')}")
        if quick:
            print(
                f"rtrrl train: no --task given, running the quick start: {task}, "
                f"{steps} steps per seed, evaluation every {eval_every} epochs"
            )
        summary = training.train(
            task,
            args.backend,
            seeds=args.seeds or 5,
            steps=steps,
            out=out,
            epoch_steps=args.epoch_steps,
            eval_every=eval_every,
            eval_episodes=args.eval_episodes,
            eval_steps=args.eval_steps,
            patience=patience,
            num_envs=args.num_envs,
            dtype=args.dtype,
            fused=False if args.host else None,
            progress=progress,
            **overrides,
        )
    bests = ", ".join(
        "—" if s["best_eval"] is None else f"{s['best_eval']:.4g}" for s in summary["seeds"]
    )
    median = "—" if summary["median"] is None else f"{summary['median']:.4g}"
    std = "—" if summary["std"] is None else f"{summary['std']:.3g}"
    print(
        f"{summary['task']} ({summary['backend']}, {summary['engine']}): best evaluation reward "
        f"per seed [{bests}]; median {median} ± {std}; {summary['wall_time']:.1f} s. "
        f"Results in {out}/"
    )
    return 0


def _eval(args: argparse.Namespace) -> int:
    from rtrrl import train as training

    results = training.evaluate_checkpoint(args.run, args.backend, args.episodes, args.seed)
    if args.json:
        import json

        print(json.dumps({str(seed): float(score) for seed, score in results.items()}))
        return 0
    backend = args.backend or training.load_checkpoint(args.run)["run"]["protocol"]["backend"]
    print(f"evaluation on {backend} (env and noise seed {args.seed}):")
    for seed, score in results.items():
        print(f"  seed {seed}: {score:.6g}")
    values = list(results.values())
    import numpy as np

    print(f"  median {float(np.median(values)):.6g} ± {float(np.std(values)):.3g}")
    return 0


def add_commands(sub: Any) -> None:
    """Add ``train`` and ``eval`` to the ``rtrrl`` subparsers ``sub``."""
    p = sub.add_parser(
        "train",
        help="train agents with the paper's protocol and write a run folder",
        description="Train SEEDS agents on a task (paper protocol) and write a run folder: "
        "config.json, metrics.csv, curve.png, summary.json/.md, checkpoint.npz. Without "
        "--task, runs a one-minute quick start on " + QUICKSTART["task"] + ".",
    )
    p.add_argument("--task", help="task name (`rtrrl tasks`); default: the quick start")
    p.add_argument("--backend", default="jax", help="backend name (default: jax)")
    p.add_argument("--seeds", type=int, help="number of seeds 0..N-1 (default: 5)")
    p.add_argument("--steps", type=int, help="budget of environment steps per seed")
    p.add_argument("--out", help="run folder (default: runs/TASK-BACKEND-TIME)")
    p.add_argument("--epoch-steps", type=int, default=1000, help="agent steps per epoch")
    p.add_argument("--eval-every", type=int, help="evaluate every N epochs (paper: 100)")
    p.add_argument("--eval-episodes", type=int, default=10, help="episodes per evaluation")
    p.add_argument(
        "--eval-steps",
        type=int,
        metavar="S",
        help="score evaluations as the first public version of the authors' code did: one "
        "environment for S steps (its default 10000), summed reward / episodes ended; reads "
        "higher than the default mean over complete episodes (docs/training.md)",
    )
    p.add_argument("--patience", type=int, help="evaluations without improvement (paper: 20)")
    p.add_argument("--num-envs", type=int, default=1, help="environments per agent (paper: 1)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--host", action="store_true", help="use the host loop even on jax+gymnax")
    p.add_argument(
        "--body",
        metavar="{" + ",".join(BODIES) + "}",
        help="the recurrent body: ctrnn (the paper's CT-RNN, default), lru (online linear "
        "recurrent unit) or linear (no recurrence: linear TD(lambda) on the observation); "
        "same as --set body=NAME",
    )
    p.add_argument(
        "--freeze-rnn",
        action="store_true",
        help="keep the recurrent body (ctrnn or lru) at its initial parameters; only actor and "
        "critic learn (same as --set freeze_rnn=true)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an agent Config field, e.g. --set lr_td=3e-3 --set n_hidden=64",
    )
    p.add_argument("--resume", metavar="RUN", help="continue the stopped run in folder RUN")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)

    e = sub.add_parser(
        "eval",
        help="evaluate a run's checkpoint on any backend",
        description="Evaluate every seed's agent of RUN (frozen, host env, NumPy noise with a "
        "fixed seed, so every backend gets the same environment and noise).",
    )
    e.add_argument("run", help="run folder (or its checkpoint.npz)")
    e.add_argument("--backend", help="backend to evaluate on (default: the run's)")
    e.add_argument(
        "--episodes",
        type=int,
        help="score the mean return of this many complete episodes (default: score as the run "
        "did: its eval_episodes, or its --eval-steps)",
    )
    e.add_argument("--seed", type=int, default=0, help="environment and noise seed")
    e.add_argument("--json", action="store_true", help="print {seed: reward} as JSON only")
    e.set_defaults(func=_eval)


def run_guarded(func: Any, args: argparse.Namespace) -> int:
    """Run a subcommand; expected errors become one clear line on stderr and status 2."""
    from rtrrl import _registry

    try:
        return func(args)
    except KeyboardInterrupt:
        return 130
    except (_registry.BackendError, ValueError, KeyError, OSError, RuntimeError) as err:
        print(f"rtrrl {args.command}: error: {err}", file=sys.stderr)
        return 2
