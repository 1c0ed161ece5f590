"""Reference rows: outputs no method would produce, scored like every method to calibrate each metric's range.

=============  ===========================================================================================
row            output for a (content, style) pair (all at the content's H x W, RGB in [0, 1])
=============  ===========================================================================================
identity       the content itself: the best any content metric can be, no style at all
style_copy     the painting, centre-cropped to the content's aspect ratio, then resized (antialiased bicubic):
               all style, no content
grey           the content's mean colour everywhere: keeps nothing but the average colour (a sanity floor a
               method must beat on structure metrics such as SSIM and CFSD)
blur           the content blurred by a Gaussian of sigma 4 px at 256 px (scaled with the image's long side):
               structure kept coarsely, no style
=============  ===========================================================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

BLUR_SIGMA_PX = 4.0  # at BLUR_AT_PX on the long side (issue 14: "content, Gaussian sigma = 4 at 256 px")
BLUR_AT_PX = 256


def identity(content: Tensor, style: Tensor) -> Tensor:
    return content


def style_copy(content: Tensor, style: Tensor) -> Tensor:
    """The style image centre-cropped to the content's aspect ratio, then resized to the content's size."""
    h, w = content.shape[-2:]
    sh, sw = style.shape[-2:]
    if sw * h > w * sh:  # style wider than the content: crop its width
        cw, ch = max(1, round(sh * w / h)), sh
    else:
        cw, ch = sw, max(1, round(sw * h / w))
    top, left = (sh - ch) // 2, (sw - cw) // 2
    crop = style[..., top : top + ch, left : left + cw]
    return F.interpolate(crop, size=(h, w), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def grey(content: Tensor, style: Tensor) -> Tensor:
    """The content's mean colour (per channel) at every pixel."""
    return content.mean(dim=(-2, -1), keepdim=True).expand_as(content).contiguous()


def blur_sigma(height: int, width: int) -> float:
    """The Gaussian's sigma in pixels for an image of this size: 4 px at 256 px on the long side."""
    return BLUR_SIGMA_PX * max(height, width) / BLUR_AT_PX


def gaussian_kernel(sigma: float) -> Tensor:
    """Normalised 1-D Gaussian, radius ceil(3 sigma) (float64)."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def blur(content: Tensor, style: Tensor) -> Tensor:
    """The content convolved with a separable Gaussian (:func:`blur_sigma`), reflect-padded at the borders."""
    h, w = content.shape[-2:]
    k = gaussian_kernel(blur_sigma(h, w)).to(content.device, torch.float32)
    r = (k.numel() - 1) // 2
    x = content.float()
    c = x.shape[1]
    pad_h, pad_w = min(r, h - 1), min(r, w - 1)  # reflect padding needs pad < size; tiny images get less
    kh = k[r - pad_h : r + pad_h + 1]
    kw = k[r - pad_w : r + pad_w + 1]
    x = F.pad(x, (pad_w, pad_w, 0, 0), mode="reflect")
    x = F.conv2d(x, (kw / kw.sum()).view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.pad(x, (0, 0, pad_h, pad_h), mode="reflect")
    x = F.conv2d(x, (kh / kh.sum()).view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return x.clamp(0, 1).to(content.dtype)


REFERENCES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "identity": identity,
    "style_copy": style_copy,
    "grey": grey,
    "blur": blur,
}
REFERENCE_ROWS: tuple[str, ...] = tuple(REFERENCES)


def reference_outputs(content: Tensor, style: Tensor) -> dict[str, Tensor]:
    """Every reference row's output for one (content, style) pair, each (B, 3, H, W) like ``content``."""
    return {name: fn(content, style) for name, fn in REFERENCES.items()}
