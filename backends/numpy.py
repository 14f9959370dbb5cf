"""The ``numpy`` backend: a thin adapter over the reference implementation :mod:`rtrrl_spec`.

Installed as ``rtrrl.backends.numpy``. It adds nothing to the math: conformance of the other
backends is measured against exactly what this backend computes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import rtrrl_spec
from rtrrl.backends.base import BackendBase, map_tree

__all__ = ["NumpyBackend", "numpy_rng_from_state", "numpy_rng_state"]

_MASK64 = (1 << 64) - 1


def numpy_rng_state(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A PCG64 generator's state as arrays: its 128-bit ``state`` and ``inc`` as two uint64
    words each, and the buffered 32-bit half it may hold."""
    state = rng.bit_generator.state
    if state["bit_generator"] != "PCG64":
        raise TypeError(f"only PCG64 generators are saved, got {state['bit_generator']}")
    words = [state["state"]["state"], state["state"]["inc"]]
    return {
        "pcg64": np.array([w >> 64 for w in words] + [w & _MASK64 for w in words], np.uint64),
        "buffer": np.array([state["has_uint32"], state["uinteger"]], np.uint64),
    }


def numpy_rng_from_state(state: dict[str, np.ndarray]) -> np.random.Generator:
    """The generator :func:`numpy_rng_state` saved."""
    hi_state, hi_inc, lo_state, lo_inc = (int(w) for w in np.asarray(state["pcg64"]))
    has_uint32, uinteger = (int(v) for v in np.asarray(state["buffer"]))
    rng = np.random.Generator(np.random.PCG64())
    rng.bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {"state": (hi_state << 64) | lo_state, "inc": (hi_inc << 64) | lo_inc},
        "has_uint32": has_uint32,
        "uinteger": uinteger,
    }
    return rng


def _copy(x: Any) -> np.ndarray:
    # Copies, so that neither side can mutate the other's arrays; the dtype is kept as is.
    return np.array(x, copy=True)


class NumpyBackend(BackendBase):
    """The reference, as a backend: arrays are NumPy arrays on the CPU."""

    name = "numpy"
    supported_dtypes = ("float32", "float64")

    def version(self) -> str:
        return np.__version__

    def device(self) -> str:
        return "cpu"

    def to_numpy(self, tree: Any) -> Any:
        return map_tree(_copy, tree)

    def from_numpy(self, tree: Any) -> Any:
        return map_tree(_copy, tree)

    def init(
        self, config: rtrrl_spec.Config, batch_size: int, seed: int, dtype: str = "float32"
    ) -> dict[str, np.ndarray]:
        return rtrrl_spec.init(config, batch_size, seed, dtype=dtype)

    def step(
        self,
        config: rtrrl_spec.Config,
        agent: dict[str, np.ndarray],
        obs: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        noise: np.ndarray,
    ) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray]]:
        return rtrrl_spec.step(config, agent, obs, reward, done, noise)

    def rng(self, seed: int) -> np.random.Generator:
        return np.random.default_rng(seed)

    def draw_noise(
        self, config: rtrrl_spec.Config, batch_size: int, rng: np.random.Generator, dtype: str
    ) -> tuple[np.ndarray, np.random.Generator]:
        # NumPy generators are stateful: drawing advances `rng` itself, which is returned so
        # that callers can treat every backend's rng functionally.
        return rtrrl_spec.draw_noise(config, batch_size, rng, dtype), rng

    def rng_state(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return numpy_rng_state(rng)

    def rng_from_state(self, state: dict[str, np.ndarray]) -> np.random.Generator:
        return numpy_rng_from_state(state)

    def step_functions(self) -> dict[str, Any]:
        """The reference's functions themselves: this backend is the spec."""
        return rtrrl_spec.step_functions()
