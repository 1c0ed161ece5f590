"""stylize stage: every test content x every test style with one method -> ``outputs/<method>/``.

Writes ``<content>__<style>.png`` (the content's H x W), ``timing.csv`` (seconds, peak memory, device, input
sha256s and final loss terms per pair) and ``losses.csv`` (the loss terms per step and pair, thinned to
``tracking.max_step_points``). ``timing.csv`` is rewritten atomically after every pair, so an interrupted
run, restarted, skips the finished pairs (dvc.yaml marks the folder ``persist`` for this); a change of the method's
parameters, the encoder, the device or the code (recorded in ``.stylize-state.json``) starts the folder afresh, and a
pair whose input images changed is redone. Also the one-off ``nst stylize`` command, through the same code path.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from methods.cpu import cpu_facts, cpu_summary
from methods.encoder import VGGEncoder, load_encoder
from methods.errors import NstError
from methods.precision import runtime_label
from methods.registry import Method, ParamsError, build_method, get_spec, list_methods
from methods.utils import sha256_file
from pipeline import tracking
from pipeline.builders import (
    method_encoder,
    method_provenance,
    model_fingerprint,
    trained_model_note,
)
from pipeline.code_deps import fingerprint as code_fingerprint
from pipeline.code_deps import method_module
from pipeline.commands import add_command
from pipeline.config import ConfigError, Params, load_params, parse_overrides
from pipeline.io import list_images, read_csv, read_image, side_by_side, write_csv, write_image, write_text_atomic
from pipeline.resources import measure, pick_device, tf32_label
from pipeline.stage_params import declared_tree, dump_declared

log = logging.getLogger(__name__)

TIMING_FIELDS = (
    "content",
    "style",
    "file",
    "seconds",
    "peak_mem_mb",
    "device",
    "precision",
    "cpu",
    "content_sha256",
    "style_sha256",
    "loss_content",
    "loss_style",
    "loss_tv",
    "loss_total",
)
LOSS_FIELDS = ("pair", "step", "content", "style", "tv", "total")
STATE_FILE = ".stylize-state.json"


def stylize_pair(
    method: Method, content_path: Path, style_path: Path, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float, float, list[dict[str, float]]]:
    """Stylize one pair; returns (content, style, output) on CPU, seconds, peak MB and the per-step loss terms."""
    content = read_image(content_path).to(device)
    style = read_image(style_path).to(device)
    history: list[dict[str, float]] = []
    with measure(device) as usage:
        output = method.stylize(content, style, callback=lambda _step, terms: history.append(terms))
    if output.shape != content.shape:
        raise NstError(f"{method.name} returned {tuple(output.shape)} for content {tuple(content.shape)}")
    return content.cpu(), style.cpu(), output.cpu(), usage.seconds, usage.peak_mem_mb, history


def run(
    params: Params,
    method_name: str,
    content_dir: Path,
    style_dir: Path,
    out_dir: Path,
    *,
    encoder: VGGEncoder | None = None,
    logger: tracking.RunLogger | None = None,
    model: Path | None = None,
) -> list[dict[str, Any]]:
    """Stylize the grid into ``out_dir``, resuming finished pairs; returns the timing rows.

    ``model``: the trained model (file or folder) of a feed-forward method.
    """
    device = pick_device(params.base.device, params.base.tf32)
    grid = test_grid(content_dir, style_dir)
    encoder = encoder if encoder is not None else method_encoder(params, method_name)
    method = build_method(method_name, getattr(params.methods, method_name), encoder=encoder, model=model)
    precision = runtime_label(method, device)
    if not getattr(method, "runtime", None):  # a method on a runtime of its own says what it ran in itself
        precision += tf32_label(device, params.base.tf32)
    runtime = {"precision": precision, "cpu": cpu_summary(cpu_facts())}
    state = run_state(params, method_name, encoder, device, model, runtime)
    start_folder(out_dir, state, method_name)
    # Only the sections dvc.yaml declares for stylize@<method>; the tuned weights are in methods.<method> when applied.
    write_text_atomic(out_dir / "effective_params.yaml", dump_declared(params, "stylize", method_name))
    shas = {p: sha256_file(p) for p in {p for pair in grid for p in pair}}  # each image once, not once per pair
    done = finished_pairs(out_dir, grid, shas, content_dir, style_dir)
    if done:
        log.info("stylize@%s: %d of %d pairs already done; resuming", method_name, len(done), len(grid))
    rows = stylize_missing(method, grid, done, shas, out_dir, device, params, logger, runtime)
    if logger is not None:
        logger.set_tags({"precision": runtime["precision"]})
        log_summary(logger, rows, out_dir / "timing.csv")
    return rows


def test_grid(content_dir: Path, style_dir: Path) -> list[tuple[Path, Path]]:
    """Every content x every style (sorted), with one clear error for an empty folder."""
    contents, styles = list_images(content_dir), list_images(style_dir)
    for role, found, folder in (("content", contents, content_dir), ("style", styles, style_dir)):
        if not found:
            raise NstError(f"{folder}: no {role} images to stylize")
    return [(c, s) for c in contents for s in styles]


def run_state(
    params: Params,
    method_name: str,
    encoder: VGGEncoder | None,
    device: torch.device,
    model: Path | None,
    runtime: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Everything the outputs depend on besides the input images (``.stylize-state.json``): a change starts afresh.
    ``runtime``: the precision and the CPU facts (:func:`methods.cpu.cpu_summary`) it runs with; another CPU family
    computes other bytes, so it starts afresh too."""
    return {
        **(runtime or {}),
        "method": method_name,
        "config": getattr(params.methods, method_name).model_dump(mode="json"),
        "encoder_sha256": encoder.weights_sha256 if encoder is not None else None,
        "pool": params.encoder.pool,
        "device": device.type,
        "code_sha256": code_fingerprint([__name__, method_module(get_spec(method_name).implementation)]),
        "model_sha256": model_fingerprint(model),
        **method_provenance(method_name),
    }


