"""Speed of one RTRRL agent step, every backend against the NumPy reference in the same run.

    python benchmarks/step_speed.py                     # every backend found, N = 32
    python benchmarks/step_speed.py --backends jax --quick

The driver always measures the NumPy reference: ``rtrrl_spec.step_unchecked`` on inputs that
were validated once (the fair baseline, no boundary checks: row ``numpy / unchecked``) and the
checked ``rtrrl_spec.step`` (row ``numpy / checked``). Backends are discovered as modules
``benchmarks/speed_<name>.py`` next to this file, each exposing::

    def measure(config, batch_size: int, steps: int, dtype: str) -> list[dict]

returning rows with ``backend``, ``variant``, ``jacobian``, ``N``, ``B``,
``agent_steps_per_s`` and ``step_latency_us`` (extra keys are allowed; a ``note`` is shown).
The table gives each row's ratio to the reference's ``B = 1`` figure and to its figure at the
same ``B``; it is printed and appended to ``benchmarks/results/step_speed.md`` with the
command, the date and the machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import rtrrl_spec

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "step_speed.md"
BATCHES = (1, 64, 1024)
QUICK_BATCHES = (1, 64)
Row = dict[str, Any]


def bench_config(jacobian: str, n_hidden: int) -> rtrrl_spec.Config:
    """A CartPole-sized agent: 4 observations, 2 actions, meta-RL input, paper defaults."""
    return rtrrl_spec.Config(obs_dim=4, n_actions=2, n_hidden=n_hidden, jacobian=jacobian)


def measure_numpy(config: rtrrl_spec.Config, B: int, steps: int, dtype: str) -> list[Row]:
    """The reference: ``step_unchecked`` (baseline) and the checked ``step``."""
    rng = np.random.default_rng(0)
    agent = rtrrl_spec.init(config, B, 0, dtype)
    raw = (
        rng.uniform(-1.0, 1.0, (B, config.obs_dim)),
        rng.uniform(-1.0, 1.0, B),
        np.zeros(B, bool),
        rtrrl_spec.draw_noise(config, B, rng, dtype),
    )
    obs, reward, done, noise = rtrrl_spec.check_inputs(config, B, dtype, *raw)
    rows = []
    for variant, fn in (("unchecked", rtrrl_spec.step_unchecked), ("checked", rtrrl_spec.step)):
        # Chunks of `steps` steps; the best chunk counts (as for every backend: load on the
        # machine only ever adds time). RTRL at large B: a few steps are enough.
        state = fn(config, agent, obs, reward, done, noise)[0]  # warm-up
        best, start = math.inf, time.perf_counter()
        while best == math.inf or time.perf_counter() - start < 1.0:
            t0 = time.perf_counter()
            for _ in range(steps):
                state = fn(config, state, obs, reward, done, noise)[0]
            best = min(best, (time.perf_counter() - t0) / steps)
            if time.perf_counter() - start > 10.0:
                break
        rows.append(
            {
                "backend": "numpy",
                "variant": variant,
                "jacobian": config.jacobian,
                "N": config.n_hidden,
                "B": B,
                "agent_steps_per_s": B / best,
                "step_latency_us": best * 1e6,
            }
        )
    return rows


def discover() -> dict[str, Path]:
    """``{name: path}`` of every ``speed_<name>.py`` next to this file."""
    return {p.stem.removeprefix("speed_"): p for p in sorted(HERE.glob("speed_*.py"))}


def load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"rtrrl_bench_speed_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or cpu
    try:
        gpu = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        gpu = ""
    load = f"load average {os.getloadavg()[0]:.1f} (other work on the machine slows every row)"
    python = platform.python_version()
    return f"{os.cpu_count()} cores, {cpu}, {gpu or 'no GPU'}, {load}; Python {python}"


def _fmt(value: float, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def table(rows: list[Row]) -> str:
    """Markdown table with ratios to the reference's ``B = 1`` and same-``B`` figures."""
    base = {
        (r["jacobian"], r["B"]): r["agent_steps_per_s"]
        for r in rows
        if r["backend"] == "numpy" and r["variant"] == "unchecked"
    }
    lines = [
        "| backend | variant | jacobian | N | B | agent-steps/s | step latency (µs) "
        "| × numpy B=1 | × numpy same B | note |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        speed = r["agent_steps_per_s"]
        b1 = base.get((r["jacobian"], 1))
        same = base.get((r["jacobian"], r["B"]))
        lines.append(
            f"| {r['backend']} | {r['variant']} | {r['jacobian']} | {r['N']} | {r['B']} "
            f"| {_fmt(speed)} | {_fmt(r['step_latency_us'], 1)} "
            f"| {_fmt(speed / b1, 1) if b1 else '-'} "
            f"| {_fmt(speed / same, 1) if same else '-'} | {r.get('note', '')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=None, help="comma-separated; default: all found")
    parser.add_argument("--quick", action="store_true", help="B in (1, 64), fewer steps")
    parser.add_argument("--n-hidden", type=int, default=32)
    parser.add_argument("--jacobians", default="rflo,rtrl")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--steps", type=int, default=None, help="steps per timed call")
    parser.add_argument("--gpu", action="store_true", help="note that a GPU run was asked for")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)

    found = discover()
    wanted = args.backends.split(",") if args.backends else list(found)
    unknown = [b for b in wanted if b not in found]
    if unknown:
        parser.error(f"no benchmarks/speed_<name>.py for {unknown}; found {sorted(found)}")
    batches = QUICK_BATCHES if args.quick else BATCHES
    steps = args.steps or (50 if args.quick else 200)

    rows: list[Row] = []
    for jacobian in args.jacobians.split(","):
        config = bench_config(jacobian, args.n_hidden)
        for B in batches:
            chunk = max(5, steps // 10) if B <= 64 else 2  # RTRL at B=1024: ~1 s a step
            rows += measure_numpy(config, B, chunk, args.dtype)
            print(f"numpy {jacobian} B={B} done", file=sys.stderr)
    for name in wanted:
        try:
            module = load(name, found[name])
        except ImportError as err:
            print(f"skipping {name}: {err}", file=sys.stderr)
            continue
        for jacobian in args.jacobians.split(","):
            config = bench_config(jacobian, args.n_hidden)
            for B in batches:
                rows += module.measure(config, B, steps, args.dtype)
                print(f"{name} {jacobian} B={B} done", file=sys.stderr)

    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])
    date = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    report = (
        f"## {date}\n\n`{command}`\n\nMachine: {machine()}. dtype {args.dtype}, "
        f"N = {args.n_hidden}, obs 4, 2 actions.\n\n{table(rows)}\n"
    )
    print(report)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS.open("a") as fh:
            fh.write(report + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
