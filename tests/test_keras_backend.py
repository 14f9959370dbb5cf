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
