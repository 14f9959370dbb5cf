"""Speed machinery of the ``jax`` backend that is not part of the spec: packed Adam moments.

Re-exported by :mod:`rtrrl.backends.jax` (import from there). This module sits below it and
imports nothing from it, so the two never form an import cycle.

A loop that runs many steps (the fused training epoch, :mod:`rtrrl.fused`) may carry each
optimizer group's Adam moments as one flat vector instead of one array per parameter: Adam
and the group's norm are then one pass per group, fewer and larger kernels. The arithmetic is
the same operations; the norm's sum runs in another order and XLA fuses differently, so the
last bits may differ from a step on the canonical layout.
:func:`rtrrl.backends.jax.apply_update` reads and writes either layout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import rtrrl_spec
from rtrrl_spec import Config

__all__ = ["flat", "is_packed", "pack_moments", "split", "unpack_moments"]


def flat(arrays: Sequence[jax.Array]) -> jax.Array:
    """The arrays raveled and concatenated (one group's flat vector)."""
    return jnp.concatenate([jnp.reshape(a, (-1,)) for a in arrays])


def split(vector: jax.Array, shapes: Sequence[tuple[int, ...]]) -> list[jax.Array]:
    """The inverse of :func:`flat`: consecutive slices of ``vector`` in the given shapes."""
    parts, offset = [], 0
    for shape in shapes:
        size = int(np.prod(shape, dtype=np.int64))
        parts.append(jnp.reshape(vector[offset : offset + size], shape))
        offset += size
    return parts


def is_packed(agent: Mapping[str, jax.Array], group: str) -> bool:
    """Whether ``agent`` holds ``group``'s moments packed (:func:`pack_moments`)."""
    return f"mu.{group}" in agent


def pack_moments(config: Config, agent: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """The agent with each group's Adam moments as one flat vector: ``mu_<p>`` / ``nu_<p>``
    for the group's parameters replaced by ``mu.<group>`` / ``nu.<group>`` (concatenated
    flat, in ``rtrrl_spec.optimizer_groups`` order)."""
    packed = dict(agent)
    for group, names in rtrrl_spec.optimizer_groups(config):
        for moment in ("mu", "nu"):
            packed[f"{moment}.{group}"] = flat([packed.pop(f"{moment}_{k}") for k in names])
    return packed


def unpack_moments(config: Config, agent: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """The inverse of :func:`pack_moments`: the canonical layout again."""
    unpacked = dict(agent)
    for group, names in rtrrl_spec.optimizer_groups(config):
        for moment in ("mu", "nu"):
            parts = split(unpacked.pop(f"{moment}.{group}"), [agent[k].shape for k in names])
            unpacked.update({f"{moment}_{k}": p for k, p in zip(names, parts, strict=True)})
    return unpacked
