"""The eager torch step with one agent per process, as a training run has it.

``python benchmarks/torch_alone.py --batch 1,64 --jacobian rflo,rtrl [--baseline DIR]
[--rounds 3] [--record]``

`torch_buffers.py` times several steppers in one process, which is fair to their Python
overhead but not to their memory: the stepper made first sits at the top of the heap, and
glibc gives that memory back to the system and page-faults it in again every step, so at
large B the first stepper measures slower whichever it is. Here each stepper runs in a
process of its own, alone, as an agent in ``rtrrl train`` does: ``default`` (the backend as
shipped, each step's agent donated to the next as the training loop does), ``one pass`` /
``two passes`` (RTRL with ``_torch_speed.OnePassRTRL`` at every batch size, or never), ``not
donated`` (as shipped, each step's agent kept: every RTRL product a fresh buffer) and, with
``--baseline DIR``, the eager step of another checkout's torch backend. Processes alternate
round by round; each reports the median over five chunks of this thread's CPU time per step,
the minor page faults per step and the ATen operators one step dispatches (its Python
overhead, which no load changes). Torch runs on one thread (rtrrl's host-loop default).

Prints a Markdown table (medians over rounds); ``--record`` appends it with the command,
date and machine to ``benchmarks/results/step_speed.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import describe as machine  # noqa: E402
from machine import publish  # noqa: E402

RESULTS = HERE / "results" / "step_speed.md"


def measure(batch: int, jacobian: str, variant: str, baseline: str | None) -> dict[str, float]:
    """In this process: one stepper of ``variant``, timed alone."""
    import torch

    torch.set_num_threads(1)
    import torch_buffers

    if variant == "baseline":
        module = torch_buffers.backend_module(baseline)
        call = torch_buffers.stepper("eager", batch, jacobian=jacobian, module=module)[1]
    elif variant == "default":
        call = torch_buffers.stepper("eager", batch, jacobian=jacobian, one_pass=None)[1]
    elif variant == "not donated":
        kept = torch_buffers.stepper("eager", batch, jacobian=jacobian, one_pass=None, donate=False)
        call = kept[1]
    else:
        one_pass = variant == "one pass"
        call = torch_buffers.stepper("eager", batch, jacobian=jacobian, one_pass=one_pass)[1]
    for _ in range(20):
        call()
    steps = max(20, int(20_000 / (batch**0.8 * (10 if jacobian == "rtrl" else 1))))
    chunks = []
    for _ in range(5):
        start = time.thread_time()
        for _ in range(steps):
            call()
        chunks.append((time.thread_time() - start) / steps * 1e6)
    return {
        "cpu_us": statistics.median(chunks),
        "faults": torch_buffers.faults_per_step(call),
        "ops": aten_ops_per_step(call),
    }


def aten_ops_per_step(call: Callable[[], None], steps: int = 20) -> float:
    """How many ATen operators one step dispatches: the eager step's Python and dispatch
    overhead grows with it, whatever the machine's load, so it compares two versions of the
    step where their times are too close for this machine's noise."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            call()
    events = prof.key_averages()
    return sum(e.count for e in events if e.key.startswith("aten::")) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", default="1,64", help="comma-separated B")
    parser.add_argument("--jacobian", default="rflo,rtrl", help="comma-separated")
    parser.add_argument("--baseline", help="another checkout, its eager step as a row")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child: "B,jacobian,variant"
    args = parser.parse_args()
    if args.one:
        batch, jacobian, variant = args.one.split(",")
        print(json.dumps(measure(int(batch), jacobian, variant, args.baseline)))
        return
    load = os.getloadavg()[0]
    lines = [
        "| jacobian | B | step | CPU µs / step (median over rounds) | ÷ default | "
        "page faults / step | ATen ops / step |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for jacobian in args.jacobian.split(","):
        for batch in (int(b) for b in args.batch.split(",")):
            variants = ["default"]
            if jacobian == "rtrl":
                variants += ["one pass", "two passes", "not donated"]
            if args.baseline:
                variants.append("baseline")
            runs: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
            for round_ in range(args.rounds):
                order = variants if round_ % 2 == 0 else variants[::-1]
                for variant in order:
                    command = [sys.executable, __file__, "--one", f"{batch},{jacobian},{variant}"]
                    if args.baseline:
                        command += ["--baseline", args.baseline]
                    out = subprocess.run(command, capture_output=True, text=True, check=True)
                    runs[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
            default = statistics.median(r["cpu_us"] for r in runs["default"])
            for variant in variants:
                cpu = statistics.median(r["cpu_us"] for r in runs[variant])
                faults = statistics.median(r["faults"] for r in runs[variant])
                ops = statistics.median(r["ops"] for r in runs[variant])
                lines.append(
                    f"| {jacobian} | {batch} | {variant} | {cpu:,.0f} | {cpu / default:.3f} | "
                    f"{faults:,.0f} | {ops:,.0f} |"
                )
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    baseline = ""
    if args.baseline:
        git = ["git", "-C", args.baseline, "log", "-1", "--format=%h %s"]
        commit = subprocess.run(git, capture_output=True, text=True).stdout.strip()
        baseline = f" Rows `baseline`: `{args.baseline}` at commit {commit or '?'}."
    text = (
        f"## Torch eager step, one agent per process — {date}\n\n"
        f"`{' '.join(['python', *sys.argv])}`\n\n"
        f"Machine: {machine(load)}. N = 32, float32, torch on one thread, {args.rounds} "
        f"process(es) per row, alternating.{baseline}\n\n" + "\n".join(lines) + "\n"
    )
    publish(text, RESULTS, "# Step speed", record=args.record)


if __name__ == "__main__":
    main()
