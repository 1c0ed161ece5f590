"""Benchmark: training iterations/s and inference images/s of the feed-forward methods by size and device -> JSON.

    python bench/feedforward.py --method adain        # CPU (and CUDA when present) at 256 and 512 px
    python bench/feedforward.py --method contrastive --sizes 256 --train-iterations 3

Training: one iteration of the shared training step (methods/training.py ``train_step``: the generator step, plus the
discriminator step for the contrastive method) on random crops, real caffe VGG-19. Batch: the paper's on CUDA
(AdaIN 8, contrastive 12 = 6 x 6), small on CPU (2, and 4 = 2 x 2). Inference: one content + one style image of the
given size. Precision variants side by side from one run: float32 and bf16 autocast (where the device runs bf16
natively: CUDA, CPUs with AVX512-BF16 / AMX; or as asked with --amp), each NCHW and channels_last; every row also
gives its speed relative to the float32 NCHW row. Untrained weights (speed does not depend on them); the
per-filter-normalised encoder the methods train on.
Writes bench/results/<method>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _report import add_precision_args, precision_grid, write_report  # noqa: E402 (bench/ is on sys.path as the script's folder)

from methods import get_method  # noqa: E402
from methods.encoder import load_encoder  # noqa: E402
from methods.precision import Precision  # noqa: E402
from methods.training import batch_split, make_optimizers, train_step  # noqa: E402
from pipeline.resources import measure  # noqa: E402

BATCH = {"adain": {"cuda": 8, "cpu": 2}, "contrastive": {"cuda": 12, "cpu": 4}}  # see the docstring
LAST_LAYER = {"adain": "relu4_1", "contrastive": "relu5_1"}


def bench(model: torch.nn.Module, size: int, precision: Precision, iters: int, batch: int) -> dict:
    device = torch.device(precision.device_type)
    gen = torch.Generator().manual_seed(0)
    model.to(device).to(memory_format=torch.contiguous_format)  # undo an earlier variant's channels_last
    precision.module(model)
    _, adversary, optimizers = make_optimizers(model, lr=1e-4)  # type: ignore[arg-type]
    n_content, n_style = batch_split(model, batch)  # type: ignore[arg-type]
    content = precision.image(torch.rand(n_content, 3, size, size, generator=gen).to(device))
    style = precision.image(torch.rand(n_style, 3, size, size, generator=gen).to(device))

    def step() -> None:
        train_step(model, content, style, optimizers, adversary, precision.autocast())  # type: ignore[arg-type]

    step()  # warm-up
    with measure(device) as train_usage:
        for _ in range(iters):
            step()
    one_c, one_s = content[:1], style[:1]
    toggles = {"amp": precision.bf16, "channels_last": precision.channels_last}
    model.stylize(one_c, one_s, **toggles)  # warm-up
    with measure(device) as infer_usage:
        for _ in range(iters):
            model.stylize(one_c, one_s, **toggles)
    return {
        "size_px": size, "device": device.type, "amp": precision.bf16, "channels_last": precision.channels_last,
        "precision": precision.label, "batch": batch,
        "train_iterations_per_second": iters / train_usage.seconds,
        "train_images_per_second": iters * batch / train_usage.seconds,
        "train_peak_mem_mb": round(train_usage.peak_mem_mb, 1),
        "inference_images_per_second": iters / infer_usage.seconds,
        "inference_peak_mem_mb": round(infer_usage.peak_mem_mb, 1),
    }  # fmt: skip


def add_speedups(rows: list[dict], keys: tuple[str, ...]) -> None:
    """Each row's throughput relative to the float32 NCHW row of the same device and size (side by side)."""
    for row in rows:
        base = next((r for r in rows if r["device"] == row["device"] and r["size_px"] == row["size_px"]
                     and not r["amp"] and not r["channels_last"]), None)  # fmt: skip
        if base is not None:
            for key in keys:
                row[f"{key}_vs_fp32"] = round(row[key] / base[key], 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=sorted(BATCH), default="adain")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--train-iterations", type=int, default=3)
    add_precision_args(parser)
    parser.add_argument("--batch", type=int, default=None, help="default: the device's (see the docstring)")
    parser.add_argument("--out", type=Path, default=None, help="default: bench/results/<method>.json")
    args = parser.parse_args(argv)
    model = get_method(args.method)(
        encoder=load_encoder("caffe", last_layer=LAST_LAYER[args.method], normalise="per_filter")
    )
    results = []
    for device, precision in precision_grid(args):
        for size in args.sizes:
            batch = args.batch or BATCH[args.method]["cuda" if device.type == "cuda" else "cpu"]
            row = bench(model, size, precision, args.train_iterations, batch)
            print(json.dumps(row), flush=True)
            results.append(row)
    add_speedups(results, ("train_iterations_per_second", "inference_images_per_second"))
    write_report(args.method, results, args.out or ROOT / f"bench/results/{args.method}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
