"""The Keras 3 backends ``keras-jax`` and ``keras-torch``: the spec translated into ``keras.ops``.

Installed as ``rtrrl.backends.keras``. This module is :mod:`rtrrl_spec` function for function:
it defines every name of :data:`rtrrl_spec.STEP_FUNCTIONS`, in that order (the CT-RNN and its
traces, the LRU, the heads, the TD error, the traces' decay, the optimizer, then :func:`step`),
each taking and returning what the reference function of the same name does, in batch-first
tensors (the reference's NamedTuples, dicts with the same keys, tuples of the same length).
Only ``keras.ops`` is used (and the arithmetic operators every Keras backend's tensors share),
so the same code runs under each Keras backend; nothing in the maths names JAX or PyTorch.
Numbers (``dt``, ``gamma``, ``lr``, ...) may be Python floats or 0-d tensors.

How it runs compiled (``jax.jit`` under Keras on JAX) is :mod:`rtrrl.backends._keras_speed`:
it wraps these functions and changes no formula.

Keras chooses its backend once per process, from ``KERAS_BACKEND``, when ``keras`` is first
imported. So there are two registered backends, one per Keras backend, and each refuses to
load in a process whose Keras runs on the other one:

    KERAS_BACKEND=jax   python -c "import rtrrl; rtrrl.use('keras-jax')"
    KERAS_BACKEND=torch python -c "import rtrrl; rtrrl.use('keras-torch')"

Also here: :class:`RTRRLAgent`, a ``keras.Model`` holding an agent's arrays as Keras variables
(saved and loaded the Keras way), whose :meth:`RTRRLAgent.step` runs the functional step.

The optimizer is the spec's Adam (:mod:`rtrrl_spec.optim`), written with ``keras.ops``, not
``keras.optimizers.Adam``: Keras puts epsilon on the un-corrected root
(``lr·sqrt(1−β2^t)/(1−β1^t) · m / (sqrt(ν) + ε)``), which is a different function of ``ε``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

import rtrrl_spec
from rtrrl._registry import BackendError, BackendNotInstalledError
from rtrrl.backends.base import BackendBase, map_tree
from rtrrl_spec import Config
from rtrrl_spec.config import structure_of
from rtrrl_spec.ctrnn import CTRNNStep
from rtrrl_spec.heads import PolicyStep
from rtrrl_spec.layout import optimizer_groups, rnn_params
from rtrrl_spec.lru import LRU_PARAMS, LRU_SENSITIVITIES, LRUStep

_SELECT_HELP = (
    "Keras 3 picks its backend once per process from the KERAS_BACKEND environment variable, "
    "when keras is first imported. Set KERAS_BACKEND=jax (for rtrrl backend 'keras-jax') or "
    "KERAS_BACKEND=torch (for 'keras-torch') before anything imports keras, and install that "
    'framework (pip install "rtrrl[keras]" brings JAX; add "rtrrl[torch]" for PyTorch).'
)

try:
    import keras
except ImportError as exc:
    if getattr(exc, "name", None) == "keras":
        raise  # keras itself is missing: the registry says which extra installs it
    # Keras is installed but the framework of its backend is not; KERAS_BACKEND unset means
    # tensorflow, which rtrrl does not use.
    chosen = os.environ.get("KERAS_BACKEND") or "tensorflow (the default: KERAS_BACKEND unset)"
    raise BackendNotInstalledError(
        f"Keras is installed, but importing it failed ({exc}): its backend is {chosen}, whose "
        f"framework is not installed. {_SELECT_HELP}",
        name=getattr(exc, "name", None),
    ) from exc

from keras import ops  # noqa: E402  (after the guarded import above)

from rtrrl.backends._keras_speed import (  # noqa: E402  (it imports keras)
    compile_step,
    jit_static,
    tensor_numbers,
)

__all__ = [
    *rtrrl_spec.STEP_FUNCTIONS,
    "KerasBackendMismatchError",
    "KerasJaxBackend",
    "KerasTorchBackend",
    "RTRRLAgent",
    "hyperparams",
    "split_config",
    "step_compiled",
]

Agent = dict[str, Any]
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class KerasBackendMismatchError(BackendError, RuntimeError):
    """This process's Keras runs on another backend than the rtrrl backend asked for."""


def keras_backend() -> str:
    """The backend this process's Keras runs on (``"jax"``, ``"torch"``, ...)."""
    return keras.backend.backend()


def x64_enabled() -> bool:
    """Whether float64 arrays are possible: always under torch, with ``jax_enable_x64`` in JAX."""
    if keras_backend() != "jax":
        return True
    import jax  # only to read the flag; the maths never imports jax

    return bool(jax.config.read("jax_enable_x64"))


# --- the config: its structure and its numbers, defined once in rtrrl_spec --------------------

split_config = structure_of


def hyperparams(config: Config, dtype: str = "float32") -> dict[str, Any]:
    """:func:`rtrrl_spec.numbers_of` as tensors of ``dtype`` (0-d, or ``(D,)`` for the action
    bounds), cached per config: the ``numbers=`` that :func:`step` and :func:`apply_update` take."""
    return dict(tensor_numbers(config, dtype))


# --- helpers: float64-safe ops, episode resets, numbers ---------------------------------------


# Keras's dtype promotion (keras.backend.result_type) maps float64 to float32 on every backend
# but TensorFlow, "aligned with JAX's default". Ops that promote through it therefore compute a
# float64 input in float32 without a word (Keras 3.15: ``tanh``, ``cos``, ``sin`` under JAX;
# ``matmul``, ``maximum``, ``minimum``, ``logaddexp`` under PyTorch), and some keep the dtype but
# accumulate in float32 (``mean`` on both, ``clip`` under PyTorch). The helpers below use only
# ops that compute float64 in float64 on both backends; the float64 conformance run guards this.


def _tanh(z: Any) -> Any:
    if keras.backend.standardize_dtype(z.dtype) != "float64":
        return ops.tanh(z)
    # tanh|z| = −t / (t + 2) with t = expm1(−2|z|) ∈ (−1, 0]: no overflow, a few ulp of tanh.
    t = ops.expm1(-2.0 * ops.abs(z))
    magnitude = -t / (t + 2.0)
    return ops.where(z < 0.0, -magnitude, magnitude)


