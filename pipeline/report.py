"""report stage: the method comparison -> ``reports/index.html``, ``reports/report.md``, ``reports/figures/``.

Reads the evaluate stage's ``statistics.json`` (means, two-way bootstrap CIs, ranking), ``summary.json`` (FID/ArtFID),
``paired.csv`` (paired differences), ``scoring.json`` (what each metric measures, its network) and ``per_pair.csv``;
what ran: each method's ``outputs/<m>/effective_params.yaml`` (tuned weights applied), each trained method's
``models/<m>/train_metrics.json`` and ``effective_params.yaml`` against its reference schedule, the tuning results
(``reports/tuning/<m>/best.yaml``, ``trials.csv``); each method's ``losses.csv``, the prepared data's ``stats.json``
and the test images. Builds the figures and text with :mod:`evaluation.report`; writes everything under ``reports/``
(the HTML opens from disk, with no network) and logs it to MLflow as a ``report`` run.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import yaml

from evaluation import report as rep
from evaluation.metrics import METRICS
from methods import get_method
from methods.errors import NstError
from methods.image import resize_to_edge
from pipeline import tracking
from pipeline.config import Params, load_params
from pipeline.io import atomic_dir, list_images, read_image, write_text_atomic

log = logging.getLogger(__name__)

THUMB_PX = 192
SIDE_BY_SIDE_PAIRS = 3
# Headline metrics when scoring.json does not list them: the aggregates (no per-layer style distances).
DEFAULT_HEADLINE = tuple(k for k in METRICS if not any(k.startswith(f"style_{kind}_") for kind in rep.STYLE_KINDS))


class ReportError(NstError):
    """The report's inputs are missing or malformed."""


def _load_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ReportError(f"{path}: not found (run the evaluate stage first)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ReportError(f"{path}: not valid JSON ({exc})") from exc


def _load_yaml(path: Path) -> dict[str, Any] | None:
    """A YAML mapping, or None when the file is absent or not a mapping."""
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ReportError(f"{path}: not valid YAML ({exc})") from exc
    return data if isinstance(data, dict) else None


def _load_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ReportError(f"{path}: not found (run the evaluate stage first)")
    return pd.read_csv(path)


def _thumb(path: Path) -> np.ndarray:
    return resize_to_edge(read_image(path), THUMB_PX)[0].permute(1, 2, 0).numpy()


def _losses(outputs: Path, models: Path | None, methods: list[str]) -> pd.DataFrame:
    """Loss per step: a trained method's training curve (models/<m>/losses.csv), else its optimisation curves."""
    frames = []
    for method in methods:
        candidates = [outputs / method / "losses.csv"]
        if models is not None:
            candidates.insert(0, models / method / "losses.csv")
        for path in candidates:
            if path.is_file():
                frame = pd.read_csv(path)
                if not frame.empty:
                    frames.append(frame.assign(method=method))
                    break
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["method", "step", "total"])


def _tuning(tuning: Path) -> tuple[pd.DataFrame | None, dict[str, dict[str, Any]]]:
    """Every method's trials.csv (with a ``method`` column) and parsed best.yaml, for methods that were tuned."""
    frames, best = [], {}
    if tuning.is_dir():
        for folder in sorted(p for p in tuning.iterdir() if p.is_dir()):
            trials = folder / "trials.csv"
            if trials.is_file():
                frame = pd.read_csv(trials)
                if not frame.empty:
                    frames.append(frame.assign(method=folder.name))
            parsed = _load_yaml(folder / "best.yaml")
            if parsed is not None:
                best[folder.name] = parsed
    return (pd.concat(frames, ignore_index=True) if frames else None), best


def _schedule(method: str) -> Any:
    """The method's reference training schedule (trained methods), None for optimisation methods / unknown names."""
    try:
        return getattr(get_method(method), "reference_schedule", None)
    except NstError:
        return None


def _pretrained(method: str) -> str | None:
    """The citation of a method pretrained by its authors (its class's ``pretrained``), None for the benchmark's own."""
    try:
        return getattr(get_method(method), "pretrained", None)
    except NstError:
        return None


