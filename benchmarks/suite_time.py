"""A test suite's wall time in one process against its time spread over pytest-xdist
workers, in one run.

Rows (each a fresh pytest process with empty caches, as a fresh CI checkout has them: the
JAX compilation cache the ``tests`` session keeps, torchinductor's, Hypothesis' database):

- ``one process``: ``pytest ARGS -n 0``;
- ``N workers``: ``pytest ARGS -n N --dist worksteal`` (what ``nox -s tests`` and the
  ``conformance`` sessions run, with N = min(CPUs, 4)).

ARGS: the ``tests`` session's by default (``tests --ignore=tests/spec``), else whatever
follows ``--``, e.g. ``-- --pyargs rtrrl.conformance --backend torch`` (with ``--no-jax-cache``,
as the conformance sessions keep none).

The rows are timed in alternation (order swapped every round), so load that drifts cancels
out of the ratio: the median (and range) over rounds of the same-round ratio one-process
time ÷ workers time. Each row must pass with the same counts of passed and skipped tests.
Run it with the interpreter of an environment that has every extra (``.[all]``) and the
``test`` group, e.g. ``.nox/tests/bin/python``.

Usage: ``python benchmarks/suite_time.py [--workers 2] [--rounds 1] [--no-jax-cache]
[--record] [-- PYTEST_ARGS ...]`` (``--record`` appends to
``benchmarks/results/test_suite_time.md``).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe as machine  # noqa: E402
from machine import publish, two_rows  # noqa: E402

ROOT = Path(__file__).parent.parent
RESULTS = Path(__file__).parent / "results" / "test_suite_time.md"
SUMMARY = re.compile(r"(\d+) passed(?:, (\d+) skipped)?")


def one_row(pytest_args: list[str], workers: int, jax_cache: bool) -> tuple[float, str]:
    """Seconds for one run of the suite, and its counts ("1046 passed, 37 skipped")."""
    parallel = ["-n", "0"] if workers <= 1 else ["-n", str(workers), "--dist", "worksteal"]
    with tempfile.TemporaryDirectory(prefix="rtrrl-suite-time-") as tmp:
        env = {
            **os.environ,
            "TMPDIR": tmp,  # torchinductor's cache and every test's tmp files start empty
            "HYPOTHESIS_PROFILE": os.environ.get("HYPOTHESIS_PROFILE", "dev"),
        }
        if jax_cache:
            env["JAX_COMPILATION_CACHE_DIR"] = str(Path(tmp) / "jax-cache")
            env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        command = [sys.executable, "-m", "pytest", *pytest_args, "-q", "-p", "no:cacheprovider"]
        command += parallel
        t0 = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
    tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-2000:]
    if done.returncode != 0:
        raise SystemExit(f"-n {workers}: the suite failed:\n{tail}")
    found = SUMMARY.search(tail)
    counts = f"{found.group(1)} passed, {found.group(2) or 0} skipped" if found else tail
    return seconds, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 4))
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-jax-cache", dest="jax_cache", action="store_false")
    parser.add_argument("--record", action="store_true")
    parser.add_argument("pytest_args", nargs="*", help="after --: pytest's arguments")
    args = parser.parse_args()
    if args.workers < 2:
        parser.error("--workers: at least 2 (the baseline row is one process)")
    pytest_args = args.pytest_args or ["tests", "--ignore=tests/spec"]

    load = os.getloadavg()[0]
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    times: dict[int, list[float]] = {1: [], args.workers: []}
    counts: set[str] = set()
    for r in range(args.rounds):
        for workers in (1, args.workers) if r % 2 == 0 else (args.workers, 1):
            seconds, count = one_row(pytest_args, workers, args.jax_cache)
            times[workers].append(seconds)
            counts.add(count)
            print(f"-n {workers}: {seconds:.1f} s ({count})", flush=True)
    if len(counts) != 1:
        raise SystemExit(f"the rows ran different tests: {sorted(counts)}")
    lines = [
        f"## {date}",
        "",
        f"`python {shlex.join(sys.argv)}`",
        "",
        f"`pytest {' '.join(pytest_args)}` ({counts.pop()}), each row a fresh process with "
        f"empty caches{', a JAX compilation cache' if args.jax_cache else ''}, Hypothesis "
        f"profile {os.environ.get('HYPOTHESIS_PROFILE', 'dev')}; "
        f"{args.rounds} round(s), the rows in alternation.",
        "",
        *two_rows(
            ("one process", times[1]),
            (f"{args.workers} workers, worksteal", times[args.workers]),
            "wall time",
        ),
        "",
        f"Machine: {machine(load)}.",
    ]
    text = "\n".join(lines) + "\n"
    publish(text, RESULTS, "# Test-suite time", record=args.record)


if __name__ == "__main__":
    main()
