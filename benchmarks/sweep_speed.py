"""Sweep speed: summed agent-steps per second of hyper-parameter populations against one agent.

Rows (one run, same machine, same moment), each the engine of ``rtrrl train`` and
``rtrrl sweep`` (:class:`rtrrl.fused.FusedEngine`, one ``run_epoch`` call per epoch):

- ``single agent``: the fused epoch of ``rtrrl train`` with one seed (the config's numbers
  constants of the code), B = 1;
- ``sweep population-P``: the fused epoch of ``rtrrl sweep``: P members at B = 1, each with
  its own learning rates (log-spaced) and half of them without clip, all in one vmapped scan
  (in blocks of ``rtrrl.fused.MEMBER_BLOCK`` members), shared out over JAX's CPU devices, one
  per core, as ``rtrrl sweep`` does (``rtrrl.threads.cpu_devices_before_jax_starts``); steps
  summed over the members;
- ``sweep population-P, one device``: the same on one device (what a sweep got before it
  shared its members out). P = 5 is also what a run of ``rtrrl train`` (5 seeds by default)
  steps, its seeds shared out the same way.

The single agent runs on one device: one agent at B = 1 is a chain of small operations,
which one core runs.

Every row runs the same number of epochs; the rows are timed in alternation, one call each per
round (order rotated every round), so load that drifts during the run cancels out of the
ratios: each ratio is the median (and quartiles) over rounds of the same-round ratio
population rate ÷ single-agent rate. Rates are from the median call.

Usage: ``python benchmarks/sweep_speed.py [--task CartPole-pos] [--populations 5,64,256]
[--epoch-steps 1000] [--rounds 15] [--record]`` (``--record`` appends to
``benchmarks/results/sweep_speed.md``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe as machine  # noqa: E402
from machine import publish  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "sweep_speed.md"


def runners(task: str, epoch_steps: int, populations: list[int]) -> dict[str, tuple]:
    """``{row: (run one epoch, agent-steps per call)}``, each compiled and run once."""
    from rtrrl import threads

    threads.cpu_devices_before_jax_starts()
    import jax

    from rtrrl import envs, fused
    from rtrrl.settings import RunSettings

    env = envs.make_jax(task)
    config = env.spec.agent_config(n_hidden=32, jacobian="rflo")
    settings = RunSettings(task=task, backend="jax", epoch_steps=epoch_steps, seeds=(0,))

    def runner(engine: fused.FusedEngine) -> Callable[[], None]:
        members = list(range(engine.size))

        def run() -> None:
            engine.run_epoch(members)  # returns once the epoch's metrics are on the host

        run()  # compile
        return run

    out = {"single agent": (runner(fused.FusedEngine(settings, config)), epoch_steps)}
    for P in populations:
        lrs = np.geomspace(1e-4, 1e-2, P)
        configs = [
            config.replace(lr_td=float(lr), lr_rnn=float(lr), clip_norm=None if i % 2 else 1.0)
            for i, lr in enumerate(lrs)
        ]
        members = [(c, i) for i, c in enumerate(configs)]
        for label, devices in {"": None, ", one device": jax.devices()[:1]}.items():
            engine = fused.FusedEngine(settings, config, members=members, devices=devices)
            out[f"sweep population-{P}{label}"] = (runner(engine), P * epoch_steps)
    return out


def timed(rows: dict[str, tuple], rounds: int) -> dict[str, list[float]]:
    """Each row's call times, one call per row per round, the order rotated every round."""
    names = list(rows)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            t0 = time.perf_counter()
            rows[name][0]()
            times[name].append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="CartPole-pos")
    parser.add_argument("--populations", default="5,64,256")
    parser.add_argument("--epoch-steps", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    populations = [int(p) for p in args.populations.split(",")]

    load = os.getloadavg()[0]
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    rows = runners(args.task, args.epoch_steps, populations)
    times = timed(rows, args.rounds)
    single = np.asarray(times["single agent"]) / rows["single agent"][1]
    table = [
        "| row | members | agent-steps/s (summed) | × single agent: median (quartiles) |",
        "|---|---:|---:|---|",
    ]
    for name, (_, steps) in rows.items():
        per_step = np.asarray(times[name]) / steps
        rate = steps / float(np.median(times[name]))
        members = steps // args.epoch_steps
        if name == "single agent":
            table.append(f"| {name} | 1 | {rate:,.0f} | 1 |")
            continue
        lo, mid, hi = np.percentile(single / per_step, [25, 50, 75])
        table.append(f"| {name} | {members} | {rate:,.0f} | {mid:.2f} ({lo:.2f}–{hi:.2f}) |")
    import jax

    from rtrrl import fused

    lines = [
        f"## {date}",
        "",
        f"`python {' '.join(sys.argv)}`",
        "",
        f"Task {args.task}, CT-RNN, RFLO, N = 32, B = 1, float32, {args.epoch_steps} steps per "
        f"epoch (one jitted scan per call), JAX {jax.__version__} on {jax.default_backend()}. "
        f"Rows timed in alternation over {args.rounds} rounds, one call each per round; rates "
        "from the median call; ratios the median (quartiles) of the same-round ratios. "
        "Members: learning rates log-spaced over 1e-4..1e-2, every other one without clip; "
        f"blocks of {fused.MEMBER_BLOCK} members, shared out over {len(jax.devices())} JAX "
        "CPU devices (one per core) unless the row says one device; the single agent on "
        "one device.",
        "",
        *table,
        "",
        f"Machine: {machine(load)}.",
    ]
    text = "\n".join(lines) + "\n"
    publish(text, RESULTS, "# Sweep speed", record=args.record)


if __name__ == "__main__":
    main()
