r"""The ``jax`` backend: the reference's step, function for function, in ``jnp``, jitted.

Installed as ``rtrrl.backends.jax``; select it with ``rtrrl.use("jax")``. The module reads
like the spec (``rtrrl_spec``): it defines every function of ``rtrrl_spec.STEP_FUNCTIONS``
under the same name, in the same order, taking and returning what the reference's function
does (its NamedTuples ``CTRNNStep``, ``LRUStep``, ``PolicyStep``, which are pytrees, dicts with
the same keys, tuples of the same length), batch-first. :func:`step_unchecked` calls them in
the numbered stages of ``rtrrl_spec.agent.step_unchecked``, and :func:`step` is that core,
jitted. What is JAX's own:

- An agent is a flat ``dict[str, jax.Array]`` in the canonical layout (``rtrrl_spec.layout``),
  a pytree, so it passes through ``jit``, ``vmap`` and ``lax.scan`` as it is.
- The config is split in two: its *structure* (``rtrrl_spec.structure_of``: sizes and modes,
  what changes the computation graph) is a static argument of ``jax.jit``, and its *numbers*
  (``rtrrl_spec.numbers_of``: discount, trace decays, learning rates, Adam constants, clip
  norm, bounds, ``dt``, ``tau_min``) are traced 0-d arrays (:func:`hyperparams`), passed to
  the functions where the reference passes ``config.<field>``. Configs that differ only in
  numbers share one compiled step, and a population gives every member its own numbers
  (``jax.vmap`` over them, :func:`make_population_step`). Called with the reference's
  arguments alone (Python floats, a full config), every function computes the reference's.
- The functions index from the end (``x[..., :, None]``), so each one serves a batch of
  environments and, under ``jax.vmap``, a population of agents alike.
- :func:`step` (and :meth:`JaxBackend.step`, :func:`step_eager`) refuses what
  ``rtrrl_spec.step`` refuses, with its messages, unless called with ``check=False``:
  checked by default, because a direct caller may pass anything and a NaN observation would
  otherwise turn the whole agent into NaN without a word; off where the inputs are known good.
  The fused training scan traces :func:`make_step`, which never checks: a check there would
  leave the compiled code for the host every step, and the scan's agents are checked for
  non-finite values at each epoch boundary instead. What the check costs is in
  ``docs/backends/index.md`` ("Checked and unchecked steps").
- The optimizer is the spec's clip + Adam written out in ``jnp``, not optax
  (``docs/backends/jax.md``: optax's float32 bias correction cancels). The Adam moments may
  be carried packed, one flat vector per group (:mod:`rtrrl.backends._jax_speed`).

float64 needs ``jax_enable_x64`` (set ``JAX_ENABLE_X64=1`` in the environment, or call
``jax.config.update("jax_enable_x64", True)`` before creating any array). This backend never
flips that switch itself: without it, ``supported_dtypes`` is ``("float32",)`` and
:meth:`JaxBackend.from_numpy` refuses 64-bit arrays instead of silently downcasting them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import rtrrl_spec
from rtrrl.backends._jax_speed import flat, is_packed, pack_moments, split, unpack_moments
from rtrrl.backends.base import BackendBase, check_step, map_tree
from rtrrl_spec import Config
from rtrrl_spec.config import structure_of
from rtrrl_spec.ctrnn import CTRNNStep
from rtrrl_spec.heads import PolicyStep
from rtrrl_spec.lru import LRU_SENSITIVITIES, LRUStep

__all__ = [
    "Float64DisabledError",
    "JaxBackend",
    "adam_step",
    "apply_update",
    "clip_by_global_norm",
    "critic_value",
    "ctrnn_step",
    "decay_trace",
    "global_norm",
    "hyperparams",
    "init_population",
    "lru_lambda",
    "lru_sensitivity_update",
    "lru_step",
    "make_population_step",
    "make_step",
    "pack_moments",
    "policy_step",
    "project_lru",
    "project_rflo",
    "project_rtrl",
    "rflo_update",
    "rtrl_update",
    "split_config",
    "step",
    "step_eager",
    "step_unchecked",
    "td_error",
    "unpack_moments",
    "x64_enabled",
]

Agent = dict[str, jax.Array]
HyperParams = dict[str, jax.Array]
#: A number of the config: a Python float (as the reference passes it) or a 0-d array (traced
#: under ``jit``, batched over a population under ``vmap``).
Number = float | jax.Array

# A Python float, not np.float64: a NumPy scalar would promote float32 arrays to float64.
_HALF_LOG_2PI = float(0.5 * np.log(2.0 * np.pi))


class Float64DisabledError(TypeError):
    """A 64-bit array was given to JAX while ``jax_enable_x64`` is off."""


_X64_HELP = (
    "JAX computes in 32 bits unless x64 is enabled, and this backend will not downcast "
    "silently. Enable it before creating any JAX array: set the environment variable "
    "JAX_ENABLE_X64=1, or call jax.config.update('jax_enable_x64', True) at the top of your "
    "program. Or cast your arrays to float32 / int32 and use dtype='float32'."
)


def x64_enabled() -> bool:
    """Whether JAX is currently allowed to hold 64-bit arrays (``jax_enable_x64``)."""
    return bool(jax.config.read("jax_enable_x64"))


def _check_dtype(dtype: str | np.dtype) -> str:
    name = np.dtype(dtype).name
    if name not in rtrrl_spec.FLOAT_DTYPES:
        raise rtrrl_spec.SpecError(f"dtype must be one of {rtrrl_spec.FLOAT_DTYPES}, got {name}")
    if name == "float64" and not x64_enabled():
        raise Float64DisabledError(f"dtype='float64' was requested. {_X64_HELP}")
    return name


# --- the config, split into a static structure and traced numbers ---------------------------

# The config's structure (static): one definition for every backend.
split_config = structure_of


@functools.lru_cache(maxsize=1024)
def _hyperparams_cached(config: Config, dtype: str) -> HyperParams:
    # Evaluated eagerly even when first reached inside someone's jit trace, so the cache never
    # holds a tracer.
    with jax.ensure_compile_time_eval():
        return {k: jnp.asarray(v) for k, v in rtrrl_spec.numbers_of(config, dtype).items()}


def hyperparams(config: Config | Sequence[Config], dtype: str = "float32") -> HyperParams:
    """``rtrrl_spec.numbers_of(config, dtype)`` as JAX scalars (the traced half of a config).

    Given a sequence of configs with one structure (:func:`split_config`), every entry gets
    a leading population axis, for :func:`make_population_step`.
    """
    dtype = _check_dtype(dtype)
    if isinstance(config, Config):
        return _hyperparams_cached(config, dtype)
    configs = list(config)
    if not configs:
        raise rtrrl_spec.SpecError("hyperparams needs at least one config")
    if len({split_config(c) for c in configs}) != 1:
        raise rtrrl_spec.SpecError(
            "a population's configs must share their structure (sizes and modes) and differ "
            "only in numbers (learning rates, discount, ...); got several structures"
        )
    rows = [rtrrl_spec.numbers_of(c, dtype) for c in configs]
    return {k: jnp.asarray(np.stack([r[k] for r in rows])) for k in rows[0]}


def _in(value: Number, like: jax.Array) -> jax.Array:
    """A number in the dtype of the arrays it meets. A Python float is rounded once, as the
    reference's float32 arithmetic rounds it; a float64 0-d array (x64 on) must not promote a
    float32 computation to float64."""
    return jnp.asarray(value, like.dtype)


# --- the CT-RNN body and its Jacobian traces (rtrrl_spec.ctrnn) ------------------------------


def ctrnn_step(W: jax.Array, tau: jax.Array, h: jax.Array, x: jax.Array, dt: Number) -> CTRNNStep:
    """One forward-Euler step ``h' = h + dt (tanh(W [x, h, 1]) − h) / τ``."""
    dt = _in(dt, h)
    zeta = jnp.concatenate([x, h, jnp.ones((*h.shape[:-1], 1), h.dtype)], axis=-1)
    phi = jnp.tanh(zeta @ W.T)
    h_next = h + dt * (phi - h) / tau
    return CTRNNStep(zeta, phi, 1.0 - phi * phi, h_next)


