"""``rtrrl train`` and ``rtrrl eval``: the command-line face of :mod:`rtrrl.training`.

The flags of ``rtrrl train`` are generated from the fields of :class:`rtrrl.settings.RunSettings`
and of :class:`rtrrl_spec.Config` (all but those the task decides), so each default is written
once, in its dataclass. A flag not given means "the dataclass's default"; a flag given is
checked by the dataclass, so ``--patience 0`` is an error rather than a silent default.

Built with :mod:`argparse` from ``dataclasses.fields`` and the type hints (no extra
dependency): ``int``, ``float``, ``str``, ``bool`` (``--x`` / ``--no-x``), ``Literal`` choices
and ``X | None`` (``none`` on the command line) are all the fields need.

Nothing here imports a framework until a subcommand runs (``rtrrl_spec`` needs only NumPy).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import sys
import time
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rtrrl import presets
from rtrrl.settings import TASK_FIELDS, RunSettings

__all__ = [
    "QUICKSTART",
    "add_commands",
    "backend_of",
    "import_modules",
    "parse_overrides",
    "read_config_file",
    "run_guarded",
]

#: What ``rtrrl train`` without ``--task`` changes from :class:`RunSettings`' defaults: a
#: small memory task (the settings' default task) that the fused JAX path learns in about a
#: minute on a laptop CPU (README's first command). Flags given explicitly win.
QUICKSTART: dict[str, Any] = {"steps": 30_000, "eval_every": 2}

#: Values of ``--set`` read as Python constants whatever their case (JSON's and Python's names).
_CONSTANTS: dict[str, Any] = {"true": True, "false": False, "null": None, "none": None}

# argparse destinations: "run:<field>" for RunSettings, "agent:<field>" for Config.
_RUN, _AGENT = "run:", "agent:"


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


def _from_file(cls: type, key: str, value: Any) -> Any:
    """A file's value for field ``key`` of ``cls``: ``"none"`` is ``None`` where the field
    takes it (TOML has no null), a list is a tuple (seeds, imports, action bounds)."""
    _, optional = _scalar(typing.get_type_hints(cls)[key])
    if optional and isinstance(value, str) and value.strip().lower() in ("none", "null"):
        return None
    return tuple(value) if isinstance(value, list) else value


def read_config_file(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--config FILE``: run settings and agent fields from a TOML or JSON file.

    Either flat, one ``key = value`` per field of :class:`RunSettings` or
    :class:`rtrrl_spec.Config` (``"none"`` for None; ``rtrrl sweep`` writes its best setting
    so, as ``best.toml``), or a run's ``config.json`` (its ``protocol`` and ``agent``; the
    fields the task decides are left to the task). Returns ``(run settings, agent fields)``.
    """
    import tomllib

    import rtrrl_spec

    text = Path(path).read_text()
    try:
        data = json.loads(text) if str(path).endswith(".json") else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as err:
        kind = "JSON" if str(path).endswith(".json") else "TOML"
        raise ValueError(f"--config {path}: not valid {kind} ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a table of settings")
    run_fields = {f.name for f in dataclasses.fields(RunSettings)}
    agent_fields = {f.name for f in dataclasses.fields(rtrrl_spec.Config)} - set(TASK_FIELDS)
    if isinstance(data.get("protocol"), dict) or isinstance(data.get("agent"), dict):
        # A run's config.json: the task gives the fields it decides again.
        agent = {k: v for k, v in (data.get("agent") or {}).items() if k not in TASK_FIELDS}
        data = {**(data.get("protocol") or {}), **agent}
    run: dict[str, Any] = {}
    agent_values: dict[str, Any] = {}
    for key, value in data.items():
        if key in run_fields:
            run[key] = _from_file(RunSettings, key, value)
        elif key in agent_fields:
            agent_values[key] = _from_file(rtrrl_spec.Config, key, value)
        elif key in TASK_FIELDS:
            raise ValueError(f"--config {path}: {key} comes from the task; remove it")
        else:
            import difflib

            close = difflib.get_close_matches(key, sorted(run_fields | agent_fields), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(
                f"--config {path}: unknown setting {key!r}{hint}; a config file holds fields "
                "of rtrrl.settings.RunSettings and rtrrl_spec.Config (`rtrrl train --help`)"
            )
    return run, agent_values


# --- flags from dataclass fields ------------------------------------------------------------


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _shown(value: Any) -> str:
    """A default as the command line spells it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:_}"
    return str(value)


def _scalar(hint: Any) -> tuple[Any, bool]:
    """``(type, optional)`` of a field's type hint: ``int | None`` → ``(int, True)``."""
    args = typing.get_args(hint)
    if type(None) in args and typing.get_origin(hint) is not typing.Literal:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else hint), True
    return hint, False


