"""Pure-JAX ports of popgym's tasks, as gymnax environments, for the fused path.

popgym (Morad et al., ICLR 2023) is written in NumPy and runs on the host at about 1,000 steps
a second here; the paper's authors trained on JAX ports of it (their code loads ``popjym``).
These ports follow popgym's own code (version 1.0.x), step for step: ``tests/envs/
test_popgym_ports.py`` drives each port and the popgym original from the same deck, CartPole
or pendulum state, mine field, board, maze or bandit arms, and compares every observation,
reward and termination. Every popgym class has a port, at every difficulty (:data:`PORTS`,
:func:`make_port`): the paper's six tasks live here, the others in
:mod:`rtrrl.envs._popgym_cards` (Autoencode, CountRecall, HigherLower, Concentration),
:mod:`rtrrl.envs._popgym_grids` (Battleship, the labyrinths) and
:mod:`rtrrl.envs._popgym_pendulum` (the pendulums).

Where popgym's code and the JAX ports the paper used (popjaxrl, popjym) differ, we follow
popgym's code, and say so:

- **RepeatPrevious.** At popgym step ``s`` (the agent has seen cards ``c_1 .. c_s``) the target
  is ``c_{s-k+1}``, the card ``k - 1`` steps before the newest one, and an episode is 51 steps
  (one deck). popjaxrl rewards ``c_{s-k}`` and runs 52 steps.
- **Noisy CartPole.** popgym adds the noise to the first observation of an episode as well.
- **VelocityOnlyCartPole.** popgym's reset returns the positions ``(x, θ)``, its steps the
  velocities ``(ẋ, θ̇)``; the port does the same (both are U(−0.05, 0.05) at a reset).

The ports here:

- :class:`CardRecall` (``RepeatFirst``, ``RepeatPrevious``): a shuffled deck of ``52 n`` cards is
  dealt one per step; the observation is the suit of the newest card (``Discrete(4)``, one-hot
  in :class:`~rtrrl.envs.JaxEnv`), the action a suit. ``RepeatFirst`` rewards naming the first
  card's suit (±1 / (52 n − 1) a step), ``RepeatPrevious`` the suit ``k - 1`` cards before the
  newest (±1 / (52 n − k), from the step where ``k`` cards have been seen). The episode ends
  (terminated) when the deck is dealt: ``52 n - 1`` steps. Returns lie in [−1, 1].
- :class:`PositionOnlyCartPole` (``PositionOnlyCartPole``, ``NoisyPositionOnlyCartPole``): gymnax's
  CartPole-v1 dynamics, observing (x, θ) only, reward ``1 / L`` a step, truncated after ``L``
  steps (200, 400, 600 for Easy, Medium, Hard), so a perfect episode returns 1. The noisy
  version adds N(0, σ²) to both observed entries and clips them to ±(2 · 2.4, 2 · 12°).
  :class:`VelocityOnlyCartPole` observes (ẋ, θ̇) instead.
- :class:`MultiArmedBandit` (``MultiarmedBandit``): ``n`` arms with payout probabilities drawn
  U(0, 1) per episode; pulling an arm observes whether it paid (``Discrete(2)``) and is
  rewarded ±1 / L; truncated after ``L`` steps (10 arms and 200 steps for Easy).
- :class:`MineSweeper` (``MineSweeper``): a hidden R × C field with ``m`` mines; the action is a
  cell, flattened row-major (popgym's ``MultiDiscrete([R, C])`` as the host adapter flattens
  it); the observation is the number of mines in the cell's 3 × 3 neighbourhood (the cell
  included). A new cell is rewarded 1 / L (``L = R C - m``), a cell seen before
  −0.5 / (L − 2), a mine −0.5 − 1 / L and ends the episode, which also ends when every free
  cell has been seen, or is truncated after ``L`` steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from gymnax.environments import environment, spaces
from gymnax.environments.classic_control.cartpole import CartPole

from rtrrl.envs._popgym_cards import Autoencode, Concentration, CountRecall, HigherLower
from rtrrl.envs._popgym_grids import Battleship, Labyrinth
from rtrrl.envs._popgym_pendulum import PositionOnlyPendulum

_SUITS = 4
_DECK = 52


class CardState(NamedTuple):
    """A dealt deck: ``cards[j]`` is the suit of the ``j``-th card dealt (0-based)."""

    cards: jax.Array  # (52 n,) int32
    time: jax.Array  # steps taken; the newest card is cards[time]


class CardRecall(environment.Environment[CardState, environment.EnvParams]):
    """popgym's ``RepeatFirst`` (``mode="first"``) and ``RepeatPrevious`` (``mode="previous"``).

    Args:
        mode: ``"first"`` or ``"previous"``.
        num_decks: decks shuffled together; an episode is ``52 num_decks - 1`` steps.
        k: for ``"previous"``, the card to name is the ``k``-th newest one seen (``k = 1``
            is the newest, as in popgym's code).
    """

    def __init__(self, mode: str, num_decks: int, k: int = 1) -> None:
        super().__init__()
        if mode not in ("first", "previous"):
            raise ValueError(f"mode must be 'first' or 'previous', not {mode!r}")
        self.mode = mode
        self.num_cards = _DECK * num_decks
        if mode == "previous" and not 1 <= k < self.num_cards:
            raise ValueError(f"k must be in [1, {self.num_cards}), not {k}")
        self.k = k
        if mode == "first":
            self.reward_scale = 1.0 / (self.num_cards - 1)
        else:
            self.reward_scale = 1.0 / (self.num_cards - k)

    @property
    def default_params(self) -> environment.EnvParams:
        return environment.EnvParams(max_steps_in_episode=self.num_cards - 1)

    def reset_env(
        self, key: jax.Array, params: environment.EnvParams
    ) -> tuple[jax.Array, CardState]:
        suits = jnp.arange(self.num_cards, dtype=jnp.int32) % _SUITS
        state = CardState(jax.random.permutation(key, suits), jnp.zeros((), jnp.int32))
        return state.cards[0], state

    def step_env(
        self,
        key: jax.Array,
        state: CardState,
        action: jax.Array,
        params: environment.EnvParams,
    ) -> tuple[jax.Array, CardState, jax.Array, jax.Array, dict[str, Any]]:
        del key  # deterministic once the deck is shuffled
        seen = state.time + 1  # cards seen before this step's action
        scale = jnp.float32(self.reward_scale)
        if self.mode == "first":
            target = state.cards[0]
            rewarded = jnp.bool_(True)
        else:
            target = state.cards[jnp.maximum(seen - self.k, 0)]
            rewarded = seen >= self.k
        hit = jnp.where(action == target, scale, -scale)
        reward = jnp.where(rewarded, hit, jnp.float32(0.0))
        new_state = CardState(state.cards, seen)
        terminated = seen == self.num_cards - 1
        # On the terminating step the deck is dealt; cards[seen] is its last card.
        return new_state.cards[seen], new_state, reward, terminated, {}

    def action_space(self, params: environment.EnvParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(_SUITS)

    def observation_space(self, params: environment.EnvParams) -> spaces.Discrete:
        return spaces.Discrete(_SUITS)

    @property
    def num_actions(self) -> int:
        return _SUITS

    @property
    def name(self) -> str:
        return "RepeatFirst" if self.mode == "first" else "RepeatPrevious"


class PositionOnlyCartPole(environment.Environment[Any, Any]):
    """popgym's ``PositionOnlyCartPole`` and, with ``noise_sigma > 0``, its noisy version.

    Args:
        max_episode_length: ``L``: the time limit and the reward scale (``1 / L`` a step).
        noise_sigma: standard deviation of the observation noise (0: none, no clipping).
    """

    def __init__(self, max_episode_length: int = 200, noise_sigma: float = 0.0) -> None:
        super().__init__()
        self.cartpole = CartPole()
        self.max_episode_length = int(max_episode_length)
        self.noise_sigma = float(noise_sigma)

    @property
    def default_params(self) -> Any:
        return self.cartpole.default_params.replace(max_steps_in_episode=self.max_episode_length)

    def _high(self, params: Any) -> jax.Array:
        return jnp.array(
            [2.0 * params.x_threshold, 2.0 * params.theta_threshold_radians], jnp.float32
        )

    def _observe(self, key: jax.Array, state: Any, params: Any) -> jax.Array:
        obs = jnp.stack([state.x, state.theta]).astype(jnp.float32)
        if self.noise_sigma > 0.0:
            noise = self.noise_sigma * jax.random.normal(key, (2,), jnp.float32)
            high = self._high(params)
            obs = jnp.clip(obs + noise, -high, high)
        return obs

    def reset_env(self, key: jax.Array, params: Any) -> tuple[jax.Array, Any]:
        key_state, key_noise = jax.random.split(key)
        _, state = self.cartpole.reset_env(key_state, params)
        return self._observe(key_noise, state, params), state

    def step_env(
        self, key: jax.Array, state: Any, action: jax.Array, params: Any
    ) -> tuple[jax.Array, Any, jax.Array, jax.Array, dict[str, Any]]:
        _, state, _, terminated, _ = self.cartpole.step_env(key, state, action, params)
        # popgym maps CartPole's reward 1 to 1 / L (and 0 to −1); gymnasium's CartPole gives 1
        # on every step up to and including the terminating one, and an episode never steps
        # past its end here (auto-reset), so the reward is always 1 / L.
        reward = jnp.float32(1.0 / self.max_episode_length)
        return self._observe(key, state, params), state, reward, terminated, {}

    def action_space(self, params: Any = None) -> spaces.Discrete:
        return spaces.Discrete(2)

    def observation_space(self, params: Any) -> spaces.Box:
        high = self._high(params)
        return spaces.Box(-high, high, (2,), jnp.float32)

    @property
    def num_actions(self) -> int:
        return 2

    @property
    def name(self) -> str:
        return "NoisyPositionOnlyCartPole" if self.noise_sigma > 0 else "PositionOnlyCartPole"


class VelocityOnlyCartPole(PositionOnlyCartPole):
    """popgym's ``VelocityOnlyCartPole``: CartPole observing (ẋ, θ̇), unbounded.

    As popgym's code does, the first observation of an episode is (x, θ) (popgym's reset
    keeps the position entries; its steps the velocities).
    """

    def _observe(self, key: jax.Array, state: Any, params: Any) -> jax.Array:
        return jnp.stack([state.x_dot, state.theta_dot]).astype(jnp.float32)

    def reset_env(self, key: jax.Array, params: Any) -> tuple[jax.Array, Any]:
        _, state = self.cartpole.reset_env(key, params)
        return jnp.stack([state.x, state.theta]).astype(jnp.float32), state

    def observation_space(self, params: Any) -> spaces.Box:
        return spaces.Box(-jnp.inf, jnp.inf, (2,), jnp.float32)

    @property
    def name(self) -> str:
        return "VelocityOnlyCartPole"


class BanditState(NamedTuple):
    """The arms' payout probabilities for this episode."""

    arms: jax.Array  # (n,) float32
    time: jax.Array


