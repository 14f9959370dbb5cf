"""Auto-reset speed: the fused path with fresh episodes drawn only when one ended, against
drawing them at every step (the formulation before), in one run.

A JAX environment's same-step auto-reset used to compute a fresh episode for every
environment at every step and keep it where an episode ended; ``rtrrl.envs.batch_step``
computes it only on steps where some episode of the population ended. The numbers are the
same (``tests/train/test_fused_reset.py``); this script measures the speed.

Rows, per task:

- ``environment alone``: the environment's half of a fused epoch (keys drawn up front, a
  ``lax.scan`` with the episode bookkeeping), ``--envs`` environments, random actions;
- ``fused, P seeds``: :func:`rtrrl.fused.make_population`'s epoch (RFLO, N = 32, B = 1), one
  seed (a plain ``rtrrl train``) and ``--population`` seeds, agent-steps summed over seeds.

Each row times both formulations in alternation (``--rounds``, order swapped every round):
the rates are from the median call time of each, the ratio is the median (and quartiles) of
the same-round ratios, so load that drifts during the run cancels out of it.

Usage: ``python benchmarks/reset_speed.py [--tasks LabyrinthEscape,CartPole-vel]
[--record]`` (``--record`` appends to ``benchmarks/results/reset_speed.md``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe as machine  # noqa: E402
from machine import publish  # noqa: E402
from train_speed import paired_rates  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "reset_speed.md"
DEFAULT_TASKS = "LabyrinthEscape,CartPole-vel"


def _env_epoch(env, num_envs: int, epoch_steps: int, reset_every_step: bool) -> Callable:
    """The environment's half of a fused epoch, random actions (uniform within the bounds)."""
    import jax
    import jax.numpy as jnp

    from rtrrl.envs import batch_step

    spec = env.spec

    def actions(key):
        if spec.discrete:
            return jax.random.randint(key, (epoch_steps, num_envs), 0, spec.n_actions)
        low = jnp.asarray(spec.action_low or -1.0)
        high = jnp.asarray(spec.action_high or 1.0)
        shape = (epoch_steps, num_envs, spec.action_dim)
        return jax.random.uniform(key, shape, minval=low, maxval=high)

    def epoch(carry):
        state, ep_return, key = carry
        key, k_act, k_env = jax.random.split(key, 3)
        env_keys = jax.random.split(k_env, (epoch_steps, num_envs))

        def body(c, xs):
            state, ep_return, ret_sum, n_done = c
            action, k = xs
            state, obs, reward, term, trunc = batch_step(
                env, k, state, action, reset_every_step=reset_every_step
            )
            done = term | trunc
            ep_return = ep_return + reward
            ret_sum = ret_sum + jnp.sum(jnp.where(done, ep_return, 0.0))
            n_done = n_done + jnp.sum(done, dtype=jnp.int32)
            return (state, jnp.where(done, 0.0, ep_return), ret_sum, n_done), jnp.mean(obs)

        init = (state, ep_return, jnp.zeros(()), jnp.zeros((), jnp.int32))
        (state, ep_return, ret_sum, n_done), _ = jax.lax.scan(
            body, init, (actions(k_act), env_keys)
        )
        return (state, ep_return, key), n_done

    return epoch


def env_row(task: str, num_envs: int, epoch_steps: int, rounds: int) -> tuple:
    """Both formulations of the environment alone; the row's figures."""
    import jax
    import jax.numpy as jnp

    from rtrrl import envs, fused

    env = envs.make_jax(task)
    options = fused.compiler_options()
    state, _ = jax.vmap(env.reset)(jax.random.split(jax.random.key(0), num_envs))
    holder = {}
    for name, every in (("before", True), ("after", False)):
        fn = jax.jit(_env_epoch(env, num_envs, epoch_steps, every), compiler_options=options)
        holder[name] = [fn, (state, jnp.zeros(num_envs), jax.random.key(1)), 0]
    steps = epoch_steps * num_envs
    return (f"environment alone, {num_envs} envs", *_paired(holder, steps, rounds))


