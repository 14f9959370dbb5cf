"""The file to copy when porting rtrrl: the spec's step functions in one module, then a backend.

Porting to a framework is: copy this file into your package, translate each function to your
framework's arrays (same name, same positional parameters, same return structure), and run the
conformance suite against it (``docs/porting.md``)::

    pytest --pyargs rtrrl.conformance --backend rtrrl_mybackend:Backend

The functions are those of :data:`rtrrl_spec.STEP_FUNCTIONS`, in that order, written as the
reference's (``rtrrl_spec/ctrnn.py``, ``lru.py``, ``heads.py``, ``agent.py``, ``optim.py``)
with one difference: every NumPy call here has a direct counterpart in ``jax.numpy``, ``torch``
and ``keras.ops`` (no in-place or indexed assignment, no ``take_along_axis``), so each line
translates to one line. As it stands the file is a complete NumPy backend that passes the
suite; ``tests/test_porting.py`` installs a copy of it as a package and checks exactly that.

:class:`~rtrrl.backends.base.BackendBase` gives ``step_functions()`` from this module's
functions of the spec's names, which is how the suite finds your translations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

import rtrrl_spec
from rtrrl.backends.base import BackendBase, map_tree
from rtrrl.backends.numpy import numpy_rng_from_state, numpy_rng_state
from rtrrl_spec import Config, body_params, optimizer_groups, rnn_params
from rtrrl_spec.ctrnn import CTRNNStep
from rtrrl_spec.heads import PolicyStep
from rtrrl_spec.lru import LRU_SENSITIVITIES, LRUStep

__all__ = ["Backend", *rtrrl_spec.STEP_FUNCTIONS]

Array = np.ndarray  # your framework's array type
Agent = dict[str, Array]

# A Python float, not a NumPy float64 scalar: float32 arithmetic stays float32 with it.
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


# --- The CT-RNN body and its Jacobian traces (rtrrl_spec/ctrnn.py) ------------------------


def ctrnn_step(W: Array, tau: Array, h: Array, x: Array, dt: float) -> CTRNNStep:
    """``h' = h + dt (tanh(W [x, h, 1]) − h) / τ``; keeps ζ, φ, φ' for the traces."""
    zeta = np.concatenate([x, h, np.ones_like(h[:, :1])], axis=-1)
    phi = np.tanh(zeta @ W.T)
    h_next = h + dt * (phi - h) / tau
    return CTRNNStep(zeta, phi, 1.0 - phi * phi, h_next)


def rflo_update(
    J_W: Array, J_tau: Array, tau: Array, h: Array, s: CTRNNStep, dt: float
) -> tuple[Array, Array]:
    """RFLO's local traces ``J_W (B,N,Z)``, ``J_τ (B,N)`` at ``h'``."""
    rate = dt / tau
    J_W_next = (1.0 - rate)[:, None] * J_W + rate[:, None] * (
        s.dphi[:, :, None] * s.zeta[:, None, :]
    )
    J_tau_next = (1.0 - rate) * J_tau + dt * (h - s.phi) / (tau * tau)
    return J_W_next, J_tau_next


def rtrl_update(
    J_W: Array,
    J_tau: Array,
    W: Array,
    tau: Array,
    h: Array,
    s: CTRNNStep,
    dt: float,
    input_dim: int,
) -> tuple[Array, Array]:
    """RTRL's full traces ``J_W (B,N,N,Z)``, ``J_τ (B,N,N)`` at ``h'``."""
    N = tau.shape[0]
    W_h = W[:, input_dim : input_dim + N]
    eye = np.eye(N, dtype=W.dtype)
    M = eye + dt * (s.dphi[:, :, None] * W_h[None] - eye) / tau[None, :, None]
    # The direct terms sit on the diagonal i = j: added through the identity, since not every
    # framework assigns into a diagonal (adding 0 elsewhere changes nothing).
    direct_W = dt * s.dphi[:, :, None] * s.zeta[:, None, :] / tau[None, :, None]
    direct_tau = dt * (h - s.phi) / (tau * tau)
    J_W_next = np.einsum("bil,bljk->bijk", M, J_W) + eye[None, :, :, None] * direct_W[:, :, None]
    J_tau_next = np.einsum("bil,blj->bij", M, J_tau) + eye[None] * direct_tau[:, :, None]
    return J_W_next, J_tau_next


def project_rflo(signal: Array, J_W: Array, J_tau: Array) -> tuple[Array, Array]:
    """Gradients of ``signal · h'`` through RFLO's traces: ``(grad_W, grad_tau)``."""
    return signal[:, :, None] * J_W, signal * J_tau


def project_rtrl(signal: Array, J_W: Array, J_tau: Array) -> tuple[Array, Array]:
    """Gradients of ``signal · h'`` through RTRL's traces: ``(grad_W, grad_tau)``."""
    return np.einsum("bi,bijk->bjk", signal, J_W), np.einsum("bi,bij->bj", signal, J_tau)


# --- The LRU body and its sensitivities (rtrrl_spec/lru.py) -------------------------------


def _cmul(a_re: Array, a_im: Array, b_re: Array, b_im: Array) -> tuple[Array, Array]:
    return a_re * b_re - a_im * b_im, a_re * b_im + a_im * b_re


def lru_lambda(log_nu: Array, log_theta: Array) -> tuple[Array, Array]:
    """``λ = exp(−exp(ν)) e^{i exp(θ)}`` as (Re λ, Im λ)."""
    modulus = np.exp(-np.exp(log_nu))
    phase = np.exp(log_theta)
    return modulus * np.cos(phase), modulus * np.sin(phase)


def lru_step(params: Mapping[str, Array], h_re: Array, h_im: Array, x: Array) -> LRUStep:
    """``h' = λ ⊙ h + exp(γ) ⊙ (B x)``, ``y = Re(C h')``."""
    lam_re, lam_im = lru_lambda(params["log_nu"], params["log_theta"])
    norm = np.exp(params["log_gamma"])
    u_re, u_im = x @ params["B_re"].T, x @ params["B_im"].T
    rec_re, rec_im = _cmul(lam_re, lam_im, h_re, h_im)
    h_next_re, h_next_im = rec_re + norm * u_re, rec_im + norm * u_im
    y = h_next_re @ params["C_re"].T - h_next_im @ params["C_im"].T
    return LRUStep(lam_re, lam_im, norm, u_re, u_im, h_next_re, h_next_im, y)


def lru_sensitivity_update(
    J: Mapping[str, Array], h_re: Array, h_im: Array, x: Array, s: LRUStep
) -> dict[str, Array]:
    """The sensitivities ``J_lam``, ``J_gam``, ``J_in`` at ``h'`` (real and imaginary parts)."""
    lam_re, lam_im = s.lam_re, s.lam_im
    rec_re, rec_im = _cmul(lam_re, lam_im, J["J_lam_re"], J["J_lam_im"])
    gam_re, gam_im = _cmul(lam_re, lam_im, J["J_gam_re"], J["J_gam_im"])
    in_re, in_im = _cmul(lam_re[:, None], lam_im[:, None], J["J_in_re"], J["J_in_im"])
    return {
        "J_lam_re": rec_re + h_re,
        "J_lam_im": rec_im + h_im,
        "J_gam_re": gam_re + s.norm * s.u_re,
        "J_gam_im": gam_im + s.norm * s.u_im,
        "J_in_re": in_re + s.norm[None, :, None] * x[:, None, :],
        "J_in_im": in_im,
    }


