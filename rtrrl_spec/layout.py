"""The canonical layout: the name, shape, dtype and meaning of every array of an agent.

An agent is a flat ``dict[str, array]``. Every backend uses these names and shapes, so any
agent converts to and from NumPy, and a checkpoint written by one backend loads in any other.

Symbols: ``B`` environments, ``N`` hidden units, ``I`` RNN inputs, ``Z = I + N + 1`` columns
of ``W``, ``F`` features read by the heads (``N``, or ``I`` for the linear body), ``K`` actor
outputs, ``D`` continuous action dimension. Arrays are batch-first; arrays without ``B`` are
shared by the batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from rtrrl_spec.config import Config, SpecError
from rtrrl_spec.lru import LRU_PARAMS

__all__ = [
    "ArraySpec",
    "FLOAT_DTYPES",
    "TD_PARAMS",
    "CTRNN_PARAMS",
    "LRU_PARAMS",
    "body_params",
    "rnn_params",
    "optimizer_groups",
    "layout",
    "params_of",
    "float_dtype_of",
    "validate_agent",
    "validate_layout",
]

FLOAT_DTYPES = ("float32", "float64")
TD_PARAMS = ("W_A", "W_C", "b_C")
CTRNN_PARAMS = ("W", "tau")

Group = Literal["param", "feedback", "env", "optimizer"]


@dataclass(frozen=True)
class ArraySpec:
    """One array of the canonical layout.

    ``dtype`` is ``"float"`` for the agent's float dtype (float32 or float64), or a concrete
    NumPy dtype name for integer arrays.
    """

    shape: tuple[int, ...]
    dtype: str
    group: Group
    doc: str

    def numpy_dtype(self, float_dtype: str) -> np.dtype:
        """The concrete dtype for an agent of float dtype ``float_dtype``."""
        return np.dtype(float_dtype if self.dtype == "float" else self.dtype)


def body_params(config: Config) -> tuple[str, ...]:
    """Parameters of the recurrent body, trained or frozen (none for the linear body)."""
    return {"ctrnn": CTRNN_PARAMS, "lru": LRU_PARAMS}.get(config.body, ())


def rnn_params(config: Config) -> tuple[str, ...]:
    """The ``rnn`` optimizer group: the body's parameters, unless the body is frozen."""
    return body_params(config) if config.trains_body else ()


