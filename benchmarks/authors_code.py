"""The authors' own implementation on a task, seed by seed, for comparison with ours.

``python benchmarks/authors_code.py --repo PATH --python PY --task StatelessCartPole
--popjym PATH --seeds 5 [--first-seed K] [--jobs 2] [--clip 1.0] [--record]`` runs
``rtrrl.py`` of a checkout of FranzKnut/RTRRL-AAAI25 (nothing of it is part of this project)
once per seed, with the interpreter ``PY`` of a virtual environment that holds the versions of
the authors' ``poetry.lock``. ``--install-command`` prints the ``pip install`` line for that
environment, read from the checkout's ``poetry.lock``.

Their code runs its own training protocol, which since their commit b71fd6e ("better
defaults") is the paper's: iterations of 1,000 steps, evaluation every 100 iterations on 10
environments in parallel scored on each one's first episode, patience 20 evaluations, and the
paper's Table 1 hyper-parameters except the gradient clip (their default is none; ``--clip
1.0`` sets Table 1's value on both optimizers). The budget is 50 M steps per seed, the paper's.
A seed's score is its best evaluation reward, read from the lines the script prints (they
print it to two decimals). Seeds start at 1: their script replaces seed 0 by a random one, so a
run with it could not be repeated.

Tasks (:data:`TASKS`) are given to their script as the ``env_params`` of a ``--config_path``
file, as their README describes: a gymnax id with the observation indices kept (CartPole), a
gymnax id with constructor arguments (``DeepSea-bsuite`` with ``size``), or one of their popgym
ports by its ``popjym`` name (``StatelessCartPoleEasy``, ``RepeatPreviousEasy``: their default
task is the first). ``popjym`` (FranzKnut/popjym, which their ``poetry.lock`` resolves at commit
2cd2ee4) is on GitHub only; ``--popjym PATH`` puts a checkout of it on ``PYTHONPATH``. Their
``envs/environments.py`` imports it even for gymnax tasks, so without ``--popjym`` an empty
stand-in is put there instead, which serves the gymnax tasks only.

``--from-logs`` records the seeds whose logs a cut run left (those that stopped by patience),
without running anything.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe as machine  # noqa: E402
from machine import publish  # noqa: E402
from reproduce import PAPER  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "learning.md"


@dataclasses.dataclass(frozen=True)
class AuthorsTask:
    """How their ``rtrrl.py`` is told to run one of our task names.

    Attributes:
        env_name: their ``env_params.env_name``: a gymnax id or a ``popjym`` name.
        best: the best return an episode can have (for "seeds at the maximum").
        max_ep_length: their ``env_params.max_ep_length``: the time limit their wrapper
            adds (for gymnax tasks also the environment's ``max_steps_in_episode``).
        obs_mask: the observation indices kept, or ``None`` for all.
        init_kwargs: constructor arguments of the environment.
        popjym: whether the task is one of their popgym ports (needs ``--popjym``).
    """

    env_name: str
    best: float
    max_ep_length: int = 1000
    obs_mask: tuple[int, ...] | None = None
    init_kwargs: tuple[tuple[str, int], ...] = ()
    popjym: bool = False

    def config(self) -> str:
        """The ``--config_path`` file's text (YAML) for this task."""
        lines = ["env_params:", f'  env_name: "{self.env_name}"']
        if self.obs_mask is not None:
            lines.append(f"  obs_mask: {list(self.obs_mask)}")
        if self.init_kwargs:
            lines.append("  init_kwargs:")
            lines += [f"    {k}: {v}" for k, v in self.init_kwargs]
        lines += [f"  max_ep_length: {self.max_ep_length}", "  batch_size: 1", "  render: false"]
        return "\n".join(lines) + "\n"

    def describe(self) -> str:
        """One line for the record: what their script was told."""
        parts = [f"`env_name: {self.env_name}`"]
        if self.obs_mask is not None:
            parts.append(f"`obs_mask: {list(self.obs_mask)}`")
        if self.init_kwargs:
            parts.append(f"`init_kwargs: {dict(self.init_kwargs)}`")
        parts.append(f"`max_ep_length: {self.max_ep_length}`")
        return ", ".join(parts)


# The paper's task names, as their code spells them. CartPole-v1 observes x, x_dot, theta,
# theta_dot; the paper's CartPole rows run 500 steps. 1000 is their default max_ep_length
# (their RTRRLParams), longer than any episode of the other tasks.
TASKS = {
    "CartPole-vel": AuthorsTask("CartPole-v1", 500, 500, obs_mask=(1, 3)),
    "CartPole-pos": AuthorsTask("CartPole-v1", 500, 500, obs_mask=(0, 2)),
    "DeepSea-16": AuthorsTask("DeepSea-bsuite", 0.99, init_kwargs=(("size", 16),)),
    "StatelessCartPole": AuthorsTask("StatelessCartPoleEasy", 1.0, popjym=True),
    "RepeatPrevious": AuthorsTask("RepeatPreviousEasy", 1.0, popjym=True),
}

# What their lock file pins and their code imports on a CPU machine (poetry.lock names).
LOCKED = [
    "jax", "jaxlib", "flax", "distrax", "optax", "brax", "gymnax", "chex",
    "tensorflow-probability", "numpy", "simple-parsing", "mujoco", "mujoco-mjx",
    "orbax-checkpoint", "gym", "ml-dtypes", "scipy",
]  # fmt: skip
UNPINNED = ["tqdm", "plotly", "pandas", "dacite", "six"]

# The paper's budget, 50 M steps, in their iterations of 1,000 steps.
BUDGET_ITERATIONS = 50_000

_EVAL = re.compile(r"Eval reward: (-?[0-9.]+)")
_STEPS = re.compile(r"Steps: ([0-9.]+E[+-][0-9]+)")
_ELAPSED = re.compile(r"\[(?:(\d+):)?(\d+):(\d+)<")


def locked_versions(lock: Path) -> dict[str, str]:
    """``name -> version`` of the packages in ``LOCKED``, read from a poetry lock file."""
    text = lock.read_text()
    found = {}
    for name in LOCKED:
        match = re.search(rf'^name = "{re.escape(name)}"\nversion = "([^"]+)"', text, re.M)
        if match is None:
            raise SystemExit(f"{lock} does not pin {name}; is this the authors' checkout?")
        found[name] = match.group(1)
    return found


def write_support_files(folder: Path, task: str, popjym: Path | None) -> tuple[Path, Path]:
    """Write the task's ``--config_path`` file; return it and the folder for ``popjym``.

    With a ``popjym`` checkout that folder is the checkout; without one, an empty stand-in
    written here (their code imports ``popjym`` for every task but uses it for its own).
    """
    spec = TASKS[task]
    config = folder / f"{task}.yml"
    config.write_text(spec.config())
    if popjym is not None:
        return config, popjym
    stand_in = folder / "popjym"
    stand_in.mkdir()
    (stand_in / "__init__.py").write_text("from . import registration\n")
    (stand_in / "registration.py").write_text("REGISTERED_ENVS = ()\n")
    return config, folder


def parse_log(text: str, finished: bool = True) -> dict:
    """Best evaluation, evaluations, last step count and why the run stopped, from a log.

    ``finished=False`` reads the log of a run that was cut: one that did not stop by
    patience is marked ``cut`` rather than ``budget``.
    """
    evals = [float(x) for x in _EVAL.findall(text)]
    steps = _STEPS.findall(text)
    if not evals:
        tail = text.strip().splitlines()[-5:]
        raise RuntimeError("the run printed no evaluation; its last lines:\n" + "\n".join(tail))
    stopped = "patience" if "Early stopping" in text else ("budget" if finished else "cut")
    return {
        "best": max(evals) + 0.0,  # "-0.00" in a log is a best of 0
        "evaluations": len(evals),
        "steps": int(float(steps[-1])) if steps else 0,
        "stopped": stopped,
    }


def elapsed_of(text: str) -> float:
    """The elapsed time of the last progress bar in a log (tqdm's ``[MM:SS<``), in seconds."""
    found = _ELAPSED.findall(text)
    if not found:
        return float("nan")
    hours, minutes, seconds = found[-1]
    return 3600 * int(hours or 0) + 60 * int(minutes) + int(seconds)


def run_seed(
    python: str, repo: Path, config: Path, popjym: Path, seed: int, extra: list[str], log: Path
) -> dict:
    """Run their ``rtrrl.py`` for one seed, its output to ``log``; return the parsed row."""
    env = dict(
        os.environ,
        PYTHONPATH=f"{popjym}{os.pathsep}{repo}",
        JAX_PLATFORMS="cpu",
    )
    command = [python, "rtrrl.py", "--config_path", str(config), "--seed", str(seed)]
    command += ["--episodes", str(BUDGET_ITERATIONS), *extra]
    start = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(command, cwd=repo, env=env, stdout=out, stderr=out)
    wall = time.perf_counter() - start
    text = log.read_text(errors="replace")
    if done.returncode != 0:
        raise RuntimeError(f"seed {seed} exited with {done.returncode}; see {log}")
    return {"seed": seed, "wall": wall, **parse_log(text)}


def rows_from_logs(logs: list[Path], seeds: range) -> list[dict]:
    """The rows of the seeds whose logs exist (``--from-logs``), in seed order."""
    rows = []
    for seed, log in zip(seeds, logs, strict=True):
        if not log.is_file():
            continue
        text = log.read_text(errors="replace")
        if not _EVAL.search(text):
            continue
        rows.append({"seed": seed, "wall": elapsed_of(text), **parse_log(text, finished=False)})
    if not rows:
        raise SystemExit(f"no log with an evaluation among {', '.join(map(str, logs))}")
    return rows


def git_commit(folder: Path) -> str:
    """The short commit of a checkout, or ``unknown``."""
    done = subprocess.run(
        ["git", "-C", str(folder), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


def recorded_command() -> list[str]:
    """This run's command line without ``--ours TEXT``, which only adds to the record."""
    argv, kept = sys.argv, []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--ours":
            skip = True
        elif not arg.startswith("--ours="):
            kept.append(arg)
    return kept


def section(args: argparse.Namespace, rows: list[dict], wall: float, header: str) -> str:
    """The record of one run: command, machine, setting, summary and per-seed table."""
    spec = TASKS[args.task]
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    bests = [r["best"] for r in rows]
    std = statistics.pstdev(bests)
    reached = sum(b >= spec.best for b in bests)
    clip = f"gradient clip {args.clip} on both optimizers" if args.clip is not None else "no clip"
    paper = PAPER.get((args.task, "rflo"), "—")
    if spec.popjym:
        where = f"popjym at commit {git_commit(args.popjym)}"
    else:
        where = f"gymnax {locked_versions(args.repo / 'poetry.lock')['gymnax']}"
    cut = [r["seed"] for r in rows if r["stopped"] == "cut"]
    lines = [
        f"## {args.task}, the authors' code — {date}",
        "",
        f"`python {shlex.join(recorded_command())}`",
        "",
        f"Machine: {header}.",
        "",
        f"Their code at commit {git_commit(args.repo)}, its own protocol and defaults, {clip}; "
        f"budget {BUDGET_ITERATIONS * 1000:,} steps per seed. Task: {spec.describe()} "
        f"({where}). Paper (RFLO): {paper}.",
        "",
        f"Best evaluation reward: median {statistics.median(bests):g} ± {std:.4g} (std) over "
        f"{len(bests)} seeds; {reached} of {len(bests)} at the maximum ({spec.best:g}); "
        f"{sum(r['steps'] for r in rows):,} environment steps in total, {wall:.1f} s wall time.",
    ]
    if args.from_logs:
        lines += [
            "",
            "Read from the logs a run of these seeds left (`--from-logs`); wall times are those "
            "of the logs' progress bars.",
        ]
    if cut:
        lines += ["", f"Cut before it stopped (seeds): {', '.join(map(str, cut))}."]
    if args.ours:
        lines += ["", f"Ours, the same cell: {args.ours}"]
    lines += [
        "",
        "| seed | best eval | evaluations | steps | stopped | wall (s) |",
        "|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['seed']} | {r['best']:g} | {r['evaluations']} | {r['steps']:,} | "
            f"{r['stopped']} | {r['wall']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    """The command line; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True, help="checkout of RTRRL-AAAI25")
    parser.add_argument("--python", help="interpreter with the authors' locked dependencies")
    parser.add_argument("--task", choices=sorted(TASKS), default="CartPole-vel")
    parser.add_argument(
        "--popjym", type=Path, help="checkout of FranzKnut/popjym (the popgym tasks need it)"
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--first-seed",
        type=int,
        default=1,
        help="at least 1: their rtrrl.py draws seed 0 at random",
    )
    parser.add_argument("--jobs", type=int, default=2, help="seeds run at once")
    parser.add_argument(
        "--clip", type=float, help="gradient clip on both optimizers (Table 1: 1.0)"
    )
    parser.add_argument("--logs", type=Path, default=Path("runs/authors-code"))
    parser.add_argument(
        "--from-logs",
        action="store_true",
        help="record the seeds' existing logs (of a cut run) instead of running",
    )
    parser.add_argument("--ours", help="our figure for the same cell, recorded beside theirs")
    parser.add_argument("--install-command", action="store_true")
    parser.add_argument("--record", action="store_true")
    return parser.parse_args()


def check_args(args: argparse.Namespace) -> None:
    """Refuse, in one line each, what cannot run."""
    if not (args.repo / "rtrrl.py").is_file():
        raise SystemExit(f"{args.repo} has no rtrrl.py: pass a checkout of FranzKnut/RTRRL-AAAI25")
    if args.first_seed < 1:
        # Their rtrrl.py sets `args.seed = args.seed or np.random.randint(1e6)`.
        raise SystemExit(
            "--first-seed must be at least 1: the authors' code replaces seed 0 by a random one"
        )
    if args.popjym is not None:
        args.popjym = args.popjym.resolve()
        if not (args.popjym / "popjym" / "registration.py").is_file():
            raise SystemExit(
                f"{args.popjym} has no popjym/registration.py: pass a checkout of FranzKnut/popjym"
            )
    elif TASKS[args.task].popjym:
        raise SystemExit(
            f"{args.task} is one of their popgym ports: pass --popjym PATH, a checkout of "
            "FranzKnut/popjym"
        )
    if args.python is None and not args.from_logs:
        raise SystemExit("--python is required (see --install-command for its environment)")


def main() -> None:
    args = parse_args()
    if args.install_command:
        if not (args.repo / "poetry.lock").is_file():
            raise SystemExit(f"{args.repo} has no poetry.lock: pass the authors' checkout")
        pins = locked_versions(args.repo / "poetry.lock")
        print("pip install " + " ".join([f"{k}=={v}" for k, v in pins.items()] + UNPINNED))
        return
    check_args(args)

    extra = []
    if args.clip is not None:
        extra = ["--optimizer_params_td.gradient_clip", str(args.clip)]
        extra += ["--optimizer_params_rnn.gradient_clip", str(args.clip)]
    header = machine()
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    label = f"{args.task}-clip{args.clip}" if args.clip is not None else f"{args.task}-noclip"
    logs = [(args.logs / f"{label}-seed{seed}.log").resolve() for seed in seeds]
    start = time.perf_counter()
    if args.from_logs:
        rows = rows_from_logs(logs, seeds)
        wall = sum(r["wall"] for r in rows)
    else:
        args.logs.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            config, popjym = write_support_files(Path(tmp), args.task, args.popjym)
            with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
                futures = [
                    pool.submit(
                        run_seed, args.python, args.repo.resolve(), config, popjym, seed,
                        extra, log,
                    )
                    for seed, log in zip(seeds, logs, strict=True)
                ]  # fmt: skip
                rows = [f.result() for f in futures]
        wall = time.perf_counter() - start

    text = section(args, rows, wall, header)
    publish(text, RESULTS, "# Learning results", record=args.record)


if __name__ == "__main__":
    main()
