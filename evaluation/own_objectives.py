"""Which scores are a method's own objective: one table, derived from the methods' and the tuner's settings.

A metric that shares network, layers and statistic with what a method minimises -- Gatys's image optimisation, a
feed-forward method's training loss, or the tuner's selection objectives -- is not evidence that the method
stylizes better: the method was built to lower exactly that number (Gatys at relu4_1 scores below the painting
itself). The report marks those cells ("optimised by this method: not evidence") and scoring.json lists them
(DESIGN.md "Evaluation"). Torch-free.

Matching rule: the same statistic on the same network (VGG-19 weights equal; a per-filter normalisation only
rescales filters, so it does not make a network independent) on at least one common layer. An aggregate metric
(``style_gram``: the mean over five layers) is marked when any of its layers is shared.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from evaluation.metric_constants import CONTENT_LAYER, STYLE_LAYERS
from evaluation.metric_names import PAIR_METRICS
from methods.objectives import (
    FEATURE_MSE,
    GHIASI_STYLE_PREDICTOR,
    GRAM,
    MEANSTD,
    STYLE_EMBEDDING,
    STYLE_VECTOR,
    VGG19,
    Objective,
)

# The scorer's VGG-19 weights (pipeline/scoring.py build_scorer: the caffe network for content_loss and the style
# distances, whatever encoder a method used).
SCORER_VGG_WEIGHTS = "caffe"


@dataclass(frozen=True)
class MetricStatistic:
    """What a metric computes, in the terms of :class:`methods.objectives.Objective`."""

    statistic: str
    layers: tuple[str, ...]
    network: str


def metric_statistics() -> dict[str, MetricStatistic]:
    """Every per-pair metric that reads a network's features the way some objective could (others: none)."""
    out = {"content_loss": MetricStatistic(FEATURE_MSE, (CONTENT_LAYER,), VGG19)}
    for kind, statistic in (("gram", GRAM), ("meanstd", MEANSTD)):
        out[f"style_{kind}"] = MetricStatistic(statistic, STYLE_LAYERS, VGG19)
        for layer in STYLE_LAYERS:
            out[f"style_{kind}_{layer}"] = MetricStatistic(statistic, (layer,), VGG19)
    out["style_embed"] = MetricStatistic(STYLE_EMBEDDING, (STYLE_VECTOR,), GHIASI_STYLE_PREDICTOR)
    return {k: v for k, v in out.items() if k in PAIR_METRICS}


def _same_network(objective: Objective, metric: MetricStatistic, method_vgg_weights: str) -> bool:
    if objective.network != metric.network:
        return False
    return objective.network != VGG19 or method_vgg_weights == SCORER_VGG_WEIGHTS


def own_objectives(
    objectives: Mapping[str, Sequence[Objective]],
    tuned_on: Mapping[str, Iterable[str]] | None = None,
    *,
    method_vgg_weights: str = SCORER_VGG_WEIGHTS,
) -> dict[str, dict[str, str]]:
    """``{method: {metric: why}}`` for every (method, metric) cell that is the method's own objective.

    Args:
        objectives: per method, the loss terms from its params (``MethodParams.objectives()``).
        tuned_on: per tuned method, the metrics its weights were selected on (``tune.objectives``); those cells are
            marked too (the tuner chose the method's weights to lower them on the val split).
        method_vgg_weights: the VGG-19 weights the methods ran on (``encoder.weights``).
    """
    stats = metric_statistics()
    out: dict[str, dict[str, str]] = {}
    for method, terms in objectives.items():
        for name, metric in stats.items():
            reasons = []
            for term in terms:
                shared = [layer for layer in term.layers if layer in metric.layers]
                if term.statistic == metric.statistic and shared and _same_network(term, metric, method_vgg_weights):
                    reasons.append(f"{term.describe()}; shared: {', '.join(shared)}")
            if reasons:
                out.setdefault(method, {})[name] = "; ".join(reasons)
    for method, metrics in (tuned_on or {}).items():
        for name in metrics:
            if name in PAIR_METRICS:
                why = "its weights were tuned to lower this metric on the val split (tune.objectives)"
                cell = out.setdefault(method, {})
                cell[name] = f"{cell[name]}; {why}" if name in cell else why
    return {m: dict(sorted(cells.items())) for m, cells in sorted(out.items())}
