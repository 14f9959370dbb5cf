r"""One RTRRL agent step: the reference every backend is checked against.

``step(config, agent, obs, reward, done, noise) -> (agent, action, info)``. Inputs are the
observation ``o`` and reward ``r`` the environment returned for ``a_prev``, the flag ``done``
(the transition ended the episode; with auto-reset ``o`` already starts the next one) and the
sampling noise ``ξ``. Per environment, in this order (``docs/spec.md`` explains each line):

1. Episode boundary: if ``done``, ``h ← 0``, ``J ← 0``, and the action and reward fed to the
   RNN are zeros.
2. ``x = [o, onehot(a_prev) | a_prev, r]`` with meta-RL, else ``x = o``.
3. Body: the CT-RNN Euler step ``h'`` and Jacobian trace ``J'`` (``rtrrl_spec.ctrnn``,
   features ``f = h'``), or the LRU step and its exact sensitivities (``rtrrl_spec.lru``,
   features ``f = y = Re(C h')``). The linear body skips this and uses ``f = x``. A frozen
   body (``freeze_rnn``) steps ``h`` only: no ``J``, no body gradients.
4. Heads on ``f``: ``v``, the policy, the sample ``a`` and the output-space gradients
   of ``ln π(a)`` and ``H`` (``rtrrl_spec.heads``), with parameters as before this update.
5. Immediate gradients (times ``c = min(mean σ, 1)`` for continuous actions with
   ``var_scaling``, else ``c = 1``)::

       ∇_C v = c (f, 1),   ∇_{W_A} ln π = c f ⊗ ∂lnπ/∂out,   ∇_{W_A} H = c f ⊗ ∂H/∂out
       g  = c (B_C·1 + η_π B_A ∂lnπ/∂out),   g_H = c B_A ∂H/∂out
       ∇_R = J'ᵀ g,   ∇_R H = J'ᵀ g_H       (B_A = W_A, B_C = W_C without feedback alignment)

   (``J'ᵀ g``: the body's projection of a signal on ``f`` into its parameters' gradients.)

6. TD error ``δ = r − r̄ + γ (1 − done) v − v_prev`` (``r̄ = 0`` unless average reward).
7. Update directions ``Δ_C = δ e_C``, ``Δ_A = δ e_A + η_H ∇_{W_A} H``,
   ``Δ_R = δ e_R + η_H ∇_R H`` (dutch traces add ``−(v̂_prev − v_prev) x_prev`` to ``Δ_C``),
   averaged over the batch, clipped per group by global norm, applied by Adam (ascent), then
   ``τ ← max(τ, tau_min)`` and ``r̄ ← r̄ + η_r̄ mean(δ)``.
8. Traces: if ``done``, ``e ← 0``; then ``e ← γλ e + ∇`` (dutch critic:
   ``e_C ← γλ e_C + (1 − α γλ ⟨e_C, x⟩) x`` with ``x = ∇_C v``, ``α = lr_td``).
9. Carry ``h ← h'``, ``J ← J'``, ``v_prev ← v``, ``a_prev ← a``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from rtrrl_spec import ctrnn, lru
from rtrrl_spec.config import Config, SpecError
from rtrrl_spec.heads import critic_value, policy_step
from rtrrl_spec.layout import body_params, optimizer_groups, rnn_params, validate_agent
from rtrrl_spec.optim import adam_step, clip_by_global_norm

__all__ = ["step", "step_unchecked", "check_inputs", "td_error", "decay_trace", "apply_update"]

Agent = dict[str, np.ndarray]


def step(
    config: Config,
    agent: Mapping[str, np.ndarray],
    obs: np.ndarray,
    reward: np.ndarray,
    done: np.ndarray,
    noise: np.ndarray,
) -> tuple[Agent, np.ndarray, Agent]:
    """One step of ``B`` environments sharing parameters; validates everything it is given.

    Args:
        config: the agent's :class:`~rtrrl_spec.Config`.
        agent: arrays in the canonical layout (``rtrrl_spec.layout``); not modified.
        obs: ``(B, obs_dim)`` float observations.
        reward: ``(B,)`` rewards for the previous action.
        done: ``(B,)`` bools: the previous transition ended the episode.
        noise: ``(B, K)`` uniform in (0, 1) (discrete) or ``(B, D)`` standard normal.

    Returns:
        ``(agent, action, info)``: the new agent, the action the environment receives
        (``(B,)`` int32 or ``(B, D)``), and a dict with ``td_error``, ``value``, ``log_prob``,
        ``entropy``, ``sample`` (the unclipped continuous sample), ``features`` (``f``),
        ``grad_norm_td``, ``grad_norm_rnn`` (before clipping), ``direction.<param>`` (the
        batch-averaged ascent direction before clipping) and ``update.<param>`` (the change
        applied to each parameter).

    Inputs are cast to the agent's float dtype, so a float32 agent stays float32.

    Raises:
        SpecError: for a config/agent mismatch, a wrong shape or dtype, a non-finite value in
            the inputs or the agent, or noise outside its domain.
    """
    float_dtype, B = validate_agent(config, agent)  # the config's type first
    obs, reward, done, noise = check_inputs(config, B, float_dtype, obs, reward, done, noise)
    return step_unchecked(config, dict(agent), obs, reward, done, noise)


def check_inputs(
    config: Config,
    B: int,
    float_dtype: str,
    obs: np.ndarray,
    reward: np.ndarray,
    done: np.ndarray,
    noise: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shape, dtype and domain checks of one step's inputs; returns them cast."""

    def as_float(name: str, value: object, shape: tuple[int, ...]) -> np.ndarray:
        array = np.asarray(value)
        if array.dtype.kind not in "fiub":
            raise SpecError(f"{name} must be numeric, got dtype {array.dtype}")
        if array.shape != shape:
            raise SpecError(f"{name} has shape {array.shape}, expected {shape} (B={B})")
        array = array.astype(float_dtype)
        if not np.all(np.isfinite(array)):
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
            raise SpecError(f"{name} holds a non-finite value {array[bad]!r} at index {bad}")
        return array

    obs = as_float("obs", obs, (B, config.obs_dim))
    reward = as_float("reward", reward, (B,))
    done_array = np.asarray(done)
    if done_array.shape != (B,):
        raise SpecError(f"done has shape {done_array.shape}, expected {(B,)}")
    if done_array.dtype != np.bool_:
        if done_array.dtype.kind not in "iuf" or not np.all((done_array == 0) | (done_array == 1)):
            raise SpecError(f"done must be booleans (or 0/1), got {done_array!r}")
        done_array = done_array.astype(bool)
    width = config.n_actions if config.discrete else config.action_dim
    noise = as_float("noise", noise, (B, int(width)))  # type: ignore[arg-type]
    if config.discrete and not np.all((noise > 0) & (noise < 1)):
        raise SpecError(
            "discrete actions need uniform noise strictly inside (0, 1) (Gumbel-max takes "
            f"log(-log u)); got values in [{noise.min()}, {noise.max()}]"
        )
    return obs, reward, done_array, noise


