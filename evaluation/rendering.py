"""Report building: DataFrames and dicts in, matplotlib figures and the report's HTML/Markdown out. No file IO here
besides reading the templates.

The report stage (pipeline/stages/report.py) loads the evaluate stage's files (statistics.json, summary.json,
paired.csv, scoring.json, per_pair.csv), each method's effective parameters and training record, computes a
:class:`ReportView` with these functions and renders it with the Jinja2 templates in ``evaluation/templates/``
(:func:`render_html`, :func:`render_markdown`): Python computes every text and table, the templates lay them out.
The HTML templates are autoescaped, so no text is ever markup.
"""

from __future__ import annotations

import contextlib
import functools
import html
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: figures are only ever saved to files

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from jinja2 import Environment, PackageLoader, StrictUndefined, pass_eval_context, select_autoescape
from jinja2.nodes import EvalContext
from markupsafe import Markup
from matplotlib.figure import Figure

from evaluation.metric_info import METRICS, SUMMARY_METRICS
from evaluation.references import REFERENCE_ROWS
from evaluation.summary import NO_CLEAR_BEST, NOTHING_TO_COMPARE, RANKED, TOO_FEW

NA = "n/a"
UNDER_TRAINED_BELOW = 0.10  # a trained method below this fraction of its reference schedule's iterations
UNDER_TRAINED = "under-trained"
UNDER_OPTIMISED = "under-optimised"  # an image-optimisation method (Gatys) below UNDER_TRAINED_BELOW of its iterations
# An external converged reference (a method class with a ``pretrained`` citation, e.g. ghiasi): its authors trained it;
# this benchmark neither trains nor tunes it. Shown as a badge, in the figures' titles and in the caveats.
PRETRAINED = "pretrained by its authors"
SUMMARY_COLUMNS = ("fid_imagenet", "artfid")  # one number per method (summary.json), no per-pair values, no CI
COST_COLUMNS = ("seconds", "peak_mem_mb")
STYLE_KINDS = ("gram", "meanstd")

# What each column of the comparison table measures, and which reference row bounds it (the rows are defined, listed
# and described in one place: evaluation.references).
HOW_TO_READ = {
    "content_loss": "Mean squared difference between the VGG-19 relu4_2 activations of the output and of the content "
    "photo (raw caffe weights, as Gatys et al. define their content loss; the style columns use the "
    "per-filter-normalised network): how far the output's mid-level features moved from the photo's. "
    "0 for identity; blur shows what losing fine detail costs, grey and style_copy what keeping nothing of the "
    "photo costs. Any change counts, wanted (stylisation) or not, so it measures distance from the photo, not "
    "whether the scene is still recognisable.",
    "style_gram": "Relative squared distance between the Gram matrices (channel co-activations) of the output and "
    "of the painting, |G_o - G_s|^2 / (|G_o|^2 + |G_s|^2), on relu1_1, relu2_1, relu3_1, relu4_1 and relu5_1 of the "
    "same VGG-19, each layer weighing 1/5 (per-layer shares in their own table); 0 = identical Gram matrices, "
    "1 = orthogonal. It measures how well the output reproduces the painting's feature statistics pooled over all "
    "positions, so not its composition. style_copy (the painting itself, cropped and resized) is the low end, not "
    "exactly 0; identity is the untouched photo.",
    "style_meanstd": "Relative squared distance between the per-channel means and standard deviations of the same "
    "five layers (the statistics AdaIN aligns), in [0, 1], each layer weighing 1/5. Same bounds as style_gram "
    "(style_copy low, identity the untouched photo); a method built to match these statistics can do better here "
    "than on style_gram.",
    "style_embed": "Euclidean distance between the 100-number style vectors of the output and of the painting, "
    "from the style-prediction network of Ghiasi et al. 2017 as Magenta deploys it (an int8 MobileNet-v2 distilled "
    "from the paper's Inception-v3, trained on paintings and textures), which sees the centre square of each image "
    "at 256 x 256: a style measure from a network no method here trains or tunes on. ghiasi stylizes with this "
    "network, so its cell is not independent evidence. 0 for the painting itself; style_copy (the painting "
    "cropped and resized) is the low end, identity the untouched photo, grey a flat image.",
    "color_hist": "Hellinger distance between the RGB-uv chroma histograms of the output and of the painting "
    "(HistoGAN; no network): the colour distribution only, not where the colours are. 0 = identical "
    "histograms, 1 = disjoint. style_copy is the low end, identity shows the photo's own colours, grey a single "
    "colour.",
    "lpips": "LPIPS v0.1 (AlexNet) distance from the content photo: a perceptual distance learned from human "
    "judgements of small distortions. Stylised outputs lie far outside that range, so read it as distance from the "
    "photo, not as quality. 0 for identity; blur and grey show degraded photos, style_copy an unrelated image.",
    "ssim": "SSIM on RGB against the content photo (local means, contrasts and correlations in 11 x 11 Gaussian "
    "windows, averaged over channels): 1 for identity. Recolouring lowers it too, so every stylisation lowers it; "
    "blur and grey show a photo with coarse or no structure, style_copy an unrelated image.",
    "ssim_lum": "SSIM on luminance (BT.601 Y) only: blind to hue, so it tells structure kept in brightness from "
    "recolouring. Same bounds as ssim.",
    "cfsd": "Content feature structural distance (StyleID): KL divergence between the relu3_1 patch "
    "self-similarity distributions of output and content photo, i.e. whether the same patches resemble each other "
    "(the spatial layout). 0 for identity; less sensitive to colour and texture than content_loss, but not blind "
    "to them; grey and style_copy show outputs without the photo's layout. StyleID computes it on torchvision's "
    "VGG-19; on the caffe network the features are first scaled by 1/57.6 to torchvision's range (unscaled, most "
    "softmax rows saturate and a flat grey image scores best), so caffe values are not comparable to published "
    "ones; an image whose rows still saturate (over 1 %) is n/a.",
    "fid_imagenet": "Frechet Inception Distance between the set of a method's outputs and the set of test paintings "
    "on pytorch-fid's ImageNet Inception-v3 (pool3 features, images resized to 299 x 299): how close the outputs' "
    "feature distribution is to the paintings', as a network trained on photos sees them. Not ArtFID's FID. "
    "Strongly biased with few images: compare rows of this report only. style_copy is the low end. n/a without "
    "the Inception weights.",
    "artfid": "ArtFID (Wright & Ommer 2022) = (1 + mean LPIPS vs content) x (1 + FID vs paintings on their "
    "Inception-v3 trained on art, images at their own size): content distance and style-distribution distance in "
    "one number. Computed at this report's image size (StyleID's tables resize to 512 px first). n/a without the "
    "art Inception's weights or without LPIPS.",
    "seconds": "Wall-clock seconds per output image on the machine that ran stylize (timing.csv).",
    "peak_mem_mb": "Peak memory per image: on CUDA the allocator's peak, on the CPU the process's resident set.",
}


