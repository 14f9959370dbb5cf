"""How many threads the frameworks use during a run (``RunSettings.threads``, ``--threads``).

- torch (the ``torch`` and ``keras-torch`` backends): ``torch.set_num_threads`` for the run,
  put back afterwards. Left unset, the host loop uses 1: a step at batch 1 is a few hundred
  small kernels, and splitting each across threads costs more than it saves
  (``benchmarks/results/train_speed.md`` has the measurement).
- JAX: XLA sizes its CPU thread pools once, when JAX starts, from ``XLA_FLAGS``. A run that
  asks for threads before anything imported JAX (the ``rtrrl train`` command always does)
  gets ``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=N`` added to
  ``XLA_FLAGS``; once JAX is running nothing can change them, and a warning says so.
- NumPy: left alone.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator

__all__ = ["HOST_TORCH_THREADS", "before_frameworks_load", "framework_threads"]

#: Torch threads of the host loop when the run does not say.
HOST_TORCH_THREADS = 1


def before_frameworks_load(threads: int | None) -> None:
    """Pass ``threads`` to XLA, which reads it only when JAX starts (call before that)."""
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
