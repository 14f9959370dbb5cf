"""Sweeps and reproductions on Ray: every unit of work (a sweep's chunk, a reproduction's
task × variant cell) one Ray task, wherever the cluster has room for it.

Why Ray and not a scheduler of our own: it starts on a laptop with one call and runs unchanged
on a cluster started by hand (``ray start``), by ``ray up``, KubeRay or Slurm, which is where
the people who run large sweeps already are. Ray is optional (``pip install "rtrrl[ray]"``)
and imported only when a run asks for it.

What makes a distributed run lose nothing and do nothing twice:

- A unit writes only into its own folder of the sweep (``chunks/NNN/``) or run folder, which
  must be on storage that every node reaches: the folder *is* the storage. It checkpoints as
  every run does, so a unit started again continues from its last checkpoint to the same
  numbers (:func:`rtrrl.sweeps.run_chunk`, :func:`rtrrl.training.resume`).
- A worker that dies (killed, out of memory, its node lost) is retried by Ray (``max_retries``,
  :class:`Resources`), and the retry resumes from the checkpoint.
- A unit holds an exclusive lock on ``NNN.lock`` beside its folder while it runs (and writes
  its host and pid there), so two processes never train the same unit at once: a unit whose
  old worker still runs (a driver restarted before Ray reaped it) waits for it, then goes on
  from its checkpoint or finds it finished.
- The driver only reads the units' files and writes the results from them, as a local run
  does; a driver killed and started again with the same command skips the finished units and
  resumes the others.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import importlib.util
import json
import logging
import math
import os
import socket
import sys
import time
import warnings
from collections.abc import Callable, Hashable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

try:
    import fcntl
except ImportError:  # not on Windows, where Ray is experimental anyway: no lock there
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "INSTALL",
    "LOCAL",
    "RayNotInstalledError",
    "Resources",
    "UnitsFailedError",
    "add_ray_flags",
    "call_file",
    "connect",
    "ray_runner",
    "require_ray",
    "resources_from_args",
    "run_sweep",
    "run_units",
]

#: ``--ray`` without an address: start a fresh local Ray instance (Ray's own spelling).
LOCAL = "local"
#: How to get Ray, for the error that says it is missing.
INSTALL = 'pip install "rtrrl[ray]"'
#: How often the driver looks at the units' progress, in seconds.
POLL_SECONDS = 1.0
#: How long an interrupted driver waits for the cancelled units to save, in seconds.
CANCEL_WAIT_SECONDS = 30.0


class RayNotInstalledError(ImportError, RuntimeError):
    """Ray is not installed; the message says how to install it. (A ``RuntimeError`` too, so
    the command line reports it as one line, as it does every setup error.)"""


class UnitsFailedError(RuntimeError):
    """Some units failed (their others finished, and their results are written); running the
    same command again retries them."""


def require_ray() -> ModuleType:
    """The ``ray`` module, or a one-line :class:`RayNotInstalledError` saying how to get it."""
    try:
        import ray
    except ImportError as err:
        raise RayNotInstalledError(
            f"--ray runs the units on Ray, which is not installed here ({err}): {INSTALL} "
            "(on every node of the cluster), or run without --ray"
        ) from None
    return ray


@dataclasses.dataclass(frozen=True)
class Resources:
    """What each unit asks Ray for, and how often Ray starts it again after its worker died.

    ``cpus``: ``None`` takes the run's ``--threads`` (the threads XLA uses), else 1.
    ``gpus``: a fraction shares a GPU between units (0.5: two per GPU); the units then
    allocate GPU memory as they need it instead of JAX's default of most of the GPU.
    ``retries``: Ray's ``max_retries``: restarts after a worker's death (a crash, a kill, a lost
    node), each continuing from the unit's checkpoint (-1: no limit, for nodes that come and
    go, such as preemptible ones); an exception in the unit's own code is not retried (it
    would fail again).
    """

    cpus: float | None = None
    gpus: float = 0.0
    retries: int = 3

    def __post_init__(self) -> None:
        for name in ("cpus", "gpus"):
            value = getattr(self, name)
            if value is None and name == "cpus":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"--ray-{name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"--ray-{name} must be a finite number >= 0, got {value!r}")
        if self.cpus == 0 and self.gpus == 0:
            raise ValueError("--ray-cpus 0 with --ray-gpus 0 asks for nothing; give one of them")
        if self.gpus > 1 and self.gpus != int(self.gpus):
            raise ValueError(f"--ray-gpus above 1 must be a whole number, got {self.gpus!r}")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int):
            raise ValueError(f"--ray-retries must be an int, got {self.retries!r}")
        if self.retries < -1:
            raise ValueError(f"--ray-retries must be >= 0, or -1 for no limit; got {self.retries}")

    def options(self, threads: int | None = None) -> dict[str, Any]:
        """Ray's task options for one unit of a run with ``threads``."""
        cpus = self.cpus if self.cpus is not None else float(threads or 1)
        return {
            "num_cpus": cpus,
            "num_gpus": self.gpus,
            "max_retries": self.retries,
            "retry_exceptions": False,
        }


