"""The benchmark scripts run end to end on a tiny size and write the JSON they promise (speed itself is not tested);
bench/gpu_check.py writes its JSON step by step."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from methods.precision import cpu_bf16_supported
from pipeline import fetch, prepare
from pipeline.config import load_params

ROOT = Path(__file__).resolve().parents[1]


# What an AVX2-only CPU runs (issue 24), on any x86 CPU: ATen's AVX2 kernels and oneDNN capped at AVX2 (no bf16 there).
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
BF16_NOTE = "skipped: this CPU has no native bf16 (AVX512-BF16/AMX); emulated bf16 timings mislead"


def _cpu_env(cpu: str) -> dict[str, str]:
    """The subprocess environment: this machine's default CPU capabilities, or AVX2 forced."""
    return {**os.environ, **(AVX2 if cpu == "avx2" else {})}


def _bf16_expected(cpu: str) -> bool:
    """Whether the benchmark in that environment times bf16: natively supported here, and AVX2 not forced."""
    return cpu == "default" and cpu_bf16_supported()


@pytest.mark.parametrize("cpu", ["default", "avx2"])
@pytest.mark.parametrize("method", ["adain", "contrastive"])
def test_feedforward_bench_times_bf16_only_where_native_and_says_why_not(method, cpu, tmp_path):
    """fp32 and bf16 side by side where the CPU runs bf16 natively; with AVX2 forced (no native bf16) the fp32 row only
    and a note naming the skipped bf16 variant and why. Smallest size, one step and no warm-up: a smoke run."""
    out = tmp_path / f"{method}.json"
    args = ["--method", method, "--sizes", "32", "--train-iterations", "1", "--warmup", "0", "--devices", "cpu"]
    args += ["--amp", "false", "true", "--channels-last", "false", "--out", str(out)]
    subprocess.run(
        [sys.executable, str(ROOT / "bench/feedforward.py"), *args],
        check=True,
        cwd=ROOT,
        capture_output=True,
        env=_cpu_env(cpu),
        timeout=300,
    )
    report = json.loads(out.read_text())
    assert report["benchmark"] == method
    bf16 = _bf16_expected(cpu)
    assert report["bf16_native"] == {"cpu": bf16}
    rows = report["results"]
    assert [r["amp"] for r in rows] == ([False, True] if bf16 else [False])
    assert report["skipped"] == ([] if bf16 else [{"device": "cpu", "precision": "bf16", "skipped": BF16_NOTE}])
    for row in rows:
        assert row["size_px"] == 32
        assert row["batch"] == {"adain": 2, "contrastive": 4}[method]
        assert row["train_iterations_per_second"] > 0
        assert row["inference_images_per_second"] > 0
        assert row["train_iterations_per_second_vs_fp32"] > 0
    assert rows[0]["train_iterations_per_second_vs_fp32"] == 1.0


@pytest.mark.parametrize("cpu", ["default", "avx2"])
def test_gatys_bench_times_bf16_only_where_native_and_says_why_not(cpu, tmp_path):
    out = tmp_path / "gatys.json"
    args = ["--sizes", "64", "--optimizers", "lbfgs", "--iterations", "1", "--devices", "cpu"]
    args += ["--amp", "false", "true", "--channels-last", "true", "--out", str(out)]
    subprocess.run(
        [sys.executable, str(ROOT / "bench/gatys.py"), *args],
        check=True,
        cwd=ROOT,
        capture_output=True,
        env=_cpu_env(cpu),
        timeout=300,
    )
    report = json.loads(out.read_text())
    bf16 = _bf16_expected(cpu)
    rows = report["results"]
    assert [(r["amp"], r["channels_last"]) for r in rows] == [(False, True), *([(True, True)] if bf16 else [])]
    assert all(r["seconds_per_iteration"] > 0 and r["final_loss"] > 0 for r in rows)
    note = [{"device": "cpu", "precision": "bf16+channels_last", "skipped": BF16_NOTE}]
    assert report["skipped"] == ([] if bf16 else note)


def test_fetch_memory_bench_writes_the_fetch_memory(tmp_path):
    """A shard of 1,100 rows in the real layout (dictionary page, then plain pages) fetched by the code as it runs."""
    out = tmp_path / "fetch_memory.json"
    args = ["--rows", "1100", "--image-kb", "1", "--per-class", "2", "--readers", "batches", "--out", str(out)]
    subprocess.run([sys.executable, str(ROOT / "bench/fetch_memory.py"), *args], check=True, cwd=ROOT, timeout=300)
    [row] = json.loads(out.read_text())["results"]
    assert row["reader"] == "batches"
    assert row["shard_rows"] == 1100
    assert row["shard_row_groups"] == 1
    # the writer fell back from dictionary to plain pages after 1024 rows: 76 images of >= 1 kB after the dictionary
    assert row["shard_image_data_pages_mb"] * 1e6 >= 76 * 1000 - 0.05e6
    assert row["shard_image_dictionary_mb"] > row["shard_image_data_pages_mb"]
    assert row["paintings"] == 12  # 2 of each of the 6 styles asked for
    assert row["peak_rss_mb"] >= row["rss_before_fetch_mb"] > 0
    assert row["fetch_rss_increase_mb"] >= 0
    # pyarrow holds the dictionary page twice at most (as read, as decoded) plus its fixed buffers
    assert 0 < row["arrow_peak_mb"] < 2 * row["shard_bytes"] / 1e6 + 16


def _gpu_check(tmp_path: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "bench/gpu_check.py"),
        "--device",
        "cpu",
        "--tiny",
        "--out",
        str(tmp_path),
        *args,
    ]


