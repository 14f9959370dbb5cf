"""The ``numpy`` backend: a thin adapter over the reference implementation :mod:`rtrrl_spec`.

Installed as ``rtrrl.backends.numpy``. It adds nothing to the math: conformance of the other
backends is measured against exactly what this backend computes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import rtrrl_spec
from rtrrl.backends.base import BackendBase, map_tree

__all__ = ["NumpyBackend"]


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
