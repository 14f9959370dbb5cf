"""Populations over tasks that are one environment at different gymnax parameters (the memory
chains' lengths): :func:`rtrrl.envs.make_jax_tasks`, ``batch_step(params=)``, the fused
engine's ``tasks`` and ``rtrrl sweep --tasks``. Each member must compute what it computes on
its own task alone, and the sweep must rank each task's settings on their own.
"""

from __future__ import annotations

import csv
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rtrrl import cli, sweeps
from rtrrl.settings import RunSettings

pytestmark = pytest.mark.jax

TINY = dict(steps=600, epoch_steps=200, eval_every=1, eval_episodes=3, patience=5, n_hidden=8)
CHAINS = ["MemoryChain-4", "MemoryChain-8"]


@pytest.fixture(autouse=True)
def _needs_gymnax() -> None:
    pytest.importorskip("jax")
    pytest.importorskip("gymnax")


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


# --- the environments -------------------------------------------------------------------------


def test_make_jax_tasks_stacks_the_parameters_of_one_environment() -> None:
    from rtrrl import envs

    env, params = envs.make_jax_tasks(["MemoryChain-4", "MemoryChain-16", "MemoryChain-64"])
    assert env.spec == envs.make_jax("MemoryChain-4").spec
    assert np.asarray(params.memory_length).tolist() == [4, 16, 64]


@pytest.mark.parametrize(
    ("tasks", "says"),
    [
        (["DeepSea-4", "DeepSea-8"], "constructor"),  # the size is the constructor's
        (["CartPole-vel", "CartPole-pos"], "observed indices"),
        (["MemoryChain-4", "CartPole-vel"], "the environment"),
        (["MemoryChain-4", "RepeatPrevious"], "the environment"),  # a popgym port
    ],
)
def test_make_jax_tasks_refuses_tasks_that_differ_in_more(tasks: list[str], says: str) -> None:
    from rtrrl import envs

    if "RepeatPrevious" in tasks:
        pytest.importorskip("popgym")
    with pytest.raises(ValueError, match=says) as err:
        envs.make_jax_tasks(tasks)
    assert "run them apart" in str(err.value) or "run it apart" in str(err.value)


def test_batch_step_under_a_member_vmap_steps_each_members_own_task() -> None:
    """Members with their tasks' parameters, stepped in one vmap (the fresh-episode decision
    shared by all), give every member the observations, rewards and ends its own task gives
    stepped alone."""
    import jax
    import jax.numpy as jnp

    from rtrrl import envs
    from rtrrl.envs._gymnax import batch_step

    tasks = ["MemoryChain-4", "MemoryChain-8", "MemoryChain-4"]
    env, stacked = envs.make_jax_tasks(list(dict.fromkeys(tasks)))
    params = jax.tree.map(lambda x: x[jnp.asarray([0, 1, 0])], stacked)
    B, T = 3, 25
    keys = jax.random.split(jax.random.key(0), (len(tasks), T + 1, B))
    actions = jax.random.randint(jax.random.key(1), (len(tasks), T, B), 0, 2)

    def run(env: Any, keys: Any, actions: Any, params: Any) -> Any:
        state, obs = jax.vmap(lambda k: env.reset(k, *([params] if params else [])))(keys[0])

        def step(state: Any, xs: Any) -> Any:
            k, a = xs
            state, obs, reward, term, trunc = batch_step(env, k, state, a, params=params)
            return state, (obs, reward, term | trunc)

        return jax.lax.scan(step, state, (keys[1:], actions))[1]

    together = jax.jit(jax.vmap(lambda k, a, p: run(env, k, a, p)))(keys, actions, params)
    for m, task in enumerate(tasks):
        alone = run(envs.make_jax(task), keys[m], actions[m], None)
        for got, want in zip(together, alone, strict=True):
            np.testing.assert_array_equal(np.asarray(got[m]), np.asarray(want))
    ends = np.asarray(together[2])
    assert ends[0].sum() != ends[1].sum()  # the two chains end at different steps


# --- the engine -------------------------------------------------------------------------------


def test_engine_members_on_their_tasks_compute_what_each_task_alone_computes() -> None:
    """Each member of a population over two tasks computes, bit for bit, what the same
    member computes in a population of the same shape on its task alone (whose parameters
    are constants of the compiled code, not per-member arguments)."""
    from rtrrl import fused, training

    settings = RunSettings(task=CHAINS[0], backend="jax", seeds=(0, 1), epoch_steps=200)
    config = training.agent_config(settings, {"n_hidden": 8})
    members = [(config, 0), (config, 1)] * 2
    tasks = [CHAINS[0]] * 2 + [CHAINS[1]] * 2
    together = fused.FusedEngine(settings, config, members=members, tasks=tasks)
    alone = {
        t: fused.FusedEngine(
            RunSettings(task=t, backend="jax", seeds=(0, 1), epoch_steps=200),
            config,
            members=members,
        )
        for t in CHAINS
    }
    for _ in range(2):
        got = together.run_epoch(range(4))
        on_own = {t: e.run_epoch(range(4)) for t, e in alone.items()}
        for i, task in enumerate(tasks):
            assert got[i].metrics == on_own[task][i].metrics, (i, task)
    assert got[0].metrics["episodes"] != got[2].metrics["episodes"]
    scores = together.evaluate({i: 7 for i in range(4)})
    own_scores = {t: e.evaluate({i: 7 for i in range(4)}) for t, e in alone.items()}
    assert scores == {i: own_scores[t][i] for i, t in enumerate(tasks)}