def _parser_of(kind: Any, optional: bool) -> tuple[Callable[[str], Any], str]:
    """The string parser and the type's name for a scalar field."""
    base: Callable[[str], Any]
    if typing.get_origin(kind) is typing.Literal:
        base, name = str, "{" + ",".join(map(str, typing.get_args(kind))) + "}"
    elif kind in (int, float, str):
        base, name = kind, kind.__name__
    else:
        raise TypeError(f"no command-line form for {kind!r}")

    def parse(text: str) -> Any:
        if optional and text.strip().lower() in ("none", "null"):
            return None
        try:
            return base(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}") from err

    parse.__name__ = name  # argparse names the type in its messages
    return parse, name + (" or none" if optional else "")


def _add_field(
    group: Any, f: dataclasses.Field, hint: Any, dest: str, help: str, extra: str = ""
) -> None:
    """One flag for field ``f``; its default is shown, never stored (``SUPPRESS``)."""
    help = help.replace("%", "%%")
    kind, optional = _scalar(hint)
    default = f.metadata.get("shown", _shown(f.default))
    if kind is bool:
        shown = f"(bool, default: {default}{extra})"
        group.add_argument(
            _flag(f.name),
            dest=dest,
            action=argparse.BooleanOptionalAction,
            default=argparse.SUPPRESS,
            help=f"{help} {shown}",
        )
        return
    parse = f.metadata.get("parse")
    if parse is not None:
        type_name = f.metadata.get("metavar", "value")
    else:
        parse, type_name = _parser_of(kind, optional)
    metavar = f.metadata.get("metavar")
    if metavar is None:
        metavar = type_name.split(" ")[0].upper() if type_name[0] != "{" else type_name
    group.add_argument(
        _flag(f.name),
        dest=dest,
        type=parse,
        default=argparse.SUPPRESS,
        metavar=metavar,
        help=f"{help} ({type_name}, default: {default}{extra})",
    )


def _attribute_docs(doc: str | None) -> dict[str, str]:
    """``{field: description}`` from a Google-style ``Attributes:`` section."""
    out: dict[str, str] = {}
    lines = inspect.cleandoc(doc or "").splitlines()
    if "Attributes:" not in lines:
        return out
    names: list[str] = []
    text: list[str] = []
    for line in [*lines[lines.index("Attributes:") + 1 :], ""]:
        match = re.match(r"^ {4}(\w+(?:, \w+)*): (.*)$", line)
        if match or not line.startswith(" " * 8):
            for name in names:
                out[name] = " ".join(text).replace("``", "")
            names, text = [], []
        if match:
            names, text = match.group(1).split(", "), [match.group(2)]
        elif line.startswith(" " * 8):
            text.append(line.strip())
        else:
            break
    return out


def _literal_choices(cls: type) -> dict[str, tuple[str, ...]]:
    hints = typing.get_type_hints(cls)
    return {
        name: typing.get_args(hint)
        for name, hint in hints.items()
        if typing.get_origin(hint) is typing.Literal
    }


