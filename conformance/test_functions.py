"""Each function of ``rtrrl_spec.STEP_FUNCTIONS``, one by one: the backend's translation
(``backend.step_functions()[name]``) against the reference's, on the arguments the reference
passes it inside a step (see :mod:`rtrrl.conformance.functions`). The test ids name the
function, and so does the first line of a failure."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtrrl.conformance.functions import check_function, check_signature, function_cases, n_calls
from rtrrl_spec import STEP_FUNCTIONS

# A function is a few lines of math with few code paths, so it needs fewer examples than a
# whole step (a fifth of the profile's: 4 under `dev`, 40 under `ci`); and every example of a
# compiling backend (XLA) pays a compile of the function. The whole step is the whole-step
# properties' subject (test_step.py, test_trajectories.py): here it only needs to be shown
# that step_functions()["step"] is that step, and each example compiles a whole step.
EXAMPLES = max(4, settings.default.max_examples // 5)
STEP_EXAMPLES = max(2, EXAMPLES // 4)
FUNCTIONS = [name for name in STEP_FUNCTIONS if name != "step"]


def test_step_functions_are_the_spec_names(backend):
    """``step_functions()`` maps exactly the names of ``rtrrl_spec.STEP_FUNCTIONS``."""
    names = set(backend.step_functions())
    missing = [n for n in STEP_FUNCTIONS if n not in names]
    extra = sorted(names - set(STEP_FUNCTIONS))
    assert not missing and not extra, f"missing {missing}, not in the spec {extra}"


@pytest.mark.parametrize("name", STEP_FUNCTIONS)
def test_signature(backend, name):
    """Same positional parameters as the reference function of the same name."""
    if not check_signature(backend, name):
        pytest.skip(f"{name}'s signature cannot be read")


@pytest.mark.parametrize("name", FUNCTIONS)
@settings(max_examples=EXAMPLES)
@given(data=st.data())
def test_function(backend, dtype, name, data):
    """Every output of the backend's function equals the reference's within the tolerance
    table, on a call the reference's step makes from a warmed-up state."""
    case = data.draw(function_cases(name, dtype), label="case")
    call = data.draw(st.integers(0, n_calls(name, case) - 1), label="call")
    check_function(backend, name, case, call)


@settings(max_examples=STEP_EXAMPLES)
@given(data=st.data())
def test_function_step(backend, dtype, data):
    """``step_functions()["step"]``, the last of the spec's functions, is the whole step: its
    agent, action and info as the whole-step properties check them."""
    check_function(backend, "step", data.draw(function_cases("step", dtype), label="case"))
