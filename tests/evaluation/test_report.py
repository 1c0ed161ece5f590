"""Report building from fixture data: figures are pure, the HTML/Markdown are complete and honest about n/a."""

from __future__ import annotations

import html.parser
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from matplotlib.figure import Figure
from PIL import Image

from evaluation import report as rep
from evaluation.metrics import METRICS
from evaluation.summary import summarize
from pipeline import report as stage
from pipeline.config import load_params

METHODS = ("gatys", "adain", "contrastive")
CONTENTS = ("c1", "c2")
STYLES = ("s1", "s2", "s3")


def per_pair_frame(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for method in (*METHODS, "identity", "style_copy"):
        for c in CONTENTS:
            for s in STYLES:
                row = {"method": method, "content": f"{c}.png", "style": f"{s}.png"}
                row.update({m: float(rng.uniform(0.1, 1.0)) for m in METRICS})
                row["lpips"] = math.nan  # offline: LPIPS unavailable
                row["seconds"] = 2.0 if method in METHODS else math.nan
                row["peak_mem_mb"] = 500.0 if method in METHODS else math.nan
                rows.append(row)
    return pd.DataFrame(rows)


def summary_of(per_pair: pd.DataFrame) -> dict:
    methods = summarize(per_pair, list(METRICS), n_boot=200)
    for m in methods:
        part = per_pair[per_pair["method"] == m]
        methods[m]["seconds"] = None if part["seconds"].isna().all() else float(part["seconds"].mean())
        methods[m]["peak_mem_mb"] = None if part["peak_mem_mb"].isna().all() else float(part["peak_mem_mb"].mean())
    ordered = {m: methods[m] for m in (*METHODS, "identity", "style_copy")}
    return {"pairs": len(CONTENTS) * len(STYLES), "methods": ordered}


def test_comparison_rows_mark_the_best_by_direction():
    per_pair = per_pair_frame()
    summary = summary_of(per_pair)
    rows = rep.comparison_rows(summary, METHODS)
    assert [r.method for r in rows] == [*METHODS, "identity", "style_copy"]
    means = {m: summary["methods"][m]["ssim"]["mean"] for m in METHODS}
    best_ssim = max(means, key=means.get)  # higher is better
    assert "ssim" in next(r for r in rows if r.method == best_ssim).best
    means = {m: summary["methods"][m]["style_loss"]["mean"] for m in METHODS}
    best_style = min(means, key=means.get)  # lower is better
    assert "style_loss" in next(r for r in rows if r.method == best_style).best
    assert all(not r.best for r in rows if r.reference)  # references never win
    assert all(r.cells["lpips"] == "n/a" for r in rows)
    assert not any("nan" in cell.lower() for r in rows for cell in r.cells.values() if cell != "n/a")


def test_markdown_table_has_one_row_per_method_and_no_nan():
    rows = rep.comparison_rows(summary_of(per_pair_frame()), METHODS)
    table = rep.markdown_table(rows)
    lines = table.splitlines()
    assert len(lines) == 2 + len(METHODS) + 2
    assert "ssim ↑" in lines[0]
    assert "style_loss ↓" in lines[0]
    assert "nan" not in table.lower().replace("n/a", "")


@pytest.mark.parametrize(
    "make",
    [
        lambda df: rep.fig_metric_distributions(df, [*METHODS, "identity", "style_copy"]),
        lambda df: rep.fig_tradeoff(df, list(METHODS)),
        lambda df: rep.fig_speed_memory(df, list(METHODS)),
        lambda df: rep.fig_loss_curves(
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
        lambda df: rep.fig_image_grid({("a", "b"): np.zeros((4, 4, 3))}, ["a"], ["b"]),
    ],
)
def test_figure_functions_return_figures_without_io(make, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fig = make(per_pair_frame())
    assert isinstance(fig, Figure)
    assert list(tmp_path.iterdir()) == []  # nothing written


class _Collector(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.rows = 0
        self.stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])
        if tag == "tr" and "tbody" in self.stack:
            self.rows += 1
        if tag not in ("img", "meta", "br"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in self.stack:
            while self.stack.pop() != tag:
                pass


def write_fixture(root: Path) -> dict[str, Path]:
    """What the upstream stages leave: metrics files, outputs per method, prepared test images."""
    per_pair = per_pair_frame()
    metrics = root / "reports" / "metrics"
    metrics.mkdir(parents=True)
    per_pair.to_csv(metrics / "per_pair.csv", index=False)
    (metrics / "summary.json").write_text(json.dumps(summary_of(per_pair)))
    (metrics / "scoring.json").write_text(json.dumps({"lpips": "n/a: no AlexNet weights", "scorer": {}}))
    prepared = root / "data" / "prepared"
    rng = np.random.default_rng(1)
    for role, names in (("content", CONTENTS), ("style", STYLES)):
        for name in names:
            path = prepared / "test" / role / f"{name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(path)
    (prepared / "stats.json").write_text(json.dumps({"content": {"usable": 2, "test": 2}, "style": {"usable": 3}}))
    outputs = root / "outputs"
    for method in METHODS:
        for c in CONTENTS:
            for s in STYLES:
                path = outputs / method / f"{c}__{s}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(path)
        losses = {"pair": "c1__s1", "step": range(5), "total": np.linspace(5, 1, 5), "content": 1.0,
                  "style": np.linspace(4, 0.5, 5), "tv": 0.0}  # fmt: skip
        pd.DataFrame(losses).to_csv(outputs / method / "losses.csv", index=False)
    return {"metrics": metrics, "outputs": outputs, "prepared": prepared, "tuning": root / "reports" / "tuning",
            "out": root / "reports"}  # fmt: skip


def test_build_writes_a_complete_report(tmp_path, repo_root):
    paths = write_fixture(tmp_path)
    params = load_params(repo_root / "params.yaml")
    info = stage.build(params, paths["metrics"], paths["outputs"], paths["prepared"], paths["tuning"], paths["out"])
    assert {f"grid_{m}" for m in METHODS} <= set(info["figures"])
    index = (paths["out"] / "index.html").read_text()
    parser = _Collector()
    parser.feed(index)
    assert parser.rows == len(METHODS) + 2
    assert parser.srcs
    for src in parser.srcs:
        assert (paths["out"] / src).is_file(), src
        assert not src.startswith("http")
    assert "n/a" in index
    assert not re.search(r"\bnan\b", index, flags=re.IGNORECASE)
    assert "no AlexNet weights" in index  # the LPIPS caveat
    md = (paths["out"] / "report.md").read_text()
    for link in re.findall(r"\]\((figures/[^)]+)\)", md):
        assert (paths["out"] / link).is_file()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(METHODS) + 2  # header + methods + references
    assert not re.search(r"\bnan\b", md, flags=re.IGNORECASE)


def test_missing_inputs_are_named(tmp_path, repo_root):
    params = load_params(repo_root / "params.yaml")
    with pytest.raises(stage.ReportError, match=r"summary\.json: not found"):
        stage.build(params, tmp_path, tmp_path, tmp_path, tmp_path, tmp_path / "out")


def test_report_shows_the_tuning_fronts_and_the_tuned_weights(tmp_path, repo_root):
    paths = write_fixture(tmp_path)
    for method, weight in (("adain", 12.5), ("contrastive", 0.75)):
        folder = paths["tuning"] / method
        folder.mkdir(parents=True)
        pd.DataFrame({"number": [0, 1, 2, 3], "state": ["COMPLETE", "COMPLETE", "PRUNED", "COMPLETE"],
                      "style_weight": [1.0, weight, 3.0, 50.0], "content_loss": [1.0, 2.0, None, 3.0],
                      "style_loss": [3.0, 2.0, None, 2.5], "pareto": [1, 1, 0, 0],
                      "chosen": [0, 1, 0, 0]}).to_csv(folder / "trials.csv", index=False)  # fmt: skip
        (folder / "best.yaml").write_text(yaml.safe_dump({
            "method": method, "weights": {"style_weight": weight}, "objectives": {"content_loss": 2.0,
            "style_loss": 2.0}, "trial": 1, "trials_finished": 4, "selection": "knee"}))  # fmt: skip
    params = load_params(repo_root / "params.yaml")
    info = stage.build(params, paths["metrics"], paths["outputs"], paths["prepared"], paths["tuning"], paths["out"])
    assert "tuning" in info["figures"]
    assert (paths["out"] / "figures" / "tuning.png").is_file()
    index = (paths["out"] / "index.html").read_text()
    parser = _Collector()
    parser.feed(index)
    assert parser.rows == len(METHODS) + 2 + 2  # comparison rows + one tuned-weights row per tuned method
    assert "style_weight = 12.5" in index
    assert "style_weight = 0.75" in index
    md = (paths["out"] / "report.md").read_text()
    assert "## Tuned weights" in md
    assert "| contrastive | style_weight = 0.75 |" in md
    fig = rep.fig_tuning(pd.read_csv(paths["tuning"] / "adain" / "trials.csv").assign(method="adain"),
                                       ["content_loss", "style_loss"], ["adain"])  # fmt: skip
    (ax,) = fig.axes
    assert ax.get_title() == "adain: 3 trials, 1 pruned"
    front = ax.lines[0]
    assert list(front.get_xdata()) == [1.0, 2.0]  # the front, sorted by the first objective
