"""The conformance suite must be able to fail: with the ``ci`` profile it catches every
deliberately broken backend in :mod:`rtrrl.conformance.mutants`, and the replay snippet it
prints reproduces the failure. The whole-step properties catch each on the array the bug
changes first; the per-function suite (``test_functions.py``) catches each in the function
that holds the bug, by name."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from rtrrl.conformance.mutants import MUTANTS
from rtrrl_spec import STEP_FUNCTIONS

pytestmark = pytest.mark.slow

# The array each mutant must be caught on first (the earliest quantity its bug changes).
FIRST_SYMPTOM = {
    "TdErrorSignFlipped": "td_error",
    "RfloMissingInverseTau": "J_W",
    "AdamEpsilonInsideSqrt": "W_A",
    "NoTraceResetAtDone": "e_",
    "Float64ComputedInFloat32": "float64",
    "LruInputSensitivityUsesLogGamma": "J_in_re",
}

# The spec function each mutant breaks, and the dtypes it is wrong in: the per-function suite
# must fail first there (functions run in STEP_FUNCTIONS order, float32 then float64).
MUTATED = {
    "TdErrorSignFlipped": ("td_error", ("float32", "float64")),
    "RfloMissingInverseTau": ("rflo_update", ("float32", "float64")),
    "AdamEpsilonInsideSqrt": ("adam_step", ("float32", "float64")),
    "NoTraceResetAtDone": ("decay_trace", ("float32", "float64")),
    # Wrong in every function, in float64 only: the first function of the spec fails.
    "Float64ComputedInFloat32": (STEP_FUNCTIONS[0], ("float64",)),
    "LruInputSensitivityUsesLogGamma": ("lru_sensitivity_update", ("float32", "float64")),
}


def run_suite(
    backend: str, cwd: Path, *extra: str, suite: str = "rtrrl.conformance", profile: str = "ci"
) -> subprocess.CompletedProcess[str]:
    # A fresh working directory: no Hypothesis example database from earlier runs can help.
    env = {**os.environ, "HYPOTHESIS_PROFILE": profile}
    env.pop("RTRRL_BACKEND", None)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--pyargs",
            suite,
            "--backend",
            backend,
            "-p",
            "no:cacheprovider",
            "-q",
            *extra,
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


# The whole-step properties, without the per-function suite (checked by name below).
WHOLE_STEP = ("-k", "not test_functions")


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.__name__)
def test_ci_profile_catches_mutant(mutant, tmp_path):
    result = run_suite(f"rtrrl.conformance.mutants:{mutant.__name__}", tmp_path, "-x", *WHOLE_STEP)
    output = result.stdout + result.stderr
    assert result.returncode == 1, f"{mutant.bug!r} was not caught:\n{output[-3000:]}"
    assert "ConformanceError" in output, output[-3000:]
    assert "Replay this case with:" in output
    errors = [line for line in output.splitlines() if "ConformanceError: [" in line]
    assert errors and FIRST_SYMPTOM[mutant.__name__] in errors[0], errors


def failures(report: Path) -> list[tuple[str, str]]:
    """``(test name, failure message)`` of each failed test in a JUnit XML report."""
    cases = ET.parse(report).iter("testcase")
    return [
        (case.get("name", ""), failure.get("message", ""))
        for case in cases
        if (failure := case.find("failure")) is not None
    ]


def function_suite(backend: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], list]:
    """The per-function suite (``mutants`` profile: ``ci``'s examples, no shrinking), up to
    its first failure."""
    report = cwd / "report.xml"
    result = run_suite(
        backend,
        cwd,
        "-x",
        f"--junitxml={report}",
        suite="rtrrl.conformance.test_functions",
        profile="mutants",
    )
    return result, failures(report)


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.__name__)
def test_per_function_suite_names_the_mutated_function(mutant, tmp_path):
    result, failed = function_suite(f"rtrrl.conformance.mutants:{mutant.__name__}", tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, f"{mutant.bug!r} was not caught:\n{output[-3000:]}"
    name, dtypes = MUTATED[mutant.__name__]
    assert len(failed) == 1, failed  # -x: the run stops at the first failure
    test, message = failed[0]
    assert test.startswith("test_function[") and f"-{name}]" in test, (test, message)
    assert any(f"[{dtype}-" in test for dtype in dtypes), test
    # The error's message starts with the function's name, then says what differs where.
    assert message.startswith(f"rtrrl.conformance.harness.ConformanceError: {name} ["), message
    assert "array " in message and " at index " in message, message
    assert "Replay this case with:" in output


def test_per_function_replay_reproduces_and_passes_on_the_reference(tmp_path):
    result, failed = function_suite("rtrrl.conformance.mutants:TdErrorSignFlipped", tmp_path)
    assert failed, result.stdout[-3000:]
    body = replay_body(result.stdout)
    assert "replay_function(" in body and "'td_error'" in body, body
    replay = subprocess.run(
        [sys.executable, "-c", body], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert replay.returncode != 0
    assert "ConformanceError: td_error [" in replay.stderr, replay.stderr
    mutant = "'rtrrl.conformance.mutants:TdErrorSignFlipped'"
    again = subprocess.run(
        [sys.executable, "-c", body.replace(mutant, "'numpy'")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr
    assert "td_error case passes on numpy" in again.stdout


def replay_body(output: str) -> str:
    """The Python source of the first replay snippet in a pytest failure report."""
    match = re.search(r"Replay this case with:\n(.*?\n)E\s+PY\n", output, re.S)
    assert match, output[-3000:]
    lines = [re.sub(r"^E {7}", "", line) for line in match.group(1).splitlines()]
    return "\n".join(line for line in lines if not line.startswith(("python - <<", "PY")))


@pytest.fixture(scope="module")
def td_sign_failure(tmp_path_factory) -> str:
    return run_suite(
        "rtrrl.conformance.mutants:TdErrorSignFlipped",
        tmp_path_factory.mktemp("run"),
        "-x",
        *WHOLE_STEP,
    ).stdout


def test_replay_snippet_reproduces_the_failure(td_sign_failure, tmp_path):
    replay = subprocess.run(
        [sys.executable, "-c", replay_body(td_sign_failure)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert replay.returncode != 0
    assert "ConformanceError" in replay.stderr and "td_error" in replay.stderr, replay.stderr


def test_replay_passes_on_the_reference(td_sign_failure, tmp_path):
    # The same case against the true backend passes: the failure was the mutant's.
    body = replay_body(td_sign_failure)
    mutant = "'rtrrl.conformance.mutants:TdErrorSignFlipped'"
    assert mutant in body
    replay = subprocess.run(
        [sys.executable, "-c", body.replace(mutant, "'numpy'")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert replay.returncode == 0, replay.stderr
    assert "case passes on numpy" in replay.stdout
