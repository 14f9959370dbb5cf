"""Pure-JAX ports of popgym's card games beyond the paper's: Autoencode, CountRecall,
HigherLower and Concentration.

Each follows popgym's own code (version 1.0.x) step for step; ``tests/envs/
test_popgym_ports.py`` gives a port and popgym the same shuffled deck and compares every
observation, reward and termination.

popgym's decks (``popgym.core.deck.Deck``) hold ``52 n`` cards; card ``i`` has suit ``i % 4``,
rank ``(i % 52) // 4`` and colour ``i % 2``. A shuffle permutes the card ids, and dealing
takes them from the end of that permutation. A port draws the permutation with
:func:`jax.random.permutation` (uniform, as NumPy's shuffle) and keeps the cards' attributes
in dealing order.

Observations that popgym gives as ``MultiDiscrete`` or ``Tuple`` of discrete spaces are
returned already flattened, one-hot per component and concatenated (a ``Box`` of 0/1), which
is how rtrrl's host adapter flattens popgym's originals, so a port and its original have the
same ``obs_dim``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from gymnax.environments import environment, spaces

_DECK = 52
_SUITS, _RANKS, _COLOURS = 4, 13, 2


def card_attribute(cards: jax.Array, kind: str) -> jax.Array:
    """popgym's ``suits_idx``, ``ranks_idx`` or ``colors_idx`` of card ids."""
    if kind == "suits":
        return cards % _SUITS
    if kind == "ranks":
        return (cards % _DECK) // _SUITS
    if kind == "colors":
        return cards % _COLOURS
    raise ValueError(f"deck_type must be 'suits', 'ranks' or 'colors', not {kind!r}")


def _distinct(kind: str) -> int:
    return {"suits": _SUITS, "ranks": _RANKS, "colors": _COLOURS}[kind]


def dealt(key: jax.Array, num_cards: int, kind: str) -> jax.Array:
    """The attribute ``kind`` of a freshly shuffled deck's cards, in the order they are dealt."""
    return card_attribute(jax.random.permutation(key, num_cards).astype(jnp.int32), kind)


def one_hot_box(size: int) -> spaces.Box:
    """The space of a flattened one-hot observation of ``size`` entries."""
    return spaces.Box(0.0, 1.0, (size,), jnp.float32)


