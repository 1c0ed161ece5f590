"""evaluate stage: score every method's outputs with one fixed scorer -> ``reports/metrics/``.

Reads each ``outputs/<method>/`` that holds a ``timing.csv``, checks that every test content x test style pair is
there with the content's size, and scores it (evaluation.metrics) against its content and style image. Four reference
rows on the same pairs calibrate each metric's range (evaluation.references: ``identity``, ``style_copy``, ``grey``,
``blur``). The scorer's style metrics are no method's objective: they run on the per-filter-normalised caffe network
(every filter's mean activation 1) as relative per-layer Gram and mean/std distances, each layer weighing equally;
content_loss is relu4_2 MSE on the raw caffe network; CFSD uses torchvision's VGG-19 when the scorer's weights have
it (StyleID's choice), else caffe. The third-party weights (LPIPS's AlexNet, CFSD's VGG-19, the two Inceptions) are
read from the scorer-weights stage's folder (``--weights models/scorer``, its ``found.json``); one that is absent
makes its metrics n/a, with the reason.

Writes, atomically and only after everything has been scored:

- ``per_pair.csv``: method, content, style, every per-pair metric, seconds, peak memory;
- ``summary.json`` (the DVC metrics file): one number per method and headline metric, the mean, plus
  ``fid_imagenet`` and ``artfid``;
- ``statistics.json``: per method and metric mean, std, n and the two-way bootstrap CI; the ranking (who gets a ★);
- ``paired.csv``: paired differences between every two methods per metric, with two-way bootstrap CIs, p-values,
  Holm-adjusted p-values (``p_holm``, over the competing methods' pairs) and the "≠ 0" decision (``significant``);
- ``scoring.json``: what each metric means, its direction, network and normalisation, what the scorer ran with.

Logs one MLflow run per method.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from evaluation.metric_info import METRICS, SUMMARY_METRICS
from evaluation.metric_names import COSTS, HIGHER_IS_BETTER, PAIR_METRICS
from evaluation.metrics import (
    CFSD_SATURATED_LIMIT,
    CFSD_SATURATED_MAX,
    STYLE_LAYERS,
    Scorer,
    WeightsUnavailable,
    artfid_score,
    cfsd_feature_scale,
    fid_from_features,
    image_features_by,
    load_art_inception,
    load_inception,
)
from evaluation.own_objectives import own_objectives
from evaluation.references import REFERENCE_ROWS, reference_outputs
from evaluation.summary import headline_metrics, paired_differences, rank_methods, summarize
from evaluation.weights import ScorerWeights, read_found
from methods.errors import NstError
from methods.registry import list_methods, tuned_methods
from pipeline import tracking
from pipeline.commands import add_command
from pipeline.config import EvaluateSection, Params, load_params
from pipeline.io import list_images, read_csv, read_image, write_csv, write_text_atomic
from pipeline.resources import pick_device
from pipeline.scoring import build_scorer
from pipeline.stage_params import declared_tree

log = logging.getLogger(__name__)

PAIR_FIELDS = ("method", "content", "style", *PAIR_METRICS, *COSTS)
# One number per method in the DVC metrics file (dvc metrics show / diff fit a screen); everything else in
# statistics.json and per_pair.csv.
HEADLINE = (
    "content_loss",
    "style_gram",
    "style_meanstd",
    "style_embed",
    "color_hist",
    "lpips",
    "ssim",
    "ssim_lum",
    "cfsd",
)


class EvaluateError(NstError):
    """Outputs are missing, unreadable or of the wrong size."""


def find_methods(outputs: Path) -> list[str]:
    """Method folders under ``outputs`` that hold a ``timing.csv`` (i.e. a finished stylize stage)."""
    if not outputs.is_dir():
        raise EvaluateError(f"{outputs}: no outputs folder (run the stylize stages first)")
    return sorted(p.name for p in outputs.iterdir() if p.is_dir() and (p / "timing.csv").is_file())


def check_complete(methods: list[str], outputs: Path, contents: list[Path], styles: list[Path]) -> None:
    """Raise EvaluateError naming the first ``outputs/<method>/<content>__<style>.png`` that is missing."""
    for method in methods:
        for c in contents:
            for s in styles:
                path = outputs / method / f"{c.stem}__{s.stem}.png"
                if not path.is_file():
                    raise EvaluateError(f"{path}: missing output for pair ({c.name}, {s.name})")


def _method_outputs(
    methods: list[str], outputs: Path, name: str, content: Any, content_name: str, device: Any
) -> dict[str, Any]:
    """Each method's output ``outputs/<method>/<name>`` on ``device``, by method; raises EvaluateError when one's
    size differs from ``content``'s (the image read from ``content_name``)."""
    candidates = {}
    for method in methods:
        path = outputs / method / name
        output = read_image(path).to(device)
        if output.shape != content.shape:
            raise EvaluateError(
                f"{path}: {output.shape[-1]}x{output.shape[-2]} but content {content_name} is "
                f"{content.shape[-1]}x{content.shape[-2]}"
            )
        candidates[method] = output
    return candidates


