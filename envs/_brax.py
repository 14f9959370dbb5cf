"""brax tasks: a brax environment as a pure-JAX :class:`~rtrrl.envs.JaxEnv`-like object.

brax simulates rigid bodies in JAX, so its environments run inside the fused ``lax.scan``
with the agent, as gymnax tasks do. :class:`BraxJaxEnv` has the same pure functions as
:class:`rtrrl.envs.JaxEnv` (``reset(key)``, ``step(key, state, action)`` with same-step
auto-reset, ``spec``), and :class:`rtrrl.envs.GymnaxHostEnv` runs it jitted on the host
for the other backends.

Task names (:func:`parse_name`): ``brax:<env>`` for any environment in brax's registry,
followed by options ``:KEY=VALUE``: ``mask`` (``odd``, ``even``, ``first_half`` or indices
``0,2,5``: the authors' observation masks), ``backend`` (brax's physics pipeline),
``episode_length``, and any keyword argument of the environment's constructor
(``brax:ant:use_contact_forces=True``).

The defaults are those of the authors' code (github.com/FranzKnut/RTRRL-AAAI25):

- physics backend ``"spring"``: their ``config/brax.yml`` passes ``backend: "spring"`` to
  ``brax.envs.get_environment`` (through ``init_kwargs``). Some brax environments accept
  only their own pipeline (brax's swimmer: ``"generalized"`` only); those keep it;
- episode length 1000: their ``EnvironmentParams.max_ep_length``, as ``RTRRLParams`` sets
  it (``config/brax.yml`` leaves it), the time limit of their ``EpisodeWrapper``;
- masks as their ``get_obs_mask`` defines them: ``odd`` the odd indices (1, 3, ...),
  ``even`` the even ones (0, 2, ...), ``first_half`` the first ``(n + 1) // 2`` entries.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import io
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from rtrrl.envs._core import EnvSpec, UnknownTaskError

#: The physics backend of the authors' brax preset (config/brax.yml).
AUTHORS_BACKEND = "spring"
#: The authors' time limit for every task (RTRRLParams.env_params.max_ep_length).
AUTHORS_EPISODE_LENGTH = 1000
#: The named masks of the authors' get_obs_mask.
NAMED_MASKS = ("odd", "even", "first_half")
#: The options a ``brax:`` name takes besides the environment's constructor arguments.
OPTIONS = ("mask", "backend", "episode_length")
SYNTAX = (
    "brax tasks are written brax:<env>[:mask=odd|even|first_half|I,J,...]"
    "[:backend=NAME][:episode_length=N][:<constructor argument>=<value>]"
)


def parse_name(name: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Split ``brax:<env>[:KEY=VALUE...]`` into the environment, rtrrl's options
    (``mask``, ``backend``, ``episode_length``) and the constructor's keyword arguments.

    Values of constructor arguments are Python literals where they parse as one
    (``True``, ``0.5``), else strings. Raises ``ValueError`` for a malformed name.
    """
    env_name, *items = name.removeprefix("brax:").split(":")
    if not env_name:
        raise ValueError(f"task {name!r} names no brax environment; {SYNTAX}")
    options: dict[str, Any] = {}
    kwargs: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"task {name!r}: {item!r} is not KEY=VALUE; {SYNTAX}")
        if key in options or key in kwargs:
            raise ValueError(f"task {name!r} sets {key!r} twice; give each option once")
        if key == "mask":
            options[key] = _parse_mask(name, value)
        elif key == "episode_length":
            options[key] = _positive_int(name, key, value)
        elif key == "backend":
            options[key] = value
        else:
            kwargs[key] = _literal(value)
    return env_name, options, kwargs


def _parse_mask(name: str, value: str) -> str | tuple[int, ...]:
    if value in NAMED_MASKS:
        return value
    try:
        return tuple(int(i) for i in value.split(","))
    except ValueError:
        raise ValueError(
            f"task {name!r}: mask={value!r} is neither {', '.join(NAMED_MASKS)} nor a "
            "comma-separated list of observation indices (mask=0,2,5)"
        ) from None


