"""The torch step's reused output buffers at large B: page faults and time, with and without.

``RTRRL_TORCH_BENCH_THREADS=1 python benchmarks/torch_buffers.py [--batch 1024] [--rounds 60]``

For each of the eager and the compiled RFLO step (N = 32, CartPole-sized agent, float32), one
``TorchBackend`` with the buffer pool (the default from ``buffer_min_batch`` = 64 on) and one
without (``buffer_min_batch`` set above B). Two measurements:

- minor page faults per step (``resource.getrusage``) over 50 steps after warm-up, each
  stepper timed on its own in a fresh process state (before the NumPy reference's large
  temporaries have moved glibc's mmap threshold);
- wall time per step, interleaved with the NumPy reference (``step_speed.interleaved``): the
  paired ratio to ``rtrrl_spec.step_unchecked`` at the same B, median and quartiles.

Prints a Markdown table; ``--record`` appends it with the command, date and machine to
``benchmarks/results/step_speed.md``.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import step_speed  # noqa: E402
from machine import append_section  # noqa: E402
from machine import describe as machine  # noqa: E402

import rtrrl_spec  # noqa: E402
from rtrrl.backends.torch import TorchBackend  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "step_speed.md"


def stepper(
    variant: str, pooled: bool, B: int, row_sums: bool = True
) -> tuple[dict[str, Any], Callable[[], None]]:
    """One RFLO step of ``variant`` ("eager" / "compiled") at batch ``B``, with or without the
    buffer pool and (compiled, one thread) the row-order batch sums."""
    config = step_speed.bench_config("rflo", 32)
    be = TorchBackend(compile=variant == "compiled")
    be.row_sums_min_batch = 1 if row_sums else None
    if not pooled:
        be.buffer_min_batch = B + 1
    rng = np.random.default_rng(0)
    obs = be.from_numpy(rng.uniform(-1.0, 1.0, (B, config.obs_dim)).astype("float32"))
    reward = be.from_numpy(rng.uniform(-1.0, 1.0, B).astype("float32"))
    done = be.from_numpy(np.zeros(B, bool))
    noise = be.from_numpy(rtrrl_spec.draw_noise(config, B, rng, "float32"))
    step = getattr(be, f"step_{variant}")
    state = [be.init(config, B, seed=0, dtype="float32")]

    def call() -> None:
        state[0] = step(config, state[0], obs, reward, done, noise)[0]

    for _ in range(3):  # compiles (compiled), fills the pool
        call()
    row = {"backend": "torch", "variant": f"{variant}, {'pooled' if pooled else 'fresh'}"}
    return {**row, "jacobian": "rflo", "N": 32, "B": B}, call


def faults_per_step(call: Callable[[], None], steps: int = 50) -> float:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        call()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    threads = os.environ.get("RTRRL_TORCH_BENCH_THREADS", "").strip()
    if threads:
        torch.set_num_threads(int(threads))
    B = args.batch
    steppers = [stepper(v, p, B) for v in ("eager", "compiled") for p in (True, False)]
    faults = [faults_per_step(call) for _, call in steppers]
    rows = step_speed.interleaved(
        step_speed.numpy_steppers(step_speed.bench_config("rflo", 32), B, "float32")[:1] + steppers,
        chunk=2,
        rounds=args.rounds,
        max_s=120.0,
    )
    lines = [
        "| torch step | page faults / step (alone) | latency (µs) | paired ÷ numpy (wall) | "
        "× numpy throughput |",
        "|---|---:|---:|---:|---:|",
    ]
    for row, fault in zip(rows[1:], faults, strict=True):
        q2, q1, q3 = row["paired_wall"]
        lines.append(
            f"| {row['variant']} | {fault:,.0f} | {row['step_latency_us']:,.0f} | "
            f"{q2:.3f} ({q1:.3f}–{q3:.3f}) | {1 / q2:.2f} |"
        )
    numpy_us = rows[0]["step_latency_us"]
    table = "\n".join(lines)
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    text = (
        f"## Torch output buffers, B = {B} — {date}\n\n`{' '.join(['python', *sys.argv])}` "
        f"(torch threads: {torch.get_num_threads()})\n\nMachine: {machine()}. RFLO, N = 32, "
        f"float32; NumPy reference {numpy_us:,.0f} µs per step in the same rounds "
        f"({rows[0]['timing']}).\n\n{table}\n"
    )
    print(text)
    if args.record:
        append_section(RESULTS, text, "# Step speed")


if __name__ == "__main__":
    main()
