"""The fused JAX path: a gymnax environment and the agent in one ``lax.scan`` under ``jit``.

Modelled on purejaxrl: :func:`make_train` returns pure functions that read top to bottom,

- ``init(agent, key) -> carry``: reset ``B`` environments; the first agent step sees the
  reset observation with reward 0 and ``done = True``;
- ``epoch(carry) -> (carry, metrics)``: the epoch's noise and environment keys drawn up
  front, then ONE ``lax.scan`` of ``epoch_steps`` steps of *agent step → environment step*,
  with the episode-return bookkeeping in the carry;
- ``evaluate(agent, key) -> score``: a frozen copy of the agent (``lr_td = lr_rnn = 0``) on
  ``eval_episodes`` environments run in parallel (``vmap``), a ``lax.scan`` of the task's time
  limit, each environment counting its first episode; or, with ``eval_steps`` (the score of the
  authors' first public code, :class:`rtrrl.settings.RunSettings`), one environment for
  ``eval_steps`` steps, the summed reward divided by the number of episodes that ended;

and a population of seeds is ONE ``jax.vmap`` of those functions over the seed axis
(:func:`make_population`). :class:`FusedEngine` is the :class:`rtrrl.loop.Engine` that drives
it one epoch per call, so the loop's progress bar, evaluations, early stopping and checkpoints
work as on the host loop.

A run's agents share one config, whose numbers (``rtrrl_spec.numbers_of``: learning rates,
discount, trace decays, clip norm, ...) are constants of the compiled code. With
``per_member=True`` they are arguments instead, one row per member
(:func:`population_numbers`), so the members of ONE population may differ in every number
while sharing the structure (``rtrrl_spec.structure_of``): a hyper-parameter sweep
(:mod:`rtrrl.sweeps`) in one vmapped scan.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import rtrrl_spec
from rtrrl.backends import jax as jaxbe
from rtrrl.envs import batch_reset, batch_step
from rtrrl.errors import CheckpointError
from rtrrl.loop import EpochResult, exploded, non_finite, param_names
from rtrrl.settings import EVAL_MAX_STEPS, RunSettings, noise_seed

__all__ = [
    "FusedEngine",
    "compiler_options",
    "make_population",
    "make_train",
    "population_numbers",
]

Carry = dict[str, Any]
#: A config's numbers (``rtrrl_spec.numbers_of``) as JAX arrays, one row per member.
Numbers = dict[str, jax.Array]
# The run settings' defaults, so that these functions default as a run does.
_DEFAULTS = RunSettings()
#: Members per block of a population's epoch (see :func:`make_population`).
MEMBER_BLOCK = 64
#: The metrics of an epoch that the loop records (an epoch also reports its checks).
_METRICS = ("episodes", "mean_return", "mean_abs_td", "mean_value")


def _env_names(config: rtrrl_spec.Config) -> frozenset[str]:
    return frozenset(k for k, v in rtrrl_spec.layout(config, 1).items() if v.group == "env")


def _steps(
    config: rtrrl_spec.Config, dtype: str, per_member: bool
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The training and evaluation steps, ``fn(agent, obs, reward, done, noise, numbers)``.

    The evaluation step is the training step at learning rates 0: Adam moves nothing, so the
    copy is frozen (its moments change, and are dropped). With ``per_member`` the numbers come
    with each call (a member's row); else they are ``config``'s, constants of the trace, and
    the last argument is ``None``.
    """
    if not per_member:
        train = jaxbe.make_step(config, dtype)
        frozen = jaxbe.make_step(config.replace(lr_td=0.0, lr_rnn=0.0), dtype)
        return (
            lambda agent, obs, reward, done, noise, n: train(agent, obs, reward, done, noise),
            lambda agent, obs, reward, done, noise, n: frozen(agent, obs, reward, done, noise),
        )
    structure = rtrrl_spec.structure_of(config)

    def train_step(agent: Any, obs: Any, reward: Any, done: Any, noise: Any, n: Any) -> Any:
        if n is None:  # the structure's default numbers would be used without a word
            raise TypeError("a per-member epoch or evaluation needs the member's numbers")
        return jaxbe.step_unchecked(structure, agent, obs, reward, done, noise, numbers=n)

    def eval_step(agent: Any, obs: Any, reward: Any, done: Any, noise: Any, n: Any) -> Any:
        if n is None:
            raise TypeError("a per-member epoch or evaluation needs the member's numbers")
        zero = {k: jnp.zeros_like(n[k]) for k in ("lr_td", "lr_rnn")}
        return train_step(agent, obs, reward, done, noise, {**n, **zero})

    return train_step, eval_step


