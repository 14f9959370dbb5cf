"""The ``rtrrl`` command line. For now: ``rtrrl backends`` (training arrives with the loop)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rtrrl import __version__, _registry


def _backends(args: argparse.Namespace) -> int:
    infos = _registry.backend_infos()
    width = max([len(i.name) for i in infos] + [7])
    print(f"{'backend':<{width}}  {'status':<13}  source")
    for info in infos:
        status = "installed" if info.installed else "not installed"
        line = f"{info.name:<{width}}  {status:<13}  {info.source}"
        if not info.installed and args.verbose:
            line += f"\n{'':<{width}}  {info.reason}"
        elif not info.installed and info.extra:
            line += f'  (pip install "rtrrl[{info.extra}]")'
        print(line)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtrrl", description=__doc__)
    parser.add_argument("--version", action="version", version=f"rtrrl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    backends = sub.add_parser("backends", help="list the backends and whether they load here")
    backends.add_argument("-v", "--verbose", action="store_true", help="say why one is missing")
    backends.set_defaults(func=_backends)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rtrrl`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
