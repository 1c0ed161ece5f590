"""Report building: DataFrames and dicts in, matplotlib figures and HTML/Markdown text out. No file IO here.

The report stage (pipeline/report.py) loads the data, calls these functions, and writes what they return.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: figures are only ever saved to files

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from evaluation.metrics import METRICS

REFERENCE_ROWS = ("identity", "style_copy")
NA = "n/a"

HOW_TO_READ = {
    "content_loss": "How much of the photo's structure (VGG relu4_2 features) survives. 0 = the photo itself "
    "(identity row); the style_copy row shows the value of an output that kept none of it.",
    "style_loss": "How closely textures and colours (Gram matrices on five VGG layers) match the painting. "
    "style_copy is the floor a method can approach; identity shows an untouched photo.",
    "lpips": "Learned perceptual distance from the photo (AlexNet LPIPS). Lower = perceptually closer to the photo.",
    "ssim": "Pixel-level structural similarity to the photo, 1 = identical. Stylization must lower it; very low "
    "values mean the scene is no longer recognisable.",
    "cfsd": "Whether the output keeps the photo's spatial layout: compares which image patches resemble which "
    "(VGG relu3_1 self-similarity). 0 = same structure; insensitive to colour and texture changes.",
}


def fmt(value: float | None, digits: int = 4) -> str:
    """A number for tables: 4 significant digits, or "n/a" for None/NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NA
    return f"{value:.{digits}g}"


@dataclass
class TableRow:
    method: str
    cells: dict[str, str]
    best: set[str] = field(default_factory=set)
    reference: bool = False


def comparison_rows(summary: Mapping[str, Any], methods: Sequence[str]) -> list[TableRow]:
    """One row per method then the reference rows: "mean [ci_low, ci_high]" per metric, best mean marked.

    "Best" is decided among the real methods only (the reference rows are calibration, not competitors), using
    each metric's ``higher_is_better``; metrics without any value are n/a everywhere.
    """
    stats = summary["methods"]
    best: dict[str, str] = {}
    for metric, info in METRICS.items():
        means = {
            m: stats[m][metric]["mean"] for m in methods if stats.get(m, {}).get(metric, {}).get("mean") is not None
        }
        if means:
            pick = max if info.higher_is_better else min
            best[metric] = pick(means, key=means.__getitem__)
    rows = []
    for method in [*methods, *[r for r in REFERENCE_ROWS if r in stats]]:
        cells = {}
        for metric in METRICS:
            s = stats[method][metric]
            cells[metric] = NA if s["mean"] is None else f"{fmt(s['mean'])} [{fmt(s['ci_low'])}, {fmt(s['ci_high'])}]"
        cells["seconds"] = fmt(stats[method].get("seconds"), 3)
        cells["peak_mem_mb"] = fmt(stats[method].get("peak_mem_mb"), 4)
        rows.append(
            TableRow(method, cells, {m for m, b in best.items() if b == method}, reference=method in REFERENCE_ROWS)
        )
    return rows


def column_titles() -> dict[str, str]:
    """Table headers with the better direction: "ssim ↑", "style_loss ↓"."""
    titles = {m: f"{m} {'↑' if info.higher_is_better else '↓'}" for m, info in METRICS.items()}
    titles.update(seconds="s / image ↓", peak_mem_mb="peak MB ↓")
    return titles


# ------------------------------------------------------------------------------------------------ figures


def _palette(methods: Sequence[str]) -> dict[str, Any]:
    colours = sns.color_palette("colorblind", n_colors=max(3, len(methods)))
    return {m: colours[i] for i, m in enumerate(methods)}


def fig_metric_distributions(per_pair: pd.DataFrame, order: Sequence[str]) -> Figure:
    """One panel per metric: per-pair values by method (box + points); metrics with no values say n/a."""
    metrics = list(METRICS)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.6), constrained_layout=True)
    palette = _palette(order)
    for ax, metric in zip(np.atleast_1d(axes), metrics, strict=True):
        data = per_pair[["method", metric]].dropna()
        arrow = "↑" if METRICS[metric].higher_is_better else "↓"
        ax.set_title(f"{metric} {arrow}")
        if data.empty:
            ax.text(0.5, 0.5, NA, ha="center", va="center", transform=ax.transAxes, fontsize=14, color="grey")
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        present = [m for m in order if m in set(data["method"])]
        sns.boxplot(data=data, x="method", y=metric, order=present, hue="method", palette=palette, ax=ax,
                    fliersize=0, legend=False)  # fmt: skip
        sns.stripplot(data=data, x="method", y=metric, order=present, color="black", size=3, ax=ax)
        ax.set_xlabel("")
        ax.set_ylabel("")
        ax.tick_params(axis="x", rotation=30)
    return fig


