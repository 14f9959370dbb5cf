"""The training loop, the one every engine runs under, and the :class:`Engine` protocol.

:func:`run` owns the protocol (:mod:`rtrrl.settings`): run an epoch for the active seeds,
check for divergence, record, evaluate when due, save, and decide who stops
(:func:`stop_reason`, the only place where budget and patience are read). An engine only
computes: it runs epochs and evaluations of its seeds and hands its state over as NumPy.
Two engines exist, the host loop (:mod:`rtrrl.host`, any backend and environment) and the
fused JAX engine (:mod:`rtrrl.fused`).

The loop moves between *safe points*, where its bookkeeping and the engine's state agree:
after an epoch (the epoch counted, its evaluation pending), after the evaluations (scores
recorded, stops decided), after a save. Every checkpoint is taken at one, and stop requests
(SIGINT, SIGTERM: :mod:`rtrrl.interrupts`) are honoured only there, so a run resumed from any
checkpoint, whether written on request or left on disk by a kill, continues exactly as the
uninterrupted run does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

import rtrrl_spec
from rtrrl import checkpoint, interrupts, run_folder
from rtrrl.errors import DivergedError
from rtrrl.settings import RunSettings, eval_seed

__all__ = [
    "PARAM_LIMIT",
    "Engine",
    "EpochResult",
    "SeedRecord",
    "Session",
    "agent_problem",
    "exploded",
    "non_finite",
    "param_names",
    "run",
    "stop_reason",
]

#: A parameter whose magnitude passes this has exploded: training stops (:func:`exploded`).
PARAM_LIMIT = 1e8


class EpochResult(NamedTuple):
    """What one epoch of one seed reports to the loop."""

    #: ``episodes`` (finished in the epoch), ``mean_return`` (of those, NaN if none),
    #: ``mean_abs_td`` and ``mean_value`` (means over the epoch's steps).
    metrics: dict[str, float]
    #: ``None`` when the agent is sound; else what is wrong, as a phrase for the error message
    #: (:func:`agent_problem`: non-finite arrays, an exploded parameter).
    problem: str | None = None


class Engine(Protocol):
    """What the loop needs from an engine. Members are addressed by their index in
    ``settings.seeds``; an engine's state between calls is always at an epoch boundary."""

    #: ``"host"`` or ``"fused"``: saved in ``config.json``, so resume builds the same engine.
    name: str

    def run_epoch(self, active: Sequence[int]) -> dict[int, EpochResult]:
        """Advance the members ``active`` by one epoch each, leaving the others as they are.

        The new state must replace the old one only once every member's epoch is done: a
        ``KeyboardInterrupt`` mid-call leaves :meth:`snapshot` at the previous boundary.
        """
        ...

    def evaluate(self, seeds: Mapping[int, int]) -> dict[int, float]:
        """Score a frozen copy of each member ``i`` in ``seeds``, with environments and noise
        seeded by ``seeds[i]``: ``{i: score}``."""
        ...

    def snapshot(self) -> tuple[dict[str, np.ndarray], Any]:
        """Every member's agent, stacked on a leading axis, and the engine's state: dicts, lists,
        numbers, strings and arrays (what :mod:`rtrrl.checkpoint` stores without pickle)."""
        ...

    def restore(self, agents: dict[str, np.ndarray], state: Any) -> None:
        """Continue from what :meth:`snapshot` returned (possibly in another process)."""
        ...

    def close(self) -> None:
        """Release environments and other resources."""
        ...


@dataclass
class SeedRecord:
    """Bookkeeping of one seed: progress, best evaluation, patience.

    ``eval_pending``: epoch ``epoch`` is due an evaluation that has not run yet. It is true
    only between an epoch and its evaluation; a checkpoint taken there (a stop request read
    after the epoch) says so, and the resumed run evaluates before anything else, so the
    evaluation is neither skipped nor repeated. Checkpoints of earlier versions lack the
    field; the default (false) reads them as they were meant.

    ``member``: in a sweep (:mod:`rtrrl.sweeps`), the member's index in the sweep, since
    there a seed recurs once per setting; ``None`` in a run, whose seeds are distinct.
    """

    seed: int
    epoch: int = 0
    best: float = -math.inf
    since_best: int = 0
    active: bool = True
    stop_reason: str = ""
    last_eval: float = math.nan
    eval_pending: bool = False
    member: int | None = None


