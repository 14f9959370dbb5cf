"""rtrrl_spec: the NumPy reference of one RTRRL agent step.

Everything a backend must compute is defined here, in plain NumPy, batch-first and
dtype-generic (float32 and float64). The public surface:

- :class:`Config`: the agent's hyper-parameters (paper defaults) and modes.
- :func:`layout`: the canonical name, shape, dtype and meaning of every array;
  :func:`params_of` / :func:`rnn_params` / :func:`body_params`: which arrays are parameters.
- :func:`init`: a fresh agent from a seed; :func:`draw_noise`: sampling noise.
- :func:`step`: one step, ``(config, agent, obs, reward, done, noise) -> (agent, action, info)``.
- :class:`SpecError`: what the public boundary raises for input it cannot use.

The equations are in each module's docstring and, in prose, in ``docs/spec.md``.
"""

from rtrrl_spec.agent import apply_update, check_inputs, step, step_unchecked
from rtrrl_spec.config import Config, SpecError
from rtrrl_spec.initialize import draw_noise, init, noise_shape
from rtrrl_spec.layout import (
    CTRNN_PARAMS,
    FLOAT_DTYPES,
    LRU_PARAMS,
    TD_PARAMS,
    ArraySpec,
    body_params,
    layout,
    optimizer_groups,
    params_of,
    rnn_params,
    validate_agent,
)

__all__ = [
    "CTRNN_PARAMS",
    "FLOAT_DTYPES",
    "LRU_PARAMS",
    "TD_PARAMS",
    "ArraySpec",
    "Config",
    "SpecError",
    "apply_update",
    "body_params",
    "check_inputs",
    "draw_noise",
    "init",
    "layout",
    "optimizer_groups",
    "noise_shape",
    "params_of",
    "rnn_params",
    "step",
    "step_unchecked",
    "validate_agent",
]
