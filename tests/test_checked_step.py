"""The checked mode of the fast backends: ``step(..., check=True)`` (the default) refuses what
``rtrrl_spec.step`` refuses, with the reference's message word for word; ``check=False`` is
the unchecked step, unchanged.

Every case starts from good arguments and spoils one thing. The expected message is what the
reference itself raises on the same arguments in NumPy, so the two cannot drift apart. JAX
and PyTorch run in this process; each Keras backend in a subprocess of its own (Keras picks
its backend once per process), importing the cases from this file.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rtrrl_spec
from rtrrl.backends.base import BackendBase, map_tree
from rtrrl_spec import Config, SpecError

B = 2
DISCRETE = Config(obs_dim=3, n_actions=3, n_hidden=4)
CONTINUOUS = Config(obs_dim=2, action_dim=2, n_hidden=3, jacobian="rtrl")

Args = tuple[Any, dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def good_args(config: Config = DISCRETE, seed: int = 0) -> Args:
    """A float32 agent a few reference steps in (non-zero traces) and good inputs."""
    rng = np.random.default_rng(seed)
    agent = rtrrl_spec.init(config, B, seed, "float32")
    for t in range(3):
        inputs = _inputs(config, rng, first=t == 0)
        agent = rtrrl_spec.step(config, agent, *inputs)[0]
    return (config, agent, *_inputs(config, rng, first=False))


def _inputs(config: Config, rng: np.random.Generator, first: bool) -> tuple[np.ndarray, ...]:
    obs = rng.uniform(-1, 1, (B, config.obs_dim)).astype(np.float32)
    reward = rng.uniform(-1, 1, B).astype(np.float32)
    done = np.ones(B, bool) if first else np.array([False, True])
    noise = rtrrl_spec.draw_noise(config, B, rng, "float32")
    return obs, reward, done, noise


def _set(array: np.ndarray, index: tuple[int, ...], value: Any) -> np.ndarray:
    out = array.copy()
    out[index] = value
    return out


def _spoil_agent(name: str, dtype: str) -> Callable[[Args], Args]:
    def spoil(a: Args) -> Args:
        agent = dict(a[1])
        agent[name] = agent[name].astype(dtype)
        return (a[0], agent, *a[2:])

    return spoil


def _replace(index: int, make: Callable[[Args], Any]) -> Callable[[Args], Args]:
    def spoil(a: Args) -> Args:
        out = list(a)
        out[index] = make(a)
        return tuple(out)  # type: ignore[return-value]

    return spoil


OBS, REWARD, DONE, NOISE = 2, 3, 4, 5
#: name -> (good arguments' config, how to spoil them, whether the spoiled inputs exist as
#: arrays of every backend; strings and complex numbers are NumPy-only).
CASES: dict[str, tuple[Config, Callable[[Args], Args], bool]] = {
    "obs-nan": (DISCRETE, _replace(OBS, lambda a: _set(a[OBS], (1, 2), np.nan)), True),
    "obs-inf": (DISCRETE, _replace(OBS, lambda a: _set(a[OBS], (0, 0), np.inf)), True),
    "reward-nan": (DISCRETE, _replace(REWARD, lambda a: _set(a[REWARD], (1,), np.nan)), True),
    "reward-minus-inf": (
        DISCRETE,
        _replace(REWARD, lambda a: _set(a[REWARD], (0,), -np.inf)),
        True,
    ),
    "noise-nan": (DISCRETE, _replace(NOISE, lambda a: _set(a[NOISE], (0, 1), np.nan)), True),
    "noise-zero-discrete": (DISCRETE, _replace(NOISE, lambda a: _set(a[NOISE], (1, 0), 0.0)), True),
    "noise-one-discrete": (DISCRETE, _replace(NOISE, lambda a: _set(a[NOISE], (0, 2), 1.0)), True),
    "noise-inf-continuous": (
        CONTINUOUS,
        _replace(NOISE, lambda a: _set(a[NOISE], (1, 1), np.inf)),
        True,
    ),
    "done-2": (DISCRETE, _replace(DONE, lambda a: np.array([0, 2], np.int32)), True),
    "done-half": (DISCRETE, _replace(DONE, lambda a: np.array([0.5, 0.0], np.float32)), True),
    "done-shape": (DISCRETE, _replace(DONE, lambda a: np.zeros(B + 1, bool)), True),
    "obs-width": (DISCRETE, _replace(OBS, lambda a: np.zeros((B, 4), np.float32)), True),
    "obs-batch": (DISCRETE, _replace(OBS, lambda a: np.zeros((B + 1, 3), np.float32)), True),
    "reward-shape": (DISCRETE, _replace(REWARD, lambda a: np.zeros((B, 1), np.float32)), True),
    "noise-shape": (DISCRETE, _replace(NOISE, lambda a: np.full((B, 4), 0.5, np.float32)), True),
    "obs-strings": (DISCRETE, _replace(OBS, lambda a: a[OBS].astype(str)), False),
    "obs-complex": (DISCRETE, _replace(OBS, lambda a: a[OBS].astype(np.complex64)), False),
    "config-obs-dim": (DISCRETE, _replace(0, lambda a: a[0].replace(obs_dim=4)), True),
    "config-n-hidden": (DISCRETE, _replace(0, lambda a: a[0].replace(n_hidden=5)), True),
    "config-jacobian": (DISCRETE, _replace(0, lambda a: a[0].replace(jacobian="rtrl")), True),
    "config-trace": (DISCRETE, _replace(0, lambda a: a[0].replace(trace="dutch")), True),
    "config-body": (DISCRETE, _replace(0, lambda a: a[0].replace(body="lru")), True),
    "config-continuous": (
        DISCRETE,
        _replace(0, lambda a: a[0].replace(n_actions=None, action_dim=3)),
        True,
    ),
    "config-not-a-config": (DISCRETE, _replace(0, lambda a: {"obs_dim": 3}), True),
    "agent-count-dtype": (DISCRETE, _spoil_agent("count_td", "float32"), True),
    "agent-a-prev-dtype": (DISCRETE, _spoil_agent("a_prev", "float32"), True),
}


def bad_args(case: str) -> Args:
    config, spoil, _ = CASES[case]
    return spoil(good_args(config))


def reference_message(args: Args) -> str:
    """What ``rtrrl_spec.step`` says about ``args`` (it must refuse them)."""
    try:
        rtrrl_spec.step(*args)
    except SpecError as err:
        return str(err)
    raise AssertionError("the reference accepted the spoiled arguments")


def to_backend(be: Any, args: Args, inputs_as_backend_arrays: bool) -> Args:
    config, agent, *inputs = args
    if inputs_as_backend_arrays:
        inputs = [be.from_numpy(x) for x in inputs]
    return (config, be.from_numpy(agent), *inputs)  # type: ignore[return-value]


def assert_same_step(a: tuple, b: tuple, to_numpy: Callable[[Any], Any]) -> None:
    """Agent, action and info equal bit for bit."""
    for x, y in zip(a, b, strict=True):
        x, y = to_numpy(x), to_numpy(y)
        if isinstance(x, dict):
            assert sorted(x) == sorted(y)
            for k in x:
                np.testing.assert_array_equal(np.asarray(x[k]), np.asarray(y[k]), err_msg=k)
        else:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# --- the backends in this process -------------------------------------------------------------


def _installed(name: str) -> Any:
    return pytest.mark.skipif(importlib.util.find_spec(name) is None, reason=f"no {name}")


def _jax_steps() -> tuple[Any, dict[str, Callable[..., Any]]]:
    from rtrrl.backends import jax as jb

    be = jb.JaxBackend()
    return be, {"backend.step": be.step, "step": jb.step, "step_eager": jb.step_eager}


def _torch_steps() -> tuple[Any, dict[str, Callable[..., Any]]]:
    from rtrrl.backends.torch import TorchBackend

    be = TorchBackend(compile=True)
    steps = {"step_eager": be.step_eager, "step_compiled": be.step_compiled}
    return be, {"backend.step": TorchBackend().step, **steps}


FAST = {"jax": _jax_steps, "torch": _torch_steps}
# The step functions each backend offers a user (``backend.step`` is the module's ``step`` for
# jax and ``step_eager`` for torch). The compiled torch step only for refusals: each refusal
# comes before compilation, and a good step would compile for seconds.
STEPPERS = [
    pytest.param("jax", v, marks=[_installed("jax"), pytest.mark.jax], id=f"jax-{v}")
    for v in ("backend.step", "step_eager")
] + [
    pytest.param("torch", v, marks=[_installed("torch"), pytest.mark.torch], id=f"torch-{v}")
    for v in ("backend.step", "step_compiled")
]
GOOD_STEPPERS = [
    *(p for p in STEPPERS if p.values[1] != "step_compiled"),
    pytest.param("jax", "step", marks=[_installed("jax"), pytest.mark.jax], id="jax-step"),
    pytest.param(
        "torch", "step_eager", marks=[_installed("torch"), pytest.mark.torch], id="torch-step_eager"
    ),
]


@pytest.mark.parametrize("as_arrays", [False, True], ids=["numpy-inputs", "backend-inputs"])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize(("backend", "variant"), STEPPERS)
def test_bad_argument_gets_the_reference_message(
    backend: str, variant: str, case: str, as_arrays: bool
) -> None:
    if as_arrays and not CASES[case][2]:
        pytest.skip("these inputs exist only as NumPy arrays")
    be, steps = FAST[backend]()
    args = bad_args(case)
    expected = reference_message(args)
    with pytest.raises(SpecError) as info:
        steps[variant](*to_backend(be, args, as_arrays))
    assert str(info.value) == expected


@pytest.mark.parametrize("config", [DISCRETE, CONTINUOUS], ids=["discrete", "continuous"])
@pytest.mark.parametrize(("backend", "variant"), GOOD_STEPPERS)
def test_check_false_is_the_unchecked_step_bit_for_bit(
    backend: str, variant: str, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On good arguments the checked and unchecked steps return the same bits; the unchecked
    one never reaches the reference's checks (they are made to fail here)."""
    be, steps = FAST[backend]()
    step = steps[variant]
    args = to_backend(be, good_args(config, seed=3), inputs_as_backend_arrays=True)
    checked = step(*args)
    checked_again = step(*args, check=True)

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("check=False ran a check")

    monkeypatch.setattr(rtrrl_spec, "check_inputs", refuse)
    monkeypatch.setattr(rtrrl_spec, "validate_layout", refuse)
    unchecked = step(*args, check=False)
    assert_same_step(checked, unchecked, be.to_numpy)
    assert_same_step(checked, checked_again, be.to_numpy)
    # The step did something: the agent moved.
    assert not np.array_equal(be.to_numpy(unchecked[0])["W_A"], be.to_numpy(args[1])["W_A"])


