"""The Keras 3 backends ``keras-jax`` and ``keras-torch``: one RTRRL step written in ``keras.ops``.

Installed as ``rtrrl.backends.keras``. The step (:func:`step`) uses only ``keras.ops`` (and the
arithmetic operators every Keras backend's tensors share), so the same code runs under each
Keras backend; nothing in it names JAX or PyTorch. It computes exactly what
:func:`rtrrl_spec.step` computes (the numbered steps of :mod:`rtrrl_spec.agent`), batch-first.

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
from rtrrl_spec.lru import LRU_SENSITIVITIES as _LRU_SENSITIVITIES

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

__all__ = [
    "KerasBackendMismatchError",
    "KerasJaxBackend",
    "KerasTorchBackend",
    "RTRRLAgent",
    "hyperparams",
    "split_config",
    "step",
    "step_core",
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
    import jax  # only to read the flag; the step itself never imports jax

    return bool(jax.config.read("jax_enable_x64"))


# --- the config, split into a static structure and numbers -----------------------------------

# The config's structure (static) and numbers (traced): one definition for every backend.
split_config = structure_of


def _hyperparams_numpy(config: Config, dtype: str) -> dict[str, np.ndarray]:
    # Products and differences of hyper-parameters are formed in Python floats (float64) and
    # rounded once, as the reference does when it multiplies an array by `gamma * lambda`.
    c = config
    values: dict[str, float] = {
        "dt": c.dt,
        "tau_min": c.tau_min,
        "gamma": c.gamma,
        "eta_pi": c.eta_pi,
        "entropy_rate": c.entropy_rate,
        "gl_actor": c.gamma * c.lambda_actor,
        "gl_critic": c.gamma * c.lambda_critic,
        "gl_rnn": c.gamma * c.lambda_rnn,
        "reward_rate_lr": c.reward_rate_lr or 0.0,
        "clip_norm": c.clip_norm or 1.0,
        "lr_td": c.lr_td,
        "lr_rnn": c.lr_rnn,
        "b1": c.adam_b1,
        "one_minus_b1": 1.0 - c.adam_b1,
        "b2": c.adam_b2,
        "one_minus_b2": 1.0 - c.adam_b2,
        "eps": c.adam_eps,
        # Bias corrections 1 − β^t are computed as −expm1(t·ln β): accurate in float32 too,
        # where 1 − 0.999 would lose four digits. ln 0 = −inf gives exactly 1.
        "log_b1": math.log(c.adam_b1) if c.adam_b1 > 0 else -math.inf,
        "log_b2": math.log(c.adam_b2) if c.adam_b2 > 0 else -math.inf,
    }
    out = {k: np.asarray(v, dtype=dtype) for k, v in values.items()}
    if c.bounded:
        out["lo"] = np.asarray(c.action_low, dtype=dtype)
        out["hi"] = np.asarray(c.action_high, dtype=dtype)
    return out


@functools.lru_cache(maxsize=256)
def _hyperparams_cached(config: Config, dtype: str) -> dict[str, Any]:
    return {
        k: ops.convert_to_tensor(v, dtype=dtype)
        for k, v in _hyperparams_numpy(config, dtype).items()
    }


def hyperparams(config: Config, dtype: str = "float32") -> dict[str, Any]:
    """The numbers of ``config`` as 0-d (or ``(D,)`` bounds) tensors of ``dtype``, cached."""
    return dict(_hyperparams_cached(config, dtype))


# --- the step, in keras.ops -------------------------------------------------------------------


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
    mask = ops.reshape(done, (-1,) + (1,) * (len(x.shape) - 1))
    return ops.where(mask, ops.zeros_like(x), x)


def _policy(s: Config, hp: Mapping[str, Any], out: Any, noise: Any) -> dict[str, Any]:
    """``rtrrl_spec.heads.policy_step`` in keras.ops: sample, ln π, H and their gradients."""
    dtype = keras.backend.standardize_dtype(out.dtype)
    if s.discrete:
        K = int(s.n_actions)  # type: ignore[arg-type]
        shifted = out - ops.max(out, axis=-1, keepdims=True)
        log_p = shifted - ops.log(ops.sum(ops.exp(shifted), axis=-1, keepdims=True))
        p = ops.exp(log_p)
        action = ops.cast(ops.argmax(out - ops.log(-ops.log(noise)), axis=-1), "int32")
        onehot = ops.one_hot(action, K, dtype=dtype)
        entropy = -ops.sum(p * log_p, axis=-1)
        return {
            "action": action,
            "sample": action,
            # The one-hot sum picks ln p_a exactly (the other terms are exact zeros).
            "log_prob": ops.sum(onehot * log_p, axis=-1),
            "entropy": entropy,
            "dlogp": onehot - p,
            "dent": -p * (log_p + entropy[:, None]),
            "scale": ops.ones_like(entropy),
        }
    D = int(s.action_dim)  # type: ignore[arg-type]
    m, sc = out[:, :D], out[:, D:]
    if s.bounded:
        lo, hi = hp["lo"], hp["hi"]
        sig_m = _sigmoid(m)
        mu = lo + (hi - lo) * sig_m
        dmu_dm = (hi - lo) * sig_m * (1.0 - sig_m)
    else:
        mu, dmu_dm = m, ops.ones_like(m)
    sig_s = _sigmoid(sc)
    pre_sigma = -2.0 + 4.0 * sig_s
    sigma = _softplus(pre_sigma)
    dsigma_ds = _sigmoid(pre_sigma) * 4.0 * sig_s * (1.0 - sig_s)
    sample = mu + sigma * noise
    action = _clip(sample, hp["lo"], hp["hi"]) if s.bounded else sample
    log_sigma = ops.log(sigma)
    scale = _minimum(_mean(sigma, -1), 1.0) if s.var_scaling else sigma[:, 0] * 0.0 + 1.0
    return {
        "action": action,
        "sample": sample,
        "log_prob": ops.sum(-0.5 * noise * noise - log_sigma - _HALF_LOG_2PI, axis=-1),
        "entropy": ops.sum(log_sigma + 0.5 + _HALF_LOG_2PI, axis=-1),
        "dlogp": ops.concatenate(
            [noise / sigma * dmu_dm, (noise * noise - 1.0) / sigma * dsigma_ds], axis=-1
        ),
        "dent": ops.concatenate([ops.zeros_like(m), dsigma_ds / sigma], axis=-1),
        "scale": scale,
    }


def _ctrnn_body(
    s: Config, hp: Mapping[str, Any], agent: Agent, x: Any, done: Any
) -> tuple[Any, Agent, Callable[[Any], Agent] | None]:
    """CT-RNN Euler step and, when the body learns, its Jacobian trace (``rtrrl_spec.ctrnn``).

    Returns the features ``h'``, the new body state and the projection of a hidden-unit signal
    onto ``{W, tau}`` through ``J'`` (None for a frozen body)."""
    dt = hp["dt"]
    W, tau = agent["W"], agent["tau"]
    h = _reset(done, agent["h"])
    zeta = ops.concatenate([x, h, ops.ones_like(h[:, :1])], axis=-1)
    phi = _tanh(_matmul(zeta, ops.transpose(W)))
    h_next = h + dt * (phi - h) / tau
    if not s.trains_body:
        return h_next, {"h": h_next}, None
    J_W, J_tau = _reset(done, agent["J_W"]), _reset(done, agent["J_tau"])
    dphi = 1.0 - phi * phi
    if s.jacobian == "rflo":
        rate = dt / tau
        J_W = (1.0 - rate)[:, None] * J_W + rate[:, None] * (dphi[:, :, None] * zeta[:, None, :])
        J_tau = (1.0 - rate) * J_tau + dt * (h - phi) / (tau * tau)

        def project(signal: Any) -> Agent:
            return {"W": signal[:, :, None] * J_W, "tau": signal * J_tau}

    else:
        N, n_in = s.n_hidden, s.input_dim
        W_h = W[:, n_in : n_in + N]
        eye = ops.eye(N, dtype=keras.backend.standardize_dtype(W.dtype))
        M = eye + dt * (dphi[:, :, None] * W_h[None] - eye) / tau[None, :, None]
        direct_W = dt * dphi[:, :, None] * zeta[:, None, :] / tau[None, :, None]
        direct_tau = dt * (h - phi) / (tau * tau)
        # The direct term sits on the diagonal i = j; multiplying by the identity adds exact
        # zeros elsewhere, which is the reference's in-place `[:, idx, idx] +=`.
        J_W = ops.einsum("bil,bljk->bijk", M, J_W) + eye[None, :, :, None] * direct_W[:, :, None]
        J_tau = ops.einsum("bil,blj->bij", M, J_tau) + eye[None] * direct_tau[:, :, None]

        def project(signal: Any) -> Agent:
            return {
                "W": ops.einsum("bi,bijk->bjk", signal, J_W),
                "tau": ops.einsum("bi,bij->bj", signal, J_tau),
            }

    return h_next, {"h": h_next, "J_W": J_W, "J_tau": J_tau}, project


