"""Reproduce the paper's results table: tasks x variants, 5 seeds each, at a budget you choose.

``python benchmarks/reproduce.py [--tasks T1,T2] [--variants rflo,lru] [--steps N]
[--host-steps M] [--eval-every E] [--host-eval-every H] [--patience P]``

Every cell (one task, one variant) is one :func:`rtrrl.train` run of ``--seeds`` seeds with
the paper's protocol (epochs of 1000 steps, frozen evaluations on 10 episodes, best
evaluation reward per seed, early stop after ``patience`` evaluations without improvement) on
the JAX backend: the fused population path (all seeds in one ``vmap``) for gymnax tasks, the
host loop (seeds one after another, about 1000 steps/s here) for gymnasium tasks (Swimmer),
which therefore get their own, smaller budget (``--host-steps``, ``--host-eval-every``). The
popgym tasks run on our JAX ports of them (see docs/tasks.md), on the fused path.

Variants (columns):

- ``rflo``: RTRRL with RFLO, the paper's default (CT-RNN body, feedback alignment);
- ``rtrl``: the same with the exact RTRL Jacobian (``jacobian="rtrl"``);
- ``linear``: linear TD(lambda), no recurrent body (``body="linear"``);
- ``no-fa``: RFLO without feedback alignment (``feedback_alignment=False``);
- ``lru``: the online LRU body (``body="lru"``);
- ``frozen``: the CT-RNN kept at its initial parameters (``freeze_rnn=True``);
- ``no-clip``, ``lru-no-clip``: RFLO and LRU without the gradient-norm clip (``clip_norm=None``,
  the authors' code's default; the paper's Table 1 and the spec clip at 1.0).

Results go, one JSON line per finished cell, to ``benchmarks/results/reproduce/<budget>.jsonl``
(the file name spells out the budget, so running the same command again resumes the sweep:
finished cells are not redone, failed ones are retried; a cell killed mid-run continues from
its run folder's checkpoint under ``runs/reproduce/``). After every cell the table is
rendered to ``benchmarks/results/reproduction.md`` (rows = tasks, columns = variants, cells =
median ± std over seeds of the best evaluation reward, the paper's figure beside it where the
paper gives one). A cell that fails says ``error: ...`` in the table; a cell not run yet says
``pending``. ``--render-only`` re-renders from the results file without training.

``--pack`` trains every fused cell as a population of its seeds, as a sweep does (a seed
that diverges stops alone, its best so far kept, and the cell says so), and the cells of a
task whose agents differ only in numbers (``rflo``, ``no-clip`` and ``tuned``; ``lru``,
``lru-no-clip`` and ``lru-tuned``; as the task's presets resolve) as ONE population: an
:func:`rtrrl.sweep` whose settings are those cells' agents, listed, each with the cell's
seeds and its own early stopping, in a folder ``<runs>/<task>-pack-<variants>/``. Tasks that
are one environment at other parameters (the memory chains' lengths) with the same cells
pending join one pack (``rtrrl.sweep(tasks=)``, folder
``<runs>/<task1>+<task2>...-pack-<variants>/``). Each cell records what it records run alone
(members compute what a run computes, to float rounding), plus the pack; the cells of a pack
share its wall time. A pack compiles once where its cells compile one each, and steps its
members in one larger population (``benchmarks/pack_speed.py`` measures what that saves).

``--ray [ADDRESS]`` runs every cell as a Ray task (``pip install "rtrrl[ray]"``; see
docs/distributed.md): ``--ray`` alone starts a local Ray instance, ``--ray auto`` joins the
cluster running on this machine, ``--ray HOST:PORT`` that head. Each cell asks for
``--ray-cpus`` CPUs (default 1) and ``--ray-gpus`` GPUs (default 0) and starts again from its
checkpoint when its worker dies (``--ray-retries``, default 3); the driver writes the results
file and the table as cells finish, as a local run does, so the same command run again skips
the finished cells. The run folders (``--runs``) and this script must be on storage every node
reaches (or at the same path on every node).

Default budget (fits this 2-core CPU machine): 100,000 steps per seed with evaluation every
10 epochs on gymnax tasks, 20,000 steps per seed with evaluation every 5 epochs on host-loop
tasks, patience 10. Measured here on a shared, loaded machine: a gymnax cell takes 15 s to
2 min (RTRL about 4 min), so the four tasks of ``nox -s results`` x six variants take about
half an hour. The paper trains up to 50 million steps with evaluation every 100 epochs and
patience 20, so a cell under the paper's figure at this budget is not evidence against the
paper.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe as machine  # noqa: E402

from rtrrl import distributed, envs, presets  # noqa: E402
from rtrrl.envs._registry import PAPER_ROWS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results" / "reproduce"
TABLE = ROOT / "benchmarks" / "results" / "reproduction.md"
RUNS = ROOT / "runs" / "reproduce"

#: Column name -> agent Config overrides, over the paper's Table 1 (``preset="paper"``) unless
#: the column names another preset (rtrrl.presets: "tuned" is what ``rtrrl train`` starts from).
VARIANTS: dict[str, dict[str, Any]] = {
    "rflo": {},
    "rtrl": {"jacobian": "rtrl"},
    "linear": {"body": "linear"},
    "no-fa": {"feedback_alignment": False},
    "lru": {"body": "lru"},
    "frozen": {"freeze_rnn": True},
    # The paper's Table 1 clips at 1.0 (the spec's default); the authors' code does not clip
    # unless asked, and clipping biases the critic (benchmarks/clip_bias.py).
    "no-clip": {"clip_norm": None},
    "lru-no-clip": {"body": "lru", "clip_norm": None},
    "tuned": {"preset": "tuned"},
    "lru-tuned": {"preset": "tuned", "body": "lru"},
}
VARIANT_TITLES = {
    "rflo": "RFLO (CT-RNN)",
    "rtrl": "RTRL (CT-RNN)",
    "linear": "linear TD(λ)",
    "no-fa": "RFLO, no FA",
    "lru": "LRU",
    "frozen": "frozen CT-RNN",
    "no-clip": "RFLO, no clip",
    "lru-no-clip": "LRU, no clip",
    "tuned": "RFLO, rtrrl's defaults",
    "lru-tuned": "LRU, rtrrl's defaults",
}

#: Variants that run the method of a paper column with other hyper-parameters: a table without
#: that column shows the paper's figure in theirs (the paper reports one figure per method).
SAME_METHOD: dict[str, str] = {
    "no-clip": "rflo",
    "tuned": "rflo",
    "lru-no-clip": "lru",
    "lru-tuned": "lru",
}

#: The paper's tasks (Lemmel & Grosu, AAAI 2025), as the registry lists them: the fixed names,
#: the memory chain and deep sea sizes it reports, and the popgym tasks (Easy).
PAPER_TASKS: tuple[str, ...] = tuple(envs.paper_tasks())

#: The appendix's Tables 2 and 3 (Lemmel & Grosu, AAAI 2025; RTRRL_AAAI25_Appendix.pdf in
#: github.com/FranzKnut/RTRRL-AAAI25), as printed: per row, the best evaluation reward, median
#: ± std over 5 runs, of each column that is a variant here (their PPO column is not). A row's
#: environment is rtrrl.envs._registry.PAPER_ROWS's; "nan" is printed where no figure is.
PAPER_TABLES: dict[int, tuple[tuple[str, ...], dict[str, tuple[str, ...]]]] = {
    2: (
        ("linear", "rtrl", "rflo"),
        {
            "CartPole-vel": ("454.55 ± 34.47", "500.00 ± 0.00", "500.00 ± 0.00"),
            "CartPole-pos": ("57.47 ± 1.38", "178.57 ± 93.04", "500.00 ± 163.17"),
            "MetaMaze": ("28.00 ± 43.33", "34.00 ± 3.28", "40.00 ± 7.30"),
            "DiscountingChain": ("1.10 ± 0.04", "1.05 ± 0.04", "1.10 ± 0.05"),
            "UmbrellaChain": ("0.79 ± 0.05", "0.99 ± 0.15", "1.29 ± 0.07"),
            "BernoulliBandit": ("404.40 ± 20.51", "373.80 ± 18.20", "371.70 ± 5.17"),
            "GaussianBandit": ("0.01 ± 5.83", "-126.17 ± 70.60", "24.05 ± 21.43"),
            "Reacher": ("106.66 ± 6.04", "114.45 ± 9.40", "111.06 ± 26.76"),
            "Swimmer": ("91.26 ± 7.77", "97.57 ± 4.80", "442.54 ± 225.73"),
            "MountCarCont": ("-30.00 ± 8.94", "-40.00 ± 5.48", "-0.03 ± 0.67"),
            "MountCarCont-vel": ("-41.88 ± 16.54", "-1.31 ± 16.14", "-20.00 ± 40.80"),
            "MountCarCont-pos": ("-46.91 ± 15.50", "0.04 ± 8.43", "-59.54 ± 43.45"),
            "MemoryChain-4": ("0.07 ± 0.01", "1.00 ± 0.11", "1.00 ± 0.00"),
            "MemoryChain-8": ("0.07 ± 0.02", "0.90 ± 0.25", "1.00 ± 0.00"),
            "MemoryChain-16": ("0.12 ± 0.04", "0.61 ± 0.27", "1.00 ± 0.00"),
            "MemoryChain-32": ("0.17 ± 0.03", "0.56 ± 0.13", "0.77 ± 0.18"),
            "MemoryChain-64": ("0.26 ± 0.07", "0.61 ± 0.13", "0.32 ± 0.08"),
            "DeepSea-4": ("0.99 ± 0.00", "0.99 ± 0.44", "0.99 ± 0.00"),
            "DeepSea-8": ("0.99 ± 0.54", "0.99 ± 0.44", "0.99 ± 0.54"),
            "DeepSea-16": ("-0.00 ± 0.54", "0.99 ± 0.54", "0.99 ± 0.44"),
        },
    ),
    3: (
        ("linear", "rflo", "lru"),
        {
            "MetaMaze": ("55.93 ± 43.33", "61.60 ± 9.24", "15.80 ± 5.02"),
            "DiscountingChain": ("1.09 ± 0.02", "1.10 ± 0.00", "1.10 ± 0.00"),
            "UmbrellaChain": ("1.19 ± 0.05", "1.72 ± 0.13", "1.20 ± 0.04"),
            "Catch": ("0.27 ± 0.08", "1.00 ± 0.00", "0.39 ± 0.83"),
            "BernoulliBandit": ("393.38 ± 20.51", "893.96 ± 11.35", "807.96 ± 100.19"),
            "GaussianBandit": ("nan", "61.10 ± 32.98", "37.78 ± 67.01"),
            "PointRobot": ("1.34 ± 0.21", "5.30 ± 4.30", "0.98 ± 0.49"),
            "Reacher": ("120.79 ± 8.69", "216.28 ± 16.90", "199.77 ± 9.26"),
            "Swimmer": ("95.87 ± 5.94", "465.08 ± 17.47", "102.17 ± 70.34"),
            "StatelessCartPole": ("0.72 ± 0.02", "1.00 ± 0.00", "1.00 ± 0.00"),
            "NoisyStatelessCartPole": ("0.50 ± 0.01", "0.99 ± 0.01", "0.93 ± 0.04"),
            "Minesweeper": ("0.14 ± 0.02", "0.02 ± 0.05", "0.12 ± 0.01"),
            "MultiArmedBandit": ("0.25 ± 0.05", "0.39 ± 0.03", "0.38 ± 0.08"),
            "RepeatFirst": ("0.15 ± 0.12", "-0.22 ± 0.13", "0.05 ± 0.33"),
            "RepeatPrevious": ("-0.35 ± 0.01", "0.54 ± 0.23", "1.00 ± 0.00"),
        },
    ),
}


def _paper_figures() -> dict[tuple[str, str], str]:
    """(task, variant) -> the paper's figure, for the tasks reproduced here (PAPER_TASKS). A
    task that is the environment of a row of both tables (UmbrellaChain) gets both."""
    found: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for table, (columns, rows) in PAPER_TABLES.items():
        for row, figures in rows.items():
            task = PAPER_ROWS[table][row]
            for variant, figure in zip(columns, figures, strict=True):
                if task in PAPER_TASKS and figure != "nan":
                    found.setdefault((task, variant), []).append((table, figure))
    return {
        key: figs[0][1] if len(figs) == 1 else ", ".join(f"{f} in Table {t}" for t, f in figs)
        for key, figs in found.items()
    }


#: The paper's figures (best evaluation reward, median ± std over 5 runs) where it gives them.
PAPER: dict[tuple[str, str], str] = _paper_figures()

DEFAULTS = {
    "steps": 100_000,
    "host_steps": 20_000,
    "eval_every": 10,
    "host_eval_every": 5,
    "patience": 10,
}


# --- running --------------------------------------------------------------------------------


def engine_of(task: str, backend: str) -> str:
    """``"fused"`` for a gymnax task on the JAX backend, else ``"host"`` (as rtrrl.train picks)."""
    if backend != "jax":
        return "host"
    try:
        envs.make_jax(task)
    except envs.UnknownTaskError:
        raise
    except Exception:  # no pure-JAX form (gymnasium, popgym without a port)
        return "host"
    return "fused"


def budget_of(args: argparse.Namespace, engine: str) -> dict[str, Any]:
    """The protocol of one cell: the engine picks the fused or the host budget."""
    host = engine == "host"
    return {
        "steps": args.host_steps if host else args.steps,
        "eval_every": args.host_eval_every if host else args.eval_every,
        "patience": args.patience,
        "seeds": args.seeds,
        "epoch_steps": args.epoch_steps,
        "eval_episodes": args.eval_episodes,
    }


def results_path(args: argparse.Namespace) -> Path:
    """The sweep's JSON lines file: named after the budget, so the same command resumes."""
    if args.results:
        return Path(args.results)
    name = (
        f"{args.backend}-steps{args.steps}-host{args.host_steps}-eval{args.eval_every}"
        f"-hosteval{args.host_eval_every}-patience{args.patience}-seeds{args.seeds}"
    )
    if args.epoch_steps != 1000:
        name += f"-epoch{args.epoch_steps}"
    if args.set:
        name += "-set-" + "-".join(s.replace("=", "_") for s in sorted(args.set))
    return RESULTS_DIR / f"{name}.jsonl"