def rflo_update(
    J_W: jax.Array, J_tau: jax.Array, tau: jax.Array, h: jax.Array, s: CTRNNStep, dt: Number
) -> tuple[jax.Array, jax.Array]:
    """RFLO: the local trace, one ``(N, Z)`` row block; never the RTRL tensor."""
    dt = _in(dt, h)
    rate = dt / tau
    J_W_next = (1.0 - rate)[:, None] * J_W + rate[:, None] * (
        s.dphi[..., :, None] * s.zeta[..., None, :]
    )
    J_tau_next = (1.0 - rate) * J_tau + dt * (h - s.phi) / (tau * tau)
    return J_W_next, J_tau_next


def rtrl_update(
    J_W: jax.Array,
    J_tau: jax.Array,
    W: jax.Array,
    tau: jax.Array,
    h: jax.Array,
    s: CTRNNStep,
    dt: Number,
    input_dim: int,
) -> tuple[jax.Array, jax.Array]:
    """RTRL: ``J' = M J + dt ∂f/∂θ`` with ``M = I + dt ∂f/∂h``, one ``M`` per environment."""
    dt = _in(dt, h)
    N, n_in = tau.shape[0], int(input_dim)
    eye = jnp.eye(N, dtype=W.dtype)
    M = eye + dt * (s.dphi[..., :, None] * W[:, n_in : n_in + N] - eye) / tau[:, None]
    idx = jnp.arange(N)
    # ∂f/∂θ is diagonal in (i, j): added in place on the diagonal, not as a dense tensor.
    J_W_next = jnp.einsum("...il,...ljk->...ijk", M, J_W)
    J_W_next = J_W_next.at[..., idx, idx, :].add(
        dt * s.dphi[..., :, None] * s.zeta[..., None, :] / tau[:, None]
    )
    J_tau_next = jnp.einsum("...il,...lj->...ij", M, J_tau)
    J_tau_next = J_tau_next.at[..., idx, idx].add(dt * (h - s.phi) / (tau * tau))
    return J_W_next, J_tau_next


