"""What a benchmark's figures were measured on: one line for the results files.

Every script under ``benchmarks/`` records this line above its table, so figures from different
runs can be told apart (the machines these run on are shared; the load average says how busy).
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

__all__ = ["describe"]


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
