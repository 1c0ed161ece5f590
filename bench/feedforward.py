"""Benchmark: training iterations/s and inference images/s of the feed-forward methods by size and device -> JSON.

    python bench/feedforward.py --method adain        # CPU (and CUDA when present) at 256 and 512 px
    python bench/feedforward.py --method contrastive --sizes 256 --train-iterations 3

Training: one iteration of the shared training step (methods/training.py ``train_step``: the generator step, plus the
discriminator step for the contrastive method) on random crops, real caffe VGG-19. Batch: the paper's on CUDA
(AdaIN 8, contrastive 12 = 6 x 6), small on CPU (2, and 4 = 2 x 2). Inference: one content + one style image of the
given size. On CUDA also bf16 autocast + channels_last. Untrained weights (speed does not depend on them).
Writes bench/results/<method>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _report import write_report  # noqa: E402 (bench/ is on sys.path as the script's folder)

from methods import get_method  # noqa: E402
from methods.encoder import load_encoder  # noqa: E402
from methods.training import batch_split, make_optimizers, train_step  # noqa: E402
from pipeline.resources import measure  # noqa: E402

BATCH = {"adain": {"cuda": 8, "cpu": 2}, "contrastive": {"cuda": 12, "cpu": 4}}  # see the docstring
LAST_LAYER = {"adain": "relu4_1", "contrastive": "relu5_1"}


def bench(model: torch.nn.Module, size: int, device: torch.device, amp: bool, iters: int, batch: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    model.to(device)
    _, adversary, optimizers = make_optimizers(model, lr=1e-4)  # type: ignore[arg-type]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    n_content, n_style = batch_split(model, batch)  # type: ignore[arg-type]
    content = torch.rand(n_content, 3, size, size, generator=gen).to(device)
    style = torch.rand(n_style, 3, size, size, generator=gen).to(device)
    if amp:
        model.to(memory_format=torch.channels_last)
        content = content.contiguous(memory_format=torch.channels_last)
        style = style.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        train_step(model, content, style, optimizers, adversary, autocast)  # type: ignore[arg-type]

    step()  # warm-up
    with measure(device) as train_usage:
        for _ in range(iters):
            step()
    one_c, one_s = content[:1], style[:1]
    with autocast:
        model.stylize(one_c, one_s)  # warm-up
        with measure(device) as infer_usage:
            for _ in range(iters):
                model.stylize(one_c, one_s)
    return {
        "size_px": size, "device": device.type, "bf16_channels_last": amp, "batch": batch,
        "train_iterations_per_second": iters / train_usage.seconds,
        "train_images_per_second": iters * batch / train_usage.seconds,
        "train_peak_mem_mb": round(train_usage.peak_mem_mb, 1),
        "inference_images_per_second": iters / infer_usage.seconds,
        "inference_peak_mem_mb": round(infer_usage.peak_mem_mb, 1),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=sorted(BATCH), default="adain")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--train-iterations", type=int, default=3)
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    parser.add_argument("--out", type=Path, default=None, help="default: bench/results/<method>.json")
    args = parser.parse_args(argv)
    devices = args.devices or ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    model = get_method(args.method)(encoder=load_encoder("caffe", last_layer=LAST_LAYER[args.method]))
    results = []
    for name in devices:
        device = torch.device(name)
        for amp in [False, *([True] if device.type == "cuda" else [])]:
            for size in args.sizes:
                batch = BATCH[args.method]["cuda" if device.type == "cuda" else "cpu"]
                row = bench(model, size, device, amp, args.train_iterations, batch)
                print(json.dumps(row), flush=True)
                results.append(row)
    write_report(args.method, results, args.out or ROOT / f"bench/results/{args.method}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
