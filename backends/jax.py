r"""The ``jax`` backend: the RTRRL step as pure, jitted, vmapped JAX functions.

Installed as ``rtrrl.backends.jax``; select it with ``rtrrl.use("jax")``. The math is the
reference's (:mod:`rtrrl_spec.agent`, :mod:`rtrrl_spec.ctrnn`, :mod:`rtrrl_spec.lru`,
:mod:`rtrrl_spec.heads`, :mod:`rtrrl_spec.optim`); this module only says how it is laid out in
JAX:

- An agent is a flat ``dict[str, jax.Array]`` in the canonical layout (``rtrrl_spec.layout``),
  which is a pytree, so it passes through ``jit``, ``vmap`` and ``lax.scan`` as is.
- :func:`env_step` is written for ONE environment (no batch axis); :func:`step_core`
  ``jax.vmap``\ s it over the ``B`` environments, averages the per-environment update
  directions over the batch and applies the shared optimizer once.
- The config is split in two (:func:`split_config`): its *structure* (sizes, modes: what
  changes the computation graph) is a static argument of ``jax.jit``, and its *numbers*
  (discount, trace decays, learning rates, Adam constants, clip norm, bounds, ``dt``,
  ``tau_min``) are a small pytree of traced scalars. Two configs that differ only in numbers
  share one compiled step, and a population can give every member its own numbers
  (``jax.vmap`` over them, see :func:`make_population_step`).
- The optimizer is the spec's clip + Adam written out in ``jnp`` on the canonical arrays
  (``mu_<param>``, ``nu_<param>``, ``count_<group>``). optax's ``clip_by_global_norm`` +
  ``scale_by_adam`` compute the same function but not the same float32 numbers (its bias
  correction ``1 − βᵗ`` cancels in float32); ``docs/backends/jax.md`` has the comparison.

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
from rtrrl.backends.base import BackendBase, map_tree
from rtrrl_spec import Config
from rtrrl_spec.config import structure_of
from rtrrl_spec.lru import LRU_SENSITIVITIES

__all__ = [
    "Float64DisabledError",
    "JaxBackend",
    "env_step",
    "hyperparams",
    "init_population",
    "make_population_step",
    "make_step",
    "pack_moments",
    "split_config",
    "step",
    "step_core",
    "step_eager",
    "unpack_moments",
    "x64_enabled",
]

Agent = dict[str, jax.Array]
HyperParams = dict[str, jax.Array]

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

# The config's structure (static) and numbers (traced): one definition for every backend.
split_config = structure_of


def _hyperparams_numpy(config: Config, dtype: str) -> dict[str, np.ndarray]:
    # Products are formed in Python (float64) and rounded once, as the reference does when it
    # multiplies a float32 array by the Python float `gamma * lambda`.
    c = config
    values: dict[str, Any] = {
        "dt": c.dt,
        "gamma": c.gamma,
        "gl_actor": c.gamma * c.lambda_actor,
        "gl_critic": c.gamma * c.lambda_critic,
        "gl_rnn": c.gamma * c.lambda_rnn,
        "eta_pi": c.eta_pi,
        "entropy_rate": c.entropy_rate,
        "lr_td": c.lr_td,
        "lr_rnn": c.lr_rnn,
        "b1": c.adam_b1,
        "b2": c.adam_b2,
        # 1 − β and ln β formed in float64 (as the reference does), rounded once.
        "omb1": 1.0 - c.adam_b1,
        "omb2": 1.0 - c.adam_b2,
        "log_b1": math.log(c.adam_b1) if c.adam_b1 > 0 else -math.inf,
        "log_b2": math.log(c.adam_b2) if c.adam_b2 > 0 else -math.inf,
        "eps": c.adam_eps,
        "tau_min": c.tau_min,
        "clip_norm": c.clip_norm if c.clip_norm is not None else 0.0,
        "reward_rate_lr": c.reward_rate_lr if c.reward_rate_lr is not None else 0.0,
    }
    if c.bounded:
        values["action_low"] = c.action_low
        values["action_high"] = c.action_high
    return {k: np.asarray(v, dtype=dtype) for k, v in values.items()}


@functools.lru_cache(maxsize=1024)
def _hyperparams_cached(config: Config, dtype: str) -> HyperParams:
    # Evaluated eagerly even when first reached inside someone's jit trace, so the cache never
    # holds a tracer.
    with jax.ensure_compile_time_eval():
        return {k: jnp.asarray(v) for k, v in _hyperparams_numpy(config, dtype).items()}


def hyperparams(config: Config | Sequence[Config], dtype: str = "float32") -> HyperParams:
    """The numbers of ``config`` as a dict of ``dtype`` scalars (the traced half of a config).

    Given a sequence of configs with one structure (:func:`split_config`), every entry gets
    a leading population axis, for :func:`make_population_step`.
    """
    dtype = _check_dtype(dtype)
    if isinstance(config, Config):
        return _hyperparams_cached(config, dtype)
    configs = list(config)
    if not configs:
        raise rtrrl_spec.SpecError("hyperparams needs at least one config")
    structures = {split_config(c) for c in configs}
    if len(structures) != 1:
        raise rtrrl_spec.SpecError(
            "a population's configs must share their structure (sizes and modes) and differ "
            "only in numbers (learning rates, discount, ...); got several structures"
        )
    rows = [_hyperparams_numpy(c, dtype) for c in configs]
    return {k: jnp.asarray(np.stack([r[k] for r in rows])) for k in rows[0]}


# --- one environment ------------------------------------------------------------------------


def _policy(s: Config, hp: HyperParams, out: jax.Array, noise: jax.Array) -> dict[str, jax.Array]:
    """``rtrrl_spec.heads.policy_step`` for one environment (``out`` is ``(K,)``)."""
    dtype = out.dtype
    if s.discrete:
        shifted = out - jnp.max(out)
        log_p = shifted - jnp.log(jnp.sum(jnp.exp(shifted)))
        p = jnp.exp(log_p)
        action = jnp.argmax(out - jnp.log(-jnp.log(noise))).astype(jnp.int32)
        entropy = -jnp.sum(p * log_p)
        return {
            "action": action,
            "sample": action,
            "log_prob": log_p[action],
            "entropy": entropy,
            "dlogp": jax.nn.one_hot(action, out.shape[-1], dtype=dtype) - p,
            "dent": -p * (log_p + entropy),
            "scale": jnp.ones((), dtype),
        }
    D = int(s.action_dim)  # type: ignore[arg-type]
    m, z = out[:D], out[D:]

    def sigmoid(v: jax.Array) -> jax.Array:
        return 0.5 * (1.0 + jnp.tanh(0.5 * v))  # the reference's form, stable for large |v|

    if s.bounded:
        lo, hi = hp["action_low"], hp["action_high"]
        sig_m = sigmoid(m)
        mu = lo + (hi - lo) * sig_m
        dmu_dm = (hi - lo) * sig_m * (1.0 - sig_m)
    else:
        mu, dmu_dm = m, jnp.ones_like(m)
    sig_s = sigmoid(z)
    pre_sigma = -2.0 + 4.0 * sig_s
    sigma = jnp.logaddexp(pre_sigma, 0.0)  # softplus
    dsigma_ds = sigmoid(pre_sigma) * 4.0 * sig_s * (1.0 - sig_s)
    sample = mu + sigma * noise
    action = jnp.clip(sample, lo, hi) if s.bounded else sample
    log_sigma = jnp.log(sigma)
    return {
        "action": action,
        "sample": sample,
        "log_prob": jnp.sum(-0.5 * noise * noise - log_sigma - _HALF_LOG_2PI),
        "entropy": jnp.sum(log_sigma + 0.5 + _HALF_LOG_2PI),
        "dlogp": jnp.concatenate(
            [noise / sigma * dmu_dm, (noise * noise - 1.0) / sigma * dsigma_ds]
        ),
        "dent": jnp.concatenate([jnp.zeros_like(m), dsigma_ds / sigma]),
        "scale": jnp.minimum(jnp.mean(sigma), 1.0) if s.var_scaling else jnp.ones((), dtype),
    }


def _cmul(
    a_re: jax.Array, a_im: jax.Array, b_re: jax.Array, b_im: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """``(a_re + i a_im)(b_re + i b_im)`` as a (real, imaginary) pair (``rtrrl_spec.lru``)."""
    return a_re * b_re - a_im * b_im, a_re * b_im + a_im * b_re


def _project_ctrnn(
    jacobian: str, J_W: jax.Array, J_tau: jax.Array, signal: jax.Array
) -> dict[str, jax.Array]:
    """``J'ᵀ g`` for the CT-RNN (``rtrrl_spec.ctrnn.project_rflo`` / ``project_rtrl``)."""
    if jacobian == "rflo":
        return {"W": signal[:, None] * J_W, "tau": signal * J_tau}
    return {"W": jnp.einsum("i,ijk->jk", signal, J_W), "tau": signal @ J_tau}


