"""The ``nst`` command: one subcommand per pipeline stage (what dvc.yaml runs) plus one-off tools.

Bad input ends with one ``nst <command>: error: <message>`` line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from methods.errors import NstError
from pipeline import evaluate, fetch, offline_plots, prepare, report, stylize, train, tune

STAGES = (fetch, prepare, tune, train, stylize, evaluate, report, offline_plots)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nst",
        description="nst-bench: a reproducible neural-style-transfer benchmark. "
        "`dvc repro` runs the stages below in order; each can also be run by hand.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="STAGE", required=True)
    for stage in STAGES:
        stage.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    args = parser().parse_args(argv)
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
