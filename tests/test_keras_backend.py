"""The Keras 3 backends (``keras-jax``, ``keras-torch``) and the ``RTRRLAgent`` Keras model.

Keras picks its backend once per process (``KERAS_BACKEND``), so every check runs in a
subprocess with its own environment; ``KERAS_HOME`` points into ``tmp_path`` so nothing is
written to ``~/.keras``. The math itself is checked by the conformance suite
(``pytest --pyargs rtrrl.conformance --backend keras-jax``).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [pytest.mark.keras, pytest.mark.slow]

if importlib.util.find_spec("keras") is None:
    pytest.skip("keras is not installed (pip install 'rtrrl[keras]')", allow_module_level=True)

FRAMEWORKS = [
    pytest.param(
        name,
        marks=pytest.mark.skipif(
            importlib.util.find_spec(name) is None, reason=f"{name} is not installed"
        ),
    )
    for name in ("jax", "torch")
]


def run_python(
    code: str, tmp_path: Path, keras_backend: str | None, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with ``KERAS_BACKEND`` set (or unset, for None)."""
    environ = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "JAX_ENABLE_X64")}
    environ["KERAS_HOME"] = str(tmp_path / "keras_home")
    if keras_backend is not None:
        environ["KERAS_BACKEND"] = keras_backend
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
    )