def project_rflo(
    signal: jax.Array, J_W: jax.Array, J_tau: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Parameter gradient of ``signal · h'`` through RFLO's local trace: row ``i`` times ``g_i``."""
    return signal[..., :, None] * J_W, signal * J_tau


def project_rtrl(
    signal: jax.Array, J_W: jax.Array, J_tau: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Parameter gradient of ``signal · h'`` through the full RTRL trace: ``Σ_i g_i J[i]``."""
    return (
        jnp.einsum("...i,...ijk->...jk", signal, J_W),
        jnp.einsum("...i,...ij->...j", signal, J_tau),
    )


# --- the LRU body and its exact sensitivities (rtrrl_spec.lru) -------------------------------
# Real arithmetic on (re, im) pairs, as in the reference, so that float32 stays float32.


def _cmul(
    a_re: jax.Array, a_im: jax.Array, b_re: jax.Array, b_im: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """``(a_re + i a_im)(b_re + i b_im)`` as a (real, imaginary) pair."""
    return a_re * b_re - a_im * b_im, a_re * b_im + a_im * b_re


def lru_lambda(log_nu: jax.Array, log_theta: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``λ = exp(−exp(ν)) e^{i exp(θ)}`` as (Re λ, Im λ)."""
    modulus = jnp.exp(-jnp.exp(log_nu))
    phase = jnp.exp(log_theta)
    return modulus * jnp.cos(phase), modulus * jnp.sin(phase)


def lru_step(
    params: Mapping[str, jax.Array], h_re: jax.Array, h_im: jax.Array, x: jax.Array
) -> LRUStep:
    """``h' = λ ⊙ h + exp(γ) ⊙ (B x)``, ``y = Re(C h')``."""
    lam_re, lam_im = lru_lambda(params["log_nu"], params["log_theta"])
    norm = jnp.exp(params["log_gamma"])
    u_re, u_im = x @ params["B_re"].T, x @ params["B_im"].T
    rec_re, rec_im = _cmul(lam_re, lam_im, h_re, h_im)
    h_next_re = rec_re + norm * u_re
    h_next_im = rec_im + norm * u_im
    y = h_next_re @ params["C_re"].T - h_next_im @ params["C_im"].T
    return LRUStep(lam_re, lam_im, norm, u_re, u_im, h_next_re, h_next_im, y)


def lru_sensitivity_update(
    J: Mapping[str, jax.Array], h_re: jax.Array, h_im: jax.Array, x: jax.Array, s: LRUStep
) -> dict[str, jax.Array]:
    """The sensitivities at ``h'`` from those at ``h`` (the state after any episode reset)."""
    new = {}
    rec_re, rec_im = _cmul(s.lam_re, s.lam_im, J["J_lam_re"], J["J_lam_im"])
    new["J_lam_re"], new["J_lam_im"] = rec_re + h_re, rec_im + h_im
    rec_re, rec_im = _cmul(s.lam_re, s.lam_im, J["J_gam_re"], J["J_gam_im"])
    new["J_gam_re"], new["J_gam_im"] = rec_re + s.norm * s.u_re, rec_im + s.norm * s.u_im
    rec_re, rec_im = _cmul(s.lam_re[:, None], s.lam_im[:, None], J["J_in_re"], J["J_in_im"])
    new["J_in_re"] = rec_re + s.norm[:, None] * x[..., None, :]
    new["J_in_im"] = rec_im
    return new


def project_lru(
    signal: jax.Array, params: Mapping[str, jax.Array], J: Mapping[str, jax.Array], s: LRUStep
) -> dict[str, jax.Array]:
    """Gradients of ``signal · y`` for every LRU parameter; ``J`` at ``h'``, ``w = Cᵀ s``."""
    w_re, w_im = signal @ params["C_re"], signal @ params["C_im"]
    a_re, a_im = _cmul(w_re, w_im, J["J_lam_re"], J["J_lam_im"])
    a_re, a_im = _cmul(a_re, a_im, s.lam_re, s.lam_im)
    g_re, _ = _cmul(w_re, w_im, J["J_gam_re"], J["J_gam_im"])
    b_re, b_im = _cmul(w_re[..., :, None], w_im[..., :, None], J["J_in_re"], J["J_in_im"])
    return {
        "log_nu": -a_re * jnp.exp(params["log_nu"]),
        "log_theta": -a_im * jnp.exp(params["log_theta"]),
        "log_gamma": g_re,
        "B_re": b_re,
        "B_im": -b_im,
        "C_re": signal[..., :, None] * s.h_re[..., None, :],
        "C_im": -signal[..., :, None] * s.h_im[..., None, :],
    }


# --- the heads (rtrrl_spec.heads) ------------------------------------------------------------


def _sigmoid(z: jax.Array) -> jax.Array:
    return 0.5 * (1.0 + jnp.tanh(0.5 * z))  # the reference's form, stable for large |z|


def critic_value(f: jax.Array, W_C: jax.Array, b_C: jax.Array) -> jax.Array:
    """``v = f · W_C + b_C`` for each environment."""
    return f @ W_C[:, 0] + b_C[0]


def policy_step(
    config: Config,
    out: jax.Array,
    noise: jax.Array,
    *,
    bounds: tuple[jax.Array, jax.Array] | None = None,
) -> PolicyStep:
    """Sample an action from the actor outputs ``out`` and differentiate ``ln π`` and ``H``.

    ``bounds``: the action box ``(low, high)`` as arrays, where the config's structure holds
    placeholders (a compiled step, a population); by default the config's own bounds.
    """
    if config.discrete:
        return _discrete(out, noise)
    if config.bounded and bounds is None:
        bounds = (
            jnp.asarray(config.action_low, out.dtype),
            jnp.asarray(config.action_high, out.dtype),
        )
    return _continuous(config, out, noise, bounds if config.bounded else None)


def _discrete(logits: jax.Array, noise: jax.Array) -> PolicyStep:
    shifted = logits - jnp.max(logits, axis=-1, keepdims=True)
    log_p = shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=-1, keepdims=True))
    p = jnp.exp(log_p)
    action = jnp.argmax(logits - jnp.log(-jnp.log(noise)), axis=-1).astype(jnp.int32)
    entropy = -jnp.sum(p * log_p, axis=-1)
    return PolicyStep(
        action=action,
        sample=action,
        log_prob=jnp.take_along_axis(log_p, action[..., None], axis=-1)[..., 0],
        entropy=entropy,
        dlogp_dout=jax.nn.one_hot(action, logits.shape[-1], dtype=logits.dtype) - p,
        dent_dout=-p * (log_p + entropy[..., None]),
        scale=jnp.ones_like(entropy),
    )