def population_numbers(
    configs: Sequence[rtrrl_spec.Config], dtype: str = _DEFAULTS.dtype
) -> tuple[rtrrl_spec.Config, Numbers]:
    """The structure ``configs`` share and their numbers, stacked on a leading member axis:
    what :func:`make_population` with ``per_member=True`` takes.

    ``clip_norm=None`` among members that clip is the one structural difference allowed: the
    population takes the clipped structure, and a member without clip gets the dtype's
    largest finite number as its clip norm. The clip scales by ``c / max(norm, c)``, which is
    then exactly 1 for every finite norm below it, and ``x * 1 == x``: the member computes what
    an unclipped agent does. (``inf`` would not do: ``inf / inf`` is NaN.) Other structural
    differences (sizes, modes, ``reward_rate_lr`` set or not) are a ``SpecError``.
    """
    configs = list(configs)
    if not configs:
        raise rtrrl_spec.SpecError("a population needs at least one config")
    clipped = any(c.clip_norm is not None for c in configs)
    structures = {
        rtrrl_spec.structure_of(c.replace(clip_norm=1.0) if clipped else c) for c in configs
    }
    if len(structures) != 1:
        raise rtrrl_spec.SpecError(
            "a population's configs must share their structure (sizes and modes) and differ "
            "only in numbers (learning rates, discount, clip norm, ...); got several structures"
        )
    no_clip = np.asarray(np.finfo(dtype).max, dtype)
    rows = []
    for c in configs:
        row = dict(rtrrl_spec.numbers_of(c, dtype))
        if clipped and c.clip_norm is None:
            row["clip_norm"] = no_clip
        rows.append(row)
    numbers = {k: jnp.asarray(np.stack([r[k] for r in rows])) for k in rows[0]}
    return structures.pop(), numbers


