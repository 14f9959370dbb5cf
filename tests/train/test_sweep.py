"""Hyper-parameter sweeps (``rtrrl sweep``, :mod:`rtrrl.sweeps`): the search space, members
equal to ``rtrrl train`` runs, the sweep folder, resume, divergence and the errors.

One sweep (MemoryChain-4, 4 settings × 2 seeds, in 2 chunks of 4 members) is trained once per
module; the tests that train again reuse its shapes, so the fused epoch compiles once.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rtrrl import loop, sweeps
from rtrrl.settings import RunSettings

pytestmark = pytest.mark.jax

# 4 epochs of 200 steps, an evaluation after each; patience 1 stops some members early.
TINY = dict(steps=800, epoch_steps=200, eval_every=1, eval_episodes=3, patience=1, n_hidden=8)
GRID = {"lr_td": [1e-3, 3e-2], "clip_norm": ["none", 1.0]}


def _sweep(out: Path, **kw: Any) -> dict[str, Any]:
    pytest.importorskip("jax")
    pytest.importorskip("gymnax")
    pytest.importorskip("matplotlib")
    args: dict[str, Any] = dict(grid=GRID, seeds=2, chunk_size=4, **TINY)
    args.update(kw)
    return sweeps.sweep("MemoryChain-4", "jax", out=out, **args)


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("sweep") / "s"
    return out, _sweep(out)


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _without_wall(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in rows]


def _member_agents(out: Path, member: int) -> dict[str, np.ndarray]:
    from rtrrl import checkpoint

    ckpt = checkpoint.load_checkpoint(out / "chunks" / f"{member // 4:03d}", state=False)
    return {k: v[member % 4] for k, v in ckpt["agents"].items()}


# --- members compute what rtrrl train computes ----------------------------------------------


def test_member_equals_a_train_run_of_its_setting(
    swept: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """The members of one setting (lr_td 3e-2, no clip, in a population with clipped members)
    give what `rtrrl train --set clip_norm=none` gives with those seeds on the fused path: the
    same episodes, returns, evaluations and early stops, and agents equal to float rounding
    (a vmapped computation rounds in the last bit differently with the population's size,
    about 5e-7 here after 800 steps)."""
    from rtrrl import checkpoint, training

    out, summary = swept
    values = {"lr_td": 3e-2, "clip_norm": None}
    setting = next(e["setting"] for e in summary["ranking"] if e["values"] == values)
    run = training.train("MemoryChain-4", "jax", seeds=2, out=tmp_path / "r", **values, **TINY)
    assert run["engine"] == "fused"
    train_rows = _without_wall(_csv(tmp_path / "r" / "metrics.csv"))
    sweep_rows = [
        r for r in _without_wall(_csv(out / "curves.csv")) if int(r["setting"]) == setting
    ]
    assert len(sweep_rows) == len(train_rows)
    for got, want in zip(sweep_rows, train_rows, strict=True):
        exact = ("seed", "epoch", "steps", "episodes", "mean_return", "eval_reward")
        assert {k: got[k] for k in exact} == {k: want[k] for k in exact}
        for k in ("mean_abs_td", "mean_value"):
            assert float(got[k]) == pytest.approx(float(want[k]), rel=1e-5, abs=1e-7)
    trained = checkpoint.load_checkpoint(tmp_path / "r", state=False)["agents"]
    for k in (0, 1):
        member = _member_agents(out, 2 * setting + k)
        for name, array in trained.items():
            np.testing.assert_allclose(
                member[name], array[k], rtol=1e-5, atol=1e-6, err_msg=f"{name}, seed {k}"
            )
    # Early stopping per member: the same stops and epochs as the run's seeds.
    entry = next(e for e in summary["ranking"] if e["setting"] == setting)
    assert entry["steps"] == [s["steps"] for s in run["seeds"]]
    stops = {}
    for chunk in (out / "chunks").iterdir():
        for e in json.loads((chunk / "summary.json").read_text())["seeds"]:
            stops[e["member"]] = e["stopped"]
    assert [stops[2 * setting + k] for k in (0, 1)] == [s["stopped"] for s in run["seeds"]]


def test_population_numbers_no_clip_among_clipped() -> None:
    """A member without clip in a clipped population gets the largest finite clip norm, which
    scales by exactly 1; other structural differences are refused."""
    pytest.importorskip("jax")
    import rtrrl_spec
    from rtrrl import fused

    base = rtrrl_spec.Config(obs_dim=3, n_actions=2, n_hidden=4)
    structure, numbers = fused.population_numbers(
        [base.replace(clip_norm=None), base.replace(clip_norm=0.5, lr_td=0.1)], "float32"
    )
    assert structure.clip_norm == 1.0
    assert numbers["clip_norm"].tolist() == [np.finfo(np.float32).max, 0.5]
    assert numbers["lr_td"].tolist() == pytest.approx([1e-3, 0.1])
    factor = numbers["clip_norm"][0] / np.maximum(np.float32(1e30), numbers["clip_norm"][0])
    assert factor == 1.0
    with pytest.raises(rtrrl_spec.SpecError, match="share their structure"):
        fused.population_numbers([base, base.replace(n_hidden=8)])


# --- the sweep folder -------------------------------------------------------------------------


def test_sweep_folder_holds_settings_ranking_curves_and_best(
    swept: tuple[Path, dict[str, Any]],
) -> None:
    out, summary = swept
    settings = _csv(out / "settings.csv")
    assert [(r["member"], r["setting"], r["seed"]) for r in settings] == [
        (str(m), str(m // 2), str(m % 2)) for m in range(8)
    ]
    assert [(r["lr_td"], r["clip_norm"]) for r in settings[::2]] == [
        ("0.001", "none"),
        ("0.001", "1.0"),
        ("0.03", "none"),
        ("0.03", "1.0"),
    ]
    ranking = _csv(out / "ranking.csv")
    assert [int(r["rank"]) for r in ranking] == [1, 2, 3, 4]
    medians = [float(r["median"]) for r in ranking]
    assert medians == sorted(medians, reverse=True)
    for r in ranking:  # the median of the seeds' best evaluations, as written per seed
        bests = [float(b) for b in r["best_per_seed"].split(";")]
        assert float(r["median"]) == pytest.approx(float(np.median(bests)))
        assert float(r["std"]) == pytest.approx(float(np.std(bests)))
    curves = _csv(out / "curves.csv")
    for r in ranking:  # each seed's best is its best evaluation in the curves
        rows = [c for c in curves if c["setting"] == r["setting"]]
        for seed, best in enumerate(r["best_per_seed"].split(";")):
            evals = [float(c["eval_reward"]) for c in rows if c["seed"] == str(seed)]
            assert max(evals) == float(best)
    assert "| rank | setting | lr_td | clip_norm |" in (out / "ranking.md").read_text()
    assert (out / "curves.png").stat().st_size > 1000
    # best.toml is the top setting, as `rtrrl train --config` reads it.
    from rtrrl import _cli_train

    run, agent = _cli_train.read_config_file(out / "best.toml")
    top = summary["ranking"][0]
    assert summary["best"] == top["values"]
    assert {k: agent[k] for k in ("lr_td", "clip_norm")} == top["values"]
    assert RunSettings(**run) == RunSettings(task="MemoryChain-4", seeds=2, **_run_part(TINY))
    assert agent["n_hidden"] == 8
    saved = json.loads((out / "summary.json").read_text())
    assert saved["members"] == 8 and saved["best"] == summary["best"]


def _run_part(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k in RunSettings.__dataclass_fields__}


def test_sweep_resumes_exactly_after_an_interrupt(
    swept: tuple[Path, dict[str, Any]], tmp_path: Path, interrupt_after
) -> None:
    """Ctrl-C during the first chunk, then `rtrrl sweep --resume`: the same rows and agents
    as the sweep that never stopped (the second chunk starts on resume)."""
    from rtrrl.cli import main

    out, _ = swept
    interrupt_after(2)
    with pytest.raises(KeyboardInterrupt):
        _sweep(tmp_path / "s")
    assert not (tmp_path / "s" / "chunks" / "001").exists()
    assert main(["sweep", "--resume", str(tmp_path / "s"), "--no-progress"]) == 0
    assert _without_wall(_csv(tmp_path / "s" / "curves.csv")) == _without_wall(
        _csv(out / "curves.csv")
    )
    for member in range(8):
        a, b = _member_agents(out, member), _member_agents(tmp_path / "s", member)
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    # A finished sweep resumes to the same results, training nothing.
    again = sweeps.resume_sweep(tmp_path / "s")
    assert [e["median"] for e in again["ranking"]] == [
        e["median"] for e in sweeps.write_results(out)["ranking"]
    ]


def test_a_diverging_member_stops_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """lr_td 1e30 explodes its members' parameters in the first epoch: they stop as
    "diverged", the others train to the end; one progress bar counts every member's steps."""
    bars: list[Any] = []

    class Bar:
        def __init__(self, total: int, initial: int, **_: Any) -> None:
            self.total, self.n = total, initial
            bars.append(self)

        def update(self, n: int) -> None:
            self.n += n

        def set_postfix(self, **_: Any) -> None:
            pass

        def close(self) -> None:
            pass

    import tqdm.auto

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    summary = _sweep(tmp_path / "s", grid={"lr_td": [1e-3, 1e30]}, progress=True)
    first, second = sorted(summary["ranking"], key=lambda e: e["setting"])
    assert first["stopped"].get("diverged") is None and first["evaluated"] == 2
    assert second["stopped"] == {"diverged": 2} and second["steps"] == [0, 0]
    assert second["rank"] == 2 and second["median"] is None
    assert "diverged" in (tmp_path / "s" / "ranking.md").read_text()
    (bar,) = bars
    assert bar.total == 4 * 4 * 200
    assert bar.n == sum(first["steps"])


