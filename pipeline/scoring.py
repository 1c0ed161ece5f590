"""Building the fixed scorer every method is judged by (evaluation/metrics.py) from the ``evaluate`` params.

Shared by the evaluate stage and the tune stage (which scores its trials with the same scorer on the val split).
"""

from __future__ import annotations

import logging

from evaluation.metrics import LpipsUnavailable, Scorer, load_lpips
from evaluation.weights import ScorerWeights
from methods.encoder import load_encoder
from methods.errors import NstError
from pipeline.config import Params

log = logging.getLogger(__name__)


def build_scorer(params: Params, weights: ScorerWeights | None = None) -> tuple[Scorer, dict[str, str]]:
    """The fixed scorer and notes on what it could not load (``{"lpips": why}``).

    ``weights``: what the scorer-weights stage found (evaluation.weights.read_found: LPIPS's AlexNet, CFSD's VGG-19);
    None: none of them (the tune stage, which scores its objectives only and does not depend on models/scorer):
    LPIPS is n/a and CFSD ``auto`` runs on caffe.
    """
    cfg = params.evaluate
    folder = weights is not None
    weights = weights or ScorerWeights.none("no scorer weights given (only the evaluate stage reads models/scorer)")
    # Style distances on the per-filter-normalised network (every layer and filter counts); content_loss on the raw
    # one, as DESIGN.md defines it: per-filter scales from 7 train images amplify filters that are nearly silent on
    # them by up to 130x at relu4_2, and a blurred photo then scored 60x worse than a flat grey one.
    style_encoder = load_encoder("caffe", normalise="per_filter")
    content_encoder = load_encoder("caffe", last_layer="relu4_2")
    vgg19 = weights.path("cfsd_vgg19")
    cfsd_weights = cfg.cfsd_weights
    if cfsd_weights == "auto":
        cfsd_weights = "torchvision" if vgg19 is not None else "caffe"
    if cfsd_weights == "torchvision" and vgg19 is not None:
        cfsd_weights = str(vgg19)  # torchvision's VGG-19 from the scorer's folder
    elif cfsd_weights == "torchvision" and folder:
        raise NstError(
            "evaluate.cfsd_weights = torchvision, but torchvision's VGG-19 is absent from the scorer's weights: "
            f"{weights.why_absent('cfsd_vgg19')}; use auto or caffe"
        )
    cfsd_encoder = load_encoder(cfsd_weights, last_layer="relu3_1")  # no folder (tune): "torchvision" is torch hub's
    notes: dict[str, str] = {}
    alexnet = weights.path("lpips_alexnet")
    try:
        if alexnet is None:
            raise LpipsUnavailable(f"LPIPS's AlexNet weights are absent: {weights.why_absent('lpips_alexnet')}")
        lpips_model = load_lpips(alexnet)
    except LpipsUnavailable as exc:
        lpips_model, notes["lpips"] = None, str(exc)
        log.warning("lpips is n/a: %s", exc)
    return Scorer(style_encoder, content_encoder, cfsd_encoder, lpips_model), notes