_RAY_FLAGS = ("ray_cpus", "ray_gpus", "ray_retries")


def add_ray_flags(
    parser: argparse.ArgumentParser, unit: str, where: str = "", cpus: str = "--threads, else 1"
) -> None:
    """Add ``--ray [ADDRESS]``, ``--ray-cpus``, ``--ray-gpus`` and ``--ray-retries`` to
    ``parser``, as one group, for a command whose units of work are ``unit`` (``"chunk"``,
    ``"cell"``); ``where`` adds to ``--ray``'s help what that command needs of the cluster,
    ``cpus`` says what a unit asks for without ``--ray-cpus``. Read them back with
    :func:`resources_from_args`."""
    ray = parser.add_argument_group(
        f"on Ray: one task per {unit}, on any machine (docs/distributed.md)"
    )
    ray.add_argument(
        "--ray",
        nargs="?",
        const=LOCAL,
        metavar="ADDRESS",
        help=f"run each {unit} as a Ray task ({INSTALL}): --ray alone starts a local Ray "
        "instance, --ray auto joins the cluster running here (ray start), --ray HOST:PORT "
        f"joins that head{where}",
    )
    ray.add_argument(
        "--ray-cpus",
        type=float,
        metavar="C",
        help=f"CPUs each {unit} asks for (default: {cpus})",
    )
    ray.add_argument(
        "--ray-gpus",
        type=float,
        metavar="G",
        help=f"GPUs each {unit} asks for (default 0; 0.5: two {unit}s share a GPU)",
    )
    ray.add_argument(
        "--ray-retries",
        type=int,
        metavar="R",
        help=f"times a {unit} starts again, from its checkpoint, after its worker died "
        "(default 3; -1: no limit)",
    )


def resources_from_args(args: argparse.Namespace, unit: str) -> Resources | None:
    """What the flags of :func:`add_ray_flags` ask for: ``None`` without ``--ray``. A
    ``--ray-*`` flag without ``--ray`` is an error (it would silently do nothing), as is a
    request Ray cannot honour (:class:`Resources`)."""
    given = [f"--{k.replace('_', '-')}" for k in _RAY_FLAGS if getattr(args, k) is not None]
    if args.ray is None:
        if given:
            raise ValueError(f"{', '.join(given)} apply to {unit}s on Ray: add --ray [ADDRESS]")
        return None
    retries = 3 if args.ray_retries is None else args.ray_retries
    return Resources(args.ray_cpus, args.ray_gpus or 0.0, retries)


