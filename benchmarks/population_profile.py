"""Where a sweep population's epoch spends its time: XLA's own operators, from a profile.

``python benchmarks/population_profile.py [--members 256] [--task CartPole-pos] [--top 15]
[--record]``

Builds the sweep population of ``benchmarks/sweep_speed.py`` (``--members`` members at B = 1,
each with its own learning rates, half without clip), runs its fused epoch (one jitted scan of
1000 steps) under ``jax.profiler``, and adds up the time of each compiled operator (XLA's
fusions, dots, loops) over the traced epochs. Each row names the operator, its output shape and
the JAX operation XLA's metadata traces it to, so the table reads as "which part of the step".
The profiler's own overhead slows the epoch; the shares, not the absolute times, are the point.
``--record`` appends the table to ``benchmarks/results/sweep_speed.md``.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe as machine  # noqa: E402
from machine import publish  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "sweep_speed.md"
# One compiled instruction of the optimized HLO text: name, output shape, opcode, the rest.
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\(.*?\)|\S+) ([\w\-]+)\((.*)$")
_COMPUTATION = re.compile(r"^%?([\w.\-]+) .*\{\s*$")


def population_epoch(task: str, members: int) -> tuple:
    """The population's jitted epoch, a carry and its other arguments (as sweep_speed.py)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import rtrrl_spec
    from rtrrl import envs, fused

    env = envs.make_jax(task)
    config = env.spec.agent_config(n_hidden=32, jacobian="rflo")
    lrs = np.geomspace(1e-4, 1e-2, members)
    configs = [
        config.replace(lr_td=float(lr), lr_rnn=float(lr), clip_norm=None if i % 2 else 1.0)
        for i, lr in enumerate(lrs)
    ]
    structure, numbers = fused.population_numbers(configs)
    init, epoch, _ = fused.make_population(structure, env, epoch_steps=1000, per_member=True)
    inits = [rtrrl_spec.init(c, 1, i) for i, c in enumerate(configs)]
    agents = {k: jnp.asarray(np.stack([a[k] for a in inits])) for k in inits[0]}
    keys = jnp.stack([jax.random.key_data(jax.random.key(s)) for s in range(members)])
    return epoch, init(agents, keys), (jnp.ones(members, bool), numbers)


def instructions(hlo_text: str) -> dict[str, tuple[str, str]]:
    """``{instruction: (output shape, what it computes)}`` from optimized HLO text: a fusion
    is described by the operations fused into it (``sqrt, divide×2, ...``: Adam's step reads
    as such), any other instruction by its opcode."""
    bodies: dict[str, collections.Counter[str]] = {}
    current = None
    found = []
    for line in hlo_text.splitlines():
        header = _COMPUTATION.match(line)
        if header and "=" not in line.split("{")[0]:
            current = bodies.setdefault(header.group(1), collections.Counter())
            continue
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        name, shape, opcode, rest = match.groups()
        if current is not None and opcode not in ("parameter", "constant", "bitcast", "tuple"):
            current[opcode] += 1
        calls = re.search(r"calls=%?([\w.\-]+)", rest)
        found.append((name, re.sub(r"\{[^}]*\}", "", shape), opcode, calls))
    out = {}
    for name, shape, opcode, calls in found:
        what = opcode
        if opcode == "fusion" and calls and calls.group(1) in bodies:
            ops = bodies[calls.group(1)].most_common(6)
            what = "fusion: " + ", ".join(op + (f"×{n}" if n > 1 else "") for op, n in ops)
        out[name] = (shape if len(shape) < 40 else shape[:37] + "...", what)
    return out


def profile(task: str, members: int, epochs: int) -> tuple[dict[str, float], dict, float]:
    """Milliseconds per epoch of each operator, the operators' descriptions, and the epoch."""
    import jax

    epoch, carry, args = population_epoch(task, members)
    described = instructions(epoch.lower(carry, *args).compile().as_text())
    for _ in range(2):  # compile, warm
        carry, metrics = epoch(carry, *args)
    jax.block_until_ready(metrics)
    with tempfile.TemporaryDirectory() as folder:
        jax.profiler.start_trace(folder, create_perfetto_trace=True)
        for _ in range(epochs):
            carry, metrics = epoch(carry, *args)
        jax.block_until_ready(metrics)
        jax.profiler.stop_trace()
        trace = next(Path(folder).rglob("*.json.gz"))
        with gzip.open(trace) as f:
            data = json.loads(f.read())
    events = data["traceEvents"] if isinstance(data, dict) else data
    total: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("ph") == "X" and event["name"] in described:
            total[event["name"]] += event.get("dur", 0) / 1000 / epochs
    executed = [e for e in events if e.get("ph") == "X" and e["name"] == "ThunkExecutor::Execute"]
    whole = sum(e.get("dur", 0) for e in executed) / 1000 / epochs
    return dict(total), described, whole


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="CartPole-pos")
    parser.add_argument("--members", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    import jax

    load = os.getloadavg()[0]
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    times, described, whole = profile(args.task, args.members, args.epochs)
    traced = sum(times.values())
    rows = [
        "| operator | output | what it computes | ms per epoch | share of the traced ops |",
        "|---|---|---|---:|---:|",
    ]
    for name, ms in sorted(times.items(), key=lambda kv: -kv[1])[: args.top]:
        shape, op = described[name]
        rows.append(f"| `{name}` | `{shape}` | `{op}` | {ms:,.1f} | {ms / traced:.1%} |")
    text = "\n".join(
        [
            f"## Where a population's epoch goes — {date}",
            "",
            "`" + " ".join(["python", "benchmarks/population_profile.py", *sys.argv[1:]]) + "`",
            "",
            f"Task {args.task}, CT-RNN, RFLO, N = 32, {args.members} members at B = 1 (the "
            "population of sweep_speed.py), one epoch of 1000 steps, profiled over "
            f"{args.epochs} epochs with `jax.profiler`, JAX {jax.__version__} on "
            f"{jax.default_backend()}: {traced:,.0f} ms per epoch in the {len(times)} operators "
            f"traced ({whole:,.0f} ms in XLA's executor in all). Machine: {machine(load)}.",
            "",
            *rows,
            "",
        ]
    )
    publish(text, RESULTS, "# Sweep speed", record=args.record)


if __name__ == "__main__":
    main()
