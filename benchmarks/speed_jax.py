"""Step speed of the ``jax`` backend: the bare agent step inside ``lax.scan`` under ``jit``.

Discovered by ``benchmarks/step_speed.py`` (which measures the NumPy reference in the same
run); :func:`measure` can be called on its own as well.

Variants (one row each):

- ``scan``: ``steps`` agent steps in one jitted ``lax.scan`` on fixed inputs (what a training
  loop fused with a JAX environment runs); compiled by a warm-up call first, timed with
  ``block_until_ready``.
- ``call``: the jitted step called from a Python loop (one dispatch per step), unchecked
  (``step(..., check=False)``).
- ``call-checked``: the same with the default ``check=True``: the reference's checks of the
  arguments (the agent's layout, the four inputs copied to NumPy) before each step.
- ``population-P`` (only at ``B = 1``, one row per size in :data:`POPULATIONS`, default 256;
  ``step_speed.py --population 256,4096`` sets it): P independent agents (seeds 0..P-1) under
  one ``jax.vmap`` of the step, scanned; agent-steps count every member.

Run as a script, it compares two versions of the backend in one process, paired::

    python benchmarks/speed_jax.py --against /path/to/other/backends/jax.py [--quick]

The other version is loaded from that file under another module name; both step the same
agents on the same inputs in interleaved rounds (one timed call of each per round, the
order alternating), and each row gives the median over rounds of (this checkout's time ÷
the other's), with quartiles, in wall time and in the process's CPU time (all its threads,
``time.process_time``: less sensitive to other processes on a shared machine). Load that
drifts over the run cancels, as in step_speed's paired ratios. Nothing is written to
``benchmarks/results``.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import inspect
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import rtrrl_spec
from rtrrl.backends import jax as jb

__all__ = ["measure", "POPULATIONS"]

POPULATIONS: tuple[int, ...] = (256,)
# Skip what would not fit comfortably in memory (the RTRL trace is B * N * N * Z floats).
MAX_STATE_BYTES = 4 * 2**30
MIN_SECONDS = 0.3  # repeat the timed call until this much time has passed


def _inputs(config: rtrrl_spec.Config, B: int, dtype: str, lead: tuple[int, ...] = ()):
    rng = np.random.default_rng(0)
    shape = (*lead, B)
    obs = jnp.asarray(rng.uniform(-1.0, 1.0, (*shape, config.obs_dim)).astype(dtype))
    reward = jnp.asarray(rng.uniform(-1.0, 1.0, shape).astype(dtype))
    done = jnp.zeros(shape, bool)
    noise = rtrrl_spec.draw_noise(config, int(np.prod(shape)), rng, dtype)
    return obs, reward, done, jnp.asarray(noise.reshape(*shape, -1))


def _time(fn, *args) -> tuple[float, int]:
    """Best seconds per call of ``fn`` (after one warm-up call that compiles it) over calls
    repeated for at least ``MIN_SECONDS``; the best, as ``timeit`` does, because other load
    on the machine only ever adds time."""
    jax.block_until_ready(fn(*args))
    best, calls, start = math.inf, 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < MIN_SECONDS:
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
        calls += 1
    return best, calls


def _row(variant: str, config: rtrrl_spec.Config, B: int, steps_per_s: float, latency: float):
    return {
        "backend": "jax",
        "variant": variant,
        "jacobian": config.jacobian,
        "N": config.n_hidden,
        "B": B,
        "agent_steps_per_s": steps_per_s,
        "step_latency_us": latency * 1e6,
        "device": jb.JaxBackend().device(),
    }


def _state_bytes(config: rtrrl_spec.Config, B: int, dtype: str) -> int:
    item = np.dtype(dtype).itemsize
    return sum(int(np.prod(s.shape)) * item for s in rtrrl_spec.layout(config, B).values())


def measure(
    config: rtrrl_spec.Config, batch_size: int, steps: int, dtype: str
) -> list[dict[str, Any]]:
    """Rows ``scan``, ``call`` and ``call-checked`` (and ``population-P`` at ``B = 1``); see
    the module docstring."""
    be = jb.JaxBackend()
    B = batch_size
    rows: list[dict[str, Any]] = []
    if _state_bytes(config, B, dtype) * 3 > MAX_STATE_BYTES:  # agent, new agent, temporaries
        row = _row("scan", config, B, float("nan"), float("nan"))
        gib = _state_bytes(config, B, dtype) / 2**30
        row["note"] = f"skipped: the agent alone needs {gib:.1f} GiB"
        return [row]
    # Fewer steps per timed call at large B, so that RTRL at B = 1024 stays in minutes.
    steps = max(2, min(steps, 20_000 // B))
    step = jb.make_step(config, dtype)
    obs, reward, done, noise = _inputs(config, B, dtype)

    run = _scanned(step, (obs, reward, done, noise), steps)
    agent = be.init(config, B, 0, dtype)
    per_call, _ = _time(run, agent)
    rows.append(_row("scan", config, B, B * steps / per_call, per_call / steps))

    # One jitted call per step from Python: the dispatch cost of ordinary host loops.
    n = max(2, min(100, 2_000 // B))

    for variant, check in (("call", False), ("call-checked", True)):

        def host_loop(agent, check=check):
            for _ in range(n):
                agent, _, _ = jb.step(config, agent, obs, reward, done, noise, check=check)
            return agent

        per_call, _ = _time(host_loop, agent)
        rows.append(_row(variant, config, B, B * n / per_call, per_call / n))

    for size in POPULATIONS if B == 1 else ():
        rows.append(_population_row(config, size, steps, dtype))
    return rows


def _scanned(step: Any, inputs: tuple, steps: int) -> Any:
    """A jitted function running ``steps`` calls of ``step(agent, *inputs)`` in one scan."""

    @jax.jit
    def run(agent):
        def body(agent, _):
            return step(agent, *inputs)[0], None

        return jax.lax.scan(body, agent, None, length=steps)[0]

    return run


def _population_row(config: rtrrl_spec.Config, size: int, steps: int, dtype: str) -> dict:
    """``size`` agents of one config (seeds 0..size-1), one vmapped step scanned ``steps`` times."""
    agents = jb.init_population(config, range(size), 1, dtype)
    p_obs, p_reward, p_done, p_noise = _inputs(config, 1, dtype, lead=(size,))
    pop_step = jb.make_population_step(config, dtype, jit=False)
    run_population = _scanned(pop_step, (p_obs, p_reward, p_done, p_noise), steps)
    per_call, _ = _time(run_population, agents)
    return _row(f"population-{size}", config, 1, size * steps / per_call, per_call / steps)


# --- paired comparison of two versions of the backend ---------------------------------------


def load_backend(path: str | Path) -> Any:
    """Another version of ``backends/jax.py``, loaded from ``path`` as its own module."""
    spec = importlib.util.spec_from_file_location("rtrrl_bench_other_jax", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def runners(
    backend: Any, config: rtrrl_spec.Config, B: int, steps: int, dtype: str
) -> dict[str, tuple[int, Callable[[], None]]]:
    """Per variant, ``(agent-steps per call, call)``; each call runs and syncs its steps.

    ``scan``: ``steps`` steps in one jitted ``lax.scan``; ``scan-packed``: the same with the
    Adam moments packed (``pack_moments``, as the fused training epoch carries them);
    ``call``: ``steps`` jitted steps from Python, unchecked; ``population-P`` (at ``B = 1``): ``P``
    agents, vmapped, scanned.
    """
    inputs = _inputs(config, B, dtype)
    scan = _scanned(backend.make_step(config, dtype), inputs, steps)
    # The unchecked step of either version (a version before the checked mode has no keyword).
    step = backend.step
    if "check" in inspect.signature(step).parameters:
        step = functools.partial(step, check=False)
    start = backend.JaxBackend().init(config, B, 0, dtype)
    state = {"scan": start, "call": start, "packed": backend.pack_moments(config, start)}

    def run_scan() -> None:
        state["scan"] = jax.block_until_ready(scan(state["scan"]))

    def run_packed() -> None:
        state["packed"] = jax.block_until_ready(scan(state["packed"]))

    def run_calls() -> None:
        agent = state["call"]
        for _ in range(steps):
            agent = step(config, agent, *inputs)[0]
        state["call"] = jax.block_until_ready(agent)

    out = {
        "scan": (B * steps, run_scan),
        "scan-packed": (B * steps, run_packed),
        "call": (B * steps, run_calls),
    }
    for size in POPULATIONS if B == 1 else ():
        pop_inputs = _inputs(config, 1, dtype, lead=(size,))
        pop_step = backend.make_population_step(config, dtype, jit=False)
        pop_scan = _scanned(pop_step, pop_inputs, max(2, steps // 10))
        key = f"population-{size}"
        state[key] = backend.init_population(config, range(size), 1, dtype)

        def run_population(key: str = key, fn: Any = pop_scan) -> None:
            state[key] = jax.block_until_ready(fn(state[key]))

        out[key] = (size * max(2, steps // 10), run_population)
    return out


def compare(
    other: Any, config: rtrrl_spec.Config, B: int, steps: int, dtype: str, rounds: int
) -> list[dict[str, Any]]:
    """Rows of this checkout's backend against ``other``, timed in interleaved rounds."""
    ours, theirs = runners(jb, config, B, steps, dtype), runners(other, config, B, steps, dtype)
    rows = []
    for variant, (n, run_ours) in ours.items():
        run_theirs = theirs[variant][1]
        for run in (run_ours, run_theirs, run_ours, run_theirs):  # compile, warm up
            run()
        wall: dict[str, list[float]] = {"ours": [], "theirs": []}
        cpu: dict[str, list[float]] = {"ours": [], "theirs": []}
        for r in range(rounds):
            pair = [("ours", run_ours), ("theirs", run_theirs)]
            for who, run in pair if r % 2 == 0 else pair[::-1]:
                c0, t0 = time.process_time(), time.perf_counter()
                run()
                t1, c1 = time.perf_counter(), time.process_time()
                wall[who].append((t1 - t0) / n)
                cpu[who].append((c1 - c0) / n)
        rows.append(
            {
                "variant": variant,
                "jacobian": config.jacobian,
                "B": B,
                "ours_us": float(np.median(wall["ours"])) * 1e6,
                "theirs_us": float(np.median(wall["theirs"])) * 1e6,
                "ratio": _quartiles(np.array(wall["ours"]) / np.array(wall["theirs"])),
                "cpu_ratio": _quartiles(np.array(cpu["ours"]) / np.array(cpu["theirs"])),
            }
        )
    return rows


