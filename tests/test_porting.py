"""The porting kit, end to end: an out-of-tree backend package, found by its entry point and
validated by the conformance suite, exactly as docs/porting.md tells a porter to do it.
"""

from __future__ import annotations

import importlib.util
import os
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

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
mybroken = "rtrrl_mybackend:Broken"

[tool.setuptools]
py-modules = ["rtrrl_mybackend"]
"""

MODULE = '''
"""A throwaway third-party backend: the reference under another name."""

from rtrrl.backends.numpy import NumpyBackend


class Backend(NumpyBackend):
    name = "mybackend"


class Broken(Backend):
    """A port with a sign error in the TD error it reports: the suite must catch it."""

    name = "mybroken"

    def step(self, config, agent, obs, reward, done, noise):
        agent, action, info = super().step(config, agent, obs, reward, done, noise)
        return agent, action, {**info, "td_error": -info["td_error"]}
'''


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
    (package / "rtrrl_mybackend.py").write_text(MODULE)

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
        """
    )
    done = _run([str(porter_env), "-c", code], cwd=porter_env.parents[2])
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first == "rtrrl_mybackend mybackend True"
    assert "'mybackend': True" in second


def test_backend_is_not_visible_outside_its_venv() -> None:
    # The install went into the throwaway venv, not into the environment running the tests.
    assert importlib.util.find_spec("rtrrl_mybackend") is None


def _conformance(python: Path, backend: str) -> tuple[int, str]:
    env = {**os.environ, "HYPOTHESIS_PROFILE": "dev"}
    env.pop("RTRRL_BACKEND", None)  # --backend must be what selects it
    args = ["-m", "pytest", "--pyargs", "rtrrl.conformance", "--backend", backend]
    done = _run(
        [str(python), *args, "-x", "-q", "-p", "no:cacheprovider"],
        cwd=python.parents[2],  # outside the repository: no repo conftest or config
        env=env,
    )
    return done.returncode, done.stdout + done.stderr


def test_conformance_suite_passes_for_the_ported_backend(porter_env: Path) -> None:
    code, output = _conformance(porter_env, "mybackend")
    assert code == 0, output[-5000:]
    assert " passed" in output
    assert "failed" not in output


def test_conformance_suite_fails_for_a_broken_port(porter_env: Path) -> None:
    # Proves that --backend really selects the entry-point backend (not the default numpy).
    code, output = _conformance(porter_env, "mybroken")
    assert code == 1, output[-5000:]
    assert "1 failed" in output
    assert "td_error" in output
