"""Pure tensor image operations shared by stages and methods."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor


def resize_to_edge(image: Tensor, size: int, edge: Literal["long", "short"] = "long", upscale: bool = False) -> Tensor:
    """Scale ``image`` (B, C, H, W) so its ``edge`` side is ``size`` px, keeping the aspect ratio.

    Antialiased bicubic interpolation, output clamped to [0, 1]; the other side is rounded to the nearest
    pixel (at least 1). Without ``upscale``, images already smaller are returned unchanged.
    """
    h, w = image.shape[-2:]
    ref = max(h, w) if edge == "long" else min(h, w)
    scale = size / ref
    if scale == 1.0 or (scale > 1.0 and not upscale):
        return image
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    return F.interpolate(image, size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def pad_to_multiple(image: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
    """Pad ``image`` (B, C, H, W) at the bottom/right to multiples of ``multiple``; returns it and the original (H, W).

    Encoder-decoder networks need sizes divisible by their total downsampling (8 to relu4_1, 16 to relu5_1) to give
    the input's exact size back; crop the output with ``[..., :h, :w]``. Reflection padding (no hard border in the
    features) where the image is large enough for it, replicate padding for tiny images.
    """
    h, w = image.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        image = F.pad(image, (0, pw, 0, ph), mode="reflect" if ph < h and pw < w else "replicate")
    return image, (h, w)