def optimizer_groups(config: Config) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The optimizer's groups in order, each clipped by its own global norm and counted by
    ``count_<group>``: ``("td", TD_PARAMS)`` and, when the body trains, ``("rnn", rnn_params)``.
    """
    if config.trains_body:
        return (("td", TD_PARAMS), ("rnn", rnn_params(config)))
    return (("td", TD_PARAMS),)


def params_of(config: Config) -> tuple[str, ...]:
    """Names of the trained parameters, ``td`` group first."""
    return TD_PARAMS + rnn_params(config)


def layout(config: Config, batch_size: int) -> dict[str, ArraySpec]:
    """Every array of an agent with ``batch_size`` environments, in canonical order."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
        raise SpecError(f"batch_size must be an int, got {batch_size!r}")
    if batch_size < 1:
        raise SpecError(f"batch_size must be >= 1, got {batch_size}")
    B, N, Z, F, K = int(batch_size), config.n_hidden, config.z_dim, config.feature_dim, config.n_out
    n_in = config.input_dim  # I
    rtrl = config.jacobian == "rtrl"
    spec: dict[str, ArraySpec] = {}

    def add(name: str, shape: tuple[int, ...], group: Group, doc: str, dtype: str = "float"):
        spec[name] = ArraySpec(tuple(int(s) for s in shape), dtype, group, doc)

    # Parameters.
    add("W_A", (F, K), "param", "actor weights (no bias): logits, or [m, s] pre-activations")
    add("W_C", (F, 1), "param", "critic weights")
    add("b_C", (1,), "param", "critic bias")
    if config.body == "ctrnn":
        add("W", (N, Z), "param", "CT-RNN weights over zeta = [x, h, 1] (input, recurrent, bias)")
        add("tau", (N,), "param", "CT-RNN time constants, kept >= tau_min")
    elif config.body == "lru":
        add("log_nu", (N,), "param", "LRU: log of -log|lambda| (eigenvalue modulus)")
        add("log_theta", (N,), "param", "LRU: log of the eigenvalue phase")
        add("log_gamma", (N,), "param", "LRU: log of the input normalization")
        add("B_re", (N, n_in), "param", "LRU input matrix, real part")
        add("B_im", (N, n_in), "param", "LRU input matrix, imaginary part")
        add("C_re", (N, N), "param", "LRU output map, real part (y = Re(C h))")
        add("C_im", (N, N), "param", "LRU output map, imaginary part")
    # Fixed random feedback, only when it is used.
    if config.trains_body and config.feedback_alignment:
        add("B_A", (F, K), "feedback", "fixed feedback matrix replacing W_A towards the RNN")
        add("B_C", (F, 1), "feedback", "fixed feedback matrix replacing W_C towards the RNN")
    # Per-environment state.
    if config.body == "ctrnn":
        add("h", (B, N), "env", "hidden state h")
        if config.trains_body and rtrl:
            add("J_W", (B, N, N, Z), "env", "RTRL sensitivity dh_i/dW_jk")
            add("J_tau", (B, N, N), "env", "RTRL sensitivity dh_i/dtau_j")
        elif config.trains_body:
            add("J_W", (B, N, Z), "env", "RFLO local sensitivity dh_i/dW_ik")
            add("J_tau", (B, N), "env", "RFLO local sensitivity dh_i/dtau_i")
    elif config.body == "lru":
        add("h_re", (B, N), "env", "LRU hidden state, real part")
        add("h_im", (B, N), "env", "LRU hidden state, imaginary part")
        if config.trains_body:
            for part in ("re", "im"):
                add(f"J_lam_{part}", (B, N), "env", f"LRU sensitivity dh/dlambda ({part})")
            for part in ("re", "im"):
                add(f"J_gam_{part}", (B, N), "env", f"LRU sensitivity dh/dlog_gamma ({part})")
            for part in ("re", "im"):
                doc = f"LRU sensitivity dh_k/dB_re[k, j] ({part})"
                add(f"J_in_{part}", (B, N, n_in), "env", doc)
    add("e_W_A", (B, F, K), "env", "eligibility trace of W_A")
    add("e_W_C", (B, F, 1), "env", "eligibility trace of W_C")
    add("e_b_C", (B, 1), "env", "eligibility trace of b_C")
    for name in rnn_params(config):
        add(f"e_{name}", (B, *spec[name].shape), "env", f"eligibility trace of {name}")
    if config.trace == "dutch":
        add("x_W_C", (B, F, 1), "env", "dutch traces: critic gradient of the previous step (W_C)")
        add("x_b_C", (B, 1), "env", "dutch traces: critic gradient of the previous step (b_C)")
    add("v_prev", (B,), "env", "critic value of the previous step")
    if config.discrete:
        add("a_prev", (B,), "env", "previous action (index)", dtype="int32")
    else:
        add("a_prev", (B, config.action_dim), "env", "previous action as sent (clipped)")
    # Optimizer state, shared by the batch.
    for name in params_of(config):
        add(f"mu_{name}", spec[name].shape, "optimizer", f"Adam first moment of {name}")
        add(f"nu_{name}", spec[name].shape, "optimizer", f"Adam second moment of {name}")
    add("count_td", (), "optimizer", "Adam steps taken by the td group", dtype="int32")
    if config.trains_body:
        add("count_rnn", (), "optimizer", "Adam steps taken by the rnn group", dtype="int32")
    if config.reward_rate_lr is not None:
        add("reward_rate", (), "optimizer", "average-reward estimate r-bar")
    return spec


