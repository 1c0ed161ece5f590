"""train stage (``train@<method>``, feed-forward methods): train on ``data/prepared/train`` -> ``models/<method>/``.

Writes the method's model file (``decoder.pt`` for AdaIN, ``generator.pt`` for the contrastive method; see its
``save``), ``train_metrics.json`` (iterations, seconds,
iterations/s, final losses), ``losses.csv`` (per-step loss terms, thinned) and ``checkpoints/ckpt-*.pt`` (atomic,
every ``train.checkpoint_every`` iterations). By default a run resumes from the newest readable checkpoint written
for the same configuration (so an interrupted ``dvc repro`` continues: dvc.yaml marks the folder ``persist``) and
starts afresh otherwise; ``--resume`` insists on resuming, ``--fresh`` ignores checkpoints.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from methods.cpu import cpu_facts, cpu_summary
from methods.encoder import load_encoder
from methods.errors import NstError
from methods.precision import Precision
from methods.pretrained import warm_start
from methods.registry import get_spec, trained_methods
from methods.training import (
    LossHistory,
    barrier,
    checkpoints,
    dist_info,
    load_latest,
    scheduled_iterations,
    train,
)
from methods.utils import sha256_file
from pipeline import tracking
from pipeline.builders import build_model, init_file
from pipeline.code_deps import fingerprint as code_fingerprint
from pipeline.code_deps import method_module
from pipeline.commands import add_command
from pipeline.config import PROFILES, Params, encoder_settings, load_params
from pipeline.io import (
    read_csv,
    side_by_side,
    write_csv,
    write_text_atomic,
)
from pipeline.resources import pick_device, tf32_label
from pipeline.stage_params import as_trained, declared_tree, dump_declared
from pipeline.training_data import crops

log = logging.getLogger(__name__)


class TrainLog(LossHistory):
    """The train stage's callbacks: keeps every iteration's loss terms (``losses.csv``, ``train_metrics.json``), logs
    every ``log_every``-th to MLflow (20 steps per call, the rest when training ends) and, every ``sample_every``
    iterations, a sample grid (content | style | stylized) of one fixed content and style crop."""

    def __init__(
        self,
        model: Any,
        sample: tuple[torch.Tensor, torch.Tensor],
        device: torch.device,
        logger: tracking.RunLogger | None,
        *,
        sample_every: int,
        log_every: int,
    ) -> None:
        super().__init__()
        self.model, self.sample, self.device, self.logger = model, sample, device, logger
        self.interval, self.log_every = sample_every, log_every
        self.queued: list[tuple[int, dict[str, float]]] = []  # metrics not yet sent to MLflow

    def rows(self) -> list[dict[str, float]]:
        """Every iteration's terms with its ``step`` (the rows of ``losses.csv``)."""
        return [{"step": step, **terms} for step, terms in zip(self.steps, self.terms, strict=True)]

    def on_losses(self, iteration: int, terms: dict[str, float]) -> None:
        super().on_losses(iteration, terms)
        if self.logger is not None and iteration % self.log_every == 0:
            self.queued.append((iteration, terms))
            if len(self.queued) >= 20:
                self.flush()

    def on_interval(self, iteration: int) -> None:
        self.log_sample_grid(iteration)

    def on_end(self, iteration: int) -> None:
        self.flush()

    def flush(self) -> None:
        """Send the queued loss terms to MLflow."""
        if self.logger is not None:
            for it, terms in self.queued:
                self.logger.log_metrics({f"train/{k}": v for k, v in terms.items()}, step=it)
        self.queued.clear()

    def log_sample_grid(self, iteration: int) -> None:
        """Stylize the sample pair with the current weights and log the grid (the modules' training modes kept)."""
        if self.logger is None:
            return
        content, style = self.sample
        modes = {name: m.training for name, m in self.model.trainable().items()}
        out = self.model.stylize(content.to(self.device), style.to(self.device)).cpu()
        for name, m in self.model.trainable().items():
            m.train(modes[name])
        self.logger.log_image(side_by_side([content, style, out], height=192), f"samples/iter_{iteration:08d}.png")


