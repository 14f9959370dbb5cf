"""``benchmarks/reproduce.py``: the table it renders, and one real cell on the NumPy backend."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from rtrrl import presets

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "reproduce.py"


@pytest.fixture(scope="module")
def reproduce() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rtrrl_bench_reproduce", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _record(task: str, variant: str, **kw: object) -> dict:
    base = {
        "task": task,
        "variant": variant,
        "command": "python benchmarks/reproduce.py --steps 1000",
        "machine": "2 cores, test CPU",
        "date": "2026-01-02 03:04:05 UTC",
        "engine": "fused",
        "steps": 1000,
        "eval_every": 1,
        "patience": 3,
        "seeds": 3,
        "epoch_steps": 1000,
        "eval_episodes": 10,
        "wall_time": 60.0,
    }
    return {**base, **kw}


def test_paper_figures_name_paper_tasks_and_variants(reproduce: ModuleType) -> None:
    for task, variant in reproduce.PAPER:
        assert task in reproduce.PAPER_TASKS and variant in reproduce.VARIANTS
    # Table 2's 500-step rows are other tasks than Table 3's (docs/tasks.md, "Paper rows"):
    # the paper tasks carry Table 3's figures; a task of both tables' rows gets both.
    assert reproduce.PAPER[("Reacher", "rflo")] == "216.28 ± 16.90"
    assert reproduce.PAPER[("CartPole-pos", "rtrl")] == "178.57 ± 93.04"
    assert reproduce.PAPER[("UmbrellaChain", "rflo")] == (
        "1.29 ± 0.07 in Table 2, 1.72 ± 0.13 in Table 3"
    )
    assert ("GaussianBandit", "linear") not in reproduce.PAPER  # printed as nan


def test_render_a_fake_results_file(reproduce: ModuleType, tmp_path: Path) -> None:
    records = [
        _record("MemoryChain-4", "rflo", status="error", error="RuntimeError: first try"),
        _record(
            "MemoryChain-4",
            "rflo",
            status="ok",
            bests=[1.0, 1.0, 0.8],
            median=1.0,
            std=0.0943,
            seed_steps=[1000, 1000, 1000],
            stopped=["budget"] * 3,
        ),
        # An error after a success does not hide the success.
        _record("MemoryChain-4", "rflo", status="error", error="RuntimeError: later"),
        _record("MemoryChain-4", "lru", status="error", error="NotImplementedError: no | lru"),
        _record(
            "RepeatPrevious",
            "lru",
            engine="host",
            steps=500,
            status="ok",
            bests=[0.25, 0.5, None],
            median=0.375,
            std=0.125,
            seed_steps=[500, 500, 0],
            stopped=["budget", "patience", "running"],
        ),
    ]
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n{torn line")
    read = reproduce.read_results(path)
    assert len(read) == len(records)
    columns = ["rflo", "rtrl", "linear", "no-fa", "lru", "frozen"]
    md = reproduce.render(read, ["MemoryChain-4", "RepeatPrevious"], columns)
    rows: dict[str, str] = {}  # the main table's row of each task (the first row naming it)
    for line in md.splitlines():
        if line.startswith("| "):
            rows.setdefault(line.split(" | ")[0].strip("| "), line)
    assert rows["MemoryChain-4"] == (
        "| MemoryChain-4 | fused | 1.00 ± 0.09 (paper 1.00 ± 0.00) | pending (paper 1.00 ± 0.11) "
        "| pending (paper 0.07 ± 0.01) | pending | error: NotImplementedError: no / lru | pending |"
    )
    assert rows["RepeatPrevious"] == (
        "| RepeatPrevious | host | pending (paper 0.54 ± 0.23) | pending | pending (paper -0.35 "
        "± 0.01) | pending | 0.38 ± 0.12 (paper 1.00 ± 0.00) | pending |"
    )
    assert (
        "1,000 environment steps per seed, evaluation every 1 epochs of 1000 steps on 10 "
        "episodes, patience 3 evaluations, 3 seeds" in md
    )
    assert "host loop (seeds one after another): 500 environment steps" in md
    assert "`python benchmarks/reproduce.py --steps 1000`" in md
    assert "2 of 12 cells finished" in md
    assert "| RepeatPrevious | lru | 0.25, 0.5, — | 500, 500, 0 | budget, patience, running" in md


@pytest.mark.numpy
def test_one_real_cell_on_numpy(reproduce: ModuleType, tmp_path: Path) -> None:
    pytest.importorskip("gymnax")
    pytest.importorskip("matplotlib")
    results, md = tmp_path / "r.jsonl", tmp_path / "table.md"
    argv = [
        "--tasks",
        "MemoryChain-4",
        "--variants",
        "frozen",
        "--backend",
        "numpy",
        "--seeds",
        "2",
        "--host-steps",
        "200",
        "--epoch-steps",
        "100",
        "--host-eval-every",
        "1",
        "--eval-episodes",
        "2",
        "--set",
        "n_hidden=4",
        "--results",
        str(results),
        "--md",
        str(md),
        "--runs",
        str(tmp_path / "runs"),
    ]
    assert reproduce.main(argv) == 0
    (rec,) = reproduce.read_results(results)
    assert rec["status"] == "ok", rec.get("error")
    assert (rec["task"], rec["variant"], rec["engine"]) == ("MemoryChain-4", "frozen", "host")
    assert rec["overrides"] == {"n_hidden": 4, "freeze_rnn": True}
    assert rec["seed_steps"] == [200, 200] and len(rec["bests"]) == 2
    config = json.loads(
        (tmp_path / "runs" / "r" / "MemoryChain-4-frozen" / "config.json").read_text()
    )
    assert config["agent"]["freeze_rnn"] is True and config["protocol"]["steps"] == 200
    lines = md.read_text().splitlines()
    header = next(line for line in lines if line.startswith("| task |"))
    row = next(line for line in lines if line.startswith("| MemoryChain-4 |"))
    # Only the variant asked for (and any run earlier into the file) gets a column.
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "task",
        "engine",
        reproduce.VARIANT_TITLES["frozen"],
    ]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells == ["MemoryChain-4", "host", reproduce.cell_text(rec, None)]
    # Running the same command again keeps the finished cell instead of training it again.
    assert reproduce.main(argv) == 0
    assert len(reproduce.read_results(results)) == 1
    # The cell's learning curve is kept beside the table, which shows it.
    assert (tmp_path / "curves" / "r" / "MemoryChain-4-frozen.png").stat().st_size > 1000
    assert "](curves/r/MemoryChain-4-frozen.png)" in md.read_text()


def test_a_cell_counts_as_finished_only_on_its_tasks_engine_of_now(
    reproduce: ModuleType,
) -> None:
    records = [
        # Before Swimmer became gymnax's (fused), it ran on the host loop.
        _record("Swimmer", "rflo", engine="host", status="ok"),
        _record("MemoryChain-4", "rflo", engine="fused", status="ok"),
        _record("MemoryChain-4", "lru", engine="fused", status="error", error="boom"),
        _record("DeepSea-4", "rflo", engine="fused", status="ok"),  # a task not asked for
    ]
    engines = {"Swimmer": "fused", "MemoryChain-4": "fused"}
    assert reproduce.finished_cells(records, engines) == {("MemoryChain-4", "rflo")}
    assert reproduce.finished_cells(records, {"MemoryChain-4": "host"}) == set()


def test_a_cell_from_before_its_task_was_redefined_is_not_finished_and_marked(
    reproduce: ModuleType,
) -> None:
    old = _record("DeepSea-16", "rflo", status="ok", median=0.0, std=0.0, bests=[0.0] * 3)
    now = reproduce.task_definition("DeepSea-16")
    new = {**old, "variant": "lru", "date": "2026-12-04 00:00:00 UTC", "definition": now}
    moved = {**new, "variant": "no-fa", "definition": {**now, "params": {}}}
    engines = {"DeepSea-16": "fused"}
    assert reproduce.finished_cells([old, new, moved], engines) == {("DeepSea-16", "lru")}
    # A record before the redefinition, of a task it did not touch, still counts.
    kept = _record("MemoryChain-4", "rflo", status="ok")
    assert reproduce.finished_cells([kept], {"MemoryChain-4": "fused"}) == {
        ("MemoryChain-4", "rflo")
    }
    table = reproduce.render([old, new], ["DeepSea-16"], ["rflo", "lru"])
    row = next(line for line in table.splitlines() if line.startswith("| DeepSea-16 |"))
    rflo, lru = row.split(" | ")[2:4]
    assert rflo.endswith(" †") and not lru.rstrip(" |").endswith("†")


def test_a_table_without_the_methods_column_shows_the_paper_figure_in_its_variants(
    reproduce: ModuleType,
) -> None:
    """The paper reports one figure per method: beside the RFLO column it is there alone; in a
    table of rtrrl's defaults only (the paper's protocol) it is beside those cells."""
    lru = reproduce.PAPER[("StatelessCartPole", "lru")]
    assert reproduce.paper_figure("StatelessCartPole", "lru-tuned", ["tuned", "lru-tuned"]) == lru
    assert reproduce.paper_figure("StatelessCartPole", "lru-tuned", ["lru", "lru-tuned"]) is None
    assert reproduce.paper_figure("CartPole-pos", "tuned", ["tuned"]) == "500.00 ± 163.17"
    assert reproduce.paper_figure("StatelessCartPole", "rtrl", ["tuned"]) is None  # Table 3
    records = [
        _record("CartPole-pos", v, status="ok", bests=[500.0], median=500.0, std=0.0)
        for v in ("rflo", "tuned")
    ]
    both = reproduce.render(records, ["CartPole-pos"], ["rflo", "tuned"])
    alone = reproduce.render(records[1:], ["CartPole-pos"], ["tuned"])
    assert "| 500.00 ± 0.00 (paper 500.00 ± 163.17) | 500.00 ± 0.00 |" in both
    assert "| CartPole-pos | fused | 500.00 ± 0.00 (paper 500.00 ± 163.17) |" in alone


def test_a_cell_run_under_an_earlier_preset_is_not_finished_and_marked(
    reproduce: ModuleType,
) -> None:
    """A cell counts only under the preset as it is now: its recorded fields, or (records
    without them) its date against the preset's change; the table marks the others ‡."""
    task, engines = "CartPole-vel", {"CartPole-vel": "fused"}
    now = reproduce.preset_fields(task, "tuned", {})
    assert now == presets.preset_fields("tuned", task) and now["clip_norm"] == 1.0
    ok = {"status": "ok", "median": 400.0, "std": 0.0, "bests": [400.0]}
    fields_then = {**now, "clip_norm": None, "lr_rnn": 3e-4}
    records = [
        _record(task, "tuned", preset="tuned", overrides={}, preset_fields=fields_then, **ok),
        _record(task, "no-clip", preset="paper", overrides={"clip_norm": None}, **ok),
        _record(task, "lru-tuned", preset="tuned", overrides={"body": "lru"}, **ok),
        _record(task, "rtrl", preset="tuned", overrides={"jacobian": "rtrl"}, **ok),
    ]
    # A record from after the change, with no fields recorded, ran the preset of now.
    later = {**records[3], "variant": "rflo", "date": "2026-12-04 00:00:00 UTC"}
    assert reproduce.finished_cells([*records, later], engines) == {
        (task, "no-clip"),  # Table 1: no preset to change
        (task, "lru-tuned"),  # the LRU's preset for this task did not change
        (task, "rflo"),
    }
    assert reproduce.finished_cells([{**records[0], "preset_fields": now}], engines) == {
        (task, "tuned")
    }
    table = reproduce.render(records, [task], ["tuned", "no-clip"])
    row = next(line for line in table.splitlines() if line.startswith(f"| {task} |"))
    tuned, no_clip = row.split(" | ")[2:4]
    assert tuned.endswith(" ‡") and "‡" not in no_clip


