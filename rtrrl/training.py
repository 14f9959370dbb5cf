"""Training in Python: :func:`train`, :func:`resume` and :func:`evaluate_checkpoint`.

``rtrrl.train``, ``rtrrl.resume`` and ``rtrrl.evaluate_checkpoint`` are these functions.
:func:`train` runs the paper's protocol (:mod:`rtrrl.settings`) for several seeds of one
agent on one task and writes a run folder (``config.json``, ``metrics.csv``, ``curve.png``,
``summary.json``, ``summary.md``, ``checkpoint.npz``); :func:`resume` continues a stopped run
from its checkpoint; :func:`evaluate_checkpoint` scores a run's agents on any backend.

The loop itself is :func:`rtrrl.loop.run`; it drives one of two engines: the fused JAX path
(:mod:`rtrrl.fused`, environment and agent in one ``lax.scan``, all seeds in one ``vmap``),
chosen for the ``jax`` backend on gymnax tasks, or the host loop (:mod:`rtrrl.host`, any
backend and any task).
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import os
import platform
import subprocess
import sys
import tempfile
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import rtrrl_spec
from rtrrl import _registry, checkpoint, loop, presets, run_folder, threads
from rtrrl.checkpoint import BEST, CHECKPOINT, load_checkpoint, read_run
from rtrrl.errors import (
    CheckpointError,
    DivergedError,
    RunExistsError,
    RunFolderError,
    TaskChangedWarning,
    TrainingError,
)
from rtrrl.host import HostEngine, eval_env_size, evaluate_host
from rtrrl.run_folder import agent_label
from rtrrl.settings import TASK_FIELDS, RunSettings

__all__ = [
    "CHECKPOINT",
    "CheckpointError",
    "DivergedError",
    "RunExistsError",
    "RunFolderError",
    "RunSettings",
    "TrainingError",
    "agent_label",
    "evaluate_checkpoint",
    "load_checkpoint",
    "resume",
    "train",
]

_RUN_FIELDS = frozenset(f.name for f in dataclasses.fields(RunSettings))
_AGENT_FIELDS = frozenset(f.name for f in dataclasses.fields(rtrrl_spec.Config)) - set(TASK_FIELDS)
#: The files rtrrl writes in a run folder (``--out`` must not hold files of a user's).
RUN_FILES = (
    "config.json",
    "metrics.csv",
    "curve.png",
    "summary.json",
    "summary.md",
    CHECKPOINT,
    BEST,
    f"{checkpoint.PICKLE_PREFIX}*.pkl",
)
#: Frameworks whose versions a run records when they are loaded.
_FRAMEWORKS = ("jax", "jaxlib", "torch", "keras", "gymnax", "gymnasium", "popgym")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _git_commit() -> dict[str, Any] | None:
    """The commit of the rtrrl checkout this runs from (and whether files differ from it);
    ``None`` for an installed package or without git."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head, "modified": bool(status.strip())}


def _session_meta(backend: Any) -> dict[str, Any]:
    """What one training session ran with: the date, the command line, the versions of rtrrl,
    NumPy, Python, the backend's framework (and of other frameworks loaded), the git commit."""
    import numpy as np

    import rtrrl

    versions = {"rtrrl": rtrrl.__version__, "numpy": np.__version__}
    versions["python"] = platform.python_version()
    try:
        versions["backend"] = f"{backend.name}: {backend.version()}"
    except Exception:  # a third-party backend's version() is informative only
        versions["backend"] = str(getattr(backend, "name", backend))
    for name in _FRAMEWORKS:
        module = sys.modules.get(name)
        if module is not None and isinstance(getattr(module, "__version__", None), str):
            versions[name] = module.__version__
    return {"date": _now(), "command": list(sys.argv), "versions": versions, "git": _git_commit()}


def _new_meta(backend: Any, task: str | None = None) -> dict[str, Any]:
    """``config.json``'s ``"run"`` for a new run: a fresh id (which resume checks: a run
    folder knows its identity), the session's metadata and what the task name stands for
    (:func:`rtrrl.envs.task_definition`, which resume compares)."""
    meta = {"id": uuid.uuid4().hex, **_session_meta(backend), "resumed": []}
    if task is not None:
        meta["task_definition"] = _task_definition(task)
    return meta


def _task_definition(task: str) -> dict[str, Any] | None:
    from rtrrl import envs

    try:
        return envs.task_definition(task)
    except envs.UnknownTaskError:  # a Python task not registered in this process
        return None


