"""How a benchmark records its figures: the machine line, and the results file it appends to.

Every script under ``benchmarks/`` records :func:`describe`'s line above its table, so figures
from different runs can be told apart (the machines these run on are shared; the load average
says how busy), and appends its section to a file of ``benchmarks/results/`` with
:func:`append_section`, which never rewrites what an earlier run recorded.
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path

__all__ = ["append_section", "describe", "publish", "two_rows"]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _gpu() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "no GPU"
    lines = out.stdout.strip().splitlines()
    return lines[0] if out.returncode == 0 and lines else "no GPU"


def describe(load_start: float | None = None) -> str:
    """Cores, CPU model, GPU, load average (at the start when given, and now) and Python."""
    load = f"load average {os.getloadavg()[0]:.1f} now"
    if load_start is not None:
        load = f"load average {load_start:.1f} at the start, {load}"
    return (
        f"{os.cpu_count()} cores, {_cpu_model()}, {_gpu()}, {load} (the machine may be shared: "
        f"other work slows every row); Python {platform.python_version()}"
    )


def append_section(results: Path, section: str, title: str) -> None:
    """Append ``section`` to ``results`` after a blank line, starting the file with ``title``."""
    results.parent.mkdir(parents=True, exist_ok=True)
    previous = results.read_text() if results.exists() else f"{title}\n"
    results.write_text(previous.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n")


def publish(section: str, results: Path, title: str, *, record: bool) -> None:
    """Print a benchmark's ``section``; with ``record``, also append it to ``results``
    (:func:`append_section`), as every script's ``--record`` does."""
    print(section)
    if record:
        append_section(results, section, title)
        print(f"appended to {results}")


def two_rows(
    baseline: tuple[str, Sequence[float]], other: tuple[str, Sequence[float]], column: str
) -> list[str]:
    """The markdown of two timed rows measured in alternation: each row's median and rounds,
    then the median (and range) of the same-round ratio baseline time / other time."""
    import numpy as np

    lines = [f"| row | {column} (median, s) | rounds (s) |", "|---|---:|---|"]
    for name, times in (baseline, other):
        rounds = ", ".join(f"{t:.1f}" for t in times)
        lines.append(f"| {name} | {np.median(times):.1f} | {rounds} |")
    ratios = np.asarray(baseline[1]) / np.asarray(other[1])
    lines += [
        "",
        f"{baseline[0][:1].upper()}{baseline[0][1:]} ÷ {other[0]}, same round: median "
        f"{np.median(ratios):.2f} (range {ratios.min():.2f}–{ratios.max():.2f}).",
    ]
    return lines
