"""The stages work unchanged against a remote MLflow tracking server (started here on 127.0.0.1, artifacts proxied
over HTTP) and with an explicit Optuna RDB URL that two tuning workers share."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import requests
import yaml
from tests_support import running_mlflow_server

ROOT = Path(__file__).resolve().parents[1]
NST = Path(sys.executable).parent / "nst"

pytestmark = pytest.mark.slow


def test_stages_log_to_a_tracking_server_and_share_a_tuning_storage(tmp_path, sample_copy):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["base"]["device"] = "cpu"
    raw["fetch"]["sample"]["dir"] = str(sample_copy)
    raw["fetch"]["download"]["cache_dir"] = str(tmp_path / "cache")
    raw["prepare"]["resize"]["side_px"] = 64
    raw["prepare"]["min_side"] = 16
    shared = f"sqlite:///{tmp_path / 'shared-optuna.db'}"  # any SQLAlchemy URL; postgresql://... works the same
    raw["tune"]["storage"] = shared
    raw["tune"]["gatys"].update(trials=4, budget={"iterations": 1, "image_size": 32})
    raw["methods"]["adain"]["train"].update(iterations=2, batch_size=2, resize_short=40, crop=32, sample_every=1)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    p, d = str(params), tmp_path

    with running_mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "server-artifacts") as base:
        env = {**os.environ, "MLFLOW_TRACKING_URI": base, "OMP_NUM_THREADS": "1"}
        commands = [
            ["fetch", "--params", p, "--out", f"{d}/raw"],
            ["prepare", "--params", p, "--raw", f"{d}/raw", "--out", f"{d}/prepared"],
            [
                "tune",
                "--method",
                "gatys",
                "--params",
                p,
                "--val-content",
                f"{d}/prepared/val/content",
                "--val-style",
                f"{d}/prepared/val/style",
                "--train-content",
                f"{d}/prepared/train/content",
                "--train-style",
                f"{d}/prepared/train/style",
                "--out",
                f"{d}/tuning/gatys",
                "--workers",
                "2",
            ],
            [
                "train",
                "--method",
                "adain",
                "--params",
                p,
                "--content",
                f"{d}/prepared/train/content",
                "--style",
                f"{d}/prepared/train/style",
                "--out",
                f"{d}/models/adain",
            ],
        ]
        for argv in commands:
            proc = subprocess.run([str(NST), *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, f"{argv[0]}: {proc.stderr[-3000:]}"

        api = f"{base}/api/2.0/mlflow"
        exp = requests.get(f"{api}/experiments/get-by-name", params={"experiment_name": "nst-bench"}, timeout=30)
        exp_id = exp.json()["experiment"]["experiment_id"]
        runs = requests.post(
            f"{api}/runs/search", json={"experiment_ids": [exp_id], "max_results": 100}, timeout=30
        ).json()["runs"]
        tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
        names = sorted(t["mlflow.runName"] for t in tags if "mlflow.parentRunId" not in t)
        assert names == ["fetch", "prepare", "train@adain", "tune@gatys"]
        tune_id = next(
            r["info"]["run_id"] for r, t in zip(runs, tags, strict=True) if t["mlflow.runName"] == "tune@gatys"
        )
        children = [t for t in tags if t.get("mlflow.parentRunId") == tune_id]
        assert len(children) == 4
        assert {t["worker"] for t in children} <= {"0", "1"}  # trials of both worker processes, one parent
        train_id = next(
            r["info"]["run_id"] for r, t in zip(runs, tags, strict=True) if t["mlflow.runName"] == "train@adain"
        )
        listed = requests.get(f"{api}/artifacts/list", params={"run_id": train_id, "path": "model"}, timeout=30).json()
        assert [f["path"] for f in listed["files"]] == ["model/decoder.pt"]  # uploaded through the server
        assert any((tmp_path / "server-artifacts").rglob("decoder.pt"))

    study = optuna.load_study(
        study_name=yaml.safe_load((tmp_path / "tuning/gatys/best.yaml").read_text())["study"], storage=shared
    )
    assert len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]) == 4
    assert not (tmp_path / "tuning/gatys/study.db").exists()  # the configured URL was used, not the default file