def _resumed_meta(
    run_json: dict[str, Any], backend: Any, task: str | None = None
) -> dict[str, Any]:
    """The run's metadata with this session appended to ``"resumed"``; a run of an earlier
    version (no id) gets one now. With ``task``: a :class:`TaskChangedWarning` when the
    name stands for another environment than the run recorded, and the session entry says
    what changed (a run of a version that recorded nothing is taken as it is)."""
    meta = dict(run_json.get("run") or {})
    meta.setdefault("id", uuid.uuid4().hex)
    session = _session_meta(backend)
    saved, now = meta.get("task_definition"), None if task is None else _task_definition(task)
    if saved is not None and now is not None and saved != now:
        changes = _changes(saved, now)
        warnings.warn(
            f"the task {task!r} stands for another environment than when this run started "
            f"({'; '.join(changes)}): the run goes on, on the task as rtrrl defines it now, so "
            "its evaluations before and after this resume are not on the same environment. "
            "To train on one environment throughout, start a new run.",
            TaskChangedWarning,
            stacklevel=3,
        )
        session["task_changed"] = {"was": saved, "now": now}
    if now is not None:
        meta["task_definition"] = now
    meta["resumed"] = [*meta.get("resumed", []), session]
    return meta


def _changes(was: Any, now: Any, where: str = "") -> list[str]:
    """The differences between two JSON values, as ``path: old → new`` lines."""
    if isinstance(was, dict) and isinstance(now, dict):
        return [
            line
            for key in sorted(set(was) | set(now))
            for line in _changes(was.get(key), now.get(key), f"{where}.{key}".lstrip("."))
        ]
    return [] if was == now else [f"{where}: {was!r} → {now!r}"]


