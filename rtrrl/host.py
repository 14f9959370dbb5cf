"""The host engine: a Python loop over a host environment, for any backend and any task.

Each step goes ``backend.draw_noise`` → ``backend.step`` → ``to_numpy(action)`` →
``env.step``. The seeds share one training environment and one evaluation environment, both
built once per run (building a gymnax host environment compiles it); a seed's epoch starts
from its saved epoch boundary (agent, generator, environment state), which is also exactly
where a resumed run starts from.

The backend checks the first step of an epoch or an evaluation in full (the agent against the
config, shapes, dtypes, inputs: ``step(..., check=True)``); after it only the environment's
observations and rewards are new, and a NumPy test of their finiteness decides whether the
next step is checked again, so a NaN from the environment still gets the reference's message
while the other steps skip the backend's per-call check.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

import rtrrl_spec
from rtrrl import checkpoint
from rtrrl.errors import CheckpointError
from rtrrl.loop import EpochResult, agent_problem
from rtrrl.settings import EVAL_MAX_STEPS, RunSettings, noise_seed

__all__ = ["HostEngine", "eval_agent_numpy", "evaluate_host"]


def stepper(backend: Any) -> Callable[..., Any]:
    """``backend.step`` called as ``step(config, agent, obs, reward, done, noise, check)``:
    ``check`` is passed on when the backend's step takes it (the fast backends do), and
    dropped otherwise (the backend then decides, as the NumPy reference always checks).
    A step that takes ``donate`` gets ``donate=True``: the loops here pass each step's agent
    to the next step and never read it again, so the backend may reuse its memory."""
    try:
        parameters = inspect.signature(backend.step).parameters
    except (TypeError, ValueError):  # a step without a readable signature
        parameters = {}
    options = {"donate": True} if "donate" in parameters else {}
    if "check" in parameters:
        return lambda *args, check: backend.step(*args, check=check, **options)
    return lambda *args, check: backend.step(*args, **options)


def needs_check(first: bool, obs: np.ndarray, reward: Any) -> bool:
    """Whether the next step is checked: the first of a loop, or one whose environment
    output holds a NaN or an infinity (the check then names it)."""
    return first or not (np.isfinite(obs).all() and np.isfinite(reward).all())


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
    step = stepper(backend)
    for t in range(limit):
        noise = backend.from_numpy(rtrrl_spec.draw_noise(frozen, episodes, gen, dtype))
        state, action, _ = step(
            frozen,
            state,
            backend.from_numpy(obs.astype(dtype)),
            backend.from_numpy(reward.astype(dtype)),
            backend.from_numpy(done),
            noise,
            check=needs_check(t == 0, obs, reward),
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
        # Members' environments that cannot be snapshotted, kept live between their epochs,
        # and whether a restart without environment state was announced (once per run).
        self._held: dict[int, Any] = {}
        self._restarted = False

    def snapshot(self) -> tuple[dict[str, np.ndarray], Any]:
        """Stacked agents and every seed's boundary: ``{"boundary": [None or {"rng": dict of
        arrays, "env": env.get_state(), "obs", "reward", "done", "ep_ret": arrays}]}``.

        The checkpoint stores it as arrays and JSON (:mod:`rtrrl.checkpoint`): a gymnax
        environment's state (a pytree of arrays) as its leaves, a gymnasium environment's
        (pickled sub-environments, bytes) in the pickle file that only resume reads.
        """
        stacked = {k: np.stack([a[k] for a in self.agents]) for k in self.agents[0]}
        return stacked, {"boundary": list(self.boundary)}

    def restore(self, agents: dict[str, np.ndarray], state: Any) -> None:
        """Continue from a :meth:`snapshot`, as saved and read back by a checkpoint: the
        environment states are rebuilt (:func:`rtrrl.checkpoint.resolve`) in the structure
        this run's live training environment gives, which also checks they are this task's."""
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
        template = None
        if any(b is not None and checkpoint.needs_template(b["env"]) for b in boundary):
            self.env.reset(self.settings.seeds[0])  # every epoch sets its own state first
            template = self.env.get_state()
        boundary = [
            None if b is None else {**b, "env": checkpoint.resolve(b["env"], template)}
            for b in boundary
        ]
        shape = (self.settings.num_envs, self.env.spec.obs_dim)
        for b in boundary:
            if b is not None and np.shape(b["obs"]) != shape:
                raise CheckpointError(
                    f"the checkpoint's observations have shape {np.shape(b['obs'])}, this "
                    f"task's {shape}: was it written for another task? Nothing was overwritten"
                )
        self.agents = [{k: v[i] for k, v in agents.items()} for i in range(len(boundary))]
        self.boundary = boundary
        self._live = None

    def close(self) -> None:
        """Close both environments."""
        self.env.close()
        self.eval_env.close()

    def _enter(self, i: int, live: tuple[int, Any, Any] | None) -> tuple[Any, Any, dict[str, Any]]:
        """Agent, generator and environment of member ``i`` at its boundary.

        An environment without snapshots (``get_state`` gave ``None``) is not restored: the
        member that ran last keeps its live sub-environments (``env.detach()``) and gets them
        back at its next epoch, so every member continues its own episodes. Only a run
        resumed in a new process, whose checkpoint has no environment state, restarts the
        environment with a fresh reset (and says so).
        """
        b, be = self.boundary[i], self.be
        if live is not None and live[0] == i:
            _, agent, rng = live
            return agent, rng, b  # type: ignore[return-value]
        agent = be.from_numpy(self.agents[i])
        seed = self.settings.seeds[i]
        rng = be.rng(noise_seed(seed)) if b is None else be.rng_from_state(b["rng"])
        if live is not None and getattr(self.env, "snapshots", True) is False:
            self._held[live[0]] = self.env.detach()
        if i in self._held:
            self.env.attach(self._held.pop(i))
            return agent, rng, b  # type: ignore[return-value]
        if b is not None and b["env"] is not None:
            self.env.set_state(b["env"])
            return agent, rng, b
        if b is not None and not self._restarted:  # resumed without environment state
            self._restarted = True
            warnings.warn(
                f"{self.settings.task}: the checkpoint holds no state of this environment "
                "(it has no snapshots); it restarts with a fresh reset, and the episodes in "
                "progress when the run stopped are dropped",
                RuntimeWarning,
                stacklevel=2,
            )
        B = self.settings.num_envs
        fresh = {"obs": self.env.reset(seed), "reward": np.zeros(B, np.float32)}
        fresh.update(done=np.ones(B, bool), ep_ret=np.zeros(B))
        return agent, rng, {**(b or {}), **fresh}

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
        step = stepper(be)
        try:
            for t in range(s.epoch_steps):
                noise, rng = be.draw_noise(config, s.num_envs, rng, s.dtype)
                agent, action, info = step(
                    config,
                    agent,
                    be.from_numpy(obs.astype(s.dtype)),
                    be.from_numpy(np.asarray(reward).astype(s.dtype)),
                    be.from_numpy(done),
                    noise,
                    check=needs_check(t == 0, obs, reward),
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
        problem = agent_problem(config, agent_np) or problem  # non-finite or exploded
        if problem is not None:
            return agent, rng, agent_np, None, EpochResult({}, problem)
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