def project_lru(
    signal: Array, params: Mapping[str, Array], J: Mapping[str, Array], s: LRUStep
) -> dict[str, Array]:
    """Per-environment gradients of ``signal · y`` for every LRU parameter."""
    w_re, w_im = signal @ params["C_re"], signal @ params["C_im"]
    a_re, a_im = _cmul(w_re, w_im, J["J_lam_re"], J["J_lam_im"])
    a_re, a_im = _cmul(a_re, a_im, s.lam_re, s.lam_im)
    g_re, _ = _cmul(w_re, w_im, J["J_gam_re"], J["J_gam_im"])
    b_re, b_im = _cmul(w_re[:, :, None], w_im[:, :, None], J["J_in_re"], J["J_in_im"])
    return {
        "log_nu": -a_re * np.exp(params["log_nu"]),
        "log_theta": -a_im * np.exp(params["log_theta"]),
        "log_gamma": g_re,
        "B_re": b_re,
        "B_im": -b_im,
        "C_re": signal[:, :, None] * s.h_re[:, None, :],
        "C_im": -signal[:, :, None] * s.h_im[:, None, :],
    }


# --- The heads (rtrrl_spec/heads.py) ------------------------------------------------------


def _sigmoid(z: Array) -> Array:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def critic_value(f: Array, W_C: Array, b_C: Array) -> Array:
    """``v = f · W_C + b_C``: ``(B,)``."""
    return f @ W_C[:, 0] + b_C[0]


