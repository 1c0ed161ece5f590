"""Benchmark: training iterations/s and inference images/s of the feed-forward methods by size and device, and the
training input pipeline's time per step -> JSON.

    python bench/feedforward_speed.py --method adain        # CPU (and CUDA when present) at 256 and 512 px
    python bench/feedforward_speed.py --method contrastive --sizes 256 --train-iterations 20
    python bench/feedforward_speed.py --method adain --data-only --sizes 256 --batch 8   # input pipeline only

Training: the shared training step (methods/training.py ``train_step``: the generator step, plus the discriminator step
for the contrastive method) on random crops, real caffe VGG-19. Batch: the paper's on CUDA (AdaIN 8, contrastive 12 =
6 x 6), small on CPU (2, and 4 = 2 x 2). Inference: one content + one style image of the given size. Every timing
(bench/_report.py ``timed``): warm-up calls, then ``--train-iterations`` (>= 20 by default) timed calls, between CUDA
events on a GPU. Precision variants side by side from one run: float32 and bf16 autocast (--amp), each NCHW and
channels_last (--channels-last); every row also gives its speed relative to the float32 NCHW row. bf16 is timed only
where the device runs it natively (CUDA, CPUs with AVX512-BF16 / AMX) unless --force-bf16: elsewhere the report's
``skipped`` list says which variants were left out and why (bench/_report.py ``BF16_SKIPPED``). Untrained weights (speed
does not depend on them); the per-filter-normalised encoder the methods train on.

Input pipeline (``--data``, ``--data-only``): milliseconds the training loop waits per step for its content and style
crops (a step's batch, size = crop, images resized to a short side of --resize, default 2 x crop as the paper's
512 / 256), from the embedded sample's images written as PNGs of that size. Rows: ``sample()`` in the training process
as train() did before issue 17, with the images in memory (the sample run) and decoding a PNG per crop (what it did
above 256 images, i.e. at full scale); and the DataLoader (methods/training.py ``batch_loader``) with images in memory
and from the decoded-array cache (pipeline/training_data.py ``DecodedArrays``, full scale), with each ``--workers``
count. Loader rows include the host-to-device copy. No compute runs meanwhile, so with workers this is the loader's
throughput (its worst case).
Writes bench/results/<method>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _report import MIN_TIMED, WARMUP, add_precision_args, bf16_native, precision_grid, timed, write_report  # noqa: E402 (bench/ is on sys.path as the script's folder)

from methods import get_method  # noqa: E402
from methods.encoder import load_encoder  # noqa: E402
from methods.image import resize_to_edge  # noqa: E402
from methods.precision import Precision  # noqa: E402
from methods.training import RandomCrops, StepPlans, batch_loader, batch_split, make_optimizers, train_step  # noqa: E402
from pipeline.io import list_images, read_image, write_image  # noqa: E402
from pipeline.resources import measure  # noqa: E402
from pipeline.training_data import DecodedArrays, ResizedImages  # noqa: E402

BATCH = {"adain": {"cuda": 8, "cpu": 2}, "contrastive": {"cuda": 12, "cpu": 4}}  # see the docstring
LAST_LAYER = {"adain": "relu4_1", "contrastive": "relu5_1"}


def bench(model: torch.nn.Module, size: int, precision: Precision, iters: int, batch: int, warmup: int) -> dict:
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

    with measure(device) as train_usage:
        train_time = timed(step, device, iters, warmup)
    one_c, one_s = content[:1], style[:1]
    toggles = {"amp": precision.bf16, "channels_last": precision.channels_last}
    with measure(device) as infer_usage:
        infer_time = timed(lambda: model.stylize(one_c, one_s, **toggles), device, iters, warmup)
    return {
        "size_px": size,
        "device": device.type,
        "amp": precision.bf16,
        "channels_last": precision.channels_last,
        "precision": precision.label,
        "batch": batch,
        "timed_iterations": iters,
        "train_ms_per_iteration": round(train_time.per_call_ms, 2),
        "train_iterations_per_second": iters / train_time.seconds,
        "train_images_per_second": iters * batch / train_time.seconds,
        "train_peak_mem_mb": round(train_usage.peak_mem_mb, 1),
        "inference_images_per_second": iters / infer_time.seconds,
        "inference_peak_mem_mb": round(infer_usage.peak_mem_mb, 1),
    }


def sample_folders(short_side: int, work: Path) -> tuple[Path, Path]:
    """data/sample's content and style images resized to ``short_side`` px and written as PNGs (a prepared split)."""
    folders = []
    for role in ("content", "style"):
        folder = work / f"{role}{short_side}"
        folder.mkdir(parents=True, exist_ok=True)
        for path in list_images(ROOT / "data/sample" / role):
            image = resize_to_edge(read_image(path), short_side, "short", upscale=True)
            write_image(image, folder / f"{path.stem}.png")
        folders.append(folder)
    return folders[0], folders[1]


def _crops(kind: str, paths: tuple[Path, ...], resize: int, crop: int, role: int, work: Path) -> RandomCrops:
    """Random crops of ``paths`` (role 0 content, 1 style) read as ``kind`` says: decoded once into memory, decoded
    from PNG per crop, or from the decoded-array cache under ``work``."""
    load = ResizedImages(paths, resize)
    if kind == "decoded-array cache":
        keys = [f"{role}-{i}-short{resize}" for i in range(len(paths))]
        return RandomCrops(DecodedArrays(load, keys, work / "decoded"), len(paths), crop, cache=False)
    return RandomCrops(load, len(paths), crop, cache=kind == "memory")