class _Port(environment.Environment[Any, environment.EnvParams]):
    """What every card port shares: params holding the episode length, discrete actions."""

    episode_steps: int
    actions: int

    @property
    def default_params(self) -> environment.EnvParams:
        return environment.EnvParams(max_steps_in_episode=self.episode_steps)

    def action_space(self, params: environment.EnvParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(self.actions)

    @property
    def num_actions(self) -> int:
        return self.actions


class AutoencodeState(NamedTuple):
    """The deck's suits in dealing order and the steps taken."""

    suits: jax.Array  # (52 n,) int32
    time: jax.Array


_PLAY, _WATCH = 0, 1


class Autoencode(_Port):
    """popgym's ``Autoencode``: watch a deck being dealt, then name its suits newest first.

    The observation is popgym's ``(mode, suit)`` (``Tuple(Discrete(2), Discrete(4))``), one-hot
    as 2 + 4 entries; mode 1 (watch) while cards are dealt, 0 (play) from the step that deals
    the last card. Watching the ``N = 52 n`` cards takes ``N - 1`` steps (one is dealt at
    reset) with reward 0; then each of ``N`` steps names one card, newest first, for
    ±1 / N, and observes ``(0, 0)``; the last one terminates: ``2 N - 1`` steps.
    """

    def __init__(self, num_decks: int = 1) -> None:
        super().__init__()
        self.num_cards = _DECK * int(num_decks)
        self.episode_steps = 2 * self.num_cards - 1
        self.actions = _SUITS

    def _obs(self, mode: jax.Array, suit: jax.Array) -> jax.Array:
        return jnp.concatenate(
            [jax.nn.one_hot(mode, 2, dtype=jnp.float32), jax.nn.one_hot(suit, 4, dtype=jnp.float32)]
        )

    def reset_env(
        self, key: jax.Array, params: environment.EnvParams
    ) -> tuple[jax.Array, AutoencodeState]:
        suits = dealt(key, self.num_cards, "suits")
        return self._obs(jnp.int32(_WATCH), suits[0]), AutoencodeState(suits, jnp.int32(0))

    def step_env(
        self,
        key: jax.Array,
        state: AutoencodeState,
        action: jax.Array,
        params: environment.EnvParams,
    ) -> tuple[jax.Array, AutoencodeState, jax.Array, jax.Array, dict[str, Any]]:
        del key
        n, t = self.num_cards, state.time
        watching = t < n - 1
        # Watching: deal card t + 1; the mode turns to play as the last card is dealt.
        newest = state.suits[jnp.minimum(t + 1, n - 1)]
        watch_mode = jnp.where(t + 1 == n - 1, _PLAY, _WATCH)
        # Playing: the p-th answer names the card dealt p-th from last.
        p = t - (n - 1)
        target = state.suits[jnp.clip(n - 1 - p, 0, n - 1)]
        scale = jnp.float32(1.0 / n)
        reward = jnp.where(watching, jnp.float32(0.0), jnp.where(action == target, scale, -scale))
        obs = jnp.where(
            watching, self._obs(watch_mode, newest), self._obs(jnp.int32(_PLAY), jnp.int32(0))
        )
        terminated = ~watching & (p == n - 1)
        return obs, AutoencodeState(state.suits, t + 1), reward, terminated, {}

    def observation_space(self, params: environment.EnvParams) -> spaces.Box:
        return one_hot_box(2 + _SUITS)

    @property
    def name(self) -> str:
        return "Autoencode"


class CountState(NamedTuple):
    """Two decks in dealing order (values and queries), the values counted so far."""

    values: jax.Array  # (52 n,) int32
    queries: jax.Array  # (52 n,) int32
    counts: jax.Array  # (distinct,) int32: how often each value has been dealt
    time: jax.Array


class CountRecall(_Port):
    """popgym's ``CountRecall``: each step deals a value card and a query card; the action
    names how many cards of the previous query's kind had been dealt by then (the card dealt
    with that query included), for ±1 / (N − 1).

    ``deck_type`` is what tells cards apart: colours (2 kinds), suits (4) or ranks (13). The
    observation is popgym's ``MultiDiscrete([d, d])`` (value, query), one-hot as 2 d entries;
    an episode deals both decks of ``N = 52 n`` cards: ``N - 1`` steps, the last one
    terminating.
    """

    def __init__(self, num_decks: int = 1, deck_type: str = "colors") -> None:
        super().__init__()
        card_attribute(jnp.zeros((), jnp.int32), deck_type)  # validates deck_type
        self.num_cards = _DECK * int(num_decks)
        self.deck_type = deck_type
        self.distinct = _distinct(deck_type)
        self.max_card_count = self.num_cards // self.distinct
        self.episode_steps = self.num_cards - 1
        self.actions = self.max_card_count + 1

    def _obs(self, value: jax.Array, query: jax.Array) -> jax.Array:
        d = self.distinct
        return jnp.concatenate(
            [
                jax.nn.one_hot(value, d, dtype=jnp.float32),
                jax.nn.one_hot(query, d, dtype=jnp.float32),
            ]
        )

    def reset_env(
        self, key: jax.Array, params: environment.EnvParams
    ) -> tuple[jax.Array, CountState]:
        key_values, key_queries = jax.random.split(key)
        values = dealt(key_values, self.num_cards, self.deck_type)
        queries = dealt(key_queries, self.num_cards, self.deck_type)
        counts = jnp.zeros((self.distinct,), jnp.int32).at[values[0]].add(1)
        state = CountState(values, queries, counts, jnp.int32(0))
        return self._obs(values[0], queries[0]), state

    def step_env(
        self,
        key: jax.Array,
        state: CountState,
        action: jax.Array,
        params: environment.EnvParams,
    ) -> tuple[jax.Array, CountState, jax.Array, jax.Array, dict[str, Any]]:
        del key
        t = state.time
        answer = state.counts[state.queries[t]]
        scale = jnp.float32(1.0 / self.episode_steps)
        reward = jnp.where(action == answer, scale, -scale)
        nxt = jnp.minimum(t + 1, self.num_cards - 1)
        value, query = state.values[nxt], state.queries[nxt]
        counts = state.counts.at[value].add(1)
        terminated = t + 1 == self.num_cards - 1
        new_state = CountState(state.values, state.queries, counts, t + 1)
        return self._obs(value, query), new_state, reward, terminated, {}

    def observation_space(self, params: environment.EnvParams) -> spaces.Box:
        return one_hot_box(2 * self.distinct)

    @property
    def name(self) -> str:
        return "CountRecall"


class RankState(NamedTuple):
    """The deck's ranks in dealing order and the steps taken."""

    ranks: jax.Array  # (52 n,) int32
    time: jax.Array


class HigherLower(_Port):
    """popgym's ``HigherLower``: guess whether the next card's rank is higher (action 0) or
    lower (1) than the one showing; ±1 / N, 0 on equal ranks. The observation is the rank
    showing (``Discrete(13)``); the episode ends (terminated) when the deck of ``N = 52 n``
    cards is dealt, after ``N - 1`` steps.
    """

    def __init__(self, num_decks: int = 1) -> None:
        super().__init__()
        self.num_cards = _DECK * int(num_decks)
        self.episode_steps = self.num_cards - 1
        self.actions = 2

    def reset_env(
        self, key: jax.Array, params: environment.EnvParams
    ) -> tuple[jax.Array, RankState]:
        ranks = dealt(key, self.num_cards, "ranks")
        return ranks[0], RankState(ranks, jnp.int32(0))

    def step_env(
        self,
        key: jax.Array,
        state: RankState,
        action: jax.Array,
        params: environment.EnvParams,
    ) -> tuple[jax.Array, RankState, jax.Array, jax.Array, dict[str, Any]]:
        del key
        t = state.time
        showing = state.ranks[t]
        nxt = state.ranks[jnp.minimum(t + 1, self.num_cards - 1)]
        scale = jnp.float32(1.0 / self.num_cards)
        right = (nxt > showing) == (action == 0)
        reward = jnp.where(nxt == showing, jnp.float32(0.0), jnp.where(right, scale, -scale))
        terminated = t + 1 == self.num_cards - 1
        return nxt, RankState(state.ranks, t + 1), reward, terminated, {}

    def observation_space(self, params: environment.EnvParams) -> spaces.Discrete:
        return spaces.Discrete(_RANKS)

    @property
    def name(self) -> str:
        return "HigherLower"


class ConcentrationState(NamedTuple):
    """The cards laid face down, which are face up, the card turned first this turn."""

    values: jax.Array  # (N,) int32: the value (colour or rank) of the card at each position
    face_up: jax.Array  # (N,) bool: matched pairs
    pending: jax.Array  # position turned first this turn, -1 for none
    time: jax.Array


class Concentration(_Port):
    """popgym's ``Concentration``: ``N = 52 n`` cards face down; each step turns one (the
    action is a position). Two turned cards of the same value (colour or rank, ``deck_type``)
    stay face up for 1 / (N / 2); a pair that differs costs 2 / L, and turning a card that is
    already face up costs 1 / L for each card turned this turn (``L = ⌈2 N − N / (2 N − 1)⌉``,
    popgym's time limit: the expected length of a perfect player's game). The observation is
    each position's value, or ``d`` (face down; ``d`` distinct values), one-hot per position:
    ``N (d + 1)`` entries. It shows this turn's cards, a mismatched pair included, on the step
    they are turned. Terminated when every card is face up, truncated after L steps.
    """

    def __init__(self, num_decks: int = 1, deck_type: str = "ranks") -> None:
        super().__init__()
        if deck_type not in ("colors", "ranks"):
            # popgym: suits cannot pair up (13 cards of each suit).
            raise ValueError(f"deck_type must be 'colors' or 'ranks', not {deck_type!r}")
        n = _DECK * int(num_decks)
        self.num_cards = n
        self.deck_type = deck_type
        self.face_down = _distinct(deck_type)
        self.episode_steps = math.ceil(2 * n - (n / (2 * n - 1)))
        self.success_reward = 1.0 / (n // 2)
        self.failure_reward = -1.0 / self.episode_steps
        self.actions = n

    def _obs(self, values: jax.Array, visible: jax.Array) -> jax.Array:
        shown = jnp.where(visible, values, self.face_down)
        return jax.nn.one_hot(shown, self.face_down + 1, dtype=jnp.float32).reshape(-1)

    def reset_env(
        self, key: jax.Array, params: environment.EnvParams
    ) -> tuple[jax.Array, ConcentrationState]:
        values = dealt(key, self.num_cards, self.deck_type)
        face_up = jnp.zeros((self.num_cards,), bool)
        state = ConcentrationState(values, face_up, jnp.int32(-1), jnp.int32(0))
        return self._obs(values, face_up), state

    def step_env(
        self,
        key: jax.Array,
        state: ConcentrationState,
        action: jax.Array,
        params: environment.EnvParams,
    ) -> tuple[jax.Array, ConcentrationState, jax.Array, jax.Array, dict[str, Any]]:
        del key
        first = state.pending
        second_card = first >= 0
        positions = jnp.arange(self.num_cards)
        turned = (positions == action) | (second_card & (positions == first))
        obs = self._obs(state.values, state.face_up | turned)
        # A card that is face up was never left pending, so only this step's card can be up.
        already_up = state.face_up[action]
        pair = jnp.stack([first, action])
        match = second_card & (state.values[jnp.maximum(first, 0)] == state.values[action])
        match = match & (first != action) & ~already_up
        fail = jnp.float32(self.failure_reward)
        reward = jnp.where(
            already_up,
            fail * jnp.where(second_card, 2.0, 1.0),
            jnp.where(
                second_card,
                jnp.where(match, jnp.float32(self.success_reward), 2.0 * fail),
                jnp.float32(0.0),
            ),
        ).astype(jnp.float32)
        face_up = jnp.where(match, state.face_up.at[pair].set(True), state.face_up)
        pending = jnp.where(second_card | already_up, -1, action).astype(jnp.int32)
        terminated = match & jnp.all(face_up)
        new_state = ConcentrationState(state.values, face_up, pending, state.time + 1)
        return obs, new_state, reward, terminated, {}

    def observation_space(self, params: environment.EnvParams) -> spaces.Box:
        return one_hot_box(self.num_cards * (self.face_down + 1))

    @property
    def name(self) -> str:
        return "Concentration"
