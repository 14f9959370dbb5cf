"""The jax backend beyond what the conformance suite checks: conversions, noise, variants,
populations."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

import rtrrl  # noqa: E402
import rtrrl_spec  # noqa: E402
from rtrrl.backends import jax as jax_backend  # noqa: E402
from rtrrl.backends.base import Backend  # noqa: E402
from rtrrl.backends.jax import JaxBackend, x64_enabled  # noqa: E402
from rtrrl_spec.lru import LRU_SENSITIVITIES  # noqa: E402

pytestmark = pytest.mark.jax

CONFIGS = {
    "discrete-rflo": rtrrl_spec.Config(obs_dim=3, n_actions=3, n_hidden=5),
    "bounded-rtrl-nofa": rtrrl_spec.Config(
        obs_dim=2,
        action_dim=2,
        n_hidden=4,
        jacobian="rtrl",
        feedback_alignment=False,
        action_low=(-1.0, 0.0),
        action_high=(1.0, 2.0),
    ),
    "unbounded-dutch-avg": rtrrl_spec.Config(
        obs_dim=2, action_dim=1, n_hidden=3, trace="dutch", reward_rate_lr=0.05, dt=0.5
    ),
    "linear": rtrrl_spec.Config(obs_dim=4, n_actions=2, body="linear", clip_norm=None),
    "lru-meta": rtrrl_spec.Config(obs_dim=3, n_actions=3, n_hidden=4, body="lru", meta_rl=True),
    "lru-frozen-dutch": rtrrl_spec.Config(
        obs_dim=2, action_dim=1, n_hidden=4, body="lru", freeze_rnn=True, trace="dutch"
    ),
    "ctrnn-frozen": rtrrl_spec.Config(obs_dim=3, n_actions=2, n_hidden=4, freeze_rnn=True),
}


@pytest.fixture
def be() -> JaxBackend:
    backend = rtrrl.use("jax")
    assert isinstance(backend, JaxBackend)
    return backend


def _inputs(config: rtrrl_spec.Config, B: int, rng: np.random.Generator, first: bool, lead=()):
    shape = (*lead, B)
    obs = rng.uniform(-2, 2, (*shape, config.obs_dim)).astype(np.float32)
    reward = rng.uniform(-1, 1, shape).astype(np.float32)
    done = np.ones(shape, bool) if first else rng.random(shape) < 0.2
    if config.discrete:
        noise = rng.uniform(0.01, 0.99, (*shape, config.n_actions))
    else:
        noise = rng.standard_normal((*shape, config.action_dim))
    return obs, reward, done, noise.astype(np.float32)


def _assert_trees_close(a: dict, b: dict, rtol: float, atol: float, where: str = "") -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        assert x.dtype == y.dtype, (where, k, x.dtype, y.dtype)
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=f"{where} {k}")


def test_satisfies_protocol(be: JaxBackend) -> None:
    assert isinstance(be, Backend)
    assert be.name == "jax"
    assert be.version() == jax.__version__
    assert be.device() == "cpu" or ":" in be.device()
    want = ("float32", "float64") if x64_enabled() else ("float32",)
    assert be.supported_dtypes == want
    assert set(be.step_variants()) == {"jit", "eager"}
    for jit in (True, False):
        assert list(be.step_functions(jit=jit)) == list(rtrrl_spec.STEP_FUNCTIONS)


def test_module_reads_like_the_spec() -> None:
    """Every spec function is defined at module level, in the spec's order, with the
    reference's positional parameters (extra ones keyword-only)."""
    reference = rtrrl_spec.step_functions()
    lines = []
    for name in rtrrl_spec.STEP_FUNCTIONS:
        fn = getattr(jax_backend, name)
        assert fn.__module__ == jax_backend.__name__, name
        lines.append(inspect.getsourcelines(fn)[1])
        ours, theirs = inspect.signature(fn), inspect.signature(reference[name])
        positional = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.POSITIONAL_ONLY)
        names = [p.name for p in ours.parameters.values() if p.kind in positional]
        assert names == list(theirs.parameters), name
        extra = [p for p in ours.parameters.values() if p.kind not in positional]
        assert all(p.kind == p.KEYWORD_ONLY and p.default is not p.empty for p in extra), name
    assert lines == sorted(lines), "the functions are not in rtrrl_spec.STEP_FUNCTIONS order"


