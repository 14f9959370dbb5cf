"""The torch step's memory and update machinery at one batch size, against the reference.

``RTRRL_TORCH_BENCH_THREADS=1 python benchmarks/torch_buffers.py [--batch 1] [--rounds 100]
[--jacobian rflo] [--baseline /path/to/other/checkout] [--record]``

Steppers (RFLO or RTRL, N = 32, CartPole-sized agent, float32):

- ``eager, packed``: the default eager step, its update on all parameters packed into one
  vector (``_torch_speed.PackedUpdate``); ``eager, per parameter``: the same step with
  ``TorchBackend.packed_update = False`` (the maths' ``apply_update``); with RTRL also
  ``eager, packed, RTRL in one pass`` / ``... in two passes``: the step with
  ``_torch_speed.OnePassRTRL`` at every batch size, or never (the maths' ``rtrl_update``
  then ``project_rtrl``), whatever ``TorchBackend.one_pass_rtrl_min_batch`` says;
- ``compiled``: the ``torch.compile``-d step (with ``--compiled``; compiling takes seconds);
- with ``--baseline DIR``: the eager (and compiled) step of the torch backend in another
  checkout, ``DIR/backends/torch.py``, loaded in this same process, so that the paired ratios
  compare two versions in one run.

The steps run with ``check=False`` where they take it (the argument checks of ``backend.step``
are measured by ``benchmarks/checked_step.py``). Two measurements: minor page faults per step
(``resource.getrusage``) over 50 steps after warm-up, each stepper on its own (a step's fresh
output tensors are page-faulted in when the allocator has returned their memory to the system),
and wall and CPU time per step (CPU: this thread's, page faults included, waiting for a core
not) interleaved with the NumPy reference (``step_speed.interleaved``): the paired ratios to
``rtrrl_spec.step_unchecked`` at the same B, median and quartiles. At large B the wall time of
a stepper also depends on where the allocator placed its tensors (the first stepper made
measured slower in wall time, not in CPU time, whichever it was); compare the CPU column there.

Prints a Markdown table; ``--record`` appends it with the command, date and machine to
``benchmarks/results/step_speed.md``.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import inspect
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import step_speed  # noqa: E402
from machine import describe as machine  # noqa: E402
from machine import publish  # noqa: E402

import rtrrl.backends.torch as this_torch  # noqa: E402
import rtrrl_spec  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "step_speed.md"


def backend_module(checkout: str | None) -> ModuleType:
    """This checkout's torch backend, or the one of another checkout, loaded beside it."""
    if checkout is None:
        return this_torch
    path = Path(checkout) / "backends" / "torch.py"
    spec = importlib.util.spec_from_file_location("baseline_torch_backend", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"no torch backend at {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def stepper(
    variant: str,
    B: int,
    *,
    jacobian: str = "rflo",
    packed: bool = True,
    one_pass: bool | None = True,
    row_sums: bool = True,
    donate: bool = True,
    module: ModuleType = this_torch,
    label: str | None = None,
) -> tuple[dict[str, Any], Callable[[], None]]:
    """One step of ``variant`` ("eager" / "compiled") at batch ``B``: with or without the
    packed update (eager) and the row-order batch sums (compiled, one thread); each step's
    agent donated to the next (``donate``, where the backend's step takes it), as the
    training loop does."""
    config = step_speed.bench_config(jacobian, 32)
    be = module.TorchBackend(compile=variant == "compiled")
    be.row_sums_min_batch = 1 if row_sums else None
    if hasattr(be, "packed_update"):
        be.packed_update = packed
    if hasattr(be, "one_pass_rtrl_min_batch") and one_pass is not None:  # None: as shipped
        be.one_pass_rtrl_min_batch = 1 if one_pass else None
    rng = np.random.default_rng(0)
    obs = be.from_numpy(rng.uniform(-1.0, 1.0, (B, config.obs_dim)).astype("float32"))
    reward = be.from_numpy(rng.uniform(-1.0, 1.0, B).astype("float32"))
    done = be.from_numpy(np.zeros(B, bool))
    noise = be.from_numpy(rtrrl_spec.draw_noise(config, B, rng, "float32"))
    step = getattr(be, f"step_{variant}")
    if "check" in inspect.signature(step).parameters:  # the kernels, as the baseline's
        step = functools.partial(step, check=False)
    if donate and "donate" in inspect.signature(step).parameters:
        step = functools.partial(step, donate=True)
    state = [be.init(config, B, seed=0, dtype="float32")]

    def call() -> None:
        state[0] = step(config, state[0], obs, reward, done, noise)[0]

    for _ in range(3):  # compiles (compiled)
        call()
    if label is None:
        label = (
            "compiled"
            if variant == "compiled"
            else "eager, " + ("packed" if packed else "per parameter")
        )
        if variant == "eager" and jacobian == "rtrl" and one_pass is not None:
            label += ", RTRL in " + ("one pass" if one_pass else "two passes")
    row = {"backend": "torch", "variant": label, "jacobian": jacobian, "N": 32, "B": B}
    return row, call


