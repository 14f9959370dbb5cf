"""The conformance suite must be able to fail: with the ``ci`` profile it catches every
deliberately broken backend in :mod:`rtrrl.conformance.mutants`, and the replay snippet it
prints reproduces the failure."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rtrrl.conformance.mutants import MUTANTS

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


def run_suite(backend: str, cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    # A fresh working directory: no Hypothesis example database from earlier runs can help.
    env = {**os.environ, "HYPOTHESIS_PROFILE": "ci"}
    env.pop("RTRRL_BACKEND", None)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--pyargs",
            "rtrrl.conformance",
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


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.__name__)
def test_ci_profile_catches_mutant(mutant, tmp_path):
    result = run_suite(f"rtrrl.conformance.mutants:{mutant.__name__}", tmp_path, "-x")
    output = result.stdout + result.stderr
    assert result.returncode == 1, f"{mutant.bug!r} was not caught:\n{output[-3000:]}"
    assert "ConformanceError" in output, output[-3000:]
    assert "Replay this case with:" in output
    errors = [line for line in output.splitlines() if "ConformanceError: [" in line]
    assert errors and FIRST_SYMPTOM[mutant.__name__] in errors[0], errors


def replay_body(output: str) -> str:
    """The Python source of the first replay snippet in a pytest failure report."""
    match = re.search(r"Replay this case with:\n(.*?\n)E\s+PY\n", output, re.S)
    assert match, output[-3000:]
    lines = [re.sub(r"^E {7}", "", line) for line in match.group(1).splitlines()]
    return "\n".join(line for line in lines if not line.startswith(("python - <<", "PY")))


@pytest.fixture(scope="module")
def td_sign_failure(tmp_path_factory) -> str:
    return run_suite(
        "rtrrl.conformance.mutants:TdErrorSignFlipped", tmp_path_factory.mktemp("run"), "-x"
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