def test_a_cell_run_again_replaces_its_kept_curve(reproduce: ModuleType, tmp_path: Path) -> None:
    run, table = tmp_path / "run", tmp_path / "results" / "table.md"
    run.mkdir()
    (run / "curve.png").write_bytes(b"first run")
    rec = _record("CartPole-vel", "tuned", status="ok", run=str(run))
    link = reproduce.keep_curves([rec], table, "budget")[("CartPole-vel", "tuned")]
    kept = table.parent / link
    (run / "curve.png").write_bytes(b"second run")
    reproduce.keep_curves([rec], table, "budget")  # a table rendered again keeps the first
    assert kept.read_bytes() == b"first run"
    reproduce.keep_curves([rec], table, "budget", fresh=[rec])  # the cell ran again
    assert kept.read_bytes() == b"second run"
    (run / "curve.png").unlink()  # its run folder deleted: the kept curve stays
    assert reproduce.keep_curves([rec], table, "budget", fresh=[rec]) == {
        ("CartPole-vel", "tuned"): link
    }


def test_a_packed_cell_keeps_a_curve_of_its_own_seeds(
    reproduce: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A packed cell's kept curve is drawn from its own setting's rows of the pack's
    curves.csv (settings task by task), once; it replaces the pack's curves.png kept before."""
    from rtrrl import run_folder

    pack_dir, table = tmp_path / "pack", tmp_path / "results" / "table.md"
    pack_dir.mkdir()
    tasks, variants = ["MemoryChain-4", "MemoryChain-8"], ["rflo", "no-clip"]
    with (pack_dir / "curves.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["member", "setting", "seed", "epoch", "steps", "eval_reward"])
        for setting in range(4):
            for seed in range(2):
                member = 2 * setting + seed
                w.writerow([member, setting, seed, 1, 1000, ""])  # an epoch without evaluation
                w.writerow([member, setting, seed, 2, 2000, 10 * setting + seed])
    (pack_dir / "curves.png").write_bytes(b"every setting")
    pack = {"tasks": tasks, "variants": variants, "wall_time": 8.0}
    rec = _record("MemoryChain-8", "rflo", status="ok", run=str(pack_dir), pack=pack)
    drawn: list[tuple[list[dict], str]] = []

    def plot_curve(rows: list[dict], path: Path, title: str) -> None:
        drawn.append((rows, title))
        path.write_bytes(f"{len(drawn)}".encode())

    monkeypatch.setattr(run_folder, "plot_curve", plot_curve)
    old = table.parent / "curves" / "budget" / "MemoryChain-8-rflo.png"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"every setting")  # kept before packed cells had their own curve
    link = reproduce.keep_curves([rec], table, "budget")[("MemoryChain-8", "rflo")]
    assert (table.parent / link) == old and old.read_bytes() == b"1"
    ((rows, title),) = drawn
    # MemoryChain-8 rflo is setting 2: the second task's first variant.
    assert [(r["steps"], r["eval_reward"]) for r in rows[1::2]] == [(2000, 20.0), (2000, 21.0)]
    assert all(r["eval_reward"] != r["eval_reward"] for r in rows[0::2])  # NaN: no evaluation
    assert title.startswith("MemoryChain-8: RFLO (CT-RNN), jax") and "MemoryChain-4 rflo" in title
    reproduce.keep_curves([rec], table, "budget")  # rendered again: neither drawn nor copied
    assert len(drawn) == 1 and old.read_bytes() == b"1"


@pytest.mark.numpy
def test_a_cell_of_a_changed_preset_trains_again(
    reproduce: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a preset changes, the cell's run folder (finished under the old one) is not
    taken for the new cell: it trains again, with the preset of now."""
    pytest.importorskip("gymnax")
    results = tmp_path / "r.jsonl"
    argv = ["--tasks", "MemoryChain-4", "--variants", "tuned", "--backend", "numpy"]
    argv += ["--seeds", "1", "--host-steps", "100", "--epoch-steps", "100"]
    argv += ["--host-eval-every", "1", "--eval-episodes", "1", "--set", "n_hidden=4"]
    argv += ["--results", str(results), "--md", str(tmp_path / "t.md")]
    argv += ["--runs", str(tmp_path / "runs")]
    config = tmp_path / "runs" / "r" / "MemoryChain-4-tuned" / "config.json"
    assert reproduce.main(argv) == 0
    assert json.loads(config.read_text())["agent"]["lr_rnn"] == presets.TUNED.fields["lr_rnn"]
    before = presets.preset_fields

    def changed(preset: str, task: str, body: str = "ctrnn") -> dict:
        return {**before(preset, task, body), "lr_rnn": 5e-4} if preset == "tuned" else {}

    monkeypatch.setattr(presets, "preset_fields", changed)
    assert reproduce.main(argv) == 0
    first, second = reproduce.read_results(results)
    assert first["preset_fields"]["lr_rnn"] != second["preset_fields"]["lr_rnn"] == 5e-4
    assert json.loads(config.read_text())["agent"]["lr_rnn"] == 5e-4


@pytest.mark.slow  # compiles fused populations and sweep populations
def test_packed_cells_record_what_the_cells_run_alone_record(
    reproduce: ModuleType, tmp_path: Path
) -> None:
    """``--pack``: the cells of one task whose agents differ only in numbers (here Table 1,
    no clip and the tuned preset, which clips none and sets other learning rates) train as
    one population, across the tasks that are one environment at other parameters (two
    memory chains); each cell records the bests and steps it records run alone. A cell of
    another structure (frozen) packs only across the tasks."""
    pytest.importorskip("jax")
    pytest.importorskip("gymnax")
    pytest.importorskip("matplotlib")
    tasks = ["MemoryChain-4", "MemoryChain-8"]
    common = ["--tasks", ",".join(tasks), "--seeds", "2", "--steps", "600"]
    common += ["--epoch-steps", "200", "--eval-every", "1", "--patience", "1"]
    common += ["--eval-episodes", "3", "--set", "n_hidden=4", "--runs", str(tmp_path / "runs")]
    variants = ["--variants", "rflo,no-clip,tuned,frozen"]
    packed, alone = tmp_path / "packed.jsonl", tmp_path / "alone.jsonl"
    md = tmp_path / "t.md"
    argv = [*common, *variants, "--pack", "--results", str(packed), "--md", str(md)]
    all_variants = ["rflo", "no-clip", "tuned", "frozen"]
    pending = {t: all_variants for t in tasks}
    assert reproduce.packs(pending, reproduce.parse_args(argv)) == [
        (tasks, ["rflo", "no-clip", "tuned"]),
        (tasks, ["frozen"]),
    ]
    # Tasks that differ in more than parameters (sizes of DeepSea) or in the cells pending
    # pack apart.
    apart = {"MemoryChain-4": ["rflo", "no-clip"], "MemoryChain-8": ["rflo"], "DeepSea-4": ["rflo"]}
    assert reproduce.packs(apart, reproduce.parse_args(argv)) == [
        (["MemoryChain-4"], ["rflo", "no-clip"]),
        (["MemoryChain-8"], ["rflo"]),
        (["DeepSea-4"], ["rflo"]),
    ]
    assert reproduce.main(argv) == 0
    assert reproduce.main([*common, *variants, "--results", str(alone), "--md", str(md)]) == 0
    by_cell = {(r["task"], r["variant"]): r for r in reproduce.read_results(packed)}
    assert set(by_cell) == {(t, v) for t in tasks for v in all_variants}
    episodes: dict[str, set[str]] = {}
    for rec in reproduce.read_results(alone):
        assert "pack" not in rec
        twin = by_cell[rec["task"], rec["variant"]]
        assert twin["status"] == rec["status"] == "ok", (twin.get("error"), rec.get("error"))
        assert twin["bests"] == rec["bests"], (rec["task"], rec["variant"])
        assert twin["seed_steps"] == rec["seed_steps"]
        assert twin["stopped"] == rec["stopped"]
        assert twin["preset_fields"] == rec["preset_fields"]
        assert twin["engine"] == rec["engine"] == "fused"
        assert twin["pack"]["tasks"] == tasks
        # The setting the pack trained for this cell is the agent the cell run alone trained.
        saved = json.loads((Path(twin["run"]) / "sweep.json").read_text())
        assert saved["tasks"] == tasks
        setting = saved["settings"][twin["pack"]["variants"].index(rec["variant"])]
        agent = json.loads((Path(rec["run"]) / "config.json").read_text())["agent"]
        assert setting and {k: agent[k] for k in setting} == setting, rec["variant"]
        # Its members' epochs are the cell's, on the cell's task (a memory chain's episodes
        # last its length + 1 steps: the two tasks count different episodes per epoch).
        with (Path(twin["run"]) / "curves.csv").open() as f:
            number = len(saved["settings"]) * tasks.index(rec["task"])
            number += saved["settings"].index(setting)
            packed_rows = [r for r in csv.DictReader(f) if int(r["setting"]) == number]
        with (Path(rec["run"]) / "metrics.csv").open() as f:
            alone_rows = list(csv.DictReader(f))
        assert [r["episodes"] for r in packed_rows] == [r["episodes"] for r in alone_rows]
        episodes[rec["task"]] = {r["episodes"] for r in alone_rows}
    assert episodes["MemoryChain-4"].isdisjoint(episodes["MemoryChain-8"])
    assert by_cell["MemoryChain-4", "rflo"]["pack"]["variants"] == ["rflo", "no-clip", "tuned"]
    assert (
        len(
            {
                json.dumps(by_cell["MemoryChain-4", v]["preset_fields"])
                + json.dumps(by_cell["MemoryChain-4", v]["overrides"])
                for v in ("rflo", "no-clip", "tuned")
            }
        )
        == 3
    )
    # Running the command again keeps every finished cell.
    assert reproduce.main(argv) == 0
    assert len(reproduce.read_results(packed)) == 8
    assert "packed: rflo+no-clip+tuned on MemoryChain-4+MemoryChain-8" in md.read_text()


def test_a_cell_says_how_many_of_its_seeds_diverged(reproduce: ModuleType) -> None:
    """A packed cell's seed that diverged stopped alone with its best so far: the cell's text
    says so, beside the median of the seeds' bests."""
    rec = {"status": "ok", "median": 2.0, "std": 0.5, "stopped": ["patience", "diverged"]}
    assert reproduce.cell_text(rec, "3.00") == "2.00 ± 0.50 (1 of 2 seeds diverged) (paper 3.00)"
    rec["stopped"] = ["patience", "budget"]
    assert "diverged" not in reproduce.cell_text(rec, None)
