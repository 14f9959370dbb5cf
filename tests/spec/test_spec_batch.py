"""Self-tests of episode boundaries and batches: nothing leaks, a batch is B single agents."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from spec_helpers import (
    action_kinds,
    env_names,
    env_slice,
    perturb_env_state,
    random_inputs,
    rollout,
    seeds,
)

import rtrrl_spec as rs

PER_ENV_INFO = ("td_error", "value", "log_prob", "entropy", "sample", "features")


def _config(kind, **kw):
    return rs.Config(obs_dim=2, n_hidden=3, lr_td=1e-2, lr_rnn=1e-2, **kind, **kw)


variants = st.fixed_dictionaries(
    {
        "body": st.sampled_from(["ctrnn", "lru", "linear"]),
        "jacobian": st.sampled_from(["rflo", "rtrl"]),
        "trace": st.sampled_from(["accumulating", "dutch"]),
        "feedback_alignment": st.booleans(),
        "meta_rl": st.booleans(),
        "reward_rate_lr": st.sampled_from([None, 0.1]),
    }
)


@settings(max_examples=25, deadline=None)
@given(seed=seeds, kind=action_kinds(), variant=variants)
def test_done_resets_and_nothing_leaks(seed, kind, variant):
    """After a step with ``done = True`` nothing of the old episode is left in the new state.

    Two agents with the same parameters and optimizer state but different per-environment
    state (h, J, traces, dutch memory, v_prev, a_prev), stepped with ``done = True``, the same
    observation and noise and different rewards, give bitwise equal h, J, traces, v_prev,
    a_prev, action and per-env ``info``. Only the update (old traces, v_prev, reward) differs,
    which shows that the two states really were different.
    """
    config = _config(kind, **variant)
    B = 2
    rng = np.random.default_rng(seed)
    agent = rs.init(config, B, seed, "float64")
    obs, rewards, dones, noise = random_inputs(config, B, 3, rng)
    agent = rollout(config, agent, obs, rewards, dones, noise)[0][-1]
    other = perturb_env_state(config, agent, rng)
    done = np.ones(B, dtype=bool)
    new_a, act_a, info_a = rs.step(config, agent, obs[0], rewards[0], done, noise[0])
    new_b, act_b, info_b = rs.step(config, other, obs[0], rewards[0] + 1.0, done, noise[0])
    np.testing.assert_array_equal(act_a, act_b)
    for name in env_names(config):
        np.testing.assert_array_equal(new_a[name], new_b[name], err_msg=name)
    for key in ("value", "log_prob", "entropy", "sample", "features"):
        np.testing.assert_array_equal(info_a[key], info_b[key], err_msg=key)
    assert any(
        np.any(info_a[f"direction.{k}"] != info_b[f"direction.{k}"]) for k in rs.params_of(config)
    )
    assert np.any(info_a["td_error"] != info_b["td_error"])


@settings(max_examples=25, deadline=None)
@given(
    seed=seeds,
    kind=action_kinds(),
    variant=variants,
    B=st.integers(2, 4),
    done_p=st.floats(0.0, 0.5),
)
def test_batch_equals_separate_environments(seed, kind, variant, B, done_p):
    """One step of a B-environment agent equals B single-environment steps, except the update.

    Each environment's slice (shared parameters and optimizer state) stepped alone gives the
    same new per-env state, action (discrete: exactly) and per-env ``info`` (to 1e-12: matrix
    products of different batch sizes may round differently), and the batch's
    ``direction.*`` is the mean of the singles' directions.
    """
    config = _config(kind, **variant)
    rng = np.random.default_rng(seed)
    agent = rs.init(config, B, seed, "float64")
    obs, rewards, dones, noise = random_inputs(config, B, 4, rng)
    dones[1:] = rng.random((3, B)) < done_p
    agent = rollout(config, agent, obs[:3], rewards[:3], dones[:3], noise[:3])[0][-1]
    step_in = (obs[3], rewards[3], dones[3], noise[3])
    new, action, info = rs.step(config, agent, *step_in)
    close = {"rtol": 1e-12, "atol": 1e-12}
    singles = []
    for b in range(B):
        rows = slice(b, b + 1)
        one_new, one_act, one_info = rs.step(
            config, env_slice(config, agent, rows), *(x[rows] for x in step_in)
        )
        if config.discrete:
            np.testing.assert_array_equal(one_act, action[rows])
        else:  # matrix products of different batch sizes may round differently
            np.testing.assert_allclose(one_act, action[rows], **close)
        for name in env_names(config):
            np.testing.assert_allclose(one_new[name], new[name][rows], err_msg=name, **close)
        for key in PER_ENV_INFO:
            np.testing.assert_allclose(one_info[key], info[key][rows], err_msg=key, **close)
        singles.append(one_info)
    for k in rs.params_of(config):
        mean = np.mean([s[f"direction.{k}"] for s in singles], axis=0)
        np.testing.assert_allclose(info[f"direction.{k}"], mean, err_msg=k, **close)
