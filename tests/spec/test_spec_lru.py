"""Self-tests of the LRU body (exact online sensitivities, ring initialization) and of the
frozen body (``freeze_rnn``)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from spec_helpers import action_kinds, central_fd, random_inputs, rollout, seeds

import rtrrl_spec as rs
from rtrrl_spec import lru
from rtrrl_spec.heads import policy_step


def _complex_rollout(params, xs, resets):
    """y_T of the LRU written directly in complex128 (independent of ``rtrrl_spec.lru``)."""
    lam = np.exp(-np.exp(params["log_nu"]) + 1j * np.exp(params["log_theta"]))
    B_in = (params["B_re"] + 1j * params["B_im"]) * np.exp(params["log_gamma"])[:, None]
    C = params["C_re"] + 1j * params["C_im"]
    h = np.zeros((xs.shape[1], lam.shape[0]), complex)
    for t in range(xs.shape[0]):
        h = np.where(resets[t][:, None], 0.0, h)
        h = lam * h + xs[t] @ B_in.T
    return (h @ C.T).real


def _random_lru_params(rng, N, n_in):
    params = lru.init_lru(rng, N, n_in, r_min=0.3, r_max=0.95, max_phase=np.pi)
    # Move C and γ off their initial values so no term of the projection is special.
    params["log_gamma"] = params["log_gamma"] + rng.normal(scale=0.3, size=N)
    return params


@settings(max_examples=25, deadline=None)
@given(
    seed=seeds,
    N=st.integers(1, 5),
    n_in=st.integers(1, 4),
    B=st.integers(1, 3),
    T=st.integers(1, 9),
    reset_at=st.integers(0, 8),
)
def test_lru_online_gradients_equal_finite_differences_of_rollout(seed, N, n_in, B, T, reset_at):
    """The online sensitivities, projected by ``project_lru``, equal the gradient of
    ``s · y_T`` over a T-step rollout with fixed parameters, for all seven parameters.

    Checked against central finite differences of an independent complex128 rollout, with an
    episode reset of environment 0 at step ``reset_at`` (when it lies inside the rollout): the
    sensitivities only reach back to it. Max abs error <= 1e-7.
    """
    rng = np.random.default_rng(seed)
    params = _random_lru_params(rng, N, n_in)
    xs = rng.normal(size=(T, B, n_in))
    signal = rng.normal(size=(B, N))
    resets = np.zeros((T, B), bool)
    resets[0] = True
    if reset_at < T:
        resets[reset_at, 0] = True

    h_re, h_im = np.zeros((B, N)), np.zeros((B, N))
    J = {k: np.zeros((B, N, n_in) if "_in_" in k else (B, N)) for k in lru.LRU_SENSITIVITIES}
    for t in range(T):
        keep = ~resets[t]
        h_re, h_im = h_re * keep[:, None], h_im * keep[:, None]
        J = {k: v * keep.reshape((B,) + (1,) * (v.ndim - 1)) for k, v in J.items()}
        step = lru.lru_step(params, h_re, h_im, xs[t])
        J = lru.lru_sensitivity_update(J, h_re, h_im, xs[t], step)
        h_re, h_im = step.h_re, step.h_im
    np.testing.assert_allclose(step.y, _complex_rollout(params, xs, resets), atol=1e-12)
    grads = lru.project_lru(signal, params, J, step)

    for name in lru.LRU_PARAMS:

        def loss(value, name=name):
            return np.sum(signal * _complex_rollout(dict(params, **{name: value}), xs, resets))

        fd = central_fd(loss, params[name])
        assert grads[name].shape == (B, *params[name].shape)
        err = np.max(np.abs(grads[name].sum(axis=0) - fd))
        assert err <= 1e-7, (name, err)


@settings(max_examples=15, deadline=None)
@given(
    seed=seeds,
    kind=action_kinds(),
    N=st.integers(1, 4),
    T=st.integers(2, 7),
    fa=st.booleans(),
    meta=st.booleans(),
    mid_done=st.booleans(),
)
def test_agent_lru_trace_is_gradient_of_signal_times_features(seed, kind, N, T, fa, meta, mid_done):
    """With ``λ_rnn = 0`` the agent's LRU traces hold this step's gradient ``∂(g · y)/∂θ``.

    ``g`` is the signal into the body (``c (B_C + η_π B_A ∂lnπ/∂out)``, read from the last
    step's heads as the spec defines it) and ``y`` the features after T steps; learning rates
    are 0 so parameters stay fixed, and finite differences re-run the rollout with the recorded
    actions fed back. Meta-RL inputs, feedback alignment on or off, an optional mid-rollout
    episode boundary. Max abs error <= 1e-7.
    """
    config = rs.Config(
        obs_dim=2,
        n_hidden=N,
        body="lru",
        feedback_alignment=fa,
        meta_rl=meta,
        lambda_rnn=0.0,
        lr_td=0.0,
        lr_rnn=0.0,
        var_scaling=False,
        **kind,
    )
    B = 2
    rng = np.random.default_rng(seed)
    agent0 = rs.init(config, B, seed, "float64")
    obs, rewards, dones, noise = random_inputs(config, B, T, rng)
    if mid_done:
        dones[T // 2, 0] = True
    agents, actions, infos = rollout(config, agent0, obs, rewards, dones, noise)
    final, info = agents[-1], infos[-1]
    for name in rs.LRU_PARAMS:
        assert np.array_equal(final[name], agent0[name])

    # The signal on the features, from the heads' output gradients of the last step (the heads
    # have their own finite-difference tests in test_spec_gradients.py).
    W_A = agent0["B_A"] if fa else agent0["W_A"]
    W_C = agent0["B_C"] if fa else agent0["W_C"]
    dlogp = policy_step(config, info["features"] @ agent0["W_A"], noise[-1]).dlogp_dout
    signal = W_C[:, 0][None, :] + config.eta_pi * dlogp @ W_A.T

    for name in rs.LRU_PARAMS:

        def loss(value, name=name):
            start = dict(agent0, **{name: value})
            _, _, out = rollout(config, start, obs, rewards, dones, noise, actions, checked=False)
            return np.sum(signal * out[-1]["features"], axis=-1)  # (B,)

        fd = central_fd(loss, agent0[name])  # (B, *shape)
        err = np.max(np.abs(final[f"e_{name}"] - fd))
        assert err <= 1e-7, (name, err)
    assert np.max(np.abs(final["e_B_re"])) > 1e-4


@settings(max_examples=20, deadline=None)
@given(
    seed=seeds,
    N=st.integers(1, 64),
    r=st.tuples(st.floats(0.0, 0.99), st.floats(0.01, 1.0)).filter(lambda t: t[0] < t[1]),
    max_phase=st.floats(0.1, 2 * np.pi),
)
def test_lru_ring_initialization(seed, N, r, max_phase):
    """``|λ|`` on the ring ``[r_min, r_max]``, phases in ``[0, max_phase)``, ``exp(γ) =
    sqrt(1 − |λ|²)``, and the parameters finite."""
    r_min, r_max = r
    config = rs.Config(
        obs_dim=3,
        n_actions=2,
        body="lru",
        n_hidden=N,
        lru_r_min=r_min,
        lru_r_max=r_max,
        lru_max_phase=max_phase,
    )
    agent = rs.init(config, 1, seed, "float64")
    modulus = np.exp(-np.exp(agent["log_nu"]))
    phase = np.exp(agent["log_theta"])
    assert np.all(np.isfinite(np.concatenate([agent[k].ravel() for k in rs.LRU_PARAMS])))
    assert np.all(modulus >= r_min * (1 - 1e-12)) and np.all(modulus <= r_max * (1 + 1e-12))
    assert np.all(modulus < 1.0)
    assert np.all(phase >= 0.0) and np.all(phase < max_phase * (1 + 1e-12))
    np.testing.assert_allclose(np.exp(agent["log_gamma"]), np.sqrt(1 - modulus**2), rtol=1e-12)


def test_lru_ring_initialization_spreads_over_the_ring():
    """With many units the squared moduli are uniform between ``r_min²`` and ``r_max²``."""
    config = rs.Config(obs_dim=1, n_actions=2, body="lru", n_hidden=4000, lru_r_min=0.5)
    agent = rs.init(config, 1, 0, "float64")
    sq = np.exp(-2 * np.exp(agent["log_nu"]))
    u = (sq - 0.25) / 0.75
    # Kolmogorov-Smirnov distance to U[0, 1]; 0.03 is far above its 4000-sample noise (~0.02
    # at the 99% level would be 0.026).
    grid = np.sort(u)
    ks = np.max(np.abs(grid - (np.arange(1, grid.size + 1) / grid.size)))
    assert ks < 0.03


@settings(max_examples=20, deadline=None)
@given(
    seed=seeds,
    kind=action_kinds(),
    body=st.sampled_from(["ctrnn", "lru"]),
    jacobian=st.sampled_from(["rflo", "rtrl"]),
    trace=st.sampled_from(["accumulating", "dutch"]),
    T=st.integers(1, 6),
)
def test_frozen_body_is_the_trained_body_with_zero_rnn_learning_rate(
    seed, kind, body, jacobian, trace, T
):
    """``freeze_rnn``: no Jacobian, body traces or ``rnn`` optimizer state in the layout, the
    body never moves, and everything the frozen agent has equals the same agent trained with
    ``lr_rnn = 0`` (same seed): the heads learn exactly as they would beside a fixed body."""
    trained = rs.Config(
        obs_dim=2, n_hidden=3, body=body, jacobian=jacobian, trace=trace, lr_rnn=0.0, **kind
    )
    frozen = trained.replace(freeze_rnn=True, lr_rnn=1e-2)  # lr_rnn is unused when frozen
    names = set(rs.layout(frozen, 1))
    assert not any(k.startswith(("J_", "count_rnn", "B_A", "B_C")) for k in names)
    assert not any(f"e_{k}" in names or f"mu_{k}" in names for k in rs.body_params(frozen))
    B = 2
    rng = np.random.default_rng(seed)
    obs, rewards, dones, noise = random_inputs(trained, B, T, rng)
    a_t, _, i_t = rollout(trained, rs.init(trained, B, seed, "float64"), obs, rewards, dones, noise)
    a_f, _, i_f = rollout(frozen, rs.init(frozen, B, seed, "float64"), obs, rewards, dones, noise)
    start = rs.init(frozen, B, seed, "float64")
    for name in rs.body_params(frozen):
        np.testing.assert_array_equal(a_f[-1][name], start[name])
    for name, value in a_f[-1].items():
        np.testing.assert_allclose(value, a_t[-1][name], rtol=1e-12, atol=1e-300, err_msg=name)
    np.testing.assert_allclose(i_f[-1]["features"], i_t[-1]["features"], rtol=1e-12)


def test_freeze_rnn_needs_a_recurrent_body():
    try:
        rs.Config(obs_dim=1, n_actions=2, body="linear", freeze_rnn=True)
    except rs.SpecError as err:
        assert "recurrent body" in str(err)
    else:
        raise AssertionError("freeze_rnn with the linear body was accepted")
