"""An interrupted run, resumed, ends exactly as the uninterrupted run does, wherever the
interruption lands (issue 19): the property test, on the host loop (NumPy) and the fused path.

Each example interrupts a tiny run at a point drawn by a seeded generator (the same points in
every CI run) among the events of the uninterrupted run, in one of four places:

- ``safe``: a safe point of the loop (after an epoch, after an evaluation, after a save);
- ``epoch``: inside an epoch (host loop: before any training step; fused: before or after
  the jitted call, before the engine commits it);
- ``evaluation``: inside an evaluation (host loop: before any evaluation step; fused: around
  the jitted call);
- ``write``: inside a save: before, inside (data written, file not yet in place) or after
  each atomic write of the checkpoint, ``config.json``, ``metrics.csv`` and the final files,
  so between the checkpoint and the other files too;

and of one of three kinds: a SIGINT or a SIGTERM request (:func:`rtrrl.interrupts.request`,
exactly what the signal handlers do; the real signals are in ``test_interrupt.py``), or a
hard kill: an exception the loop does not handle, so the process state is abandoned where it
stands and nothing more is saved, and the run resumes from whatever its folder holds, as
after SIGKILL (a kill inside the very first save leaves no checkpoint: the run starts again).
The resumed run is interrupted once more at a random point (if it gets that far), then
resumed to the end. Its checkpoint (agents, records, metric rows, engine state), its best
agents (``best.npz``) and ``metrics.csv`` must equal the uninterrupted run's bit for bit, wall
time aside.
"""

from __future__ import annotations

import csv
import pickle
import random
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from rtrrl import checkpoint, interrupts, loop, run_folder, training  # noqa: E402

KINDS = ("SIGINT", "SIGTERM", "kill")
PLACES = ("safe", "epoch", "evaluation", "write")
#: Interruption points per engine: every kind in every place, twice (plus the second,
#: random interruption of each resumed run).
EXAMPLES = 24
#: Tiny runs: two seeds, six epochs of 10 steps, an evaluation every two epochs; with
#: patience 1 a seed can stop early, so stopped seeds are interrupted and resumed too.
SMALL = dict(seeds=2, steps=60, epoch_steps=10, eval_every=2, eval_episodes=2, patience=1)
RUNS = {
    "host": dict(task="gymnasium:CartPole-v1", backend="numpy", n_hidden=4, **SMALL),
    "fused": dict(task="MemoryChain-4", backend="jax", n_hidden=4, **SMALL),
}


class Killed(BaseException):
    """A hard kill: raised through everything, nothing more is saved."""


