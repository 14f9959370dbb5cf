"""Training speed: agent-steps per second of the fused JAX path against the environment alone.

Rows (one run, same machine, same moment):

- ``env alone``: the gymnax environment in the same ``lax.scan`` structure as an epoch of the
  fused path, with random actions (the ceiling the fused path can approach); it and
  ``fused B=1`` are timed in alternation (``--rounds``), and their ratio is the median of the
  same-round ratios;
- ``fused B=1``: :func:`rtrrl.fused.make_train`'s epoch (RFLO, N = 32), one agent;
- ``env alone, default options`` / ``fused B=1, default options``: the same two rows jitted
  with ``jax.jit``'s default XLA options instead of :func:`rtrrl.fused.compiler_options`
  (shown when those differ, i.e. on the CPU);
- ``fused population-64``: :func:`rtrrl.fused.make_population`, 64 seeds in one ``vmap``
  (steps counted over all seeds);
- host rows: the host loop (``rtrrl train --host``) per backend, each in a fresh process,
  through the public train function: the training epoch rate, the time of the first and of
  later evaluations, and the end-to-end rate of the whole call. With ``--baseline DIR`` (a
  checkout of an earlier commit, e.g. a git worktree) every row is timed there too, the two
  sides in alternation; ``--threads BACKEND=N`` adds rows with ``--threads N``.

Usage: ``python benchmarks/train_speed.py [--task CartPole-v1] [--backends numpy,jax,torch]
[--no-fused] [--baseline DIR] [--threads torch=2] [--record]`` (``--record`` appends to
``benchmarks/results/train_speed.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe as machine  # noqa: E402
from machine import publish  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "train_speed.md"


def best_rate(fn, steps_per_call: int, repeats: int) -> float:
    """Steps per second of the fastest of ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return steps_per_call / min(times)


def paired_rates(
    env_run: Callable[[], None], fused_run: Callable[[], None], steps: int, rounds: int
) -> tuple[float, float, float, float, float]:
    """Both rows timed in alternation, one call each per round (order swapped every round).

    Returns the env and fused agent-steps/s (from the median call time of each) and the
    median, lower and upper quartile over rounds of the same-round ratio fused ÷ env rate,
    so load that drifts during the run cancels out of the ratio.
    """
    env_run()
    fused_run()
    env_t, fused_t, ratios = [], [], []
    for i in range(rounds):
        times = {}
        for name, fn in (("env", env_run), ("fused", fused_run))[:: 1 if i % 2 else -1]:
            t0 = time.perf_counter()
            fn()
            times[name] = time.perf_counter() - t0
        env_t.append(times["env"])
        fused_t.append(times["fused"])
        ratios.append(times["env"] / times["fused"])
    lo, mid, hi = np.percentile(ratios, [25, 50, 75])
    return (
        steps / float(np.median(env_t)),
        steps / float(np.median(fused_t)),
        float(mid),
        float(lo),
        float(hi),
    )


