"""Pure-JAX ports of popgym's grid games: ``Battleship``, ``LabyrinthEscape`` and
``LabyrinthExplore``.

Each follows popgym's own code (version 1.0.x) step for step; ``tests/envs/
test_popgym_ports.py`` gives a port and popgym the same board or maze and compares every
observation, reward and termination. The random boards and mazes are drawn the way popgym
draws them (the same distribution; JAX's random numbers instead of NumPy's / Python's).

- **Battleship.** Ships of sizes 2, 3, 3 and 4 are placed one after the other on a B × B
  board, each by rejection: a uniform start cell, axis and direction, redrawn until the ship
  lies on the board and overlaps none placed before.
- **Labyrinths.** popgym draws its mazes with mazelib's hunt-and-kill generator (random
  hunting, ``H W`` hunts on an ``H × W`` grid of ``H = 2 h + 1`` rows), then places the
  entrance and the exit on opposite outer walls (side and odd coordinates uniform). The port
  draws the same mazes in a ``lax.while_loop`` (:func:`hunt_and_kill`). Like mazelib's, once
  in a long while a maze has a cell that the hunts never reached (walled in).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from gymnax.environments import environment, spaces

from rtrrl.envs._popgym_cards import one_hot_box

SHIP_SIZES = (2, 3, 3, 4)


class BattleshipState(NamedTuple):
    """The hidden board, the cells guessed (both flat, row-major) and the hits so far."""

    board: jax.Array  # (B B,) bool: ship cells
    guesses: jax.Array  # (B B,) bool
    hits: jax.Array
    time: jax.Array


class Battleship(environment.Environment[BattleshipState, environment.EnvParams]):
    """popgym's ``Battleship``: the action is a cell (popgym's ``MultiDiscrete([B, B])``,
    flattened row-major as the host adapter does); the observation is whether it hit a ship
    cell not guessed before (``Discrete(2)``). A hit is rewarded 1 / S (``S`` = 12 ship
    cells), anything else −1 / (B² − S); terminated when every ship cell is hit, truncated
    after B² steps.
    """

    def __init__(self, board_size: int = 10, ship_sizes: tuple[int, ...] = SHIP_SIZES) -> None:
        super().__init__()
        self.board_size = int(board_size)
        self.ship_sizes = tuple(int(s) for s in ship_sizes)
        if max(self.ship_sizes) > self.board_size:
            raise ValueError(f"a ship of {max(self.ship_sizes)} cells does not fit on the board")
        self.cells = self.board_size**2
        self.needed_hits = sum(self.ship_sizes)

    @property
    def default_params(self) -> environment.EnvParams:
        return environment.EnvParams(max_steps_in_episode=self.cells)

    def place_ships(self, key: jax.Array) -> jax.Array:
        """A B × B board (bool) with the ships placed one after the other as popgym places
        them: a uniform start cell, axis and direction, drawn again until the ship lies on the
        board and overlaps none placed before. One loop for all ships, so that the compiled
        code has one random-number call, not one per ship."""
        b = self.board_size
        rows, cols = jnp.arange(b)[:, None], jnp.arange(b)[None, :]
        sizes = jnp.array(self.ship_sizes, jnp.int32)
        high = jnp.array([b, b, 2, 2])

        def body(carry: tuple[jax.Array, jax.Array, jax.Array]) -> tuple[Any, ...]:
            board, placed, key = carry
            key, sub = jax.random.split(key)
            start_row, start_col, axis, sign = jax.random.randint(sub, (4,), 0, high)
            start = jnp.stack([start_row, start_col])
            length = sizes[jnp.minimum(placed, len(self.ship_sizes) - 1)] - 1
            end = start.at[axis].add(jnp.where(sign == 0, length, -length))
            low, top = jnp.minimum(start, end), jnp.maximum(start, end)
            ship = (rows >= low[0]) & (rows <= top[0]) & (cols >= low[1]) & (cols <= top[1])
            fits = jnp.all((end >= 0) & (end < b)) & ~jnp.any(ship & board)
            return jnp.where(fits, board | ship, board), placed + fits, key

        init = (jnp.zeros((b, b), bool), jnp.int32(0), key)
        done = len(self.ship_sizes)
        return jax.lax.while_loop(lambda carry: carry[1] < done, body, init)[0]

    def reset_env(
        self, key: jax.Array, params: environment.EnvParams
    ) -> tuple[jax.Array, BattleshipState]:
        board = self.place_ships(key).reshape(-1)
        guesses = jnp.zeros((self.cells,), bool)
        return jnp.int32(0), BattleshipState(board, guesses, jnp.int32(0), jnp.int32(0))

    def step_env(
        self,
        key: jax.Array,
        state: BattleshipState,
        action: jax.Array,
        params: environment.EnvParams,
    ) -> tuple[jax.Array, BattleshipState, jax.Array, jax.Array, dict[str, Any]]:
        del key
        hit = state.board[action] & ~state.guesses[action]
        hits = state.hits + hit
        reward = jnp.where(
            hit,
            jnp.float32(1.0 / self.needed_hits),
            jnp.float32(-1.0 / (self.cells - self.needed_hits)),
        )
        guesses = state.guesses.at[action].set(True)
        new_state = BattleshipState(state.board, guesses, hits, state.time + 1)
        return hit.astype(jnp.int32), new_state, reward, hits == self.needed_hits, {}

    def action_space(self, params: environment.EnvParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(self.cells)

    def observation_space(self, params: environment.EnvParams) -> spaces.Discrete:
        return spaces.Discrete(2)

    @property
    def num_actions(self) -> int:
        return self.cells

    @property
    def name(self) -> str:
        return "Battleship"


# popgym.core.maze's cell values and actions.
FREE, OBSTACLE, START, GOAL = 0, 1, 2, 3
_CELL_KINDS = 5  # FREE, OBSTACLE, START, GOAL and popgym's HIDDEN (never observed)
_NO_ACTION = 4
_MOVES = ((0, -1), (0, 1), (-1, 0), (1, 0))  # left, right, up, down: (row, column) steps


class MazeState(NamedTuple):
    """The maze (with its start and goal marked), the agent's cell, the cells visited."""

    grid: jax.Array  # (H, W) int32
    position: jax.Array  # (2,) int32: row, column
    explored: jax.Array  # (H, W) bool
    time: jax.Array


