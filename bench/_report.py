"""What every benchmark script writes: its rows plus the machine they were measured on, as JSON."""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from methods.precision import Precision, device_bf16_supported

# Why a benchmark leaves out a bf16 variant where the device would only emulate it (issue 24): oneDNN runs bf16 on a CPU
# without AVX512-BF16 / AMX-BF16 by converting to float32 and back, slower than float32 itself (methods/precision.py),
# so such a timing describes no setting anyone would choose there; ``amp: auto`` trains in float32 on that CPU.
BF16_SKIPPED = {
    "cpu": "skipped: this CPU has no native bf16 (AVX512-BF16/AMX); emulated bf16 timings mislead",
    "cuda": "skipped: this GPU has no bf16 (torch.cuda.is_bf16_supported() is false)",
}


def bf16_skip_reason(device: torch.device, force: bool = False) -> str | None:
    """Why bf16 variants on ``device`` are not timed (:data:`BF16_SKIPPED`), or None where bf16 is native or forced."""
    if force or device_bf16_supported(device):
        return None
    return BF16_SKIPPED.get(device.type, f"skipped: no bf16 on {device.type}")


def add_precision_args(parser: argparse.ArgumentParser) -> None:
    """--devices, --amp, --channels-last and --force-bf16, as every benchmark takes them."""
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    parser.add_argument(
        "--amp",
        nargs="+",
        choices=["false", "true"],
        default=["false", "true"],
        help="bf16 autocast off / on (bf16 only where the device runs it natively, unless --force-bf16)",
    )
    parser.add_argument("--channels-last", nargs="+", choices=["false", "true"], default=["false", "true"])
    parser.add_argument(
        "--force-bf16",
        action="store_true",
        help="time bf16 also where it is emulated (a CPU without AVX512-BF16 / AMX): slow, and not what it would run",
    )


def precision_grid(args: argparse.Namespace) -> tuple[list[tuple[torch.device, Precision]], list[dict]]:
    """Every (device, precision) the arguments of :func:`add_precision_args` ask for, fp32 NCHW first per device, and
    the variants left out, each as ``{"device", "precision", "skipped": reason}`` (:func:`bf16_skip_reason`)."""
    variants, skipped = [], []
    for name in args.devices or ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]:
        device = torch.device(name)
        reason = bf16_skip_reason(device, args.force_bf16)
        for amp, cl in itertools.product([a == "true" for a in args.amp], [c == "true" for c in args.channels_last]):
            precision = Precision(amp, cl, device.type)
            if amp and reason:
                skipped.append({"device": device.type, "precision": precision.label, "skipped": reason})
            else:
                variants.append((device, precision))
    return variants, skipped


def bf16_native(devices: Iterable[torch.device]) -> dict[str, bool]:
    """Per device type: does it run bf16 natively (what decides whether bf16 rows are timed)."""
    return {d.type: device_bf16_supported(d) for d in devices}


# Every timing: warm-up calls first (cuDNN autotuning, allocator growth, oneDNN primitive caches), then at least
# MIN_TIMED calls between two synchronisation points (issue 17: 3 timed calls were too few to tell variants apart).
WARMUP = 3
MIN_TIMED = 20


@dataclass(frozen=True)
class Timing:
    seconds: float  # wall time of the timed calls (CUDA: between two CUDA events, i.e. on the GPU's clock)
    calls: int

    @property
    def per_call_ms(self) -> float:
        return 1000 * self.seconds / self.calls


def timed(fn: Callable[[], object], device: torch.device, calls: int, warmup: int = WARMUP) -> Timing:
    """Time ``calls`` calls of ``fn`` after ``warmup`` untimed ones. On CUDA the interval is measured with CUDA events
    recorded on the current stream and synchronised at the end (queued GPU work is counted, launch overlap is not
    lost); on the CPU with ``time.perf_counter``."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        return Timing(start.elapsed_time(end) / 1000, calls)
    begin = time.perf_counter()
    for _ in range(calls):
        fn()
    return Timing(time.perf_counter() - begin, calls)


def write_report(benchmark: str, results: list[dict], out: Path, **extra: object) -> None:
    """``out``: the rows, the machine and any ``extra`` top-level entries, as JSON (replaced atomically)."""
    report = {
        "benchmark": benchmark,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "results": results,
        **extra,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(out)  # whole or absent, also when the run is killed while writing
    print(f"wrote {out}")
