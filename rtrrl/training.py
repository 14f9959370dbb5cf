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
import difflib
import os
import tempfile
from pathlib import Path
from typing import Any

import rtrrl_spec
from rtrrl import _registry, loop, threads
from rtrrl.checkpoint import CHECKPOINT, load_checkpoint, read_run
from rtrrl.errors import CheckpointError, DivergedError, RunExistsError, TrainingError
from rtrrl.host import HostEngine, eval_env_size, evaluate_host
from rtrrl.run_folder import agent_label
from rtrrl.settings import TASK_FIELDS, RunSettings

__all__ = [
    "CHECKPOINT",
    "CheckpointError",
    "DivergedError",
    "RunExistsError",
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


def train(
    task: str | None = None,
    backend: str | None = None,
    *,
    settings: RunSettings | None = None,
    out: str | os.PathLike[str] | None = None,
    progress: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """Train ``settings.seeds`` agents on ``task`` with the paper's protocol; returns the
    summary (best evaluation per seed, median and std over seeds, steps, wall time).

    Args:
        task: a task name of :mod:`rtrrl.envs` (``rtrrl tasks`` lists them); overrides
            ``settings.task``.
        backend: a backend name (``rtrrl backends``); overrides ``settings.backend``.
        settings: the run settings; ``None`` is ``RunSettings()`` (the paper's protocol).
        out: run folder; must not hold a run already (use :func:`resume`). ``None`` writes to
            a fresh temporary folder.
        progress: show a tqdm progress bar.
        **overrides: fields of :class:`~rtrrl.settings.RunSettings` (``seeds=5``,
            ``steps=100_000``, ``eval_every=20``, ...) and of :class:`rtrrl_spec.Config`
            (``lr_td=3e-3``, ``body="lru"``, ...), by name.

    Raises:
        ValueError: an unknown or invalid setting or agent field.
        rtrrl.envs.UnknownTaskError: unknown task (the message lists close matches).
        rtrrl.BackendError: unknown or uninstalled backend.
        RunExistsError: ``out`` already holds a run.
        DivergedError: a NaN or inf appeared in an agent (the last good checkpoint is kept).
    """
    run_kw, agent_kw = _split_overrides(overrides)
    if task is not None:
        run_kw["task"] = task
    if backend is not None:
        run_kw["backend"] = backend
    settings = dataclasses.replace(settings or RunSettings(), **run_kw)
    threads.before_frameworks_load(settings.threads)
    # Resolve the backend and the task first: a typo should fail before any file is written.
    be = _registry.get_backend(settings.backend)
    config = _spec_of(settings.task).agent_config(**agent_kw)
    out_path = _prepare_out(out)
    engine = _pick_engine(settings)
    session = loop.Session(
        out=out_path,
        settings=settings,
        config=config,
        engine=engine,
        records=[loop.SeedRecord(seed=s) for s in settings.seeds],
        progress=progress,
    )
    return _run(session, be, None)


def resume(run: str | os.PathLike[str], *, progress: bool = False) -> dict[str, Any]:
    """Continue the run in folder ``run`` from its last checkpoint; returns the summary.

    On the same backend and engine it continues exactly as if it had never stopped: the
    checkpoint holds the agents, optimizer states, random states, environment states, epoch
    counters, best-so-far, patience counters and the metrics so far.
    """
    ckpt = load_checkpoint(run)
    settings, config = read_run(ckpt["run"])
    state = ckpt["state"]
    threads.before_frameworks_load(settings.threads)
    be = _registry.get_backend(settings.backend)
    session = loop.Session(
        out=Path(ckpt["path"]).parent,
        settings=settings,
        config=config,
        engine=ckpt["run"]["engine"],
        records=[loop.SeedRecord(**r) for r in state["records"]],
        rows=list(state["rows"]),
        wall=float(state["wall"]),
        progress=progress,
    )
    return _run(session, be, (ckpt["agents"], state["engine_state"]))


def evaluate_checkpoint(
    run: str | os.PathLike[str],
    backend: str | None = None,
    episodes: int | None = None,
    seed: int = 0,
) -> dict[int, float]:
    """Evaluate every seed's agent of a run on ``backend``: ``{agent seed: mean return}``.

    Uses the host env reset with ``seed`` and NumPy noise seeded with ``seed`` for every
    backend (see :func:`rtrrl.host.evaluate_host`), so backends agree up to floating-point
    rounding. Scores as the run did (its ``eval_steps``), unless ``episodes`` is given: then
    the mean return of that many complete episodes.
    """
    from rtrrl import envs

    ckpt = load_checkpoint(run)
    settings, config = read_run(ckpt["run"])
    if episodes is not None:
        settings = dataclasses.replace(settings, eval_episodes=episodes, eval_steps=None)
    be = _registry.get_backend(backend or settings.backend)
    env = envs.make_host(settings.task, num_envs=eval_env_size(settings))
    try:
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


def _spec_of(task: str) -> Any:
    from rtrrl import envs

    env = envs.make_host(task, num_envs=1)
    try:
        return env.spec
    finally:
        env.close()


def _prepare_out(out: str | os.PathLike[str] | None) -> Path:
    if out is None:
        return Path(tempfile.mkdtemp(prefix="rtrrl-run-"))
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise RunExistsError(f"--out {path} exists and is not a folder; refusing to overwrite")
    if path.is_dir() and any((path / n).exists() for n in (CHECKPOINT, "config.json")):
        raise RunExistsError(
            f"{path} already holds a run; refusing to overwrite it. Continue it with "
            f"`rtrrl train --resume {path}` (rtrrl.resume({str(path)!r})) or choose another --out"
        )
    path.mkdir(parents=True, exist_ok=True)
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
