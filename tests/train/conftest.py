"""Fixtures of the training tests."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator

import pytest

from rtrrl import interrupts, loop


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