def fmt(value: Any, digits: int = 4) -> str:
    """A number for tables: ``digits`` significant digits, or "n/a" for None/NaN/non-numbers."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return NA
    if math.isnan(x):
        return NA
    return f"{x:.{digits}g}"


def fmt_int(n: int) -> str:
    """160000 -> "160 000" (SI thousands separator)."""
    return f"{int(n):,}".replace(",", " ")


def fmt_percent(fraction: float) -> str:
    pct = 100.0 * fraction
    if pct >= 10:
        return f"{pct:.0f} %"
    if pct >= 1:
        return f"{pct:.1f} %"
    return f"{pct:.2g} %"


def higher_is_better(metric: str, scoring: Mapping[str, Any] | None = None) -> bool:
    """A column's direction: scoring.json's ``higher_is_better``, else the metric registry; costs: lower."""
    info = (scoring or {}).get("metrics", {}).get(metric)
    if isinstance(info, Mapping) and "higher_is_better" in info:
        return bool(info["higher_is_better"])
    known = METRICS.get(metric) or SUMMARY_METRICS.get(metric)
    return bool(known and known.higher_is_better)


def arrow(metric: str, scoring: Mapping[str, Any] | None = None) -> str:
    return "↑" if higher_is_better(metric, scoring) else "↓"


# ------------------------------------------------------------------------------------------------ tables


# Marks on a comparison cell: the symbol and its words (the legend under the table and the cell's tooltip).
OWN_OBJECTIVE = "own"
BELOW_REFERENCE = "below"
MARKS = {
    OWN_OBJECTIVE: ("◆", "optimised by this method: not evidence"),
    BELOW_REFERENCE: ("▼", "worse than a degraded-photo reference row"),
}
# Content metrics on which a method can do worse than a degraded photo (reference rows grey and blur keep none or only
# the coarse structure of the photo): a method below them has lost more of the photo than they have.
DEGRADED_REFERENCES = ("grey", "blur")


@dataclass(frozen=True)
class Cell:
    """One table cell: the main text (a mean) and a detail (its CI, or a raw value) shown smaller; ``marks``:
    ``{kind: why}`` for :data:`MARKS` (own objective, worse than a degraded reference)."""

    main: str
    detail: str = ""
    best: bool = False
    marks: Mapping[str, str] = field(default_factory=dict)

    @property
    def symbols(self) -> str:
        return "".join(MARKS[k][0] for k in MARKS if k in self.marks)

    @property
    def tooltip(self) -> str:
        return "; ".join(f"{MARKS[k][1]} ({self.marks[k]})" for k in MARKS if k in self.marks)

    @property
    def text(self) -> str:
        return f"{self.main} {self.detail}" if self.detail else self.main


@dataclass
class TableRow:
    method: str
    cells: dict[str, Cell]
    reference: bool = False
    badges: list[str] = field(default_factory=list)

    @property
    def best(self) -> set[str]:
        return {k for k, c in self.cells.items() if c.best}


def table_columns(headline: Sequence[str]) -> list[str]:
    """The comparison table's columns: the headline metrics, fid_imagenet/ArtFID, then the costs."""
    return [*headline, *SUMMARY_COLUMNS, *COST_COLUMNS]