def start_folder(out_dir: Path, state: dict[str, Any], method_name: str) -> None:
    """Create ``out_dir``; when its recorded state differs from ``state``, remove its outputs and record ``state``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path = out_dir / STATE_FILE
    previous = json.loads(state_path.read_text()) if state_path.is_file() else None
    if previous == state:
        return
    if previous is not None:
        log.info(
            "stylize@%s: parameters, encoder, device or code changed since the last run; starting afresh", method_name
        )
    for stale in [*out_dir.glob("*.png"), out_dir / "timing.csv", out_dir / "losses.csv"]:
        stale.unlink(missing_ok=True)
    write_text_atomic(state_path, json.dumps(state, indent=2, sort_keys=True) + "\n")


def finished_pairs(
    out_dir: Path, grid: list[tuple[Path, Path]], shas: dict[Path, str], content_dir: Path, style_dir: Path
) -> dict[str, dict[str, Any]]:
    """The timing rows of pairs already done with the same input images (their PNGs kept); other PNGs are removed."""
    expected = {f"{c.stem}__{s.stem}.png" for c, s in grid}
    done: dict[str, dict[str, Any]] = {}
    for row in read_csv(out_dir / "timing.csv"):
        c, s = content_dir / f"{row['content']}", style_dir / f"{row['style']}"
        if (
            row["file"] in expected
            and (out_dir / row["file"]).is_file()
            and shas.get(c) == row["content_sha256"]
            and shas.get(s) == row["style_sha256"]
        ):
            done[row["file"]] = row
    for stale in out_dir.glob("*.png"):
        if stale.name not in done:
            stale.unlink()
    return done


def stylize_missing(
    method: Method,
    grid: list[tuple[Path, Path]],
    done: dict[str, dict[str, Any]],
    shas: dict[Path, str],
    out_dir: Path,
    device: torch.device,
    params: Params,
    logger: tracking.RunLogger | None,
    runtime: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Stylize the pairs not in ``done``, rewriting ``timing.csv`` and ``losses.csv`` after each; all timing rows.
    ``runtime``: the ``precision`` and ``cpu`` columns (what decided the numbers; blank where not given)."""
    timing_path, losses_path = out_dir / "timing.csv", out_dir / "losses.csv"
    rows: list[dict[str, Any]] = list(done.values())
    done_pairs = {Path(name).stem for name in done}
    loss_rows = [r for r in read_csv(losses_path) if r["pair"] in done_pairs]
    grids_logged = 0
    for content_path, style_path in tqdm(grid, desc=f"stylize@{method.name}", unit="pair", disable=None):
        name = f"{content_path.stem}__{style_path.stem}.png"
        if name in done:
            continue
        content, style, output, seconds, peak, history = stylize_pair(method, content_path, style_path, device)
        write_image(output, out_dir / name)
        final = history[-1] if history else {}
        rows.append(
            {
                "content": content_path.name,
                "style": style_path.name,
                "file": name,
                "seconds": round(seconds, 4),
                "peak_mem_mb": round(peak, 1),
                # a method on a runtime of its own (ghiasi: onnxruntime, CPU-only unless its CUDA build is installed)
                # records the device it actually ran on
                "device": getattr(method, "device_label", None) or device.type,
                "precision": (runtime or {}).get("precision", ""),
                "cpu": (runtime or {}).get("cpu", ""),
                "content_sha256": shas[content_path],
                "style_sha256": shas[style_path],
                **{f"loss_{k}": final.get(k, "") for k in ("content", "style", "tv", "total")},
            }
        )
        rows.sort(key=lambda r: r["file"])
        loss_rows.extend(
            {"pair": Path(name).stem, "step": step, **terms}
            for step, terms in tracking.thin(history, params.tracking.max_step_points)
        )
        write_csv(loss_rows, LOSS_FIELDS, losses_path)
        write_csv(rows, TIMING_FIELDS, timing_path)
        if logger is not None:
            logger.log_step_series(f"{Path(name).stem}/", history)
            if grids_logged < params.stylize.grids:
                logger.log_image(side_by_side([content, style, output]), f"grids/{name}")
                grids_logged += 1
    if not timing_path.is_file():  # nothing to do and nothing done before (cannot happen with a non-empty grid)
        write_csv(rows, TIMING_FIELDS, timing_path)
    if not losses_path.is_file():
        write_csv(loss_rows, LOSS_FIELDS, losses_path)
    return rows


