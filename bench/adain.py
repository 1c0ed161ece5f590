"""Benchmark: AdaIN training iterations/s and inference images/s by size and device -> JSON.

    python bench/adain.py                       # CPU (and CUDA when present) at 256 and 512 px
    python bench/adain.py --sizes 256 --train-iterations 3 --out bench/results/adain.json

Training: one Adam step of the decoder on a batch of random crops (batch 8 on CUDA as in the paper, 2 on CPU),
real caffe VGG-19. Inference: one content + one style image of the given size. On CUDA also bf16 autocast +
channels_last. The decoder is untrained (speed does not depend on the weights).
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

from methods.adain import AdaIN  # noqa: E402
from methods.encoder import load_encoder  # noqa: E402
from pipeline.resources import measure  # noqa: E402


def bench(model: AdaIN, size: int, device: torch.device, amp: bool, iters: int, batch: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    model.to(device)
    opt = torch.optim.Adam(model.decoder.parameters(), lr=1e-4)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    content = torch.rand(batch, 3, size, size, generator=gen).to(device)
    style = torch.rand(batch, 3, size, size, generator=gen).to(device)
    if amp:
        model.to(memory_format=torch.channels_last)
        content = content.contiguous(memory_format=torch.channels_last)
        style = style.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with autocast:
            loss = model.losses(content, style)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

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
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--train-iterations", type=int, default=3)
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/adain.json")
    args = parser.parse_args(argv)
    devices = args.devices or ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    model = AdaIN(encoder=load_encoder("caffe", last_layer="relu4_1"))
    results = []
    for name in devices:
        device = torch.device(name)
        for amp in [False, *([True] if device.type == "cuda" else [])]:
            for size in args.sizes:
                row = bench(model, size, device, amp, args.train_iterations, 8 if device.type == "cuda" else 2)
                print(json.dumps(row), flush=True)
                results.append(row)
    write_report("adain", results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
