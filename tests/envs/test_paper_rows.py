"""Each row of the paper's Tables 2 and 3 on the environment the paper used (docs/tasks.md,
"Paper rows"): episode lengths, masks, the deep-sea action map, rewards on scripted episodes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from rtrrl import envs
from rtrrl.envs import UnknownTaskError
from rtrrl.envs._registry import PAPER_ROWS, _resolve

#: The length each table ran its gymnax tasks for (the authors' max_ep_length).
TABLE_STEPS = {2: 500, 3: 1000}
#: Rows whose episodes end by themselves before any time limit.
ENDS_ITSELF = ("UmbrellaChain", "Catch", "MemoryChain-", "DeepSea-")


def _rows() -> list[tuple[int, str, str]]:
    return [(table, row, task) for table, rows in PAPER_ROWS.items() for row, task in rows.items()]


def test_every_row_names_a_task_and_shared_rows_differ_only_in_length() -> None:
    assert len(PAPER_ROWS[2]) == 20 and len(PAPER_ROWS[3]) == 15
    for _, _, task in _rows():
        assert _resolve(task).name == task  # resolves without building anything
    paper = set(envs.paper_tasks())
    assert set(PAPER_ROWS[3].values()) <= paper
    for row, task in PAPER_ROWS[2].items():
        if row in PAPER_ROWS[3] and not task.startswith(ENDS_ITSELF):
            # The same environment as Table 3's, at Table 2's length.
            assert task == f"{PAPER_ROWS[3][row]}-T500"
        else:
            assert task in paper


def test_gymnax_rows_run_for_their_tables_length() -> None:
    # What the registry hands gymnax; the scripted episodes below check that it binds.
    checked = 0
    for table, row, task in _rows():
        resolved = _resolve(task)
        if resolved.source != "gymnax" or task.startswith(ENDS_ITSELF):
            continue
        assert resolved.params["max_steps_in_episode"] == TABLE_STEPS[table], (table, row)
        checked += 1
    assert checked == 18  # 11 of Table 2 and 7 of Table 3: the rows with a time limit


def test_vel_and_pos_masks_are_the_authors_odd_and_even() -> None:
    odd = {4: (1, 3), 2: (1,)}  # the authors' "odd": indices i with i % 2 == 1
    even = {4: (0, 2), 2: (0,)}
    assert all(i % 2 == 1 for i in odd[4] + odd[2]) and all(i % 2 == 0 for i in even[4] + even[2])
    assert _resolve("CartPole-vel").obs_indices == odd[4]
    assert _resolve("CartPole-pos").obs_indices == even[4]
    assert _resolve("MountainCarContinuous-vel").obs_indices == odd[2]
    assert _resolve("MountainCarContinuous-pos").obs_indices == even[2]
    assert _resolve("MountainCarContinuous").obs_indices is None


def test_episode_length_suffix() -> None:
    pytest.importorskip("gymnax")
    assert envs.make_jax("Reacher-T100").spec.max_episode_steps == 100  # gymnax's default
    assert envs.make_jax("Reacher-misc").spec.max_episode_steps == 100
    assert envs.make_jax("Acrobot-v1-T1000").spec.max_episode_steps == 1000  # any gymnax id
    vel = envs.make_jax("MountainCarContinuous-vel-T999")
    assert (vel.spec.obs_dim, vel.spec.max_episode_steps) == (1, 999)  # the mask is kept
    sea = envs.make_jax("DeepSea-6-T3")
    assert sea.spec.obs_dim == 36 and sea.spec.max_episode_steps == 3
    assert not bool(sea.params.randomize_actions)
    with pytest.raises(ValueError, match="sets the episode length of a gymnax task"):
        _resolve("RepeatFirst-T10")
    with pytest.raises(ValueError, match="at least 1 step"):
        _resolve("Reacher-T0")
    with pytest.raises(UnknownTaskError, match="Reacher"):
        _resolve("Reachr-T500")


# --- scripted episodes --------------------------------------------------------------------


def _episode(task: str, policy: Callable[[Any], Any], seed: int = 0) -> tuple[float, int, bool]:
    """One episode of ``task`` under ``policy(state) -> action``, in one jitted loop: its
    return, its number of steps and whether it ended as terminated (else truncated)."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    env = envs.make_jax(task)
    limit = 5000

    @jax.jit
    def run(key: Any) -> tuple[Any, ...]:
        def cond(c: tuple[Any, ...]) -> Any:
            _, t, _, terminated, truncated = c
            return ~(terminated | truncated) & (t < limit)

        def body(c: tuple[Any, ...]) -> tuple[Any, ...]:
            state, t, total, _, _ = c
            action = policy(state)
            state, _, reward, terminated, truncated = env.step(
                jax.random.fold_in(key, t + 1), state, action
            )
            return state, t + 1, total + reward, terminated, truncated

        state, _ = env.reset(jax.random.fold_in(key, 0))
        no = jnp.zeros((), bool)
        init = (state, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.float32), no, no)
        _, t, total, terminated, truncated = jax.lax.while_loop(cond, body, init)
        return total, t, terminated, truncated

    total, t, terminated, truncated = run(jax.random.key(seed))
    assert bool(terminated) or bool(truncated), f"{task}: no episode end in {limit} steps"
    return float(total), int(t), bool(terminated)


