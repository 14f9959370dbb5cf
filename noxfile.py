"""Sessions for developers and CI. ``nox`` alone runs lint, spec, conformance(numpy),
tests, tests_brax (the brax tasks, with the `brax` extra), tests_ray (sweeps and
reproductions on a local Ray instance, with the `ray` extra) and docs.

    nox                                      # what CI runs (see .ci/run)
    nox -s "conformance(backend='numpy')" -- -k step   # arguments after -- go to pytest
    nox -s tests -- -n 0                     # in one process (default: one per CPU, at most 4)
    nox -s docs                              # just the site (mkdocs build --strict)
    nox -s bench / -t gpu                    # opt-in sessions
    nox -s results [-- ARGS]                 # the paper's table (benchmarks/reproduce.py)

Environments are plain virtualenvs (not uv), installed into by pip: uv ignores pip's configuration,
which is where the local CPU wheel of torch is found (pip's find-links). Test tools come
from the PEP 735 dependency groups in pyproject.toml, read here by nox, so no particular pip
version (``pip install --group`` needs pip >= 25.1) is required.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import nox

nox.needs_version = ">=2024.10"
nox.options.default_venv_backend = "virtualenv"
nox.options.error_on_external_run = True
nox.options.sessions = [
    "lint",
    "spec",
    "conformance",
    "tests",
    "tests_brax",
    "tests_ray",
    "docs",
]

ROOT = Path(__file__).parent
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")


def _builtin_backends() -> dict[str, tuple[str, str | None]]:
    """rtrrl's table of built-in backends (name -> target, pip extra), read from its source
    file by path: nox runs before rtrrl is installed, and the file imports nothing."""
    path = ROOT / "rtrrl" / "_builtin.py"
    spec = importlib.util.spec_from_file_location("_rtrrl_builtin", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.BUILTIN_BACKENDS


# Backend under test -> the pip extra that installs its framework (None: nothing extra); a
# backend added to rtrrl/_builtin.py gets its conformance session from there.
CONFORMANCE_BACKENDS: dict[str, str | None] = {
    name: extra for name, (_, extra) in _builtin_backends().items()
}
# Backends that compile every new shape (XLA) take about a second per drawn example on a 2-core
# machine, and their eager variants more: under CI they run the compiled variant with the
# `dev` profile. The full run is `HYPOTHESIS_PROFILE=ci nox -s "conformance(backend='jax')"`
# (measured here: 25-35 min per pass, three passes' worth; docs/backends/jax.md).
CI_QUICK: dict[str, str] = {"jax": "not eager", "keras-jax": "not eager"}
# Backends that place arrays on a CUDA device; conformance_gpu and bench_gpu run these.
GPU_BACKENDS: list[str] = ["torch", "jax"]
# What conformance_gpu passes as --backend, where the plain name would run on the CPU: the
# CUDA torch backend also turns TF32 off (the spec is IEEE float32 arithmetic).
GPU_BACKEND_TARGETS: dict[str, str] = {"torch": "rtrrl.backends.torch:CudaTorchBackend"}
# What a GPU session installs beyond the backend's extra (the extra's jax is the CPU build).
GPU_INSTALL: dict[str, list[str]] = {"jax": ["jax[cuda12]"]}
# The environment of a GPU run: JAX must find CUDA (no silent fall back to the CPU) and
# computes float32 matmuls in full precision (TF32 off).
GPU_ENV: dict[str, dict[str, str]] = {
    "jax": {"JAX_PLATFORMS": "cuda", "JAX_DEFAULT_MATMUL_PRECISION": "highest"}
}

# Always the CPU wheel on these machines (pip finds it in its configured find-links);
# spelled out as well as pinned by the extra, so that no resolver can pick a CUDA build.
TORCH_PIN = "torch==2.13.0"


def _install(session: nox.Session, extra: str | None, *groups: str) -> None:
    """Install rtrrl editable with ``extra`` and the named dependency groups."""
    target = f".[{extra}]" if extra else "."
    deps = [dep for group in groups for dep in nox.project.dependency_groups(PYPROJECT, group)]
    pins = [TORCH_PIN] if extra and "torch" in extra.split(",") else []
    session.install("-e", target, *pins, *deps)


def _hypothesis_env() -> dict[str, str]:
    # An explicit HYPOTHESIS_PROFILE wins; else more examples on CI than on a laptop.
    profile = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
    return {"HYPOTHESIS_PROFILE": profile}


def _conformance_args(backend: str, posargs: list[str]) -> tuple[dict[str, str], list[str]]:
    """Profile and pytest arguments of one conformance run (see CI_QUICK)."""
    env = _hypothesis_env()
    quick = (
        backend in CI_QUICK
        and os.environ.get("CI")
        and not os.environ.get("HYPOTHESIS_PROFILE")
        and "-k" not in posargs
    )
    if quick:
        return {"HYPOTHESIS_PROFILE": "dev"}, ["-k", CI_QUICK[backend], *posargs]
    return env, list(posargs)


def _x64_passes(backend: str) -> list[dict[str, str]]:
    """jax runs twice: float32 with x64 off, as users get it by default, whatever the caller's
    shell says; then float32 and float64 with x64 on (JAX holds float64 only with x64 enabled,
    which the backend never switches on by itself). Other backends run once."""
    if backend == "jax":
        return [{"JAX_ENABLE_X64": "0"}, {"JAX_ENABLE_X64": "1"}]
    return [{}]


# Test processes (pytest-xdist) per suite: one per CPU, at most this many, since each imports
# every framework (about 1-2 GB); tests go to whichever worker is free ("worksteal"), as the
# slowest ones take minutes and whole files would leave a worker idle.
MAX_TEST_WORKERS = 4


def _parallel_args(posargs: list[str]) -> list[str]:
    """pytest-xdist's options for a suite, unless the caller chose their own (``-n 0`` runs in
    one process, as ``-p no:xdist`` does)."""
    chosen = any(
        arg in ("-n", "--numprocesses", "--dist", "no:xdist")
        or arg.startswith(("-n", "--numprocesses=", "--dist="))
        for arg in posargs
    )
    if chosen:
        return []
    workers = min(os.cpu_count() or 1, MAX_TEST_WORKERS)
    return ["-n", str(workers), "--dist", "worksteal"] if workers > 1 else []


def _has_cuda() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", ".", *session.posargs)
    session.run("ruff", "format", "--check", ".")


@nox.session
def spec(session: nox.Session) -> None:
    """The NumPy reference's own tests."""
    _install(session, None, "test")
    session.run("pytest", "tests/spec", *session.posargs, env=_hypothesis_env())


