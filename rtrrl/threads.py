"""How many threads the frameworks use during a run (``RunSettings.threads``, ``--threads``).

- torch (the ``torch`` and ``keras-torch`` backends): ``torch.set_num_threads`` for the run,
  put back afterwards. Left unset, the host loop uses 1: a step at batch 1 is a few hundred
  small kernels, and splitting each across threads costs more than it saves
  (``benchmarks/results/train_speed.md`` has the measurement).
- JAX: XLA sizes its CPU thread pools once, when JAX starts, from ``XLA_FLAGS``. A run that
  asks for threads before anything imported JAX (the ``rtrrl train`` command always does)
  gets ``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=N`` added to
  ``XLA_FLAGS``; once JAX is running nothing can change them, and a warning says so.
- JAX's CPU devices: the fused engine shares a population's members (a run's seeds, a
  sweep's members) out over every device of JAX's default backend
  (:func:`rtrrl.fused.make_population`'s ``devices``). On a CPU those are
  ``jax_num_cpu_devices``, one unless set, which JAX also fixes when it starts its backends:
  :func:`before_frameworks_load` (what every run and sweep calls first) asks for one per core
  this process may use (:func:`cpu_devices_before_jax_starts`), unless the user set a number
  (``JAX_NUM_CPU_DEVICES``, ``jax.config``, or ``--xla_force_host_platform_device_count`` in
  ``XLA_FLAGS``) or JAX has already run something, in which case its devices stay as they are.
- NumPy: left alone.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator

__all__ = [
    "HOST_TORCH_THREADS",
    "before_frameworks_load",
    "cpu_devices_before_jax_starts",
    "framework_threads",
    "usable_cores",
]

#: Torch threads of the host loop when the run does not say.
HOST_TORCH_THREADS = 1


def before_frameworks_load(threads: int | None) -> None:
    """Pass ``threads`` to XLA, and ask JAX for one CPU device per core
    (:func:`cpu_devices_before_jax_starts`): both are read only when JAX starts (call before
    that)."""
    cpu_devices_before_jax_starts()
    if threads is None:
        return
    if "jax" in sys.modules:
        warnings.warn(
            f"threads={threads}: JAX is already running, and XLA sets its thread pools when "
            "JAX starts; start a fresh process (or set XLA_FLAGS) to change them",
            RuntimeWarning,
            stacklevel=3,
        )
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if "intra_op_parallelism_threads" not in flags:
        extra = f"--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={threads}"
        os.environ["XLA_FLAGS"] = f"{flags} {extra}".strip()


@contextlib.contextmanager
def framework_threads(threads: int | None, torch_default: int | None) -> Iterator[None]:
    """Within the block, torch (if loaded) uses ``threads``, else ``torch_default``, else its
    own number; the previous number comes back afterwards."""
    wanted = threads if threads is not None else torch_default
    torch = sys.modules.get("torch")
    if wanted is None or torch is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(wanted)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def cpu_devices_before_jax_starts(devices: int | None = None) -> None:
    """Ask JAX for ``devices`` CPU devices (default: :func:`usable_cores`) unless the user has
    chosen a number or JAX has started its backends; then leave it as it is. JAX is not
    imported for this: before it is, the request is ``JAX_NUM_CPU_DEVICES``, which it reads."""
    if "JAX_NUM_CPU_DEVICES" in os.environ:
        return
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return
    count = devices or usable_cores()
    jax = sys.modules.get("jax")
    if jax is None:
        os.environ["JAX_NUM_CPU_DEVICES"] = str(count)
        return
    if jax.config.jax_num_cpu_devices != -1:
        return
    with contextlib.suppress(RuntimeError):  # JAX has started: its devices stay
        jax.config.update("jax_num_cpu_devices", count)