def _quartiles(values: np.ndarray) -> tuple[float, float, float]:
    q1, q2, q3 = np.percentile(values, [25, 50, 75])
    return float(q2), float(q1), float(q3)


def _fmt(quartiles: tuple[float, float, float]) -> str:
    mid, lo, hi = quartiles
    return f"{mid:.3f} ({lo:.3f}–{hi:.3f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="paired: this backend against another jax.py")
    parser.add_argument("--against", required=True, help="path of the other backends/jax.py")
    parser.add_argument("--quick", action="store_true", help="B in (1, 64), fewer rounds")
    parser.add_argument("--jacobians", default="rflo,rtrl")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args(argv)
    other = load_backend(args.against)
    batches = (1, 64) if args.quick else (1, 64, 1024)
    rounds = args.rounds or (15 if args.quick else 30)
    print(f"`python {' '.join([sys.argv[0], *(argv or sys.argv[1:])])}`\n")
    print("| variant | jacobian | B | this (µs/agent-step) | other (µs/agent-step) ", end="")
    print("| this ÷ other, wall | this ÷ other, CPU time |\n|---|---|---:|---:|---:|---:|---:|")
    for jacobian in args.jacobians.split(","):
        config = rtrrl_spec.Config(obs_dim=4, n_actions=2, n_hidden=32, jacobian=jacobian)
        for B in batches:
            steps = max(2, min(50, 2_000 // (B * (20 if jacobian == "rtrl" else 1))))
            for row in compare(other, config, B, steps, args.dtype, rounds):
                wall, cpu = (_fmt(row[k]) for k in ("ratio", "cpu_ratio"))
                print(
                    f"| {row['variant']} | {jacobian} | {B} | {row['ours_us']:,.2f} "
                    f"| {row['theirs_us']:,.2f} | {wall} | {cpu} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
