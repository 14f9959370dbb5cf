"""brax tasks: names and masks, the adapter's contract, fused training, the host loop.

The first tests need no brax (names, masks, the error when brax is missing); the others skip
without it (``pip install "rtrrl[brax]"``). brax compiles slowly on the CPU, so the tests that
step one share a short-episode swimmer built once per module.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from rtrrl import envs
from rtrrl.cli import main
from rtrrl.envs import _brax

# --- names and masks: no brax needed -----------------------------------------------------------


def test_a_name_splits_into_environment_options_and_constructor_arguments() -> None:
    env, options, kwargs = _brax.parse_name(
        "brax:ant:mask=odd:backend=generalized:episode_length=50:use_contact_forces=True"
    )
    assert env == "ant"
    assert options == {"mask": "odd", "backend": "generalized", "episode_length": 50}
    assert kwargs == {"use_contact_forces": True}
    assert _brax.parse_name("brax:swimmer:mask=0,3,5") == ("swimmer", {"mask": (0, 3, 5)}, {})
    assert _brax.parse_name("brax:reacher:ctrl=x") == ("reacher", {}, {"ctrl": "x"})
    task = envs._registry._resolve("brax:halfcheetah:mask=first_half")
    assert (task.source, task.target, task.params) == (
        "brax",
        "halfcheetah",
        {"mask": "first_half"},
    )


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("brax:", "names no brax environment"),
        ("brax:ant:odd", "'odd' is not KEY=VALUE"),
        ("brax:ant:mask=", "'mask=' is not KEY=VALUE"),
        ("brax:ant:mask=odd:mask=even", "sets 'mask' twice"),
        ("brax:ant:mask=1,x", "neither odd, even, first_half nor a comma-separated list"),
        ("brax:ant:episode_length=0", "episode_length must be a whole number of at least 1"),
        ("brax:ant:episode_length=ten", "episode_length must be a whole number"),
    ],
)
def test_a_malformed_name_is_a_one_line_error(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        envs._registry._resolve(name)
    assert "\n" not in str(info.value)


def test_masks_are_the_authors() -> None:
    """envs/environments.py get_obs_mask: odd = 1, 3, ...; even = 0, 2, ...; first_half the
    first (n + 1) // 2."""
    assert _brax.mask_indices("odd", 8, "t") == (1, 3, 5, 7)
    assert _brax.mask_indices("even", 8, "t") == (0, 2, 4, 6)
    assert _brax.mask_indices("first_half", 8, "t") == (0, 1, 2, 3)
    assert _brax.mask_indices("first_half", 17, "t") == tuple(range(9))
    assert _brax.mask_indices("odd", 17, "t") == tuple(range(1, 17, 2))
    assert _brax.mask_indices((5, 0), 8, "t") == (5, 0)
    assert _brax.mask_indices(None, 8, "t") is None
    with pytest.raises(ValueError, match="index 8 is out of range: .* 8 values"):
        _brax.mask_indices((0, 8), 8, "task 'x'")
    with pytest.raises(ValueError, match="repeats an index"):
        _brax.mask_indices((1, 1), 8, "t")
    with pytest.raises(ValueError, match="observes nothing"):
        _brax.mask_indices((), 8, "t")
    with pytest.raises(ValueError, match="unknown mask 'middle'"):
        _brax.mask_indices("middle", 8, "t")