def column_titles(columns: Sequence[str], scoring: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Headers with the better direction from scoring.json: "ssim ↑", "style_gram ↓", "s / image ↓"."""
    titles = {c: f"{c} {arrow(c, scoring)}" for c in columns}
    if "seconds" in titles:
        titles["seconds"] = "s / image ↓"
    if "peak_mem_mb" in titles:
        titles["peak_mem_mb"] = "peak MB ↓"
    return titles


def references_of(statistics: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(statistics.get("references") or REFERENCE_ROWS)


def competitors(statistics: Mapping[str, Any]) -> list[str]:
    """The methods that compete (statistics.json's order, reference rows left out)."""
    refs = set(references_of(statistics))
    order = statistics.get("methods_order") or list(statistics.get("methods", {}))
    return [m for m in order if m not in refs and m in statistics.get("methods", {})]


def row_order(statistics: Mapping[str, Any]) -> list[str]:
    """Competing methods, then the reference rows that were scored."""
    present = statistics.get("methods", {})
    return [*competitors(statistics), *[r for r in references_of(statistics) if r in present]]


def below_minimum_grid(statistics: Mapping[str, Any]) -> bool:
    """Fewer test contents than ``min_contents`` or styles than ``min_styles`` (statistics.json): no mark anywhere.
    A statistics.json that does not say (older files) counts as below: the safe side."""
    keys = ("contents", "styles", "min_contents", "min_styles")
    if any(statistics.get(k) is None for k in keys):
        return True
    return int(statistics["contents"]) < int(statistics["min_contents"]) or int(statistics["styles"]) < int(
        statistics["min_styles"]
    )


def starred(statistics: Mapping[str, Any]) -> dict[str, str]:
    """metric -> the method that gets the ★: only where the ranking says "ranked", never a reference row, and none
    at all below the minimum grid (:func:`below_minimum_grid`)."""
    if below_minimum_grid(statistics):
        return {}
    refs = set(references_of(statistics))
    out = {}
    for metric, r in (statistics.get("ranking") or {}).items():
        if r.get("status") == RANKED and r.get("best") and r["best"] not in refs:
            out[metric] = str(r["best"])
    return out


def _stat_cell(stat: Mapping[str, Any] | None, digits: int = 4) -> Cell:
    if not stat or stat.get("mean") is None:
        return Cell(NA)
    low, high = stat.get("ci_low"), stat.get("ci_high")
    ci = f"[{fmt(low, 3)}, {fmt(high, 3)}]" if low is not None and high is not None else ""
    return Cell(fmt(stat["mean"], digits), ci)


def below_references(
    statistics: Mapping[str, Any], columns: Sequence[str], scoring: Mapping[str, Any] | None = None
) -> dict[str, dict[str, str]]:
    """``{method: {metric: why}}`` where a competing method's mean on a content metric is worse than the mean of a
    degraded-photo reference row (:data:`DEGRADED_REFERENCES`): e.g. "worse than grey (0.31 vs 0.35)"."""
    stats = statistics.get("methods", {})
    out: dict[str, dict[str, str]] = {}
    for col in columns:
        info = (scoring or {}).get("metrics", {}).get(col) or METRICS.get(col)
        compares = info.get("compares_to") if isinstance(info, Mapping) else getattr(info, "compares_to", None)
        if compares != "content":
            continue
        up = higher_is_better(col, scoring)
        for method in competitors(statistics):
            mine = (stats.get(method, {}).get(col) or {}).get("mean")
            worse = []
            for ref in DEGRADED_REFERENCES:
                theirs = (stats.get(ref, {}).get(col) or {}).get("mean")
                if mine is not None and theirs is not None and (mine < theirs if up else mine > theirs):
                    worse.append(f"worse than {ref}: {fmt(mine)} vs {fmt(theirs)}")
            if worse:
                out.setdefault(method, {})[col] = "; ".join(worse)
    return out


MARK_EXPLAINED = {
    OWN_OBJECTIVE: "the metric shares network, layers and statistic with what this method minimises (its image "
    "optimisation, its training loss, or the metrics its weights were tuned on), so a good score there is expected by "
    "construction; hover a mark for the shared term (scoring.json lists them under own_objectives)",
    BELOW_REFERENCE: "on this content metric the method is worse than a degraded photo (grey: no structure at all; "
    "blur: coarse structure only)",
}


def mark_legend(rows: Sequence[TableRow]) -> list[str]:
    """One line per mark that appears in ``rows``: "◆ optimised by this method: not evidence — <why>"."""
    used = {k for row in rows for cell in row.cells.values() for k in cell.marks}
    return [f"{MARKS[k][0]} {MARKS[k][1]}: {MARK_EXPLAINED[k]}." for k in MARKS if k in used]


def comparison_rows(
    statistics: Mapping[str, Any],
    summary: Mapping[str, Any],
    columns: Sequence[str],
    badges: Mapping[str, Sequence[str]] | None = None,
    scoring: Mapping[str, Any] | None = None,
) -> list[TableRow]:
    """One row per competing method then per reference row: "mean [ci_low, ci_high]" from statistics.json for the
    per-pair metrics and costs, summary.json's single value for the FIDs; the ★ from the ranking (:func:`starred`);
    marks for a method's own objective (scoring.json's ``own_objectives``) and for a content metric on which it is
    worse than a degraded reference row (:func:`below_references`).
    """
    stats = statistics.get("methods", {})
    refs = set(references_of(statistics))
    best = starred(statistics)
    own = (scoring or {}).get("own_objectives") or {}
    below = below_references(statistics, columns, scoring)
    rows = []
    for method in row_order(statistics):
        cells = {}
        for col in columns:
            marks = {}
            if col in (own.get(method) or {}):
                marks[OWN_OBJECTIVE] = own[method][col]
            if col in (below.get(method) or {}):
                marks[BELOW_REFERENCE] = below[method][col]
            if col in SUMMARY_COLUMNS:
                cells[col] = Cell(fmt((summary.get(method) or {}).get(col)), marks=marks)
                continue
            cell = _stat_cell(stats[method].get(col), 3 if col == "seconds" else 4)
            is_best = best.get(col) == method and cell.main != NA
            cells[col] = Cell(cell.main, cell.detail, best=is_best, marks=marks)
        rows.append(TableRow(method, cells, reference=method in refs, badges=list((badges or {}).get(method, ()))))
    return rows


@dataclass(frozen=True)
class RankingNotes:
    caption: str  # under the comparison table
    per_metric: dict[str, str]  # column -> a short note under its header ("no clear best", ...)
    too_few: bool
    paired_caption: str = ""  # above the paired table: what "≠ 0" means, the Holm correction, the minimum grid


def _holm_words(statistics: Mapping[str, Any]) -> str:
    n = (statistics.get("multiple_comparisons") or {}).get("pairs_per_metric")
    return f"Holm-corrected over the {n} method pairs of each metric"


def ranking_notes(statistics: Mapping[str, Any], columns: Sequence[str]) -> RankingNotes:
    """What the ranking decided, in words: "too few pairs to rank" / "no clear best" / "nothing to compare"; and the
    paired table's caption (the test behind "≠ 0", its Holm correction, the minimum grid)."""
    ranking = statistics.get("ranking") or {}
    statuses = {c: ranking[c].get("status") for c in columns if c in ranking}
    level = statistics.get("ci_level") or 0.95
    grid = f"{statistics.get('contents')} contents x {statistics.get('styles')} styles"
    need = f"{statistics.get('min_contents')} contents and {statistics.get('min_styles')} styles"
    too_few = below_minimum_grid(statistics) or TOO_FEW in statuses.values()
    test = f"Holm-adjusted p < {1 - level:.2g} ({_holm_words(statistics)}; two-way bootstrap)"
    if too_few:
        caption = (
            f"No method is marked best: too few pairs to rank ({grid}; a best method or a ≠ 0 needs at least {need})."
        )
    elif statuses and all(s == NOTHING_TO_COMPARE for s in statuses.values()):
        caption = "No method is marked best: nothing to compare (fewer than two methods have scores)."
    else:
        caption = (
            f"★ marks the method that beats every other method on that metric in the paired test: {test}; "
            "reference rows never compete."
        )
    shown = {NO_CLEAR_BEST, NOTHING_TO_COMPARE, TOO_FEW}
    per_metric = {c: str(s) for c, s in statuses.items() if s in shown and not (too_few and s == TOO_FEW)}
    if below_minimum_grid(statistics):
        paired_caption = f"No ≠ 0 marks: {grid}, fewer than the {need} a mark needs; {_holm_words(statistics)}."
    else:
        paired_caption = f"≠ 0 marks a difference with {test}, on at least {need} shared."
    return RankingNotes(caption, per_metric, too_few, paired_caption)


@dataclass(frozen=True)
class PairedRow:
    metric: str
    a: str
    b: str
    diff: str
    ci: str
    n: int
    significant: bool  # the "≠ 0" mark: paired.csv's ``significant`` (Holm-adjusted test and minimum grid)
    verdict: str
    p_holm: str = NA  # the Holm-adjusted p-value, formatted


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


def paired_rows(
    paired: pd.DataFrame, metrics: Sequence[str], methods: Sequence[str], scoring: Mapping[str, Any] | None = None
) -> list[PairedRow]:
    """paired.csv's rows for ``metrics`` between two of ``methods`` (the competitors; reference rows left out),
    metric by metric: A - B with its paired CI, and which one is better where paired.csv marks it ``significant``
    (Holm-adjusted p below 1 - level on the minimum grid; a file without that column marks nothing)."""
    keep = set(methods)
    rows = []
    for metric in metrics:
        part = paired[(paired["metric"] == metric) & paired["method_a"].isin(keep) & paired["method_b"].isin(keep)]
        for r in part.to_dict("records"):
            diff = pd.to_numeric(r["mean_diff"], errors="coerce")
            marked = _truthy(r.get("significant", False)) and not pd.isna(diff)
            if pd.isna(diff):
                verdict = "no shared pairs"
            elif marked:
                winner = r["method_a"] if (diff > 0) == higher_is_better(metric, scoring) else r["method_b"]
                verdict = f"{winner} better"
            else:
                verdict = "not resolved"
            ci = "" if pd.isna(diff) else f"[{fmt(r['ci_low'], 3)}, {fmt(r['ci_high'], 3)}]"
            n = pd.to_numeric(r["n"], errors="coerce")
            n = 0 if pd.isna(n) else int(n)
            a, b, p = str(r["method_a"]), str(r["method_b"]), fmt(r.get("p_holm"), 2)
            rows.append(PairedRow(metric, a, b, fmt(diff), ci, n, marked, verdict, p))
    return rows


def style_layers(kind: str) -> list[str]:
    """The layers of the per-layer style metrics ``style_<kind>_<layer>``, in METRICS order."""
    prefix = f"style_{kind}_"
    return [k.removeprefix(prefix) for k in METRICS if k.startswith(prefix)]


def style_shares(statistics: Mapping[str, Any], kind: str) -> dict[str, dict[str, float | None]]:
    """method -> layer -> that layer's share of the sum of the per-layer mean distances (the aggregate
    ``style_<kind>`` is their equal-weight mean, so this is each layer's share of the aggregate)."""
    out: dict[str, dict[str, float | None]] = {}
    for method in row_order(statistics):
        stats = statistics["methods"][method]
        means = {layer: (stats.get(f"style_{kind}_{layer}") or {}).get("mean") for layer in style_layers(kind)}
        total = sum(v for v in means.values() if v is not None)
        ok = all(v is not None for v in means.values()) and total > 0
        out[method] = {layer: (v / total if ok else None) for layer, v in means.items()}
    return out


def style_share_rows(statistics: Mapping[str, Any], kind: str) -> list[TableRow]:
    """Per method: each layer's share of the aggregate (main) and its mean distance (detail)."""
    shares = style_shares(statistics, kind)
    refs = set(references_of(statistics))
    rows = []
    for method, per_layer in shares.items():
        stats = statistics["methods"][method]
        cells = {}
        for layer, share in per_layer.items():
            mean = (stats.get(f"style_{kind}_{layer}") or {}).get("mean")
            cells[layer] = Cell(
                NA if share is None else fmt_percent(share), "" if mean is None else f"({fmt(mean, 3)})"
            )
        rows.append(TableRow(method, cells, reference=method in refs))
    return rows


# ------------------------------------------------------------------------------------------------ what ran


def flatten(tree: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``{"a": 1, "train": {"lr": 2}}`` -> ``[("a", 1), ("train.lr", 2)]``."""
    out: list[tuple[str, Any]] = []
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.extend(flatten(value, f"{name}."))
        else:
            out.append((name, value))
    return out


def _value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "null"
    if isinstance(value, float):
        return fmt(value, 6)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return str(value)


@dataclass(frozen=True)
class ParamsRow:
    method: str
    items: list[tuple[str, str, bool]]  # (dotted key, value, applied from best.yaml)
    note: str = ""


def params_rows(
    effective: Mapping[str, Mapping[str, Any] | None], tuned: Mapping[str, Mapping[str, float]] | None = None
) -> list[ParamsRow]:
    """Each method's ``methods.<m>`` section as its stylize stage ran it (outputs/<m>/effective_params.yaml; the tuned
    weights are already applied there). A weight is marked tuned where ``tune.use_tuned`` was on and it equals the
    best.yaml value. A missing file is said so; params.yaml is never shown in its place."""
    rows = []
    for method, tree in effective.items():
        if not tree:
            rows.append(ParamsRow(method, [], f"outputs/{method}/effective_params.yaml not found"))
            continue
        section = (tree.get("methods") or {}).get(method) or {}
        use_tuned = bool((tree.get("tune") or {}).get("use_tuned"))
        weights = (tuned or {}).get(method) or {}
        items = []
        for key, value in flatten(section):
            weight = key.removeprefix("train.")  # a trained method's tuned weights live in its train section
            is_tuned = use_tuned and weight in weights and _close(value, weights[weight])
            items.append((key, _value(value), is_tuned))
        rows.append(ParamsRow(method, items))
    return rows


def _close(a: Any, b: Any) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class Budget:
    method: str
    text: str
    fraction: float | None
    badge: str = UNDER_TRAINED  # the comparison table's badge when under_trained
    verb: str = "trained"

    @property
    def title(self) -> str:
        """The badge's tooltip: "trained 160 of 160 000 iterations ..."."""
        return f"{self.verb} {self.text}"

    @property
    def under_trained(self) -> bool:
        return self.fraction is not None and self.fraction < UNDER_TRAINED_BELOW


def training_budget(
    method: str, schedule: Any, train_metrics: Mapping[str, Any] | None, train_section: Mapping[str, Any] | None
) -> Budget:
    """ "160 of 160 000 iterations (0.1 %), batch 4 vs 8, crop 96 vs 256 — <reference source>": our training run
    (models/<m>/train_metrics.json iterations, models/<m>/effective_params.yaml train section) against the method's
    ``reference_schedule`` (methods.registry.ReferenceSchedule). A warm-started run counts its pretrained iterations
    too (``pretrained_iterations``): "4 000 pretrained (...) + 160 fine-tuned = 4 160 of 160 000 iterations"."""
    section = train_section or {}
    batch, crop = section.get("batch_size", "?"), section.get("crop", "?")
    tail = f"batch {batch} vs {schedule.batch_size}, crop {crop} vs {schedule.crop} — {schedule.source}"
    iterations = (train_metrics or {}).get("iterations")
    if iterations is None:
        return Budget(
            method,
            f"no training record (models/{method}/train_metrics.json missing); reference "
            f"{fmt_int(schedule.iterations)} iterations, {tail}",
            None,
        )
    pretrained = int((train_metrics or {}).get("pretrained_iterations") or 0)
    total = int(iterations) + pretrained
    fraction = schedule.fraction(total)
    if pretrained:
        source = (train_metrics or {}).get("init_from")
        text = (
            f"{fmt_int(pretrained)} pretrained ({source}, its card beside it) + {fmt_int(iterations)} fine-tuned = "
            f"{fmt_int(total)} of {fmt_int(schedule.iterations)} iterations ({fmt_percent(fraction)}), "
            f"fine-tune {tail}"
        )
    else:
        text = f"{fmt_int(total)} of {fmt_int(schedule.iterations)} iterations ({fmt_percent(fraction)}), {tail}"
    return Budget(method, text, fraction)


def optimisation_budget(
    method: str, effective: Mapping[str, Any] | None, reference_iterations: int, reference_init: str, source: str
) -> Budget:
    """An optimisation method's budget (Gatys): "30 of 1 000 iterations (3.0 %), initialised from the content photo
    (reference: noise) — <source>", from its effective parameters against the reference optimisation's. Starting
    from the photo instead of noise keeps the photo's structure at any iteration count, which flatters the content
    metrics (SSIM above all) of a short run."""
    p = effective or {}
    iterations, init = p.get("iterations"), p.get("init", "?")
    if iterations is None:
        return Budget(method, f"no effective parameters for {method}; reference {fmt_int(reference_iterations)}", None)
    fraction = int(iterations) / reference_iterations
    start = {"content": "the content photo", "style": "the painting", "noise": "noise"}.get(str(init), str(init))
    text = (
        f"{fmt_int(int(iterations))} of {fmt_int(reference_iterations)} iterations ({fmt_percent(fraction)}), "
        f"initialised from {start} (reference: {reference_init}) — {source}"
    )
    return Budget(method, text, fraction, badge=UNDER_OPTIMISED, verb="optimised")


def pretrained_text(method: str, citation: str) -> str:
    """What a pretrained method's row is, for the caveats: an external reference, not one of the benchmark's runs."""
    return (
        f"{method} is an external converged reference, {PRETRAINED} ({citation}): this benchmark neither trained "
        "nor tuned it. It places our own trained methods; it does not compete with them on an equal training "
        "budget. It runs its own networks, on their own runtime and at their own input sizes, not the shared "
        f"VGG-19 (methods/{method}.py), so its seconds and memory are not like-for-like either."
    )


def pretrained_title(method: str, citation: str | None) -> str:
    """A figure label: the method's name, with "pretrained by its authors" and the citation when it has one."""
    return method if citation is None else f"{method} ({PRETRAINED}: {citation})"


def _reference_text(ref: Mapping[str, Any]) -> str:
    """best.yaml's ``reference`` entry as text: "trial 0: style_weight = 10 → content_loss = 1, ... (on the front)"."""
    weights = ", ".join(f"{k} = {fmt(v, 6)}" for k, v in (ref.get("weights") or {}).items())
    if ref.get("trial") is None:
        return f"{weights} (did not complete)"
    scores = ", ".join(f"{k} = {fmt(v)}" for k, v in (ref.get("objectives") or {}).items())
    front = {True: " (on the front)", False: " (not on the front)"}.get(ref.get("on_front"), "")
    return f"trial {ref['trial']}: {weights}" + (f" → {scores}" if scores else "") + front


def tuning_table(
    best: Mapping[str, Mapping[str, Any]], reference: Mapping[str, Mapping[str, str]] | None = None
) -> list[dict[str, str]]:
    """Rows of the tuned-weights table from each method's best.yaml (method -> parsed mapping), with the trial of
    the method's reference weights (enqueued first by the tuning): best.yaml's ``reference`` entry, else the trial
    trials.csv marks (``reference``: method -> {"text": ...} from :func:`reference_trial`); n/a when neither."""
    rows = []
    for method, b in best.items():
        row = {
            "method": method,
            "weights": ", ".join(f"{k} = {fmt(v, 6)}" for k, v in (b.get("weights") or {}).items()),
            "objectives (val)": ", ".join(f"{k} = {fmt(v)}" for k, v in (b.get("objectives") or {}).items()),
            "trial": f"{b.get('trial')} of {b.get('trials_finished')} ({b.get('selection')})",
        }
        if isinstance(b.get("reference"), Mapping):
            row["reference weights (val)"] = _reference_text(b["reference"])
        elif reference is not None:
            row["reference weights (val)"] = (reference.get(method) or {}).get("text", NA)
        rows.append(row)
    if any("reference weights (val)" in r for r in rows):
        for r in rows:
            r.setdefault("reference weights (val)", NA)
    return rows


def reference_trial(trials: pd.DataFrame, weights: Sequence[str], objectives: Sequence[str]) -> dict[str, str] | None:
    """The trial trials.csv marks ``reference == 1`` (the reference weights), as text; None when not marked."""
    if "reference" not in trials.columns:
        return None
    ref = trials[pd.to_numeric(trials["reference"], errors="coerce") == 1]
    if ref.empty:
        return None
    r = ref.iloc[0]
    parts = [f"{k} = {fmt(r[k], 6)}" for k in weights if k in r.index]
    scores = [f"{k} = {fmt(r[k])}" for k in objectives if k in r.index]
    return {
        "text": f"trial {r.get('number', '?')}: " + ", ".join(parts) + (" → " + ", ".join(scores) if scores else "")
    }


# ------------------------------------------------------------------------------------------------ figures


def _palette(methods: Sequence[str]) -> dict[str, Any]:
    colours = sns.color_palette("colorblind", n_colors=max(3, len(methods)))
    return {m: colours[i % len(colours)] for i, m in enumerate(methods)}


def fig_metric_distributions(per_pair: pd.DataFrame, order: Sequence[str], metrics: Sequence[str]) -> Figure:
    """One panel per metric (e.g. the headline ones): per-pair values by method (box + points); n/a panels say so."""
    metrics = list(metrics)
    ncols = min(4, max(1, len(metrics)))
    nrows = math.ceil(len(metrics) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.4 * nrows), squeeze=False, constrained_layout=True)
    palette = _palette(order)
    for ax in axes.flat[len(metrics) :]:
        ax.axis("off")
    for ax, metric in zip(axes.flat, metrics, strict=False):
        data = per_pair[["method", metric]].copy()
        data[metric] = pd.to_numeric(data[metric], errors="coerce")
        data = data.dropna()
        ax.set_title(f"{metric} {arrow(metric)}")
        if data.empty:
            ax.text(0.5, 0.5, NA, ha="center", va="center", transform=ax.transAxes, fontsize=14, color="grey")
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        present = [m for m in order if m in set(data["method"])]
        sns.boxplot(
            data=data,
            x="method",
            y=metric,
            order=present,
            hue="method",
            palette=palette,
            ax=ax,
            fliersize=0,
            legend=False,
        )
        with fixed_jitter():
            sns.stripplot(data=data, x="method", y=metric, order=present, color="black", size=3, ax=ax)
        ax.set_xlabel("")
        ax.set_ylabel("")
        ax.tick_params(axis="x", rotation=35)
    return fig


def fig_tradeoff(
    per_pair: pd.DataFrame, order: Sequence[str], x: str = "content_loss", y: str = "style_gram"
) -> Figure:
    """``x`` vs ``y`` (content_loss vs style_gram), one point per test pair, coloured by method; reference rows are
    crosses (tuning fronts: :func:`fig_tuning`)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.8), constrained_layout=True)
    palette = _palette(order)
    for method in order:
        part = per_pair[per_pair["method"] == method]
        if part.empty:
            continue
        marker = "x" if method in REFERENCE_ROWS else "o"
        ax.scatter(
            pd.to_numeric(part[x], errors="coerce"),
            pd.to_numeric(part[y], errors="coerce"),
            label=method,
            color=palette[method],
            marker=marker,
            alpha=0.8,
        )
    # Linear axes: the identity row sits at content_loss = 0, which a log axis cannot show.
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.set_xlabel(f"{x} {arrow(x)} (distance from the photo's features)")
    ax.set_ylabel(f"{y} {arrow(y)} (distance from the painting's Gram statistics)")
    ax.set_title("Content-style trade-off (lower-left is better)")
    ax.ticklabel_format(style="sci", scilimits=(-3, 4))
    ax.legend(fontsize=8)
    return fig


def fig_style_shares(statistics: Mapping[str, Any]) -> Figure:
    """One panel per style kind: each method's per-layer share of the aggregate style distance (stacked bars)."""
    fig, axes = plt.subplots(
        1, len(STYLE_KINDS), figsize=(5.2 * len(STYLE_KINDS), 0.45 * 7 + 1.6), squeeze=False, constrained_layout=True
    )
    for ax, kind in zip(axes[0], STYLE_KINDS, strict=True):
        shares = style_shares(statistics, kind)
        layers = style_layers(kind)
        methods = [m for m in shares if all(v is not None for v in shares[m].values())]
        colours = sns.color_palette("crest", n_colors=len(layers))
        left = np.zeros(len(methods))
        for i, layer in enumerate(layers):
            values = np.array([100.0 * shares[m][layer] for m in methods])
            ax.barh(methods, values, left=left, color=colours[i], label=layer)
            left += values
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        ax.set_xlabel("% of the aggregate")
        ax.set_title(f"style_{kind}: share per layer")
        if not methods:
            ax.text(0.5, 0.5, NA, ha="center", va="center", transform=ax.transAxes)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=8)
    return fig


