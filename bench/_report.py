"""What every benchmark script writes: its rows plus the machine they were measured on, as JSON."""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from methods.precision import Precision, device_bf16_supported


def add_precision_args(parser: argparse.ArgumentParser) -> None:
    """--devices, --amp and --channels-last, as every benchmark takes them."""
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    parser.add_argument(
        "--amp",
        nargs="+",
        choices=["false", "true"],
        default=None,
        help="bf16 autocast off / on (default: both where the device runs bf16 natively, else off)",
    )
    parser.add_argument("--channels-last", nargs="+", choices=["false", "true"], default=["false", "true"])


def precision_grid(args: argparse.Namespace) -> Iterator[tuple[torch.device, Precision]]:
    """Every (device, precision) the arguments of :func:`add_precision_args` ask for, fp32 NCHW first per device."""
    for name in args.devices or ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]:
        device = torch.device(name)
        native = [True] if device_bf16_supported(device) else []
        amps = [a == "true" for a in args.amp] if args.amp else [False, *native]
        for amp, cl in itertools.product(amps, [c == "true" for c in args.channels_last]):
            yield device, Precision(amp, cl, device.type)


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
