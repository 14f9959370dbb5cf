"""The backend protocol: what every backend, in-tree or third-party, provides.

A backend is any object with the members of :class:`Backend`; it need not inherit from
anything. :class:`BackendBase` is an optional mixin that adds conveniences (``with backend:``,
a readable ``repr``); the in-tree backends use it.

This module must stay import-cheap (no NumPy, no frameworks): :mod:`rtrrl` imports it at
import time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from rtrrl import _selection

__all__ = [
    "REQUIRED_ATTRIBUTES",
    "REQUIRED_METHODS",
    "Backend",
    "BackendBase",
    "map_tree",
    "missing_members",
]


@runtime_checkable
class Backend(Protocol):
    """What a backend provides. Arrays are batch-first; dtypes are named by strings.

    ``config`` is an :class:`rtrrl_spec.Config`; an ``agent`` is a ``dict[str, array]`` in the
    canonical layout of :mod:`rtrrl_spec.layout` (same names, shapes and dtypes in every
    backend), holding the backend's own array type.
    """

    #: Registry name, e.g. ``"numpy"``, ``"jax"``, ``"keras-torch"``.
    name: str
    #: Float dtypes the backend computes in, e.g. ``("float32", "float64")``.
    supported_dtypes: tuple[str, ...]

    def version(self) -> str:
        """Version of the framework the backend runs on (not of rtrrl)."""
        ...

    def device(self) -> str:
        """Where arrays live, e.g. ``"cpu"`` or ``"cuda:0"``."""
        ...

    def to_numpy(self, tree: Any) -> Any:
        """An array, or a ``dict[str, array]``, to NumPy; dtypes preserved exactly."""
        ...

    def from_numpy(self, tree: Any) -> Any:
        """A NumPy array, or a ``dict[str, ndarray]``, to backend arrays; dtypes preserved.

        A float64 array stays float64 and an int32 array stays int32: no silent downcast.
        """
        ...

    def init(self, config: Any, batch_size: int, seed: int, dtype: str = "float32") -> dict:
        """A fresh agent for ``batch_size`` environments, in the canonical layout."""
        ...

    def step(
        self, config: Any, agent: dict, obs: Any, reward: Any, done: Any, noise: Any
    ) -> tuple[dict, Any, dict]:
        """One pure RTRRL step: ``(agent, action, info)``; no hidden randomness."""
        ...

    def rng(self, seed: int) -> Any:
        """A backend-native random state seeded with ``seed``."""
        ...

    def draw_noise(self, config: Any, batch_size: int, rng: Any, dtype: str) -> tuple[Any, Any]:
        """The noise one step consumes, drawn from ``rng``: ``(noise, new_rng)``.

        Stateful generators may return the same object they were given; functional ones
        (JAX keys) return the advanced state.
        """
        ...

    def rng_state(self, rng: Any) -> dict[str, Any]:
        """The whole state of ``rng`` as NumPy arrays (what a checkpoint saves).

        :meth:`rng_from_state` of the result must draw exactly what ``rng`` would draw next.
        """
        ...

    def rng_from_state(self, state: dict[str, Any]) -> Any:
        """A generator in the state :meth:`rng_state` returned (a new object)."""
        ...

    def step_functions(self) -> Mapping[str, Callable[..., Any]]:
        """This backend's translation of each function of ``rtrrl_spec.STEP_FUNCTIONS``.

        Each takes and returns what the reference function of the same name does (in this
        backend's arrays); the conformance suite checks them one by one, so a failure names
        the function. :class:`BackendBase` provides it from the module the class is defined in.
        """
        ...


REQUIRED_ATTRIBUTES: tuple[str, ...] = ("name", "supported_dtypes")
REQUIRED_METHODS: tuple[str, ...] = (
    "version",
    "device",
    "to_numpy",
    "from_numpy",
    "init",
    "step",
    "rng",
    "draw_noise",
    "rng_state",
    "rng_from_state",
    "step_functions",
)


def missing_members(obj: object) -> list[str]:
    """Names of :class:`Backend` members that ``obj`` lacks (or has but cannot call).

    Spelled out rather than ``isinstance(obj, Backend)`` so that error messages can say
    exactly what a third-party backend is missing.
    """
    missing = [a for a in REQUIRED_ATTRIBUTES if not hasattr(obj, a)]
    missing += [m for m in REQUIRED_METHODS if not callable(getattr(obj, m, None))]
    return missing


def map_tree(fn: Callable[[Any], Any], tree: Any) -> Any:
    """Apply ``fn`` to an array, or to every value of a (possibly nested) mapping."""
    if isinstance(tree, Mapping):
        return {k: map_tree(fn, v) for k, v in tree.items()}
    return fn(tree)


class BackendBase:
    """Optional mixin for backends: ``with backend:`` support, a readable ``repr`` and
    :meth:`step_functions` read from the module that defines the class.

    ``rtrrl.use(name)`` returns the backend object itself when its class derives from this
    mixin; ``with rtrrl.use(name) as be:`` then restores the previous backend on exit.
    """

    name: str = "unnamed"

    def __enter__(self) -> BackendBase:
        return _selection.enter(self)

    def __exit__(self, *exc_info: object) -> None:
        _selection.exit_()

    def step_functions(self) -> dict[str, Callable[..., Any]]:
        """The module-level functions named as the spec's, from this class's module."""
        import sys

        from rtrrl_spec import STEP_FUNCTIONS

        module = sys.modules[type(self).__module__]
        missing = [n for n in STEP_FUNCTIONS if not callable(getattr(module, n, None))]
        if missing:
            raise TypeError(
                f"{module.__name__} lacks the spec's step functions {missing}: a backend "
                "translates every function of rtrrl_spec.STEP_FUNCTIONS under its name "
                "(docs/porting.md), or overrides step_functions()"
            )
        return {n: getattr(module, n) for n in STEP_FUNCTIONS}

    def __repr__(self) -> str:
        return f"<rtrrl backend {self.name!r} ({type(self).__module__}.{type(self).__qualname__})>"