def fig_tuning(trials: pd.DataFrame, objectives: Sequence[str], order: Sequence[str]) -> Figure:
    """One panel per tuned method: every finished trial's two objectives (val split), the Pareto front joined and
    highlighted, the chosen operating point starred, and the reference-weights trial (trials.csv ``reference`` = 1,
    when that column exists) as a diamond. ``trials``: the trials.csv rows with a ``method`` column."""
    methods = [m for m in order if m in set(trials["method"])]
    fig, axes = plt.subplots(
        1, max(1, len(methods)), figsize=(4.2 * max(1, len(methods)), 3.8), squeeze=False, constrained_layout=True
    )
    palette = _palette(order)
    x, y = objectives
    for ax, method in zip(axes[0], methods, strict=False):
        part = trials[trials["method"] == method]
        if x not in part.columns or y not in part.columns:
            ax.text(
                0.5,
                0.5,
                f"{method}: trials.csv lacks {x} / {y}",
                ha="center",
                va="center",
                transform=ax.transAxes,
                fontsize=8,
            )
            continue
        scored = part.dropna(subset=[x, y])
        front = scored[scored["pareto"] == 1].sort_values(x)
        chosen = scored[scored["chosen"] == 1]
        ax.scatter(scored[x], scored[y], color="#b8bfcc", s=28, label="trial")
        ax.plot(front[x], front[y], "-o", color=palette.get(method, "C0"), ms=6, label="Pareto front")
        ax.scatter(
            chosen[x],
            chosen[y],
            marker="*",
            s=260,
            color=palette.get(method, "C0"),
            edgecolor="black",
            zorder=5,
            label="chosen",
        )
        if "reference" in scored.columns:
            ref = scored[pd.to_numeric(scored["reference"], errors="coerce") == 1]
            if not ref.empty:
                ax.scatter(
                    ref[x],
                    ref[y],
                    marker="D",
                    s=70,
                    facecolor="white",
                    edgecolor="black",
                    linewidth=1.5,
                    zorder=6,
                    label="reference weights",
                )
        pruned = int((part["state"] == "PRUNED").sum())
        ax.set_title(f"{method}: {len(scored)} trials" + (f", {pruned} pruned" if pruned else ""), fontsize=10)
        ax.set_xlabel(f"{x} {arrow(x)} (val)")
        ax.set_ylabel(f"{y} {arrow(y)} (val)")
        ax.ticklabel_format(style="sci", scilimits=(-3, 4))
        ax.legend(fontsize=7)
    return fig


