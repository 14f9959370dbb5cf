"""The built-in backends, as data: one table read by the registry and by ``noxfile.py``.

This module imports nothing, so ``noxfile.py`` loads it from the source tree by path (nox runs
before rtrrl is installed anywhere).
"""

#: Built-in backends: name -> ("module:Class", pip extra that provides the framework).
#: Adding a backend is one line here; ``None`` means it needs nothing beyond rtrrl itself.
BUILTIN_BACKENDS: dict[str, tuple[str, str | None]] = {
    "numpy": ("rtrrl.backends.numpy:NumpyBackend", None),
    "jax": ("rtrrl.backends.jax:JaxBackend", "jax"),
    "torch": ("rtrrl.backends.torch:TorchBackend", "torch"),
    "keras-jax": ("rtrrl.backends.keras:KerasJaxBackend", "keras"),
    "keras-torch": ("rtrrl.backends.keras:KerasTorchBackend", "keras,torch"),
}
