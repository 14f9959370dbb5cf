r"""The online linear recurrent unit (LRU) body and its exact online sensitivities.

The LRU (Orvieto et al., 2023, "Resurrecting Recurrent Neural Networks for Long Sequences")
is a linear recurrence with a complex diagonal transition. Per unit ``k`` (``N`` units, input
``x`` of length ``I``)::

    λ_k  = exp(−exp(ν_k)) · e^{i·exp(θ_k)}          (|λ_k| < 1: always stable)
    u_k  = Σ_j (B_re + i B_im)_kj x_j                (complex input projection)
    h'_k = λ_k h_k + exp(γ_k) u_k                    (complex hidden state)
    y    = Re(C h') = C_re Re(h') − C_im Im(h')      (real features, length N)

with ``ν``, ``θ``, ``γ`` stored as ``log_nu``, ``log_theta``, ``log_gamma`` (``γ`` is the
input normalization; the names avoid the ``nu_`` prefix of the Adam moments). The
actor and critic read ``y``.

Because the transition is diagonal, the sensitivity of ``h'`` to every recurrent parameter is
a vector (or, for ``B``, a matrix) the size of the parameter, and can be carried exactly, step
by step, with the parameters held fixed (as RTRL does)::

    J_lam' = λ ⊙ J_lam + h                      ∂h'/∂λ       (N, complex)
    J_gam' = λ ⊙ J_gam + exp(γ) ⊙ u             ∂h'/∂γ       (N, complex)
    J_in'  = λ ⊙ J_in  + exp(γ) ⊗ x             ∂h'_k/∂B_re[k, j]   (N × I, complex)

(``∂h'_k/∂B_im[k, j] = i · J_in'[k, j]``). At an episode boundary ``h`` and all three are
reset to zero, like the CT-RNN's ``J``.

Projection. The learning signal ``s`` (length ``N``, real: the gradient of the heads'
objective with respect to ``y``) reaches a real parameter ``p`` whose sensitivity is the
complex ``z = ∂h'/∂p`` as ``s · Re(C z) = Re(Σ_k w_k z_k)`` with ``w = Cᵀ s`` (complex:
``w_re = C_reᵀ s``, ``w_im = C_imᵀ s``). Hence::

    ∇ν_k      = Re(w_k J_lam'_k λ_k) · (−exp ν_k)          (∂λ/∂ν = −exp(ν) λ)
    ∇θ_k      = −Im(w_k J_lam'_k λ_k) · exp θ_k            (∂λ/∂θ = i exp(θ) λ)
    ∇γ_k      = Re(w_k J_gam'_k)
    ∇B_re[k,j] = Re(w_k J_in'[k, j]),   ∇B_im[k,j] = −Im(w_k J_in'[k, j])
    ∇C_re     = s ⊗ Re(h'),             ∇C_im     = −s ⊗ Im(h')     (the output map, direct)

Everything here is written in real arithmetic on (real, imaginary) pairs so that a backend
without complex dtypes (Keras) can follow it line by line; float32 agents stay float32.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "LRU_PARAMS",
    "LRU_SENSITIVITIES",
    "LRUStep",
    "lru_lambda",
    "lru_step",
    "lru_sensitivity_update",
    "project_lru",
    "init_lru",
]

LRU_PARAMS = ("log_nu", "log_theta", "log_gamma", "B_re", "B_im", "C_re", "C_im")
# Carried sensitivities, real and imaginary parts stored separately in the canonical layout.
LRU_SENSITIVITIES = ("J_lam_re", "J_lam_im", "J_gam_re", "J_gam_im", "J_in_re", "J_in_im")


def _cmul(a_re, a_im, b_re, b_im):
    """``(a_re + i a_im)(b_re + i b_im)`` as a (real, imaginary) pair."""
    return a_re * b_re - a_im * b_im, a_re * b_im + a_im * b_re


class LRUStep(NamedTuple):
    """What one LRU step computes, kept for the sensitivities and the projection."""

    lam_re: np.ndarray  # (N,)  Re λ
    lam_im: np.ndarray  # (N,)  Im λ
    norm: np.ndarray  # (N,)  exp(γ)
    u_re: np.ndarray  # (B, N)  Re(B x)
    u_im: np.ndarray  # (B, N)  Im(B x)
    h_re: np.ndarray  # (B, N)  Re h'
    h_im: np.ndarray  # (B, N)  Im h'
    y: np.ndarray  # (B, N)  Re(C h'): the features


def lru_lambda(log_nu: np.ndarray, log_theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``λ = exp(−exp(ν)) e^{i exp(θ)}`` as (Re λ, Im λ)."""
    modulus = np.exp(-np.exp(log_nu))
    phase = np.exp(log_theta)
    return modulus * np.cos(phase), modulus * np.sin(phase)


def lru_step(
    params: dict[str, np.ndarray], h_re: np.ndarray, h_im: np.ndarray, x: np.ndarray
) -> LRUStep:
    """``h' = λ ⊙ h + exp(γ) ⊙ (B x)``, ``y = Re(C h')`` for a batch ``h (B, N)``, ``x (B, I)``."""
    lam_re, lam_im = lru_lambda(params["log_nu"], params["log_theta"])
    norm = np.exp(params["log_gamma"])
    u_re, u_im = x @ params["B_re"].T, x @ params["B_im"].T
    rec_re, rec_im = _cmul(lam_re, lam_im, h_re, h_im)
    h_next_re = rec_re + norm * u_re
    h_next_im = rec_im + norm * u_im
    y = h_next_re @ params["C_re"].T - h_next_im @ params["C_im"].T
    return LRUStep(lam_re, lam_im, norm, u_re, u_im, h_next_re, h_next_im, y)