def _lru_body(
    s: Config,
    shared: Mapping[str, jax.Array],
    env: Mapping[str, jax.Array],
    x: jax.Array,
    done: jax.Array,
) -> tuple[jax.Array, Agent, Callable[[jax.Array], Agent] | None]:
    """The LRU step for ONE environment (``rtrrl_spec.lru``), in real arithmetic on
    (re, im) pairs so that the agent's float dtype is kept.

    Returns the features ``y = Re(C h')``, the new body state (``h_re``, ``h_im`` and, when the
    body learns, the sensitivities ``J_*``) and the projection ``signal -> {param: gradient}``
    (``None`` for a frozen body).
    """
    zero = jnp.zeros((), shared["W_A"].dtype)
    log_nu, log_theta = shared["log_nu"], shared["log_theta"]
    C_re, C_im = shared["C_re"], shared["C_im"]
    h_re = jnp.where(done, zero, env["h_re"])
    h_im = jnp.where(done, zero, env["h_im"])
    # lru_step: h' = λ ⊙ h + exp(γ) ⊙ (B x), y = Re(C h').
    modulus = jnp.exp(-jnp.exp(log_nu))
    phase = jnp.exp(log_theta)
    lam_re, lam_im = modulus * jnp.cos(phase), modulus * jnp.sin(phase)
    norm = jnp.exp(shared["log_gamma"])
    u_re, u_im = shared["B_re"] @ x, shared["B_im"] @ x
    rec_re, rec_im = _cmul(lam_re, lam_im, h_re, h_im)
    h_next_re = rec_re + norm * u_re
    h_next_im = rec_im + norm * u_im
    y = C_re @ h_next_re - C_im @ h_next_im
    state: Agent = {"h_re": h_next_re, "h_im": h_next_im}
    if not s.trains_body:
        return y, state, None

    # lru_sensitivity_update, from the sensitivities at h (after the episode reset).
    J = {k: jnp.where(done, zero, env[k]) for k in LRU_SENSITIVITIES}
    rec_re, rec_im = _cmul(lam_re, lam_im, J["J_lam_re"], J["J_lam_im"])
    J["J_lam_re"], J["J_lam_im"] = rec_re + h_re, rec_im + h_im
    rec_re, rec_im = _cmul(lam_re, lam_im, J["J_gam_re"], J["J_gam_im"])
    J["J_gam_re"], J["J_gam_im"] = rec_re + norm * u_re, rec_im + norm * u_im
    rec_re, rec_im = _cmul(lam_re[:, None], lam_im[:, None], J["J_in_re"], J["J_in_im"])
    J["J_in_re"] = rec_re + norm[:, None] * x[None, :]
    J["J_in_im"] = rec_im
    state.update(J)

    def project(signal: jax.Array) -> Agent:
        # project_lru: s · Re(C z) = Re(Σ_k w_k z_k) with w = Cᵀ s.
        w_re, w_im = signal @ C_re, signal @ C_im
        a_re, a_im = _cmul(w_re, w_im, J["J_lam_re"], J["J_lam_im"])
        a_re, a_im = _cmul(a_re, a_im, lam_re, lam_im)
        g_re, _ = _cmul(w_re, w_im, J["J_gam_re"], J["J_gam_im"])
        b_re, b_im = _cmul(w_re[:, None], w_im[:, None], J["J_in_re"], J["J_in_im"])
        return {
            "log_nu": -a_re * jnp.exp(log_nu),
            "log_theta": -a_im * jnp.exp(log_theta),
            "log_gamma": g_re,
            "B_re": b_re,
            "B_im": -b_im,
            "C_re": signal[:, None] * h_next_re[None, :],
            "C_im": -signal[:, None] * h_next_im[None, :],
        }

    return y, state, project


