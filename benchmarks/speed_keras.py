"""Step speed of the Keras 3 backends ``keras-jax`` (eager and ``jax.jit``) and ``keras-torch``.

Discovered by ``benchmarks/step_speed.py`` (which measures the NumPy reference and the plain
``jax`` / ``torch`` backends in the same run). Keras picks its backend once per process, so
:func:`measure` runs one subprocess per Keras backend (``KERAS_BACKEND`` set, ``KERAS_HOME`` in
a temporary folder) and collects its rows; a Keras backend whose framework is missing is
skipped. Timing: a first call (compilation, reported as ``compile_s``), a warm-up, then the
best of timed chunks of up to ``steps`` calls (``step_speed.best_chunk``). These rows are
timed apart from the driver's NumPy rows, never interleaved with them (another process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from importlib.util import find_spec
from typing import Any

import numpy as np

import rtrrl_spec

__all__ = ["measure"]

KERAS_BACKENDS = {"keras-jax": "jax", "keras-torch": "torch"}


def measure(
    config: rtrrl_spec.Config, batch_size: int, steps: int, dtype: str
) -> list[dict[str, Any]]:
    """Rows for each Keras backend and step variant (``eager``; ``compiled`` under JAX)."""
    if find_spec("keras") is None:
        raise ImportError("keras is not installed (pip install 'rtrrl[keras]')")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rtrrl-keras-home-") as home:
        for name, framework in KERAS_BACKENDS.items():
            if find_spec(framework) is None:
                continue
            env = dict(os.environ, KERAS_BACKEND=framework, KERAS_HOME=home)
            if framework == "jax" and dtype == "float64":
                env["JAX_ENABLE_X64"] = "1"
            out = subprocess.run(
                [sys.executable, __file__, name, repr(config), str(batch_size), str(steps), dtype],
                env=env,
                capture_output=True,
                text=True,
                timeout=1800,
            )
            if out.returncode != 0:
                raise RuntimeError(f"{name} benchmark failed:\n{out.stderr[-3000:]}")
            rows += json.loads(out.stdout.strip().splitlines()[-1])
    return rows


def _measure_here(
    name: str, config: rtrrl_spec.Config, B: int, steps: int, dtype: str
) -> list[dict[str, Any]]:
    import rtrrl

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import step_speed  # the shared timing loop, next to this file

    backend = rtrrl.use(name)
    from keras import ops

    rng = np.random.default_rng(0)
    obs = backend.from_numpy(rng.uniform(-1.0, 1.0, (B, config.obs_dim)).astype(dtype))
    reward = backend.from_numpy(rng.uniform(-1.0, 1.0, B).astype(dtype))
    first_done = backend.from_numpy(np.ones(B, bool))
    done = backend.from_numpy(np.zeros(B, bool))
    noise = backend.from_numpy(rtrrl_spec.draw_noise(config, B, rng, dtype))
    start = backend.init(config, B, seed=0, dtype=dtype)

    def sync(agent: dict[str, Any]) -> None:
        # JAX dispatches asynchronously: reading a result back waits for the step.
        ops.convert_to_numpy(agent["v_prev"])

    rows = []
    from rtrrl.backends import keras as keras_backend

    # The eager function is measured too where the backend's own step is compiled (keras-jax).
    variants = {"eager": keras_backend.step, **backend.step_variants()}
    for variant, step in variants.items():
        agent = start
        t0 = time.perf_counter()
        agent, _, _ = step(config, agent, obs, reward, first_done, noise)
        sync(agent)
        first = time.perf_counter() - t0
        for _ in range(3):
            agent, _, _ = step(config, agent, obs, reward, done, noise)
        sync(agent)
        t0 = time.perf_counter()
        agent, _, _ = step(config, agent, obs, reward, done, noise)
        sync(agent)
        one = time.perf_counter() - t0
        chunk = max(1, min(steps, int(0.5 / max(one, 1e-9))))
        state = [agent]

        def call(step: Any = step, state: list[Any] = state) -> None:
            state[0] = step(config, state[0], obs, reward, done, noise)[0]

        best = step_speed.best_chunk(call, chunk, sync=lambda state=state: sync(state[0]))
        rows.append(
            {
                "backend": name,
                "variant": variant,
                "jacobian": config.jacobian,
                "N": config.n_hidden,
                "B": B,
                "agent_steps_per_s": B / best,
                "step_latency_us": best * 1e6,
                "dtype": dtype,
                "device": backend.device(),
                "compile_s": first if variant == "compiled" else None,
            }
        )
    return rows


if __name__ == "__main__":
    name, config_repr, B, steps, dtype = sys.argv[1:6]
    config = eval(config_repr, {"Config": rtrrl_spec.Config})  # repr of a frozen dataclass
    print(json.dumps(_measure_here(name, config, int(B), int(steps), dtype)))
