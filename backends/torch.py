"""The ``torch`` backend: the RTRRL step of :mod:`rtrrl_spec` as batched PyTorch tensor math.

Installed as ``rtrrl.backends.torch``. Select it with ``rtrrl.use("torch")``; see
``docs/backends/torch.md`` for devices, dtypes, the optimizer and ``torch.compile``.

The module reads like the reference, function for function: each function of
``rtrrl_spec.STEP_FUNCTIONS`` is defined here under its name, in that order, with the
reference's positional parameters and return structure, on batch-first tensors (``CTRNNStep``,
``LRUStep`` and ``PolicyStep`` are the reference's own NamedTuples). :func:`step` is
``rtrrl_spec.agent.step_unchecked`` with its numbered stages. What only makes it faster (the
eager step's packed update, the compiled variant and its fused batch means) lives in
:mod:`rtrrl.backends._torch_speed` and calls these functions; it changes no formula.

- An agent is a ``dict[str, torch.Tensor]`` in the canonical layout of
  :mod:`rtrrl_spec.layout`, on one device, in float32 or float64.
- Every gradient is the reference's explicit formula (eligibility traces, RFLO / RTRL
  Jacobian traces, the LRU's exact sensitivities), never autograd; the backend runs the step
  under ``torch.inference_mode()``. The LRU's complex numbers are (re, im) pairs of real
  tensors, as in :mod:`rtrrl_spec.lru`, so a float32 agent stays float32.
- The step is pure: it never writes into a tensor it was given. Arrays it does not change
  (``B_A``, ``B_C``, a frozen body's parameters) are returned as the same tensor objects.
- The config's numbers are those of :func:`rtrrl_spec.numbers_of`, as 0-d tensors of the
  agent's dtype (:func:`config_numbers`): an op between a tensor and a Python float wraps and
  casts the float on every call, which at small B costs as much as the op itself.
- :meth:`TorchBackend.step` (and ``step_eager``, ``step_compiled``) refuses what
  ``rtrrl_spec.step`` refuses, with its messages, unless called with ``check=False``
  (:meth:`~rtrrl.backends.base.BackendBase.check_step`: the agent's shapes and dtypes, and
  the four inputs copied to NumPy, a sync on a GPU). Checked by default, because a direct
  caller may pass anything and a NaN observation would otherwise turn the whole agent into
  NaN without a word. The module-level :func:`step` is the unchecked core. The agent's values
  are not checked per step (a copy of the whole agent);
  ``rtrrl_spec.validate_agent(config, backend.to_numpy(agent))`` checks them on demand.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import rtrrl_spec
from rtrrl.backends import _torch_speed
from rtrrl.backends.base import BackendBase, map_tree
from rtrrl_spec import Config
from rtrrl_spec.ctrnn import CTRNNStep
from rtrrl_spec.heads import PolicyStep
from rtrrl_spec.lru import LRU_SENSITIVITIES, LRUStep

__all__ = [
    "DEVICE_ENV_VAR",
    "CompiledTorchBackend",
    "CudaTorchBackend",
    "TorchBackend",
    "config_numbers",
    *rtrrl_spec.STEP_FUNCTIONS,
]

#: Environment variable naming the default device of ``TorchBackend()`` (e.g. ``cuda``); the
#: registry creates backends with no arguments, so this is how ``--backend torch`` reaches a GPU.
DEVICE_ENV_VAR = "RTRRL_TORCH_DEVICE"

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_NUMPY_TO_TORCH = {
    np.dtype("float32"): torch.float32,
    np.dtype("float64"): torch.float64,
    np.dtype("int32"): torch.int32,
    np.dtype("int64"): torch.int64,
    np.dtype("bool"): torch.bool,
}
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)

Tensor = torch.Tensor
Agent = dict[str, Tensor]
#: A number of the config: a Python float, or a 0-d tensor (as :func:`config_numbers` gives).
Number = float | Tensor


@functools.lru_cache(maxsize=256)
def config_numbers(config: Config, dtype: torch.dtype, device: torch.device) -> dict[str, Tensor]:
    """:func:`rtrrl_spec.numbers_of` as 0-d tensors (the bounds ``(D,)``) on ``device``.

    Shared between calls: never write into them.
    """
    name = str(dtype).removeprefix("torch.")
    # Normal tensors, even when first asked for inside inference mode, so that the step can
    # also be called outside it.
    with torch.inference_mode(False):
        return {
            k: torch.as_tensor(v, device=device)
            for k, v in rtrrl_spec.numbers_of(config, name).items()
        }


def _number(x: Number, like: Tensor) -> Tensor:
    """``x`` as a tensor: a Python float becomes a 0-d tensor of ``like``'s dtype, as NumPy
    rounds a Python float that meets a float32 array."""
    if isinstance(x, Tensor):
        return x
    return torch.tensor(x, dtype=like.dtype, device=like.device)


def _constant(value: float, like: Tensor) -> Tensor | float:
    """``value`` for an op with ``like``: a cached 0-d tensor of its dtype and device.

    A Python number in an op is wrapped into a tensor and cast on every call, which at small
    B costs about twice the op (``1.0 - x`` against ``one - x``). Compiled, the number itself.
    """
    if torch.compiler.is_compiling():
        return value
    return _cached_constant(value, like.dtype, like.device)


@functools.lru_cache(maxsize=1024)
def _cached_constant(value: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    with torch.inference_mode(False):
        return torch.tensor(value, dtype=dtype, device=device)


def _eye(n: int, like: Tensor) -> Tensor:
    """The identity of size ``n`` (also the one-hot rows of ``n`` actions), made once."""
    if torch.compiler.is_compiling():
        return torch.eye(n, dtype=like.dtype, device=like.device)
    return _cached_eye(n, like.dtype, like.device)


@functools.lru_cache(maxsize=64)
def _cached_eye(n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    with torch.inference_mode(False):
        return torch.eye(n, dtype=dtype, device=device)


def _ones_column(B: int, like: Tensor) -> Tensor:
    """A ``(B, 1)`` column of ones, made once per shape (only ever read: ``cat`` copies it)."""
    if torch.compiler.is_compiling():
        return like.new_ones(B, 1)
    return _cached_ones_column(B, like.dtype, like.device)


@functools.lru_cache(maxsize=64)
def _cached_ones_column(B: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    with torch.inference_mode(False):
        return torch.ones(B, 1, dtype=dtype, device=device)


def _keep(done: Tensor, like: Tensor) -> Tensor:
    """``1 − done`` in ``like``'s dtype: eager, one ``where`` between cached constants rather
    than a ``logical_not`` and a cast; compiled, the cast (the constants would be Python
    numbers there, and ``where`` of two of them is float32)."""
    if torch.compiler.is_compiling():
        return torch.logical_not(done).to(like.dtype)
    return torch.where(done, _constant(0.0, like), _constant(1.0, like))


def _per_env(x: Tensor, ndim: int) -> Tensor:
    """A ``(B,)`` tensor shaped to broadcast over a ``(B, ...)`` array of ``ndim`` axes."""
    # Sizes as separate ints: a tuple or torch.Size argument costs views twice as much.
    return x.view(-1, *_ONES[ndim - 1])


_ONES = tuple((1,) * k for k in range(8))


# --- the CT-RNN body (rtrrl_spec.ctrnn) -----------------------------------------------------


def ctrnn_step(W: Tensor, tau: Tensor, h: Tensor, x: Tensor, dt: Number) -> CTRNNStep:
    """One forward-Euler step ``h' = h + dt (tanh(W [x, h, 1]) − h) / τ``."""
    zeta = torch.cat([x, h, _ones_column(len(h), h)], -1)
    phi = torch.tanh(F.linear(zeta, W))
    h_next = h + _number(dt, h) * (phi - h) / tau
    return CTRNNStep(zeta, phi, _constant(1.0, phi) - phi * phi, h_next)