def policy_step(config: Config, out: Array, noise: Array) -> PolicyStep:
    """Sample an action from the actor outputs and differentiate ``ln π`` and ``H``."""
    if config.discrete:
        return _discrete(out, noise)
    return _continuous(config, out, noise)


def _discrete(logits: Array, noise: Array) -> PolicyStep:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    p = np.exp(log_p)
    action = np.argmax(logits - np.log(-np.log(noise)), axis=-1).astype(np.int32)
    onehot = (action[:, None] == np.arange(logits.shape[-1])).astype(logits.dtype)
    entropy = -(p * log_p).sum(axis=-1)
    return PolicyStep(
        action=action,
        sample=action,
        log_prob=(onehot * log_p).sum(axis=-1),
        entropy=entropy,
        dlogp_dout=onehot - p,
        dent_dout=-p * (log_p + entropy[:, None]),
        scale=np.ones_like(entropy),
    )


def _continuous(config: Config, out: Array, noise: Array) -> PolicyStep:
    D = int(config.action_dim)  # type: ignore[arg-type]
    m, s = out[:, :D], out[:, D:]
    if config.bounded:
        lo = np.asarray(config.action_low, dtype=out.dtype)
        hi = np.asarray(config.action_high, dtype=out.dtype)
        sig_m = _sigmoid(m)
        mu = lo + (hi - lo) * sig_m
        dmu_dm = (hi - lo) * sig_m * (1.0 - sig_m)
    else:
        mu, dmu_dm = m, np.ones_like(m)
    sig_s = _sigmoid(s)
    pre_sigma = -2.0 + 4.0 * sig_s
    sigma = np.logaddexp(pre_sigma, 0.0)  # softplus
    dsigma_ds = _sigmoid(pre_sigma) * 4.0 * sig_s * (1.0 - sig_s)
    sample = mu + sigma * noise
    action = np.clip(sample, lo, hi) if config.bounded else sample
    log_sigma = np.log(sigma)
    log_prob = (-0.5 * noise * noise - log_sigma - _HALF_LOG_2PI).sum(axis=-1)
    entropy = (log_sigma + 0.5 + _HALF_LOG_2PI).sum(axis=-1)
    dlogp_dout = np.concatenate(
        [noise / sigma * dmu_dm, (noise * noise - 1.0) / sigma * dsigma_ds], axis=-1
    )
    dent_dout = np.concatenate([np.zeros_like(m), dsigma_ds / sigma], axis=-1)
    scale = np.minimum(sigma.mean(axis=-1), 1.0) if config.var_scaling else np.ones_like(entropy)
    return PolicyStep(action, sample, log_prob, entropy, dlogp_dout, dent_dout, scale)


# --- TD error and traces (rtrrl_spec/agent.py) --------------------------------------------


def td_error(
    reward: Array,
    done: Array,
    value: Array,
    v_prev: Array,
    gamma: float,
    reward_rate: Array | float = 0.0,
) -> Array:
    """``δ = r − r̄ + γ (1 − done) v − v_prev``."""
    not_done = 1.0 - done.astype(value.dtype)
    return (reward - reward_rate + gamma * not_done * value - v_prev).astype(value.dtype)


def decay_trace(trace: Array, done: Array, gamma_lambda: float) -> Array:
    """``γλ e``, after zeroing the traces of environments whose episode just ended."""
    reset = done.reshape(done.shape + (1,) * (trace.ndim - 1))
    return gamma_lambda * np.where(reset, np.zeros_like(trace), trace)