# fdlibm's split of π/2 (three 33-bit parts: k·part is exact for |k| < 2^20) and its minimax
# kernels for sin and cos on |r| <= π/4 (error under one ulp).
_PIO2 = (1.57079632673412561417e00, 6.07710050630396597660e-11, 2.02226624871116645580e-21)
_SIN = (
    -1.66666666666666324348e-01,
    8.33333333332248946124e-03,
    -1.98412698298579493134e-04,
    2.75573137070700676789e-06,
    -2.50507602534068634195e-08,
    1.58969099521155010221e-10,
)
_COS = (
    4.16666666666666019037e-02,
    -1.38888888888741095749e-03,
    2.48015872894767294178e-05,
    -2.75573143513906633035e-07,
    2.08757232129817482790e-09,
    -1.13596475577881948265e-11,
)


def _horner(z: Any, coefficients: tuple[float, ...]) -> Any:
    out = coefficients[-1] + 0.0 * z
    for c in reversed(coefficients[:-1]):
        out = c + z * out
    return out


def _cos_sin(x: Any) -> tuple[Any, Any]:
    """``(cos x, sin x)``; float64 stays float64 (``ops.cos``/``ops.sin`` compute it in float32
    under JAX). Float64 path: Cody-Waite reduction by π/2 and fdlibm's kernels, a few ulp for
    ``|x| < 2^20``."""
    if keras.backend.standardize_dtype(x.dtype) != "float64":
        return ops.cos(x), ops.sin(x)
    y = x * (2.0 / math.pi)
    k = ops.cast(ops.where(y < 0.0, y - 0.5, y + 0.5), "int32")  # nearest, ties away from 0
    kf = ops.cast(k, "float64")
    r = ((x - kf * _PIO2[0]) - kf * _PIO2[1]) - kf * _PIO2[2]  # |r| <= π/4
    z = r * r
    sin_r = r + (z * r) * _horner(z, _SIN)
    half = 0.5 * z
    w = 1.0 - half
    cos_r = w + (((1.0 - w) - half) + (z * z) * _horner(z, _COS))
    quadrant = ops.bitwise_and(k, 3)  # k mod 4, also for negative k
    swap = ops.bitwise_and(quadrant, 1) == 1
    cos_x = ops.where(swap, sin_r, cos_r)
    sin_x = ops.where(swap, cos_r, sin_r)
    cos_x = ops.where((quadrant == 1) | (quadrant == 2), -cos_x, cos_x)
    sin_x = ops.where(quadrant >= 2, -sin_x, sin_x)
    return cos_x, sin_x


def _matmul(a: Any, b: Any) -> Any:
    """``a @ b`` for a ``(B, n)`` and a ``(n, k)`` or ``(n,)``; einsum keeps float64."""
    return ops.einsum("bn,nk->bk" if len(b.shape) == 2 else "bn,n->b", a, b)


def _maximum(a: Any, b: Any) -> Any:
    return ops.where(a < b, b + ops.zeros_like(a), a)


def _minimum(a: Any, b: Any) -> Any:
    return ops.where(b < a, b + ops.zeros_like(a), a)


def _mean(x: Any, axis: int) -> Any:
    # ops.mean accumulates float64 in float32 (and casts back) on both backends; a sum does not.
    return ops.sum(x, axis=axis) / x.shape[axis]


def _clip(x: Any, low: Any, high: Any) -> Any:
    # ops.clip rounds float64 through float32 under PyTorch.
    return _minimum(_maximum(x, low), high)


def _sigmoid(z: Any) -> Any:
    # The reference's tanh form (rtrrl_spec.heads.sigmoid), for the same rounding.
    return 0.5 * (1.0 + _tanh(0.5 * z))


def _softplus(z: Any) -> Any:
    # ln(1 + e^z) = max(z, 0) + ln(1 + e^−|z|), stable for large |z| (= np.logaddexp(z, 0)).
    return ops.relu(z) + ops.log1p(ops.exp(-ops.abs(z)))


def _reset(done: Any, x: Any) -> Any:
    """``x`` with the rows of finished environments set to zero (``done`` is ``(B,)`` bool)."""
    # A step resets a dozen arrays: ops.expand_dims is the cheapest way to broadcast the mask
    # eagerly under both Keras backends (ops.reshape dispatches slower, indexing under JAX).
    axes = tuple(range(1, len(x.shape)))
    mask = ops.expand_dims(done, axes) if axes else done
    return ops.where(mask, ops.zeros_like(x), x)


def _cmul(a_re: Any, a_im: Any, b_re: Any, b_im: Any) -> tuple[Any, Any]:
    """``(a_re + i a_im)(b_re + i b_im)`` as a (real, imaginary) pair (``rtrrl_spec.lru``)."""
    return a_re * b_re - a_im * b_im, a_re * b_im + a_im * b_re


def _number(x: Any, like: Any) -> Any:
    """A number (Python or NumPy scalar, or 0-d tensor) to combine with the tensor ``like``.

    Python floats stay floats: every framework rounds them to the tensor's dtype, as NumPy
    does in the reference. A tensor of another dtype is cast: JAX would otherwise compute a
    float32 step in float64 when handed a float64 number.
    """
    if isinstance(x, (int, float)):
        return float(x)  # a NumPy scalar on the left of a tensor would turn it into an array
    return x if x.dtype == like.dtype else ops.cast(x, like.dtype)


def _dtype(x: Any) -> str:
    return keras.backend.standardize_dtype(x.dtype)


def _cast(x: Any, dtype: str) -> Any:
    # ops.cast dispatches through Keras even when the dtype is already right (4 inputs a step).
    return x if ops.is_tensor(x) and _dtype(x) == dtype else ops.cast(x, dtype)


# --- the spec's functions, in rtrrl_spec.STEP_FUNCTIONS order ---------------------------------
# rtrrl_spec/ctrnn.py