def faults_per_step(call: Callable[[], None], steps: int = 50) -> float:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        call()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--jacobian", default="rflo", choices=("rflo", "rtrl"))
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--compiled", action="store_true", help="also the compiled step")
    parser.add_argument("--baseline", help="another checkout, timed in the same run")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    threads = os.environ.get("RTRRL_TORCH_BENCH_THREADS", "").strip()
    if threads:
        torch.set_num_threads(int(threads))
    B, jac = args.batch, args.jacobian
    load = os.getloadavg()[0]
    variants = ("eager", "compiled") if args.compiled else ("eager",)
    steppers = [stepper("eager", B, jacobian=jac, packed=p) for p in (True, False)]
    if jac == "rtrl":
        steppers.append(stepper("eager", B, jacobian=jac, one_pass=False))
    if args.compiled:
        steppers.append(stepper("compiled", B, jacobian=jac))
    if args.baseline:
        old = backend_module(args.baseline)
        steppers += [
            stepper(v, B, jacobian=jac, module=old, label=f"{v}, baseline") for v in variants
        ]
    faults = [faults_per_step(call) for _, call in steppers]
    config = step_speed.bench_config(jac, 32)
    rows = step_speed.interleaved(
        step_speed.numpy_steppers(config, B, "float32")[:1] + steppers,
        chunk=20 if B <= 64 else 2,
        rounds=args.rounds,
        max_s=120.0,
    )
    lines = [
        "| torch step | page faults / step (alone) | latency (µs) | CPU (µs) | "
        "paired ÷ numpy (wall) | paired ÷ numpy (CPU) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row, fault in zip(rows[1:], faults, strict=True):
        (w2, w1, w3), (c2, c1, c3) = row["paired_wall"], row["paired_cpu"]
        lines.append(
            f"| {row['variant']} | {fault:,.0f} | {row['step_latency_us']:,.0f} | "
            f"{row['cpu_us']:,.0f} | {w2:.3f} ({w1:.3f}–{w3:.3f}) | {c2:.3f} ({c1:.3f}–{c3:.3f}) |"
        )
    numpy_us = rows[0]["step_latency_us"]
    table = "\n".join(lines)
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    baseline = ""
    if args.baseline:
        git = ["git", "-C", args.baseline, "log", "-1", "--format=%h %s"]
        commit = subprocess.run(git, capture_output=True, text=True).stdout.strip()
        baseline = f" Rows marked baseline: `{args.baseline}` at commit {commit or '?'}."
    text = (
        f"## Torch step machinery, {jac.upper()} B = {B} — {date}\n\n"
        f"`{' '.join(['python', *sys.argv])}` (torch threads: {torch.get_num_threads()})\n\n"
        f"Machine: {machine(load)}. {jac.upper()}, N = 32, float32; NumPy reference "
        f"{numpy_us:,.0f} µs per step in the same rounds ({rows[0]['timing']}).{baseline}"
        f"\n\n{table}\n"
    )
    publish(text, RESULTS, "# Step speed", record=args.record)


if __name__ == "__main__":
    main()
