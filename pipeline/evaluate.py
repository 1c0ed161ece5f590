"""evaluate stage: score every method's outputs with one fixed scorer -> ``reports/metrics/``.

Reads each ``outputs/<method>/`` that holds a ``timing.csv``, checks that every test content x test style pair is
there with the content's size, and scores it (evaluation.metrics) against its content and style image. Two reference
rows on the same pairs calibrate each metric's range: ``identity`` (output = content) and ``style_copy`` (output = the
style image resized to the content's size). Writes ``per_pair.csv`` (method, content, style, every metric, seconds,
peak memory), ``summary.json`` (the DVC metrics: per method and metric mean, std, bootstrap CI, n; plus seconds and
peak memory) and ``scoring.json`` (what each metric means, its direction, the scorer, whether LPIPS was available),
each atomically and only after everything has been scored; logs one MLflow run per method.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import torch.nn.functional as F
from tqdm.auto import tqdm

from evaluation.metrics import METRICS, LpipsUnavailable, Scorer, load_lpips
from evaluation.summary import summarize
from methods.encoder import load_encoder
from methods.errors import NstError
from pipeline import tracking
from pipeline.config import Params, load_params
from pipeline.io import list_images, read_csv, read_image, write_csv, write_text_atomic
from pipeline.resources import pick_device

log = logging.getLogger(__name__)

REFERENCES = ("identity", "style_copy")
PAIR_FIELDS = ("method", "content", "style", *METRICS, "seconds", "peak_mem_mb")


class EvaluateError(NstError):
    """Outputs are missing, unreadable or of the wrong size."""


def find_methods(outputs: Path) -> list[str]:
    """Method folders under ``outputs`` that hold a ``timing.csv`` (i.e. a finished stylize stage)."""
    if not outputs.is_dir():
        raise EvaluateError(f"{outputs}: no outputs folder (run the stylize stages first)")
    return sorted(p.name for p in outputs.iterdir() if p.is_dir() and (p / "timing.csv").is_file())


def build_scorer(params: Params) -> tuple[Scorer, str | None]:
    """The fixed scorer (caffe VGG-19, max pooling) and, when LPIPS is unavailable, why."""
    encoder = load_encoder("caffe")
    note = None
    try:
        lpips_model = load_lpips(params.evaluate.lpips_weights, download=params.evaluate.lpips_download)
    except LpipsUnavailable as exc:
        lpips_model, note = None, str(exc)
        log.warning("lpips is n/a: %s", exc)
    return Scorer(encoder, lpips_model, params.evaluate.cfsd_max_side), note


def score_all(
    scorer: Scorer, methods: list[str], outputs: Path, content_dir: Path, style_dir: Path, device: Any
) -> pd.DataFrame:
    """Score every method's grid plus the reference rows; raises EvaluateError naming the first bad file."""
    contents, styles = list_images(content_dir), list_images(style_dir)
    if not contents or not styles:
        raise EvaluateError(f"{content_dir} / {style_dir}: no test images")
    timings = {m: {row["file"]: row for row in read_csv(outputs / m / "timing.csv")} for m in methods}
    for method in methods:  # check everything is there before the (slow) scoring starts
        for c in contents:
            for s in styles:
                path = outputs / method / f"{c.stem}__{s.stem}.png"
                if not path.is_file():
                    raise EvaluateError(f"{path}: missing output for pair ({c.name}, {s.name})")
    scorer.to(device)
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(contents) * len(styles) * (len(methods) + 2), desc="evaluate", unit="img", disable=None)
    for c in contents:
        content = read_image(c).to(device)
        for s in styles:
            style = read_image(s).to(device)
            name = f"{c.stem}__{s.stem}.png"
            candidates = {
                "identity": content,
                "style_copy": F.interpolate(style, size=content.shape[-2:], mode="bicubic", antialias=True).clamp(0, 1),
            }
            for method in methods:
                path = outputs / method / name
                output = read_image(path).to(device)
                if output.shape != content.shape:
                    raise EvaluateError(
                        f"{path}: {output.shape[-1]}x{output.shape[-2]} but content {c.name} is "
                        f"{content.shape[-1]}x{content.shape[-2]}"
                    )
                candidates[method] = output
            for method, output in candidates.items():
                timing = timings.get(method, {}).get(name, {})
                rows.append({
                    "method": method, "content": c.name, "style": s.name, **scorer.score(output, content, style),
                    "seconds": timing.get("seconds", ""), "peak_mem_mb": timing.get("peak_mem_mb", ""),
                })  # fmt: skip
                bar.update(1)
    bar.close()
    return pd.DataFrame(rows, columns=list(PAIR_FIELDS))


