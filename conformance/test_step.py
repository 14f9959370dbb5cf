"""One step, from states reached by a few reference steps (traces, Jacobians and Adam moments
all non-zero), for every config the strategies draw."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from rtrrl.conformance.cases import cases
from rtrrl.conformance.harness import check_teacher_forced


@given(data=st.data())
def test_one_step(backend, dtype, variant, data):
    """Agent, action and info of one step equal the reference's within the tolerance table."""
    case = data.draw(cases(dtype), label="case")
    check_teacher_forced(backend, case, variant, kind="one_step")


@given(data=st.data())
def test_action_sampling_from_explicit_noise(backend, dtype, variant, data):
    """The action follows the noise exactly, including noise near the ends of its domain."""
    case = data.draw(cases(dtype, warmup=st.integers(0, 2), extreme_noise=True), label="case")
    check_teacher_forced(backend, case, variant, kind="sampling")