def score_all(
    scorer: Scorer,
    methods: list[str],
    outputs: Path,
    content_dir: Path,
    style_dir: Path,
    device: Any,
    saturation: dict[str, float] | None = None,
) -> pd.DataFrame:
    """Score every method's grid plus the reference rows; raises EvaluateError naming the first bad file.
    ``saturation``, when given, receives CFSD's saturated-row fraction per ``<method>/<content>__<style>.png``."""
    contents, styles = list_images(content_dir), list_images(style_dir)
    if not contents or not styles:
        raise EvaluateError(f"{content_dir} / {style_dir}: no test images")
    timings = {m: {row["file"]: row for row in read_csv(outputs / m / "timing.csv")} for m in methods}
    check_complete(methods, outputs, contents, styles)  # before the (slow) scoring starts
    scorer.to(device)
    rows: list[dict[str, Any]] = []
    bar = tqdm(
        total=len(contents) * len(styles) * (len(methods) + len(REFERENCE_ROWS)),
        desc="evaluate",
        unit="img",
        disable=None,
    )
    for c in contents:
        content = read_image(c).to(device)
        for s in styles:
            style = read_image(s).to(device)
            name = f"{c.stem}__{s.stem}.png"
            candidates = _method_outputs(methods, outputs, name, content, c.name, device)
            candidates.update(reference_outputs(content, style))
            for method, output in candidates.items():
                timing = timings.get(method, {}).get(name, {})
                found: dict[str, float] = {}
                scores = scorer.score(output, content, style, diagnostics=found)
                if saturation is not None and "cfsd_saturated" in found:
                    saturation[f"{method}/{name}"] = found["cfsd_saturated"]
                rows.append(
                    {
                        "method": method,
                        "content": c.name,
                        "style": s.name,
                        **scores,
                        "seconds": timing.get("seconds", ""),
                        "peak_mem_mb": timing.get("peak_mem_mb", ""),
                    }
                )
                bar.update(1)
    bar.close()
    return pd.DataFrame(rows, columns=list(PAIR_FIELDS))


def _reference_images(name: str, contents: list[Path], style_images: list[Any], device: Any) -> Iterator[Any]:
    """The reference row ``name``'s output for every pair, content-major, each content read once."""
    for c in contents:
        content = read_image(c).to(device)
        for style in style_images:
            yield reference_outputs(content, style)[name]


def _extractor(name: str, loader: Any, weights: ScorerWeights) -> tuple[Any, str]:
    """The feature network from scorer weight ``name`` and "available", or None and "n/a: <why>"."""
    path = weights.path(name)
    if path is None:
        return None, f"n/a: {name} is absent: {weights.why_absent(name)}"
    try:
        return loader(path), "available"
    except WeightsUnavailable as exc:
        return None, f"n/a: {exc}"