def _cmul(a_re: Any, a_im: Any, b_re: Any, b_im: Any) -> tuple[Any, Any]:
    """``(a_re + i a_im)(b_re + i b_im)`` as a (real, imaginary) pair (``rtrrl_spec.lru``)."""
    return a_re * b_re - a_im * b_im, a_re * b_im + a_im * b_re


def _lru_body(
    s: Config, agent: Agent, x: Any, done: Any
) -> tuple[Any, Agent, Callable[[Any], Agent] | None]:
    """The LRU step and, when the body learns, its exact sensitivities (``rtrrl_spec.lru``:
    ``lru_step``, ``lru_sensitivity_update``, ``project_lru``), in real arithmetic on
    (re, im) pairs. Returns the features ``y = Re(C h')``, the new body state and the
    projection of a feature signal onto the LRU parameters (None for a frozen body)."""
    p = {k: agent[k] for k in rtrrl_spec.LRU_PARAMS}
    h_re, h_im = _reset(done, agent["h_re"]), _reset(done, agent["h_im"])
    # lru_step
    modulus = ops.exp(-ops.exp(p["log_nu"]))
    phase = ops.exp(p["log_theta"])
    cos_phase, sin_phase = _cos_sin(phase)
    lam_re, lam_im = modulus * cos_phase, modulus * sin_phase
    norm = ops.exp(p["log_gamma"])
    u_re, u_im = _matmul(x, ops.transpose(p["B_re"])), _matmul(x, ops.transpose(p["B_im"]))
    rec_re, rec_im = _cmul(lam_re, lam_im, h_re, h_im)
    hn_re = rec_re + norm * u_re
    hn_im = rec_im + norm * u_im
    y = _matmul(hn_re, ops.transpose(p["C_re"])) - _matmul(hn_im, ops.transpose(p["C_im"]))
    state = {"h_re": hn_re, "h_im": hn_im}
    if not s.trains_body:
        return y, state, None
    # lru_sensitivity_update, from the sensitivities reset at the boundary.
    J = {k: _reset(done, agent[k]) for k in _LRU_SENSITIVITIES}
    lam_re_m, lam_im_m = lam_re[:, None], lam_im[:, None]  # broadcast over the input axis
    rec_re, rec_im = _cmul(lam_re, lam_im, J["J_lam_re"], J["J_lam_im"])
    J["J_lam_re"], J["J_lam_im"] = rec_re + h_re, rec_im + h_im
    rec_re, rec_im = _cmul(lam_re, lam_im, J["J_gam_re"], J["J_gam_im"])
    J["J_gam_re"], J["J_gam_im"] = rec_re + norm * u_re, rec_im + norm * u_im
    rec_re, rec_im = _cmul(lam_re_m, lam_im_m, J["J_in_re"], J["J_in_im"])
    J["J_in_re"] = rec_re + norm[None, :, None] * x[:, None, :]
    J["J_in_im"] = rec_im
    state.update(J)

    def project(signal: Any) -> Agent:
        # project_lru: w = Cᵀ s, then Re / Im of w ⊙ (each sensitivity).
        w_re, w_im = _matmul(signal, p["C_re"]), _matmul(signal, p["C_im"])
        a_re, a_im = _cmul(w_re, w_im, J["J_lam_re"], J["J_lam_im"])
        a_re, a_im = _cmul(a_re, a_im, lam_re, lam_im)
        g_re, g_im = _cmul(w_re, w_im, J["J_gam_re"], J["J_gam_im"])
        b_re, b_im = _cmul(w_re[:, :, None], w_im[:, :, None], J["J_in_re"], J["J_in_im"])
        return {
            "log_nu": -a_re * ops.exp(p["log_nu"]),
            "log_theta": -a_im * ops.exp(p["log_theta"]),
            "log_gamma": g_re,
            "B_re": b_re,
            "B_im": -b_im,
            "C_re": signal[:, :, None] * hn_re[:, None, :],
            "C_im": -signal[:, :, None] * hn_im[:, None, :],
        }

    return y, state, project