def stop_reason(record: SeedRecord, settings: RunSettings) -> str | None:
    """Why seed ``record`` stops now, or ``None``: its step budget is spent (``"budget"``) or
    ``patience`` evaluations in a row brought no improvement (``"patience"``)."""
    if record.epoch >= settings.max_epochs:
        return "budget"
    if record.since_best >= settings.patience:
        return "patience"
    return None


@dataclass
class Session:
    """A run's bookkeeping and its folder: records, metric rows, wall time, files."""

    out: Path
    settings: RunSettings
    config: rtrrl_spec.Config
    engine: str
    records: list[SeedRecord]
    rows: list[dict[str, Any]] = field(default_factory=list)
    wall: float = 0.0
    progress: bool = False
    #: ``config.json``'s ``"run"``: the run's id and metadata (rtrrl.training fills it).
    meta: dict[str, Any] = field(default_factory=dict)
    #: A seed whose agent diverges stops (reason ``"diverged"``) while the others go on,
    #: instead of stopping the run with :class:`~rtrrl.errors.DivergedError`: a sweep's
    #: members try learning rates some of which are meant to be too high.
    stop_diverged: bool = False
    #: The command that continues the run, printed when it is interrupted (default:
    #: ``rtrrl train --resume OUT``).
    resume_command: str = ""
    #: A progress bar owned by the caller (a sweep's, over all its chunks), updated in
    #: place of one of the session's own, and never closed here.
    shared_bar: Any = None
    _t0: float = field(default_factory=time.perf_counter)
    _bar: Any = None
    #: The agents and scores of ``best.npz`` (loaded or made at the first save).
    _best: Any = None

    def elapsed(self) -> float:
        """Wall time of the run, including earlier sessions of a resumed run."""
        return self.wall + time.perf_counter() - self._t0

    def steps_of(self, record: SeedRecord) -> int:
        """Environment steps seed ``record`` has taken."""
        return record.epoch * self.settings.steps_per_epoch

    def record_epoch(self, index: int, metrics: Mapping[str, float]) -> None:
        """Log the epoch seed ``records[index]`` just finished (its ``epoch`` already counts it)."""
        rec = self.records[index]
        self.rows.append(
            {
                "seed": rec.seed,
                "epoch": rec.epoch,
                "steps": self.steps_of(rec),
                "episodes": int(metrics["episodes"]),
                "mean_return": float(metrics["mean_return"]),
                "mean_abs_td": float(metrics["mean_abs_td"]),
                "mean_value": float(metrics["mean_value"]),
                "wall_time": round(self.elapsed(), 3),
                "eval_reward": math.nan,
            }
        )
        if rec.member is not None:
            self.rows[-1]["member"] = rec.member
        if self._bar is not None:
            self._bar.update(self.settings.steps_per_epoch)

    def record_eval(self, index: int, score: float) -> None:
        """Log an evaluation of seed ``records[index]`` after its current epoch."""
        rec = self.records[index]
        score = float(score)
        for row in reversed(self.rows):
            if _row_of(row, rec) and row["epoch"] == rec.epoch:
                row["eval_reward"] = score
                break
        rec.last_eval = score
        if score > rec.best:
            rec.best, rec.since_best = score, 0
        else:
            rec.since_best += 1
        if self._bar is not None:
            self._bar.set_postfix(last=f"{score:.3g}", best=f"{self.bar_best():.3g}", refresh=False)

    def bar_best(self) -> float:
        """The progress bar's "best": the median over the seeds evaluated so far of their best
        evaluation reward (the figure the run's summary reports); NaN before any has one."""
        bests = [r.best for r in self.records if r.best > -math.inf]
        return float(np.median(bests)) if bests else math.nan

    def run_json(self) -> dict[str, Any]:
        """``config.json``: everything needed to re-create or resume the run (``format``,
        ``engine``, ``protocol``, ``agent``: the run's identity, which resume checks), and
        under ``run`` its id and metadata (versions, git commit, command line, dates)."""
        return {
            "format": checkpoint.FORMAT_VERSION,
            "engine": self.engine,
            "protocol": self.settings.to_json(),
            "agent": dataclasses.asdict(self.config),
            "run": self.meta,
        }

    def save(self, engine: Engine) -> None:
        """Write ``best.npz`` when a seed improved, the checkpoint, then ``metrics.csv`` and
        ``config.json``, each atomically.

        ``best.npz`` goes first: a kill between the two writes then leaves a best agent that
        the resumed run re-evaluates to the same score, never a best one lost.
        """
        agents, engine_state = engine.snapshot()
        state = {
            "records": [dataclasses.asdict(r) for r in self.records],
            "rows": self.rows,
            "wall": self.elapsed(),
            "engine_state": engine_state,
        }
        run_json = self.run_json()
        self._save_best(agents, run_json)
        checkpoint.save_checkpoint(self.out, agents, run_json, state)
        self.write_files(final=False)

    def _save_best(self, agents: Mapping[str, np.ndarray], run_json: dict[str, Any]) -> None:
        """Take into ``best.npz`` each seed whose best evaluation is its latest epoch's and
        beats the one kept: a save after an evaluation holds exactly the evaluated agents."""
        best, changed = self._best, False
        if best is None:
            best = checkpoint.load_best(self.out, run_json, agents)
            if best is None:
                best = {
                    "agents": {k: np.array(v) for k, v in agents.items()},
                    "info": [
                        {"seed": r.seed, "score": None, "epoch": r.epoch} for r in self.records
                    ],
                }
                changed = True
            self._best = best
        for i, rec in enumerate(self.records):
            kept = best["info"][i]["score"]
            if rec.best == -math.inf or (kept is not None and rec.best <= kept):
                continue
            row = next((r for r in reversed(self.rows) if _row_of(r, rec)), None)
            if row is None or row["epoch"] != rec.epoch or row["eval_reward"] != rec.best:
                continue  # the best evaluation was of an earlier agent (before a resume)
            for k, v in agents.items():
                best["agents"][k][i] = v[i]
            best["info"][i] = {"seed": rec.seed, "score": float(rec.best), "epoch": rec.epoch}
            changed = True
        if changed:
            checkpoint.save_best(self.out, best["agents"], run_json, best["info"])

    def write_files(self, final: bool) -> None:
        """``config.json`` and ``metrics.csv`` (always); plot and summaries when ``final``."""
        run_folder.write_json(self.out / "config.json", self.run_json())
        run_folder.write_metrics(self.out / "metrics.csv", self.rows)
        if final:
            summary = self.summary()
            run_folder.write_json(self.out / "summary.json", summary)
            text = run_folder.summary_md(summary)
            run_folder.atomic_write(self.out / "summary.md", lambda f: f.write(text.encode()))
            label = run_folder.agent_label(self.config)
            title = f"{self.settings.task}: {label}, {self.settings.backend}"
            run_folder.plot_curve(self.rows, self.out / "curve.png", title)

    def summary(self) -> dict[str, Any]:
        """Best evaluation per seed, median and std over seeds, steps, wall time."""
        bests = [r.best if r.best > -math.inf else math.nan for r in self.records]
        finite = [b for b in bests if not math.isnan(b)]
        return {
            "task": self.settings.task,
            "backend": self.settings.backend,
            "engine": self.engine,
            "seeds": [
                {
                    "seed": r.seed,
                    "best_eval": None if math.isnan(b) else b,
                    "epochs": r.epoch,
                    "steps": self.steps_of(r),
                    "stopped": r.stop_reason or "running",
                }
                for r, b in zip(self.records, bests, strict=True)
            ],
            "median": float(np.median(finite)) if finite else None,
            "std": float(np.std(finite)) if finite else None,
            "steps": sum(self.steps_of(r) for r in self.records),
            "wall_time": round(self.elapsed(), 2),
        }

    @contextlib.contextmanager
    def bar(self) -> Iterator[Any]:
        """A tqdm bar over all seeds' environment steps (a no-op without ``progress``), or
        the caller's :attr:`shared_bar`."""
        if self.shared_bar is not None:
            self._bar = self.shared_bar
            try:
                yield self.shared_bar
            finally:
                self._bar = None
            return
        if not self.progress:
            yield None
            return
        from tqdm.auto import tqdm

        total = self.settings.max_epochs * self.settings.steps_per_epoch * len(self.records)
        done = sum(self.steps_of(r) for r in self.records)
        with tqdm(total=total, initial=done, unit="step", unit_scale=True, smoothing=0.1) as bar:
            self._bar = bar
            try:
                yield bar
            finally:
                self._bar = None


