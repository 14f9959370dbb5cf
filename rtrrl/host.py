"""The host engine: a Python loop over a host environment, for any backend and any task.

Each step goes ``backend.draw_noise`` → ``backend.step`` → ``to_numpy(action)`` →
``env.step``. The seeds share one training environment and one evaluation environment, both
built once per run (building a gymnax host environment compiles it); a seed's epoch starts
from its saved epoch boundary (agent, generator, environment state), which is also exactly
where a resumed run starts from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import rtrrl_spec
from rtrrl.errors import CheckpointError
from rtrrl.loop import EpochResult
from rtrrl.settings import EVAL_MAX_STEPS, RunSettings, noise_seed

__all__ = ["HostEngine", "eval_agent_numpy", "evaluate_host"]


def eval_agent_numpy(
    config: rtrrl_spec.Config, agent: dict[str, np.ndarray], episodes: int
) -> dict[str, np.ndarray]:
    """A copy of ``agent`` (NumPy) for ``episodes`` parallel environments: shared arrays
    (parameters, optimizer, feedback) as they are, per-environment state fresh (zero)."""
    fresh = rtrrl_spec.init(config, episodes, 0, dtype=agent["W_A"].dtype.name)
    spec = rtrrl_spec.layout(config, episodes)
    return {k: (fresh[k] if spec[k].group == "env" else np.array(v)) for k, v in agent.items()}


def evaluate_host(
    backend: Any,
    config: rtrrl_spec.Config,
    agent: dict[str, np.ndarray],
    env: Any,
    seed: int,
    eval_steps: int | None = None,
) -> float:
    """Mean return of a frozen copy of ``agent`` (NumPy arrays) over one episode in each of
    ``env``'s environments (a :class:`rtrrl.envs.HostEnv`, reset here with ``seed``).

    Each environment counts its first episode (bounded by the task's time limit, else
    :data:`~rtrrl.settings.EVAL_MAX_STEPS`). With ``eval_steps`` (``env`` then holds one
    environment), the authors' first score instead: ``eval_steps`` steps, the summed reward
    over the episodes that ended. Noise comes from ``np.random.default_rng(seed)`` through
    :func:`rtrrl_spec.draw_noise` whatever the backend, so every backend sees the same
    environment and the same noise.
    """
    frozen = config.replace(lr_td=0.0, lr_rnn=0.0)
    dtype = agent["W_A"].dtype.name
    episodes = env.num_envs
    if eval_steps and episodes != 1:
        raise ValueError(f"eval_steps scores one environment; this env has {episodes}")
    limit = eval_steps or env.spec.max_episode_steps or EVAL_MAX_STEPS
    gen = np.random.default_rng(seed)
    state = backend.from_numpy(eval_agent_numpy(config, agent, episodes))
    obs = env.reset(seed)
    reward = np.zeros(episodes, np.float32)
    done = np.ones(episodes, bool)
    total = np.zeros(episodes)
    finished = np.zeros(episodes, bool)
    ended = 0
    for _ in range(limit):
        noise = backend.from_numpy(rtrrl_spec.draw_noise(frozen, episodes, gen, dtype))
        state, action, _ = backend.step(
            frozen,
            state,
            backend.from_numpy(obs.astype(dtype)),
            backend.from_numpy(reward.astype(dtype)),
            backend.from_numpy(done),
            noise,
        )
        obs, reward, terminated, truncated = env.step(backend.to_numpy(action))
        done = np.asarray(terminated) | np.asarray(truncated)
        if eval_steps:
            total += reward
            ended += int(done.sum())
            continue
        total += np.where(finished, 0.0, reward)
        finished |= done
        if finished.all():
            break
    if eval_steps:  # the authors' eval_model: Σ reward / max(episodes ended, 1)
        return float(total.sum() / max(ended, 1))
    return float(total.mean())


def eval_env_size(settings: RunSettings) -> int:
    """Environments of an evaluation: one episode each, or one for the authors' score."""
    return 1 if settings.eval_steps else settings.eval_episodes


