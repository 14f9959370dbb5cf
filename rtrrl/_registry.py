"""The backend registry and :func:`use`.

Modelled on tensorly's and pyhf's backend registries, with two differences: backends are
imported lazily (``import rtrrl`` imports no framework), and the current backend lives in a
:class:`contextvars.ContextVar`, so threads and asyncio tasks can each use their own backend
without touching ``sys.modules`` or any global.

Names resolve in this order: built-in names (:data:`BUILTIN_BACKENDS`), then entry points in
the ``rtrrl.backends`` group, then ``"package.module:Attribute"`` import strings. Built-in
names are case-insensitive (``"Jax"``, ``" JAX "`` and ``"keras_jax"`` are ``"jax"`` and
``"keras-jax"``): :func:`canonical_name` spells them once, and everything that compares
names (the run settings, the engine choice, the Keras set-up of the command line) uses its
spelling. Entry-point names and import strings are taken as written.

A framework that is installed but cannot start (``JAX_PLATFORMS=cuda`` without a GPU,
``RTRRL_TORCH_DEVICE=cuda`` without CUDA, ``JAX_ENABLE_X64=maybe``) is a
:class:`BackendStartError` whose one-line message names the environment variables it read.
"""

from __future__ import annotations

import importlib
import os
import threading
from typing import TYPE_CHECKING, Any, NamedTuple

from rtrrl import _selection
from rtrrl._builtin import BUILTIN_BACKENDS
from rtrrl.backends.base import Backend, missing_members

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

__all__ = [
    "BUILTIN_BACKENDS",
    "DEFAULT_BACKEND",
    "ENTRY_POINT_GROUP",
    "ENV_VAR",
    "BackendError",
    "BackendInfo",
    "BackendNotFoundError",
    "BackendNotInstalledError",
    "BackendStartError",
    "InvalidBackendError",
    "available_backends",
    "backend_infos",
    "canonical_name",
    "current",
    "described",
    "framework_hint",
    "get_backend",
    "one_line",
    "use",
]

ENTRY_POINT_GROUP = "rtrrl.backends"
ENV_VAR = "RTRRL_BACKEND"
DEFAULT_BACKEND = "numpy"

# Top-level modules that ship inside the rtrrl distribution: if one of them is missing the
# installation is broken, which no extra fixes, so the original error is re-raised.
_OWN_MODULES = frozenset({"rtrrl", "rtrrl_spec"})


class BackendError(Exception):
    """Base class of the registry's errors (never raised itself)."""


class BackendNotFoundError(BackendError, LookupError):
    """No backend goes by this name, or an import string points at nothing."""


class BackendNotInstalledError(BackendError, ImportError):
    """The backend is known, but the framework it needs is not installed."""


class InvalidBackendError(BackendError, TypeError):
    """The object found does not implement the backend protocol."""


class BackendStartError(BackendError, RuntimeError):
    """The framework is installed but fails to start here (a device or a setting read from
    the environment); the message names the variables to check."""


class BackendInfo(NamedTuple):
    """One row of :func:`backend_infos`."""

    name: str
    target: str
    source: str  # "built-in" or "entry point (<distribution>)"
    extra: str | None
    installed: bool
    reason: str  # why it is not installed; "" when it is
    #: What to set for it to load when its packages are installed but this process cannot
    #: load it (``"KERAS_BACKEND=jax"``); "" otherwise.
    needs: str = ""


#: Environment variables the built-in frameworks read when they start: named in
#: :class:`BackendStartError` messages when they are set.
FRAMEWORK_VARIABLES = (
    "JAX_PLATFORMS",
    "JAX_ENABLE_X64",
    "CUDA_VISIBLE_DEVICES",
    "RTRRL_TORCH_DEVICE",
    "KERAS_BACKEND",
    "XLA_FLAGS",
)

# Built-in backends that load only with an environment variable set to a value: keras-jax
# and keras-torch need KERAS_BACKEND (Keras reads it once, at import).
_NEEDS_VARIABLE = {
    "keras-jax": ("KERAS_BACKEND", "jax", ("keras", "jax")),
    "keras-torch": ("KERAS_BACKEND", "torch", ("keras", "torch")),
}


# --- state ----------------------------------------------------------------------------------

# One instance per target ("module:Attr"), shared by every name and thread that reaches it.
_cache: dict[str, Any] = {}
_lock = threading.RLock()


# --- public API -----------------------------------------------------------------------------


def use(name: str | Backend | None = None) -> Backend:
    """Make a backend current in this context and return it.

    ``name`` is a registered name (``"numpy"``), an entry-point name, a
    ``"package.module:Attribute"`` string, or a backend object; ``None`` means the default
    (``$RTRRL_BACKEND``, else ``"numpy"``). Works as a plain call or as a context manager::

        be = rtrrl.use("numpy")               # current until changed
        with rtrrl.use("numpy") as be:        # restored on exit
            ...

    The returned object is the backend itself when its class derives from
    :class:`rtrrl.backends.base.BackendBase` (all in-tree backends do); a backend that only
    satisfies the protocol comes back in a thin proxy that adds ``with`` support.
    """
    backend = _default() if name is None else _resolve(name)
    _selection.select(backend)
    if hasattr(type(backend), "__enter__") and hasattr(type(backend), "__exit__"):
        return backend
    return _UseContext(backend)  # type: ignore[return-value]