def distribution_scores(
    params: Params,
    methods: list[str],
    outputs: Path,
    content_dir: Path,
    style_dir: Path,
    per_pair: pd.DataFrame,
    device: Any,
    weights: ScorerWeights,
) -> tuple[dict[str, dict[str, float | None]], dict[str, str]]:
    """``fid_imagenet`` and ``artfid`` per method and reference row, and per metric "available" or "n/a: <why>".

    ``fid_imagenet``: FID(outputs, style images) on pytorch-fid's ImageNet Inception (299 px, [-1, 1]).
    ``artfid``: Wright & Ommer's ArtFID = (1 + mean LPIPS)(1 + FID on their art Inception), images at their own size
    in [0, 1] as art-fid feeds them (evaluation.metrics.art_inception cites the protocol); n/a without the art
    Inception or without LPIPS. Both None for every row, with the reason, when their weights are absent.

    As StyleID's protocol, the style set holds one style image per output, the pair's own (README "Evaluation": the
    style images are duplicated to match the stylized ones, util/copy_inputs.py; eval_artfid.py then reads both
    folders whole; art-fid's FID_inf asserts as many style as stylized images, art_fid.py:230-231); a style's features
    are computed once and repeated. Images are streamed through the networks one at a time, each read once: an
    800-pair grid at 512 px would hold gigabytes as a list."""
    nets: dict[str, Any] = {}
    notes: dict[str, str] = {}
    nets["fid_imagenet"], notes["fid_imagenet"] = _extractor("fid_inception", load_inception, weights)
    nets["artfid"], notes["artfid"] = _extractor("art_inception", load_art_inception, weights)
    if nets["artfid"] is not None and per_pair["lpips"].isna().all():
        nets["artfid"], notes["artfid"] = None, "n/a: LPIPS is n/a (ArtFID's content term)"
    nets = {k: v.to(device) for k, v in nets.items() if v is not None}
    rows = [*methods, *REFERENCE_ROWS]
    out: dict[str, dict[str, float | None]] = {m: dict.fromkeys(SUMMARY_METRICS) for m in rows}
    for metric, note in notes.items():
        if note != "available":
            log.warning("%s is n/a: %s", metric, note.removeprefix("n/a: "))
    if not nets:
        return out, notes
    contents, styles = list_images(content_dir), list_images(style_dir)
    style_images = [read_image(s).to(device) for s in styles]  # one per style: a few dozen images
    per_pair_styles = {  # content-major, as the pairs
        k: np.tile(v, (len(contents), 1)) for k, v in image_features_by(nets, style_images).items()
    }
    for method in rows:
        if method in REFERENCE_ROWS:
            images = _reference_images(method, contents, style_images, device)
        else:
            images = (
                read_image(outputs / method / f"{c.stem}__{s.stem}.png").to(device) for c in contents for s in styles
            )
        feats = image_features_by(nets, images)
        if "fid_imagenet" in feats:
            out[method]["fid_imagenet"] = _finite(
                fid_from_features(feats["fid_imagenet"], per_pair_styles["fid_imagenet"])
            )
        if "artfid" in feats:
            fid_art = fid_from_features(feats["artfid"], per_pair_styles["artfid"])
            lpips_mean = float(pd.to_numeric(per_pair.loc[per_pair["method"] == method, "lpips"]).mean())
            out[method]["artfid"] = _finite(artfid_score(fid_art, lpips_mean))
    return out, notes


def run(
    params: Params,
    outputs: Path,
    content_dir: Path,
    style_dir: Path,
    out_dir: Path,
    scorer: Scorer | None = None,
    weights_dir: Path | None = None,
) -> dict[str, Any]:
    """Score, summarise and write the outputs listed in the module docstring; returns statistics + scoring.

    ``weights_dir``: the scorer-weights stage's folder (``models/scorer``); None: no third-party weights (LPIPS,
    fid_imagenet and artfid n/a, CFSD on caffe)."""
    methods = find_methods(outputs)
    if not methods:
        raise EvaluateError(f"{outputs}: no method folder with a timing.csv (run the stylize stages first)")
    notes: dict[str, str] = {}
    weights = read_found(weights_dir)
    if scorer is None:
        scorer, notes = build_scorer(params, weights)
    device = pick_device(params.base.device, params.base.tf32)
    saturation: dict[str, float] = {}
    per_pair = score_all(scorer, methods, outputs, content_dir, style_dir, device, saturation)
    for col in ("seconds", "peak_mem_mb"):
        per_pair[col] = pd.to_numeric(per_pair[col], errors="coerce")
    cfg = params.evaluate
    boot = {"n_boot": cfg.bootstrap, "level": cfg.ci_level, "seed": cfg.seed}
    grid_min = {"min_contents": cfg.min_contents, "min_styles": cfg.min_styles}
    paired = paired_differences(per_pair, list(PAIR_METRICS), references=REFERENCE_ROWS, **grid_min, **boot)
    ranking = rank_methods(
        per_pair,
        HIGHER_IS_BETTER,
        references=REFERENCE_ROWS,
        differences=paired,
        **grid_min,
        **boot,
    )
    distribution, distribution_notes = distribution_scores(
        params, methods, outputs, content_dir, style_dir, per_pair, device, weights
    )
    headline = headline_metrics(per_pair, [*HEADLINE, "seconds"])
    summary = {method: {**values, **distribution.get(method, {})} for method, values in headline.items()}
    statistics = statistics_record(per_pair, methods, cfg, ranking)
    scoring = {
        "metrics": metric_descriptions(scorer),
        "headline": list(HEADLINE),
        "references": list(REFERENCE_ROWS),
        "scorer": scorer_record(scorer),
        "lpips": "available" if scorer.lpips_model is not None else f"n/a: {notes.get('lpips', 'no LPIPS model')}",
        **distribution_notes,  # fid_imagenet, artfid: "available" or "n/a: <why>"
        "weights": weights.record,  # models/scorer/found.json: file and sha256 of each weight, or why it is absent
        "cfsd": cfsd_record(scorer, saturation),
        "own_objectives": method_objectives(params, methods),
    }
    write_metrics(out_dir, per_pair, paired, scoring, statistics, summary)
    return {**statistics, "summary": summary, "scoring": scoring}