def make_train(
    config: rtrrl_spec.Config,
    env: Any,
    *,
    num_envs: int = _DEFAULTS.num_envs,
    epoch_steps: int = _DEFAULTS.epoch_steps,
    eval_episodes: int = _DEFAULTS.eval_episodes,
    eval_steps: int | None = _DEFAULTS.eval_steps,
    dtype: str = _DEFAULTS.dtype,
    per_member: bool = False,
    reset_every_step: bool = False,
) -> tuple[Callable[..., Carry], Callable[..., Any], Callable[..., Any]]:
    """``(init, epoch, evaluate)`` for one agent on ``env`` (an :class:`rtrrl.envs.JaxEnv`).

    All three are pure and un-jitted: jit or vmap them as needed (:func:`make_population`,
    which jits with ``compiler_options=compiler_options()``, see :func:`compiler_options`).
    Random keys are carried as raw key data (``uint32``), so a carry is plain arrays and
    saves to NumPy as it is.

    ``per_member``: the numbers are an argument (a row of :func:`population_numbers`),
    ``epoch(carry, numbers)``, ``evaluate(agent, key, numbers)``; else constants of the code.
    Each of the three also takes the environment's gymnax parameters as its last argument,
    ``env_params`` (a row of :func:`rtrrl.envs.make_jax_tasks`: a member of a population of
    tasks that differ only in them); ``None``: ``env``'s own, constants of the code.
    ``reset_every_step``: see :func:`make_population`.
    """
    B = num_envs
    # The authors' first score runs one environment through episode after episode.
    E = 1 if eval_steps else eval_episodes
    train_step, eval_step = _steps(config, dtype, per_member)
    draw_noise = jaxbe.JaxBackend().draw_noise
    structure = rtrrl_spec.structure_of(config)
    env_names = _env_names(config)
    float_names, params = _checked_arrays(config)
    eval_len = eval_steps or int(env.spec.max_episode_steps or EVAL_MAX_STEPS)
    reset = functools.partial(batch_reset, env)
    env_step = functools.partial(batch_step, env, reset_every_step=reset_every_step)

    def init(agent: dict[str, jax.Array], key_data: jax.Array, env_params: Any = None) -> Carry:
        key, k_reset = jax.random.split(jax.random.wrap_key_data(key_data))
        env_state, obs = reset(jax.random.split(k_reset, B), env_params)
        return {
            "agent": agent,
            "env_state": env_state,
            "obs": obs.astype(dtype),
            "reward": jnp.zeros(B, dtype),
            "done": jnp.ones(B, bool),
            "ep_return": jnp.zeros(B, dtype),
            "key": jax.random.key_data(key),
        }

    def epoch(
        carry: Carry, n: Numbers | None = None, env_params: Any = None
    ) -> tuple[Carry, dict[str, jax.Array]]:
        # The epoch's randomness is drawn up front, in two vectorized calls: on the CPU a
        # threefry call inside the scan body costs about a microsecond however few numbers it
        # makes, more than the environment step itself. Per step the scan then only reads its
        # slice: noise (T, B, K) for the agent, one key per environment for its step.
        key = jax.random.wrap_key_data(carry["key"])
        key, k_noise, k_env = jax.random.split(key, 3)
        noise, _ = draw_noise(config, epoch_steps * B, k_noise, dtype)
        noise = noise.reshape((epoch_steps, B) + noise.shape[1:])
        env_keys = jax.random.split(k_env, (epoch_steps, B))

        def step(c: tuple[Carry, jax.Array, jax.Array], xs: Any) -> tuple[Any, Any]:
            carry, ret_sum, n_done = c
            noise, k_env = xs
            agent, action, info = train_step(
                carry["agent"], carry["obs"], carry["reward"], carry["done"], noise, n
            )
            env_state, obs, reward, terminated, truncated = env_step(
                k_env, carry["env_state"], action, params=env_params
            )
            # terminated | truncated: time limits end the episode for the agent (spec default).
            done = terminated | truncated
            ep_return = carry["ep_return"] + reward
            # Fixed accumulator types: with JAX_ENABLE_X64 a plain sum of flags is int64, which
            # a scan refuses against the int32 it started from.
            ret_sum = ret_sum + jnp.sum(jnp.where(done, ep_return, 0.0)).astype(ret_sum.dtype)
            n_done = n_done + jnp.sum(done, dtype=jnp.int32)
            carry = {
                "agent": agent,
                "env_state": env_state,
                "obs": obs.astype(dtype),
                "reward": reward.astype(dtype),
                "done": done,
                "ep_return": jnp.where(done, 0.0, ep_return).astype(dtype),
                "key": carry["key"],
            }
            out = (jnp.mean(jnp.abs(info["td_error"])), jnp.mean(info["value"]))
            return (carry, ret_sum, n_done), out

        # Inside the scan the Adam moments are one flat vector per optimizer group
        # (jaxbe.pack_moments): fewer, larger operations, which is what a single agent at
        # B = 1 pays for (benchmarks/results/train_speed.md); the carry outside an epoch keeps
        # the canonical layout.
        agent = jaxbe.pack_moments(structure, carry["agent"])
        carry = dict(carry, agent=agent, key=jax.random.key_data(key))
        zero = jnp.zeros((), dtype)
        (carry, ret_sum, n_done), (abs_td, value) = jax.lax.scan(
            step, (carry, zero, jnp.zeros((), jnp.int32)), (noise, env_keys)
        )
        carry["agent"] = jaxbe.unpack_moments(structure, carry["agent"])
        metrics = {
            "episodes": n_done,
            "mean_return": jnp.where(n_done > 0, ret_sum / jnp.maximum(n_done, 1), jnp.nan),
            "mean_abs_td": jnp.mean(abs_td),
            "mean_value": jnp.mean(value),
            **_agent_checks(carry["agent"], float_names, params),
        }
        return carry, metrics

    def evaluate(
        agent: dict[str, jax.Array],
        key_data: jax.Array,
        n: Numbers | None = None,
        env_params: Any = None,
    ) -> jax.Array:
        frozen = {
            k: jnp.zeros((E,) + v.shape[1:], v.dtype) if k in env_names else v
            for k, v in agent.items()
        }
        key, k_reset = jax.random.split(jax.random.wrap_key_data(key_data))
        env_state, obs = reset(jax.random.split(k_reset, E), env_params)

        def step(c: tuple[Any, ...], _: None) -> tuple[Any, None]:
            agent, env_state, obs, reward, done, key, total, finished = c
            key, k_noise, k_env = jax.random.split(key, 3)
            noise, _ = draw_noise(config, E, k_noise, dtype)
            agent, action, _ = eval_step(agent, obs, reward, done, noise, n)
            env_state, obs, reward, terminated, truncated = env_step(
                jax.random.split(k_env, E), env_state, action, params=env_params
            )
            done = terminated | truncated
            if eval_steps:  # every step's reward; `finished` counts the episodes that ended
                total = total + reward
                finished = finished + done
            else:  # each environment's first episode only
                total = total + jnp.where(finished, 0.0, reward)
                finished = finished | done
            obs, reward = obs.astype(dtype), reward.astype(dtype)
            return (agent, env_state, obs, reward, done, key, total, finished), None

        init_c = (
            frozen,
            env_state,
            obs.astype(dtype),
            jnp.zeros(E, dtype),
            jnp.ones(E, bool),
            key,
            jnp.zeros(E, jnp.float32),
            jnp.zeros(E, jnp.int32) if eval_steps else jnp.zeros(E, bool),
        )
        c, _ = jax.lax.scan(step, init_c, None, length=eval_len)
        total, finished = c[6], c[7]
        if eval_steps:  # the authors' eval_model: Σ reward / max(episodes ended, 1)
            return jnp.sum(total) / jnp.maximum(jnp.sum(finished), 1)
        return jnp.mean(total)

    return init, epoch, evaluate


