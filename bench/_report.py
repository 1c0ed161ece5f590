"""What every benchmark script writes: its rows plus the machine they were measured on, as JSON."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch


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