@pytest.mark.parametrize(("backend", "variant"), GOOD_STEPPERS)
def test_check_false_lets_bad_input_through(backend: str, variant: str) -> None:
    """``check=False`` is the fast path of before: a NaN observation is not looked at (the
    reason the checked mode exists and is the default)."""
    be, steps = FAST[backend]()
    args = to_backend(be, bad_args("obs-nan"), inputs_as_backend_arrays=False)
    new = be.to_numpy(steps[variant](*args, check=False)[0])
    assert not np.all(np.isfinite(new["h"]))


@pytest.mark.parametrize(("backend", "variant"), GOOD_STEPPERS)
def test_a_layout_seen_once_does_not_excuse_another_config(backend: str, variant: str) -> None:
    """The layout check remembers (config, shapes, dtypes) that passed; a different config on
    the same agent is still checked."""
    be, steps = FAST[backend]()
    config, agent, *inputs = to_backend(be, good_args(), inputs_as_backend_arrays=True)
    steps[variant](config, agent, *inputs)  # passes, and is remembered
    wrong = config.replace(obs_dim=4)
    expected = reference_message((wrong, be.to_numpy(agent), *map(be.to_numpy, inputs)))
    with pytest.raises(SpecError) as info:
        steps[variant](wrong, agent, *inputs)
    assert str(info.value) == expected