def fig_tradeoff(per_pair: pd.DataFrame, order: Sequence[str]) -> Figure:
    """Content loss vs style loss, one point per test pair, coloured by method (tuning fronts: :func:`fig_tuning`)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.8), constrained_layout=True)
    palette = _palette(order)
    for method in order:
        part = per_pair[per_pair["method"] == method]
        if part.empty:
            continue
        marker = "x" if method in REFERENCE_ROWS else "o"
        ax.scatter(part["content_loss"], part["style_loss"], label=method, color=palette[method], marker=marker,
                   alpha=0.8)  # fmt: skip
    # Linear axes: the identity row sits at content_loss = 0, which a log axis cannot show.
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("content_loss ↓ (structure lost)")
    ax.set_ylabel("style_loss ↓ (style missed)")
    ax.set_title("Content-style trade-off (lower-left is better)")
    ax.legend(fontsize=8)
    return fig


def fig_tuning(trials: pd.DataFrame, objectives: Sequence[str], order: Sequence[str]) -> Figure:
    """One panel per tuned method: every finished trial's two objectives (val split), the Pareto front joined and
    highlighted, the chosen operating point starred. ``trials``: the trials.csv rows with a ``method`` column."""
    methods = [m for m in order if m in set(trials["method"])]
    fig, axes = plt.subplots(1, max(1, len(methods)), figsize=(4.2 * max(1, len(methods)), 3.8), squeeze=False,
                             constrained_layout=True)  # fmt: skip
    palette = _palette(order)
    x, y = objectives
    for ax, method in zip(axes[0], methods, strict=False):
        part = trials[trials["method"] == method]
        scored = part.dropna(subset=[x, y])
        front = scored[scored["pareto"] == 1].sort_values(x)
        chosen = scored[scored["chosen"] == 1]
        ax.scatter(scored[x], scored[y], color="#b8bfcc", s=28, label="trial")
        ax.plot(front[x], front[y], "-o", color=palette.get(method, "C0"), ms=6, label="Pareto front")
        ax.scatter(chosen[x], chosen[y], marker="*", s=260, color=palette.get(method, "C0"), edgecolor="black",
                   zorder=5, label="chosen")  # fmt: skip
        pruned = int((part["state"] == "PRUNED").sum())
        ax.set_title(f"{method}: {len(scored)} trials" + (f", {pruned} pruned" if pruned else ""), fontsize=10)
        ax.set_xlabel(f"{x} {'↑' if METRICS[x].higher_is_better else '↓'} (val)")
        ax.set_ylabel(f"{y} {'↑' if METRICS[y].higher_is_better else '↓'} (val)")
        ax.ticklabel_format(style="sci", scilimits=(-3, 4))
        ax.legend(fontsize=7)
    return fig


def tuning_table(best: Mapping[str, Mapping[str, Any]]) -> list[dict[str, str]]:
    """Rows of the tuned-weights table from each method's best.yaml (method -> parsed mapping)."""
    rows = []
    for method, b in best.items():
        rows.append({
            "method": method,
            "weights": ", ".join(f"{k} = {fmt(float(v))}" for k, v in b.get("weights", {}).items()),
            "objectives (val)": ", ".join(f"{k} = {fmt(float(v))}" for k, v in b.get("objectives", {}).items()),
            "trial": f"{b.get('trial')} of {b.get('trials_finished')} ({b.get('selection')})",
        })  # fmt: skip
    return rows


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
        sns.barplot(data=data, x="method", y=col, order=present, hue="method", palette=_palette(order), ax=ax,
                    errorbar=None, legend=False)  # fmt: skip
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
) -> Figure:
    """A rows x cols grid of (H, W, 3) arrays in [0, 1], with optional header images (e.g. contents and styles)."""
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
    if title:
        fig.suptitle(title)
    return fig


# ------------------------------------------------------------------------------------------------ text


def markdown_table(rows: Sequence[TableRow]) -> str:
    titles = column_titles()
    cols = list(titles)
    lines = ["| method | " + " | ".join(titles[c] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for row in rows:
        name = f"*{row.method}* (reference)" if row.reference else f"**{row.method}**"
        cells = [f"**{row.cells[c]}** ★" if c in row.best else row.cells[c] for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def html_table(rows: Sequence[TableRow]) -> str:
    titles = column_titles()
    head = "".join(f"<th>{html.escape(t)}</th>" for t in titles.values())
    body = []
    for row in rows:
        cls = ' class="reference"' if row.reference else ""
        label = f"{html.escape(row.method)}{' <small>(reference)</small>' if row.reference else ''}"
        cells = "".join(
            f'<td class="best" title="best of the methods">{html.escape(row.cells[c])} ★</td>'
            if c in row.best
            else f'<td class="{"na" if row.cells[c] == NA else ""}">{html.escape(row.cells[c])}</td>'
            for c in titles
        )
        body.append(f'<tr{cls}><th scope="row">{label}</th>{cells}</tr>')
    return (
        f'<table class="comparison"><thead><tr><th>method</th>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    )