def read_results(path: Path) -> list[dict[str, Any]]:
    """Every record of a results file (a torn last line from a kill is skipped)."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def latest(records: Sequence[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The last record of each (task, variant): an ``ok`` one wins over any error."""
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    for rec in records:
        key = (rec["task"], rec["variant"])
        if key in cells and cells[key]["status"] == "ok" and rec["status"] != "ok":
            continue
        cells[key] = rec
    return cells


#: Paper rows that commit c6226a1 (2026-12-03 02:18 UTC) put on the paper's environment
#: (docs/tasks.md): episodes of 500 or 1000 steps, DeepSea's action 1 always right, Swimmer on
#: gymnax. Their cells recorded before then, which name no task definition, ran on another
#: environment.
REDEFINED_AT_C6226A1 = "2026-12-03 02:18:34 UTC"
REDEFINED_TASKS = (
    "MountainCarContinuous-vel",
    "MountainCarContinuous-pos",
    "BernoulliBandit",
    "GaussianBandit",
    "MetaMaze",
    "PointRobot",
    "Reacher",
    "Swimmer",
    "DeepSea-4",
    "DeepSea-8",
    "DeepSea-16",
)


def task_definition(task: str) -> dict[str, Any] | None:
    """What the task is now (source, environment, parameters): a cell ran on it if its record
    says the same."""
    try:
        return json.loads(json.dumps(envs.task_definition(task)))
    except envs.UnknownTaskError:
        return None