def lru_sensitivity_update(
    J: dict[str, np.ndarray], h_re: np.ndarray, h_im: np.ndarray, x: np.ndarray, s: LRUStep
) -> dict[str, np.ndarray]:
    """The sensitivities at ``h'`` from those at ``h`` (module docstring); ``h`` is the state
    the step started from (after any episode reset)."""
    lam_re, lam_im = s.lam_re, s.lam_im
    lam_re_m, lam_im_m = lam_re[:, None], lam_im[:, None]  # broadcast over the input axis
    new = {}
    rec_re, rec_im = _cmul(lam_re, lam_im, J["J_lam_re"], J["J_lam_im"])
    new["J_lam_re"], new["J_lam_im"] = rec_re + h_re, rec_im + h_im
    rec_re, rec_im = _cmul(lam_re, lam_im, J["J_gam_re"], J["J_gam_im"])
    new["J_gam_re"], new["J_gam_im"] = rec_re + s.norm * s.u_re, rec_im + s.norm * s.u_im
    rec_re, rec_im = _cmul(lam_re_m, lam_im_m, J["J_in_re"], J["J_in_im"])
    new["J_in_re"] = rec_re + s.norm[None, :, None] * x[:, None, :]
    new["J_in_im"] = rec_im
    return new


def project_lru(
    signal: np.ndarray, params: dict[str, np.ndarray], J: dict[str, np.ndarray], s: LRUStep
) -> dict[str, np.ndarray]:
    """Per-environment gradients of ``signal · y`` for every LRU parameter (module docstring).

    ``signal`` is ``(B, N)``; ``J`` holds the sensitivities at ``h'``.
    """
    w_re, w_im = signal @ params["C_re"], signal @ params["C_im"]  # (B, N): w = Cᵀ s
    # w ⊙ J_lam ⊙ λ
    a_re, a_im = _cmul(w_re, w_im, J["J_lam_re"], J["J_lam_im"])
    a_re, a_im = _cmul(a_re, a_im, s.lam_re, s.lam_im)
    g_re, g_im = _cmul(w_re, w_im, J["J_gam_re"], J["J_gam_im"])
    b_re, b_im = _cmul(w_re[:, :, None], w_im[:, :, None], J["J_in_re"], J["J_in_im"])
    return {
        "log_nu": -a_re * np.exp(params["log_nu"]),
        "log_theta": -a_im * np.exp(params["log_theta"]),
        "log_gamma": g_re,
        "B_re": b_re,
        "B_im": -b_im,
        "C_re": signal[:, :, None] * s.h_re[:, None, :],
        "C_im": -signal[:, :, None] * s.h_im[:, None, :],
    }


def init_lru(
    rng: np.random.Generator,
    n_hidden: int,
    input_dim: int,
    r_min: float,
    r_max: float,
    max_phase: float,
) -> dict[str, np.ndarray]:
    """LRU parameters in float64, drawn in the order ν, θ, B_re, B_im, C_re, C_im.

    Eigenvalues uniform on the ring ``r_min ≤ |λ| ≤ r_max`` (the squared modulus is uniform
    between ``r_min²`` and ``r_max²``), phases uniform in ``[0, max_phase)``; the input
    normalization ``γ = log sqrt(1 − |λ|²)`` keeps the stationary variance of ``h`` at the
    input's; ``B`` entries normal with variance ``1/(2I)`` per part, ``C`` with ``1/N``.
    """
    N, n_in = int(n_hidden), int(input_dim)
    # Uniform draws kept away from 0: u1 = 0 (with r_min = 0) would give ν = +inf (λ = 0 and
    # an infinite gradient), u2 = 0 a zero phase whose logarithm is -inf.
    tiny = np.finfo(np.float64).tiny
    u1 = np.clip(rng.random(N), tiny, 1.0)
    u2 = np.clip(rng.random(N), tiny, 1.0)
    modulus_sq = u1 * (r_max**2 - r_min**2) + r_min**2
    # |λ| = 1 exactly (r_max = 1, u1 = 1) would make ν = −inf; keep it a hair inside.
    modulus_sq = np.minimum(modulus_sq, 1.0 - np.finfo(np.float32).eps)
    log_nu = np.log(-0.5 * np.log(modulus_sq))
    log_theta = np.log(max_phase * u2)
    log_gamma = 0.5 * np.log(1.0 - modulus_sq)
    B_re = rng.standard_normal((N, n_in)) / np.sqrt(2.0 * n_in)
    B_im = rng.standard_normal((N, n_in)) / np.sqrt(2.0 * n_in)
    C_re = rng.standard_normal((N, N)) / np.sqrt(N)
    C_im = rng.standard_normal((N, N)) / np.sqrt(N)
    return {
        "log_nu": log_nu,
        "log_theta": log_theta,
        "log_gamma": log_gamma,
        "B_re": B_re,
        "B_im": B_im,
        "C_re": C_re,
        "C_im": C_im,
    }