def ctrnn_step(W: Any, tau: Any, h: Any, x: Any, dt: Any) -> CTRNNStep:
    """One forward-Euler step ``h' = h + dt (tanh(W [x, h, 1]) − h) / τ``."""
    dt = _number(dt, h)
    zeta = ops.concatenate([x, h, ops.ones_like(h[:, :1])], axis=-1)
    phi = _tanh(_matmul(zeta, ops.transpose(W)))
    h_next = h + dt * (phi - h) / tau
    return CTRNNStep(zeta, phi, 1.0 - phi * phi, h_next)


def rflo_update(J_W: Any, J_tau: Any, tau: Any, h: Any, s: CTRNNStep, dt: Any) -> tuple[Any, Any]:
    """RFLO: ``J_W (B,N,Z)``, ``J_τ (B,N)`` → their values at ``h'``."""
    dt = _number(dt, h)
    rate = dt / tau
    J_W_next = (1.0 - rate)[:, None] * J_W + rate[:, None] * (
        s.dphi[:, :, None] * s.zeta[:, None, :]
    )
    J_tau_next = (1.0 - rate) * J_tau + dt * (h - s.phi) / (tau * tau)
    return J_W_next, J_tau_next


def rtrl_update(
    J_W: Any, J_tau: Any, W: Any, tau: Any, h: Any, s: CTRNNStep, dt: Any, input_dim: int
) -> tuple[Any, Any]:
    """RTRL: ``J_W (B,N,N,Z)``, ``J_τ (B,N,N)`` → their values at ``h'``."""
    dt = _number(dt, h)
    N = tau.shape[0]
    W_h = W[:, input_dim : input_dim + N]
    eye = ops.eye(N, dtype=_dtype(W))
    # M = I + dt ∂f/∂h, one (N, N) matrix per environment.
    M = eye + dt * (s.dphi[:, :, None] * W_h[None] - eye) / tau[None, :, None]
    direct_W = dt * s.dphi[:, :, None] * s.zeta[:, None, :] / tau[None, :, None]
    direct_tau = dt * (h - s.phi) / (tau * tau)
    # The reference adds the direct term in place on the diagonal i = j; times the identity it
    # adds exact zeros elsewhere (tensors are immutable in keras.ops).
    J_W_next = ops.einsum("bil,bljk->bijk", M, J_W) + eye[None, :, :, None] * direct_W[:, :, None]
    J_tau_next = ops.einsum("bil,blj->bij", M, J_tau) + eye[None] * direct_tau[:, :, None]
    return J_W_next, J_tau_next


def project_rflo(signal: Any, J_W: Any, J_tau: Any) -> tuple[Any, Any]:
    """Parameter gradient of ``signal · h'`` through RFLO's local trace: row ``i`` times ``g_i``."""
    return signal[:, :, None] * J_W, signal * J_tau


def project_rtrl(signal: Any, J_W: Any, J_tau: Any) -> tuple[Any, Any]:
    """Parameter gradient of ``signal · h'`` through the full RTRL trace: ``Σ_i g_i J[i]``."""
    return ops.einsum("bi,bijk->bjk", signal, J_W), ops.einsum("bi,bij->bj", signal, J_tau)


# rtrrl_spec/lru.py, in real arithmetic on (re, im) pairs (Keras has no dependable complex dtype)


def lru_lambda(log_nu: Any, log_theta: Any) -> tuple[Any, Any]:
    """``λ = exp(−exp(ν)) e^{i exp(θ)}`` as (Re λ, Im λ)."""
    modulus = ops.exp(-ops.exp(log_nu))
    cos_phase, sin_phase = _cos_sin(ops.exp(log_theta))
    return modulus * cos_phase, modulus * sin_phase


def lru_step(params: Mapping[str, Any], h_re: Any, h_im: Any, x: Any) -> LRUStep:
    """``h' = λ ⊙ h + exp(γ) ⊙ (B x)``, ``y = Re(C h')`` for a batch ``h (B, N)``, ``x (B, I)``."""
    lam_re, lam_im = lru_lambda(params["log_nu"], params["log_theta"])
    norm = ops.exp(params["log_gamma"])
    u_re = _matmul(x, ops.transpose(params["B_re"]))
    u_im = _matmul(x, ops.transpose(params["B_im"]))
    rec_re, rec_im = _cmul(lam_re, lam_im, h_re, h_im)
    h_next_re = rec_re + norm * u_re
    h_next_im = rec_im + norm * u_im
    y = _matmul(h_next_re, ops.transpose(params["C_re"])) - _matmul(
        h_next_im, ops.transpose(params["C_im"])
    )
    return LRUStep(lam_re, lam_im, norm, u_re, u_im, h_next_re, h_next_im, y)


def lru_sensitivity_update(
    J: Mapping[str, Any], h_re: Any, h_im: Any, x: Any, s: LRUStep
) -> dict[str, Any]:
    """The sensitivities at ``h'`` from those at ``h`` (the state the step started from)."""
    lam_re, lam_im = s.lam_re, s.lam_im
    lam_re_m, lam_im_m = lam_re[:, None], lam_im[:, None]  # broadcast over the input axis
    new = {}
    rec_re, rec_im = _cmul(lam_re, lam_im, J["J_lam_re"], J["J_lam_im"])
    new["J_lam_re"], new["J_lam_im"] = rec_re + h_re, rec_im + h_im
    rec_re, rec_im = _cmul(lam_re, lam_im, J["J_gam_re"], J["J_gam_im"])
    new["J_gam_re"], new["J_gam_im"] = rec_re + s.norm * s.u_re, rec_im + s.norm * s.u_im
    rec_re, rec_im = _cmul(lam_re_m, lam_im_m, J["J_in_re"], J["J_in_im"])
    new["J_in_re"] = rec_re + s.norm[None, :, None] * x[:, None, :]
    new["J_in_im"] = rec_im
    return new


