"""Fixtures of the training tests."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator

import pytest

from rtrrl import interrupts, loop, training


def _sigint_hook(n: int) -> Callable[[loop.Session], None]:
    """A ``loop._epoch_done`` that requests a Ctrl-C right after the ``n``-th iteration."""
    state = {"left": n}

    def hook(session: loop.Session) -> None:
        state["left"] -= 1
        if state["left"] == 0:
            interrupts.request(signal.SIGINT)

    return hook


@contextlib.contextmanager
def _sigint_after(n: int) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "_epoch_done", _sigint_hook(n))
        yield


@pytest.fixture
def interrupt_after(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """``interrupt_after(n)``: the next run gets a Ctrl-C right after its ``n``-th loop
    iteration (one epoch of every active seed, its evaluations and checkpoint), once: a
    SIGINT request (:func:`rtrrl.interrupts.request`), which the loop honours at once, by
    saving and raising ``KeyboardInterrupt``."""

    def arm(n: int) -> None:
        monkeypatch.setattr(loop, "_epoch_done", _sigint_hook(n))

    return arm


@pytest.fixture(scope="session")
def sigint_after() -> Callable[[int], contextlib.AbstractContextManager[None]]:
    """``with sigint_after(n): ...``: as :func:`interrupt_after` within the block, for
    fixtures wider than one test (which cannot use ``monkeypatch``)."""
    return _sigint_after


@pytest.fixture
def captured_sessions(monkeypatch: pytest.MonkeyPatch) -> list[loop.Session]:
    """The sessions :func:`rtrrl.train` would run, appended as it builds them; nothing trains,
    and each run returns an empty summary that the CLI can print."""
    sessions: list[loop.Session] = []

    def run(session: loop.Session, be: object, restored: object) -> dict:
        sessions.append(session)
        return {
            "task": session.settings.task,
            "backend": "numpy",
            "engine": "host",
            "seeds": [],
            "median": None,
            "std": None,
            "wall_time": 0.0,
        }

    monkeypatch.setattr(training, "_run", run)
    return sessions