def test_loop_stops_only_the_diverged_seed(tmp_path: Path) -> None:
    """With ``stop_diverged`` the loop stops a seed whose epoch went wrong and runs the
    others' epoch again (the engine committed nothing)."""
    import rtrrl_spec

    calls: list[list[int]] = []

    class Engine:
        name = "host"

        def run_epoch(self, active: list[int]) -> dict[int, loop.EpochResult]:
            calls.append(list(active))
            bad = len(calls) == 2 and 1 in active
            metrics = {"episodes": 1, "mean_return": 0.0, "mean_abs_td": 0.0, "mean_value": 0.0}
            return {
                i: loop.EpochResult(metrics, loop.non_finite(["W"]) if bad and i == 1 else None)
                for i in active
            }

        def evaluate(self, seeds: dict[int, int]) -> dict[int, float]:
            return {i: 1.0 for i in seeds}

        def snapshot(self) -> tuple[dict[str, np.ndarray], Any]:
            return {"x": np.zeros((3, 1))}, {}

        def restore(self, agents: Any, state: Any) -> None:
            raise AssertionError

        def close(self) -> None:
            pass

    s = RunSettings(task="MemoryChain-4", backend="numpy", seeds=3, steps=300, epoch_steps=100)
    session = loop.Session(
        out=tmp_path,
        settings=s,
        config=rtrrl_spec.Config(obs_dim=3, n_actions=2),
        engine="host",
        records=[loop.SeedRecord(seed=k) for k in s.seeds],
        stop_diverged=True,
    )
    summary = loop.run(session, Engine(), fresh=True)
    assert calls == [[0, 1, 2], [0, 1, 2], [0, 2], [0, 2]]
    assert [r["stopped"] for r in summary["seeds"]] == ["budget", "diverged", "budget"]
    assert [r["epochs"] for r in summary["seeds"]] == [3, 1, 3]