def project_lru(
    signal: Any, params: Mapping[str, Any], J: Mapping[str, Any], s: LRUStep
) -> dict[str, Any]:
    """Per-environment gradients of ``signal · y`` for every LRU parameter; ``J`` holds the
    sensitivities at ``h'``."""
    w_re, w_im = _matmul(signal, params["C_re"]), _matmul(signal, params["C_im"])  # w = Cᵀ s
    a_re, a_im = _cmul(w_re, w_im, J["J_lam_re"], J["J_lam_im"])  # w ⊙ J_lam ⊙ λ
    a_re, a_im = _cmul(a_re, a_im, s.lam_re, s.lam_im)
    g_re, g_im = _cmul(w_re, w_im, J["J_gam_re"], J["J_gam_im"])
    b_re, b_im = _cmul(w_re[:, :, None], w_im[:, :, None], J["J_in_re"], J["J_in_im"])
    return {
        "log_nu": -a_re * ops.exp(params["log_nu"]),
        "log_theta": -a_im * ops.exp(params["log_theta"]),
        "log_gamma": g_re,
        "B_re": b_re,
        "B_im": -b_im,
        "C_re": signal[:, :, None] * s.h_re[:, None, :],
        "C_im": -signal[:, :, None] * s.h_im[:, None, :],
    }


# rtrrl_spec/heads.py


def critic_value(f: Any, W_C: Any, b_C: Any) -> Any:
    """``v = f · W_C + b_C`` for each environment: ``(B,)``."""
    return _matmul(f, W_C[:, 0]) + b_C[0]


def policy_step(
    config: Config, out: Any, noise: Any, *, numbers: Mapping[str, Any] | None = None
) -> PolicyStep:
    """Sample an action from the actor outputs ``out`` (B, K) and differentiate ``ln π``, ``H``.

    ``numbers``: the config's numbers (:func:`hyperparams`), read for the action bounds instead
    of ``config`` (which may then be the structure alone, :func:`split_config`).
    """
    if config.discrete:
        return _discrete(out, noise)
    bounds = None
    if config.bounded:
        n = tensor_numbers(config, _dtype(out)) if numbers is None else numbers
        bounds = (_number(n["action_low"], out), _number(n["action_high"], out))
    return _continuous(config, out, noise, bounds)


def _discrete(logits: Any, noise: Any) -> PolicyStep:
    shifted = logits - ops.max(logits, axis=-1, keepdims=True)
    log_p = shifted - ops.log(ops.sum(ops.exp(shifted), axis=-1, keepdims=True))
    p = ops.exp(log_p)
    action = ops.cast(ops.argmax(logits - ops.log(-ops.log(noise)), axis=-1), "int32")
    onehot = ops.one_hot(action, logits.shape[-1], dtype=_dtype(logits))
    entropy = -ops.sum(p * log_p, axis=-1)
    return PolicyStep(
        action=action,
        sample=action,
        # The one-hot sum picks ln p_a exactly (the other terms are exact zeros).
        log_prob=ops.sum(onehot * log_p, axis=-1),
        entropy=entropy,
        dlogp_dout=onehot - p,
        dent_dout=-p * (log_p + entropy[:, None]),
        scale=ops.ones_like(entropy),
    )


def _continuous(config: Config, out: Any, noise: Any, bounds: tuple[Any, Any] | None) -> PolicyStep:
    D = int(config.action_dim)  # type: ignore[arg-type]
    m, s = out[:, :D], out[:, D:]
    if bounds is not None:
        lo, hi = bounds
        sig_m = _sigmoid(m)
        mu = lo + (hi - lo) * sig_m
        dmu_dm = (hi - lo) * sig_m * (1.0 - sig_m)
    else:
        mu, dmu_dm = m, ops.ones_like(m)
    sig_s = _sigmoid(s)
    pre_sigma = -2.0 + 4.0 * sig_s
    sigma = _softplus(pre_sigma)
    dsigma_ds = _sigmoid(pre_sigma) * 4.0 * sig_s * (1.0 - sig_s)

    sample = mu + sigma * noise
    action = _clip(sample, lo, hi) if bounds is not None else sample
    log_sigma = ops.log(sigma)
    log_prob = ops.sum(-0.5 * noise * noise - log_sigma - _HALF_LOG_2PI, axis=-1)
    entropy = ops.sum(log_sigma + 0.5 + _HALF_LOG_2PI, axis=-1)
    dlogp_dout = ops.concatenate(
        [noise / sigma * dmu_dm, (noise * noise - 1.0) / sigma * dsigma_ds], axis=-1
    )
    dent_dout = ops.concatenate([ops.zeros_like(m), dsigma_ds / sigma], axis=-1)
    scale = _minimum(_mean(sigma, -1), 1.0) if config.var_scaling else ops.ones_like(log_prob)
    return PolicyStep(action, sample, log_prob, entropy, dlogp_dout, dent_dout, scale)


# rtrrl_spec/agent.py: the TD error and the traces


def td_error(
    reward: Any, done: Any, value: Any, v_prev: Any, gamma: Any, reward_rate: Any = 0.0
) -> Any:
    """``δ = r − r̄ + γ (1 − done) v − v_prev``: no bootstrapping across an episode boundary."""
    not_done = 1.0 - ops.cast(done, _dtype(value))
    # Subtracting a Python 0 changes nothing but costs an op (a dispatch) in every eager step.
    if not (isinstance(reward_rate, (int, float)) and reward_rate == 0.0):
        reward = reward - _number(reward_rate, value)
    return reward + _number(gamma, value) * not_done * value - v_prev


def decay_trace(trace: Any, done: Any, gamma_lambda: Any) -> Any:
    """``γλ e``, after zeroing the traces of environments whose episode just ended."""
    return _number(gamma_lambda, trace) * _reset(done, trace)


# rtrrl_spec/optim.py


def global_norm(arrays: Mapping[str, Any]) -> Any:
    """Euclidean norm of all entries of all arrays."""
    return ops.sqrt(sum(ops.sum(a * a) for a in arrays.values()))


def clip_by_global_norm(arrays: Mapping[str, Any], max_norm: Any) -> tuple[dict[str, Any], Any]:
    """Scale the group down to norm ``max_norm`` when it is longer; returns (arrays, norm).
    ``max_norm`` None: no clipping."""
    norm = global_norm(arrays)
    if max_norm is None:
        return dict(arrays), norm
    max_norm = _number(max_norm, norm)
    factor = max_norm / _maximum(norm, max_norm)
    return {k: a * factor for k, a in arrays.items()}, norm