def rflo_update(
    J_W: Tensor,
    J_tau: Tensor,
    tau: Tensor,
    h: Tensor,
    s: CTRNNStep,
    dt: Number,
    *,
    keep: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """RFLO: ``J_W (B,N,Z)``, ``J_τ (B,N)`` → their values at ``h'``.

    ``keep`` (``(B,)``, 1 or 0): the step's reset at an episode boundary, applied to the old
    traces inside the decay (one pass over ``J_W`` instead of two).
    """
    dt = _number(dt, tau)
    rate = dt / tau  # (N,)
    decay = _constant(1.0, rate) - rate
    # (B, N): the decay of each environment's rows
    decay = decay * keep.unsqueeze(1) if keep is not None else decay.expand_as(J_tau)
    # In place on the product just made: one (B, N, Z) result instead of two (at large B, a
    # fresh one is page-faulted in).
    J_W_next = (decay.unsqueeze(-1) * J_W).addcmul_(
        (rate * s.dphi).unsqueeze(2), s.zeta.unsqueeze(1)
    )
    J_tau_next = torch.addcmul(dt * (h - s.phi) / (tau * tau), decay, J_tau)
    return J_W_next, J_tau_next


def rtrl_update(
    J_W: Tensor,
    J_tau: Tensor,
    W: Tensor,
    tau: Tensor,
    h: Tensor,
    s: CTRNNStep,
    dt: Number,
    input_dim: int,
    *,
    keep: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """RTRL: ``J_W (B,N,N,Z)``, ``J_τ (B,N,N)`` → their values at ``h'``:
    ``J' = M J + diag(local)`` (:func:`_rtrl_terms`).

    ``keep`` (``(B,)``, 1 or 0): the step's reset at an episode boundary, applied to the old
    traces through ``M`` (``M (k J) = (k M) J`` for ``k`` in {0, 1}, exactly): a product over
    the ``(B, N, N)`` matrices instead of a pass over the ``(B, N, N, Z)`` trace.
    """
    B, N, Z = J_W.shape[0], tau.shape[0], s.zeta.shape[-1]
    M, local_W, local_tau = _rtrl_terms(W, tau, h, s, dt, input_dim, keep=keep)
    J_W_next = torch.bmm(M, J_W.reshape(B, N, N * Z)).view(B, N, N, Z)
    J_tau_next = torch.bmm(M, J_tau)
    # += on the diagonal i = j, in place into the products just made (nothing the caller owns).
    J_W_next.diagonal(0, 1, 2).add_(local_W.transpose(1, 2))
    J_tau_next.diagonal(0, 1, 2).add_(local_tau)
    return J_W_next, J_tau_next


def _rtrl_terms(
    W: Tensor,
    tau: Tensor,
    h: Tensor,
    s: CTRNNStep,
    dt: Number,
    input_dim: int,
    *,
    keep: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The terms of RTRL's trace update ``J'[i] = Σ_k M[i, k] J[k] + local[i] e_i``:
    ``M = I + dt ∂f/∂h`` ``(B, N, N)`` (times ``keep``), and the direct dependence of
    ``h'_i`` on its own row of ``W`` (``(B, N, Z)``) and on ``τ_i`` (``(B, N)``)."""
    N = tau.shape[0]
    dt = _number(dt, tau)
    W_h = W[:, input_dim : input_dim + N]
    eye = _eye(N, W)
    M = eye + dt * (s.dphi[:, :, None] * W_h - eye) / tau[:, None]
    if keep is not None:
        M = M * keep[:, None, None]
    local_W = (dt * s.dphi / tau)[:, :, None] * s.zeta[:, None, :]
    local_tau = dt * (h - s.phi) / (tau * tau)
    return M, local_W, local_tau


def project_rflo(signal: Tensor, J_W: Tensor, J_tau: Tensor) -> tuple[Tensor, Tensor]:
    """Parameter gradient of ``signal · h'`` through RFLO's local trace: row ``i`` times ``g_i``."""
    return signal.unsqueeze(2) * J_W, signal * J_tau


def project_rtrl(signal: Tensor, J_W: Tensor, J_tau: Tensor) -> tuple[Tensor, Tensor]:
    """Parameter gradient of ``signal · h'`` through the full RTRL trace: ``Σ_i g_i J[i]``.

    ``signal`` ``(B, N)``; or ``(B, K, N)``, ``K`` signals projected in one pass over the
    trace (results ``(B, K, N, Z)`` and ``(B, K, N)``).
    """
    B, N, _, Z = J_W.shape
    rows = signal if signal.dim() == 3 else signal[:, None, :]  # (B, K, N)
    grad_W = torch.bmm(rows, J_W.reshape(B, N, N * Z)).view(B, -1, N, Z)
    grad_tau = torch.bmm(rows, J_tau)
    if signal.dim() == 3:
        return grad_W, grad_tau
    return grad_W[:, 0], grad_tau[:, 0]


# --- the LRU body (rtrrl_spec.lru) ----------------------------------------------------------


def _cmul(a_re: Tensor, a_im: Tensor, b_re: Tensor, b_im: Tensor) -> tuple[Tensor, Tensor]:
    """``(a_re + i a_im)(b_re + i b_im)`` as a (real, imaginary) pair."""
    return a_re * b_re - a_im * b_im, a_re * b_im + a_im * b_re


def lru_lambda(log_nu: Tensor, log_theta: Tensor) -> tuple[Tensor, Tensor]:
    """``λ = exp(−exp(ν)) e^{i exp(θ)}`` as (Re λ, Im λ)."""
    modulus = torch.exp(-torch.exp(log_nu))
    phase = torch.exp(log_theta)
    return modulus * torch.cos(phase), modulus * torch.sin(phase)


def lru_step(params: Mapping[str, Tensor], h_re: Tensor, h_im: Tensor, x: Tensor) -> LRUStep:
    """``h' = λ ⊙ h + exp(γ) ⊙ (B x)``, ``y = Re(C h')`` for a batch ``h (B, N)``, ``x (B, I)``."""
    lam_re, lam_im = lru_lambda(params["log_nu"], params["log_theta"])
    norm = torch.exp(params["log_gamma"])
    u_re, u_im = F.linear(x, params["B_re"]), F.linear(x, params["B_im"])
    rec_re, rec_im = _cmul(lam_re, lam_im, h_re, h_im)
    h_next_re = rec_re + norm * u_re
    h_next_im = rec_im + norm * u_im
    y = F.linear(h_next_re, params["C_re"]) - F.linear(h_next_im, params["C_im"])
    return LRUStep(lam_re, lam_im, norm, u_re, u_im, h_next_re, h_next_im, y)


def lru_sensitivity_update(
    J: Mapping[str, Tensor], h_re: Tensor, h_im: Tensor, x: Tensor, s: LRUStep
) -> dict[str, Tensor]:
    """The sensitivities at ``h'`` from those at ``h`` (the state the step started from, after
    any episode reset)."""
    lam_re, lam_im = s.lam_re, s.lam_im
    new = {}
    rec_re, rec_im = _cmul(lam_re, lam_im, J["J_lam_re"], J["J_lam_im"])
    new["J_lam_re"], new["J_lam_im"] = rec_re + h_re, rec_im + h_im
    rec_re, rec_im = _cmul(lam_re, lam_im, J["J_gam_re"], J["J_gam_im"])
    new["J_gam_re"], new["J_gam_im"] = rec_re + s.norm * s.u_re, rec_im + s.norm * s.u_im
    rec_re, rec_im = _cmul(lam_re[:, None], lam_im[:, None], J["J_in_re"], J["J_in_im"])
    new["J_in_re"] = rec_re + s.norm[None, :, None] * x[:, None, :]
    new["J_in_im"] = rec_im
    return new


def project_lru(
    signal: Tensor, params: Mapping[str, Tensor], J: Mapping[str, Tensor], s: LRUStep
) -> dict[str, Tensor]:
    """Per-environment gradients of ``signal · y`` for every LRU parameter; ``J`` holds the
    sensitivities at ``h'``."""
    w_re, w_im = torch.mm(signal, params["C_re"]), torch.mm(signal, params["C_im"])  # w = Cᵀ s
    a_re, a_im = _cmul(w_re, w_im, J["J_lam_re"], J["J_lam_im"])  # w ⊙ J_lam ⊙ λ
    a_re, a_im = _cmul(a_re, a_im, s.lam_re, s.lam_im)
    g_re, _ = _cmul(w_re, w_im, J["J_gam_re"], J["J_gam_im"])
    b_re, b_im = _cmul(w_re[:, :, None], w_im[:, :, None], J["J_in_re"], J["J_in_im"])
    return {
        "log_nu": -a_re * torch.exp(params["log_nu"]),
        "log_theta": -a_im * torch.exp(params["log_theta"]),
        "log_gamma": g_re,
        "B_re": b_re,
        "B_im": -b_im,
        "C_re": signal[:, :, None] * s.h_re[:, None, :],
        "C_im": -signal[:, :, None] * s.h_im[:, None, :],
    }


# --- the heads (rtrrl_spec.heads) -----------------------------------------------------------


def critic_value(f: Tensor, W_C: Tensor, b_C: Tensor) -> Tensor:
    """``v = f · W_C + b_C`` for each environment: ``(B,)``."""
    return torch.addmm(b_C, f, W_C)[:, 0]


def policy_step(
    config: Config, out: Tensor, noise: Tensor, *, numbers: Mapping[str, Tensor] | None = None
) -> PolicyStep:
    """Sample an action from the actor outputs ``out`` (B, K) and differentiate ``ln π``, ``H``.

    ``numbers``: :func:`config_numbers` of ``config`` (the action bounds), when at hand.
    """
    if config.discrete:
        return _discrete(out, noise)
    if numbers is None:
        numbers = config_numbers(config, out.dtype, out.device)
    return _continuous(config, out, noise, numbers)


def _discrete(logits: Tensor, noise: Tensor) -> PolicyStep:
    log_p = torch.log_softmax(logits, -1)
    p = torch.exp(log_p)
    action = torch.argmax(logits - torch.log(-torch.log(noise)), -1)
    onehot = _eye(logits.shape[-1], logits).index_select(0, action)
    neg_entropy = (p * log_p).sum(-1, keepdim=True)  # −H
    entropy = -neg_entropy[:, 0]
    sample = action.to(torch.int32)
    return PolicyStep(
        action=sample,
        sample=sample,
        log_prob=log_p.gather(-1, action[:, None])[:, 0],
        entropy=entropy,
        dlogp_dout=onehot - p,
        dent_dout=p * (neg_entropy - log_p),  # −p (ln p + H), the same floats
        scale=torch.ones_like(entropy),
    )


def _continuous(
    config: Config, out: Tensor, noise: Tensor, numbers: Mapping[str, Tensor]
) -> PolicyStep:
    D = int(config.action_dim)  # type: ignore[arg-type]
    m, s = out[:, :D], out[:, D:]
    if config.bounded:
        lo, hi = numbers["action_low"], numbers["action_high"]
        sig_m = torch.sigmoid(m)
        mu = lo + (hi - lo) * sig_m
        dmu_dm = (hi - lo) * sig_m * (1.0 - sig_m)
    else:
        mu, dmu_dm = m, torch.ones_like(m)
    sig_s = torch.sigmoid(s)
    pre_sigma = -2.0 + 4.0 * sig_s
    sigma = F.softplus(pre_sigma)
    dsigma_ds = torch.sigmoid(pre_sigma) * 4.0 * sig_s * (1.0 - sig_s)

    sample = mu + sigma * noise
    action = torch.clamp(sample, lo, hi) if config.bounded else sample
    log_sigma = torch.log(sigma)
    log_prob = (-0.5 * noise * noise - log_sigma - _HALF_LOG_2PI).sum(-1)
    entropy = (log_sigma + 0.5 + _HALF_LOG_2PI).sum(-1)
    dlogp_dout = torch.cat([noise / sigma * dmu_dm, (noise * noise - 1.0) / sigma * dsigma_ds], -1)
    dent_dout = torch.cat([torch.zeros_like(m), dsigma_ds / sigma], -1)
    scale = torch.clamp(sigma.mean(-1), max=1.0) if config.var_scaling else torch.ones_like(entropy)
    return PolicyStep(action, sample, log_prob, entropy, dlogp_dout, dent_dout, scale)


# --- TD error and traces (rtrrl_spec.agent) -------------------------------------------------


def td_error(
    reward: Tensor,
    done: Tensor,
    value: Tensor,
    v_prev: Tensor,
    gamma: Number,
    reward_rate: Number = 0.0,
    *,
    keep: Tensor | None = None,
) -> Tensor:
    """``δ = r − r̄ + γ (1 − done) v − v_prev``: no bootstrapping across an episode boundary.

    ``keep``: ``1 − done`` in ``value``'s dtype, when the caller has it already.
    """
    not_done = keep if keep is not None else torch.logical_not(done).to(value.dtype)
    if not (isinstance(reward_rate, float) and reward_rate == 0.0):  # r − 0 is r
        reward = reward - reward_rate
    return torch.addcmul(reward, _number(gamma, value) * not_done, value) - v_prev


def decay_trace(
    trace: Tensor,
    done: Tensor,
    gamma_lambda: Number,
    *,
    factor: Tensor | None = None,
    add: Tensor | None = None,
) -> Tensor:
    """``γλ e``, after zeroing the traces of environments whose episode just ended.

    The reset is a product with ``1 − done`` (exact for finite traces). ``factor``:
    ``γλ (1 − done)``, ``(B,)``, when the caller has it already; ``add``: a tensor added to the
    result in the same pass (the step's new gradient: ``e ← γλ e + ∇``).
    """
    if factor is None:
        factor = _number(gamma_lambda, trace) * torch.logical_not(done).to(trace.dtype)
    factor = _per_env(factor, trace.dim())
    return factor * trace if add is None else torch.addcmul(add, factor, trace)


# --- the optimizer (rtrrl_spec.optim, rtrrl_spec.agent.apply_update) ------------------------


def _log_beta(beta: Number, log_beta: Tensor | None, like: Tensor) -> Tensor:
    """``ln β`` as given, or from ``β`` in float64 (``ln 0 = −inf`` gives ``1 − 0ᵗ = 1``)."""
    if log_beta is not None:
        return log_beta
    if isinstance(beta, Tensor):
        return torch.log(beta.to(dtype=torch.float64))
    return torch.log(torch.tensor(beta, dtype=torch.float64, device=like.device))


def _bias_correction(count: Tensor, log_b1: Tensor, log_b2: Tensor, dtype: torch.dtype) -> Tensor:
    """``[1 − β1ᵗ, 1 − β2ᵗ]`` at counts ``t``, ``(2, *count.shape)`` in ``dtype``: formed as
    ``−expm1(t ln β)`` in float64 and rounded once."""
    logs = torch.stack([log_b1, log_b2]).to(torch.float64)
    t = count.to(torch.float64)
    return torch.neg(torch.expm1(t * logs.view(2, *_ONES[t.dim()]))).to(dtype)


def global_norm(arrays: Mapping[str, Tensor]) -> Tensor:
    """Euclidean norm of all entries of all arrays."""
    flat = (a if a.dim() == 1 else a.reshape(-1) for a in arrays.values())
    squares = [torch.dot(a, a) for a in flat]
    return torch.sqrt(functools.reduce(torch.add, squares))


def clip_by_global_norm(
    arrays: Mapping[str, Tensor], max_norm: Number | None
) -> tuple[dict[str, Tensor], Tensor]:
    """Scale the group down to norm ``max_norm`` when it is longer; returns (arrays, norm)."""
    norm = global_norm(arrays)
    if max_norm is None:
        return dict(arrays), norm
    max_norm = _number(max_norm, norm)
    factor = max_norm / torch.maximum(norm, max_norm)
    return {k: a * factor for k, a in arrays.items()}, norm


def adam_step(
    params: Mapping[str, Tensor],
    direction: Mapping[str, Tensor],
    mu: Mapping[str, Tensor],
    nu: Mapping[str, Tensor],
    count: Tensor,
    lr: Number,
    b1: Number,
    b2: Number,
    eps: Number,
    *,
    omb1: Number | None = None,
    omb2: Number | None = None,
    log_b1: Tensor | None = None,
    log_b2: Tensor | None = None,
    bias_corrections: Callable[[Tensor], Tensor] | None = None,
) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor], Tensor]:
    """One Adam ascent step of a parameter group; returns (params, mu, nu, count).

    The numbers of ``numbers_of`` derived from ``β``, when the caller has them (each rounded
    once from float64, as the reference's Python floats are; formed here from ``b1``, ``b2``
    otherwise): ``omb1``, ``omb2`` (``1 − β``) and ``log_b1``, ``log_b2`` (``ln β``, for the
    bias corrections ``1 − βᵗ = −expm1(t ln β)``: a ``β`` already rounded to float32 would
    move ``1 − βᵗ`` by up to 1e-5 relative). ``bias_corrections``: a function of the new count
    giving ``[1 − β1ᵗ, 1 − β2ᵗ]`` (a ``(2, ...)`` tensor broadcasting over the parameters) in
    place of that formula: ``_torch_speed.PackedUpdate`` looks them up for parameters of
    several groups packed into one vector, ``count`` then holding one count per group and
    ``lr`` one rate per entry.
    """
    like = next(iter(params.values()))
    omb1 = omb1 if omb1 is not None else 1.0 - b1  # before b1 is rounded to like's dtype
    omb2 = omb2 if omb2 is not None else 1.0 - b2
    count = count + _constant(1, count)
    if bias_corrections is not None:
        bc = bias_corrections(count)
    else:
        logs = (_log_beta(b1, log_b1, like), _log_beta(b2, log_b2, like))
        bc = _bias_correction(count, *logs, like.dtype)
    lr, b1, b2, eps, omb1, omb2 = (_number(v, like) for v in (lr, b1, b2, eps, omb1, omb2))
    bc1, bc2 = bc.unbind(0)
    new_params, new_mu, new_nu = {}, {}, {}
    for name, p in params.items():
        d = direction[name]
        m = torch.addcmul(b1 * mu[name], omb1, d)  # β1 μ + (1 − β1) Δ
        v = torch.addcmul(b2 * nu[name], omb2 * d, d)  # β2 ν + (1 − β2) Δ²
        m_hat = m / bc1
        v_hat = v / bc2
        new_params[name] = torch.addcdiv(p, lr * m_hat, torch.sqrt(v_hat) + eps)
        new_mu[name], new_nu[name] = m, v
    return new_params, new_mu, new_nu, count


def apply_update(
    config: Config,
    agent: Mapping[str, Tensor],
    direction: Mapping[str, Tensor],
    *,
    numbers: Mapping[str, Tensor] | None = None,
) -> tuple[Agent, Agent]:
    """Clip each group's ascent direction by global norm, take an Adam step, clip ``tau``.

    Returns the new parameters, Adam moments and counts, and ``grad_norm_<group>`` (the norm
    before clipping). ``numbers``: :func:`config_numbers` of ``config``, when at hand.
    """
    n = numbers
    if n is None:
        n = config_numbers(config, agent["W_A"].dtype, agent["W_A"].device)
    changed: Agent = {}
    info: Agent = {}
    for group, names in rtrrl_spec.optimizer_groups(config):
        max_norm = n["clip_norm"] if config.clip_norm is not None else None
        clipped, norm = clip_by_global_norm({k: direction[k] for k in names}, max_norm)
        params, mu, nu, count = adam_step(
            {k: agent[k] for k in names},
            clipped,
            {k: agent[f"mu_{k}"] for k in names},
            {k: agent[f"nu_{k}"] for k in names},
            agent[f"count_{group}"],
            n[f"lr_{group}"],
            n["b1"],
            n["b2"],
            n["eps"],
            omb1=n["omb1"],
            omb2=n["omb2"],
            log_b1=n["log_b1"],
            log_b2=n["log_b2"],
        )
        if "tau" in params:
            params["tau"] = torch.maximum(params["tau"], n["tau_min"])
        for k in names:
            changed[k] = params[k]
            changed[f"mu_{k}"], changed[f"nu_{k}"] = mu[k], nu[k]
        changed[f"count_{group}"] = count
        info[f"grad_norm_{group}"] = norm
    return changed, info


# --- the step (rtrrl_spec.agent.step_unchecked) ---------------------------------------------


def _rtrl_and_project(
    J_W: Tensor,
    J_tau: Tensor,
    W: Tensor,
    tau: Tensor,
    h: Tensor,
    s: CTRNNStep,
    dt: Number,
    input_dim: int,
    signals: list[Tensor],
    *,
    keep: Tensor | None = None,
) -> tuple[Tensor, Tensor, list[Agent]]:
    """:func:`rtrl_update`, then each signal's ``{"W", "tau"}`` gradient through the new trace
    (:func:`project_rtrl`, all signals in one pass over it): ``(J_W', J_tau', gradients)``."""
    J_W, J_tau = rtrl_update(J_W, J_tau, W, tau, h, s, dt, input_dim, keep=keep)
    grad_W, grad_tau = project_rtrl(torch.stack(signals, 1), J_W, J_tau)
    return J_W, J_tau, [{"W": grad_W[:, k], "tau": grad_tau[:, k]} for k in range(len(signals))]


def _rflo_projections(J_W: Tensor, J_tau: Tensor, signals: list[Tensor]) -> list[Agent]:
    """Each signal's ``{"W", "tau"}`` gradient through RFLO's trace (:func:`project_rflo`)."""
    grads = [project_rflo(g, J_W, J_tau) for g in signals]
    return [{"W": grad_W, "tau": grad_tau} for grad_W, grad_tau in grads]


def _batch_mean(per_env: Tensor) -> Tensor:
    # Σ_b x_b · (1/B): a mean over a small batch costs a third more (a division by a number).
    # For B = 1 that is x_0 · 1 = x_0 exactly, so the row itself serves (two ops fewer).
    if per_env.shape[0] == 1:
        return per_env[0]
    return per_env.sum(0) * _constant(1.0 / per_env.shape[0], per_env)


def step(
    config: Config,
    agent: Mapping[str, Tensor],
    obs: Tensor,
    reward: Tensor,
    done: Tensor,
    noise: Tensor,
    *,
    numbers: Mapping[str, Tensor] | None = None,
    batch_mean: Callable[[Tensor], Tensor] = _batch_mean,
    update: Callable[..., tuple[Agent, Agent]] = apply_update,
    rtrl: Callable[..., tuple[Tensor, Tensor, list[Agent]]] = _rtrl_and_project,
) -> tuple[Agent, Tensor, Agent]:
    """One step; inputs already checked, in the agent's dtype and device (``done`` bool).

    The keywords change how it runs, never what it computes (``_torch_speed``): ``numbers``
    (:func:`config_numbers`), ``batch_mean`` of a ``(B, ...)`` tensor, ``update`` (a
    function with :func:`apply_update`'s contract) and ``rtrl`` (with
    :func:`_rtrl_and_project`'s)."""
    dtype, device = agent["W_A"].dtype, agent["W_A"].device
    n = numbers if numbers is not None else config_numbers(config, dtype, device)
    keep = _keep(done, agent["W_A"])  # resets are products with 1 − done
    new = dict(agent)

    def reset_env(array: Tensor) -> Tensor:
        return _per_env(keep, array.dim()) * array

    # 1-2. RNN input; at an episode boundary the previous action and reward are not fed.
    if config.meta_rl:
        a_in = agent["a_prev"]
        if config.discrete:  # the previous action as its one-hot row
            a_in = _eye(config.n_actions, agent["W_A"]).index_select(0, a_in)
        x = torch.cat([obs, reset_env(a_in), (reward * keep).unsqueeze(1)], -1)
    else:
        x = obs

    # 3. Body: features for the heads, the new body state and, when the body learns, how a
    # signal on the features projects into its parameters' gradients (J'ᵀ g). The CT-RNN's
    # traces have their reset folded into their update.
    project: Callable[[list[Tensor]], list[Agent]] | None = None
    if config.body == "ctrnn":
        W, tau, dt = agent["W"], agent["tau"], n["dt"]
        h = reset_env(agent["h"])
        s = ctrnn_step(W, tau, h, x, dt)
        features = new["h"] = s.h_next
        if config.trains_body and config.jacobian == "rflo":
            J_W, J_tau = rflo_update(agent["J_W"], agent["J_tau"], tau, h, s, dt, keep=keep)
            new["J_W"], new["J_tau"] = J_W, J_tau
            project = functools.partial(_rflo_projections, J_W, J_tau)
        elif config.trains_body:  # RTRL: J' is formed with the projections, which need g

            def project(signals: list[Tensor]) -> list[Agent]:
                args = (agent["J_W"], agent["J_tau"], W, tau, h, s, dt, config.input_dim)
                new["J_W"], new["J_tau"], grads = rtrl(*args, signals, keep=keep)
                return grads

    elif config.body == "lru":
        params = {k: agent[k] for k in rtrrl_spec.body_params(config)}
        h_re, h_im = reset_env(agent["h_re"]), reset_env(agent["h_im"])
        s_lru = lru_step(params, h_re, h_im, x)
        new["h_re"], new["h_im"] = s_lru.h_re, s_lru.h_im
        features = s_lru.y
        if config.trains_body:
            J = {k: reset_env(agent[k]) for k in LRU_SENSITIVITIES}
            J = lru_sensitivity_update(J, h_re, h_im, x, s_lru)
            new.update(J)

            def project(signals: list[Tensor]) -> list[Agent]:
                return [project_lru(g, params, J, s_lru) for g in signals]

    else:
        features = x

    # 4. Heads, with the parameters as they were before this step's update.
    W_A, W_C, b_C = agent["W_A"], agent["W_C"], agent["b_C"]
    value = critic_value(features, W_C, b_C)
    pol = policy_step(config, torch.mm(features, W_A), noise, numbers=n)
    # c = min(mean σ, 1) with var_scaling for continuous actions; elsewhere policy_step gives
    # c = 1 and x · 1 = x, so the products with it are skipped.
    c = pol.scale[:, None] if config.var_scaling and not config.discrete else None

    def times_c(x: Tensor) -> Tensor:
        return x if c is None else c * x

    # 5. Immediate gradients. (c f) is formed once: the reference's c f ⊗ ∂ multiplies left
    # to right, so this is the same rounding.
    cf3 = times_c(features).unsqueeze(2)
    if config.trace == "dutch":
        grad = {"W_C": features.unsqueeze(2), "b_C": torch.ones_like(pol.scale).unsqueeze(1)}
    else:
        grad = {"W_C": cf3, "b_C": pol.scale.unsqueeze(1)}  # c · 1
    grad["W_A"] = cf3 * pol.dlogp_dout.unsqueeze(1)
    entropy_grad = {"W_A": cf3 * pol.dent_dout.unsqueeze(1)}
    if project is not None:
        B_A_T = (agent["B_A"] if config.feedback_alignment else W_A).t()
        B_C = agent["B_C"] if config.feedback_alignment else W_C
        signal = times_c(torch.addcmul(B_C[:, 0], n["eta_pi"], torch.mm(pol.dlogp_dout, B_A_T)))
        entropy_signal = times_c(torch.mm(pol.dent_dout, B_A_T))
        projected, entropy_projected = project([signal, entropy_signal])
        grad.update(projected)
        entropy_grad.update(entropy_projected)

    # 6. TD error.
    reward_rate = agent["reward_rate"] if config.reward_rate_lr is not None else 0.0
    delta = td_error(reward, done, value, agent["v_prev"], n["gamma"], reward_rate, keep=keep)

    # 7. Update: directions from the traces as they were, batch mean, clip, Adam, tau clip.
    d = {2: delta.unsqueeze(1), 3: _per_env(delta, 3)}  # δ for traces of 2 and 3 axes
    per_env = {
        "W_C": d[3] * agent["e_W_C"],
        "b_C": d[2] * agent["e_b_C"],
        "W_A": (d[3] * agent["e_W_A"]).addcmul_(n["entropy_rate"], entropy_grad["W_A"]),
    }
    if config.trace == "dutch":
        # True-online TD(λ) correction; v̂_prev is the previous features' value under the
        # current weights.
        x_W_C, x_b_C = agent["x_W_C"], agent["x_b_C"]
        value_now = critic_value(x_W_C[:, :, 0], W_C, x_b_C * b_C)
        correction = (value_now - agent["v_prev"])[:, None]
        per_env["W_C"] = per_env["W_C"] - correction[:, :, None] * x_W_C
        per_env["b_C"] = per_env["b_C"] - correction * x_b_C
    for k in rtrrl_spec.rnn_params(config):
        trace = agent[f"e_{k}"]
        per_env[k] = (d[trace.dim()] * trace).addcmul_(n["entropy_rate"], entropy_grad[k])
    direction = {k: batch_mean(v) for k, v in per_env.items()}

    changed, info = update(config, agent, direction, numbers=n)
    new.update(changed)
    if config.reward_rate_lr is not None:
        new["reward_rate"] = agent["reward_rate"] + n["reward_rate_lr"] * delta.mean()

    # 8. Traces: reset at the boundary, then decay and add this step's gradients.
    factors = {g: n[f"gl_{g}"] * keep for g in ("critic", "actor", "rnn")}  # γλ (1 − done)

    def decayed(name: str, group: str, add: Tensor | None = None) -> Tensor:
        return decay_trace(agent[name], done, n[f"gl_{group}"], factor=factors[group], add=add)

    if config.trace == "dutch":
        e_W_C, e_b_C = decayed("e_W_C", "critic"), decayed("e_b_C", "critic")
        inner = (e_W_C * grad["W_C"]).sum((1, 2)) + (e_b_C * grad["b_C"]).sum(1)
        weight = (_constant(1.0, inner) - n["lr_td"] * inner)[:, None]  # e_W_C has γλ already
        new["e_W_C"] = e_W_C + weight[:, :, None] * grad["W_C"]
        new["e_b_C"] = e_b_C + weight * grad["b_C"]
        new["x_W_C"], new["x_b_C"] = grad["W_C"], grad["b_C"]
    else:
        new["e_W_C"] = decayed("e_W_C", "critic", add=grad["W_C"])
        new["e_b_C"] = decayed("e_b_C", "critic", add=grad["b_C"])
    new["e_W_A"] = decayed("e_W_A", "actor", add=grad["W_A"])
    for k in rtrrl_spec.rnn_params(config):
        new[f"e_{k}"] = decayed(f"e_{k}", "rnn", add=grad[k])

    # 9. Carry.
    new["v_prev"] = value
    new["a_prev"] = pol.action
    info.update(td_error=delta, value=value, log_prob=pol.log_prob, entropy=pol.entropy)
    info.update(sample=pol.sample, features=features)
    for k, v in direction.items():
        info[f"direction.{k}"] = v
        if f"update.{k}" not in info:  # a packed update hands them out with the parameters
            info[f"update.{k}"] = new[k] - agent[k]
    return new, pol.action, info


# --- the backend ----------------------------------------------------------------------------


def _tensor(x: Any, dtype: torch.dtype, device: torch.device) -> Tensor:
    if isinstance(x, Tensor):
        return x if x.dtype == dtype and x.device == device else x.to(device, dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


class TorchBackend(BackendBase):
    """RTRRL on PyTorch tensors.

    Args:
        device: where agents live (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``);
            default ``$RTRRL_TORCH_DEVICE``, else ``"cpu"``.
        compile: also offer a ``torch.compile``-d step (``step_variants()["compiled"]``) and
            use it for :meth:`step`. Compiling takes seconds per config (see the docs), so it
            is opt-in; the eager step is always available as :meth:`step_eager`.
    """

    name = "torch"
    supported_dtypes = ("float32", "float64")
    #: The compiled RFLO step on one CPU thread sums its traces over the batch row by row,
    #: fused into its trace update, from this batch size on (``_torch_speed.row_batch_mean``;
    #: the figures are in docs/backends/torch.md). ``None``: never.
    row_sums_min_batch: int | None = _torch_speed.ROW_SUMS_MIN_BATCH
    #: The eager step updates all parameters as one packed vector (``_torch_speed.
    #: PackedUpdate``); ``False``: :func:`apply_update` parameter by parameter.
    packed_update: bool = True
    #: The eager RTRL step forms the new trace and its projections in one pass over the old
    #: trace (``_torch_speed.OnePassRTRL``) from this batch size on; below it (where the
    #: extra products cost more than the second pass saves) and with ``None``:
    #: :func:`rtrl_update`, then :func:`project_rtrl`.
    one_pass_rtrl_min_batch: int | None = _torch_speed.ONE_PASS_RTRL_MIN_BATCH

    def __init__(self, device: str | torch.device | None = None, compile: bool = False) -> None:
        if device is None:
            device = os.environ.get(DEVICE_ENV_VAR, "").strip() or "cpu"
        self._device = torch.device(device)
        if self._device.type == "cuda" and self._device.index is None:
            self._device = torch.device("cuda", torch.cuda.current_device())
        self.compile = compile
        self._compiled = _torch_speed.CompiledSteps(step)
        self._one_pass_rtrl = _torch_speed.OnePassRTRL(_rtrl_terms)
        self._one_pass_rtrl_donated = functools.partial(self._one_pass_rtrl, donate=True)
        # Per (config, dtype, device): its numbers and the eager step's packed update.
        self._eager: dict[tuple[Config, torch.dtype, torch.device], tuple[Any, Any]] = {}
        self._last_eager: tuple[Any, ...] = (None, None, None, None)

    # --- protocol --------------------------------------------------------------------------

    def version(self) -> str:
        return torch.__version__

    def device(self) -> str:
        return str(self._device)

    def to_numpy(self, tree: Any) -> Any:
        """Tensors (or dicts of them) to NumPy on the CPU; dtypes exact, always copies."""

        def one(x: Any) -> np.ndarray:
            if isinstance(x, Tensor):
                return x.detach().to("cpu", copy=True).numpy()
            return np.array(x, copy=True)

        return map_tree(one, tree)

    def from_numpy(self, tree: Any) -> Any:
        """NumPy arrays (or dicts of them) to tensors on this backend's device; dtypes exact."""

        def one(x: Any) -> Tensor:
            array = np.asarray(x)
            if array.dtype not in _NUMPY_TO_TORCH:
                raise TypeError(f"no torch dtype for NumPy dtype {array.dtype}")
            # A copy, so the caller's array and the tensor never share memory.
            return torch.tensor(array, dtype=_NUMPY_TO_TORCH[array.dtype], device=self._device)

        return map_tree(one, tree)

    def init(
        self, config: Config, batch_size: int, seed: int, dtype: str = "float32"
    ) -> dict[str, Tensor]:
        """The reference's initial agent (same numbers in every backend), on this device."""
        return self.from_numpy(rtrrl_spec.init(config, batch_size, seed, dtype=dtype))

    def step(
        self,
        config: Config,
        agent: Mapping[str, Tensor],
        obs: Any,
        reward: Any,
        done: Any,
        noise: Any,
        *,
        check: bool = True,
        donate: bool = False,
    ) -> tuple[Agent, Tensor, Agent]:
        """One pure step (:func:`rtrrl_spec.step`); the compiled one when ``compile=True``.

        ``agent`` is not modified; the returned agent holds new tensors except for arrays the
        step does not change (``B_A``, ``B_C``, a frozen body's parameters), which are the
        input's own tensors. Inputs may be tensors or NumPy arrays; they are cast to the
        agent's float dtype and device. ``check`` (default): first refuse what
        ``rtrrl_spec.step`` refuses, with its messages; ``check=False`` skips that, for
        loops whose inputs are known good (the result is the same on good inputs).
        ``donate=True`` promises that the caller reads none of ``agent``'s tensors after the
        next call (a training loop passes each step's agent on and drops it): the eager step
        may then write a later step's results into their memory (see
        ``_torch_speed.OnePassRTRL``). The results are the same either way.
        """
        if self.compile:
            return self.step_compiled(config, agent, obs, reward, done, noise, check=check)
        return self.step_eager(config, agent, obs, reward, done, noise, check=check, donate=donate)

    def rng(self, seed: int) -> torch.Generator:
        """A ``torch.Generator`` on this device, seeded with ``seed``."""
        gen = torch.Generator(device=self._device)
        gen.manual_seed(int(seed))
        return gen

    def draw_noise(
        self, config: Config, batch_size: int, rng: torch.Generator, dtype: str
    ) -> tuple[Tensor, torch.Generator]:
        """Noise of :func:`rtrrl_spec.noise_shape`: U(0, 1) strictly inside, or N(0, 1).

        The generator is stateful: it is advanced and returned.
        """
        shape = rtrrl_spec.noise_shape(config, batch_size)
        torch_dtype = _DTYPES[dtype]
        if config.discrete:
            u = torch.rand(shape, generator=rng, dtype=torch_dtype, device=self._device)
            # rand draws from [0, 1): 0 would make log(-log u) infinite, so keep both ends
            # inside the open interval, as rtrrl_spec.draw_noise does.
            tiny = torch.finfo(torch_dtype).tiny
            below_one = float(np.nextafter(np.asarray(1.0, dtype), np.asarray(0.0, dtype)))
            return torch.clamp(u, tiny, below_one), rng
        noise = torch.randn(shape, generator=rng, dtype=torch_dtype, device=self._device)
        return noise, rng

    def rng_state(self, rng: torch.Generator) -> dict[str, np.ndarray]:
        """The generator's whole state (``torch.Generator.get_state``, a uint8 array)."""
        return {"torch": rng.get_state().numpy().copy()}

    def rng_from_state(self, state: Mapping[str, np.ndarray]) -> torch.Generator:
        """A new generator on this backend's device in the state :meth:`rng_state` saved."""
        gen = torch.Generator(device=self._device)
        gen.set_state(torch.tensor(np.asarray(state["torch"]), dtype=torch.uint8))
        return gen

    # --- variants --------------------------------------------------------------------------

    def step_variants(self) -> dict[str, Callable[..., tuple[Agent, Tensor, Agent]]]:
        """The step functions the conformance suite checks: eager, and compiled if enabled."""
        variants = {"eager": self.step_eager}
        if self.compile:
            variants["compiled"] = self.step_compiled
        return variants

    def step_eager(
        self,
        config: Config,
        agent: Mapping[str, Tensor],
        obs: Any,
        reward: Any,
        done: Any,
        noise: Any,
        *,
        check: bool = True,
        donate: bool = False,
    ) -> tuple[Agent, Tensor, Agent]:
        """The step op by op (:func:`step`, no compilation), its update packed
        (``_torch_speed.PackedUpdate``); ``check`` and ``donate`` as for :meth:`step`."""
        if check:
            self.check_step(config, agent, obs, reward, done, noise)
        with torch.inference_mode():
            inputs = self._inputs(agent, obs, reward, done, noise)
            numbers, packed = self._eager_parts(config, agent["W_A"])
            update = packed if self.packed_update else apply_update
            one_pass = _torch_speed.uses_one_pass_rtrl(len(inputs[0]), self.one_pass_rtrl_min_batch)
            if not one_pass:
                rtrl = _rtrl_and_project
            else:
                rtrl = self._one_pass_rtrl_donated if donate else self._one_pass_rtrl
            return step(config, agent, *inputs, numbers=numbers, update=update, rtrl=rtrl)

    def _eager_parts(self, config: Config, W_A: Tensor) -> tuple[dict[str, Tensor], Any]:
        """The config's numbers and the packed update for an agent like ``W_A``, made once."""
        last = self._last_eager  # read once: another thread may replace it
        if last[0] is config and last[1] is W_A.dtype and last[2] == W_A.device:
            return last[3]  # a loop's every step asks for the same config: skip its hash
        key = (config, W_A.dtype, W_A.device)
        found = self._eager.get(key)
        if found is None:
            numbers = config_numbers(*key)
            packed = _torch_speed.PackedUpdate(config, W_A, numbers, adam_step, _bias_correction)
            found = self._eager[key] = (numbers, packed)
        self._last_eager = (*key, found)
        return found

    def step_compiled(
        self,
        config: Config,
        agent: Mapping[str, Tensor],
        obs: Any,
        reward: Any,
        done: Any,
        noise: Any,
        *,
        check: bool = True,
    ) -> tuple[Agent, Tensor, Agent]:
        """:func:`step` through ``torch.compile`` (one graph per config structure, dtype,
        device and batch size; see ``_torch_speed.CompiledSteps``); ``check`` as for
        :meth:`step` (the check runs outside the compiled graph)."""
        if check:
            self.check_step(config, agent, obs, reward, done, noise)
        with torch.inference_mode():
            inputs = self._inputs(agent, obs, reward, done, noise)
            W_A = agent["W_A"]
            numbers = config_numbers(config, W_A.dtype, W_A.device)
            fn = self._compiled.get(config, W_A, len(inputs[0]), self.row_sums_min_batch)
            return fn(agent, *inputs, numbers)

    @staticmethod
    def _inputs(
        agent: Mapping[str, Tensor], obs: Any, reward: Any, done: Any, noise: Any
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        dtype, device = agent["W_A"].dtype, agent["W_A"].device
        return (
            _tensor(obs, dtype, device),
            _tensor(reward, dtype, device),
            _tensor(done, torch.bool, device),
            _tensor(noise, dtype, device),
        )

    # --- devices ---------------------------------------------------------------------------

    @staticmethod
    def to_device(agent: Mapping[str, Tensor], device: str | torch.device) -> Agent:
        """The agent on ``device``, dtypes unchanged (a copy unless it is already there)."""
        return {k: v.to(device) for k, v in agent.items()}


class CompiledTorchBackend(TorchBackend):
    """``TorchBackend(compile=True)``, by import string for the conformance suite:
    ``--backend rtrrl.backends.torch:CompiledTorchBackend``."""

    conformance_name = "rtrrl.backends.torch:CompiledTorchBackend"

    def __init__(self, device: str | torch.device | None = None) -> None:
        super().__init__(device=device, compile=True)


class CudaTorchBackend(TorchBackend):
    """``TorchBackend("cuda")`` with TF32 off, for the GPU conformance run.

    TF32 matrix products round inputs to 10 mantissa bits, far outside the float32 tolerance;
    the spec is IEEE float32 / float64 arithmetic, so this backend turns TF32 off (globally,
    as PyTorch only offers it globally).
    """

    conformance_name = "rtrrl.backends.torch:CudaTorchBackend"

    def __init__(self) -> None:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        super().__init__(device="cuda")
