"""Fixtures of the training tests."""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest

from rtrrl import interrupts, loop


@pytest.fixture
def interrupt_after(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """``interrupt_after(n)``: the next run gets a Ctrl-C right after its ``n``-th loop
    iteration (one epoch of every active seed, its evaluations and checkpoint), once: a
    SIGINT request (:func:`rtrrl.interrupts.request`), which the loop honours at once, by
    saving and raising ``KeyboardInterrupt``."""

    def arm(n: int) -> None:
        state = {"left": n}

        def hook(session: loop.Session) -> None:
            state["left"] -= 1
            if state["left"] == 0:
                interrupts.request(signal.SIGINT)

        monkeypatch.setattr(loop, "_epoch_done", hook)

    return arm
