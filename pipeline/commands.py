"""The ``nst`` subcommands: which module registers each and its one-line help, stated once.

pipeline/cli.py lists them in ``nst --help`` without importing any module and imports only the module of the command
it runs; each module registers its subparser with :func:`add_command`, which takes the help from here. Torch-free.
"""

from __future__ import annotations

import argparse
from typing import Any, NamedTuple


class Command(NamedTuple):
    module: str  # the module whose ``add_parser(sub)`` registers the subcommand
    help: str  # the line ``nst --help`` shows


COMMANDS: dict[str, Command] = {
    # dvc.yaml's stages: one module each in pipeline/stages/
    "fetch": Command("pipeline.stages.fetch", "fetch content and style images (stage 1)"),
    "prepare": Command("pipeline.stages.prepare", "validate, resize and split the images (stage 2)"),
    "tune": Command("pipeline.stages.tune", "tune a method's loss weights with Optuna (stage tune@<method>)"),
    "train": Command("pipeline.stages.train", "train a feed-forward method (stage train@<method>)"),
    "stylize-stage": Command(
        "pipeline.stages.stylize", "stylize the test grid with one method (stage stylize@<method>)"
    ),
    "scorer-weights": Command(
        "pipeline.stages.scorer_weights", "fetch the scorer's weights into one tracked folder (stage)"
    ),
    "evaluate": Command("pipeline.stages.evaluate", "score every method's outputs with one fixed scorer (stage)"),
    "judge-stage": Command(
        "pipeline.stages.judge", "people's verdict from the exported votes, beside the metrics (stage judge)"
    ),
    "report": Command("pipeline.stages.report", "render the method comparison report (stage)"),
    # tools around the pipeline: pipeline/tools/ (and the one-off stylization, beside its stage)
    "stylize": Command("pipeline.stages.stylize", "stylize one content image with one style image"),
    "pretrained": Command(
        "pipeline.tools.export_pretrained", "export a pretraining run as models/pretrained/<method>.pt + model card"
    ),
    "plots": Command("pipeline.tools.offline_plots", "render `dvc plots show` for offline viewing"),
    "judge": Command(
        "pipeline.tools.collect_votes", "collect people's votes on the outputs (a web page) and export them"
    ),
}

MODULES = tuple(dict.fromkeys(command.module for command in COMMANDS.values()))  # each once


def add_command(sub: argparse._SubParsersAction, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    """``sub.add_parser(name, help=<its line above>, **kwargs)``: a module registers its subcommand through this."""
    return sub.add_parser(name, help=COMMANDS[name].help, **kwargs)