def _epoch_done(session: Session) -> None:
    """Called after every iteration of the loop, once its checkpoint (if due) is written.

    Nothing happens here; tests replace it (``monkeypatch.setattr(loop, "_epoch_done", ...)``)
    to interrupt a run at a chosen epoch, e.g. with :func:`rtrrl.interrupts.request`.
    """


def _phase_done(session: Session, phase: str) -> None:
    """Called at each safe point (``phase``: ``"epoch"``, ``"evaluation"`` or ``"save"``),
    before the loop reads the stop requests.

    Nothing happens here; tests replace it to interrupt a run at every kind of safe point.
    """


def run(session: Session, engine: Engine, *, fresh: bool) -> dict[str, Any]:
    """Train until every seed has stopped; returns the summary.

    ``fresh``: a new run (its initial state is saved first); else a resumed one, whose engine
    was restored from the checkpoint (an evaluation it left pending runs first).

    SIGINT and SIGTERM are deferred to the next safe point (:mod:`rtrrl.interrupts`): there
    the checkpoint and the run's files are written, one line says how to continue, and
    ``KeyboardInterrupt`` (SIGINT) or :class:`rtrrl.interrupts.Terminated` (SIGTERM, exit
    status 143) is raised. A second signal stops at once without saving: the checkpoint of
    the last save stays, and resumes exactly, as after a kill. On divergence the last good
    checkpoint is kept.
    """
    session._t0 = time.perf_counter()
    resume = session.resume_command or f"rtrrl train --resume {session.out}"
    try:
        with interrupts.deferred(), session.bar():
            signum = _train(session, engine, fresh=fresh)
            session.save(engine)
            session.write_files(final=True)
    except (KeyboardInterrupt, interrupts.Terminated):
        print(
            f"\ninterrupted at once; {session.out} keeps the checkpoint of the last save. "
            f"Continue with: {resume}"
        )
        raise
    finally:
        engine.close()
    if signum is not None:
        name = signal.Signals(signum).name
        print(f"\ninterrupted ({name}); checkpoint saved. Continue with: {resume}")
        if signum == signal.SIGTERM:
            raise interrupts.Terminated
        raise KeyboardInterrupt
    return session.summary()


