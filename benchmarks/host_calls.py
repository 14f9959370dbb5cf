"""Python function calls per step of the host loop, this tree against another checkout.

``python benchmarks/host_calls.py [--baseline DIR] [--backend torch] [--task CartPole-v1]
[--top 15] [--record]``

The host loop's epoch rate moves by several per cent from run to run on a shared machine; the
Python work it does per step does not. In a fresh process per side, torch on one thread, a
warm-up run, then runs of 1,000 and 3,000 steps (RFLO, N = 32, B = 1, one seed, no evaluation
inside) under ``cProfile``: the difference between the two, divided by 2,000, is the work of one
step, whatever the run's setup costs. Prints the calls per step of each side, the profiled time
per step (``cProfile`` inflates it in proportion to the calls) and the functions whose calls per
step differ most; ``--record`` appends them to ``benchmarks/results/train_speed.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import describe as machine  # noqa: E402
from machine import publish  # noqa: E402

RESULTS = HERE / "results" / "train_speed.md"
SHORT, LONG = 1_000, 3_000


def _calls(task: str, backend: str, steps: int) -> tuple[dict[str, int], float]:
    """Calls per function and profiled seconds of one host-loop run of ``steps`` steps."""
    import cProfile
    import importlib
    import pstats

    import rtrrl

    # rtrrl.training.train where the package has it; earlier versions made rtrrl.train callable.
    has_training = (Path(rtrrl.__file__).parent / "training.py").exists()
    train = importlib.import_module("rtrrl.training").train if has_training else rtrrl.train
    options = dict(
        seeds=1,
        epoch_steps=1000,
        eval_every=10**6,
        eval_episodes=1,
        patience=10**6,
        fused=False,
        n_hidden=32,
        jacobian="rflo",
        # Table 1's clip, which a baseline from before presets starts from: the same work.
        clip_norm=1.0,
    )
    out = Path(tempfile.mkdtemp(prefix="rtrrl-calls-")) / "run"
    profiler = cProfile.Profile()
    profiler.enable()
    train(task, backend, out=out, steps=steps, **options)
    profiler.disable()
    stats = pstats.Stats(profiler)
    calls: dict[str, int] = {}
    for (file, _, name), row in stats.stats.items():  # type: ignore[attr-defined]
        # The same function in either checkout gets the same key: its path inside the tree.
        where = file.split("/imports/")[-1].split("site-packages/")[-1]
        where = where.removeprefix(str(HERE.parent) + "/")
        # rtrrl.backends is the repository's backends/ folder, imported either way.
        where = where.replace("rtrrl/backends/", "backends/")
        calls[f"{where}:{name}"] = calls.get(f"{where}:{name}", 0) + row[1]
    return calls, stats.total_tt  # type: ignore[attr-defined]


def measure(task: str, backend: str) -> dict:
    """In this process: calls per step of every function, and profiled seconds per step."""
    if "torch" in backend:
        import torch

        torch.set_num_threads(1)
    _calls(task, backend, SHORT)  # compiles, imports, caches
    short, short_s = _calls(task, backend, SHORT)
    long, long_s = _calls(task, backend, LONG)
    per_step = {k: (long.get(k, 0) - short.get(k, 0)) / (LONG - SHORT) for k in long}
    return {"per_step": per_step, "seconds": (long_s - short_s) / (LONG - SHORT)}


def _side(args: argparse.Namespace, path: str | None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if path:
        env["PYTHONPATH"] = path
    command = [sys.executable, __file__, "--child", "--task", args.task, "--backend", args.backend]
    # Run from a neutral folder, so that ``import rtrrl`` finds what PYTHONPATH says.
    out = subprocess.run(
        command, env=env, capture_output=True, text=True, check=True, cwd=tempfile.gettempdir()
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="another checkout of rtrrl to compare with")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--task", default="CartPole-v1")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.task, args.backend)))
        return
    from against_commit import import_tree

    load = os.getloadavg()[0]
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    sides = {"now": _side(args, str(HERE.parent))}
    if args.baseline:
        imports = import_tree(Path(args.baseline), Path(tempfile.mkdtemp()) / "imports")
        sides["before"] = _side(args, str(imports))
    lines = ["| side | Python calls per step | profiled ms per step |", "|---|---:|---:|"]
    for side, r in sides.items():
        total = sum(r["per_step"].values())
        lines.append(f"| {side} | {total:,.0f} | {r['seconds'] * 1e3:.2f} |")
    if "before" in sides:
        now, before = sides["now"]["per_step"], sides["before"]["per_step"]
        diff = {k: now.get(k, 0) - before.get(k, 0) for k in set(now) | set(before)}
        lines += ["", "| function | calls per step now | before | difference |"]
        lines.append("|---|---:|---:|---:|")
        for k in sorted(diff, key=lambda k: -abs(diff[k]))[: args.top]:
            lines.append(
                f"| `{k}` | {now.get(k, 0):.1f} | {before.get(k, 0):.1f} | {diff[k]:+.1f} |"
            )
    baseline = f", against {args.baseline}" if args.baseline else ""
    text = "\n".join(
        [
            f"## Python calls per host-loop step — {date}",
            "",
            "`" + " ".join(["python", "benchmarks/host_calls.py", *sys.argv[1:]]) + "`",
            "",
            f"{args.backend} host loop on {args.task}{baseline}: RFLO, N = 32, B = 1, one seed, "
            f"one thread; ({LONG:,} − {SHORT:,}-step run) ÷ {LONG - SHORT:,} under cProfile. "
            f"Machine: {machine(load)}.",
            "",
            *lines,
            "",
        ]
    )
    publish(text, RESULTS, "# Training speed", record=args.record)


if __name__ == "__main__":
    main()
