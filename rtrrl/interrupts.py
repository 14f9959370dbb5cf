"""Stop requests (Ctrl-C, ``SIGTERM``) that the training loop honours at its safe points.

Python turns SIGINT into a ``KeyboardInterrupt`` raised wherever the main thread happens to
be: inside a framework's compiled call, halfway through recording an epoch, between writing
the checkpoint and ``metrics.csv``. A checkpoint taken from such a state can count an epoch
whose evaluation never ran (a resumed run then skips it), and an exception raised inside
XLA's execution killed the process (``pure virtual method called``, a segmentation fault).
``SIGTERM``, what schedulers send, killed the process without a checkpoint.

So, while :func:`deferred` is active (the loop holds it for a whole run), SIGINT and SIGTERM
only *record* a request (:func:`pending`). The loop reads it at its safe points (after an
epoch, after an evaluation, after a save), writes the checkpoint there and stops:
``KeyboardInterrupt`` for SIGINT (exit status 130 from ``rtrrl train``) and
:class:`Terminated` (``SystemExit(143)``, 128 + 15) for SIGTERM. No exception is ever raised
inside framework code. A second signal while one is pending stops at once (Ctrl-C twice:
the user does not want to wait for the end of a long evaluation); the checkpoint on disk is
then the one of the last save, which resumes exactly too.

Signals that the process ignores when the run starts (``nohup``, a background job's SIGINT)
stay ignored. Outside the main thread, where Python delivers no signal, nothing is installed.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["Terminated", "clear", "deferred", "pending", "request"]

#: The signals a run defers.
SIGNALS = (signal.SIGINT, signal.SIGTERM)

_pending: int | None = None


class Terminated(SystemExit):
    """Raised once a run stopped by ``SIGTERM`` saved its checkpoint.

    A ``SystemExit`` with status 143 (128 + 15, what a process killed by SIGTERM reports), so a
    script that does not catch it exits as schedulers expect; ``except SystemExit`` catches it.
    """

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


def request(signum: int) -> None:
    """Record a stop request, as the signal ``signum`` does while :func:`deferred` is active.

    The loop stops at its next safe point. Tests call it to interrupt a run at a chosen place
    without sending a real signal.
    """
    global _pending
    _pending = int(signum)


def pending() -> int | None:
    """The signal of the stop request not yet honoured, or ``None``."""
    return _pending


def clear() -> None:
    """Forget a pending request."""
    global _pending
    _pending = None


def _handler(signum: int, frame: FrameType | None) -> None:
    if _pending is None:
        request(signum)
        return
    # A second signal: stop now, without waiting for a safe point.
    clear()
    if signum == signal.SIGTERM:
        raise Terminated
    raise KeyboardInterrupt


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Defer SIGINT and SIGTERM to the loop's safe points for the duration of the block.

    The previous handlers are put back on exit, and a request that arrived too late to be
    honoured (the run had finished) is dropped: the run is complete, nothing needs saving.
    """
    clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    try:
        for s, handler in previous.items():
            if handler is not signal.SIG_IGN:
                signal.signal(s, _handler)
        yield
    finally:
        for s, handler in previous.items():
            if handler is not signal.SIG_IGN:
                # None: a handler not installed from Python; the default is the closest.
                signal.signal(s, signal.SIG_DFL if handler is None else handler)
        clear()