def _train(session: Session, engine: Engine, *, fresh: bool) -> int | None:
    """The loop's phases until every seed has stopped (``None``) or a stop request is read at
    a safe point (its signal number; the caller saves)."""
    if fresh:
        session.save(engine)
        if (signum := _safe_point(session, "save")) is not None:
            return signum
    # A checkpoint taken between an epoch and its evaluation: evaluate first.
    pending = any(r.eval_pending for r in session.records)
    if pending and (signum := _evaluate(session, engine)) is not None:
        return signum
    while any(r.active for r in session.records):
        if (signum := _iteration(session, engine)) is not None:
            return signum
        _epoch_done(session)
        if (signum := interrupts.pending()) is not None:
            return signum
    return None


def _safe_point(session: Session, phase: str) -> int | None:
    """The signal of a pending stop request, read at a safe point after ``phase``."""
    _phase_done(session, phase)
    return interrupts.pending()


def _iteration(session: Session, engine: Engine) -> int | None:
    """One epoch of every active seed, then its evaluations, stops and checkpoint; returns
    the signal of a stop request read at a safe point on the way (the rest is left undone)."""
    records, settings = session.records, session.settings
    active = [i for i, r in enumerate(records) if r.active]
    results = engine.run_epoch(active)
    bad = {records[i].seed: r.problem for i, r in results.items() if r.problem is not None}
    while bad and session.stop_diverged:
        # The engine committed nothing: the others' epoch runs again without the diverged
        # (members are independent, so it computes what it did).
        active = _stop_diverged(session, active, results)
        results = engine.run_epoch(active) if active else {}
        bad = {records[i].seed: r.problem for i, r in results.items() if r.problem is not None}
    if bad:
        raise DivergedError(_diverged(session, bad))
    for i in active:
        records[i].epoch += 1
        records[i].eval_pending = settings.eval_due(records[i].epoch)
        session.record_epoch(i, results[i].metrics)
    if (signum := _safe_point(session, "epoch")) is not None:
        return signum
    return _evaluate(session, engine)