def _budgets(methods: list[str], models: Path | None) -> dict[str, rep.Budget]:
    """Each trained method's training budget against its reference schedule; a pretrained method says so."""
    out = {}
    for method in methods:
        citation = _pretrained(method)
        if citation is not None:
            out[method] = rep.Budget(method, f"{rep.PRETRAINED} ({citation}); not trained or tuned here", None)
            continue
        schedule = _schedule(method)
        if schedule is None:
            continue
        folder = models / method if models is not None else None
        record = None
        if folder is not None and (folder / "train_metrics.json").is_file():
            record = _load_json(folder / "train_metrics.json")
        effective = _load_yaml(folder / "effective_params.yaml") if folder is not None else None
        train = (((effective or {}).get("methods") or {}).get(method) or {}).get("train")
        out[method] = rep.training_budget(method, schedule, record, train)
    return out


def build(
    params: Params,
    metrics_dir: Path,
    outputs: Path,
    prepared: Path,
    tuning: Path,
    out: Path,
    models: Path | None = None,
) -> dict[str, Any]:
    """Write the report into ``out`` (replaced as a whole); returns a small description of what was written."""
    statistics = _load_json(metrics_dir / "statistics.json")
    summary = _load_json(metrics_dir / "summary.json")
    scoring = _load_json(metrics_dir / "scoring.json")
    per_pair_path = metrics_dir / "per_pair.csv"
    per_pair = _load_csv(per_pair_path)
    missing = [c for c in ("method", "content", "style", *METRICS) if c not in per_pair.columns]
    if missing:
        raise ReportError(f"{per_pair_path}: missing column(s) {', '.join(missing)}")
    paired = _load_csv(metrics_dir / "paired.csv")
    if "methods" not in statistics:
        raise ReportError(f"{metrics_dir / 'statistics.json'}: no 'methods' (rerun the evaluate stage)")
    headline = [m for m in scoring.get("headline") or DEFAULT_HEADLINE if m in METRICS]
    methods = rep.competitors(statistics)
    order = rep.row_order(statistics)
    columns = rep.table_columns(headline)

    effective = {m: _load_yaml(outputs / m / "effective_params.yaml") for m in methods}
    trials, best = _tuning(tuning)
    tuned_weights = {m: (best[m].get("weights") or {}) for m in methods if m in best}
    params_rows = rep.params_rows(effective, tuned_weights)
    budgets = _budgets(methods, models)
    badges = {m: [rep.UNDER_TRAINED] for m, b in budgets.items() if b.under_trained}
    badge_titles = {m: {rep.UNDER_TRAINED: f"trained {b.text}"} for m, b in budgets.items() if b.under_trained}
    pretrained = {m: c for m in methods if (c := _pretrained(m)) is not None}
    for m, citation in pretrained.items():
        badges.setdefault(m, []).append(rep.PRETRAINED)
        badge_titles.setdefault(m, {})[rep.PRETRAINED] = citation
    rows = rep.comparison_rows(statistics, summary, columns, badges)
    notes = rep.ranking_notes(statistics, columns)
    objectives = _objectives(best, params)
    references = {}
    if trials is not None:
        for m in methods:
            part = trials[trials["method"] == m]
            ref = rep.reference_trial(part, list(tuned_weights.get(m, {})), objectives) if not part.empty else None
            if ref is not None:
                references[m] = ref
    tuning_rows = rep.tuning_table(
        {m: best[m] for m in methods if m in best},
        references if trials is not None and "reference" in trials.columns else None,
    )
    for row in tuning_rows:
        applied = any(t for p in params_rows if p.method == row["method"] for _, _, t in p.items)
        row["applied"] = "yes" if applied else "no (stylize ran without these weights)"

    stats = _load_json(prepared / "stats.json") if (prepared / "stats.json").is_file() else {}
    contents = list_images(prepared / "test" / "content")
    styles = list_images(prepared / "test" / "style")
    figures: dict[str, plt.Figure] = {
        "metrics": rep.fig_metric_distributions(per_pair, order, headline),
        "tradeoff": rep.fig_tradeoff(per_pair, order),
        "style_layers": rep.fig_style_shares(statistics),
        "losses": rep.fig_loss_curves(_losses(outputs, models, methods)),
        "speed_memory": rep.fig_speed_memory(per_pair, order),
    }
    if trials is not None:
        figures["tuning"] = rep.fig_tuning(trials, objectives, methods)
    content_thumbs = {p.stem: _thumb(p) for p in contents}
    style_thumbs = {p.stem: _thumb(p) for p in styles}
    for method in methods:
        images = {
            (c.stem, s.stem): _thumb(outputs / method / f"{c.stem}__{s.stem}.png") for c in contents for s in styles
        }
        figures[f"grid_{method}"] = rep.fig_image_grid(
            images, [c.stem for c in contents], [s.stem for s in styles], content_thumbs, style_thumbs,
            title=f"{method}: content (rows) x style (columns)"
            + (f"\n{rep.PRETRAINED}: {pretrained[method]}" if method in pretrained else ""),
        )  # fmt: skip
    pairs = [(c.stem, s.stem) for c in contents for s in styles][:SIDE_BY_SIDE_PAIRS]
    side = {(f"{c} x {s}", "content"): content_thumbs[c] for c, s in pairs}
    side.update({(f"{c} x {s}", "style"): style_thumbs[s] for c, s in pairs})
    for method in methods:
        side.update({(f"{c} x {s}", method): _thumb(outputs / method / f"{c}__{s}.png") for c, s in pairs})
    figures["side_by_side"] = rep.fig_image_grid(
        side, [f"{c} x {s}" for c, s in pairs], ["content", "style", *methods],
        title="\n".join(["side by side", *(rep.pretrained_title(m, c) for m, c in pretrained.items())]),
    )  # fmt: skip
    for name in ("content", "style", *methods):
        label = f"{name}\n({rep.PRETRAINED})" if name in pretrained else name
        figures["side_by_side"].axes[list(["content", "style", *methods]).index(name)].set_title(label, fontsize=9)

    context = {
        "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "git_sha": tracking.git_sha(),
        "params": params,
        "stats": stats,
        "scoring": scoring,
        "statistics": statistics,
        "summary": summary,
        "methods": methods,
        "headline": headline,
        "columns": columns,
        "titles": rep.column_titles(columns, scoring),
        "rows": rows,
        "notes": notes,
        "badge_titles": badge_titles,
        "paired": rep.paired_rows(paired, headline, methods, scoring),
        "style_rows": {kind: rep.style_share_rows(statistics, kind) for kind in rep.STYLE_KINDS},
        "params_rows": params_rows,
        "effective": effective,
        "budgets": budgets,
        "pretrained": pretrained,
        "figures": list(figures),
        "tuning": tuning_rows,
    }
    with atomic_dir(out / "figures") as fig_dir:
        for name, fig in figures.items():
            fig.savefig(fig_dir / f"{name}.png", dpi=110)
            plt.close(fig)
    write_text_atomic(out / "report.md", render_markdown(context))
    write_text_atomic(out / "index.html", render_html(context))
    return {"methods": methods, "figures": list(figures), "pairs": statistics.get("pairs")}