def _continuous(
    config: Config, out: jax.Array, noise: jax.Array, bounds: tuple[jax.Array, jax.Array] | None
) -> PolicyStep:
    D = int(config.action_dim)  # type: ignore[arg-type]
    m, s = out[..., :D], out[..., D:]
    if bounds is not None:
        lo, hi = bounds
        sig_m = _sigmoid(m)
        mu = lo + (hi - lo) * sig_m
        dmu_dm = (hi - lo) * sig_m * (1.0 - sig_m)
    else:
        mu, dmu_dm = m, jnp.ones_like(m)
    sig_s = _sigmoid(s)
    pre_sigma = -2.0 + 4.0 * sig_s
    sigma = jnp.logaddexp(pre_sigma, 0.0)  # softplus
    dsigma_ds = _sigmoid(pre_sigma) * 4.0 * sig_s * (1.0 - sig_s)

    sample = mu + sigma * noise
    action = jnp.clip(sample, lo, hi) if bounds is not None else sample
    log_sigma = jnp.log(sigma)
    dlogp_dout = jnp.concatenate(
        [noise / sigma * dmu_dm, (noise * noise - 1.0) / sigma * dsigma_ds], axis=-1
    )
    dent_dout = jnp.concatenate([jnp.zeros_like(m), dsigma_ds / sigma], axis=-1)
    if config.var_scaling:
        scale = jnp.minimum(jnp.mean(sigma, axis=-1), 1.0)
    else:
        scale = jnp.ones(out.shape[:-1], out.dtype)
    return PolicyStep(
        action=action,
        sample=sample,
        log_prob=jnp.sum(-0.5 * noise * noise - log_sigma - _HALF_LOG_2PI, axis=-1),
        entropy=jnp.sum(log_sigma + 0.5 + _HALF_LOG_2PI, axis=-1),
        dlogp_dout=dlogp_dout,
        dent_dout=dent_dout,
        scale=scale,
    )


# --- TD error and traces (rtrrl_spec.agent) --------------------------------------------------


def td_error(
    reward: jax.Array,
    done: jax.Array,
    value: jax.Array,
    v_prev: jax.Array,
    gamma: Number,
    reward_rate: Number = 0.0,
) -> jax.Array:
    """``δ = r − r̄ + γ (1 − done) v − v_prev``: no bootstrapping across an episode boundary."""
    not_done = 1.0 - done.astype(value.dtype)
    delta = reward - _in(reward_rate, value) + _in(gamma, value) * not_done * value - v_prev
    return delta.astype(value.dtype)


def decay_trace(trace: jax.Array, done: jax.Array, gamma_lambda: Number) -> jax.Array:
    """``γλ e``, after zeroing the traces of environments whose episode just ended."""
    reset = done.reshape(done.shape + (1,) * (trace.ndim - done.ndim))
    return _in(gamma_lambda, trace) * jnp.where(reset, jnp.zeros((), trace.dtype), trace)


# --- the optimizer (rtrrl_spec.optim, rtrrl_spec.agent.apply_update) -------------------------


def global_norm(arrays: Mapping[str, jax.Array]) -> jax.Array:
    """Euclidean norm of all entries of all arrays."""
    return jnp.sqrt(sum(jnp.sum(a * a) for a in arrays.values()))


def clip_by_global_norm(
    arrays: Mapping[str, jax.Array], max_norm: Number | None
) -> tuple[dict[str, jax.Array], jax.Array]:
    """Scale the group down to norm ``max_norm`` when it is longer; returns (arrays, norm)."""
    norm = global_norm(arrays)
    if max_norm is None:
        return dict(arrays), norm
    max_norm = _in(max_norm, norm)
    factor = max_norm / jnp.maximum(norm, max_norm)
    return {k: a * factor for k, a in arrays.items()}, norm


def _log(b: Number) -> Number:
    """``ln β``, in float64 for a Python float (``ln 0 = −inf``: the bias correction is 1)."""
    if isinstance(b, int | float):
        return math.log(b) if b > 0 else -math.inf
    return jnp.log(b)


def adam_step(
    params: Mapping[str, jax.Array],
    direction: Mapping[str, jax.Array],
    mu: Mapping[str, jax.Array],
    nu: Mapping[str, jax.Array],
    count: jax.Array,
    lr: Number,
    b1: Number,
    b2: Number,
    eps: Number,
    *,
    omb1: Number | None = None,
    omb2: Number | None = None,
    log_b1: Number | None = None,
    log_b2: Number | None = None,
) -> tuple[dict[str, jax.Array], dict[str, jax.Array], dict[str, jax.Array], jax.Array]:
    """One Adam ascent step of a parameter group; returns (params, mu, nu, count).

    The reference forms ``1 − β`` and ``1 − βᵗ`` in float64 and rounds once. Here ``1 − βᵗ``
    is ``−expm1(t ln β)``: the direct form cancels in float32 (about 1e-5 relative for
    ``β2 = 0.999`` at small ``t``, beyond the suite's optimizer tolerance). ``omb1`` /
    ``omb2`` (``1 − β``) and ``log_b1`` / ``log_b2`` (``ln β``) are for callers whose ``β`` is
    a traced float32 number: ``rtrrl_spec.numbers_of`` forms them in float64. By default they
    are formed from ``b1``, ``b2`` here (in float64 for Python floats).
    """
    like = next(iter(params.values()))
    omb1, omb2 = (1.0 - b if o is None else o for o, b in ((omb1, b1), (omb2, b2)))
    log_b1, log_b2 = (_log(b) if lg is None else lg for lg, b in ((log_b1, b1), (log_b2, b2)))
    lr, b1, b2, eps, omb1, omb2 = (_in(v, like) for v in (lr, b1, b2, eps, omb1, omb2))
    count = count + 1
    t = count.astype(like.dtype)
    bc1 = -jnp.expm1(t * _in(log_b1, like))
    bc2 = -jnp.expm1(t * _in(log_b2, like))
    new_params, new_mu, new_nu = {}, {}, {}
    for name, p in params.items():
        d = direction[name]
        m = b1 * mu[name] + omb1 * d
        v = b2 * nu[name] + omb2 * d * d
        new_params[name] = p + lr * (m / bc1) / (jnp.sqrt(v / bc2) + eps)
        new_mu[name], new_nu[name] = m, v
    return new_params, new_mu, new_nu, count


