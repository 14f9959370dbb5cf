"""The JAX ports of popgym tasks against popgym's NumPy originals, step by step.

As gymnax checks its environments against gym's: each step starts both from the same state
(the same shuffled deck; CartPole re-synchronized from popgym's state every step), takes the same
action, and every observation, reward and termination must agree.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gymnax")
popgym_envs = pytest.importorskip("popgym.envs")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from rtrrl import envs  # noqa: E402
from rtrrl.envs._gymnax import EnvState  # noqa: E402
from rtrrl.envs._popgym_jax import (  # noqa: E402
    PORTS,
    BanditState,
    CardRecall,
    CardState,
    MineState,
    make_port,
)

CARD_CLASSES = [name for name in PORTS if name.startswith("Repeat")]
CARTPOLE_CLASSES = [name for name in PORTS if "CartPole" in name]


def _dealing_order(env: object) -> np.ndarray:
    """popgym deals from the end of ``deck.idx``: the j-th card dealt is ``idx[n - j]``."""
    deck = env.deck  # type: ignore[attr-defined]
    return deck.suits_idx[deck.idx[::-1]].astype(np.int32)


@pytest.mark.parametrize("cls", CARD_CLASSES)
def test_card_port_matches_popgym_step_by_step(cls: str) -> None:
    original = getattr(popgym_envs, cls)()
    port, params = make_port(cls)
    step = jax.jit(port.step_env)
    rng = np.random.default_rng(0)
    for seed in range(3):
        obs, _ = original.reset(seed=seed)
        state = CardState(jnp.asarray(_dealing_order(original)), jnp.zeros((), jnp.int32))
        assert int(state.cards[0]) == obs
        steps = 0
        while True:
            # Mostly right answers, so that both signs of the reward are exercised.
            action = int(obs) if rng.random() < 0.5 else int(rng.integers(4))
            if cls.startswith("RepeatFirst"):
                action = int(state.cards[0]) if rng.random() < 0.5 else action
            obs, reward, terminated, truncated, _ = original.step(action)
            p_obs, state, p_reward, p_terminated, _ = step(
                jax.random.key(steps), state, jnp.int32(action), params
            )
            steps += 1
            assert int(p_obs) == obs, (seed, steps)
            assert float(p_reward) == pytest.approx(reward, rel=1e-6, abs=0.0), (seed, steps)
            assert bool(p_terminated) == terminated and not truncated, (seed, steps)
            if terminated:
                break
        assert steps == original.max_episode_length == params.max_steps_in_episode


@pytest.mark.parametrize("cls", CARD_CLASSES)
def test_card_port_returns_one_for_a_perfect_episode(cls: str) -> None:
    port, params = make_port(cls)
    assert isinstance(port, CardRecall)
    obs, state = port.reset_env(jax.random.key(1), params)
    total, terminated, seen = 0.0, False, [int(obs)]
    while not terminated:
        # RepeatFirst: the first card; RepeatPrevious: the k-th newest, once k have been seen.
        k = len(seen) if port.mode == "first" else port.k
        action = seen[-k] if len(seen) >= k else 0
        obs, state, reward, terminated, _ = port.step_env(
            jax.random.key(0), state, jnp.int32(action), params
        )
        total += float(reward)
        seen.append(int(obs))
    assert total == pytest.approx(1.0, abs=1e-4)
    # Every suit 13 times per deck, in some order.
    np.testing.assert_array_equal(np.bincount(seen, minlength=4), [port.num_cards // 4] * 4)


@pytest.mark.parametrize("cls", CARTPOLE_CLASSES)
def test_cartpole_port_parameters_are_popgym_s(cls: str) -> None:
    original = getattr(popgym_envs, cls)()
    port, params = make_port(cls)
    assert port.max_episode_length == original.max_episode_length == params.max_steps_in_episode
    sigma = float(np.ravel(getattr(original, "noise_sigma", [0.0]))[0])
    assert port.noise_sigma == pytest.approx(sigma)
    space = port.observation_space(params)
    np.testing.assert_allclose(space.high, original.observation_space.high, rtol=1e-6)


@pytest.mark.parametrize("cls", ["PositionOnlyCartPoleEasy", "PositionOnlyCartPoleMedium"])
def test_cartpole_port_matches_popgym_step_by_step(cls: str) -> None:
    original = getattr(popgym_envs, cls)()
    port, params = make_port(cls)
    env = envs._gymnax.JaxEnv(cls, port, params)
    step = jax.jit(env.step)
    _, template = port.reset_env(jax.random.key(0), params)
    rng = np.random.default_rng(1)
    episodes, steps, t = 0, 0, 0
    obs, _ = original.reset(seed=0)
    while episodes < 6:
        # Re-synchronize: popgym's (float64) state, rounded to the port's float32.
        x, x_dot, theta, theta_dot = (np.float32(v) for v in original.state)
        inner = template.replace(x=x, x_dot=x_dot, theta=theta, theta_dot=theta_dot, time=t)
        action = int(rng.integers(2))
        obs, reward, terminated, truncated, _ = original.step(action)
        _, p_obs, p_reward, p_terminated, p_truncated = step(
            jax.random.key(steps), EnvState(inner, jnp.int32(t)), jnp.int32(action)
        )
        steps, t = steps + 1, t + 1
        assert float(p_reward) == pytest.approx(reward, rel=1e-6)
        assert bool(p_terminated) == terminated, (episodes, t)
        assert bool(p_truncated) == (truncated and not terminated), (episodes, t)
        if terminated or truncated:
            episodes, t = episodes + 1, 0
            obs, _ = original.reset(seed=episodes)
        else:
            np.testing.assert_allclose(np.asarray(p_obs), obs, rtol=1e-5, atol=1e-6)
    assert steps > 6 * 10


def test_noisy_cartpole_noise_is_gaussian_and_clipped() -> None:
    port, params = make_port("NoisyPositionOnlyCartPoleHard")  # sigma 0.3
    _, state = port.reset_env(jax.random.key(0), params)
    keys = jax.random.split(jax.random.key(1), 4000)
    centred = state.replace(x=jnp.float32(0.0), theta=jnp.float32(0.0))
    obs = np.asarray(jax.vmap(lambda k: port._observe(k, centred, params))(keys))
    assert np.std(obs[:, 0]) == pytest.approx(0.3, rel=0.05)
    assert abs(np.mean(obs[:, 0])) < 0.03
    high = np.asarray(port.observation_space(params).high)
    # Near the edge the clip holds observations at the bound.
    edge = state.replace(x=jnp.float32(high[0] - 0.05), theta=jnp.float32(0.0))
    obs = np.asarray(jax.vmap(lambda k: port._observe(k, edge, params))(keys))
    assert obs[:, 0].max() == pytest.approx(high[0])
    assert np.mean(obs[:, 0] == np.float32(high[0])) > 0.3


def test_paper_names_resolve_to_ports_and_popgym_prefix_to_originals() -> None:
    for name in envs._registry._POPGYM:
        assert envs._registry._resolve(name).source == "jax-port"
        assert envs.make_jax(name).spec.name == name
    assert envs._registry._resolve("popgym:MineSweeperEasy").source == "popgym"
    host = envs.make_host("popgym:PositionOnlyCartPoleEasy", num_envs=1)
    try:
        assert host.spec.obs_dim == 2 and host.spec.max_episode_steps == 200
    finally:
        host.close()
    with pytest.raises(envs.UnknownTaskError, match="popgym:PositionOnlyCartPoleEasy"):
        envs.make_host("popgym:PositionOnlyCartPoleEazy")


@pytest.mark.parametrize("cls", ["MineSweeperEasy", "MineSweeperMedium", "MineSweeperHard"])
def test_minesweeper_port_matches_popgym_step_by_step(cls: str) -> None:
    original = getattr(popgym_envs, cls)()
    port, params = make_port(cls)
    env = envs._gymnax.JaxEnv(cls, port, params)
    step = jax.jit(env.step)
    rng = np.random.default_rng(2)
    n_cells = int(np.prod(original.dims))
    outcomes = set()
    for seed in range(12):
        original.reset(seed=seed)
        field = jnp.asarray(original.hidden_grid.ravel(), jnp.int32)
        inner = MineState(field, port.neighbour_counts(field), jnp.zeros((), jnp.int32))
        np.testing.assert_array_equal(inner.neighbours, original.neighbor_grid.ravel())
        free = np.flatnonzero(original.hidden_grid.ravel() == 0)
        t, done = 0, False
        while not done:
            # Mostly free cells not seen yet, sometimes any cell (seen ones and mines too).
            unseen = free[original.hidden_grid.ravel()[free] == 0]
            flat = int(rng.choice(unseen)) if rng.random() < 0.93 else int(rng.integers(n_cells))
            row_col = np.array(np.unravel_index(flat, original.dims))
            obs, reward, terminated, truncated, _ = original.step(row_col)
            inner, p_obs, p_reward, p_terminated, p_truncated = step(
                jax.random.key(t), EnvState(inner, jnp.int32(t)), jnp.int32(flat)
            )
            inner, t = inner.inner, t + 1
            done = terminated or truncated
            assert float(p_reward) == pytest.approx(reward, rel=1e-6), (seed, t)
            assert (bool(p_terminated), bool(p_truncated)) == (terminated, truncated), (seed, t)
            if not done:
                assert int(np.argmax(p_obs)) == obs, (seed, t)
                np.testing.assert_array_equal(inner.field, original.hidden_grid.ravel())
            outcomes.add("mine" if reward < -0.5 else "won" if terminated else "truncated"
                         if truncated else "step")  # fmt: skip
    assert {"mine", "step"} <= outcomes
    if cls == "MineSweeperEasy":  # 14 free cells: some episodes clear the field
        assert "won" in outcomes


@pytest.mark.parametrize("cls", ["MultiarmedBanditEasy", "MultiarmedBanditHard"])
def test_bandit_port_matches_popgym(cls: str) -> None:
    original = getattr(popgym_envs, cls)()
    port, params = make_port(cls)
    assert port.num_arms == original.num_bandits
    assert port.episode_length == original.max_episode_length == params.max_steps_in_episode
    env = envs._gymnax.JaxEnv(cls, port, params)
    step = jax.jit(env.step)
    # Arms that always or never pay make popgym's draw and ours agree; step a whole episode.
    original.reset(seed=0)
    arms = (np.arange(port.num_arms) % 2).astype(np.float32)
    original.bandits = arms.copy()
    inner = BanditState(jnp.asarray(arms), jnp.zeros((), jnp.int32))
    rng = np.random.default_rng(3)
    for t in range(port.episode_length):
        action = int(rng.integers(port.num_arms))
        obs, reward, terminated, truncated, _ = original.step(action)
        state, p_obs, p_reward, p_terminated, p_truncated = step(
            jax.random.key(t), EnvState(inner, jnp.int32(t)), jnp.int32(action)
        )
        inner = state.inner
        assert float(p_reward) == pytest.approx(reward, rel=1e-6)
        assert (bool(p_terminated), bool(p_truncated)) == (terminated, truncated), t
        if not truncated:
            assert int(np.argmax(p_obs)) == obs == action % 2
    assert truncated
    # Fractional arms pay with their probability.
    paid = jax.vmap(lambda k: port.step_env(k, inner._replace(arms=jnp.full_like(inner.arms, 0.3)),
                                            jnp.int32(0), params)[0])(
        jax.random.split(jax.random.key(4), 4000))  # fmt: skip
    assert float(np.mean(paid)) == pytest.approx(0.3, abs=0.03)
