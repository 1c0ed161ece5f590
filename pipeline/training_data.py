"""The training stage's images: resized once, cut into random crops, kept in memory or in a memory-mapped cache.

Shared by the train and tune stages (pipeline/builders.py builds models; this builds their data).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from methods.errors import NstError
from methods.image import resize_to_edge
from methods.training import RandomCrops
from methods.utils import atomic_path, sha256_file
from pipeline.io import list_images, read_image

log = logging.getLogger(__name__)

# Images kept decoded in memory up to this many per folder (the embedded sample); a larger set is decoded once into
# DECODED_CACHE and memory-mapped (full scale: about 1600 + 1900 images, 512 px short side, about 1 MB each as uint8).
MEMORY_IMAGES = 256
DECODED_CACHE = Path("data/cache/decoded")  # git-ignored, beside the download cache (fetch.download.cache_dir)


@dataclass(frozen=True)
class ResizedImages:
    """``self(i)``: image ``i`` of ``paths`` (1, 3, H, W) in [0, 1], resized so its short side is ``resize_short``
    (upscaling too) — the training stage's image policy; picklable for DataLoader workers."""

    paths: tuple[Path, ...]
    resize_short: int

    def __call__(self, i: int) -> Tensor:
        return resize_to_edge(read_image(self.paths[i]), self.resize_short, "short", upscale=True)


class DecodedArrays:
    """Images decoded once into a folder of ``.npy`` arrays and read back memory-mapped: ``self(i)`` is image ``i``
    as (1, 3, H, W), with no decoding — a training crop then costs a slice and a copy instead of a PNG decode.

    Each array is exactly what ``load(i)`` returned: stored as uint8 when ``load(i)`` equals ``uint8 / 255`` to the
    last bit (an image used at its decoded size), else as float32; :class:`methods.training.RandomCrops` converts
    uint8 crops with the same division. Files are named by ``keys[i]`` (e.g. the image file's sha256 and the resize
    policy), written atomically, and reused by every later run, rank, worker and tuning trial. The open memory maps
    are per process (dropped when pickled for a spawned worker, reopened there; forked workers share them).

    Args:
        load: ``load(i)`` returns image ``i`` as (1, 3, H, W) float32 in [0, 1] (called only for arrays not yet cached).
        keys: one file-name-safe key per image.
        folder: the cache folder (created).
        workers: processes decoding missing arrays (0 = this one).
    """

    def __init__(self, load: Callable[[int], Tensor], keys: Sequence[str], folder: Path, workers: int = 0) -> None:
        self.load, self.files = load, [Path(folder) / f"{key}.npy" for key in keys]
        self._arrays: dict[int, np.ndarray] = {}
        missing = [i for i, f in enumerate(self.files) if not f.is_file()]
        if missing:
            log.info("decoding %d of %d images into %s (once)", len(missing), len(self.files), folder)
            loader = torch.utils.data.DataLoader(
                missing, batch_size=None, num_workers=workers, collate_fn=self._write, generator=torch.Generator()
            )
            for _ in loader:
                pass

    def _write(self, i: int) -> None:
        img = self.load(i).float()
        quantised = (img * 255).round().clamp(0, 255).to(torch.uint8)
        array = quantised if torch.equal(quantised.float() / 255, img) else img
        with atomic_path(self.files[i]) as tmp, tmp.open("wb") as f:
            np.save(f, array.numpy())

    def __len__(self) -> int:
        return len(self.files)

    def __call__(self, i: int) -> Tensor:
        if i not in self._arrays:
            self._arrays[i] = np.load(self.files[i], mmap_mode="c")  # copy-on-write: writable for torch, never written
        return torch.from_numpy(self._arrays[i])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": {}}


def crops(
    folder: Path,
    resize_short: int,
    crop: int,
    *,
    workers: int = 0,
    cache_dir: Path = DECODED_CACHE,
    memory_images: int = MEMORY_IMAGES,
) -> RandomCrops:
    """Random crops of the images in ``folder``, each first resized so its short side is ``resize_short``: decoded once
    and kept in memory (up to ``memory_images`` images), else in ``cache_dir`` (:class:`DecodedArrays`,
    keyed by file content and size) and memory-mapped. ``workers`` processes decode missing cache entries."""
    paths = list_images(folder)
    if not paths:
        raise NstError(f"{folder}: no training images")
    load = ResizedImages(tuple(paths), resize_short)
    if len(paths) <= memory_images:
        return RandomCrops(load, len(paths), crop, cache=True)
    keys = [f"{sha256_file(p)[:40]}-short{resize_short}" for p in paths]
    return RandomCrops(DecodedArrays(load, keys, cache_dir, workers), len(paths), crop, cache=False)