class Tap:
    """Counts the events of a run and interrupts it at event number ``at`` (1-based)."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.at = 0
        self.kind = ""

    def arm(self, at: int, kind: str) -> None:
        self.events, self.at, self.kind = [], at, kind

    def __call__(self, event: str) -> None:
        self.events.append(event)
        if len(self.events) != self.at:
            return
        if self.kind == "kill":
            raise Killed(event)
        interrupts.request(signal.SIGINT if self.kind == "SIGINT" else signal.SIGTERM)


def _install(mp: pytest.MonkeyPatch, tap: Tap, engine: str) -> None:
    """Route the loop's safe points, the file writes and the engine's work through ``tap``."""
    mp.setattr(loop, "_phase_done", lambda session, phase: tap(f"safe:{phase}"))
    real_write = run_folder.atomic_write

    def atomic_write(path: Path, write: Callable[[Any], Any]) -> None:
        def inner(f: Any) -> None:
            write(f)
            tap(f"write:{path.name}:inside")

        tap(f"write:{path.name}:before")
        real_write(path, inner)
        tap(f"write:{path.name}:after")

    mp.setattr(run_folder, "atomic_write", atomic_write)

    # The learning curve's pixels are not under test; drawing it costs more than a tiny run.
    def plot_curve(rows: Any, path: Path, title: str) -> None:
        atomic_write(path, lambda f: f.write(b"curve"))

    mp.setattr(run_folder, "plot_curve", plot_curve)
    mp.setattr(checkpoint, "atomic_write", atomic_write, raising=False)
    if engine == "host":
        from rtrrl.backends.numpy import NumpyBackend

        real_step = NumpyBackend.step

        def step(self: Any, config: Any, *args: Any) -> Any:
            frozen = config.lr_td == 0 and config.lr_rnn == 0  # evaluate_host's frozen copy
            tap("evaluation:step" if frozen else "epoch:step")
            return real_step(self, config, *args)

        mp.setattr(NumpyBackend, "step", step)
        return
    from rtrrl import fused

    real_population = fused._cached_population

    def tapped(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            tap(f"{name}:start")
            out = function(*args)
            tap(f"{name}:end")  # computed, not yet committed by the engine
            return out

        return call

    def cached(*args: Any) -> Any:
        init, epoch, evaluate = real_population(*args)
        return init, tapped("epoch", epoch), tapped("evaluation", evaluate)

    mp.setattr(fused, "_cached_population", cached)


def _train_or_resume(run: Path, kwargs: dict[str, Any]) -> None:
    if (run / checkpoint.CHECKPOINT).exists():
        training.resume(run)
    else:  # killed before the first checkpoint was in place: start again
        training.train(out=run, **kwargs)


def _interrupted_run(run: Path, kwargs: dict[str, Any], tap: Tap, points: list) -> None:
    """Train into ``run``, interrupted at each ``(event, kind)`` of ``points`` in turn, resumed
    after each, until the run finishes."""
    for n, (at, kind) in enumerate([*points, (0, "")]):
        tap.arm(at, kind)
        try:
            _train_or_resume(run, kwargs)
        except Killed:
            assert kind == "kill"
        except interrupts.Terminated as err:
            assert (kind, err.code) == ("SIGTERM", 143)
            assert (run / checkpoint.CHECKPOINT).exists()
        except KeyboardInterrupt:
            assert kind == "SIGINT"
            assert (run / checkpoint.CHECKPOINT).exists()
        else:
            # Finished: the point lay beyond the end, or was a request that came during the
            # final save (dropped: the run is complete). The first point is always reached.
            assert n > 0 or len(tap.events) >= at, "the first interruption point was not reached"
            return
    raise AssertionError("the run did not finish")


def _final(run: Path) -> tuple[Any, ...]:
    """The run's last checkpoint (agents, state), metrics.csv and, where the run keeps one,
    its best agents (best.npz), wall time left out."""
    ckpt = checkpoint.load_checkpoint(run)
    best = None
    if (run / "best.npz").exists():
        saved = checkpoint.load_checkpoint(run / "best.npz")
        best = (saved["agents"], saved["best"])
    state = {k: v for k, v in ckpt["state"].items() if k != "wall"}
    state["rows"] = [{k: v for k, v in r.items() if k != "wall_time"} for r in state["rows"]]
    with open(run / "metrics.csv") as f:
        rows = [{k: v for k, v in r.items() if k != "wall_time"} for r in csv.DictReader(f)]
    return ckpt["agents"], state, rows, best


def _unpickled(value: Any) -> bytes:
    """A pickled environment snapshot (gymnasium's sub-environments) for comparison: pickled
    again without the generators of the action and observation spaces. gymnasium seeds those
    from OS entropy when it builds an environment, and a run never uses them (nothing samples
    a space), so they differ between two uninterrupted runs as well; the environment's own
    state and generator are compared."""
    envs = value.load()
    if isinstance(envs, bytes):  # HostEnv.get_state's own pickle
        envs = pickle.loads(envs)
    for env in envs if isinstance(envs, list | tuple) else [envs]:
        while env is not None:
            for name in (
                "action_space",
                "observation_space",
                "_action_space",
                "_observation_space",
            ):
                space = vars(env).get(name)
                if space is not None and hasattr(space, "_np_random"):
                    space._np_random = None
            env = vars(env).get("env")
    return pickle.dumps(envs)


def _assert_same(a: Any, b: Any, where: str = "") -> None:
    """``a`` and ``b`` equal bit for bit (NaN equal to NaN), through dicts and lists."""
    if isinstance(a, getattr(checkpoint, "Pickled", ())):
        a, b = _unpickled(a), _unpickled(b)
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray | np.generic) or isinstance(b, np.ndarray | np.generic):
        x, y = np.asarray(a), np.asarray(b)
        assert x.dtype == y.dtype and x.shape == y.shape, where
        assert x.tobytes() == y.tobytes(), where
    elif isinstance(a, float) and np.isnan(a):
        assert isinstance(b, float) and np.isnan(b), where
    else:
        assert a == b, where


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The uninterrupted run of each engine and its event sequence, computed once."""
    cache: dict[str, Any] = {}

    def get(engine: str) -> tuple[list[str], Any]:
        if engine not in cache:
            tap = Tap()
            run = tmp_path_factory.mktemp(f"reference-{engine}") / "run"
            with pytest.MonkeyPatch.context() as mp:
                _install(mp, tap, engine)
                summary = training.train(out=run, **RUNS[engine])
            assert summary["engine"] == engine
            cache[engine] = (list(tap.events), _final(run))
        return cache[engine]

    return get


def _points(events: list[str], example: int) -> list[tuple[int, str]]:
    """The example's interruption points: the first of its kind and place, the second (in
    the resumed run) anywhere, of any kind."""
    rng = random.Random(example)
    kind, place = KINDS[example % 3], PLACES[(example // 3) % len(PLACES)]
    candidates = [n for n, e in enumerate(events, 1) if e.startswith(place + ":")]
    assert candidates, f"the reference run has no {place} event"
    return [(rng.choice(candidates), kind), (rng.randrange(1, len(events)), rng.choice(KINDS))]


def _check(engine: str, example: int, tmp_path: Path, reference: Any) -> None:
    events, expected = reference(engine)
    points = _points(events, example)
    tap = Tap()
    with pytest.MonkeyPatch.context() as mp:
        _install(mp, tap, engine)
        _interrupted_run(tmp_path / "run", RUNS[engine], tap, points)
    _assert_same(_final(tmp_path / "run"), expected, f"{points} -> {events[points[0][0] - 1]}")


@pytest.mark.numpy
@pytest.mark.parametrize("example", range(EXAMPLES))
def test_host_loop_resumes_exactly_from_anywhere(
    example: int, tmp_path: Path, reference: Any
) -> None:
    pytest.importorskip("gymnasium")
    _check("host", example, tmp_path, reference)


@pytest.mark.jax
@pytest.mark.parametrize("example", range(EXAMPLES))
def test_fused_path_resumes_exactly_from_anywhere(
    example: int, tmp_path: Path, reference: Any
) -> None:
    pytest.importorskip("jax")
    pytest.importorskip("gymnax")
    _check("fused", example, tmp_path, reference)


def test_the_points_cover_every_place_and_kind() -> None:
    """The examples are drawn so that each kind meets each place (twice)."""
    pairs = {(KINDS[e % 3], PLACES[(e // 3) % len(PLACES)]) for e in range(EXAMPLES)}
    assert pairs == {(k, p) for k in KINDS for p in PLACES}