def statistics_record(
    per_pair: pd.DataFrame, methods: list[str], cfg: EvaluateSection, ranking: dict[str, Any]
) -> dict[str, Any]:
    """statistics.json: the grid's size, the bootstrap and multiple-comparison settings, per method and metric
    mean, std, n and CI (:func:`evaluation.summary.summarize`), and the ``ranking``."""
    boot = {"n_boot": cfg.bootstrap, "level": cfg.ci_level, "seed": cfg.seed}
    metrics = [*PAIR_METRICS, *COSTS]
    return {
        "pairs": int(per_pair.groupby(["content", "style"]).ngroups),
        "methods_order": [*methods, *REFERENCE_ROWS],
        "references": list(REFERENCE_ROWS),
        "ci_level": cfg.ci_level,
        "bootstrap": f"two-way: contents and styles resampled independently, {cfg.bootstrap} replicates",
        "contents": int(per_pair["content"].nunique()),
        "styles": int(per_pair["style"].nunique()),
        "min_contents": cfg.min_contents,
        "min_styles": cfg.min_styles,
        # paired.csv's p_holm: Holm (1979) within each metric over the pairs of competing methods
        "multiple_comparisons": {"method": "holm", "pairs_per_metric": len(methods) * (len(methods) - 1) // 2},
        "methods": summarize(per_pair, metrics, **boot),
        "ranking": ranking,
    }


def metric_descriptions(scorer: Scorer) -> dict[str, dict[str, Any]]:
    """scoring.json's ``metrics``: per metric its direction, what it compares to, description, network (the one
    ``scorer`` ran, where it names one) and normalisation."""
    networks = scorer.networks()
    info = {**METRICS, **SUMMARY_METRICS}
    return {
        k: {
            "higher_is_better": m.higher_is_better,
            "compares_to": m.compares_to,
            "description": m.description,
            "network": networks.get(k, m.network),
            "normalisation": m.normalisation,
        }
        for k, m in info.items()
    }


def scorer_record(scorer: Scorer) -> dict[str, Any]:
    """scoring.json's ``scorer``: the weights source and sha256 of each of ``scorer``'s encoders, and the style
    encoder's per-layer filter boost."""
    return {
        "style_encoder": scorer.style_encoder.weights_source,
        "encoder_sha256": scorer.style_encoder.weights_sha256,
        "content_encoder": scorer.content_encoder.weights_source,
        "content_encoder_sha256": scorer.content_encoder.weights_sha256,
        "cfsd_encoder": scorer.cfsd_encoder.weights_source,
        "cfsd_encoder_sha256": scorer.cfsd_encoder.weights_sha256,
        # per style layer: the per-filter normalisation's largest boost against the layer's median filter
        "style_filter_boost": {
            layer: round(boost, 1)
            for layer in STYLE_LAYERS
            if (boost := scorer.style_encoder.filter_boost.get(layer.replace("relu", "conv"))) is not None
        },
    }


def write_metrics(
    out_dir: Path,
    per_pair: pd.DataFrame,
    paired: pd.DataFrame,
    scoring: dict[str, Any],
    statistics: dict[str, Any],
    summary: dict[str, Any],
) -> None:
    """Write per_pair.csv, paired.csv (non-finite floats as empty cells), scoring.json, statistics.json and
    summary.json into ``out_dir``, each atomically."""
    write_csv(per_pair.to_dict("records"), PAIR_FIELDS, out_dir / "per_pair.csv")
    paired_rows = [
        {k: _finite(v) if isinstance(v, float) else v for k, v in r.items()} for r in paired.to_dict("records")
    ]
    write_csv(paired_rows, list(paired.columns), out_dir / "paired.csv")
    write_text_atomic(out_dir / "scoring.json", json.dumps(scoring, indent=2) + "\n")
    write_text_atomic(out_dir / "statistics.json", json.dumps(statistics, indent=2, allow_nan=False) + "\n")
    write_text_atomic(out_dir / "summary.json", json.dumps(summary, indent=2, allow_nan=False) + "\n")


def method_objectives(params: Params, methods: list[str]) -> dict[str, dict[str, str]]:
    """Per scored method, the metrics that are its own objective (evaluation/own_objectives.py), from its params in
    ``methods.<m>``, ``encoder.weights`` and, for a tuned method whose tuned weights are used, ``tune.objectives``."""
    known = [m for m in methods if m in list_methods()]
    terms = {m: getattr(params.methods, m).objectives() for m in known}
    tuned = {m: params.tune.objectives for m in known if params.tune.use_tuned and m in tuned_methods()}
    return own_objectives(terms, tuned, method_vgg_weights=params.encoder.weights)


def cfsd_record(scorer: Scorer, saturation: Mapping[str, float]) -> dict[str, Any]:
    """scoring.json's CFSD entry: the feature scale used, the saturated-row fraction per image, and the images whose
    CFSD is n/a because more than :data:`CFSD_SATURATED_LIMIT` of their rows saturate (issue 26)."""
    over = sorted(k for k, v in saturation.items() if v > CFSD_SATURATED_LIMIT)
    return {
        "feature_scale": cfsd_feature_scale(scorer.cfsd_encoder),
        "saturated_row_max": CFSD_SATURATED_MAX,
        "saturated_fraction_limit": CFSD_SATURATED_LIMIT,
        "max_saturated_fraction": max(saturation.values(), default=None),
        "n_a": over,
        "saturated_fraction": {k: round(v, 6) for k, v in sorted(saturation.items())},
    }


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "evaluate", description=__doc__)
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--outputs", type=Path, default=Path("outputs"))
    p.add_argument("--content", type=Path, default=Path("data/prepared/test/content"))
    p.add_argument("--style", type=Path, default=Path("data/prepared/test/style"))
    p.add_argument("--out", type=Path, default=Path("reports/metrics"))
    p.add_argument(
        "--weights", type=Path, default=Path("models/scorer"), help="the scorer-weights stage's folder (found.json)"
    )
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    result = run(params, args.outputs, args.content, args.style, args.out, weights_dir=args.weights)
    per_pair = pd.read_csv(args.out / "per_pair.csv")
    scorer = result["scoring"]["scorer"]
    for method, stats in result["methods"].items():
        with tracking.stage_run(
            "evaluate",
            method,
            declared_tree(params, "evaluate"),
            uri=params.tracking.uri,
            experiment=params.tracking.experiment,
            tags={"encoder_sha256": scorer["encoder_sha256"], "lpips": result["scoring"]["lpips"][:250]},
        ) as logger:
            flat = {f"{metric}_{k}": v for metric, values in stats.items() for k, v in values.items() if v is not None}
            flat.update(
                {k: v for k, v in result["summary"].get(method, {}).items() if v is not None and k in SUMMARY_METRICS}
            )
            logger.log_metrics(flat)
            logger.log_text(per_pair[per_pair["method"] == method].to_csv(index=False), "per_pair.csv")
    log.info(
        "evaluate: %d methods + %d references on %d pairs",
        len(result["methods"]) - len(REFERENCE_ROWS),
        len(REFERENCE_ROWS),
        result["pairs"],
    )
    return 0