def _agent_checks(
    agent: dict[str, jax.Array], float_names: Sequence[str], params: Sequence[str]
) -> dict[str, jax.Array]:
    """What :meth:`FusedEngine.run_epoch` checks at the boundary: each float array finite,
    and each parameter's largest magnitude (``loop.exploded``)."""
    return {
        "finite": jnp.stack([jnp.all(jnp.isfinite(agent[k])) for k in float_names]),
        "peak": jnp.stack([jnp.max(jnp.abs(agent[k])) for k in params]),
    }


def _checked_arrays(config: rtrrl_spec.Config) -> tuple[list[str], tuple[str, ...]]:
    """The arrays an epoch checks: every float array of the agent (finite?) and its
    parameters (exploded?), in canonical order."""
    layout = rtrrl_spec.layout(config, 1)
    return [k for k, v in layout.items() if v.dtype == "float"], param_names(config)


def make_population(
    config: rtrrl_spec.Config,
    env: Any,
    *,
    num_envs: int = _DEFAULTS.num_envs,
    epoch_steps: int = _DEFAULTS.epoch_steps,
    eval_episodes: int = _DEFAULTS.eval_episodes,
    eval_steps: int | None = _DEFAULTS.eval_steps,
    dtype: str = _DEFAULTS.dtype,
    per_member: bool = False,
    reset_every_step: bool = False,
    member_block: int | None = MEMBER_BLOCK,
    devices: Sequence[jax.Device] | None = None,
) -> tuple[Callable[..., Carry], Callable[..., Any], Callable[..., Any]]:
    """:func:`make_train` for ``P`` members at once: ONE ``vmap`` over a leading member axis.

    ``epoch(carry, active)`` leaves members with ``active[p] = False`` (stopped early)
    unchanged, so a population keeps its members in step while each stops on its own.
    With ``per_member`` every member has its own numbers: ``epoch(carry, active, numbers)``
    and ``evaluate(agents, keys, numbers)``, ``numbers`` from :func:`population_numbers`
    (whose structure ``config`` must be). Members on different tasks that are ``env`` at
    other gymnax parameters (:func:`rtrrl.envs.make_jax_tasks`) take their rows of those as
    one more argument: ``init(agents, keys, env_params)``, ``epoch(carry, active, numbers,
    env_params)``, ``evaluate(agents, keys, numbers, env_params)``. All three are jitted.

    The environments step by :func:`rtrrl.envs.batch_step`: fresh episodes are computed on a
    step only if an episode ended, decided once for every environment of every member (the
    decision under the member ``vmap`` is not vmapped, see ``batch_step``).
    ``reset_every_step=True`` computes them at every step and keeps them where an episode
    ended: the same numbers, slower, the reference of the tests and of
    ``benchmarks/reset_speed.py``.

    ``member_block``: a population of more members runs its epoch in blocks of this many, one
    block's whole epoch after the other (:func:`_in_member_blocks`), so that the arrays a
    step reads and writes (parameters, traces, Adam's moments: tens of kilobytes a member)
    stay in the CPU's cache through the epoch instead of streaming from memory every step;
    members are independent, so each computes what it would in one block. ``None``: one
    block (``benchmarks/sweep_speed.py`` compares the two).

    ``devices``: the members are shared out over these devices, each running its share (in
    blocks) at the same time as the others (:func:`_over_devices`): on a CPU, JAX's CPU
    devices (``jax_num_cpu_devices``, :func:`rtrrl.threads.cpu_devices_before_jax_starts`)
    are its cores, so a population uses every core, where one agent at B = 1 is a chain of
    small operations that uses one. ``None`` or one device: all on JAX's default device.
    """
    init, epoch, evaluate = make_train(
        config,
        env,
        num_envs=num_envs,
        epoch_steps=epoch_steps,
        eval_episodes=eval_episodes,
        eval_steps=eval_steps,
        dtype=dtype,
        per_member=per_member,
        reset_every_step=reset_every_step,
    )
    v_epoch = _in_member_blocks(jax.vmap(epoch), member_block)
    v_evaluate = jax.vmap(evaluate)

    def population_epoch(carry: Carry, active: jax.Array, *per_member: Any) -> tuple[Carry, Any]:
        new, metrics = v_epoch(carry, *per_member)

        def keep(n: jax.Array, o: jax.Array) -> jax.Array:
            mask = active.reshape(active.shape + (1,) * (n.ndim - 1))
            return jnp.where(mask, n, o)

        return jax.tree_util.tree_map(keep, new, carry), metrics

    if devices is not None and len(devices) > 1:
        population_epoch = _over_devices(population_epoch, devices)
        v_evaluate = _over_devices(v_evaluate, devices)
    options = compiler_options()
    return (
        jax.jit(jax.vmap(init)),
        jax.jit(population_epoch, compiler_options=options),
        jax.jit(v_evaluate, compiler_options=options),
    )


