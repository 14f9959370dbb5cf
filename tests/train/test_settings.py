"""Run settings: one definition of every default, checked values, what ``train()`` accepts."""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
from pathlib import Path

import pytest

pytest.importorskip("gymnax")

import rtrrl  # noqa: E402
from rtrrl import checkpoint, loop, training  # noqa: E402
from rtrrl.settings import RunSettings  # noqa: E402

pytestmark = pytest.mark.numpy


def test_defaults_are_the_papers() -> None:
    s = RunSettings()
    assert (s.steps, s.epoch_steps, s.eval_every, s.eval_episodes, s.patience) == (
        50_000_000,
        1000,
        100,
        10,
        20,
    )
    assert (s.seeds, s.num_envs) == ((0, 1, 2, 3, 4), 1)
    assert s.eval_steps is s.fused is s.threads is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"patience": 0}, "patience must be a positive int, got 0"),
        ({"steps": 0}, "steps must be a positive int, got 0"),
        ({"epoch_steps": -1}, "epoch_steps must be a positive int"),
        ({"eval_every": 1.5}, "eval_every must be a positive int"),
        ({"num_envs": True}, "num_envs must be a positive int"),
        ({"threads": 0}, "threads must be None or a positive int"),
        ({"seeds": 0}, "seeds must be at least 1"),
        ({"seeds": []}, "at least one seed"),
        ({"seeds": [1, 1]}, "distinct"),
        ({"dtype": "float16"}, "dtype"),
        ({"task": ""}, "task must be a non-empty string"),
    ],
)
def test_invalid_settings_are_errors(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RunSettings(**changes)


def test_seeds_as_a_count_or_a_list() -> None:
    assert RunSettings(seeds=3).seeds == (0, 1, 2)
    assert RunSettings(seeds=[4, 9]).seeds == (4, 9)


def test_saved_settings_of_earlier_runs_load() -> None:
    # config.json's "protocol" as the previous version wrote it (no "threads" yet).
    saved = {
        "task": "CartPole-vel",
        "backend": "jax",
        "seeds": [0, 1],
        "steps": 1000,
        "epoch_steps": 100,
        "eval_every": 2,
        "eval_episodes": 3,
        "eval_steps": None,
        "patience": 20,
        "num_envs": 1,
        "dtype": "float32",
        "fused": None,
    }
    settings, config = checkpoint.read_run(
        {"format": 1, "protocol": saved, "agent": {"obs_dim": 2, "n_actions": 2}}
    )
    # A run from before presets started from Table 1: its preset reads as "paper".
    assert settings == RunSettings(**{**saved, "seeds": (0, 1), "preset": "paper"})
    assert settings.threads is None
    assert config.obs_dim == 2
    with pytest.raises(training.CheckpointError, match="unknown to this rtrrl"):
        checkpoint.read_run({"protocol": {**saved, "warp": 9}, "agent": {}})


def test_train_takes_settings_and_keyword_overrides(
    tmp_path: Path, captured_sessions: list[loop.Session]
) -> None:
    base = RunSettings(backend="numpy", steps=500, patience=3)
    training.train("MemoryChain-4", settings=base, out=tmp_path / "a", patience=4, lr_td=0.01)
    (session,) = captured_sessions
    assert session.settings == dataclasses.replace(base, patience=4)
    assert session.config.lr_td == 0.01 and session.config.obs_dim == 3
    assert session.engine == "host"


def test_train_refuses_unknown_and_task_fields(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['stepz'\].*'steps'"):
        training.train("MemoryChain-4", "numpy", out=tmp_path / "r", stepz=5)
    with pytest.raises(ValueError, match="obs_dim.*come from the task"):
        training.train("MemoryChain-4", "numpy", out=tmp_path / "r", obs_dim=5)
    with pytest.raises(ValueError, match="patience must be a positive int, got 0"):
        training.train("MemoryChain-4", "numpy", out=tmp_path / "r", patience=0)
    assert not (tmp_path / "r").exists()


def test_no_test_hooks_in_public_signatures() -> None:
    for fn in (training.train, training.resume, training.evaluate_checkpoint):
        assert not [p for p in inspect.signature(fn).parameters if p.startswith("_")], fn


def test_public_names() -> None:
    """``rtrrl.train`` and friends are the functions (no callable module): the package's lazy
    attributes resolve to :mod:`rtrrl.training`."""
    assert importlib.util.find_spec("rtrrl.train") is None
    assert rtrrl.train is training.train
    assert rtrrl.resume is training.resume
    assert rtrrl.evaluate_checkpoint is training.evaluate_checkpoint


# --- every number checked the same way (issue 19) --------------------------------------------


def test_numpy_integers_are_integers_and_stored_as_int() -> None:
    import numpy as np

    s = RunSettings(
        steps=np.int64(5000), patience=np.int32(3), seeds=np.int64(2), threads=np.int8(1)
    )
    assert (s.steps, s.patience, s.seeds, s.threads) == (5000, 3, (0, 1), 1)
    assert all(type(v) is int for v in (s.steps, s.patience, s.threads, *s.seeds))
    assert RunSettings(seeds=[np.int64(4), 9]).seeds == (4, 9)
    import json

    json.dumps(s.to_json())  # NumPy scalars would not serialize


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"steps": True}, "steps must be a positive int, got True"),
        ({"patience": False}, "patience must be a positive int, got False"),
        ({"seeds": [0, True]}, "seeds must be integers >= 0, got True"),
        ({"seeds": [0.5]}, "seeds must be integers >= 0, got 0.5"),
        ({"seeds": [-1]}, "seeds must be integers >= 0, got -1"),
        ({"seeds": "3"}, "seeds must be a count or a list of seeds"),
        ({"fused": 1}, "fused must be None, True or False, got 1"),
        ({"eval_every": 2.0}, "eval_every must be a positive int, got 2.0"),
    ],
)
def test_bools_and_floats_are_not_counts(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RunSettings(**changes)


def test_numpy_scalars_are_numbers_in_the_agent_config() -> None:
    import json

    import numpy as np

    import rtrrl_spec

    config = rtrrl_spec.Config(
        obs_dim=np.int64(3),
        n_actions=np.int32(2),
        n_hidden=np.int64(8),
        lr_td=np.float32(1e-3),
        gamma=np.float64(0.9),
        meta_rl=np.bool_(False),
    )
    assert config.lr_td == float(np.float32(1e-3)) and type(config.lr_td) is float
    assert type(config.gamma) is float and type(config.n_hidden) is int
    assert config.meta_rl is False
    assert config == rtrrl_spec.Config(
        obs_dim=3, n_actions=2, n_hidden=8, lr_td=float(np.float32(1e-3)), gamma=0.9, meta_rl=False
    )
    json.dumps(dataclasses.asdict(config))
    bounded = rtrrl_spec.Config(
        obs_dim=1, action_dim=1, action_low=(np.float32(-1),), action_high=np.array([2.0])
    )
    assert bounded.action_low == (-1.0,) and type(bounded.action_low[0]) is float


@pytest.mark.parametrize("name", ["lr_td", "gamma", "dt", "clip_norm", "adam_eps"])
def test_bools_are_not_numbers_in_the_agent_config(name: str) -> None:
    import rtrrl_spec

    with pytest.raises(rtrrl_spec.SpecError, match=f"{name} must be a number, got the bool True"):
        rtrrl_spec.Config(obs_dim=3, n_actions=2, **{name: True})


def test_train_takes_numpy_scalars(tmp_path: Path, captured_sessions: list[loop.Session]) -> None:
    import numpy as np

    training.train(
        "MemoryChain-4",
        "numpy",
        out=tmp_path / "a",
        lr_td=np.float32(1e-3),
        n_hidden=np.int64(8),
        steps=np.int64(500),
        seeds=np.int64(1),
    )
    (session,) = captured_sessions
    assert session.config.lr_td == float(np.float32(1e-3)) and session.config.n_hidden == 8
    assert session.settings.steps == 500 and session.settings.seeds == (0,)


# --- backend names: normalized once, in the registry -----------------------------------------


def test_backend_names_are_case_insensitive_and_stored_as_the_registry_spells_them() -> None:
    assert RunSettings(backend="Jax").backend == "jax"
    assert RunSettings(backend=" NumPy ").backend == "numpy"
    assert RunSettings(backend="Keras_Torch").backend == "keras-torch"
    # Names that are not built in (entry points, import strings) are taken as written.
    assert RunSettings(backend="pkg.mod:Backend").backend == "pkg.mod:Backend"


def test_a_capitalised_jax_takes_the_fused_engine() -> None:
    pytest.importorskip("jax")
    settings = RunSettings(backend="Jax", task="MemoryChain-4")
    assert training._pick_engine(settings) == "fused"