# --- The optimizer (rtrrl_spec/optim.py, agent.py) ----------------------------------------


def global_norm(arrays: Mapping[str, Array]) -> Array:
    """Euclidean norm of all entries of all arrays."""
    return np.sqrt(sum(np.sum(a * a) for a in arrays.values()))


def clip_by_global_norm(
    arrays: Mapping[str, Array], max_norm: float | None
) -> tuple[dict[str, Array], Array]:
    """The group scaled down to norm ``max_norm`` when longer; ``(arrays, norm)``."""
    norm = global_norm(arrays)
    if max_norm is None:
        return dict(arrays), norm
    factor = max_norm / np.maximum(norm, max_norm)
    return {k: a * factor for k, a in arrays.items()}, norm


def adam_step(
    params: Mapping[str, Array],
    direction: Mapping[str, Array],
    mu: Mapping[str, Array],
    nu: Mapping[str, Array],
    count: Array,
    lr: float,
    b1: float,
    b2: float,
    eps: float,
) -> tuple[dict[str, Array], dict[str, Array], dict[str, Array], Array]:
    """One Adam ascent step (ε outside the square root): ``(params, mu, nu, count)``."""
    count = count + 1
    t = float(count)
    new_params, new_mu, new_nu = {}, {}, {}
    for name, p in params.items():
        d = direction[name]
        m = b1 * mu[name] + (1.0 - b1) * d
        v = b2 * nu[name] + (1.0 - b2) * d * d
        m_hat, v_hat = m / (1.0 - b1**t), v / (1.0 - b2**t)
        new_params[name] = p + lr * m_hat / (np.sqrt(v_hat) + eps)
        new_mu[name], new_nu[name] = m, v
    return new_params, new_mu, new_nu, count


def apply_update(
    config: Config, agent: Mapping[str, Array], direction: Mapping[str, Array]
) -> tuple[Agent, Agent]:
    """Per group: clip, Adam, then ``τ ≥ tau_min``; ``(changed arrays, grad_norm_<group>)``."""
    dtype = agent["W_A"].dtype
    changed: Agent = {}
    info: Agent = {}
    lrs = {"td": config.lr_td, "rnn": config.lr_rnn}
    for group, names in optimizer_groups(config):
        clipped, norm = clip_by_global_norm({k: direction[k] for k in names}, config.clip_norm)
        params, mu, nu, count = adam_step(
            {k: agent[k] for k in names},
            clipped,
            {k: agent[f"mu_{k}"] for k in names},
            {k: agent[f"nu_{k}"] for k in names},
            agent[f"count_{group}"],
            lrs[group],
            config.adam_b1,
            config.adam_b2,
            config.adam_eps,
        )
        if "tau" in params:
            params["tau"] = np.maximum(params["tau"], np.asarray(config.tau_min, dtype=dtype))
        for k in names:
            changed[k], changed[f"mu_{k}"], changed[f"nu_{k}"] = params[k], mu[k], nu[k]
        changed[f"count_{group}"] = count
        info[f"grad_norm_{group}"] = np.asarray(norm, dtype=dtype)
    return changed, info


# --- One step (rtrrl_spec/agent.py: step_unchecked) ---------------------------------------