def _apply_update(
    s: Config, hp: Mapping[str, Any], agent: Agent, direction: Mapping[str, Any]
) -> tuple[Agent, Agent]:
    """``rtrrl_spec.apply_update``: per-group global-norm clip, the spec's Adam, τ clip."""
    dtype = keras.backend.standardize_dtype(agent["W_A"].dtype)
    changed: Agent = {}
    info: Agent = {}
    lrs = {"td": hp["lr_td"], "rnn": hp["lr_rnn"]}
    for group, names in rtrrl_spec.optimizer_groups(s):
        lr = lrs[group]
        norm = ops.sqrt(sum(ops.sum(direction[k] * direction[k]) for k in names))
        if s.clip_norm is None:
            clipped = {k: direction[k] for k in names}
        else:
            factor = hp["clip_norm"] / _maximum(norm, hp["clip_norm"])
            clipped = {k: direction[k] * factor for k in names}
        count = agent[f"count_{group}"] + 1
        t = ops.cast(count, dtype)
        correction1 = -ops.expm1(t * hp["log_b1"])
        correction2 = -ops.expm1(t * hp["log_b2"])
        for k in names:
            d = clipped[k]
            m = hp["b1"] * agent[f"mu_{k}"] + hp["one_minus_b1"] * d
            v = hp["b2"] * agent[f"nu_{k}"] + hp["one_minus_b2"] * d * d
            p = agent[k] + lr * (m / correction1) / (ops.sqrt(v / correction2) + hp["eps"])
            if k == "tau":  # the CT-RNN's time constants only
                p = _maximum(p, hp["tau_min"])
            changed[k], changed[f"mu_{k}"], changed[f"nu_{k}"] = p, m, v
        changed[f"count_{group}"] = ops.cast(count, "int32")
        info[f"grad_norm_{group}"] = norm
    return changed, info


