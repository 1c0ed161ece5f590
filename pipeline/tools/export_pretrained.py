"""``nst pretrained``: export a pretraining run (``make pretrain``) as ``models/pretrained/<method>.pt`` + model card.

Reads the run's newest checkpoint (``<run>/checkpoints``), keeps the weights of the method's trainable modules in
fp16 (methods/pretrained.py: no optimiser state, no discriminator) and writes the card — training data ids and
sha256s, iterations against the reference schedule, batch, crop, hardware, wall time (summed over every resumed
run), the last iteration's losses, the encoder and the git sha — into the file and as ``<method>.md`` beside it.
A run stopped before its profile's last iteration exports what it reached; the card says how far that is.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
from pathlib import Path
from typing import Any

from methods.encoder import load_encoder
from methods.errors import NstError
from methods.pretrained import card_markdown, export
from methods.registry import get_spec, trained_methods
from methods.training import load_latest
from methods.utils import sha256_file, write_text_atomic
from pipeline.builders import build_model
from pipeline.commands import add_command
from pipeline.config import PROFILES, encoder_settings, load_params
from pipeline.io import list_images
from pipeline.tracking import git_sha

log = logging.getLogger(__name__)


def data_ids(folder: Path) -> list[dict[str, str]]:
    return [{"id": p.name, "sha256": sha256_file(p)} for p in list_images(folder)]


def run(
    params_path: Path,
    profile: str | None,
    method: str,
    run_dir: Path,
    out: Path,
    content: Path,
    style: Path,
    code: str | None = None,
) -> dict[str, Any]:
    """Export ``run_dir``'s newest checkpoint of ``method`` to ``out`` and its card to ``<out>.md``; returns it."""
    if not get_spec(method).trains:
        raise NstError(f"{method} is not a trained method (trained: {', '.join(trained_methods())})")
    params = load_params(params_path, profile)
    found = load_latest(run_dir / "checkpoints")
    if found is None:
        raise NstError(f"{run_dir / 'checkpoints'}: no checkpoint to export (run `nst train --profile pretrain` first)")
    state, ckpt = found
    encoder = load_encoder(**encoder_settings(params, method))
    model = build_model(params, method, encoder)
    tcfg = getattr(params.methods, method).train
    stored = state.get("config", {})
    for key in ("batch_size", "lr", "lr_decay", "seed"):
        if key in stored and stored[key] != getattr(tcfg, key):
            raise NstError(
                f"{ckpt}: trained with {key} = {stored[key]}, but the params ({params.profile} profile) "
                f"say {getattr(tcfg, key)}: export with the params and profile of the run"
            )
    modules = model.trainable()
    schedule = get_spec(method).reference_schedule
    card = {
        "method": method,
        "file": str(out),
        "modules": list(modules),
        "parameters": sum(p.numel() for m in modules.values() for p in m.parameters()),
        "iterations": int(state["iteration"]),
        "planned_iterations": tcfg.iterations,
        "schedule": {
            "batch_size": tcfg.batch_size,
            "crop": tcfg.crop,
            "resize_short": tcfg.resize_short,
            "lr": tcfg.lr,
            "lr_decay": tcfg.lr_decay,
            "seed": tcfg.seed,
            "profile": params.profile,
        },
        "reference_schedule": {
            "iterations": schedule.iterations,
            "batch_size": schedule.batch_size,
            "crop": schedule.crop,
            "source": schedule.source,
        },
        "precision": {True: "bf16 autocast", False: "fp32"}.get(stored.get("amp"), f"amp = {stored.get('amp')}"),
        "hardware": state.get("hardware", "unknown"),
        "wall_time_s": round(float(state.get("elapsed_s", 0.0)), 1),
        "final_losses": {k: round(float(v), 6) for k, v in state.get("last_losses", {}).items()},
        "encoder": {
            "weights": params.encoder.weights,
            "pool": params.encoder.pool,
            "normalise": getattr(params.methods, method).encoder_normalise,
            "sha256": encoder.weights_sha256,
        },
        "data": {"content": data_ids(content), "style": data_ids(style)},
        "git_sha": code or git_sha(),
        "checkpoint": str(ckpt),
        "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    export(method, modules, encoder.weights_sha256, state, out, card)
    write_text_atomic(out.with_suffix(".md"), card_markdown(card))
    return card


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "pretrained", description=__doc__)
    p.add_argument("--method", required=True, choices=trained_methods())
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--profile", choices=PROFILES, default="pretrain", help="the profile the run was trained with")
    p.add_argument(
        "--run", type=Path, required=True, help="the run's folder (nst train --out), e.g. models/pretrain/adain"
    )
    p.add_argument("--out", type=Path, required=True, help="e.g. models/pretrained/adain.pt")
    p.add_argument("--content", type=Path, default=Path("data/prepared/train/content"), help="the run's content images")
    p.add_argument("--style", type=Path, default=Path("data/prepared/train/style"), help="the run's style images")
    p.add_argument(
        "--git-sha",
        default=None,
        help="the commit whose code trained the run (default: this checkout's HEAD, -dirty if modified)",
    )
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    card = run(args.params, args.profile, args.method, args.run, args.out, args.content, args.style, args.git_sha)
    log.info("pretrained %s: %s", args.method, json.dumps({k: card[k] for k in ("iterations", "wall_time_s")}))
    return 0