# --- the search space -----------------------------------------------------------------------


def test_random_search_is_reproducible_and_log_uniform() -> None:
    random = {"lr_td": "loguniform:1e-5:1e-2", "gamma": "uniform:0.9:0.999"}
    a = sweeps.space_of(random=random, samples=16, sweep_seed=3).settings()
    b = sweeps.space_of(random=dict(reversed(random.items())), samples=16, sweep_seed=3)
    assert a == b.settings()
    assert a != sweeps.space_of(random=random, samples=16, sweep_seed=4).settings()
    lrs = [s["lr_td"] for s in a]
    assert all(1e-5 <= v <= 1e-2 for v in lrs)
    assert all(0.9 <= s["gamma"] <= 0.999 for s in a)
    # Log-uniform: each decade gets its share (a uniform draw would put 90 % above 1e-3).
    assert sum(v < 1e-3 for v in lrs) >= 6
    crossed = sweeps.space_of(grid={"clip_norm": "none,1"}, random=random, samples=4).settings()
    assert len(crossed) == 8
    assert [s["clip_norm"] for s in crossed] == [None] * 4 + [1.0] * 4
    assert (
        crossed[:4]
        == [{**s, "clip_norm": None} for s in crossed[4:]]
        == [{**s, "clip_norm": None} for s in sweeps.space_of(random=random, samples=4).settings()]
    )


