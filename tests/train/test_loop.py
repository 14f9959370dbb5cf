"""The training loop: the stop decision (budget, patience), the evaluation schedule and
divergence, with a scripted engine; and, on the host engine, a backend with a generator of
its own, old checkpoints, and the evaluation environment built once."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("matplotlib")

import rtrrl_spec  # noqa: E402
from rtrrl import checkpoint, loop, training  # noqa: E402
from rtrrl.settings import RunSettings, eval_seed  # noqa: E402

METRICS = {"episodes": 1, "mean_return": 0.0, "mean_abs_td": 0.0, "mean_value": 0.0}


class ScriptedEngine:
    """An engine whose evaluations return scripted scores: member ``i``'s ``k``-th evaluation
    scores ``scores[i][k]``. Records which members each epoch ran."""

    name = "host"

    def __init__(self, scores: list[list[float]], diverge_at: int | None = None) -> None:
        self.scores = scores
        self.evals = [0] * len(scores)
        self.epochs = [0] * len(scores)
        self.calls: list[list[int]] = []
        self.eval_calls: list[dict[int, int]] = []
        self.diverge_at = diverge_at
        self.closed = False

    def run_epoch(self, active: Any) -> dict[int, loop.EpochResult]:
        self.calls.append(list(active))
        for i in active:
            self.epochs[i] += 1
        if self.diverge_at is not None and len(self.calls) == self.diverge_at:
            problem = loop.non_finite(["W_A"])
            return {i: loop.EpochResult({}, problem if i == 0 else None) for i in active}
        return {i: loop.EpochResult(dict(METRICS)) for i in active}

    def evaluate(self, seeds: dict[int, int]) -> dict[int, float]:
        self.eval_calls.append(dict(seeds))
        out = {}
        for i in seeds:
            out[i] = self.scores[i][self.evals[i]]
            self.evals[i] += 1
        return out

    def snapshot(self) -> tuple[dict[str, np.ndarray], Any]:
        return {"epochs": np.array(self.epochs, float)[:, None]}, {"evals": list(self.evals)}

    def restore(self, agents: dict[str, np.ndarray], state: Any) -> None:
        raise AssertionError("not resumed here")

    def close(self) -> None:
        self.closed = True


def _session(tmp_path: Path, **settings: Any) -> loop.Session:
    s = RunSettings(task="MemoryChain-4", backend="numpy", **settings)
    return loop.Session(
        out=tmp_path,
        settings=s,
        config=rtrrl_spec.Config(obs_dim=3, n_actions=2),
        engine="host",
        records=[loop.SeedRecord(seed=seed) for seed in s.seeds],
    )


def test_budget_and_patience_stop_each_seed_in_one_place(tmp_path: Path) -> None:
    # 10 epochs of budget, an evaluation after each, patience 2.
    session = _session(
        tmp_path, seeds=(7, 8, 9), steps=1000, epoch_steps=100, eval_every=1, patience=2
    )
    engine = ScriptedEngine(
        [
            [float(k) for k in range(10)],  # always improving: runs the whole budget
            [5.0, 1.0, 1.0],  # best first, then two without improvement: stops after epoch 3
            [1.0, 1.0, 2.0, 2.0, 2.0],  # improves at 3, then two without: stops after epoch 5
        ]
    )
    summary = loop.run(session, engine, fresh=True)
    assert engine.calls == [[0, 1, 2]] * 3 + [[0, 2]] * 2 + [[0]] * 5
    assert [(s["seed"], s["epochs"], s["stopped"]) for s in summary["seeds"]] == [
        (7, 10, "budget"),
        (8, 3, "patience"),
        (9, 5, "patience"),
    ]
    assert [s["best_eval"] for s in summary["seeds"]] == [9.0, 5.0, 2.0]
    assert engine.closed
    # Evaluation seeds come from (seed, epoch): the engine cannot pick its own.
    assert engine.eval_calls[0] == {i: eval_seed(s, 1) for i, s in enumerate((7, 8, 9))}
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10 + 3 + 5 and all(r["eval_reward"] for r in rows)


@pytest.mark.parametrize(
    ("epoch", "since_best", "reason"),
    [(1, 0, None), (1, 2, "patience"), (4, 0, "budget"), (4, 5, "budget"), (3, 1, None)],
)
def test_stop_reason(epoch: int, since_best: int, reason: str | None) -> None:
    settings = RunSettings(steps=400, epoch_steps=100, patience=2)  # 4 epochs
    record = loop.SeedRecord(seed=0, epoch=epoch, since_best=since_best)
    assert loop.stop_reason(record, settings) == reason


def test_evaluations_when_due_and_after_the_last_epoch(tmp_path: Path) -> None:
    session = _session(tmp_path, seeds=(0,), steps=700, epoch_steps=100, eval_every=3)
    engine = ScriptedEngine([[1.0, 2.0, 3.0]])
    summary = loop.run(session, engine, fresh=True)
    assert summary["seeds"][0]["epochs"] == 7
    evaluated = [r["epoch"] for r in session.rows if not np.isnan(r["eval_reward"])]
    assert evaluated == [3, 6, 7]


def test_divergence_names_the_seed_and_keeps_the_last_checkpoint(tmp_path: Path) -> None:
    session = _session(tmp_path, seeds=(4, 5), steps=500, epoch_steps=100, eval_every=1)
    engine = ScriptedEngine([[1.0] * 5, [1.0] * 5], diverge_at=3)
    message = r"seed 4: non-finite .*\(W_A\) during epoch 3.*last good checkpoint"
    with pytest.raises(training.DivergedError, match=message):
        loop.run(session, engine, fresh=True)
    assert engine.closed
    saved = checkpoint.load_checkpoint(tmp_path)
    assert [r["epoch"] for r in saved["state"]["records"]] == [2, 2]


def test_an_exploded_parameter_is_a_problem_a_large_one_is_not() -> None:
    config = rtrrl_spec.Config(obs_dim=3, n_actions=2, n_hidden=4)
    agent = rtrrl_spec.init(config, 1, 0)
    assert loop.agent_problem(config, agent) is None
    agent["W_C"][0, 0] = -loop.PARAM_LIMIT  # at the limit: still a (strange) agent
    assert loop.agent_problem(config, agent) is None
    agent["W"][1, 2] = 6.6e30  # what a learning rate of 1e30 made of it
    assert loop.agent_problem(config, agent) == (
        "parameter W reached 6.6e+30 in magnitude (beyond 1e+08: it exploded)"
    )
    # Huge traces or moments are not parameters; a NaN anywhere comes first.
    agent["W"][1, 2], agent["nu_W"][0, 0] = 0.0, 1e30
    assert loop.agent_problem(config, agent) is None
    agent["h"][0, 0] = np.nan
    assert loop.agent_problem(config, agent) == "non-finite values in the agent (h)"


# The case: these learning rates trained to parameters of 6.6e30 and reported success.
# Huge steps that stay finite: the clip bounds each update, so parameters pass 1e8 before any
# inf or NaN (without it the next gradient overflows, which the NaN check reports instead).
EXPLODING = dict(lr_td=1e30, lr_rnn=1e30, clip_norm=1.0)


# NumPy warns of the overflow this test causes on purpose; the DivergedError is what it checks.
@pytest.mark.filterwarnings(
    "ignore:overflow encountered:RuntimeWarning", "ignore:invalid value encountered:RuntimeWarning"
)
@pytest.mark.numpy
def test_the_host_loop_stops_when_parameters_explode(tmp_path: Path) -> None:
    pytest.importorskip("gymnasium")
    run = tmp_path / "r"
    kwargs = dict(seeds=[3], steps=400, epoch_steps=100, eval_every=1, eval_episodes=2)
    message = (
        r"seed 3: parameter \w+ reached [0-9.e+]+ in magnitude \(beyond 1e\+08: it exploded\) "
        r"during epoch 1; .*last good checkpoint .* kept; lower the learning rates \(lr_td, "
        r"lr_rnn\), clip the updates \(clip_norm"
    )
    with pytest.raises(training.DivergedError, match=message):
        training.train("gymnasium:CartPole-v1", "numpy", out=run, n_hidden=4, **kwargs, **EXPLODING)
    saved = checkpoint.load_checkpoint(run)
    assert saved["state"]["records"][0]["epoch"] == 0
    assert all(np.all(np.abs(v) < 10) for k, v in saved["agents"].items() if k in ("W", "W_A"))


def test_a_ctrl_c_saves_the_last_epoch_boundary(tmp_path: Path, interrupt_after) -> None:
    session = _session(tmp_path, seeds=(0, 1), steps=500, epoch_steps=100, eval_every=2)
    engine = ScriptedEngine([[1.0] * 5, [1.0] * 5])
    interrupt_after(3)  # after epoch 3, which has no evaluation (and so no checkpoint) of its own
    with pytest.raises(KeyboardInterrupt):
        loop.run(session, engine, fresh=True)
    saved = checkpoint.load_checkpoint(tmp_path)
    assert [r["epoch"] for r in saved["state"]["records"]] == [3, 3]
    np.testing.assert_array_equal(saved["agents"]["epochs"], [[3.0], [3.0]])
    assert len(saved["state"]["rows"]) == 6


# --- the host engine ------------------------------------------------------------------------

pytest.importorskip("gymnax")

# A backend as a third party would write it: its noise generator is a class of its own, which
# the loop can save only through the backend's rng_state / rng_from_state.
THIRD_PARTY = """
import numpy as np

