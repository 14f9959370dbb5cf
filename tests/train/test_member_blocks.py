"""A sweep population's epoch in blocks of members (``rtrrl.fused.make_population``'s
``member_block``), or shared out over devices (its ``devices``), computes what it computes
with every member in one block on one device."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rtrrl_spec
from rtrrl import envs, fused
from rtrrl.backends import jax as jaxbe

MEMBERS = 5
EPOCH_STEPS = 150


def _epochs(
    member_block: int | None, devices: list[jax.Device] | None = None
) -> tuple[list[dict], list[np.ndarray]]:
    env = envs.make_jax("CartPole-vel")
    base = env.spec.agent_config(n_hidden=6, jacobian="rflo")
    configs = [
        base.replace(lr_td=float(lr), clip_norm=None if i % 2 else 1.0)
        for i, lr in enumerate(np.geomspace(1e-3, 1e-1, MEMBERS))
    ]
    structure, numbers = fused.population_numbers(configs)
    init, epoch, evaluate = fused.make_population(
        structure,
        env,
        epoch_steps=EPOCH_STEPS,
        per_member=True,
        member_block=member_block,
        devices=devices,
    )
    inits = [rtrrl_spec.init(c, 1, i) for i, c in enumerate(configs)]
    agents = {k: jnp.asarray(np.stack([a[k] for a in inits])) for k in inits[0]}
    keys = jnp.stack([jax.random.key_data(jax.random.key(s)) for s in range(MEMBERS)])
    carry = init(agents, keys)
    metrics = []
    # The second epoch holds member 3 (in the middle of a block), as a sweep holds a member
    # stopped early.
    for active in (np.ones(MEMBERS, bool), np.arange(MEMBERS) != 3):
        carry, m = epoch(carry, jnp.asarray(active), numbers)
        metrics.append(jax.device_get(m))
    metrics.append({"score": np.asarray(evaluate(carry["agent"], keys, numbers))})
    return metrics, [np.asarray(x) for x in jax.tree_util.tree_leaves(carry)]


@pytest.mark.slow  # compiles three population epochs
def test_blocks_compute_what_one_block_computes() -> None:
    # Blocks of 2 for 5 members: three blocks, the last member repeated to fill the last.
    blocked_metrics, blocked = _epochs(member_block=2)
    one_metrics, one = _epochs(member_block=None)
    assert any(np.any(m["episodes"] > 0) for m in one_metrics)  # episodes ended: resets ran
    for a, b in zip(blocked_metrics, one_metrics, strict=True):
        assert a.keys() == b.keys()
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert len(blocked) == len(one)
    for a, b in zip(blocked, one, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # compiles two population epochs
def test_shares_over_devices_compute_what_one_device_computes() -> None:
    # tests/conftest.py starts JAX with two CPU devices. Five members over two devices:
    # shares of three, the last member repeated to fill the second.
    devices = jax.devices()
    assert len(devices) >= 2, "tests/conftest.py should have asked JAX for two CPU devices"
    shared_metrics, shared = _epochs(member_block=None, devices=devices[:2])
    one_metrics, one = _epochs(member_block=None)
    for a, b in zip(shared_metrics, one_metrics, strict=True):
        assert a.keys() == b.keys()
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    for a, b in zip(shared, one, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # compiles two population epochs
def test_a_runs_seeds_over_devices_compute_what_one_device_computes() -> None:
    # A run's population (its seeds; the config's numbers constants of the code), three seeds
    # over two devices.
    env = envs.make_jax("CartPole-vel")
    config = env.spec.agent_config(n_hidden=6, jacobian="rflo", lr_td=1e-2)
    seeds = [0, 1, 2]
    keys = jnp.stack([jax.random.key_data(jax.random.key(s)) for s in seeds])
    results = []
    for devices in (jax.devices()[:2], None):
        init, epoch, evaluate = fused.make_population(
            config, env, epoch_steps=EPOCH_STEPS, devices=devices
        )
        carry = init(jaxbe.init_population(config, seeds), keys)
        carry, metrics = epoch(carry, jnp.ones(len(seeds), bool))
        score = evaluate(carry["agent"], keys)
        results.append(jax.device_get((carry, metrics, score)))
    shared, one = (jax.tree_util.tree_leaves(r) for r in results)
    assert len(shared) == len(one)
    for a, b in zip(shared, one, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_block_must_hold_a_member() -> None:
    env = envs.make_jax("CartPole-vel")
    config = env.spec.agent_config(n_hidden=4)
    with pytest.raises(ValueError, match="member_block must be a positive number"):
        fused.make_population(config, env, member_block=0)


@pytest.mark.slow  # compiles two fused engines
def test_an_engine_of_three_seeds_on_two_devices_is_the_engine_on_one() -> None:
    """The engine makes the shares equal with a held copy of the last member: its epochs,
    evaluations and snapshots are those of the same engine on one device, and its snapshots
    (what checkpoints store) hold the three seeds only, and restore."""
    from rtrrl.settings import RunSettings

    settings = RunSettings(task="CartPole-vel", backend="jax", epoch_steps=EPOCH_STEPS, seeds=3)
    config = envs.make_jax("CartPole-vel").spec.agent_config(n_hidden=6, lr_td=1e-2)
    engines = [
        fused.FusedEngine(settings, config, devices=devices)
        for devices in (jax.devices()[:2], jax.devices()[:1])
    ]
    results = []
    for engine in engines:
        first = engine.run_epoch([0, 1, 2])
        second = engine.run_epoch([0, 2])  # seed 1 stopped
        scores = engine.evaluate({0: 7, 1: 8, 2: 9})
        results.append((first, second, scores, engine.snapshot()))
    shared, one = results
    assert shared[:3] == one[:3]
    (agents, state), (agents_one, state_one) = shared[3], one[3]
    assert all(v.shape[0] == 3 for v in [*agents.values(), *state["carry"]])
    for name in agents:
        np.testing.assert_array_equal(agents[name], agents_one[name], err_msg=name)
    for a, b in zip(state["carry"], state_one["carry"], strict=True):
        np.testing.assert_array_equal(a, b)
    # A checkpoint restored on two devices continues as the engine that wrote it.
    restored = fused.FusedEngine(settings, config, devices=jax.devices()[:2])
    restored.restore(agents, state)
    assert restored.run_epoch([0, 1, 2]) == engines[0].run_epoch([0, 1, 2])
