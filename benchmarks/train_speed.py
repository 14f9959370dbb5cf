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
- ``host <backend>``: the host loop of :mod:`rtrrl.train` (``HostEngine``) per installed
  backend: Python loop, host env, one agent step per environment step.

Usage: ``python benchmarks/train_speed.py [--task CartPole-v1] [--backends numpy,jax,torch]
[--record]`` (``--record`` appends to ``benchmarks/results/train_speed.md``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from machine import append_section  # noqa: E402
from machine import describe as machine  # noqa: E402

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


def host_row(task: str, backend: str, steps: int, repeats: int) -> tuple:
    from rtrrl import envs
    from rtrrl import train as training

    env = envs.make_host(task, num_envs=1)
    config = env.spec.agent_config(n_hidden=32, jacobian="rflo")
    protocol = training.Protocol(task=task, backend=backend, seeds=(0,), epoch_steps=steps)
    session = training.Session(
        out=Path(tempfile.mkdtemp()),
        protocol=protocol,
        config=config,
        engine="host",
        records=[training.SeedRecord(seed=0)],
    )
    engine = training.HostEngine(session, None)
    be = engine.be
    state = {
        "agent": be.from_numpy(engine.agents[0]),
        "rng": be.rng(1),
        "obs": env.reset(0),
        "reward": np.zeros(1, np.float32),
        "done": np.ones(1, bool),
    }
    ep_ret = np.zeros(1)

    def run():
        out = engine._epoch(
            env,
            state["agent"],
            state["rng"],
            state["obs"],
            state["reward"],
            state["done"],
            ep_ret,
            [],
        )
        state["agent"], state["rng"], state["obs"], state["reward"], state["done"] = out[:5]

    rate = best_rate(run, steps, repeats)
    env.close()
    return (f"host {backend}", 1, rate, "Python loop over the host env, one agent step per call")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="CartPole-v1")
    parser.add_argument("--epoch-steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5, help="best-of repeats (other rows)")
    parser.add_argument(
        "--rounds", type=int, default=41, help="paired rounds of the env and fused B=1 rows"
    )
    parser.add_argument("--population", type=int, default=64)
    parser.add_argument("--host-steps", type=int, default=300)
    parser.add_argument("--backends", default="numpy,jax,torch,keras-jax,keras-torch")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()

    from rtrrl import _registry

    header = machine()
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    rows = fused_rows(args.task, args.epoch_steps, args.repeats, args.population, args.rounds)
    installed = _registry.available_backends()
    for name in args.backends.split(","):
        if not installed.get(name):
            rows.append((f"host {name}", 1, float("nan"), "not installed"))
            continue
        try:
            rows.append(host_row(args.task, name, args.host_steps, max(2, args.repeats // 2)))
        except Exception as err:  # a backend failing must not hide the other rows
            rows.append((f"host {name}", 1, float("nan"), f"failed: {err}"[:80]))
        print(rows[-1], flush=True)

    lines = [
        f"## {date}",
        "",
        f"`python {' '.join(sys.argv)}`",
        "",
        f"Machine: {header}. Task {args.task}, RFLO, N = 32, float32, {args.epoch_steps} "
        "steps per epoch (one jitted scan per call). The env-alone and fused B=1 rows are "
        "timed in alternation, one call each per round: rates from the median call, ratios "
        "the median (quartiles) of the same-round ratios; other rows best of the repeats.",
        "",
        "| path | B | agent-steps/s | note |",
        "|---|---:|---:|---|",
    ]
    for name, b, rate, note in rows:
        lines.append(f"| {name} | {b} | {rate:,.0f} | {note} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.record:
        append_section(RESULTS, text, "# Training speed")


if __name__ == "__main__":
    main()
