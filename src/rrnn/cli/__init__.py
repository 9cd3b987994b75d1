"""The ``rrnn`` command: the parser and the error policy. Each command is its own
module here (``add_parser(sub)`` for its flags, ``run(args)`` for the work) and
imports its implementation lazily, so ``rrnn --help`` and ``rrnn params`` run
without importing torch; the flags several commands share are in :mod:`.flags`,
their choices and defaults in :mod:`rrnn.lm.config`."""

from __future__ import annotations

import argparse
import sys

from . import bench, evaluate, export, generate, params, report, sweep, train

COMMANDS = (params, train, sweep, report, bench, evaluate, generate, export)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="rrnn",
        description="Restricted recurrent networks: parameter counts, language-model "
        "training and evaluation, benchmarks.",
    )
    parser.add_argument("--version", action="version", version=f"rrnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as err:
        print(f"rrnn {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # permissions, a full disk, a long name: not a traceback
        from ..fileio import explain_os_error

        print(f"rrnn {args.command}: error: {explain_os_error(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"rrnn {args.command}: aborted", file=sys.stderr)
        return 130