def apply_update(
    config: Config,
    agent: Mapping[str, jax.Array],
    direction: Mapping[str, jax.Array],
    *,
    numbers: Mapping[str, jax.Array] | None = None,
) -> tuple[Agent, Agent]:
    """Clip each group's ascent direction by global norm, take an Adam step, clip ``tau``.

    ``numbers``: the config's numbers (:func:`hyperparams`) where ``config`` is a structure
    (:func:`split_config`); by default those of ``config`` itself. The moments are read and
    written in the agent's layout: per parameter (canonical) or per group, flat
    (:func:`pack_moments`).
    """
    n = hyperparams(config, np.dtype(agent["W_A"].dtype).name) if numbers is None else numbers
    max_norm = n["clip_norm"] if config.clip_norm is not None else None
    lrs = {"td": n["lr_td"], "rnn": n["lr_rnn"]}
    changed: Agent = {}
    info: Agent = {}
    for group, names in rtrrl_spec.optimizer_groups(config):
        params = {k: agent[k] for k in names}
        packed = is_packed(agent, group)
        if packed:
            # The group as one flat vector (one norm, one Adam pass), from parameters 0:
            # Adam's result is then the update itself, which each parameter adds its slice
            # of (concatenating the parameters too would copy them every step).
            flat_direction = {group: flat([direction[k] for k in names])}
            clipped, norm = clip_by_global_norm(flat_direction, max_norm)
            params = {group: jnp.zeros_like(clipped[group])}
            mu, nu = {group: agent[f"mu.{group}"]}, {group: agent[f"nu.{group}"]}
        else:
            clipped, norm = clip_by_global_norm({k: direction[k] for k in names}, max_norm)
            mu = {k: agent[f"mu_{k}"] for k in names}
            nu = {k: agent[f"nu_{k}"] for k in names}
        params, mu, nu, count = adam_step(
            params,
            clipped,
            mu,
            nu,
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
        if packed:
            updates = split(params[group], [agent[k].shape for k in names])
            params = {k: agent[k] + u for k, u in zip(names, updates, strict=True)}
            changed[f"mu.{group}"], changed[f"nu.{group}"] = mu[group], nu[group]
        if "tau" in params:  # the CT-RNN's time constants only
            params["tau"] = jnp.maximum(params["tau"], n["tau_min"])
        for k in names:
            changed[k] = params[k]
            if not packed:
                changed[f"mu_{k}"], changed[f"nu_{k}"] = mu[k], nu[k]
        changed[f"count_{group}"] = count
        info[f"grad_norm_{group}"] = norm
    return changed, info


# --- one step (rtrrl_spec.agent.step_unchecked) ----------------------------------------------


def step_unchecked(
    config: Config,
    agent: Mapping[str, jax.Array],
    obs: jax.Array,
    reward: jax.Array,
    done: jax.Array,
    noise: jax.Array,
    *,
    numbers: Mapping[str, jax.Array] | None = None,
) -> tuple[Agent, jax.Array, Agent]:
    """``rtrrl_spec.agent.step_unchecked``: one step of ``B`` environments, unjitted; inputs
    already cast to the agent's float dtype (``done``: bool). ``numbers`` as for
    :func:`apply_update`."""
    dtype = agent["W_A"].dtype
    n = hyperparams(config, np.dtype(dtype).name) if numbers is None else numbers
    B = obs.shape[0]
    zero = jnp.zeros((), dtype)
    new = dict(agent)

    # 1-2. RNN input; at an episode boundary the previous action and reward are not fed.
    if config.meta_rl:
        if config.discrete:
            a_in = jax.nn.one_hot(agent["a_prev"], config.n_actions, dtype=dtype)
        else:
            a_in = agent["a_prev"]
        a_in = jnp.where(done[:, None], zero, a_in)
        r_in = jnp.where(done, zero, reward)[:, None]
        x = jnp.concatenate([obs, a_in, r_in], axis=-1)
    else:
        x = obs

    # 3. Body: features for the heads, the new body state and, when the body learns, how a
    # signal on the features projects into its parameters' gradients (J'ᵀ g).
    def reset_env(array: jax.Array) -> jax.Array:
        return jnp.where(done.reshape((B,) + (1,) * (array.ndim - 1)), zero, array)

    project: Callable[[jax.Array], Agent] | None = None
    if config.body == "ctrnn":
        W, tau = agent["W"], agent["tau"]
        h = reset_env(agent["h"])
        s = ctrnn_step(W, tau, h, x, n["dt"])
        features = new["h"] = s.h_next
        if config.trains_body:
            J_W, J_tau = reset_env(agent["J_W"]), reset_env(agent["J_tau"])
            if config.jacobian == "rflo":
                J_W, J_tau = rflo_update(J_W, J_tau, tau, h, s, n["dt"])
                project_ctrnn = project_rflo
            else:
                J_W, J_tau = rtrl_update(J_W, J_tau, W, tau, h, s, n["dt"], config.input_dim)
                project_ctrnn = project_rtrl
            new.update(J_W=J_W, J_tau=J_tau)

            def project(signal: jax.Array) -> Agent:
                grad_W, grad_tau = project_ctrnn(signal, J_W, J_tau)
                return {"W": grad_W, "tau": grad_tau}

    elif config.body == "lru":
        params = {k: agent[k] for k in rtrrl_spec.body_params(config)}
        h_re, h_im = reset_env(agent["h_re"]), reset_env(agent["h_im"])
        s_lru = lru_step(params, h_re, h_im, x)
        new["h_re"], new["h_im"] = s_lru.h_re, s_lru.h_im
        features = s_lru.y
        if config.trains_body:
            J = {k: reset_env(agent[k]) for k in LRU_SENSITIVITIES}
            J = lru_sensitivity_update(J, h_re, h_im, x, s_lru)
            new.update(J)

            def project(signal: jax.Array) -> Agent:
                return project_lru(signal, params, J, s_lru)

    else:
        features = x

    # 4. Heads, with the parameters as they were before this step's update.
    W_A, W_C, b_C = agent["W_A"], agent["W_C"], agent["b_C"]
    value = critic_value(features, W_C, b_C)
    bounds = (n["action_low"], n["action_high"]) if config.bounded else None
    pol = policy_step(config, features @ W_A, noise, bounds=bounds)
    c = pol.scale[:, None]

    # 5. Immediate gradients.
    critic_scale = jnp.ones_like(c) if config.trace == "dutch" else c
    grad = {
        "W_C": (critic_scale * features)[:, :, None],
        "b_C": critic_scale * jnp.ones((B, 1), dtype),
        "W_A": (c * features)[:, :, None] * pol.dlogp_dout[:, None, :],
    }
    entropy_grad = {"W_A": (c * features)[:, :, None] * pol.dent_dout[:, None, :]}
    if project is not None:
        B_A = agent["B_A"] if config.feedback_alignment else W_A
        B_C = agent["B_C"] if config.feedback_alignment else W_C
        signal = c * (B_C[:, 0] + n["eta_pi"] * (pol.dlogp_dout @ B_A.T))
        entropy_signal = c * (pol.dent_dout @ B_A.T)
        grad.update(project(signal))
        entropy_grad.update(project(entropy_signal))

    # 6. TD error.
    reward_rate = agent["reward_rate"] if config.reward_rate_lr is not None else 0.0
    delta = td_error(reward, done, value, agent["v_prev"], n["gamma"], reward_rate)

    # 7. Update: directions from the traces as they were, batch mean, clip, Adam, tau clip.
    def times_delta(trace: jax.Array) -> jax.Array:
        return delta.reshape((B,) + (1,) * (trace.ndim - 1)) * trace

    eta_h = n["entropy_rate"]
    per_env = {
        "W_C": times_delta(agent["e_W_C"]),
        "b_C": times_delta(agent["e_b_C"]),
        "W_A": times_delta(agent["e_W_A"]) + eta_h * entropy_grad["W_A"],
    }
    if config.trace == "dutch":
        # True-online TD(λ) correction; v̂_prev is the previous features' value under the
        # current weights.
        x_W_C, x_b_C = agent["x_W_C"], agent["x_b_C"]
        value_now = jnp.sum(x_W_C[:, :, 0] * W_C[:, 0], axis=-1) + x_b_C[:, 0] * b_C[0]
        correction = (value_now - agent["v_prev"])[:, None]
        per_env["W_C"] = per_env["W_C"] - correction[:, :, None] * x_W_C
        per_env["b_C"] = per_env["b_C"] - correction * x_b_C
    for k in rtrrl_spec.rnn_params(config):
        per_env[k] = times_delta(agent[f"e_{k}"]) + eta_h * entropy_grad[k]
    direction = {k: jnp.mean(v, axis=0) for k, v in per_env.items()}

    changed, info = apply_update(config, agent, direction, numbers=n)
    new.update(changed)
    if config.reward_rate_lr is not None:
        new["reward_rate"] = agent["reward_rate"] + n["reward_rate_lr"] * jnp.mean(delta)

    # 8. Traces: reset at the boundary, then decay and add this step's gradients.
    def decayed(name: str, gamma_lambda: str) -> jax.Array:
        return decay_trace(agent[name], done, n[gamma_lambda])

    if config.trace == "dutch":
        e_W_C, e_b_C = decayed("e_W_C", "gl_critic"), decayed("e_b_C", "gl_critic")
        inner = jnp.sum(e_W_C * grad["W_C"], axis=(1, 2)) + jnp.sum(e_b_C * grad["b_C"], axis=1)
        weight = (1.0 - n["lr_td"] * inner)[:, None]  # e_W_C was already multiplied by γλ
        new["e_W_C"] = e_W_C + weight[:, :, None] * grad["W_C"]
        new["e_b_C"] = e_b_C + weight * grad["b_C"]
        new["x_W_C"], new["x_b_C"] = grad["W_C"], grad["b_C"]
    else:
        new["e_W_C"] = decayed("e_W_C", "gl_critic") + grad["W_C"]
        new["e_b_C"] = decayed("e_b_C", "gl_critic") + grad["b_C"]
    new["e_W_A"] = decayed("e_W_A", "gl_actor") + grad["W_A"]
    for k in rtrrl_spec.rnn_params(config):
        new[f"e_{k}"] = decayed(f"e_{k}", "gl_rnn") + grad[k]

    # 9. Carry; the same dtypes as the input agent, whatever promotion happened on the way.
    new["v_prev"] = value
    new["a_prev"] = pol.action
    new = {k: new[k].astype(agent[k].dtype) for k in agent}
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


def _check(
    config: Config, agent: Mapping[str, Any], obs: Any, reward: Any, done: Any, noise: Any
) -> None:
    """:func:`rtrrl.backends.base.check_step`: the reference's checks and messages, on the
    agent's shapes and dtypes and on the inputs copied to NumPy (a few small arrays: the
    step's inputs, never the agent). Inside someone else's ``jax.jit`` the inputs are tracers
    whose values do not exist yet; there the check is skipped (tracing checks the shapes;
    :func:`make_step` is the step meant for traces)."""
    arrays = (obs, reward, done, noise, agent.get("W_A") if isinstance(agent, Mapping) else None)
    if any(isinstance(x, jax.core.Tracer) for x in arrays):
        return
    check_step(config, agent, obs, reward, done, noise)


def _step_with_numbers(
    structure: Config,
    numbers: Mapping[str, jax.Array],
    agent: Mapping[str, jax.Array],
    obs: jax.Array,
    reward: jax.Array,
    done: jax.Array,
    noise: jax.Array,
) -> tuple[Agent, jax.Array, Agent]:
    # The numbers positional: what jit traces and what a population vmaps over. Inputs are
    # cast here, since callers inside a lax.scan pass them as they come.
    dtype = agent["W_A"].dtype
    obs, reward, noise = (jnp.asarray(a).astype(dtype) for a in (obs, reward, noise))
    done = jnp.asarray(done).astype(bool)
    return step_unchecked(structure, agent, obs, reward, done, noise, numbers=numbers)


_step_jit = jax.jit(_step_with_numbers, static_argnums=0)


def step(
    config: Config,
    agent: Mapping[str, jax.Array],
    obs: jax.Array,
    reward: jax.Array,
    done: jax.Array,
    noise: jax.Array,
    *,
    check: bool = True,
) -> tuple[Agent, jax.Array, Agent]:
    """``rtrrl_spec.step`` in JAX, jitted; one compile per config structure and shapes.

    ``check`` (default): first refuse what ``rtrrl_spec.step`` refuses, with its messages
    (:func:`_check`). ``check=False``: the bare jitted step, bit for bit what it computes
    after a passed check, for loops whose inputs are known good; the fused training scan
    traces :func:`make_step`, which never checks (its agents are checked at each epoch
    boundary).
    """
    if check:
        _check(config, agent, obs, reward, done, noise)
    dtype = np.dtype(agent["W_A"].dtype).name
    return _step_jit(
        split_config(config), hyperparams(config, dtype), agent, obs, reward, done, noise
    )


def step_eager(
    config: Config,
    agent: Mapping[str, jax.Array],
    obs: jax.Array,
    reward: jax.Array,
    done: jax.Array,
    noise: jax.Array,
    *,
    check: bool = True,
) -> tuple[Agent, jax.Array, Agent]:
    """The same function as :func:`step`, run op by op under ``jax.disable_jit()``; ``check``
    as for :func:`step`."""
    if check:
        _check(config, agent, obs, reward, done, noise)
    hp = hyperparams(config, np.dtype(agent["W_A"].dtype).name)
    with jax.disable_jit():
        return _step_with_numbers(split_config(config), hp, agent, obs, reward, done, noise)


# --- loops and populations -------------------------------------------------------------------


def make_step(config: Config, dtype: str = "float32") -> Callable[..., tuple[Agent, Any, Agent]]:
    """``fn(agent, obs, reward, done, noise) -> (agent, action, info)`` for ``lax.scan``.

    Un-jitted on purpose: call it inside your own ``jax.jit`` (e.g. in the body of a
    ``lax.scan`` that also steps the environment); the numbers of ``config`` become
    constants of that trace. The agent's moments may be packed (:func:`pack_moments`).
    """
    return functools.partial(_step_with_numbers, split_config(config), hyperparams(config, dtype))


def init_population(
    config: Config, seeds: Sequence[int], batch_size: int = 1, dtype: str = "float32"
) -> Agent:
    """Agents ``rtrrl_spec.init(config, batch_size, seed)`` for each seed, stacked on a new
    leading population axis ``P = len(seeds)``."""
    dtype = _check_dtype(dtype)
    agents = [rtrrl_spec.init(config, batch_size, int(seed), dtype=dtype) for seed in seeds]
    if not agents:
        raise rtrrl_spec.SpecError("init_population needs at least one seed")
    return {k: jnp.asarray(np.stack([a[k] for a in agents])) for k in agents[0]}


def make_population_step(
    config: Config | Sequence[Config], dtype: str = "float32", jit: bool = True
) -> Callable[..., tuple[Agent, jax.Array, Agent]]:
    """A step of ``P`` independent agents: ``fn(agents, obs, reward, done, noise)``.

    Every array of ``agents`` (from :func:`init_population`) and every input has a leading
    population axis: ``obs`` is ``(P, B, obs_dim)`` and so on; the result's arrays too.
    Members share nothing: each has its own parameters, optimizer state and batch mean.

    ``config`` is one config (every member uses its numbers) or a sequence of ``P`` configs
    with one structure that differ in numbers (learning rates, discount, trace decays, ...):
    the numbers are then arrays over the population, vmapped like the agents.
    """
    per_member = not isinstance(config, Config)
    configs = list(config) if per_member else [config]
    structure = split_config(configs[0])
    hp = hyperparams(configs if per_member else configs[0], dtype)
    batched = jax.vmap(
        functools.partial(_step_with_numbers, structure),
        in_axes=(0 if per_member else None, 0, 0, 0, 0, 0),
    )

    def population_step(agents, obs, reward, done, noise):  # noqa: ANN001, ANN202
        return batched(hp, agents, obs, reward, done, noise)

    return jax.jit(population_step) if jit else population_step


@functools.lru_cache(maxsize=64)
def _population_step_cached(
    config: Config | tuple[Config, ...], dtype: str
) -> Callable[..., tuple[Agent, jax.Array, Agent]]:
    return make_population_step(config, dtype)


# --- the backend object ---------------------------------------------------------------------

_TRACED = object()  # marks, among a call's static leaves, where an array goes


@functools.lru_cache(maxsize=256)
def _compiled(fn: Callable[..., Any], treedef: Any, static: tuple[Any, ...]) -> Callable[..., Any]:
    def run(*arrays: jax.Array) -> Any:
        it = iter(arrays)
        leaves = [next(it) if leaf is _TRACED else leaf for leaf in static]
        args, kwargs = jax.tree_util.tree_unflatten(treedef, leaves)
        return fn(*args, **kwargs)

    return jax.jit(run)


def _jitted(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` under ``jax.jit`` for calls with the reference's arguments: array leaves are
    traced; every other leaf (a config, a Python number such as ``dt``, ``lr`` or
    ``input_dim``, ``None``) is static, a constant of the compiled code as it is of the
    reference's arithmetic, so ``1 − β`` is still formed from the float64 ``β``. One compile
    per new structure of arguments, shapes or static values."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))
        traced = [isinstance(x, jax.Array | np.ndarray | np.generic) for x in leaves]
        static = tuple(_TRACED if t else x for x, t in zip(leaves, traced, strict=True))
        arrays = [x for x, t in zip(leaves, traced, strict=True) if t]
        return _compiled(fn, treedef, static)(*arrays)

    return call


def _to_jax(x: Any) -> jax.Array:
    array = np.asarray(x)
    if array.dtype.itemsize == 8 and array.dtype.kind in "fiuc" and not x64_enabled():
        raise Float64DisabledError(
            f"from_numpy got a {array.dtype} array of shape {array.shape}. {_X64_HELP}"
        )
    # device_put, not jnp.array: jnp.array compiles a copy kernel per new shape (≈ 10 ms on
    # CPU). On CPU device_put aliases the NumPy buffer, so it gets a private copy.
    return jax.device_put(np.array(array, copy=True))


def _to_numpy(x: Any) -> np.ndarray:
    return np.array(x, copy=True)


class JaxBackend(BackendBase):
    """RTRRL in JAX: pure functions over pytree agents, jitted.

    Beyond the protocol: :meth:`step_variants` (``"jit"`` and ``"eager"``, both checked by the
    conformance suite), :meth:`population_step` / :func:`make_population_step` and
    :func:`init_population` for populations of independent agents. :meth:`step_functions`
    (from :class:`BackendBase`) returns this module's translations of the spec's functions.
    """

    name = "jax"

    @property
    def supported_dtypes(self) -> tuple[str, ...]:  # type: ignore[override]
        """``("float32", "float64")`` when x64 is enabled, else ``("float32",)``."""
        return ("float32", "float64") if x64_enabled() else ("float32",)

    def version(self) -> str:
        return jax.__version__

    def device(self) -> str:
        dev = jax.devices()[0]
        if dev.platform == "cpu":
            return "cpu"
        return f"{'cuda' if dev.platform == 'gpu' else dev.platform}:{dev.id}"

    def to_numpy(self, tree: Any) -> Any:
        return map_tree(_to_numpy, tree)

    def from_numpy(self, tree: Any) -> Any:
        """NumPy arrays to JAX arrays with the same dtype; 64-bit arrays need x64 enabled."""
        return map_tree(_to_jax, tree)

    def init(
        self, config: Config, batch_size: int, seed: int, dtype: str = "float32"
    ) -> dict[str, jax.Array]:
        # The reference's numbers, so that every backend starts from the same agent.
        return self.from_numpy(rtrrl_spec.init(config, batch_size, seed, dtype=_check_dtype(dtype)))

    def step(
        self,
        config: Config,
        agent: dict[str, jax.Array],
        obs: Any,
        reward: Any,
        done: Any,
        noise: Any,
        *,
        check: bool = True,
    ) -> tuple[dict[str, jax.Array], jax.Array, dict[str, jax.Array]]:
        """:func:`step`: checked like ``rtrrl_spec.step`` unless ``check=False``."""
        return step(config, agent, obs, reward, done, noise, check=check)

    def step_variants(self) -> dict[str, Callable[..., Any]]:
        """``{"jit": step, "eager": step_eager}``: one function, compiled or op by op."""
        return {"jit": step, "eager": step_eager}

    def step_functions(self, jit: bool = True) -> dict[str, Callable[..., Any]]:
        """This module's translation of each function of ``rtrrl_spec.STEP_FUNCTIONS``.

        Jitted by default (``jit=False``: the plain functions, op by op): a checked example
        with new shapes then compiles each function once instead of each of its primitives.
        Arrays are traced, everything else is static (:func:`_jitted`); ``step`` is
        :func:`step` itself, which jits on its own.
        """
        plain = super().step_functions()
        if not jit:
            return plain
        return {k: fn if k == "step" else _jitted(fn) for k, fn in plain.items()}

    def rng(self, seed: int) -> jax.Array:
        return jax.random.key(seed)

    def rng_state(self, rng: jax.Array) -> dict[str, np.ndarray]:
        """``{"key_data": uint32 array}``: the key's raw data (``jax.random.key_data``)."""
        return {"key_data": np.asarray(jax.random.key_data(rng))}

    def rng_from_state(self, state: Mapping[str, np.ndarray]) -> jax.Array:
        """The key :meth:`rng_state` saved, with JAX's default implementation (threefry
        unless ``jax_default_prng_impl`` says otherwise, as for :meth:`rng`)."""
        return jax.random.wrap_key_data(jnp.asarray(np.asarray(state["key_data"])))

    def draw_noise(
        self, config: Config, batch_size: int, rng: jax.Array, dtype: str = "float32"
    ) -> tuple[jax.Array, jax.Array]:
        """Uniform noise in the open interval (0, 1) (discrete) or standard normal."""
        dtype = _check_dtype(dtype)
        rng, key = jax.random.split(rng)
        shape = rtrrl_spec.noise_shape(config, batch_size)
        if config.discrete:
            # uniform draws from [minval, maxval): tiny keeps log(-log u) finite; the minimum
            # guards the upper end against rounding.
            info = np.finfo(dtype)
            u = jax.random.uniform(key, shape, dtype, minval=float(info.tiny), maxval=1.0)
            below_one = float(np.nextafter(np.asarray(1.0, dtype), np.asarray(0.0, dtype)))
            return jnp.minimum(u, below_one), rng
        return jax.random.normal(key, shape, dtype), rng

    def population_step(
        self,
        config: Config | Sequence[Config],
        agents: dict[str, jax.Array],
        obs: Any,
        reward: Any,
        done: Any,
        noise: Any,
    ) -> tuple[dict[str, jax.Array], jax.Array, dict[str, jax.Array]]:
        """One step of a population (see :func:`make_population_step`), jitted and cached."""
        dtype = np.dtype(agents["W_A"].dtype).name
        key = (tuple(config) if not isinstance(config, Config) else config, dtype)
        return _population_step_cached(*key)(agents, obs, reward, done, noise)

    def init_population(
        self, config: Config, seeds: Sequence[int], batch_size: int = 1, dtype: str = "float32"
    ) -> dict[str, jax.Array]:
        """See :func:`init_population`."""
        return init_population(config, seeds, batch_size, dtype)
