"""The fused path's auto-reset: fresh episodes computed only on steps where one ended.

``rtrrl.envs.batch_step`` decides once per step, for every environment of every
member of a population, whether any episode ended, and only then computes the fresh
episodes; the formulation before (``reset_every_step=True``: every step draws one for every
environment and keeps it where an episode ended) is the reference, and a run's numbers must
not depend on which one computed them.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("gymnax")

import jax.numpy as jnp  # noqa: E402
from gymnax.environments import environment, spaces  # noqa: E402

import rtrrl_spec  # noqa: E402
from rtrrl import envs, fused  # noqa: E402
from rtrrl.backends import jax as jaxbe  # noqa: E402
from rtrrl.envs import JaxEnv, batch_step  # noqa: E402

pytestmark = pytest.mark.jax

SEEDS = (3, 11)
B = 2
EPOCH_STEPS = 120
EPOCHS = 2


def _labyrinth() -> JaxEnv:
    """popgym's LabyrinthEscape (Easy) port, its time limit cut to 40 steps so that a short
    run ends many episodes (a random walk seldom finds the exit)."""
    base = envs.make_jax("LabyrinthEscape")
    return JaxEnv(base.spec.name, base.env, base.params, base.obs_indices, max_episode_steps=40)


def _members(env: Any) -> list[rtrrl_spec.Config]:
    """Two members of a sweep: same structure, different learning rates."""
    config = env.spec.agent_config(n_hidden=8, jacobian="rflo")
    return [config, config.replace(lr_td=config.lr_td * 3, lr_rnn=config.lr_rnn / 2)]


class Run(NamedTuple):
    metrics: list[dict[str, np.ndarray]]
    carry: list[np.ndarray]


def _both(env: Any, sweep: bool) -> tuple[Run, Run]:
    """Two epochs of a population under each formulation (``batch_step``, then the
    reference), as :class:`rtrrl.fused.FusedEngine` runs them: a run's seeds, or a sweep's
    members with their own numbers. Compiling is the cost here (an epoch takes seconds, a
    maze generator too): the initial carry is computed once, and the evaluation, which steps
    its environments by the same function as an epoch, is left out."""
    if sweep:
        config, numbers = fused.population_numbers(_members(env))
        inits = [rtrrl_spec.init(c, B, s) for c, s in zip(_members(env), SEEDS, strict=True)]
        agents = {k: jnp.asarray(np.stack([a[k] for a in inits])) for k in inits[0]}
        extra: tuple[Any, ...] = (numbers,)
    else:
        config = env.spec.agent_config(n_hidden=8, jacobian="rflo")
        agents = jaxbe.init_population(config, SEEDS, B)
        extra = ()
    keys = jnp.stack([jax.random.key_data(jax.random.key(s)) for s in SEEDS])
    first = None
    runs = []
    for reset_every_step in (False, True):
        init, epoch, _ = fused.make_population(
            config,
            env,
            num_envs=B,
            epoch_steps=EPOCH_STEPS,
            per_member=sweep,
            reset_every_step=reset_every_step,
        )
        carry = first = init(agents, keys) if first is None else first
        metrics = []
        for i in range(EPOCHS):
            # The second epoch holds the first member, as a run holds a member stopped early.
            active = jnp.asarray([i == 0, True])
            carry, m = epoch(carry, active, *extra)
            metrics.append(jax.device_get(m))
        leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(carry)]
        runs.append(Run(metrics, leaves))
    return runs[0], runs[1]


@pytest.fixture(scope="module", params=["CartPole-vel", "LabyrinthEscape"])
def both(request: pytest.FixtureRequest) -> tuple[Run, Run]:
    """The same population under both formulations: a run's seeds on CartPole-vel, a sweep's
    members on the labyrinth."""
    if request.param == "CartPole-vel":
        return _both(envs.make_jax("CartPole-vel"), sweep=False)
    return _both(_labyrinth(), sweep=True)


@pytest.mark.slow  # compiles two fused epochs (and maze generators): tens of seconds
def test_training_is_unchanged_bit_for_bit(both: tuple[Run, Run]) -> None:
    new, reference = both
    # Episodes ended in every epoch (else the resets would not have been exercised), and
    # not on every step (else none would have been skipped).
    for m in new.metrics:
        assert np.all(m["episodes"] > 0)
        assert np.all(m["episodes"] < EPOCH_STEPS * B / 2)
    for a, b in zip(new.metrics, reference.metrics, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert len(new.carry) == len(reference.carry)
    for i, (x, y) in enumerate(zip(new.carry, reference.carry, strict=True)):
        np.testing.assert_array_equal(x, y, err_msg=f"carry leaf {i}")


# --- the reset is not computed where nothing ended ---------------------------------------------

#: Environments reset by each call of :class:`Ticker`'s reset callback
#: (``jax.debug.callback``, run as the computation runs; under ``vmap`` JAX may call it once
#: per environment or once for a batch, so each call counts the keys it was given).
RESETS: list[int] = []


def _count(key_data: Any) -> None:
    RESETS.append(int(np.prod(np.shape(key_data)[:-1])))


class Ticker(environment.Environment[Any, environment.EnvParams]):
    """Observes its own step count and never terminates: the time limit ends every episode
    after :data:`LIMIT` steps, in step across environments. Its reset reports each call."""

    @property
    def default_params(self) -> environment.EnvParams:
        return environment.EnvParams(max_steps_in_episode=LIMIT)

    def reset_env(self, key: Any, params: environment.EnvParams) -> tuple[Any, Any]:
        jax.debug.callback(_count, jax.random.key_data(key))
        t = jnp.zeros((), jnp.int32)
        return t.astype(jnp.float32)[None], t

    def step_env(
        self, key: Any, state: Any, action: Any, params: environment.EnvParams
    ) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        t = state + 1
        return t.astype(jnp.float32)[None], t, jnp.float32(1.0), jnp.bool_(False), {}

    def observation_space(self, params: environment.EnvParams) -> spaces.Box:
        return spaces.Box(0.0, float(LIMIT), (1,), jnp.float32)

    def action_space(self, params: environment.EnvParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(2)


LIMIT = 5
TICKS = 12  # the time limit ends episodes on steps 5 and 10: two of the 12 draw fresh ones


@pytest.mark.parametrize("reset_every_step", [False, True], ids=["batch_step", "reference"])
def test_fresh_episodes_are_drawn_only_on_steps_where_one_ended(reset_every_step: bool) -> None:
    """A population (``vmap`` over members) scanning :func:`batch_step`, as a fused epoch
    does: the reset runs on 2 of the 12 steps, against all 12 for ``vmap(step)``. (That the
    fused epoch is built so is :func:`test_a_population_draws_its_mazes_inside_one_branch`.)"""
    env = JaxEnv("Ticker", Ticker(), Ticker().default_params)
    members, num_envs = 2, 3

    def epoch(state: Any, keys: Any) -> Any:
        def body(state: Any, k: Any) -> Any:
            action = jnp.zeros(num_envs, jnp.int32)
            out = batch_step(env, k, state, action, reset_every_step=reset_every_step)
            return out[0], out[4]

        return jax.lax.scan(body, state, keys)

    keys = jax.random.split(jax.random.key(0), (members, TICKS, num_envs))
    state, _ = jax.vmap(jax.vmap(env.reset))(keys[:, 0])
    run = jax.jit(jax.vmap(epoch))
    jax.effects_barrier()
    RESETS.clear()
    _, truncated = run(state, keys)
    jax.effects_barrier()
    ended = np.flatnonzero(np.asarray(truncated).any(axis=(0, 2)))
    np.testing.assert_array_equal(ended, [LIMIT - 1, 2 * LIMIT - 1])
    drawing_steps = TICKS if reset_every_step else len(ended)
    assert sum(RESETS) == drawing_steps * members * num_envs


def _whiles_outside_cond(jaxpr: Any, inside: bool = False) -> tuple[int, int]:
    """``(outside, inside)``: the ``while`` loops of ``jaxpr`` (sub-jaxprs included) outside
    any ``cond`` and inside one."""
    outside = within = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "while":
            within, outside = (within + 1, outside) if inside else (within, outside + 1)
        nested = inside or eqn.primitive.name == "cond"
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                sub = getattr(sub, "jaxpr", sub)
                if hasattr(sub, "eqns"):
                    o, i = _whiles_outside_cond(sub, nested)
                    outside, within = outside + o, within + i
    return outside, within


def test_a_population_draws_its_mazes_inside_one_branch() -> None:
    """The labyrinth's maze generator (``lax.while_loop``s) sits in a ``cond`` even under the
    population's ``vmap``, where a ``cond`` on a batched flag would become a select."""
    env = _labyrinth()
    config = env.spec.agent_config(n_hidden=4, jacobian="rflo")
    counts = {}
    for reference in (False, True):
        # make_population's epoch, less its jit (whose compiler options make_jaxpr refuses).
        init, epoch, _ = fused.make_train(
            config, env, num_envs=B, epoch_steps=4, reset_every_step=reference
        )
        keys = jnp.zeros((len(SEEDS), 2), jnp.uint32)
        carry = jax.eval_shape(jax.vmap(init), jaxbe.init_population(config, SEEDS, B), keys)
        counts[reference] = _whiles_outside_cond(jax.make_jaxpr(jax.vmap(epoch))(carry).jaxpr)
    assert counts[False][0] == 0 and counts[False][1] > 0
    assert counts[True][0] > 0  # the reference draws a maze on every step


