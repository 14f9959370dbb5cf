"""Speed of one RTRRL agent step, every backend against the NumPy reference in the same run.

    python benchmarks/step_speed.py                     # every backend found, N = 32
    python benchmarks/step_speed.py --backends jax --quick
    python benchmarks/step_speed.py --n-hidden 8,16,32,64,128 --batches 1  # RFLO vs RTRL cost

The driver always measures the NumPy reference: ``rtrrl_spec.step_unchecked`` on inputs that
were validated once (the fair baseline, no boundary checks: row ``numpy / unchecked``) and the
checked ``rtrrl_spec.step`` (row ``numpy / checked``). The jax and torch rows are their
unchecked steps (``check=False``); rows ``call-checked`` (jax), ``eager-checked`` and
``compiled-checked`` (torch) time the same steps with the default ``check=True``. Backends
are discovered as modules ``benchmarks/speed_<name>.py`` next to this file, each exposing one
or both of::

    def steppers(config, batch_size: int, dtype: str) -> list[tuple[dict, Callable[[], None]]]
    def measure(config, batch_size: int, steps: int, dtype: str) -> list[dict]

``steppers`` (preferred) returns, per variant, a row template (``backend``, ``variant``,
``jacobian``, ``N``, ``B``, optional ``note`` and extra keys) and a zero-argument callable that
runs one agent step (carrying the agent itself; compiled and warmed up already; returning only
once the step is finished, e.g. after a device sync). The driver times those callables itself:
at the batch sizes of ``--interleave-b`` (default B = 1 and 64) **interleaved with the NumPy
baseline**, in rounds: every round runs one chunk of calls of each stepper (the NumPy rows and
every stepper backend asked for, in an order rotated from round to round), so the chunks of a
round lie within milliseconds of each other. A row's latency is the median over rounds of its
per-call wall time, its CPU time the median of per-call ``time.thread_time`` (the calling
thread only), and its paired ratio the median over rounds of (its chunk ÷ the NumPy
``unchecked`` chunk of the same round), so load that drifts over the run cancels. Other batch
sizes get the best of timed chunks (:func:`best_chunk`), one row after another.

``measure`` (for backends that cannot hand out in-process callables, e.g. one subprocess per
Keras backend) returns finished rows with ``agent_steps_per_s`` and ``step_latency_us``; those
are timed separately from the baseline. The table gives each row's ratio to the reference's
``B = 1`` figure and to its figure at the same ``B``, plus the paired ratios where
interleaved; it is printed and appended to ``benchmarks/results/step_speed.md`` with the
command, the date and the machine. With several sizes (``--n-hidden 8,16,32,64,128``) a second
table follows: per backend, variant and ``B``, the RTRL step's latency over the RFLO step's as
``N`` grows (RFLO's work grows as N², RTRL's as N⁴).
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import math
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import rtrrl_spec

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import describe as machine  # noqa: E402
from machine import publish  # noqa: E402

RESULTS = HERE / "results" / "step_speed.md"
BATCHES = (1, 64, 1024)
QUICK_BATCHES = (1, 64)
Row = dict[str, Any]
#: Environment variables the speed modules read: shown in the recorded command.
BENCH_ENV = ("RTRRL_TORCH_BENCH_THREADS", "RTRRL_TORCH_DEVICE", "KERAS_BACKEND")


def bench_config(jacobian: str, n_hidden: int) -> rtrrl_spec.Config:
    """A CartPole-sized agent: 4 observations, 2 actions, meta-RL input, paper defaults."""
    return rtrrl_spec.Config(obs_dim=4, n_actions=2, n_hidden=n_hidden, jacobian=jacobian)


Stepper = tuple[Row, Callable[[], None]]  # row template, one agent step per call


def numpy_steppers(config: rtrrl_spec.Config, B: int, dtype: str) -> list[Stepper]:
    """The reference: ``step_unchecked`` (the baseline, first) and the checked ``step``."""
    rng = np.random.default_rng(0)
    agent = rtrrl_spec.init(config, B, 0, dtype)
    raw = (
        rng.uniform(-1.0, 1.0, (B, config.obs_dim)),
        rng.uniform(-1.0, 1.0, B),
        np.zeros(B, bool),
        rtrrl_spec.draw_noise(config, B, rng, dtype),
    )
    obs, reward, done, noise = rtrrl_spec.check_inputs(config, B, dtype, *raw)
    out = []
    for variant, fn in (("unchecked", rtrrl_spec.step_unchecked), ("checked", rtrrl_spec.step)):
        state = [fn(config, agent, obs, reward, done, noise)[0]]  # warm-up

        def call(fn: Callable[..., Any] = fn, state: list[Any] = state) -> None:
            state[0] = fn(config, state[0], obs, reward, done, noise)[0]

        row = {"backend": "numpy", "variant": variant, "jacobian": config.jacobian}
        out.append(({**row, "N": config.n_hidden, "B": B}, call))
    return out


def chunk_calls(steps: int, batch_size: int) -> int:
    """Calls per timed chunk outside the interleaved rounds (RTRL at B=1024: ~1 s a step)."""
    return max(5, steps // 10) if batch_size <= 64 else 2


def best_chunk(
    call: Callable[[], None],
    chunk: int,
    min_s: float = 1.0,
    max_s: float = 10.0,
    sync: Callable[[], None] | None = None,
) -> float:
    """Best seconds per call over chunks of ``chunk`` calls, run for ``min_s`` to ``max_s``.

    The best, as ``timeit`` does: load from other processes only ever adds time. ``sync``
    (if given) runs at the end of each chunk, inside its time (asynchronous dispatch). Shared
    by the driver and the ``speed_*`` modules that time their own rows.
    """
    best, begin = math.inf, time.perf_counter()
    while best == math.inf or time.perf_counter() - begin < min_s:
        t0 = time.perf_counter()
        for _ in range(chunk):
            call()
        if sync is not None:
            sync()
        best = min(best, (time.perf_counter() - t0) / chunk)
        if time.perf_counter() - begin > max_s:
            break
    return best


def timed_row(template: Row, seconds_per_call: float, **extra: Any) -> Row:
    B = template["B"]
    return {
        **template,
        "agent_steps_per_s": B / seconds_per_call,
        "step_latency_us": seconds_per_call * 1e6,
        **extra,
    }


def interleaved(
    steppers: list[Stepper],
    chunk: int,
    rounds: int,
    max_s: float = 20.0,
    chunk_s: float = 0.05,
) -> list[Row]:
    """Rows timed in interleaved rounds; ``steppers[0]`` is the baseline of the paired ratios.

    Each round runs ``chunk`` calls of every stepper (fewer when one call takes long, so that
    a chunk stays near ``chunk_s``), starting at stepper ``round % len``: no stepper always
    runs right after the same other one. Per stepper and round: wall seconds per call
    (``perf_counter``) and CPU seconds per call of this thread (``thread_time``). Runs
    ``rounds`` rounds, or as many as fit in ``max_s`` (at least 5).
    """
    calls = [call for _, call in steppers]
    one = []  # the fastest of a few warm-up calls (compilation happened when it was made)
    for call in calls:
        fastest = math.inf
        for _ in range(5):
            t0 = time.perf_counter()
            call()
            fastest = min(fastest, time.perf_counter() - t0)
        one.append(fastest)
    n = max(1, min(chunk, int(chunk_s / max(one))))
    k = len(calls)
    wall: list[list[float]] = [[] for _ in calls]
    cpu: list[list[float]] = [[] for _ in calls]
    begin = time.perf_counter()
    for r in range(rounds):
        for i in [(r + j) % k for j in range(k)]:
            call = calls[i]
            c0, t0 = time.thread_time(), time.perf_counter()
            for _ in range(n):
                call()
            t1, c1 = time.perf_counter(), time.thread_time()
            wall[i].append((t1 - t0) / n)
            cpu[i].append((c1 - c0) / n)
        if r + 1 >= 5 and time.perf_counter() - begin > max_s:
            break
    done = len(wall[0])
    rows = []
    for (template, _), w, c in zip(steppers, wall, cpu, strict=True):
        ratio_w = [x / y for x, y in zip(w, wall[0], strict=True)]
        ratio_c = [x / y for x, y in zip(c, cpu[0], strict=True)]
        rows.append(
            timed_row(
                template,
                float(np.median(w)),
                cpu_us=float(np.median(c)) * 1e6,
                paired_wall=_quartiles(ratio_w),
                paired_cpu=_quartiles(ratio_c),
                timing=f"interleaved {done}×{n}",
            )
        )
    return rows


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = np.percentile(values, [25, 50, 75])
    return float(q2), float(q1), float(q3)


def discover() -> dict[str, Path]:
    """``{name: path}`` of every ``speed_<name>.py`` next to this file."""
    return {p.stem.removeprefix("speed_"): p for p in sorted(HERE.glob("speed_*.py"))}


def load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"rtrrl_bench_speed_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fmt(value: float, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _paired(value: tuple[float, float, float] | None) -> str:
    if value is None:
        return "-"
    mid, lo, hi = value
    return f"{mid:.2f} ({lo:.2f}–{hi:.2f})"


def table(rows: list[Row]) -> str:
    """Markdown table with ratios to the reference's ``B = 1`` and same-``B`` figures.

    The ``×`` columns are throughput ratios (higher is faster) of the rows' own figures; the
    ``paired ÷`` columns are latency ratios (lower is faster) from interleaved rounds: median
    over rounds of (the row's per-call time ÷ ``numpy / unchecked``'s in the same round), with
    the quartiles over rounds in parentheses.
    """
    base = {
        (r["jacobian"], r["N"], r["B"]): r["agent_steps_per_s"]
        for r in rows
        if r["backend"] == "numpy" and r["variant"] == "unchecked"
    }
    lines = [
        "| backend | variant | jacobian | N | B | agent-steps/s | step latency (µs) "
        "| CPU time/step (µs, thread_time) | × numpy B=1 | × numpy same B "
        "| paired latency ÷ numpy (wall) | paired ÷ numpy (CPU time) | timing | note |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        speed = r["agent_steps_per_s"]
        b1 = base.get((r["jacobian"], r["N"], 1))
        same = base.get((r["jacobian"], r["N"], r["B"]))
        lines.append(
            f"| {r['backend']} | {r['variant']} | {r['jacobian']} | {r['N']} | {r['B']} "
            f"| {_fmt(speed)} | {_fmt(r['step_latency_us'], 1)} "
            f"| {_fmt(r.get('cpu_us'), 1)} "
            f"| {_fmt(speed / b1, 2) if b1 else '-'} "
            f"| {_fmt(speed / same, 2) if same else '-'} "
            f"| {_paired(r.get('paired_wall'))} | {_paired(r.get('paired_cpu'))} "
            f"| {r.get('timing', 'separate')} | {r.get('note', '')} |"
        )
    return "\n".join(lines)


def jacobian_cost_table(rows: list[Row]) -> str:
    """RTRL against RFLO as N grows: per (backend, variant, B), both latencies and their ratio.

    Empty unless the rows hold both Jacobians at two or more sizes.
    """
    latency = {
        (r["backend"], r["variant"], r["B"], r["N"], r["jacobian"]): r["step_latency_us"]
        for r in rows
    }
    sizes = sorted({r["N"] for r in rows})
    groups = list(dict.fromkeys((r["backend"], r["variant"], r["B"]) for r in rows))
    lines = []
    for backend, variant, B in groups:
        for N in sizes:
            rflo = latency.get((backend, variant, B, N, "rflo"))
            rtrl = latency.get((backend, variant, B, N, "rtrl"))
            if rflo is None or rtrl is None:
                continue
            lines.append(
                f"| {backend} | {variant} | {B} | {N} | {_fmt(rflo, 1)} | {_fmt(rtrl, 1)} "
                f"| {_fmt(rtrl / rflo, 1)} |"
            )
    if len(sizes) < 2 or not lines:
        return ""
    head = [
        "| backend | variant | B | N | RFLO latency (µs) | RTRL latency (µs) | RTRL ÷ RFLO |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    return "\n".join(head + lines)


def _int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=None, help="comma-separated; default: all found")
    parser.add_argument("--quick", action="store_true", help="B in (1, 64), fewer steps")
    parser.add_argument(
        "--n-hidden", type=_int_list, default=[32], help="comma-separated sizes (default 32)"
    )
    parser.add_argument(
        "--batches", type=_int_list, default=None, help="comma-separated B (default 1,64,1024)"
    )
    parser.add_argument(
        "--population",
        type=_int_list,
        default=None,
        help="JAX population sizes at B = 1 (default 256; bench_gpu adds 4096)",
    )
    parser.add_argument("--jacobians", default="rflo,rtrl")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--steps", type=int, default=None, help="steps per timed call")
    parser.add_argument(
        "--gpu",
        action="store_true",
        help="run torch on CUDA (RTRRL_TORCH_DEVICE=cuda unless set); JAX uses its default device",
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--interleave-b",
        default="1,64",
        help="comma-separated batch sizes timed interleaved with the NumPy baseline",
    )
    parser.add_argument(
        "--rounds", type=int, default=100, help="interleaved rounds (fewer past ~20 s)"
    )
    args = parser.parse_args(argv)

    if args.gpu:
        os.environ.setdefault("RTRRL_TORCH_DEVICE", "cuda")
    found = discover()
    wanted = args.backends.split(",") if args.backends else list(found)
    unknown = [b for b in wanted if b not in found]
    if unknown:
        parser.error(f"no benchmarks/speed_<name>.py for {unknown}; found {sorted(found)}")
    batches = args.batches or (QUICK_BATCHES if args.quick else BATCHES)
    steps = args.steps or (50 if args.quick else 200)
    paired = {int(b) for b in args.interleave_b.split(",") if b}
    load_start = os.getloadavg()[0]

    modules: dict[str, Any] = {}
    for name in wanted:
        try:
            modules[name] = load(name, found[name])
        except ImportError as err:
            print(f"skipping {name}: {err}", file=sys.stderr)
    if args.population is not None and "jax" in modules:  # "" (empty): no population rows
        modules["jax"].POPULATIONS = tuple(args.population)
    stepping = [n for n, m in modules.items() if hasattr(m, "steppers")]
    by: dict[str, list[Row]] = {"numpy": [], **{n: [] for n in modules}}
    sizes_and_jacobians = list(itertools.product(args.n_hidden, args.jacobians.split(",")))
    for n_hidden, jacobian in sizes_and_jacobians:
        config = bench_config(jacobian, n_hidden)
        for B in batches:
            chunk = chunk_calls(steps, B)
            if B in paired:
                # The NumPy rows and every stepper backend, interleaved in rounds.
                owners, steppers = [], []
                for name in ["numpy", *stepping]:
                    made = (
                        numpy_steppers(config, B, args.dtype)
                        if name == "numpy"
                        else modules[name].steppers(config, B, args.dtype)
                    )
                    owners += [name] * len(made)
                    steppers += made
                timed = interleaved(steppers, chunk, args.rounds)
                for name, row in zip(owners, timed, strict=True):
                    by[name].append(row)
                del steppers
            else:
                for name in ["numpy", *stepping]:
                    made = (
                        numpy_steppers(config, B, args.dtype)
                        if name == "numpy"
                        else modules[name].steppers(config, B, args.dtype)
                    )
                    for template, call in made:
                        by[name].append(timed_row(template, best_chunk(call, chunk)))
                    del made
            print(
                f"numpy+{','.join(stepping) or '-'} {jacobian} N={n_hidden} B={B} done",
                file=sys.stderr,
            )
    for name, module in modules.items():
        if name in stepping:
            continue
        for n_hidden, jacobian in sizes_and_jacobians:
            config = bench_config(jacobian, n_hidden)
            for B in batches:
                by[name] += module.measure(config, B, steps, args.dtype)
                print(f"{name} {jacobian} N={n_hidden} B={B} done", file=sys.stderr)
    rows = [row for group in by.values() for row in group]
    interleave_note = (
        f"Timing: at B in {sorted(paired)} the rows of numpy and of "
        f"{', '.join(stepping) or 'no backend'} were timed interleaved (column `timing`): "
        "rounds of one chunk of calls per row (`interleaved R×n`: R rounds, n calls a chunk), "
        "the order rotated each round; latency and CPU "
        "time are medians over rounds of the per-call figures (CPU: `time.thread_time` of the "
        "calling thread), the paired ratios medians over rounds of the same-round ratio to "
        "`numpy / unchecked` (quartiles in parentheses). Rows marked `separate` are the best "
        "of timed chunks, measured one row after another (not interleaved, because at large B "
        "one round would take seconds: load may differ between a row and its baseline)."
    )

    env = [f"{k}={shlex.quote(v)}" for k, v in sorted(os.environ.items()) if k in BENCH_ENV]
    words = [shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]]
    command = " ".join([*env, "python", *words])
    date = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    sizes = ", ".join(str(n) for n in args.n_hidden)
    report = (
        f"## {date}\n\n`{command}`\n\nMachine: {machine(load_start)}. dtype {args.dtype}, "
        f"N = {sizes}, obs 4, 2 actions.\n\n{table(rows)}\n\n{interleave_note}\n"
    )
    cost = jacobian_cost_table(rows)
    if cost:
        report += (
            "\nRTRL against RFLO as N grows (latencies from the table above; RFLO's work per "
            f"step grows as N², RTRL's as N⁴):\n\n{cost}\n"
        )
    publish(report, RESULTS, "# Step speed", record=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
