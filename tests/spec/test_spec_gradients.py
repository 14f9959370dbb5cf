"""Self-tests of the immediate gradients: heads, entropy, var_scaling, and the RNN signal."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from spec_helpers import (
    action_kinds,
    central_fd,
    env_slice,
    policy_terms,
    random_inputs,
    rollout,
    seeds,
    sigma_of,
)

import rtrrl_spec as rs


def _first_step(config, B, seed):
    """A fresh float64 agent after its first step (``done = True``): traces = immediate grads."""
    rng = np.random.default_rng(seed)
    agent0 = rs.init(config, B, seed, "float64")
    obs, rewards, dones, noise = random_inputs(config, B, 1, rng)
    agent, action, info = rs.step(config, agent0, obs[0], rewards[0], dones[0], noise[0])
    return agent0, agent, action, info


@settings(max_examples=25, deadline=None)
@given(
    seed=seeds,
    kind=action_kinds(),
    body=st.sampled_from(["ctrnn", "lru", "linear"]),
    B=st.integers(1, 3),
    entropy_rate=st.floats(0.1, 2.0),
    eta_pi=st.floats(0.1, 2.0),
)
def test_head_gradients_equal_finite_differences(seed, kind, body, B, entropy_rate, eta_pi):
    """The first step's traces and entropy direction are the gradients of ln π(a), v and H.

    ``e_W_A`` = d ln π(a)/d W_A at the fixed action (discrete) or fixed sample (continuous),
    ``e_W_C``, ``e_b_C`` = dv/d(W_C, b_C), and ``direction.W_A`` = η_H mean_b dH_b/d W_A (the
    traces were zero, so the TD part vanishes); all against central finite differences of
    densities written from the docstrings (var_scaling off; η_π, which scales only the signal
    into the RNN, is drawn and must not change the actor trace). Also ``info``'s log_prob,
    entropy and value equal the own formulas, and a bounded action is the clipped sample.
    """
    config = rs.Config(
        obs_dim=3,
        n_hidden=4,
        body=body,
        var_scaling=False,
        entropy_rate=entropy_rate,
        eta_pi=eta_pi,
        **kind,
    )
    agent0, agent, action, info = _first_step(config, B, seed)
    f, W_A = info["features"], agent0["W_A"]
    sample = info["sample"]
    log_prob, entropy = policy_terms(config, f, W_A, sample)
    np.testing.assert_allclose(info["log_prob"], log_prob, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(info["entropy"], entropy, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        info["value"], f @ agent0["W_C"][:, 0] + agent0["b_C"][0], rtol=1e-12, atol=1e-12
    )
    if config.bounded:
        np.testing.assert_array_equal(
            action, np.clip(sample, config.action_low, config.action_high)
        )

    fd_logp = central_fd(lambda w: policy_terms(config, f, w, sample)[0], W_A)  # (B, F, K)
    fd_value_W = central_fd(lambda w: f @ w[:, 0] + agent0["b_C"][0], agent0["W_C"])
    fd_value_b = central_fd(lambda b: f @ agent0["W_C"][:, 0] + b[0], agent0["b_C"])
    fd_entropy = central_fd(lambda w: policy_terms(config, f, w, sample)[1].mean(), W_A)
    assert np.max(np.abs(agent["e_W_A"] - fd_logp)) <= 1e-7
    assert np.max(np.abs(agent["e_W_C"] - fd_value_W)) <= 1e-7
    assert np.max(np.abs(agent["e_b_C"] - fd_value_b)) <= 1e-7
    assert np.max(np.abs(info["direction.W_A"] - entropy_rate * fd_entropy)) <= 1e-7
    assert np.max(np.abs(fd_logp)) > 1e-4


@settings(max_examples=20, deadline=None)
@given(
    seed=seeds,
    kind=action_kinds().filter(lambda k: "action_dim" in k),
    body=st.sampled_from(["ctrnn", "lru", "linear"]),
    jacobian=st.sampled_from(["rflo", "rtrl"]),
    trace=st.sampled_from(["accumulating", "dutch"]),
    scale_out=st.floats(-3.0, 3.0),
)
def test_var_scaling_multiplies_immediate_gradients_by_c(
    seed, kind, body, jacobian, trace, scale_out
):
    """var_scaling multiplies every immediate gradient by ``c = min(mean σ, 1)`` exactly.

    Same agent, same inputs, var_scaling on and off: ``e_W_A``, the RNN traces and the entropy
    direction scale by the own ``c`` per environment (rtol 1e-12); the critic traces scale by
    ``c`` with accumulating traces and are left unscaled with dutch traces. ``scale_out``
    shifts the σ pre-activation so that examples reach both branches of the ``min`` (with
    ``c = 1`` the check is that on and off agree).
    """
    off = rs.Config(
        obs_dim=3,
        n_hidden=4,
        body=body,
        jacobian=jacobian,
        trace=trace,
        var_scaling=False,
        entropy_rate=0.5,
        **kind,
    )
    on = off.replace(var_scaling=True)
    B = 3
    rng = np.random.default_rng(seed)
    agent0 = rs.init(off, B, seed, "float64")
    D = off.action_dim
    # Push σ up (or down) via a constant feature direction: add to the s-columns of W_A.
    agent0["W_A"][:, D:] += scale_out
    obs, rewards, dones, noise = random_inputs(off, B, 1, rng)
    a_off, _, i_off = rs.step(off, agent0, obs[0], rewards[0], dones[0], noise[0])
    a_on, _, i_on = rs.step(on, agent0, obs[0], rewards[0], dones[0], noise[0])
    c = np.minimum(sigma_of(off, i_off["features"], agent0["W_A"]).mean(axis=-1), 1.0)
    close = {"rtol": 1e-12, "atol": 1e-300}
    np.testing.assert_allclose(a_on["e_W_A"], c[:, None, None] * a_off["e_W_A"], **close)
    critic_c = np.ones_like(c) if trace == "dutch" else c
    np.testing.assert_allclose(a_on["e_W_C"], critic_c[:, None, None] * a_off["e_W_C"], **close)
    np.testing.assert_allclose(a_on["e_b_C"], critic_c[:, None] * a_off["e_b_C"], **close)
    for name in rs.rnn_params(off):
        trace_off = a_off[f"e_{name}"]
        scale = c.reshape((B,) + (1,) * (trace_off.ndim - 1))
        np.testing.assert_allclose(a_on[f"e_{name}"], scale * trace_off, **close)
    # Entropy direction of one environment at a time: the batch mean mixes the factors.
    for b in range(B):
        one, rows = env_slice(off, agent0, slice(b, b + 1)), slice(b, b + 1)
        args = (obs[0][rows], rewards[0][rows], dones[0][rows], noise[0][rows])
        _, _, j_off = rs.step(off, one, *args)
        _, _, j_on = rs.step(on, one, *args)
        np.testing.assert_allclose(j_on["direction.W_A"], c[b] * j_off["direction.W_A"], **close)


@settings(max_examples=15, deadline=None)
@given(
    seed=seeds,
    kind=action_kinds(),
    N=st.integers(2, 4),
    T=st.integers(2, 6),
    eta_pi=st.floats(0.1, 2.0),
    dt=st.floats(0.2, 1.0),
    meta=st.booleans(),
)
def test_rnn_trace_is_gradient_through_history(seed, kind, N, T, eta_pi, dt, meta):
    """With RTRL, no feedback alignment and λ_rnn = 0, ``e_W``/``e_tau`` after step T equal
    the gradient of ``v_T + η_π ln π_T(a_T)`` with respect to W and tau through the whole
    recurrent history.

    lr = 0 keeps the parameters fixed; the finite differences re-run the T-step rollout under
    perturbed W/tau with the same inputs, noise and recorded actions as ``a_prev``, and
    evaluate ln π at the recorded action (discrete) or sample (continuous). var_scaling off.
    """
    config = rs.Config(
        obs_dim=2,
        n_hidden=N,
        jacobian="rtrl",
        feedback_alignment=False,
        meta_rl=meta,
        lambda_rnn=0.0,
        eta_pi=eta_pi,
        dt=dt,
        lr_td=0.0,
        lr_rnn=0.0,
        var_scaling=False,
        **kind,
    )
    B = 2
    rng = np.random.default_rng(seed)
    agent0 = rs.init(config, B, seed, "float64")
    agent0["tau"] = rng.uniform(1.2, 5.0, size=N)
    obs, rewards, dones, noise = random_inputs(config, B, T, rng)
    agents, actions, infos = rollout(config, agent0, obs, rewards, dones, noise)
    sample_T = infos[-1]["sample"]

    def objective(name):
        def fun(value):
            start = dict(agent0, **{name: value})
            _, _, out = rollout(config, start, obs, rewards, dones, noise, actions, checked=False)
            log_prob, _ = policy_terms(config, out[-1]["features"], agent0["W_A"], sample_T)
            return out[-1]["value"] + eta_pi * log_prob

        return fun

    fd_W = central_fd(objective("W"), agent0["W"])
    fd_tau = central_fd(objective("tau"), agent0["tau"])
    assert np.max(np.abs(agents[-1]["e_W"] - fd_W)) <= 1e-7
    assert np.max(np.abs(agents[-1]["e_tau"] - fd_tau)) <= 1e-7
    assert np.max(np.abs(fd_W)) > 1e-4
