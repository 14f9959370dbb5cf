"""The authors' own implementation on a task, seed by seed, for comparison with ours.

``python benchmarks/authors_code.py --repo PATH --python PY --task CartPole-vel --seeds 5
[--first-seed K] [--jobs 2] [--clip 1.0] [--record]`` runs ``rtrrl.py`` of a checkout of
FranzKnut/RTRRL-AAAI25 (nothing of it is part of this project) once per seed, with the
interpreter ``PY`` of a virtual environment that holds the versions of the authors'
``poetry.lock``. ``--install-command`` prints the ``pip install`` line for that environment,
read from the checkout's ``poetry.lock``.

Their code runs its own training protocol, which since their commit b71fd6e ("better
defaults") is the paper's: iterations of 1,000 steps, evaluation every 100 iterations on 10
environments in parallel scored on each one's first episode, patience 20 evaluations, and the
paper's Table 1 hyper-parameters except the gradient clip (their default is none; ``--clip
1.0`` sets Table 1's value on both optimizers). The budget is 50 M steps per seed, the paper's.
A seed's score is its best evaluation reward, read from the lines the script prints. Seeds
start at 1: their script replaces seed 0 by a random one, so a run with it could not be repeated.

Their ``envs/environments.py`` imports ``popjym``, which is only on GitHub and which the
CartPole tasks never use; this script puts an empty stand-in for it on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import append_section  # noqa: E402
from machine import describe as machine  # noqa: E402
from reproduce import PAPER  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "learning.md"

# The paper's task names, as the authors' code spells them: a gymnax id and the observation
# indices kept (CartPole-v1 observes x, x_dot, theta, theta_dot).
TASKS = {
    "CartPole-vel": ("CartPole-v1", [1, 3], 500),
    "CartPole-pos": ("CartPole-v1", [0, 2], 500),
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


def write_support_files(folder: Path, task: str) -> Path:
    """Write the task's ``--config_path`` file and the ``popjym`` stand-in; return the file."""
    env_name, obs_mask, max_length = TASKS[task]
    stand_in = folder / "popjym"
    stand_in.mkdir()
    (stand_in / "__init__.py").write_text("from . import registration\n")
    (stand_in / "registration.py").write_text("REGISTERED_ENVS = ()\n")
    config = folder / f"{task}.yml"
    config.write_text(
        f'env_params:\n  env_name: "{env_name}"\n  obs_mask: {obs_mask}\n'
        f"  max_ep_length: {max_length}\n  batch_size: 1\n"
    )
    return config


def parse_log(text: str) -> dict:
    """Best evaluation, evaluations, last step count and why the run stopped, from a log."""
    evals = [float(x) for x in _EVAL.findall(text)]
    steps = _STEPS.findall(text)
    if not evals:
        tail = text.strip().splitlines()[-5:]
        raise RuntimeError("the run printed no evaluation; its last lines:\n" + "\n".join(tail))
    return {
        "best": max(evals),
        "evaluations": len(evals),
        "steps": int(float(steps[-1])) if steps else 0,
        "stopped": "patience" if "Early stopping" in text else "budget",
    }


def run_seed(python: str, repo: Path, config: Path, seed: int, extra: list[str], log: Path) -> dict:
    env = dict(
        os.environ,
        PYTHONPATH=f"{config.parent}{os.pathsep}{repo}",
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True, help="checkout of RTRRL-AAAI25")
    parser.add_argument("--python", help="interpreter with the authors' locked dependencies")
    parser.add_argument("--task", choices=sorted(TASKS), default="CartPole-vel")
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
    parser.add_argument("--install-command", action="store_true")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()

    if not (args.repo / "rtrrl.py").is_file():
        raise SystemExit(f"{args.repo} has no rtrrl.py: pass a checkout of FranzKnut/RTRRL-AAAI25")
    if args.install_command:
        pins = locked_versions(args.repo / "poetry.lock")
        print("pip install " + " ".join([f"{k}=={v}" for k, v in pins.items()] + UNPINNED))
        return
    if args.first_seed < 1:
        # Their rtrrl.py sets `args.seed = args.seed or np.random.randint(1e6)`.
        raise SystemExit(
            "--first-seed must be at least 1: the authors' code replaces seed 0 by a random one"
        )
    if args.python is None:
        raise SystemExit("--python is required (see --install-command for its environment)")

    extra = []
    if args.clip is not None:
        extra = ["--optimizer_params_td.gradient_clip", str(args.clip)]
        extra += ["--optimizer_params_rnn.gradient_clip", str(args.clip)]
    commit = subprocess.run(
        ["git", "-C", str(args.repo), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    header = machine()
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    label = f"{args.task}-clip{args.clip}" if args.clip is not None else f"{args.task}-noclip"
    args.logs.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        config = write_support_files(Path(tmp), args.task)
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            futures = [
                pool.submit(
                    run_seed, args.python, args.repo.resolve(), config, seed, extra,
                    (args.logs / f"{label}-seed{seed}.log").resolve(),
                )
                for seed in seeds
            ]  # fmt: skip
            rows = [f.result() for f in futures]
    wall = time.perf_counter() - start

    bests = [r["best"] for r in rows]
    std = statistics.pstdev(bests)
    reached = sum(b >= TASKS[args.task][2] for b in bests)
    clip = f"gradient clip {args.clip} on both optimizers" if args.clip is not None else "no clip"
    lines = [
        f"## {args.task}, the authors' code — {date}",
        "",
        f"`python {' '.join(sys.argv)}`",
        "",
        f"Machine: {header}.",
        "",
        f"Their code at commit {commit or 'unknown'}, its own protocol and defaults, {clip}; "
        f"budget {BUDGET_ITERATIONS * 1000:,} steps per seed. "
        f"Paper: {PAPER.get((args.task, 'rflo'), '—')}.",
        "",
        f"Best evaluation reward: median {statistics.median(bests):g} ± {std:.4g} (std) over "
        f"{len(bests)} seeds; {reached} of {len(bests)} at the maximum; "
        f"{sum(r['steps'] for r in rows):,} environment steps in total, {wall:.1f} s wall time.",
        "",
        "| seed | best eval | evaluations | steps | stopped | wall (s) |",
        "|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['seed']} | {r['best']:g} | {r['evaluations']} | {r['steps']:,} | "
            f"{r['stopped']} | {r['wall']:.0f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.record:
        append_section(RESULTS, text, "# Learning results")


if __name__ == "__main__":
    main()
