"""Building the fixed scorer every method is judged by (evaluation/metrics.py) from the ``evaluate`` params.

Shared by the evaluate stage and the tune stage (which scores its trials with the same scorer on the val split).
"""

from __future__ import annotations

import logging

from evaluation.metrics import LpipsUnavailable, Scorer, load_lpips
from methods.encoder import load_encoder, torchvision_weights_path
from pipeline.config import Params

log = logging.getLogger(__name__)


def build_scorer(params: Params) -> tuple[Scorer, dict[str, str]]:
    """The fixed scorer and notes on what it could not load (``{"lpips": why}``)."""
    cfg = params.evaluate
    # Style distances on the per-filter-normalised network (every layer and filter counts); content_loss on the raw
    # one, as DESIGN.md defines it: per-filter scales from 7 train images amplify filters that are nearly silent on
    # them by up to 130x at relu4_2, and a blurred photo then scored 60x worse than a flat grey one.
    style_encoder = load_encoder("caffe", normalise="per_filter")
    content_encoder = load_encoder("caffe", last_layer="relu4_2")
    cfsd_weights = cfg.cfsd_weights
    if cfsd_weights == "auto":
        cfsd_weights = "torchvision" if torchvision_weights_path().is_file() else "caffe"
    cfsd_encoder = load_encoder(cfsd_weights, last_layer="relu3_1")
    notes: dict[str, str] = {}
    try:
        lpips_model = load_lpips(cfg.lpips_weights, download=cfg.lpips_download)
    except LpipsUnavailable as exc:
        lpips_model, notes["lpips"] = None, str(exc)
        log.warning("lpips is n/a: %s", exc)
    return Scorer(style_encoder, content_encoder, cfsd_encoder, lpips_model), notes
