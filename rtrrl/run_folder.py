"""The files of a run folder other than the checkpoints: ``config.json``, ``metrics.csv``,
``summary.json``, ``summary.md`` and ``curve.png``, each written atomically with the mode the
umask gives; and the check that a folder can be written before a run starts."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import rtrrl_spec
from rtrrl.errors import RunFolderError

__all__ = [
    "METRIC_FIELDS",
    "agent_label",
    "atomic_write",
    "check_writable",
    "plot_curve",
    "summary_md",
    "write_json",
    "write_metrics",
]

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


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows (``os.umask`` sets
    it, for a moment, in every thread)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Any], Any]) -> None:
    """Write through a temporary file in the same folder, then ``os.replace``: a kill at any
    moment leaves either the old file or the new one, never a torn one.

    The file gets the mode a plain ``open`` would give it (``0o666`` less the umask):
    ``mkstemp`` makes it ``0o600``, which on a shared cluster hides a run from colleagues.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def check_writable(folder: Path, what_to_do: str) -> None:
    """Create and remove a file in ``folder``, the way every run file is written, or raise
    :class:`~rtrrl.errors.RunFolderError` ending with ``what_to_do``: before training, so an
    unwritable folder costs no work (found at the first save, it cost up to a whole budget)."""
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".rtrrl-write-test.", suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise RunFolderError(
            f"cannot write in {folder} ({err.strerror or err}); {what_to_do}"
        ) from err


def write_json(path: Path, value: Any) -> None:
    """``value`` as indented JSON, atomically."""
    text = json.dumps(value, indent=2) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def write_metrics(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """``metrics.csv``: one row per seed per epoch, sorted by seed then epoch."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in sorted(rows, key=lambda r: (r["seed"], r["epoch"])):
        writer.writerow({k: ("" if _isnan(v) else v) for k, v in row.items()})
    atomic_write(path, lambda f: f.write(buf.getvalue().encode()))


def summary_md(summary: dict[str, Any]) -> str:
    """``summary.md``: the summary as a short Markdown report."""

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


def plot_curve(rows: Sequence[dict[str, Any]], path: Path, title: str) -> None:
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
    atomic_write(path, lambda f: f.write(buf.getvalue()))
