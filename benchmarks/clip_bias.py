"""What clipping the update direction by global norm does to the critic's values.

    python benchmarks/clip_bias.py [--steps 20000] [--clips 1.0,10,none] [--record]

The paper's Table 1 clips the gradient norm at 1.0 (the spec's default ``clip_norm=1.0``); the
authors' code does not clip unless asked. In RTRRL the direction that is clipped is the TD
update ``δ e``, once per step. A task with a reward on every step and a rare terminal
(CartPole's shape) gives small positive ``δ`` on most steps and one large negative ``δ`` when
the episode ends; clipping shrinks only that one, so the critic drifts towards ``1 / (1 − γ)``
(100 at γ = 0.99) whatever the true returns are.

The task here is a synthetic chain that makes the true values known: episodes of exactly
``--length`` steps, reward 1 on every step, the observation ``(t / length, 0)`` (time is
observable), 2 actions that change nothing. The NumPy reference agent (paper defaults, CT-RNN
and linear bodies, ``B = 1``) runs ``--steps`` steps per setting; the table gives the mean
critic value over the last ``--tail`` steps at a few times ``t`` of the episode, beside the true
discounted return-to-go ``(1 − γ^(length − t)) / (1 − γ)``. With ``--record`` the table is
appended to ``benchmarks/results/clip_bias.md`` with the command, date and machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import rtrrl_spec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe as machine  # noqa: E402
from machine import publish  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "clip_bias.md"


def values_along_episode(
    body: str, clip_norm: float | None, steps: int, length: int, tail: int, seed: int = 0
) -> dict[int, float]:
    """Mean critic value at each time ``t`` of the episode over the last ``tail`` steps."""
    config = rtrrl_spec.Config(obs_dim=2, n_actions=2, n_hidden=16, body=body, clip_norm=clip_norm)
    rng = np.random.default_rng(seed)
    agent = rtrrl_spec.init(config, 1, seed)
    t, reward, done = 0, np.zeros(1), np.ones(1, bool)
    sums, counts = np.zeros(length), np.zeros(length)
    for i in range(steps):
        obs = np.array([[t / length, 0.0]])
        noise = rtrrl_spec.draw_noise(config, 1, rng)
        agent, _, info = rtrrl_spec.step(config, agent, obs, reward, done, noise)
        if i >= steps - tail:
            sums[t] += float(info["value"][0])
            counts[t] += 1
        t += 1
        reward, done = np.ones(1), np.array([t >= length])
        if done[0]:
            t = 0
    return {k: sums[k] / counts[k] for k in range(length) if counts[k]}


def _clip(text: str) -> float | None:
    return None if text.strip().lower() == "none" else float(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--length", type=int, default=30, help="steps per episode")
    parser.add_argument("--tail", type=int, default=3_000, help="steps averaged at the end")
    parser.add_argument("--clips", default="1.0,10,none", help="clip_norm values ('none')")
    parser.add_argument("--bodies", default="ctrnn,linear")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args(argv)
    gamma = rtrrl_spec.Config(obs_dim=1, n_actions=2).gamma
    times = [0, args.length // 3, 2 * args.length // 3, args.length - 1]
    truth = {t: (1 - gamma ** (args.length - t)) / (1 - gamma) for t in times}
    header = "| body | clip_norm | " + " | ".join(f"V(t={t})" for t in times) + " |"
    lines = [header, "|---|---|" + "---:|" * len(times)]
    lines.append("| true return-to-go | — | " + " | ".join(f"{truth[t]:.1f}" for t in times) + " |")
    begin = time.perf_counter()
    for body in args.bodies.split(","):
        for text in args.clips.split(","):
            clip = _clip(text)
            v = values_along_episode(body, clip, args.steps, args.length, args.tail)
            lines.append(f"| {body} | {clip} | " + " | ".join(f"{v[t]:.1f}" for t in times) + " |")
            print(lines[-1], flush=True)
    command = "python benchmarks/clip_bias.py " + " ".join(argv or sys.argv[1:])
    report = (
        f"## {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}\n\n`{command.strip()}`\n\n"
        f"Machine: {machine()}. NumPy reference, B = 1, N = 16, paper defaults otherwise; "
        f"episodes of {args.length} steps with reward 1 each, {args.steps:,} steps per row, "
        f"values averaged over the last {args.tail:,} steps "
        f"({time.perf_counter() - begin:.0f} s in all).\n\n" + "\n".join(lines) + "\n"
    )
    publish(report, RESULTS, "# Clipping and the critic", record=args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
