"""How XLA's CPU code runs one agent's small matrix product when a population vmaps it.

``python benchmarks/population_matmul.py [--members 256] [--n-hidden 32] [--rounds 7]
[--record]``

A sweep (``rtrrl sweep``) vmaps the fused B = 1 step over its members, so every product of a
member's row vector with its own weights (the CT-RNN's ``tanh(W [x, h, 1])``, the heads)
becomes a dot batched over the members. This times that product alone, inside a jitted
``lax.scan`` of 1000 steps vmapped over the members, written four ways: the step's ``a @ Wᵀ``,
an ``einsum``, and two multiply-and-sum forms (summing over a middle or the last axis). The
forms run in alternation, one call each per round; a figure is the median call's time per
member and step. ``--record`` appends the table to ``benchmarks/results/sweep_speed.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe as machine  # noqa: E402
from machine import publish  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "sweep_speed.md"


def forms() -> dict:
    import jax.numpy as jnp

    return {
        "a @ Wᵀ (the step's form)": lambda a, W: a @ W.T,
        "einsum('bz,nz->bn')": lambda a, W: jnp.einsum("bz,nz->bn", a, W),
        "sum(a[:, :, None] * Wᵀ, axis=1)": lambda a, W: jnp.sum(a[:, :, None] * W.T, axis=1),
        "sum(a[:, None, :] * W, axis=-1)": lambda a, W: jnp.sum(a[:, None, :] * W, axis=-1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=256)
    parser.add_argument("--n-hidden", type=int, default=32)
    parser.add_argument("--inputs", type=int, default=6, help="observation entries + 1")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    import jax
    import jax.numpy as jnp

    M, N, steps = args.members, args.n_hidden, 1000
    Z = N + args.inputs
    W = jax.random.normal(jax.random.key(0), (M, N, Z)) * 0.1
    h0, x = jnp.zeros((M, 1, N)), jnp.ones((M, 1, args.inputs))

    def make(product):
        def member(W, h, x):
            def body(h, _):
                return jnp.tanh(product(jnp.concatenate([x, h], -1), W)), None

            return jax.lax.scan(body, h, None, length=steps)[0]

        return jax.jit(jax.vmap(member))

    load = os.getloadavg()[0]
    fns = {name: make(product) for name, product in forms().items()}
    for fn in fns.values():
        fn(W, h0, x).block_until_ready()  # compile
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            fns[name](W, h0, x).block_until_ready()
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times[names[0]])
    lines = ["| product | µs per member and step | ÷ the step's form |", "|---|---:|---:|"]
    for name in names:
        t = statistics.median(times[name])
        lines.append(f"| `{name}` | {t / (M * steps) * 1e6:.3f} | {t / base:.2f} |")
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    text = (
        f"## One member's product under the population vmap — {date}\n\n"
        f"`{' '.join(['python', *sys.argv])}`\n\n"
        f"{M} members, W of {N} × {Z}, a row of {Z}, in a jitted scan of {steps} steps "
        f"vmapped over the members, JAX {jax.__version__} on {jax.default_backend()}; "
        f"{args.rounds} rounds in alternation, median call. Machine: {machine(load)}.\n\n"
        + "\n".join(lines)
        + "\n"
    )
    publish(text, RESULTS, "# Sweep speed", record=args.record)


if __name__ == "__main__":
    main()
