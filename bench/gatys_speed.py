"""Benchmark: seconds per Gatys optimisation iteration by image size, optimiser and device -> JSON.

    python bench/gatys_speed.py                      # CPU (and CUDA when present), 128/256/512 px, L-BFGS and Adam
    python bench/gatys_speed.py --sizes 256 --iterations 10 --out bench/results/gatys.json

Real caffe VGG-19, the sample's first test content and style images (or seeded noise when absent), the default Gatys
layers and weights. L-BFGS iterations include their line-search evaluations; both the per-iteration and the
per-evaluation times are reported. Precision variants side by side from one run: float32 and bf16 autocast of the
encoder passes (--amp; bf16 only where the device runs it natively, CUDA or CPUs with AVX512-BF16 / AMX, unless
--force-bf16: the report's ``skipped`` list says what was left out and why), each NCHW and channels_last, with each
row's speed-up and final-loss difference against the float32 NCHW row; the final image's loss is also rescored in
float32 NCHW (``final_loss_fp32``), so a bf16 row's loss is comparable. A one-iteration run warms up each variant first.
The report is rewritten after every row: an interrupted run keeps the rows it has.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _report import add_precision_args, bf16_native, precision_grid, write_report  # noqa: E402 (bench/ is on sys.path as the script's folder)

from methods.encoder import load_encoder  # noqa: E402
from methods.gatys import Gatys, GatysParams  # noqa: E402
from methods.image import resize_to_edge  # noqa: E402
from methods.precision import Precision  # noqa: E402
from pipeline.io import list_images, read_image  # noqa: E402
from pipeline.resources import measure  # noqa: E402


def inputs(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    content_dir, style_dir = ROOT / "data/sample/content", ROOT / "data/sample/style"
    if content_dir.is_dir() and style_dir.is_dir():
        content = read_image(list_images(content_dir)[0])
        style = read_image(list_images(style_dir)[0])
    else:
        gen = torch.Generator().manual_seed(0)
        content, style = torch.rand(1, 3, 384, 512, generator=gen), torch.rand(1, 3, 400, 400, generator=gen)
    return resize_to_edge(content, size, upscale=True), resize_to_edge(style, size, upscale=True)


def bench_one(method: Gatys, size: int, optimizer: str, iterations: int, precision: Precision) -> dict:
    device = torch.device(precision.device_type)
    content, style = (t.to(device) for t in inputs(size))
    method.encoder.to(memory_format=torch.contiguous_format)  # undo an earlier variant's channels_last
    kwargs = {
        "optimizer": optimizer,
        "iterations": iterations,
        "image_size": None,
        "init": "content",
        "amp": precision.bf16,
        "channels_last": precision.channels_last,
    }
    method.stylize(content, style, **{**kwargs, "iterations": 1})  # warm-up (cuDNN autotune, allocator)
    evaluations: list[float] = []
    with measure(device) as usage:
        out = method.stylize(content, style, callback=lambda _i, t: evaluations.append(t["total"]), **kwargs)
    rescored = method.loss_terms(out, content, style, image_size=None)["total"]  # float32 NCHW, as the fp32 row
    return {
        "size_px": size,
        "height": content.shape[-2],
        "width": content.shape[-1],
        "optimizer": optimizer,
        "device": device.type,
        "amp": precision.bf16,
        "channels_last": precision.channels_last,
        "precision": precision.label,
        "iterations": iterations,
        "evaluations": len(evaluations),
        "seconds_per_iteration": usage.seconds / iterations,
        "seconds_per_evaluation": usage.seconds / len(evaluations),
        "final_loss": evaluations[-1],
        "final_loss_fp32": rescored,
        "peak_mem_mb": round(usage.peak_mem_mb, 1),
    }


def add_comparison(rows: list[dict]) -> None:
    """Side by side: each row's speed-up and final-loss difference against the float32 NCHW row of the same device,
    size and optimiser (the loss as each run computed it)."""
    for row in rows:
        base = next(
            (
                r
                for r in rows
                if (r["device"], r["size_px"], r["optimizer"]) == (row["device"], row["size_px"], row["optimizer"])
                and not r["amp"]
                and not r["channels_last"]
            ),
            None,
        )
        if base is not None:
            row["speedup_vs_fp32"] = round(base["seconds_per_iteration"] / row["seconds_per_iteration"], 3)
            row["final_loss_vs_fp32_pct"] = round(100 * (row["final_loss_fp32"] / base["final_loss_fp32"] - 1), 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--optimizers", nargs="+", default=["lbfgs", "adam"], choices=["lbfgs", "adam"])
    parser.add_argument("--iterations", type=int, default=20, help="timed iterations (after a 1-iteration warm-up)")
    add_precision_args(parser)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/gatys.json")
    args = parser.parse_args(argv)
    method = Gatys(GatysParams(), encoder=load_encoder("caffe"))
    variants, skipped = precision_grid(args)
    extra = {"bf16_native": bf16_native(dict.fromkeys(d for d, _ in variants)), "skipped": skipped}
    results: list[dict] = []
    write_report("gatys", results, args.out, **extra)  # the skipped variants even before the first row
    for _device, precision in variants:
        for size in args.sizes:
            for optimizer in args.optimizers:
                row = bench_one(method, size, optimizer, args.iterations, precision)
                print(json.dumps(row), flush=True)
                results.append(row)
                add_comparison(results)
                write_report("gatys", results, args.out, **extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