def _padded(tree: Any, members: int) -> Any:
    """Every leaf of ``tree`` (a leading member axis) with its last member repeated up to
    ``members``."""

    def pad(x: Any) -> Any:
        x = jnp.asarray(x)
        extra = members - x.shape[0]
        return jnp.concatenate([x, jnp.repeat(x[-1:], extra, axis=0)]) if extra else x

    return jax.tree_util.tree_map(pad, tree)


def _in_member_blocks(v_fn: Callable[..., Any], block: int | None) -> Callable[..., Any]:
    """``v_fn`` (vmapped over a leading member axis of every argument and result) over
    blocks of at most ``block`` members, one after the other under ``lax.map``.

    The blocks are of equal size (``ceil(P / ceil(P / block))``), the last member repeated
    to fill the last block and its copies dropped from the results: every member then runs
    in the same compiled kernel (a block of another size may round differently), and at most
    one member per block is computed twice."""
    if block is not None and block < 1:
        raise ValueError(f"member_block must be a positive number of members or None, got {block}")

    def blocked(*args: Any) -> Any:
        members = jax.tree_util.tree_leaves(args)[0].shape[0]
        if block is None or members <= block:
            return v_fn(*args)
        n_blocks = -(-members // block)
        size = -(-members // n_blocks)

        def to_blocks(x: jax.Array) -> jax.Array:
            return x.reshape((n_blocks, size) + x.shape[1:])

        blocks = jax.tree_util.tree_map(to_blocks, _padded(args, n_blocks * size))
        out = jax.lax.map(lambda a: v_fn(*a), blocks)
        return jax.tree_util.tree_map(lambda x: x.reshape((-1,) + x.shape[2:])[:members], out)

    return blocked


def _over_devices(v_fn: Callable[..., Any], devices: Sequence[jax.Device]) -> Callable[..., Any]:
    """``v_fn`` (vmapped over a leading member axis of every argument and result) with the
    members shared out over ``devices`` in equal, consecutive shares (``shard_map``), each
    device running its share at the same time as the others.

    Members are independent, so each computes on its device what it would on one: the
    shares are padded to equal size with copies of the last member, whose results are
    dropped; a population of fewer members than devices uses one device per member."""

    def sharded(*args: Any) -> Any:
        members = jax.tree_util.tree_leaves(args)[0].shape[0]
        used = min(len(devices), members)
        if used == 1:
            return v_fn(*args)
        share = -(-members // used)
        mesh = jax.sharding.Mesh(np.asarray(devices[:used]), ("members",))
        spec = jax.sharding.PartitionSpec("members")
        run = jax.shard_map(
            v_fn, mesh=mesh, in_specs=(spec,) * len(args), out_specs=spec, check_vma=False
        )
        out = run(*_padded(args, used * share))
        return jax.tree_util.tree_map(lambda x: x[:members], out)

    return sharded


_REGION_COPIES = {"xla_cpu_copy_insertion_use_region_analysis": True}


@functools.lru_cache(maxsize=1)
def compiler_options() -> dict[str, Any] | None:
    """XLA options for jitting the fused epoch and evaluation (``jax.jit(compiler_options=)``).

    On the CPU: copy insertion with region analysis. A ``lax.scan`` body reads last step's
    carry and writes this step's into the same buffers; the default analysis copies most carried
    arrays every step to keep them apart (24 copy kernels per step for RFLO N = 32, B = 1), the
    region analysis proves most of them unneeded (8 left). The math is unchanged; the compiled
    kernels may round differently in the last bit. ``None`` (plain ``jit``) on other platforms
    or where this XLA does not know the option.
    """
    if jax.default_backend() != "cpu":
        return None
    try:
        jax.jit(lambda x: x + 1, compiler_options=_REGION_COPIES).lower(np.float32(0)).compile()
    except Exception:  # an XLA without this option: plain jit
        return None
    return dict(_REGION_COPIES)


def _member_env_params(tasks: Sequence[str]) -> Any:
    """Each member's row of the gymnax parameters of its task (``tasks``: one per member)."""
    from rtrrl import envs

    distinct = list(dict.fromkeys(tasks))
    _, stacked = envs.make_jax_tasks(distinct)
    rows = jnp.asarray([distinct.index(t) for t in tasks])
    return jax.tree_util.tree_map(lambda x: x[rows], stacked)


def _key_data(seed: int) -> np.ndarray:
    return np.asarray(jax.random.key_data(jax.random.key(seed)))


def _without_agent(carry: Carry) -> Carry:
    """The carry less its agent (which a checkpoint stores in the canonical layout)."""
    return {k: v for k, v in carry.items() if k != "agent"}


class FusedEngine:
    """The :class:`rtrrl.loop.Engine` of the fused path: :func:`make_population` over the
    run's seeds, one jitted epoch (all members at once, stopped ones masked) per call.

    ``members``: ``(config, seed)`` per member, configs of ``config``'s structure that may
    differ in every number (:func:`population_numbers`): a sweep's population
    (:mod:`rtrrl.sweeps`), whose numbers are arguments of the compiled code. ``None`` (a
    run): ``config`` with each of ``settings.seeds``, its numbers constants of the code.
    Either way the members are shared out over every device of JAX's default backend
    (``make_population``'s ``devices``; on a CPU, one per core: :mod:`rtrrl.threads`), in
    equal shares: the engine adds copies of the last member, always held, to make them equal
    once, rather than every epoch (which costs more than a small population's epoch gains);
    its snapshots hold the members only. ``devices``: others than those (one, to keep a
    population on one device).

    ``tasks``: with ``members``, each member's task, where they differ: tasks that are one
    environment at different gymnax parameters (:func:`rtrrl.envs.make_jax_tasks`), each
    member stepping its task's; ``None``: every member on ``settings.task``.
    """

    name = "fused"

    def __init__(
        self,
        settings: RunSettings,
        config: rtrrl_spec.Config,
        members: Sequence[tuple[rtrrl_spec.Config, int]] | None = None,
        devices: Sequence[jax.Device] | None = None,
        tasks: Sequence[str] | None = None,
    ) -> None:
        self.settings = settings
        B, dtype = settings.num_envs, settings.dtype
        if members is None:
            seeds = list(settings.seeds)
            agents = jaxbe.init_population(config, seeds, B, dtype)
            self.member_args: tuple[Any, ...] = ()
        else:
            seeds = [int(seed) for _, seed in members]
            config, numbers = population_numbers([c for c, _ in members], dtype)
            inits = [rtrrl_spec.init(c, B, seed, dtype=dtype) for c, seed in members]
            agents = {k: jnp.asarray(np.stack([a[k] for a in inits])) for k in inits[0]}
            self.name = "sweep"
        self.size = len(seeds)
        devices = tuple(devices or jax.devices())
        shares = min(len(devices), self.size)
        self._padded = -(-self.size // shares) * shares
        task, env_params = settings.task, ()
        if tasks is not None:
            if members is None or len(tasks) != len(members):
                raise ValueError("tasks: one task per member of a sweep's population")
            task = tasks[0]
            if len(set(tasks)) > 1:
                env_params = (_member_env_params(tasks),)
        if members is not None:  # what every compiled call takes per member, after the carry
            self.member_args = _padded((numbers, *env_params), self._padded)
        self.init, self.epoch, self.evaluate_population = _cached_population(
            config,
            task,
            B,
            settings.epoch_steps,
            settings.eval_episodes,
            settings.eval_steps,
            dtype,
            members is not None,
            devices[:shares],
        )
        self.float_names, self.params = _checked_arrays(config)
        keys = jnp.asarray(np.stack([_key_data(noise_seed(s)) for s in seeds]))
        self.carry = self.init(
            _padded(agents, self._padded), _padded(keys, self._padded), *self.member_args[1:]
        )

    def snapshot(self) -> tuple[dict[str, np.ndarray], Any]:
        """Stacked agents and the rest of the carry as NumPy (at an epoch boundary)."""
        members = self.size
        agents = {k: np.asarray(v)[:members] for k, v in self.carry["agent"].items()}
        # The agents are stored once, in the canonical layout; the rest of the carry's leaves
        # (env state, observations, keys, returns), in tree order, is the engine state: a
        # list of arrays, which a checkpoint stores as they are.
        rest = jax.tree_util.tree_leaves(_without_agent(self.carry))
        leaves = [np.asarray(v)[:members] for v in rest]
        return agents, {"carry": leaves}

    def restore(self, agents: dict[str, np.ndarray], state: Any) -> None:
        """Continue from a :meth:`snapshot` (the fresh carry gives the tree, shapes and
        dtypes). Checkpoints of formats 1 and 2 saved the whole carry, agent included: they
        are told apart by their number of leaves, and their agent leaves are not used."""
        saved = list(state["carry"])
        rest = _without_agent(self.carry)
        leaves, treedef = jax.tree_util.tree_flatten(rest)
        if len(saved) != len(leaves):
            full, full_def = jax.tree_util.tree_flatten(self.carry)
            if len(saved) != len(full):
                raise CheckpointError(
                    "the checkpoint's environment state does not match this task's; "
                    "nothing was overwritten"
                )
            leaves, treedef = full, full_def
        for i, (v, leaf) in enumerate(zip(saved, leaves, strict=True)):
            shape = (self.size, *leaf.shape[1:])
            if np.shape(v) != shape:
                raise CheckpointError(
                    f"the checkpoint's fused state does not fit this run (leaf {i} has shape "
                    f"{np.shape(v)}, this run's {shape}): was it written for another "
                    "task or number of environments? Nothing was overwritten"
                )
        restored = [
            jnp.asarray(np.asarray(v, dtype=leaf.dtype))
            for v, leaf in zip(saved, leaves, strict=True)
        ]
        carry = dict(jax.tree_util.tree_unflatten(treedef, restored))
        carry["agent"] = {k: jnp.asarray(v) for k, v in agents.items()}
        self.carry = _padded(carry, self._padded)

    def run_epoch(self, active: Sequence[int]) -> dict[int, EpochResult]:
        """One epoch of every member in ``active`` (the others held by the mask); a member
        whose agent went non-finite or exploded (:func:`rtrrl.loop.exploded`) reports it,
        and then nothing is committed."""
        mask = np.zeros(self._padded, bool)  # the copies that make the shares equal: held
        mask[list(active)] = True
        carry, metrics = self.epoch(self.carry, jnp.asarray(mask), *self.member_args)
        metrics = jax.device_get(metrics)
        results = {}
        for i in active:
            values = {k: float(metrics[k][i]) for k in _METRICS}
            finite = zip(self.float_names, metrics["finite"][i], strict=True)
            bad = [k for k, ok in finite if not ok]
            peaks = dict(zip(self.params, metrics["peak"][i].tolist(), strict=True))
            problem = non_finite(bad) if bad else exploded(peaks)
            results[i] = EpochResult(values, problem)
        if all(r.problem is None for r in results.values()):
            self.carry = carry
        return results

    def evaluate(self, seeds: Mapping[int, int]) -> dict[int, float]:
        """Scores of the members in ``seeds``. Every member is evaluated (one vmapped call);
        each is independent of the others, so those not asked for get any key."""
        keys = jnp.asarray(np.stack([_key_data(seeds.get(i, 0)) for i in range(self._padded)]))
        scores = np.asarray(self.evaluate_population(self.carry["agent"], keys, *self.member_args))
        return {i: float(scores[i]) for i in seeds}

    def close(self) -> None:
        """Nothing to release: the compiled functions stay cached for a resume."""


@functools.lru_cache(maxsize=8)
def _cached_population(
    config: rtrrl_spec.Config,
    task: str,
    B: int,
    epoch_steps: int,
    E: int,
    eval_steps: int | None,
    dtype: str,
    per_member: bool = False,
    devices: tuple[jax.Device, ...] | None = None,
) -> tuple[Callable[..., Carry], Callable[..., Any], Callable[..., Any]]:
    # Cached so that a resumed run in the same process reuses the compiled functions.
    from rtrrl import envs

    return make_population(
        config,
        envs.make_jax(task),
        num_envs=B,
        epoch_steps=epoch_steps,
        eval_episodes=E,
        eval_steps=eval_steps,
        dtype=dtype,
        per_member=per_member,
        devices=devices,
    )