def step(
    config: Config, agent: Mapping[str, Array], obs: Array, reward: Array, done: Array, noise: Array
) -> tuple[Agent, Array, Agent]:
    """One step of ``B`` environments: ``(agent, action, info)``; the numbered comments are
    those of ``rtrrl_spec.agent``'s docstring."""
    dtype = agent["W_A"].dtype
    B = obs.shape[0]
    new = dict(agent)

    def reset_env(array: Array) -> Array:
        mask = done.reshape((B,) + (1,) * (array.ndim - 1))
        return np.where(mask, np.zeros_like(array), array)

    # 1-2. The RNN's input; at an episode boundary the previous action and reward are not fed.
    if config.meta_rl:
        if config.discrete:
            a_in = (agent["a_prev"][:, None] == np.arange(config.n_actions)).astype(dtype)
        else:
            a_in = agent["a_prev"]
        r_in = np.where(done, np.zeros_like(reward), reward)[:, None]
        x = np.concatenate([obs, reset_env(a_in), r_in], axis=-1)
    else:
        x = obs

    # 3. Body: features, the new body state and, when it learns, the projection J'ᵀ g.
    project = None
    if config.body == "ctrnn":
        W, tau = agent["W"], agent["tau"]
        h = reset_env(agent["h"])
        s = ctrnn_step(W, tau, h, x, config.dt)
        features = new["h"] = s.h_next
        if config.trains_body:
            J_W, J_tau = reset_env(agent["J_W"]), reset_env(agent["J_tau"])
            if config.jacobian == "rflo":
                J_W, J_tau = rflo_update(J_W, J_tau, tau, h, s, config.dt)
                project_ctrnn = project_rflo
            else:
                J_W, J_tau = rtrl_update(J_W, J_tau, W, tau, h, s, config.dt, config.input_dim)
                project_ctrnn = project_rtrl
            new.update(J_W=J_W, J_tau=J_tau)

            def project(signal: Array) -> Agent:
                grad_W, grad_tau = project_ctrnn(signal, J_W, J_tau)
                return {"W": grad_W, "tau": grad_tau}

    elif config.body == "lru":
        params = {k: agent[k] for k in body_params(config)}
        h_re, h_im = reset_env(agent["h_re"]), reset_env(agent["h_im"])
        s_lru = lru_step(params, h_re, h_im, x)
        new["h_re"], new["h_im"] = s_lru.h_re, s_lru.h_im
        features = s_lru.y
        if config.trains_body:
            J = lru_sensitivity_update(
                {k: reset_env(agent[k]) for k in LRU_SENSITIVITIES}, h_re, h_im, x, s_lru
            )
            new.update(J)

            def project(signal: Array) -> Agent:
                return project_lru(signal, params, J, s_lru)

    else:
        features = x

    # 4. Heads, with the parameters as they were before this step's update.
    W_A, W_C, b_C = agent["W_A"], agent["W_C"], agent["b_C"]
    value = critic_value(features, W_C, b_C)
    pol = policy_step(config, features @ W_A, noise)
    c = pol.scale[:, None]

    # 5. Immediate gradients.
    critic_scale = np.ones_like(c) if config.trace == "dutch" else c
    grad = {
        "W_C": critic_scale[:, :, None] * features[:, :, None],
        "b_C": critic_scale * np.ones_like(c),
        "W_A": c[:, :, None] * features[:, :, None] * pol.dlogp_dout[:, None, :],
    }
    entropy_grad = {"W_A": c[:, :, None] * features[:, :, None] * pol.dent_dout[:, None, :]}
    if project is not None:
        B_A = agent["B_A"] if config.feedback_alignment else W_A
        B_C = agent["B_C"] if config.feedback_alignment else W_C
        signal = c * (B_C[:, 0][None, :] + config.eta_pi * (pol.dlogp_dout @ B_A.T))
        grad.update(project(signal))
        entropy_grad.update(project(c * (pol.dent_dout @ B_A.T)))

    # 6. TD error.
    reward_rate = agent["reward_rate"] if config.reward_rate_lr is not None else 0.0
    delta = td_error(reward, done, value, agent["v_prev"], config.gamma, reward_rate)
    d = delta[:, None]

    # 7. Update directions from the traces as they were; batch mean; clip, Adam, tau clip.
    per_env = {
        "W_C": d[:, :, None] * agent["e_W_C"],
        "b_C": d * agent["e_b_C"],
        "W_A": d[:, :, None] * agent["e_W_A"] + config.entropy_rate * entropy_grad["W_A"],
    }
    if config.trace == "dutch":
        value_now = (agent["x_W_C"][:, :, 0] * W_C[:, 0]).sum(-1) + agent["x_b_C"][:, 0] * b_C[0]
        correction = (value_now - agent["v_prev"])[:, None]
        per_env["W_C"] = per_env["W_C"] - correction[:, :, None] * agent["x_W_C"]
        per_env["b_C"] = per_env["b_C"] - correction * agent["x_b_C"]
    for k in rnn_params(config):
        trace = agent[f"e_{k}"]
        delta_k = delta.reshape((B,) + (1,) * (trace.ndim - 1))
        per_env[k] = delta_k * trace + config.entropy_rate * entropy_grad[k]
    direction = {k: v.mean(axis=0) for k, v in per_env.items()}
    changed, info = apply_update(config, agent, direction)
    new.update(changed)
    if config.reward_rate_lr is not None:
        new["reward_rate"] = agent["reward_rate"] + config.reward_rate_lr * delta.mean()

    # 8. Traces: reset at the boundary, then decay and add this step's gradients.
    def decayed(name: str, lam: float) -> Array:
        return decay_trace(agent[name], done, config.gamma * lam)

    if config.trace == "dutch":
        e_W_C = decayed("e_W_C", config.lambda_critic)
        e_b_C = decayed("e_b_C", config.lambda_critic)
        inner = (e_W_C * grad["W_C"]).sum(axis=(1, 2)) + (e_b_C * grad["b_C"]).sum(axis=1)
        weight = (1.0 - config.lr_td * inner)[:, None]
        new["e_W_C"] = e_W_C + weight[:, :, None] * grad["W_C"]
        new["e_b_C"] = e_b_C + weight * grad["b_C"]
        new["x_W_C"], new["x_b_C"] = grad["W_C"], grad["b_C"]
    else:
        new["e_W_C"] = decayed("e_W_C", config.lambda_critic) + grad["W_C"]
        new["e_b_C"] = decayed("e_b_C", config.lambda_critic) + grad["b_C"]
    new["e_W_A"] = decayed("e_W_A", config.lambda_actor) + grad["W_A"]
    for k in rnn_params(config):
        new[f"e_{k}"] = decayed(f"e_{k}", config.lambda_rnn) + grad[k]

    # 9. Carry; every array keeps its layout dtype.
    new["v_prev"], new["a_prev"] = value, pol.action
    new = {k: np.asarray(v).astype(agent[k].dtype) for k, v in new.items()}
    info.update(
        td_error=delta,
        value=value,
        log_prob=pol.log_prob.astype(dtype),
        entropy=pol.entropy.astype(dtype),
        sample=pol.sample,
        features=features,
    )
    for k, v in direction.items():
        info[f"direction.{k}"] = v
        info[f"update.{k}"] = new[k] - agent[k]
    return new, pol.action, info