def test_batch_step_matches_vmapped_step_under_nested_vmaps() -> None:
    """Any nesting of ``vmap`` over :func:`batch_step` (a population of populations, its
    keys shared by the outer members or not) gives ``vmap(step)``'s numbers, with episodes
    ending in some members and not in others. (One compiled function for all the cases:
    compiling is what costs.)"""
    env = envs.make_jax("CartPole-vel")
    limit = env.spec.max_episode_steps
    outer, inner = 2, 3
    keys = jax.random.split(jax.random.key(1), (outer, inner, B))
    resets = jax.random.split(jax.random.key(0), keys.shape)
    cases = {"all": (0, 0), "shared keys": (None, 0)}

    def both(keys: Any, resets: Any) -> Any:
        state, _ = jax.vmap(jax.vmap(jax.vmap(env.reset)))(resets)
        # Desynchronise the episodes: inner member 1 is one step from its time limit.
        state = state._replace(episode_step=state.episode_step.at[:, 1].set(limit - 1))
        out = {}
        for case, in_axes in cases.items():
            k = keys[0] if in_axes[0] is None else keys
            s = jax.tree_util.tree_map(lambda x: x[0], state) if in_axes[1] is None else state
            for name, fn in (
                ("new", functools.partial(batch_step, env)),
                ("ref", jax.vmap(env.step)),
            ):
                one = functools.partial(lambda fn, k, s: fn(k, s, jnp.zeros(B, jnp.int32)), fn)
                out[case, name] = jax.vmap(jax.vmap(one), in_axes=in_axes)(k, s)
        return out

    out = jax.jit(both)(keys, resets)
    for case in cases:
        new, reference = out[case, "new"], out[case, "ref"]
        truncated = np.asarray(new[4])
        assert truncated[:, 1].all() and not truncated[:, [0, 2]].any(), case
        leaves = zip(
            jax.tree_util.tree_leaves(new), jax.tree_util.tree_leaves(reference), strict=True
        )
        for x, y in leaves:
            np.testing.assert_array_equal(x, y, err_msg=case)
