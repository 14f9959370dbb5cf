"""Learning results: the paper's protocol on the fused population path, recorded.

``python benchmarks/learn.py --task MemoryChain-8 --seeds 5 [--steps N] [--eval-every E]
[--eval-steps S] [--record]`` trains with :func:`rtrrl.train` (JAX backend, fused path: all
seeds in one ``vmap``), writes the run folder under ``runs/learn-TASK-TIME`` and, with ``--record``,
appends the command, date, machine, steps, wall time and the per-seed table to
``benchmarks/results/learning.md``. Paper targets (best evaluation reward, median ± std of 5
runs) are those of ``reproduce.PAPER``. The learning curve is kept as
``benchmarks/results/curves/learn-TASK-TIME.png`` and shown with the record.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe as machine  # noqa: E402
from machine import publish  # noqa: E402
from reproduce import PAPER, keep_curve  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "learning.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--first-seed", type=int, default=0, help="seeds FIRST .. FIRST + SEEDS - 1 (default 0)"
    )
    parser.add_argument("--steps", type=int, default=1_000_000, help="budget per seed")
    parser.add_argument(
        "--epoch-steps",
        type=int,
        default=1000,
        help="steps per epoch (the authors' first public code: 10,000)",
    )
    parser.add_argument("--eval-every", type=int, default=10, help="epochs (paper: 100)")
    parser.add_argument("--patience", type=int, default=20)
    parser.add_argument(
        "--eval-steps", type=int, help="the authors' evaluation score (rtrrl train --help)"
    )
    parser.add_argument("--out")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()

    import rtrrl
    from rtrrl._cli_train import parse_overrides

    header = machine()
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    out = Path(args.out or f"runs/learn-{args.task}-{time.strftime('%Y%m%d-%H%M%S')}")
    summary = rtrrl.train(
        args.task,
        backend="jax",
        seeds=list(range(args.first_seed, args.first_seed + args.seeds)),
        steps=args.steps,
        out=out,
        epoch_steps=args.epoch_steps,
        eval_every=args.eval_every,
        eval_steps=args.eval_steps,
        patience=args.patience,
        progress=True,
        **parse_overrides(args.set),
    )
    md = (out / "summary.md").read_text().split("\n", 2)[2]
    name = out.name if out.name.startswith("learn-") else f"learn-{out.name}"
    curve = keep_curve(out, RESULTS, name) if args.record else None
    shown = f"\n\n![{args.task}: evaluation reward]({curve})" if curve else ""
    if args.eval_steps:
        scored = (
            f"scored as the authors' first public code did ({args.eval_steps:,} steps of one "
            "environment, summed reward / episodes ended)"
        )
    else:
        scored = "on 10 episodes"
    text = (
        f"## {args.task} — {date}\n\n`python {' '.join(sys.argv)}`\n\nMachine: {header}.\n\n"
        f"Paper: {PAPER.get((args.task, 'rflo'), '—')}. Budget {args.steps:,} steps per seed, "
        f"evaluation every {args.eval_every} epochs of {args.epoch_steps:,} steps {scored}, "
        f"patience {args.patience}; engine {summary['engine']}. Run folder: `{out}`.{shown}\n\n{md}"
    )
    publish(text, RESULTS, "# Learning results", record=args.record)


if __name__ == "__main__":
    main()
