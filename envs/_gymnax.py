"""gymnax tasks as a pure-JAX :class:`JaxEnv`, and the same code jitted on the host.

gymnax's own ``step`` already auto-resets; we call ``step_env`` / ``reset_env`` ourselves and
count the episode's steps in our own state, so that the time limit (truncation) is explicit
and independent of how an environment folds ``time`` into its ``done``.

A step is two halves: :meth:`JaxEnv.advance` (the environment's own step, the time limit,
and the key the next episode would be drawn with) and the auto-reset (a fresh episode where
the old one ended). ``JaxEnv.step`` does both for one environment, so ``vmap(step)`` computes
a fresh episode for every environment at every step and keeps it where one ended: under
``vmap`` a branch runs both sides. :func:`batch_step` gives the same results for a batch and
computes the fresh episodes only on steps where some episode ended, which matters where a
reset is costly (a labyrinth draws a maze, brax initialises its physics).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from rtrrl.envs._core import EnvSpec


class EnvState(NamedTuple):
    """State of one :class:`JaxEnv`: the gymnax state and the steps taken this episode."""

    inner: Any
    episode_step: Any  # int32 scalar; 0 right after a reset


class Advanced(NamedTuple):
    """One environment step before its auto-reset (:meth:`JaxEnv.advance`).

    ``state`` is the stepped state, its leaves already in the shapes and dtypes a reset gives
    (so that a fresh episode can replace it leaf by leaf, and a scan's carry keeps one
    structure) and its step count already 0 where the episode ended; ``obs`` its observation;
    ``reset_key`` the key the next episode is drawn with where this one ended.
    """

    state: EnvState
    obs: Any
    reward: Any
    terminated: Any
    truncated: Any
    reset_key: Any


def _flat_obs_size(space: Any) -> int:
    from gymnax.environments import spaces

    if isinstance(space, spaces.Discrete):
        return int(space.n)
    if isinstance(space, spaces.Box):
        return int(np.prod(space.shape, dtype=np.int64))
    raise NotImplementedError(f"observation space {space!r} has no flat encoding yet")


def _bounds(space: Any) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    low = np.broadcast_to(np.asarray(space.low, dtype=np.float64), space.shape).ravel()
    high = np.broadcast_to(np.asarray(space.high, dtype=np.float64), space.shape).ravel()
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        return None, None
    return tuple(float(x) for x in low), tuple(float(x) for x in high)


class JaxEnv:
    """One gymnax environment as pure functions (``jax.vmap`` it for batches).

    ``reset(key) -> (state, obs)`` and ``step(key, state, action) -> (state, obs, reward,
    terminated, truncated)``; ``step`` auto-resets (where ``terminated | truncated`` the returned
    state and obs are those of a fresh episode drawn with ``key``), and is jit/vmap/scan-safe.
    Observations are flat float32 of length ``spec.obs_dim``. ``advance`` is ``step`` without
    the auto-reset, for :func:`batch_step`, which steps a batch and draws fresh episodes only
    on steps where one ended.

    Attributes:
        spec: the task's :class:`EnvSpec`.
        env, params: the underlying gymnax environment and its parameters.
        obs_indices: indices of the flattened gymnax observation that are observed (the
            paper's partially observable variants), or ``None`` for all of them.
    """

    def __init__(
        self,
        name: str,
        env: Any,
        params: Any,
        obs_indices: tuple[int, ...] | None = None,
        max_episode_steps: int | None = None,
    ) -> None:
        from gymnax.environments import spaces

        self.env = env
        self.params = params
        self.obs_indices = obs_indices
        self._obs_space = env.observation_space(params)
        obs_dim = _flat_obs_size(self._obs_space)
        if obs_indices is not None:
            obs_dim = len(obs_indices)
        if max_episode_steps is None:
            max_episode_steps = int(params.max_steps_in_episode)
        act = env.action_space(params)
        if isinstance(act, spaces.Discrete):
            self.spec = EnvSpec(name, obs_dim, int(act.n), None, None, None, max_episode_steps)
        elif isinstance(act, spaces.Box):
            low, high = _bounds(act)
            dim = int(np.prod(act.shape, dtype=np.int64))
            self._act_shape = tuple(act.shape)
            self.spec = EnvSpec(name, obs_dim, None, dim, low, high, max_episode_steps)
        else:
            raise NotImplementedError(f"{name}: action space {act!r} is not supported")

    def observe(self, raw_obs: Any) -> Any:
        """Flatten (one-hot for Discrete) and mask a raw gymnax observation to float32."""
        import jax
        import jax.numpy as jnp
        from gymnax.environments import spaces

        if isinstance(self._obs_space, spaces.Discrete):
            flat = jax.nn.one_hot(raw_obs, int(self._obs_space.n), dtype=jnp.float32)
        else:
            flat = jnp.reshape(jnp.asarray(raw_obs), (-1,)).astype(jnp.float32)
        if self.obs_indices is not None:
            flat = flat[jnp.asarray(self.obs_indices)]
        return flat

    def _action(self, action: Any) -> Any:
        import jax.numpy as jnp

        if self.spec.discrete:
            return jnp.asarray(action).astype(jnp.int32)
        return jnp.reshape(jnp.asarray(action, jnp.float32), self._act_shape)

    def reset(self, key: Any, params: Any = None) -> tuple[EnvState, Any]:
        """Start an episode; return ``(state, obs)``. ``params``: gymnax parameters in
        place of :attr:`params` (a member of a population of tasks, :func:`stack_params`)."""
        import jax.numpy as jnp

        raw, inner = self.env.reset_env(key, self.params if params is None else params)
        return EnvState(inner, jnp.zeros((), jnp.int32)), self.observe(raw)

    def advance(self, key: Any, state: EnvState, action: Any, params: Any = None) -> Advanced:
        """One step without its auto-reset; :meth:`step` and :func:`batch_step` finish it."""
        import jax
        import jax.numpy as jnp

        params = self.params if params is None else params
        key_step, key_reset = jax.random.split(key)
        raw_st, inner_st, reward, terminated, _ = self.env.step_env(
            key_step, state.inner, self._action(action), params
        )
        t = state.episode_step + 1
        terminated = jnp.asarray(terminated).astype(bool).reshape(())
        # A true terminal on the last allowed step counts as terminated, not truncated.
        truncated = jnp.logical_and(t >= self.spec.max_episode_steps, ~terminated)
        done = jnp.logical_or(terminated, truncated)
        # Shaped and typed as a reset's state, so the state keeps a fixed structure under scan
        # even if an environment lets a shape (1,) action broadcast.
        reset_shapes = jax.eval_shape(self.env.reset_env, key_reset, params)[1]
        inner = jax.tree.map(_like, reset_shapes, inner_st)
        return Advanced(
            EnvState(inner, jnp.where(done, 0, t).astype(jnp.int32)),
            self.observe(raw_st),
            jnp.asarray(reward, jnp.float32).reshape(()),
            terminated,
            truncated,
            key_reset,
        )

    def step(
        self, key: Any, state: EnvState, action: Any, params: Any = None
    ) -> tuple[EnvState, Any, Any, Any, Any]:
        """One step with same-step auto-reset; see the class docstring. The fresh episode
        is computed whether or not this one ended (:func:`batch_step` skips it for a batch)."""
        return _restart(self, self.advance(key, state, action, params), params)


def _like(shape: Any, leaf: Any) -> Any:
    """``leaf`` in the shape and dtype of ``shape`` (a reset's leaf, or its abstract value)."""
    import jax.numpy as jnp

    return jnp.reshape(leaf, jnp.shape(shape)).astype(shape.dtype)


def _where_done(done: Any, fresh: Any, kept: Any) -> Any:
    """Leaf by leaf, ``fresh`` where ``done`` (over the leading axes ``done`` has) else
    ``kept``."""
    import jax
    import jax.numpy as jnp

    def pick(f: Any, k: Any) -> Any:
        f = jnp.asarray(f)
        mask = jnp.reshape(done, jnp.shape(done) + (1,) * (f.ndim - jnp.ndim(done)))
        return jnp.where(mask, f, k).astype(k.dtype)

    return jax.tree.map(pick, fresh, kept)


def _restart(env: Any, adv: Advanced, params: Any = None) -> tuple[Any, Any, Any, Any, Any]:
    """Finish ``adv`` (one environment): a fresh episode where it ended, drawn every time."""
    done = adv.terminated | adv.truncated
    state, obs = _where_done(done, _reset(env, adv.reset_key, params), (adv.state, adv.obs))
    return state, obs, adv.reward, adv.terminated, adv.truncated


def _reset(env: Any, key: Any, params: Any) -> tuple[Any, Any]:
    """``env.reset(key)``, with ``params`` in place of the environment's own where given
    (only a gymnax :class:`JaxEnv` takes them)."""
    return env.reset(key) if params is None else env.reset(key, params)


def _restart_if_any(fresh: Callable[..., Any]) -> Callable[..., Any]:
    """``fresh(done, keys, state, obs, params)`` behind a ``lax.cond`` on ``any(done)``: on a
    step where nothing ended, the stepped ``(state, obs)`` pass through and ``fresh`` is not
    run.

    A ``cond`` under ``vmap`` becomes a select that runs both branches, so the decision must
    not be vmapped: this function's batching rule (``custom_vmap``) takes each ``vmap`` over
    it (the fused path's population of seeds or sweep members, any nesting) into the decision,
    ``any`` over every environment of every member, and vmaps only ``fresh``, the same
    computation as before, nested as before. Everything ``fresh`` reads per member comes in
    as an operand (``params``: a member's environment parameters): a ``custom_vmap``
    function may not close over values that a ``vmap`` batches.
    """
    import jax
    import jax.numpy as jnp
    from jax.custom_batching import custom_vmap

    @custom_vmap
    def restart(done: Any, keys: Any, state: Any, obs: Any, params: Any) -> Any:
        return jax.lax.cond(
            jnp.any(done),
            lambda operands: fresh(*operands),
            lambda operands: (operands[2], operands[3]),
            (done, keys, state, obs, params),
        )

    @restart.def_vmap
    def batched(axis_size: int, in_batched: Any, *args: Any) -> tuple[Any, Any]:
        def to_batch(x: Any, is_batched: bool) -> Any:
            return x if is_batched else jnp.broadcast_to(x, (axis_size, *jnp.shape(x)))

        args = jax.tree.map(to_batch, args, tuple(in_batched))
        out = _restart_if_any(jax.vmap(fresh))(*args)
        return out, jax.tree.map(lambda _: True, out)

    return restart


def _fresh_where_done(env: Any) -> Callable[..., Any]:
    """``(done, keys, state, obs, params) -> (state, obs)`` for a batch: a fresh episode
    drawn with each key (and ``params``, shared by the batch, or ``None``), kept where
    ``done``."""

    def fresh(done: Any, keys: Any, state: Any, obs: Any, params: Any) -> Any:
        return _where_done(done, batch_reset(env, keys, params), (state, obs))

    return fresh


def batch_step(
    env: Any,
    keys: Any,
    state: Any,
    action: Any,
    *,
    params: Any = None,
    reset_every_step: bool = False,
) -> tuple[Any, Any, Any, Any, Any]:
    """``jax.vmap(env.step)(keys, state, action)``, the same numbers, without the cost of
    fresh episodes on steps where none ended.

    ``env`` is a :class:`JaxEnv` (or has its ``advance`` and ``reset``); ``keys``, ``state``
    and ``action`` have a leading batch axis. The keys are split as ``step`` splits them
    whether or not a fresh episode is drawn, so a run's episodes do not depend on which
    formulation computed them. Under further ``vmap`` (a population) the decision is one for
    all: a fresh batch is computed where any environment of any member ended. An environment
    without ``advance`` (``step`` only), or ``reset_every_step=True`` (the formulation the
    tests and ``benchmarks/reset_speed.py`` compare against), runs ``vmap(env.step)``.
    ``params``: gymnax parameters for the whole batch in place of ``env.params`` (a member of
    a population of tasks, batched over the members by an outer ``vmap``); ``None``: the
    environment's own.
    """
    import jax

    extra = () if params is None else (params,)
    if reset_every_step or not hasattr(env, "advance"):
        return jax.vmap(lambda k, s, a: env.step(k, s, a, *extra))(keys, state, action)
    adv = jax.vmap(lambda k, s, a: env.advance(k, s, a, *extra))(keys, state, action)
    done = adv.terminated | adv.truncated
    new_state, obs = _restart_if_any(_fresh_where_done(env))(
        done, adv.reset_key, adv.state, adv.obs, params
    )
    return new_state, obs, adv.reward, adv.terminated, adv.truncated


def batch_reset(env: Any, keys: Any, params: Any = None) -> tuple[Any, Any]:
    """``jax.vmap(env.reset)(keys)``: a fresh episode per key, with ``params`` (for the whole
    batch, as :func:`batch_step` takes them) in place of the environment's own."""
    import jax

    return jax.vmap(lambda key: _reset(env, key, params))(keys)


def stack_params(names: Sequence[str], jax_envs: Sequence[JaxEnv]) -> Any:
    """The gymnax parameters of ``jax_envs`` (one :class:`JaxEnv` per task of ``names``)
    stacked on a leading axis, for tasks that are one environment at different parameters
    (``MemoryChain-16`` and ``MemoryChain-64``: the chain's length); else a one-line
    ``ValueError`` that says which task differs in what.

    The tasks must share the environment and its constructor's arguments, the observation
    and action spaces and the episode length; their parameters must have one structure and
    leaves of one shape, and none may be one that sets a shape (the stacked parameters are
    traced, not constants).
    """
    import jax
    import jax.numpy as jnp

    first, first_name = jax_envs[0], names[0]

    def differ(name: str, what: str) -> ValueError:
        return ValueError(
            f"{first_name} and {name} differ in {what}: tasks share a population only where "
            "they are one environment at different gymnax parameters; run them apart"
        )

    for name, env in zip(names, jax_envs, strict=True):
        if not isinstance(env, JaxEnv):
            raise ValueError(
                f"{name} is not a gymnax task: only gymnax tasks differ by parameters that a "
                "population can hold per member; run it apart"
            )
        if type(env.env) is not type(first.env) or vars(env.env) != vars(first.env):
            raise differ(name, "the environment or its constructor's arguments")
        if dataclasses.replace(env.spec, name=first.spec.name) != first.spec:
            raise differ(name, "spaces or episode length")
        if env.obs_indices != first.obs_indices:
            raise differ(name, "observed indices")
        p, q = jax.tree.structure(env.params), jax.tree.structure(first.params)
        shapes = [jnp.shape(x) for x in jax.tree.leaves(env.params)]
        if p != q or shapes != [jnp.shape(x) for x in jax.tree.leaves(first.params)]:
            raise differ(name, "the structure of their parameters")
    stacked = jax.tree.map(
        lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *[e.params for e in jax_envs]
    )
    try:  # a parameter that sets a shape or a Python branch cannot be traced
        one = jax.tree.map(lambda x: x[0], stacked)
        jax.eval_shape(lambda p, k: first.reset(k, p), one, jax.random.key(0))
    except (jax.errors.ConcretizationTypeError, TypeError) as err:
        raise ValueError(
            f"{', '.join(names)}: a parameter that differs sets a shape or a branch of the "
            f"environment's code ({type(err).__name__}); run the tasks apart"
        ) from None
    return stacked


class GymnaxHostEnv:
    """A :class:`JaxEnv` batched over ``num_envs`` (:func:`batch_step`) and jitted on the CPU,
    NumPy in and out.

    Key scheme (so a pure-JAX run can reproduce it): ``reset(seed)`` takes
    ``key = jax.random.key(seed)``, splits ``key, sub = split(key)`` and resets env ``i`` with
    ``split(sub, B)[i]``; every ``step`` does the same split and steps env ``i`` with
    ``split(sub, B)[i]``.
    """

    def __init__(self, jax_env: JaxEnv, num_envs: int = 1) -> None:
        import jax

        self.jax_env = jax_env
        self.spec = jax_env.spec
        self.num_envs = int(num_envs)
        # Environments are cheap and branchy: keep them on the CPU even when JAX has an
        # accelerator, and hand NumPy to whichever backend trains the agent.
        self._device = jax.devices("cpu")[0]
        b = self.num_envs

        def reset(key: Any) -> tuple[Any, EnvState, Any]:
            key, sub = jax.random.split(key)
            state, obs = jax.vmap(jax_env.reset)(jax.random.split(sub, b))
            return key, state, obs

        def step(key: Any, state: EnvState, action: Any) -> tuple[Any, ...]:
            key, sub = jax.random.split(key)
            out = batch_step(jax_env, jax.random.split(sub, b), state, action)
            return (key, *out)

        self._reset = jax.jit(reset)
        self._step = jax.jit(step)
        self._key: Any = None
        self._state: EnvState | None = None

    def reset(self, seed: int) -> np.ndarray:
        """Start every environment from ``seed``; return ``(B, obs_dim)`` float32."""
        import jax

        key = jax.device_put(jax.random.key(int(seed)), self._device)
        self._key, self._state, obs = self._reset(key)
        return np.asarray(obs, dtype=np.float32)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step every environment; finished ones restart in the same step."""
        if self._state is None:
            raise RuntimeError("call reset(seed) before step()")
        action = np.asarray(action)
        if self.spec.discrete:
            action = action.astype(np.int32).reshape(self.num_envs)
        else:
            action = action.astype(np.float32).reshape(self.num_envs, -1)
        self._key, self._state, obs, reward, terminated, truncated = self._step(
            self._key, self._state, action
        )
        return (
            np.asarray(obs, dtype=np.float32),
            np.asarray(reward, dtype=np.float32),
            np.asarray(terminated, dtype=bool),
            np.asarray(truncated, dtype=bool),
        )

    def get_state(self) -> dict[str, Any]:
        """The RNG key data and the batched environment states as NumPy (picklable)."""
        import jax

        if self._state is None:
            raise RuntimeError("call reset(seed) before get_state()")
        return {
            "key_data": np.asarray(jax.random.key_data(self._key)),
            "env_state": jax.tree.map(np.asarray, self._state),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`get_state` snapshot."""
        import jax

        self._key = jax.device_put(jax.random.wrap_key_data(state["key_data"]), self._device)
        self._state = jax.device_put(state["env_state"], self._device)

    def close(self) -> None:
        """Nothing to release; drops the state."""
        self._state = None