def td_error(
    reward: np.ndarray,
    done: np.ndarray,
    value: np.ndarray,
    v_prev: np.ndarray,
    gamma: float,
    reward_rate: np.ndarray | float = 0.0,
) -> np.ndarray:
    """``δ = r − r̄ + γ (1 − done) v − v_prev``: no bootstrapping across an episode boundary."""
    not_done = 1.0 - done.astype(value.dtype)
    return (reward - reward_rate + gamma * not_done * value - v_prev).astype(value.dtype)


def decay_trace(trace: np.ndarray, done: np.ndarray, gamma_lambda: float) -> np.ndarray:
    """``γλ e``, after zeroing the traces of environments whose episode just ended."""
    reset = done.reshape(done.shape + (1,) * (trace.ndim - 1))
    return gamma_lambda * np.where(reset, 0.0, trace).astype(trace.dtype)


def apply_update(
    config: Config, agent: Mapping[str, np.ndarray], direction: Mapping[str, np.ndarray]
) -> tuple[Agent, Agent]:
    """Clip each group's ascent direction by global norm, take an Adam step, clip ``tau``.

    Returns the new parameters, Adam moments and counts, and ``grad_norm_<group>`` (the norm
    before clipping). Conformance also uses this to check a backend's optimizer on the
    backend's own direction.
    """
    dtype = agent["W_A"].dtype
    changed: Agent = {}
    info: Agent = {}
    lrs = {"td": config.lr_td, "rnn": config.lr_rnn}
    for group, names in optimizer_groups(config):
        lr = lrs[group]
        clipped, norm = clip_by_global_norm({k: direction[k] for k in names}, config.clip_norm)
        params, mu, nu, count = adam_step(
            {k: agent[k] for k in names},
            clipped,
            {k: agent[f"mu_{k}"] for k in names},
            {k: agent[f"nu_{k}"] for k in names},
            agent[f"count_{group}"],
            lr,
            config.adam_b1,
            config.adam_b2,
            config.adam_eps,
        )
        if "tau" in params:
            params["tau"] = np.maximum(params["tau"], np.asarray(config.tau_min, dtype=dtype))
        for k in names:
            changed[k] = params[k]
            changed[f"mu_{k}"], changed[f"nu_{k}"] = mu[k], nu[k]
        changed[f"count_{group}"] = count
        info[f"grad_norm_{group}"] = np.asarray(norm, dtype=dtype)
    return changed, info


