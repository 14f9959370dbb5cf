r"""Linear actor and critic heads on the features ``f`` (``h'``, or ``x`` for the linear body).

Critic: ``v = f · W_C + b_C``.

Discrete actor (``K`` logits)::

    ℓ = f W_A,  p = softmax(ℓ),  a = argmax_k (ℓ_k − log(−log ξ_k)),  ξ ~ U(0, 1)^K
    ∂ ln π(a) / ∂ℓ_k = [k = a] − p_k
    H = −Σ_k p_k ln p_k,         ∂H/∂ℓ_k = −p_k (ln p_k + H)

Continuous actor (``K = 2D`` outputs ``[m, s] = f W_A``)::

    μ = lo + (hi − lo) sigmoid(m)     (bounded; μ = m when unbounded)
    σ = softplus(−2 + 4 sigmoid(s))
    a = μ + σ ⊙ ξ,  ξ ~ N(0, I);  the environment receives clip(a, lo, hi)
    ln π(a) = Σ_d −ξ_d²/2 − ln σ_d − ln(2π)/2         (since (a − μ)/σ = ξ)
    ∂ ln π/∂μ = ξ/σ,   ∂ ln π/∂σ = (ξ² − 1)/σ
    H = Σ_d ln σ_d + ln(2πe)/2,   ∂H/∂σ = 1/σ,  ∂H/∂μ = 0

and the chain rule through ``μ(m)`` and ``σ(s)`` gives the gradients with respect to the
actor outputs. All gradients here are with respect to the *outputs*; the parameter gradients
are outer products with ``f`` (``∇_{W_A} = f ⊗ ∂/∂out``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rtrrl_spec.config import Config

__all__ = ["PolicyStep", "critic_value", "policy_step", "sigmoid", "softplus"]

_HALF_LOG_2PI = 0.5 * np.log(2.0 * np.pi)


class PolicyStep(NamedTuple):
    """Sample and output-space gradients of one policy evaluation."""

    action: np.ndarray  # what the environment receives: (B,) int32, or (B, D) clipped
    sample: np.ndarray  # the sample whose log-probability is differentiated
    log_prob: np.ndarray  # (B,)
    entropy: np.ndarray  # (B,)
    dlogp_dout: np.ndarray  # (B, K)  ∂ ln π(a)/∂(actor outputs)
    dent_dout: np.ndarray  # (B, K)  ∂H/∂(actor outputs)
    scale: np.ndarray  # (B,)  var_scaling factor min(mean σ, 1); ones when not applied


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic function, stable for large ``|z|``."""
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def softplus(z: np.ndarray) -> np.ndarray:
    """``ln(1 + e^z)``, stable for large ``|z|``."""
    return np.logaddexp(z, 0.0).astype(z.dtype, copy=False)


def critic_value(f: np.ndarray, W_C: np.ndarray, b_C: np.ndarray) -> np.ndarray:
    """``v = f · W_C + b_C`` for each environment: ``(B,)``."""
    return f @ W_C[:, 0] + b_C[0]


def policy_step(config: Config, out: np.ndarray, noise: np.ndarray) -> PolicyStep:
    """Sample an action from the actor outputs ``out`` (B, K) and differentiate ``ln π``, ``H``."""
    if config.discrete:
        return _discrete(out, noise)
    return _continuous(config, out, noise)


def _discrete(logits: np.ndarray, noise: np.ndarray) -> PolicyStep:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    p = np.exp(log_p)
    action = np.argmax(logits - np.log(-np.log(noise)), axis=-1).astype(np.int32)
    onehot = np.eye(logits.shape[-1], dtype=logits.dtype)[action]
    entropy = -(p * log_p).sum(axis=-1)
    return PolicyStep(
        action=action,
        sample=action,
        log_prob=np.take_along_axis(log_p, action[:, None].astype(np.intp), axis=-1)[:, 0],
        entropy=entropy,
        dlogp_dout=onehot - p,
        dent_dout=-p * (log_p + entropy[:, None]),
        scale=np.ones_like(entropy),
    )


def _continuous(config: Config, out: np.ndarray, noise: np.ndarray) -> PolicyStep:
    D = int(config.action_dim)  # type: ignore[arg-type]
    m, s = out[:, :D], out[:, D:]
    dtype = out.dtype
    if config.bounded:
        lo = np.asarray(config.action_low, dtype=dtype)
        hi = np.asarray(config.action_high, dtype=dtype)
        sig_m = sigmoid(m)
        mu = lo + (hi - lo) * sig_m
        dmu_dm = (hi - lo) * sig_m * (1.0 - sig_m)
    else:
        mu, dmu_dm = m, np.ones_like(m)
    sig_s = sigmoid(s)
    pre_sigma = -2.0 + 4.0 * sig_s
    sigma = softplus(pre_sigma)
    dsigma_ds = sigmoid(pre_sigma) * 4.0 * sig_s * (1.0 - sig_s)

    sample = mu + sigma * noise
    action = np.clip(sample, lo, hi) if config.bounded else sample
    log_prob = (-0.5 * noise * noise - np.log(sigma) - _HALF_LOG_2PI).sum(axis=-1)
    entropy = (np.log(sigma) + 0.5 + _HALF_LOG_2PI).sum(axis=-1)
    dlogp_dout = np.concatenate(
        [noise / sigma * dmu_dm, (noise * noise - 1.0) / sigma * dsigma_ds], axis=-1
    )
    dent_dout = np.concatenate([np.zeros_like(m), dsigma_ds / sigma], axis=-1)
    if config.var_scaling:
        scale = np.minimum(sigma.mean(axis=-1), 1.0)
    else:
        scale = np.ones(out.shape[0], dtype=dtype)
    return PolicyStep(action, sample, log_prob, entropy, dlogp_dout, dent_dout, scale)