def env_step(
    s: Config,
    hp: HyperParams,
    shared: Mapping[str, jax.Array],
    env: Mapping[str, jax.Array],
    obs: jax.Array,
    reward: jax.Array,
    done: jax.Array,
    noise: jax.Array,
) -> tuple[Agent, Agent, Agent]:
    """Steps 1-6 and 8-9 of ``rtrrl_spec.agent`` for ONE environment (no batch axis).

    Args:
        s: the config's structure (:func:`split_config`), static.
        hp: its numbers (:func:`hyperparams`).
        shared: parameters and feedback matrices (as before this step's update).
        env: this environment's state (``h`` or ``h_re``/``h_im``, ``J_*``, ``e_*``, ``x_*``,
            ``v_prev``, ``a_prev``), each without its leading ``B`` axis.
        obs, reward, done, noise: this environment's inputs, ``(obs_dim,)``, ``()``, ``()``,
            ``(K,)`` or ``(D,)``.

    Returns:
        ``(new_env, direction, info)``: the new per-environment state, this environment's
        ascent direction ``δ e + η_H ∇H`` (averaged over the batch by the caller) and its
        ``info`` entries. ``done`` is only ever used through ``jnp.where``.
    """
    dtype = shared["W_A"].dtype
    zero = jnp.zeros((), dtype)
    new: Agent = {}

    # 1-2. RNN input; at an episode boundary the previous action and reward are not fed.
    if s.meta_rl:
        if s.discrete:
            a_in = jax.nn.one_hot(env["a_prev"], s.n_actions, dtype=dtype)
        else:
            a_in = env["a_prev"]
        a_in = jnp.where(done, zero, a_in)
        r_in = jnp.where(done, zero, reward)[None]
        x = jnp.concatenate([obs, a_in, r_in])
    else:
        x = obs

    # 3. Body: features for the heads, the new body state and, when the body learns, how a
    # signal on the features projects into its parameters' gradients (J'ᵀ g). A frozen body
    # (freeze_rnn) only steps h.
    project: Callable[[jax.Array], Agent] | None = None
    if s.body == "ctrnn":
        # CT-RNN Euler step and Jacobian trace (rtrrl_spec.ctrnn).
        W, tau, dt = shared["W"], shared["tau"], hp["dt"]
        h = jnp.where(done, zero, env["h"])
        zeta = jnp.concatenate([x, h, jnp.ones((1,), dtype)])
        phi = jnp.tanh(W @ zeta)
        dphi = 1.0 - phi * phi
        h_next = h + dt * (phi - h) / tau
        new["h"] = f = h_next
    elif s.body == "lru":
        f, body_state, project = _lru_body(s, shared, env, x, done)
        new.update(body_state)
    else:
        f = x
    if s.body == "ctrnn" and s.trains_body:
        J_W = jnp.where(done, zero, env["J_W"])
        J_tau = jnp.where(done, zero, env["J_tau"])
        if s.jacobian == "rflo":
            # Local trace: one row per neuron, never the (N, N, Z) RTRL tensor.
            rate = dt / tau
            J_W = (1.0 - rate)[:, None] * J_W + rate[:, None] * (dphi[:, None] * zeta[None, :])
            J_tau = (1.0 - rate) * J_tau + dt * (h - phi) / (tau * tau)
        else:
            N, n_in = s.n_hidden, s.input_dim
            eye = jnp.eye(N, dtype=dtype)
            M = eye + dt * (dphi[:, None] * W[:, n_in : n_in + N] - eye) / tau[:, None]
            idx = jnp.arange(N)
            J_W = jnp.einsum("il,ljk->ijk", M, J_W)
            J_W = J_W.at[idx, idx, :].add(dt * dphi[:, None] * zeta[None, :] / tau[:, None])
            J_tau = (M @ J_tau).at[idx, idx].add(dt * (h - phi) / (tau * tau))
        new.update(J_W=J_W, J_tau=J_tau)
        project = functools.partial(_project_ctrnn, s.jacobian, J_W, J_tau)

    # 4. Heads, with the parameters as they were before this step's update.
    W_A, W_C, b_C = shared["W_A"], shared["W_C"], shared["b_C"]
    value = f @ W_C[:, 0] + b_C[0]
    pol = _policy(s, hp, f @ W_A, noise)
    c = pol["scale"]

    # 5. Immediate gradients (rtrrl_spec.agent, step 5).
    critic_scale = jnp.ones((), dtype) if s.trace == "dutch" else c
    grad = {
        "W_C": (critic_scale * f)[:, None],
        "b_C": critic_scale * jnp.ones((1,), dtype),
        "W_A": (c * f)[:, None] * pol["dlogp"][None, :],
    }
    ent_grad = {"W_A": (c * f)[:, None] * pol["dent"][None, :]}
    if project is not None:
        B_A = shared["B_A"] if s.feedback_alignment else W_A
        B_C = shared["B_C"] if s.feedback_alignment else W_C
        signal = c * (B_C[:, 0] + hp["eta_pi"] * (B_A @ pol["dlogp"]))
        ent_signal = c * (B_A @ pol["dent"])
        grad.update(project(signal))
        ent_grad.update(project(ent_signal))

    # 6. TD error (rtrrl_spec.agent.td_error).
    reward_rate = shared["reward_rate"] if s.reward_rate_lr is not None else 0.0
    not_done = 1.0 - done.astype(dtype)
    delta = reward - reward_rate + hp["gamma"] * not_done * value - env["v_prev"]

    # 7. This environment's ascent direction, from the traces as they were.
    eta_h = hp["entropy_rate"]
    direction = {
        "W_C": delta * env["e_W_C"],
        "b_C": delta * env["e_b_C"],
        "W_A": delta * env["e_W_A"] + eta_h * ent_grad["W_A"],
    }
    if s.trace == "dutch":
        value_now = jnp.sum(env["x_W_C"][:, 0] * W_C[:, 0]) + env["x_b_C"][0] * b_C[0]
        correction = value_now - env["v_prev"]
        direction["W_C"] = direction["W_C"] - correction * env["x_W_C"]
        direction["b_C"] = direction["b_C"] - correction * env["x_b_C"]
    for k in rtrrl_spec.rnn_params(s):
        direction[k] = delta * env[f"e_{k}"] + eta_h * ent_grad[k]

    # 8. Traces: reset at the boundary, then decay and add this step's gradients.
    def decayed(name: str, gamma_lambda: jax.Array) -> jax.Array:
        return gamma_lambda * jnp.where(done, zero, env[name])

    if s.trace == "dutch":
        e_W_C = decayed("e_W_C", hp["gl_critic"])
        e_b_C = decayed("e_b_C", hp["gl_critic"])
        inner = jnp.sum(e_W_C * grad["W_C"]) + jnp.sum(e_b_C * grad["b_C"])
        weight = 1.0 - hp["lr_td"] * inner
        new["e_W_C"] = e_W_C + weight * grad["W_C"]
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
    new["a_prev"] = pol["action"]
    info = {
        "td_error": delta,
        "value": value,
        "log_prob": pol["log_prob"],
        "entropy": pol["entropy"],
        "sample": pol["sample"],
        "features": f,
        "action": pol["action"],
    }
    return new, direction, info