def connect(address: str | None = LOCAL) -> ModuleType:
    """Connect this process to Ray (once; a process already connected stays as it is).

    ``address``: ``"local"`` (or ``None``) starts a fresh local instance, ``"auto"`` joins the
    cluster running on this machine (or ``RAY_ADDRESS``), ``HOST:PORT`` joins that cluster's
    head, ``ray://HOST:10001`` connects through Ray Client. Returns the ``ray`` module.
    """
    ray = require_ray()
    if ray.is_initialized():
        return ray
    address = address or LOCAL
    try:
        with warnings.catch_warnings():
            # JAX warns of any fork once it runs; Ray's fork is subprocess's, which executes a
            # new program at once, without running Python (or JAX) in the child.
            warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
            ray.init(address=address, logging_level=logging.WARNING)
    except ConnectionError as err:
        raise ConnectionError(
            f"no Ray cluster at --ray {address} ({err}); start one with `ray start --head` "
            "(then --ray auto on that machine, or --ray HEAD_IP:6379 elsewhere), or give "
            "--ray alone for a local instance"
        ) from None
    cluster = ray.cluster_resources()
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    print(
        f"rtrrl: on Ray ({'a local instance' if address == LOCAL else address}): "
        f"{nodes} node(s), {cluster.get('CPU', 0):g} CPUs, {cluster.get('GPU', 0):g} GPUs",
        file=sys.stderr,
        flush=True,
    )
    return ray


def _check_fits(ray: ModuleType, options: Mapping[str, Any]) -> None:
    """A warning when no node offers what one unit asks for: its units would wait for a node
    to join (an autoscaling cluster adds one; a fixed one never does)."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    need = {"CPU": options["num_cpus"], "GPU": options["num_gpus"]}
    if not any(all(n.get(k, 0) >= v for k, v in need.items() if v) for n in nodes):
        print(
            f"rtrrl: warning: no node of the Ray cluster offers {need['CPU']:g} CPUs and "
            f"{need['GPU']:g} GPUs now; the units wait until such a node joins (lower "
            "--ray-cpus / --ray-gpus if none will)",
            file=sys.stderr,
            flush=True,
        )


# --- the units, on the workers -----------------------------------------------------------------


@contextlib.contextmanager
def _claim(folder: Path, what: str) -> Iterator[dict[str, Any]]:
    """Hold the exclusive lock ``folder.lock`` (beside ``folder``) while a unit runs, with the
    holder's host and pid in it: a second process that would train the same unit waits until
    the first ends (the kernel drops the lock when its process dies, however it dies)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    holder = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    path = folder.parent / f"{folder.name}.lock"
    with open(path, "a+") as f:
        if fcntl is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                other = f.read().strip() or "unknown"
                print(
                    f"rtrrl: {what}: another process runs it ({other}); waiting for it to end, "
                    "then going on from its checkpoint",
                    file=sys.stderr,
                    flush=True,
                )
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        f.seek(0)
        f.truncate()
        f.write(json.dumps(holder) + "\n")
        f.flush()
        yield holder


def _share_gpu() -> None:
    """On a fraction of a GPU, let JAX allocate memory as it needs it (its default takes most
    of the GPU at the start, which leaves nothing to the units sharing it)."""
    import ray

    gpus = ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0)
    if 0 < gpus < 1 and "XLA_PYTHON_CLIENT_MEM_FRACTION" not in os.environ:
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


class _Progress:
    """The driver's progress counter (a Ray actor): each running unit's steps, by unit."""

    def __init__(self) -> None:
        self.steps: dict[Hashable, int] = {}

    def set(self, key: Hashable, steps: int) -> None:
        self.steps[key] = steps

    def get(self) -> dict[Hashable, int]:
        return dict(self.steps)


class _RemoteBar:
    """The sweep's progress bar as a unit on a worker sees it: it counts the unit's steps and
    sends the count to the driver's :class:`_Progress` at most every ``every`` seconds."""

    def __init__(self, actor: Any, key: Hashable, start: int, every: float = POLL_SECONDS):
        self.actor, self.key, self.n, self.every = actor, key, start, every
        self._sent = -math.inf

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self._sent >= self.every:
            self.flush()

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        """The driver's bar shows the units; a unit's scores go to its table row."""

    def flush(self) -> None:
        self.actor.set.remote(self.key, self.n)
        self._sent = time.monotonic()


