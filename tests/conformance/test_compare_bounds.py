"""The harness never passes a value against a bound it cannot compute."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis.errors import UnsatisfiedAssumption

import rtrrl_spec
from rtrrl.conformance import harness
from rtrrl.conformance.cases import Case
from rtrrl.conformance.tolerances import tolerance


def _context() -> harness._Context:
    import rtrrl

    case = Case(rtrrl_spec.Config(obs_dim=1, n_actions=2), 1, 0, 0, 1, "float32")
    return harness._Context(rtrrl.use("numpy"), "step", "one_step", case)


def test_a_wrong_value_fails_against_a_finite_bound() -> None:
    with pytest.raises(harness.ConformanceError, match="out of tolerance"):
        harness._compare(
            _context(),
            0,
            "W",
            np.array([5.0]),
            np.array([1.0]),
            np.zeros(1),
            tolerance("float32", "state"),
        )


@pytest.mark.parametrize(
    ("expected", "natural"),
    [
        (np.array([1.0, np.inf]), np.zeros(2)),  # the float64 reference overflowed
        (np.array([1.0, 2.0]), np.array([0.0, np.nan])),  # the float32 one did
    ],
)
def test_a_reference_that_overflowed_rejects_the_example(expected, natural) -> None:
    # Before: NaN in the bound made `err > allowed` false, so [5, 7] "matched" anything.
    with pytest.raises(UnsatisfiedAssumption):
        harness._compare(
            _context(),
            0,
            "W",
            np.array([5.0, 7.0]),
            expected,
            natural,
            tolerance("float32", "state"),
        )