def fig_loss_curves(losses: pd.DataFrame) -> Figure:
    """Mean optimisation/training loss terms per step, one panel per term, one line per method (log y)."""
    terms = [t for t in ("total", "content", "style", "tv") if t in losses.columns and losses[t].abs().sum() > 0]
    fig, axes = plt.subplots(1, max(1, len(terms)), figsize=(3.6 * max(1, len(terms)), 3.2), constrained_layout=True)
    axes = np.atleast_1d(axes)
    if losses.empty or not terms:
        axes[0].text(0.5, 0.5, "no loss curves", ha="center", va="center", transform=axes[0].transAxes)
        return fig
    mean = losses.groupby(["method", "step"], as_index=False)[terms].mean()
    palette = _palette(sorted(mean["method"].unique()))
    for ax, term in zip(axes, terms, strict=True):
        for method, part in mean.groupby("method"):
            ax.plot(part["step"], part[term], label=method, color=palette[method])
        ax.set_yscale("log")
        ax.set_title(f"{term} loss (mean over pairs)")
        ax.set_xlabel("step (optimisation evaluation / training iteration)")
    axes[0].legend(fontsize=8)
    return fig


@contextlib.contextmanager
def fixed_jitter(seed: int = 0) -> Iterator[None]:
    """seaborn's stripplot jitters its points with numpy's global generator: seed it for the plot, so a figure is the
    same on every run (DVC sees no change when the data did not change), then restore the caller's state."""
    state = np.random.get_state()  # noqa: NPY002 (seaborn draws from the legacy global generator)
    np.random.seed(seed)  # noqa: NPY002
    try:
        yield
    finally:
        np.random.set_state(state)  # noqa: NPY002


