"""What makes the torch step faster without changing what it computes.

Installed as ``rtrrl.backends._torch_speed``; used by :mod:`rtrrl.backends.torch`, which hands
its maths (``step``, ``clip_by_global_norm``, ``adam_step``) to the classes here, so this module
never imports it. Nothing here is a formula of the spec: it decides how the maths is run.
Each piece is kept because a benchmark showed it pays (docs/backends/torch.md has the
figures, benchmarks/results/step_speed.md the runs).

- :class:`PackedUpdate` (the eager step): ``apply_update`` with all parameters packed into one
  vector, so that Adam's dozen tensor ops run once rather than once per parameter.
- :class:`CompiledSteps` (``TorchBackend(compile=True)``): one ``torch.compile``-d ``step`` per
  config structure (:func:`rtrrl_spec.structure_of`), dtype, device and batch-mean form. The
  config's numbers are graph inputs, so configs that differ only in numbers share a
  compilation.
- :func:`row_batch_mean` (the compiled RFLO step on one CPU thread, from
  :data:`ROW_SUMS_MIN_BATCH` environments on): the batch mean as an ``index_add_``, which
  inductor fuses into the loop that computes the traces.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable, Mapping
from typing import Any

import torch

import rtrrl_spec
from rtrrl_spec import Config

__all__ = ["ROW_SUMS_MIN_BATCH", "CompiledSteps", "PackedUpdate", "row_batch_mean"]

#: Batch size from which the compiled RFLO step on one CPU thread uses :func:`row_batch_mean`
#: (``TorchBackend.row_sums_min_batch``): below it the traces fit in the cache and the fused
#: scatter-add measured no faster than ``mean(0)`` (benchmarks/torch_row_sums.py).
ROW_SUMS_MIN_BATCH = 64

#: The packed rows of :class:`PackedUpdate`: parameters, first and second moments.
PREFIXES = ("", "mu_", "nu_")

StepFn = Callable[..., tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor]]]


def row_batch_mean(per_env: torch.Tensor) -> torch.Tensor:
    """``per_env.mean(0)`` as an ``index_add_`` of every environment into one slot.

    Inductor lowers it to a scatter-add that walks ``per_env`` in memory order, over the same
    loop as the pointwise ops that compute it, and fuses the two; ``mean(0)`` becomes a loop
    of its own. Only for one thread: in parallel the adds would be atomic, in an order (and
    so with last bits) that changes from call to call.
    """
    B = per_env.shape[0]
    into_one = torch.zeros(B, dtype=torch.long, device=per_env.device)
    total = per_env.new_zeros(1, *per_env.shape[1:]).index_add_(0, into_one, per_env)
    return total[0] / B


def uses_row_sums(config: Config, like: torch.Tensor, batch: int, min_batch: int | None) -> bool:
    """Whether the compiled step for this call takes its batch means by :func:`row_batch_mean`.

    Only RFLO's CT-RNN traces are large enough to gain, only on the CPU, and only on one
    thread. Inductor fixes a kernel's thread count when it compiles it, so the thread count
    at the call decides, and is part of the compiled step's key.
    """
    return (
        min_batch is not None
        and batch >= min_batch
        and like.device.type == "cpu"
        and torch.get_num_threads() == 1
        and config.body == "ctrnn"
        and config.trains_body
        and config.jacobian == "rflo"
    )


def _fresh_code(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A copy of ``fn`` with its own code object.

    Dynamo keys its compile cache (and its recompile limit, 8 by default) on the code object,
    which every closure made by :meth:`CompiledSteps._compile` shares; past the limit it
    silently runs eager. One code object per compiled step gives each a cache of its own.
    """
    code = fn.__code__.replace()
    if code is fn.__code__:  # replace() without changes may return the same object
        code = fn.__code__.replace(co_name=fn.__code__.co_name + "_")
    return types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


class CompiledSteps:
    """``torch.compile``-d versions of ``step`` (the backend's module-level step), made on
    first use and kept.

    ``step(config, agent, obs, reward, done, noise, *, numbers, batch_mean)`` must read every
    number of the config from ``numbers``: it is compiled for ``structure_of(config)``, and
    ``numbers`` are tensors, graph inputs.
    """

    def __init__(self, step: StepFn) -> None:
        self._step = step
        self._cache: dict[tuple[Any, ...], StepFn] = {}

    def get(
        self, config: Config, like: torch.Tensor, batch: int, row_sums_min_batch: int | None
    ) -> StepFn:
        """The compiled step for an agent like ``like`` (its ``W_A``) of ``batch``
        environments: ``fn(agent, obs, reward, done, noise, numbers)``."""
        row_sums = uses_row_sums(config, like, batch, row_sums_min_batch)
        structure = rtrrl_spec.structure_of(config)
        key = (structure, like.dtype, like.device, row_sums)
        fn = self._cache.get(key)
        if fn is None:
            fn = self._cache[key] = self._compile(structure, row_sums)
        return fn

    def made(self) -> list[tuple[Any, ...]]:
        """(structure, dtype, device, row sums) of every compiled step made so far."""
        return list(self._cache)

    def _compile(self, structure: Config, row_sums: bool) -> StepFn:
        step = self._step
        options = {"batch_mean": row_batch_mean} if row_sums else {}

        def compiled_step(
            agent: Mapping[str, torch.Tensor],
            obs: torch.Tensor,
            reward: torch.Tensor,
            done: torch.Tensor,
            noise: torch.Tensor,
            numbers: Mapping[str, torch.Tensor],
        ) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor]]:
            return step(structure, agent, obs, reward, done, noise, numbers=numbers, **options)

        # inplace_buffers off: inductor (torch 2.13) let a frozen CT-RNN's h' take, in place,
        # the slot of h inside the buffer of ζ = [x, h, 1], then reused that whole buffer
        # while h' was still an output (test_compiled_frozen_ctrnn_keeps_its_state).
        return torch.compile(
            _fresh_code(compiled_step),
            dynamic=False,
            fullgraph=True,
            options={"inplace_buffers": False},
        )


