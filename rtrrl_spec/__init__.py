"""rtrrl_spec: the NumPy reference of one RTRRL agent step.

Everything a backend must compute is defined here, in plain NumPy, batch-first and
dtype-generic (float32 and float64). The public surface:

- :class:`Config`: the agent's hyper-parameters (paper defaults) and modes.
- :func:`layout`: the canonical name, shape, dtype and meaning of every array;
  :func:`params_of` / :func:`rnn_params` / :func:`body_params`: which arrays are parameters.
- :func:`init`: a fresh agent from a seed; :func:`draw_noise`: sampling noise.
- :func:`step`: one step, ``(config, agent, obs, reward, done, noise) -> (agent, action, info)``.
- :class:`SpecError`: what the public boundary raises for input it cannot use.
- :data:`STEP_FUNCTIONS`: the functions one step is made of, in reading order; every backend
  defines each under the same name (``docs/porting.md``), and :func:`step_functions` maps
  the names to the reference's own.
- :func:`structure_of` / :func:`numbers_of`: a config split into what decides the computation
  (static) and the plain numbers (traced by compiling backends), defined once here.

The equations are in each module's docstring and, in prose, in ``docs/spec.md``.
"""

from collections.abc import Callable

from rtrrl_spec import agent as _agent
from rtrrl_spec import ctrnn as _ctrnn
from rtrrl_spec import heads as _heads
from rtrrl_spec import lru as _lru
from rtrrl_spec import optim as _optim
from rtrrl_spec.agent import apply_update, check_inputs, step, step_unchecked
from rtrrl_spec.config import Config, SpecError, numbers_of, structure_of
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
    validate_layout,
)

__all__ = [
    "STEP_FUNCTIONS",
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
    "numbers_of",
    "params_of",
    "rnn_params",
    "step",
    "step_functions",
    "step_unchecked",
    "structure_of",
    "validate_agent",
    "validate_layout",
]

# The functions one step is made of, in the order a reader meets them: the CT-RNN body and its
# traces, the LRU body, the heads, the TD error, the eligibility traces, the optimizer, then
# the step that calls them. Each backend defines every one under this name, in this order,
# taking and returning what the reference's function takes and returns (in its own arrays).
STEP_FUNCTIONS: tuple[str, ...] = (
    "ctrnn_step",
    "rflo_update",
    "rtrl_update",
    "project_rflo",
    "project_rtrl",
    "lru_lambda",
    "lru_step",
    "lru_sensitivity_update",
    "project_lru",
    "critic_value",
    "policy_step",
    "td_error",
    "decay_trace",
    "global_norm",
    "clip_by_global_norm",
    "adam_step",
    "apply_update",
    "step",
)

_SPEC_MODULES = (_ctrnn, _lru, _heads, _agent, _optim)


def step_functions() -> dict[str, Callable[..., object]]:
    """The reference's own function for each name of :data:`STEP_FUNCTIONS`."""
    found = {}
    for name in STEP_FUNCTIONS:
        module = next(m for m in _SPEC_MODULES if name in m.__all__)
        found[name] = getattr(module, name)
    return found