def adam_step(
    params: Mapping[str, Any],
    direction: Mapping[str, Any],
    mu: Mapping[str, Any],
    nu: Mapping[str, Any],
    count: Any,
    lr: Any,
    b1: Any,
    b2: Any,
    eps: Any,
    *,
    omb1: Any = None,
    omb2: Any = None,
    log_b1: Any = None,
    log_b2: Any = None,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], Any]:
    """One Adam ascent step of a parameter group; returns (params, mu, nu, count).

    The bias corrections ``1 − βᵗ`` are formed as ``−expm1(t ln β)``, accurate in float32 too.
    ``omb1``, ``omb2`` (``1 − β``) and ``log_b1``, ``log_b2`` (``ln β``) may be given, as
    :func:`rtrrl_spec.numbers_of` rounds them once from float64; else they are derived here.
    """
    like = next(iter(params.values()))
    lr, b1, b2, eps = (_number(v, like) for v in (lr, b1, b2, eps))
    omb1 = 1.0 - b1 if omb1 is None else _number(omb1, like)
    omb2 = 1.0 - b2 if omb2 is None else _number(omb2, like)
    log_b1 = _log(b1) if log_b1 is None else _number(log_b1, like)
    log_b2 = _log(b2) if log_b2 is None else _number(log_b2, like)
    count = count + 1
    t = ops.cast(count, _dtype(like))
    correction1 = -ops.expm1(t * log_b1)
    correction2 = -ops.expm1(t * log_b2)
    new_params, new_mu, new_nu = {}, {}, {}
    for name, p in params.items():
        d = direction[name]
        m = b1 * mu[name] + omb1 * d
        v = b2 * nu[name] + omb2 * d * d
        new_params[name] = p + lr * (m / correction1) / (ops.sqrt(v / correction2) + eps)
        new_mu[name], new_nu[name] = m, v
    return new_params, new_mu, new_nu, ops.cast(count, "int32")


def _log(b: Any) -> Any:
    # ln 0 = −inf: the bias correction −expm1(−inf) is exactly 1, as 1 − 0ᵗ is.
    if isinstance(b, float):
        return math.log(b) if b > 0 else -math.inf
    return ops.log(b)


# rtrrl_spec/agent.py: the update and the step


def apply_update(
    config: Config,
    agent: Mapping[str, Any],
    direction: Mapping[str, Any],
    *,
    numbers: Mapping[str, Any] | None = None,
) -> tuple[Agent, Agent]:
    """Clip each group's ascent direction by global norm, take an Adam step, clip ``tau``.

    Returns the new parameters, Adam moments and counts, and ``grad_norm_<group>`` (the norm
    before clipping). ``numbers``: the config's numbers (:func:`hyperparams`; default: those
    of ``config``), read instead of ``config``'s, which may then be its structure alone.
    """
    n = tensor_numbers(config, _dtype(agent["W_A"])) if numbers is None else numbers
    changed: Agent = {}
    info: Agent = {}
    lrs = {"td": n["lr_td"], "rnn": n["lr_rnn"]}
    max_norm = n["clip_norm"] if config.clip_norm is not None else None
    for group, names in optimizer_groups(config):
        clipped, norm = clip_by_global_norm({k: direction[k] for k in names}, max_norm)
        params, mu, nu, count = adam_step(
            {k: agent[k] for k in names},
            clipped,
            {k: agent[f"mu_{k}"] for k in names},
            {k: agent[f"nu_{k}"] for k in names},
            agent[f"count_{group}"],
            lrs[group],
            n["b1"],
            n["b2"],
            n["eps"],
            omb1=n["omb1"],
            omb2=n["omb2"],
            log_b1=n["log_b1"],
            log_b2=n["log_b2"],
        )
        if "tau" in params:
            params["tau"] = _maximum(params["tau"], _number(n["tau_min"], params["tau"]))
        for k in names:
            changed[k] = params[k]
            changed[f"mu_{k}"], changed[f"nu_{k}"] = mu[k], nu[k]
        changed[f"count_{group}"] = count
        info[f"grad_norm_{group}"] = norm
    return changed, info


