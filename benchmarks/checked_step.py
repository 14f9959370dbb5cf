"""What the checked step costs: ``step(..., check=True)`` against ``check=False``, paired.

    RTRRL_TORCH_BENCH_THREADS=1 python benchmarks/checked_step.py [--batches 1,64] [--no-write]

For each backend (jax: the jitted ``step``; torch: ``step_eager`` and ``step_compiled``) and
batch size, the unchecked and the checked step of the same agent on the same fixed inputs are
timed in interleaved rounds (``step_speed.interleaved``: one chunk of calls of each per
round, the order rotated), so load from other processes on a shared machine falls on both
alike. Each call ends when its step has finished (``block_until_ready`` for JAX). Rows
``host-iteration`` time one iteration of the host training loop's inner loop without the
environment (noise drawn, inputs converted, ``backend.step``, the action and two ``info``
entries read back), unchecked and checked, the same way. The table gives both latencies,
their difference (what the check adds) and the median over rounds of the same-round ratio
checked ÷ unchecked (quartiles in parentheses); it is printed and appended to
``benchmarks/results/step_speed.md`` with the command, the date and the machine.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import rtrrl_spec

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import describe as machine  # noqa: E402
from machine import publish  # noqa: E402
from step_speed import RESULTS, bench_config, interleaved  # noqa: E402

Stepper = tuple[dict[str, Any], Callable[[], None]]


def _pair(name: str, variant: str, B: int, step: Callable[..., Any], args: tuple) -> list[Stepper]:
    """The unchecked and the checked call of ``step``, each carrying its own agent."""
    config, agent, *inputs = args
    out = []
    for check in (False, True):
        state = [step(config, agent, *inputs, check=check)[0]]

        def call(check: bool = check, state: list[Any] = state) -> None:
            new, action, _ = step(config, state[0], *inputs, check=check)
            if hasattr(action, "block_until_ready"):
                action.block_until_ready()
            state[0] = new

        row = {"backend": name, "variant": variant, "B": B, "check": check}
        out.append((row, call))
    return out


def _host_pair(name: str, be: Any, config: rtrrl_spec.Config, B: int) -> list[Stepper]:
    """One iteration of the host training loop's inner loop (``rtrrl.host``) without the
    environment's maths: noise drawn, observation, reward and done converted, ``be.step``,
    the action and two ``info`` entries read back; unchecked, then checked."""
    rng = np.random.default_rng(0)
    obs = rng.uniform(-1.0, 1.0, (B, config.obs_dim)).astype(np.float32)
    reward, done = np.zeros(B, np.float32), np.zeros(B, bool)
    out = []
    for check in (False, True):
        state = [be.init(config, B, 0, "float32"), be.rng(0)]

        def call(check: bool = check, state: list[Any] = state) -> None:
            noise, state[1] = be.draw_noise(config, B, state[1], "float32")
            x = [be.from_numpy(a) for a in (obs, reward, done)]
            state[0], action, info = be.step(config, state[0], *x, noise, check=check)
            be.to_numpy(action)
            float(np.abs(be.to_numpy(info["td_error"])).mean())
            float(be.to_numpy(info["value"]).mean())

        out.append(({"backend": name, "variant": "host-iteration", "B": B}, call))
    return out


def _args(be: Any, config: rtrrl_spec.Config, B: int) -> tuple:
    rng = np.random.default_rng(0)
    obs = rng.uniform(-1.0, 1.0, (B, config.obs_dim)).astype(np.float32)
    reward = rng.uniform(-1.0, 1.0, B).astype(np.float32)
    noise = rtrrl_spec.draw_noise(config, B, rng, "float32")
    inputs = [be.from_numpy(x) for x in (obs, reward, np.zeros(B, bool), noise)]
    return (config, be.init(config, B, 0, "float32"), *inputs)


def steppers(backends: list[str], config: rtrrl_spec.Config, B: int) -> list[list[Stepper]]:
    pairs = []
    if "jax" in backends:
        from rtrrl.backends import jax as jb

        pairs.append(_pair("jax", "jit", B, jb.step, _args(jb.JaxBackend(), config, B)))
        pairs.append(_host_pair("jax", jb.JaxBackend(), config, B))
    if "torch" in backends:
        import torch

        from rtrrl.backends.torch import TorchBackend

        threads = os.environ.get("RTRRL_TORCH_BENCH_THREADS", "").strip()
        if threads:
            torch.set_num_threads(int(threads))
        be = TorchBackend(compile=True)
        args = _args(be, config, B)
        pairs.append(_pair("torch", "eager", B, be.step_eager, args))
        pairs.append(_pair("torch", "compiled", B, be.step_compiled, args))
        pairs.append(_host_pair("torch", TorchBackend(), config, B))
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="jax,torch")
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    load_start = os.getloadavg()[0]
    config = bench_config("rflo", 32)
    lines = [
        "| backend | variant | B | unchecked (µs) | checked (µs) | check adds (µs) "
        "| checked ÷ unchecked, paired (wall) | paired (CPU time) | timing |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for B in (int(b) for b in args.batches.split(",")):
        for pair in steppers(args.backends.split(","), config, B):
            off, on = interleaved(pair, chunk=20, rounds=args.rounds, max_s=15.0)
            template = off
            mid, lo, hi = on["paired_wall"]
            cmid, clo, chi = on["paired_cpu"]
            lines.append(
                f"| {template['backend']} | {template['variant']} | {B} "
                f"| {off['step_latency_us']:,.1f} | {on['step_latency_us']:,.1f} "
                f"| {on['step_latency_us'] - off['step_latency_us']:,.1f} "
                f"| {mid:.2f} ({lo:.2f}–{hi:.2f}) | {cmid:.2f} ({clo:.2f}–{chi:.2f}) "
                f"| {on['timing']} |"
            )
            print(lines[-1], file=sys.stderr)
    env = [f"{k}={shlex.quote(v)}" for k, v in sorted(os.environ.items()) if k.startswith("RTRRL_")]
    words = [shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]]
    date = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    report = (
        f"## Checked against unchecked step — {date}\n\n`{' '.join([*env, 'python', *words])}`"
        f"\n\nMachine: {machine(load_start)}. RFLO, N = 32, obs 4, 2 actions, float32; "
        "`check=False` and `check=True` of the same step, timed in interleaved rounds "
        "(median latency per step; paired: median over rounds of checked ÷ unchecked, "
        "quartiles in parentheses).\n\n" + "\n".join(lines) + "\n"
    )
    publish(report, RESULTS, "# Step speed", record=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