def _to_jax(tree):
    if isinstance(tree, np.ndarray):
        return jnp.asarray(tree)
    if isinstance(tree, dict):
        return {k: _to_jax(v) for k, v in tree.items()}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*map(_to_jax, tree))
    return tree


def _leaves(tree, path=""):
    """``(path, leaf)`` pairs; NamedTuples by field, dicts by sorted key (jit sorts them)."""
    if isinstance(tree, dict):
        for k in sorted(tree):
            yield from _leaves(tree[k], f"{path}.{k}")
    elif isinstance(tree, tuple):
        for k, v in zip(getattr(tree, "_fields", range(len(tree))), tree, strict=True):
            yield from _leaves(v, f"{path}.{k}")
    else:
        yield path, tree


def _spec_calls(config: rtrrl_spec.Config, B: int = 3) -> list[tuple[str, tuple]]:
    """One call of each spec function on this config's shapes, with the reference's argument
    types (Python floats for the numbers, NamedTuples from the reference's own functions)."""
    rng = np.random.default_rng(0)
    agent = rtrrl_spec.init(config, B, 0)

    def f32(*shape):
        return rng.uniform(-1, 1, shape).astype(np.float32)

    N, n_in = config.n_hidden, config.input_dim
    x, h, done = f32(B, n_in), f32(B, N), np.array([True, False, False][:B])
    calls = []
    if config.body == "ctrnn":
        W, tau, Z = agent["W"], agent["tau"], n_in + N + 1
        s = rtrrl_spec.step_functions()["ctrnn_step"](W, tau, h, x, 0.7)
        calls += [
            ("ctrnn_step", (W, tau, h, x, 0.7)),
            ("rflo_update", (f32(B, N, Z), f32(B, N), tau, h, s, 0.7)),
            ("rtrl_update", (f32(B, N, N, Z), f32(B, N, N), W, tau, h, s, 0.7, n_in)),
            ("project_rflo", (f32(B, N), f32(B, N, Z), f32(B, N))),
            ("project_rtrl", (f32(B, N), f32(B, N, N, Z), f32(B, N, N))),
        ]
    else:
        params = {k: agent[k] for k in rtrrl_spec.LRU_PARAMS}
        h_im = f32(B, N)
        s = rtrrl_spec.step_functions()["lru_step"](params, h, h_im, x)
        J = {k: f32(*agent[k].shape) for k in LRU_SENSITIVITIES}
        calls += [
            ("lru_lambda", (params["log_nu"], params["log_theta"])),
            ("lru_step", (params, h, h_im, x)),
            ("lru_sensitivity_update", (J, h, h_im, x, s)),
            ("project_lru", (f32(B, N), params, J, s)),
        ]
    K = config.n_actions if config.discrete else 2 * config.action_dim
    noise = rtrrl_spec.draw_noise(config, B, rng, "float32")
    group, step = {"a": f32(3, 2), "b": f32(4)}, {"a": f32(3, 2), "b": f32(4)}
    moments = [{"a": f32(3, 2), "b": f32(4)}, {"a": f32(3, 2) ** 2, "b": f32(4) ** 2}]
    direction = {k: f32(*agent[k].shape) for k in rtrrl_spec.params_of(config)}
    return calls + [
        ("critic_value", (h, agent["W_C"], agent["b_C"])),
        ("policy_step", (config, 3 * f32(B, K), noise)),
        ("td_error", (f32(B), done, f32(B), f32(B), 0.97, np.asarray(0.3, np.float32))),
        ("td_error", (f32(B), done, f32(B), f32(B), 0.97)),
        ("decay_trace", (f32(B, N, 2), done, 0.93)),
        ("global_norm", (group,)),
        ("clip_by_global_norm", (group, 0.5)),
        ("clip_by_global_norm", (group, None)),
        ("adam_step", (group, step, *moments, np.asarray(4, np.int32), 0.01, 0.9, 0.999, 1e-8)),
        ("apply_update", (config, agent, direction)),
        ("step", (config, agent, f32(B, config.obs_dim), f32(B), done, noise)),
    ]


