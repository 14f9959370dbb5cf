"""The conformance suite: does a backend compute exactly what the reference :mod:`rtrrl_spec` does,
function by function (:mod:`rtrrl.conformance.functions`) and step by step
(:mod:`rtrrl.conformance.harness`)?

Run it against any backend, in-tree or not::

    pytest --pyargs rtrrl.conformance --backend jax
    pytest --pyargs rtrrl.conformance --backend my_package.module:MyBackend
    pytest --pyargs rtrrl.conformance.test_functions --backend torch   # per function only
    HYPOTHESIS_PROFILE=ci pytest --pyargs rtrrl.conformance --backend numpy

A new backend starts as a copy of :mod:`rtrrl.conformance.template` (``docs/porting.md``).

See ``docs/conformance.md`` for what each property checks and how to read a failure.
"""

from rtrrl.conformance.cases import Case, cases, configs
from rtrrl.conformance.functions import check_function, replay_function
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
    "check_function",
    "check_teacher_forced",
    "configs",
    "replay",
    "replay_function",
    "tolerance",
]