def _objectives(best: Mapping[str, Mapping[str, Any]], params: Params) -> list[str]:
    """The tuning objectives as best.yaml records them (what the tuning ran with), else tune.objectives."""
    for b in best.values():
        keys = list((b.get("objectives") or {}).keys())
        if len(keys) == 2:
            return keys
    return list(params.tune.objectives)


# ------------------------------------------------------------------------------------------------ text


def _setup_lines(ctx: dict[str, Any]) -> list[tuple[str, str]]:
    p: Params = ctx["params"]
    stats = ctx["stats"]
    st = ctx["statistics"]
    data = []
    for role in ("content", "style"):
        s = stats.get(role, {})
        source = getattr(p.fetch, role).source
        counts = f"{s.get('train', '?')} train / {s.get('val', '?')} val / {s.get('test', '?')} test"
        data.append((f"{role} images", f"{s.get('usable', '?')} usable from `{source}` ({s.get('skipped', 0)} "
                                       f"skipped): {counts}"))  # fmt: skip
    encoder = next((e.get("encoder") for e in ctx["effective"].values() if e and e.get("encoder")), None)
    level = st.get("ci_level") or 0.95
    lines = [
        ("profile", p.profile),
        *data,
        ("image size", f"{p.prepare.resize.edge} side scaled to {p.prepare.resize.side_px} px"),
        ("test pairs", f"{st.get('pairs')} (every test content x every test style)"),
        (
            "statistics",
            f"mean and {level:.0%} CI, {st.get('bootstrap', 'bootstrap')}; a best method needs at least "
            f"{st.get('min_pairs')} pairs",
        ),
    ]
    if encoder:
        lines.append(("method encoder", f"`{encoder.get('weights')}` ({encoder.get('pool')} pooling)"))
    lines += [("git", f"`{ctx['git_sha']}`"), ("created", ctx["created"])]
    return lines


