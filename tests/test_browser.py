"""Real headless Chromium: the report renders with its table and images; the MLflow UI and REST API list the runs.

Uses Debian's Chromium (`.ci/run` installs it) driven by Playwright. Skipped, with the reason, only where Chromium
or Playwright cannot be found. Screenshots go to tests/.artifacts/ for people to look at.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import requests
import yaml
from tests_support import running_mlflow_server

from pipeline import cli

ARTIFACTS = Path(__file__).parent / ".artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])"
)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium not found (Debian: apt-get install chromium)"),
]
# Offline-safe flags: no background connections, no sandbox (CI runs as root).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory, repo_root) -> dict[str, Path]:
    """fetch -> prepare -> stylize@gatys -> evaluate -> report on the embedded sample, tiny settings, own store."""
    root = tmp_path_factory.mktemp("run")
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["fetch"]["sample"]["dir"] = str(repo_root / "data" / "sample")
    params["methods"]["gatys"].update(iterations=2, image_size=64)
    params["evaluate"].update(lpips_download=False, bootstrap=200)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    store = f"sqlite:///{root / 'mlflow.db'}"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = store
    p = str(root / "params.yaml")
    try:
        steps = [
            ["fetch", "--params", p, "--out", str(root / "raw")],
            ["prepare", "--params", p, "--raw", str(root / "raw"), "--out", str(root / "prepared")],
            ["stylize-stage", "--method", "gatys", "--params", p, "--content", str(root / "prepared/test/content"),
             "--style", str(root / "prepared/test/style"), "--out", str(root / "outputs/gatys")],
            ["evaluate", "--params", p, "--outputs", str(root / "outputs"), "--content",
             str(root / "prepared/test/content"), "--style", str(root / "prepared/test/style"),
             "--out", str(root / "reports/metrics")],
            ["report", "--params", p, "--metrics", str(root / "reports/metrics"), "--outputs", str(root / "outputs"),
             "--prepared", str(root / "prepared"), "--tuning", str(root / "tuning"), "--out", str(root / "reports")],
        ]  # fmt: skip
        for argv in steps:
            assert cli.main(argv) == 0, argv
    finally:
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old
    return {"root": root, "store": Path(root / "mlflow.db"), "report": root / "reports" / "index.html"}


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def test_report_renders_with_table_and_images(pipeline_run, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(pipeline_run["report"].as_uri())
    page.wait_for_load_state("load")
    rows = page.locator("table.comparison tbody tr")
    assert rows.count() == 3  # gatys + identity + style_copy
    assert "gatys" in rows.nth(0).inner_text()
    images = page.evaluate(
        "Array.from(document.images).map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0}))"
    )
    assert len(images) >= 6
    broken = [i["src"] for i in images if not i["ok"]]
    assert not broken, f"broken images: {broken}"
    assert "n/a" in page.locator("table.comparison").inner_text()  # LPIPS offline
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


EXPECTED_RUNS = {"fetch", "prepare", "stylize@gatys", "evaluate@gatys", "evaluate@identity", "evaluate@style_copy",
                 "report"}  # fmt: skip


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