def _chunk_steps(ckpt: Mapping[str, Any] | None, steps_per_epoch: int) -> int:
    if ckpt is None:
        return 0
    return sum(int(r["epoch"]) for r in ckpt["state"]["records"]) * steps_per_epoch


def _chunk_unit(folder: str, chunk: int, progress: Any = None) -> dict[str, Any]:
    """One sweep chunk on a worker: :func:`rtrrl.sweeps.run_chunk` under the chunk's lock;
    returns its summary and where it ran."""
    from rtrrl import sweeps

    _share_gpu()
    sweep = sweeps._read_sweep(folder)
    t0 = time.perf_counter()
    with _claim(sweep.chunk_folder(chunk), f"chunk {chunk:03d} of {folder}") as holder:
        bar = None
        if progress is not None:
            start = _chunk_steps(sweeps._load_chunk(sweep, chunk), sweep.settings.steps_per_epoch)
            bar = _RemoteBar(progress, chunk, start)
        summary = sweeps.run_chunk(folder, chunk, bar=bar)
        if bar is not None:
            bar.flush()
    return {"summary": summary, "seconds": time.perf_counter() - t0, **holder}


_FILES: dict[str, ModuleType] = {}


def call_file(path: str, function: str, claim: str | None, *args: Any) -> Any:
    """On a worker: call ``function(*args)`` of the Python file ``path`` (loaded once per
    worker process, under a name of its own), holding the lock of folder ``claim`` (see the
    module docstring) when one is given. For scripts such as ``benchmarks/reproduce.py``,
    which are files, not modules a worker could import: ``path`` must exist on every node (a
    checkout on shared storage, or at the same path everywhere)."""
    _share_gpu()
    module = _FILES.get(path)
    if module is None:
        if not Path(path).is_file():
            raise FileNotFoundError(
                f"{path} is not on node {socket.gethostname()}: put the checkout on storage "
                "every node reaches, or at the same path on every node"
            )
        name = f"rtrrl_unit_{Path(path).stem}_{len(_FILES)}"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        _FILES[path] = module
    call = getattr(module, function)
    if claim is None:
        return call(*args)
    with _claim(Path(claim), f"{function}{args[:2]}"):
        return call(*args)


# --- the driver --------------------------------------------------------------------------------


def _failure(ray: ModuleType, err: Exception, retries: int) -> str:
    """One line for a unit that failed: its own error, or its workers' deaths."""
    if isinstance(err, ray.exceptions.RayTaskError):
        cause = err.cause if err.cause is not None else err
        text = f"{type(cause).__name__}: {cause}"
    else:
        text = (
            f"{type(err).__name__}: its worker died {retries + 1 if retries >= 0 else 'again'} "
            "time(s) "
            f"({str(err).strip().splitlines()[0] if str(err).strip() else 'no reason given'})"
        )
    return " ".join(text.split())[:500]


def _cancel(ray: ModuleType, refs: list[Any]) -> None:
    """Ask the running units to stop (Ray raises ``KeyboardInterrupt`` in each) and give them
    a while to do so; the checkpoint each saved last stands whatever happens next."""
    for ref in refs:
        with contextlib.suppress(Exception):
            ray.cancel(ref)
    if refs:
        print(
            f"\nrtrrl: stopping {len(refs)} unit(s) (Ctrl-C again: at once) ...",
            file=sys.stderr,
            flush=True,
        )
        with contextlib.suppress(Exception):
            ray.wait(refs, num_returns=len(refs), timeout=CANCEL_WAIT_SECONDS)


