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
    "check_step",
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
        """One pure RTRRL step: ``(agent, action, info)``; no hidden randomness.

        Refuses what ``rtrrl_spec.step`` refuses, with its :class:`~rtrrl_spec.SpecError`
        messages (bad shapes or dtypes, non-finite inputs, ``done`` flags that are not
        0/1, a config that does not match the agent), so a caller never gets silent garbage.
        The in-tree backends take a keyword ``check`` (default ``True``): ``check=False`` skips
        those checks, for loops whose inputs are known good; callers that may meet any backend
        call ``step`` without it. A backend deriving from :class:`BackendBase` checks in one
        line with :meth:`BackendBase.check_step`.
        """
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


def check_step(
    config: Any,
    agent: Mapping[str, Any],
    obs: Any,
    reward: Any,
    done: Any,
    noise: Any,
    to_numpy: Callable[[Any], Any] | None = None,
) -> None:
    """Refuse the arguments of one step that ``rtrrl_spec.step`` refuses, with its messages.

    The reference's own checks (:class:`rtrrl_spec.SpecError`), so every backend refuses the
    same things in the same words:

    - the config's type and the agent's names, shapes and dtypes against
      ``rtrrl_spec.layout(config, B)`` (:func:`rtrrl_spec.validate_layout`, on zero-strided
      NumPy stand-ins of the agent's arrays: only shapes and dtypes are read, nothing is
      copied off a device; a layout seen once is remembered, so this costs a dict lookup);
    - the inputs (:func:`rtrrl_spec.check_inputs` on NumPy copies): shapes, numeric dtypes,
      finite ``obs``, ``reward`` and ``noise``, ``done`` booleans or 0/1, discrete noise
      strictly inside (0, 1).

    Not the agent's values (finite, ``tau > 0``, ``a_prev`` in range): that would copy the
    whole agent to the host every step. Training checks them at every epoch boundary;
    ``rtrrl_spec.validate_agent(config, backend.to_numpy(agent))`` checks them on demand.

    ``to_numpy`` converts one input to NumPy (a backend's ``to_numpy``); default
    ``numpy.asarray``. Import-cheap: NumPy and the spec are imported on the first call.
    """
    import numpy as np

    from rtrrl_spec import check_inputs

    float_dtype, B = _checked_layout(config, agent)
    convert = np.asarray if to_numpy is None else to_numpy
    check_inputs(config, B, float_dtype, *(convert(x) for x in (obs, reward, done, noise)))


#: (config, agent signature) -> (float dtype, B) of layouts that passed; bounded.
_LAYOUTS_SEEN: dict[tuple[Any, tuple[Any, ...]], tuple[str, int]] = {}
_LAYOUTS_KEPT = 256


def _checked_layout(config: Any, agent: Mapping[str, Any]) -> tuple[str, int]:
    from rtrrl_spec import Config, validate_layout

    try:
        signature = tuple((k, tuple(v.shape), v.dtype) for k, v in agent.items())
        key = (config, signature) if isinstance(config, Config) else None
        found = _LAYOUTS_SEEN.get(key) if key is not None else None
    except (AttributeError, TypeError):  # not arrays (lists, say): no shortcut
        key = found = None
    if found is None:
        views = {k: _stand_in(v) for k, v in agent.items()} if isinstance(agent, Mapping) else agent
        found = validate_layout(config, views)
        if key is not None:
            if len(_LAYOUTS_SEEN) >= _LAYOUTS_KEPT:
                _LAYOUTS_SEEN.clear()
            _LAYOUTS_SEEN[key] = found
    return found


def _stand_in(value: Any) -> Any:
    """A zero-strided NumPy array with ``value``'s shape and dtype (no copy of its data), or
    ``value`` itself when it has no shape or no dtype NumPy knows."""
    import numpy as np

    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is None or dtype is None:
        return value
    try:
        np_dtype = np.dtype(dtype)
    except TypeError:  # torch.float32 and the like: NumPy knows the name after the dot
        try:
            np_dtype = np.dtype(str(dtype).rpartition(".")[2])
        except TypeError:
            return value
    return np.broadcast_to(np.zeros((), np_dtype), tuple(shape))


class BackendBase:
    """Optional mixin for backends: ``with backend:`` support, a readable ``repr``,
    :meth:`step_functions` read from the module that defines the class, and
    :meth:`check_step`, the reference's checks of a step's arguments.

    ``rtrrl.use(name)`` returns the backend object itself when its class derives from this
    mixin; ``with rtrrl.use(name) as be:`` then restores the previous backend on exit.
    """

    name: str = "unnamed"

    def __enter__(self) -> BackendBase:
        return _selection.enter(self)

    def __exit__(self, *exc_info: object) -> None:
        _selection.exit_()

    def check_step(
        self, config: Any, agent: Mapping[str, Any], obs: Any, reward: Any, done: Any, noise: Any
    ) -> None:
        """:func:`check_step` with this backend's ``to_numpy``: what a ``step`` calls first
        (unless ``check=False``) to refuse what ``rtrrl_spec.step`` refuses, in its words::

            def step(self, config, agent, obs, reward, done, noise, *, check=True):
                if check:
                    self.check_step(config, agent, obs, reward, done, noise)
                ...
        """
        check_step(config, agent, obs, reward, done, noise, self.to_numpy)

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