def fig_speed_memory(per_pair: pd.DataFrame, order: Sequence[str]) -> Figure:
    """Seconds and peak memory per image by method (mean with per-pair points)."""
    data = per_pair[~per_pair["method"].isin(REFERENCE_ROWS)].copy()
    fig, axes = plt.subplots(1, 2, figsize=(8.0, 3.4), constrained_layout=True)
    for ax, col, title in ((axes[0], "seconds", "seconds per image"), (axes[1], "peak_mem_mb", "peak memory (MB)")):
        data[col] = pd.to_numeric(data[col], errors="coerce")
        present = [m for m in order if m in set(data.dropna(subset=[col])["method"])]
        if not present:
            ax.text(0.5, 0.5, NA, ha="center", va="center", transform=ax.transAxes)
            continue
        sns.barplot(
            data=data,
            x="method",
            y=col,
            order=present,
            hue="method",
            palette=_palette(order),
            ax=ax,
            errorbar=None,
            legend=False,
        )
        with fixed_jitter():
            sns.stripplot(data=data, x="method", y=col, order=present, color="black", size=3, ax=ax)
        ax.set_title(title)
        ax.set_xlabel("")
        ax.set_ylabel("")
    return fig


def fig_image_grid(
    images: Mapping[tuple[str, str], np.ndarray],
    rows: Sequence[str],
    cols: Sequence[str],
    row_images: Mapping[str, np.ndarray] | None = None,
    col_images: Mapping[str, np.ndarray] | None = None,
    title: str = "",
    col_titles: Mapping[str, str] | None = None,
) -> Figure:
    """A rows x cols grid of (H, W, 3) arrays in [0, 1], with optional header images (e.g. contents and styles) or,
    without them, ``col_titles`` over the first row (column -> its title)."""
    extra_r, extra_c = int(col_images is not None), int(row_images is not None)
    n_r, n_c = len(rows) + extra_r, len(cols) + extra_c
    fig, axes = plt.subplots(n_r, n_c, figsize=(2.2 * n_c, 1.9 * n_r), squeeze=False, constrained_layout=True)
    for ax in axes.flat:
        ax.axis("off")
    if col_images is not None:
        for j, c in enumerate(cols):
            axes[0, j + extra_c].imshow(col_images[c])
            axes[0, j + extra_c].set_title(c, fontsize=8)
    for i, r in enumerate(rows):
        if row_images is not None:
            axes[i + extra_r, 0].imshow(row_images[r])
            axes[i + extra_r, 0].set_title(r, fontsize=8)
        for j, c in enumerate(cols):
            if (r, c) in images:
                axes[i + extra_r, j + extra_c].imshow(images[(r, c)])
    for j, c in enumerate(cols):
        if col_titles is not None and c in col_titles:
            axes[0, j + extra_c].set_title(col_titles[c], fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


# ------------------------------------------------------------------------------------------------ text

TITLE = "nst-bench: method comparison"
# profile -> (title, subtitle): a rehearsal's report must never be read as results (profiles/rehearsal.yaml).
REHEARSAL_TITLE = "nst-bench REHEARSAL: not results"
REHEARSAL_SUBTITLE = (
    "A rehearsal of the full profile (profiles/rehearsal.yaml: the full profile with only sizes shrunk) against "
    "loopback fakes of the Hugging Face Hub and Mapillary serving generated images: it shows that every stage runs, "
    "not how the methods compare. Nothing here is a result."
)

SUBTITLE = (
    "Every method's outputs on the test pairs (content photo x painting), scored by one fixed scorer and "
    "set against reference rows that bound each metric. What each number measures, and what it does not, "
    'is under "How to read this".'
)

CAPTIONS = {
    "people": "People's Bradley-Terry strengths with their bootstrap intervals over voters (left), and how often each "
    "metric prefers the output the voter chose among decided votes (right; dashed: a coin's 50 %).",
    "metrics": "Per-pair values of the headline metrics by method, reference rows included (arrows: better direction).",
    "tradeoff": "content_loss vs style_gram, one point per test pair; lower-left is better. Crosses are the reference "
    "rows.",
    "style_layers": "Each layer's share of the aggregate style distance (Gram and mean/std), per method.",
    "losses": "Optimisation / training loss per step, mean over pairs.",
    "speed_memory": "Seconds and peak memory per image.",
    "side_by_side": "A few pairs side by side: content, style, then every method.",
    "tuning": "Tuning on the val split: every trial (grey), the Pareto front (line), the chosen weights (star) and "
    "the reference weights (diamond, where trials.csv marks them).",
}


@dataclass(frozen=True)
class FigureRef:
    """A figure as the report links it: ``figures/<name>.png`` with its caption."""

    name: str
    caption: str

    @property
    def path(self) -> str:
        return f"figures/{self.name}.png"


def figure_refs(names: Sequence[str]) -> list[FigureRef]:
    """The figures in the order they were made; an image grid ``grid_<m>`` is captioned by its method."""
    return [
        FigureRef(n, CAPTIONS.get(n, n.replace("grid_", "") + ": every test content (rows) x test style (columns)"))
        for n in names
    ]


@dataclass(frozen=True)
class ReadItem:
    """One "How to read this" entry: the metric, its better direction ("higher" / "lower") and what it measures."""

    metric: str
    direction: str
    text: str


def read_items(columns: Sequence[str], scoring: Mapping[str, Any] | None = None) -> list[ReadItem]:
    """What each comparison column measures (:data:`HOW_TO_READ`), in the table's column order."""
    return [
        ReadItem(m, "higher" if higher_is_better(m, scoring) else "lower", HOW_TO_READ[m])
        for m in columns
        if m in HOW_TO_READ
    ]


def scorer_lines(scoring: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What the scorer ran with (scoring.json): encoders with their sha256, LPIPS and FID availability. Text between
    backticks is code."""
    scorer = scoring.get("scorer") or {}
    cfsd_info = scoring.get("cfsd") or {}
    scale = cfsd_info.get("feature_scale")
    cfsd_scale = "" if scale in (None, 1.0) else f", features x {float(scale):.4g} (caffe -> torchvision range)"
    return [
        (
            "style encoder (style distances)",
            f"`{scorer.get('style_encoder', '?')}`, sha256 `{scorer.get('encoder_sha256', '?')}`",
        ),
        (
            "content encoder (content_loss)",
            f"`{scorer.get('content_encoder', scorer.get('style_encoder', '?'))}`, sha256 "
            f"`{scorer.get('content_encoder_sha256', scorer.get('encoder_sha256', '?'))}`",
        ),
        (
            "CFSD encoder",
            f"`{scorer.get('cfsd_encoder', '?')}`, sha256 `{scorer.get('cfsd_encoder_sha256', '?')}`{cfsd_scale}",
        ),
        ("LPIPS", scoring.get("lpips", "?")),
        ("FID (ImageNet Inception)", scoring.get("fid_imagenet", "?")),
        ("ArtFID (art Inception)", scoring.get("artfid", "?")),
    ]


def metric_rows(scoring: Mapping[str, Any], headline: Sequence[str]) -> list[dict[str, str]]:
    """Which network and normalisation each reported metric used (scoring.json)."""
    info = scoring.get("metrics") or {}
    rows = []
    for metric in [*headline, *SUMMARY_COLUMNS]:
        m = info.get(metric) or {}
        rows.append(
            {
                "metric": f"{metric} {arrow(metric, scoring)}",
                "compares to": m.get("compares_to", "?"),
                "network": m.get("network", "?"),
                "normalisation": m.get("normalisation", "?"),
            }
        )
    return rows


def _unavailable_notes(scoring: Mapping[str, Any]) -> list[str]:
    """One note per metric (LPIPS, then the summary metrics) that ``scoring`` marks n/a, with its reason."""
    notes = []
    lpips = str(scoring.get("lpips", ""))
    if not lpips.startswith("available"):
        notes.append(f"LPIPS is n/a: {lpips.removeprefix('n/a: ')}")
    for metric in SUMMARY_COLUMNS:
        note = str(scoring.get(metric, ""))
        if not note.startswith("available"):
            notes.append(f"{metric} is n/a: {note.removeprefix('n/a: ')}")
    return notes


def _filter_boost_note(scoring: Mapping[str, Any]) -> str | None:
    """The note on the per-filter normalisation's largest boost, or None when scoring.json records none."""
    boost = (scoring.get("scorer") or {}).get("style_filter_boost") or {}
    if not boost:
        return None
    layer = max(boost, key=lambda k: boost[k])
    return (
        f"The style distances run on a network whose filters are rescaled to mean activation 1 on a small image "
        f"set (methods/vgg19_caffe_per_filter.json): a filter nearly silent on those images is boosted up to "
        f"{boost[layer]:.0f}x the layer's median filter (at {layer}), so a few filters can dominate a style "
        "distance. Read the per-layer tables before concluding from an aggregate."
    )


def _cfsd_note(scoring: Mapping[str, Any]) -> str | None:
    """The note on CFSD's feature scale and saturated rows, or None when CFSD ran unscaled (or is not recorded)."""
    cfsd_info = scoring.get("cfsd") or {}
    scale = cfsd_info.get("feature_scale")
    if scale is None or float(scale) == 1.0:
        return None
    n_a = cfsd_info.get("n_a") or []
    return (
        f"cfsd ran on the caffe VGG-19 with its features scaled by {float(scale):.4g} (1/{1 / float(scale):.1f}) "
        "to torchvision's range; StyleID's published values use torchvision's VGG-19, so compare cfsd between "
        f"rows of this report only. Largest saturated-row fraction: "
        f"{fmt_percent(float(cfsd_info.get('max_saturated_fraction') or 0.0))}"
        + (f"; {len(n_a)} image(s) n/a (over 1 % of rows saturated)." if n_a else ".")
    )


def _own_objectives_note(scoring: Mapping[str, Any]) -> str | None:
    """The note naming each method's own-objective (◆) cells, or None when scoring.json records none."""
    own = scoring.get("own_objectives") or {}
    if not own:
        return None
    return (
        "Cells marked ◆ are scores on the method's own objective (see the legend under the comparison): "
        + "; ".join(
            f"{m}: {', '.join(f'`{k}`' for k in cells if '_relu' not in k)}"
            for m, cells in own.items()
            if any("_relu" not in k for k in cells)
        )
        + " (and the per-layer columns of the shared layers). They show the method did what it was built to do, "
        "not that it stylizes better."
    )


def caveats(
    scoring: Mapping[str, Any], budgets: Sequence[Budget], pairs: int | None, pretrained: Mapping[str, str]
) -> list[str]:
    """What limits the report's conclusions: metrics that are n/a, under-trained methods, few pairs, external
    references, machine-dependent costs, the scale of the distances. Text between backticks is code."""
    notes = _unavailable_notes(scoring)
    under = [b.method for b in budgets if b.under_trained]
    if under:
        notes.append(
            f"{', '.join(under)} under-trained: less than {UNDER_TRAINED_BELOW:.0%} of "
            "the reference schedule's iterations (see What ran); their scores say little about the methods "
            "as published."
        )
    pairs = pairs or 0
    if pairs < 30:
        notes.append(
            f"Only {pairs} test pairs: confidence intervals are wide and rankings can flip; use the full "
            "profile (`profile: full`) for conclusions."
        )
    notes += [pretrained_text(m, c) for m, c in pretrained.items()]
    notes.append(
        "Seconds and memory depend on the machine and device (see timing.csv per method); peak memory on the "
        "CPU is the process's resident set size, on CUDA the allocator's peak."
    )
    notes.append(
        "content_loss is on the scale of the scorer's raw caffe VGG-19 and the style distances are relative "
        "(0 to 1) on its per-filter-normalised version: compare them between rows of this report, not with numbers "
        "from papers."
    )
    optional = (_filter_boost_note(scoring), _cfsd_note(scoring), _own_objectives_note(scoring))
    notes += [note for note in optional if note is not None]
    return notes


@dataclass(frozen=True)
class PairedGridRow:
    label: str  # "A - B"
    cells: list[PairedRow | None]  # one per metric of the grid; None where paired.csv has no row


@dataclass(frozen=True)
class PairedGrid:
    """The paired table: one row per method pair "A - B", one column per metric (``titles``: metric -> "ssim ↑")."""

    titles: dict[str, str]
    rows: list[PairedGridRow]


def paired_grid(rows: Sequence[PairedRow], scoring: Mapping[str, Any] | None = None) -> PairedGrid:
    """:func:`paired_rows` laid out as pairs x metrics, both in ``rows``' order."""
    pairs = list(dict.fromkeys((r.a, r.b) for r in rows))
    metrics = list(dict.fromkeys(r.metric for r in rows))
    cells = {(r.a, r.b, r.metric): r for r in rows}
    return PairedGrid(
        {m: f"{m} {arrow(m, scoring)}" for m in metrics},
        [PairedGridRow(f"{a} - {b}", [cells.get((a, b, m)) for m in metrics]) for a, b in pairs],
    )


@dataclass(frozen=True)
class StyleTable:
    """One style kind's per-layer table (:func:`style_share_rows`); its columns are the layers."""

    kind: str
    rows: list[TableRow]

    @property
    def titles(self) -> dict[str, str]:
        return {layer: layer for layer in style_layers(self.kind)}


# ------------------------------------------------------------------------------------------------ people's verdict


@dataclass(frozen=True)
class PeopleView:
    """The report's "People's verdict" section, from the judge stage's people.json: what people said, and how often
    each automatic metric agrees with them; or, without votes, how to collect them."""

    how_to_collect: str | None  # set when there are no votes
    summary: str = ""
    strengths: list[dict[str, str]] = field(default_factory=list)
    deception: list[dict[str, str]] = field(default_factory=list)
    agreement: list[dict[str, str]] = field(default_factory=list)


def _interval(row: Mapping[str, Any], value: str, digits: int = 2, pct: bool = False) -> str:
    def show(x: Any) -> str:
        if x is None or (isinstance(x, float) and not math.isfinite(x)):
            return "n/a"
        return f"{x:.0%}" if pct else f"{x:.{digits}f}"

    return f"{show(row[value])} [{show(row.get('low'))}, {show(row.get('high'))}]"


def _tau(tau: float | None) -> str:
    return "n/a" if tau is None else f"{tau:+.2f}"


def people_view(result: Mapping[str, Any] | None) -> PeopleView:
    """The section's tables (strings) from people.json; ``None`` (the judge stage did not run) reads as no votes."""
    from_judge = result or {}
    if not from_judge.get("votes"):
        return PeopleView(how_to_collect=from_judge.get("how_to_collect") or "No votes yet (`nst judge serve`).")
    level = f"{from_judge.get('confidence', 0.95):.0%}"
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(from_judge.get("by_kind", {}).items()))
    summary = (
        f"{from_judge['votes']} votes ({kinds}) from {from_judge.get('voters', 0)} voters in "
        f"{', '.join(from_judge.get('studies', []))}; intervals {level} ("
        'strengths: bootstrap over voters; rates and shares: Wilson). "Can\'t tell" counts '
        f"{'as half a win for each side' if from_judge.get('ties') == 'half' else 'as no vote'}."
    )
    strengths = [
        {"method": r["method"], f"strength [{level}]": _interval(r, "strength"), "votes": str(r["votes"])}
        for r in from_judge.get("strengths", [])
    ]
    deception = [
        {
            "shown": "real paintings (calibration)" if r["method"] == "painting" else r["method"],
            f"judged a painting [{level}]": _interval(r, "rate", pct=True),
            "n": str(r["n"]),
        }
        for r in from_judge.get("deception", [])
    ]
    taus = {r["metric"]: r for r in from_judge.get("rank_agreement", [])}
    agreement = [
        {
            "metric": r["metric"],
            f"agrees with the voter [{level}]": _interval(r, "share", pct=True),
            "decided votes": str(r["n"]),
            "Kendall's tau (method order)": _tau(taus.get(r["metric"], {}).get("tau")),
        }
        for r in sorted(from_judge.get("agreement", []), key=lambda r: -(r["share"] if r["share"] is not None else -1))
    ]
    return PeopleView(None, summary, strengths, deception, agreement)


def fig_people(result: Mapping[str, Any]) -> Figure | None:
    """People's Bradley-Terry strengths with their intervals, and each metric's agreement with the voters (the dashed
    line: a coin's 50 %); None without preference votes."""
    strengths, agreement = result.get("strengths") or [], result.get("agreement") or []
    if not strengths:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 0.35 * max(len(strengths), len(agreement)) + 1.8))
    ys = range(len(strengths))
    for y, r in zip(ys, strengths, strict=True):
        low = r["low"] if r["low"] is not None else r["strength"]
        high = r["high"] if r["high"] is not None else r["strength"]
        left.errorbar(r["strength"], y, xerr=[[r["strength"] - low], [high - r["strength"]]], fmt="o", color="C0")
    left.set_yticks(list(ys), [r["method"] for r in strengths])
    left.invert_yaxis()
    left.axvline(0.0, color="grey", lw=0.8, ls=":")
    left.set_xlabel("Bradley-Terry log-strength (mean 0)")
    left.set_title("people's preference")
    shown = [r for r in agreement if r["share"] is not None]
    shown.sort(key=lambda r: -r["share"])
    for y, r in enumerate(shown):
        right.errorbar(r["share"], y, xerr=[[r["share"] - r["low"]], [r["high"] - r["share"]]], fmt="s", color="C1")
    right.set_yticks(range(len(shown)), [r["metric"] for r in shown])
    right.invert_yaxis()
    right.axvline(0.5, color="grey", lw=0.8, ls="--")
    right.set_xlim(0, 1)
    right.set_xlabel("share of decided votes: the metric picks the voter's choice")
    right.set_title("metric agrees with people")
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class ReportView:
    """Every table and text of the report, computed; the templates (``evaluation/templates/report.{html,md}.j2``)
    only lay them out, with the figures (:func:`figure_refs`) beside. Texts are plain, never markup: the HTML template
    escapes every one of them."""

    created: str  # "2025-01-01 00:00 UTC"
    ci_level: float  # 0.95
    pairs: int | None  # test pairs scored
    references: Sequence[str]  # the reference rows, in table order (evaluation.references)
    rows: list[TableRow]  # the comparison table (:func:`comparison_rows`)
    titles: dict[str, str]  # its columns (:func:`column_titles`)
    notes: RankingNotes
    badge_titles: dict[str, dict[str, str]]  # method -> badge -> its tooltip
    paired: PairedGrid | None  # None: fewer than two methods ran
    style_tables: list[StyleTable]
    params_rows: list[ParamsRow]
    tuning: list[dict[str, str]]  # the tuned-weights table (:func:`tuning_table`), empty when nothing was tuned
    budgets: list[Budget]
    scorer: list[tuple[str, str]]  # (name, text with `code` spans)
    metric_rows: list[dict[str, str]]
    setup: list[tuple[str, str]]  # (name, text with `code` spans)
    read: list[ReadItem]
    caveats: list[str]  # texts with `code` spans
    legend: list[str] = field(default_factory=list)  # the marks used in the comparison table (:func:`mark_legend`)
    people: PeopleView | None = None  # the judge stage's verdict (:func:`people_view`); None: the stage did not run
    subtitle: str = SUBTITLE
    title: str = TITLE