@pytest.mark.jax
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="no jax")
def test_jax_step_inside_a_users_jit_skips_the_check() -> None:
    """Under someone's ``jax.jit`` the inputs are tracers without values: the checked step
    traces (the check is skipped) instead of failing to convert them."""
    import jax

    from rtrrl.backends import jax as jb

    config, agent, obs, reward, done, noise = good_args()
    be = jb.JaxBackend()
    agent, obs = be.from_numpy(agent), be.from_numpy(obs)

    @jax.jit
    def run(agent: dict, obs: Any) -> Any:
        return jb.step(config, agent, obs, reward, done, noise)[1]

    np.testing.assert_array_equal(
        np.asarray(run(agent, obs)), np.asarray(jb.step(config, agent, obs, reward, done, noise)[1])
    )


# --- third-party backends and the reference's own split ---------------------------------------


class _ListBackend(BackendBase):
    """A backend whose arrays are nested lists: ``check_step`` converts with ``to_numpy``."""

    name = "lists"

    def to_numpy(self, tree: Any) -> Any:
        return map_tree(np.asarray, tree)


@pytest.mark.parametrize("case", ["obs-nan", "done-2", "noise-zero-discrete", "config-trace"])
def test_backend_base_check_step_gives_the_reference_message(case: str) -> None:
    args = bad_args(case)
    config, agent, *inputs = args
    as_lists = [x.tolist() for x in inputs]
    with pytest.raises(SpecError) as info:
        _ListBackend().check_step(config, agent, *as_lists)
    assert str(info.value) == reference_message((config, agent, *as_lists))
    _ListBackend().check_step(*good_args())  # good arguments pass