def step(
    config: Config,
    agent: Mapping[str, Any],
    obs: Any,
    reward: Any,
    done: Any,
    noise: Any,
    *,
    numbers: Mapping[str, Any] | None = None,
) -> tuple[Agent, Any, Agent]:
    """One RTRRL step, eager and pure: :func:`rtrrl_spec.agent.step_unchecked`, stage by stage.

    Inputs are cast to the agent's dtype, not validated (the unchecked kernel: ``backend.step``
    checks first). ``numbers`` (:func:`hyperparams`) replace ``config``'s, which may then be
    its structure alone (the compiled step's static).
    """
    dtype = _dtype(agent["W_A"])
    n = tensor_numbers(config, dtype) if numbers is None else numbers
    obs, reward, noise = (_cast(a, dtype) for a in (obs, reward, noise))
    done = _cast(done, "bool")
    new = dict(agent)

    # 1-2. RNN input; at an episode boundary the previous action and reward are not fed.
    if config.meta_rl:
        if config.discrete:
            a_in = ops.one_hot(agent["a_prev"], int(config.n_actions), dtype=dtype)  # type: ignore[arg-type]
        else:
            a_in = agent["a_prev"]
        a_in = _reset(done, a_in)
        r_in = _reset(done, reward)[:, None]
        x = ops.concatenate([obs, a_in, r_in], axis=-1)
    else:
        x = obs

    # 3. Body: features for the heads, the new body state and, when the body learns, how a
    # signal on the features projects into its parameters' gradients (J'ᵀ g).
    project = None
    if config.body == "ctrnn":
        W, tau = agent["W"], agent["tau"]
        h = _reset(done, agent["h"])
        s = ctrnn_step(W, tau, h, x, n["dt"])
        features = new["h"] = s.h_next
        if config.trains_body:
            J_W, J_tau = _reset(done, agent["J_W"]), _reset(done, agent["J_tau"])
            if config.jacobian == "rflo":
                J_W, J_tau = rflo_update(J_W, J_tau, tau, h, s, n["dt"])
                project_ctrnn = project_rflo
            else:
                J_W, J_tau = rtrl_update(J_W, J_tau, W, tau, h, s, n["dt"], config.input_dim)
                project_ctrnn = project_rtrl
            new.update(J_W=J_W, J_tau=J_tau)

            def project(signal: Any) -> Agent:
                grad_W, grad_tau = project_ctrnn(signal, J_W, J_tau)
                return {"W": grad_W, "tau": grad_tau}

    elif config.body == "lru":
        params = {k: agent[k] for k in LRU_PARAMS}
        h_re, h_im = _reset(done, agent["h_re"]), _reset(done, agent["h_im"])
        s_lru = lru_step(params, h_re, h_im, x)
        new["h_re"], new["h_im"] = s_lru.h_re, s_lru.h_im
        features = s_lru.y
        if config.trains_body:
            J = {k: _reset(done, agent[k]) for k in LRU_SENSITIVITIES}
            J = lru_sensitivity_update(J, h_re, h_im, x, s_lru)
            new.update(J)

            def project(signal: Any) -> Agent:
                return project_lru(signal, params, J, s_lru)

    else:
        features = x

    # 4. Heads, with the parameters as they were before this step's update.
    W_A, W_C, b_C = agent["W_A"], agent["W_C"], agent["b_C"]
    value = critic_value(features, W_C, b_C)
    pol = policy_step(config, _matmul(features, W_A), noise, numbers=n)
    c = pol.scale[:, None]

    # 5. Immediate gradients (the dutch critic trace takes the unscaled gradient).
    critic_scale = ops.ones_like(c) if config.trace == "dutch" else c
    grad = {
        "W_C": critic_scale[:, :, None] * features[:, :, None],
        "b_C": critic_scale,
        "W_A": c[:, :, None] * features[:, :, None] * pol.dlogp_dout[:, None, :],
    }
    entropy_grad = {"W_A": c[:, :, None] * features[:, :, None] * pol.dent_dout[:, None, :]}
    if project is not None:
        B_A = agent["B_A"] if config.feedback_alignment else W_A
        B_C = agent["B_C"] if config.feedback_alignment else W_C
        signal = c * (
            B_C[:, 0][None, :] + n["eta_pi"] * _matmul(pol.dlogp_dout, ops.transpose(B_A))
        )
        entropy_signal = c * _matmul(pol.dent_dout, ops.transpose(B_A))
        grad.update(project(signal))
        entropy_grad.update(project(entropy_signal))

    # 6. TD error.
    reward_rate = agent["reward_rate"] if config.reward_rate_lr is not None else 0.0
    delta = td_error(reward, done, value, agent["v_prev"], n["gamma"], reward_rate)
    d = delta[:, None]

    # 7. Update: directions from the traces as they were, batch mean, clip, Adam, tau clip.
    per_env = {
        "W_C": d[:, :, None] * agent["e_W_C"],
        "b_C": d * agent["e_b_C"],
        "W_A": d[:, :, None] * agent["e_W_A"] + n["entropy_rate"] * entropy_grad["W_A"],
    }
    if config.trace == "dutch":
        # True-online TD(λ): v̂_prev is the previous features' value under the current weights.
        value_now = ops.sum(agent["x_W_C"][:, :, 0] * W_C[:, 0], axis=-1) + (
            agent["x_b_C"][:, 0] * b_C[0]
        )
        correction = (value_now - agent["v_prev"])[:, None]
        per_env["W_C"] = per_env["W_C"] - correction[:, :, None] * agent["x_W_C"]
        per_env["b_C"] = per_env["b_C"] - correction * agent["x_b_C"]
    for k in rnn_params(config):
        trace = agent[f"e_{k}"]
        per_env[k] = (
            ops.reshape(delta, (-1,) + (1,) * (len(trace.shape) - 1)) * trace
            + n["entropy_rate"] * entropy_grad[k]
        )
    direction = {k: _mean(v, 0) for k, v in per_env.items()}

    changed, info = apply_update(config, agent, direction, numbers=n)
    new.update(changed)
    if config.reward_rate_lr is not None:
        new["reward_rate"] = agent["reward_rate"] + n["reward_rate_lr"] * _mean(delta, 0)

    # 8. Traces: reset at the boundary, then decay and add this step's gradients.
    if config.trace == "dutch":
        e_W_C = decay_trace(agent["e_W_C"], done, n["gl_critic"])
        e_b_C = decay_trace(agent["e_b_C"], done, n["gl_critic"])
        inner = ops.sum(e_W_C * grad["W_C"], axis=(1, 2)) + ops.sum(e_b_C * grad["b_C"], axis=1)
        weight = (1.0 - n["lr_td"] * inner)[:, None]  # e_W_C was already multiplied by γλ
        new["e_W_C"] = e_W_C + weight[:, :, None] * grad["W_C"]
        new["e_b_C"] = e_b_C + weight * grad["b_C"]
        new["x_W_C"], new["x_b_C"] = grad["W_C"], grad["b_C"]
    else:
        new["e_W_C"] = decay_trace(agent["e_W_C"], done, n["gl_critic"]) + grad["W_C"]
        new["e_b_C"] = decay_trace(agent["e_b_C"], done, n["gl_critic"]) + grad["b_C"]
    new["e_W_A"] = decay_trace(agent["e_W_A"], done, n["gl_actor"]) + grad["W_A"]
    for k in rnn_params(config):
        new[f"e_{k}"] = decay_trace(agent[f"e_{k}"], done, n["gl_rnn"]) + grad[k]

    # 9. Carry.
    new["v_prev"] = value
    new["a_prev"] = ops.cast(pol.action, _dtype(agent["a_prev"]))

    info.update(
        td_error=delta,
        value=value,
        log_prob=pol.log_prob,
        entropy=pol.entropy,
        sample=pol.sample,
        features=features,
    )
    for k, v in direction.items():
        info[f"direction.{k}"] = v
        info[f"update.{k}"] = new[k] - agent[k]
    return new, pol.action, info


# The compiled step (Keras on JAX): the structure static, the numbers traced.
step_compiled = compile_step(step, tensor_numbers)


# --- conversion -------------------------------------------------------------------------------