def hunt_and_kill(key: jax.Array, rows: int, cols: int) -> jax.Array:
    """A ``(2 rows + 1) × (2 cols + 1)`` maze (1 wall, 0 free) drawn as mazelib's
    hunt-and-kill with random hunting draws it.

    mazelib starts at a random cell and carves a random walk to unvisited neighbours until
    there is none; then it hunts: it draws a cell uniformly and walks from it if that cell
    is visited with an unvisited neighbour (a *frontier* cell), else draws again, ``H W``
    draws in all. Since the draws that miss the frontier change nothing, this draws how many
    hunts the next hit takes (geometric, with the frontier's share of the cells) and then the
    frontier cell hit (uniform): the same mazes with the same probabilities, in a loop of at
    most two iterations per cell instead of one per draw, which matters because JAX resets an
    environment (drawing a maze) on every step.
    """
    budget = (2 * rows + 1) * (2 * cols + 1)
    bounds = jnp.array([rows, cols])
    moves = jnp.array(_MOVES, jnp.int32)

    def frontier(visited: jax.Array) -> jax.Array:
        unvisited = jnp.pad(~visited, 1)
        beside = unvisited[1:-1, :-2] | unvisited[1:-1, 2:] | unvisited[:-2, 1:-1]
        return visited & (beside | unvisited[2:, 1:-1])

    def nth(mask: jax.Array, u: jax.Array) -> jax.Array:
        """The index of a uniformly chosen True entry of ``mask`` (``u`` uniform in [0, 1))."""
        count = jnp.sum(mask)
        k = jnp.minimum(jnp.floor(u * count).astype(jnp.int32), count - 1)
        return jnp.argmax(jnp.cumsum(mask) > k)

    def body(carry: tuple[Any, ...]) -> tuple[Any, ...]:
        grid, visited, cell, hunts, key, _ = carry
        # One random-number call per iteration (the walk's neighbour, the hunt's count of
        # draws and the frontier cell it hits), which keeps the compiled loop small.
        key, sub = jax.random.split(key)
        u_walk, u_draws, u_hit = jax.random.uniform(sub, (3,))
        # Walk: carve to a random unvisited neighbour (cells are two grid squares apart).
        nbrs = cell + moves
        inside = jnp.all((nbrs >= 0) & (nbrs < bounds), axis=1)
        clipped = jnp.clip(nbrs, 0, bounds - 1)
        open_ = inside & ~visited[clipped[:, 0], clipped[:, 1]]
        walk = jnp.any(open_)
        move = nth(open_, u_walk)
        nxt = clipped[move]
        square, wall = 2 * nxt + 1, 2 * cell + 1 + moves[move]
        carved = grid.at[square[0], square[1]].set(0).at[wall[0], wall[1]].set(0)
        # Hunt: the draws until one hits the frontier (geometric, from a uniform in (0, 1]),
        # and the frontier cell it hits.
        front = frontier(visited).reshape(-1)
        share = jnp.sum(front) / (rows * cols)
        draws = jnp.floor(jnp.log1p(-u_draws) / jnp.log1p(-jnp.clip(share, 1e-6, 1.0))) + 1
        draws = jnp.minimum(draws, budget + 1).astype(jnp.int32)
        hit = nth(front, u_hit)
        found = (share > 0) & (hunts + draws <= budget)
        grid = jnp.where(walk, carved, grid)
        visited = jnp.where(walk, visited.at[nxt[0], nxt[1]].set(True), visited)
        cell = jnp.where(walk, nxt, jnp.stack([hit // cols, hit % cols]))
        hunts = jnp.where(walk, hunts, hunts + draws)
        return grid, visited, cell, hunts, key, walk | found

    key, key_first = jax.random.split(key)
    first = jax.random.randint(key_first, (2,), 0, bounds)
    grid = jnp.ones((2 * rows + 1, 2 * cols + 1), jnp.int32)
    grid = grid.at[2 * first[0] + 1, 2 * first[1] + 1].set(0)
    visited = jnp.zeros((rows, cols), bool).at[first[0], first[1]].set(True)
    init = (grid, visited, first, jnp.int32(0), key, jnp.bool_(True))
    return jax.lax.while_loop(lambda carry: carry[-1], body, init)[0]


def outer_entrances(key: jax.Array, h: int, w: int) -> tuple[jax.Array, jax.Array]:
    """mazelib's entrances on opposite outer walls: ``(start, end)`` as (row, column)."""
    high = jnp.array([4, (h - 1) // 2, (w - 1) // 2, (h - 1) // 2, (w - 1) // 2])
    side, *odd = jax.random.randint(key, (5,), 0, high)
    s_row, s_col, e_row, e_col = (2 * v + 1 for v in odd)  # odd rows and columns
    starts = jnp.array([[0, s_col], [h - 1, s_col], [s_row, 0], [s_row, w - 1]])
    ends = jnp.array([[h - 1, e_col], [0, e_col], [e_row, w - 1], [e_row, 0]])
    return starts[side], ends[side]


class Labyrinth(environment.Environment[MazeState, environment.EnvParams]):
    """popgym's ``LabyrinthEscape`` (``escape=True``) and ``LabyrinthExplore``.

    The maze is ``maze_dims`` blocks, a grid of ``maze_dims + 1`` cells a side; the agent
    starts on the entrance. Actions move left, right, up, down (walls block). The observation
    is popgym's ``MultiDiscrete(9 * [5] + [5])``, one-hot as 50 entries: the 3 × 3 cells around
    the agent, then the last action (4 after a reset). popgym cuts that view at the top and
    left edges and pads it with walls at the bottom and right, so on the top row or left
    column the agent's cell is not in the middle; the port does the same.

    Escape: every step costs 1 / L; reaching the exit adds 1 and terminates. Explore: a
    step onto a cell not visited before is rewarded 1 / (free cells, the entrance excluded),
    any other step costs 1 / L; terminated when every free cell is visited. popgym truncates
    after ``L − 1`` steps (it flags the step whose count reaches ``L − 1``), so the episode
    length here is ``L − 1``.
    """

    def __init__(
        self, escape: bool, maze_dims: tuple[int, int] = (10, 10), episode_length: int = 1024
    ) -> None:
        super().__init__()
        if maze_dims[0] % 2 or maze_dims[1] % 2:
            raise ValueError(f"maze_dims must be even, not {maze_dims}")
        self.escape = escape
        self.blocks = (maze_dims[0] // 2, maze_dims[1] // 2)
        self.shape = (2 * self.blocks[0] + 1, 2 * self.blocks[1] + 1)
        self.episode_length = int(episode_length)

    @property
    def default_params(self) -> environment.EnvParams:
        return environment.EnvParams(max_steps_in_episode=self.episode_length - 1)

    def view(self, grid: jax.Array, position: jax.Array) -> jax.Array:
        """popgym's ``local_view``: 3 × 3 cells from (row − 1, column − 1), clipped at 0 and
        at the far edges, padded with walls at the bottom and right."""
        h, w = self.shape
        y, x = position[0], position[1]
        ys = jnp.maximum(y - 1, 0) + jnp.arange(3)
        xs = jnp.maximum(x - 1, 0) + jnp.arange(3)
        # popgym bounds the rows by the grid's width and the columns by its height (equal
        # for its square mazes), then slicing bounds both by the grid itself.
        ys_in = (ys <= jnp.minimum(y + 1, w)) & (ys < h)
        xs_in = (xs <= jnp.minimum(x + 1, h)) & (xs < w)
        cells = grid[jnp.clip(ys, 0, h - 1)[:, None], jnp.clip(xs, 0, w - 1)[None, :]]
        return jnp.where(ys_in[:, None] & xs_in[None, :], cells, OBSTACLE)

    def observe(self, state: MazeState, action: jax.Array) -> jax.Array:
        """The one-hot view and last action."""
        view = self.view(state.grid, state.position).reshape(-1)
        view_hot = jax.nn.one_hot(view, _CELL_KINDS, dtype=jnp.float32).reshape(-1)
        return jnp.concatenate([view_hot, jax.nn.one_hot(action, 5, dtype=jnp.float32)])

    def reset_env(
        self, key: jax.Array, params: environment.EnvParams
    ) -> tuple[jax.Array, MazeState]:
        key_maze, key_doors = jax.random.split(key)
        grid = hunt_and_kill(key_maze, *self.blocks)
        start, end = outer_entrances(key_doors, *self.shape)
        grid = grid.at[start[0], start[1]].set(START)
        if self.escape:
            grid = grid.at[end[0], end[1]].set(GOAL)
        explored = jnp.zeros(self.shape, bool).at[start[0], start[1]].set(True)
        state = MazeState(grid, start.astype(jnp.int32), explored, jnp.int32(0))
        return self.observe(state, jnp.int32(_NO_ACTION)), state

    def step_env(
        self,
        key: jax.Array,
        state: MazeState,
        action: jax.Array,
        params: environment.EnvParams,
    ) -> tuple[jax.Array, MazeState, jax.Array, jax.Array, dict[str, Any]]:
        del key
        h, w = self.shape
        step = jnp.array(_MOVES, jnp.int32)[action]
        target = jnp.clip(state.position + step, 0, jnp.array([h - 1, w - 1]))
        blocked = state.grid[target[0], target[1]] == OBSTACLE
        position = jnp.where(blocked, state.position, target)
        new_cell = ~state.explored[position[0], position[1]]
        explored = state.explored.at[position[0], position[1]].set(True)
        new_state = MazeState(state.grid, position, explored, state.time + 1)
        cost = jnp.float32(-1.0 / self.episode_length)
        if self.escape:
            terminated = state.grid[position[0], position[1]] == GOAL
            reward = cost + jnp.where(terminated, jnp.float32(1.0), jnp.float32(0.0))
        else:
            free_cells = jnp.sum(state.grid == FREE)
            reward = jnp.where(new_cell, 1.0 / free_cells, cost).astype(jnp.float32)
            terminated = jnp.all(explored == (state.grid != OBSTACLE))
        return self.observe(new_state, action), new_state, reward, terminated, {}

    def action_space(self, params: environment.EnvParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(4)

    def observation_space(self, params: environment.EnvParams) -> spaces.Box:
        return one_hot_box(9 * _CELL_KINDS + 5)

    @property
    def num_actions(self) -> int:
        return 4

    @property
    def name(self) -> str:
        return "LabyrinthEscape" if self.escape else "LabyrinthExplore"
