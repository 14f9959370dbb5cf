"""The paper's training protocol on any backend: epochs, frozen evaluations, early stopping.

:func:`train` runs ``seeds`` independent agents on one task and writes a run folder
(``config.json``, ``metrics.csv``, ``curve.png``, ``summary.json``, ``summary.md``,
``checkpoint.npz``); :func:`resume` continues a stopped run from its checkpoint;
:func:`evaluate_checkpoint` scores a run's agents on any backend.

The protocol (``docs/training.md`` and the algorithm note's Defaults section):

- training is cut into epochs of ``epoch_steps`` agent steps (``num_envs`` environments each);
- every ``eval_every`` epochs (and after the last epoch of the budget) the agent is evaluated
  on ``eval_episodes`` episodes with its parameters frozen: a *copy* of the agent runs with
  ``config.replace(lr_td=0, lr_rnn=0)`` on separate evaluation environments and is then thrown
  away. Adam with a learning rate of 0 moves no parameter, so this is exactly "frozen"; actions
  are sampled from the policy, as in training;
- a seed stops after ``patience`` evaluations without improvement, or when its budget of
  ``steps`` environment steps is spent; its score is its best evaluation reward (mean return
  over the evaluation episodes);
- with ``eval_steps`` set, an evaluation scores as the first public version of the authors'
  code did (their commit 0ad6c8f; since a40fe02 they score as the default does): one
  environment runs ``eval_steps`` steps (episodes restarting as in training), and the score is
  the summed reward divided by the number of episodes that ended in them. The reward of the
  unfinished last episode counts while the episode does not, so this reads higher than the
  mean over complete episodes (``docs/training.md``).

Two engines run it: the *fused* JAX path (:mod:`rtrrl.fused`: environment and agent in one
``lax.scan``, all seeds in one ``vmap``), used for the ``jax`` backend on gymnax tasks, and the
*host* loop here (any backend, any task; seeds one after another). ``done`` for the agent is
``terminated | truncated``: a time-limit truncation is treated as termination, as the spec
does; bootstrapping through truncation is not offered.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import pickle
import sys
import tempfile
import time
import types
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import rtrrl_spec
from rtrrl import _registry

__all__ = [
    "DEFAULT_TASK",
    "CheckpointError",
    "DivergedError",
    "Protocol",
    "RunExistsError",
    "TrainingError",
    "evaluate_checkpoint",
    "evaluate_host",
    "load_checkpoint",
    "resume",
    "train",
]

#: The task ``rtrrl train`` runs without arguments (see README: trains in about a minute).
DEFAULT_TASK = "MemoryChain-4"
#: Evaluation length bound for tasks without a time limit.
EVAL_MAX_STEPS = 10_000
CHECKPOINT = "checkpoint.npz"
FORMAT_VERSION = 1
METRIC_FIELDS = (
    "seed",
    "epoch",
    "steps",
    "episodes",
    "mean_return",
    "mean_abs_td",
    "mean_value",
    "wall_time",
    "eval_reward",
)


class TrainingError(RuntimeError):
    """Base class of the training loop's errors."""


class RunExistsError(TrainingError, FileExistsError):
    """``out`` already holds a run and ``resume`` was not asked for."""


class CheckpointError(TrainingError):
    """A checkpoint is missing, unreadable or not an rtrrl checkpoint."""


class DivergedError(TrainingError, FloatingPointError):
    """A NaN or inf appeared in an agent; the last good checkpoint was kept."""


