"""Device choice and per-call time / peak-memory measurement (for timing.csv and the benchmarks)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psutil
import torch

from methods.errors import NstError


def pick_device(setting: str, tf32: bool = False) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error.

    On CUDA, TF32 (10-bit mantissa matmuls and convolutions) is set explicitly from ``tf32`` (``base.tf32``): PyTorch's
    own default runs convolutions in TF32 and matmuls in IEEE float32, so an unset "fp32" would be half of each."""
    if setting == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif setting == "cuda" and not torch.cuda.is_available():
        raise NstError("base.device = 'cuda' but no CUDA device is available (use auto or cpu)")
    else:
        device = torch.device(setting)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    return device


def tf32_label(device: torch.device, tf32: bool) -> str:
    """What a precision label adds on ``device``: `` (TF32 on|off)`` on CUDA, nothing elsewhere (no TF32 there)."""
    return f" (TF32 {'on' if tf32 else 'off'})" if device.type == "cuda" else ""


@dataclass
class Usage:
    seconds: float = 0.0
    peak_mem_mb: float = 0.0


@contextlib.contextmanager
def measure(device: torch.device, poll_s: float = 0.02) -> Iterator[Usage]:
    """Wall time and peak memory of the block.

    CUDA: ``torch.cuda.max_memory_allocated`` (reset at entry), synchronised. CPU: the process's peak resident set
    size while the block runs, sampled every ``poll_s`` seconds (includes the model and Python itself).
    """
    usage = Usage()
    stop = threading.Event()
    sampler = None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        proc = psutil.Process()
        peak = [proc.memory_info().rss]

        def sample() -> None:
            while not stop.wait(poll_s):
                peak[0] = max(peak[0], proc.memory_info().rss)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
    start = time.perf_counter()
    try:
        yield usage
    finally:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            usage.peak_mem_mb = torch.cuda.max_memory_allocated(device) / 2**20
        usage.seconds = time.perf_counter() - start
        if sampler is not None:
            stop.set()
            sampler.join()
            peak[0] = max(peak[0], psutil.Process().memory_info().rss)
            usage.peak_mem_mb = peak[0] / 2**20
