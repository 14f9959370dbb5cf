"""How the Keras backends run their ``keras.ops`` code compiled: ``jax.jit`` under Keras on JAX.

Nothing here is maths: these wrappers take the functions of :mod:`rtrrl.backends.keras` (the
spec's functions, translated) as arguments and only decide what is static and what is traced.
This module never imports :mod:`rtrrl.backends.keras` (which imports it), and it imports JAX
only when a wrapper is first called, so loading it costs nothing under Keras on PyTorch.

- :func:`compile_step`: the whole step, with the config split as every compiling backend splits
  it (:func:`rtrrl_spec.structure_of` static, :func:`rtrrl_spec.numbers_of` traced), so configs
  that differ only in numbers share one compilation.
- :func:`jit_static`: any one of the spec's functions, for the per-function conformance checks.
- :func:`tensor_numbers`: a config's numbers as tensors, cached, so that an eager step does not
  convert them again every call.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import keras
from keras import ops

from rtrrl_spec import Config
from rtrrl_spec.config import numbers_of, structure_of

__all__ = ["compile_step", "jit_static", "tensor_numbers"]

StepFn = Callable[..., tuple[dict[str, Any], Any, dict[str, Any]]]


def compile_step(step: StepFn, numbers: Callable[[Config, str], Mapping[str, Any]]) -> StepFn:
    """``step(config, agent, obs, reward, done, noise)`` under ``jax.jit``.

    ``step`` must accept ``numbers=`` (the config's numbers as tensors) and then read only the
    structure from its ``config``; ``numbers(config, dtype)`` provides them. Compiled once per
    config structure (and array shapes and dtypes).
    """

    @functools.cache
    def jitted() -> StepFn:
        import jax  # here, not at import: only Keras on JAX compiles this way

        def core(structure: Config, values: Mapping[str, Any], *arrays: Any) -> Any:
            return step(structure, *arrays, numbers=values)

        return jax.jit(core, static_argnums=0)

    def step_compiled(
        config: Config, agent: Mapping[str, Any], obs: Any, reward: Any, done: Any, noise: Any
    ) -> tuple[dict[str, Any], Any, dict[str, Any]]:
        dtype = keras.backend.standardize_dtype(agent["W_A"].dtype)
        return jitted()(
            structure_of(config), numbers(config, dtype), dict(agent), obs, reward, done, noise
        )

    step_compiled.__doc__ = (
        f":func:`{step.__module__}.{step.__name__}` under ``jax.jit`` (Keras on JAX only): "
        "the config's structure static, its numbers traced."
    )
    return step_compiled


def _is_static(value: Any) -> bool:
    # Hashable values that select code or shapes (a Config, an int used as a slice bound,
    # None for "no clipping"), and plain Python numbers, whose eager meaning (a weak scalar
    # rounded to the arrays' dtype) tracing would change.
    return value is None or isinstance(value, bool | int | float | str | Config)


def jit_static(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` under ``jax.jit``: arrays (and dicts, tuples, NamedTuples of arrays) are traced;
    a :class:`~rtrrl_spec.Config`, ``None`` and Python numbers are static (part of the cache
    key), so the compiled function computes what ``fn`` computes eagerly on the same arguments.
    """
    compiled: dict[tuple[tuple[int, ...], tuple[str, ...]], Callable[..., Any]] = {}

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        positions = tuple(i for i, a in enumerate(args) if _is_static(a))
        names = tuple(sorted(k for k, v in kwargs.items() if _is_static(v)))
        jitted = compiled.get((positions, names))
        if jitted is None:
            import jax

            jitted = jax.jit(fn, static_argnums=positions, static_argnames=names)
            compiled[positions, names] = jitted
        return jitted(*args, **kwargs)

    return call


_NUMBERS: dict[tuple[Config, str], dict[str, Any]] = {}
_NUMBERS_KEPT = 256


def _traced(tensor: Any) -> bool:
    # Only JAX traces; a tensor made inside a trace is a tracer that must not outlive it.
    if keras.backend.backend() != "jax":
        return False
    import jax

    return isinstance(tensor, jax.core.Tracer)


def tensor_numbers(config: Config, dtype: str) -> dict[str, Any]:
    """:func:`rtrrl_spec.numbers_of` as tensors of ``dtype``, cached per ``(config, dtype)``.

    Converting them costs about as much as a whole eager step under Keras on PyTorch, hence
    the cache; tensors made while JAX traces are returned but not kept. Callers must not
    modify the dict.
    """
    found = _NUMBERS.get((config, dtype))
    if found is None:
        found = {
            k: ops.convert_to_tensor(v, dtype=dtype) for k, v in numbers_of(config, dtype).items()
        }
        if not _traced(found["dt"]):
            if len(_NUMBERS) >= _NUMBERS_KEPT:
                _NUMBERS.clear()
            _NUMBERS[config, dtype] = found
    return found