def _to_tensor(x: Any) -> Any:
    # A copy first: torch.as_tensor would otherwise share memory with the caller's array.
    array = np.array(x, copy=True)
    tensor = ops.convert_to_tensor(array, dtype=array.dtype.name)
    got = keras.backend.standardize_dtype(tensor.dtype)
    if got != array.dtype.name:
        help_ = (
            " Under KERAS_BACKEND=jax, 64-bit arrays need JAX_ENABLE_X64=1 in the environment "
            "(or jax.config.update('jax_enable_x64', True) before any array is created)."
            if keras_backend() == "jax"
            else ""
        )
        raise TypeError(
            f"from_numpy: a {array.dtype.name} array of shape {array.shape} would become "
            f"{got}; rtrrl never downcasts silently.{help_}"
        )
    return tensor


def _to_numpy(x: Any) -> np.ndarray:
    return np.array(ops.convert_to_numpy(x), copy=True)


# --- the backend objects ----------------------------------------------------------------------


class _KerasBackend(BackendBase):
    """Shared by ``keras-jax`` and ``keras-torch``: conversion, init and random state. Each
    subclass names its Keras backend and defines the one step variant it offers."""

    keras_backend_name = ""

    def __init__(self) -> None:
        actual = keras_backend()
        if actual != self.keras_backend_name:
            raise KerasBackendMismatchError(
                f"The rtrrl backend {self.name!r} needs Keras running on "
                f"{self.keras_backend_name}, but this process's Keras runs on {actual!r} "
                f"(KERAS_BACKEND={os.environ.get('KERAS_BACKEND')!r}). Set "
                f"KERAS_BACKEND={self.keras_backend_name} before keras is imported (it cannot "
                f"change within a process), or use rtrrl backend 'keras-{actual}'. {_SELECT_HELP}"
            )

    def step(
        self,
        config: Config,
        agent: dict,
        obs: Any,
        reward: Any,
        done: Any,
        noise: Any,
        *,
        check: bool = True,
    ) -> tuple[dict, Any, dict]:
        """The one step variant this backend offers (:meth:`step_variants`: compiled on
        keras-jax, eager on keras-torch). ``check`` (default): first refuse what
        ``rtrrl_spec.step`` refuses, with its messages
        (:meth:`~rtrrl.backends.base.BackendBase.check_step`); ``check=False``: the bare step,
        for loops whose inputs are known good."""
        if check:
            self.check_step(config, agent, obs, reward, done, noise)
        (variant,) = self.step_variants().values()
        return variant(config, agent, obs, reward, done, noise)

    @property
    def supported_dtypes(self) -> tuple[str, ...]:  # type: ignore[override]
        """float64 only where the framework holds it (JAX: with ``jax_enable_x64``)."""
        return ("float32", "float64") if x64_enabled() else ("float32",)

    def version(self) -> str:
        framework = __import__(self.keras_backend_name)
        return f"keras {keras.__version__} on {self.keras_backend_name} {framework.__version__}"

    def device(self) -> str:
        probe = ops.zeros(())
        if self.keras_backend_name == "torch":
            return str(probe.device)
        return ",".join(f"{d.platform}:{d.id}" for d in probe.devices())

    def to_numpy(self, tree: Any) -> Any:
        return map_tree(_to_numpy, tree)

    def from_numpy(self, tree: Any) -> Any:
        return map_tree(_to_tensor, tree)

    def init(
        self, config: Config, batch_size: int, seed: int, dtype: str = "float32"
    ) -> dict[str, Any]:
        if dtype not in self.supported_dtypes:
            raise TypeError(
                f"{self.name}: dtype {dtype!r} is not supported here (supported: "
                f"{self.supported_dtypes}). Under KERAS_BACKEND=jax, float64 needs "
                "JAX_ENABLE_X64=1."
            )
        return self.from_numpy(rtrrl_spec.init(config, batch_size, seed, dtype=dtype))

    def rng(self, seed: int) -> keras.random.SeedGenerator:
        return keras.random.SeedGenerator(seed)

    def draw_noise(
        self, config: Config, batch_size: int, rng: keras.random.SeedGenerator, dtype: str
    ) -> tuple[Any, keras.random.SeedGenerator]:
        # SeedGenerator is stateful: drawing advances it, and it is returned as it is.
        shape = rtrrl_spec.noise_shape(config, batch_size)
        if not config.discrete:
            return keras.random.normal(shape, dtype=dtype, seed=rng), rng
        # Both ends stay inside the open interval: Gumbel-max takes log(-log u).
        tiny = float(np.finfo(dtype).tiny)
        below_one = float(np.nextafter(np.asarray(1.0, dtype), np.asarray(0.0, dtype)))
        u = keras.random.uniform(shape, minval=0.0, maxval=1.0, dtype=dtype, seed=rng)
        return _clip(u, tiny, below_one), rng

    def rng_state(self, rng: keras.random.SeedGenerator) -> dict[str, np.ndarray]:
        """The generator's whole state: its ``(seed, counter)`` variable."""
        return {"seed_state": _to_numpy(rng.state.value)}

    def rng_from_state(self, state: Mapping[str, np.ndarray]) -> keras.random.SeedGenerator:
        value = np.asarray(state["seed_state"])
        rng = keras.random.SeedGenerator(int(value[0]))
        rng.state.assign(ops.convert_to_tensor(value, dtype=rng.state.dtype))
        return rng


class KerasJaxBackend(_KerasBackend):
    """RTRRL in ``keras.ops`` with Keras on JAX (``KERAS_BACKEND=jax``), run under ``jax.jit``.

    Under JAX, Keras code is meant to run jitted: op by op, JAX compiles every primitive for
    each new shape (seconds per step of a new shape). So :meth:`step` is the compiled step and
    :meth:`step_functions` the spec's functions jitted; the eager code is the same ``keras.ops``
    code that ``keras-torch`` runs (and :func:`step` is still callable here).
    """

    name = "keras-jax"
    keras_backend_name = "jax"

    def step_variants(self) -> dict[str, Callable[..., tuple[dict, Any, dict]]]:
        """``{"compiled": step_compiled}``: the only variant offered (see the class)."""
        return {"compiled": step_compiled}

    def step_functions(self) -> dict[str, Callable[..., Any]]:
        """The module's functions under ``jax.jit``: ``step`` is :func:`step_compiled` (the
        config's structure static, its numbers traced); every other function is
        :func:`~rtrrl.backends._keras_speed.jit_static` of it (arrays traced; configs,
        ``None`` and Python numbers static)."""
        return dict(_jitted_step_functions())