def _sample_ms(
    content: RandomCrops, style: RandomCrops, n_content: int, n_style: int, device: torch.device, steps: int
) -> float:
    """Milliseconds per step of sampling a batch in the training process and moving it to ``device``."""
    gen = torch.Generator().manual_seed(0)

    def legacy_step() -> None:
        content.sample(n_content, gen).to(device), style.sample(n_style, gen).to(device)

    return timed(legacy_step, device, steps).per_call_ms


def _loader_ms(
    content: RandomCrops,
    style: RandomCrops,
    n_content: int,
    n_style: int,
    n_workers: int,
    device: torch.device,
    steps: int,
) -> float:
    """Milliseconds per step of taking a batch from a DataLoader with ``n_workers`` workers and moving it to
    ``device``, after a warm-up."""
    warm = 3 + 4 * n_workers  # worker start-up and the first prefetch are not a per-step cost
    plans = StepPlans(content, style, torch.Generator().manual_seed(0), 1, warm + steps, n_content, n_style)
    batches = iter(batch_loader(plans, n_workers, pin_memory=device.type == "cuda"))

    def loader_step() -> None:
        _, c, s = next(batches)
        c.to(device, non_blocking=True), s.to(device, non_blocking=True)

    for _ in range(warm):
        loader_step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    begin = time.perf_counter()
    for _ in range(steps):
        loader_step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 1000 * (time.perf_counter() - begin) / steps


def data_rows(
    model: torch.nn.Module,
    crop: int,
    resize: int,
    batch: int,
    device: torch.device,
    steps: int,
    workers: list[int],
    work: Path,
) -> list[dict]:
    """Input-pipeline milliseconds per training step (see the module docstring)."""
    folders = sample_folders(resize, work)
    paths = [tuple(list_images(f)) for f in folders]
    n_content, n_style = batch_split(model, batch)  # type: ignore[arg-type]
    base = {"device": device.type, "crop_px": crop, "resize_short_px": resize, "batch": batch, "timed_steps": steps}
    rows = []
    for kind in ("memory", "PNG decode per crop"):  # before issue 17: train() called sample() itself, per step
        content = _crops(kind, paths[0], resize, crop, 0, work)
        style = _crops(kind, paths[1], resize, crop, 1, work)
        ms = _sample_ms(content, style, n_content, n_style, device, steps)
        rows.append(
            {
                **base,
                "source": f"sample() in the training process, {kind}",
                "workers": None,
                "data_ms_per_step": round(ms, 3),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    for kind in ("memory", "decoded-array cache"):
        for n_workers in workers:
            content = _crops(kind, paths[0], resize, crop, 0, work)
            style = _crops(kind, paths[1], resize, crop, 1, work)
            ms = _loader_ms(content, style, n_content, n_style, n_workers, device, steps)
            rows.append(
                {**base, "source": f"DataLoader, {kind}", "workers": n_workers, "data_ms_per_step": round(ms, 3)}
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def add_speedups(rows: list[dict], keys: tuple[str, ...]) -> None:
    """Each row's throughput relative to the float32 NCHW row of the same device and size (side by side)."""
    for row in rows:
        base = next(
            (
                r
                for r in rows
                if r["device"] == row["device"]
                and r["size_px"] == row["size_px"]
                and not r["amp"]
                and not r["channels_last"]
            ),
            None,
        )
        if base is not None:
            for key in keys:
                row[f"{key}_vs_fp32"] = round(row[key] / base[key], 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=sorted(BATCH), default="adain")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--train-iterations", type=int, default=MIN_TIMED, help="timed iterations (after warm-up)")
    parser.add_argument("--warmup", type=int, default=WARMUP, help="untimed calls first (0: a smoke run, no timing)")
    add_precision_args(parser)
    parser.add_argument("--batch", type=int, default=None, help="default: the device's (see the docstring)")
    parser.add_argument("--data", action="store_true", help="also time the input pipeline (see the docstring)")
    parser.add_argument("--data-only", action="store_true", help="time the input pipeline only")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers for --data")
    parser.add_argument("--resize", type=int, default=None, help="--data: short side before cropping (2 x size)")
    parser.add_argument("--out", type=Path, default=None, help="default: bench/results/<method>.json")
    args = parser.parse_args(argv)
    model = get_method(args.method)(
        encoder=load_encoder("caffe", last_layer=LAST_LAYER[args.method], normalise="per_filter")
    )
    results, data = [], []
    variants, skipped = precision_grid(args)
    devices = dict.fromkeys(device for device, _ in variants)
    for device, precision in [] if args.data_only else variants:
        for size in args.sizes:
            batch = args.batch or BATCH[args.method]["cuda" if device.type == "cuda" else "cpu"]
            row = bench(model, size, precision, args.train_iterations, batch, args.warmup)
            print(json.dumps(row), flush=True)
            results.append(row)
    add_speedups(results, ("train_iterations_per_second", "inference_images_per_second"))
    if args.data or args.data_only:
        with tempfile.TemporaryDirectory(prefix="nst-bench-data-") as work:
            for device in devices:
                for size in args.sizes:
                    batch = args.batch or BATCH[args.method]["cuda" if device.type == "cuda" else "cpu"]
                    resize = args.resize or 2 * size
                    data += data_rows(
                        model, size, resize, batch, device, args.train_iterations, args.workers, Path(work)
                    )
    extra: dict = {"bf16_native": bf16_native(devices), "skipped": [] if args.data_only else skipped}
    if data:
        extra["input_pipeline"] = data
    write_report(args.method, results, args.out or ROOT / f"bench/results/{args.method}.json", **extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