@pytest.mark.parametrize("name", ["bounded-rtrl-nofa", "lru-meta"])
def test_step_functions_match_the_reference(be: JaxBackend, name: str) -> None:
    """Each function of step_functions() (jitted, Python numbers static) against the
    reference's, on the reference's argument types; both configs together call all of them."""
    config = CONFIGS[name]
    ours, reference = be.step_functions(), rtrrl_spec.step_functions()
    for fn_name, args in _spec_calls(config):
        got, want = ours[fn_name](*_to_jax(args)), reference[fn_name](*args)
        if isinstance(want, tuple) and hasattr(want, "_fields"):
            assert type(got) is type(want), fn_name  # the reference's own NamedTuple
        got, want = list(_leaves(got)), list(_leaves(want))
        assert [p for p, _ in got] == [p for p, _ in want], fn_name
        for (path, g), (_, w) in zip(got, want, strict=True):
            g, w = np.asarray(g), np.asarray(w)
            # The reference's continuous log_prob / entropy come out float64 (its ln(2π)/2 is
            # a NumPy float64 scalar); the step casts them back.
            if path not in (".log_prob", ".entropy"):
                assert g.dtype == w.dtype, (fn_name, path, g.dtype, w.dtype)
            np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-6, err_msg=f"{fn_name}{path}")


def test_rng_state_round_trip(be: JaxBackend) -> None:
    config = CONFIGS["discrete-rflo"]
    _, key = be.draw_noise(config, 2, be.rng(5), "float32")
    state = be.rng_state(key)
    assert all(isinstance(v, np.ndarray) for v in state.values())
    restored = be.rng_from_state({k: v.copy() for k, v in state.items()})
    for _ in range(3):
        a, key = be.draw_noise(config, 4, key, "float32")
        b, restored = be.draw_noise(config, 4, restored, "float32")
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("dtype", ["float32", "int32", "bool", "float64", "int64"])
def test_round_trip_keeps_dtype(be: JaxBackend, dtype: str) -> None:
    if np.dtype(dtype).itemsize == 8 and not x64_enabled():
        pytest.skip("64-bit arrays need JAX_ENABLE_X64=1 (the refusal is tested below)")
    original = np.arange(6).reshape(2, 3).astype(dtype)
    tree = {"a": original, "b": {"c": original[0]}}
    converted = be.from_numpy(tree)
    assert isinstance(converted["a"], jax.Array)
    assert converted["a"].dtype == np.dtype(dtype)
    back = be.to_numpy(converted)
    assert isinstance(back["a"], np.ndarray)
    assert back["a"].dtype == np.dtype(dtype) and back["b"]["c"].dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back["a"], original)
    np.testing.assert_array_equal(back["b"]["c"], original[0])


def test_agent_round_trip_is_exact(be: JaxBackend) -> None:
    config = CONFIGS["discrete-rflo"]
    agent = rtrrl_spec.init(config, 2, 7)
    back = be.to_numpy(be.from_numpy(agent))
    assert back["count_td"].dtype == np.int32 and back["a_prev"].dtype == np.int32
    for k, v in agent.items():
        assert back[k].dtype == v.dtype, k
        np.testing.assert_array_equal(back[k], v, err_msg=k)


