"""Self-tests of the CT-RNN Jacobian traces: RTRL against finite differences, RFLO vs RTRL."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from spec_helpers import action_kinds, central_fd, random_inputs, rollout, seeds

import rtrrl_spec as rs
from rtrrl_spec import ctrnn


@settings(max_examples=20, deadline=None)
@given(
    seed=seeds,
    N=st.integers(2, 5),
    n_in=st.integers(1, 4),
    B=st.integers(1, 3),
    T=st.integers(5, 10),
    dt=st.floats(0.2, 1.0),
)
def test_rtrl_update_equals_finite_differences_of_rollout(seed, N, n_in, B, T, dt):
    """``rtrl_update`` carried over a T-step rollout with fixed W, tau equals dh_T/d(W, tau).

    Checked against central finite differences of the Euler rollout of ``h`` (float64), from
    ``h = 0``, ``J = 0``, random inputs, a random dt; max abs error <= 1e-7.
    """
    rng = np.random.default_rng(seed)
    Z = n_in + N + 1
    W0 = rng.normal(size=(N, Z)) * np.sqrt(2.0 / Z)
    tau0 = rng.uniform(1.0, 5.0, size=N)
    xs = rng.normal(size=(T, B, n_in))

    def run(W, tau):
        h = np.zeros((B, N))
        J_W, J_tau = np.zeros((B, N, N, Z)), np.zeros((B, N, N))
        for t in range(T):
            s = ctrnn.ctrnn_step(W, tau, h, xs[t], dt)
            J_W, J_tau = ctrnn.rtrl_update(J_W, J_tau, W, tau, h, s, dt, n_in)
            h = s.h_next
        return h, J_W, J_tau

    _, J_W, J_tau = run(W0, tau0)
    fd_W = central_fd(lambda W: run(W, tau0)[0], W0)  # (B, N, N, Z)
    fd_tau = central_fd(lambda tau: run(W0, tau)[0], tau0)  # (B, N, N)
    assert np.max(np.abs(J_W - fd_W)) <= 1e-7
    assert np.max(np.abs(J_tau - fd_tau)) <= 1e-7
    # The sensitivity is not trivially small: the comparison has something to compare.
    assert np.max(np.abs(fd_W)) > 1e-3


@settings(max_examples=15, deadline=None)
@given(
    seed=seeds,
    kind=action_kinds(),
    N=st.integers(2, 4),
    obs_dim=st.integers(1, 3),
    T=st.integers(5, 8),
    dt=st.floats(0.2, 1.0),
    fa=st.booleans(),
    mid_done=st.booleans(),
)
def test_step_rtrl_jacobian_equals_finite_differences(seed, kind, N, obs_dim, T, dt, fa, mid_done):
    """The agent's RTRL ``J_W``, ``J_tau`` after T steps equal dh/d(W, tau) of the rollout.

    Meta-RL inputs, random dt, lr = 0 everywhere so the parameters stay fixed; finite
    differences re-run the rollout with the recorded actions fed back as ``a_prev`` (the RNN
    input is then independent of the parameters). With a mid-rollout episode boundary the
    Jacobian only reaches back to it, and so does the finite-difference derivative.
    """
    config = rs.Config(
        obs_dim=obs_dim,
        n_hidden=N,
        jacobian="rtrl",
        feedback_alignment=fa,
        meta_rl=True,
        dt=dt,
        lr_td=0.0,
        lr_rnn=0.0,
        **kind,
    )
    B = 2
    rng = np.random.default_rng(seed)
    agent0 = rs.init(config, B, seed, "float64")
    agent0["tau"] = rng.uniform(1.2, 5.0, size=N)  # away from the tau_min clip
    obs, rewards, dones, noise = random_inputs(config, B, T, rng)
    if mid_done:
        dones[T // 2, 0] = True
    agents, actions, _ = rollout(config, agent0, obs, rewards, dones, noise)
    final = agents[-1]
    assert np.array_equal(final["W"], agent0["W"])  # lr = 0: the parameters did not move

    def h_T(name):
        def fun(value):
            start = dict(agent0, **{name: value})
            out, _, _ = rollout(config, start, obs, rewards, dones, noise, actions, checked=False)
            return out[-1]["h"]

        return fun

    fd_W = central_fd(h_T("W"), agent0["W"])
    fd_tau = central_fd(h_T("tau"), agent0["tau"])
    assert np.max(np.abs(final["J_W"] - fd_W)) <= 1e-7
    assert np.max(np.abs(final["J_tau"] - fd_tau)) <= 1e-7
    assert np.max(np.abs(fd_W)) > 1e-3


@settings(max_examples=15, deadline=None)
@given(
    seed=seeds,
    kind=action_kinds(),
    N=st.integers(2, 5),
    T=st.integers(3, 7),
    dt=st.floats(0.2, 1.0),
    fa=st.booleans(),
    meta=st.booleans(),
)
def test_rflo_equals_rtrl_without_recurrent_weights(seed, kind, N, T, dt, fa, meta):
    """With the recurrent block of W zero, RFLO's trace is exactly RTRL's diagonal.

    Over T steps (lr_rnn = 0 so W keeps its zero block; the heads learn): RFLO ``J_W`` equals
    ``J_W[:, i, i, :]`` of RTRL, RTRL's off-diagonal blocks are exactly zero, and the traces,
    directions and (on a last step with lr_rnn > 0) the updates agree to rtol 1e-12.
    """
    base = rs.Config(
        obs_dim=2,
        n_hidden=N,
        feedback_alignment=fa,
        meta_rl=meta,
        dt=dt,
        lr_rnn=0.0,
        lr_td=1e-2,
        **kind,
    )
    rflo, rtrl = base.replace(jacobian="rflo"), base.replace(jacobian="rtrl")
    B = 2
    rng = np.random.default_rng(seed)
    obs, rewards, dones, noise = random_inputs(base, B, T + 1, rng)
    a_rflo = rs.init(rflo, B, seed, "float64")
    a_rtrl = rs.init(rtrl, B, seed, "float64")
    n_in = base.input_dim
    for agent in (a_rflo, a_rtrl):
        agent["W"][:, n_in : n_in + N] = 0.0
    close = {"rtol": 1e-12, "atol": 1e-15}
    diag = np.arange(N)
    for t in range(T + 1):
        if t == T:  # last step: let the RNN learn too; its update must agree as well
            rflo, rtrl = rflo.replace(lr_rnn=1e-2), rtrl.replace(lr_rnn=1e-2)
        a_rflo, act_f, inf_f = rs.step(rflo, a_rflo, obs[t], rewards[t], dones[t], noise[t])
        a_rtrl, act_r, inf_r = rs.step(rtrl, a_rtrl, obs[t], rewards[t], dones[t], noise[t])
        J_W, J_tau = a_rtrl["J_W"], a_rtrl["J_tau"]
        np.testing.assert_allclose(a_rflo["J_W"], J_W[:, diag, diag, :], **close)
        np.testing.assert_allclose(a_rflo["J_tau"], J_tau[:, diag, diag], **close)
        off = ~np.eye(N, dtype=bool)
        assert np.all(J_W[:, off, :] == 0.0) and np.all(J_tau[:, off] == 0.0)
        np.testing.assert_array_equal(act_f, act_r)
        for name in ("h", "e_W", "e_tau", "e_W_A", "e_W_C", "e_b_C", "v_prev"):
            np.testing.assert_allclose(a_rflo[name], a_rtrl[name], **close)
        for key in inf_f:
            if key.startswith(("direction.", "update.")):
                np.testing.assert_allclose(inf_f[key], inf_r[key], **close)
    assert np.any(inf_r["update.W"] != 0.0)
    assert np.any(J_W != 0.0)