def _scorer_lines(ctx: dict[str, Any]) -> list[tuple[str, str]]:
    scoring = ctx["scoring"]
    scorer = scoring.get("scorer") or {}
    lines = [
        ("style / content encoder", f"`{scorer.get('style_encoder', '?')}`, "
                                    f"sha256 `{scorer.get('encoder_sha256', '?')}`"),
        ("CFSD encoder", f"`{scorer.get('cfsd_encoder', '?')}`, sha256 `{scorer.get('cfsd_encoder_sha256', '?')}`"),
        ("LPIPS", scoring.get("lpips", "?")),
        ("FID / ArtFID", scoring.get("fid", "?")),
    ]  # fmt: skip
    return lines


def _metric_rows(ctx: dict[str, Any]) -> list[dict[str, str]]:
    """Which network and normalisation each reported metric used (scoring.json)."""
    info = ctx["scoring"].get("metrics") or {}
    rows = []
    for metric in [*ctx["headline"], *rep.SUMMARY_COLUMNS]:
        m = info.get(metric) or {}
        rows.append({"metric": f"{metric} {rep.arrow(metric, ctx['scoring'])}",
                     "compares to": m.get("compares_to", "?"), "network": m.get("network", "?"),
                     "normalisation": m.get("normalisation", "?")})  # fmt: skip
    return rows


def _caveats(ctx: dict[str, Any]) -> list[str]:
    notes = []
    lpips = str(ctx["scoring"].get("lpips", ""))
    if not lpips.startswith("available"):
        notes.append(f"LPIPS is n/a: {lpips.removeprefix('n/a: ')}")
    fid = str(ctx["scoring"].get("fid", ""))
    if not fid.startswith("available"):
        notes.append(f"FID and ArtFID are n/a: {fid.removeprefix('n/a: ')}")
    under = [m for m, b in ctx["budgets"].items() if b.under_trained]
    if under:
        notes.append(f"{', '.join(under)} under-trained: less than {rep.UNDER_TRAINED_BELOW:.0%} of "
                     "the reference schedule's iterations (see What ran); their scores say little about the methods "
                     "as published.")  # fmt: skip
    pairs = ctx["statistics"].get("pairs") or 0
    if pairs < 30:
        notes.append(f"Only {pairs} test pairs: confidence intervals are wide and rankings can flip; use the full "
                     "profile (`profile: full`) for conclusions.")  # fmt: skip
    notes += [rep.pretrained_text(m, c) for m, c in ctx["pretrained"].items()]
    notes.append("Seconds and memory depend on the machine and device (see timing.csv per method); peak memory on the "
                 "CPU is the process's resident set size, on CUDA the allocator's peak.")  # fmt: skip
    notes.append("content_loss is on the scale of the scorer's per-filter-normalised caffe VGG-19 and the style "
                 "distances are relative (0 to 1) on it: compare them between rows of this report, not with numbers "
                 "from papers.")  # fmt: skip
    return notes


SUBTITLE = ("Every method's outputs on the test pairs (content photo x painting), scored by one fixed scorer and "
            "set against reference rows that bound each metric. What each number measures, and what it does not, "
            "is under \"How to read this\".")  # fmt: skip


def _md_table(rows: list[dict[str, str]]) -> list[str]:
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(str(r[c]).replace("|", "\\|") for c in cols) + " |" for r in rows]
    return out


