"""The benchmark scripts run end to end on a tiny size and write the JSON they promise (speed itself is not tested)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("method", ["adain", "contrastive"])
def test_feedforward_bench_writes_fp32_and_bf16_side_by_side(method, tmp_path):
    out = tmp_path / f"{method}.json"
    subprocess.run([sys.executable, str(ROOT / "bench/feedforward.py"), "--method", method, "--sizes", "64",
                    "--train-iterations", "1", "--devices", "cpu", "--amp", "false", "true", "--channels-last",
                    "false", "--out", str(out)], check=True, cwd=ROOT, capture_output=True, timeout=300)  # fmt: skip
    report = json.loads(out.read_text())
    assert report["benchmark"] == method
    fp32, bf16 = report["results"]
    assert (fp32["amp"], bf16["amp"]) == (False, True)
    for row in (fp32, bf16):
        assert row["size_px"] == 64
        assert row["batch"] == {"adain": 2, "contrastive": 4}[method]
        assert row["train_iterations_per_second"] > 0
        assert row["inference_images_per_second"] > 0
    assert fp32["train_iterations_per_second_vs_fp32"] == 1.0
    assert bf16["train_iterations_per_second_vs_fp32"] > 0


def test_gatys_bench_writes_fp32_and_bf16_side_by_side(tmp_path):
    out = tmp_path / "gatys.json"
    subprocess.run([sys.executable, str(ROOT / "bench/gatys.py"), "--sizes", "64", "--optimizers", "lbfgs",
                    "--iterations", "2", "--devices", "cpu", "--amp", "false", "true", "--channels-last", "true",
                    "--out", str(out)], check=True, cwd=ROOT, capture_output=True, timeout=300)  # fmt: skip
    rows = json.loads(out.read_text())["results"]
    assert [(r["amp"], r["channels_last"]) for r in rows] == [(False, True), (True, True)]
    assert all(r["seconds_per_iteration"] > 0 and r["final_loss"] > 0 for r in rows)


def test_fetch_memory_bench_writes_the_fetch_memory(tmp_path):
    out = tmp_path / "fetch_memory.json"
    args = ["--size-mb", "3", "--image-kb", "200", "--per-class", "2", "--readers", "streaming", "--out", str(out)]
    subprocess.run([sys.executable, str(ROOT / "bench/fetch_memory.py"), *args], check=True, cwd=ROOT, timeout=300)
    [row] = json.loads(out.read_text())["results"]
    assert row["reader"] == "streaming"
    assert row["shard_row_groups"] == 1
    assert row["shard_bytes"] > 2_000_000
    assert row["paintings"] == 12  # 2 of each of the 6 styles asked for
    assert row["peak_rss_mb"] >= row["rss_before_fetch_mb"] > 0
    assert row["fetch_rss_increase_mb"] >= 0
    assert row["arrow_peak_mb"] < 1  # the streaming reader never has pyarrow decode a page
