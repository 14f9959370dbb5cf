"""Ray's cost and gain on one machine: a sweep of 8 units (chunks) run here one after another,
and through a local Ray instance of 2 CPUs with 1 and with 2 workers at a time, in one run.

Rows, each a whole ``rtrrl.sweep`` call (results files included) into a fresh folder:

- ``local``: without a runner: the 8 chunks one after another, in this process;
- ``Ray, 1 worker``: on the Ray instance, each chunk a task asking for both CPUs, so one runs
  at a time, on a worker process: its time less the local one, over 8, is what Ray adds per
  unit;
- ``Ray, 2 workers``: each chunk asking for 1 CPU: two at a time; the speed-up is the local
  time over this one.

First every row runs once to warm up: this process compiles the fused epoch, Ray starts
(``ray.init``) and its two worker processes start, import and compile (those one-time costs
are reported apart; Ray is told not to stop idle workers, which it would otherwise do as the
rows switch between one and two CPUs per unit). Then the rows are timed in alternation over
``--rounds`` rounds, the order rotated every round, so that load drifting during the run
cancels out of the ratios: each figure is the median over rounds of the same-round figure.
Also measured: Ray's round trip for a task that does nothing (median of 50), the floor of its
cost per unit. Every sweep's result files are compared with the first: they must be equal,
bit for bit (wall times aside).

Usage: ``python benchmarks/ray_speed.py [--task CartPole-pos] [--steps 30000] [--rounds 3]
[--record]`` (``--record`` appends to ``benchmarks/results/ray_speed.md``).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe as machine  # noqa: E402
from machine import publish  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "ray_speed.md"
UNITS = 8


def sweep_args(args: argparse.Namespace) -> dict[str, Any]:
    """8 learning rates × ``--members`` seeds, one chunk per learning rate."""
    lrs = [1e-4 * (100 ** (i / (UNITS - 1))) for i in range(UNITS)]
    return dict(
        grid={"lr_td": lrs},
        seeds=args.members,
        chunk_size=args.members,
        steps=args.steps,
        epoch_steps=1000,
        eval_every=args.eval_every,
        eval_episodes=5,
        patience=10_000,  # every member trains its whole budget: the units weigh the same
        n_hidden=32,
    )


def timed_sweep(task: str, out: Path, runner: Any, kw: dict[str, Any]) -> float:
    from rtrrl import sweeps

    t0 = time.perf_counter()
    sweeps.sweep(task, "jax", out=out, runner=runner, **kw)
    return time.perf_counter() - t0


def start_ray() -> tuple[float, float]:
    """Start a local instance of 2 CPUs: (``ray.init`` seconds, a no-op task's round trip)."""
    import ray

    temp = tempfile.mkdtemp(prefix="rtrrl-ray-", dir="/tmp")
    t0 = time.perf_counter()
    with warnings.catch_warnings():  # JAX warns of Ray's fork, which executes a new program
        warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            _temp_dir=temp,
            logging_level="WARNING",
            # Ray stops idle workers beyond what the free CPUs can use; switching between
            # the rows' resource shapes would then restart (and recompile) a worker each
            # round, which a sweep of one shape never does.
            _system_config={"kill_idle_workers_interval_ms": 0},
        )
    start = time.perf_counter() - t0
    noop = ray.remote(num_cpus=1)(lambda: None)
    ray.get([noop.remote() for _ in range(2)])
    trips = []
    for _ in range(50):
        t1 = time.perf_counter()
        ray.get(noop.remote())
        trips.append(time.perf_counter() - t1)
    return start, statistics.median(trips)


