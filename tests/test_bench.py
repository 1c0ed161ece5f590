"""The benchmark scripts run end to end on a tiny size and write the JSON they promise (speed itself is not tested)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("method", ["adain", "contrastive"])
def test_feedforward_bench_writes_json(method, tmp_path):
    out = tmp_path / f"{method}.json"
    subprocess.run([sys.executable, str(ROOT / "bench/feedforward.py"), "--method", method, "--sizes", "64",
                    "--train-iterations", "1", "--devices", "cpu", "--out", str(out)], check=True, cwd=ROOT,
                   capture_output=True, timeout=300)  # fmt: skip
    report = json.loads(out.read_text())
    assert report["benchmark"] == method
    (row,) = report["results"]
    assert row["size_px"] == 64
    assert row["batch"] == {"adain": 2, "contrastive": 4}[method]
    assert row["train_iterations_per_second"] > 0
    assert row["inference_images_per_second"] > 0
