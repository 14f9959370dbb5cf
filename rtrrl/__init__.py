"""rtrrl: Real-Time Recurrent Reinforcement Learning on NumPy, JAX, PyTorch and Keras.

Importing this package is cheap: it imports no framework and no backend. Backends load when
:func:`use` (or :func:`current`) first needs them::

    import rtrrl

    be = rtrrl.use("numpy")          # or "jax", "torch", "keras-jax", "pkg.mod:Backend"
    with rtrrl.use("numpy") as be:   # the previous backend comes back on exit
        ...

    rtrrl.train("MemoryChain-8", backend="jax", seeds=5, steps=100_000, out="runs/m8")
"""

from rtrrl._registry import (
    BackendError,
    BackendNotFoundError,
    BackendNotInstalledError,
    InvalidBackendError,
    available_backends,
    current,
    get_backend,
    use,
)
from rtrrl.backends.base import Backend

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # ``rtrrl.train`` loads lazily (it needs the environments); the module is callable, so
    # ``rtrrl.train("CartPole-vel", backend="jax")`` and ``rtrrl.train.resume(...)`` both work.
    if name == "train":
        import importlib

        return importlib.import_module("rtrrl.train")
    raise AttributeError(f"module 'rtrrl' has no attribute {name!r}")


__all__ = [
    "Backend",
    "BackendError",
    "BackendNotFoundError",
    "BackendNotInstalledError",
    "InvalidBackendError",
    "__version__",
    "available_backends",
    "current",
    "get_backend",
    "train",
    "use",
]