class PackedUpdate:
    """``apply_update`` for one (config, dtype, device) with all parameters in one vector.

    At small B the eager step costs about one dispatch per tensor op, and the spec's update
    makes about a dozen per parameter. Adam is elementwise, so the maths' own ``adam_step``
    runs once on every parameter packed into one vector (each entry's group picks its count's
    bias corrections and its learning rate); ``clip_by_global_norm`` runs on each group's
    slice of the packed direction; ``τ ≥ tau_min`` is one maximum with a floor that is
    ``−inf`` outside ``τ``. The updates (new − old) come out of the same vector.

    The parameters and moments it returns are views into one packed tensor. When the next
    call's agent holds exactly those tensor objects (the usual ``agent = step(...)`` loop),
    the packed rows are used as they are instead of being concatenated again; views share
    storage, so an in-place change to a handed-out tensor is seen there too.
    """

    def __init__(
        self,
        config: Config,
        like: torch.Tensor,
        numbers: Mapping[str, torch.Tensor],
        clip_by_global_norm: Callable[..., Any],
        adam_step: Callable[..., Any],
    ) -> None:
        self._clip, self._adam = clip_by_global_norm, adam_step
        dtype, device = like.dtype, like.device
        shapes = {k: spec.shape for k, spec in rtrrl_spec.layout(config, 1).items()}
        self.names = rtrrl_spec.params_of(config)
        self.shapes = [shapes[k] for k in self.names]
        self.sizes = [math.prod(shape) for shape in self.shapes]
        self.groups: list[tuple[str, slice]] = []
        start = 0
        for group, names in rtrrl_spec.optimizer_groups(config):
            size = sum(self.sizes[self.names.index(k)] for k in names)
            self.groups.append((group, slice(start, start + size)))
            start += size
        group_of = torch.cat(
            [torch.full((sl.stop - sl.start,), g) for g, (_, sl) in enumerate(self.groups)]
        ).to(device)
        several = len(self.groups) > 1
        self._group_of = group_of if several else None
        lrs = torch.stack([numbers[f"lr_{g}"] for g, _ in self.groups])
        self._lr = lrs.index_select(0, group_of) if several else lrs[0]
        self._floor = None
        if "tau" in self.names:  # apply_update's τ ≥ tau_min, as one maximum
            at = sum(self.sizes[: self.names.index("tau")])
            floor = torch.full((start,), -math.inf, dtype=dtype, device=device)
            floor[at : at + shapes["tau"][0]] = numbers["tau_min"]
            self._floor = floor
        self._keys = tuple(f"{prefix}{k}" for prefix in PREFIXES for k in self.names)
        self._memo: tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]] | None = None

    def _packed(self, agent: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        memo = self._memo  # read once: another thread may replace it
        if memo is not None and all(
            agent[k] is t for k, t in zip(self._keys, memo[1], strict=True)
        ):
            return memo[0]
        return tuple(self._flat([agent[prefix + k] for k in self.names]) for prefix in PREFIXES)

    @staticmethod
    def _flat(arrays: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([a if a.dim() == 1 else a.reshape(-1) for a in arrays])

    def __call__(
        self,
        config: Config,
        agent: Mapping[str, torch.Tensor],
        direction: Mapping[str, torch.Tensor],
        *,
        numbers: Mapping[str, torch.Tensor],
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        n = numbers
        p, mu, nu = self._packed(agent)
        d = self._flat([direction[k] for k in self.names])
        max_norm = n["clip_norm"] if config.clip_norm is not None else None
        info, clipped = {}, []
        for group, sl in self.groups:
            part, info[f"grad_norm_{group}"] = self._clip({"p": d[sl]}, max_norm)
            clipped.append(part["p"])
        if len(clipped) > 1:
            counts = torch.stack([agent[f"count_{g}"] for g, _ in self.groups])
            d = torch.cat(clipped)
        else:
            counts, d = agent[f"count_{self.groups[0][0]}"], clipped[0]
        new_p, new_mu, new_nu, counts = self._adam(
            {"p": p}, {"p": d}, {"p": mu}, {"p": nu}, counts, self._lr,
            n["b1"], n["b2"], n["eps"], omb1=n["omb1"], omb2=n["omb2"],
            log_b1=n["log_b1"], log_b2=n["log_b2"], group_of=self._group_of,
        )  # fmt: skip
        new_p = new_p["p"]
        if self._floor is not None:
            new_p = torch.maximum(new_p, self._floor)
        stacked = torch.stack([new_p, new_mu["p"], new_nu["p"], new_p - p])
        changed = {}
        parts = stacked.split_with_sizes(self.sizes, 1)
        for k, shape, part in zip(self.names, self.shapes, parts, strict=True):
            rows = part.unbind(0) if len(shape) == 1 else part.view(4, *shape).unbind(0)
            changed[k], changed[f"mu_{k}"], changed[f"nu_{k}"], info[f"update.{k}"] = rows
        self._memo = (stacked.unbind(0)[:3], tuple(changed[k] for k in self._keys))
        per_group = counts.unbind(0) if counts.dim() else (counts,)
        for (group, _), count in zip(self.groups, per_group, strict=True):
            changed[f"count_{group}"] = count
        return changed, info