def test_grid_is_every_combination_first_axis_slowest() -> None:
    space = sweeps.space_of(grid={"lr_td": "1e-4,1e-3", "gamma": [0.9, 0.99, 0.999]})
    settings = space.settings()
    assert len(settings) == 6
    assert settings[:3] == [{"lr_td": 1e-4, "gamma": g} for g in (0.9, 0.99, 0.999)]


def test_space_file_equals_the_flags(tmp_path: Path) -> None:
    path = tmp_path / "sweep.toml"
    path.write_text(
        "samples = 5\nseed = 2\n[grid]\nclip_norm = ['none', 0.5]\n"
        "[random]\nlr_td = 'loguniform:1e-5:1e-2'\n"
        "lr_rnn = {dist = 'loguniform', low = 1e-5, high = 1e-3}\n"
    )
    from_file = sweeps.space_of(space=path)
    from_flags = sweeps.space_of(
        grid={"clip_norm": "none,0.5"},
        random={"lr_td": "loguniform:1e-5:1e-2", "lr_rnn": "loguniform:1e-5:1e-3"},
        samples=5,
        sweep_seed=2,
    )
    assert from_file.settings() == from_flags.settings()
    path.write_text("[grid]\nlr_td = [1e-3]\n[run]\nsteps = 5\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['run'\]"):
        sweeps.space_of(space=path)


def test_listed_settings_are_tried_as_they_are(tmp_path: Path) -> None:
    path = tmp_path / "listed.toml"
    path.write_text(
        "[[settings]]\nlr_td = 1e-3\nclip_norm = 'none'\n"
        "[[settings]]\nlr_td = 3e-4\nclip_norm = 1.0\n"
    )
    space = sweeps.space_of(space=path)
    # Not the grid's four combinations: the two settings, in order.
    assert space.settings() == [
        {"lr_td": 1e-3, "clip_norm": None},
        {"lr_td": 3e-4, "clip_norm": 1.0},
    ]
    assert space.names() == ["lr_td", "clip_norm"]
    assert sweeps.SearchSpace.from_json(space.to_json()) == space
    with pytest.raises(ValueError, match="every listed setting gives the same parameters"):
        sweeps.SearchSpace(listed=({"lr_td": 1e-3}, {"lr_rnn": 1e-3}))
    with pytest.raises(ValueError, match="listed settings are the whole space"):
        sweeps.space_of(grid={"gamma": "0.9"}, space=path)
    with pytest.raises(ValueError, match="n_hidden is part of the agent's structure"):
        sweeps.SearchSpace(listed=({"n_hidden": 8},))


