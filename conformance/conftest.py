"""Fixtures and Hypothesis profiles of the conformance suite.

The backend comes from ``--backend`` (see :mod:`rtrrl.conformance.plugin`), else
``RTRRL_BACKEND``, else ``numpy``. The profile comes from ``HYPOTHESIS_PROFILE``: ``dev``
(default, quick), ``ci`` (200 examples per property, derandomized so CI is repeatable),
``nightly`` (5000 examples) or ``mutants`` (``ci``'s examples without shrinking: what the
meta-tests of ``tests/conformance`` run against the deliberately broken backends, which need
the failure, not its smallest example).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, Phase, settings

from rtrrl.conformance.harness import step_variants
from rtrrl.conformance.plugin import resolve_backend

_COMMON = {
    "deadline": None,  # backends that compile (jit, torch.compile) are slow on first call
    "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
PROFILES = {"dev": 20, "ci": 200, "nightly": 5000, "mutants": 200}
settings.register_profile("dev", max_examples=PROFILES["dev"], **_COMMON)
settings.register_profile("ci", max_examples=PROFILES["ci"], derandomize=True, **_COMMON)
settings.register_profile("nightly", max_examples=PROFILES["nightly"], **_COMMON)
# Derandomized like `ci`, so it draws the same examples and fails where `ci` would; shrinking
# a failure costs more than finding it (tens of seconds per failing property).
settings.register_profile(
    "mutants",
    max_examples=PROFILES["mutants"],
    derandomize=True,
    phases=[p for p in Phase if p != Phase.shrink],
    **_COMMON,
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "dev")
if PROFILE not in PROFILES:
    raise pytest.UsageError(f"HYPOTHESIS_PROFILE={PROFILE!r}; choose one of {sorted(PROFILES)}")
settings.load_profile(PROFILE)

DTYPES = ("float32", "float64")


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest):
    """The backend under test."""
    return resolve_backend(request.config)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "dtype" in metafunc.fixturenames:
        be = resolve_backend(metafunc.config)
        metafunc.parametrize("dtype", [d for d in DTYPES if d in be.supported_dtypes])
    if "variant" in metafunc.fixturenames:
        metafunc.parametrize("variant", list(step_variants(resolve_backend(metafunc.config))))