class HostEngine:
    """The :class:`rtrrl.loop.Engine` of the host loop: any backend, any task.

    A seed's state between epochs is its *boundary*: the agent as NumPy (in ``agents``), and
    the generator (``backend.rng_state``), environment state (``env.get_state()``), last
    observation, reward, done flags and episode returns in progress (in ``boundary``).
    """

    name = "host"

    def __init__(self, settings: RunSettings, config: rtrrl_spec.Config, backend: Any) -> None:
        from rtrrl import envs

        self.settings, self.config, self.be = settings, config, backend
        self.agents = [
            rtrrl_spec.init(config, settings.num_envs, seed, dtype=settings.dtype)
            for seed in settings.seeds
        ]
        self.boundary: list[dict[str, Any] | None] = [None] * len(settings.seeds)
        self.env = envs.make_host(settings.task, num_envs=settings.num_envs)
        self.eval_env = envs.make_host(settings.task, num_envs=eval_env_size(settings))
        # The live objects of the member that ran last; they equal its boundary, so the next
        # epoch of the same member continues from them without converting anything back.
        self._live: tuple[int, Any, Any] | None = None

    def snapshot(self) -> tuple[dict[str, np.ndarray], Any]:
        """Stacked agents and every seed's boundary."""
        stacked = {k: np.stack([a[k] for a in self.agents]) for k in self.agents[0]}
        return stacked, {"boundary": list(self.boundary)}

    def restore(self, agents: dict[str, np.ndarray], state: Any) -> None:
        """Continue from a :meth:`snapshot`."""
        boundary = list(state["boundary"])
        if len(boundary) != len(self.agents):
            raise CheckpointError("the checkpoint holds another number of seeds than its settings")
        for b in boundary:
            if b is not None and not isinstance(b["rng"], dict):
                raise CheckpointError(
                    "this host-loop checkpoint was written by an earlier rtrrl (format 1), "
                    "which saved noise generators in a form this version does not read; it "
                    "cannot resume, but `rtrrl eval` still scores it. Nothing was overwritten"
                )
        self.agents = [{k: v[i] for k, v in agents.items()} for i in range(len(boundary))]
        self.boundary = boundary
        self._live = None

    def close(self) -> None:
        """Close both environments."""
        self.env.close()
        self.eval_env.close()

    def _enter(self, i: int, live: tuple[int, Any, Any] | None) -> tuple[Any, Any, dict[str, Any]]:
        """Agent, generator and environment of member ``i`` at its boundary."""
        b, be = self.boundary[i], self.be
        if live is not None and live[0] == i:
            _, agent, rng = live
        else:
            agent = be.from_numpy(self.agents[i])
            seed = self.settings.seeds[i]
            rng = be.rng(noise_seed(seed)) if b is None else be.rng_from_state(b["rng"])
            B = self.settings.num_envs
            if b is None:
                obs = self.env.reset(seed)
                b = {"obs": obs, "reward": np.zeros(B, np.float32), "done": np.ones(B, bool)}
                b["ep_ret"] = np.zeros(B)
            else:
                self.env.set_state(b["env"])
        return agent, rng, b  # type: ignore[return-value]

    def run_epoch(self, active: Sequence[int]) -> dict[int, EpochResult]:
        """One epoch of each member in ``active``, one after another; committed at the end."""
        results: dict[int, EpochResult] = {}
        done: dict[int, tuple[dict[str, np.ndarray], dict[str, Any]]] = {}
        live, self._live = self._live, None
        for i in active:
            agent, rng, b = self._enter(i, live)
            agent, rng, agent_np, b, result = self._epoch(agent, rng, b)
            results[i] = result
            if result.problem is not None:
                return results  # the loop stops the run: nothing to commit
            done[i] = (agent_np, b)
            live = (i, agent, rng)
        for i, (agent_np, b) in done.items():
            self.agents[i], self.boundary[i] = agent_np, b
        self._live = live
        return results

    def _epoch(self, agent: Any, rng: Any, b: dict[str, Any]) -> tuple[Any, ...]:
        """``epoch_steps`` steps of one member from boundary ``b``: the agent, generator,
        agent as NumPy, new boundary and the epoch's result."""
        be, s, config, env = self.be, self.settings, self.config, self.env
        obs, reward, done = b["obs"], b["reward"], b["done"]
        ep_ret = b["ep_ret"].copy()
        returns: list[float] = []
        abs_td = value = 0.0
        problem = None
        try:
            for _ in range(s.epoch_steps):
                noise, rng = be.draw_noise(config, s.num_envs, rng, s.dtype)
                agent, action, info = be.step(
                    config,
                    agent,
                    be.from_numpy(obs.astype(s.dtype)),
                    be.from_numpy(np.asarray(reward).astype(s.dtype)),
                    be.from_numpy(done),
                    noise,
                )
                obs, reward, terminated, truncated = env.step(be.to_numpy(action))
                done = np.asarray(terminated) | np.asarray(truncated)
                ep_ret += reward
                if done.any():
                    returns.extend(ep_ret[done].tolist())
                    ep_ret[done] = 0.0
                abs_td += float(np.abs(be.to_numpy(info["td_error"])).mean())
                value += float(be.to_numpy(info["value"]).mean())
        except rtrrl_spec.SpecError as err:
            # The reference validates its inputs: a non-finite agent is refused mid-epoch;
            # other backends carry the NaN to the check below.
            problem = str(err)
        agent_np = be.to_numpy(agent)
        bad = sorted(k for k, v in agent_np.items() if not np.all(np.isfinite(v)))
        if bad or problem is not None:
            return agent, rng, agent_np, None, EpochResult({}, ", ".join(bad) or problem)
        metrics = {
            "episodes": len(returns),
            "mean_return": float(np.mean(returns)) if returns else math.nan,
            "mean_abs_td": abs_td / s.epoch_steps,
            "mean_value": value / s.epoch_steps,
        }
        boundary = {
            "rng": be.rng_state(rng),
            "env": env.get_state(),
            "obs": np.array(obs),
            "reward": np.array(reward),
            "done": np.array(done),
            "ep_ret": ep_ret,
        }
        return agent, rng, agent_np, boundary, EpochResult(metrics)

    def evaluate(self, seeds: Mapping[int, int]) -> dict[int, float]:
        """Each member's frozen score on the shared evaluation environment."""
        be, config, env, steps = self.be, self.config, self.eval_env, self.settings.eval_steps
        return {
            i: evaluate_host(be, config, self.agents[i], env, seed, steps)
            for i, seed in seeds.items()
        }