@pytest.mark.parametrize(
    ("grid", "random", "samples", "message"),
    [
        ({"lr_tdd": "1e-3"}, None, None, "unknown parameter 'lr_tdd' \\(did you mean lr_td"),
        ({"n_hidden": "8,16"}, None, None, "n_hidden is part of the agent's structure"),
        ({"body": "lru"}, None, None, "body is part of the agent's structure"),
        ({"steps": "100"}, None, None, "steps is a run setting"),
        ({"obs_dim": "3"}, None, None, "obs_dim comes from the task"),
        ({"gamma": "none"}, None, None, "gamma cannot be none"),
        ({"lr_td": "1e-3,1e-3"}, None, None, "lists 0.001 more than once"),
        ({"lr_td": "fast"}, None, None, "lr_td: expected a number, got 'fast'"),
        (None, {"lr_td": "loguniform:1e-2:1e-5"}, 4, "needs LOW < HIGH"),
        (None, {"lr_td": "loguniform:0:1e-2"}, 4, "loguniform needs 0 < LOW"),
        (None, {"lr_td": "normal:0:1"}, 4, "unknown distribution 'normal'"),
        (None, {"lr_td": "uniform:1"}, 4, "write uniform:LOW:HIGH"),
        (None, {"lr_td": "loguniform:1e-5:1e-2"}, None, "--random needs --samples N"),
        ({"lr_td": "1e-3"}, {"lr_td": "uniform:0:1"}, 2, "both on the grid and random"),
        (None, None, None, "nothing to sweep"),
    ],
)
def test_bad_spaces_are_one_line_errors(
    grid: dict | None, random: dict | None, samples: int | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as err:
        sweeps.space_of(grid=grid, random=random, samples=samples)
    assert "\n" not in str(err.value)


def test_settings_the_agent_refuses_name_the_setting() -> None:
    import rtrrl_spec

    base = rtrrl_spec.Config(obs_dim=3, n_actions=2)
    with pytest.raises(
        ValueError, match=r"setting 1 \(tau_min=0.5\): tau_min=0.5 is below dt.* narrow"
    ):
        sweeps.member_configs(base, [{"tau_min": 2.0}, {"tau_min": 0.5}])
    with pytest.raises(ValueError, match="reward_rate_lr none and a number"):
        sweeps.member_configs(base, [{"reward_rate_lr": None}, {"reward_rate_lr": 0.1}])


# --- the command line and refusals ----------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backend", "numpy", "--grid", "lr_td=1e-3,1e-2"], "sweeps run on the JAX backend"),
        (["--host", "--grid", "lr_td=1e-3,1e-2"], "drop --no-fused / --host"),
        (["--grid", "n_hidden=8,16"], "n_hidden is part of the agent's structure"),
        (["--grid", "lr_td"], "--grid expects NAME=VALUES"),
        (["--lr-td", "0.1", "--grid", "lr_td=1e-3,1e-2"], "lr_td: both fixed and swept"),
        (["--resume", "nowhere", "--grid", "lr_td=1e-3"], "drop --grid"),
        (["--resume", "nowhere", "--sweep-seed", "0"], "drop --sweep-seed"),
        (["--resume", "nowhere"], "no sweep at nowhere"),
    ],
)
def test_cli_errors_are_one_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from rtrrl.cli import main

    if "--resume" not in args:
        args = ["--task", "MemoryChain-4", "--out", str(tmp_path / "o"), *args]
    assert main(["sweep", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_refusals_around_a_sweep_folder(swept: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    """An existing sweep is not overwritten; a chunk is not a run (`rtrrl train --resume`,
    `rtrrl eval` say what to do); an edited sweep.json is refused on resume."""
    from rtrrl import training
    from rtrrl.errors import CheckpointError, RunExistsError

    out, _ = swept
    with pytest.raises(RunExistsError, match="already holds a sweep.*--resume"):
        _sweep(out)
    chunk = out / "chunks" / "000"
    with pytest.raises(CheckpointError, match="a chunk of the sweep .*rtrrl sweep --resume"):
        training.resume(chunk)
    with pytest.raises(CheckpointError, match="a chunk of the sweep"):
        training.evaluate_checkpoint(chunk)
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    saved = json.loads((copy / "sweep.json").read_text())
    saved["protocol"]["patience"] = 3
    (copy / "sweep.json").write_text(json.dumps(saved))
    with pytest.raises(CheckpointError, match="differs from the settings of .* edited"):
        sweeps.resume_sweep(copy)
    saved["settings"][0]["lr_td"] = 0.5
    (copy / "sweep.json").write_text(json.dumps(saved))
    with pytest.raises(CheckpointError, match="not those of its space"):
        sweeps.resume_sweep(copy)


# --- rtrrl train --config ---------------------------------------------------------------------


def test_train_config_file_and_flags_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rtrrl import training
    from rtrrl.cli import main

    seen: dict[str, Any] = {}

    def fake_train(**kw: Any) -> dict[str, Any]:
        seen.update(kw)
        return {
            "task": "t",
            "backend": "b",
            "engine": "e",
            "seeds": [],
            "median": None,
            "std": None,
            "wall_time": 0.0,
        }

    monkeypatch.setattr(training, "train", fake_train)
    path = tmp_path / "c.toml"
    path.write_text(
        'task = "MemoryChain-8"\nseeds = [0, 4]\nsteps = 1000\nlr_td = 0.01\n'
        'clip_norm = "none"\nn_hidden = 16\n'
    )
    argv = ["train", "--config", str(path), "--steps", "2000", "--set", "n_hidden=4"]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 0
    assert seen["settings"] == RunSettings(task="MemoryChain-8", seeds=(0, 4), steps=2000)
    assert {k: seen[k] for k in ("lr_td", "clip_norm", "n_hidden")} == {
        "lr_td": 0.01,
        "clip_norm": None,
        "n_hidden": 4,
    }
    # A run's config.json is a config file too (the task's own fields left to the task).
    run_json = {
        "format": 3,
        "engine": "fused",
        "protocol": RunSettings(task="MemoryChain-8", steps=500).to_json(),
        "agent": {"obs_dim": 3, "n_actions": 2, "gamma": 0.9},
        "run": {"id": "x"},
    }
    (tmp_path / "config.json").write_text(json.dumps(run_json))
    from rtrrl import _cli_train

    run, agent = _cli_train.read_config_file(tmp_path / "config.json")
    assert RunSettings(**run) == RunSettings(task="MemoryChain-8", steps=500)
    assert agent == {"gamma": 0.9}
    path.write_text("lr_tdd = 0.1\n")
    with pytest.raises(ValueError, match="unknown setting 'lr_tdd' \\(did you mean lr_td"):
        _cli_train.read_config_file(path)


def test_best_toml_round_trips_every_field(tmp_path: Path) -> None:
    import rtrrl_spec
    from rtrrl import _cli_train

    config = rtrrl_spec.Config(obs_dim=3, n_actions=2, clip_norm=None, lr_td=math.pi * 1e-4)
    settings = RunSettings(task="MemoryChain-4", seeds=(1, 5), eval_steps=300)
    path = tmp_path / "best.toml"
    path.write_text(sweeps.config_toml(settings, config, "a comment\nover two lines"))
    tomllib.loads(path.read_text())
    run, agent = _cli_train.read_config_file(path)
    assert RunSettings(**run) == settings
    assert config.replace(**agent) == config


def test_equal_medians_rank_by_the_mean_over_seeds() -> None:
    """Three settings with the task's maximum as median: five seeds there rank above three."""
    from types import SimpleNamespace

    members = [(3 * s + i, s, seed) for s in range(2) for i, seed in enumerate((0, 1, 2))]
    bests = {0: 0.99, 1: 0.0, 2: 0.99, 3: 0.99, 4: 0.99, 5: 0.99}
    records = {m: {"best": bests[m], "stop_reason": "patience", "epoch": 10} for m, _, _ in members}
    sweep = SimpleNamespace(
        members=lambda: members,
        values=[{"lr_td": 1e-3}, {"lr_td": 3e-4}],
        settings=RunSettings(epoch_steps=100),
        tasks=["MemoryChain-4"],
        task_of=lambda s: "MemoryChain-4",
    )
    ranking = sweeps._rank(sweep, records)  # type: ignore[arg-type]
    assert [e["setting"] for e in ranking] == [1, 0]
    assert ranking[0]["median"] == ranking[1]["median"] == 0.99


def test_the_progress_bar_shows_the_best_settings_median(tmp_path: Path) -> None:
    """Setting 0's seeds reach 1, 1, 0 (median 1); setting 1's 0, 0 and one not yet evaluated:
    the bar shows 1, where a median over all members (0) would hide the good setting."""
    members = [[0, 0, 0], [1, 0, 1], [2, 0, 2], [3, 1, 0], [4, 1, 1], [5, 1, 2]]
    bests = [1.0, 1.0, 0.0, 0.0, 0.0, -math.inf]
    session = sweeps._ChunkSession(
        out=tmp_path,
        settings=RunSettings(),
        config=None,  # type: ignore[arg-type]
        engine="sweep",
        records=[
            loop.SeedRecord(seed=s, member=m, best=b)
            for (m, _, s), b in zip(members, bests, strict=True)
        ],
        sweep={"id": "x", "chunk": 0, "members": members},
    )
    assert session.bar_best() == 1.0
    assert loop.Session.bar_best(session) == 0.0
    # A chunk whose first evaluations are not numbers (diverged members) shows NaN, no error.
    for rec in session.records:
        rec.best = -math.inf
    assert math.isnan(session.bar_best()) and math.isnan(loop.Session.bar_best(session))
