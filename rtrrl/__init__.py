"""rtrrl: Real-Time Recurrent Reinforcement Learning on NumPy, JAX, PyTorch and Keras.

Importing this package is cheap: it imports no framework and no backend. Backends load when
:func:`use` (or :func:`current`) first needs them::

    import rtrrl

    be = rtrrl.use("numpy")          # or "jax", "torch", "keras-jax", "pkg.mod:Backend"
    with rtrrl.use("numpy") as be:   # the previous backend comes back on exit
        ...
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
    "use",
]