def assert_ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout, result.stdout + result.stderr
    return result.stdout


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_agent_model_steps_like_the_function_and_saves(tmp_path: Path, framework: str) -> None:
    """RTRRLAgent.step equals the functional step bit for bit, and survives .keras and weights
    files with every variable (parameters, traces, Adam state, counts) intact."""
    code = """
    import numpy as np, keras
    import rtrrl, rtrrl_spec
    from rtrrl.backends.keras import RTRRLAgent

    be = rtrrl.use("keras-FRAMEWORK")
    config = rtrrl_spec.Config(obs_dim=2, action_dim=1, action_low=(-1.0,), action_high=(2.0,),
                               n_hidden=3, jacobian="rtrl", trace="dutch", reward_rate_lr=0.01)
    B, dtype = 2, "float32"
    rng = np.random.default_rng(0)
    inputs = []
    for t in range(4):
        obs, reward = rng.uniform(-1, 1, (B, 2)), rng.uniform(-1, 1, B)
        noise = rng.standard_normal((B, 1))
        inputs.append((obs.astype(dtype), reward.astype(dtype), np.array([t == 0] * B),
                       noise.astype(dtype)))

    model = RTRRLAgent(config, batch_size=B, seed=7, dtype=dtype)
    assert {v.path.split("/")[-1] for v in model.non_trainable_variables} == set(
        rtrrl_spec.layout(config, B)), [v.path for v in model.non_trainable_variables]
    assert not model.trainable_variables
    agent = be.init(config, B, seed=7, dtype=dtype)
    for obs, reward, done, noise in inputs[:3]:
        args = [be.from_numpy(a) for a in (obs, reward, done, noise)]
        agent, action_f, _ = be.step(config, agent, *args)
        action_m, info_m = model.step(*args)
        assert np.array_equal(be.to_numpy(action_f), be.to_numpy(action_m))
    functional = be.to_numpy(agent)
    state = model.state_numpy()
    assert sorted(state) == sorted(functional)
    for k in functional:
        assert state[k].dtype == functional[k].dtype, k
        assert np.array_equal(state[k], functional[k]), k
    assert int(state["count_td"]) == 3
    rtrrl_spec.validate_agent(config, state)

    model.save("agent.keras")
    loaded = keras.saving.load_model("agent.keras")
    assert type(loaded) is RTRRLAgent and loaded.agent_config == config
    assert loaded.batch_size == B and loaded.float_dtype == dtype
    for k, v in loaded.state_numpy().items():
        assert np.array_equal(v, state[k]), k

    model.save_weights("agent.weights.h5")
    fresh = RTRRLAgent(config, batch_size=B, seed=99, dtype=dtype)
    assert not np.array_equal(fresh.state_numpy()["W"], state["W"])
    fresh.load_weights("agent.weights.h5")
    for k, v in fresh.state_numpy().items():
        assert np.array_equal(v, state[k]), k

    # All three continue identically.
    args = [be.from_numpy(a) for a in inputs[3]]
    outs = [be.to_numpy(m.step(*args)[0]) for m in (model, loaded, fresh)]
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])
    assert np.array_equal(loaded.state_numpy()["e_W"], model.state_numpy()["e_W"])
    print("OK")
    """
    assert_ok(run_python(code.replace("FRAMEWORK", framework), tmp_path, framework))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_lru_agent_saves_loads_and_steps_like_the_function(tmp_path: Path, framework: str) -> None:
    """An LRU RTRRLAgent holds the LRU's arrays as its variables, learns its body (the rnn
    group steps), survives a .keras round trip with every variable intact, and the loaded
    model's next steps equal the functional step's from the saved state bit for bit."""
    code = """
    import numpy as np, keras
    import rtrrl, rtrrl_spec
    from rtrrl.backends.keras import RTRRLAgent

    be = rtrrl.use("keras-FRAMEWORK")
    config = rtrrl_spec.Config(obs_dim=3, n_actions=2, n_hidden=4, body="lru",
                               lru_r_min=0.5, clip_norm=None)
    B, dtype = 2, "float32"
    rng = np.random.default_rng(1)
    inputs = [(rng.uniform(-1, 1, (B, 3)).astype(dtype), rng.uniform(-1, 1, B).astype(dtype),
               np.array([t == 0, t == 3]), rng.uniform(0.05, 0.95, (B, 2)).astype(dtype))
              for t in range(6)]

    model = RTRRLAgent(config, batch_size=B, seed=3, dtype=dtype)
    names = {v.path.split("/")[-1] for v in model.non_trainable_variables}
    assert names == set(rtrrl_spec.layout(config, B)), sorted(names)
    assert {"log_nu", "B_re", "C_im", "h_re", "J_in_im", "e_log_theta", "mu_C_re",
            "count_rnn"} <= names and "W" not in names and "h" not in names, sorted(names)
    initial = model.state_numpy()
    for obs, reward, done, noise in inputs[:3]:
        model.step(*[be.from_numpy(a) for a in (obs, reward, done, noise)])
    saved = model.state_numpy()
    assert int(saved["count_rnn"]) == 3
    for k in rtrrl_spec.LRU_PARAMS:  # the body learns
        assert not np.array_equal(saved[k], initial[k]), k
    rtrrl_spec.validate_agent(config, saved)

    model.save("lru.keras")
    loaded = keras.saving.load_model("lru.keras")
    assert type(loaded) is RTRRLAgent and loaded.agent_config == config
    for k, v in loaded.state_numpy().items():
        assert v.dtype == saved[k].dtype and np.array_equal(v, saved[k]), k

    # The loaded model and the functional step from the saved state step identically.
    agent = be.from_numpy(saved)
    for obs, reward, done, noise in inputs[3:]:
        args = [be.from_numpy(a) for a in (obs, reward, done, noise)]
        agent, action_f, info_f = be.step(config, agent, *args)
        action_m, info_m = loaded.step(*args)
        assert np.array_equal(be.to_numpy(action_f), be.to_numpy(action_m))
        assert np.array_equal(be.to_numpy(info_f["features"]), be.to_numpy(info_m["features"]))
    functional, state = be.to_numpy(agent), loaded.state_numpy()
    assert sorted(state) == sorted(functional)
    for k in functional:
        assert np.array_equal(state[k], functional[k]), k
    assert not np.array_equal(state["h_re"], saved["h_re"])
    print("OK")
    """
    assert_ok(run_python(code.replace("FRAMEWORK", framework), tmp_path, framework))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_frozen_body_variables_never_change(tmp_path: Path, framework: str) -> None:
    """freeze_rnn: a CT-RNN or LRU RTRRLAgent steps its hidden state and trains actor and
    critic, but its body parameters stay exactly at their initial values, and it carries no
    sensitivities, body traces or rnn optimizer group."""
    code = """
    import numpy as np
    import rtrrl, rtrrl_spec
    from rtrrl.backends.keras import RTRRLAgent

    be = rtrrl.use("keras-FRAMEWORK")
    rng = np.random.default_rng(2)
    for body, state_name in (("ctrnn", "h"), ("lru", "h_re")):
        config = rtrrl_spec.Config(obs_dim=3, action_dim=2, n_hidden=4, body=body,
                                   freeze_rnn=True, lr_td=0.05)
        B = 3
        model = RTRRLAgent(config, batch_size=B, seed=5)
        names = {v.path.split("/")[-1] for v in model.non_trainable_variables}
        assert names == set(rtrrl_spec.layout(config, B)), sorted(names)
        body_names = rtrrl_spec.body_params(config)
        assert body_names and set(body_names) <= names
        no_training = {f"{p}_{k}" for p in ("e", "mu", "nu") for k in body_names}
        assert not no_training & names and "count_rnn" not in names, sorted(names)
        assert not any(n.startswith("J_") for n in names), sorted(names)
        before = model.state_numpy()
        for t in range(8):
            args = (rng.uniform(-1, 1, (B, 3)), rng.uniform(-1, 1, B) + 1.0,
                    rng.random(B) < 0.25, rng.standard_normal((B, 2)))
            _, info = model.step(*[be.from_numpy(np.asarray(a, dtype="bool" if a.dtype == bool
                                                            else "float32")) for a in args])
            assert not {k.split(".")[-1] for k in info} & set(body_names), sorted(info)
        after = model.state_numpy()
        for k in body_names:
            assert np.array_equal(after[k], before[k]), (body, k)
        assert not np.array_equal(after["W_A"], before["W_A"]), body  # the heads learn
        assert not np.array_equal(after["W_C"], before["W_C"]), body
        assert np.any(after[state_name] != 0), body  # and the hidden state steps
        assert int(after["count_td"]) == 8
    print("OK")
    """
    assert_ok(run_python(code.replace("FRAMEWORK", framework), tmp_path, framework))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_wrong_keras_backend_is_a_clear_error(tmp_path: Path, framework: str) -> None:
    other = {"jax": "torch", "torch": "jax"}[framework]
    code = f"""
    import rtrrl
    from rtrrl.backends.keras import KerasBackendMismatchError
    try:
        rtrrl.use("keras-{other}")
    except KerasBackendMismatchError as err:
        message = str(err)
        assert "KERAS_BACKEND={other}" in message, message
        assert "'keras-{framework}'" in message, message
    else:
        raise AssertionError("keras-{other} loaded under KERAS_BACKEND={framework}")
    from rtrrl._registry import backend_infos
    infos = {{i.name: i for i in backend_infos()}}
    assert infos["keras-{framework}"].installed and not infos["keras-{other}"].installed
    assert "KERAS_BACKEND={other}" in infos["keras-{other}"].reason
    print("OK")
    """
    assert_ok(run_python(code, tmp_path, framework))


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is not None,
    reason="tensorflow is installed, so Keras's default backend loads",
)
def test_unset_keras_backend_is_a_clear_error(tmp_path: Path) -> None:
    """KERAS_BACKEND unset means tensorflow, which is not installed: say what to set."""
    code = """
    import rtrrl
    for name in ("keras-jax", "keras-torch"):
        try:
            rtrrl.use(name)
        except rtrrl.BackendNotInstalledError as err:
            message = str(err)
            assert "KERAS_BACKEND=jax" in message and "KERAS_BACKEND=torch" in message, message
            assert "tensorflow" in message, message
        else:
            raise AssertionError(name + " loaded with KERAS_BACKEND unset")
    print("OK")
    """
    assert_ok(run_python(code, tmp_path, None))