def render_markdown(ctx: dict[str, Any]) -> str:
    level = ctx["statistics"].get("ci_level") or 0.95
    out = ["# nst-bench: method comparison", "", SUBTITLE, ""]
    out += [f"## Comparison (mean [{level:.0%} two-way bootstrap CI] over the test pairs)", ""]
    out += [rep.markdown_table(ctx["rows"], ctx["titles"], ctx["notes"].per_metric), ""]
    out += [ctx["notes"].caption, "Reference rows (identity, style_copy, grey, blur) bound each metric; they do not "
            "compete. FID/ArtFID: one value per method, no CI.", ""]  # fmt: skip
    out += ["## Paired differences between methods", ""]
    if ctx["paired"]:
        out += [f"Mean of A - B over the shared test pairs with its paired {level:.0%} CI; ≠ 0 marks a CI that "
                "excludes 0.", "", rep.markdown_paired(ctx["paired"], ctx["scoring"]), ""]  # fmt: skip
    else:
        out += ["Nothing to compare: fewer than two methods ran.", ""]
    out += ["## Style distance per layer", ""]
    for kind, rows in ctx["style_rows"].items():
        titles = {layer: layer for layer in rep.style_layers(kind)}
        out += [f"style_{kind}: each layer's share of the aggregate (mean distance in brackets)", ""]
        out += [rep.markdown_table(rows, titles), ""]
    out += ["## What ran", "", "### Effective parameters (outputs/<method>/effective_params.yaml)", ""]
    for row in ctx["params_rows"]:
        shown = ", ".join(f"`{k} = {v}`" + (" (tuned)" if t else "") for k, v, t in row.items)
        out.append(f"- **{row.method}**: {row.note or shown}")
    out.append("")
    if ctx["tuning"]:
        out += ["### Tuned weights (Optuna on the val split)", "", *_md_table(ctx["tuning"]), ""]
    if ctx["budgets"]:
        out += ["### Training budget against the reference schedule", ""]
        out += [f"- **{m}**: {b.text}" + (f" — **{rep.UNDER_TRAINED}**" if b.under_trained else "")
                for m, b in ctx["budgets"].items()] + [""]  # fmt: skip
    out += ["### Scorer", ""] + [f"- **{k}**: {v}" for k, v in _scorer_lines(ctx)] + [""]
    out += [*_md_table(_metric_rows(ctx)), ""]
    out += ["### Set-up", ""] + [f"- **{k}**: {v}" for k, v in _setup_lines(ctx)] + [""]
    out += ["## Figures", ""]
    out += [f"![{name}](figures/{name}.png)" for name in ctx["figures"]]
    out += ["", "## How to read this", ""]
    out += [f"- **{m}** ({'higher' if rep.higher_is_better(m, ctx['scoring']) else 'lower'} is better): "
            f"{rep.HOW_TO_READ[m]}" for m in _read_order(ctx)]  # fmt: skip
    out += ["", "## Caveats", ""] + [f"- {c}" for c in _caveats(ctx)] + [""]
    return "\n".join(out)


def _read_order(ctx: dict[str, Any]) -> list[str]:
    return [m for m in ctx["columns"] if m in rep.HOW_TO_READ]


CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1320px;
       padding: 0 1rem; color: #1d2330; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 1px solid #d8dde6; padding-bottom: 0.2rem; margin-top: 2rem; }
