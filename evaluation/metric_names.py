"""The scorer's metric names, in table order, and which way each is better: all that tuning, Pareto fronts and
params.yaml validation need to know about a metric. Torch-free and text-free, so a description edited in
evaluation/metric_info.py reruns only the stages that print it (evaluate, report).
"""

from __future__ import annotations

from evaluation.metric_constants import STYLE_KINDS, STYLE_LAYERS

# Per-pair metrics (one output vs its content or style image): name -> higher is better. Order: the table's.
HIGHER_IS_BETTER: dict[str, bool] = {
    "content_loss": False,
    **{
        name: False
        for kind in STYLE_KINDS
        for name in (*(f"style_{kind}_{layer}" for layer in STYLE_LAYERS), f"style_{kind}")
    },
    "style_embed": False,
    "color_hist": False,
    "lpips": False,
    "ssim": True,
    "ssim_lum": True,
    "cfsd": False,
}
PAIR_METRICS = tuple(HIGHER_IS_BETTER)
# Summary metrics (one value per method, over all its outputs).
SUMMARY_HIGHER_IS_BETTER: dict[str, bool] = {"fid_imagenet": False, "artfid": False}
# Per-image costs the stylize stage records: not quality, never a tuning objective.
COSTS = ("seconds", "peak_mem_mb")