@functools.cache
def _jitted_step_functions() -> dict[str, Callable[..., Any]]:
    # One wrapper per function for the whole process, so its compilations are reused.
    module = globals()
    return {
        name: step_compiled if name == "step" else jit_static(module[name])
        for name in rtrrl_spec.STEP_FUNCTIONS
    }


class KerasTorchBackend(_KerasBackend):
    """RTRRL in ``keras.ops`` with Keras on PyTorch (``KERAS_BACKEND=torch``), run eagerly.

    No ``torch.compile`` variant: the plain ``torch`` backend has one; here the step stays the
    portable Keras code. :meth:`step_functions` is the module's functions themselves.
    """

    name = "keras-torch"
    keras_backend_name = "torch"

    def step_variants(self) -> dict[str, Callable[..., tuple[dict, Any, dict]]]:
        """``{"eager": step}``: the only variant offered."""
        return {"eager": step}


# --- the Keras object -------------------------------------------------------------------------


def _config_to_dict(config: Config) -> dict[str, Any]:
    out = dataclasses.asdict(config)
    for k in ("action_low", "action_high"):
        if out[k] is not None:
            out[k] = list(out[k])  # JSON has no tuples
    return out


@keras.saving.register_keras_serializable(package="rtrrl")
class RTRRLAgent(keras.Model):
    """An RTRRL agent as a Keras model: every array of the canonical layout is a variable.

    Variables are non-trainable (the update is explicit, not a Keras gradient step) and named
    by their canonical names (``W``, ``tau``, ``J_W``, ``mu_W_A``, ``count_td``, ...; an LRU
    agent's are ``log_nu``, ``B_re``, ``h_re``, ``J_lam_re``, ...; see
    ``rtrrl_spec.layout``).

    Acting and learning are one method, :meth:`step` (RTRRL learns online, from every step
    it takes): it runs the functional :func:`step` on the variables' values and assigns the
    new ones, so the object steps exactly like the function. Calling the model
    (``agent((obs, reward, done, noise))``, ``agent.predict(...)``) only *computes* the
    action :meth:`step` would take and changes no variable: prediction never learns (no
    parameter, trace, Adam moment, step count or hidden state moves).

    Saving: ``agent.save("agent.keras")`` and ``keras.saving.load_model("agent.keras")``
    (importing ``rtrrl.backends.keras`` registers the class), or ``save_weights`` /
    ``load_weights`` into an agent built with the same config and batch size.

    Args:
        config: an :class:`rtrrl_spec.Config`, or its fields as a dict (what ``get_config``
            stores).
        batch_size: ``B``, the number of environments.
        seed: seed of ``rtrrl_spec.init``; the initial values equal ``init(config, B, seed)``.
        dtype: ``"float32"`` or ``"float64"`` (the Keras dtype policy of the model).
    """

    def __init__(
        self,
        config: Config | Mapping[str, Any],
        batch_size: int = 1,
        seed: int = 0,
        dtype: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(dtype=dtype, **kwargs)
        self.agent_config = config if isinstance(config, Config) else Config(**dict(config))
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        float_dtype = self.dtype_policy.variable_dtype
        if float_dtype not in rtrrl_spec.FLOAT_DTYPES:
            raise TypeError(f"RTRRLAgent needs dtype float32 or float64, got {float_dtype!r}")
        if float_dtype == "float64" and not x64_enabled():
            raise TypeError("float64 under KERAS_BACKEND=jax needs JAX_ENABLE_X64=1")
        initial = rtrrl_spec.init(self.agent_config, self.batch_size, self.seed, dtype=float_dtype)
        self._names = tuple(initial)
        self.agent_variables: dict[str, keras.Variable] = {}
        for name, value in initial.items():
            self.agent_variables[name] = self.add_weight(
                shape=value.shape,
                dtype=value.dtype.name,
                initializer=_constant(value),
                trainable=False,
                name=name,
            )
        self.built = True

    @property
    def float_dtype(self) -> str:
        """The agent's float dtype."""
        return self.dtype_policy.variable_dtype

    def state(self) -> dict[str, Any]:
        """The agent as a dict of tensors (the variables' current values), canonical names."""
        return {name: self.agent_variables[name].value for name in self._names}

    def state_numpy(self) -> dict[str, np.ndarray]:
        """The agent as NumPy arrays: a reference agent (``rtrrl_spec.step`` accepts it)."""
        return {name: _to_numpy(v) for name, v in self.state().items()}

    def assign_state(self, agent: Mapping[str, Any]) -> None:
        """Set every variable from a dict in the canonical layout (tensors or NumPy arrays)."""
        for name in self._names:
            self.agent_variables[name].assign(agent[name])

    def step(self, obs: Any, reward: Any, done: Any, noise: Any) -> tuple[Any, dict[str, Any]]:
        """Act and learn: one functional :func:`step` on the variables, which then hold the
        new agent (parameters, traces, optimizer state and hidden state all advance).

        Returns ``(action, info)`` as the functional step does.
        """
        new, action, info = self._functional_step(obs, reward, done, noise)
        self.assign_state(new)
        return action, info

    def call(self, inputs: tuple[Any, Any, Any, Any]) -> Any:
        """``agent((obs, reward, done, noise))`` and ``agent.predict(...)``: the action
        :meth:`step` would take on these inputs, computed without assigning any variable
        (prediction must not learn). Use :meth:`step` to act and learn."""
        obs, reward, done, noise = inputs
        return self._functional_step(obs, reward, done, noise)[1]

    def _functional_step(self, obs: Any, reward: Any, done: Any, noise: Any) -> Any:
        # The same function as the backend's step: compiled under JAX, eager otherwise.
        functional = step_compiled if keras_backend() == "jax" else step
        return functional(self.agent_config, self.state(), obs, reward, done, noise)

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.float_dtype,
            "trainable": self.trainable,
            "config": _config_to_dict(self.agent_config),
            "batch_size": self.batch_size,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> RTRRLAgent:
        return cls(**config)


def _constant(value: np.ndarray) -> Callable[..., Any]:
    def initializer(shape: Any, dtype: Any = None) -> Any:
        return ops.convert_to_tensor(value, dtype=value.dtype.name)

    return initializer
