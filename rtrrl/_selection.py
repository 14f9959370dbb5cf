"""Which backend is current in this context, and what a ``with`` block restores.

Kept apart from the registry so that :class:`rtrrl.backends.base.BackendBase` can support
``with backend:`` without importing the registry (which imports it): no import cycle.

One :class:`contextvars.ContextVar` holds an immutable :class:`Selection`, so threads and
asyncio tasks each see their own and no context can change another's.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, NamedTuple

__all__ = ["Selection", "enter", "exit_", "select", "selected"]


class Selection(NamedTuple):
    """The state of one context."""

    #: The current backend; ``None`` means the default (``$RTRRL_BACKEND``, else numpy),
    #: resolved on each read so that setting the variable before the first use() counts.
    current: Any = None
    #: ``(backend, previous)`` from the latest :func:`select` not yet entered: ``with use(x):``
    #: enters right after ``use(x)`` switched, and must restore what came before it.
    just_selected: tuple[Any, Any] | None = None
    #: What each open ``with`` block restores, innermost last.
    restore: tuple[Any, ...] = ()


# The default is an immutable NamedTuple, shared safely by every context.
_state: ContextVar[Selection] = ContextVar("rtrrl_backend_selection", default=Selection())  # noqa: B039


def selected() -> Any:
    """The current backend of this context, or ``None`` for "the default"."""
    return _state.get().current


def select(backend: Any) -> None:
    """Make ``backend`` current (what :func:`rtrrl.use` does)."""
    state = _state.get()
    _state.set(state._replace(current=backend, just_selected=(backend, state.current)))


def enter(backend: Any) -> Any:
    """Start a ``with`` block on ``backend``; :func:`exit_` restores what was current."""
    state = _state.get()
    if state.just_selected is not None and state.just_selected[0] is backend:
        previous = state.just_selected[1]  # `with use(x):`: use() already switched
    else:
        previous = state.current  # `with backend:` on an object obtained earlier
    _state.set(Selection(backend, None, (*state.restore, previous)))
    return backend


def exit_() -> None:
    """End the innermost ``with`` block."""
    state = _state.get()
    if not state.restore:
        raise RuntimeError("rtrrl backend context exited more often than entered")
    _state.set(Selection(state.restore[-1], None, state.restore[:-1]))