def current(record: dict[str, Any], definition: dict[str, Any] | None) -> bool:
    """Whether ``record`` ran on the task as it is defined now."""
    if "definition" in record:
        return record["definition"] == definition
    return not (record["task"] in REDEFINED_TASKS and record["date"] < REDEFINED_AT_C6226A1)


#: Presets changed since cells were recorded without the fields they ran
#: (``"preset_fields"``): (task, body) -> the change's date. Cells of those before the date
#: ran another setting.
PRESET_CHANGED = {
    ("CartPole-vel", "ctrnn"): "2026-12-03 18:00:00 UTC",
    ("Swimmer", "ctrnn"): "2026-12-03 18:47:00 UTC",
}


def preset_fields(task: str, preset: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The agent fields ``preset`` sets for a cell of ``task`` with ``overrides``, as they are
    now (JSON's form: ``None`` is ``null``)."""
    return presets.preset_fields(preset, task, presets.body_of(overrides))


def current_preset(record: dict[str, Any]) -> bool:
    """Whether ``record`` ran its preset as the preset is now."""
    preset, overrides = record.get("preset", "paper"), record.get("overrides", {})
    if "preset_fields" in record:
        return record["preset_fields"] == preset_fields(record["task"], preset, overrides)
    changed = PRESET_CHANGED.get((record["task"], presets.body_of(overrides)))
    return preset == "paper" or changed is None or record["date"] >= changed


def finished_cells(
    records: Sequence[dict[str, Any]], engines: dict[str, str]
) -> set[tuple[str, str]]:
    """The cells of the tasks in ``engines`` (task -> the engine it runs on now) that finished
    on the task as it is now: on its engine of now (Swimmer became gymnax's Swimmer-misc,
    fused; the MuJoCo one is Swimmer-gymnasium, host) and its definition of now."""
    definitions = {task: task_definition(task) for task in engines}
    return {
        (task, variant)
        for (task, variant), r in latest(records).items()
        if r["status"] == "ok"
        and task in engines
        and r.get("engine") == engines[task]
        and current(r, definitions[task])
        and current_preset(r)
    }


def cell_overrides(variant: str, args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """A cell's preset and its agent overrides (``--set``, then the variant's)."""
    from rtrrl._cli_train import parse_overrides

    overrides = {**parse_overrides(args.set), **VARIANTS[variant]}
    return overrides.pop("preset", "paper"), overrides


def new_record(task: str, variant: str, args: argparse.Namespace, command: str) -> dict[str, Any]:
    """What a cell's record says before it trains: the cell, the command, machine and date."""
    return {
        "task": task,
        "variant": variant,
        "backend": args.backend,
        "command": command,
        "machine": machine(),
        "load": [round(x, 1) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "definition": task_definition(task),
    }


def seed_results(
    bests: Sequence[float | None], steps: Sequence[int], stopped: Sequence[str], run: Path
) -> dict[str, Any]:
    """A finished cell's results: each seed's best, steps and stop, their median ± std."""
    import numpy as np

    finite = [b for b in bests if b is not None and math.isfinite(b)]
    return {
        "status": "ok",
        "bests": list(bests),
        "median": float(np.median(finite)) if finite else None,
        "std": float(np.std(finite)) if finite else None,
        "seed_steps": list(steps),
        "stopped": list(stopped),
        "run": str(run.relative_to(ROOT)) if run.is_relative_to(ROOT) else str(run),
    }


def failure(err: Exception, args: argparse.Namespace) -> dict[str, Any]:
    """A failed cell's record fields (the traceback printed with ``--verbose``)."""
    if args.verbose:
        traceback.print_exc()
    return {"status": "error", "error": f"{type(err).__name__}: {err}".splitlines()[0][:300]}


def run_cell(
    task: str, variant: str, args: argparse.Namespace, runs: Path, command: str
) -> dict[str, Any]:
    """Train one cell; a failure becomes a record with ``status="error"``, never an exception
    (but Ctrl-C still stops the sweep, leaving the cell's checkpoint to resume from)."""
    from rtrrl import training

    record = new_record(task, variant, args, command)
    t0 = time.perf_counter()
    try:
        engine = engine_of(task, args.backend)
        budget = budget_of(args, engine)
        record.update(engine=engine, **budget)
        preset, overrides = cell_overrides(variant, args)
        fields = preset_fields(task, preset, overrides)
        record.update(overrides=overrides, preset=preset, preset_fields=fields)
        out = runs / f"{task}-{variant}"
        summary = None
        if (out / training.CHECKPOINT).exists():
            previous = json.loads((out / "config.json").read_text())
            saved = previous["protocol"]
            # The run folder is this cell's only if it trains what the cell asks for now: the
            # budget, the preset as it is now, and the overrides.
            same = (
                saved["steps"] == budget["steps"]
                and saved.get("preset", "paper") == preset
                and all(previous["agent"].get(k) == v for k, v in {**fields, **overrides}.items())
            )
            done = out / "summary.json"
            if same and done.exists():
                old = json.loads(done.read_text())
                if all(s["stopped"] != "running" for s in old["seeds"]):
                    summary = old  # finished, but killed before its line was written
            if summary is None and same:
                summary = training.resume(out, progress=args.progress)
            elif summary is None:
                shutil.rmtree(out)
        if summary is None:
            if out.exists():
                shutil.rmtree(out)
            summary = training.train(
                task,
                args.backend,
                seeds=budget["seeds"],
                steps=budget["steps"],
                out=out,
                epoch_steps=budget["epoch_steps"],
                eval_every=budget["eval_every"],
                eval_episodes=budget["eval_episodes"],
                patience=budget["patience"],
                preset=preset,
                progress=args.progress,
                **overrides,
            )
        seeds = summary["seeds"]
        record.update(
            engine=summary["engine"],
            **seed_results(
                [s["best_eval"] for s in seeds],
                [s["steps"] for s in seeds],
                [s["stopped"] for s in seeds],
                out,
            ),
        )
    except KeyboardInterrupt:
        raise
    except Exception as err:  # noqa: BLE001 - a failed cell is recorded, the sweep goes on
        record.update(failure(err, args))
    # The run's own wall time counts every session of a resumed cell; this one, only its last.
    ran = summary.get("wall_time") if record.get("status") == "ok" else None
    record["wall_time"] = round(ran if ran is not None else time.perf_counter() - t0, 1)
    return record


# --- packed cells ---------------------------------------------------------------------------


def cell_agent(task: str, variant: str, args: argparse.Namespace) -> Any:
    """The agent config a cell of ``variant`` on ``task`` trains (its preset resolved)."""
    from rtrrl import training
    from rtrrl.settings import RunSettings

    preset, overrides = cell_overrides(variant, args)
    return training.agent_config(RunSettings(task=task, preset=preset), overrides)


def _variant_groups(
    task: str, variants: Sequence[str], args: argparse.Namespace
) -> list[list[str]]:
    """``variants`` of ``task`` in groups whose agents differ only in numbers (a clip of
    ``None`` among clipped ones included, as in a sweep), in the order asked for."""
    import rtrrl_spec

    groups: dict[Any, list[str]] = {}
    for v in variants:
        config = cell_agent(task, v, args)
        if config.clip_norm is None:
            config = config.replace(clip_norm=1.0)
        groups.setdefault(rtrrl_spec.structure_of(config), []).append(v)
    return list(groups.values())


def _share_tasks(tasks: Sequence[str], variants: Sequence[str], args: argparse.Namespace) -> bool:
    """Whether ``tasks`` can be one population for ``variants``: one environment at other
    parameters (:func:`rtrrl.envs.make_jax_tasks`), each variant's agent the same on all."""
    from rtrrl import envs

    try:
        envs.make_jax_tasks(tasks)
    except ValueError:
        return False
    return all(len({cell_agent(t, v, args) for t in tasks}) == 1 for v in variants)


def packs(
    pending: Mapping[str, Sequence[str]], args: argparse.Namespace
) -> list[tuple[list[str], list[str]]]:
    """The pending cells (task -> variants) as packs ``(tasks, variants)``, each trained as
    ONE population (:func:`run_pack`): a task's variants whose agents differ only in numbers,
    and, across tasks that are one environment at other parameters (the memory chains'
    lengths) with the same variants pending, those tasks together. A pack of one cell is a
    population of its seeds as a sweep runs it: a seed that diverges stops alone."""
    out: list[tuple[list[str], list[str]]] = []
    for task, variants in pending.items():
        for group in _variant_groups(task, variants, args):
            for tasks, joined in out:
                if joined == group and _share_tasks([*tasks, task], group, args):
                    tasks.append(task)
                    break
            else:
                out.append(([task], group))
    return out


def _listed(configs: Sequence[Any]) -> list[dict[str, Any]]:
    """Per config, the sweepable numbers in which ``configs`` differ (one setting each; one
    config: its ``lr_td``, since a setting names at least one number)."""
    from rtrrl.sweeps import SWEEPABLE

    names = [n for n in SWEEPABLE if len({getattr(c, n) for c in configs}) > 1] or ["lr_td"]
    return [{n: getattr(c, n) for n in names} for c in configs]


def pack_cells(tasks: Sequence[str], variants: Sequence[str]) -> list[tuple[str, str]]:
    """A pack's cells (task, variant) in the order of its sweep's settings: task by task."""
    return [(t, v) for t in tasks for v in variants]


def run_pack(
    tasks: Sequence[str],
    variants: Sequence[str],
    args: argparse.Namespace,
    runs: Path,
    command: str,
) -> list[dict[str, Any]]:
    """Train the cells of ``variants`` on ``tasks`` (one of :func:`packs`) as ONE population:
    a sweep (:func:`rtrrl.sweep`, with ``tasks=`` where there are several) whose listed
    settings are the variants, each with the cell's seeds, every member early-stopped on its
    own. A cell's record is its setting's seeds on its task, as a cell run alone records
    them, plus ``"pack"`` (the tasks, the variants and the pack's wall time; the cell's
    ``wall_time`` is its share). Each member computes what the cell run alone computes, to
    float rounding. A failure is recorded for every cell of the pack."""
    import dataclasses

    from rtrrl import sweeps, training
    from rtrrl.errors import RunExistsError
    from rtrrl.settings import TASK_FIELDS, RunSettings

    cells = pack_cells(tasks, variants)
    records = [new_record(t, v, args, command) for t, v in cells]
    t0 = time.perf_counter()
    out = runs / f"{'+'.join(tasks)}-pack-{'+'.join(variants)}"
    summary: dict[str, Any] = {}
    try:
        engine = engine_of(tasks[0], args.backend)
        budget = budget_of(args, engine)
        for (task, variant), rec in zip(cells, records, strict=True):
            preset, overrides = cell_overrides(variant, args)
            fields = preset_fields(task, preset, overrides)
            rec.update(engine=engine, **budget)
            rec.update(overrides=overrides, preset=preset, preset_fields=fields)
        configs = [cell_agent(tasks[0], v, args) for v in variants]
        listed = _listed(configs)
        fixed = {
            f.name: getattr(configs[0], f.name)
            for f in dataclasses.fields(configs[0])
            if f.name not in TASK_FIELDS and f.name not in listed[0]
        }
        # The sweep's agent: Table 1, then every field the cells share; its members then
        # add the numbers in which they differ, and are exactly the cells' agents.
        shared = training.agent_config(RunSettings(task=tasks[0], preset="paper"), fixed)
        if sweeps.member_configs(shared, listed) != configs:
            raise RuntimeError(f"the pack's members are not the cells' agents: {variants}")
        kw = dict(
            tasks=list(tasks) if len(tasks) > 1 else None,
            space=sweeps.SearchSpace(listed=tuple(listed)),
            preset="paper",
            out=out,
            seeds=budget["seeds"],
            steps=budget["steps"],
            epoch_steps=budget["epoch_steps"],
            eval_every=budget["eval_every"],
            eval_episodes=budget["eval_episodes"],
            patience=budget["patience"],
            progress=args.progress,
            continue_same=True,
            **fixed,
        )
        try:
            summary = sweeps.sweep(tasks[0], args.backend, **kw)
        except RunExistsError:  # a pack of other settings (a preset changed): start again
            shutil.rmtree(out)
            summary = sweeps.sweep(tasks[0], args.backend, **kw)
        # The sweep's settings are the variants on each task, task by task.
        entries = {e["setting"]: e for e in summary["ranking"]}
        for i, rec in enumerate(records):
            entry = entries[i]
            if (entry["task"], entry["values"]) != (cells[i][0], listed[i % len(variants)]):
                raise RuntimeError(f"the pack's setting {i} is not the cell {cells[i]}")
            rec.update(seed_results(entry["best"], entry["steps"], entry["stop_reasons"], out))
    except KeyboardInterrupt:
        raise
    except Exception as err:  # noqa: BLE001 - failed cells are recorded, the sweep goes on
        for rec in records:
            rec.update(failure(err, args))
    # The sweep's wall time counts every session of a resumed pack.
    ran = summary.get("wall_time") if records[0].get("status") == "ok" else None
    wall = round(ran if ran is not None else time.perf_counter() - t0, 1)
    for rec in records:
        rec["wall_time"] = round(wall / len(records), 1)
        rec["pack"] = {"tasks": list(tasks), "variants": list(variants), "wall_time": wall}
    return records


# --- curves ---------------------------------------------------------------------------------


def keep_curve(source: Path, table: Path, name: str, *, fresh: bool = False) -> str | None:
    """Copy the curve ``source`` to ``curves/<name>.png`` beside the markdown file ``table``
    (once, since a run folder may be deleted later; again when ``fresh``: the cell has just
    run again); the link from ``table``, or None if there is no curve. The docs site serves
    ``benchmarks/results/curves/`` at the same relative path."""
    kept = table.parent / "curves" / f"{name}.png"
    if not kept.exists() or (fresh and source.exists()):
        if not source.exists():
            return None
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, kept)
    return kept.relative_to(table.parent).as_posix()


def pack_cell_curve(rec: Mapping[str, Any]) -> tuple[Path, bool]:
    """A packed cell's own curve, ``cells/<task>-<variant>.png`` in its pack's folder, and
    whether it was drawn just now: the median and min-max over the cell's seeds, as a run's
    ``curve.png`` draws them, from the rows of its setting in the pack's ``curves.csv`` (the
    pack's ``curves.png`` draws the median of every setting, without spread). Drawn on first
    use; the path of a curve that cannot be drawn (the pack's folder is gone) does not exist."""
    import csv

    from rtrrl import run_folder

    run, task, variant, pack = ROOT / rec["run"], rec["task"], rec["variant"], rec["pack"]
    path = run / "cells" / f"{task}-{variant}.png"
    rows_file = run / "curves.csv"
    if path.exists() or not rows_file.exists():
        return path, False
    cells = pack_cells(pack["tasks"], pack["variants"])
    setting = cells.index((task, variant))  # run_pack checks this order as it records
    with rows_file.open(newline="") as f:
        rows = [
            {"steps": int(r["steps"]), "eval_reward": float(r["eval_reward"] or "nan")}
            for r in csv.DictReader(f)
            if int(r["setting"]) == setting
        ]
    others = [f"{t} {v}" for t, v in cells if (t, v) != (task, variant)]
    title = f"{task}: {VARIANT_TITLES.get(variant, variant)}, {rec.get('backend', 'jax')}"
    if others:
        title += "\n(packed with " + ", ".join(others) + ")"
    path.parent.mkdir(exist_ok=True)
    run_folder.plot_curve(rows, path, title)
    return path, True


def keep_curves(
    records: Sequence[dict[str, Any]],
    table: Path,
    stem: str,
    fresh: Sequence[dict[str, Any]] = (),
) -> dict[tuple[str, str], str]:
    """The kept curve of every finished cell (see :func:`keep_curve`), by (task, variant):
    a run's ``curve.png``, a packed cell's own (:func:`pack_cell_curve`); the cells of the
    records ``fresh`` (just run) replace theirs, as does a packed cell's curve drawn just now
    (it replaces the pack's ``curves.png`` kept before packed cells had their own)."""
    curves = {}
    new = {(r["task"], r["variant"]) for r in fresh}
    for (task, variant), rec in latest(records).items():
        if rec["status"] == "ok" and rec.get("run"):
            again = (task, variant) in new
            if rec.get("pack"):
                source, drawn = pack_cell_curve(rec)
                again = again or drawn
            else:
                source = ROOT / rec["run"] / "curve.png"
            kept = keep_curve(source, table, f"{stem}/{task}-{variant}", fresh=again)
            if kept:
                curves[(task, variant)] = kept
    return curves


# --- rendering ------------------------------------------------------------------------------

_LOAD = re.compile(r",? load average [^;]*")  # benchmarks/machine.py's load clause


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def paper_figure(task: str, variant: str, columns: Sequence[str] = ()) -> str | None:
    """The paper's figure for a cell: its own, else, where the table lacks the column of the
    variant's method (:data:`SAME_METHOD`), that method's."""
    method = SAME_METHOD.get(variant)
    if (task, variant) not in PAPER and method is not None and method not in columns:
        return PAPER.get((task, method))
    return PAPER.get((task, variant))


def cell_text(rec: dict[str, Any] | None, paper: str | None) -> str:
    """``median ± std`` (or ``error: …`` / ``pending``), with the paper's figure beside it."""
    if rec is None:
        text = "pending"
    elif rec["status"] != "ok":
        text = "error: " + rec.get("error", "unknown").replace("|", "/")[:80]
    else:
        text = f"{_fmt(rec['median'])} ± {_fmt(rec['std'])}"
        diverged = rec.get("stopped", []).count("diverged")
        if diverged:  # a pack's seed that diverged stopped alone, its best so far kept
            text += f" ({diverged} of {len(rec['stopped'])} seeds diverged)"
    if paper:
        text += f" (paper {paper})"
    return text


def render(
    records: Sequence[dict[str, Any]],
    tasks: Sequence[str] | None = None,
    variants: Sequence[str] = tuple(VARIANTS),
    source: str = "",
    curves: dict[tuple[str, str], str] | None = None,
) -> str:
    """The markdown table of a sweep: budget, command, date and machine above it."""
    cells = latest(records)
    if tasks is None:
        tasks = list(dict.fromkeys(r["task"] for r in records))
    done = [r for r in cells.values() if r["status"] == "ok"]
    dates = sorted(r["date"] for r in cells.values())
    lines = [
        "<!-- written by benchmarks/reproduce.py from its results file; not edited by hand -->",
        "",
    ]
    if not records:
        lines += ["No cell has run yet.", ""]
    budgets: dict[str, set[tuple[Any, ...]]] = {}
    for r in cells.values():
        if "engine" in r and "steps" in r:
            key = (
                r["steps"],
                r["eval_every"],
                r["patience"],
                r["seeds"],
                r["epoch_steps"],
                r.get("eval_episodes", 10),
            )
            budgets.setdefault(r["engine"], set()).add(key)
    for engine, keys in sorted(budgets.items()):
        for steps, every, patience, seeds, epoch, episodes in sorted(keys):
            where = (
                "fused JAX population (gymnax tasks, all seeds in one vmap)"
                if engine == "fused"
                else "host loop (seeds one after another)"
            )
            lines.append(
                f"- Budget, {where}: {steps:,} environment steps per seed, evaluation every "
                f"{every} epochs of {epoch} steps on {episodes} episodes, patience {patience} "
                f"evaluations, {seeds} seeds."
            )
    commands = list(dict.fromkeys(r["command"] for r in records if r.get("command")))
    for c in commands:
        lines.append(f"- Command: `{c}`")
    if dates:
        span = dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"
        lines.append(f"- Date: {span}.")
    # One line per machine: the load average (part of each record's machine line) varies
    # from cell to cell, so it is given as a range of the cells' starting loads instead.
    machines = list(dict.fromkeys(_LOAD.sub("", r["machine"]) for r in records if r.get("machine")))
    loads = sorted(r["load"][0] for r in cells.values() if r.get("load"))
    load = ""
    if loads:
        span = f"{loads[0]:.1f}" if loads[0] == loads[-1] else f"{loads[0]:.1f}–{loads[-1]:.1f}"
        load = f", load average {span} at the cells' starts"
    for m in machines:
        lines.append(f"- Machine: {m}{load} (shared: other work slows every cell).")
    wall = sum(r.get("wall_time", 0.0) for r in cells.values())
    lines.append(
        f"- {len(done)} of {len(tasks) * len(variants)} cells finished, "
        f"{wall / 60:.1f} min of training in all."
    )
    if source:
        lines.append(f"- Results file: `{source}`.")
    lines += [
        "",
        "Cells: median ± std over seeds of each seed's best evaluation reward (the paper's "
        "measure); the paper's figure in parentheses where it gives one (its appendix's Tables 2 "
        "and 3; RFLO column: CT-RNN RTRRL; in a table without the RFLO or LRU "
        "column, the columns of the same method at other settings, such as rtrrl's defaults, "
        "show it). The paper trains up to 50 million "
        "steps per seed with evaluation every 100 epochs and patience 20: a cell below the "
        "paper's figure at a much smaller budget does not show that the figure is wrong, and "
        "only a cell at or above it reproduces it. † ran on the task's earlier definition "
        "(before commit c6226a1 put the row on the paper's environment: episode length, "
        "DeepSea's action map, Swimmer's simulator; docs/tasks.md), so it is not comparable "
        "with a cell without †. ‡ ran its preset as it was before a change (rtrrl/presets.py), "
        "so it is not what the preset gives now.",
        "",
        "| task | engine | " + " | ".join(VARIANT_TITLES.get(v, v) for v in variants) + " |",
        "|---|---|" + "---|" * len(variants),
    ]
    for task in tasks:
        engines = {cells[(task, v)].get("engine") for v in variants if (task, v) in cells}
        engines.discard(None)
        engine = "/".join(sorted(engines)) or "—"
        definition = task_definition(task)
        row = []
        for v in variants:
            rec = cells.get((task, v))
            stale = rec is not None and not current(rec, definition)
            earlier_preset = rec is not None and not current_preset(rec)
            text = cell_text(rec, paper_figure(task, v, variants))
            row.append(text + " †" * stale + " ‡" * earlier_preset)
        lines.append(f"| {task} | {engine} | " + " | ".join(row) + " |")
    detail = [r for r in cells.values() if r["status"] == "ok"]
    if detail:
        lines += [
            "",
            "Per seed (best evaluation reward; steps taken; why it stopped) and wall time:",
            "",
            "| task | variant | best per seed | steps per seed | stopped | wall (s) |",
            "|---|---|---|---|---|---:|",
        ]
        order = {t: i for i, t in enumerate(tasks)}
        vorder = {v: i for i, v in enumerate(variants)}
        for r in sorted(
            detail, key=lambda r: (order.get(r["task"], 1e9), vorder.get(r["variant"], 1e9))
        ):
            bests = ", ".join("—" if b is None else f"{b:.3g}" for b in r["bests"])
            steps = ", ".join(f"{s:,}" for s in r.get("seed_steps", []))
            stopped = ", ".join(r.get("stopped", []))
            wall = f"{r.get('wall_time', 0):.0f}"
            if "pack" in r and len(r["pack"]["variants"]) * len(r["pack"].get("tasks", [1])) > 1:
                pack = r["pack"]
                on = f" on {'+'.join(pack['tasks'])}" if len(pack.get("tasks", ())) > 1 else ""
                packed = f"{'+'.join(pack['variants'])}{on}"
                wall += f" (packed: {packed}, {pack['wall_time']:.0f} in all)"
            lines.append(
                f"| {r['task']} | {r['variant']} | {bests} | {steps} | {stopped} | {wall} |"
            )
    shown = [(t, v) for t in tasks for v in variants if (t, v) in (curves or {})]
    if shown:
        lines += [
            "",
            "Learning curves (evaluation reward against environment steps: median and spread "
            "over the seeds; written by `rtrrl.train` into each cell's run folder):",
            "",
        ]
        for task, variant in shown:
            title = f"{task}, {VARIANT_TITLES.get(variant, variant)}"
            lines.append(f"![{title}]({curves[(task, variant)]})")
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


# --- on Ray ---------------------------------------------------------------------------------


def run_on_ray(
    cells: Sequence[tuple[str, str]],
    args: argparse.Namespace,
    runs: Path,
    command: str,
    path: Path,
    write_table: Callable[[Sequence[dict[str, Any]]], None],
) -> None:
    """Every cell of ``cells`` as a Ray task (:mod:`rtrrl.distributed`), on whatever the
    cluster offers: each one :func:`run_cell` on a worker, under the lock of its run folder;
    its record is appended to ``path`` and the table rendered as it finishes. A cell whose
    workers all died gets an ``error`` record, and the next run of the command tries it
    again."""
    from tqdm.auto import tqdm

    resources = distributed.resources_from_args(args, "cell")
    distributed.connect(args.ray)
    worker_args = argparse.Namespace(**{**vars(args), "progress": False})
    script = str(Path(__file__).resolve())
    units = {
        (task, variant): (script, "run_cell", str(runs / f"{task}-{variant}"), task, variant)
        + (worker_args, runs, command)
        for task, variant in cells
    }
    bar = tqdm(total=len(cells), unit="cell", desc="cells")

    def on_finished(done: list[tuple[Any, Any]], failed: dict[Any, str]) -> None:
        date = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        records = [rec for _, rec in done]
        for (task, variant), error in failed.items():
            base = {"task": task, "variant": variant, "backend": args.backend}
            records.append(
                {**base, "command": command, "date": date, "status": "error", "error": error}
            )
        with path.open("a") as f:
            for rec in records:
                f.write(json.dumps(rec) + "\n")
        write_table(records)
        for rec in records:
            text = cell_text(rec, paper_figure(rec["task"], rec["variant"]))
            bar.write(f"{rec['task']} / {rec['variant']}: {text} ({rec.get('wall_time', 0):.0f} s)")
        bar.update(len(records))

    try:
        distributed.run_units(distributed.call_file, units, resources.options(), on_finished)
    finally:
        bar.close()


# --- command line ---------------------------------------------------------------------------


def _names(value: str) -> list[str]:
    return [v.strip() for v in value.replace(" ", ",").split(",") if v.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tasks", type=_names, help="comma-separated tasks (default: every paper task)")
    p.add_argument(
        "--variants",
        type=_names,
        default=list(VARIANTS),
        help=f"comma-separated columns to run (default: all: {','.join(VARIANTS)})",
    )
    p.add_argument("--backend", default="jax", help="backend (default jax; numpy for tests)")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument(
        "--steps", type=int, default=DEFAULTS["steps"], help="steps per seed, gymnax tasks"
    )
    p.add_argument(
        "--host-steps",
        type=int,
        default=DEFAULTS["host_steps"],
        help="steps per seed, host-loop tasks (gymnasium, popgym:<class>; ~1000 steps/s)",
    )
    p.add_argument(
        "--eval-every", type=int, default=DEFAULTS["eval_every"], help="epochs (paper 100)"
    )
    p.add_argument("--host-eval-every", type=int, default=DEFAULTS["host_eval_every"])
    p.add_argument("--patience", type=int, default=DEFAULTS["patience"], help="paper: 20")
    p.add_argument("--epoch-steps", type=int, default=1000, help="agent steps per epoch")
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--results", help="JSON lines file (default: named after the budget)")
    p.add_argument("--md", default=str(TABLE), help="rendered table")
    p.add_argument("--runs", default=str(RUNS), help="folder of the run folders")
    p.add_argument("--render-only", action="store_true", help="render, train nothing")
    p.add_argument("--progress", action="store_true", help="a progress bar per cell")
    p.add_argument("--verbose", action="store_true", help="print a failed cell's traceback")
    p.add_argument(
        "--pack",
        action="store_true",
        help="train a task's cells whose agents differ only in numbers as one population",
    )
    distributed.add_ray_flags(p, "cell", cpus="1")
    args = p.parse_args(argv)
    try:
        distributed.resources_from_args(args, "cell")
    except ValueError as err:
        p.error(str(err))
    if args.pack and args.ray is not None:
        p.error("--pack trains here (one population per pack); drop --pack or --ray")
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tasks = args.tasks or list(PAPER_TASKS)
    path = results_path(args)
    md = Path(args.md)
    path = path.resolve()  # a relative --results is relative to the working directory
    shown = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    command = "python benchmarks/reproduce.py " + " ".join(
        sys.argv[1:] if argv is None else list(argv)
    )

    def write_table(fresh: Sequence[dict[str, Any]] = ()) -> None:
        """The table of the results file; ``fresh``: records just run (their curves replace
        those kept from an earlier run of the cell)."""
        records = read_results(path)
        # Rows: the tasks asked for and those run earlier into the same file, paper order.
        rows = list(dict.fromkeys([*tasks, *(r["task"] for r in records)]))
        rank = {t: i for i, t in enumerate(PAPER_TASKS)}
        rows.sort(key=lambda t: rank.get(t, len(rank)))
        md.parent.mkdir(parents=True, exist_ok=True)
        curves = keep_curves(records, md, path.stem, fresh)
        # Columns: the variants asked for and those run earlier into the same file.
        ran = {r["variant"] for r in records}
        columns = [v for v in VARIANTS if v in args.variants or v in ran]
        md.write_text(render(records, rows, columns, shown, curves))

    if args.render_only:
        write_table()
        print(md.read_text())
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    runs = Path(args.runs) / path.stem
    engines = {task: engine_of(task, args.backend) for task in tasks}
    finished = finished_cells(read_results(path), engines)
    on_ray: list[tuple[str, str]] = []
    pending: dict[str, list[str]] = {}
    for task in tasks:
        for variant in args.variants:
            if (task, variant) in finished:
                print(f"{task} / {variant}: done earlier, kept")
            elif args.ray is not None:
                on_ray.append((task, variant))
            else:
                pending.setdefault(task, []).append(variant)
    units = [([t], [v]) for t, vs in pending.items() for v in vs]
    if args.pack:
        fused = {t: vs for t, vs in pending.items() if engines[t] == "fused"}
        units = packs(fused, args) + [u for u in units if u[0][0] not in fused]
        units.sort(key=lambda u: tasks.index(u[0][0]))
    for unit_tasks, unit_variants in units:
        print(f"{'+'.join(unit_tasks)} / {'+'.join(unit_variants)}: training ...", flush=True)
        packed = args.pack and engines[unit_tasks[0]] == "fused"
        if len(unit_tasks) == 1 and len(unit_variants) == 1 and not packed:
            new = [run_cell(unit_tasks[0], unit_variants[0], args, runs, command.strip())]
        else:
            new = run_pack(unit_tasks, unit_variants, args, runs, command.strip())
        with path.open("a") as f:
            f.writelines(json.dumps(rec) + "\n" for rec in new)
        write_table(new)
        for rec in new:
            text = cell_text(rec, paper_figure(rec["task"], rec["variant"]))
            print(
                f"{rec['task']} / {rec['variant']}: {text} ({rec['wall_time']:.0f} s)", flush=True
            )
    if on_ray:
        run_on_ray(on_ray, args, runs, command.strip(), path, write_table)
    write_table()
    print(f"table: {md}; results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
