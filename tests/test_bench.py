"""The benchmark scripts run end to end on a tiny size and write the JSON they promise (speed itself is not tested);
bench/gpu_check.py writes its JSON step by step."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench import gpu_check
from methods.precision import cpu_bf16_supported
from pipeline.config import load_params
from pipeline.stages import fetch, prepare

ROOT = Path(__file__).resolve().parents[1]


# What an AVX2-only CPU runs (issue 24), on any x86 CPU: ATen's AVX2 kernels and oneDNN capped at AVX2 (no bf16 there).
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
BF16_NOTE = "skipped: this CPU has no native bf16 (AVX512-BF16/AMX); emulated bf16 timings mislead"


def _cpu_env(cpu: str) -> dict[str, str]:
    """The subprocess environment: this machine's default CPU capabilities, or AVX2 forced."""
    return {**os.environ, **(AVX2 if cpu == "avx2" else {})}


def _skip_if_already_avx2(cpu: str) -> None:
    """The forced-AVX2 variant repeats the default one where this process already runs AVX2 kernels or lower (an
    AVX2-only CPU, or the suite run with AVX2 forced): skip it there."""
    if cpu == "avx2" and "AVX512" not in torch.backends.cpu.get_cpu_capability():
        pytest.skip("this process already runs AVX2 kernels: the default variant is the AVX2 run")


def _bf16_expected(cpu: str) -> bool:
    """Whether the benchmark in that environment times bf16: natively supported here, and AVX2 not forced."""
    return cpu == "default" and cpu_bf16_supported()


@pytest.mark.parametrize("cpu", ["default", "avx2"])
@pytest.mark.parametrize("method", ["adain", "contrastive"])
def test_feedforward_bench_times_bf16_only_where_native_and_says_why_not(method, cpu, tmp_path):
    """fp32 and bf16 side by side where the CPU runs bf16 natively; with AVX2 forced (no native bf16) the fp32 row only
    and a note naming the skipped bf16 variant and why. Smallest size, one step and no warm-up: a smoke run."""
    _skip_if_already_avx2(cpu)
    out = tmp_path / f"{method}.json"
    args = ["--method", method, "--sizes", "32", "--train-iterations", "1", "--warmup", "0", "--devices", "cpu"]
    args += ["--amp", "false", "true", "--channels-last", "false", "--out", str(out)]
    subprocess.run(
        [sys.executable, str(ROOT / "bench/feedforward_speed.py"), *args],
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


@pytest.mark.parametrize(("cpu", "force"), [("default", False), ("avx2", False), ("avx2", True)])
def test_gatys_bench_times_bf16_only_where_native_and_says_why_not(cpu, force, tmp_path):
    """As the feed-forward bench; --force-bf16 times the emulated bf16 all the same."""
    if not force:
        _skip_if_already_avx2(cpu)
    out = tmp_path / "gatys.json"
    args = ["--sizes", "64", "--optimizers", "lbfgs", "--iterations", "1", "--devices", "cpu"]
    args += ["--amp", "false", "true", "--channels-last", "true", "--out", str(out)]
    args += ["--force-bf16"] if force else []
    subprocess.run(
        [sys.executable, str(ROOT / "bench/gatys_speed.py"), *args],
        check=True,
        cwd=ROOT,
        capture_output=True,
        env=_cpu_env(cpu),
        timeout=300,
    )
    report = json.loads(out.read_text())
    bf16 = force or _bf16_expected(cpu)
    assert report["bf16_native"] == {"cpu": _bf16_expected(cpu)}
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


# A --tiny check's deadline in these tests: generous, so that only behaviour is asserted (each step's limit is its share
# of it; the whole run takes about 3 minutes on a 2-core CPU, every step well inside its share); the check itself stops
# by then, so every wait below is bounded by it.
TINY_DEADLINE_S = 900
GPU_CHECK_STEPS = ["train_adain", "train_contrastive", "resume", "gatys", "data_vs_compute"]
PIPELINE_STAGES = list(gpu_check.SAMPLE_STAGES)  # the slice's stages, as the check names them


def _gpu_check(tmp_path: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "bench/gpu_check.py"),
        "--device",
        "cpu",
        "--tiny",
        "--deadline-s",
        str(TINY_DEADLINE_S),
        "--out",
        str(tmp_path),
        *args,
    ]


