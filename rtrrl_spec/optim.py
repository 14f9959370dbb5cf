r"""Per-group global-norm clipping and Adam, written as ascent (the update is *added*).

Clipping a group's direction ``Δ`` (all its arrays together)::

    ‖Δ‖ = sqrt(Σ_arrays Σ_entries Δ²),   Δ ← Δ · c / max(‖Δ‖, c)

Adam with bias correction, ``ε`` outside the square root (as in optax and ``torch.optim.Adam``;
Keras's default differs, see ``docs/spec.md``)::

    t ← t + 1
    μ ← β1 μ + (1 − β1) Δ,     ν ← β2 ν + (1 − β2) Δ²
    θ ← θ + lr · (μ / (1 − β1^t)) / (sqrt(ν / (1 − β2^t)) + ε)
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["global_norm", "clip_by_global_norm", "adam_step"]


def global_norm(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """Euclidean norm of all entries of all arrays."""
    return np.sqrt(sum(np.sum(a * a) for a in arrays.values()))


def clip_by_global_norm(
    arrays: Mapping[str, np.ndarray], max_norm: float | None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Scale the group down to norm ``max_norm`` when it is longer; returns (arrays, norm)."""
    norm = global_norm(arrays)
    if max_norm is None:
        return dict(arrays), norm
    factor = max_norm / np.maximum(norm, max_norm)
    return {k: a * factor for k, a in arrays.items()}, norm


def adam_step(
    params: Mapping[str, np.ndarray],
    direction: Mapping[str, np.ndarray],
    mu: Mapping[str, np.ndarray],
    nu: Mapping[str, np.ndarray],
    count: np.ndarray,
    lr: float,
    b1: float,
    b2: float,
    eps: float,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """One Adam ascent step of a parameter group; returns (params, mu, nu, count)."""
    count = count + 1
    t = float(count)
    new_params, new_mu, new_nu = {}, {}, {}
    for name, p in params.items():
        d = direction[name]
        m = b1 * mu[name] + (1.0 - b1) * d
        v = b2 * nu[name] + (1.0 - b2) * d * d
        m_hat = m / (1.0 - b1**t)
        v_hat = v / (1.0 - b2**t)
        new_params[name] = p + lr * m_hat / (np.sqrt(v_hat) + eps)
        new_mu[name], new_nu[name] = m, v
    return new_params, new_mu, new_nu, count
