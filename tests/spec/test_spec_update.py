"""Self-tests of the traces and the update: λ = 0, zero TD error, Adam, average reward, dutch."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from spec_helpers import (
    action_kinds,
    central_fd,
    perturb_env_state,
    policy_terms,
    random_inputs,
    rollout,
    seeds,
)

import rtrrl_spec as rs

TRACE_NAMES = ("e_W_A", "e_W_C", "e_b_C", "e_W", "e_tau")


def _warm_agent(config, B, seed, steps=3):
    """A float64 agent after a few steps (nonzero h, J, traces, optimizer state)."""
    rng = np.random.default_rng(seed)
    agent = rs.init(config, B, seed, "float64")
    obs, rewards, dones, noise = random_inputs(config, B, steps, rng)
    agents, _, _ = rollout(config, agent, obs, rewards, dones, noise)
    return agents[-1], rng


def _config(kind, **kw):
    return rs.Config(obs_dim=2, n_hidden=3, **kind, **kw)


@settings(max_examples=25, deadline=None)
@given(
    seed=seeds,
    kind=action_kinds(),
    body=st.sampled_from(["ctrnn", "lru", "linear"]),
    jacobian=st.sampled_from(["rflo", "rtrl"]),
    trace=st.sampled_from(["accumulating", "dutch"]),
)
def test_zero_lambda_traces_are_immediate_gradients(seed, kind, body, jacobian, trace):
    """With all three λ = 0 the new traces are this step's immediate gradients.

    A warm agent whose traces were replaced by random values, stepped with ``done = False``,
    gives bitwise the same traces as the same agent with zero traces; and the actor and critic
    traces equal central finite differences of ln π(a) and v at the step's features (var_scaling
    off, so no factor).
    """
    config = _config(
        kind,
        body=body,
        jacobian=jacobian,
        trace=trace,
        var_scaling=False,
        lambda_actor=0.0,
        lambda_critic=0.0,
        lambda_rnn=0.0,
        lr_td=1e-2,
        lr_rnn=1e-2,
    )
    B = 2
    agent, rng = _warm_agent(config, B, seed)
    noisy, zeroed = dict(agent), dict(agent)
    for name in TRACE_NAMES:
        if name in agent:
            noisy[name] = rng.normal(size=agent[name].shape)
            zeroed[name] = np.zeros_like(agent[name])
    obs, rewards, _, noise = random_inputs(config, B, 1, rng)
    done = np.zeros(B, dtype=bool)
    a_noisy, _, info = rs.step(config, noisy, obs[0], rewards[0], done, noise[0])
    a_zero, _, _ = rs.step(config, zeroed, obs[0], rewards[0], done, noise[0])
    for name in TRACE_NAMES:
        if name in agent:
            np.testing.assert_array_equal(a_noisy[name], a_zero[name])
    f = info["features"]
    fd_logp = central_fd(lambda w: policy_terms(config, f, w, info["sample"])[0], agent["W_A"])
    assert np.max(np.abs(a_noisy["e_W_A"] - fd_logp)) <= 1e-7
    np.testing.assert_allclose(a_noisy["e_W_C"][:, :, 0], f, rtol=1e-14, atol=0)
    np.testing.assert_array_equal(a_noisy["e_b_C"], np.ones((B, 1)))


@settings(max_examples=25, deadline=None)
@given(
    seed=seeds,
    kind=action_kinds(),
    body=st.sampled_from(["ctrnn", "lru", "linear"]),
    jacobian=st.sampled_from(["rflo", "rtrl"]),
    done=st.lists(st.booleans(), min_size=2, max_size=2),
)
def test_zero_td_error_and_entropy_rate_move_nothing(seed, kind, body, jacobian, done):
    """With δ = 0 in every environment, η_H = 0 and zero Adam moments, no parameter moves.

    γ = 0 and ``reward = v_prev`` make δ exactly zero whether or not the episode ended; every
    ``update.*`` is exactly zero and the parameters are bitwise unchanged (although the traces
    are large and random). Sensitivity: ``reward = v_prev + 1`` does move parameters.
    """
    config = _config(
        kind,
        body=body,
        jacobian=jacobian,
        gamma=0.0,
        entropy_rate=0.0,
        lr_td=0.1,
        lr_rnn=0.1,
    )
    B = 2
    rng = np.random.default_rng(seed)
    agent = perturb_env_state(config, rs.init(config, B, seed, "float64"), rng)
    obs, _, _, noise = random_inputs(config, B, 1, rng)
    done = np.array(done)
    new, _, info = rs.step(config, agent, obs[0], agent["v_prev"], done, noise[0])
    np.testing.assert_array_equal(info["td_error"], np.zeros(B))
    for name in rs.params_of(config):
        assert np.all(info[f"update.{name}"] == 0.0), name
        np.testing.assert_array_equal(new[name], agent[name])
    _, _, moved = rs.step(config, agent, obs[0], agent["v_prev"] + 1.0, done, noise[0])
    assert any(np.any(moved[f"update.{k}"] != 0.0) for k in rs.params_of(config))


@settings(max_examples=25, deadline=None)
@given(
    seed=seeds,
    kind=action_kinds(),
    body=st.sampled_from(["ctrnn", "lru", "linear"]),
    lr_td=st.floats(1e-4, 0.1),
    lr_rnn=st.floats(1e-4, 0.1),
    log_eps=st.floats(-8.0, -2.0),
    done=st.booleans(),
)
def test_adam_first_step_is_lr_times_sign(seed, kind, body, lr_td, lr_rnn, log_eps, done):
    """Adam's first step from zero moments moves each parameter by about ``lr · sign(g)``.

    Exactly ``lr g / (|g| + ε)``, so ``|Δθ − lr sign(g)| <= lr ε / |g|`` (plus rounding of
    ``θ + Δθ``), with g the batch-mean direction (no clipping); a zero g moves nothing. The
    bound fails for ε inside the square root or a missing bias correction.
    """
    eps = 10.0**log_eps
    config = _config(
        kind,
        body=body,
        clip_norm=None,
        lr_td=lr_td,
        lr_rnn=lr_rnn,
        adam_eps=eps,
        entropy_rate=0.3,
    )
    B = 2
    rng = np.random.default_rng(seed)
    agent = perturb_env_state(config, rs.init(config, B, seed, "float64"), rng)
    if config.body == "ctrnn":
        agent["tau"] = rng.uniform(1.5, 5.0, size=config.n_hidden)  # away from the clip
    obs, rewards, _, noise = random_inputs(config, B, 1, rng)
    _, _, info = rs.step(config, agent, obs[0], rewards[0], np.full(B, done), noise[0])
    for name in rs.params_of(config):
        lr = lr_td if name in rs.TD_PARAMS else lr_rnn
        g, delta = info[f"direction.{name}"], info[f"update.{name}"]
        tiny = 2.0 * np.spacing(np.abs(agent[name]) + lr)
        zero = g == 0.0
        assert np.all(delta[zero] == 0.0), name
        bound = lr * eps / np.abs(g[~zero]) + tiny[~zero]
        assert np.all(np.abs(delta[~zero] - lr * np.sign(g[~zero])) <= bound), name
    assert np.any(info["direction.W_A"] != 0.0)


@settings(max_examples=20, deadline=None)
@given(
    seed=seeds,
    kind=action_kinds(),
    body=st.sampled_from(["ctrnn", "lru", "linear"]),
    rate_lr=st.floats(1e-3, 1.0),
    r_bar=st.floats(-2.0, 2.0),
    gamma=st.floats(0.0, 1.0),
    done=st.lists(st.booleans(), min_size=3, max_size=3),
)
def test_average_reward(seed, kind, body, rate_lr, r_bar, gamma, done):
    """Average reward: ``δ = r − r̄ + γ (1 − done) v − v_prev`` and ``r̄ ← r̄ + η_r̄ mean(δ)``."""
    config = _config(kind, body=body, reward_rate_lr=rate_lr, gamma=gamma)
    B = 3
    rng = np.random.default_rng(seed)
    agent = perturb_env_state(config, rs.init(config, B, seed, "float64"), rng)
    agent["reward_rate"] = np.asarray(r_bar)
    obs, rewards, _, noise = random_inputs(config, B, 1, rng)
    done = np.array(done)
    new, _, info = rs.step(config, agent, obs[0], rewards[0], done, noise[0])
    expected = rewards[0] - r_bar + gamma * (1.0 - done) * info["value"] - agent["v_prev"]
    np.testing.assert_allclose(info["td_error"], expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        new["reward_rate"], r_bar + rate_lr * expected.mean(), rtol=1e-12, atol=1e-12
    )
    assert new["reward_rate"].shape == ()


@settings(max_examples=20, deadline=None)
@given(
    seed=seeds,
    kind=action_kinds(),
    body=st.sampled_from(["linear", "ctrnn", "lru"]),
    meta=st.booleans(),
    T=st.integers(4, 10),
    gamma=st.floats(0.0, 1.0),
    lam=st.floats(0.0, 1.0),
    lr_td=st.floats(1e-3, 0.3),
    done_p=st.floats(0.0, 0.4),
)
def test_dutch_traces_are_true_online_td_lambda(
    seed, kind, body, meta, T, gamma, lam, lr_td, done_p
):
    """Dutch critic traces and directions equal an own true online TD(λ) (van Seijen & Sutton).

    Per environment, with ``x_t = (f_t, 1)``, the weights ``θ_t`` the agent held before step
    t (whatever Adam made of them), ``α = lr_td``::

        e ← γλ e + (1 − α γλ ⟨e, x_{t−1}⟩) x_{t−1}
        V = θ_t·x_{t−1},  V' = θ_t·x_t (0 at a terminal),  δ = r_t + γ V' − V
        dir_t = (δ + V − V_old) e − (V − V_old) x_{t−1};   V_old ← V'
        at a terminal: e ← 0, V_old ← 0

    ``direction.W_C``/``direction.b_C`` of step t is the batch mean of ``dir_t`` and the
    agent's critic trace after step t−1 is ``e`` (rtol 1e-10).
    """
    config = rs.Config(
        obs_dim=2,
        n_hidden=3,
        body=body,
        meta_rl=meta,
        trace="dutch",
        gamma=gamma,
        lambda_critic=lam,
        lr_td=lr_td,
        **kind,
    )
    B = 2
    rng = np.random.default_rng(seed)
    agent0 = rs.init(config, B, seed, "float64")
    obs, rewards, dones, noise = random_inputs(config, B, T, rng)
    dones[1:] = rng.random((T - 1, B)) < done_p
    agents, _, infos = rollout(config, agent0, obs, rewards, dones, noise)
    before = [agent0] + agents[:-1]
    X = [np.concatenate([i["features"], np.ones((B, 1))], axis=1) for i in infos]
    gl = gamma * lam
    close = {"rtol": 1e-10, "atol": 1e-12}
    assert np.all(infos[0]["direction.W_C"] == 0.0) and np.all(infos[0]["direction.b_C"] == 0.0)
    e = np.zeros((B, X[0].shape[1]))
    V_old = np.zeros(B)
    for t in range(1, T):
        theta = np.concatenate([before[t]["W_C"][:, 0], before[t]["b_C"]])
        directions = []
        for b in range(B):
            x, x_next = X[t - 1][b], X[t][b]
            e[b] = gl * e[b] + (1.0 - lr_td * gl * (e[b] @ x)) * x
            V = theta @ x
            V_next = 0.0 if dones[t, b] else theta @ x_next
            delta = rewards[t, b] + gamma * V_next - V
            directions.append((delta + V - V_old[b]) * e[b] - (V - V_old[b]) * x)
            V_old[b] = V_next
        trace = np.concatenate([agents[t - 1]["e_W_C"][:, :, 0], agents[t - 1]["e_b_C"]], axis=1)
        np.testing.assert_allclose(trace, e, **close)
        mean = np.mean(directions, axis=0)
        np.testing.assert_allclose(infos[t]["direction.W_C"][:, 0], mean[:-1], **close)
        np.testing.assert_allclose(infos[t]["direction.b_C"], mean[-1:], **close)
        for b in range(B):
            if dones[t, b]:
                e[b], V_old[b] = 0.0, 0.0
    assert np.any(infos[-1]["direction.W_C"] != 0.0)
