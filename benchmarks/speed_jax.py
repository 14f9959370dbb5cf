"""Step speed of the ``jax`` backend: the bare agent step inside ``lax.scan`` under ``jit``.

Discovered by ``benchmarks/step_speed.py`` (which measures the NumPy reference in the same
run); :func:`measure` can be called on its own as well.

Variants (one row each):

- ``scan``: ``steps`` agent steps in one jitted ``lax.scan`` on fixed inputs (what a training
  loop fused with a JAX environment runs); compiled by a warm-up call first, timed with
  ``block_until_ready``.
- ``call``: the jitted step called from a Python loop (one dispatch per step).
- ``population-P`` (only at ``B = 1``, one row per size in :data:`POPULATIONS`, default 256;
  ``step_speed.py --population 256,4096`` sets it): P independent agents (seeds 0..P-1) under
  one ``jax.vmap`` of the step, scanned; agent-steps count every member.
"""

from __future__ import annotations

import math
import time
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
    """Rows ``scan`` and ``call`` (and ``population-P`` at ``B = 1``); see module docstring."""
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

    def host_loop(agent):
        for _ in range(n):
            agent, _, _ = jb.step(config, agent, obs, reward, done, noise)
        return agent

    per_call, _ = _time(host_loop, agent)
    rows.append(_row("call", config, B, B * n / per_call, per_call / n))

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