def test_validate_layout_reads_shapes_and_dtypes_only() -> None:
    """``validate_layout`` passes an agent with NaN values (``validate_agent`` does not) and
    refuses a config that is not a Config, as the reference's step does."""
    config, agent, *_ = good_args()
    broken = {**agent, "W": np.full_like(agent["W"], np.nan)}
    assert rtrrl_spec.validate_layout(config, broken) == ("float32", B)
    with pytest.raises(SpecError, match="non-finite"):
        rtrrl_spec.validate_agent(config, broken)
    with pytest.raises(SpecError, match="config must be an rtrrl_spec.Config, got dict"):
        rtrrl_spec.validate_layout({}, agent)  # type: ignore[arg-type]


# --- Keras, one subprocess per Keras backend -------------------------------------------------

_KERAS_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import numpy as np
import rtrrl
from rtrrl_spec import SpecError
from test_checked_step import CASES, GOOD, assert_same_step, bad_args, good_args
from test_checked_step import reference_message, to_backend

be = rtrrl.use({name!r})
for case, (_, _, as_arrays) in sorted(CASES.items()):
    for inputs_as_arrays in ([False, True] if as_arrays else [False]):
        args = bad_args(case)
        expected = reference_message(args)
        try:
            be.step(*to_backend(be, args, inputs_as_arrays))
        except SpecError as err:
            assert str(err) == expected, (case, str(err), expected)
        else:
            raise AssertionError(f"{{case}}: accepted")
for config in GOOD:
    args = to_backend(be, good_args(config, seed=3), True)
    assert_same_step(be.step(*args), be.step(*args, check=False), be.to_numpy)
print("OK")
"""
GOOD = (DISCRETE, CONTINUOUS)


@pytest.mark.keras
@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "framework"),
    [
        pytest.param("keras-jax", "jax", marks=_installed("jax")),
        pytest.param("keras-torch", "torch", marks=_installed("torch")),
    ],
)
def test_keras_backends_give_the_reference_messages(
    name: str, framework: str, tmp_path: Path
) -> None:
    if importlib.util.find_spec("keras") is None:
        pytest.skip("keras is not installed")
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "JAX_ENABLE_X64")}
    env.update(KERAS_BACKEND=framework, KERAS_HOME=str(tmp_path / "keras_home"))
    script = _KERAS_SCRIPT.format(tests=str(Path(__file__).parent), name=name)
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert out.returncode == 0 and "OK" in out.stdout, out.stdout + out.stderr[-3000:]
