"""The ``rtrrl`` command line: ``rtrrl backends``, ``rtrrl tasks``, ``rtrrl train``,
``rtrrl eval``, ``rtrrl sweep``."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence

from rtrrl import __version__, _cli_sweep, _cli_train, _registry


def _backends(args: argparse.Namespace) -> int:
    infos = _registry.backend_infos()
    width = max([len(i.name) for i in infos] + [7])
    print(f"{'backend':<{width}}  {'status':<13}  source")
    for info in infos:
        status = "installed" if info.installed else "not installed"
        if info.needs:
            status = "needs setting"
        line = f"{info.name:<{width}}  {status:<13}  {info.source}"
        if info.needs:
            line += (
                f"  (its packages are installed; it loads with {info.needs} set before Python "
                f"starts; `rtrrl train/eval --backend {info.name}` set it themselves)"
            )
        elif not info.installed and args.verbose:
            line += f"\n{'':<{width}}  {info.reason}"
        elif not info.installed and info.extra:
            line += f'  (pip install "rtrrl[{info.extra}]")'
        print(line)
    return 0


def _tasks(args: argparse.Namespace) -> int:
    """List the task registry (``rtrrl tasks``)."""
    from rtrrl import envs  # imports only NumPy; each task's framework loads when it is built

    rows = envs.describe_tasks()
    name_w = max(len(r["name"]) for r in rows)
    src_w = max(len(r["source"]) for r in rows)
    obs_w = max(len(r["obs"]) for r in rows)
    act_w = max(len(r["action"]) for r in rows)
    print(f"{'task':<{name_w}}  {'source':<{src_w}}  {'obs':<{obs_w}}  {'action':<{act_w}}  steps")
    for r in rows:
        steps = "-" if r["max_steps"] is None else str(r["max_steps"])
        line = f"{r['name']:<{name_w}}  {r['source']:<{src_w}}  {r['obs']:<{obs_w}}  "
        line += f"{r['action']:<{act_w}}  {steps:<5}  {r['target']}"
        if r["observed"] != "all":
            line += f" observing {r['observed']}"
        if args.verbose:
            line += f": {r['description']}"
        if r["available"]:
            line += f"  ({r['available']})"
        print(line)
    print(
        "\nAlso: any gymnax id (e.g. Acrobot-v1), brax:<env>[:mask=odd|even|first_half|I,J,...] "
        "(any brax environment, e.g. brax:ant:mask=odd), "
        "gymnasium:<id> (e.g. gymnasium:CartPole-v1), "
        "popgym:<class> (popgym's own NumPy environment, e.g. popgym:CountRecallEasy), "
        "MemoryChain-<k> / DeepSea-<k> for any k (DeepSea-<k>-randomized: bsuite's random "
        "action mapping), -Medium / -Hard for the popgym tasks, -T<steps> after a gymnax task for "
        "episodes of that many steps (e.g. Swimmer-T500, Table 2's length), and "
        "your own environments: module:function (a function returning a gymnasium "
        "environment) or an id your module registers (--import MODULE); see docs/tasks.md."
    )
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtrrl", description=__doc__)
    parser.add_argument("--version", action="version", version=f"rtrrl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    backends = sub.add_parser("backends", help="list the backends and whether they load here")
    backends.add_argument("-v", "--verbose", action="store_true", help="say why one is missing")
    backends.set_defaults(func=_backends)
    tasks = sub.add_parser("tasks", help="list the registered tasks, their sources and spaces")
    tasks.add_argument("-v", "--verbose", action="store_true", help="add each task's description")
    tasks.set_defaults(func=_tasks)
    _cli_train.add_commands(sub)
    _cli_sweep.add_command(sub)
    return parser


def _keras_environment(backend: str | None) -> str | None:
    """For ``keras-<framework>``: set ``KERAS_BACKEND`` (and ``KERAS_HOME``) before keras loads.

    Keras reads ``KERAS_BACKEND`` once, when it is first imported, so a plain
    ``rtrrl eval RUN --backend keras-torch`` sets it here from the backend name when it is
    unset, and ``KERAS_HOME`` to a fresh temporary folder when that is unset (nothing is
    written to ``~/.keras``). Returns an error message when ``KERAS_BACKEND`` names another
    framework (or keras is already loaded with one), else ``None``.
    """
    backend = _registry.canonical_name(backend) if backend else backend
    if not backend or not backend.startswith("keras-"):
        return None
    framework = backend[len("keras-") :]
    chosen = os.environ.get("KERAS_BACKEND")
    if chosen and chosen != framework:
        return (
            f"backend {backend!r} needs KERAS_BACKEND={framework}, but KERAS_BACKEND={chosen} "
            f"is set in the environment; unset it or set KERAS_BACKEND={framework}"
        )
    if "keras" in sys.modules and chosen is None:
        return f"keras is already imported in this process; set KERAS_BACKEND={framework} first"
    os.environ["KERAS_BACKEND"] = framework
    os.environ.setdefault("KERAS_HOME", tempfile.mkdtemp(prefix="rtrrl-keras-"))
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rtrrl`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command in ("train", "eval"):
        error = _keras_environment(_cli_train.backend_of(args))
        if error:
            print(f"rtrrl {args.command}: error: {error}", file=sys.stderr)
            return 2
        return _cli_train.run_guarded(args.func, args)
    if args.command == "sweep":  # JAX only: no keras environment to set up
        return _cli_train.run_guarded(args.func, args)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
