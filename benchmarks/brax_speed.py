"""brax speed: the fused path on brax's swimmer against the environment alone and the host loop.

Rows (one run, same machine, same moment), all at B = 1 (one environment, one agent):

- ``brax alone``: brax's own ``env.step`` in a jitted ``lax.scan`` with random actions, no
  reset and no time limit (the physics' ceiling);
- ``brax through rtrrl's adapter``: :class:`rtrrl.envs._brax.BraxJaxEnv` stepped as a fused
  epoch steps it (:func:`rtrrl.envs.batch_step`: time limit, same-step auto-reset, a fresh
  episode computed only on steps where one ended), random actions. Until ``batch_step``, a
  fresh episode was computed every step (``benchmarks/reset_speed.py`` times both);
- ``fused B=1``: :func:`rtrrl.fused.make_train`'s epoch (RFLO, N = 32): agent and
  environment in one scan. It and the adapter row are timed in alternation (``--rounds``)
  and their ratio is the median of the same-round ratios;
- host rows: ``rtrrl``'s host loop (``fused=False``) on the numpy backend, on the same brax
  task (the host adapter: the adapter jitted on the CPU, NumPy in and out) and on gymnasium's
  MuJoCo ``Swimmer-v5`` (``Swimmer-gymnasium``, what the task ``Swimmer`` was before),
  measured as ``benchmarks/train_speed.py`` measures host rows (training epochs only).

Usage: ``python benchmarks/brax_speed.py [--task brax:swimmer] [--record]`` (``--record`` appends
to ``benchmarks/results/brax_speed.md``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe as machine  # noqa: E402
from machine import publish  # noqa: E402
from train_speed import best_rate, measure_host, paired_rates  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "brax_speed.md"


def fused_rows(task: str, epoch_steps: int, repeats: int, rounds: int) -> list[tuple]:
    """The brax-alone, adapter and fused B=1 rows."""
    import jax
    import jax.numpy as jnp

    import rtrrl_spec
    from rtrrl import envs, fused

    env = envs.make_jax(task)
    brax_env = env.env
    config = env.spec.agent_config(n_hidden=32, jacobian="rflo")
    low = jnp.asarray(env.spec.action_low or -1.0)
    high = jnp.asarray(env.spec.action_high or 1.0)

    def brax_epoch(carry):
        state, key = carry
        key, sub = jax.random.split(key)
        actions = jax.random.uniform(
            sub, (epoch_steps, env.spec.action_dim), minval=low, maxval=high
        )

        def body(state, action):
            state = brax_env.step(state, action)
            return state, state.reward

        state, rewards = jax.lax.scan(body, state, actions)
        return (state, key), jnp.sum(rewards)

    def adapter_epoch(carry):
        # The fused epoch's environment half: keys drawn up front, B = 1 under vmap, the
        # episode bookkeeping in the carry; the agent replaced by uniform random actions.
        state, ep_return, key = carry
        key, k_act, k_env = jax.random.split(key, 3)
        actions = jax.random.uniform(
            k_act, (epoch_steps, 1, env.spec.action_dim), minval=low, maxval=high
        )
        env_keys = jax.random.split(k_env, (epoch_steps, 1))

        def body(c, xs):
            state, ep_return, ret_sum = c
            action, k = xs
            state, obs, reward, term, trunc = envs.batch_step(env, k, state, action)
            done = term | trunc
            ep_return = ep_return + reward
            ret_sum = ret_sum + jnp.sum(jnp.where(done, ep_return, 0.0))
            return (state, jnp.where(done, 0.0, ep_return), ret_sum), jnp.mean(obs)

        (state, ep_return, ret_sum), _ = jax.lax.scan(
            body, (state, ep_return, jnp.zeros(())), (actions, env_keys)
        )
        return (state, ep_return, key), ret_sum

    options = fused.compiler_options()
    key = jax.random.key(0)
    holder = {
        "brax": [
            jax.jit(brax_epoch, compiler_options=options),
            (jax.jit(brax_env.reset)(jax.random.PRNGKey(0)), jax.random.PRNGKey(1)),
        ],
        "env": [
            jax.jit(adapter_epoch, compiler_options=options),
            (jax.vmap(env.reset)(jax.random.split(key, 1))[0], jnp.zeros(1), jax.random.key(1)),
        ],
    }
    init, epoch, _ = fused.make_train(config, env, epoch_steps=epoch_steps)
    agent = {k: jnp.asarray(v) for k, v in rtrrl_spec.init(config, 1, 0).items()}
    holder["fused"] = [
        jax.jit(epoch, compiler_options=options),
        jax.jit(init)(agent, jax.random.key_data(jax.random.key(0))),
    ]

    def runner(name):
        def run():
            fn, c = holder[name]
            holder[name][1], out = fn(c)
            jax.block_until_ready(out)

        return run

    t0 = time.perf_counter()
    runner("fused")()
    compile_s = time.perf_counter() - t0
    brax_rate = best_rate(runner("brax"), epoch_steps, repeats)
    env_rate, rate, mid, lo, hi = paired_rates(runner("env"), runner("fused"), epoch_steps, rounds)
    backend = getattr(brax_env, "backend", "?")
    return [
        ("brax alone", brax_rate, f"brax's {backend} step, no reset; best of {repeats}"),
        (
            "brax through rtrrl's adapter",
            env_rate,
            f"{env_rate / brax_rate:.2f} × brax alone (time limit, auto-reset where one ended)",
        ),
        (
            "fused B=1 (agent + environment)",
            rate,
            f"{mid:.2f} ({lo:.2f}–{hi:.2f}) × the adapter row, paired over {rounds} rounds; "
            f"first epoch with compile {compile_s:.0f} s",
        ),
    ]


def host_row(task: str, label: str, epoch_steps: int) -> tuple:
    """One host-loop row (numpy backend), as train_speed.py measures it."""
    spec = {
        "task": task,
        "backend": "numpy",
        "epoch_steps": epoch_steps,
        "eval_episodes": 1,
        "threads": None,
    }
    try:
        r = measure_host(spec)
    except Exception as exc:  # a row that cannot run says why, the others stand
        return (label, None, f"not measured: {str(exc).splitlines()[0][:120]}")
    note = f"host loop, numpy backend, training epochs of {epoch_steps} steps"
    return (label, r["epoch_rate"], note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="brax:swimmer")
    parser.add_argument("--epoch-steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--host-steps", type=int, default=500, help="steps per host epoch")
    parser.add_argument("--no-host", action="store_true", help="only the JAX rows")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()

    load = os.getloadavg()[0]
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    import brax
    import jax

    rows = fused_rows(args.task, args.epoch_steps, args.repeats, args.rounds)
    if not args.no_host:
        rows.append(host_row(args.task, f"host loop on brax ({args.task})", args.host_steps))
        if importlib.util.find_spec("mujoco") is None:
            rows.append(("host loop on gymnasium Swimmer-v5", None, "not measured: no mujoco"))
        else:
            label = "host loop on gymnasium Swimmer-v5 (Swimmer-gymnasium)"
            rows.append(host_row("Swimmer-gymnasium", label, args.host_steps))
    lines = [
        f"## {date}",
        "",
        f"`python {' '.join(sys.argv)}`",
        "",
        f"Task {args.task}, B = 1, RFLO, N = 32, float32; JAX rows: {args.epoch_steps} steps per "
        f"jitted scan; brax {brax.__version__}, JAX {jax.__version__} on "
        f"{jax.default_backend()}.",
        "",
        "| path | agent-steps/s | note |",
        "|---|---:|---|",
    ]
    for name, rate, note in rows:
        shown = "—" if rate is None else f"{rate:,.0f}"
        lines.append(f"| {name} | {shown} | {note} |")
    lines += ["", f"Machine: {machine(load)}."]
    text = "\n".join(lines)
    publish(text, RESULTS, "# brax speed (benchmarks/brax_speed.py)", record=args.record)


if __name__ == "__main__":
    main()