def _agent_fields() -> tuple[list[dataclasses.Field], dict[str, Any]]:
    import rtrrl_spec

    fields = [f for f in dataclasses.fields(rtrrl_spec.Config) if f.name not in TASK_FIELDS]
    return fields, typing.get_type_hints(rtrrl_spec.Config)


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    import rtrrl_spec

    run = p.add_argument_group(
        "run settings (rtrrl.settings.RunSettings; defaults are the paper's protocol)"
    )
    hints = typing.get_type_hints(RunSettings)
    for f in dataclasses.fields(RunSettings):
        if "cli" in f.metadata:  # a flag of its own, added below
            continue
        quick = f", quick start: {_shown(QUICKSTART[f.name])}" if f.name in QUICKSTART else ""
        if f.name == "task":
            quick = ", the quick start when not given"
        _add_field(run, f, hints[f.name], _RUN + f.name, f.metadata.get("help", ""), quick)
    # The spelling of --no-fused from before the flags were generated.
    run.add_argument(
        "--host",
        dest=_RUN + "fused",
        action="store_const",
        const=False,
        default=argparse.SUPPRESS,
        help="use the host loop even on jax with a gymnax task (same as --no-fused)",
    )
    _add_import_flag(run, {f.name: f for f in dataclasses.fields(RunSettings)}["imports"])
    agent = p.add_argument_group(
        "agent (rtrrl_spec.Config; defaults are the paper's; the task sets obs_dim, n_actions, "
        "action_dim and the action bounds)"
    )
    docs = _attribute_docs(rtrrl_spec.Config.__doc__)
    fields, hints = _agent_fields()
    for f in fields:
        _add_field(agent, f, hints[f.name], _AGENT + f.name, docs.get(f.name, ""))
    agent.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an agent Config field by name, e.g. --set lr_td=3e-3 --set clip_norm=none",
    )


def _add_import_flag(group: Any, f: dataclasses.Field | None = None) -> None:
    """``--import MODULE`` (repeatable): modules imported before the task is looked up."""
    help = (
        f.metadata["help"] + " (default: none)"
        if f is not None
        else "import MODULE before the run's task is looked up (a module of yours that "
        "registers its environment); the modules the run was trained with are imported anyway; "
        "repeat for several"
    )
    group.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help=help.replace("%", "%%"),
    )


def import_modules(args: argparse.Namespace) -> None:
    """Import the ``--import`` modules (before a task is looked up, on every command)."""
    from rtrrl.settings import import_user_module

    for module in getattr(args, "imports", None) or ():
        import_user_module(module)


# --- rtrrl train ----------------------------------------------------------------------------