h3 { margin-bottom: 0.4rem; }
.sub { color: #5b6475; margin-top: 0; } nav a { margin-right: 0.8rem; }
dl.setup { display: grid; grid-template-columns: max-content 1fr; gap: 0.2rem 1rem; }
dl.setup dt { font-weight: 600; } dl.setup dd { margin: 0; overflow-wrap: anywhere; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; font-size: 14px; margin: 0.4rem 0; }
table.comparison { width: 100%; font-size: 13px; } table.comparison th, table.comparison td { padding: 0.3rem 0.4rem; }
table.comparison .ci { font-size: 11px; }
th, td { border: 1px solid #d8dde6; padding: 0.3rem 0.5rem; text-align: right; vertical-align: top; }
thead th { background: #f1f4f9; } thead th:first-child, tbody th { text-align: left; }
table.tuned-weights th, table.tuned-weights td, table.scoring th, table.scoring td { text-align: left; }
.side { display: flex; flex-wrap: wrap; gap: 0 2.5rem; }
table.layers { font-size: 12px; } table.layers th, table.layers td { padding: 0.15rem 0.4rem; }
td.best { background: #e3f6e8; font-weight: 600; } td.na { color: #98a1b3; }
.ci { color: #5b6475; font-size: 12px; font-weight: normal; white-space: nowrap; }
small.note { color: #8a5a00; font-weight: normal; }
tr.reference { color: #5b6475; font-style: italic; background: #f6f7f9; } tr.reference th { font-weight: normal; }
tr.first-reference > * { border-top: 3px double #98a1b3; }
.badge { display: inline-block; white-space: nowrap; font-size: 11px; font-style: normal; font-weight: 600;
  padding: 0 0.35rem; border-radius: 0.6rem; background: #fde8c8; color: #7a4100; border: 1px solid #e7b56f; }
.badge.pretrained { background: #e4ecfb; color: #1b3f7a; border-color: #9db4de; }
td.excludes-zero { font-weight: 600; background: #eef3fd; } .nz { color: #1b4fbf; }
small.verdict { color: #1b4fbf; font-weight: normal; }
p.caption { color: #3b4456; font-size: 14px; }
ul.params li { margin-bottom: 0.3rem; } ul.params code { font-size: 13px; }
span.tuned { color: #0a6b2d; font-weight: 600; font-size: 12px; }
figure { margin: 1rem 0; } figure img { max-width: 100%; border: 1px solid #e4e8ef; }
figcaption { color: #5b6475; font-size: 13px; }
ul.read li { margin-bottom: 0.3rem; }
"""

CAPTIONS = {
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


def _simple_table(rows: list[dict[str, str]], css_class: str) -> str:
    e = html.escape
    cols = list(rows[0])
    return (f'<table class="{css_class}"><thead><tr>' + "".join(f'<th scope="col">{e(c)}</th>' for c in cols)
            + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(f"<td>{e(str(r[c]))}</td>" for c in cols) + "</tr>" for r in rows)
            + "</tbody></table>")  # fmt: skip


def render_html(ctx: dict[str, Any]) -> str:
    e = html.escape

    def md_code(text: str) -> str:  # the setup lines use `code` spans
        parts = e(str(text)).split("`")
        return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))

    level = ctx["statistics"].get("ci_level") or 0.95
    comparison = rep.html_table(ctx["rows"], ctx["titles"], ctx["notes"].per_metric,
                                badge_titles=ctx["badge_titles"])  # fmt: skip
    if ctx["paired"]:
        paired = (f"<p>Mean of A - B over the test pairs both methods have, with its paired {level:.0%} two-way "
                  "bootstrap CI; <span class=\"nz\">≠ 0</span> marks a CI that excludes 0 (the verdict names the "
                  "better method by the metric's direction).</p>"
                  f'<div class="scroll">{rep.html_paired(ctx["paired"], ctx["scoring"])}</div>')  # fmt: skip
    else:
        paired = '<p class="caption">Nothing to compare: fewer than two methods ran.</p>'
    layers = "".join(
        '<div><h3>style_' + e(kind) + '</h3><p class="caption">Each layer\'s share of the aggregate (mean distance '
        "below).</p>" + rep.html_table(rows, {layer: layer for layer in rep.style_layers(kind)}, css_class="layers")
        + "</div>"
        for kind, rows in ctx["style_rows"].items()
    )  # fmt: skip
    layers = f'<div class="side">{layers}</div>'
    params = "".join(
        f"<li><b>{e(r.method)}</b>: "
        + (e(r.note) if r.note else ", ".join(
            f"<code>{e(k)} = {e(v)}</code>" + (' <span class="tuned">tuned</span>' if t else "")
            for k, v, t in r.items))
        + "</li>"
        for r in ctx["params_rows"]
    )  # fmt: skip
    tuning = ""
    if ctx["tuning"]:
        tuning = ("<h3>Tuned weights</h3><p>Optuna, two objectives on the val split; \"applied\" says whether the "
                  "stylize stage ran with them (its effective parameters above).</p>"
                  f'<div class="scroll">{_simple_table(ctx["tuning"], "tuned-weights")}</div>')  # fmt: skip
    budgets = ""
    if ctx["budgets"]:
        items = "".join(
            f"<li><b>{e(m)}</b>: {e(b.text)}"
            + (f' <span class="badge {rep.UNDER_TRAINED}">{rep.UNDER_TRAINED}</span>' if b.under_trained else "")
            + "</li>"
            for m, b in ctx["budgets"].items()
        )
        budgets = (f"<h3>Training budget against the reference schedule</h3><ul class=\"budget\">{items}</ul>"
                   f"<p class=\"caption\">Below {rep.UNDER_TRAINED_BELOW:.0%} of the reference iterations a method is "
                   "marked under-trained in the comparison.</p>")  # fmt: skip
    scorer = "".join(f"<dt>{e(k)}</dt><dd>{md_code(v)}</dd>" for k, v in _scorer_lines(ctx))
    setup = "".join(f"<dt>{e(k)}</dt><dd>{md_code(v)}</dd>" for k, v in _setup_lines(ctx))
    figures = "".join(
        f'<figure><img src="figures/{e(n)}.png" alt="{e(n)}"><figcaption>'
        f"{e(CAPTIONS.get(n, n.replace('grid_', '') + ': every test content (rows) x test style (columns)'))}"
        "</figcaption></figure>"
        for n in ctx["figures"]
    )
    read = "".join(
        f"<li><b>{e(m)}</b> ({'higher' if rep.higher_is_better(m, ctx['scoring']) else 'lower'} is better): "
        f"{e(rep.HOW_TO_READ[m])}</li>"
        for m in _read_order(ctx)
    )
    caveats = "".join(f"<li>{md_code(c)}</li>" for c in _caveats(ctx))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>nst-bench report</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>
<body>
<h1>nst-bench: method comparison</h1>
<p class="sub">{e(SUBTITLE)} Generated {e(ctx["created"])}.</p>
<nav><a href="#comparison">Comparison</a><a href="#paired">Paired differences</a><a href="#layers">Style per layer</a>
<a href="#what-ran">What ran</a><a href="#figures">Figures</a><a href="#read">How to read this</a>
<a href="#caveats">Caveats</a></nav>
<section id="comparison"><h2>Comparison</h2>
<p>Mean [{e(f"{level:.0%}")} two-way bootstrap CI] over the {e(str(ctx["statistics"].get("pairs")))} test pairs.
Reference rows (in grey, below the methods) bound each metric and never compete. FID/ArtFID: one value per method,
no CI.</p>
<div class="scroll">{comparison}</div>
<p class="caption" id="ranking-note">{e(ctx["notes"].caption)}</p></section>
<section id="paired"><h2>Paired differences</h2>{paired}</section>
<section id="layers"><h2>Style distance per layer</h2>{layers}</section>
<section id="what-ran"><h2>What ran</h2>
<h3>Effective parameters</h3>
<p>Each method's section as its stylize stage ran it (<code>outputs/&lt;method&gt;/effective_params.yaml</code>, tuned
weights applied).</p>
<ul class="params">{params}</ul>
{tuning}
{budgets}
<h3>Scorer</h3>
<dl class="setup">{scorer}</dl>
<div class="scroll">{_simple_table(_metric_rows(ctx), "scoring")}</div>
<h3>Set-up</h3>
<dl class="setup">{setup}</dl></section>
<section id="figures"><h2>Figures</h2>
{figures}</section>
<section id="read"><h2>How to read this</h2>
<ul class="read">{read}</ul></section>
<section id="caveats"><h2>Caveats</h2>
<ul>{caveats}</ul></section>
</body></html>
"""


# ------------------------------------------------------------------------------------------------ CLI


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="render the method comparison report (stage)", description=__doc__)
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--metrics", type=Path, default=Path("reports/metrics"))
    p.add_argument("--outputs", type=Path, default=Path("outputs"))
    p.add_argument("--models", type=Path, default=Path("models"))
    p.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    p.add_argument("--tuning", type=Path, default=Path("reports/tuning"))
    p.add_argument("--out", type=Path, default=Path("reports"))
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    with tracking.stage_run(
        "report", None, {"profile": params.profile}, uri=params.tracking.uri, experiment=params.tracking.experiment
    ) as logger:
        info = build(params, args.metrics, args.outputs, args.prepared, args.tuning, args.out, args.models)
        logger.log_artifact(args.out / "index.html", "report")
        logger.log_artifact(args.out / "report.md", "report")
        for fig in sorted((args.out / "figures").glob("*.png")):
            logger.log_artifact(fig, "report/figures")
    log.info("report: %s (%d figures)", args.out / "index.html", len(info["figures"]))
    return 0