def md_cell(text: Any) -> str:
    """Text safe inside a Markdown table cell (a Jinja filter)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def nbsp_arrow(text: str) -> str:
    """Keep a header's direction arrow on the line of its name (a Jinja filter)."""
    return str(text).replace(" ↑", "\u00a0↑").replace(" ↓", "\u00a0↓")


def percent(fraction: float) -> str:
    """0.95 -> "95%" (a Jinja filter)."""
    return f"{fraction:.0%}"


@pass_eval_context
def _escape(eval_ctx: EvalContext, value: Any) -> Any:
    """The environment's ``finalize``: every ``{{ }}`` of an autoescaped (HTML) template goes through here before
    autoescape sees it. It escapes the same five characters markupsafe does, but writes ' and " the way
    :func:`html.escape` does (``&#x27;`` ``&quot;``, not ``&#39;`` ``&#34;``), so the page is byte-identical to the
    one the f-string renderer wrote before the templates. Markup (macro output) passes through; Markdown untouched."""
    if not eval_ctx.autoescape or hasattr(value, "__html__"):
        return value
    # Markup: the text was escaped on this line, so autoescape must not escape it a second time.
    return Markup(html.escape(str(value)))


@functools.cache
def environment() -> Environment:
    """The templates under ``evaluation/templates`` (package data): ``*.html.j2`` autoescaped, ``*.md.j2`` not; an
    undefined name is an error, never an empty string."""
    env = Environment(
        loader=PackageLoader("evaluation", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=True, default=False),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_escape,
    )
    env.filters.update(md_cell=md_cell, nbsp_arrow=nbsp_arrow, percent=percent)
    env.globals.update(NA=NA, UNDER_TRAINED=UNDER_TRAINED, UNDER_TRAINED_BELOW=UNDER_TRAINED_BELOW)
    return env


