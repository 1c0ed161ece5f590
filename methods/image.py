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
