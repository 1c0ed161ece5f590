"""What a small edit reruns, asked of DVC itself on a clone of the repository (issue 27's acceptance):

- an inference setting (``methods.adain.alpha``) reruns stylize@adain, evaluate and report; never tune@ or train@adain;
- a metric's description (evaluation/metric_info.py) reruns evaluate and report only;
- methods/contrastive.py reruns no fetch, prepare or adain stage.

``dvc status --json`` on a fresh clone lists every stage (no outputs there yet), so a stage counts as rerun by an edit
when the edit changes its list of "modified" code and params dependencies; absent data does not count.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests_support import copy_checkout

ROOT = Path(__file__).resolve().parents[1]
DVC = shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of this checkout as a fresh clone holds it (working-tree edits included)."""
    return copy_checkout(ROOT, tmp_path_factory.mktemp("reruns") / "repo")


def modified(repo: Path) -> dict[str, set[str]]:
    """Per stage, its code and params dependencies that differ from dvc.lock (``params.yaml:methods`` for a section)."""
    out = subprocess.run([DVC, "status", "--json"], cwd=repo, capture_output=True, text=True, timeout=300, check=True)
    found: dict[str, set[str]] = {}
    for stage, changes in json.loads(out.stdout or "{}").items():
        for change in changes:
            for dep, state in (change.get("changed deps", {}) if isinstance(change, dict) else {}).items():
                if isinstance(state, dict):
                    keys = {f"{dep}:{key}" for key, s in state.items() if s == "modified"}
                else:
                    keys = {dep} if state == "modified" else set()
                found.setdefault(stage.split(":")[-1], set()).update(keys)
    return found


def rerun_by(repo: Path, rel: str, old: str, new: str) -> set[str]:
    """The stages an edit of ``rel`` (``old`` -> ``new``, once) makes DVC rerun; the file is restored after."""
    path = repo / rel
    text = path.read_text(encoding="utf-8")
    assert text.count(old) >= 1, f"{rel}: {old!r} not found"
    before = modified(repo)
    try:
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
        after = modified(repo)
        return {stage for stage in set(before) | set(after) if before.get(stage, set()) != after.get(stage, set())}
    finally:
        path.write_text(text, encoding="utf-8")


def test_an_inference_setting_reruns_stylize_evaluate_and_report_only(repo):
    marker = "    alpha: 1.0                 # test.py --alpha 1.0 (paper eq. 14)"
    assert rerun_by(repo, "params.yaml", marker, marker.replace("1.0", "0.8", 1)) == {
        "stylize@adain",
        "evaluate",
        "report",
    }


def test_a_training_setting_reruns_tune_and_train(repo):
    """The check can fail: a train key reruns the method's whole chain."""
    marker = "      style_weight: 10.0       # train.py --style_weight 10.0"
    rerun = rerun_by(repo, "params.yaml", marker, marker.replace("10.0", "12.0", 1))
    assert rerun == {"tune@adain", "train@adain", "stylize@adain", "evaluate", "report"}


def test_a_metric_description_reruns_evaluate_and_report_only(repo):
    assert rerun_by(repo, "evaluation/metric_info.py", "MSE of relu4_2 features", "MSE of the relu4_2 features") == {
        "evaluate",
        "report",
    }


def test_the_contrastive_method_reruns_no_fetch_prepare_or_adain_stage(repo):
    rerun = rerun_by(repo, "methods/contrastive.py", '"""', '"""Edited. ')
    assert rerun
    assert not rerun & {"fetch", "prepare", "tune@adain", "train@adain", "stylize@adain"}
    assert {"train@contrastive", "stylize@contrastive"} <= rerun