def step_core(
    s: Config,
    hp: Mapping[str, Any],
    agent: Mapping[str, Any],
    obs: Any,
    reward: Any,
    done: Any,
    noise: Any,
) -> tuple[Agent, Any, Agent]:
    """The step on the structure ``s`` (:func:`split_config`) and numbers ``hp``.

    Pure: reads ``agent``, returns a new dict. Follows ``rtrrl_spec.agent.step_unchecked``
    numbered step by numbered step.
    """
    agent = dict(agent)
    dtype = keras.backend.standardize_dtype(agent["W_A"].dtype)
    obs, reward, noise = (ops.cast(a, dtype) for a in (obs, reward, noise))
    done = ops.cast(done, "bool")
    new = dict(agent)

    # 1-2. RNN input; at an episode boundary the previous action and reward are not fed.
    if s.meta_rl:
        if s.discrete:
            a_in = ops.one_hot(agent["a_prev"], int(s.n_actions), dtype=dtype)  # type: ignore[arg-type]
        else:
            a_in = agent["a_prev"]
        a_in = _reset(done, a_in)
        r_in = _reset(done, reward)[:, None]
        x = ops.concatenate([obs, a_in, r_in], axis=-1)
    else:
        x = obs

    # 3. Body: features for the heads, the new body state and, when the body learns, the
    # projection of a signal on the features into its parameters' gradients (J'ᵀ g).
    project = None
    if s.body == "ctrnn":
        features, body_state, project = _ctrnn_body(s, hp, agent, x, done)
        new.update(body_state)
    elif s.body == "lru":
        features, body_state, project = _lru_body(s, agent, x, done)
        new.update(body_state)
    else:
        features = x

    # 4. Heads, with the parameters as they were before this step's update.
    W_A, W_C, b_C = agent["W_A"], agent["W_C"], agent["b_C"]
    value = _matmul(features, W_C[:, 0]) + b_C[0]
    pol = _policy(s, hp, _matmul(features, W_A), noise)
    c = pol["scale"][:, None]

    # 5. Immediate gradients (the dutch critic trace takes the unscaled gradient).
    critic_scale = ops.ones_like(c) if s.trace == "dutch" else c
    grad = {
        "W_C": critic_scale[:, :, None] * features[:, :, None],
        "b_C": critic_scale,
        "W_A": c[:, :, None] * features[:, :, None] * pol["dlogp"][:, None, :],
    }
    entropy_grad = {"W_A": c[:, :, None] * features[:, :, None] * pol["dent"][:, None, :]}
    if project is not None:
        B_A = agent["B_A"] if s.feedback_alignment else W_A
        B_C = agent["B_C"] if s.feedback_alignment else W_C
        signal = c * (B_C[:, 0][None, :] + hp["eta_pi"] * _matmul(pol["dlogp"], ops.transpose(B_A)))
        entropy_signal = c * _matmul(pol["dent"], ops.transpose(B_A))
        grad.update(project(signal))
        entropy_grad.update(project(entropy_signal))

    # 6. TD error (rtrrl_spec.agent.td_error).
    not_done = 1.0 - ops.cast(done, dtype)
    delta = reward + hp["gamma"] * not_done * value - agent["v_prev"]
    if s.reward_rate_lr is not None:
        delta = reward - agent["reward_rate"] + hp["gamma"] * not_done * value - agent["v_prev"]
    d = delta[:, None]

    # 7. Update directions from the traces as they were; batch mean; clip, Adam, tau clip.
    eta_h = hp["entropy_rate"]
    per_env = {
        "W_C": d[:, :, None] * agent["e_W_C"],
        "b_C": d * agent["e_b_C"],
        "W_A": d[:, :, None] * agent["e_W_A"] + eta_h * entropy_grad["W_A"],
    }
    if s.trace == "dutch":
        value_now = ops.sum(agent["x_W_C"][:, :, 0] * W_C[:, 0], axis=-1) + (
            agent["x_b_C"][:, 0] * b_C[0]
        )
        correction = (value_now - agent["v_prev"])[:, None]
        per_env["W_C"] = per_env["W_C"] - correction[:, :, None] * agent["x_W_C"]
        per_env["b_C"] = per_env["b_C"] - correction * agent["x_b_C"]
    for k in rtrrl_spec.rnn_params(s):
        trace = agent[f"e_{k}"]
        per_env[k] = (
            ops.reshape(delta, (-1,) + (1,) * (len(trace.shape) - 1)) * trace
            + eta_h * entropy_grad[k]
        )
    direction = {k: _mean(v, 0) for k, v in per_env.items()}

    changed, info = _apply_update(s, hp, agent, direction)
    new.update(changed)
    if s.reward_rate_lr is not None:
        new["reward_rate"] = agent["reward_rate"] + hp["reward_rate_lr"] * _mean(delta, 0)

    # 8. Traces: reset at the boundary, then decay and add this step's gradients.
    def decayed(name: str, gamma_lambda: Any) -> Any:
        return gamma_lambda * _reset(done, agent[name])

    if s.trace == "dutch":
        e_W_C = decayed("e_W_C", hp["gl_critic"])
        e_b_C = decayed("e_b_C", hp["gl_critic"])
        inner = ops.sum(e_W_C * grad["W_C"], axis=(1, 2)) + ops.sum(e_b_C * grad["b_C"], axis=1)
        weight = (1.0 - hp["lr_td"] * inner)[:, None]
        new["e_W_C"] = e_W_C + weight[:, :, None] * grad["W_C"]
        new["e_b_C"] = e_b_C + weight * grad["b_C"]
        new["x_W_C"], new["x_b_C"] = grad["W_C"], grad["b_C"]
    else:
        new["e_W_C"] = decayed("e_W_C", hp["gl_critic"]) + grad["W_C"]
        new["e_b_C"] = decayed("e_b_C", hp["gl_critic"]) + grad["b_C"]
    new["e_W_A"] = decayed("e_W_A", hp["gl_actor"]) + grad["W_A"]
    for k in rtrrl_spec.rnn_params(s):
        new[f"e_{k}"] = decayed(f"e_{k}", hp["gl_rnn"]) + grad[k]

    # 9. Carry.
    new["v_prev"] = value
    new["a_prev"] = ops.cast(pol["action"], keras.backend.standardize_dtype(agent["a_prev"].dtype))

    info.update(
        td_error=delta,
        value=value,
        log_prob=pol["log_prob"],
        entropy=pol["entropy"],
        sample=pol["sample"],
        features=features,
    )
    for k, v in direction.items():
        info[f"direction.{k}"] = v
        info[f"update.{k}"] = new[k] - agent[k]
    return new, pol["action"], info


