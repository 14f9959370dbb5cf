r"""The continuous-time RNN body and its online Jacobian traces (RFLO and RTRL).

All functions are pure and batch-first: ``x`` is ``(B, I)``, ``h`` is ``(B, N)``.

CT-RNN, one forward-Euler step of size ``dt``::

    ζ  = [x, h, 1]                      (B, Z)
    u  = W ζ,   φ = tanh(u),  φ' = 1 − φ²
    h' = h + dt · (φ − h) / τ

The Jacobian trace ``J ≈ dh/dθ`` for ``θ = (W, τ)``, carried forward online:

RTRL (exact for fixed θ), with ``f(h, θ) = (φ(Wζ) − h) / τ``::

    J' = (I + dt ∂f/∂h) J + dt ∂f/∂θ
    ∂f_i/∂h_l   = (φ'_i W_h[i, l] − δ_il) / τ_i          (W_h: the N columns of W on h)
    ∂f_i/∂W_jk  = δ_ij φ'_i ζ_k / τ_i
    ∂f_i/∂τ_j   = −δ_ij (φ_i − h_i) / τ_i²

RFLO keeps only the diagonal ``i = j`` and drops ``W_h`` from ``∂f/∂h``::

    J_W'[i, k] = (1 − dt/τ_i) J_W[i, k] + (dt/τ_i) φ'_i ζ_k
    J_τ'[i]    = (1 − dt/τ_i) J_τ[i]    + dt (h_i − φ_i) / τ_i²

so RFLO equals RTRL's diagonal whenever ``W_h = 0``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["CTRNNStep", "ctrnn_step", "rflo_update", "rtrl_update", "project_rflo", "project_rtrl"]


class CTRNNStep(NamedTuple):
    """What one Euler step computes, kept for the Jacobian update."""

    zeta: np.ndarray  # (B, Z)
    phi: np.ndarray  # (B, N)
    dphi: np.ndarray  # (B, N)  φ' = 1 − φ²
    h_next: np.ndarray  # (B, N)


def ctrnn_step(
    W: np.ndarray, tau: np.ndarray, h: np.ndarray, x: np.ndarray, dt: float
) -> CTRNNStep:
    """One forward-Euler step ``h' = h + dt (tanh(W [x, h, 1]) − h) / τ``."""
    ones = np.ones(h.shape[:-1] + (1,), dtype=h.dtype)
    zeta = np.concatenate([x, h, ones], axis=-1)
    phi = np.tanh(zeta @ W.T)
    h_next = h + dt * (phi - h) / tau
    return CTRNNStep(zeta, phi, 1.0 - phi * phi, h_next)


def rflo_update(
    J_W: np.ndarray, J_tau: np.ndarray, tau: np.ndarray, h: np.ndarray, s: CTRNNStep, dt: float
) -> tuple[np.ndarray, np.ndarray]:
    """RFLO: ``J_W (B,N,Z)``, ``J_τ (B,N)`` → their values at ``h'`` (see module docstring)."""
    rate = dt / tau  # (N,)
    J_W_next = (1.0 - rate)[:, None] * J_W + rate[:, None] * (
        s.dphi[:, :, None] * s.zeta[:, None, :]
    )
    J_tau_next = (1.0 - rate) * J_tau + dt * (h - s.phi) / (tau * tau)
    return J_W_next, J_tau_next


def rtrl_update(
    J_W: np.ndarray,
    J_tau: np.ndarray,
    W: np.ndarray,
    tau: np.ndarray,
    h: np.ndarray,
    s: CTRNNStep,
    dt: float,
    input_dim: int,
) -> tuple[np.ndarray, np.ndarray]:
    """RTRL: ``J_W (B,N,N,Z)``, ``J_τ (B,N,N)`` → their values at ``h'`` (module docstring)."""
    N = tau.shape[0]
    W_h = W[:, input_dim : input_dim + N]
    eye = np.eye(N, dtype=W.dtype)
    # M = I + dt ∂f/∂h, one (N, N) matrix per environment.
    M = eye + dt * (s.dphi[:, :, None] * W_h[None] - eye) / tau[None, :, None]
    J_W_next = np.einsum("bil,bljk->bijk", M, J_W)
    J_tau_next = np.einsum("bil,blj->bij", M, J_tau)
    idx = np.arange(N)
    J_W_next[:, idx, idx, :] += dt * s.dphi[:, :, None] * s.zeta[:, None, :] / tau[None, :, None]
    J_tau_next[:, idx, idx] += dt * (h - s.phi) / (tau * tau)
    return J_W_next, J_tau_next


def project_rflo(
    signal: np.ndarray, J_W: np.ndarray, J_tau: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Parameter gradient of ``signal · h'`` through RFLO's local trace: row ``i`` times ``g_i``."""
    return signal[:, :, None] * J_W, signal * J_tau


def project_rtrl(
    signal: np.ndarray, J_W: np.ndarray, J_tau: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Parameter gradient of ``signal · h'`` through the full RTRL trace: ``Σ_i g_i J[i]``."""
    return np.einsum("bi,bijk->bjk", signal, J_W), np.einsum("bi,bij->bj", signal, J_tau)
