"""Real headless Chromium: the report renders with its tables, images and what ran; the MLflow UI and REST API list
the runs.

Uses Debian's Chromium (`.ci/run` installs it) driven by Playwright. Skipped, with the reason, only where Chromium
or Playwright cannot be found. Screenshots go to tests/.artifacts/ for people to look at.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import requests
import torch
import yaml
from tests_support import ARTIFACTS, NEEDS_CHROMIUM, running_mlflow_server

from pipeline import cli

pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])")
pytestmark = [
    pytest.mark.slow,
    NEEDS_CHROMIUM,
]


TUNED_GATYS_STYLE_WEIGHT = 1234.5  # params.yaml says 100: the report must show what stylize ran with


def _write_tuning(folder: Path) -> Path:
    """A tune@gatys result as pipeline/stages/tune.py writes it (best.yaml + trials.csv with the reference trial)."""
    folder.mkdir(parents=True)
    best = {
        "method": "gatys",
        "weights": {"style_weight": TUNED_GATYS_STYLE_WEIGHT},
        "objectives": {"content_loss": 2.0, "style_gram": 1.0},
        "selection": "knee",
        "trial": 1,
        "trials_finished": 2,
        "reference": {
            "weights": {"style_weight": 100.0},
            "trial": 0,
            "objectives": {"content_loss": 1.0, "style_gram": 3.0},
            "on_front": True,
        },
    }
    (folder / "best.yaml").write_text(yaml.safe_dump(best))
    (folder / "trials.csv").write_text(
        "number,state,worker,seconds,style_weight,content_loss,style_gram,pareto,chosen,reference\n"
        f"0,COMPLETE,0,1.0,100.0,1.0,3.0,1,0,1\n1,COMPLETE,0,1.0,{TUNED_GATYS_STYLE_WEIGHT},2.0,1.0,1,1,0\n"
    )
    return folder / "best.yaml"


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory, repo_root) -> dict[str, Path]:
    """fetch -> prepare -> train@adain -> stylize@gatys (tuned) + stylize@adain -> evaluate -> report on the embedded
    sample, tiny settings, own store."""
    root = tmp_path_factory.mktemp("run")
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["fetch"]["sample"]["dir"] = str(repo_root / "data" / "sample")
    params["methods"]["gatys"].update(iterations=2, image_size=64)
    params["methods"]["adain"]["train"].update(
        iterations=2,
        batch_size=1,
        resize_short=48,
        crop=32,
        checkpoint_every=2,
        log_every=1,
        sample_every=0,
        init_from=str(repo_root / "models/pretrained/adain.pt"),
    )
    params["evaluate"].update(bootstrap=200)
    params["tune"]["use_tuned"] = True
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    best = _write_tuning(root / "tuning" / "gatys")
    store = f"sqlite:///{root / 'mlflow.db'}"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = store
    p = str(root / "params.yaml")
    test_c, test_s = str(root / "prepared/test/content"), str(root / "prepared/test/style")
    try:
        steps = [
            ["fetch", "--params", p, "--out", str(root / "raw")],
            ["prepare", "--params", p, "--raw", str(root / "raw"), "--out", str(root / "prepared")],
            [
                "train",
                "--method",
                "adain",
                "--params",
                p,
                "--content",
                str(root / "prepared/train/content"),
                "--style",
                str(root / "prepared/train/style"),
                "--out",
                str(root / "models/adain"),
            ],
            [
                "stylize-stage",
                "--method",
                "gatys",
                "--params",
                p,
                "--tuned",
                str(best),
                "--content",
                test_c,
                "--style",
                test_s,
                "--out",
                str(root / "outputs/gatys"),
            ],
            [
                "stylize-stage",
                "--method",
                "adain",
                "--params",
                p,
                "--content",
                test_c,
                "--style",
                test_s,
                "--model",
                str(root / "models/adain"),
                "--out",
                str(root / "outputs/adain"),
            ],
            [
                "evaluate",
                "--params",
                p,
                "--outputs",
                str(root / "outputs"),
                "--content",
                test_c,
                "--style",
                test_s,
                "--out",
                str(root / "reports/metrics"),
            ],
            [
                "report",
                "--params",
                p,
                "--metrics",
                str(root / "reports/metrics"),
                "--outputs",
                str(root / "outputs"),
                "--models",
                str(root / "models"),
                "--prepared",
                str(root / "prepared"),
                "--tuning",
                str(root / "tuning"),
                "--out",
                str(root / "reports"),
            ],
        ]
        for argv in steps:
            assert cli.main(argv) == 0, argv
    finally:
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old
    return {
        "root": root,
        "store": Path(root / "mlflow.db"),
        "report": root / "reports" / "index.html",
        "pretrained": repo_root / "models/pretrained/adain.pt",
    }


def test_report_renders_with_table_and_images(pipeline_run, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(pipeline_run["report"].as_uri())
    page.wait_for_load_state("load")
    pairs = json.loads((pipeline_run["root"] / "reports/metrics/statistics.json").read_text())["pairs"]
    assert pairs < 8
    rows = page.locator("table.comparison tbody tr")
    assert rows.count() == 2 + 4  # adain, gatys + identity, style_copy, grey, blur
    assert [rows.nth(i).locator("th").inner_text().split()[0] for i in range(6)] == [
        "adain",
        "gatys",
        "identity",
        "style_copy",
        "grey",
        "blur",
    ]
    assert page.locator("table.comparison tbody tr.reference").count() == 4
    images = page.evaluate(
        "Array.from(document.images).map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0}))"
    )
    assert len(images) >= 8
    broken = [i["src"] for i in images if not i["ok"]]
    assert not broken, f"broken images: {broken}"
    assert "n/a" in page.locator("table.comparison").inner_text()  # LPIPS offline
    # fewer than 8 pairs: no star anywhere, and the table says why
    assert "★" not in page.locator("body").inner_text()
    assert page.locator("td.best").count() == 0
    note = page.locator("#ranking-note")
    assert note.is_visible()
    assert "too few pairs to rank" in note.inner_text()
    # the paired table: adain - gatys on every headline metric
    paired = page.locator("table.paired")
    assert paired.is_visible()
    assert paired.locator("tbody tr").count() == 1
    assert "adain - gatys" in paired.inner_text()
    assert "content_loss" in paired.locator("thead").inner_text()
    # Holm-corrected, and no "≠ 0" below the minimum grid (2 x 2 here)
    assert "Holm-corrected over the" in page.locator("#paired").inner_text()
    assert page.locator("td.excludes-zero").count() == 0
    assert "≠ 0" not in paired.inner_text()
    # what ran: gatys with the tuned weight, adain's budget against its reference schedule, the badge in the table
    gatys_params = page.locator("#what-ran ul.params li", has_text="gatys")
    assert gatys_params.is_visible()
    assert f"style_weight = {TUNED_GATYS_STYLE_WEIGHT}" in gatys_params.inner_text()
    assert "style_weight = 100" not in gatys_params.inner_text()
    assert gatys_params.locator("span.tuned").count() == 1
    tuned = page.locator("table.tuned-weights").inner_text()
    assert str(TUNED_GATYS_STYLE_WEIGHT) in tuned
    assert "trial 0: style_weight = 100 → content_loss = 1, style_gram = 3 (on the front)" in tuned
    budget = page.locator("#what-ran ul.budget li", has_text="adain").inner_text()
    pretrained = torch.load(pipeline_run["pretrained"], weights_only=True)["card"]["iterations"]
    total = f"{pretrained + 2:,}".replace(",", " ")
    assert budget.startswith(f"adain: {pretrained:,} pretrained (".replace(",", " "))
    assert f"+ 2 fine-tuned = {total} of 160 000 iterations (" in budget
    assert "batch 1 vs 8, crop 32 vs 256" in budget
    badge = rows.nth(0).locator("span.badge")
    assert badge.is_visible()
    assert badge.inner_text() == "under-trained"
    # Gatys's budget: its iterations against neural-style's 1,000 and its initialisation, a badge in the table
    gatys_budget = page.locator("#what-ran ul.budget li", has_text="gatys").inner_text()
    assert "of 1 000 iterations (" in gatys_budget
    assert "(reference: noise)" in gatys_budget
    assert rows.nth(1).locator("span.badge").inner_text() == "under-optimised"
    # own objectives: Gatys's content_loss and style_gram cells carry the mark, whose tooltip says why
    headers = [h.strip() for h in page.locator("table.comparison thead th").all_inner_texts()]
    col = {h.split()[0]: i for i, h in enumerate(headers)}
    for metric in ("content_loss", "style_gram"):
        mark = rows.nth(1).locator("td").nth(col[metric] - 1).locator("span.mark")
        assert mark.is_visible()
        assert "◆" in mark.inner_text()
        assert "optimised by this method: not evidence" in mark.get_attribute("title")
    assert rows.nth(0).locator("td").nth(col["style_meanstd"] - 1).locator("span.mark").count() == 1  # adain
    assert "◆ optimised by this method: not evidence" in page.locator("#comparison").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
    page.close()


@pytest.fixture(scope="module")
def mlflow_server(pipeline_run):
    with running_mlflow_server(f"sqlite:///{pipeline_run['store']}", pipeline_run["root"] / "artifacts") as base:
        yield base


def _experiment(base: str) -> dict:
    url = f"{base}/api/2.0/mlflow/experiments/get-by-name"
    return requests.get(url, params={"experiment_name": "nst-bench"}, timeout=30).json()["experiment"]


EXPECTED_RUNS = {
    "fetch",
    "prepare",
    "train@adain",
    "stylize@gatys",
    "stylize@adain",
    "evaluate@gatys",
    "evaluate@adain",
    "evaluate@identity",
    "evaluate@style_copy",
    "evaluate@grey",
    "evaluate@blur",
    "report",
}


def test_mlflow_rest_lists_the_pipeline_runs(mlflow_server):
    exp = _experiment(mlflow_server)
    search = {"experiment_ids": [exp["experiment_id"]], "max_results": 100}
    runs = requests.post(f"{mlflow_server}/api/2.0/mlflow/runs/search", json=search, timeout=30).json()["runs"]
    names = {r["info"]["run_name"] for r in runs}
    assert names == EXPECTED_RUNS
    stylize = next(r for r in runs if r["info"]["run_name"] == "stylize@gatys")
    tags = {t["key"]: t["value"] for t in stylize["data"]["tags"]}
    assert tags["stage"] == "stylize"
    assert len(tags["encoder_sha256"]) == 64
    assert all(r["info"]["status"] == "FINISHED" for r in runs)
    assert {t["key"]: t["value"] for t in exp["tags"]}["mlflow.experimentKind"] == "custom_model_development"


def test_mlflow_ui_renders_the_runs_page(mlflow_server, browser):
    exp = _experiment(mlflow_server)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{mlflow_server}/#/experiments/{exp['experiment_id']}/runs")
    page.get_by_text("stylize@gatys").first.wait_for(timeout=90_000)
    assert page.get_by_text("report", exact=True).count() >= 1
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "mlflow_runs.png"))
    page.close()