def _still_running(marker: str) -> list[int]:
    """Processes whose command line holds ``marker`` (a test's own tmp path)."""
    found = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if proc.name.isdigit() and marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(proc.name))
    return found


@pytest.mark.skipif(sys.platform != "linux", reason="the check's children die with it through a Linux prctl")
def test_gpu_check_writes_its_json_after_every_step_and_a_kill_keeps_the_steps_done(tmp_path):
    """Issue 17: preflight and each step land in gpu_check.json as they finish; killing the check midway leaves the
    steps done so far (the one in progress reads "running") and no step process behind."""
    report = tmp_path / "gpu_check.json"
    proc = subprocess.Popen(
        _gpu_check(tmp_path, "--steps", "gatys", "train_contrastive"),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    steps: list[dict] = []
    while not (len(steps) == 3 and steps[2]["status"] == "running"):
        assert proc.poll() is None, "gpu_check ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.2)
        with contextlib.suppress(OSError, ValueError):
            steps = json.loads(report.read_text())["steps"]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = json.loads(report.read_text())
    assert not kept["finished"]
    assert kept["preflight"]["torch"]
    assert "missing" in kept["preflight"]
    assert [(s["name"], s["status"]) for s in kept["steps"]] == [
        ("preflight", "ok"),
        ("gatys", "ok"),
        ("train_contrastive", "running"),
    ]
    rows = kept["steps"][1]["result"]["rows"]
    assert [r["precision"] for r in rows] == ["fp32", "bf16", "bf16+channels_last"]
    assert all(r["final_loss_fp32"] > 0 for r in rows)
    time.sleep(0.5)
    assert not _still_running(str(tmp_path)), "a step process outlived the killed check"


def test_gpu_check_without_cuda_fails_its_preflight_and_says_so(tmp_path):
    proc = subprocess.run(
        [*_gpu_check(tmp_path), "--device", "cuda"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    if report["preflight"]["cuda_available"] if "preflight" in report else False:
        pytest.skip("this machine has CUDA")
    assert proc.returncode == 1
    assert report["finished"]
    assert report["steps"] == [{**report["steps"][0], "name": "preflight", "status": "failed"}]
    assert "no CUDA device" in report["steps"][0]["error"]


def test_startup_bench_times_help_import_and_a_one_off_stylize(tmp_path, make_image):
    out = tmp_path / "startup.json"
    content, style = make_image("content.png", (48, 32), seed=1), make_image("style.png", (40, 40), seed=2)
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench/startup.py"),
            "--runs",
            "1",
            "--warmup",
            "0",
            "--top",
            "3",
            "--content",
            str(content),
            "--style",
            str(style),
            "--out",
            str(out),
        ],
        check=True,
        cwd=ROOT,
        capture_output=True,
        timeout=300,
    )
    report = json.loads(out.read_text())
    assert report["benchmark"] == "startup"
    assert report["git_sha"]
    assert report["python"] == f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    rows = {r["name"]: r for r in report["results"]}
    assert list(rows) == ["help", "import", "stylize"]
    for row in rows.values():
        assert row["runs"] == 1
        assert 0 < row["min_s"] <= row["median_s"] <= row["max_s"]
    assert rows["help"]["command"] == "nst --help"
    [run] = rows["stylize"]["per_run"]
    assert 0 <= run["stylize_reported_s"] < rows["stylize"]["median_s"]
    assert run["startup_s"] == pytest.approx(rows["stylize"]["median_s"] - run["stylize_reported_s"], abs=1e-3)
    imports = report["importtime"]["import pipeline.stylize"]
    assert imports["top_cumulative"][0]["module"] == "pipeline.stylize"
    assert len(imports["top_cumulative"]) == len(imports["top_packages_self"]) == 3
    assert isinstance(imports["heavy_imported"], list)
    assert isinstance(report["importtime"]["nst --help"]["heavy_imported"], list)


def test_style_generalisation_scores_seen_and_unseen_styles_against_the_bounds(tmp_path):
    """The sample prepared as `dvc repro` prepares it, then ghiasi (inference only: no model to train) on the test
    contents with the train split's paintings and with the test split's."""
    params = load_params(ROOT / "params.yaml")
    fetch.run(params, tmp_path / "raw")
    prepare.run(params, tmp_path / "raw", tmp_path / "prepared")
    out = tmp_path / "gen.json"
    args = ["--prepared", str(tmp_path / "prepared"), "--tuning", str(tmp_path / "none"), "--out", str(out)]
    subprocess.run(
        [sys.executable, str(ROOT / "bench/style_generalisation.py"), *args, "--methods", "ghiasi"],
        check=True,
        cwd=ROOT,
        timeout=600,
    )
    rows = json.loads(out.read_text())["results"]
    assert [(r["styles"].split()[0], r["metric"], r["method"]) for r in rows] == [
        (split, metric, "ghiasi") for split in ("train", "test") for metric in ("style_gram", "style_meanstd")
    ]
    n_test = len(list((tmp_path / "prepared/test/content").iterdir()))
    for r in rows:
        split = r["styles"].split()[0]
        assert r["pairs"] == n_test * len(list((tmp_path / "prepared" / split / "style").iterdir()))
        assert r["style_copy"] < r["half_gap_bound"] < r["identity"]
        assert r["half_gap_bound"] == pytest.approx((r["identity"] + r["style_copy"]) / 2, abs=1e-4)
        assert r["below_bound"] == (r["mean"] <= r["half_gap_bound"])