# --- the batch: vmap, batch mean, optimizer -------------------------------------------------


def _bias_correction(log_b: jax.Array, t: jax.Array) -> jax.Array:
    """``1 − βᵗ`` as ``−expm1(t ln β)``: without the cancellation of ``1 − βᵗ`` in float32.

    The reference forms ``1 − βᵗ`` in float64 and rounds once; in float32 the direct form
    loses about 1e-5 relative for ``β2 = 0.999`` at small ``t`` (what optax computes when x64
    is off), which the conformance suite's optimizer tolerance rightly rejects.
    """
    return -jnp.expm1(t * log_b)


def _flat(arrays: Sequence[jax.Array]) -> jax.Array:
    """The arrays raveled and concatenated (one group's flat vector)."""
    return jnp.concatenate([jnp.reshape(a, (-1,)) for a in arrays])


def _split(flat: jax.Array, shapes: Sequence[tuple[int, ...]]) -> list[jax.Array]:
    """The inverse of :func:`_flat`: consecutive slices of ``flat`` in the given shapes."""
    parts, offset = [], 0
    for shape in shapes:
        size = int(np.prod(shape, dtype=np.int64))
        parts.append(jnp.reshape(flat[offset : offset + size], shape))
        offset += size
    return parts


def pack_moments(s: Config, agent: Mapping[str, jax.Array]) -> Agent:
    """The agent with each group's Adam moments as one flat vector: ``mu_<p>`` / ``nu_<p>``
    for the group's parameters replaced by ``mu.<group>`` / ``nu.<group>`` (concatenated
    flat, in ``rtrrl_spec.optimizer_groups`` order). :func:`apply_update` takes either layout.

    For loops that run many steps (the fused training epoch): Adam is then one elementwise
    pass per group instead of one per parameter, fewer and larger kernels. The arithmetic is
    the same elementwise operations; only how XLA fuses them may change the last bit.
    """
    packed = dict(agent)
    for group, names in rtrrl_spec.optimizer_groups(s):
        for moment in ("mu", "nu"):
            packed[f"{moment}.{group}"] = _flat([packed.pop(f"{moment}_{k}") for k in names])
    return packed