def _given(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """Run settings and agent fields given on the command line, and their flags."""
    values = vars(args)
    run = {k[len(_RUN) :]: v for k, v in values.items() if k.startswith(_RUN)}
    agent = {k[len(_AGENT) :]: v for k, v in values.items() if k.startswith(_AGENT)}
    flags = [_flag(k) for k in [*run, *agent]]
    return run, agent, flags


def _agent_overrides(args: argparse.Namespace, flags: dict[str, Any]) -> dict[str, Any]:
    """The agent fields of ``--set`` and of the agent flags; a flag that contradicts a
    ``--set`` of the same field is an error, not a silent choice."""
    out = parse_overrides(args.set)
    run_fields = {f.name for f in dataclasses.fields(RunSettings)}
    for key in out:
        if key in run_fields:
            raise ValueError(f"{key} is a run setting, not an agent field: give {_flag(key)}")
    for key, value in flags.items():
        if key in out and out[key] != value:
            raise ValueError(f"{_flag(key)} contradicts --set {key}={out[key]!r}; give only one")
    out.update(flags)
    import rtrrl_spec

    for key, choices in _literal_choices(rtrrl_spec.Config).items():
        if key in out and out[key] not in choices:
            raise ValueError(f"unknown {key} {out[key]!r}; choose one of {', '.join(choices)}")
    return out


def _check_resume_flags(
    args: argparse.Namespace, run: dict[str, Any], agent: dict[str, Any]
) -> None:
    """Settings given with ``--resume`` must be the run's own: a run continues with the
    settings it started with, so a value that differs (``--backend``, ``--dtype``, ``--host``,
    ``--steps``, an agent field, another ``--out``) is refused, naming it, rather than
    silently ignored. Values equal to the run's are accepted (a script may repeat them)."""
    from rtrrl import checkpoint

    flags = [_flag(k) for k in [*run, *agent]]
    flags += ["--set"] * bool(args.set) + ["--out"] * (args.out is not None)
    if not flags:
        return
    try:
        ckpt = checkpoint.load_checkpoint(args.resume, state=False)
        settings, config = checkpoint.read_run(ckpt["run"])
    except checkpoint.CheckpointError as err:
        raise ValueError(
            f"--resume continues a run with its saved settings; drop {', '.join(flags)} ({err})"
        ) from err
    folder = Path(ckpt["path"]).parent
    engine = ckpt["run"].get("engine")
    differ = []
    for key, value in run.items():
        if key == "fused":  # the run's engine is what counts (unset, it was chosen)
            same, saved = value is None or value == (engine == "fused"), f"the {engine} engine"
        else:
            saved = _shown(getattr(settings, key))
            try:
                same = dataclasses.replace(settings, **{key: value}) == settings
            except (TypeError, ValueError):
                same = False
        if not same:
            differ.append(f"{_flag(key)} {_shown(value)} (the run's: {saved})")
    for key, value in {**parse_overrides(args.set), **agent}.items():
        saved = getattr(config, key, "(no such field)")
        if saved != value:
            differ.append(f"{key} = {value!r} (the run's: {saved!r})")
    if args.out is not None and Path(args.out).resolve() != folder.resolve():
        differ.append(f"--out {args.out} (the run's folder: {folder})")
    if differ:
        raise ValueError(
            f"--resume continues the run in {folder} with the settings it started with, and "
            f"{'; '.join(differ)} differ from them: drop {', '.join(flags)} to continue it, or "
            "start a new run with the new settings (rtrrl train --out NEW_FOLDER ...)"
        )


def _train(args: argparse.Namespace) -> int:
    from rtrrl import training

    run, agent, flags = _given(args)
    progress = not args.no_progress
    if args.resume and args.config:
        raise ValueError("--resume continues a run with its saved settings; drop --config")
    if args.resume:
        _check_resume_flags(args, run, agent)
        summary = training.resume(args.resume, progress=progress)
        out = Path(args.resume)
    else:
        file_run, file_agent = read_config_file(args.config) if args.config else ({}, {})
        # The command line wins over the file.
        run = {**file_run, **run}
        overrides = {**file_agent, **_agent_overrides(args, agent)}
        if args.imports:
            run["imports"] = tuple(args.imports)
        quick = "task" not in run
        settings = RunSettings(**({**QUICKSTART, **run} if quick else run))
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = Path(args.out or f"runs/{settings.task}-{settings.backend}-{stamp}")
        if quick:
            print(
                f"rtrrl train: no --task given, running the quick start: {settings.task}, "
                f"{settings.steps} steps per seed, evaluation every {settings.eval_every} epochs"
            )
        body = presets.body_of(overrides)
        line = presets.describe(settings.preset, settings.task, body, overrides)
        print(f"rtrrl train: {line}")
        summary = training.train(settings=settings, out=out, progress=progress, **overrides)
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
    """``rtrrl eval``: reads agents and ``config.json`` only (arrays), never a pickle."""
    from rtrrl import checkpoint, training

    path, note = checkpoint.locate(args.run, args.which)
    if note:
        print(f"rtrrl eval: {note}", file=sys.stderr)
    results = training.evaluate_checkpoint(path, args.backend, args.episodes, args.seed)
    if args.json:
        print(json.dumps({str(seed): float(score) for seed, score in results.items()}))
        return 0
    ckpt = checkpoint.load_checkpoint(path, state=False)
    backend = args.backend or ckpt["run"]["protocol"]["backend"]
    kind = "each seed's best agent" if ckpt["best"] is not None else "the last agents"
    print(f"evaluation of {kind} ({path}) on {backend} (env and noise seed {args.seed}):")
    best = {b["seed"]: b for b in ckpt["best"] or []}
    for seed, score in results.items():
        b = best.get(seed)
        if b is None:
            extra = ""
        elif b["score"] is None:
            extra = f"  (not evaluated in training yet: its agent at epoch {b['epoch']})"
        else:
            extra = f"  (best training evaluation {b['score']:.6g}, after epoch {b['epoch']})"
        print(f"  seed {seed}: {score:.6g}{extra}")
    values = list(results.values())
    import numpy as np

    print(f"  median {float(np.median(values)):.6g} ± {float(np.std(values)):.3g}")
    return 0


def backend_of(args: argparse.Namespace) -> str | None:
    """The backend a ``train`` or ``eval`` command will load: the flag, else the run's (for
    ``--resume`` and ``eval``), else the settings' default; ``None`` when unknown yet."""
    if args.command == "eval":
        return args.backend or _saved_backend(args.run)
    given = vars(args).get(_RUN + "backend")
    if given is not None:
        return given
    return _saved_backend(args.resume) if args.resume else RunSettings().backend


def _saved_backend(run: str) -> str | None:
    path = Path(run)
    path = path if path.is_dir() else path.parent
    try:
        return json.loads((path / "config.json").read_text())["protocol"]["backend"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # the command itself reports a missing or broken run


def add_commands(sub: Any) -> None:
    """Add ``train`` and ``eval`` to the ``rtrrl`` subparsers ``sub``."""
    p = sub.add_parser(
        "train",
        help="train agents with the paper's protocol and write a run folder",
        description="Train agents on a task (paper protocol) and write a run folder: "
        "config.json, metrics.csv, curve.png, summary.json/.md, checkpoint.npz, best.npz. Without "
        f"--task, runs a one-minute quick start on {RunSettings().task}. Every flag not given "
        "takes the default shown.",
    )
    p.add_argument("--out", help="run folder (default: runs/TASK-BACKEND-TIME)")
    p.add_argument(
        "--resume",
        metavar="RUN",
        help="continue the stopped run in folder RUN with its own settings (a setting given "
        "with --resume must equal the run's)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_flag(p)
    _add_train_flags(p)
    p.set_defaults(func=_train)

    e = sub.add_parser(
        "eval",
        help="evaluate a run's checkpoint on any backend",
        description="Evaluate every seed's agent of RUN (its best one by default; frozen, host "
        "env, NumPy noise with a fixed seed, so every backend gets the same environment and "
        "noise). Only arrays are read: nothing in a checkpoint is unpickled.",
    )
    e.add_argument("run", help="run folder (or a checkpoint file: checkpoint.npz, best.npz)")
    e.add_argument(
        "--which",
        choices=("best", "last"),
        help="best (default): each seed's agent at its best evaluation (best.npz; the run's "
        "score is its best evaluation); last: the agents of the last checkpoint "
        "(checkpoint.npz). A run of an earlier rtrrl has no best.npz: without --which it "
        "evaluates its last agents and says so",
    )
    e.add_argument("--backend", help="backend to evaluate on (default: the run's)")
    e.add_argument(
        "--episodes",
        type=int,
        help="score the mean return of this many complete episodes (default: score as the run "
        "did: its eval_episodes, or its --eval-steps)",
    )
    e.add_argument("--seed", type=int, default=0, help="environment and noise seed")
    e.add_argument("--json", action="store_true", help="print {seed: reward} as JSON only")
    _add_import_flag(e)
    e.set_defaults(func=_eval)


def add_config_flag(p: argparse.ArgumentParser) -> None:
    """``--config FILE``: settings from a file (:func:`read_config_file`)."""
    p.add_argument(
        "--config",
        metavar="FILE",
        help="run settings and agent fields from a TOML or JSON file (key = value per field, "
        "e.g. the best.toml of `rtrrl sweep`, or a run's config.json); flags given on the "
        "command line win",
    )


def run_guarded(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a subcommand; expected errors become one clear line on stderr and status 2.

    Expected: bad values (``ValueError``, ``KeyError`` such as an unknown task), a backend
    or a task that cannot load or start here (``BackendError``, ``TaskUnavailableError``), a
    module of ``--import`` that is not found (``ModuleImportError``), files (``OSError``)
    and the training errors (``RuntimeError``). A message of several lines is joined into
    one. Anything else is a bug and keeps its traceback. The ``--import`` modules are
    imported first, so their tasks resolve.
    """
    from rtrrl import _registry
    from rtrrl.envs import TaskUnavailableError
    from rtrrl.interrupts import Terminated
    from rtrrl.settings import ModuleImportError

    expected = (
        _registry.BackendError,
        TaskUnavailableError,
        ModuleImportError,
        ValueError,
        KeyError,
    )
    try:
        import_modules(args)
        if args.command == "eval":
            # Load the backend before the checkpoint is read: a framework that cannot start
            # here (JAX_ENABLE_X64=maybe) is reported as such, not as a damaged checkpoint.
            # (Not for train: its --threads must reach XLA before JAX starts.)
            backend = backend_of(args)
            if backend is not None:
                _registry.get_backend(backend)
        return func(args)
    except KeyboardInterrupt:  # Ctrl-C; a run saved and said how to continue (128 + 2)
        return 130
    except Terminated as stop:  # SIGTERM, likewise (rtrrl.interrupts): 143, 128 + 15
        return int(stop.code)
    except (*expected, OSError, RuntimeError) as err:
        print(f"rtrrl {args.command}: error: {_registry.one_line(err)}", file=sys.stderr)
        return 2
