"""Step speed of the ``torch`` backend, eager and ``torch.compile``-d.

Discovered by ``benchmarks/step_speed.py`` (which also measures the NumPy reference in the
same run and writes the tables); :func:`measure` can be called on its own as well::

    python -c "import rtrrl_spec, speed_torch as s; \
        print(s.measure(rtrrl_spec.Config(obs_dim=4, n_actions=2), 1, 200, 'float32'))"

Fixed inputs (drawn once), a warm-up (the first call, which compiles for the compiled variant,
is reported as ``compile_s``), then timed chunks of up to ``steps`` calls carrying the agent;
the best chunk counts, as in the driver's NumPy rows.
Threads are left at PyTorch's default unless ``RTRRL_TORCH_BENCH_THREADS`` is set (the rows
then carry a note): on a machine whose cores are busy with other processes, PyTorch's
intra-op thread pool waits for descheduled threads at every parallel op, and one thread can be
many times faster; see docs/backends/torch.md.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import torch

import rtrrl_spec
from rtrrl.backends.torch import TorchBackend

__all__ = ["measure", "VARIANTS"]

VARIANTS = ("eager", "compiled")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _chunk(steps: int, batch_size: int) -> int:
    """Calls per timed chunk: the same rule as the driver's NumPy rows."""
    return max(5, steps // 10) if batch_size <= 64 else 2


def measure(
    config: rtrrl_spec.Config,
    batch_size: int,
    steps: int,
    dtype: str,
    device: str = "cpu",
    variants: tuple[str, ...] = VARIANTS,
    warmup: int = 3,
) -> list[dict[str, Any]]:
    """One row per variant: agent-steps per second and step latency (best chunk of calls).

    Rows hold ``backend``, ``variant``, ``jacobian``, ``N``, ``B``, ``agent_steps_per_s``,
    ``step_latency_us``, plus ``dtype``, ``device`` and ``compile_s`` (the first call's
    time, compilation included; ``None`` for eager).
    """
    threads = os.environ.get("RTRRL_TORCH_BENCH_THREADS", "").strip()
    if threads:
        torch.set_num_threads(int(threads))
    note = f"{torch.get_num_threads()} thread(s)"
    backend = TorchBackend(device=device, compile=True)
    dev = torch.device(backend.device())
    B = batch_size
    rng = np.random.default_rng(0)
    obs = backend.from_numpy(rng.uniform(-1.0, 1.0, (B, config.obs_dim)).astype(dtype))
    reward = backend.from_numpy(rng.uniform(-1.0, 1.0, B).astype(dtype))
    first_done = backend.from_numpy(np.ones(B, bool))
    done = backend.from_numpy(np.zeros(B, bool))
    noise = backend.from_numpy(rtrrl_spec.draw_noise(config, B, rng, dtype))
    start = backend.init(config, B, seed=0, dtype=dtype)
    fns = {"eager": backend.step_eager, "compiled": backend.step_compiled}
    rows = []
    for variant in variants:
        step = fns[variant]
        agent = start
        _sync(dev)
        t0 = time.perf_counter()
        agent, _, _ = step(config, agent, obs, reward, first_done, noise)
        _sync(dev)
        first = time.perf_counter() - t0
        for _ in range(warmup):
            agent, _, _ = step(config, agent, obs, reward, done, noise)
        _sync(dev)
        # Chunks of calls, the best chunk counting, for at least 1 s and at most ~10 s: load
        # from other processes only ever adds time. The chunk length is the driver's for its
        # NumPy rows (step_speed.py: max(5, steps // 10) calls at B <= 64, else 2), so both
        # sides of a ratio get the same chance of a chunk that no other process interrupted
        # (200-call chunks here against 20 there made the torch rows look slower under load).
        chunk = _chunk(steps, B)
        best, begin = float("inf"), time.perf_counter()
        while best == float("inf") or time.perf_counter() - begin < 1.0:
            t0 = time.perf_counter()
            for _ in range(chunk):
                agent, _, _ = step(config, agent, obs, reward, done, noise)
            _sync(dev)
            best = min(best, (time.perf_counter() - t0) / chunk)
            if time.perf_counter() - begin > 10.0:
                break
        rows.append(
            {
                "backend": "torch",
                "variant": variant,
                "jacobian": config.jacobian,
                "N": config.n_hidden,
                "B": B,
                "agent_steps_per_s": B / best,
                "step_latency_us": best * 1e6,
                "dtype": dtype,
                "device": str(dev),
                "compile_s": first if variant == "compiled" else None,
                "note": note
                + (f", first call (compiles) {first:.1f} s" if variant == "compiled" else ""),
            }
        )
    return rows
