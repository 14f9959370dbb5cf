"""The JAX ports of popgym tasks against popgym's NumPy originals, step by step.

As gymnax checks its environments against gym's: each step starts both from the same state
(the same shuffled deck, board or maze; CartPole and the pendulum re-synchronized from popgym's
state every step), takes the same action, and every observation, reward and termination must
agree, over whole episodes at every level. What the two cannot draw alike (decks, boards,
mazes, noise) is compared as a distribution.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import random
import sys
import types
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

pytest.importorskip("gymnax")
popgym_envs = pytest.importorskip("popgym.envs")

import gymnasium  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from gymnax.environments import environment  # noqa: E402

import rtrrl_spec  # noqa: E402
from rtrrl import envs, fused  # noqa: E402
from rtrrl.envs._gymnasium import _action_spec, _flatten_batch, _obs_size  # noqa: E402
from rtrrl.envs._gymnax import EnvState  # noqa: E402
from rtrrl.envs._popgym_cards import AutoencodeState, ConcentrationState, CountState, RankState  # noqa: E402
from rtrrl.envs._popgym_grids import (  # noqa: E402
    BattleshipState,
    MazeState,
    hunt_and_kill,
    outer_entrances,
)
from rtrrl.envs._popgym_jax import (  # noqa: E402
    PORTS,
    BanditState,
    CardRecall,
    CardState,
    MineState,
    make_port,
)
from rtrrl.envs._popgym_pendulum import PositionOnlyPendulum  # noqa: E402

CARD_CLASSES = [name for name in PORTS if name.startswith("Repeat")]
CARTPOLE_CLASSES = [name for name in PORTS if "PositionOnlyCartPole" in name]


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


# --- popgym's other classes ------------------------------------------------------------------

#: popgym's classes without the level suffix: every one has a port at every level.
POPGYM_BASES = (
    "Autoencode",
    "Battleship",
    "Concentration",
    "CountRecall",
    "HigherLower",
    "LabyrinthEscape",
    "LabyrinthExplore",
    "MineSweeper",
    "MultiarmedBandit",
    "NoisyPositionOnlyCartPole",
    "NoisyPositionOnlyPendulum",
    "PositionOnlyCartPole",
    "PositionOnlyPendulum",
    "RepeatFirst",
    "RepeatPrevious",
    "VelocityOnlyCartPole",
)
LEVELS = ("Easy", "Medium", "Hard")
PAPER_BASES = ("MineSweeper", "MultiarmedBandit", "NoisyPositionOnlyCartPole")
PAPER_BASES += ("PositionOnlyCartPole", "RepeatFirst", "RepeatPrevious")
NEW_BASES = tuple(b for b in POPGYM_BASES if b not in PAPER_BASES)


def _levels(*bases: str) -> list[str]:
    return [base + level for base in bases for level in LEVELS]


_HUNT_AND_KILL = jax.jit(hunt_and_kill, static_argnums=(1, 2))
_OUTER_ENTRANCES = jax.jit(outer_entrances, static_argnums=(1, 2))


class _StandInMaze:
    """Plays mazelib's ``Maze`` for popgym when mazelib is not installed: the maze comes from
    the port's generator (seeded from NumPy's global RNG, which popgym seeds), so popgym's
    own step, view and reward code runs on it unchanged."""

    def __init__(self) -> None:
        self.generator: Any = None
        self.grid: np.ndarray | None = None
        self.start: tuple[int, int] | None = None
        self.end: tuple[int, int] | None = None

    def generate(self) -> None:
        rows, cols = self.generator
        # popgym seeds NumPy's global generator (np.random.seed) for mazelib.
        key = jax.random.key(int(np.random.randint(2**31)))  # noqa: NPY002
        self.grid = np.asarray(_HUNT_AND_KILL(key, rows, cols)).astype(np.int8)

    def generate_entrances(self, start_outer: bool = True) -> None:
        assert self.grid is not None
        key = jax.random.key(int(np.random.randint(2**31)))  # noqa: NPY002
        start, end = _OUTER_ENTRANCES(key, *self.grid.shape)
        self.start = tuple(int(v) for v in start)  # type: ignore[assignment]
        self.end = tuple(int(v) for v in end)  # type: ignore[assignment]


@pytest.fixture(scope="module")
def maze_classes() -> Any:
    """popgym's labyrinth modules, on mazelib if it is installed, else on :class:`_StandInMaze`
    (popgym imports mazelib at module level; the labyrinths are its only users)."""
    names = ("popgym.core.maze", "popgym.envs.labyrinth_escape", "popgym.envs.labyrinth_explore")
    saved = {name: sys.modules.pop(name) for name in names if name in sys.modules}
    stand_in = importlib.util.find_spec("mazelib") is None
    if stand_in:
        mazelib = types.ModuleType("mazelib")
        mazelib.Maze = _StandInMaze  # type: ignore[attr-defined]
        mazelib.stand_in = True  # type: ignore[attr-defined]
        generate = types.ModuleType("mazelib.generate")
        hunt = types.ModuleType("mazelib.generate.HuntAndKill")
        hunt.HuntAndKill = lambda rows, cols: (rows, cols)  # type: ignore[attr-defined]
        fake = {"mazelib": mazelib, "mazelib.generate": generate}
        fake["mazelib.generate.HuntAndKill"] = hunt
        saved_fake = {name: sys.modules.get(name) for name in fake}
        sys.modules.update(fake)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            escape = importlib.import_module("popgym.envs.labyrinth_escape")
            explore = importlib.import_module("popgym.envs.labyrinth_explore")
        yield {
            **{f"LabyrinthEscape{lv}": getattr(escape, f"LabyrinthEscape{lv}") for lv in LEVELS},
            **{f"LabyrinthExplore{lv}": getattr(explore, f"LabyrinthExplore{lv}") for lv in LEVELS},
        }
    finally:
        for name in names:
            sys.modules.pop(name, None)
        sys.modules.update(saved)
        if stand_in:
            for name, module in saved_fake.items():
                if module is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = module


def _original(cls: str, maze_classes: dict[str, Any]) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if cls.startswith("Labyrinth"):
            return maze_classes[cls]()
        return getattr(popgym_envs, cls)()


def _flat(space: Any, obs: Any) -> np.ndarray:
    """popgym's observation flattened as rtrrl's host adapter flattens it."""
    if isinstance(space, gymnasium.spaces.Tuple):
        return np.concatenate([_flat(s, o) for s, o in zip(space.spaces, obs, strict=True)])
    return _flatten_batch(space, np.asarray(obs), 1)[0]


def _flat_size(space: Any) -> int:
    if isinstance(space, gymnasium.spaces.Tuple):
        return sum(_flat_size(s) for s in space.spaces)
    return _obs_size(space)


def test_every_popgym_class_has_a_port_at_every_level() -> None:
    assert set(PORTS) == set(_levels(*POPGYM_BASES))
    registered = {cls.__name__ for cls in popgym_envs.ALL}  # labyrinths only with mazelib
    assert registered <= set(PORTS)
    assert set(_levels(*NEW_BASES)) - registered <= set(
        _levels("LabyrinthEscape", "LabyrinthExplore")
    )
    for name in PORTS:
        port, params = make_port(name)
        assert isinstance(port, environment.Environment) and params.max_steps_in_episode > 0


def _expected_steps(cls: str, original: Any) -> int:
    if cls.startswith("HigherLower"):  # no time limit: the deck runs out after N - 1 steps
        return original.deck_size - 1
    if cls.startswith("Concentration"):
        return original.episode_length
    if cls.startswith("Labyrinth"):  # popgym truncates when its count reaches L - 1
        return original.max_episode_length - 1
    return original.max_episode_length


@pytest.mark.parametrize("cls", _levels(*NEW_BASES))
def test_port_spaces_and_lengths_are_popgym_s(cls: str, maze_classes: dict[str, Any]) -> None:
    original = _original(cls, maze_classes)
    port, params = make_port(cls)
    spec = envs._gymnax.JaxEnv(cls, port, params).spec
    assert spec.obs_dim == _flat_size(original.observation_space)
    actions = _action_spec(original.action_space)
    assert (spec.n_actions, spec.action_dim) == (actions["n_actions"], actions["action_dim"])
    if spec.action_dim is not None:
        assert (spec.action_low, spec.action_high) == (actions["low"], actions["high"])
    assert spec.max_episode_steps == _expected_steps(cls, original)
    if "Noisy" in cls:
        assert port.noise_sigma == pytest.approx(float(np.ravel(original.noise_sigma)[0]))


def _run_episode(
    cls: str,
    original: Any,
    port: Any,
    params: Any,
    inner: Any,
    choose: Callable[[Any, int], Any],
) -> tuple[int, list[float], bool]:
    """Step popgym's ``original`` and the port from the same state until popgym's episode
    ends; compare every observation (flattened), reward, termination and truncation.
    Returns the steps, the rewards and whether the episode terminated."""
    observe = jax.jit(envs._gymnax.JaxEnv(cls, port, params).observe)
    step = _jit_step(port)
    multi = isinstance(original.action_space, gymnasium.spaces.MultiDiscrete)
    rewards, t = [], 0
    while True:
        action = choose(inner, t)
        given = np.array(np.unravel_index(action, original.action_space.nvec)) if multi else action
        obs, reward, terminated, truncated, _ = original.step(given)
        p_obs, inner, p_reward, p_terminated, _ = step(
            jax.random.key(t), inner, jnp.asarray(action), params
        )
        t += 1
        p_truncated = t >= params.max_steps_in_episode and not bool(p_terminated)
        assert bool(p_terminated) == terminated, (cls, t)
        assert p_truncated == (truncated and not terminated), (cls, t)
        assert float(p_reward) == pytest.approx(reward, rel=1e-6, abs=1e-9), (cls, t)
        flat = _flat(original.observation_space, obs)
        np.testing.assert_array_equal(np.asarray(observe(p_obs)), flat)
        rewards.append(float(reward))
        if terminated or truncated:
            return t, rewards, terminated


_STEPS: dict[int, Any] = {}


def _jit_step(port: Any) -> Any:
    """One jitted ``step_env`` per port object (a test steps several episodes)."""
    if id(port) not in _STEPS:
        _STEPS.clear()
        _STEPS[id(port)] = (port, jax.jit(port.step_env))
    return _STEPS[id(port)][1]


def _dealt(deck: Any, attribute: str) -> jnp.ndarray:
    """A popgym deck's cards' ``attribute`` in dealing order (popgym deals from the end)."""
    return jnp.asarray(getattr(deck, attribute)[deck.idx[::-1]], jnp.int32)


@pytest.mark.parametrize("cls", _levels("Autoencode"))
def test_autoencode_port_matches_popgym_step_by_step(cls: str) -> None:
    original, (port, params) = getattr(popgym_envs, cls)(), make_port(cls)
    rng = np.random.default_rng(5)
    n = port.num_cards
    for seed in range(2):
        obs, _ = original.reset(seed=seed)
        inner = AutoencodeState(_dealt(original.deck, "suits_idx"), jnp.int32(0))
        np.testing.assert_array_equal(
            port._obs(1, inner.suits[0]), _flat(original.observation_space, obs)
        )

        def choose(state: Any, t: int) -> int:
            right = int(state.suits[max(n - 1 - (t - (n - 1)), 0)])
            return right if rng.random() < 0.6 else int(rng.integers(4))

        steps, rewards, terminated = _run_episode(cls, original, port, params, inner, choose)
        assert terminated and steps == 2 * n - 1 == params.max_steps_in_episode
        assert sum(r != 0 for r in rewards) == n and {np.sign(r) for r in rewards} == {-1, 0, 1}


@pytest.mark.parametrize("cls", _levels("CountRecall"))
def test_count_recall_port_matches_popgym_step_by_step(cls: str) -> None:
    original, (port, params) = getattr(popgym_envs, cls)(), make_port(cls)
    rng = np.random.default_rng(6)
    for seed in range(2):
        obs, _ = original.reset(seed=seed)
        kind = {2: "colors_idx", 4: "suits_idx", 13: "ranks_idx"}[port.distinct]
        values, queries = _dealt(original.value_deck, kind), _dealt(original.query_deck, kind)
        inner = CountState(values, queries, jnp.asarray(original.counts, jnp.int32), jnp.int32(0))
        np.testing.assert_array_equal(
            port._obs(values[0], queries[0]), _flat(original.observation_space, obs)
        )

        def choose(state: Any, t: int) -> int:
            right = int(state.counts[state.queries[t]])
            return right if rng.random() < 0.5 else int(rng.integers(port.num_actions))

        steps, rewards, terminated = _run_episode(cls, original, port, params, inner, choose)
        assert terminated and steps == port.num_cards - 1
        assert {np.sign(r) for r in rewards} == {-1, 1}


@pytest.mark.parametrize("cls", _levels("HigherLower"))
def test_higher_lower_port_matches_popgym_step_by_step(cls: str) -> None:
    original, (port, params) = getattr(popgym_envs, cls)(), make_port(cls)
    rng = np.random.default_rng(7)
    for seed in range(2):
        obs, _ = original.reset(seed=seed)
        inner = RankState(_dealt(original.deck, "ranks_idx"), jnp.int32(0))
        assert int(inner.ranks[0]) == obs
        steps, rewards, terminated = _run_episode(
            cls, original, port, params, inner, lambda s, t: int(rng.integers(2))
        )
        assert terminated and steps == port.num_cards - 1
        assert {np.sign(r) for r in rewards} == {-1, 0, 1}


@pytest.mark.parametrize("cls", _levels("Concentration"))
def test_concentration_port_matches_popgym_step_by_step(cls: str) -> None:
    original, (port, params) = getattr(popgym_envs, cls)(), make_port(cls)
    rng = np.random.default_rng(8)
    ends = set()
    for seed in range(3):
        obs, _ = original.reset(seed=seed)
        inner = ConcentrationState(
            jnp.asarray(original.state, jnp.int32),
            jnp.zeros(port.num_cards, bool),
            jnp.int32(-1),
            jnp.int32(0),
        )
        np.testing.assert_array_equal(
            port._obs(inner.values, inner.face_up), _flat(original.observation_space, obs)
        )

        def choose(state: Any, t: int) -> int:
            # Mostly a sensible player (the pending card's match, else a face-down card);
            # sometimes any card: face-up ones and the pending one itself included.
            values, up, first = (np.asarray(state.values), np.asarray(state.face_up),
                                 int(state.pending))  # fmt: skip
            down = np.flatnonzero(~up)
            if rng.random() < 0.1 or down.size == 0:
                return int(rng.integers(port.num_cards))
            if first >= 0 and rng.random() < 0.7:
                same = down[(values[down] == values[first]) & (down != first)]
                if same.size:
                    return int(rng.choice(same))
            return int(rng.choice(down))

        steps, rewards, terminated = _run_episode(cls, original, port, params, inner, choose)
        ends.add("terminated" if terminated else "truncated")
        assert len({round(r, 9) for r in rewards}) >= 3  # success, failure and neutral turns
    assert ends  # either ending is popgym's; both are compared


@pytest.mark.parametrize("cls", _levels("Battleship"))
def test_battleship_port_matches_popgym_step_by_step(cls: str) -> None:
    original, (port, params) = getattr(popgym_envs, cls)(), make_port(cls)
    rng = np.random.default_rng(9)
    ends = set()
    for seed in range(4):
        original.reset(seed=seed)
        board = jnp.asarray(original.board.ravel() == 1)
        inner = BattleshipState(board, jnp.zeros_like(board), jnp.int32(0), jnp.int32(0))

        # Seed 0 often guesses cells again (so the time limit comes first); the others
        # aim at ships more and more often.
        aim, again = (0.0, 0.2, 0.4, 0.6)[seed], (0.5, 0.05, 0.05, 0.05)[seed]

        def choose(state: Any, t: int, aim: float = aim, again: float = again) -> int:
            ships, guessed = np.asarray(state.board), np.asarray(state.guesses)
            hidden, fresh = np.flatnonzero(ships & ~guessed), np.flatnonzero(~guessed)
            draw = rng.random()
            if draw < aim and hidden.size:
                return int(rng.choice(hidden))
            if draw > 1 - again or not fresh.size:
                return int(rng.integers(port.cells))
            return int(rng.choice(fresh))

        _, rewards, terminated = _run_episode(cls, original, port, params, inner, choose)
        ends.add(terminated)
        assert {np.sign(r) for r in rewards} == {-1, 1}
    assert ends == {True, False}


def test_battleship_boards_are_drawn_as_popgym_draws_them() -> None:
    """Four ships, 12 cells, never overlapping; and each cell holds a ship as often as on
    popgym's boards (2,000 boards each: the difference of two frequencies near 0.19 has a
    standard deviation of 0.012, so 0.06 is five of them)."""
    port, params = make_port("BattleshipEasy")
    keys = jax.random.split(jax.random.key(0), 2000)
    boards = np.asarray(jax.jit(jax.vmap(lambda k: port.reset_env(k, params)[1].board))(keys))
    assert np.all(boards.sum(axis=1) == 12)
    original = popgym_envs.BattleshipEasy()
    theirs = []
    for seed in range(2000):
        original.reset(seed=seed)
        theirs.append(original.board.ravel() == 1)
    ours, theirs_freq = boards.mean(axis=0), np.mean(theirs, axis=0)
    assert np.abs(ours - theirs_freq).max() < 0.06
    # Corners hold ships less often than the middle: placement is not uniform per cell.
    assert ours.reshape(8, 8)[0, 0] < ours.reshape(8, 8)[3:5, 3:5].mean()


def _toward(grid: np.ndarray, position: tuple[int, int], targets: np.ndarray) -> int | None:
    """The first move (popgym's action) of a shortest path to a target cell, by BFS."""
    moves = ((0, -1), (0, 1), (-1, 0), (1, 0))
    first: dict[tuple[int, int], int | None] = {position: None}
    queue = [position]
    for y, x in queue:
        if targets[y, x] and (y, x) != position:
            return first[(y, x)]
        for action, (dy, dx) in enumerate(moves):
            nxt = (y + dy, x + dx)
            inside = 0 <= nxt[0] < grid.shape[0] and 0 <= nxt[1] < grid.shape[1]
            if inside and grid[nxt] != 1 and nxt not in first:
                first[nxt] = action if first[(y, x)] is None else first[(y, x)]
                queue.append(nxt)
    return None


@pytest.mark.parametrize("cls", _levels("LabyrinthEscape", "LabyrinthExplore"))
def test_labyrinth_port_matches_popgym_step_by_step(cls: str, maze_classes: dict[str, Any]) -> None:
    original, (port, params) = _original(cls, maze_classes), make_port(cls)
    rng = np.random.default_rng(10)
    escape = cls.startswith("LabyrinthEscape")
    ends = []
    # Seed 0 runs to the time limit, which is 1,023 steps at every level: at Easy only.
    for seed in range(0 if cls.endswith("Easy") else 1, 3):
        obs, _ = original.reset(seed=seed)
        inner = MazeState(
            jnp.asarray(original.maze.grid, jnp.int32),
            jnp.asarray(original.position, jnp.int32),
            jnp.asarray(original.explored == 1),
            jnp.int32(0),
        )
        np.testing.assert_array_equal(
            port.observe(inner, jnp.int32(4)), _flat(original.observation_space, obs)
        )
        # The first episode only moves up and down at random (mostly into walls, up to the
        # time limit); the others mostly head for the exit, or the nearest cell not visited.
        guided = 0.0 if seed == 0 else 0.8

        def choose(state: Any, t: int, guided: float = guided, seed: int = seed) -> int:
            grid, here = np.asarray(state.grid), tuple(int(v) for v in state.position)
            targets = grid == 3 if escape else (grid != 1) & ~np.asarray(state.explored)
            move = _toward(grid, here, targets) if rng.random() < guided else None
            if move is None:
                return int(rng.integers(2, 4) if seed == 0 else rng.integers(4))
            return move

        steps, rewards, terminated = _run_episode(cls, original, port, params, inner, choose)
        ends.append(terminated)
        assert min(rewards) < 0 and (max(rewards) > 0 or not terminated)
    assert ends == [False, True, True][-len(ends) :]


def test_mazes_are_perfect_hunt_and_kill_mazes() -> None:
    """Every maze connects all its cells by exactly one path (a spanning tree: ``c - 1``
    passages for ``c`` cells), with the entrance and exit on opposite outer walls."""
    port, params = make_port("LabyrinthEscapeHard")  # 9 x 9 cells, a 19 x 19 grid
    keys = jax.random.split(jax.random.key(1), 16)
    states = jax.jit(jax.vmap(lambda k: port.reset_env(k, params)[1]))(keys)
    for grid, start in zip(np.asarray(states.grid), np.asarray(states.position), strict=True):
        assert grid.shape == (19, 19)
        inner = grid[1:-1, 1:-1] != 1
        assert inner[::2, ::2].all()  # every cell carved
        assert inner.sum() == 2 * 9**2 - 1  # cells + (cells - 1) passages
        assert _reachable(grid, tuple(start)) == int((grid != 1).sum())
        (goal,) = np.argwhere(grid == 3)
        on_wall = [start[0] in (0, 18), start[1] in (0, 18)]
        assert any(on_wall)
        axis = on_wall.index(True)
        assert abs(int(goal[axis]) - int(start[axis])) == 18  # the opposite wall


def _literal_hunt_and_kill(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """The algorithm as mazelib runs it, draw by draw (every hunt drawn, ``H W`` of them)."""
    h, w = 2 * rows + 1, 2 * cols + 1
    grid = np.ones((h, w), np.int8)
    r, c = 2 * rng.integers(rows) + 1, 2 * rng.integers(cols) + 1
    grid[r, c] = 0
    for hunt in range(h * w + 1):
        while grid[r, c] == 0:
            nbrs = [(r + dr, c + dc) for dr, dc in ((-2, 0), (2, 0), (0, -2), (0, 2))]
            nbrs = [(y, x) for y, x in nbrs if 0 < y < h and 0 < x < w and grid[y, x] == 1]
            if not nbrs:
                break
            y, x = nbrs[rng.integers(len(nbrs))]
            grid[y, x] = grid[(y + r) // 2, (x + c) // 2] = 0
            r, c = y, x
        if hunt < h * w:
            r, c = 2 * rng.integers(rows) + 1, 2 * rng.integers(cols) + 1
    return grid


def _dead_ends(grid: np.ndarray) -> int:
    cells = grid[1:-1:2, 1:-1:2] == 0
    free = np.pad(grid == 0, 1)
    ways = free[:-2, 1:-1].astype(int) + free[2:, 1:-1] + free[1:-1, :-2] + free[1:-1, 2:]
    return int(np.sum(cells & (ways[1:-1:2, 1:-1:2] == 1)))


def _corner_to_corner(grid: np.ndarray) -> int:
    """Squares on the path from the top-left cell to the bottom-right one."""
    goal = (grid.shape[0] - 2, grid.shape[1] - 2)
    depth, queue = {(1, 1): 0}, [(1, 1)]
    for y, x in queue:
        for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            nxt = (y + dy, x + dx)
            if grid[nxt] == 0 and nxt not in depth:
                depth[nxt] = depth[(y, x)] + 1
                queue.append(nxt)
    return depth[goal]


def _mazelib_mazes(count: int) -> list[np.ndarray]:
    mazelib = pytest.importorskip("mazelib")
    if getattr(mazelib, "stand_in", False):  # the maze_classes fixture's, not mazelib
        pytest.skip("mazelib is not installed")
    from mazelib.generate.HuntAndKill import HuntAndKill

    random.seed(13)
    mazes = []
    for _ in range(count):
        maze = mazelib.Maze()
        maze.generator = HuntAndKill(5, 5)
        maze.generate()
        mazes.append(np.asarray(maze.grid))
    return mazes


@pytest.mark.parametrize("reference", ["literal", "mazelib"])
def test_maze_generator_draws_mazes_as_the_literal_algorithm_does(reference: str) -> None:
    """The port skips the hunts that miss (a geometric count, then a uniform frontier cell);
    its mazes must be distributed as the draw-by-draw algorithm's (our NumPy transcription,
    and mazelib's own where it is installed). Compared on 600 mazes of 5 x 5 cells each: the
    number of dead ends and the length of the path between opposite corners: means within 4
    standard errors, and whole distributions by a Kolmogorov-Smirnov test."""
    if reference == "mazelib":
        theirs = _mazelib_mazes(600)
    else:
        rng = np.random.default_rng(13)
        theirs = [_literal_hunt_and_kill(rng, 5, 5) for _ in range(600)]
    grids = jax.jit(jax.vmap(lambda k: hunt_and_kill(k, 5, 5)))(
        jax.random.split(jax.random.key(2), 600)
    )
    ours = list(np.asarray(grids))
    assert np.all(np.asarray(grids)[:, 1::2, 1::2] == 0)  # every cell carved
    for statistic in (_dead_ends, _corner_to_corner):
        a = np.array([statistic(g) for g in theirs], float)
        b = np.array([statistic(g) for g in ours], float)
        error = np.sqrt(a.var() / a.size + b.var() / b.size)
        assert abs(b.mean() - a.mean()) < 4 * error, statistic.__name__
        # Two-sample Kolmogorov-Smirnov at the 1 % level: the largest gap between the two
        # empirical distribution functions stays below 1.63 sqrt(2 / n).
        values = np.union1d(a, b)
        gap = np.abs(np.searchsorted(np.sort(a), values, "right") / a.size
                     - np.searchsorted(np.sort(b), values, "right") / b.size).max()  # fmt: skip
        assert gap < 1.63 * np.sqrt(2 / a.size), statistic.__name__


def _reachable(grid: np.ndarray, start: tuple[int, int]) -> int:
    seen, queue = {start}, [start]
    for y, x in queue:
        for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            nxt = (y + dy, x + dx)
            inside = 0 <= nxt[0] < grid.shape[0] and 0 <= nxt[1] < grid.shape[1]
            if inside and grid[nxt] != 1 and nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return len(seen)


@pytest.mark.parametrize("cls", _levels("PositionOnlyPendulum", "NoisyPositionOnlyPendulum"))
def test_pendulum_port_matches_popgym_step_by_step(cls: str) -> None:
    """Re-synchronized from popgym's float64 state each step, the float32 port agrees to
    float32 rounding: angles within a few 1e-7 rad after one step, so observations to 1e-5
    and rewards (a cost up to 16.3, scaled by 1 / (8.14 L)) to a relative 1e-5."""
    original, (port, params) = getattr(popgym_envs, cls)(), make_port(cls)
    clean = PositionOnlyPendulum(port.max_episode_length)  # the noisy port without its noise
    step = jax.jit(port.step_env)
    rng = np.random.default_rng(11)
    original.reset(seed=0)
    _, template = port.reset_env(jax.random.key(0), params)
    for t in range(port.max_episode_length):
        theta, theta_dot = (np.float32(v) for v in original.state)
        inner = template.replace(theta=theta, theta_dot=theta_dot, time=t)
        action = rng.uniform(-2.5, 2.5, size=(1,)).astype(np.float32)  # beyond ±2: clipped
        noise_rng = copy.deepcopy(original.np_random)
        obs, reward, terminated, truncated, _ = original.step(action)
        p_obs, inner, p_reward, p_terminated, _ = step(
            jax.random.key(t), inner, jnp.asarray(action), params
        )
        expected = np.asarray(clean.observe(jax.random.key(0), inner))
        if port.noise_sigma > 0:  # popgym's own noise draw, replayed on the port's angle
            noise = noise_rng.normal(0, original.noise_sigma).astype(np.float32)
            expected = np.clip(expected + noise, -1.0, 1.0)
            assert np.all(np.abs(np.asarray(p_obs)) <= 1.0)
        np.testing.assert_allclose(expected, obs, rtol=0, atol=1e-5)
        assert float(p_reward) == pytest.approx(reward, rel=1e-5, abs=1e-8)
        assert not bool(p_terminated) and not terminated
        assert truncated == (t + 1 == params.max_steps_in_episode)
    assert truncated


def test_noisy_pendulum_noise_is_gaussian_and_clipped() -> None:
    port, params = make_port("NoisyPositionOnlyPendulumMedium")  # sigma 0.2
    _, state = port.reset_env(jax.random.key(0), params)
    keys = jax.random.split(jax.random.key(1), 4000)
    level = state.replace(theta=jnp.float32(np.pi / 2))  # (cos, sin) = (0, 1): sin at the bound
    obs = np.asarray(jax.vmap(lambda k: port.observe(k, level))(keys))
    assert np.std(obs[:, 0]) == pytest.approx(0.2, rel=0.05) and abs(obs[:, 0].mean()) < 0.02
    assert obs[:, 1].max() == 1.0 and np.mean(obs[:, 1] == 1.0) > 0.4


def test_velocity_only_cartpole_port_matches_popgym_step_by_step() -> None:
    cls = "VelocityOnlyCartPoleEasy"
    original, (port, params) = getattr(popgym_envs, cls)(), make_port(cls)
    obs, p_obs = original.reset(seed=3)[0], port.reset_env(jax.random.key(3), params)
    # Both resets show the positions (x, theta), as popgym's reset does.
    np.testing.assert_allclose(obs, np.asarray(original.state)[[0, 2]], rtol=1e-6)
    np.testing.assert_array_equal(p_obs[0], jnp.stack([p_obs[1].x, p_obs[1].theta]))
    step = jax.jit(port.step_env)
    rng = np.random.default_rng(12)
    template, t, episodes = p_obs[1], 0, 0
    while episodes < 4:
        x, x_dot, theta, theta_dot = (np.float32(v) for v in original.state)
        inner = template.replace(x=x, x_dot=x_dot, theta=theta, theta_dot=theta_dot, time=t)
        action = int(rng.integers(2))
        obs, reward, terminated, truncated, _ = original.step(action)
        p_obs, _, p_reward, p_terminated, _ = step(jax.random.key(t), inner, action, params)
        t += 1
        np.testing.assert_allclose(np.asarray(p_obs), obs, rtol=1e-5, atol=1e-6)
        assert float(p_reward) == pytest.approx(reward, rel=1e-6)
        assert bool(p_terminated) == terminated
        if terminated or truncated:
            episodes, t = episodes + 1, 0
            original.reset(seed=episodes)
    assert port.observation_space(params).shape == (2,)


def test_every_popgym_name_resolves_to_its_port() -> None:
    resolve = envs._registry._resolve
    for base in POPGYM_BASES:
        for level in LEVELS:
            task = resolve(f"{base}-{level}")
            assert (task.source, task.target) == ("jax-port", base + level)
        assert resolve(base).target == base + "Easy"
    listed = set(envs.task_names())
    assert {f"{b}-Hard" for b in NEW_BASES} | set(NEW_BASES) <= listed
    # popgym's names of the paper's rows resolve, but only the paper's names are listed.
    assert "PositionOnlyCartPole-Medium" not in listed
    assert (
        resolve("PositionOnlyCartPole-Medium").target == resolve("StatelessCartPole-Medium").target
    )
    assert set(envs.paper_tasks()) & set(NEW_BASES) == set()
    rows = {row["name"]: row for row in envs.describe_tasks()}
    assert rows["LabyrinthEscape-Hard"]["target"] == "LabyrinthEscapeHard"
    assert rows["Concentration-Medium"]["obs"] == "Box(312,)"  # 104 cards x (2 colours + down)


@pytest.mark.slow  # one compilation of the agent and environment each, seconds per task
@pytest.mark.parametrize("name", NEW_BASES)
def test_new_port_trains_on_the_fused_path(name: str) -> None:
    """One epoch of the fused engine's code (environment and agent in one jitted scan) on
    each new task at Easy: the agent learns (its parameters move) and stays finite."""
    env = envs.make_jax(name)
    config = env.spec.agent_config(n_hidden=4)
    init, epoch, _ = fused.make_train(config, env, epoch_steps=48)
    agent = {k: jnp.asarray(v) for k, v in rtrrl_spec.init(config, 1, 0).items()}
    carry = jax.jit(init)(agent, jax.random.key_data(jax.random.key(0)))
    carry, metrics = jax.jit(epoch)(carry)
    assert bool(np.all(metrics["finite"])) and np.isfinite(float(metrics["mean_abs_td"]))
    assert not np.allclose(np.asarray(carry["agent"]["W"]), np.asarray(agent["W"]))