def _keras_env(session: nox.Session, backend: str) -> dict[str, str]:
    """KERAS_BACKEND for keras-jax / keras-torch (Keras reads it once, at import), and a
    KERAS_HOME inside the session's tmp dir so that nothing is written to ~/.keras."""
    if not backend.startswith("keras-"):
        return {}
    framework = backend.removeprefix("keras-")
    env = {"KERAS_BACKEND": framework, "KERAS_HOME": str(Path(session.create_tmp()) / "keras")}
    if framework == "jax":
        env["JAX_ENABLE_X64"] = "1"  # one pass covers float32 and float64
    return env


@nox.session
@nox.parametrize("backend", list(CONFORMANCE_BACKENDS))
def conformance(session: nox.Session, backend: str) -> None:
    """The Hypothesis conformance suite against one backend, in its own environment."""
    _install(session, CONFORMANCE_BACKENDS[backend], "test")
    profile_env, args = _conformance_args(backend, session.posargs)
    parallel = _parallel_args(args)
    suite = ["pytest", "--pyargs", "rtrrl.conformance", "--backend", backend, *parallel, *args]
    for x64 in _x64_passes(backend):
        session.run(*suite, env={**profile_env, **x64, **_keras_env(session, backend)})


def _jax_cache(session: nox.Session) -> dict[str, str]:
    """A JAX compilation cache in the session's tmp dir, every compilation kept: tests that
    build the same program again (a new closure of the same step, the same environment in
    another test) load it instead of compiling it again. The programs run are the same."""
    return {
        "JAX_COMPILATION_CACHE_DIR": str(Path(session.create_tmp()) / "jax-cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }


@nox.session
def tests(session: nox.Session) -> None:
    """Unit and integration tests of everything but the reference, with every framework."""
    _install(session, "all", "test", "labyrinths")
    env = {**_hypothesis_env(), **_jax_cache(session)}
    parallel = _parallel_args(session.posargs)
    session.run("pytest", "tests", "--ignore=tests/spec", *parallel, *session.posargs, env=env)


@nox.session
def tests_brax(session: nox.Session) -> None:
    """The brax tasks' tests with the `brax` extra installed. `tests` runs without it (its
    brax tests skip there, but the one for a missing brax), so `nox` covers both. brax
    compiles slowly on the CPU: the compilation cache lets the tests that build the same
    environment again (host adapters, training) skip the compile."""
    _install(session, "all,brax", "test")
    files = ["tests/envs/test_envs_brax.py", "tests/envs/test_envs_registry.py"]
    env = {**_hypothesis_env(), **_jax_cache(session)}
    session.run("pytest", *files, *session.posargs, env=env)


@nox.session
def tests_ray(session: nox.Session) -> None:
    """Sweeps and reproductions on Ray (tests/train/test_ray.py) with the `ray` extra
    installed, on a local Ray instance of 2 CPUs. `tests` runs without it (there its tests
    skip, but the one for a missing Ray), so `nox` covers both."""
    _install(session, "all,ray", "test")
    session.run("pytest", "tests/train/test_ray.py", *session.posargs, env=_hypothesis_env())


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """CPU speed benchmark of the step (writes its results; not a test)."""
    script = ROOT / "benchmarks" / "step_speed.py"
    _install(session, "all", "test")
    session.run("python", str(script.relative_to(ROOT)), *session.posargs)


#: What ``nox -s results`` runs without arguments: a small budget that fits a 2-core CPU in
#: about half an hour (``nox -s results -- ARGS`` passes ARGS to benchmarks/reproduce.py).
RESULTS_DEFAULT = ["--tasks", "MemoryChain-4,MemoryChain-8,CartPole-vel,DeepSea-4"]


@nox.session(default=False)
def results(session: nox.Session) -> None:
    """The paper's table at a small budget (benchmarks/reproduce.py), then the site.

    Writes benchmarks/results/reproduce/*.jsonl (a rerun resumes) and
    benchmarks/results/reproduction.md, which docs/results.md includes; the site is rebuilt
    with ``mkdocs build --strict`` so that the page shows the new table.
    """
    _install(session, "all")
    session.install(*nox.project.dependency_groups(PYPROJECT, "docs"))
    session.run("python", "benchmarks/reproduce.py", *(session.posargs or RESULTS_DEFAULT))
    session.run("mkdocs", "build", "--strict", env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session(default=False, tags=["gpu"])
def conformance_gpu(session: nox.Session) -> None:
    """The conformance suite on a CUDA device, for every GPU-capable backend."""
    if not _has_cuda():
        session.skip("no CUDA device found (nvidia-smi -L)")
    for backend in GPU_BACKENDS:
        _install(session, CONFORMANCE_BACKENDS[backend], "test")
        if GPU_INSTALL.get(backend):
            session.install(*GPU_INSTALL[backend])
        target = GPU_BACKEND_TARGETS.get(backend, backend)
        suite = ["pytest", "--pyargs", "rtrrl.conformance", "--backend", target]
        for x64 in _x64_passes(backend):
            env = {**_hypothesis_env(), **GPU_ENV.get(backend, {}), **x64}
            session.run(*suite, *session.posargs, env=env)


@nox.session(default=False, tags=["gpu"])
def bench_gpu(session: nox.Session) -> None:
    """Speed benchmarks on a CUDA device."""
    if not _has_cuda():
        session.skip("no CUDA device found (nvidia-smi -L)")
    script = ROOT / "benchmarks" / "step_speed.py"
    _install(session, "all", "test")
    session.install(*[pkg for backend in GPU_BACKENDS for pkg in GPU_INSTALL.get(backend, [])])
    # Large B for every backend and a JAX population of 4096 (issue: GPU throughput).
    args = session.posargs or ["--batches", "1,1024,8192", "--population", "256,4096"]
    env = {
        key: value for backend in GPU_BACKENDS for key, value in GPU_ENV.get(backend, {}).items()
    }
    session.run("python", str(script.relative_to(ROOT)), "--gpu", *args, env=env)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site (``site/``), warnings as errors.

    The API pages come from griffe's static analysis (docs/_ext/package_dir.py attaches the
    package-dir-mapped ``rtrrl.backends`` / ``.envs`` / ``.conformance``): nothing is imported,
    so neither rtrrl nor any framework is installed here, only the ``docs`` group.
    """
    session.install(*nox.project.dependency_groups(PYPROJECT, "docs"))
    session.run("mkdocs", "build", "--strict", *session.posargs, env={"NO_MKDOCS_2_WARNING": "1"})
