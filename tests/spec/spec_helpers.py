"""Shared helpers of the reference self-tests: rollouts, own densities, finite differences.

Everything here is written from the docstrings of ``rtrrl_spec`` without calling its internals,
so the tests compare the reference against an independent computation.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from hypothesis import strategies as st

import rtrrl_spec as rs

LOG_2PI = float(np.log(2.0 * np.pi))


def env_names(config: rs.Config) -> list[str]:
    """Names of the per-environment arrays of the layout."""
    return [k for k, s in rs.layout(config, 1).items() if s.group == "env"]


def shared_names(config: rs.Config) -> list[str]:
    """Names of the arrays shared by the batch (parameters, feedback, optimizer state)."""
    return [k for k, s in rs.layout(config, 1).items() if s.group != "env"]


def random_inputs(config: rs.Config, B: int, T: int, rng: np.random.Generator):
    """Float64 observations, rewards, ``done`` flags (first step True) and noise for T steps."""
    obs = rng.normal(size=(T, B, config.obs_dim))
    rewards = rng.normal(size=(T, B))
    dones = np.zeros((T, B), dtype=bool)
    dones[0] = True
    noise = np.stack([rs.draw_noise(config, B, rng, "float64") for _ in range(T)])
    return obs, rewards, dones, noise


def rollout(config, agent, obs, rewards, dones, noise, forced_actions=None, checked=True):
    """Step ``agent`` through the inputs; returns (agents after each step, actions, infos).

    With ``forced_actions`` (the actions of an earlier run), ``a_prev`` is overwritten before
    every step after the first, so the RNN inputs do not depend on the parameters.
    """
    fn = rs.step if checked else rs.step_unchecked
    agents, actions, infos = [], [], []
    for t in range(obs.shape[0]):
        current = dict(agent)
        if forced_actions is not None and t > 0:
            current["a_prev"] = forced_actions[t - 1].astype(agent["a_prev"].dtype)
        agent, action, info = fn(config, current, obs[t], rewards[t], dones[t], noise[t])
        agents.append(agent)
        actions.append(action)
        infos.append(info)
    return agents, actions, infos


def sigmoid(z):
    """Logistic function."""
    return 1.0 / (1.0 + np.exp(-z))


def policy_terms(config: rs.Config, features, W_A, sample):
    """Own ln π(sample) and entropy H per environment, from the formulas of ``heads``.

    Discrete: ``sample`` is the action index. Continuous: the unclipped sample ``a``, so the
    density is ``ln N(a; μ(W_A), σ(W_A))`` at fixed ``a``.
    """
    out = features @ W_A
    if config.discrete:
        z = out - out.max(axis=-1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
        idx = np.asarray(sample).astype(int)
        log_prob = log_p[np.arange(out.shape[0]), idx]
        entropy = -(np.exp(log_p) * log_p).sum(axis=-1)
        return log_prob, entropy
    D = config.action_dim
    m, s = out[:, :D], out[:, D:]
    if config.bounded:
        lo, hi = np.asarray(config.action_low), np.asarray(config.action_high)
        mu = lo + (hi - lo) * sigmoid(m)
    else:
        mu = m
    sigma = np.log1p(np.exp(-2.0 + 4.0 * sigmoid(s)))
    z = (sample - mu) / sigma
    log_prob = (-0.5 * z * z - np.log(sigma) - 0.5 * LOG_2PI).sum(axis=-1)
    entropy = (np.log(sigma) + 0.5 + 0.5 * LOG_2PI).sum(axis=-1)
    return log_prob, entropy


def sigma_of(config: rs.Config, features, W_A):
    """Own σ (B, D) of a continuous policy."""
    s = (features @ W_A)[:, config.action_dim :]
    return np.log1p(np.exp(-2.0 + 4.0 * sigmoid(s)))


def central_fd(fun: Callable[[np.ndarray], np.ndarray], x: np.ndarray, eps: float = 1e-6):
    """Central finite differences: ``out.shape + x.shape`` derivatives of ``fun`` at ``x``."""
    x = np.asarray(x, dtype=np.float64)
    base = np.asarray(fun(x.copy()))
    grad = np.zeros(base.shape + x.shape)
    for idx in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[idx] += eps
        minus[idx] -= eps
        grad[(...,) + idx] = (np.asarray(fun(plus)) - np.asarray(fun(minus))) / (2.0 * eps)
    return grad


@st.composite
def action_kinds(draw):
    """Keyword arguments of one action space: discrete, bounded or unbounded continuous."""
    kind = draw(st.sampled_from(["discrete", "bounded", "unbounded"]))
    if kind == "discrete":
        return {"n_actions": draw(st.integers(2, 4))}
    D = draw(st.integers(1, 2))
    if kind == "unbounded":
        return {"action_dim": D}
    low = tuple(draw(st.floats(-3.0, 0.0)) for _ in range(D))
    high = tuple(lo + draw(st.floats(0.5, 3.0)) for lo in low)
    return {"action_dim": D, "action_low": low, "action_high": high}


seeds = st.integers(0, 2**32 - 1)


def env_slice(config: rs.Config, agent, rows):
    """The agent restricted to environments ``rows`` (a slice); shared arrays unchanged."""
    env = set(env_names(config))
    return {k: (v[rows] if k in env else v) for k, v in agent.items()}


def perturb_env_state(config: rs.Config, agent, rng: np.random.Generator):
    """A copy with every per-environment float array replaced by random values."""
    out = dict(agent)
    for name in env_names(config):
        if name == "a_prev":
            if config.discrete:
                out[name] = rng.integers(0, config.n_actions, agent[name].shape).astype(np.int32)
            else:
                out[name] = rng.normal(size=agent[name].shape)
        else:
            out[name] = rng.normal(size=agent[name].shape).astype(agent[name].dtype)
    return out