def same_results(a: Path, b: Path) -> bool:
    def rows(path: Path) -> list[dict[str, str]]:
        with open(path) as f:
            return [{k: v for k, v in r.items() if k != "wall_time"} for r in csv.DictReader(f)]

    return (a / "ranking.csv").read_text() == (b / "ranking.csv").read_text() and rows(
        a / "curves.csv"
    ) == rows(b / "curves.csv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="CartPole-pos")
    parser.add_argument("--steps", type=int, default=30_000, help="steps per member")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--members", type=int, default=4, help="members per unit (seeds)")
    parser.add_argument("--eval-every", type=int, default=10, help="epochs of 1000 steps")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()

    load = os.getloadavg()[0]
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    kw = sweep_args(args)
    from rtrrl import distributed

    rows = {
        "local": None,
        "Ray, 1 worker": distributed.ray_runner(resources=distributed.Resources(cpus=2)),
        "Ray, 2 workers": distributed.ray_runner(resources=distributed.Resources(cpus=1)),
    }
    work = Path(tempfile.mkdtemp(prefix="rtrrl-ray-speed-"))
    names = list(rows)
    try:
        first = {"local": timed_sweep(args.task, work / "warm-local", None, kw)}
        start, trip = start_ray()
        first["Ray"] = timed_sweep(args.task, work / "warm-ray", rows["Ray, 2 workers"], kw)
        times: dict[str, list[float]] = {n: [] for n in names}
        for r in range(args.rounds):
            k = r % len(names)
            for name in names[k:] + names[:k]:
                out = work / f"{r}-{names.index(name)}"
                times[name].append(timed_sweep(args.task, out, rows[name], kw))
        folders = sorted(p for p in work.iterdir() if p.is_dir())
        same = all(same_results(work / "warm-local", f) for f in folders)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    import jax
    import ray

    ray.shutdown()
    local, one, two = (np.asarray(times[n]) for n in names)
    per_unit = float(np.median((one - local) / UNITS))
    speedup = float(np.median(local / two))
    table = [
        "| row | wall per sweep, median (s) | per unit (s) | against local, same round |",
        "|---|---:|---:|---|",
        f"| local, one unit after another | {np.median(local):.1f} | "
        f"{np.median(local) / UNITS:.2f} | 1 |",
        f"| Ray, 1 worker | {np.median(one):.1f} | {np.median(one) / UNITS:.2f} | "
        f"{per_unit:+.2f} s per unit (rounds: "
        + ", ".join(f"{x:+.2f}" for x in (one - local) / UNITS)
        + ") |",
        f"| Ray, 2 workers | {np.median(two):.1f} | {np.median(two) / UNITS:.2f} | "
        f"{speedup:.2f}× as fast (rounds: " + ", ".join(f"{x:.2f}" for x in local / two) + ") |",
    ]
    members = args.members * UNITS
    lines = [
        f"## {date}",
        "",
        f"`python {' '.join(sys.argv)}`",
        "",
        f"A sweep on {args.task} (CT-RNN, RFLO, N = 32): 8 learning rates × {args.members} "
        f"seeds = {members} members, cut into {UNITS} units (chunks) of {args.members} "
        f"members, each member {args.steps:,} steps (epochs of 1000, evaluation on 5 episodes "
        f"every {args.eval_every} epochs, no early stop), fused JAX {jax.__version__} on "
        f"{jax.default_backend()}, Ray {ray.__version__}, a local instance of 2 CPUs. Rows "
        f"timed in alternation over {args.rounds} rounds after a warm-up, the order rotated "
        "every round; each figure the median over rounds (the same-round figures in "
        "parentheses).",
        "",
        *table,
        "",
        f"- Ray adds {per_unit:+.2f} s per unit (1 worker against local, warm processes); a "
        f"task that does nothing takes {trip * 1e3:.1f} ms there and back.",
        f"- 2 workers: {speedup:.2f}× the local speed.",
        f"- Once per run: `ray.init` {start:.1f} s; the first sweep on Ray, whose two worker "
        f"processes start, import and compile side by side, {first['Ray']:.1f} s, against "
        f"{first['local']:.1f} s for the first local sweep (this process's compile).",
        f"- Results of every sweep equal, bit for bit (ranking.csv, curves.csv without wall "
        f"times): {'yes' if same else 'NO'}.",
        "",
        f"Machine: {machine(load)}.",
    ]
    text = "\n".join(lines) + "\n"
    publish(text, RESULTS, "# Ray: cost and gain on one machine", record=args.record)


if __name__ == "__main__":
    main()
