"""The compiled torch RFLO step with its batch sums row by row, against the product form.

``python benchmarks/torch_row_sums.py [--batch 64,1024,4096] [--rounds 40] [--record]``

On one CPU thread (this script sets it) the compiled RFLO step takes its batch means as
``index_add_`` of every environment into one slot (``_torch_speed.row_batch_mean``), which
inductor fuses into the loop of the trace update (``TorchBackend.row_sums_min_batch``, see
docs/backends/torch.md). Per batch size, three steppers interleaved
(``step_speed.interleaved``): the NumPy reference (``rtrrl_spec.step_unchecked``, the
baseline of the paired ratios), the compiled step with the row sums at any B
(``row_sums_min_batch = 1``), and the compiled step without them (``None``). RFLO, N = 32,
CartPole-sized agent, float32.

Prints a Markdown table; ``--record`` appends it with the command, date and machine to
``benchmarks/results/step_speed.md``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import step_speed  # noqa: E402
from machine import describe as machine  # noqa: E402
from machine import publish  # noqa: E402
from torch_buffers import RESULTS, stepper  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", default="64,1024,4096", help="comma-separated batch sizes")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    lines = [
        "| B | numpy (µs) | row sums ÷ numpy | product ÷ numpy | × numpy throughput (row sums) "
        "| row sums ÷ product |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for B in (int(b) for b in args.batch.split(",")):
        steppers = step_speed.numpy_steppers(step_speed.bench_config("rflo", 32), B, "float32")[
            :1
        ] + [stepper("compiled", B, row_sums=flag) for flag in (True, False)]
        rows = step_speed.interleaved(steppers, chunk=2, rounds=args.rounds, max_s=120.0)
        ref, row_sums, product = rows
        (r2, r1, r3), (p2, p1, p3) = row_sums["paired_wall"], product["paired_wall"]
        lines.append(
            f"| {B} | {ref['step_latency_us']:,.0f} | {r2:.3f} ({r1:.3f}–{r3:.3f}) | "
            f"{p2:.3f} ({p1:.3f}–{p3:.3f}) | {1 / r2:.2f} | {r2 / p2:.2f} |"
        )
        print(lines[-1], flush=True)
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    table = "\n".join(lines)
    text = (
        f"## Compiled torch RFLO, batch sums by rows — {date}\n\n"
        f"`{' '.join(['python', *sys.argv])}` (torch threads: 1)\n\nMachine: {machine()}. "
        "RFLO, N = 32, float32; paired wall-time ratios to the NumPy reference, median "
        "(quartiles); lower is faster.\n\n"
        f"{table}\n"
    )
    publish(text, RESULTS, "# Step speed", record=args.record)


if __name__ == "__main__":
    main()
