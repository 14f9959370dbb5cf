"""Their task ports against ours: the same start states, the same actions, step by step.

``python benchmarks/authors_tasks.py --repo PATH --popjym PATH --python PY [--episodes 10]
[--tasks A,B] [--record]`` checks that a figure of the authors' code (FranzKnut/RTRRL-AAAI25,
``benchmarks/authors_code.py``) and one of ours on the same task name measure the same task.

For each task, their side (the interpreter ``PY`` of the environment that
``authors_code.py --install-command`` describes, with their checkout and a checkout of
FranzKnut/popjym on ``PYTHONPATH``) builds the evaluation environment exactly as their
``rtrrl.py`` does (``envs.environments.make_env`` with the settings of
``authors_code.TASKS``: their wrappers, observation mask and time limit included), plays
episodes with a few policies (random ones, and ones that read the hidden state: an oracle, a
balancing controller) and records each episode's start state, actions, observations, rewards
and end. Our side (this interpreter) gives our environment (``rtrrl.envs.make_jax``) the same
start state, replays the same actions and records the same things. The tables compare them:
observation and action sizes, episode lengths, returns, and, step by step while both episodes
run, how many observations and rewards differ. Where one side's episode ends first, only the
steps both took are compared (the lengths say the rest). Nothing of their code or of popjym is
part of this project; the checkouts are only run.

Policies: ``random`` (uniform actions); ``card-back-J`` (RepeatPrevious: name the card ``J``
steps before the newest one seen; popjym rewards ``J = 4``, popgym and our port ``J = 3``);
``first-card`` (RepeatFirst's oracle); ``sweep`` (Minesweeper: every free cell once, then a
cell already seen); ``balance`` (CartPole: a linear controller on the full state); ``always-A``
(DeepSea: the same action every step; 1 goes right).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from authors_code import TASKS as RUN_TASKS  # noqa: E402
from authors_code import AuthorsTask, git_commit  # noqa: E402
from machine import describe as machine  # noqa: E402
from machine import publish  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "authors_tasks.md"

# Our task name -> how their code names it, and the policies to play. The first four are the
# tasks authors_code.py runs; RepeatFirst and Minesweeper are here for the differences
# docs/tasks.md lists for popjym.
TASKS: dict[str, tuple[AuthorsTask, tuple[str, ...]]] = {
    "StatelessCartPole": (RUN_TASKS["StatelessCartPole"], ("balance", "random")),
    "RepeatPrevious": (
        RUN_TASKS["RepeatPrevious"],
        ("card-back-4", "card-back-3", "random"),
    ),
    "DeepSea-16": (RUN_TASKS["DeepSea-16"], ("always-1", "always-0", "random")),
    "CartPole-pos": (RUN_TASKS["CartPole-pos"], ("balance", "random")),
    "RepeatFirst": (AuthorsTask("RepeatFirstEasy", 1.0, popjym=True), ("first-card", "random")),
    "Minesweeper": (AuthorsTask("MinesweeperEasy", 1.0, popjym=True), ("sweep", "random")),
}

# Our state fields that popjym names differently (gymnax's own states share our names).
ALIASES = {"time": ("time", "timestep"), "field": ("mine_grid",), "neighbours": ("neighbor_grid",)}

# What runs in their environment: builds their evaluation environment as rtrrl.py does and
# plays the episodes. Reads the job (JSON) from argv[1], writes the episodes to argv[2].
THEIR_SIDE = r"""
import dataclasses, json, sys
import numpy as np
import jax
from envs.environments import EnvironmentParams, make_env

job = json.load(open(sys.argv[1]))

def plain(state):
    return {f.name: np.asarray(getattr(state, f.name)).tolist() for f in dataclasses.fields(state)}

def act(policy, inner, rng, n):
    if policy == "random":
        return int(rng.integers(n))
    if policy.startswith("always-"):
        return int(policy.split("-")[1])
    if policy.startswith("card-back-"):
        back = int(policy.split("-")[2])
        return int(inner.cards[max(int(inner.timestep) - back, 0)])
    if policy == "first-card":
        return int(inner.cards[0])
    if policy == "sweep":
        grid = np.asarray(inner.mine_grid)
        free = np.flatnonzero(grid == 0)
        return int(free[0]) if free.size else int(np.flatnonzero(grid == 2)[0])
    if policy == "balance":
        s = [float(inner.x), float(inner.x_dot), float(inner.theta), float(inner.theta_dot)]
        return int(0.1 * s[0] + 0.5 * s[1] + 10.0 * s[2] + 2.0 * s[3] > 0)
    raise ValueError(policy)

