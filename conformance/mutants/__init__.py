"""Deliberately broken backends: the conformance suite must catch every one of them.

Each mutant is the NumPy reference with one plausible porting bug. ``tests/conformance``
runs the suite against each with the ``ci`` profile and asserts that it fails, so a change
that makes the suite blind to one of these bugs is itself caught. Run one by hand with::

    pytest --pyargs rtrrl.conformance --backend rtrrl.conformance.mutants:TdErrorSignFlipped

The bugs are injected by swapping one function of :mod:`rtrrl_spec` for the duration of a
step (``unittest.mock.patch``), so the mutants share every other line with the reference. Their
``step_functions()`` are the reference's with the same function swapped, so the per-function
suite (``test_functions.py``) sees the bug too, and names the function it is in.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any
from unittest import mock

import numpy as np

import rtrrl_spec
from rtrrl.backends.numpy import NumpyBackend
from rtrrl.conformance.functions import map_leaves
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

    def step_functions(self) -> dict[str, Callable[..., Any]]:
        """The reference's functions, the mutated one swapped in, and the mutant's ``step``."""
        mutated = self.target.rpartition(".")[2]
        return {**rtrrl_spec.step_functions(), mutated: self.replacement, "step": self.step}


class TdErrorSignFlipped(_Mutant):
    """``δ = v_prev − r − γv``: the TD error with the wrong sign."""

    name = "mutant-td-sign"
    bug = "wrong sign in the TD error"
    target = "rtrrl_spec.agent.td_error"
    _original = staticmethod(agent_module.td_error)

    @staticmethod
    def replacement(reward, done, value, v_prev, gamma, reward_rate=0.0) -> np.ndarray:
        return -TdErrorSignFlipped._original(reward, done, value, v_prev, gamma, reward_rate)


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

    def step_functions(self) -> dict[str, Callable[..., Any]]:
        """Every reference function computed in float32 when given float64 arrays."""
        functions = {k: _in_float32(f) for k, f in rtrrl_spec.step_functions().items()}
        return {**functions, "step": self.step}


def _is_float64(x: Any) -> bool:
    return isinstance(x, np.ndarray) and x.dtype == np.float64


def _narrow(x: Any) -> Any:
    return x.astype(np.float32) if _is_float64(x) else x


def _widen(x: Any) -> Any:
    return np.asarray(x, np.float64) if np.asarray(x).dtype == np.float32 else x


def _in_float32(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` on float64 arrays cast down to float32, its float results cast back up."""

    def wrapped(*args: Any) -> Any:
        leaves: list[Any] = []
        map_leaves(leaves.append, args)
        out = fn(*map_leaves(_narrow, args))
        return map_leaves(_widen, out) if any(map(_is_float64, leaves)) else out

    # The suite reads the parameters' names: they are the reference's.
    wrapped.__signature__ = inspect.signature(fn)  # type: ignore[attr-defined]
    return wrapped


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