def current() -> Backend:
    """The current backend of this context (the default if :func:`use` was not called)."""
    backend = _selection.selected()
    return _default() if backend is None else backend


def get_backend(name: str | Backend | None = None) -> Backend:
    """The backend ``name`` (or the current one if ``None``), without making it current."""
    return current() if name is None else _resolve(name)


def available_backends() -> dict[str, bool]:
    """Every known backend name, mapped to whether it can be loaded here.

    Checking imports each backend's module, so frameworks that are installed get imported.
    """
    return {info.name: info.installed for info in backend_infos()}


def canonical_name(name: str) -> str:
    """The registry's spelling of a backend name: built-in names in lower case with ``-``
    (``"Jax"`` → ``"jax"``, ``"Keras_Torch"`` → ``"keras-torch"``); any other name (an entry
    point, an import string) stripped and otherwise as given."""
    key = name.strip()
    builtin = key.lower().replace("_", "-")
    return builtin if builtin in BUILTIN_BACKENDS else key


def framework_hint() -> str:
    """``"; it read JAX_PLATFORMS='cuda' from the environment: fix or unset it"`` for the
    framework variables that are set, else ``""``: the end of a start-up error message."""
    found = [f"{v}={os.environ[v]!r}" for v in FRAMEWORK_VARIABLES if os.environ.get(v)]
    if not found:
        return ""
    return f"; set in the environment: {', '.join(found)}: fix or unset what does not fit"


def one_line(err: BaseException) -> str:
    """An exception's message on one line (its lines joined), for one-line errors."""
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return text or f"{type(err).__name__} (without a message)"


def described(err: BaseException) -> str:
    """``"ValueError: its message"`` on one line (``"AssertionError (without a message)"``:
    JAX answers ``JAX_PLATFORMS=cuda`` without a GPU with a bare assertion)."""
    text = one_line(err)
    return text if text.startswith(type(err).__name__) else f"{type(err).__name__}: {text}"


def backend_infos() -> list[BackendInfo]:
    """Built-in and entry-point backends, with where they come from and whether they load.

    A backend whose packages are installed but which needs an environment variable this
    process does not have (``keras-jax`` without ``KERAS_BACKEND=jax``) is not installed
    *here*, and its ``needs`` says what to set.
    """
    rows = []
    for name, (target, extra) in BUILTIN_BACKENDS.items():
        rows.append((name, target, "built-in", extra))
    for name, ep in _entry_points().items():
        if name not in BUILTIN_BACKENDS:
            rows.append((name, ep.value, f"entry point ({_dist_name(ep)})", None))
    infos = []
    for name, target, source, extra in rows:
        try:
            _resolve(name)
        except (BackendError, ImportError) as exc:
            reason = str(exc).splitlines()[0]
            needs = _needs(name)
            infos.append(BackendInfo(name, target, source, extra, False, reason, needs))
        else:
            infos.append(BackendInfo(name, target, source, extra, True, ""))
    return infos


def _needs(name: str) -> str:
    """``"KERAS_BACKEND=jax"`` when ``name`` needs that variable, its packages are installed
    and the variable is set otherwise; else ``""``."""
    if name not in _NEEDS_VARIABLE:
        return ""
    variable, value, packages = _NEEDS_VARIABLE[name]
    if os.environ.get(variable) == value:
        return ""
    from importlib.util import find_spec

    if any(find_spec(package) is None for package in packages):
        return ""
    return f"{variable}={value}"


# --- `with` support for backends that only satisfy the protocol ----------------------------


class _UseContext:
    """Wraps a protocol-only backend so that ``with rtrrl.use(...)`` works for it too."""

    __slots__ = ("_backend",)

    def __init__(self, backend: Any) -> None:
        object.__setattr__(self, "_backend", backend)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._backend, attr)

    def __enter__(self) -> Any:
        return _selection.enter(self._backend)

    def __exit__(self, *exc_info: object) -> None:
        _selection.exit_()

    def __eq__(self, other: object) -> bool:
        other = other._backend if isinstance(other, _UseContext) else other
        return self._backend is other

    def __hash__(self) -> int:
        return id(self._backend)

    def __repr__(self) -> str:
        return repr(self._backend)


# --- resolution -----------------------------------------------------------------------------


def _default() -> Any:
    name = os.environ.get(ENV_VAR, "").strip() or DEFAULT_BACKEND
    try:
        return _resolve(name)
    except BackendNotFoundError as exc:
        raise BackendNotFoundError(f"{exc}\n(The name came from ${ENV_VAR}={name!r}.)") from None


