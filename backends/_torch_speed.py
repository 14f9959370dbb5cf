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
- :class:`OnePassRTRL` (the eager RTRL step from :data:`ONE_PASS_RTRL_MIN_BATCH`
  environments on): the new trace and its projections from one
  batched product over the old ``(B, N, N, Z)`` trace instead of two passes.
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

__all__ = ["ROW_SUMS_MIN_BATCH", "CompiledSteps", "OnePassRTRL", "PackedUpdate", "row_batch_mean"]

#: Batch size from which the compiled RFLO step on one CPU thread uses :func:`row_batch_mean`
#: (``TorchBackend.row_sums_min_batch``): below it the traces fit in the cache and the fused
#: scatter-add measured no faster than ``mean(0)`` (benchmarks/torch_row_sums.py).
ROW_SUMS_MIN_BATCH = 64

#: Batch size from which the eager RTRL step uses :class:`OnePassRTRL`
#: (``TorchBackend.one_pass_rtrl_min_batch``; benchmarks/torch_buffers.py --jacobian rtrl).
ONE_PASS_RTRL_MIN_BATCH = 32

#: The packed rows of :class:`PackedUpdate`: parameters, first and second moments.
PREFIXES = ("", "mu_", "nu_")

StepFn = Callable[..., tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor]]]
#: The maths' bias corrections: ``(count, log_b1, log_b2, dtype) -> [1 − β1ᵗ, 1 − β2ᵗ]``.
BiasCorrection = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.dtype], torch.Tensor]


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


def uses_one_pass_rtrl(batch: int, min_batch: int | None) -> bool:
    """Whether the eager RTRL step of ``batch`` environments uses :class:`OnePassRTRL`."""
    return min_batch is not None and batch >= min_batch


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


#: The most counts a table of Adam's bias corrections holds (:func:`bias_correction_table`).
BIAS_TABLE_MAX = 1 << 18


def bias_correction_table(
    bias_correction: BiasCorrection,
    log_b1: torch.Tensor,
    log_b2: torch.Tensor,
    dtype: torch.dtype,
) -> torch.Tensor | None:
    """``[1 − β1ᵗ, 1 − β2ᵗ]`` for ``t = 0, 1, ..., T − 1``: a ``(2, T)`` tensor of ``dtype``,
    made by the maths' ``bias_correction(t, log_b1, log_b2, dtype)``.

    Both only grow towards 1, and ``T`` is a count from which both are 1 in ``dtype``, so a
    count clamped at ``T − 1`` finds its own values. ``None`` when that ``T`` would pass
    :data:`BIAS_TABLE_MAX` (a ``β`` very close to 1), or when some ``β`` is not below 1.
    """
    slowest = float(torch.maximum(log_b1, log_b2))
    if not slowest < 0:
        return None
    # 1 − βᵗ rounds to 1 in dtype once βᵗ is below half the spacing of numbers just under 1.
    below = torch.finfo(dtype).eps / 4
    length = 2 if slowest == -math.inf else math.ceil(math.log(below) / slowest) + 2
    if length > BIAS_TABLE_MAX:
        return None
    t = torch.arange(length, dtype=torch.int64, device=log_b1.device)
    table = bias_correction(t, log_b1, log_b2, dtype)
    if not bool((table[:, -1] == 1).all()):
        return None
    return table


