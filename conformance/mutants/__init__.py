"""Deliberately broken backends: the conformance suite must catch every one of them.

Each mutant is the NumPy reference with one plausible porting bug. ``tests/conformance``
runs the suite against each with the ``ci`` profile and asserts that it fails, so a change
that makes the suite blind to one of these bugs is itself caught. Run one by hand with::

    pytest --pyargs rtrrl.conformance --backend rtrrl.conformance.mutants:TdErrorSignFlipped

The bugs are injected by swapping one function of :mod:`rtrrl_spec` for the duration of a
step (``unittest.mock.patch``), so the mutants share every other line with the reference.
"""

from __future__ import annotations

from typing import Any
from unittest import mock

import numpy as np

import rtrrl_spec
from rtrrl.backends.numpy import NumpyBackend
from rtrrl_spec import agent as agent_module
from rtrrl_spec import ctrnn, lru, optim

__all__ = [
    "MUTANTS",
    "TdErrorSignFlipped",
    "RfloMissingInverseTau",
    "AdamEpsilonInsideSqrt",
    "NoTraceResetAtDone",
    "Float64ComputedInFloat32",
    "LruInputSensitivityUsesLogGamma",
]


class _Mutant(NumpyBackend):
    """The reference with ``target`` replaced by ``replacement`` during each step."""

    target: str
    bug: str

    @staticmethod
    def replacement(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    @property
    def conformance_name(self) -> str:
        return f"{__name__}:{type(self).__name__}"

    def step(self, config, agent, obs, reward, done, noise):
        with mock.patch(self.target, self.replacement):
            return super().step(config, agent, obs, reward, done, noise)


class TdErrorSignFlipped(_Mutant):
    """``δ = v_prev − r − γv``: the TD error with the wrong sign."""

    name = "mutant-td-sign"
    bug = "wrong sign in the TD error"
    target = "rtrrl_spec.agent.td_error"
    _original = staticmethod(agent_module.td_error)

    @staticmethod
    def replacement(*args: Any, **kwargs: Any) -> np.ndarray:
        return -TdErrorSignFlipped._original(*args, **kwargs)


class RfloMissingInverseTau(_Mutant):
    """RFLO's immediate term ``φ' ζ`` not divided by ``tau``."""

    name = "mutant-rflo-tau"
    bug = "1/tau missing from the RFLO trace"
    target = "rtrrl_spec.ctrnn.rflo_update"

    @staticmethod
    def replacement(J_W, J_tau, tau, h, s, dt):
        rate = dt / tau
        J_W_next = (1.0 - rate)[:, None] * J_W + dt * (s.dphi[:, :, None] * s.zeta[:, None, :])
        J_tau_next = (1.0 - rate) * J_tau + dt * (h - s.phi) / (tau * tau)
        return J_W_next, J_tau_next


class AdamEpsilonInsideSqrt(_Mutant):
    """Adam with ``sqrt(ν̂ + ε)`` in the denominator instead of ``sqrt(ν̂) + ε``."""

    name = "mutant-adam-eps"
    bug = "Adam's epsilon inside the square root"
    target = "rtrrl_spec.agent.adam_step"

    @staticmethod
    def replacement(params, direction, mu, nu, count, lr, b1, b2, eps):
        count = count + 1
        t = float(count)
        new_params, new_mu, new_nu = {}, {}, {}
        for name, p in params.items():
            d = direction[name]
            m = b1 * mu[name] + (1.0 - b1) * d
            v = b2 * nu[name] + (1.0 - b2) * d * d
            m_hat, v_hat = m / (1.0 - b1**t), v / (1.0 - b2**t)
            new_params[name] = p + lr * m_hat / np.sqrt(v_hat + eps)
            new_mu[name], new_nu[name] = m, v
        return new_params, new_mu, new_nu, count


class NoTraceResetAtDone(_Mutant):
    """Eligibility traces carried across the episode boundary."""

    name = "mutant-no-reset"
    bug = "no trace reset at done"
    target = "rtrrl_spec.agent.decay_trace"

    @staticmethod
    def replacement(trace, done, gamma_lambda):
        return gamma_lambda * trace


class LruInputSensitivityUsesLogGamma(_Mutant):
    """The LRU's input sensitivity built with ``log γ`` where ``γ = exp(log γ)`` belongs.

    ``J_in' = λ J_in + log(γ) ⊗ x``: the kind of slip the authors' online LRU makes (its
    ``B`` memory uses the stored log-parameter directly).
    """

    name = "mutant-lru-gamma"
    bug = "log gamma instead of gamma in the LRU input sensitivity"
    target = "rtrrl_spec.lru.lru_sensitivity_update"
    _original = staticmethod(lru.lru_sensitivity_update)

    @staticmethod
    def replacement(J, h_re, h_im, x, s):
        new = LruInputSensitivityUsesLogGamma._original(J, h_re, h_im, x, s)
        wrong = np.log(s.norm)[None, :, None] * x[:, None, :]
        right = s.norm[None, :, None] * x[:, None, :]
        new["J_in_re"] = new["J_in_re"] - right + wrong
        return new


class Float64ComputedInFloat32(NumpyBackend):
    """Accepts and returns float64 arrays but computes the step in float32."""

    name = "mutant-float32"
    bug = "a float64 state silently computed in float32"

    @property
    def conformance_name(self) -> str:
        return f"{__name__}:{type(self).__name__}"

    def step(self, config, agent, obs, reward, done, noise):
        dtype = agent["W_A"].dtype

        def down(x):
            return x.astype(np.float32) if x.dtype == np.float64 else x

        def up(x):
            return np.asarray(x).astype(dtype) if np.asarray(x).dtype.kind == "f" else x

        new, action, info = rtrrl_spec.step(
            config,
            {k: down(v) for k, v in agent.items()},
            down(obs),
            down(reward),
            done,
            down(noise),
        )
        return ({k: up(v) for k, v in new.items()}, up(action), {k: up(v) for k, v in info.items()})


MUTANTS = (
    TdErrorSignFlipped,
    RfloMissingInverseTau,
    AdamEpsilonInsideSqrt,
    NoTraceResetAtDone,
    Float64ComputedInFloat32,
    LruInputSensitivityUsesLogGamma,
)

# Referenced so linters see the modules the patch targets name.
_PATCHED_MODULES = (ctrnn, lru, optim, agent_module)