DTYPES_CODE = """
import numpy as np
import rtrrl, rtrrl_spec

be = rtrrl.use("keras-FRAMEWORK")
arrays = {"i": np.arange(3, dtype=np.int32), "b": np.array([True, False]),
          "f": np.linspace(0, 1, 3, dtype=np.float32)}
back = be.to_numpy(be.from_numpy(arrays))
for k, v in arrays.items():
    assert back[k].dtype == v.dtype and np.array_equal(back[k], v), (k, back[k].dtype)
x64 = np.array([1.0 + 2.0**-40], np.float64)
if EXPECT_F64:
    assert be.supported_dtypes == ("float32", "float64"), be.supported_dtypes
    got = be.to_numpy(be.from_numpy(x64))
    assert got.dtype == np.float64 and got[0] == x64[0], got
    config = rtrrl_spec.Config(obs_dim=2, n_actions=3, n_hidden=2)
    agent = be.init(config, 2, 0, "float64")
    noise, _ = be.draw_noise(config, 2, be.rng(0), "float64")
    f = lambda a: be.from_numpy(np.asarray(a))
    new, action, info = be.step(config, agent, f(np.zeros((2, 2))), f(np.zeros(2)),
                                f(np.ones(2, bool)), noise)
    new, action, info = be.to_numpy(new), be.to_numpy(action), be.to_numpy(info)
    for k, spec in rtrrl_spec.layout(config, 2).items():
        assert new[k].dtype == spec.numpy_dtype("float64"), (k, new[k].dtype)
    assert action.dtype == np.int32
    assert all(v.dtype == np.float64 for k, v in info.items() if k != "sample"), info
else:
    assert be.supported_dtypes == ("float32",), be.supported_dtypes
    try:
        be.from_numpy(x64)
    except TypeError as err:
        assert "JAX_ENABLE_X64" in str(err), err
    else:
        raise AssertionError("float64 was downcast silently")
print("OK")
"""