# --- the sweep --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    pytest.importorskip("matplotlib")
    out = tmp_path_factory.mktemp("tasks") / "s"
    grid = {"lr_td": [1e-3, 3e-2]}
    return out, sweeps.sweep(tasks=CHAINS, backend="jax", grid=grid, seeds=2, out=out, **TINY)


def test_a_sweep_over_tasks_ranks_each_tasks_settings_on_their_own(
    swept: tuple[Path, dict[str, Any]],
) -> None:
    out, summary = swept
    assert summary["tasks"] == CHAINS and summary["task"] == CHAINS[0]
    assert summary["settings"] == 2 and summary["members"] == 2 * 2 * 2
    ranking = summary["ranking"]
    assert [e["task"] for e in ranking] == [CHAINS[0]] * 2 + [CHAINS[1]] * 2
    for task in CHAINS:
        entries = [e for e in ranking if e["task"] == task]
        assert [e["rank"] for e in entries] == [1, 2]
        medians = [e["median"] for e in entries]
        assert medians == sorted(medians, reverse=True)
    # Settings 0, 1 are MemoryChain-4's, 2, 3 MemoryChain-8's, each setting's seeds in turn.
    rows = _csv(out / "settings.csv")
    assert [(r["setting"], r["task"]) for r in rows[::2]] == [
        ("0", CHAINS[0]),
        ("1", CHAINS[0]),
        ("2", CHAINS[1]),
        ("3", CHAINS[1]),
    ]
    assert "| rank | task | setting |" in (out / "ranking.md").read_text()
    assert _csv(out / "ranking.csv")[0]["task"] == CHAINS[0]


def test_a_sweep_over_tasks_writes_each_tasks_best_as_a_file_train_reads(
    swept: tuple[Path, dict[str, Any]],
) -> None:
    from rtrrl import _cli_train

    out, summary = swept
    assert summary["best"] is None and summary["best_file"] is None
    assert not (out / "best.toml").exists()
    assert set(summary["best_per_task"]) == set(CHAINS)
    for task, best in summary["best_per_task"].items():
        top = next(e for e in summary["ranking"] if e["task"] == task and e["rank"] == 1)
        assert best["values"] == top["values"] and best["median"] == top["median"]
        path = Path(best["file"])
        assert path == out / f"best-{task}.toml"
        text = tomllib.loads(path.read_text())
        assert text["task"] == task and text["lr_td"] == top["values"]["lr_td"]
        run, agent = _cli_train.read_config_file(str(path))
        assert run["task"] == task and agent["lr_td"] == top["values"]["lr_td"]


def test_a_sweep_over_tasks_in_chunks_of_one_task_gives_the_same_ranking(
    swept: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """Chunks of two members: each holds one task's members, which its engine then steps
    on that task alone; the ranking is the one population's. And the command run again
    (``continue_same``) continues the sweep it wrote, a finished one as it is."""
    out, summary = swept
    grid = {"lr_td": [1e-3, 3e-2]}
    kw = dict(tasks=CHAINS, backend="jax", grid=grid, seeds=2, **TINY)
    chunked = sweeps.sweep(out=tmp_path / "c", chunk_size=2, **kw)
    strip = [{k: e[k] for k in ("task", "values", "best", "steps")} for e in summary["ranking"]]
    assert [{k: e[k] for k in strip[0]} for e in chunked["ranking"]] == strip
    # Every member's episodes, epoch by epoch: a memory chain's episodes last its length + 1
    # steps, so a member stepped on the other task would count other numbers.
    episodes = [(r["member"], r["episodes"]) for r in _csv(out / "curves.csv")]
    assert [(r["member"], r["episodes"]) for r in _csv(tmp_path / "c" / "curves.csv")] == episodes
    assert (
        len({e for m, e in episodes if int(m) < 4} & {e for m, e in episodes if int(m) >= 4}) == 0
    )
    again = sweeps.sweep(out=tmp_path / "c", chunk_size=2, continue_same=True, **kw)
    assert again["ranking"] == chunked["ranking"]


@pytest.mark.parametrize(
    ("kw", "says"),
    [
        ({"tasks": ["MemoryChain-4", "MemoryChain-4"]}, "each once"),
        ({"tasks": "MemoryChain-4"}, "a list of task names"),
        ({"tasks": CHAINS, "task": "MemoryChain-8"}, "give tasks alone"),
        ({"tasks": ["DeepSea-4", "DeepSea-8"]}, "run them apart"),
    ],
)
def test_a_sweep_refuses_tasks_it_cannot_hold_in_one_population(
    kw: dict[str, Any], says: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=says):
        sweeps.sweep(backend="jax", grid={"lr_td": [1e-3]}, out=tmp_path / "s", **kw, **TINY)
    assert not (tmp_path / "s" / "sweep.json").exists()


def test_rtrrl_sweep_tasks_reports_each_tasks_best(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "s"
    argv = ["sweep", "--tasks", ",".join(CHAINS), "--backend", "jax", "--seeds", "2"]
    argv += ["--grid", "lr_td=1e-3,3e-2", "--out", str(out), "--no-progress"]
    argv += ["--steps", "600", "--epoch-steps", "200", "--eval-every", "1"]
    argv += ["--eval-episodes", "3", "--patience", "5", "--set", "n_hidden=8"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    for task in CHAINS:
        assert f"Best on {task}: " in printed and f"best-{task}.toml" in printed
    assert cli.main([*argv[:3], "--task", CHAINS[0], *argv[3:]]) == 2
    assert "either --task or --tasks" in capsys.readouterr().err
