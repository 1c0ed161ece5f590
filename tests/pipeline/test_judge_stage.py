"""The judge stage: a simulated study's export gives people.json with the known order, the report renders the people's
section from it; without votes both say how to collect them; a file that is no export is one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evaluation import rendering as rep
from evaluation.people import PAINTING
from methods.errors import NstError
from pipeline import cli
from pipeline.config import load_params
from pipeline.stages import judge

pytestmark = pytest.mark.timeout(120)

METHODS = ("gatys", "adain", "contrastive")
TRUE = {"gatys": 1.0, "adain": 0.0, "contrastive": -1.0}  # log-strengths the simulated voters follow
PAIRS = [(c, s) for c in ("street_a", "street_b") for s in ("paint_x", "paint_y")]


def per_pair() -> pd.DataFrame:
    """Two metrics: ``ssim`` (higher is better) ordered as people are, ``content_loss`` (lower is better) reversed."""
    rows = []
    for method in METHODS:
        for i, (c, s) in enumerate(PAIRS):
            ssim, loss = TRUE[method] + 0.01 * i, TRUE[method]
            rows.append({"method": method, "content": c, "style": s, "ssim": ssim, "content_loss": loss})
    return pd.DataFrame(rows)


def simulated_votes(voters: int = 30, per_voter: int = 12, seed: int = 0) -> pd.DataFrame:
    """Preference votes by Bradley-Terry with :data:`TRUE`, some "can't tell", and deception votes (adain passes for a
    painting 70 % of the time, the others 10 %, real paintings 90 %), in `nst judge export`'s columns."""
    rng = np.random.default_rng(seed)
    rows = []
    for v in range(voters):
        for _ in range(per_voter):
            a, b = rng.choice(METHODS, 2, replace=False)
            c, s = PAIRS[rng.integers(len(PAIRS))]
            p_left = 1 / (1 + np.exp(TRUE[b] - TRUE[a]))
            answer = "tie" if rng.random() < 0.1 else ("left" if rng.random() < p_left else "right")
            rows.append(("preference", f"v{v}", c, s, a, b, answer))
        for method, rate in (("adain", 0.7), ("gatys", 0.1), ("contrastive", 0.1), (PAINTING, 0.9)):
            c, s = PAIRS[rng.integers(len(PAIRS))]
            rows.append(("deception", f"v{v}", c, s, method, "", "painting" if rng.random() < rate else "photo"))
    columns = ["kind", "voter_id", "content", "style", "method_left", "method_right", "answer"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.assign(study="sim", vote_id=range(len(frame)))


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    metrics = tmp_path / "reports" / "metrics"
    metrics.mkdir(parents=True)
    per_pair().to_csv(metrics / "per_pair.csv", index=False)
    return {"votes": tmp_path / "data" / "judgements", "metrics": metrics, "out": tmp_path / "reports" / "judging"}


def test_a_simulated_study_gives_the_known_order_and_agreement(folders, repo_root):
    folders["votes"].mkdir(parents=True)
    simulated_votes().to_csv(folders["votes"] / "sim.csv", index=False)
    result = judge.run(load_params(repo_root / "params.yaml"), folders["votes"], folders["metrics"], folders["out"])
    assert json.loads((folders["out"] / "people.json").read_text()) == result
    assert [r["method"] for r in result["strengths"]] == list(METHODS)  # strongest first: the simulated order
    assert all(r["low"] <= r["strength"] <= r["high"] for r in result["strengths"])
    agreement = {r["metric"]: r for r in result["agreement"]}
    assert agreement["ssim"]["share"] > 0.6 > agreement["content_loss"]["share"]  # content_loss's order is reversed
    taus = {r["metric"]: r["tau"] for r in result["rank_agreement"]}
    assert taus["ssim"] == pytest.approx(1.0)
    assert taus["content_loss"] == pytest.approx(-1.0)
    deception = {r["method"]: r for r in result["deception"]}
    assert deception["adain"]["rate"] > deception["gatys"]["rate"]
    assert deception[PAINTING]["n"] == 30
    assert result["votes"] == 30 * 16
    assert result["voters"] == 30


def test_without_votes_it_says_how_to_collect_them(folders, repo_root):
    result = judge.run(load_params(repo_root / "params.yaml"), folders["votes"], folders["metrics"], folders["out"])
    assert result == {"votes": 0, "how_to_collect": judge.HOW_TO_COLLECT}
    view = rep.people_view(result)
    assert "nst judge serve" in view.how_to_collect
    assert rep.fig_people(result) is None


def test_the_report_section_shows_the_verdict(folders, repo_root):
    folders["votes"].mkdir(parents=True)
    simulated_votes().to_csv(folders["votes"] / "sim.csv", index=False)
    result = judge.run(load_params(repo_root / "params.yaml"), folders["votes"], folders["metrics"], folders["out"])
    view = rep.people_view(result)
    assert view.how_to_collect is None
    assert [row["method"] for row in view.strengths] == list(METHODS)
    assert view.agreement[0]["metric"] == "ssim"  # the metric that agrees most comes first
    assert any(row["shown"] == "real paintings (calibration)" for row in view.deception)
    assert "480 votes" in view.summary
    figure = rep.fig_people(result)
    assert figure is not None
    assert [ax.get_title() for ax in figure.axes] == ["people's preference", "metric agrees with people"]


def test_a_file_that_is_no_export_is_named(folders, repo_root):
    folders["votes"].mkdir(parents=True)
    (folders["votes"] / "notes.csv").write_text("a,b\n1,2\n")
    with pytest.raises(NstError, match=r"notes\.csv: not a votes export"):
        judge.run(load_params(repo_root / "params.yaml"), folders["votes"], folders["metrics"], folders["out"])
    assert not (folders["out"] / "people.json").exists()


def test_the_cli_runs_the_stage(folders, repo_root, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    folders["votes"].mkdir(parents=True)
    simulated_votes(voters=5).to_csv(folders["votes"] / "sim.csv", index=False)
    argv = ["judge-stage", "--params", str(repo_root / "params.yaml"), "--votes", str(folders["votes"])]
    argv += ["--metrics", str(folders["metrics"]), "--out", str(folders["out"])]
    assert cli.main(argv) == 0
    assert json.loads((folders["out"] / "people.json").read_text())["voters"] == 5
