"""The part of the conformance suite pytest must load before it parses the command line.

Registered as a ``pytest11`` entry point, so ``pytest --pyargs rtrrl.conformance --backend jax``
knows ``--backend``: a ``conftest.py`` inside an installed package is read too late for that.
It only adds the option and a report header; fixtures and Hypothesis profiles live in the
suite's ``conftest.py`` and touch nothing outside the suite.
"""

from __future__ import annotations

import contextlib
import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("rtrrl conformance")
    group.addoption(
        "--backend",
        default=None,
        help="rtrrl conformance: backend under test, a registered name (numpy, jax, torch, "
        "keras-jax, keras-torch), an entry point name, or 'package.module:Backend'. "
        "Default: $RTRRL_BACKEND, else numpy.",
    )


def backend_name(config: pytest.Config) -> str:
    """The backend the user asked for."""
    return config.getoption("--backend") or os.environ.get("RTRRL_BACKEND") or "numpy"


def resolve_backend(config: pytest.Config):
    """The backend under test, resolved once per session through :func:`rtrrl.use`."""
    cached = getattr(config, "_rtrrl_backend", None)
    if cached is None:
        import rtrrl

        cached = rtrrl.use(backend_name(config))
        # Replay snippets must name the backend as the user did (e.g. "pkg.mod:Backend").
        if getattr(cached, "conformance_name", None) is None:
            # A backend may define its own, read-only conformance_name.
            with contextlib.suppress(AttributeError):
                cached.conformance_name = backend_name(config)
        config._rtrrl_backend = cached
    return cached


def pytest_report_header(config: pytest.Config) -> list[str]:
    args = " ".join(str(a) for a in config.args)
    if config.getoption("--backend") is None and "conformance" not in args:
        return []
    from rtrrl.conformance.harness import step_variants

    try:
        be = resolve_backend(config)
    except Exception as err:  # the tests raise the real error; the header just says so
        return [f"rtrrl conformance: backend {backend_name(config)!r} unavailable: {err}"]
    return [
        f"rtrrl conformance: backend {be.name} ({type(be).__module__}.{type(be).__qualname__}), "
        f"framework {be.version()}, device {be.device()}, dtypes {', '.join(be.supported_dtypes)}"
        f", step variants {', '.join(step_variants(be))}, "
        f"hypothesis profile {os.environ.get('HYPOTHESIS_PROFILE', 'dev')}"
    ]
