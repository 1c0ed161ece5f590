"""The ``nst`` command: one subcommand per pipeline stage (what dvc.yaml runs) plus one-off tools.

The subcommands are a static table (pipeline/commands.py ``COMMANDS``): ``nst --help`` lists them without importing
any stage module, and ``nst <command> ...`` imports only that command's module, whose ``add_parser(sub)`` registers
the real subparser(s). So a stage run imports exactly the code its dvc.yaml ``deps`` list (tests/test_dvc_deps.py).

Bad input ends with one ``nst <command>: error: <message>`` line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from methods.errors import NstError  # torch-free (methods/__init__.py loads the registry of params classes only)
from pipeline.commands import COMMANDS, MODULES

STAGES = MODULES  # the modules, each once (tests/test_architecture.py: they never import each other)


def command_of(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names (the first non-option word), or None when top-level help comes first."""
    for arg in argv:
        if arg in ("-h", "--help"):
            return None
        if not arg.startswith("-"):
            return arg
    return None


def parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``nst`` parser; the full subparser of ``command`` (imports its module), one-line entries for the rest."""
    p = argparse.ArgumentParser(
        prog="nst",
        description="nst-bench: a reproducible neural-style-transfer benchmark. "
        "`dvc repro` runs the stages below in order; each can also be run by hand.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="STAGE", required=True)
    if command in COMMANDS:
        module = COMMANDS[command][0]
        importlib.import_module(module).add_parser(sub)
        if command not in sub.choices:
            raise RuntimeError(f"{module}.add_parser did not register {command!r}; fix pipeline.cli.COMMANDS")
    for name, (_, help_) in COMMANDS.items():
        if name not in sub.choices:  # listed in --help and in "invalid choice" errors, never parsed
            sub.add_parser(name, help=help_, add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    argv = sys.argv[1:] if argv is None else argv
    args = parser(command_of(argv)).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except NstError as exc:
        print(f"nst {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nst {args.command}: interrupted; finished work is kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