_WITHOUT_X64 = textwrap.dedent(
    """
    import numpy as np
    import rtrrl, rtrrl_spec
    from rtrrl.backends.jax import Float64DisabledError
    be = rtrrl.use("jax")
    assert be.supported_dtypes == ("float32",), be.supported_dtypes
    for call in (
        lambda: be.from_numpy({"W": np.zeros(3)}),
        lambda: be.init(rtrrl_spec.Config(obs_dim=2, n_actions=2), 1, 0, "float64"),
        lambda: be.draw_noise(rtrrl_spec.Config(obs_dim=2, n_actions=2), 1, be.rng(0), "float64"),
    ):
        try:
            call()
        except Float64DisabledError as err:
            assert "JAX_ENABLE_X64=1" in str(err) and "jax_enable_x64" in str(err), err
        else:
            raise SystemExit("no error for float64 without x64")
    import jax
    assert not jax.config.read("jax_enable_x64"), "the backend flipped x64"
    print("OK")
    """
)


def test_float64_without_x64_is_a_clear_error() -> None:
    # A fresh interpreter: x64 cannot be switched off reliably once arrays exist here.
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    out = subprocess.run(
        [sys.executable, "-c", _WITHOUT_X64], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("OK")


@pytest.mark.skipif(not x64_enabled(), reason="needs JAX_ENABLE_X64=1")
def test_float64_agent_stays_float64(be: JaxBackend) -> None:
    config = CONFIGS["bounded-rtrl-nofa"]
    agent = be.init(config, 2, 0, "float64")
    assert agent["W"].dtype == np.float64 and agent["count_rnn"].dtype == np.int32
    obs, reward, done, noise = _inputs(config, 2, np.random.default_rng(0), first=True)
    new, action, info = be.step(
        config, agent, *(be.from_numpy(x.astype(np.float64)) for x in (obs, reward)),
        be.from_numpy(done), be.from_numpy(noise.astype(np.float64)),
    )  # fmt: skip
    assert all(new[k].dtype == agent[k].dtype for k in agent)
    assert action.dtype == np.float64 and info["td_error"].dtype == np.float64


@pytest.mark.parametrize("discrete", [True, False])
def test_draw_noise_domain_and_determinism(be: JaxBackend, discrete: bool) -> None:
    config = CONFIGS["discrete-rflo"] if discrete else CONFIGS["bounded-rtrl-nofa"]
    key = be.rng(3)
    noise, key2 = be.draw_noise(config, 4096, key, "float32")
    again, _ = be.draw_noise(config, 4096, be.rng(3), "float32")
    other, _ = be.draw_noise(config, 4096, key2, "float32")
    noise = np.asarray(noise)
    assert noise.shape == rtrrl_spec.noise_shape(config, 4096) and noise.dtype == np.float32
    np.testing.assert_array_equal(noise, np.asarray(again))  # same key, same numbers
    assert not np.array_equal(noise, np.asarray(other))  # the returned key moved on
    if discrete:
        assert noise.min() > 0.0 and noise.max() < 1.0
        assert abs(noise.mean() - 0.5) < 0.02
    else:
        assert abs(noise.mean()) < 0.05 and abs(noise.std() - 1.0) < 0.05


def test_discrete_noise_near_zero_stays_finite(be: JaxBackend) -> None:
    # The smallest value draw_noise can return must still give a finite Gumbel score.
    tiny = np.float32(np.finfo(np.float32).tiny)
    assert np.isfinite(-np.log(-np.log(tiny)))
    config = CONFIGS["discrete-rflo"]
    agent = be.init(config, 1, 0)
    noise = np.array([[tiny, 0.5, np.nextafter(np.float32(1), np.float32(0))]], np.float32)
    obs, reward, done, _ = _inputs(config, 1, np.random.default_rng(0), first=True)
    new, action, info = be.step(config, agent, obs, reward, done, noise)
    assert int(action[0]) == 2  # the largest noise wins the Gumbel-max by far
    assert np.all(np.isfinite(np.asarray(new["e_W_A"])))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_jit_and_eager_agree(be: JaxBackend, name: str) -> None:
    config = CONFIGS[name]
    variants = be.step_variants()
    rng = np.random.default_rng(1)
    agents = {v: be.init(config, 3, 0) for v in variants}
    for t in range(4):
        x = [be.from_numpy(a) for a in _inputs(config, 3, rng, first=t == 0)]
        out = {v: variants[v](config, agents[v], *x) for v in variants}
        for v in variants:
            agents[v] = out[v][0]
        _assert_trees_close(
            be.to_numpy(out["jit"][0]), be.to_numpy(out["eager"][0]), 1e-5, 1e-6, f"t={t}"
        )
        _assert_trees_close(
            be.to_numpy(out["jit"][2]), be.to_numpy(out["eager"][2]), 1e-5, 1e-6, f"t={t}"
        )
    # The agents really moved, so the comparison above compared something.
    start = rtrrl_spec.init(config, 3, 0)
    assert not np.allclose(np.asarray(agents["jit"]["W_A"]), start["W_A"])


def _run_alone(be, config, seed, B, inputs):
    agent = be.init(config, B, seed)
    for x in inputs:
        agent, action, info = be.step(config, agent, *x)
    return be.to_numpy(agent), np.asarray(action)


@pytest.mark.parametrize(
    "name", ["discrete-rflo", "bounded-rtrl-nofa", "unbounded-dutch-avg", "lru-meta"]
)
def test_population_member_equals_agent_alone(be: JaxBackend, name: str) -> None:
    config = CONFIGS[name]
    seeds, B, T = [0, 5, 11], 2, 5
    rng = np.random.default_rng(2)
    inputs = [_inputs(config, B, rng, first=t == 0, lead=(len(seeds),)) for t in range(T)]
    agents = be.init_population(config, seeds, B)
    assert agents["W_A"].shape == (len(seeds), *rtrrl_spec.layout(config, B)["W_A"].shape)
    for x in inputs:
        agents, actions, infos = be.population_step(config, agents, *x)
    assert actions.shape[0] == len(seeds) and infos["td_error"].shape == (len(seeds), B)
    agents = be.to_numpy(agents)
    for k, seed in enumerate(seeds):
        alone, action = _run_alone(be, config, seed, B, [[a[k] for a in x] for x in inputs])
        member = {name_: v[k] for name_, v in agents.items()}
        _assert_trees_close(member, alone, 2e-5, 1e-6, f"member {k}")
        np.testing.assert_array_equal(np.asarray(actions[k]), action)
    # Different seeds make different agents: the members are not copies of one another.
    assert not np.allclose(agents["W_A"][0], agents["W_A"][1])


def test_population_with_per_member_hyperparameters(be: JaxBackend) -> None:
    base = CONFIGS["discrete-rflo"]
    configs = [base.replace(lr_td=lr, lr_rnn=lr, gamma=g) for lr, g in [(1e-3, 0.99), (0.05, 0.9)]]
    B, T = 1, 4
    rng = np.random.default_rng(4)
    inputs = [_inputs(base, B, rng, first=t == 0, lead=(2,)) for t in range(T)]
    agents = be.init_population(base, [3, 3], B)  # same seed: only the numbers differ
    step = jax_backend.make_population_step(configs)
    for x in inputs:
        agents, _, _ = step(agents, *x)
    agents = be.to_numpy(agents)
    for k, config in enumerate(configs):
        alone, _ = _run_alone(be, config, 3, B, [[a[k] for a in x] for x in inputs])
        _assert_trees_close({n: v[k] for n, v in agents.items()}, alone, 2e-5, 1e-6, f"m{k}")
    assert not np.allclose(agents["W_A"][0], agents["W_A"][1])


def test_population_rejects_mixed_structures() -> None:
    base = CONFIGS["discrete-rflo"]
    with pytest.raises(rtrrl_spec.SpecError, match="structure"):
        jax_backend.make_population_step([base, base.replace(jacobian="rtrl")])


def test_one_compile_per_structure() -> None:
    # Configs that differ only in numbers share the jitted step (the numbers are traced).
    a = CONFIGS["discrete-rflo"]
    b = a.replace(gamma=0.5, lr_td=0.1, clip_norm=3.0, dt=0.5)
    assert jax_backend.split_config(a) == jax_backend.split_config(b)
    assert jax_backend.split_config(a) != jax_backend.split_config(a.replace(clip_norm=None))


def test_step_inside_scan_matches_steps(be: JaxBackend) -> None:
    config = CONFIGS["discrete-rflo"]
    B, T = 2, 5
    rng = np.random.default_rng(5)
    xs = [_inputs(config, B, rng, first=t == 0) for t in range(T)]
    stacked = tuple(jnp.asarray(np.stack([x[i] for x in xs])) for i in range(4))
    step = jax_backend.make_step(config)

    @jax.jit
    def run(agent, inputs):
        def body(agent, x):
            agent, action, info = step(agent, *x)
            return agent, (action, info["td_error"])

        return jax.lax.scan(body, agent, inputs)

    scanned, (actions, deltas) = run(be.init(config, B, 0), stacked)
    assert actions.shape == (T, B) and deltas.shape == (T, B)
    alone, action = _run_alone(be, config, 0, B, xs)
    _assert_trees_close(be.to_numpy(scanned), alone, 2e-5, 1e-6, "scan")
    np.testing.assert_array_equal(np.asarray(actions[-1]), action)


def test_adam_bias_correction_is_exact_in_float32() -> None:
    # 1 - 0.999**t cancels in float32 (about 1e-5 relative at t = 1, what optax computes with
    # x64 off); the backend must match the reference's float64-formed correction instead.
    config = CONFIGS["discrete-rflo"].replace(lr_td=0.05, lr_rnn=0.05, clip_norm=None)
    agent = rtrrl_spec.init(config, 1, 0, "float32")
    rng = np.random.default_rng(0)
    direction = {
        k: rng.standard_normal(agent[k].shape).astype(np.float32)
        for k in rtrrl_spec.params_of(config)
    }
    expected, _ = rtrrl_spec.apply_update(
        config,
        {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in agent.items()},
        {k: v.astype(np.float64) for k, v in direction.items()},
    )
    jax_agent = {k: jnp.asarray(v) for k, v in agent.items()}
    jax_direction = {k: jnp.asarray(v) for k, v in direction.items()}
    # As the spec calls it (the config's own numbers), and as the compiled step calls it (the
    # structure, with the numbers traced).
    numbers = jax_backend.hyperparams(config, "float32")
    structure = jax_backend.split_config(config)
    for how, got in {
        "spec's arguments": jax_backend.apply_update(config, jax_agent, jax_direction)[0],
        "traced numbers": jax.jit(
            lambda a, d, n: jax_backend.apply_update(structure, a, d, numbers=n)[0]
        )(jax_agent, jax_direction, numbers),
    }.items():
        for k in rtrrl_spec.params_of(config):
            step_ref = expected[k] - agent[k].astype(np.float64)
            step_got = np.asarray(got[k], np.float64) - agent[k].astype(np.float64)
            # |step| = lr at t = 1: the error is float32 rounding of the parameter, not 1e-5 lr.
            np.testing.assert_allclose(
                step_got, step_ref, rtol=0, atol=2e-7 + 1e-6 * 0.05, err_msg=f"{how}: {k}"
            )
        assert int(got["count_td"]) == 1 and got["count_td"].dtype == np.int32


@pytest.mark.parametrize("name", ["lru-frozen-dutch", "ctrnn-frozen"])
def test_frozen_body_never_changes_under_jit(be: JaxBackend, name: str) -> None:
    # Only the actor and critic learn: the body's parameters stay bit-identical, while h
    # moves and the heads learn (so the step really ran).
    config = CONFIGS[name]
    body = rtrrl_spec.body_params(config)
    assert body and not rtrrl_spec.rnn_params(config)
    B, T = 2, 6
    rng = np.random.default_rng(6)
    step = jax.jit(jax_backend.make_step(config))
    start = be.init(config, B, 0)
    agent = start
    for t in range(T):
        agent, _, info = step(agent, *(jnp.asarray(a) for a in _inputs(config, B, rng, t == 0)))
        assert "grad_norm_rnn" not in info
        assert not any(k.split(".", 1)[-1] in body for k in info if "." in k)
    for k in body:
        np.testing.assert_array_equal(np.asarray(agent[k]), np.asarray(start[k]), err_msg=k)
    state = "h" if config.body == "ctrnn" else "h_re"
    assert not np.allclose(np.asarray(agent[state]), np.asarray(start[state]))
    assert not np.allclose(np.asarray(agent["W_A"]), np.asarray(start["W_A"]))


def test_trained_lru_body_learns(be: JaxBackend) -> None:
    # The counterpart of the frozen test: with the same loop, a trained LRU body moves.
    config = CONFIGS["lru-meta"]
    B = 2
    rng = np.random.default_rng(6)
    step = jax.jit(jax_backend.make_step(config))
    start = be.init(config, B, 0)
    agent = start
    for t in range(6):
        agent, _, _ = step(agent, *(jnp.asarray(a) for a in _inputs(config, B, rng, t == 0)))
    for k in rtrrl_spec.LRU_PARAMS:
        assert not np.array_equal(np.asarray(agent[k]), np.asarray(start[k])), k


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_packed_moments_give_the_same_step(name: str) -> None:
    """pack_moments / unpack_moments round-trip exactly, and a step on packed moments equals
    the canonical step (the fused epoch carries them packed)."""
    config = CONFIGS[name]
    agent = {k: jnp.asarray(v) for k, v in rtrrl_spec.init(config, 2, 0).items()}
    rng = np.random.default_rng(0)
    agent = {  # non-zero moments, so that a mixed-up order would show
        k: jnp.asarray(rng.uniform(0.1, 1.0, v.shape).astype(v.dtype))
        if k.startswith(("mu_", "nu_"))
        else v
        for k, v in agent.items()
    }
    packed = jax_backend.pack_moments(config, agent)
    assert not any(k.startswith(("mu_", "nu_")) for k in packed)
    back = jax_backend.unpack_moments(config, packed)
    assert set(back) == set(agent)
    for k in agent:
        np.testing.assert_array_equal(back[k], agent[k], err_msg=k)
    step = jax.jit(jax_backend.make_step(config))
    obs = jnp.asarray(rng.uniform(-1, 1, (2, config.obs_dim)).astype(np.float32))
    reward, done = jnp.asarray([0.5, -1.0], jnp.float32), jnp.asarray([False, False])
    noise = jnp.asarray(rtrrl_spec.draw_noise(config, 2, rng, "float32"))
    for _ in range(3):  # traces, hence update directions, away from zero
        agent = step(agent, obs, reward, done, noise)[0]
    packed = jax_backend.pack_moments(config, agent)
    plain, action, info = step(agent, obs, reward, done, noise)
    directions = [v for k, v in info.items() if k.startswith("direction.")]
    assert all(float(jnp.max(jnp.abs(v))) > 0 for v in directions)
    via_packed, action_p, _ = step(packed, obs, reward, done, noise)
    assert int(jnp.sum(action != action_p)) == 0
    via_packed = jax_backend.unpack_moments(config, via_packed)
    for k in plain:
        np.testing.assert_allclose(via_packed[k], plain[k], rtol=2e-6, atol=1e-7, err_msg=k)