def run(
    params: Params,
    method_name: str,
    content_dir: Path,
    style_dir: Path,
    out_dir: Path,
    *,
    resume: str = "auto",
    logger: tracking.RunLogger | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train ``method_name``; ``resume`` is "auto" | "always" | "never". Returns the train metrics."""
    spec = get_spec(method_name)
    if not spec.trains:
        raise NstError(f"{method_name} is not a trained method (trained: {', '.join(trained_methods())})")
    tcfg = getattr(params.methods, method_name).train
    rank, world = dist_info()
    device = distributed_device(params) if world > 1 else pick_device(params.base.device, params.base.tf32)
    model, fingerprint, init_info = fresh_model(params, method_name, (content_dir, style_dir))
    ckpt_dir = out_dir / "checkpoints"
    resumes = decide_resume(ckpt_dir, fingerprint, resume, method_name)
    content, style = (
        crops(folder, tcfg.resize_short, tcfg.crop, workers=tcfg.workers) for folder in (content_dir, style_dir)
    )
    info = architecture_info(model, tcfg.crop, method_name)
    precision = Precision.resolve(tcfg.amp, tcfg.channels_last, device)
    sample = (content.sample(1, torch.Generator().manual_seed(1)), style.sample(1, torch.Generator().manual_seed(2)))
    callbacks = TrainLog(model, sample, device, logger, sample_every=tcfg.sample_every, log_every=tcfg.log_every)
    started = time.perf_counter()
    reached = train(
        model,
        content,
        style,
        tcfg,
        ckpt_dir,
        device=device,
        resume=resumes,
        fingerprint=fingerprint,
        callbacks=callbacks,
        stop_after=stop_after,
    )
    seconds = time.perf_counter() - started
    if rank != 0:  # rank 0 writes the outputs and logs
        return {"iterations": reached, "rank": rank}
    history = callbacks.rows()
    setting = {**what_ran(params, tcfg, device, precision), "processes": world, **info, **init_info}
    metrics = train_metrics(out_dir / "train_metrics.json", reached, history, seconds, setting)
    model_path = out_dir / str(spec.model_file)
    if reached >= setting["scheduled_iterations"] and (history or not model_path.is_file()):  # complete, trained now
        extra = {"iterations": reached, "fingerprint": fingerprint}
        model.save(out_dir, extra={**extra, "pretrained_iterations": init_info["pretrained_iterations"]})
    write_outputs(params, method_name, out_dir, metrics, history, reached, resumed=resumes)
    log_training(logger, metrics, model_path)
    return metrics


def fresh_model(params: Params, method_name: str, data: tuple[Path, Path]) -> tuple[Any, str, dict[str, Any]]:
    """The model to train (at its inference defaults, :func:`~pipeline.stage_params.as_trained`), warm-started from
    ``train.init_from`` when set; its checkpoints' fingerprint; what train_metrics.json records of the start."""
    encoder = load_encoder(**encoder_settings(params, method_name))
    model = build_model(as_trained(params, method_name), method_name, encoder)
    init = init_file(getattr(params.methods, method_name).train, method_name)
    init_sha = sha256_file(init) if init else None
    fingerprint = run_fingerprint(params, method_name, encoder.weights_sha256, data, init_sha)
    # A warm start loads before training; a resumed run then replaces every weight with its checkpoint's.
    return model, fingerprint, start_from(init, init_sha, model, method_name, encoder.weights_sha256)


def what_ran(params: Params, tcfg: Any, device: torch.device, precision: Precision) -> dict[str, Any]:
    """The device, precision, CPU and iteration budget a training ran with (train_metrics.json, the report)."""
    return {
        "device": device.type,
        "precision": precision.label + tf32_label(device, params.base.tf32),
        "scheduled_iterations": scheduled_iterations(tcfg, precision),  # iterations, or its fp32 budget
        "cpu": cpu_summary(cpu_facts()),
    }


def architecture_info(model: Any, crop: int, method_name: str) -> dict[str, Any]:
    """What training at ``crop`` px uses of the model's architecture (e.g. the discriminator scales that see the
    crops), logged and recorded in train_metrics.json; {} for a model that does not say."""
    info = model.train_info(crop) if hasattr(model, "train_info") else {}
    if info:
        log.info("train@%s at %d px crops: %s", method_name, crop, json.dumps(info))
    return info


def log_training(logger: tracking.RunLogger | None, metrics: dict[str, Any], model_path: Path) -> None:
    """The run's precision tag, its numeric train metrics and the model file (when written) to MLflow."""
    if logger is None:
        return
    logger.set_tags({"precision": metrics["precision"]})
    logger.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float) and v is not None})
    if model_path.is_file():
        logger.log_artifact(model_path, "model")