def fused_row(task: str, population: int, epoch_steps: int, rounds: int) -> tuple:
    """Both formulations of the fused epoch for ``population`` seeds; the row's figures."""
    import jax
    import jax.numpy as jnp

    from rtrrl import envs, fused
    from rtrrl.backends import jax as jaxbe

    env = envs.make_jax(task)
    config = env.spec.agent_config(n_hidden=32, jacobian="rflo")
    seeds = list(range(population))
    agents = jaxbe.init_population(config, seeds)
    keys = jnp.stack([jax.random.key_data(jax.random.key(s)) for s in seeds])
    active = jnp.ones(population, bool)
    holder = {}
    for name, every in (("before", True), ("after", False)):
        init, epoch, _ = fused.make_population(
            config, env, epoch_steps=epoch_steps, reset_every_step=every
        )

        def run(carry, epoch=epoch):
            carry, metrics = epoch(carry, active)
            return carry, jnp.sum(metrics["episodes"])

        holder[name] = [run, init(agents, keys), 0]
    steps = epoch_steps * population
    label = f"fused, {population} seed{'s' if population > 1 else ''}"
    return (label, *_paired(holder, steps, rounds))


def _paired(holder: dict, steps: int, rounds: int) -> tuple:
    """``(before rate, after rate, ratio median, lower, upper quartile, episodes per 1000
    steps)``; ``holder[name]`` is ``[fn, carry, episodes]``, ``fn(carry) -> (carry, episodes
    ended)``."""
    import jax

    def runner(name):
        def run():
            fn, carry, _ = holder[name]
            carry, episodes = fn(carry)
            holder[name][1] = carry
            holder[name][2] += int(jax.device_get(episodes))

        return run

    runner("before")()  # compiles; both formulations then run the same epochs
    runner("after")()
    before, after, mid, lo, hi = paired_rates(runner("before"), runner("after"), steps, rounds)
    if holder["before"][2] != holder["after"][2]:  # the same runs, so the same episodes
        raise RuntimeError(
            f"the formulations ended {holder['before'][2]} and {holder['after'][2]} episodes"
        )
    per_1000 = 1000 * holder["after"][2] / (steps * (rounds + 2))
    return before, after, mid, lo, hi, per_1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=DEFAULT_TASKS, help="comma-separated task names")
    parser.add_argument("--epoch-steps", type=int, default=1000)
    parser.add_argument("--population", type=int, default=5, help="seeds of the larger row")
    parser.add_argument("--envs", type=int, default=5, help="environments of the env-alone row")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()

    load = os.getloadavg()[0]
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    import jax

    lines = [
        f"## {date}",
        "",
        f"`python {' '.join(sys.argv)}`",
        "",
        f"Agent-steps/s (environment steps for the env-alone rows) of {args.epoch_steps}-step "
        f"jitted scans; fused rows: RFLO, N = 32, B = 1, float32; JAX {jax.__version__} on "
        f"{jax.default_backend()}. Before: a fresh episode computed for every environment at "
        "every step (`reset_every_step=True`); after: only on steps where an episode ended. "
        f"Ratio: median (quartiles) of the same-round ratios over {args.rounds} rounds.",
        "",
        "| task | row | before | after | after ÷ before | episodes per 1000 steps |",
        "|---|---|---:|---:|---|---:|",
    ]
    for task in args.tasks.split(","):
        rows = [env_row(task, args.envs, args.epoch_steps, args.rounds)]
        for population in dict.fromkeys((1, args.population)):
            rows.append(fused_row(task, population, args.epoch_steps, args.rounds))
        for name, before, after, mid, lo, hi, per_1000 in rows:
            ratio = f"{mid:.2f} ({lo:.2f}–{hi:.2f})"
            lines.append(
                f"| {task} | {name} | {before:,.0f} | {after:,.0f} | {ratio} | {per_1000:.1f} |"
            )
            print(lines[-1], flush=True)
    lines += ["", f"Machine: {machine(load)}."]
    text = "\n".join(lines)
    publish(text, RESULTS, "# Auto-reset speed (benchmarks/reset_speed.py)", record=args.record)


if __name__ == "__main__":
    main()
