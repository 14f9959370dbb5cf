"""The conformance suite: does a backend compute exactly what the reference :mod:`rtrrl_spec` does?

Run it against any backend, in-tree or not::

    pytest --pyargs rtrrl.conformance --backend jax
    pytest --pyargs rtrrl.conformance --backend my_package.module:MyBackend
    HYPOTHESIS_PROFILE=ci pytest --pyargs rtrrl.conformance --backend numpy

See ``docs/conformance.md`` for what each property checks and how to read a failure.
"""

from rtrrl.conformance.cases import Case, cases, configs
from rtrrl.conformance.harness import (
    ConformanceError,
    check_free_running,
    check_teacher_forced,
    replay,
)
from rtrrl.conformance.tolerances import TOLERANCES, Tolerance, tolerance

__all__ = [
    "TOLERANCES",
    "Case",
    "ConformanceError",
    "Tolerance",
    "cases",
    "check_free_running",
    "check_teacher_forced",
    "configs",
    "replay",
    "tolerance",
]