import rtrrl_spec
from rtrrl.backends.numpy import NumpyBackend


class CounterRng:
    def __init__(self, seed, count=0):
        self.seed, self.count = int(seed), int(count)


class Backend(NumpyBackend):
    name = "counter"

    def rng(self, seed):
        return CounterRng(seed)

    def draw_noise(self, config, batch_size, rng, dtype):
        gen = np.random.default_rng([rng.seed, rng.count])
        rng.count += 1
        return rtrrl_spec.draw_noise(config, batch_size, gen, dtype), rng

    def rng_state(self, rng):
        return {"seed": np.array(rng.seed), "count": np.array(rng.count)}

    def rng_from_state(self, state):
        return CounterRng(int(state["seed"]), int(state["count"]))
"""


def _metric_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv") as f:
        return [{k: v for k, v in r.items() if k != "wall_time"} for r in csv.DictReader(f)]


@pytest.mark.numpy
def test_a_backend_with_its_own_generator_resumes_exactly(
    tmp_path: Path, make_module, interrupt_after
) -> None:
    backend = f"{make_module(THIRD_PARTY)}:Backend"
    # One seed: the straight run continues from its live objects epoch after epoch, the
    # resumed one from the saved boundary (tests/train/test_host.py covers several seeds).
    kwargs = dict(backend=backend, seeds=[1], steps=300, epoch_steps=50, eval_every=2)
    kwargs.update(eval_episodes=2, n_hidden=4)
    training.train("MemoryChain-4", out=tmp_path / "a", **kwargs)
    interrupt_after(3)
    with pytest.raises(KeyboardInterrupt):
        training.train("MemoryChain-4", out=tmp_path / "b", **kwargs)
    partial = checkpoint.load_checkpoint(tmp_path / "b")
    rng = partial["state"]["engine_state"]["boundary"][0]["rng"]
    assert set(rng) == {"seed", "count"} and int(rng["count"]) == 3 * 50
    training.resume(tmp_path / "b")
    assert _metric_rows(tmp_path / "a") == _metric_rows(tmp_path / "b")
    a = checkpoint.load_checkpoint(tmp_path / "a")
    b = checkpoint.load_checkpoint(tmp_path / "b")
    for k in a["agents"]:
        np.testing.assert_array_equal(a["agents"][k], b["agents"][k], err_msg=k)


@pytest.mark.numpy
def test_a_format_1_host_checkpoint_evaluates_but_does_not_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    training.train(
        "MemoryChain-4", "numpy", seeds=1, out=run, steps=100, epoch_steps=100, eval_episodes=2
    )
    ckpt = checkpoint.load_checkpoint(run)
    # What the previous version saved: the run format 1, each generator as (framework, state).
    ckpt["run"]["format"] = 1
    ckpt["state"]["engine_state"]["boundary"][0]["rng"] = (
        "numpy",
        np.random.default_rng(0).bit_generator.state,
    )
    checkpoint.save_checkpoint(run, ckpt["agents"], ckpt["run"], ckpt["state"])
    before = (run / "checkpoint.npz").read_bytes()
    with pytest.raises(training.CheckpointError, match="earlier rtrrl \\(format 1\\).*rtrrl eval"):
        training.resume(run)
    assert (run / "checkpoint.npz").read_bytes() == before
    assert set(training.evaluate_checkpoint(run, "numpy", episodes=2)) == {0}


@pytest.mark.numpy
def test_the_host_loop_builds_its_environments_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rtrrl import envs

    built: list[int] = []
    make_host = envs.make_host

    def counting(task: str, num_envs: int = 1) -> Any:
        built.append(num_envs)
        return make_host(task, num_envs)

    monkeypatch.setattr(envs, "make_host", counting)
    training.train(
        "MemoryChain-4",
        "numpy",
        seeds=2,
        out=tmp_path / "r",
        steps=300,
        epoch_steps=100,
        eval_every=1,
        eval_episodes=3,
    )
    # The task's spec, the training environment (shared by the seeds) and the evaluation
    # environment: three, for two seeds and six evaluations.
    assert sorted(built) == [1, 1, 3]


@pytest.mark.numpy
@pytest.mark.parametrize("task", ["MemoryChain-4", "gymnasium:CartPole-v1"])
def test_a_reused_evaluation_env_scores_as_a_fresh_one(task: str) -> None:
    if task.startswith("gymnasium"):
        pytest.importorskip("gymnasium")
    import rtrrl
    from rtrrl import envs
    from rtrrl.host import evaluate_host

    be = rtrrl.get_backend("numpy")
    env = envs.make_host(task, num_envs=3)
    config = env.spec.agent_config(n_hidden=4)
    agent = rtrrl_spec.init(config, 1, 0)
    first = evaluate_host(be, config, agent, env, seed=5)
    again = evaluate_host(be, config, agent, env, seed=7)
    fresh_env = envs.make_host(task, num_envs=3)
    assert again == evaluate_host(be, config, agent, fresh_env, seed=7)
    assert first == evaluate_host(be, config, agent, fresh_env, seed=5)
    env.close()
    fresh_env.close()