# --- The backend object (the protocol: rtrrl.backends.base.Backend) -----------------------


def _copy(x: Any) -> Array:
    return np.array(x, copy=True)  # your framework's conversion, dtype preserved


class Backend(BackendBase):
    """This file's functions as a backend; rename it and its ``name``."""

    name = "template"
    supported_dtypes = ("float32", "float64")

    def version(self) -> str:
        return np.__version__

    def device(self) -> str:
        return "cpu"

    def to_numpy(self, tree: Any) -> Any:
        return map_tree(_copy, tree)

    def from_numpy(self, tree: Any) -> Any:
        return map_tree(_copy, tree)

    def init(self, config: Config, batch_size: int, seed: int, dtype: str = "float32") -> Agent:
        # The reference's numbers, converted: every backend then starts from the same agent.
        return self.from_numpy(rtrrl_spec.init(config, batch_size, seed, dtype=dtype))

    def step(
        self,
        config: Config,
        agent: Agent,
        obs: Array,
        reward: Array,
        done: Array,
        noise: Array,
        *,
        check: bool = True,
    ) -> tuple[Agent, Array, Agent]:
        # The reference's checks and messages first, as every backend's step by default;
        # check=False is for loops that vouch for their inputs (the host loop after its
        # first step).
        if check:
            self.check_step(config, agent, obs, reward, done, noise)
        return step(config, agent, obs, reward, done, noise)

    def rng(self, seed: int) -> np.random.Generator:
        return np.random.default_rng(seed)

    def draw_noise(
        self, config: Config, batch_size: int, rng: np.random.Generator, dtype: str
    ) -> tuple[Array, np.random.Generator]:
        return rtrrl_spec.draw_noise(config, batch_size, rng, dtype), rng

    def rng_state(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return numpy_rng_state(rng)

    def rng_from_state(self, state: dict[str, np.ndarray]) -> np.random.Generator:
        return numpy_rng_from_state(state)