@dataclass(frozen=True)
class Protocol:
    """Everything about a run except the agent's hyper-parameters.

    Defaults are the paper's (appendix Table 1): epochs of 1000 steps, evaluation every 100
    epochs on 10 episodes, early stop after 20 evaluations without improvement, at most 50
    million steps, batch size 1.
    """

    task: str = DEFAULT_TASK
    backend: str = "jax"
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    steps: int = 50_000_000
    epoch_steps: int = 1000
    eval_every: int = 100
    eval_episodes: int = 10
    #: ``None``: the mean return of ``eval_episodes`` complete episodes (the paper's text).
    #: An int: the score of the authors' first public code over that many steps of one
    #: environment (its default was 10,000); see the module docstring.
    eval_steps: int | None = None
    patience: int = 20
    num_envs: int = 1
    dtype: str = "float32"
    #: ``None`` picks the fused JAX path whenever it can run; ``False`` forces the host loop.
    fused: bool | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        for name in ("steps", "epoch_steps", "eval_every", "eval_episodes", "patience"):
            value = getattr(self, name)
            if not _is_positive_int(value):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.eval_steps is not None and not _is_positive_int(self.eval_steps):
            raise ValueError(f"eval_steps must be None or a positive int, got {self.eval_steps!r}")
        if self.num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {self.num_envs!r}")
        if not self.seeds:
            raise ValueError("give at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}")

    @property
    def max_epochs(self) -> int:
        """Epochs the step budget allows (at least one)."""
        return max(1, self.steps // (self.epoch_steps * self.num_envs))

    def eval_due(self, epoch: int) -> bool:
        """Whether to evaluate after completed epoch ``epoch`` (1-based)."""
        return epoch % self.eval_every == 0 or epoch == self.max_epochs


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _seeds(seeds: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(seeds, int | np.integer) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {seeds}")
        return tuple(range(int(seeds)))
    return tuple(int(s) for s in seeds)  # type: ignore[union-attr]


def noise_seed(seed: int) -> int:
    """Seed of the training noise generator of agent ``seed`` (not the init's stream)."""
    return 1_000_003 + int(seed)


def eval_seed(seed: int, epoch: int) -> int:
    """Environment and noise seed of the evaluation of agent ``seed`` after ``epoch``."""
    return (2_000_003 * (int(seed) + 1) + int(epoch)) % (2**31 - 1)


# --- the run folder -------------------------------------------------------------------------


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


@dataclass
class Session:
    """State shared by both engines: bookkeeping, metrics, files, progress bar."""

    out: Path
    protocol: Protocol
    config: rtrrl_spec.Config
    engine: str
    records: list[SeedRecord]
    rows: list[dict[str, Any]] = field(default_factory=list)
    wall: float = 0.0
    progress: bool = False
    _t0: float = field(default_factory=time.perf_counter)
    _bar: Any = None

    # Time ----------------------------------------------------------------------------------

    def elapsed(self) -> float:
        """Wall time of the run, including earlier sessions of a resumed run."""
        return self.wall + time.perf_counter() - self._t0

    def steps_of(self, record: SeedRecord) -> int:
        """Environment steps seed ``record`` has taken."""
        return record.epoch * self.protocol.epoch_steps * self.protocol.num_envs

    # Bookkeeping ---------------------------------------------------------------------------

    def record_epoch(self, index: int, metrics: dict[str, float]) -> None:
        """Log one finished epoch of seed ``records[index]`` (its ``epoch`` already advanced)."""
        rec = self.records[index]
        row = {
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
        self.rows.append(row)
        if rec.epoch >= self.protocol.max_epochs:
            rec.active, rec.stop_reason = False, "budget"
        if self._bar is not None:
            self._bar.update(self.protocol.epoch_steps * self.protocol.num_envs)

    def record_eval(self, index: int, score: float) -> None:
        """Log an evaluation of seed ``records[index]`` after its current epoch; patience."""
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
            if rec.since_best >= self.protocol.patience and rec.active:
                rec.active, rec.stop_reason = False, "patience"
        if self._bar is not None:
            bests = [r.best for r in self.records if r.best > -math.inf]
            self._bar.set_postfix(
                last=f"{score:.3g}", best=f"{float(np.median(bests)):.3g}", refresh=False
            )

    # Files ---------------------------------------------------------------------------------

    def run_json(self) -> dict[str, Any]:
        """``config.json``: everything needed to re-create or resume the run."""
        return {
            "format": FORMAT_VERSION,
            "engine": self.engine,
            "protocol": dataclasses.asdict(self.protocol),
            "agent": dataclasses.asdict(self.config),
        }

    def save(self, agents: dict[str, np.ndarray], engine_state: Any) -> None:
        """Write ``checkpoint.npz`` atomically, then ``metrics.csv`` and ``config.json``."""
        state = {
            "records": [dataclasses.asdict(r) for r in self.records],
            "rows": self.rows,
            "wall": self.elapsed(),
            "engine_state": engine_state,
        }
        arrays = {f"agent/{k}": np.asarray(v) for k, v in agents.items()}
        arrays["config.json"] = np.asarray(json.dumps(self.run_json()))
        arrays["state.pkl"] = np.frombuffer(pickle.dumps(state), dtype=np.uint8)
        _atomic_write(self.out / CHECKPOINT, lambda f: np.savez(f, **arrays))
        self.write_files(final=False)

    def write_files(self, final: bool) -> None:
        """``config.json`` and ``metrics.csv`` (always); plot and summaries when ``final``."""
        text = json.dumps(self.run_json(), indent=2) + "\n"
        _atomic_write(self.out / "config.json", lambda f: f.write(text.encode()))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in sorted(self.rows, key=lambda r: (r["seed"], r["epoch"])):
            writer.writerow({k: ("" if _isnan(v) else v) for k, v in row.items()})
        _atomic_write(self.out / "metrics.csv", lambda f: f.write(buf.getvalue().encode()))
        if final:
            summary = self.summary()
            _atomic_write(
                self.out / "summary.json",
                lambda f: f.write((json.dumps(summary, indent=2) + "\n").encode()),
            )
            _atomic_write(self.out / "summary.md", lambda f: f.write(_summary_md(summary).encode()))
            title = f"{self.protocol.task}: {agent_label(self.config)}, {self.protocol.backend}"
            _plot_curve(self.rows, self.out / "curve.png", title)

    def summary(self) -> dict[str, Any]:
        """Best evaluation per seed, median and std over seeds, steps, wall time."""
        bests = [r.best if r.best > -math.inf else math.nan for r in self.records]
        finite = [b for b in bests if not math.isnan(b)]
        return {
            "task": self.protocol.task,
            "backend": self.protocol.backend,
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

    # Progress bar --------------------------------------------------------------------------

    @contextlib.contextmanager
    def bar(self) -> Any:
        """A tqdm bar over all seeds' environment steps (a no-op without ``progress``)."""
        if not self.progress:
            yield None
            return
        from tqdm.auto import tqdm

        total = self.protocol.max_epochs * self.protocol.epoch_steps * self.protocol.num_envs
        total *= len(self.records)
        done = sum(self.steps_of(r) for r in self.records)
        with tqdm(total=total, initial=done, unit="step", unit_scale=True, smoothing=0.1) as bar:
            self._bar = bar
            try:
                yield bar
            finally:
                self._bar = None


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _atomic_write(path: Path, write: Callable[[Any], Any]) -> None:
    """Write through a temporary file in the same folder, then ``os.replace``: a kill at any
    moment leaves either the old file or the new one, never a torn one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _summary_md(summary: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        return "—" if v is None else f"{v:.4g}"

    lines = [
        f"# {summary['task']} on {summary['backend']} ({summary['engine']} engine)",
        "",
        f"Best evaluation reward: median {fmt(summary['median'])} ± {fmt(summary['std'])} "
        f"(std) over {len(summary['seeds'])} seeds; {summary['steps']} environment steps in "
        f"total, {summary['wall_time']:.1f} s wall time.",
        "",
        "| seed | best eval | epochs | steps | stopped |",
        "|---:|---:|---:|---:|---|",
    ]
    for s in summary["seeds"]:
        lines.append(
            f"| {s['seed']} | {fmt(s['best_eval'])} | {s['epochs']} | {s['steps']} "
            f"| {s['stopped']} |"
        )
    return "\n".join(lines) + "\n"


def agent_label(config: rtrrl_spec.Config) -> str:
    """A short description of the agent, e.g. ``"CT-RNN, RFLO, no FA, no clip"``."""
    if config.body == "ctrnn":
        parts = ["CT-RNN", config.jacobian.upper()]
    else:
        parts = {"lru": ["LRU"], "linear": ["linear TD(λ)"]}.get(config.body, [config.body])
    if config.body != "linear":
        if config.freeze_rnn:
            parts.append("frozen body")
        if not config.feedback_alignment:
            parts.append("no FA")
    if config.clip_norm is None:
        parts.append("no clip")
    return ", ".join(parts)


def _plot_curve(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Median and min–max spread over seeds of the evaluation reward against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals: dict[int, list[float]] = {}
    for row in rows:
        if not _isnan(row["eval_reward"]):
            evals.setdefault(int(row["steps"]), []).append(float(row["eval_reward"]))
    fig, ax = plt.subplots(figsize=(6, 4))
    if evals:
        steps = sorted(evals)
        med = [float(np.median(evals[s])) for s in steps]
        lo = [min(evals[s]) for s in steps]
        hi = [max(evals[s]) for s in steps]
        ax.plot(steps, med, marker="o", label="median over seeds")
        ax.fill_between(steps, lo, hi, alpha=0.3, label="min–max over seeds")
        ax.legend()
    ax.set_xlabel("environment steps (per seed)")
    ax.set_ylabel("evaluation reward")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    _atomic_write(path, lambda f: f.write(buf.getvalue()))


# --- checkpoints ----------------------------------------------------------------------------


def load_checkpoint(run: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``RUN/checkpoint.npz`` (or a checkpoint file): ``{"run", "agents", "state"}``.

    Raises:
        CheckpointError: the file is missing, truncated or not an rtrrl checkpoint. Reading
            never writes: nothing is overwritten.
    """
    path = Path(run)
    if path.is_dir():
        path = path / CHECKPOINT
    untouched = "nothing was overwritten"
    if not path.exists():
        raise CheckpointError(
            f"no checkpoint at {path}: expected a run folder written by `rtrrl train` "
            f"(holding {CHECKPOINT}) or the checkpoint file itself; {untouched}"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            names = set(data.files)
            missing = {"config.json", "state.pkl"} - names
            if missing:
                raise CheckpointError(
                    f"{path} is not an rtrrl checkpoint (missing {sorted(missing)}); {untouched}"
                )
            run_json = json.loads(str(data["config.json"]))
            state = pickle.loads(data["state.pkl"].tobytes())
            agents = {k[len("agent/") :]: data[k] for k in names if k.startswith("agent/")}
    except CheckpointError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, pickle.UnpicklingError) as err:
        raise CheckpointError(
            f"{path} is corrupt or truncated ({type(err).__name__}: {err}); {untouched}"
        ) from err
    if run_json.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {run_json.get('format')!r}; this rtrrl reads "
            f"format {FORMAT_VERSION}; {untouched}"
        )
    if not agents:
        raise CheckpointError(f"{path} holds no agent arrays; {untouched}")
    return {"run": run_json, "agents": agents, "state": state, "path": path}


def _protocol_and_config(run_json: dict[str, Any]) -> tuple[Protocol, rtrrl_spec.Config]:
    return Protocol(**run_json["protocol"]), rtrrl_spec.Config(**run_json["agent"])


# --- the public entry points ----------------------------------------------------------------


def train(
    task: str = DEFAULT_TASK,
    backend: str = "jax",
    seeds: int | Sequence[int] = 5,
    steps: int = 50_000_000,
    out: str | os.PathLike[str] | None = None,
    *,
    epoch_steps: int = 1000,
    eval_every: int = 100,
    eval_episodes: int = 10,
    eval_steps: int | None = None,
    patience: int = 20,
    num_envs: int = 1,
    dtype: str = "float32",
    fused: bool | None = None,
    progress: bool = False,
    _interrupt_after: int | None = None,
    **config_overrides: Any,
) -> dict[str, Any]:
    """Train ``seeds`` agents on ``task`` with the paper's protocol; returns the summary.

    Args:
        task: a task name of :mod:`rtrrl.envs` (``rtrrl tasks`` lists them).
        backend: a backend name (``rtrrl backends``).
        seeds: how many seeds (``0..seeds-1``), or the seeds themselves.
        steps: budget of environment steps per seed.
        out: run folder; must not hold a run already (use :func:`resume`). ``None`` writes
            nothing but still trains.
        epoch_steps, eval_every, eval_episodes, eval_steps, patience, num_envs: the
            protocol (see :class:`Protocol`).
        dtype: ``"float32"`` or ``"float64"``.
        fused: ``None`` uses the fused JAX path when possible; ``False`` forces the host loop.
        progress: show a tqdm progress bar.
        **config_overrides: fields of :class:`rtrrl_spec.Config` (e.g. ``lr_td=3e-3``).

    Raises:
        rtrrl.envs.UnknownTaskError: unknown task (the message lists close matches).
        rtrrl.BackendError: unknown or uninstalled backend.
        RunExistsError: ``out`` already holds a run.
        DivergedError: a NaN or inf appeared in an agent (the last good checkpoint is kept).
    """
    protocol = Protocol(
        task=task,
        backend=backend,
        seeds=_seeds(seeds),
        steps=steps,
        epoch_steps=epoch_steps,
        eval_every=eval_every,
        eval_episodes=eval_episodes,
        eval_steps=eval_steps,
        patience=patience,
        num_envs=num_envs,
        dtype=dtype,
        fused=fused,
    )
    # Resolve the backend and the task first: a typo should fail before any file is written.
    _registry.get_backend(backend)
    known = {f.name for f in dataclasses.fields(rtrrl_spec.Config)}
    unknown = sorted(set(config_overrides) - known)
    if unknown:
        import difflib

        hints = {u: difflib.get_close_matches(u, known, n=3) for u in unknown}
        raise ValueError(
            f"unknown agent setting(s) {unknown} (close matches: {hints}); the fields of "
            f"rtrrl_spec.Config are {sorted(known)}"
        )
    spec = _spec_of(task)
    config = spec.agent_config(**config_overrides)
    out_path = _prepare_out(out)
    engine = _pick_engine(protocol)
    session = Session(
        out=out_path if out_path is not None else Path(tempfile.mkdtemp(prefix="rtrrl-run-")),
        protocol=protocol,
        config=config,
        engine=engine,
        records=[SeedRecord(seed=s) for s in protocol.seeds],
        progress=progress,
    )
    return _run(session, None, _interrupt_after)


def resume(
    run: str | os.PathLike[str], *, progress: bool = False, _interrupt_after: int | None = None
) -> dict[str, Any]:
    """Continue the run in folder ``run`` from its last checkpoint; returns the summary.

    On the same backend and engine it continues exactly as if it had never stopped: the
    checkpoint holds the agents, optimizer states, random states, environment states, epoch
    counters, best-so-far, patience counters and the metrics so far.
    """
    ckpt = load_checkpoint(run)
    protocol, config = _protocol_and_config(ckpt["run"])
    state = ckpt["state"]
    session = Session(
        out=Path(ckpt["path"]).parent,
        protocol=protocol,
        config=config,
        engine=ckpt["run"]["engine"],
        records=[SeedRecord(**r) for r in state["records"]],
        rows=list(state["rows"]),
        wall=float(state["wall"]),
        progress=progress,
    )
    return _run(session, (ckpt["agents"], state["engine_state"]), _interrupt_after)


def _spec_of(task: str) -> Any:
    from rtrrl import envs

    env = envs.make_host(task, num_envs=1)
    try:
        return env.spec
    finally:
        env.close()


def _prepare_out(out: str | os.PathLike[str] | None) -> Path | None:
    if out is None:
        return None
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise RunExistsError(f"--out {path} exists and is not a folder; refusing to overwrite")
    if path.is_dir() and any((path / n).exists() for n in (CHECKPOINT, "config.json")):
        raise RunExistsError(
            f"{path} already holds a run; refusing to overwrite it. Continue it with "
            f"`rtrrl train --resume {path}` (train(..) → rtrrl.train.resume({str(path)!r})) "
            "or choose another --out"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def _pick_engine(protocol: Protocol) -> str:
    if protocol.fused is False or protocol.backend != "jax":
        if protocol.fused:
            raise ValueError("the fused path needs backend='jax'")
        return "host"
    from rtrrl import envs

    try:
        envs.make_jax(protocol.task)
    except envs.UnknownTaskError:
        raise
    except Exception as err:  # not a gymnax task
        if protocol.fused:
            raise ValueError(f"the fused path needs a gymnax task: {err}") from err
        return "host"
    return "fused"


def _run(
    session: Session, restored: tuple[dict, Any] | None, interrupt_after: int | None
) -> dict[str, Any]:
    if session.engine == "fused":
        from rtrrl import fused

        engine: Any = fused.FusedEngine(session, restored)
    else:
        engine = HostEngine(session, restored)
    session._t0 = time.perf_counter()
    epochs_this_session = 0

    def tick() -> None:
        # Test hook: behave as if Ctrl-C came right after this many epochs.
        nonlocal epochs_this_session
        epochs_this_session += 1
        if interrupt_after is not None and epochs_this_session >= interrupt_after:
            raise KeyboardInterrupt

    try:
        with session.bar():
            if restored is None:
                session.save(*engine.snapshot())
            engine.run(tick)
    except KeyboardInterrupt:
        # The engine's snapshot is always at the last epoch boundary, so resuming from it
        # repeats nothing and skips nothing.
        session.save(*engine.snapshot())
        session.write_files(final=True)
        print(f"\ninterrupted; checkpoint saved. Continue with: rtrrl train --resume {session.out}")
        raise
    session.save(*engine.snapshot())
    session.write_files(final=True)
    return session.summary()


# --- the host loop --------------------------------------------------------------------------


def _rng_snapshot(rng: Any) -> tuple[str, Any]:
    """A picklable copy of a backend's random state (NumPy, JAX, torch, Keras)."""
    if isinstance(rng, np.random.Generator):
        return ("numpy", rng.bit_generator.state)
    module = type(rng).__module__
    if module.startswith("jax"):
        import jax

        return ("jax", np.asarray(jax.random.key_data(rng)))
    if module.startswith("torch"):
        return ("torch", rng.get_state().numpy().copy())
    if module.startswith("keras"):
        return ("keras", np.asarray(rng.state.value))
    raise TrainingError(f"cannot save a random state of type {type(rng).__name__}")


def _rng_restore(backend: Any, seed: int, snap: tuple[str, Any]) -> Any:
    kind, value = snap
    if kind == "numpy":
        rng = np.random.default_rng()
        rng.bit_generator.state = value
        return rng
    if kind == "jax":
        import jax

        return jax.random.wrap_key_data(value)
    rng = backend.rng(seed)
    if kind == "torch":
        import torch

        rng.set_state(torch.from_numpy(value))
    else:
        rng.state.assign(value)
    return rng


def eval_agent_numpy(
    config: rtrrl_spec.Config, agent: dict[str, np.ndarray], episodes: int
) -> dict[str, np.ndarray]:
    """A copy of ``agent`` (NumPy) for ``episodes`` parallel environments: shared arrays
    (parameters, optimizer, feedback) as they are, per-environment state fresh (zero)."""
    fresh = rtrrl_spec.init(config, episodes, 0, dtype=agent["W_A"].dtype.name)
    spec = rtrrl_spec.layout(config, episodes)
    return {k: (fresh[k] if spec[k].group == "env" else np.array(v)) for k, v in agent.items()}


def evaluate_host(
    backend: Any,
    config: rtrrl_spec.Config,
    agent: dict[str, np.ndarray],
    task: str,
    episodes: int,
    seed: int,
    eval_steps: int | None = None,
) -> float:
    """Mean return of ``episodes`` episodes of a frozen copy of ``agent`` (NumPy arrays).

    The episodes run in parallel, one per environment of a fresh host env reset with
    ``seed``; each environment counts its first episode (bounded by the task's time limit,
    else :data:`EVAL_MAX_STEPS`). With ``eval_steps``, the authors' first score instead: one
    environment for ``eval_steps`` steps, the summed reward over the episodes that ended
    (:class:`Protocol`). Noise comes from ``np.random.default_rng(seed)`` through
    :func:`rtrrl_spec.draw_noise` whatever the backend, so every backend sees the same
    environment and the same noise.
    """
    from rtrrl import envs

    frozen = config.replace(lr_td=0.0, lr_rnn=0.0)
    dtype = agent["W_A"].dtype.name
    if eval_steps:
        episodes = 1
    env = envs.make_host(task, num_envs=episodes)
    try:
        limit = eval_steps or env.spec.max_episode_steps or EVAL_MAX_STEPS
        gen = np.random.default_rng(seed)
        state = backend.from_numpy(eval_agent_numpy(config, agent, episodes))
        obs = env.reset(seed)
        reward = np.zeros(episodes, np.float32)
        done = np.ones(episodes, bool)
        total = np.zeros(episodes)
        finished = np.zeros(episodes, bool)
        ended = 0
        for _ in range(limit):
            noise = backend.from_numpy(rtrrl_spec.draw_noise(frozen, episodes, gen, dtype))
            state, action, _ = backend.step(
                frozen,
                state,
                backend.from_numpy(obs.astype(dtype)),
                backend.from_numpy(reward.astype(dtype)),
                backend.from_numpy(done),
                noise,
            )
            obs, reward, terminated, truncated = env.step(backend.to_numpy(action))
            done = np.asarray(terminated) | np.asarray(truncated)
            if eval_steps:
                total += reward
                ended += int(done.sum())
                continue
            total += np.where(finished, 0.0, reward)
            finished |= done
            if finished.all():
                break
        if eval_steps:  # the authors' eval_model: Σ reward / max(episodes ended, 1)
            return float(total.sum() / max(ended, 1))
        return float(total.mean())
    finally:
        env.close()


class HostEngine:
    """The protocol as a Python loop over a host env: any backend, seeds one after another."""

    def __init__(self, session: Session, restored: tuple[dict, Any] | None) -> None:
        self.s = session
        self.p = session.protocol
        self.be = _registry.get_backend(self.p.backend)
        P = len(self.p.seeds)
        self.current: int | None = None
        if restored is None:
            self.agents = [
                rtrrl_spec.init(session.config, self.p.num_envs, seed, dtype=self.p.dtype)
                for seed in self.p.seeds
            ]
            self.boundary: list[dict[str, Any] | None] = [None] * P
        else:
            stacked, engine_state = restored
            self.agents = [{k: v[i] for k, v in stacked.items()} for i in range(P)]
            self.boundary = engine_state["boundary"]

    def snapshot(self) -> tuple[dict[str, np.ndarray], Any]:
        """Stacked agents and the state to resume from (always at an epoch boundary)."""
        stacked = {k: np.stack([a[k] for a in self.agents]) for k in self.agents[0]}
        return stacked, {"boundary": self.boundary}

    def _epoch(
        self,
        env: Any,
        agent: Any,
        rng: Any,
        obs: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        ep_ret: np.ndarray,
        returns: list[float],
    ) -> tuple[Any, Any, np.ndarray, np.ndarray, np.ndarray, float, float]:
        """``epoch_steps`` steps; ``ep_ret`` is updated in place, finished returns appended."""
        be, p, config = self.be, self.p, self.s.config
        B = p.num_envs
        abs_td = value = 0.0
        for _ in range(p.epoch_steps):
            noise, rng = be.draw_noise(config, B, rng, p.dtype)
            agent, action, info = be.step(
                config,
                agent,
                be.from_numpy(obs.astype(p.dtype)),
                be.from_numpy(np.asarray(reward).astype(p.dtype)),
                be.from_numpy(done),
                noise,
            )
            obs, reward, terminated, truncated = env.step(be.to_numpy(action))
            done = np.asarray(terminated) | np.asarray(truncated)
            ep_ret += reward
            if done.any():
                returns.extend(ep_ret[done].tolist())
                ep_ret[done] = 0.0
            abs_td += float(np.abs(be.to_numpy(info["td_error"])).mean())
            value += float(be.to_numpy(info["value"]).mean())
        return agent, rng, obs, reward, done, abs_td, value

    def run(self, tick: Callable[[], None]) -> None:
        from rtrrl import envs

        s, p, be, config = self.s, self.p, self.be, self.s.config
        B = p.num_envs
        for i, rec in enumerate(s.records):
            if not rec.active:
                continue
            env = envs.make_host(p.task, num_envs=B)
            try:
                b = self.boundary[i]
                if b is None:
                    agent = be.from_numpy(self.agents[i])
                    rng = be.rng(noise_seed(rec.seed))
                    obs = env.reset(rec.seed)
                    reward = np.zeros(B, np.float32)
                    done = np.ones(B, bool)
                    ep_ret = np.zeros(B)
                else:
                    agent = be.from_numpy(self.agents[i])
                    rng = _rng_restore(be, noise_seed(rec.seed), b["rng"])
                    env.set_state(b["env"])
                    obs, reward, done = b["obs"], b["reward"], b["done"]
                    ep_ret = b["ep_ret"].copy()
                while rec.active:
                    returns: list[float] = []
                    abs_td = value = 0.0
                    diverged: Exception | None = None
                    try:
                        agent, rng, obs, reward, done, abs_td, value = self._epoch(
                            env, agent, rng, obs, reward, done, ep_ret, returns
                        )
                    except rtrrl_spec.SpecError as err:
                        # The reference validates its inputs: a non-finite agent is refused
                        # mid-epoch; other backends carry the NaN to the check below.
                        diverged = err
                    agent_np = be.to_numpy(agent)
                    if diverged is not None or not all(
                        np.all(np.isfinite(v)) for v in agent_np.values()
                    ):
                        bad = sorted(k for k, v in agent_np.items() if not np.all(np.isfinite(v)))
                        raise DivergedError(
                            f"seed {rec.seed}: non-finite values in the agent ({bad or diverged}) "
                            f"during epoch {rec.epoch + 1}; training stopped. The last good "
                            f"checkpoint ({s.out / CHECKPOINT}) was kept; lower the learning "
                            "rates (lr_td, lr_rnn) or check the task's observations"
                        ) from diverged
                    rec.epoch += 1
                    self.agents[i] = agent_np
                    self.boundary[i] = {
                        "rng": _rng_snapshot(rng),
                        "env": env.get_state(),
                        "obs": obs.copy(),
                        "reward": np.asarray(reward).copy(),
                        "done": done.copy(),
                        "ep_ret": ep_ret.copy(),
                    }
                    s.record_epoch(
                        i,
                        {
                            "episodes": len(returns),
                            "mean_return": float(np.mean(returns)) if returns else math.nan,
                            "mean_abs_td": abs_td / p.epoch_steps,
                            "mean_value": value / p.epoch_steps,
                        },
                    )
                    if p.eval_due(rec.epoch):
                        score = evaluate_host(
                            be,
                            config,
                            agent_np,
                            p.task,
                            p.eval_episodes,
                            eval_seed(rec.seed, rec.epoch),
                            p.eval_steps,
                        )
                        s.record_eval(i, score)
                        s.save(*self.snapshot())
                    tick()
            finally:
                env.close()


# --- evaluation of a checkpoint in any backend ----------------------------------------------


def evaluate_checkpoint(
    run: str | os.PathLike[str],
    backend: str | None = None,
    episodes: int | None = None,
    seed: int = 0,
) -> dict[int, float]:
    """Evaluate every seed's agent of a run on ``backend``: ``{agent seed: mean return}``.

    Uses the host env reset with ``seed`` and NumPy noise seeded with ``seed`` for every
    backend (see :func:`evaluate_host`), so backends agree up to floating-point rounding.
    Scores as the run did (its ``eval_steps``), unless ``episodes`` is given: then the mean
    return of that many complete episodes.
    """
    ckpt = load_checkpoint(run)
    protocol, config = _protocol_and_config(ckpt["run"])
    be = _registry.get_backend(backend or protocol.backend)
    eval_steps = None if episodes else protocol.eval_steps
    episodes = episodes or protocol.eval_episodes
    results = {}
    for i, agent_seed in enumerate(protocol.seeds):
        agent = {k: v[i] for k, v in ckpt["agents"].items()}
        results[agent_seed] = evaluate_host(
            be, config, agent, protocol.task, episodes, seed, eval_steps
        )
    return results


class _CallableModule(types.ModuleType):
    """Makes ``rtrrl.train(...)`` work: importing the submodule ``rtrrl.train`` binds that
    name on the package to this module, so the module itself forwards calls to :func:`train`.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