def log_summary(logger: tracking.RunLogger, rows: list[dict[str, Any]], timing_path: Path) -> None:
    """Per-run means and totals of seconds and peak memory, and ``timing.csv``, to MLflow."""
    seconds = [float(r["seconds"]) for r in rows]
    peaks = [float(r["peak_mem_mb"]) for r in rows]
    logger.log_metrics(
        {
            "pairs": len(rows),
            "seconds_mean": statistics.fmean(seconds),
            "seconds_total": sum(seconds),
            "peak_mem_mb_max": max(peaks),
            "peak_mem_mb_mean": statistics.fmean(peaks),
        }
    )
    logger.log_artifact(timing_path)


# ------------------------------------------------------------------------------------------------ CLI


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "stylize-stage", description=__doc__)
    p.add_argument("--method", required=True, choices=list_methods())
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument(
        "--tuned", type=Path, default=None, help="reports/tuning/<method>/best.yaml, used when tune.use_tuned"
    )
    p.add_argument("--content", type=Path, default=Path("data/prepared/test/content"))
    p.add_argument("--style", type=Path, default=Path("data/prepared/test/style"))
    p.add_argument("--out", type=Path, required=True, help="e.g. outputs/<method>")
    p.add_argument("--model", type=Path, default=None, help="trained model of a feed-forward method (models/<method>)")
    p.set_defaults(func=main_stage)

    one = add_command(
        sub,
        "stylize",
        description="One-off stylization with the same code path as the stylize stage; parameters come from "
        "params.yaml's methods.<method> (./params.yaml when present, else the method's own defaults), changed "
        "with --set key=value (train.key=value for a trained method's train section). Works from any directory.",
    )
    one.add_argument("--method", default="gatys", choices=list_methods())
    one.add_argument("content", type=Path)
    one.add_argument("style", type=Path)
    one.add_argument("-o", "--out", type=Path, required=True, help="output PNG")
    one.add_argument(
        "--params", type=Path, default=None, help="default: ./params.yaml if there is one, else the method's defaults"
    )
    one.add_argument(
        "--model", type=Path, default=None, help="trained model of a feed-forward method (models/<method>)"
    )
    one.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    one.set_defaults(func=main_one)


def main_stage(args: argparse.Namespace) -> int:
    params = load_params(args.params, method=args.method, tuned=args.tuned)
    encoder = method_encoder(params, args.method)
    if encoder is not None:
        tags = {"encoder_sha256": encoder.weights_sha256, "encoder_weights": encoder.weights_source}
    else:  # a pretrained method with networks of its own: tag those instead
        tags = {"encoder_weights": "none", **method_provenance(args.method)}
    with tracking.stage_run(
        "stylize",
        args.method,
        declared_tree(params, "stylize", args.method),
        uri=params.tracking.uri,
        experiment=params.tracking.experiment,
        tags=tags,
        max_step_points=params.tracking.max_step_points,
    ) as logger:
        rows = run(
            params, args.method, args.content, args.style, args.out, encoder=encoder, logger=logger, model=args.model
        )
    log.info("stylize@%s: %d pairs in %s", args.method, len(rows), args.out)
    return 0


def main_one(args: argparse.Namespace) -> int:
    overrides = parse_overrides(args.overrides)
    path = args.params if args.params is not None else Path("params.yaml")
    if args.params is None and not path.is_file():  # an explicit --params that is missing stays an error
        spec = get_spec(args.method)
        log.info(
            "no params.yaml in %s: using %s's defaults (%s, device auto)",
            Path.cwd(),
            args.method,
            "encoder caffe, pool max" if spec.uses_encoder else "no encoder",
        )
        device = pick_device("auto")
        try:
            method_params = spec.parse(overrides)  # the method's defaults with the overrides, validated
        except ParamsError as exc:
            raise ConfigError(f"--set: {exc}") from None
        # caffe weights, max pooling (params.yaml's committed values), the method's own normalisation
        encoder = load_encoder(normalise=method_params.encoder_normalise) if spec.uses_encoder else None
        method = build_method(args.method, method_params, encoder=encoder, model=args.model)
    else:
        params = load_params(path, method=args.method, changes=overrides)
        device = pick_device(params.base.device, params.base.tf32)
        encoder = method_encoder(params, args.method)
        method = build_method(args.method, getattr(params.methods, args.method), encoder=encoder, model=args.model)
    note = trained_model_note(args.method, args.model)
    if note is not None:
        log.warning(note)
    _, _, output, seconds, peak, history = stylize_pair(method, args.content, args.style, device)
    write_image(output, args.out)
    final = history[-1] if history else {}
    print(json.dumps({"out": str(args.out), "seconds": round(seconds, 3), "peak_mem_mb": round(peak, 1), **final}))
    return 0