def unpack_moments(s: Config, agent: Mapping[str, jax.Array]) -> Agent:
    """The inverse of :func:`pack_moments`: the canonical layout again."""
    unpacked = dict(agent)
    for group, names in rtrrl_spec.optimizer_groups(s):
        for moment in ("mu", "nu"):
            parts = _split(unpacked.pop(f"{moment}.{group}"), [agent[k].shape for k in names])
            unpacked.update({f"{moment}_{k}": p for k, p in zip(names, parts, strict=True)})
    return unpacked


def apply_update(
    s: Config, hp: HyperParams, agent: Mapping[str, jax.Array], direction: Mapping[str, jax.Array]
) -> tuple[Agent, Agent]:
    """``rtrrl_spec.apply_update``: per group clip by global norm, Adam (ascent), then
    ``tau ≥ tau_min``; written out rather than taken from optax (``docs/backends/jax.md``).

    The moments are read and written in the agent's layout: per parameter (canonical) or per
    group, flat (:func:`pack_moments`)."""
    changed: Agent = {}
    info: Agent = {}
    lrs = {"td": hp["lr_td"], "rnn": hp["lr_rnn"]}
    for group, names in rtrrl_spec.optimizer_groups(s):
        lr = lrs[group]
        grads = {k: direction[k] for k in names}
        norm = jnp.sqrt(sum(jnp.sum(g * g) for g in grads.values()))
        packed = f"mu.{group}" in agent
        if packed:
            grads = {group: _flat([grads[k] for k in names])}
        if s.clip_norm is not None:
            factor = hp["clip_norm"] / jnp.maximum(norm, hp["clip_norm"])
            grads = {k: g * factor for k, g in grads.items()}
        count = agent[f"count_{group}"] + 1
        t = count.astype(norm.dtype)
        bc1 = _bias_correction(hp["log_b1"], t)
        bc2 = _bias_correction(hp["log_b2"], t)
        steps: Agent = {}
        sep = "." if packed else "_"
        for k, g in grads.items():
            m = hp["b1"] * agent[f"mu{sep}{k}"] + hp["omb1"] * g
            v = hp["b2"] * agent[f"nu{sep}{k}"] + hp["omb2"] * g * g
            steps[k] = lr * (m / bc1) / (jnp.sqrt(v / bc2) + hp["eps"])
            changed[f"mu{sep}{k}"], changed[f"nu{sep}{k}"] = m, v
        if packed:
            parts = _split(steps[group], [agent[k].shape for k in names])
            steps = dict(zip(names, parts, strict=True))
        for k in names:
            changed[k] = agent[k] + steps[k]
        if "tau" in names:  # the CT-RNN's time constants only
            changed["tau"] = jnp.maximum(changed["tau"], hp["tau_min"])
        changed[f"count_{group}"] = count
        info[f"grad_norm_{group}"] = norm
    return changed, info


