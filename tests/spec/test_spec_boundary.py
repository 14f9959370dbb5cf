"""Self-tests of the public boundary: errors, dtypes, and the initial distributions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from spec_helpers import action_kinds, random_inputs, seeds

import rtrrl_spec as rs
from rtrrl_spec import SpecError

DISCRETE = rs.Config(obs_dim=3, n_hidden=4, n_actions=3)


def _inputs(config, B=2, dtype="float64"):
    rng = np.random.default_rng(0)
    obs, rewards, dones, noise = random_inputs(config, B, 1, rng)
    return obs[0].astype(dtype), rewards[0].astype(dtype), dones[0], noise[0].astype(dtype)


def test_wrong_obs_shape_is_rejected():
    """An observation of the wrong width or batch size raises SpecError naming ``obs``."""
    agent = rs.init(DISCRETE, 2, 0)
    obs, reward, done, noise = _inputs(DISCRETE)
    with pytest.raises(SpecError, match=r"obs has shape \(2, 4\), expected \(2, 3\)"):
        rs.step(DISCRETE, agent, np.zeros((2, 4)), reward, done, noise)
    with pytest.raises(SpecError, match="obs has shape"):
        rs.step(DISCRETE, agent, obs[:1], reward, done, noise)


def test_unknown_jacobian_is_rejected():
    """``Config(jacobian=...)`` outside rflo/rtrl raises SpecError listing the choices."""
    with pytest.raises(SpecError, match=r"unknown jacobian 'bptt'.*rflo.*rtrl"):
        rs.Config(obs_dim=2, n_actions=2, jacobian="bptt")


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.5, 1.5])
def test_uniform_noise_outside_open_interval_is_rejected(bad):
    """Discrete noise must lie strictly inside (0, 1); both ends 0.0 and 1.0 are rejected."""
    agent = rs.init(DISCRETE, 2, 0)
    obs, reward, done, noise = _inputs(DISCRETE)
    noise = noise.copy()
    noise[1, 2] = bad
    with pytest.raises(SpecError, match=r"strictly inside \(0, 1\)"):
        rs.step(DISCRETE, agent, obs, reward, done, noise)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["obs", "reward", "h", "W"])
def test_non_finite_values_are_rejected(value, where):
    """NaN or ±inf in the observation, the reward or any agent array raises SpecError."""
    agent = rs.init(DISCRETE, 2, 0, "float64")
    obs, reward, done, noise = _inputs(DISCRETE)
    obs, reward = obs.copy(), reward.copy()
    if where == "obs":
        obs[1, 0] = value
    elif where == "reward":
        reward[0] = value
    else:
        agent[where] = agent[where].copy()
        agent[where].flat[0] = value
    with pytest.raises(SpecError, match=rf"{where}.*non-finite"):
        rs.step(DISCRETE, agent, obs, reward, done, noise)


def test_wrong_dtype_in_agent_is_rejected():
    """A float32 array inside a float64 agent raises SpecError naming the array and dtypes."""
    agent = rs.init(DISCRETE, 2, 0, "float64")
    agent["h"] = agent["h"].astype(np.float32)
    with pytest.raises(SpecError, match=r"agent\['h'\] has dtype float32, expected float64"):
        rs.step(DISCRETE, agent, *_inputs(DISCRETE))


def test_agent_of_another_config_is_rejected():
    """An RFLO agent stepped under an RTRL config (or dutch under accumulating) is rejected."""
    agent = rs.init(DISCRETE, 2, 0)
    with pytest.raises(SpecError, match=r"J_W.*has shape"):
        rs.step(DISCRETE.replace(jacobian="rtrl"), agent, *_inputs(DISCRETE, dtype="float32"))
    with pytest.raises(SpecError, match=r"missing \['x_W_C', 'x_b_C'\]"):
        rs.step(DISCRETE.replace(trace="dutch"), agent, *_inputs(DISCRETE, dtype="float32"))


@settings(max_examples=15, deadline=None)
@given(
    seed=seeds,
    kind=action_kinds(),
    body=st.sampled_from(["ctrnn", "lru", "linear"]),
    jacobian=st.sampled_from(["rflo", "rtrl"]),
    trace=st.sampled_from(["accumulating", "dutch"]),
    rate=st.sampled_from([None, 0.01]),
    dtype=st.sampled_from(["float32", "float64"]),
)
def test_agents_keep_their_dtype(seed, kind, body, jacobian, trace, rate, dtype):
    """Over several steps fed float64 inputs every agent array keeps its layout dtype, the
    action is int32 (discrete) or the agent's float dtype, and every float ``info`` entry has
    the agent's dtype."""
    config = rs.Config(
        obs_dim=2,
        n_hidden=3,
        body=body,
        jacobian=jacobian,
        trace=trace,
        reward_rate_lr=rate,
        **kind,
    )
    B = 2
    agent = rs.init(config, B, seed, dtype)
    spec = rs.layout(config, B)
    obs, rewards, dones, noise = random_inputs(config, B, 3, np.random.default_rng(seed))
    for t in range(3):
        agent, action, info = rs.step(config, agent, obs[t], rewards[t], dones[t], noise[t])
        assert set(agent) == set(spec)
        for name, array_spec in spec.items():
            assert agent[name].dtype == array_spec.numpy_dtype(dtype), name
            assert agent[name].shape == array_spec.shape, name
        assert action.dtype == (np.int32 if config.discrete else np.dtype(dtype))
        for key, value in info.items():
            if key != "sample" or not config.discrete:
                assert np.asarray(value).dtype == np.dtype(dtype), key


