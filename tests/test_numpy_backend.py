"""The numpy backend: a thin, dtype-exact adapter over rtrrl_spec."""

from __future__ import annotations

import numpy as np
import pytest

import rtrrl
import rtrrl_spec
from rtrrl.backends.base import Backend
from rtrrl.backends.numpy import NumpyBackend

pytestmark = pytest.mark.numpy

CONFIGS = [
    rtrrl_spec.Config(obs_dim=3, n_actions=2, n_hidden=5),
    rtrrl_spec.Config(obs_dim=2, action_dim=2, n_hidden=4, feedback_alignment=False),
]


@pytest.fixture
def be() -> NumpyBackend:
    backend = rtrrl.use("numpy")
    assert isinstance(backend, NumpyBackend)
    return backend


def test_satisfies_protocol(be: NumpyBackend) -> None:
    assert isinstance(be, Backend)
    assert be.name == "numpy"
    assert be.supported_dtypes == ("float32", "float64")
    assert be.version() == np.__version__
    assert be.device() == "cpu"


@pytest.mark.parametrize("dtype", ["float64", "float32", "int32", "bool"])
def test_round_trip_keeps_dtype_and_copies(be: NumpyBackend, dtype: str) -> None:
    original = np.arange(6).reshape(2, 3).astype(dtype)
    tree = {"a": original, "b": original[0]}
    back = be.to_numpy(be.from_numpy(tree))
    assert set(back) == {"a", "b"}
    assert back["a"].dtype == np.dtype(dtype)
    assert back["b"].dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back["a"], original)
    assert not np.shares_memory(back["a"], original)
    single = be.from_numpy(original)
    assert single.dtype == np.dtype(dtype) and not np.shares_memory(single, original)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_init_matches_reference_layout(be: NumpyBackend, config, dtype: str) -> None:
    agent = be.init(config, batch_size=3, seed=7, dtype=dtype)
    spec = rtrrl_spec.layout(config, 3)
    assert list(agent) == list(spec)
    for name, array_spec in spec.items():
        assert agent[name].shape == array_spec.shape, name
        assert agent[name].dtype == array_spec.numpy_dtype(dtype), name
    reference = rtrrl_spec.init(config, 3, 7, dtype=dtype)
    for name in spec:
        np.testing.assert_array_equal(agent[name], reference[name])


@pytest.mark.parametrize("config", CONFIGS)
def test_noise_and_step_match_reference(be: NumpyBackend, config) -> None:
    B, dtype = 2, "float64"
    rng = be.rng(3)
    assert isinstance(rng, np.random.Generator)
    noise, rng2 = be.draw_noise(config, B, rng, dtype)
    assert rng2 is rng
    expected_noise = rtrrl_spec.draw_noise(config, B, np.random.default_rng(3), dtype)
    np.testing.assert_array_equal(noise, expected_noise)
    assert noise.dtype == np.float64

    agent = be.init(config, B, seed=1, dtype=dtype)
    obs = np.linspace(-1, 1, B * config.obs_dim).reshape(B, config.obs_dim)
    reward = np.array([0.5, -1.0])
    done = np.array([True, True])
    new_agent, action, info = be.step(config, agent, obs, reward, done, noise)
    ref_agent, ref_action, ref_info = rtrrl_spec.step(config, agent, obs, reward, done, noise)
    np.testing.assert_array_equal(action, ref_action)
    assert set(new_agent) == set(ref_agent)
    for name in ref_agent:
        np.testing.assert_array_equal(new_agent[name], ref_agent[name])
    np.testing.assert_array_equal(info["td_error"], ref_info["td_error"])


def test_bad_dtype_is_a_spec_error(be: NumpyBackend) -> None:
    with pytest.raises(rtrrl_spec.SpecError):
        be.init(CONFIGS[0], 1, 0, dtype="float16")
