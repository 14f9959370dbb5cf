"""Step speed of the ``torch`` backend, eager and ``torch.compile``-d.

Discovered by ``benchmarks/step_speed.py``, which times the callables of :func:`steppers`
itself, interleaved with the NumPy reference at small B (see its docstring); :func:`measure`
times them on their own (best of timed chunks, ``step_speed.best_chunk``)::

    cd benchmarks && python -c "import rtrrl_spec, speed_torch as s; \
        print(s.measure(rtrrl_spec.Config(obs_dim=4, n_actions=2), 1, 200, 'float32'))"

Fixed inputs (drawn once), the first call (which compiles for the compiled variant, reported
as ``compile_s``) and a warm-up happen when the steppers are made.
The device is ``RTRRL_TORCH_DEVICE`` (default ``cpu``; ``step_speed.py --gpu`` sets ``cuda``).
Threads are left at PyTorch's default unless ``RTRRL_TORCH_BENCH_THREADS`` is set; every row's
note states the thread count. On a machine whose cores are busy with other processes,
PyTorch's intra-op thread pool waits for descheduled threads at every parallel op, and one
thread can be many times faster; see docs/backends/torch.md.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import rtrrl_spec
from rtrrl.backends.torch import TorchBackend

if str(Path(__file__).resolve().parent) not in sys.path:  # step_speed, when loaded by path
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import step_speed  # noqa: E402

__all__ = ["measure", "steppers", "VARIANTS"]

#: ``eager`` and ``compiled`` unchecked (``check=False``); ``-checked``: the same step with the
#: default ``check=True`` (the reference's checks of the arguments first).
VARIANTS = ("eager", "eager-checked", "compiled", "compiled-checked")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def steppers(
    config: rtrrl_spec.Config,
    batch_size: int,
    dtype: str,
    device: str | None = None,
    variants: tuple[str, ...] = VARIANTS,
    warmup: int = 3,
) -> list[tuple[dict[str, Any], Callable[[], None]]]:
    """Per variant: a row template and a callable running one step (synced on a GPU).

    Templates hold ``backend``, ``variant``, ``jacobian``, ``N``, ``B``, ``dtype``,
    ``device``, ``compile_s`` (the first call's time, compilation included; ``None`` for
    eager) and a ``note`` with the thread count.
    """
    threads = os.environ.get("RTRRL_TORCH_BENCH_THREADS", "").strip()
    if threads:
        torch.set_num_threads(int(threads))
    note = f"{torch.get_num_threads()} thread(s)"
    device = device or os.environ.get("RTRRL_TORCH_DEVICE", "cpu")
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
    # A version from before the checked step (benchmarks/against_commit.py runs this script
    # on older commits) has no ``check`` keyword: its step is the unchecked one.
    has_check = "check" in inspect.signature(backend.step_eager).parameters
    # Each step's agent goes to the next and is dropped, as in the training loop (which
    # donates it where the step takes ``donate``; older versions have no such keyword).
    donate = (
        {"donate": True} if "donate" in inspect.signature(backend.step_eager).parameters else {}
    )
    out = []
    for variant in variants:
        kind, _, checked = variant.partition("-")
        if not has_check:
            if checked:
                continue
            step = fns[kind]
        else:
            options = donate if kind == "eager" else {}
            step = functools.partial(fns[kind], check=checked == "checked", **options)
        _sync(dev)
        t0 = time.perf_counter()
        agent, _, _ = step(config, start, obs, reward, first_done, noise)
        _sync(dev)
        first = time.perf_counter() - t0
        for _ in range(warmup):
            agent, _, _ = step(config, agent, obs, reward, done, noise)
        _sync(dev)
        state = [agent]

        def call(step: Callable[..., Any] = step, state: list[Any] = state) -> None:
            state[0] = step(config, state[0], obs, reward, done, noise)[0]
            _sync(dev)

        compiled = kind == "compiled"
        template = {
            "backend": "torch",
            "variant": variant,
            "jacobian": config.jacobian,
            "N": config.n_hidden,
            "B": B,
            "dtype": dtype,
            "device": str(dev),
            "compile_s": first if compiled else None,
            "note": note + (f", first call (compiles) {first:.1f} s" if compiled else ""),
        }
        out.append((template, call))
    return out


def measure(
    config: rtrrl_spec.Config,
    batch_size: int,
    steps: int,
    dtype: str,
    device: str | None = None,
    variants: tuple[str, ...] = VARIANTS,
) -> list[dict[str, Any]]:
    """One row per variant, timed on its own: the best chunk of calls (chunks as long as the
    driver's outside its interleaved rounds), agent-steps per second and step latency."""
    chunk = step_speed.chunk_calls(steps, batch_size)
    return [
        step_speed.timed_row(template, step_speed.best_chunk(call, chunk))
        for template, call in steppers(config, batch_size, dtype, device, variants)
    ]