from importlib.metadata import version
out = {"versions": {"jax": version("jax"), "gymnax": version("gymnax")}, "tasks": {}}
for task in job["tasks"]:
    params = EnvironmentParams(
        env_name=task["env_name"], obs_mask=task["obs_mask"], max_ep_length=task["max_ep_length"],
        init_kwargs=dict(task["init_kwargs"]), batch_size=1, render=False,
    )
    _, info, env = make_env(params, make_eval=True)
    reset, step = jax.jit(env.reset), jax.jit(env.step)
    n = int(info["act_size"])
    record = {"obs_size": int(info["obs_size"]), "act_size": n, "discrete": bool(info["discrete"]),
              "policies": {}}
    for p_index, policy in enumerate(task["policies"]):
        episodes = []
        for e in range(job["episodes"]):
            rng = np.random.default_rng([job["seed"], p_index, e])
            state = reset(jax.random.PRNGKey(job["seed"] * 100_000 + p_index * 1000 + e))
            episode = {"start": plain(state.pipeline_state), "obs0": np.asarray(state.obs).tolist(),
                       "actions": [], "obs": [], "rewards": [], "done": False}
            for _ in range(job["horizon"]):
                a = act(policy, state.pipeline_state, rng, n)
                state = step(state, np.int32(a))
                episode["actions"].append(a)
                episode["obs"].append(np.asarray(state.obs).tolist())
                episode["rewards"].append(float(np.asarray(state.reward).reshape(-1)[0]))
                if bool(np.asarray(state.done)):
                    episode["done"] = True
                    break
            episodes.append(episode)
        record["policies"][policy] = episodes
    out["tasks"][task["name"]] = record
