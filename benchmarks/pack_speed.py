"""Packed cells: the wall time of ``benchmarks/reproduce.py --pack`` against the same cells run
one after another, in one run.

Rows (each a fresh process, so that every row pays JAX's start and its compilations, as a
reproduction does):

- ``cells alone``: ``reproduce.py --variants V1,V2,...`` (one ``rtrrl.train`` run of the seeds
  per cell, one after another);
- ``packed``: the same command with ``--pack`` (the cells whose agents differ only in numbers,
  on tasks that are one environment at other parameters, as one sweep population).

Both rows train the same cells at the same budget, with patience high enough that no seed
stops early, so both do the same number of agent steps. The rows are timed in alternation
(order swapped every round), so load that drifts cancels out of the ratio: the median (and
range) over rounds of the same-round ratio cells-alone time ÷ packed time. The results files
of each row are checked to hold a finished record per cell.

Usage: ``python benchmarks/pack_speed.py [--tasks MetaMaze] [--variants rflo,no-clip,tuned]
[--steps 50000] [--rounds 3] [--record]`` (``--tasks MemoryChain-16,MemoryChain-32`` packs
across the tasks) (``--record`` appends to
``benchmarks/results/pack_speed.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe as machine  # noqa: E402
from machine import publish, two_rows  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "pack_speed.md"
SCRIPT = Path(__file__).parent / "reproduce.py"


def one_row(args: argparse.Namespace, packed: bool) -> float:
    """Seconds for one reproduction of the cells (a fresh folder, a fresh process)."""
    with tempfile.TemporaryDirectory(prefix="rtrrl-pack-speed-") as tmp:
        results = Path(tmp) / "r.jsonl"
        command = [sys.executable, str(SCRIPT), "--tasks", args.tasks]
        command += ["--variants", args.variants, "--seeds", str(args.seeds)]
        command += ["--steps", str(args.steps), "--eval-every", str(args.eval_every)]
        command += ["--patience", str(10**6), "--results", str(results)]
        command += ["--md", str(Path(tmp) / "t.md"), "--runs", str(Path(tmp) / "runs")]
        command += ["--pack"] * packed
        t0 = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        records = [json.loads(line) for line in results.read_text().splitlines()]
        bad = [(r["task"], r["variant"]) for r in records if r["status"] != "ok"]
        if bad or len(records) != _cells(args):
            raise SystemExit(f"{'packed' if packed else 'alone'}: cells not finished: {bad}")
        return seconds


def _cells(args: argparse.Namespace) -> int:
    return len(args.tasks.split(",")) * len(args.variants.split(","))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="MetaMaze")
    parser.add_argument("--variants", default="rflo,no-clip,tuned")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()

    load = os.getloadavg()[0]
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    times: dict[bool, list[float]] = {False: [], True: []}
    for r in range(args.rounds):
        for packed in (False, True) if r % 2 == 0 else (True, False):
            times[packed].append(one_row(args, packed))
    alone, packed = times[False], times[True]
    cells = _cells(args)
    lines = [
        f"## {date}",
        "",
        f"`python {' '.join(sys.argv)}`",
        "",
        f"Tasks {args.tasks}, variants {args.variants} ({cells} cells of {args.seeds} seeds), "
        f"{args.steps:,} steps per seed, evaluation every {args.eval_every} epochs of 1000 "
        "steps on 10 episodes, no early stop; each row a fresh process (JAX's start and the "
        f"compilations included); {args.rounds} rounds, the rows in alternation.",
        "",
        *two_rows(("cells alone", alone), ("packed", packed), "wall time per reproduction"),
        "",
        f"Machine: {machine(load)}.",
    ]
    text = "\n".join(lines) + "\n"
    publish(text, RESULTS, "# Packed cells: speed", record=args.record)


if __name__ == "__main__":
    main()