@functools.lru_cache(maxsize=1024)
def _env_names(s: Config) -> tuple[str, ...]:
    return tuple(k for k, v in rtrrl_spec.layout(s, 1).items() if v.group == "env")


def step_core(
    s: Config,
    hp: HyperParams,
    agent: Mapping[str, jax.Array],
    obs: jax.Array,
    reward: jax.Array,
    done: jax.Array,
    noise: jax.Array,
) -> tuple[Agent, jax.Array, Agent]:
    """One step of ``B`` environments: :func:`env_step` vmapped, batch mean, optimizer.

    ``s`` is a config structure (:func:`split_config`, static) and ``hp`` its numbers
    (:func:`hyperparams`); :func:`step` is the jitted form with an ordinary config.
    """
    dtype = agent["W_A"].dtype
    obs, reward, noise = obs.astype(dtype), reward.astype(dtype), noise.astype(dtype)
    done = done.astype(bool)
    env_names = _env_names(s)
    env = {k: agent[k] for k in env_names}
    shared = {k: v for k, v in agent.items() if k not in env}
    new_env, per_env, env_info = jax.vmap(
        functools.partial(env_step, s), in_axes=(None, None, 0, 0, 0, 0, 0)
    )(hp, shared, env, obs, reward, done, noise)
    direction = {k: jnp.mean(v, axis=0) for k, v in per_env.items()}
    changed, info = apply_update(s, hp, agent, direction)
    new = dict(agent)
    new.update(new_env)
    new.update(changed)
    if s.reward_rate_lr is not None:
        new["reward_rate"] = agent["reward_rate"] + hp["reward_rate_lr"] * jnp.mean(
            env_info["td_error"]
        )
    # Same dtypes as the input agent, whatever promotion happened on the way.
    new = {k: new[k].astype(agent[k].dtype) for k in agent}
    action = env_info.pop("action")
    info.update(env_info)
    for k, v in direction.items():
        info[f"direction.{k}"] = v
        info[f"update.{k}"] = new[k] - agent[k]
    return new, action, info