def _positive_int(name: str, key: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ValueError(
            f"task {name!r}: {key} must be a whole number of at least 1, not {value!r}"
        )
    return number


def _literal(value: str) -> Any:
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def mask_indices(
    mask: str | Sequence[int] | None, obs_dim: int, what: str
) -> tuple[int, ...] | None:
    """The observed indices of a flat observation of ``obs_dim`` values under ``mask``.

    ``None`` observes everything; ``"odd"`` / ``"even"`` / ``"first_half"`` as the authors'
    ``get_obs_mask``; a sequence of indices is checked (in range, no repeats, at least
    one). ``what`` names the task in error messages.
    """
    if mask is None:
        return None
    if isinstance(mask, str):
        if mask == "odd":
            return tuple(range(1, obs_dim, 2))
        if mask == "even":
            return tuple(range(0, obs_dim, 2))
        if mask == "first_half":
            return tuple(range((obs_dim + 1) // 2))
        raise ValueError(f"{what}: unknown mask {mask!r}; use {', '.join(NAMED_MASKS)} or indices")
    indices = tuple(int(i) for i in mask)
    if not indices:
        raise ValueError(f"{what}: the mask observes nothing; give at least one index")
    bad = [i for i in indices if not 0 <= i < obs_dim]
    if bad:
        raise ValueError(
            f"{what}: observation index {bad[0]} is out of range: the environment observes "
            f"{obs_dim} values (indices 0 to {obs_dim - 1})"
        )
    if len(set(indices)) != len(indices):
        raise ValueError(f"{what}: the mask repeats an index ({list(indices)}); give each once")
    return indices


@contextlib.contextmanager
def quiet_mjx() -> Iterator[None]:
    """Drop the line mujoco's MJX prints when it is imported without its optional warp
    kernels (``Failed to import warp: ...``, on stdout, by ``print``; they are CUDA-only and
    brax does not use them). Anything else printed meanwhile is passed on."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        for line in buffer.getvalue().splitlines():
            if not line.startswith(("Failed to import warp", "Failed to import mujoco_warp")):
                print(line)


def registered_names() -> list[str]:
    """The environment names brax's registry knows (``brax.envs.get_environment``)."""
    import brax.envs

    # brax keeps its registry in a module-level dict and has no public listing.
    return sorted(getattr(brax.envs, "_envs", {}))


class _ClipKeywords:
    """``jax.numpy`` whose ``clip`` also takes the ``a_min`` / ``a_max`` keywords."""

    def __init__(self, module: Any) -> None:
        self._module = module

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def clip(self, x: Any, min: Any = None, max: Any = None, **kw: Any) -> Any:  # noqa: A002
        low, high = kw.pop("a_min", min), kw.pop("a_max", max)
        return self._module.clip(x, min=low, max=high, **kw)


@functools.lru_cache(maxsize=1)
def _fluid_compatible() -> None:
    """Let brax's fluid forces run on a JAX without ``clip(a_min=...)``.

    ``brax/fluid.py`` (the viscous medium of the swimmer, on every pipeline) calls
    ``jnp.clip(x, a_min=1e-12)``; JAX replaced those keywords by ``min`` / ``max`` and then
    removed them, and brax 0.14.2, the newest release, still uses them: the swimmer's
    first step raises ``TypeError`` there. Where this JAX refuses the old keyword, brax's
    fluid module gets a ``jax.numpy`` that translates it (nothing else in brax uses it).
    """
    import jax.numpy as jnp
    from brax import fluid

    try:
        jnp.clip(jnp.zeros(()), a_min=0.0)
    except TypeError:
        if not isinstance(fluid.jp, _ClipKeywords):
            fluid.jp = _ClipKeywords(fluid.jp)


@functools.lru_cache(maxsize=16)
def _build(env_name: str, backend: str | None, kwargs: tuple[tuple[str, Any], ...]) -> Any:
    """The brax environment (cached: building one loads and compiles its MJCF model, and a
    run builds its task several times: spec, engine choice, training, evaluation)."""
    import mujoco

    _fluid_compatible()
    # MuJoCo writes its warnings to MUJOCO_LOG.TXT in the working folder unless a handler
    # takes them; brax's own models warn of attributes MuJoCo deprecated (halfcheetah's
    # settotalmass), which no user of these tasks can act on. Others become Python warnings.
    messages: list[str] = []
    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(messages.append)
    try:
        with warnings.catch_warnings():
            # brax's notice that it is no longer developed, on every model it loads
            # (docs/tasks.md says it once).
            warnings.filterwarnings("ignore", "Brax System, piplines", UserWarning)
            return _get_environment(env_name, backend, dict(kwargs))
    finally:
        mujoco.set_mju_user_warning(previous)
        for message in messages:
            if "deprecated" not in message:
                warnings.warn(f"MuJoCo: {message}", stacklevel=3)


def _get_environment(env_name: str, backend: str | None, kwargs: dict[str, Any]) -> Any:
    """brax's environment on ``backend``, or on the authors' pipeline where it has it."""
    import brax.envs

    if backend is not None:
        return brax.envs.get_environment(env_name, backend=backend, **kwargs)
    try:
        return brax.envs.get_environment(env_name, backend=AUTHORS_BACKEND, **kwargs)
    except ValueError as exc:
        if "backend" not in str(exc).lower():
            raise
    # This environment refuses the authors' pipeline (brax's swimmer supports only its own
    # "generalized"): it keeps its default, as the authors' code would have had to.
    return brax.envs.get_environment(env_name, **kwargs)


def make_brax_env(
    name: str,
    env_name: str,
    *,
    backend: str | None = None,
    episode_length: int = AUTHORS_EPISODE_LENGTH,
    mask: str | Sequence[int] | None = None,
    kwargs: dict[str, Any] | None = None,
) -> BraxJaxEnv:
    """Build brax's ``env_name`` as a :class:`BraxJaxEnv` named ``name``, its errors one line.

    ``backend=None`` tries the authors' ``"spring"`` and falls back to the environment's own
    pipeline where it refuses that one.
    """
    known = registered_names()
    if known and env_name not in known:
        raise UnknownTaskError(
            name,
            [f"brax:{n}" for n in known],
            detail=f"brax has no environment {env_name!r}",
            advice=f"brax's environments: {', '.join(known)}; {SYNTAX}.",
        )
    items = tuple(sorted((kwargs or {}).items()))
    try:
        hash(items)
    except TypeError:  # a list or dict argument: built afresh, not cached
        build = _build.__wrapped__
    else:
        build = _build
    try:
        env = build(env_name, backend, items)
    except KeyError as exc:  # a brax without a registry listing: the name is unknown
        if known:
            raise
        raise UnknownTaskError(name, [], detail=f"brax: {exc}", advice=SYNTAX + ".") from exc
    except TypeError as exc:  # an argument the constructor does not take
        raise ValueError(f"task {name!r}: brax's {env_name} refused an argument ({exc})") from exc
    except ValueError as exc:  # e.g. a backend this environment does not support
        raise ValueError(f"task {name!r}: brax's {env_name} refused its settings ({exc})") from exc
    return BraxJaxEnv(name, env, episode_length, mask)


def _raw_key(key: Any) -> Any:
    """A raw ``uint32`` key: brax splits keys the legacy way (``jax.random.PRNGKey``)."""
    import jax

    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    return key


def _flat(obs: Any) -> Any:
    """A brax observation (an array, or a tree of them) as one flat float32 vector."""
    import jax
    import jax.numpy as jnp

    leaves = [jnp.reshape(x, (-1,)) for x in jax.tree_util.tree_leaves(obs)]
    flat = leaves[0] if len(leaves) == 1 else jnp.concatenate(leaves)
    return flat.astype(jnp.float32)


def _ctrl_bounds(env: Any) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """The actuators' control range, which brax clips actions to; ``None`` if unbounded."""
    ctrl = getattr(getattr(env.sys, "actuator", None), "ctrl_range", None)
    if ctrl is None:
        return None, None
    ctrl = np.asarray(ctrl, dtype=np.float64).reshape(-1, 2)
    if ctrl.shape[0] != env.action_size or not np.all(np.isfinite(ctrl)):
        return None, None
    return tuple(float(x) for x in ctrl[:, 0]), tuple(float(x) for x in ctrl[:, 1])


class BraxJaxEnv:
    """One brax environment as pure functions, with the interface of
    :class:`rtrrl.envs.JaxEnv` (``jax.vmap`` it for batches).

    ``reset(key) -> (state, obs)`` and ``step(key, state, action) -> (state, obs, reward,
    terminated, truncated)``. The state is an :class:`rtrrl.envs.EnvState` holding brax's
    ``State`` and the episode's step count. ``terminated`` is brax's ``done`` (an environment
    whose body falls, e.g. hopper); ``truncated`` is the time limit without one. Where the
    episode ended, the returned state and observation are those of a fresh episode drawn
    with ``key`` (same-step auto-reset; the reward is the last step's). ``advance`` is
    ``step`` without the auto-reset, for :func:`rtrrl.envs._gymnax.batch_step`, which steps
    a batch and runs brax's reset only on steps where an episode ended.

    Attributes:
        spec: the task's :class:`EnvSpec` (actions continuous, bounded by the actuators'
            control range).
        env: the brax environment; ``env.backend`` names its physics pipeline.
        obs_indices: the observed entries of brax's flattened observation, ``None`` for all.
    """

    def __init__(
        self,
        name: str,
        env: Any,
        episode_length: int = AUTHORS_EPISODE_LENGTH,
        mask: str | Sequence[int] | None = None,
    ) -> None:
        import jax

        self.env = env
        shapes = jax.eval_shape(env.reset, jax.random.PRNGKey(0))
        full = sum(int(np.prod(x.shape, dtype=np.int64)) for x in jax.tree.leaves(shapes.obs))
        self.obs_indices = mask_indices(mask, full, f"task {name!r}")
        obs_dim = full if self.obs_indices is None else len(self.obs_indices)
        low, high = _ctrl_bounds(env)
        dim = int(env.action_size)
        self.spec = EnvSpec(name, obs_dim, None, dim, low, high, int(episode_length))

    def observe(self, raw_obs: Any) -> Any:
        """Flatten and mask a brax observation to float32."""
        import jax.numpy as jnp

        flat = _flat(raw_obs)
        if self.obs_indices is not None:
            flat = flat[jnp.asarray(self.obs_indices)]
        return flat

    def reset(self, key: Any) -> tuple[Any, Any]:
        """Start an episode; return ``(state, obs)``."""
        import jax.numpy as jnp

        from rtrrl.envs._gymnax import EnvState

        inner = self.env.reset(_raw_key(key))
        return EnvState(inner, jnp.zeros((), jnp.int32)), self.observe(inner.obs)

    def advance(self, key: Any, state: Any, action: Any) -> Any:
        """One step without its auto-reset (an :class:`rtrrl.envs._gymnax.Advanced`);
        :meth:`step` and :func:`rtrrl.envs._gymnax.batch_step` finish it. brax's step is
        deterministic: the whole ``key`` draws the next episode."""
        import jax
        import jax.numpy as jnp

        from rtrrl.envs._gymnax import Advanced, EnvState

        action = jnp.reshape(jnp.asarray(action, jnp.float32), (self.spec.action_dim,))
        stepped = self.env.step(state.inner, action)
        t = state.episode_step + 1
        terminated = jnp.reshape(stepped.done, ()) > 0.5
        # A true terminal on the last allowed step counts as terminated, not truncated.
        truncated = jnp.logical_and(t >= self.spec.max_episode_steps, ~terminated)
        done = jnp.logical_or(terminated, truncated)
        fresh = jax.eval_shape(self.env.reset, _raw_key(key))
        if jax.tree.structure(fresh) != jax.tree.structure(stepped):
            # A scan carries the state: its structure must stay that of a reset.
            raise ValueError(
                f"task {self.spec.name!r}: brax's step returns a state of another structure "
                "than its reset (metrics or info added by step); rtrrl needs them alike"
            )

        def like(reset_leaf: Any, step_leaf: Any) -> Any:
            return jnp.reshape(step_leaf, reset_leaf.shape).astype(reset_leaf.dtype)

        return Advanced(
            EnvState(jax.tree.map(like, fresh, stepped), jnp.where(done, 0, t).astype(jnp.int32)),
            self.observe(stepped.obs),
            jnp.asarray(stepped.reward, jnp.float32).reshape(()),
            terminated,
            truncated,
            key,
        )

    def step(self, key: Any, state: Any, action: Any) -> tuple[Any, Any, Any, Any, Any]:
        """One step with same-step auto-reset; see the class docstring. The fresh episode
        is computed whether or not this one ended (``batch_step`` skips it for a batch)."""
        from rtrrl.envs._gymnax import _restart

        return _restart(self, self.advance(key, state, action))