def run_fingerprint(
    params: Params, method_name: str, encoder_sha: str, data: tuple[Path, Path], init_sha: str | None
) -> str:
    """What a checkpoint must have been written for to be resumed: the method's train section, encoder, data folders,
    the warm-start file and the code training runs. ``train.workers`` is left out: how many processes cut the crops
    changes no number (methods/training.py StepPlans)."""
    train = getattr(params.methods, method_name).train
    return tracking.params_hash(
        {
            "method": method_name,
            "train": train.model_dump(mode="json", exclude={"workers"}),
            "encoder": encoder_sha,
            "pool": params.encoder.pool,
            "content": str(data[0]),
            "style": str(data[1]),
            "init": init_sha,
            "code": code_fingerprint([__name__, method_module(get_spec(method_name).implementation)]),
        }
    )


def start_from(
    init: Path | None, init_sha: str | None, model: Any, method_name: str, encoder_sha: str
) -> dict[str, Any]:
    """Warm-start ``model`` from the pretrained file ``init`` (None: from scratch); returns what
    ``train_metrics.json`` records of the start (``init_from``, ``init_sha256``, ``pretrained_iterations``)."""
    if init is None:
        return {"init_from": None, "pretrained_iterations": 0}
    card = warm_start(method_name, model.trainable(), encoder_sha, init)
    info = {"init_from": str(init), "init_sha256": init_sha, "pretrained_iterations": int(card.get("iterations", 0))}
    log.info(
        "train@%s: warm start from %s (%d pretrained iterations)", method_name, init, info["pretrained_iterations"]
    )
    return info


def decide_resume(ckpt_dir: Path, fingerprint: str, resume: str, method_name: str) -> bool:
    """Whether this run resumes from ``ckpt_dir``: ``always`` / ``never`` as asked; ``auto`` when the newest readable
    checkpoint was written for ``fingerprint`` (checkpoints of another configuration: start afresh). Starting afresh,
    rank 0 removes the old checkpoints (after every rank has decided from the same files)."""
    if resume == "auto":
        found = load_latest(ckpt_dir) if checkpoints(ckpt_dir) else None
        if found is not None and found[0].get("fingerprint") == fingerprint:
            resume = "always"
        elif checkpoints(ckpt_dir):
            log.info("train@%s: checkpoints are from another configuration; starting afresh", method_name)
            resume = "never"
    barrier()
    if resume == "never" and ckpt_dir.exists() and dist_info()[0] == 0:
        shutil.rmtree(ckpt_dir)
    return resume == "always"


def train_metrics(
    path: Path, reached: int, history: list[dict[str, float]], seconds: float, setting: dict[str, Any]
) -> dict[str, Any]:
    """``train_metrics.json``'s content: this run's iterations, speed and final losses, with ``setting`` (device,
    processes, precision, architecture and warm-start facts). A resumed run that had nothing left to do keeps the
    metrics at ``path``, with ``iterations_this_run`` 0."""
    if not history and path.is_file():
        return {**json.loads(path.read_text()), "iterations_this_run": 0}
    done = len(history)
    return {
        "iterations": reached,
        "iterations_this_run": done,
        "seconds": round(seconds, 3),
        "iterations_per_second": round(done / seconds, 4) if seconds > 0 and done else None,
        **setting,
        "total_iterations": reached + setting["pretrained_iterations"],
        **{f"final_{k}": v for k, v in (history[-1] if history else {}).items() if k != "step"},
    }