_step_core_jit = jax.jit(step_core, static_argnums=0)


def step(
    config: Config,
    agent: Mapping[str, jax.Array],
    obs: jax.Array,
    reward: jax.Array,
    done: jax.Array,
    noise: jax.Array,
) -> tuple[Agent, jax.Array, Agent]:
    """``rtrrl_spec.step`` in JAX, jitted; one compile per config structure and shapes."""
    dtype = np.dtype(agent["W_A"].dtype).name
    return _step_core_jit(
        split_config(config), hyperparams(config, dtype), agent, obs, reward, done, noise
    )


def step_eager(
    config: Config,
    agent: Mapping[str, jax.Array],
    obs: jax.Array,
    reward: jax.Array,
    done: jax.Array,
    noise: jax.Array,
) -> tuple[Agent, jax.Array, Agent]:
    """The same function as :func:`step`, run op by op under ``jax.disable_jit()``."""
    dtype = np.dtype(agent["W_A"].dtype).name
    hp = hyperparams(config, dtype)
    with jax.disable_jit():
        return step_core(
            split_config(config),
            hp,
            agent,
            jnp.asarray(obs),
            jnp.asarray(reward),
            jnp.asarray(done),
            jnp.asarray(noise),
        )


def make_step(config: Config, dtype: str = "float32") -> Callable[..., tuple[Agent, Any, Agent]]:
    """``fn(agent, obs, reward, done, noise) -> (agent, action, info)`` for ``lax.scan``.

    Un-jitted on purpose: call it inside your own ``jax.jit`` (e.g. in the body of a
    ``lax.scan`` that also steps the environment); the numbers of ``config`` become
    constants of that trace.
    """
    s, hp = split_config(config), hyperparams(config, dtype)
    return functools.partial(step_core, s, hp)


# --- populations ----------------------------------------------------------------------------


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
    s = split_config(configs[0])
    hp = hyperparams(configs if per_member else configs[0], dtype)
    batched = jax.vmap(
        functools.partial(step_core, s), in_axes=(0 if per_member else None, 0, 0, 0, 0, 0)
    )

    def population_step(agents, obs, reward, done, noise):  # noqa: ANN001, ANN202
        return batched(hp, agents, obs, reward, done, noise)

    return jax.jit(population_step) if jit else population_step


# --- the backend object ---------------------------------------------------------------------


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
    """RTRRL in JAX: pure functions over pytree agents, jitted and vmapped.

    Beyond the protocol: :meth:`step_variants` (``"jit"`` and ``"eager"``, both checked by the
    conformance suite), :meth:`population_step` / :func:`make_population_step` and
    :func:`init_population` for populations of independent agents.
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
    ) -> tuple[dict[str, jax.Array], jax.Array, dict[str, jax.Array]]:
        return step(config, agent, obs, reward, done, noise)

    def step_variants(self) -> dict[str, Callable[..., Any]]:
        """``{"jit": step, "eager": step_eager}``: one function, compiled or op by op."""
        return {"jit": step, "eager": step_eager}

    def rng(self, seed: int) -> jax.Array:
        return jax.random.key(seed)

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


@functools.lru_cache(maxsize=64)
def _population_step_cached(
    config: Config | tuple[Config, ...], dtype: str
) -> Callable[..., tuple[Agent, jax.Array, Agent]]:
    return make_population_step(config, dtype)