json.dump(out, open(sys.argv[2], "w"))
"""


def run_theirs(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    """Play the episodes in their environment; return what :data:`THEIR_SIDE` wrote."""
    job = {"episodes": args.episodes, "seed": args.seed, "horizon": args.horizon, "tasks": []}
    for name in names:
        spec, policies = TASKS[name]
        job["tasks"].append(
            {
                "name": name,
                "env_name": spec.env_name,
                "obs_mask": list(spec.obs_mask) if spec.obs_mask is not None else None,
                "max_ep_length": spec.max_ep_length,
                "init_kwargs": list(spec.init_kwargs),
                "policies": list(policies),
            }
        )
    with tempfile.TemporaryDirectory() as tmp:
        job_file, out_file = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job_file.write_text(json.dumps(job))
        env = dict(
            os.environ,
            PYTHONPATH=f"{args.popjym.resolve()}{os.pathsep}{args.repo.resolve()}",
            JAX_PLATFORMS="cpu",
        )
        done = subprocess.run(
            [args.python, "-c", THEIR_SIDE, str(job_file), str(out_file)],
            cwd=args.repo,
            env=env,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-15:])
            raise SystemExit(f"their side failed ({done.returncode}):\n{tail}")
        return json.loads(out_file.read_text())


def our_start(template: Any, start: dict[str, Any]) -> Any:
    """Our inner state with the values of their start state (by field name, cast to ours)."""
    import jax.numpy as jnp

    fields = template._fields if hasattr(template, "_fields") else template.__dataclass_fields__
    values = {}
    for name in fields:
        leaf = jnp.asarray(getattr(template, name))
        theirs = next((k for k in ALIASES.get(name, (name,)) if k in start), None)
        if theirs is None:
            raise SystemExit(f"their start state has no field for our {name!r}: {sorted(start)}")
        values[name] = jnp.asarray(start[theirs]).astype(leaf.dtype).reshape(leaf.shape)
    return (
        template._replace(**values) if hasattr(template, "_replace") else template.replace(**values)
    )


def our_first_obs(env: Any, inner: Any) -> Any:
    """Our observation of a start state (what our reset returns for it)."""
    import jax

    raw = env.env
    if hasattr(raw, "cartpole"):  # our PositionOnlyCartPole
        return env.observe(raw._observe(jax.random.key(0), inner, env.params))
    if hasattr(raw, "mode"):  # our CardRecall: the first card dealt
        return env.observe(inner.cards[0])
    if hasattr(raw, "mines"):  # our MineSweeper: popgym's first observation is 0
        return env.observe(np.int32(0))
    return env.observe(raw.get_obs(inner, env.params))  # gymnax's CartPole and DeepSea


def replay_ours(name: str, theirs: dict[str, Any]) -> dict[str, Any]:
    """Our environment from their start states, with their actions; episodes per policy."""
    import jax

    from rtrrl import envs

    env = envs.make_jax(name)
    template, _ = env.reset(jax.random.key(0))
    step = jax.jit(env.step)
    result = {"obs_size": env.spec.obs_dim, "act_size": env.spec.n_actions, "policies": {}}
    for policy, episodes in theirs["policies"].items():
        ours = []
        for e, episode in enumerate(episodes):
            inner = our_start(template.inner, episode["start"])
            state = envs.EnvState(inner, jax.numpy.zeros((), jax.numpy.int32))
            record = {"obs0": np.asarray(our_first_obs(env, inner)).tolist(), "obs": []}
            record.update(rewards=[], end=None)
            key = jax.random.key(e)
            for a in episode["actions"]:
                key, sub = jax.random.split(key)
                state, obs, reward, terminated, truncated = step(sub, state, np.int32(a))
                record["obs"].append(np.asarray(obs).tolist())
                record["rewards"].append(float(reward))
                if bool(terminated) or bool(truncated):
                    record["end"] = "terminated" if bool(terminated) else "truncated"
                    break
            ours.append(record)
        result["policies"][policy] = ours
    return result


def compare(theirs: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """Per policy: lengths, returns, and the steps where observations or rewards differ."""
    rows = {}
    for policy, their_eps in theirs["policies"].items():
        our_eps = ours["policies"][policy]
        len_t = [len(e["rewards"]) for e in their_eps]
        len_o = [len(e["rewards"]) for e in our_eps]
        ret_t = [sum(e["rewards"]) for e in their_eps]
        ret_o = [sum(e["rewards"]) for e in our_eps]
        compared = obs_diff = rew_diff = 0
        obs_err = 0.0
        first_obs = []
        for t, o in zip(their_eps, our_eps, strict=True):
            first_obs.append(_max_abs(t["obs0"], o["obs0"]))
            # The observation returned with an episode's end is the next episode's first,
            # drawn independently on each side: compare only observations within episodes.
            last_t = len(t["rewards"]) - 1 if t["done"] else -1
            last_o = len(o["rewards"]) - 1 if o["end"] else -1
            for i in range(min(len(t["rewards"]), len(o["rewards"]))):
                compared += 1
                rew_diff += abs(t["rewards"][i] - o["rewards"][i]) > 1e-6
                if i in (last_t, last_o):
                    continue
                err = _max_abs(t["obs"][i], o["obs"][i])
                obs_err = max(obs_err, err)
                obs_diff += err > 1e-5
        rows[policy] = {
            "episodes": len(their_eps),
            "length": (len_t, len_o),
            "return": (ret_t, ret_o),
            "ends": sorted({e["end"] or "running" for e in our_eps}),
            "compared": compared,
            "obs_diff": obs_diff,
            "obs_err": obs_err,
            "first_obs_err": max(first_obs) if first_obs else 0.0,
            "rew_diff": rew_diff,
            "rewards": (_values(their_eps), _values(our_eps)),
        }
    return rows


def _max_abs(a: list[float], b: list[float]) -> float:
    a_arr, b_arr = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a_arr.shape != b_arr.shape:
        return float("inf")
    return float(np.max(np.abs(a_arr - b_arr))) if a_arr.size else 0.0


def _values(episodes: list[dict[str, Any]]) -> list[float]:
    """The distinct per-step rewards seen, rounded for printing."""
    return sorted({round(r, 6) for e in episodes for r in e["rewards"]})


def _span(values: list[float], fmt: str = "g") -> str:
    lo, hi = min(values), max(values)
    return f"{lo:{fmt}}" if lo == hi else f"{lo:{fmt}}–{hi:{fmt}}"


def section(args: argparse.Namespace, theirs: dict, ours: dict, results: dict) -> str:
    """The record: command, machine, versions, a table of sizes and one of episodes."""
    from importlib.metadata import version

    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    versions = theirs["versions"]
    lines = [
        f"## Their task ports against ours — {date}",
        "",
        f"`python {' '.join(sys.argv)}`",
        "",
        f"Machine: {machine()}.",
        "",
        f"Theirs: RTRRL-AAAI25 at {git_commit(args.repo)}, popjym at {git_commit(args.popjym)}, "
        f"JAX {versions['jax']}, gymnax {versions['gymnax']}, their evaluation environment as "
        f"`rtrrl.py` builds it. Ours: `rtrrl.envs.make_jax`, JAX {version('jax')}, gymnax "
        f"{version('gymnax')}. {args.episodes} episodes per policy, "
        f"each started on both sides from their start state, with the same actions.",
        "",
        "| task | theirs | obs size (theirs / ours) | actions (theirs / ours) |",
        "|---|---|---|---|",
    ]
    for name in results:
        spec = TASKS[name][0]
        t, o = theirs["tasks"][name], ours[name]
        lines.append(
            f"| {name} | {spec.describe()} | {t['obs_size']} / {o['obs_size']} | "
            f"{t['act_size']} / {o['act_size']} |"
        )
    lines += [
        "",
        "Per policy: episode lengths and returns (min–max over the episodes), our episodes' "
        "end, the per-step reward values, and, over the steps both sides took, how many "
        "observations (within episodes; in brackets the largest difference) and rewards "
        "differ; `start obs` is the largest difference of the first observations.",
        "",
        "| task | policy | length theirs / ours | return theirs / ours | our end | "
        "rewards theirs / ours | steps | obs differ | rewards differ | start obs |",
        "|---|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    for name, rows in results.items():
        for policy, r in rows.items():
            (len_t, len_o), (ret_t, ret_o) = r["length"], r["return"]
            rew_t, rew_o = (_short(v) for v in r["rewards"])
            lines.append(
                f"| {name} | {policy} | {_span(len_t)} / {_span(len_o)} | "
                f"{_span(ret_t, '.4g')} / {_span(ret_o, '.4g')} | {', '.join(r['ends'])} | "
                f"{rew_t} / {rew_o} | {r['compared']} | {_err(r['obs_diff'], r['obs_err'])} | "
                f"{r['rew_diff']} | {_err(None, r['first_obs_err'])} |"
            )
    lines += ["", "Mean returns per policy (theirs / ours): " + _means(results) + "."]
    return "\n".join(lines) + "\n"


def _err(count: int | None, largest: float) -> str:
    """A count of differing observations with the largest difference (or: sizes differ)."""
    text = "sizes differ" if largest == float("inf") else f"{largest:.2g}"
    return text if count is None else f"{count} ({text})"


def _short(values: list[float]) -> str:
    if len(values) > 4:
        return f"{len(values)} values in [{min(values):.4g}, {max(values):.4g}]"
    return ", ".join(f"{v:.4g}" for v in values)


def _means(results: dict[str, dict[str, Any]]) -> str:
    parts = []
    for name, rows in results.items():
        for policy, r in rows.items():
            ret_t, ret_o = r["return"]
            parts.append(
                f"{name} {policy} {statistics.mean(ret_t):.4g} / {statistics.mean(ret_o):.4g}"
            )
    return "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True, help="checkout of RTRRL-AAAI25")
    parser.add_argument("--popjym", type=Path, required=True, help="checkout of popjym")
    parser.add_argument("--python", required=True, help="interpreter of their environment")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated")
    parser.add_argument("--episodes", type=int, default=10, help="per policy and task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--horizon", type=int, default=1000, help="steps at most per episode")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    names = [n for n in args.tasks.split(",") if n]
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise SystemExit(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")
    if not (args.repo / "envs" / "environments.py").is_file():
        raise SystemExit(f"{args.repo} is not a checkout of RTRRL-AAAI25 (no envs/environments.py)")
    if not (args.popjym / "popjym" / "registration.py").is_file():
        raise SystemExit(f"{args.popjym} is not a checkout of FranzKnut/popjym")

    theirs = run_theirs(args, names)
    ours = {name: replay_ours(name, theirs["tasks"][name]) for name in names}
    results = {name: compare(theirs["tasks"][name], ours[name]) for name in names}
    text = section(args, theirs, ours, results)
    publish(text, RESULTS, "# Their task ports against ours", record=args.record)


if __name__ == "__main__":
    main()
