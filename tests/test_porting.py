"""The porting kit, end to end: an out-of-tree backend package made as docs/porting.md says
(copy rtrrl.conformance.template, translate each function, register an entry point), found by
the registry and validated by the per-function and whole-step conformance suites.
"""

from __future__ import annotations

import importlib.util
import os
import site
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import rtrrl.conformance.template
from rtrrl_spec import STEP_FUNCTIONS

pytestmark = pytest.mark.slow

PYPROJECT = """
[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "rtrrl-mybackend"
version = "0.0.1"
requires-python = ">=3.11"

[project.entry-points."rtrrl.backends"]
mybackend = "rtrrl_mybackend:Backend"
mybroken = "rtrrl_mybroken:Backend"

[tool.setuptools]
py-modules = ["rtrrl_mybackend", "rtrrl_mybroken"]
"""

# Step 1 of docs/porting.md: copy the template. Step 2 would translate each function to a
# framework; the copy stays NumPy, which is a port the suite must pass all the same.
TEMPLATE = Path(rtrrl.conformance.template.__file__).read_text()
NAME = 'name = "template"'
TD_ERROR = "return (reward - reward_rate + gamma * not_done * value - v_prev)"


def ported(name: str, source: str = TEMPLATE) -> str:
    assert source.count(NAME) == 1, "the template's Backend no longer says " + NAME
    return source.replace(NAME, f"name = {name!r}")


def broken() -> str:
    """The port with one bug: the TD error's sign (the per-function suite must name it)."""
    assert TEMPLATE.count(TD_ERROR) == 1, "the template's td_error changed: update TD_ERROR"
    return ported("mybroken", TEMPLATE.replace(TD_ERROR, TD_ERROR.replace("return (", "return -(")))


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=540, **kwargs)


@pytest.fixture(scope="module")
def porter_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv that sees this environment's packages and has the throwaway backend installed.

    A fresh venv keeps the install out of the environment running the tests. It reaches
    rtrrl through a .pth line that calls site.addsitedir on this environment's site-packages,
    so that .pth files there (editable installs) work too, which --system-site-packages alone
    would not give when the tests themselves run in a venv.
    """
    root = tmp_path_factory.mktemp("porting")
    package = root / "rtrrl-mybackend"
    package.mkdir()
    (package / "pyproject.toml").write_text(PYPROJECT)
    (package / "rtrrl_mybackend.py").write_text(ported("mybackend"))
    (package / "rtrrl_mybroken.py").write_text(broken())

    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)]).check_returncode()
    python = venv / "bin" / "python"
    venv_site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]
        ).stdout.strip()
    )
    parents = [p for p in site.getsitepackages() if Path(p).is_dir()]
    lines = [f"import site; site.addsitedir({p!r})" for p in parents]
    (venv_site / "_rtrrl_parent_env.pth").write_text("\n".join(lines) + "\n")

    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps"]
    if importlib.util.find_spec("setuptools") is not None:
        install.append("--no-build-isolation")  # offline when this env can build it
    done = _run([*install, str(package)])
    assert done.returncode == 0, done.stdout + done.stderr
    return python


def test_entry_point_backend_is_found(porter_env: Path) -> None:
    code = textwrap.dedent(
        """
        import rtrrl
        be = rtrrl.use("mybackend")
        print(type(be).__module__, be.name, rtrrl.current() is be)
        print(rtrrl.available_backends())
        functions = be.step_functions()
        print(" ".join(functions))
        print({fn.__module__ for fn in functions.values()})
        """
    )
    done = _run([str(porter_env), "-c", code], cwd=porter_env.parents[2])
    assert done.returncode == 0, done.stderr
    first, second, names, modules = done.stdout.splitlines()
    assert first == "rtrrl_mybackend mybackend True"
    assert "'mybackend': True" in second
    # The spec's functions, in order, and every one the port's own (not the reference's).
    assert names.split() == list(STEP_FUNCTIONS)
    assert modules == "{'rtrrl_mybackend'}"


def test_backend_is_not_visible_outside_its_venv() -> None:
    # The install went into the throwaway venv, not into the environment running the tests.
    assert importlib.util.find_spec("rtrrl_mybackend") is None


def _conformance(python: Path, backend: str, *args: str) -> tuple[int, str, list]:
    """Run the suite in the porter's venv: exit code, output, and (test name, failure message
    or None) for every test that ran."""
    env = {**os.environ, "HYPOTHESIS_PROFILE": "dev"}
    env.pop("RTRRL_BACKEND", None)  # --backend must be what selects it
    report = python.parents[2] / f"report-{backend}-{len(args)}.xml"
    suite = ["-m", "pytest", "--pyargs", "rtrrl.conformance", "--backend", backend]
    done = _run(
        [str(python), *suite, "-q", "-p", "no:cacheprovider", f"--junitxml={report}", *args],
        cwd=python.parents[2],  # outside the repository: no repo conftest or config
        env=env,
    )
    tests = [(case.get("name", ""), _failure(case)) for case in ET.parse(report).iter("testcase")]
    return done.returncode, done.stdout + done.stderr, tests


def _failure(case: ET.Element) -> str | None:
    # `is not None`: an element without children is falsy.
    found = [e for e in (case.find("failure"), case.find("error")) if e is not None]
    return found[0].get("message", "") if found else None


def test_conformance_suite_passes_for_the_ported_backend(porter_env: Path) -> None:
    code, output, tests = _conformance(porter_env, "mybackend")
    assert code == 0, output[-5000:]
    assert all(failure is None for _, failure in tests), output[-5000:]
    names = [name for name, _ in tests]
    # The per-function suite ran every function, and the whole-step properties ran too.
    for function in STEP_FUNCTIONS[:-1]:
        assert any(n.startswith("test_function[") and n.endswith(f"-{function}]") for n in names)
    assert any(n.startswith("test_function_step[") for n in names), names
    assert any(n.startswith("test_one_step[") for n in names), names
    assert any(n.startswith("test_free_running_trajectory[") for n in names), names


def test_per_function_suite_names_the_function_of_a_broken_port(porter_env: Path) -> None:
    # Also proves that --backend selects the entry-point backend (not the default numpy).
    code, output, tests = _conformance(porter_env, "mybroken", "-k", "test_function")
    assert code == 1, output[-5000:]
    failed = {name: message for name, message in tests if message is not None}
    assert failed, output[-5000:]
    # td_error fails in each dtype, and so does the step that calls it; nothing else does.
    assert {n for n in failed if "td_error" in n} == {
        "test_function[float32-td_error]",
        "test_function[float64-td_error]",
    }, sorted(failed)
    assert set(failed) - {n for n in failed if "td_error" in n} <= {
        "test_function_step[float32]",
        "test_function_step[float64]",
    }, sorted(failed)
    message = failed["test_function[float32-td_error]"]
    assert message.startswith("rtrrl.conformance.harness.ConformanceError: td_error ["), message


def test_whole_step_suite_catches_a_broken_port(porter_env: Path) -> None:
    code, output, tests = _conformance(porter_env, "mybroken", "-x", "-k", "not test_functions")
    assert code == 1, output[-5000:]
    failed = [(name, message) for name, message in tests if message is not None]
    assert len(failed) == 1, failed
    assert "td_error" in failed[0][1], failed