def write_outputs(
    params: Params,
    method_name: str,
    out_dir: Path,
    metrics: dict[str, Any],
    history: list[dict[str, float]],
    reached: int,
    *,
    resumed: bool,
) -> None:
    """``losses.csv`` (this run's rows after those of the run it resumed, up to where this one started),
    ``train_metrics.json`` and ``effective_params.yaml``, each atomically."""
    losses_path = out_dir / "losses.csv"
    old = read_csv(losses_path) if resumed else []
    rows = [r for r in old if int(r["step"]) <= reached - len(history)] + history
    fields = ("step", *[k for k in (history[0] if history else {"total": 0}) if k != "step"])
    write_csv(rows, fields, losses_path)  # type: ignore[arg-type]
    write_text_atomic(out_dir / "train_metrics.json", json.dumps(metrics, indent=2) + "\n")
    # Only the sections dvc.yaml declares for train@<method>; the tuned weights are in its train section when applied.
    write_text_atomic(out_dir / "effective_params.yaml", dump_declared(params, "train", method_name))


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "train", description=__doc__)
    p.add_argument("--method", required=True, choices=trained_methods())
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument(
        "--profile",
        choices=PROFILES,
        default=None,
        help="apply this profile instead of params.yaml's (make pretrain: --profile pretrain)",
    )
    p.add_argument(
        "--tuned", type=Path, default=None, help="reports/tuning/<method>/best.yaml, used when tune.use_tuned"
    )
    p.add_argument("--content", type=Path, default=Path("data/prepared/train/content"))
    p.add_argument("--style", type=Path, default=Path("data/prepared/train/style"))
    p.add_argument("--out", type=Path, required=True, help="e.g. models/<method>")
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--resume",
        action="store_const",
        const="always",
        dest="resume",
        default="auto",
        help="continue from the newest checkpoint (error if there is none)",
    )
    group.add_argument("--fresh", action="store_const", const="never", dest="resume", help="ignore checkpoints")
    p.set_defaults(func=main)


def distributed_device(params: Params) -> torch.device:
    """This rank's device under torchrun: ``cuda:<LOCAL_RANK>`` (nccl) when CUDA is used, else the CPU (gloo)."""
    if params.base.device != "cpu" and torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        pick_device("cuda", params.base.tf32)  # sets TF32 as base.tf32 says
        return torch.device("cuda", local)
    if params.base.device == "cuda":
        raise NstError("base.device is cuda but CUDA is not available")
    return torch.device("cpu")


def init_distributed(params: Params) -> bool:
    """Join the process group when started by torchrun (``WORLD_SIZE`` > 1); returns whether it did."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    device = distributed_device(params)
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return True


def main(args: argparse.Namespace) -> int:
    params = load_params(args.params, args.profile, method=args.method, tuned=args.tuned)
    if init_distributed(params):
        try:
            return _main(args, params)
        finally:
            torch.distributed.destroy_process_group()
    return _main(args, params)


def _main(args: argparse.Namespace, params: Params) -> int:
    tree = declared_tree(params, "train", args.method)
    if dist_info()[0] != 0:  # other ranks train without logging; rank 0 holds the MLflow run
        run(params, args.method, args.content, args.style, args.out, resume=args.resume)
        return 0
    tags = {"processes": str(dist_info()[1])}
    with tracking.stage_run(
        "train",
        args.method,
        tree,
        uri=params.tracking.uri,
        experiment=params.tracking.experiment,
        tags=tags,
        max_step_points=params.tracking.max_step_points,
    ) as logger:
        metrics = run(params, args.method, args.content, args.style, args.out, resume=args.resume, logger=logger)
    log.info("train@%s: %s", args.method, json.dumps(metrics))
    return 0