@pytest.mark.parametrize(
    ("framework", "x64"),
    [
        pytest.param("torch", False, marks=FRAMEWORKS[1].marks),
        pytest.param("jax", True, marks=FRAMEWORKS[0].marks),
        pytest.param("jax", False, marks=FRAMEWORKS[0].marks),
    ],
)
def test_dtypes_are_preserved_or_refused(tmp_path: Path, framework: str, x64: bool) -> None:
    """int32, bool and float32 round-trip exactly; float64 round-trips and steps in float64
    where the framework holds it (torch; JAX with x64), and is refused, not downcast, where not."""
    expect_f64 = framework == "torch" or x64
    code = DTYPES_CODE.replace("FRAMEWORK", framework).replace("EXPECT_F64", str(expect_f64))
    env = {"JAX_ENABLE_X64": "1"} if x64 else {}
    assert_ok(run_python(code, tmp_path, framework, **env))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_keras_adam_is_not_the_spec_adam(tmp_path: Path, framework: str) -> None:
    """Why the backend implements the spec's Adam: keras.optimizers.Adam puts epsilon on the
    un-corrected root, so with the same epsilon its first step differs from rtrrl_spec's."""
    code = """
    import numpy as np, keras
    from rtrrl_spec.optim import adam_step
    g = np.array([1e-3], np.float32)
    var = keras.Variable(np.zeros(1, np.float32))
    opt = keras.optimizers.Adam(learning_rate=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-3)
    opt.apply_gradients([(keras.ops.convert_to_tensor(g), var)])
    keras_step = float(keras.ops.convert_to_numpy(var.value)[0])
    # The spec is ascent: its direction is the negative gradient.
    spec, _, _, _ = adam_step({"p": np.zeros(1)}, {"p": -g.astype(np.float64)},
                              {"p": np.zeros(1)}, {"p": np.zeros(1)}, np.asarray(0),
                              0.1, 0.9, 0.999, 1e-3)
    spec_step = float(spec["p"][0])
    # Spec: -lr * g / (|g| + eps) = -0.05; Keras: -lr * sqrt(1-b2) / (1-b1) * m / (sqrt(v) + eps)
    assert abs(spec_step - (-0.05)) < 1e-6, spec_step
    assert abs(keras_step - spec_step) > 1e-2, (keras_step, spec_step)
    print("OK")
    """
    assert_ok(run_python(code, tmp_path, framework))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_module_is_the_spec_function_for_function(tmp_path: Path, framework: str) -> None:
    """backends/keras.py defines every name of rtrrl_spec.STEP_FUNCTIONS, in that order, with
    the reference's positional parameters (extras keyword-only, with defaults); its numbers
    are rtrrl_spec.numbers_of's; each backend class offers exactly one step variant, and its
    step and step_functions()["step"] are that variant."""
    code = """
    import inspect
    import numpy as np
    import rtrrl, rtrrl_spec
    from rtrrl.backends import keras as kb

    be = rtrrl.use("keras-FRAMEWORK")
    names = rtrrl_spec.STEP_FUNCTIONS
    lines = [inspect.getsourcelines(getattr(kb, n))[1] for n in names]
    assert lines == sorted(lines), list(zip(names, lines))
    reference = rtrrl_spec.step_functions()
    for name in names:
        ours = inspect.signature(getattr(kb, name)).parameters.values()
        positional = [p.name for p in ours if p.kind != p.KEYWORD_ONLY]
        assert positional == list(inspect.signature(reference[name]).parameters), name
        assert all(p.default is not p.empty for p in ours if p.kind == p.KEYWORD_ONLY), name
    functions = be.step_functions()
    assert tuple(functions) == names, tuple(functions)
    for name, fn in functions.items():  # jitted or not, the signature is the function's
        assert list(inspect.signature(fn).parameters)[:3] == list(
            inspect.signature(reference[name]).parameters)[:3], name

    assert kb.split_config is rtrrl_spec.structure_of
    assert not hasattr(kb, "_hyperparams_numpy") and not hasattr(kb, "step_core")
    for config in (rtrrl_spec.Config(obs_dim=2, n_actions=2, clip_norm=None),
                   rtrrl_spec.Config(obs_dim=2, action_dim=2, action_low=(-1.0, 0.5),
                                     action_high=(1.0, 2.0), reward_rate_lr=0.1)):
        for dtype in be.supported_dtypes:
            want = rtrrl_spec.numbers_of(config, dtype)
            got = be.to_numpy(kb.hyperparams(config, dtype))
            assert sorted(got) == sorted(want), sorted(set(got) ^ set(want))
            for k in want:
                assert got[k].dtype == want[k].dtype and np.array_equal(got[k], want[k]), k

    variant = {"jax": "compiled", "torch": "eager"}["FRAMEWORK"]
    step = {"compiled": kb.step_compiled, "eager": kb.step}[variant]
    assert be.step_variants() == {variant: step}, be.step_variants()
    assert functions["step"] is step
    config = rtrrl_spec.Config(obs_dim=2, n_actions=2, n_hidden=3)
    agent = be.init(config, 2, 0)
    args = [be.from_numpy(a) for a in (np.ones((2, 2), "float32"), np.ones(2, "float32"),
                                       np.array([True, False]), np.full((2, 2), 0.5, "float32"))]
    by_backend, by_variant = be.step(config, agent, *args)[0], step(config, agent, *args)[0]
    for k, v in be.to_numpy(by_variant).items():
        assert np.array_equal(be.to_numpy(by_backend[k]), v), k
    print("OK")
    """
    assert_ok(run_python(code.replace("FRAMEWORK", framework), tmp_path, framework))


