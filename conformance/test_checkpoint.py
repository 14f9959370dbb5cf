"""The canonical layout in and out of a backend: init, checkpoint round trip through NumPy, and
the random state saved as NumPy arrays."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import rtrrl_spec
from rtrrl.conformance.cases import cases, configs
from rtrrl.conformance.harness import release_compiled_code


@given(config=configs(), batch_size=st.integers(1, 3), seed=st.integers(0, 2**31 - 1))
def test_init_layout(backend, dtype, config, batch_size, seed):
    """``init`` returns every array of the layout with its shape and dtype, finite."""
    release_compiled_code()
    agent = backend.to_numpy(backend.init(config, batch_size, seed, dtype))
    expected = rtrrl_spec.layout(config, batch_size)
    assert sorted(agent) == sorted(expected), (sorted(agent), sorted(expected))
    for name, spec in expected.items():
        array = np.asarray(agent[name])
        assert array.shape == spec.shape, (name, array.shape, spec.shape)
        assert array.dtype == spec.numpy_dtype(dtype), (name, array.dtype)
        assert np.all(np.isfinite(array)), name
    rtrrl_spec.validate_agent(config, agent)


@given(data=st.data())
def test_checkpoint_round_trip(backend, dtype, variant, data):
    """NumPy -> backend -> NumPy is bit-exact, and a restored agent steps like the original."""
    release_compiled_code()
    case = data.draw(cases(dtype), label="case")
    agent = case.initial_agent()
    restored = backend.to_numpy(backend.from_numpy(agent))
    assert sorted(restored) == sorted(agent)
    for name, array in agent.items():
        got = np.asarray(restored[name])
        assert got.dtype == array.dtype, (name, got.dtype, array.dtype)
        np.testing.assert_array_equal(got, array, err_msg=name)
    # A checkpoint saved from the backend after a step loads back to the same numbers.
    step = backend.step_variants()[variant] if hasattr(backend, "step_variants") else backend.step
    x = case.inputs()[0]
    new, _, _ = step(
        case.config,
        backend.from_numpy(agent),
        backend.from_numpy(x.obs),
        backend.from_numpy(x.reward),
        backend.from_numpy(x.done),
        backend.from_numpy(x.noise),
    )
    saved = backend.to_numpy(new)
    again = backend.to_numpy(backend.from_numpy(saved))
    for name, array in saved.items():
        np.testing.assert_array_equal(np.asarray(again[name]), np.asarray(array), err_msg=name)


@given(
    config=configs(),
    batch_size=st.integers(1, 3),
    seed=st.integers(0, 2**31 - 1),
    draws=st.integers(0, 3),
)
def test_rng_state_round_trip(backend, dtype, config, batch_size, seed, draws):
    """``rng_state`` is NumPy arrays, and ``rng_from_state`` of it draws exactly the noise the
    saved generator draws next (a resumed run samples what the uninterrupted one would)."""
    release_compiled_code()
    rng = backend.rng(seed)
    for _ in range(draws):
        _, rng = backend.draw_noise(config, batch_size, rng, dtype)
    state = backend.rng_state(rng)
    assert isinstance(state, dict) and state, state
    for key, value in state.items():
        assert isinstance(value, np.ndarray), (key, type(value))
    # Copies, as a checkpoint loads them: the restored generator shares nothing with `rng`.
    restored = backend.rng_from_state({k: np.array(v, copy=True) for k, v in state.items()})
    for t in range(2):
        want, rng = backend.draw_noise(config, batch_size, rng, dtype)
        got, restored = backend.draw_noise(config, batch_size, restored, dtype)
        np.testing.assert_array_equal(
            np.asarray(backend.to_numpy(got)), np.asarray(backend.to_numpy(want)), err_msg=f"{t}"
        )