def test_without_brax_a_task_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "brax", None)  # `import brax` fails as if not installed
    for make in (envs.make_jax, envs.make_host):
        for name in ("HalfCheetah", "brax:swimmer:mask=odd"):
            with pytest.raises(envs.TaskUnavailableError) as info:
                make(name)
            message = str(info.value)
            assert f"task {name!r} needs brax" in message, message
            assert message.endswith("pip install 'rtrrl[brax]'") and "\n" not in message
    cheetah = envs._registry._resolve("HalfCheetah")
    assert envs._registry._available(cheetah) == "needs brax: pip install 'rtrrl[brax]'"
    run = tmp_path / "run"
    argv = ["train", "--task", "HalfCheetah", "--backend", "numpy", "--out", str(run)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("rtrrl train: error: task 'HalfCheetah' needs brax"), err
    assert err.count("\n") == 1 and err.rstrip().endswith("pip install 'rtrrl[brax]'"), err
    assert not run.exists()


def test_the_three_swimmers_have_distinct_names() -> None:
    """The paper's Swimmer is gymnax's (appendix Table 2, "experiments on Gymnax"); brax's
    and gymnasium's MuJoCo swimmers keep names of their own."""
    paper = envs._registry._resolve("Swimmer")
    assert (paper.source, paper.target) == ("gymnax", "Swimmer-misc")
    assert paper.params == {"max_steps_in_episode": 1000}
    mujoco = envs._registry._resolve("Swimmer-gymnasium")
    assert (mujoco.source, mujoco.target) == ("gymnasium", "Swimmer-v5")
    assert envs._registry._resolve("brax:swimmer").source == "brax"
    assert {"Swimmer", "Swimmer-gymnasium", "HalfCheetah"} <= set(envs.task_names())
    # HalfCheetah is the authors' brax preset, in no table of the paper.
    assert "Swimmer" in envs.paper_tasks()
    assert not {"Swimmer-gymnasium", "HalfCheetah"} & set(envs.paper_tasks())


# --- with brax ---------------------------------------------------------------------------------

SHORT = "brax:swimmer:episode_length=3"


@pytest.fixture(scope="module")
def jax():
    pytest.importorskip("brax")
    return pytest.importorskip("jax")


@pytest.fixture(scope="module")
def short(jax):
    """The 3-step swimmer, its reset and step jitted once for the module."""
    env = envs.make_jax(SHORT)
    return env, jax.jit(env.reset), jax.jit(env.step)


@pytest.mark.jax
def test_halfcheetah_is_the_authors_preset_and_names_default_to_it(jax) -> None:
    cheetah, swimmer = envs.make_jax("HalfCheetah"), envs.make_jax("brax:swimmer")
    # The authors' config/brax.yml runs halfcheetah on "spring"; brax's swimmer (its 3 joint
    # angles and 5 velocities observed) has only the generalized pipeline.
    assert cheetah.env.backend == "spring" and swimmer.env.backend == "generalized"
    assert (cheetah.spec.obs_dim, cheetah.spec.action_dim) == (17, 6)
    assert (swimmer.spec.obs_dim, swimmer.spec.action_dim) == (8, 2)
    for env in (swimmer, cheetah):
        assert env.spec.max_episode_steps == 1000 and not env.spec.discrete
        dim = env.spec.action_dim
        assert env.spec.action_low == (-1.0,) * dim and env.spec.action_high == (1.0,) * dim
    assert envs.make_jax("brax:halfcheetah").env.backend == "spring"
    assert envs.make_jax("brax:halfcheetah:backend=generalized").env.backend == "generalized"


@pytest.mark.jax
def test_unknown_environments_and_arguments_are_one_line_errors(jax) -> None:
    with pytest.raises(envs.UnknownTaskError, match="brax has no environment 'swimer'") as info:
        envs.make_jax("brax:swimer")
    assert "brax:swimmer" in info.value.suggestions
    with pytest.raises(ValueError, match="brax's swimmer refused an argument"):
        envs.make_jax("brax:swimmer:no_such_argument=1")
    with pytest.raises(ValueError, match="brax's swimmer refused its settings"):
        envs.make_jax("brax:swimmer:backend=spring")
    with pytest.raises(ValueError, match="index 8 is out of range"):
        envs.make_jax("brax:swimmer:mask=0,8")


@pytest.mark.jax
def test_reset_and_step_shapes(short, jax) -> None:
    env, reset, step = short
    state, obs = reset(jax.random.key(0))
    assert obs.shape == (8,) and obs.dtype == np.float32
    state, obs, reward, terminated, truncated = step(jax.random.key(1), state, np.ones(2))
    assert obs.shape == (8,) and obs.dtype == np.float32
    assert reward.shape == () and reward.dtype == np.float32 and np.isfinite(float(reward))
    assert terminated.dtype == truncated.dtype == bool
    assert int(state.episode_step) == 1


@pytest.mark.jax
def test_episodes_are_truncated_at_the_limit_and_restart_in_the_same_step(short, jax) -> None:
    env, reset, step = short
    dt = float(env.env.dt)
    state, obs = reset(jax.random.key(0))
    for t in range(1, 8):
        key = jax.random.key(100 + t)
        action = np.full(2, 0.5 if t % 2 else -0.5, np.float32)
        q_before = np.asarray(state.inner.pipeline_state.q, np.float64)
        state, obs, reward, terminated, truncated = step(key, state, action)
        assert not bool(terminated)  # the swimmer has no terminal state
        assert bool(truncated) == (t % 3 == 0)
        physics = state.inner.pipeline_state
        if t % 3 == 0:  # a fresh episode drawn with this step's key
            fresh_state, fresh_obs = reset(key)
            np.testing.assert_array_equal(obs, fresh_obs)
            np.testing.assert_array_equal(physics.q, fresh_state.inner.pipeline_state.q)
            assert int(state.episode_step) == 0
        else:  # brax's swimmer: joint angles and velocities; forward speed less control cost
            q = np.asarray(physics.q, np.float64)
            np.testing.assert_array_equal(obs, np.concatenate([physics.q[2:], physics.qd]))
            speed = (q[0] - q_before[0]) / dt
            expected = speed - 1e-4 * float(np.sum(action.astype(np.float64) ** 2))
            np.testing.assert_allclose(float(reward), expected, rtol=1e-4, atol=1e-6)
            assert int(state.episode_step) == t % 3


@pytest.mark.jax
@pytest.mark.parametrize(
    ("mask", "indices"),
    [("odd", [1, 3, 5, 7]), ("even", [0, 2, 4, 6]), ("first_half", [0, 1, 2, 3]), ("7,0", [7, 0])],
)
def test_a_mask_observes_those_entries_of_brax_observation(
    short, jax, mask: str, indices: list[int]
) -> None:
    env, reset, _ = short
    masked = envs.make_jax(f"{SHORT}:mask={mask}")
    assert masked.spec.obs_dim == len(indices) and masked.obs_indices == tuple(indices)
    key = jax.random.key(5)
    _, full = reset(key)
    state, obs = masked.reset(key)
    np.testing.assert_array_equal(obs, np.asarray(full)[indices])
    np.testing.assert_array_equal(masked.observe(state.inner.obs), np.asarray(full)[indices])


@pytest.mark.jax
def test_the_host_adapter_steps_numpy_and_snapshots(short) -> None:
    env = envs.make_host(SHORT, num_envs=2)
    obs = env.reset(seed=0)
    assert obs.shape == (2, 8) and obs.dtype == np.float32
    actions = np.random.default_rng(0).uniform(-1, 1, (6, 2, 2)).astype(np.float32)
    obs, reward, terminated, truncated = env.step(actions[0])
    assert reward.shape == (2,) and reward.dtype == np.float32
    snapshot = env.get_state()
    after = [env.step(a) for a in actions[1:]]
    assert [bool(r[3][0]) for r in after] == [False, True, False, False, True]
    env.set_state(snapshot)
    again = [env.step(a) for a in actions[1:]]
    for x, y in zip(after, again, strict=True):
        for a, b in zip(x, y, strict=True):
            np.testing.assert_array_equal(a, b)
    env.close()


@pytest.mark.jax
@pytest.mark.slow
def test_brax_swimmer_trains_fused_as_a_population(jax, tmp_path: Path) -> None:
    from rtrrl import training

    summary = training.train(
        "brax:swimmer",
        "jax",
        seeds=2,
        steps=40,
        epoch_steps=20,
        eval_every=1,
        eval_steps=20,
        out=tmp_path / "run",
    )
    assert summary["engine"] == "fused"
    agents = training.load_checkpoint(tmp_path / "run")["agents"]
    assert agents["W"].shape[0] == 2 and np.all(np.isfinite(agents["W"]))
    assert not np.array_equal(agents["W"][0], agents["W"][1])


@pytest.mark.jax
@pytest.mark.slow
def test_a_brax_task_trains_on_the_host_loop_with_numpy(short, tmp_path: Path) -> None:
    from rtrrl import training

    summary = training.train(
        SHORT,
        "numpy",
        seeds=1,
        num_envs=2,
        steps=24,
        epoch_steps=6,
        eval_every=1,
        eval_episodes=2,
        out=tmp_path / "r",
    )
    assert summary["engine"] == "host"
    rows = (tmp_path / "r" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 2  # header and two epochs


@pytest.mark.jax
def test_building_leaves_no_mujoco_log_behind(jax, tmp_path: Path, monkeypatch) -> None:
    """MuJoCo logs warnings (halfcheetah's model has a deprecated attribute) to
    MUJOCO_LOG.TXT in the working folder unless someone takes them."""
    monkeypatch.chdir(tmp_path)
    env = _brax._build.__wrapped__("halfcheetah", "spring", ())
    assert env.backend == "spring"
    assert list(tmp_path.iterdir()) == []


def test_mjx_line_about_missing_warp_kernels_is_dropped(capsys: pytest.CaptureFixture[str]) -> None:
    with _brax.quiet_mjx():
        print("Failed to import warp: No module named 'warp'")
        print("Failed to import mujoco_warp: No module named 'warp'")
        print("something else")
    assert capsys.readouterr().out == "something else\n"