def step(
    config: Config, agent: Mapping[str, Any], obs: Any, reward: Any, done: Any, noise: Any
) -> tuple[Agent, Any, Agent]:
    """One eager RTRRL step (``rtrrl_spec.step``'s contract) under the current Keras backend."""
    dtype = keras.backend.standardize_dtype(agent["W_A"].dtype)
    return step_core(
        split_config(config), _hyperparams_cached(config, dtype), agent, obs, reward, done, noise
    )


@functools.cache
def _jax_compiled() -> Callable[..., tuple[Agent, Any, Agent]]:
    import jax  # the compiled variant is the one place that names the framework

    return jax.jit(step_core, static_argnums=0)


def step_compiled(
    config: Config, agent: Mapping[str, Any], obs: Any, reward: Any, done: Any, noise: Any
) -> tuple[Agent, Any, Agent]:
    """:func:`step` under ``jax.jit`` (Keras on JAX only), compiled once per config structure."""
    dtype = keras.backend.standardize_dtype(agent["W_A"].dtype)
    return _jax_compiled()(
        split_config(config),
        _hyperparams_cached(config, dtype),
        dict(agent),
        obs,
        reward,
        done,
        noise,
    )


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
    """Shared by ``keras-jax`` and ``keras-torch``; the subclass names the Keras backend."""

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

    def step(
        self, config: Config, agent: dict, obs: Any, reward: Any, done: Any, noise: Any
    ) -> tuple[dict, Any, dict]:
        """The eager step (:func:`step`); see :meth:`step_variants` for the compiled one."""
        return step(config, agent, obs, reward, done, noise)

    def step_variants(self) -> dict[str, Callable[..., tuple[dict, Any, dict]]]:
        """``"eager"`` always; ``"compiled"`` (``jax.jit``) under Keras on JAX."""
        return {"eager": step}

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