def _resolve(spec: Any) -> Any:
    if isinstance(spec, _UseContext):
        return spec._backend
    if not isinstance(spec, str):
        if isinstance(spec, type):
            return _cached(f"{spec.__module__}:{spec.__qualname__}", lambda: _instantiate(spec))
        return _check(spec, where=repr(spec))
    key = spec.strip()
    builtin = canonical_name(key)
    if builtin in BUILTIN_BACKENDS:
        target, extra = BUILTIN_BACKENDS[builtin]
        return _cached(target, lambda: _load(target, label=f"backend {builtin!r}", extra=extra))
    entry_points = _entry_points()
    if key in entry_points:
        ep = entry_points[key]
        label = f"backend {key!r} (entry point from {_dist_name(ep)})"
        return _cached(ep.value, lambda: _load(ep.value, label=label, extra=None))
    if ":" in key:
        return _cached(key, lambda: _load(key, label=f"backend {key!r}", extra=None))
    raise BackendNotFoundError(_unknown_message(key, entry_points))


def _cached(target: str, make: Any) -> Any:
    with _lock:
        if target not in _cache:
            _cache[target] = make()
        return _cache[target]


def _entry_points() -> dict[str, EntryPoint]:
    """Entry points of the ``rtrrl.backends`` group by name; the first of a name wins."""
    from importlib.metadata import entry_points  # imported lazily: costs a few milliseconds

    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep)
    return found


def _dist_name(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return getattr(dist, "name", None) or "an unknown distribution"


def _unknown_message(name: str, entry_points: dict[str, Any]) -> str:
    known = [f"{n} (built-in)" for n in BUILTIN_BACKENDS]
    known += [f"{n} (entry point)" for n in entry_points if n not in BUILTIN_BACKENDS]
    return (
        f"Unknown rtrrl backend {name!r}. Known backends: {', '.join(known) or 'none'}.\n"
        f"To use a third-party backend, install a package that declares it in the "
        f"{ENTRY_POINT_GROUP!r} entry-point group, e.g. in its pyproject.toml:\n"
        f'    [project.entry-points."{ENTRY_POINT_GROUP}"]\n'
        f'    {name} = "your_package.module:YourBackend"\n'
        f"or pass the import string itself: rtrrl.use('your_package.module:YourBackend'). "
        f"See docs/porting.md."
    )


def _load(target: str, *, label: str, extra: str | None) -> Any:
    module_name, sep, attr = target.partition(":")
    module_name, attr = module_name.strip(), attr.strip()
    if not sep or not module_name or not attr:
        raise BackendNotFoundError(
            f"{label}: {target!r} is not an import string of the form 'package.module:Class'."
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing == module_name or module_name.startswith(missing + "."):
            raise BackendNotFoundError(
                f"{label}: cannot import module {module_name!r} ({exc}). Check the spelling "
                f"and that the package providing it is installed in this environment."
            ) from exc
        if missing.partition(".")[0] in _OWN_MODULES:
            raise  # a broken rtrrl installation: no extra would fix it
        if extra is not None:
            hint = f'pip install "rtrrl[{extra}]"'
            how = f"Install it with:\n    {hint}"
        else:
            how = f"Install the package that provides the module {missing!r}."
        raise BackendNotInstalledError(
            f"The {label} needs the Python module {missing!r}, which is not installed. {how}",
            name=missing,
        ) from exc
    except (ImportError, BackendError):
        raise
    except Exception as exc:  # a framework that is installed but refuses to start
        raise BackendStartError(
            f"The {label} cannot start: importing {module_name!r} failed with "
            f"{described(exc)}{framework_hint()}"
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise BackendNotFoundError(
                f"{label}: module {module_name!r} has no attribute {attr!r}."
            ) from None
    return _instantiate(obj, where=f"{label} ({target})")


def _instantiate(obj: Any, where: str | None = None) -> Any:
    where = where or repr(obj)
    # A class or factory is called with no arguments; an object that already implements the
    # protocol (a module-level instance) is used as it is.
    if isinstance(obj, type) or (callable(obj) and missing_members(obj)):
        try:
            obj = obj()
        except TypeError as exc:
            raise InvalidBackendError(
                f"{where}: cannot create the backend by calling {obj!r} with no arguments: {exc}"
            ) from exc
        except BackendError:
            raise
        except Exception as exc:  # e.g. torch asked for CUDA where there is none
            raise BackendStartError(
                f"{where} cannot start here: {described(exc)}{framework_hint()}"
            ) from exc
    return _check(obj, where)


def _check(obj: Any, where: str) -> Any:
    missing = missing_members(obj)
    if missing:
        raise InvalidBackendError(
            f"{where} does not implement the rtrrl backend protocol "
            f"(rtrrl.backends.base.Backend): missing {', '.join(missing)}. See docs/porting.md."
        )
    if not isinstance(obj.name, str) or not obj.name:
        raise InvalidBackendError(f"{where}: backend.name must be a non-empty str.")
    return obj