def run_units(
    function: Callable[..., Any],
    units: Mapping[Hashable, tuple[Any, ...]],
    options: Mapping[str, Any],
    on_finished: Callable[[list[tuple[Hashable, Any]], dict[Hashable, str]], None],
    poll: Callable[[], None] | None = None,
) -> dict[Hashable, str]:
    """Run ``function(*args)`` as one Ray task per unit (``{key: args}``) with ``options``
    (:meth:`Resources.options`); call ``on_finished(done, failed)`` as units end (``done``:
    ``(key, result)`` of those that just finished; ``failed``: ``{key: one line}`` of those
    that just failed) and ``poll()`` about every second. Returns every failure.

    A failed unit does not stop the others: they are independent, and their work is kept. On
    an interrupt (Ctrl-C, an error in a callback) the running units are cancelled and the
    exception goes on.
    """
    if not units:
        return {}
    ray = require_ray()
    _check_fits(ray, options)
    task = ray.remote(function).options(**options)
    pending = {task.remote(*args): key for key, args in units.items()}
    failed: dict[Hashable, str] = {}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
            if ready:  # every unit finished by now, not just the first
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
            done, now_failed = [], {}
            for ref in ready:
                key = pending.pop(ref)
                try:
                    done.append((key, ray.get(ref)))
                except ray.exceptions.RayError as err:
                    now_failed[key] = _failure(ray, err, int(options.get("max_retries", 0)))
            failed.update(now_failed)
            if ready:
                on_finished(done, now_failed)
            if poll is not None:
                poll()
    except BaseException:
        _cancel(ray, list(pending))
        raise
    return failed


class _Table:
    """The live table of finished units: a header once, then one row per unit as it ends."""

    def __init__(self, columns: list[tuple[str, int]], write: Callable[[str], None]):
        self.columns, self.write, self._started = columns, write, False

    def row(self, cells: list[str]) -> None:
        if not self._started:
            self._started = True
            self.write(self._line([name for name, _ in self.columns]))
        self.write(self._line(cells))

    def _line(self, cells: list[str]) -> str:
        """Right-aligned cells, but the last (free text, left-aligned)."""
        widths = [w for _, w in self.columns]
        aligned = [f"{c:>{w}}" for c, w in zip(cells[:-1], widths, strict=False)]
        return "  ".join([*aligned, *cells[-1:]])


def _bar_writer(bar: Any) -> Callable[[str], None]:
    if bar is None:
        return lambda line: print(line, flush=True)
    return bar.write


def _chunk_row(chunk: int, result: Mapping[str, Any]) -> list[str]:
    summary = result["summary"]
    members = [s["member"] for s in summary["seeds"]]
    stopped: dict[str, int] = {}
    for s in summary["seeds"]:
        stopped[s["stopped"]] = stopped.get(s["stopped"], 0) + 1
    median = summary["median"]
    return [
        f"{chunk:03d}",
        f"{members[0]}-{members[-1]}",
        "—" if median is None else f"{median:.4g}",
        f"{summary['steps']:,}",
        ", ".join(f"{k} {n}" for k, n in stopped.items()),
        f"{result['seconds']:.0f} s",
        f"{result['host']}:{result['pid']}",
    ]


_CHUNK_COLUMNS = [
    ("chunk", 5),
    ("members", 7),
    ("median best", 11),
    ("steps", 11),
    ("stopped", 16),
    ("wall", 6),
    ("ran on", 0),
]