class PackedUpdate:
    """``apply_update`` for one (config, dtype, device) with all parameters in one vector.

    At small B the eager step costs about one dispatch per tensor op, and the spec's update
    makes about a dozen per parameter. Adam is elementwise, so the maths' own ``adam_step``
    runs once on every parameter packed into one vector (each entry's learning rate and bias
    corrections those of its group); the bias corrections are looked up by count in
    :func:`bias_correction_table`; each group's global norm is a dot product of its slice of
    the packed direction, and the clip one product with each entry's factor;
    ``τ ≥ tau_min`` is one maximum with a floor that is ``−inf`` outside ``τ``. The updates
    (new − old) come out of the same vector.

    The parameters and moments it returns are views into one packed tensor. When the next
    call's agent holds exactly those tensor objects (the usual ``agent = step(...)`` loop),
    the packed rows (and the stacked counts) are used as they are instead of being
    concatenated again; views share storage, so an in-place change to a handed-out tensor is
    seen there too.
    """

    def __init__(
        self,
        config: Config,
        like: torch.Tensor,
        numbers: Mapping[str, torch.Tensor],
        adam_step: Callable[..., Any],
        bias_correction: BiasCorrection,
    ) -> None:
        self._adam, self._bias = adam_step, bias_correction
        self._logs = (numbers["log_b1"], numbers["log_b2"])
        dtype, device = like.dtype, like.device
        self._dtype = dtype
        shapes = {k: spec.shape for k, spec in rtrrl_spec.layout(config, 1).items()}
        self.names = rtrrl_spec.params_of(config)
        self.shapes = [shapes[k] for k in self.names]
        self.sizes = [math.prod(shape) for shape in self.shapes]
        self.groups = [group for group, _ in rtrrl_spec.optimizer_groups(config)]
        self._group_sizes = [
            sum(self.sizes[self.names.index(k)] for k in names)
            for _, names in rtrrl_spec.optimizer_groups(config)
        ]
        total = sum(self._group_sizes)
        group_of = torch.cat(
            [torch.full((size,), g) for g, size in enumerate(self._group_sizes)]
        ).to(device)
        self._group_of = group_of if len(self.groups) > 1 else None
        lrs = torch.stack([numbers[f"lr_{g}"] for g in self.groups])
        self._lr = lrs[0] if self._group_of is None else lrs.index_select(0, group_of)
        self._max_norm = numbers["clip_norm"] if config.clip_norm is not None else None
        self._table = bias_correction_table(bias_correction, *self._logs, dtype)
        self._floor = None
        if "tau" in self.names:  # apply_update's τ ≥ tau_min, as one maximum
            at = sum(self.sizes[: self.names.index("tau")])
            floor = torch.full((total,), -math.inf, dtype=dtype, device=device)
            floor[at : at + shapes["tau"][0]] = numbers["tau_min"]
            self._floor = floor
        self._keys = tuple(f"{prefix}{k}" for prefix in PREFIXES for k in self.names)
        self._keys += tuple(f"count_{g}" for g in self.groups)
        # (packed rows: parameters, moments, counts; the tensors handed out as views of them)
        self._memo: tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]] | None = None

    def _packed(self, agent: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Parameters, first and second moments as packed rows, and the counts (one per
        group, stacked when there are several)."""
        memo = self._memo  # read once: another thread may replace it
        if memo is not None and all(
            agent[k] is t for k, t in zip(self._keys, memo[1], strict=True)
        ):
            return memo[0]
        rows = tuple(self._flat([agent[prefix + k] for k in self.names]) for prefix in PREFIXES)
        counts = [agent[f"count_{g}"] for g in self.groups]
        return (*rows, torch.stack(counts) if len(counts) > 1 else counts[0])

    @staticmethod
    def _flat(arrays: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([a if a.dim() == 1 else a.reshape(-1) for a in arrays])

    def _clip(self, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``clip_by_global_norm`` of every group at once: (clipped ``d``, the norms)."""
        if self._group_of is None:
            norms = torch.sqrt(torch.dot(d, d))
        else:
            parts = d.split_with_sizes(self._group_sizes)
            norms = torch.sqrt(torch.stack([torch.dot(part, part) for part in parts]))
        if self._max_norm is None:
            return d, norms
        factor = self._max_norm / torch.maximum(norms, self._max_norm)
        if self._group_of is not None:
            factor = factor.index_select(0, self._group_of)
        return d * factor, norms

    def _bias_corrections(self, count: torch.Tensor) -> torch.Tensor:
        """``[1 − β1ᵗ, 1 − β2ᵗ]`` for each entry, by its group's count: looked up in the
        table, or formed when there is none."""
        table = self._table
        if table is None:
            bc = self._bias(count, *self._logs, self._dtype)
        else:
            bc = table.index_select(1, count.clamp(max=table.shape[1] - 1).view(-1))
        return bc if self._group_of is None else bc.index_select(1, self._group_of)

    def __call__(
        self,
        config: Config,
        agent: Mapping[str, torch.Tensor],
        direction: Mapping[str, torch.Tensor],
        *,
        numbers: Mapping[str, torch.Tensor],
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        n = numbers
        p, mu, nu, counts = self._packed(agent)
        d, norms = self._clip(self._flat([direction[k] for k in self.names]))
        several = self._group_of is not None
        new_p, new_mu, new_nu, counts = self._adam(
            {"p": p}, {"p": d}, {"p": mu}, {"p": nu}, counts, self._lr,
            n["b1"], n["b2"], n["eps"], omb1=n["omb1"], omb2=n["omb2"],
            log_b1=n["log_b1"], log_b2=n["log_b2"],
            bias_corrections=self._bias_corrections,
        )  # fmt: skip
        new_p = new_p["p"]
        if self._floor is not None:
            new_p = torch.maximum(new_p, self._floor)
        stacked = torch.stack([new_p, new_mu["p"], new_nu["p"], new_p - p])
        changed, info = {}, {}
        parts = stacked.split_with_sizes(self.sizes, 1)
        for k, shape, part in zip(self.names, self.shapes, parts, strict=True):
            rows = part.unbind(0) if len(shape) == 1 else part.view(4, *shape).unbind(0)
            changed[k], changed[f"mu_{k}"], changed[f"nu_{k}"], info[f"update.{k}"] = rows
        per_group = zip(
            self.groups,
            counts.unbind(0) if several else (counts,),
            norms.unbind(0) if several else (norms,),
            strict=True,
        )
        for group, count, norm in per_group:
            changed[f"count_{group}"], info[f"grad_norm_{group}"] = count, norm
        self._memo = (
            (*stacked.unbind(0)[:3], counts),
            tuple(changed[k] for k in self._keys),
        )
        return changed, info


class OnePassRTRL:
    """``_rtrl_and_project`` (RTRL's trace update, then the projections ``J'ᵀ g`` of the
    step's signals) with one read of the old trace instead of a read of it and one of ``J'``.

    ``J' = M J + diag(local)``, so ``Σ_i g_i J'[i] = (gᵀM) J + g ⊙ local``: stacking the
    signals' rows ``gᵀM`` under ``M`` gives ``J'`` and the projections from one batched
    product over ``J`` (``(B, N + S, N·Z)``). The new trace is returned as the first ``N``
    rows of that product, a view (not contiguous). The association differs from the maths'
    ``gᵀ (M J)``: the same values to rounding.

    ``donate=True``: the caller gives up the agent it passes (it will not read that agent's
    tensors after the next step), as a training loop does. The product's buffer, tens of
    megabytes at large batch sizes, is then reused: the one behind a donated trace, if that
    trace is the one this object returned last, holds the product of the step after. A fresh
    buffer of that size is page-faulted in by the allocator every step (see
    ``benchmarks/torch_alone.py``); a reused one is not. Without donation every product is a
    fresh tensor. One thread per object when donating.
    """

    def __init__(self, rtrl_terms: Callable[..., tuple[torch.Tensor, ...]]) -> None:
        self._terms = rtrl_terms
        # The product buffer behind the trace returned last, and a donated one free for the
        # next product; each keyed by the product's shape, dtype and device.
        self._returned: dict[tuple[Any, ...], torch.Tensor] = {}
        self._free: dict[tuple[Any, ...], torch.Tensor] = {}

    def _product_buffer(self, rows: torch.Tensor, J_W: torch.Tensor) -> torch.Tensor | None:
        """A free buffer for this step's product, and ``J_W``'s freed for the next step's;
        ``None`` when none is free yet (the product then allocates one)."""
        B, N, _, Z = J_W.shape
        key = (B, rows.shape[1], N * Z, J_W.dtype, J_W.device)
        out = self._free.pop(key, None)
        returned = self._returned.get(key)
        if returned is not None and returned.data_ptr() == J_W.data_ptr():
            self._free[key] = returned  # read by this step's product, free after it
        return out

    def _keep_product(self, out_W: torch.Tensor) -> None:
        self._returned[(*out_W.shape, out_W.dtype, out_W.device)] = out_W

    def __call__(
        self,
        J_W: torch.Tensor,
        J_tau: torch.Tensor,
        W: torch.Tensor,
        tau: torch.Tensor,
        h: torch.Tensor,
        s: Any,
        dt: torch.Tensor | float,
        input_dim: int,
        signals: list[torch.Tensor],
        *,
        keep: torch.Tensor | None = None,
        donate: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, torch.Tensor]]]:
        B, N, _, Z = J_W.shape
        M, local_W, local_tau = self._terms(W, tau, h, s, dt, input_dim, keep=keep)
        g = torch.stack(signals, 1)  # (B, S, N)
        rows = torch.cat([M, torch.bmm(g, M)], 1)  # (B, N + S, N)
        buffer = self._product_buffer(rows, J_W) if donate else None
        out_W = torch.bmm(rows, J_W.reshape(B, N, N * Z), out=buffer)
        if donate:
            self._keep_product(out_W)
        out_tau = torch.bmm(rows, J_tau)
        J_W_next, J_tau_next = out_W[:, :N].view(B, N, N, Z), out_tau[:, :N]
        # In place into the fresh product only (nothing the caller owns).
        J_W_next.diagonal(0, 1, 2).add_(local_W.transpose(1, 2))
        J_tau_next.diagonal(0, 1, 2).add_(local_tau)
        grad_W = torch.addcmul(out_W[:, N:].view(B, -1, N, Z), g[:, :, :, None], local_W[:, None])
        grad_tau = torch.addcmul(out_tau[:, N:], g, local_tau[:, None])
        grads = [{"W": grad_W[:, k], "tau": grad_tau[:, k]} for k in range(len(signals))]
        return J_W_next, J_tau_next, grads