@pytest.mark.jax
@pytest.mark.parametrize(
    ("task", "steps"), [("BernoulliBandit", 1000), ("BernoulliBandit-T500", 500)]
)
def test_bernoulli_bandit_best_arm_earns_nine_tenths_a_pull(task: str, steps: int) -> None:
    pytest.importorskip("gymnax")
    jnp = pytest.importorskip("jax.numpy")
    ret, length, terminated = _episode(task, lambda s: jnp.argmax(s.inner.reward_probs))
    assert (length, terminated) == (steps, False)
    sd = (0.9 * 0.1 * steps) ** 0.5  # binomial: the better arm pays with probability 0.9
    assert abs(ret - 0.9 * steps) < 5 * sd


@pytest.mark.jax
def test_reacher_pays_at_most_one_a_step_for_1000_steps() -> None:
    pytest.importorskip("gymnax")
    jnp = pytest.importorskip("jax.numpy")
    ret, length, terminated = _episode("Reacher", lambda s: jnp.zeros(2, jnp.float32))
    assert (length, terminated) == (1000, False)
    assert 0.0 < ret <= 1000.0


@pytest.mark.jax
def test_mountain_car_rows_are_cut_at_500_steps() -> None:
    pytest.importorskip("gymnax")
    jnp = pytest.importorskip("jax.numpy")
    # No force: the car stays in the valley, so only the time limit ends the episode.
    ret, length, terminated = _episode("MountainCarContinuous-vel", lambda s: jnp.zeros(1))
    assert (ret, length, terminated) == (0.0, 500, False)


@pytest.mark.jax
def test_deep_sea_action_one_always_goes_right() -> None:
    pytest.importorskip("gymnax")
    jnp = pytest.importorskip("jax.numpy")
    ret, length, terminated = _episode("DeepSea-8", lambda s: jnp.int32(1))
    assert (length, terminated) == (8, True)
    assert ret == pytest.approx(0.99)  # the treasure, less 8 moves at 0.01 / 8
    # gymnax 1.x's default: a fixed random map per cell, on which "always 1" misses it.
    ret, length, _ = _episode("DeepSea-8-randomized", lambda s: jnp.int32(1))
    assert length == 8 and ret < 0.5


@pytest.mark.jax
def test_umbrella_chain_ends_itself_after_ten_steps() -> None:
    pytest.importorskip("gymnax")
    jnp = pytest.importorskip("jax.numpy")
    _, length, terminated = _episode("UmbrellaChain", lambda s: jnp.int32(0))
    assert (length, terminated) == (10, True)