STEP_FUNCTIONS_CODE = """
import numpy as np
import rtrrl, rtrrl_spec
from rtrrl_spec import ctrnn, lru

be = rtrrl.use("keras-FRAMEWORK")
from rtrrl.backends import keras as kb

TABLES = {"module": {n: getattr(kb, n) for n in rtrrl_spec.STEP_FUNCTIONS},
          "step_functions": be.step_functions()}
reference = rtrrl_spec.step_functions()


def to_backend(x, numbers):
    # numbers "python": Python floats as they are; "tensor": 0-d float64 tensors.
    if isinstance(x, np.ndarray):
        return be.from_numpy(x)
    if isinstance(x, dict):
        return {k: to_backend(v, numbers) for k, v in x.items()}
    if isinstance(x, tuple):
        items = [to_backend(v, numbers) for v in x]
        return type(x)(*items) if hasattr(x, "_fields") else tuple(items)
    if isinstance(x, float) and numbers == "tensor":
        return be.from_numpy(np.asarray(x, np.float64))
    return x


def compare(name, got, want, dtype, path=""):
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), (name, path, sorted(got))
        for k in want:
            compare(name, got[k], want[k], dtype, f"{path}.{k}")
    elif isinstance(want, tuple):
        # The reference's NamedTuples themselves (CTRNNStep, LRUStep, PolicyStep) or tuples.
        assert type(got) is type(want) and len(got) == len(want), (name, path, type(got))
        for i, (g, w) in enumerate(zip(got, want)):
            compare(name, g, w, dtype, f"{path}[{i}]")
    else:
        g, w = be.to_numpy(got), np.asarray(want)
        assert g.shape == w.shape, (name, path, g.shape, w.shape)
        if w.dtype.kind == "f":
            assert g.dtype == np.dtype(dtype), (name, path, g.dtype, dtype)
            rtol, atol = (1e-10, 1e-13) if dtype == "float64" else (1e-4, 1e-6)
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=f"{name}{path}")
        else:
            assert g.dtype == w.dtype and np.array_equal(g, w), (name, path, g, w)


def calls(config, dtype, seed):
    # (name, args): every spec function on arguments as the reference takes them.
    rng = np.random.default_rng(seed)
    B, N, I = 3, config.n_hidden, config.input_dim
    a = rtrrl_spec.init(config, B, seed, dtype)
    for k, v in a.items():  # non-zero state, traces and moments
        if v.dtype.kind == "f" and k.startswith(("h", "J_", "e_", "x_", "mu_", "nu_", "v_")):
            a[k] = np.abs(rng.standard_normal(v.shape) * 0.1).astype(dtype)
    a["count_td"] = np.asarray(5, np.int32)
    f = lambda *shape: rng.uniform(-1, 1, shape).astype(dtype)
    x, done = f(B, I), np.array([True, False, False])
    out = []
    if config.body == "ctrnn":
        s = ctrnn.ctrnn_step(a["W"], a["tau"], a["h"], x, config.dt)
        J_W, J_tau, J_W4, J_tau3 = f(B, N, I + N + 1), f(B, N), f(B, N, N, I + N + 1), f(B, N, N)
        out += [
            ("ctrnn_step", (a["W"], a["tau"], a["h"], x, config.dt)),
            ("rflo_update", (J_W, J_tau, a["tau"], a["h"], s, config.dt)),
            ("rtrl_update", (J_W4, J_tau3, a["W"], a["tau"], a["h"], s, config.dt, I)),
            ("project_rflo", (f(B, N), J_W, J_tau)),
            ("project_rtrl", (f(B, N), J_W4, J_tau3)),
        ]
    if config.body == "lru":
        params = {k: a[k] for k in rtrrl_spec.LRU_PARAMS}
        J = {k: a[k] for k in lru.LRU_SENSITIVITIES}
        s = lru.lru_step(params, f(B, N), f(B, N), x)
        out += [
            ("lru_lambda", (a["log_nu"], a["log_theta"])),
            ("lru_step", (params, f(B, N), f(B, N), x)),
            ("lru_sensitivity_update", (J, f(B, N), f(B, N), x, s)),
            ("project_lru", (f(B, N), params, J, s)),
        ]
    features = x if config.body == "linear" else f(B, N)
    group = {k: f(*a[k].shape) for k in rtrrl_spec.TD_PARAMS}
    moments = {p: {k: a[f"{p}_{k}"] for k in group} for p in ("mu", "nu")}
    noise = rtrrl_spec.draw_noise(config, B, rng, dtype)
    out += [
        ("critic_value", (features, a["W_C"], a["b_C"])),
        ("policy_step", (config, features @ a["W_A"], noise)),
        ("td_error", (f(B), done, f(B), f(B), config.gamma)),
        ("td_error", (f(B), done, f(B), f(B), config.gamma, np.asarray(0.25, dtype))),
        ("decay_trace", (a["e_W_A"], done, config.gamma * config.lambda_actor)),
        ("global_norm", (group,)),
        ("clip_by_global_norm", (group, None)),
        ("clip_by_global_norm", (group, 0.5)),
        ("clip_by_global_norm", (group, 100.0)),
        ("adam_step", ({k: a[k] for k in group}, group, moments["mu"], moments["nu"],
                       a["count_td"], config.lr_td, config.adam_b1, config.adam_b2,
                       config.adam_eps)),
        ("apply_update", (config, a, {k: f(*a[k].shape) for k in rtrrl_spec.params_of(config)})),
        ("step", (config, a, f(B, config.obs_dim), f(B), done, noise)),
    ]
    return out


C = rtrrl_spec.Config
CONFIGS = {
    "ctrnn": C(obs_dim=2, action_dim=2, action_low=(-1.0, 0.0), action_high=(2.0, 1.0),
               n_hidden=3, trace="dutch", reward_rate_lr=0.01, dt=0.5, tau_min=0.5),
    "lru": C(obs_dim=3, n_actions=3, n_hidden=4, body="lru", lru_r_min=0.5, clip_norm=None),
    "linear": C(obs_dim=3, action_dim=1, body="linear", meta_rl=False, adam_b1=0.0),
}
seen = set()
for table, bodies, dtype, numbers in RUNS:
    for body in bodies:
        for name, args in calls(CONFIGS[body], dtype, 1):
            want = reference[name](*args)
            compare(name, TABLES[table][name](*to_backend(args, numbers)), want, dtype)
            seen.add(name)
assert seen == set(rtrrl_spec.STEP_FUNCTIONS), set(rtrrl_spec.STEP_FUNCTIONS) - seen
print("OK")
"""