def run(
    params: Params, outputs: Path, content_dir: Path, style_dir: Path, out_dir: Path, scorer: Scorer | None = None
) -> dict[str, Any]:
    """Score, summarise and write ``per_pair.csv`` + ``summary.json``; returns the summary."""
    methods = find_methods(outputs)
    if not methods:
        raise EvaluateError(f"{outputs}: no method folder with a timing.csv (run the stylize stages first)")
    note = None
    if scorer is None:
        scorer, note = build_scorer(params)
    device = pick_device(params.base.device)
    per_pair = score_all(scorer, methods, outputs, content_dir, style_dir, device)
    cfg = params.evaluate
    summary: dict[str, Any] = {
        "pairs": int(len(per_pair) / (len(methods) + len(REFERENCES))),
        "methods": summarize(per_pair, list(METRICS), n_boot=cfg.bootstrap, level=cfg.ci_level, seed=cfg.seed),
    }
    scoring = {
        "metrics": {
            k: {"higher_is_better": m.higher_is_better, "compares_to": m.compares_to, "description": m.description}
            for k, m in METRICS.items()
        },
        "references": list(REFERENCES),
        "ci_level": cfg.ci_level,
        "bootstrap": cfg.bootstrap,
        "scorer": {"encoder": "caffe", "encoder_sha256": scorer.encoder.weights_sha256},
        "lpips": "available" if scorer.lpips_model is not None else f"n/a: {note or 'no LPIPS model'}",
    }
    for method in [*methods, *REFERENCES]:
        summary["methods"][method]["seconds"] = _mean_or_none(per_pair.loc[per_pair["method"] == method, "seconds"])
        summary["methods"][method]["peak_mem_mb"] = _mean_or_none(
            per_pair.loc[per_pair["method"] == method, "peak_mem_mb"]
        )
    write_csv(per_pair.to_dict("records"), PAIR_FIELDS, out_dir / "per_pair.csv")
    write_text_atomic(out_dir / "scoring.json", json.dumps(scoring, indent=2) + "\n")
    write_text_atomic(out_dir / "summary.json", json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return {**summary, **scoring}


def _mean_or_none(col: pd.Series) -> float | None:
    values = pd.to_numeric(col, errors="coerce").dropna()
    return float(values.mean()) if len(values) else None


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="score every method's outputs with one fixed scorer (stage)", description=__doc__
    )
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--outputs", type=Path, default=Path("outputs"))
    p.add_argument("--content", type=Path, default=Path("data/prepared/test/content"))
    p.add_argument("--style", type=Path, default=Path("data/prepared/test/style"))
    p.add_argument("--out", type=Path, default=Path("reports/metrics"))
    p.add_argument("--lpips-weights", type=Path, default=None, help="AlexNet weights file (overrides the param)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    if args.lpips_weights is not None:
        evaluate = params.evaluate.model_copy(update={"lpips_weights": str(args.lpips_weights)})
        params = params.model_copy(update={"evaluate": evaluate})
    summary = run(params, args.outputs, args.content, args.style, args.out)
    per_pair = pd.read_csv(args.out / "per_pair.csv")
    tree = params.model_dump(mode="json")
    for method, stats in summary["methods"].items():
        with tracking.stage_run(
            "evaluate", method, {"evaluate": tree["evaluate"]}, uri=params.tracking.uri,
            experiment=params.tracking.experiment, tags={"encoder_sha256": summary["scorer"]["encoder_sha256"],
                                                          "lpips": summary["lpips"][:250]},
        ) as logger:  # fmt: skip
            flat = {}
            for metric, values in stats.items():
                if isinstance(values, dict):
                    flat.update({f"{metric}_{k}": v for k, v in values.items() if v is not None})
                elif values is not None:
                    flat[metric] = values
            logger.log_metrics(flat)
            with_method = per_pair[per_pair["method"] == method]
            logger.log_text(with_method.to_csv(index=False), "per_pair.csv")
    log.info("evaluate: %d methods + %d references on %d pairs", len(summary["methods"]) - 2, 2, summary["pairs"])
    return 0