def _still_running(*markers: str) -> list[int]:
    """Processes whose command line holds any of ``markers`` (a test's own tmp path, a check's scratch folder)."""
    found = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if proc.name.isdigit():
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
                if any(m in cmdline for m in markers):
                    found.append(int(proc.name))
    return found


def _start_and_wait_for(tmp_path: Path, cpu: str, steps: list[str], running: str) -> tuple[subprocess.Popen, dict]:
    """Start a --tiny check of ``steps`` and wait until gpu_check.json says ``running`` is in progress (bounded by the
    check's own deadline: it ends by then)."""
    report = tmp_path / "gpu_check.json"
    proc = subprocess.Popen(
        _gpu_check(tmp_path, "--steps", *steps),
        cwd=ROOT,
        env=_cpu_env(cpu),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seen: dict = {}
    try:
        while [(s["name"], s["status"]) for s in seen.get("steps", [])][-1:] != [(running, "running")]:
            assert proc.poll() is None, f"gpu_check ended before {running} started: {seen}"
            time.sleep(0.2)
            with contextlib.suppress(OSError, ValueError):
                seen = json.loads(report.read_text())
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, seen


@pytest.mark.timeout(TINY_DEADLINE_S + 120)
@pytest.mark.skipif(sys.platform != "linux", reason="the check's children die with it through a Linux prctl")
def test_gpu_check_writes_its_json_after_every_step_and_a_kill_keeps_the_steps_done(tmp_path):
    """Issue 17: preflight and each step land in gpu_check.json as they finish; SIGKILLing the check midway leaves the
    steps done so far (the one in progress reads "running"), no step process behind and nothing but gpu_check.json in
    --out (issue 25: scratch lives outside it). Run as an AVX2-only CPU runs (issue 24): the bf16 variants are skipped,
    and the JSON says why."""
    proc, _ = _start_and_wait_for(tmp_path, "avx2", ["gatys", "train_contrastive"], "train_contrastive")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = json.loads((tmp_path / "gpu_check.json").read_text())
    scratch = Path(kept["scratch"])
    try:
        assert not kept["finished"]
        assert kept["preflight"]["torch"]
        assert "missing" in kept["preflight"]
        assert [(s["name"], s["status"]) for s in kept["steps"]] == [
            ("preflight", "ok"),
            ("gatys", "ok"),
            ("train_contrastive", "running"),
        ]
        gatys = kept["steps"][1]
        assert 0 < gatys["seconds"] <= gatys["limit_s"] < TINY_DEADLINE_S
        rows = gatys["result"]["rows"]
        # fp32 NCHW, then profiles/full.yaml's own Gatys setting (fp32 + channels_last); no emulated bf16
        assert [(r["precision"], r["setting"]) for r in rows] == [
            ("fp32", "fp32 NCHW"),
            ("fp32+channels_last", "profiles/full.yaml methods.gatys"),
        ]
        assert all(r["final_loss_fp32"] > 0 for r in rows)
        assert [(s["precision"], s["skipped"]) for s in gatys["result"]["skipped"]] == [
            ("bf16", BF16_NOTE),
            ("bf16+channels_last", BF16_NOTE),
        ]
        assert gatys["result"]["tf32"]["cudnn.allow_tf32"] is False  # --tf32 off: "fp32" is IEEE float32
        assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu_check.json"]
        assert tmp_path not in scratch.parents
        time.sleep(0.5)
        assert not _still_running(str(tmp_path), str(scratch)), "a step process outlived the killed check"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # what the next run would do (remove_stale_scratch)


@pytest.mark.timeout(TINY_DEADLINE_S + 120)
@pytest.mark.skipif(sys.platform != "linux", reason="the check's children die with it through a Linux prctl")
def test_gpu_check_stopped_by_sigterm_keeps_the_steps_done_and_removes_its_scratch(tmp_path):
    for _attempt in range(3):
        proc, _ = _start_and_wait_for(tmp_path, "default", ["data_vs_compute", "train_adain"], "train_adain")
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        kept = json.loads((tmp_path / "gpu_check.json").read_text())
        if code == 0 and kept["finished"] and "interrupted" not in kept:
            # the step ended before the signal arrived (a starved test process on a busy machine, measured once under
            # `make test -n 2` with AVX2 forced): nothing was interrupted, so nothing is asserted; start again
            (tmp_path / "gpu_check.json").unlink()
            continue
        break
    assert code == 1
    assert kept["interrupted"] == "SIGTERM"
    assert not kept["finished"]
    assert [(s["name"], s["status"]) for s in kept["steps"]] == [
        ("preflight", "ok"),
        ("data_vs_compute", "ok"),
        ("train_adain", "interrupted"),
    ]
    assert kept["steps"][1]["result"]["rows"]
    assert kept["scratch_removed"]
    assert not Path(kept["scratch"]).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu_check.json"]
    assert not _still_running(str(tmp_path), kept["scratch"]), "a step process outlived the stopped check"


@pytest.mark.timeout(TINY_DEADLINE_S + 120)
def test_tiny_gpu_check_runs_every_step_within_its_deadline(tmp_path):
    """Issue 25: `bench/gpu_check.py --device cpu --tiny` runs every step and pipeline stage, each within its share of
    one deadline, writes one JSON entry per step, and leaves nothing but gpu_check.json in --out."""
    proc = subprocess.run(_gpu_check(tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=TINY_DEADLINE_S + 60)
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    failed = {s["name"]: s.get("error", "")[-500:] for s in report["steps"] if s["status"] != "ok"}
    assert proc.returncode == 0, failed
    assert report["finished"]
    assert report["deadline_s"] == TINY_DEADLINE_S
    assert report["seconds"] <= TINY_DEADLINE_S
    assert [s["name"] for s in report["steps"]] == [
        "preflight",
        *GPU_CHECK_STEPS,
        *(f"pipeline:{s}" for s in PIPELINE_STAGES),
    ]
    assert report["summary"] == {"ok": len(report["steps"]), "failed": 0, "skipped": 0, "interrupted": 0}
    steps = {s["name"]: s for s in report["steps"]}
    for name, step in list(steps.items())[1:]:
        assert 0 < step["seconds"] <= step["limit_s"], name
        assert step["result"]["tf32"]["cuda.matmul.allow_tf32"] is False, name
    starts = [s["started_s"] for s in report["steps"][1:]]
    assert starts == sorted(starts)
    assert sum(s["limit_s"] for s in report["steps"][1:]) > TINY_DEADLINE_S / 2  # shares of what was left, not fixed
    pre = report["preflight"]
    assert pre["tf32"]["requested"] == "off"
    assert pre["shm"]["path"] == "/dev/shm"
    assert "available" in pre["onnxruntime"]
    assert pre["onnxruntime"]["ghiasi"]["provider"] in pre["onnxruntime"]["available"]
    assert pre["cpu"]["bf16_native"] == cpu_bf16_supported()
    bf16 = cpu_bf16_supported()
    want = ["fp32", "fp32+channels_last", *(["bf16", "bf16+channels_last"] if bf16 else [])]
    for name in ("train_adain", "train_contrastive", "gatys"):
        assert [r["precision"] for r in steps[name]["result"]["rows"]] == want, name
        assert len(steps[name]["result"]["skipped"]) == (0 if bf16 else 2), name
    ghiasi = steps["pipeline:stylize@ghiasi"]["result"]
    assert ghiasi["pairs"] > 0
    assert ghiasi["precision"] == [f"onnxruntime {pre['onnxruntime']['ghiasi']['provider']}"]
    assert ghiasi["device"] == [pre["onnxruntime"]["ghiasi"]["device"]]  # the provider's device, not the stage's
    assert report["scratch_removed"]
    assert not Path(report["scratch"]).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu_check.json"]


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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu_check.json"]
    assert not Path(report["scratch"]).exists()


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def test_carried_wheels_are_pinned_as_the_lock_and_leave_out_what_the_gpu_image_has():
    """bench/gpu_wheels.txt pins requirements.lock's versions, and none of the packages it drops because the device
    image has them (issue 25: carried copies shadow the image's) has crept back."""
    lock = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, _, version = line.partition("==")
            lock[_canonical(name)] = version.strip()
    pins = [line.split("#")[0].strip() for line in (ROOT / "bench/gpu_wheels.txt").read_text().splitlines()]
    pins = [pin.partition("==") for pin in pins if pin]
    assert pins
    for name, _, version in pins:
        assert lock.get(_canonical(name)) == version, name
    on_the_image = {"anyio", "certifi", "charset-normalizer", "click", "cloudpickle", "colorama", "idna", "psutil"}
    on_the_image |= {"pyyaml", "requests", "tqdm", "urllib3", "zipp", "tabulate", "annotated-doc"}
    assert not on_the_image & {_canonical(name) for name, _, _ in pins}


def test_wheel_requirements_split_conflicts_from_absent_packages(monkeypatch):
    """The preflight's check of the carried wheels' requirements against what is installed, on made-up metadata."""
    requires = {"carried": ["old>=2", "gone>=1", "winonly; sys_platform == 'win32'", "fine<9", "opt; extra == 'x'"]}
    versions = {"old": "1.5", "fine": "8.1"}

    def version(name):
        if name not in versions:
            raise importlib.metadata.PackageNotFoundError(name)
        return versions[name]

    def reqs(name):
        if name not in requires:
            raise importlib.metadata.PackageNotFoundError(name)
        return requires[name]

    monkeypatch.setattr(gpu_check.importlib.metadata, "requires", reqs)
    monkeypatch.setattr(gpu_check.importlib.metadata, "version", version)
    assert gpu_check._unmet_requirements(["carried", "missing"]) == {
        "conflicts": ["carried needs old>=2, found 1.5"],
        "absent": ["gone>=1 (for carried)", "missing (carried, not installed)"],
    }


def test_stale_scratch_of_a_killed_check_is_removed_and_a_live_ones_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = tmp_path / f"nst-gpu-check-{dead.pid}-abc"
    alive = tmp_path / f"nst-gpu-check-{os.getpid()}-def"
    other = tmp_path / "nst-gpu-check-notapid"
    for folder in (gone, alive, other):
        (folder / "repo").mkdir(parents=True)
    assert gpu_check.remove_stale_scratch(tmp_path) == [str(gone)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, other.name])


def test_every_step_has_a_weight_and_the_gpu_estimates_fit_the_default_deadline():
    """bench/gpu_check.py states a weight for every step and stage, and its GPU estimates (the weights) add up to less
    than the default deadline, so each step's share is more than its estimate."""
    stages = [f"pipeline:{s}" for s in PIPELINE_STAGES]
    assert set(gpu_check.WEIGHTS) == {*GPU_CHECK_STEPS, *stages}
    gpu_total = sum(w for w, _ in gpu_check.WEIGHTS.values())
    assert gpu_total <= gpu_check.DEFAULT_DEADLINE_S - gpu_check.RESERVE_S  # every estimate fits the deadline


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
    imports = report["importtime"]["import pipeline.stages.stylize"]
    assert imports["top_cumulative"][0]["module"] == "pipeline.stages.stylize"
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