class MultiArmedBandit(environment.Environment[BanditState, environment.EnvParams]):
    """popgym's ``MultiarmedBandit``: ``num_arms`` arms, episodes of ``episode_length`` steps."""

    def __init__(self, num_arms: int = 10, episode_length: int = 200) -> None:
        super().__init__()
        self.num_arms = int(num_arms)
        self.episode_length = int(episode_length)

    @property
    def default_params(self) -> environment.EnvParams:
        return environment.EnvParams(max_steps_in_episode=self.episode_length)

    def reset_env(
        self, key: jax.Array, params: environment.EnvParams
    ) -> tuple[jax.Array, BanditState]:
        arms = jax.random.uniform(key, (self.num_arms,), jnp.float32)
        return jnp.int32(0), BanditState(arms, jnp.zeros((), jnp.int32))

    def step_env(
        self,
        key: jax.Array,
        state: BanditState,
        action: jax.Array,
        params: environment.EnvParams,
    ) -> tuple[jax.Array, BanditState, jax.Array, jax.Array, dict[str, Any]]:
        paid = jax.random.uniform(key, (), jnp.float32) < state.arms[action]
        scale = jnp.float32(1.0 / self.episode_length)
        reward = jnp.where(paid, scale, -scale)
        new_state = BanditState(state.arms, state.time + 1)
        # Never terminated; the time limit (truncation) is JaxEnv's, at episode_length steps.
        return paid.astype(jnp.int32), new_state, reward, jnp.bool_(False), {}

    def action_space(self, params: environment.EnvParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(self.num_arms)

    def observation_space(self, params: environment.EnvParams) -> spaces.Discrete:
        return spaces.Discrete(2)

    @property
    def num_actions(self) -> int:
        return self.num_arms


_CLEAR, _MINE, _VIEWED = 0, 1, 2


class MineState(NamedTuple):
    """The field (0 clear, 1 mine, 2 seen; flat, row-major) and each cell's neighbour count."""

    field: jax.Array  # (R C,) int32
    neighbours: jax.Array  # (R C,) int32: mines in the 3 x 3 block around the cell
    time: jax.Array


class MineSweeper(environment.Environment[MineState, environment.EnvParams]):
    """popgym's ``MineSweeper``: a ``rows`` × ``cols`` field with ``mines`` mines."""

    def __init__(self, rows: int = 4, cols: int = 4, mines: int = 2) -> None:
        super().__init__()
        self.rows, self.cols, self.mines = int(rows), int(cols), int(mines)
        self.free_cells = self.rows * self.cols - self.mines
        self.success_reward = 1.0 / self.free_cells
        self.fail_reward = -0.5 - self.success_reward
        self.repeat_reward = -0.5 / (self.free_cells - 2)

    @property
    def default_params(self) -> environment.EnvParams:
        return environment.EnvParams(max_steps_in_episode=self.free_cells)

    def neighbour_counts(self, field: jax.Array) -> jax.Array:
        """Mines in each cell's 3 × 3 block (the cell included), zero outside the field."""
        mines = (field.reshape(self.rows, self.cols) == _MINE).astype(jnp.int32)
        padded = jnp.pad(mines, 1)
        counts = sum(
            padded[1 + di : 1 + di + self.rows, 1 + dj : 1 + dj + self.cols]
            for di in (-1, 0, 1)
            for dj in (-1, 0, 1)
        )
        return counts.reshape(-1)

    def reset_env(
        self, key: jax.Array, params: environment.EnvParams
    ) -> tuple[jax.Array, MineState]:
        cells = self.rows * self.cols
        where = jax.random.choice(key, cells, (self.mines,), replace=False)
        field = jnp.zeros((cells,), jnp.int32).at[where].set(_MINE)
        state = MineState(field, self.neighbour_counts(field), jnp.zeros((), jnp.int32))
        return jnp.int32(0), state

    def step_env(
        self,
        key: jax.Array,
        state: MineState,
        action: jax.Array,
        params: environment.EnvParams,
    ) -> tuple[jax.Array, MineState, jax.Array, jax.Array, dict[str, Any]]:
        del key
        cell = state.field[action]
        mine, seen = cell == _MINE, cell == _VIEWED
        reward = jnp.where(
            mine,
            jnp.float32(self.fail_reward),
            jnp.where(seen, jnp.float32(self.repeat_reward), jnp.float32(self.success_reward)),
        )
        field = jnp.where(mine | seen, state.field, state.field.at[action].set(_VIEWED))
        terminated = mine | jnp.all(field != _CLEAR)
        new_state = MineState(field, state.neighbours, state.time + 1)
        return state.neighbours[action], new_state, reward, terminated, {}

    def action_space(self, params: environment.EnvParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(self.rows * self.cols)

    def observation_space(self, params: environment.EnvParams) -> spaces.Discrete:
        return spaces.Discrete(min(self.mines + 1, 10))

    @property
    def num_actions(self) -> int:
        return self.rows * self.cols


#: popgym class name -> the port's constructor (popgym's parameters for each level).
PORTS: dict[str, Callable[[], environment.Environment[Any, Any]]] = {
    "RepeatFirstEasy": lambda: CardRecall("first", 1),
    "RepeatFirstMedium": lambda: CardRecall("first", 8),
    "RepeatFirstHard": lambda: CardRecall("first", 16),
    "RepeatPreviousEasy": lambda: CardRecall("previous", 1, k=4),
    "RepeatPreviousMedium": lambda: CardRecall("previous", 2, k=32),
    "RepeatPreviousHard": lambda: CardRecall("previous", 3, k=64),
    "PositionOnlyCartPoleEasy": lambda: PositionOnlyCartPole(200),
    "PositionOnlyCartPoleMedium": lambda: PositionOnlyCartPole(400),
    "PositionOnlyCartPoleHard": lambda: PositionOnlyCartPole(600),
    "NoisyPositionOnlyCartPoleEasy": lambda: PositionOnlyCartPole(200, 0.1),
    "NoisyPositionOnlyCartPoleMedium": lambda: PositionOnlyCartPole(200, 0.2),
    "NoisyPositionOnlyCartPoleHard": lambda: PositionOnlyCartPole(200, 0.3),
    "MultiarmedBanditEasy": lambda: MultiArmedBandit(10, 200),
    "MultiarmedBanditMedium": lambda: MultiArmedBandit(20, 400),
    "MultiarmedBanditHard": lambda: MultiArmedBandit(30, 600),
    "MineSweeperEasy": lambda: MineSweeper(4, 4, 2),
    "MineSweeperMedium": lambda: MineSweeper(6, 6, 6),
    "MineSweeperHard": lambda: MineSweeper(8, 8, 10),
    # The classes the paper does not use, with the parameters popgym gives each level.
    "AutoencodeEasy": lambda: Autoencode(1),
    "AutoencodeMedium": lambda: Autoencode(2),
    "AutoencodeHard": lambda: Autoencode(3),
    "BattleshipEasy": lambda: Battleship(8),
    "BattleshipMedium": lambda: Battleship(10),
    "BattleshipHard": lambda: Battleship(12),
    "ConcentrationEasy": lambda: Concentration(1, "colors"),
    "ConcentrationMedium": lambda: Concentration(2, "colors"),
    "ConcentrationHard": lambda: Concentration(1, "ranks"),
    "CountRecallEasy": lambda: CountRecall(1, "colors"),
    "CountRecallMedium": lambda: CountRecall(2, "suits"),
    "CountRecallHard": lambda: CountRecall(4, "ranks"),
    "HigherLowerEasy": lambda: HigherLower(1),
    "HigherLowerMedium": lambda: HigherLower(2),
    "HigherLowerHard": lambda: HigherLower(3),
    "LabyrinthEscapeEasy": lambda: Labyrinth(True, (10, 10)),
    "LabyrinthEscapeMedium": lambda: Labyrinth(True, (14, 14)),
    "LabyrinthEscapeHard": lambda: Labyrinth(True, (18, 18)),
    "LabyrinthExploreEasy": lambda: Labyrinth(False, (10, 10)),
    "LabyrinthExploreMedium": lambda: Labyrinth(False, (14, 14)),
    "LabyrinthExploreHard": lambda: Labyrinth(False, (18, 18)),
    "PositionOnlyPendulumEasy": lambda: PositionOnlyPendulum(200),
    "PositionOnlyPendulumMedium": lambda: PositionOnlyPendulum(150),
    "PositionOnlyPendulumHard": lambda: PositionOnlyPendulum(100),
    "NoisyPositionOnlyPendulumEasy": lambda: PositionOnlyPendulum(200, 0.1),
    "NoisyPositionOnlyPendulumMedium": lambda: PositionOnlyPendulum(200, 0.2),
    "NoisyPositionOnlyPendulumHard": lambda: PositionOnlyPendulum(200, 0.3),
    "VelocityOnlyCartPoleEasy": lambda: VelocityOnlyCartPole(200),
    "VelocityOnlyCartPoleMedium": lambda: VelocityOnlyCartPole(400),
    "VelocityOnlyCartPoleHard": lambda: VelocityOnlyCartPole(600),
}


def make_port(popgym_class: str) -> tuple[environment.Environment[Any, Any], Any]:
    """The port of a popgym class (e.g. ``"RepeatPreviousEasy"``) and its default params."""
    try:
        env = PORTS[popgym_class]()
    except KeyError:
        raise ValueError(
            f"no JAX port of popgym's {popgym_class}; ported: {', '.join(sorted(PORTS))}"
        ) from None
    return env, env.default_params
