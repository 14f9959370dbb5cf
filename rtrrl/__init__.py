"""rtrrl: Real-Time Recurrent Reinforcement Learning on NumPy, JAX, PyTorch and Keras.

Importing this package is cheap: it imports no framework and no backend. Backends load when
:func:`use` (or :func:`current`) first needs them::

    import rtrrl

    be = rtrrl.use("numpy")          # or "jax", "torch", "keras-jax", "pkg.mod:Backend"
    with rtrrl.use("numpy") as be:   # the previous backend comes back on exit
        ...

    rtrrl.train("MemoryChain-8", backend="jax", seeds=5, steps=100_000, out="runs/m8")
    rtrrl.sweep("MemoryChain-8", grid={"lr_td": [1e-4, 1e-3]}, seeds=3, out="sweeps/m8")
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


# Loaded on first use: training needs the environments, which `import rtrrl` must not import.
_TRAINING = ("train", "resume", "evaluate_checkpoint")
_SWEEPS = ("sweep", "resume_sweep")


def __getattr__(name: str) -> object:
    if name in _TRAINING:
        from rtrrl import training

        return getattr(training, name)
    if name in _SWEEPS:
        from rtrrl import sweeps

        return getattr(sweeps, name)
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
    "evaluate_checkpoint",
    "get_backend",
    "resume",
    "resume_sweep",
    "sweep",
    "train",
    "use",
]
