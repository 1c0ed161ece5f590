"""Compute the per-filter scales of ``encoder.normalise: per_filter`` and write them as a scales JSON file.

``python -m methods.encoder_scales`` regenerates the committed ``methods/vgg19_caffe_per_filter.json`` from the
embedded sample's train split (``data/prepared/train``, made by ``dvc repro prepare`` with the sample profile);
``--weights torchvision`` or ``--weights <state_dict path>`` with ``--out <file>`` makes a file for other weights,
to pass as ``load_encoder(..., normalise="per_filter", normalise_scales=<file>)``.

Procedure (exact, deterministic): every image of the folder (``*.png``, ``*.jpg``, ``*.jpeg`` in any sub-folder,
sorted by relative path) is read with Pillow as 8-bit RGB, converted to float64 in [0, 1] (``/ 255``) and fed at
full resolution, one at a time, through the *raw* (unnormalised) encoder converted to float64, on the CPU. For
each conv filter ``k`` of layer ``l`` the scale is ``s_l[k] = (1/N) sum_images mean_positions relu_l[k]`` — the
mean post-ReLU activation over images (each image weighs the same) and positions. A filter with ``s = 0`` (never
fires on the set) is dead: its scale stays 1 and it is listed. This is done once per pooling kind (``max``,
``avg``): the activations after the first pooling layer depend on it.

Why one pass of the raw network is Gatys et al.'s layer-by-layer procedure: :class:`methods.encoder.VGGEncoder`
applies ``W'_l[k, j] = W_l[k, j] * s_{l-1}[j] / s_l[k]``, ``b'_l = b_l / s_l``. With layers ``< l`` normalised
this way, layer ``l`` receives exactly the raw network's input (ReLU and pooling commute with positive
per-channel scaling, and the ``s_{l-1}[j]`` factor undoes the previous layer's division), so measuring it there
and dividing its filters by their means is the same as measuring the raw network.

File format (JSON, one layer's scales per line): ``format`` (:data:`methods.encoder.SCALES_FORMAT`),
``weights`` (``name``, ``source``, ``sha256`` of the weights file), ``preprocessing``, ``statistic``,
``computed_with`` (torch / numpy / Pillow versions, dtype, device), ``image_set`` (``folder``, ``n_images``,
``prepare_resize`` when the folder was made by the prepare stage, and ``images``: ``id``, ``file``, ``sha256`` of
the file, ``pixels_sha256`` of the decoded (H, W, 3) uint8 array, ``width``, ``height``, and ``src_file`` /
``src_sha256`` of the original when the prepare stage's ``manifest.csv`` lists them), and ``pools``: for
``max`` and ``avg``, ``scales_sha256`` (:func:`methods.encoder.scales_sha256`), ``dead_filters``
(``{conv name: [index, ...]}``) and ``scales`` (``{conv name: [float, ...]}``, exact float64 ``repr``).
"""

from __future__ import annotations

import argparse
import copy
import csv
import hashlib
import importlib.metadata
import json
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from methods.encoder import (
    CAFFE_SCALES_FILE,
    CONV_NAMES,
    SCALES_FORMAT,
    FilterScales,
    Pooling,
    VGGEncoder,
    load_encoder,
)
from methods.errors import NstError
from methods.utils import sha256_file, write_text_atomic

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
POOLS: tuple[Pooling, ...] = ("max", "avg")
DEFAULT_IMAGES = Path("data/prepared/train")  # the embedded sample's train split (never val or test)
STATISTIC = (
    "s_l[k] = mean over images (each image weighs the same) of the mean over positions of the post-ReLU output of "
    "filter k of conv layer l in the raw network; 8-bit RGB / 255 as float64 at full resolution, float64 forward "
    "on the CPU, images one at a time in order; dead filters (s = 0) keep scale 1. Applied as "
    "W'_l[k, j] = W_l[k, j] * s_{l-1}[j] / s_l[k], b'_l[k] = b_l[k] / s_l[k] (s_0 = 1)"
)


