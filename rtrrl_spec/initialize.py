"""Initial agents and sampling noise, from a seeded ``numpy.random.Generator``.

Distributions follow the authors' code (see ``docs/spec.md``): LeCun-normal ``W`` over
fan-in ``Z``, ``tau ~ U[1, 5]``, Glorot-normal heads and feedback matrices, ``b_C = 0``; the
LRU body as in the LRU paper (ring initialization, ``rtrrl_spec.lru.init_lru``).
Both normal initializers are truncated at two standard deviations and rescaled so the
truncated distribution keeps the intended variance (the flax / JAX convention).
"""

from __future__ import annotations

import numpy as np

from rtrrl_spec.config import Config, SpecError
from rtrrl_spec.layout import FLOAT_DTYPES, layout
from rtrrl_spec.lru import init_lru

__all__ = ["init", "draw_noise", "truncated_normal"]

# Standard deviation of a standard normal truncated to [-2, 2]; dividing by it restores unit
# variance after truncation.
_TRUNCATED_STD = 0.87962566103423978


def truncated_normal(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    """Normal samples truncated at ±2 and rescaled so that their standard deviation is ``std``.

    Out-of-range draws are redrawn (rejection), so the result depends only on ``rng``'s stream.
    """
    out = rng.standard_normal(shape)
    bad = np.abs(out) > 2.0
    while np.any(bad):
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2.0
    return out * (std / _TRUNCATED_STD)


def _glorot(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    return truncated_normal(rng, (fan_in, fan_out), np.sqrt(2.0 / (fan_in + fan_out)))


def _generator(seed: int | np.random.Generator) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise SpecError(f"seed must be a non-negative int or a numpy Generator, got {seed!r}")
    return np.random.default_rng(int(seed))


def _check_dtype(dtype: str | np.dtype) -> str:
    name = np.dtype(dtype).name
    if name not in FLOAT_DTYPES:
        raise SpecError(f"dtype must be one of {FLOAT_DTYPES}, got {name}")
    return name


def init(
    config: Config,
    batch_size: int,
    seed: int | np.random.Generator,
    dtype: str | np.dtype = "float32",
) -> dict[str, np.ndarray]:
    """A fresh agent in the canonical layout.

    Parameters are drawn in float64 in a fixed order (the body's: ``W``, ``tau`` or the LRU's,
    then ``W_A``, ``W_C``, ``B_A``, ``B_C``; absent arrays are skipped) and then cast, so
    float32 and float64 agents of one seed hold the same numbers up to rounding, and switching
    feedback alignment off does not change ``W`` or the heads. Everything else starts at zero:
    the first step is treated as the start of an episode (call it with ``done = True``).
    """
    float_dtype = _check_dtype(dtype)
    if not isinstance(config, Config):
        raise SpecError(f"config must be an rtrrl_spec.Config, got {type(config).__name__}")
    rng = _generator(seed)
    spec = layout(config, batch_size)
    F, K = config.feature_dim, config.n_out
    drawn: dict[str, np.ndarray] = {}
    if config.body == "ctrnn":
        drawn["W"] = truncated_normal(rng, spec["W"].shape, np.sqrt(1.0 / config.z_dim))
        drawn["tau"] = rng.uniform(1.0, 5.0, size=config.n_hidden)
    elif config.body == "lru":
        drawn.update(
            init_lru(
                rng,
                config.n_hidden,
                config.input_dim,
                config.lru_r_min,
                config.lru_r_max,
                config.lru_max_phase,
            )
        )
    drawn["W_A"] = _glorot(rng, F, K)
    drawn["W_C"] = _glorot(rng, F, 1)
    if "B_A" in spec:
        drawn["B_A"] = _glorot(rng, F, K)
        drawn["B_C"] = _glorot(rng, F, 1)
    agent = {}
    for name, array_spec in spec.items():
        want = array_spec.numpy_dtype(float_dtype)
        if name in drawn:
            agent[name] = drawn[name].astype(want)
        else:
            agent[name] = np.zeros(array_spec.shape, dtype=want)
    if config.body == "ctrnn":
        # tau_min may exceed the drawn range when dt > 1.
        agent["tau"] = np.maximum(agent["tau"], np.asarray(config.tau_min, dtype=float_dtype))
    return agent


def noise_shape(config: Config, batch_size: int) -> tuple[int, int]:
    """``(B, K)`` uniform noise for discrete actions, ``(B, D)`` standard normal otherwise."""
    return (batch_size, config.n_actions if config.discrete else int(config.action_dim))  # type: ignore[arg-type]


def draw_noise(
    config: Config,
    batch_size: int,
    rng: np.random.Generator,
    dtype: str | np.dtype = "float32",
) -> np.ndarray:
    """Sampling noise for one step: uniform in the open interval (0, 1) or standard normal."""
    float_dtype = _check_dtype(dtype)
    shape = noise_shape(config, batch_size)
    if config.discrete:
        # Generator.random draws from [0, 1); 0 would make -log(-log u) infinite, and rounding
        # to float32 can produce 1.0, so both ends are kept inside the open interval.
        tiny = np.finfo(float_dtype).tiny
        u = rng.random(shape).astype(float_dtype)
        return np.clip(u, tiny, np.nextafter(np.asarray(1.0, float_dtype), 0)).astype(float_dtype)
    return rng.standard_normal(shape).astype(float_dtype)
