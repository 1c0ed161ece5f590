"""What every benchmark script writes: its rows plus the machine they were measured on, as JSON."""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from collections.abc import Iterator
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


def write_report(benchmark: str, results: list[dict], out: Path) -> None:
    report = {
        "benchmark": benchmark,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "results": results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