# (which functions, bodies, dtype, numbers as): every body and dtype eagerly under torch;
# under JAX, where every call compiles, the jitted step_functions() on fewer combinations,
# among them float64 numbers handed to a float32 computation (JAX would promote it).
STEP_FUNCTION_RUNS = {
    "torch": [
        ("module", ("ctrnn", "lru", "linear"), dtype, numbers)
        for dtype in ("float32", "float64")
        for numbers in ("python", "tensor")
    ],
    "jax": [
        ("step_functions", ("ctrnn", "lru"), "float32", "tensor"),
        ("step_functions", ("ctrnn",), "float64", "python"),
        ("module", ("linear",), "float32", "tensor"),
    ],
}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_step_functions_compute_the_spec_functions(tmp_path: Path, framework: str) -> None:
    """Each of the spec's functions, called with the reference's arguments alone (numbers as
    Python floats or as 0-d float64 tensors), returns the reference's structure (its
    NamedTuples, dict keys, tuple lengths), the arrays' dtype and values within rounding."""
    code = STEP_FUNCTIONS_CODE.replace("FRAMEWORK", framework)
    code = code.replace("RUNS", repr(STEP_FUNCTION_RUNS[framework]))
    assert_ok(run_python(code, tmp_path, framework, JAX_ENABLE_X64="1"))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_step_reads_only_the_structure_with_numbers_given(tmp_path: Path, framework: str) -> None:
    """step(structure_of(config), ..., numbers=hyperparams(config)) is step(config, ...) bit for
    bit, with every number away from its default: what the compiled step relies on when it
    passes the structure static and the numbers traced. The compiled step agrees too."""
    code = """
    import numpy as np
    import rtrrl, rtrrl_spec
    from rtrrl.backends import keras as kb

    be = rtrrl.use("keras-FRAMEWORK")
    numbers = dict(dt=0.5, tau_min=0.6, gamma=0.9, lambda_actor=0.8, lambda_critic=0.7,
                   lambda_rnn=0.6, eta_pi=0.5, entropy_rate=0.01, reward_rate_lr=0.05,
                   lr_td=0.01, lr_rnn=0.02, adam_b1=0.8, adam_b2=0.99, adam_eps=1e-6,
                   clip_norm=0.3)
    configs = [
        rtrrl_spec.Config(obs_dim=2, action_dim=2, action_low=(-1.0, 0.5),
                          action_high=(1.0, 2.0), n_hidden=3, jacobian="rtrl",
                          trace="dutch", **numbers),
        rtrrl_spec.Config(obs_dim=2, n_actions=3, n_hidden=3, body="lru", **numbers),
    ]
    rng = np.random.default_rng(0)
    # Op by op, JAX compiles every primitive anew for each shape: fewer steps there.
    steps, configs = (1, configs[:1]) if "FRAMEWORK" == "jax" else (2, configs)
    for config in configs:
        structure = rtrrl_spec.structure_of(config)
        assert structure != config
        B, dtype = 2, "float32"
        agent = be.init(config, B, 1, dtype)
        for t in range(steps):
            args = [be.from_numpy(a) for a in (
                rng.uniform(-1, 1, (B, 2)).astype(dtype), rng.uniform(-1, 1, B).astype(dtype),
                np.array([t == 0, False]), rtrrl_spec.draw_noise(config, B, rng, dtype))]
            full = kb.step(config, agent, *args)
            split = kb.step(structure, agent, *args, numbers=kb.hyperparams(config, dtype))
            for got, want in zip(split, full):
                got, want = be.to_numpy(got), be.to_numpy(want)
                if isinstance(want, dict):
                    assert sorted(got) == sorted(want)
                    for k in want:
                        assert np.array_equal(got[k], want[k]), (config.body, k)
                else:
                    assert np.array_equal(got, want)
            if "FRAMEWORK" == "jax":
                compiled = be.to_numpy(kb.step_compiled(config, agent, *args)[0])
                for k, v in be.to_numpy(full[0]).items():
                    np.testing.assert_allclose(compiled[k], v, rtol=1e-5, atol=1e-6, err_msg=k)
            agent = full[0]
    print("OK")
    """
    assert_ok(run_python(code.replace("FRAMEWORK", framework), tmp_path, framework))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_rng_state_restores_the_generator(tmp_path: Path, framework: str) -> None:
    """rng_state is NumPy arrays; rng_from_state makes a new generator that draws exactly
    what the saved one draws next, for both noise kinds, and leaves the original alone."""
    code = """
    import numpy as np
    import rtrrl, rtrrl_spec

    be = rtrrl.use("keras-FRAMEWORK")
    for config in (rtrrl_spec.Config(obs_dim=2, n_actions=3),
                   rtrrl_spec.Config(obs_dim=2, action_dim=2)):
        rng = be.rng(123)
        for _ in range(3):
            _, rng = be.draw_noise(config, 4, rng, "float32")
        state = be.rng_state(rng)
        assert sorted(state) == ["seed_state"], state
        assert all(isinstance(v, np.ndarray) for v in state.values()), state
        copy = be.rng_from_state({k: v.copy() for k, v in state.items()})
        assert copy is not rng
        ahead = [be.to_numpy(be.draw_noise(config, 4, rng, "float32")[0]) for _ in range(3)]
        again = [be.to_numpy(be.draw_noise(config, 4, copy, "float32")[0]) for _ in range(3)]
        for a, b in zip(ahead, again):
            assert np.array_equal(a, b)
        assert not np.array_equal(ahead[0], ahead[1])
        assert np.array_equal(be.rng_state(rng)["seed_state"], be.rng_state(copy)["seed_state"])
        other = be.to_numpy(be.draw_noise(config, 4, be.rng(124), "float32")[0])
        assert not np.array_equal(other, ahead[0])
    print("OK")
    """
    assert_ok(run_python(code.replace("FRAMEWORK", framework), tmp_path, framework))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_predict_does_not_learn(tmp_path: Path, framework: str) -> None:
    """Calling the model or ``predict`` computes the action ``step`` would take and leaves
    every variable (parameters, traces, Adam moments, step counts, hidden state) bit for bit
    as it was; ``step`` is what learns."""
    code = """
    import numpy as np
    import rtrrl, rtrrl_spec
    from rtrrl.backends.keras import RTRRLAgent

    be = rtrrl.use("keras-FRAMEWORK")
    config = rtrrl_spec.Config(obs_dim=2, n_actions=3, n_hidden=4)
    B = 2
    model = RTRRLAgent(config, batch_size=B, seed=1)
    rng = np.random.default_rng(0)
    warmup = (rng.standard_normal((B, 2)).astype("float32"), np.ones(B, "float32"),
              np.array([True, False]), rng.uniform(0.1, 0.9, (B, 3)).astype("float32"))
    model.step(*[be.from_numpy(a) for a in warmup])  # moments and counts away from zero
    before = {v.path: np.array(v.numpy(), copy=True) for v in model.variables}
    inputs = (rng.standard_normal((B, 2)).astype("float32"), np.zeros(B, "float32"),
              np.array([False, False]), rng.uniform(0.1, 0.9, (B, 3)).astype("float32"))
    predicted = np.asarray(model.predict(inputs, batch_size=B, verbose=0))
    called = be.to_numpy(model(tuple(be.from_numpy(a) for a in inputs)))
    after = {v.path: np.array(v.numpy(), copy=True) for v in model.variables}
    assert sorted(after) == sorted(before)
    for k in before:
        assert before[k].dtype == after[k].dtype and np.array_equal(before[k], after[k]), k
    assert int(after[[k for k in after if k.endswith("count_td")][0]]) == 1
    action, _ = model.step(*[be.from_numpy(a) for a in inputs])  # acts and learns
    assert np.array_equal(be.to_numpy(action), predicted), (action, predicted)
    assert np.array_equal(called, predicted)
    assert int(model.state_numpy()["count_td"]) == 2
    print("OK")
    """
    assert_ok(run_python(code.replace("FRAMEWORK", framework), tmp_path, framework))