def _render(name: str, view: ReportView, figures: Sequence[FigureRef]) -> str:
    return environment().get_template(name).render(view=view, figures=figures)


def render_html(view: ReportView, figures: Sequence[FigureRef]) -> str:
    """``reports/index.html``: one self-contained page (inline CSS, ``figures`` linked relative), every text escaped."""
    return _render("report.html.j2", view, figures)


def render_markdown(view: ReportView, figures: Sequence[FigureRef]) -> str:
    """``reports/report.md``: the same report in GitHub Markdown (tables, lists, ``figures`` linked)."""
    return _render("report.md.j2", view, figures)


def _macro(template: str, name: str) -> Callable[..., str]:
    return getattr(environment().get_template(template).module, name)


def markdown_table(
    rows: Sequence[TableRow], titles: Mapping[str, str], notes: Mapping[str, str] | None = None, first: str = "method"
) -> str:
    """A Markdown table: competing methods in bold, reference rows in italics and labelled, ★ on the best cells,
    badges (e.g. "under-trained") after the name, per-column notes under the header titles."""
    return str(_macro("_tables.md.j2", "comparison_table")(rows, titles, notes or {}, first))


def html_table(
    rows: Sequence[TableRow],
    titles: Mapping[str, str],
    notes: Mapping[str, str] | None = None,
    css_class: str = "comparison",
    first: str = "method",
    badge_titles: Mapping[str, Mapping[str, str]] | None = None,
) -> Markup:
    """An HTML table (every text escaped): reference rows get class "reference", best cells class "best" and a ★,
    the detail (CI) a smaller second line, badges a span of class "badge"."""
    table = _macro("_tables.html.j2", "comparison_table")
    return table(rows, titles, notes or {}, css_class, first, badge_titles or {})


def markdown_paired(rows: Sequence[PairedRow], scoring: Mapping[str, Any] | None = None) -> str:
    """One row per method pair "A - B", one column per metric: mean difference [CI]; "≠ 0 (X better)" where the row is
    ``significant`` (Holm-adjusted, minimum grid), the numbers in bold."""
    return str(_macro("_tables.md.j2", "paired_table")(paired_grid(rows, scoring)))


def html_paired(rows: Sequence[PairedRow], scoring: Mapping[str, Any] | None = None) -> Markup:
    """The paired table in HTML: ``significant`` cells get class "excludes-zero", a "≠ 0" mark and the verdict."""
    return _macro("_tables.html.j2", "paired_table")(paired_grid(rows, scoring))