def float_dtype_of(agent: Mapping[str, np.ndarray]) -> str:
    """The agent's float dtype, read from ``W_A``."""
    try:
        dtype = np.asarray(agent["W_A"]).dtype
    except KeyError as err:
        raise SpecError("the agent has no 'W_A'; is it an agent from rtrrl_spec.init?") from err
    if dtype.name not in FLOAT_DTYPES:
        raise SpecError(f"agent arrays must be float32 or float64, W_A is {dtype}")
    return dtype.name


def batch_size_of(agent: Mapping[str, np.ndarray]) -> int:
    """``B``, read from ``v_prev``."""
    try:
        v_prev = np.asarray(agent["v_prev"])
    except KeyError as err:
        raise SpecError("the agent has no 'v_prev'; is it an agent from rtrrl_spec.init?") from err
    if v_prev.ndim != 1:
        raise SpecError(f"v_prev must have shape (B,), got {v_prev.shape}")
    return int(v_prev.shape[0])


def validate_layout(config: Config, agent: Mapping[str, np.ndarray]) -> tuple[str, int]:
    """Check the config's type and the names, shapes and dtypes of every array against
    :func:`layout`; return (float dtype, B). Reads each array's shape and dtype only, never
    its values: a compiling backend checks an agent that lives on a device through
    zero-strided NumPy stand-ins of its arrays (``rtrrl.backends.base.check_step``)."""
    float_dtype, B, _ = _checked_layout(config, agent)
    return float_dtype, B


def _checked_layout(
    config: Config, agent: Mapping[str, np.ndarray]
) -> tuple[str, int, dict[str, ArraySpec]]:
    if not isinstance(config, Config):
        raise SpecError(f"config must be an rtrrl_spec.Config, got {type(config).__name__}")
    float_dtype = float_dtype_of(agent)
    B = batch_size_of(agent)
    expected = layout(config, B)
    missing = [k for k in expected if k not in agent]
    extra = [k for k in agent if k not in expected]
    if missing or extra:
        raise SpecError(
            f"agent does not match the layout of this config: missing {missing}, unexpected "
            f"{extra}. Was it created with a different Config (body, jacobian, trace, "
            "feedback_alignment, reward_rate_lr)? Create it with rtrrl_spec.init(config, ...)."
        )
    for name, spec in expected.items():
        array = np.asarray(agent[name])
        if array.shape != spec.shape:
            raise SpecError(f"agent[{name!r}] has shape {array.shape}, expected {spec.shape}")
        want = spec.numpy_dtype(float_dtype)
        if array.dtype != want:
            raise SpecError(f"agent[{name!r}] has dtype {array.dtype}, expected {want}")
    return float_dtype, B, expected


def validate_agent(config: Config, agent: Mapping[str, np.ndarray]) -> tuple[str, int]:
    """:func:`validate_layout`, then the values: every float array finite, ``a_prev`` a valid
    action, ``tau`` positive; return (float dtype, B)."""
    float_dtype, B, expected = _checked_layout(config, agent)
    for name, spec in expected.items():
        array = np.asarray(agent[name])
        if spec.dtype == "float" and not np.all(np.isfinite(array)):
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
            raise SpecError(
                f"agent[{name!r}] holds a non-finite value ({array[bad]!r} at index {bad}); "
                "the agent diverged or was corrupted: restore the last good checkpoint"
            )
    if config.discrete:
        a_prev = np.asarray(agent["a_prev"])
        if np.any((a_prev < 0) | (a_prev >= config.n_actions)):
            raise SpecError(f"a_prev must lie in [0, {config.n_actions}), got {a_prev}")
    if config.body == "ctrnn" and np.any(np.asarray(agent["tau"]) <= 0):
        raise SpecError("tau must be positive")
    return float_dtype, B