def run_sweep(
    folder: str | os.PathLike[str],
    progress: bool = False,
    *,
    address: str | None = LOCAL,
    resources: Resources | None = None,
) -> dict[str, Any]:
    """Run every unfinished chunk of the sweep in ``folder`` as a Ray task, write the results
    (:func:`rtrrl.sweeps.write_results`) as chunks finish, and return the summary.

    Finished chunks are kept (a restarted driver picks up where the last one stopped); the
    others start, or continue from their checkpoints. ``progress``: one bar over every
    member's steps, fed by the running chunks. A chunk that fails is reported at the end, after
    the others finished: :class:`UnitsFailedError`.
    """
    from rtrrl import sweeps

    resources = resources or Resources()
    ray = connect(address)
    sweep = sweeps._read_sweep(folder)
    s, chunks = sweep.settings, sweep.chunks()
    steps: dict[Any, int] = {}
    finished: set[Any] = set()
    for c in range(len(chunks)):
        ckpt = sweeps._load_chunk(sweep, c)
        steps[c] = _chunk_steps(ckpt, s.steps_per_epoch)
        if sweeps._finished(ckpt, sweep.chunk_folder(c)):
            finished.add(c)
    todo = [c for c in range(len(chunks)) if c not in finished]
    if len(chunks) == 1 and todo:
        print(
            "rtrrl: the sweep is one chunk, so one unit on one worker; --chunk-size K cuts its "
            "members into units that run side by side",
            file=sys.stderr,
        )
    bar, actor = None, None
    if progress:
        from tqdm.auto import tqdm

        total = len(sweep.members()) * s.max_epochs * s.steps_per_epoch
        bar = tqdm(total=total, initial=sum(steps.values()), unit="step", unit_scale=True)
        bar.set_postfix(chunks=f"{len(finished)}/{len(chunks)}")
        actor = ray.remote(num_cpus=0, max_restarts=0)(_Progress).remote()
    write = _bar_writer(bar)
    if finished:
        write(f"rtrrl: {len(finished)} of {len(chunks)} chunks finished earlier, kept")
    table = _Table(_CHUNK_COLUMNS, write)

    def on_finished(done: list[tuple[Any, Any]], failed: dict[Any, str]) -> None:
        for c, result in done:
            finished.add(c)
            steps[c] = int(result["summary"]["steps"])
            table.row(_chunk_row(c, result))
        for c, message in failed.items():
            write(f"chunk {c:03d} failed: {message}")
        sweeps.write_results(sweep.folder)  # the ranking so far
        show()

    def show() -> None:
        if bar is None:
            return
        live: dict[Any, int] = {}
        with contextlib.suppress(Exception):  # a lost update only delays the bar
            live = ray.get(actor.get.remote(), timeout=10)
        current = {c: steps[c] if c in finished else max(steps[c], live.get(c, 0)) for c in steps}
        bar.n = min(sum(current.values()), bar.total)
        bar.set_postfix(chunks=f"{len(finished)}/{len(chunks)}")

    units = {c: (str(sweep.folder), c, actor) for c in todo}
    try:
        failed = run_units(_chunk_unit, units, resources.options(s.threads), on_finished, show)
    except BaseException:
        try:
            sweeps.write_results(sweep.folder)
        except Exception as err:  # the interrupt or error that got here is the one to report
            print(f"rtrrl sweep: the results could not be written ({err})", file=sys.stderr)
        print(
            f"rtrrl: the chunks keep their checkpoints; continue with the same command, or "
            f"rtrrl sweep --resume {sweep.folder} --ray ...",
            file=sys.stderr,
        )
        raise
    finally:
        if bar is not None:
            bar.close()
    summary = sweeps.write_results(sweep.folder)
    if failed:
        names = ", ".join(f"{c:03d}" for c in sorted(failed))
        first = failed[min(failed)]
        raise UnitsFailedError(
            f"{len(failed)} of {len(chunks)} chunks failed ({names}; first: {first}); the "
            f"others finished and the results are written; run the same command (or rtrrl "
            f"sweep --resume {sweep.folder} --ray ...) to try the failed ones again"
        )
    return summary


def ray_runner(
    address: str | None = LOCAL, resources: Resources | None = None
) -> Callable[[Path, bool], dict[str, Any]]:
    """A runner for :func:`rtrrl.sweep` / :func:`rtrrl.resume_sweep` (``runner=``) that runs
    the chunks on Ray. Ray's presence is checked now, before a sweep folder is written; the
    connection is made when the sweep starts.

    Example::

        from rtrrl import distributed, sweep

        sweep("MemoryChain-8", grid={"lr_td": [1e-4, 1e-3]}, seeds=8, chunk_size=4,
              out="/shared/sweeps/m8", runner=distributed.ray_runner("auto"))
    """
    require_ray()
    return functools.partial(run_sweep, address=address, resources=resources or Resources())