@settings(max_examples=15, deadline=None)
@given(seed=seeds, kind=action_kinds(), jacobian=st.sampled_from(["rflo", "rtrl"]))
def test_init_is_deterministic_and_dtype_consistent(seed, kind, jacobian):
    """``init`` is a function of the seed: equal seeds give bitwise equal agents, a float32
    agent is the float64 agent of the same seed rounded to float32, and another seed differs."""
    config = rs.Config(obs_dim=2, n_hidden=4, jacobian=jacobian, **kind)
    a = rs.init(config, 2, seed, "float64")
    b = rs.init(config, 2, seed, "float64")
    c = rs.init(config, 2, seed, "float32")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        np.testing.assert_array_equal(c[name], a[name].astype(c[name].dtype))
    other = rs.init(config, 2, seed + 1 if seed < 2**32 - 1 else 0, "float64")
    assert not np.array_equal(a["W"], other["W"])


def test_initial_distributions():
    """Initial scales: W has std sqrt(1/Z) (within 2 % over N*Z ≈ 10⁵ entries) and is truncated
    at 2 std (before the variance-restoring rescale), tau ~ U[1, 5], Glorot heads and feedback
    with std sqrt(2/(F+K)), b_C and all state zero."""
    config = rs.Config(obs_dim=200, n_hidden=300, n_actions=300, meta_rl=False)
    agent = rs.init(config, 1, 1234, "float64")
    Z = config.z_dim
    bound = 2.0 * np.sqrt(1.0 / Z) / 0.87962566103423978
    W = agent["W"]
    assert abs(W.std() / np.sqrt(1.0 / Z) - 1.0) < 0.02
    assert abs(W.mean()) < 0.02 * np.sqrt(1.0 / Z)
    assert np.abs(W).max() <= bound
    assert np.abs(W).max() > 0.95 * bound  # the truncation point is actually reached
    tau = agent["tau"]
    assert tau.min() >= 1.0 and tau.max() <= 5.0
    assert abs(tau.mean() - 3.0) < 0.25
    for name, fan_out in (("W_A", 300), ("B_A", 300)):
        std = np.sqrt(2.0 / (config.feature_dim + fan_out))
        assert abs(agent[name].std() / std - 1.0) < 0.02, name
        assert np.abs(agent[name]).max() <= 2.0 * std / 0.87962566103423978
    assert np.all(agent["b_C"] == 0.0)
    for name, array_spec in rs.layout(config, 1).items():
        if array_spec.group in ("env", "optimizer"):
            assert np.all(agent[name] == 0), name
