"""Run one benchmark script on an earlier commit and on the working tree, alternating, in one run.

    python benchmarks/against_commit.py BASE [--head REV] [--rounds 2] [--metric COLUMN] \\
        -- SCRIPT [ARGS...]

e.g. ``python benchmarks/against_commit.py HEAD~3 -- step_speed.py --quick --no-write``.

``BASE`` is checked out into a temporary git worktree, and the packages there are made
importable under their installed names (``rtrrl``, ``rtrrl.backends``, ``rtrrl.envs``,
``rtrrl.conformance``, ``rtrrl_spec``) through a folder of links put first on ``PYTHONPATH``;
the working tree runs with this interpreter's own install (with ``--head REV``, that commit
runs instead, from a worktree of its own, script included). Each round runs the script once on
each side (the order alternates), so slow drifts of a shared machine's load hit both sides.
From every markdown table the script prints, rows are keyed by their text columns; for the
``--metric`` column (higher is better, e.g. ``agent-steps/s``) the table here gives, per row,
the median over rounds of working tree ÷ base. The section is appended to
``benchmarks/results/against_commit.md`` with the command, both commits, date and machine.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from machine import describe as machine  # noqa: E402
from machine import publish  # noqa: E402

RESULTS = HERE / "results" / "against_commit.md"
# Source folder -> where its package is imported from, as pyproject.toml's package-dir maps it.
LINKS = {"backends": "rtrrl/backends", "envs": "rtrrl/envs", "conformance": "rtrrl/conformance"}

Table = dict[tuple[str, ...], float]


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True)
    return done.stdout


def import_tree(checkout: Path, into: Path) -> Path:
    """A folder that, first on PYTHONPATH, makes ``checkout``'s packages the imported ones."""
    (into / "rtrrl").mkdir(parents=True)
    for item in (checkout / "rtrrl").iterdir():
        (into / "rtrrl" / item.name).symlink_to(item)
    for source, target in LINKS.items():
        (into / target).symlink_to(checkout / source)
    (into / "rtrrl_spec").symlink_to(checkout / "rtrrl_spec")
    return into


def _numbers(cell: str) -> float | None:
    match = re.match(r"^\s*([-+]?[\d,]*\.?\d+)", cell)
    return float(match.group(1).replace(",", "")) if match else None


def parse_tables(text: str, metric: str, key_columns: int | None = None) -> Table:
    """Every markdown table row of ``text`` that has a ``metric`` column, keyed by its first
    ``key_columns`` cells (default: every cell before the metric's, e.g. backend, variant, N
    and B before agent-steps/s; a metric further right needs the count, as other figures
    sit between)."""
    rows: Table = {}
    header: list[str] | None = None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
            continue
        if set("".join(cells)) <= set("-: ") or metric not in header:
            continue
        at = header.index(metric)
        if at >= len(cells) or _numbers(cells[at]) is None:
            continue
        key = tuple(cells[: at if key_columns is None else key_columns])
        rows[key] = _numbers(cells[at])  # type: ignore[assignment]
    return rows


def _run(script: list[str], pythonpath: str | None) -> str:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, *script], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        tail = f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        raise SystemExit(f"{shlex.join(script)} failed:\n{tail}")
    return out.stdout


def compare(
    base: str,
    script: list[str],
    rounds: int,
    metric: str,
    head: str | None = None,
    key_columns: int | None = None,
) -> str:
    """Run ``script`` ``rounds`` times on each side; the markdown section of the comparison.

    ``head``: a commit to measure instead of the working tree (then the script and the
    modules next to it come from that commit too, so edits in progress change nothing)."""
    base_sha = _git("rev-parse", "--short", base).strip()
    head_sha = _git("rev-parse", "--short", head or "HEAD").strip()
    changed = _git("status", "--porcelain", "--untracked-files=no") if head is None else ""
    dirty = " + uncommitted changes" if changed else ""
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="rtrrl-base-") as tmp:
        trees = {"base": (Path(tmp) / "base", base_sha)}
        if head is not None:
            trees["head"] = (Path(tmp) / "head", head_sha)
        for checkout, sha in trees.values():
            _git("worktree", "add", "--detach", str(checkout), sha)
        try:
            paths = {
                side: str(import_tree(checkout, Path(tmp) / f"imports-{side}"))
                for side, (checkout, _) in trees.items()
            }
            if head is not None:
                script = [str(trees["head"][0] / Path(script[0]).relative_to(ROOT)), *script[1:]]
            sides: dict[str, list[Table]] = {"base": [], "head": []}
            for r in range(rounds):
                order = ["base", "head"] if r % 2 == 0 else ["head", "base"]
                for side in order:
                    text = _run(script, paths.get(side))
                    sides[side].append(parse_tables(text, metric, key_columns))
        finally:
            for checkout, _ in trees.values():
                _git("worktree", "remove", "--force", str(checkout))
    keys = [k for k in sides["head"][0] if all(k in t for t in sides["base"] + sides["head"])]
    if not keys:
        raise SystemExit(
            f"no table row has a {metric!r} column keyed alike on both sides and every round; "
            "check the column's name, and give --key-columns when the metric is not the "
            "first figure of its row"
        )
    lines = [
        f"## {time.strftime('%a %b %d %H:%M:%S %Z %Y')}",
        "",
        f"`python benchmarks/against_commit.py {base} --rounds {rounds} --metric '{metric}'"
        f"{f' --key-columns {key_columns}' if key_columns is not None else ''}"
        f"{f' --head {head}' if head else ''} -- "
        f"{shlex.join([Path(script[0]).name, *script[1:]])}`",
        "",
        f"Base {base_sha}, {'commit' if head else 'working tree'} {head_sha}{dirty}. "
        f"Machine: {machine(load)}. "
        f"{rounds} round(s), each running the script once per side, alternating which goes "
        f"first. `{metric}`: median over rounds; ratio = working tree ÷ base "
        "(above 1: faster now).",
        "",
        "| row | base | now | now ÷ base |",
        "|---|---:|---:|---:|",
    ]
    for key in keys:
        b = statistics.median(t[key] for t in sides["base"])
        h = statistics.median(t[key] for t in sides["head"])
        lines.append(f"| {' / '.join(key)} | {b:,.1f} | {h:,.1f} | {h / b:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="the commit to measure against (e.g. HEAD~3, a sha)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--metric", default="agent-steps/s")
    parser.add_argument(
        "--key-columns",
        type=int,
        help="leading cells that name a row (default: all before --metric)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--head", help="a commit to measure instead of the working tree")
    parser.add_argument("script", nargs="*", help="-- SCRIPT [ARGS...]")
    argv = sys.argv[1:] if argv is None else argv
    # Split at the first "--" by hand: argparse's REMAINDER after a positional would swallow
    # this script's own options (``BASE --rounds 3 -- ...``).
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    script = argv[cut + 1 :] + args.script
    if not script:
        parser.error("give the benchmark after --, e.g. -- step_speed.py --quick --no-write")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    script[0] = str(HERE / script[0] if not Path(script[0]).exists() else Path(script[0]).resolve())
    section = compare(args.base, script, args.rounds, args.metric, args.head, args.key_columns)
    publish(section, RESULTS, "# Benchmarks against an earlier commit", record=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
