"""The training loop, the one every engine runs under, and the :class:`Engine` protocol.

:func:`run` owns the protocol (:mod:`rtrrl.settings`): run an epoch for the active seeds,
check for divergence, record, evaluate when due, save, and decide who stops
(:func:`stop_reason`, the only place where budget and patience are read). An engine only
computes: it runs epochs and evaluations of its seeds and hands its state over as NumPy.
Two engines exist, the host loop (:mod:`rtrrl.host`, any backend and environment) and the
fused JAX engine (:mod:`rtrrl.fused`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

import rtrrl_spec
from rtrrl import checkpoint, run_folder
from rtrrl.errors import DivergedError
from rtrrl.settings import RunSettings, eval_seed

__all__ = ["Engine", "EpochResult", "SeedRecord", "Session", "run", "stop_reason"]


class EpochResult(NamedTuple):
    """What one epoch of one seed reports to the loop."""

    #: ``episodes`` (finished in the epoch), ``mean_return`` (of those, NaN if none),
    #: ``mean_abs_td`` and ``mean_value`` (means over the epoch's steps).
    metrics: dict[str, float]
    #: ``None`` when the agent is finite; else what went non-finite (for the error message).
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
        """Every member's agent, stacked on a leading axis, and the engine's picklable state."""
        ...

    def restore(self, agents: dict[str, np.ndarray], state: Any) -> None:
        """Continue from what :meth:`snapshot` returned (possibly in another process)."""
        ...

    def close(self) -> None:
        """Release environments and other resources."""
        ...


@dataclass
class SeedRecord:
    """Bookkeeping of one seed: progress, best evaluation, patience."""

    seed: int
    epoch: int = 0
    best: float = -math.inf
    since_best: int = 0
    active: bool = True
    stop_reason: str = ""
    last_eval: float = math.nan


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
    _t0: float = field(default_factory=time.perf_counter)
    _bar: Any = None

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
        if self._bar is not None:
            self._bar.update(self.settings.steps_per_epoch)

    def record_eval(self, index: int, score: float) -> None:
        """Log an evaluation of seed ``records[index]`` after its current epoch."""
        rec = self.records[index]
        score = float(score)
        for row in reversed(self.rows):
            if row["seed"] == rec.seed and row["epoch"] == rec.epoch:
                row["eval_reward"] = score
                break
        rec.last_eval = score
        if score > rec.best:
            rec.best, rec.since_best = score, 0
        else:
            rec.since_best += 1
        if self._bar is not None:
            bests = [r.best for r in self.records if r.best > -math.inf]
            self._bar.set_postfix(
                last=f"{score:.3g}", best=f"{float(np.median(bests)):.3g}", refresh=False
            )

    def run_json(self) -> dict[str, Any]:
        """``config.json``: everything needed to re-create or resume the run."""
        return {
            "format": checkpoint.FORMAT_VERSION,
            "engine": self.engine,
            "protocol": self.settings.to_json(),
            "agent": dataclasses.asdict(self.config),
        }

    def save(self, engine: Engine) -> None:
        """Write the checkpoint (atomically), then ``metrics.csv`` and ``config.json``."""
        agents, engine_state = engine.snapshot()
        state = {
            "records": [dataclasses.asdict(r) for r in self.records],
            "rows": self.rows,
            "wall": self.elapsed(),
            "engine_state": engine_state,
        }
        checkpoint.save_checkpoint(self.out, agents, self.run_json(), state)
        self.write_files(final=False)

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
        """A tqdm bar over all seeds' environment steps (a no-op without ``progress``)."""
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
    to interrupt a run at a chosen epoch as Ctrl-C would.
    """


def run(session: Session, engine: Engine, *, fresh: bool) -> dict[str, Any]:
    """Train until every seed has stopped; returns the summary.

    ``fresh``: a new run (its initial state is saved first); else a resumed one, whose engine
    was restored from the checkpoint. On Ctrl-C the checkpoint is saved at the last epoch
    boundary, so resuming repeats nothing and skips nothing; on divergence the last good
    checkpoint is kept.
    """
    session._t0 = time.perf_counter()
    try:
        try:
            with session.bar():
                if fresh:
                    session.save(engine)
                while any(r.active for r in session.records):
                    _iteration(session, engine)
                    _epoch_done(session)
        except KeyboardInterrupt:
            session.save(engine)
            session.write_files(final=True)
            resume = f"rtrrl train --resume {session.out}"
            print(f"\ninterrupted; checkpoint saved. Continue with: {resume}")
            raise
        session.save(engine)
        session.write_files(final=True)
    finally:
        engine.close()
    return session.summary()


def _iteration(session: Session, engine: Engine) -> None:
    """One epoch of every active seed, with its evaluations, stops and checkpoint."""
    records, settings = session.records, session.settings
    active = [i for i, r in enumerate(records) if r.active]
    results = engine.run_epoch(active)
    bad = {records[i].seed: r.problem for i, r in results.items() if r.problem is not None}
    if bad:
        raise DivergedError(_diverged(session, bad))
    for i in active:
        records[i].epoch += 1
        session.record_epoch(i, results[i].metrics)
    due = [i for i in active if settings.eval_due(records[i].epoch)]
    if due:
        scores = engine.evaluate({i: eval_seed(records[i].seed, records[i].epoch) for i in due})
        for i in due:
            session.record_eval(i, scores[i])
    for i in active:
        reason = stop_reason(records[i], settings)
        if reason is not None:
            records[i].active, records[i].stop_reason = False, reason
    if due:
        session.save(engine)


def _diverged(session: Session, bad: Mapping[int, str]) -> str:
    seeds = ", ".join(map(str, bad))
    details = "; ".join(dict.fromkeys(bad.values()))
    epoch = max(r.epoch for r in session.records if r.seed in bad) + 1
    return (
        f"seed{'s' if len(bad) > 1 else ''} {seeds}: non-finite values in the agent ({details}) "
        f"during epoch {epoch}; training stopped. The last good checkpoint "
        f"({session.out / checkpoint.CHECKPOINT}) was kept; lower the learning rates (lr_td, "
        "lr_rnn) or check the task's observations"
    )