class KerasJaxBackend(_KerasBackend):
    """RTRRL in ``keras.ops`` with Keras on JAX (``KERAS_BACKEND=jax``)."""

    name = "keras-jax"
    keras_backend_name = "jax"

    def step(
        self, config: Config, agent: dict, obs: Any, reward: Any, done: Any, noise: Any
    ) -> tuple[dict, Any, dict]:
        """The compiled step (:func:`step_compiled`): under JAX, Keras code is meant to run
        jitted, and op-by-op execution recompiles every primitive for each new shape (seconds
        per step). The eager function is :func:`step`, checked by conformance under
        ``keras-torch``: it is the same ``keras.ops`` code."""
        return step_compiled(config, agent, obs, reward, done, noise)

    def step_variants(self) -> dict[str, Callable[..., tuple[dict, Any, dict]]]:
        return {"compiled": step_compiled}


class KerasTorchBackend(_KerasBackend):
    """RTRRL in ``keras.ops`` with Keras on PyTorch (``KERAS_BACKEND=torch``)."""

    name = "keras-torch"
    keras_backend_name = "torch"


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
    ``rtrrl_spec.layout``). :meth:`step` runs the functional :func:`step` on the variables'
    values and assigns the new ones, so the object steps exactly like the function.

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
        """One functional :func:`step` on the variables, which then hold the new agent.

        Returns ``(action, info)`` as the functional step does.
        """
        # The same function as the backend's step: compiled under JAX, eager otherwise.
        functional = step_compiled if keras.backend.backend() == "jax" else step
        new, action, info = functional(self.agent_config, self.state(), obs, reward, done, noise)
        self.assign_state(new)
        return action, info

    def call(self, inputs: tuple[Any, Any, Any, Any]) -> Any:
        """``agent((obs, reward, done, noise))``: :meth:`step`, returning the action."""
        obs, reward, done, noise = inputs
        return self.step(obs, reward, done, noise)[0]

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