def train(
    task: str | Callable[[], Any] | Any = None,
    backend: str | None = None,
    *,
    settings: RunSettings | None = None,
    out: str | os.PathLike[str] | None = None,
    progress: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """Train ``settings.seeds`` agents on ``task`` with the paper's protocol; returns the
    summary (best evaluation per seed, median and std over seeds, steps, wall time) and,
    under ``"out"``, the run folder.

    Args:
        task: a task name of :mod:`rtrrl.envs` (``rtrrl tasks`` lists them), or a custom
            environment: a function returning a new ``gymnasium.Env`` on each call, or a
            ``gymnasium.Env`` object (the run steps deep copies of it, never the object);
            overrides ``settings.task``. A Python environment is named by
            :func:`rtrrl.envs.register_task` (``"module:function"`` when importable, so
            ``rtrrl eval`` and ``--resume`` find it again; see ``docs/tasks.md``).
        backend: a backend name (``rtrrl backends``); overrides ``settings.backend``.
        settings: the run settings; ``None`` is ``RunSettings()`` (the paper's protocol).
        out: run folder: a new or empty folder (one holding a run is refused: use
            :func:`resume`; so is one holding other files, which the run's files could
            replace). ``None`` writes to a fresh temporary folder, named on stderr and in the
            summary's ``"out"``.
        progress: show a tqdm progress bar.
        **overrides: fields of :class:`~rtrrl.settings.RunSettings` (``seeds=5``,
            ``steps=100_000``, ``eval_every=20``, ...) and of :class:`rtrrl_spec.Config`
            (``lr_td=3e-3``, ``body="lru"``, ...), by name.

    Raises:
        ValueError: an unknown or invalid setting or agent field.
        rtrrl.envs.UnknownTaskError: unknown task (the message lists close matches).
        rtrrl.envs.TaskUnavailableError: the task's packages are missing or fail to load.
        rtrrl.BackendError: unknown or uninstalled backend, or one that cannot start here
            (or hold ``dtype``).
        RunExistsError: ``out`` already holds a run, or other files.
        RunFolderError: ``out`` cannot be written (checked before training).
        DivergedError: a NaN or inf appeared in an agent (the last good checkpoint is kept).
    """
    run_kw, agent_kw = _split_overrides(overrides)
    if task is not None:
        from rtrrl import envs

        run_kw["task"] = envs.register_task(task)
    if backend is not None:
        run_kw["backend"] = backend
    settings = dataclasses.replace(settings or RunSettings(), **run_kw)
    threads.before_frameworks_load(settings.threads)
    # Resolve the backend, the task and the engine, and check that the backend computes in
    # the run's dtype, first: a typo or a setup error fails before any file is written.
    be = _registry.get_backend(settings.backend)
    _check_backend_runs(be, settings)
    config = agent_config(settings, agent_kw)
    engine = _pick_engine(settings)
    out_path = _prepare_out(out)
    session = loop.Session(
        out=out_path,
        settings=settings,
        config=config,
        engine=engine,
        records=[loop.SeedRecord(seed=s) for s in settings.seeds],
        progress=progress,
        meta=_new_meta(be, settings.task),
    )
    return {**_run(session, be, None), "out": str(out_path)}


def resume(run: str | os.PathLike[str], *, progress: bool = False) -> dict[str, Any]:
    """Continue the run in folder ``run`` from its last checkpoint; returns the summary.

    On the same backend and engine it continues exactly as if it had never stopped: the
    checkpoint holds the agents, optimizer states, random states, environment states, epoch
    counters, best-so-far, patience counters and the metrics so far.

    Before any work it refuses (:class:`CheckpointError`, saying what to do; nothing is
    written): a checkpoint of another run copied into the folder, a ``config.json`` edited
    since the checkpoint (the fields are named), agent arrays that do not fit the run's
    config or hold NaN (the array is named); and (:class:`RunFolderError`) a folder it cannot
    write. Resume reads the run's own pickles: a gymnasium environment's state
    (``env_state-<hash>.pkl``) and, for checkpoints of earlier versions (formats 1 and 2),
    their ``state.pkl``; a pickle can run code, so resume only runs you trust (yours).
    ``rtrrl eval`` never unpickles anything.

    Returns:
        The summary, as :func:`train` returns it.
    """
    ckpt = load_checkpoint(run, trusted=True)
    _refuse_sweep_chunk(ckpt)
    folder = Path(ckpt["path"]).parent
    if ckpt["best"] is not None:
        raise CheckpointError(
            f"{ckpt['path']} holds each seed's best agent, to evaluate (`rtrrl eval`); a run "
            f"resumes from its folder ({checkpoint.CHECKPOINT}): rtrrl train --resume {folder}"
        )
    settings, config = read_run(ckpt["run"])
    # The folder is the run's (its config.json unedited, no other run's checkpoint copied
    # in), the agents are sound and the folder is writable, before any work.
    checkpoint.check_identity(folder, ckpt)
    checkpoint.check_agents(ckpt["agents"], settings, config, ckpt["path"])
    state = ckpt["state"]
    run_folder.check_writable(
        folder, "make it writable (or copy the run folder somewhere writable) and resume there"
    )
    threads.before_frameworks_load(settings.threads)
    be = _registry.get_backend(settings.backend)
    session = loop.Session(
        out=folder,
        settings=settings,
        config=config,
        engine=ckpt["run"]["engine"],
        records=[loop.SeedRecord(**r) for r in state["records"]],
        rows=list(state["rows"]),
        wall=float(state["wall"]),
        progress=progress,
        meta=_resumed_meta(ckpt["run"], be, settings.task),
    )
    summary = _run(session, be, (ckpt["agents"], state["engine_state"]))
    return {**summary, "out": str(folder)}


def evaluate_checkpoint(
    run: str | os.PathLike[str],
    backend: str | None = None,
    episodes: int | None = None,
    seed: int = 0,
    *,
    which: Literal["best", "last"] | None = None,
    imports: Sequence[str] = (),
) -> dict[int, float]:
    """Evaluate every seed's agent of a run on ``backend``: ``{agent seed: mean return}``.

    Uses the host env reset with ``seed`` and NumPy noise seeded with ``seed`` for every
    backend (see :func:`rtrrl.host.evaluate_host`), so backends agree up to floating-point
    rounding. Scores as the run did (its ``eval_steps``), unless ``episodes`` is given: then
    the mean return of that many complete episodes.

    ``which``: ``"best"`` scores each seed's agent at its best evaluation (``best.npz``: the
    run's score is its best evaluation), ``"last"`` the agents of the last checkpoint;
    ``None`` is ``"best"``, or ``"last"`` with a warning for a run of an earlier rtrrl that
    has no ``best.npz``. A file given as ``run`` is read as it is.

    Nothing is unpickled: only the agents and ``config.json`` are read, which are arrays.
    Nor is any module imported because the checkpoint names it (its ``imports``, a
    ``module:function`` task): checkpoints are files people share. Such a run is scored only
    once its modules are imported: by the caller, or through ``imports`` (``rtrrl eval
    --import MODULE``), which says that you trust them.

    Raises:
        CheckpointError: a missing or damaged checkpoint, agents that do not fit the run's
            config (the array is named), a task whose sizes changed since the run, or a run
            whose task needs modules not imported (the message names them).
    """
    from rtrrl import envs
    from rtrrl.settings import import_user_module

    for module in imports:
        import_user_module(module)
    path, note = checkpoint.locate(run, which)
    if note:
        warnings.warn(note, stacklevel=2)
    ckpt = load_checkpoint(path, state=False)
    _refuse_sweep_chunk(ckpt)
    _refuse_modules_named_by(ckpt["run"], ckpt["path"])
    settings, config = read_run(ckpt["run"])
    checkpoint.check_agents(ckpt["agents"], settings, config, ckpt["path"])
    if episodes is not None:
        settings = dataclasses.replace(settings, eval_episodes=episodes, eval_steps=None)
    be = _registry.get_backend(backend or settings.backend)
    env = envs.make_host(settings.task, num_envs=eval_env_size(settings))
    try:
        checkpoint.check_task(env.spec, config, settings.task)
        with threads.framework_threads(settings.threads, threads.HOST_TORCH_THREADS):
            return {
                agent_seed: evaluate_host(
                    be,
                    config,
                    {k: v[i] for k, v in ckpt["agents"].items()},
                    env,
                    seed,
                    settings.eval_steps,
                )
                for i, agent_seed in enumerate(settings.seeds)
            }
    finally:
        env.close()


def modules_named_by(run_json: dict[str, Any]) -> list[str]:
    """The modules a saved run would import to build its task: its ``imports`` and those of
    its task (:func:`rtrrl.envs.task_modules`)."""
    from rtrrl import envs

    protocol = run_json.get("protocol") or {}
    modules = [str(m) for m in protocol.get("imports") or ()]
    modules += envs.task_modules(str(protocol.get("task", "")))
    return list(dict.fromkeys(modules))


def _refuse_sweep_chunk(ckpt: dict[str, Any]) -> None:
    """A ``CheckpointError`` for a chunk of a sweep (``rtrrl sweep``): its members differ in
    their numbers, which a run's config cannot say."""
    if ckpt["run"].get("engine") == "sweep":
        sweep = Path(ckpt["path"]).parent.parent.parent
        raise CheckpointError(
            f"{ckpt['path']} is a chunk of the sweep in {sweep}, whose members differ in "
            f"their settings: continue it with `rtrrl sweep --resume {sweep}`; to evaluate a "
            f"setting, train it (`rtrrl train --config {sweep / 'best.toml'}` for the best)"
        )


def _refuse_modules_named_by(run_json: dict[str, Any], path: Path) -> None:
    """A ``CheckpointError`` when the run's task needs modules that are not imported yet."""
    missing = [m for m in modules_named_by(run_json) if m not in sys.modules]
    if missing:
        flags = " ".join(f"--import {m}" for m in missing)
        raise CheckpointError(
            f"the run at {path} builds its task with code from module(s) {missing}; rtrrl eval "
            f"does not import modules a checkpoint names (checkpoints are files people share): "
            f"if you trust them, pass {flags} (evaluate_checkpoint(..., imports={missing}))"
        )


def _run(session: loop.Session, backend: Any, restored: tuple[dict, Any] | None) -> dict[str, Any]:
    """Build the session's engine (restored from a checkpoint when given) and run the loop."""
    settings = session.settings
    torch_default = threads.HOST_TORCH_THREADS if session.engine == "host" else None
    with threads.framework_threads(settings.threads, torch_default):
        engine: loop.Engine
        if session.engine == "fused":
            from rtrrl import fused

            engine = fused.FusedEngine(settings, session.config)
        elif session.engine == "host":
            engine = HostEngine(settings, session.config, backend)
        else:
            raise CheckpointError(f"unknown engine {session.engine!r} in {session.out}")
        if restored is not None:
            try:
                engine.restore(*restored)
            except BaseException:
                engine.close()
                raise
        return loop.run(session, engine, fresh=restored is None)


def _check_backend_runs(be: Any, settings: RunSettings) -> None:
    """The backend holds ``settings.dtype`` and computes on its device, or a one-line error
    that says what to change (JAX without x64, a device that is not there)."""
    supported = tuple(be.supported_dtypes)
    if settings.dtype not in supported:
        hint = ""
        if settings.dtype == "float64" and settings.backend in ("jax", "keras-jax"):
            hint = (
                "; JAX holds float64 only with x64 enabled: set JAX_ENABLE_X64=1 in the "
                "environment before starting"
            )
        raise _registry.BackendStartError(
            f"backend {settings.backend!r} cannot compute in {settings.dtype} here (it "
            f"supports {', '.join(supported)}){hint}, or train with --dtype "
            f"{supported[0]} (dtype={supported[0]!r})"
        )
    import numpy as np

    try:
        be.to_numpy(be.from_numpy(np.zeros(1, settings.dtype)))
    except Exception as err:  # a device that is not there, a framework that cannot start
        raise _registry.BackendStartError(
            f"backend {settings.backend!r} cannot compute here: {_registry.described(err)}"
            f"{_registry.framework_hint()}"
        ) from err


def _split_overrides(overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``train``'s keywords, split into run settings and agent fields; anything else (or a
    field the task decides) is an error naming the close matches."""
    run_kw = {k: v for k, v in overrides.items() if k in _RUN_FIELDS}
    agent_kw = {k: v for k, v in overrides.items() if k in _AGENT_FIELDS}
    fixed = sorted(set(overrides) & set(TASK_FIELDS))
    if fixed:
        raise ValueError(f"{fixed} come from the task's spaces; a run cannot set them")
    unknown = sorted(set(overrides) - _RUN_FIELDS - _AGENT_FIELDS)
    if unknown:
        known = sorted(_RUN_FIELDS | _AGENT_FIELDS)
        hints = {u: difflib.get_close_matches(u, known, n=3) for u in unknown}
        raise ValueError(
            f"unknown setting(s) {unknown} (close matches: {hints}); train() takes the fields "
            f"of rtrrl.settings.RunSettings {sorted(_RUN_FIELDS)} and of rtrrl_spec.Config "
            f"{sorted(_AGENT_FIELDS)}"
        )
    return run_kw, agent_kw


def agent_config(settings: RunSettings, fields: Mapping[str, Any]) -> Any:
    """The agent of a new run: Table 1 (``rtrrl_spec.Config``'s defaults), then the run's
    preset for its task (:mod:`rtrrl.presets`), then ``fields`` (the run's own), then what the
    task decides (sizes, action bounds)."""
    body = presets.body_of(fields)
    chosen = {**presets.preset_fields(settings.preset, settings.task, body), **fields}
    return _spec_of(settings.task).agent_config(**chosen)


def _spec_of(task: str) -> Any:
    from rtrrl import envs

    env = envs.make_host(task, num_envs=1)
    try:
        return env.spec
    finally:
        env.close()


def _prepare_out(out: str | os.PathLike[str] | None) -> Path:
    """The run folder, created and checked writable; refuses a folder that holds anything.

    ``None``: a fresh temporary folder, announced on stderr (the summary's ``"out"`` names
    it too). A folder that holds a run is refused (resume it); so is any other non-empty
    folder (hidden files aside): rtrrl would replace files of the names it writes
    (``metrics.csv``, ``summary.json``, ...), and a user's files there are not its to touch.
    """
    if out is None:
        path = Path(tempfile.mkdtemp(prefix="rtrrl-run-"))
        print(f"rtrrl.train: out=None: the run folder is {path}", file=sys.stderr)
        return path
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise RunExistsError(f"--out {path} exists and is not a folder; refusing to overwrite")
    if path.is_dir():
        names = sorted(p.name for p in path.iterdir() if not p.name.startswith("."))
        if CHECKPOINT in names or "config.json" in names:
            raise RunExistsError(
                f"{path} already holds a run; refusing to overwrite it. Continue it with "
                f"`rtrrl train --resume {path}` (rtrrl.resume({str(path)!r})) or choose another "
                "--out"
            )
        if names:
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            raise RunExistsError(
                f"--out {path} is a folder that is not empty and holds no rtrrl run ({shown}); "
                f"refusing to write the run's files ({', '.join(RUN_FILES)}) among yours. "
                "Choose a new or empty folder for --out"
            )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunFolderError(
            f"cannot create the run folder {path} ({err.strerror or err}); choose another --out"
        ) from err
    run_folder.check_writable(path, "choose a folder you can write to for --out")
    return path


def _pick_engine(settings: RunSettings) -> str:
    if settings.fused is False or settings.backend != "jax":
        if settings.fused:
            raise ValueError("the fused path needs backend='jax'")
        return "host"
    from rtrrl import envs

    try:
        envs.make_jax(settings.task)
    except envs.UnknownTaskError:
        raise
    except Exception as err:  # not a gymnax task
        if settings.fused:
            raise ValueError(f"the fused path needs a gymnax task: {err}") from err
        return "host"
    return "fused"
