"""Trajectories: teacher-forced (re-synchronized from the reference at every step) and
free-running (the backend carries its own state)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from rtrrl.conformance.cases import cases
from rtrrl.conformance.harness import check_free_running, check_teacher_forced


@given(data=st.data())
def test_teacher_forced_trajectory(backend, dtype, variant, data):
    """Every step of a trajectory, each started from the reference's state."""
    case = data.draw(cases(dtype, steps=st.integers(2, 8), warmup=st.integers(0, 2)), label="case")
    check_teacher_forced(backend, case, variant, kind="teacher_forced")


@given(data=st.data())
def test_free_running_trajectory(backend, dtype, variant, data):
    """The backend's own trajectory stays with the reference's (tolerance grows per step in
    float32; float64 stays tight)."""
    case = data.draw(cases(dtype, steps=st.integers(2, 6), warmup=st.integers(0, 2)), label="case")
    check_free_running(backend, case, variant)