def _evaluate(session: Session, engine: Engine) -> int | None:
    """The pending evaluations, every active seed's stop decision and, when anything was
    evaluated, the checkpoint; returns the signal of a stop request read on the way."""
    records, settings = session.records, session.settings
    due = [i for i, r in enumerate(records) if r.active and r.eval_pending]
    if due:
        scores = engine.evaluate({i: eval_seed(records[i].seed, records[i].epoch) for i in due})
        for i in due:
            session.record_eval(i, scores[i])
            records[i].eval_pending = False
    for rec in records:
        reason = stop_reason(rec, settings) if rec.active else None
        if reason is not None:
            rec.active, rec.stop_reason = False, reason
    if not due:
        return None
    if (signum := _safe_point(session, "evaluation")) is not None:
        return signum
    session.save(engine)
    return _safe_point(session, "save")


def _stop_diverged(
    session: Session, active: Sequence[int], results: Mapping[int, EpochResult]
) -> list[int]:
    """Stop each seed whose epoch went wrong (saying so on stderr); the others of ``active``
    (an engine may return before running them all)."""
    for i, result in results.items():
        if result.problem is not None:
            rec = session.records[i]
            rec.active, rec.stop_reason = False, "diverged"
            who = f"member {rec.member}" if rec.member is not None else f"seed {rec.seed}"
            print(
                f"{who}: {result.problem} during epoch {rec.epoch + 1}; it stops with its best "
                "evaluation so far",
                file=sys.stderr,
            )
    return [i for i in active if session.records[i].active]


def _row_of(row: Mapping[str, Any], rec: SeedRecord) -> bool:
    """Whether metric row ``row`` is of seed (or sweep member) ``rec``."""
    return row["seed"] == rec.seed and row.get("member") == rec.member


def _diverged(session: Session, bad: Mapping[int, str]) -> str:
    seeds = ", ".join(map(str, bad))
    details = "; ".join(dict.fromkeys(bad.values()))
    epoch = max(r.epoch for r in session.records if r.seed in bad) + 1
    return (
        f"seed{'s' if len(bad) > 1 else ''} {seeds}: {details} during epoch {epoch}; training "
        f"stopped. The last good checkpoint ({session.out / checkpoint.CHECKPOINT}) was kept; "
        "lower the learning rates (lr_td, lr_rnn), clip the updates (clip_norm, e.g. 1.0) or "
        "check the task's observations"
    )


def param_names(config: rtrrl_spec.Config) -> tuple[str, ...]:
    """The agent's parameters (trained or frozen): the ``"param"`` arrays of its layout."""
    return tuple(k for k, v in rtrrl_spec.layout(config, 1).items() if v.group == "param")


def non_finite(names: Sequence[str]) -> str:
    """The problem phrase for arrays ``names`` holding a NaN or an infinity."""
    return f"non-finite values in the agent ({', '.join(names)})"


def exploded(peaks: Mapping[str, float]) -> str | None:
    """The problem phrase for the parameter that exploded, or ``None``: ``peaks`` maps each
    parameter to its largest magnitude; one beyond :data:`PARAM_LIMIT` (1e8) has exploded.

    Why 1e8: Adam moves a parameter by at most about ``3.2 · lr`` a step (``lr · (1 − β1) /
    sqrt(1 − β2)`` with the default β), so even a learning rate of 0.1 run for the paper's
    whole budget of 50 million steps, every step in the same direction, stays below 1.6e7;
    trained agents' parameters are of order 1 to 100. And at 1e8 the spacing of float32 is
    8: every update a sane learning rate makes is rounded away, so the parameter no longer
    learns although it is finite. The run would otherwise report success with garbage (a
    learning rate of 1e30 trains to parameters of 6.6e30, far from float32's 3.4e38).
    """
    over = {k: float(v) for k, v in peaks.items() if float(v) > PARAM_LIMIT}
    if not over:
        return None
    name = max(over, key=lambda k: over[k])
    return (
        f"parameter {name} reached {over[name]:.3g} in magnitude (beyond {PARAM_LIMIT:.0e}: "
        "it exploded)"
    )


def agent_problem(config: rtrrl_spec.Config, agent: Mapping[str, np.ndarray]) -> str | None:
    """What is wrong with ``agent`` (NumPy arrays) after an epoch, or ``None``: arrays with a
    NaN or an infinity, else an exploded parameter (:func:`exploded`)."""
    bad = [
        k
        for k, v in agent.items()
        if np.issubdtype(np.asarray(v).dtype, np.inexact) and not np.all(np.isfinite(v))
    ]
    if bad:
        return non_finite(sorted(bad))
    return exploded({k: float(np.max(np.abs(agent[k]))) for k in param_names(config)})