def list_images(folder: str | Path) -> list[Path]:
    """Image files (``.png``, ``.jpg``, ``.jpeg``) anywhere under ``folder``, sorted by their relative path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NstError(f"image folder {folder} does not exist (for the sample's train split: `dvc repro prepare`)")
    files = sorted(
        (p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda p: p.relative_to(folder).as_posix(),
    )
    if not files:
        raise NstError(f"image folder {folder} holds no .png / .jpg images")
    return files


def read_rgb_uint8(path: str | Path) -> np.ndarray:
    """An image file as an (H, W, 3) uint8 RGB array (Pillow ``convert("RGB")``)."""
    with Image.open(path) as img:
        return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def pixels_sha256(arr: np.ndarray) -> str:
    """sha256 of an (H, W, 3) uint8 array's C-order bytes."""
    return hashlib.sha256(np.ascontiguousarray(arr, dtype=np.uint8).tobytes()).hexdigest()


def to_float64(arr: np.ndarray) -> Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float64 in [0, 1]."""
    return torch.from_numpy(arr.astype(np.float64) / 255.0).permute(2, 0, 1).unsqueeze(0).contiguous()


def filter_means(encoder: VGGEncoder, images: Iterable[Tensor], *, dtype: torch.dtype = torch.float64) -> dict:
    """Mean post-ReLU activation of every conv filter of ``encoder`` over ``images``.

    Args:
        encoder: any encoder (raw or normalised); a copy is run in ``dtype`` on the CPU, the original is untouched.
        images: RGB tensors in [0, 1], (B, 3, H, W) each (sizes may differ); every image of every batch weighs the
            same.
        dtype: the forward pass's dtype (float64 for the stored scales).

    Returns:
        ``{conv name: (out,) float64 tensor}`` for every conv layer of ``encoder``: the mean over images of the
        per-image mean over positions of its ReLU output.
    """
    model = copy.deepcopy(encoder).to(device="cpu", dtype=dtype)
    relus = [f"relu{name[4:]}" for name in CONV_NAMES if name in model.layers]
    sums: dict[str, Tensor] = {}
    count = 0
    with torch.no_grad():
        for image in images:
            feats = model(image.to(device="cpu", dtype=dtype), relus)
            for relu in relus:
                part = feats[relu].to(torch.float64).mean(dim=(2, 3)).sum(dim=0)
                sums[relu] = part if relu not in sums else sums[relu] + part
            count += image.shape[0]
    if count == 0:
        raise NstError("filter_means needs at least one image")
    return {f"conv{relu[4:]}": total / count for relu, total in sums.items()}


def scales_from_means(means: Mapping[str, Tensor], source: str = "computed") -> FilterScales:
    """Scales = means, except dead filters (mean exactly 0), which keep scale 1 and are listed."""
    scales, dead = {}, {}
    for name, mean in means.items():
        mean = mean.to(torch.float64)
        zero = mean == 0
        scales[name] = torch.where(zero, torch.ones_like(mean), mean)
        if bool(zero.any()):
            dead[name] = [int(i) for i in torch.nonzero(zero).flatten()]
    return FilterScales(scales=scales, dead=dead, source=source)


def _prepare_info(folder: Path) -> tuple[dict[str, dict[str, str]], dict[str, Any] | None]:
    """``{file relative to folder: {src_file, src_sha256}}`` and the resize params, if the prepare stage made it."""
    sources: dict[str, dict[str, str]] = {}
    manifest = folder.parent / "manifest.csv"
    if manifest.is_file():
        with manifest.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                file = row.get("file") or ""
                prefix = f"{folder.name}/"
                if file.startswith(prefix) and row.get("src_sha256"):
                    sources[file[len(prefix) :]] = {"src_file": row["src_file"], "src_sha256": row["src_sha256"]}
    resize = None
    effective = folder.parent / "effective_params.yaml"
    if effective.is_file():
        params = yaml.safe_load(effective.read_text(encoding="utf-8")) or {}
        resize = (params.get("prepare") or {}).get("resize")
    return sources, resize


def _versions() -> dict[str, str]:
    out = {"torch": torch.__version__, "numpy": np.__version__}
    out["pillow"] = importlib.metadata.version("pillow")
    return out


def compute_scales_document(
    weights: str = "caffe",
    images_dir: str | Path = DEFAULT_IMAGES,
    *,
    preprocessing: str | None = None,
    pools: Sequence[Pooling] = POOLS,
    progress: bool = True,
) -> dict[str, Any]:
    """Compute the per-filter scales of ``weights`` on the images under ``images_dir``: the scales file's content.

    Images are read once (uint8 in memory) and run through the raw encoder in float64, once per pooling kind.
    """
    folder = Path(images_dir)
    files = list_images(folder)
    sources, resize = _prepare_info(folder)
    arrays, records = [], []
    for path in files:
        rel = path.relative_to(folder).as_posix()
        arr = read_rgb_uint8(path)
        arrays.append(arr)
        record: dict[str, Any] = {
            "id": rel.rsplit(".", 1)[0],
            "file": rel,
            "sha256": sha256_file(path),
            "pixels_sha256": pixels_sha256(arr),
            "width": int(arr.shape[1]),
            "height": int(arr.shape[0]),
        }
        record.update(sources.get(rel, {}))
        records.append(record)
    doc: dict[str, Any] = {"format": SCALES_FORMAT}
    pools_out: dict[str, Any] = {}
    for pool in pools:
        encoder = load_encoder(weights, pool=pool, preprocessing=preprocessing)  # type: ignore[arg-type]
        if "weights" not in doc:
            doc["weights"] = {"name": weights, "source": encoder.weights_source, "sha256": encoder.weights_sha256}
            doc["preprocessing"] = encoder.preprocessing
            doc["statistic"] = STATISTIC
            doc["computed_with"] = {**_versions(), "dtype": "float64", "device": "cpu"}
        stream = tqdm(arrays, desc=f"per_filter scales ({pool} pool)", unit="img", disable=not progress or None)
        scales = scales_from_means(filter_means(encoder, (to_float64(a) for a in stream)))
        pools_out[pool] = {
            "scales_sha256": scales.sha256,
            "dead_filters": {name: scales.dead[name] for name in CONV_NAMES if name in scales.dead},
            "scales": {name: [float(v) for v in scales.scales[name].tolist()] for name in CONV_NAMES},
        }
    folder_str = folder.as_posix()
    doc["image_set"] = {"folder": folder_str, "n_images": len(files), "prepare_resize": resize, "images": records}
    doc["pools"] = pools_out
    return doc


def dumps_scales_document(doc: Mapping[str, Any]) -> str:
    """JSON text of a scales document: indented, with each layer's scale list on one line."""
    head = {k: v for k, v in doc.items() if k != "pools"}
    text = json.dumps(head, indent=2)[:-2]  # drop the closing "\n}"
    parts = [text + ',\n  "pools": {']
    pool_items = list(doc["pools"].items())
    for pi, (pool, entry) in enumerate(pool_items):
        lines = [f"    {json.dumps(pool)}: {{"]
        lines.append(f'      "scales_sha256": {json.dumps(entry["scales_sha256"])},')
        lines.append(f'      "dead_filters": {json.dumps(entry["dead_filters"])},')
        lines.append('      "scales": {')
        names = list(entry["scales"])
        for ni, name in enumerate(names):
            values = ", ".join(repr(float(v)) for v in entry["scales"][name])
            lines.append(f"        {json.dumps(name)}: [{values}]" + ("," if ni < len(names) - 1 else ""))
        lines.append("      }")
        lines.append("    }" + ("," if pi < len(pool_items) - 1 else ""))
        parts.append("\n".join(lines))
    parts.append("  }\n}\n")
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m methods.encoder_scales",
        description="Compute the per-filter scales (encoder.normalise: per_filter) of a VGG-19 on an image folder.",
    )
    parser.add_argument("--weights", default="caffe", help="caffe (default), torchvision, or a state_dict path")
    parser.add_argument("--images", default=str(DEFAULT_IMAGES), help="image folder (default: %(default)s)")
    parser.add_argument("--preprocessing", choices=("caffe", "torchvision"), default=None)
    parser.add_argument("--out", default=None, help=f"output JSON (default for caffe: methods/{CAFFE_SCALES_FILE})")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (results do not depend on it)")
    args = parser.parse_args(argv)
    if args.out is None and args.weights != "caffe":
        parser.error("--out is required for weights other than caffe")
    out = Path(args.out) if args.out else Path(__file__).with_name(CAFFE_SCALES_FILE)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        start = time.perf_counter()
        doc = compute_scales_document(args.weights, args.images, preprocessing=args.preprocessing)
        elapsed = time.perf_counter() - start
    except NstError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_text_atomic(out, dumps_scales_document(doc))
    dead = {pool: sum(len(v) for v in e["dead_filters"].values()) for pool, e in doc["pools"].items()}
    print(f"wrote {out}: {doc['image_set']['n_images']} images, dead filters {dead}, {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