def step_unchecked(
    config: Config,
    agent: Agent,
    obs: np.ndarray,
    reward: np.ndarray,
    done: np.ndarray,
    noise: np.ndarray,
) -> tuple[Agent, np.ndarray, Agent]:
    """:func:`step` without validation: inputs must already be checked and cast."""
    dtype = agent["W_A"].dtype
    B = obs.shape[0]
    reset = done[:, None]  # broadcasts over the feature axis
    new = dict(agent)

    # 1-2. RNN input; at an episode boundary the previous action and reward are not fed.
    if config.meta_rl:
        if config.discrete:
            a_in = np.eye(config.n_actions, dtype=dtype)[agent["a_prev"]]
        else:
            a_in = agent["a_prev"]
        a_in = np.where(reset, 0.0, a_in).astype(dtype)
        r_in = np.where(done, 0.0, reward).astype(dtype)[:, None]
        x = np.concatenate([obs, a_in, r_in], axis=-1)
    else:
        x = obs

    # 3. Body: features for the heads, the new body state and, when the body learns, how a
    # signal on the features projects into its parameters' gradients (J'ᵀ g).
    def reset_env(array: np.ndarray) -> np.ndarray:
        return np.where(done.reshape((B,) + (1,) * (array.ndim - 1)), 0.0, array).astype(dtype)

    project = None
    if config.body == "ctrnn":
        W, tau = agent["W"], agent["tau"]
        h = reset_env(agent["h"])
        s = ctrnn.ctrnn_step(W, tau, h, x, config.dt)
        features = new["h"] = s.h_next
        if config.trains_body:
            J_W, J_tau = reset_env(agent["J_W"]), reset_env(agent["J_tau"])
            if config.jacobian == "rflo":
                J_W, J_tau = ctrnn.rflo_update(J_W, J_tau, tau, h, s, config.dt)
                project_ctrnn = ctrnn.project_rflo
            else:
                J_W, J_tau = ctrnn.rtrl_update(
                    J_W, J_tau, W, tau, h, s, config.dt, config.input_dim
                )
                project_ctrnn = ctrnn.project_rtrl
            new.update(J_W=J_W, J_tau=J_tau)

            def project(signal: np.ndarray) -> Agent:
                grad_W, grad_tau = project_ctrnn(signal, J_W, J_tau)
                return {"W": grad_W, "tau": grad_tau}

    elif config.body == "lru":
        params = {k: agent[k] for k in body_params(config)}
        h_re, h_im = reset_env(agent["h_re"]), reset_env(agent["h_im"])
        s_lru = lru.lru_step(params, h_re, h_im, x)
        new["h_re"], new["h_im"] = s_lru.h_re, s_lru.h_im
        features = s_lru.y
        if config.trains_body:
            J = {k: reset_env(agent[k]) for k in lru.LRU_SENSITIVITIES}
            J = lru.lru_sensitivity_update(J, h_re, h_im, x, s_lru)
            new.update(J)

            def project(signal: np.ndarray) -> Agent:
                return lru.project_lru(signal, params, J, s_lru)

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
        "b_C": critic_scale * np.ones((B, 1), dtype=dtype),
        "W_A": c[:, :, None] * features[:, :, None] * pol.dlogp_dout[:, None, :],
    }
    entropy_grad = {"W_A": c[:, :, None] * features[:, :, None] * pol.dent_dout[:, None, :]}
    if project is not None:
        B_A = agent["B_A"] if config.feedback_alignment else W_A
        B_C = agent["B_C"] if config.feedback_alignment else W_C
        signal = c * (B_C[:, 0][None, :] + config.eta_pi * (pol.dlogp_dout @ B_A.T))
        entropy_signal = c * (pol.dent_dout @ B_A.T)
        grad.update(project(signal))
        entropy_grad.update(project(entropy_signal))

    # 6. TD error.
    reward_rate = agent["reward_rate"] if config.reward_rate_lr is not None else 0.0
    delta = td_error(reward, done, value, agent["v_prev"], config.gamma, reward_rate)
    d = delta[:, None]

    # 7. Update: directions from the traces as they were, batch mean, clip, Adam, tau clip.
    per_env = {
        "W_C": d[:, :, None] * agent["e_W_C"],
        "b_C": d * agent["e_b_C"],
        "W_A": d[:, :, None] * agent["e_W_A"] + config.entropy_rate * entropy_grad["W_A"],
    }
    if config.trace == "dutch":
        # True-online TD(λ) correction; v̂_prev is the previous features' value under the
        # current weights. With δ as above this is exactly van Seijen & Sutton's update.
        value_now = (agent["x_W_C"][:, :, 0] * W_C[:, 0]).sum(-1) + agent["x_b_C"][:, 0] * b_C[0]
        correction = (value_now - agent["v_prev"])[:, None]
        per_env["W_C"] = per_env["W_C"] - correction[:, :, None] * agent["x_W_C"]
        per_env["b_C"] = per_env["b_C"] - correction * agent["x_b_C"]
    for k in rnn_params(config):
        trace = agent[f"e_{k}"]
        per_env[k] = (
            delta.reshape((B,) + (1,) * (trace.ndim - 1)) * trace
            + config.entropy_rate * entropy_grad[k]
        )
    direction = {k: v.mean(axis=0).astype(dtype) for k, v in per_env.items()}

    changed, info = apply_update(config, agent, direction)
    new.update(changed)
    if config.reward_rate_lr is not None:
        new["reward_rate"] = (agent["reward_rate"] + config.reward_rate_lr * delta.mean()).astype(
            dtype
        )

    # 8. Traces: reset at the boundary, then decay and add this step's gradients.
    def decayed(name: str, lam: float) -> np.ndarray:
        return decay_trace(agent[name], done, config.gamma * lam)

    if config.trace == "dutch":
        e_W_C = decayed("e_W_C", config.lambda_critic)
        e_b_C = decayed("e_b_C", config.lambda_critic)
        inner = (e_W_C * grad["W_C"]).sum(axis=(1, 2)) + (e_b_C * grad["b_C"]).sum(axis=1)
        weight = (1.0 - config.lr_td * inner)[:, None]  # e_W_C was already multiplied by γλ
        new["e_W_C"] = e_W_C + weight[:, :, None] * grad["W_C"]
        new["e_b_C"] = e_b_C + weight * grad["b_C"]
        new["x_W_C"], new["x_b_C"] = grad["W_C"], grad["b_C"]
    else:
        new["e_W_C"] = decayed("e_W_C", config.lambda_critic) + grad["W_C"]
        new["e_b_C"] = decayed("e_b_C", config.lambda_critic) + grad["b_C"]
    new["e_W_A"] = decayed("e_W_A", config.lambda_actor) + grad["W_A"]
    for k in rnn_params(config):
        new[f"e_{k}"] = decayed(f"e_{k}", config.lambda_rnn) + grad[k]

    # 9. Carry.
    new["v_prev"] = value.astype(dtype)
    new["a_prev"] = pol.action.astype(agent["a_prev"].dtype)
    new = {k: np.asarray(v).astype(agent[k].dtype, copy=False) for k, v in new.items()}

    info.update(
        td_error=delta,
        value=value.astype(dtype),
        log_prob=pol.log_prob.astype(dtype),
        entropy=pol.entropy.astype(dtype),
        sample=np.asarray(pol.sample).astype(pol.action.dtype, copy=False),
        features=features.astype(dtype),
    )
    for k, v in direction.items():
        info[f"direction.{k}"] = v
        info[f"update.{k}"] = (new[k] - agent[k]).astype(dtype)
    return new, pol.action, info