def fused_rows(
    task: str, epoch_steps: int, repeats: int, population: int, rounds: int
) -> list[tuple]:
    import jax
    import jax.numpy as jnp

    import rtrrl_spec
    from rtrrl import envs, fused
    from rtrrl.backends import jax as jaxbe

    env = envs.make_jax(task)
    config = env.spec.agent_config(n_hidden=32, jacobian="rflo")
    rows = []

    # The environment alone, in exactly the structure of a fused epoch (rtrrl.fused.make_train):
    # the same up-front draws (noise (T, 1, K) and one key per step), the same scan carry and
    # episode bookkeeping; the agent step is replaced by a random action, argmax of the noise.
    draw_noise = jaxbe.JaxBackend().draw_noise

    def env_epoch(carry):
        key = jax.random.wrap_key_data(carry["key"])
        key, k_noise, k_env = jax.random.split(key, 3)
        noise, _ = draw_noise(config, epoch_steps, k_noise, "float32")
        noise = noise.reshape((epoch_steps, 1) + noise.shape[1:])
        env_keys = jax.random.split(k_env, (epoch_steps, 1))

        def body(c, xs):
            carry, ret_sum, n_done = c
            noise, k = xs
            action = jnp.argmax(noise, axis=-1).astype(jnp.int32)
            state, obs, reward, term, trunc = jax.vmap(env.step)(k, carry["env_state"], action)
            done = term | trunc
            ep_return = carry["ep_return"] + reward
            ret_sum = ret_sum + jnp.sum(jnp.where(done, ep_return, 0.0))
            n_done = n_done + jnp.sum(done)
            carry = {
                "env_state": state,
                "obs": obs,
                "reward": reward,
                "done": done,
                "ep_return": jnp.where(done, 0.0, ep_return),
                "key": carry["key"],
            }
            return (carry, ret_sum, n_done), (jnp.mean(obs), jnp.mean(reward))

        zero = jnp.zeros((), jnp.float32)
        (carry, ret_sum, n_done), out = jax.lax.scan(
            body, (carry, zero, jnp.zeros((), jnp.int32)), (noise, env_keys)
        )
        return dict(carry, key=jax.random.key_data(key)), (ret_sum, n_done, out)

    state, obs = jax.vmap(env.reset)(jax.random.split(jax.random.key(0), 1))
    env_carry = {
        "env_state": state,
        "obs": obs,
        "reward": jnp.zeros(1),
        "done": jnp.ones(1, bool),
        "ep_return": jnp.zeros(1),
        "key": jax.random.key_data(jax.random.key(1)),
    }
    init, epoch, _ = fused.make_train(config, env, epoch_steps=epoch_steps)
    agent = {k: jnp.asarray(v) for k, v in rtrrl_spec.init(config, 1, 0).items()}
    carry = jax.jit(init)(agent, jax.random.key_data(jax.random.key(0)))

    def rates(options):
        # Both rows compiled alike: with the options rtrrl.fused jits its epoch with
        # (fused.compiler_options()), or with jax.jit's defaults (options None).
        holder = {
            "env": [jax.jit(env_epoch, compiler_options=options), env_carry],
            "fused": [jax.jit(epoch, compiler_options=options), carry],
        }

        def runner(name):
            def run():
                fn, c = holder[name]
                holder[name][1], out = fn(c)
                jax.block_until_ready(out)

            return run

        return paired_rates(runner("env"), runner("fused"), epoch_steps, rounds)

    def ratio_note(mid: float, lo: float, hi: float) -> str:
        return f"{mid:.2f} ({lo:.2f}–{hi:.2f}) × env alone, paired over {rounds} rounds"

    options = fused.compiler_options()
    env_rate, rate, *ratio = rates(options)
    note = "gymnax step in the fused epoch's scan structure"
    rows.append(("env alone (random actions)", 1, env_rate, note))
    rows.append(("fused B=1", 1, rate, ratio_note(*ratio) + " (target ≥ 0.33)"))
    if options is not None:
        # The same two rows compiled with jax.jit's default options, for comparison.
        env_plain, plain, *ratio = rates(None)
        note = "as above, jax.jit's default XLA options"
        rows.append(("env alone, default options", 1, env_plain, note))
        rows.append(("fused B=1, default options", 1, plain, ratio_note(*ratio)))

    p_init, p_epoch, _ = fused.make_population(config, env, epoch_steps=epoch_steps)
    seeds = list(range(population))
    agents = jaxbe.init_population(config, seeds)
    keys = jnp.stack([jax.random.key_data(jax.random.key(s)) for s in seeds])
    holder = {"p": p_init(agents, keys)}
    active = jnp.ones(population, bool)

    def run_pop():
        holder["p"], m = p_epoch(holder["p"], active)
        jax.block_until_ready(m)

    rate = best_rate(run_pop, epoch_steps * population, max(2, repeats // 2))
    rows.append((f"fused population-{population}", 1, rate, "steps summed over the seeds"))
    return rows


# --- the host loop, through the public API, optionally against an earlier checkout ----------

#: What a host-loop measurement trains: one seed, ``HOST_EPOCHS`` epochs, an evaluation after
#: every second one (the epochs before an evaluation time training alone; the epochs after one
#: time the evaluation too).
HOST_EPOCHS = 8
HOST_EVAL_EVERY = 2


def measure_host(spec: dict) -> dict:
    """One host-loop run of ``rtrrl``'s public train function, in this process; its timings.

    Runs as the worker of :func:`host_rows` (``--measure-host JSON``), in a fresh process per
    measurement, so that every backend (and ``KERAS_BACKEND``) starts clean and the same code
    can time an earlier checkout's ``rtrrl`` (put first on ``PYTHONPATH``).
    """
    import csv
    import importlib

    import rtrrl
    import rtrrl.backends

    # rtrrl.training.train where the package has it; earlier versions made the module
    # rtrrl.train itself callable. (Asked of the folder: the editable install's finder would
    # find this tree's rtrrl/training.py for an earlier checkout's package too.)
    has_training = (Path(rtrrl.__file__).parent / "training.py").exists()
    train = importlib.import_module("rtrrl.training").train if has_training else rtrrl.train
    # Each evaluation timed where the host loop calls it: rtrrl.host.evaluate_host now,
    # rtrrl.train.evaluate_host (which built its environment) before.
    host = importlib.import_module("rtrrl.host" if has_training else "rtrrl.train")
    evaluate, eval_times = host.evaluate_host, []

    def timed_evaluate(*args, **kwargs):
        t = time.perf_counter()
        try:
            return evaluate(*args, **kwargs)
        finally:
            eval_times.append(time.perf_counter() - t)

    host.evaluate_host = timed_evaluate
    kwargs = dict(
        seeds=1,
        steps=HOST_EPOCHS * spec["epoch_steps"],
        epoch_steps=spec["epoch_steps"],
        eval_every=HOST_EVAL_EVERY,
        eval_episodes=spec["eval_episodes"],
        patience=10**6,
        fused=False,
        n_hidden=32,
        jacobian="rflo",
        # Table 1's clip, which a baseline from before presets starts from: the same work.
        clip_norm=1.0,
    )
    if spec["threads"] is not None:
        kwargs["threads"] = spec["threads"]
    torch_default = None
    if "torch" in spec["backend"]:
        import torch

        torch_default = torch.get_num_threads()  # what a run gets unless rtrrl sets it
    out = Path(tempfile.mkdtemp(prefix="rtrrl-speed-")) / "run"
    t0 = time.perf_counter()
    train(spec["task"], spec["backend"], out=out, **kwargs)
    total = time.perf_counter() - t0
    with open(out / "metrics.csv") as f:
        walls = [float(r["wall_time"]) for r in csv.DictReader(f)]
    # Row e's wall time is taken when epoch e is recorded, before its evaluation: from a row
    # without an evaluation to the next is one epoch of training alone.
    epochs = [walls[e] - walls[e - 1] for e in range(1, HOST_EPOCHS) if e % HOST_EVAL_EVERY]
    return {
        "files": [rtrrl.__file__, rtrrl.backends.__file__],
        "epoch_rate": spec["epoch_steps"] / float(np.median(epochs)),
        "first_eval": eval_times[0],
        "later_evals": float(np.median(eval_times[1:])),
        "end_to_end": HOST_EPOCHS * spec["epoch_steps"] / total,
        "torch_default": torch_default,
    }


def _host_torch_threads() -> int | str:
    try:
        from rtrrl.threads import HOST_TORCH_THREADS
    except ImportError:
        return "?"
    return HOST_TORCH_THREADS


def _run_worker(spec: dict, pythonpath: str | None) -> dict:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    if spec["backend"].startswith("keras-"):
        env["KERAS_BACKEND"] = spec["backend"][len("keras-") :]
        env.setdefault("KERAS_HOME", tempfile.mkdtemp(prefix="rtrrl-keras-"))
    cmd = [sys.executable, __file__, "--measure-host", json.dumps(spec)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1][:100]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _median_of(runs: list[dict]) -> dict:
    """Per timing, the median over the rounds; the first error if any round failed."""
    failed = [r for r in runs if "error" in r]
    if failed:
        return failed[0]
    keys = ("epoch_rate", "first_eval", "later_evals", "end_to_end")
    return {k: float(np.median([r[k] for r in runs])) for k in keys}


def host_rows(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """Host-loop rows per backend (and thread setting), this tree against ``--baseline``
    when given, the two sides measured in alternation; returns the table and notes."""
    from against_commit import import_tree

    base = None
    if args.baseline:
        base = str(import_tree(Path(args.baseline), Path(tempfile.mkdtemp()) / "imports"))
    cases = [(b, None) for b in args.backends.split(",")]
    cases += [(b, int(t)) for item in args.threads for b, t in [item.split("=")]]
    table = [
        "| backend | threads | side | epoch agent-steps/s | first evaluation s | later "
        "evaluations s | end-to-end agent-steps/s | now ÷ before (epoch, end-to-end) |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    files: dict[str, set[str]] = {"now": set(), "before": set()}
    torch_default = None
    for k, (backend, threads) in enumerate(cases):
        spec = {
            "task": args.task,
            "backend": backend,
            "epoch_steps": args.host_steps,
            "eval_episodes": args.eval_episodes,
            "threads": threads,
        }
        sides = [("now", None)] + ([("before", base)] if base and threads is None else [])
        runs: dict[str, list[dict]] = {side: [] for side, _ in sides}
        for r in range(args.host_rounds):
            for side, path in sides if (k + r) % 2 else sides[::-1]:
                runs[side].append(_run_worker(spec, path))
                files[side].update(runs[side][-1].get("files", []))
                torch_default = runs[side][-1].get("torch_default") or torch_default
                print(backend, threads, side, runs[side][-1], flush=True)
        results = {side: _median_of(found) for side, found in runs.items()}
        for side, _ in sides:
            r = results[side]
            shown = "default" if threads is None else str(threads)
            if "error" in r:
                table.append(f"| {backend} | {shown} | {side} | — | — | — | — | {r['error']} |")
                continue
            ratio = ""
            if side == "now" and "before" in results and "error" not in results["before"]:
                b = results["before"]
                ratio = f"{r['epoch_rate'] / b['epoch_rate']:.2f}, "
                ratio += f"{r['end_to_end'] / b['end_to_end']:.2f}"
            table.append(
                f"| {backend} | {shown} | {side} | {r['epoch_rate']:,.0f} | "
                f"{r['first_eval']:.2f} | {r['later_evals']:.2f} | {r['end_to_end']:,.0f} "
                f"| {ratio} |"
            )
    notes = [
        f"Imported `{side}` from: {', '.join(sorted(found))}."
        for side, found in files.items()
        if found
    ]
    if torch_default is not None:
        notes.append(
            f"Threads `default`: torch's own number in a fresh process here ({torch_default}) "
            "before; rtrrl's host-loop default now (rtrrl.threads.HOST_TORCH_THREADS = "
            f"{_host_torch_threads()})."
        )
    return table, notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="CartPole-v1")
    parser.add_argument("--epoch-steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5, help="best-of repeats (other rows)")
    parser.add_argument(
        "--rounds", type=int, default=41, help="paired rounds of the env and fused B=1 rows"
    )
    parser.add_argument("--population", type=int, default=64)
    parser.add_argument("--no-fused", action="store_true", help="only the host-loop rows")
    parser.add_argument("--host-steps", type=int, default=300, help="steps per host epoch")
    parser.add_argument("--eval-episodes", type=int, default=10, help="host evaluations")
    parser.add_argument(
        "--host-rounds", type=int, default=1, help="runs per host row and side (medians)"
    )
    parser.add_argument("--backends", default="numpy,jax,torch,keras-jax,keras-torch")
    parser.add_argument(
        "--threads",
        action="append",
        default=[],
        metavar="BACKEND=N",
        help="also time the host loop of BACKEND with rtrrl train --threads N (this tree only)",
    )
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="a checkout of an earlier commit (e.g. a git worktree): host rows on it too",
    )
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--measure-host", metavar="JSON", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_host:  # the worker of host_rows, in its own process
        print(json.dumps(measure_host(json.loads(args.measure_host))))
        return

    load = os.getloadavg()[0]
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    lines = [f"## {date}", "", f"`python {' '.join(sys.argv)}`", ""]
    if not args.no_fused:
        rows = fused_rows(args.task, args.epoch_steps, args.repeats, args.population, args.rounds)
        lines += [
            f"Task {args.task}, RFLO, N = 32, float32, {args.epoch_steps} steps per epoch (one "
            "jitted scan per call). The env-alone and fused B=1 rows are timed in alternation, "
            "one call each per round: rates from the median call, ratios the median "
            "(quartiles) of the same-round ratios; other rows best of the repeats.",
            "",
            "| path | B | agent-steps/s | note |",
            "|---|---:|---:|---|",
        ]
        lines += [f"| {name} | {b} | {rate:,.0f} | {note} |" for name, b, rate, note in rows]
        lines.append("")
    table, notes = host_rows(args)
    before = f" and on {args.baseline} (`before`)" if args.baseline else ""
    lines += [
        f"Host loop (`rtrrl train --host`), through the public train function in a fresh "
        f"process per run, on this tree (`now`){before}, the two in alternation, "
        f"{args.host_rounds} run(s) per row and side (medians over them): "
        f"{args.task}, RFLO, N = 32, B = 1, float32, one seed, {HOST_EPOCHS} epochs of "
        f"{args.host_steps} steps, an evaluation of {args.eval_episodes} episodes after every "
        f"{HOST_EVAL_EVERY} epochs. Epoch rate: median over the epochs that follow no "
        "evaluation; evaluation s: the host loop's calls of `evaluate_host`, timed around "
        "the call (the first, and the median of the later ones); end to end: all steps over "
        "the whole call (building and compiling environments, checkpoints included).",
        "",
        *table,
        "",
        *notes,
        "",
        f"Machine: {machine(load)}.",
    ]
    text = "\n".join(lines) + "\n"
    publish(text, RESULTS, "# Training speed", record=args.record)


if __name__ == "__main__":
    main()
