"""Gatys, Ecker & Bethge, "Image Style Transfer Using Convolutional Neural Networks", CVPR 2016.

The output image itself is optimised so that its relu4_2 features match the content image's and its Gram
matrices on relu1_1..relu5_1 match the style image's, optionally with a total-variation prior. Loss scales follow
jcjohnson/neural-style (``neural_style.lua``): the caffe VGG-19 on 0..255 BGR input, Gram matrices divided by C*H*W,
MSE losses — so its default weights (content 5, style 100) carry over unchanged. That is why the raw network
(``encoder_normalise = "none"``) is the default here; ``"per_filter"`` selects the normalised VGG-19 the paper itself
used (sec. 2), on which neural-style's weights are on another scale.

Precision (``amp`` / ``channels_last``, methods/precision.py): bf16 autocast covers the encoder passes only; Gram
matrices and losses are float32, and the optimised image stays a float32 NCHW-contiguous tensor (L-BFGS flattens its
gradient with ``view(-1)``), converted to channels_last for each encoder pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from methods.encoder import CAFFE_MEAN_BGR, VGGEncoder, load_encoder
from methods.errors import NstError
from methods.image import resize_to_edge
from methods.losses import content_loss, gram_matrix, gram_style_loss, total_variation, weighted_terms
from methods.optimise import StepCallback, optimise_image
from methods.precision import Precision
from methods.schemas.gatys_params import GatysParams


def _noise_init(like: Tensor, seed: int) -> Tensor:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    mean_rgb = torch.tensor(CAFFE_MEAN_BGR[::-1]).view(1, 3, 1, 1) / 255.0
    noise = torch.randn(like.shape, generator=gen) * (0.001 / 255.0)
    return (mean_rgb + noise).to(device=like.device, dtype=like.dtype)


def _start_image(work_content: Tensor, work_style: Tensor, p: GatysParams) -> Tensor:
    """The optimisation's start (``init``): the content, the style resized to it, or seeded noise around the mean."""
    if p.init == "content":
        return work_content
    if p.init == "style":
        start = F.interpolate(work_style, size=work_content.shape[-2:], mode="bilinear", align_corners=False)
        return start.expand_as(work_content)
    return _noise_init(work_content, p.seed)


class Gatys:
    """Optimisation-based NST. ``stylize(content, style)``: (B, 3, H, W) in [0, 1] -> same shape as content.

    Args:
        params: hyper-parameters (defaults: the paper / neural-style).
        encoder: the shared VGG-19; defaults to the caffe weights.
    """

    name = "gatys"

    def __init__(self, params: GatysParams | None = None, *, encoder: VGGEncoder | None = None) -> None:
        self.params = params or GatysParams()
        if encoder is None:
            encoder = load_encoder("caffe", normalise=self.params.encoder_normalise)
        self.encoder = encoder

    def _working_images(self, content: Tensor, style: Tensor, p: GatysParams) -> tuple[Tensor, Tensor]:
        """Content and style as float32 NCHW-contiguous tensors on the content's device, at ``image_size``."""
        work_content = content.float()
        work_style = style.to(device=content.device, dtype=torch.float32)
        if p.image_size is not None:
            work_content = resize_to_edge(work_content, p.image_size, "long", upscale=True)
            work_style = resize_to_edge(work_style, p.image_size, "long", upscale=True)
        return work_content.contiguous(), work_style.contiguous()

    def _objective(
        self, work_content: Tensor, work_style: Tensor, p: GatysParams, precision: Precision
    ) -> Callable[[Tensor], tuple[Tensor, dict[str, float]]]:
        """``loss(image) -> (total, weighted terms as floats)`` towards the working content and style images, with the
        encoder passes in ``precision`` (Gram matrices and losses in float32), on a converted copy of the encoder
        where ``precision`` or the device needs one (the shared encoder itself is never changed)."""
        encoder = precision.module_on(self.encoder, work_content.device)

        def features(image: Tensor, layers: tuple[str, ...]) -> dict[str, Tensor]:
            with precision.autocast():
                feats = encoder(precision.image(image), layers)
            return {k: v.float() for k, v in feats.items()}

        with torch.no_grad():
            content_targets = features(work_content, p.content_layers)
            style_grams = {k: gram_matrix(v) for k, v in features(work_style, p.style_layers).items()}
        layers = tuple(dict.fromkeys((*p.content_layers, *p.style_layers)))

        def loss(x: Tensor) -> tuple[Tensor, dict[str, float]]:
            feats = features(x, layers)
            c = sum(content_loss(feats[k], content_targets[k]) for k in p.content_layers).sum()
            s = gram_style_loss(feats, style_grams).sum()
            tv = total_variation(x).sum()
            weighted = weighted_terms(
                {"content": c, "style": s, "tv": tv},
                {"content": p.content_weight, "style": p.style_weight, "tv": p.tv_weight},
            )
            return weighted["total"], {k: float(v.detach()) for k, v in weighted.items()}

        return loss

    @torch.no_grad()
    def loss_terms(self, image: Tensor, content: Tensor, style: Tensor, **overrides: Any) -> dict[str, float]:
        """The weighted loss terms of ``image`` (at the working size, e.g. a :meth:`stylize` output when ``image_size``
        is null) in float32 NCHW: the reference against which a bf16 / channels_last optimisation is rescored."""
        p = self.params.replace(**overrides) if overrides else self.params
        work_content, work_style = self._working_images(content, style, p)
        fp32 = Precision(False, False, content.device.type)
        return self._objective(work_content, work_style, p, fp32)(image.float().contiguous())[1]

    def stylize(
        self,
        content: Tensor,
        style: Tensor,
        *,
        callback: StepCallback | None = None,
        progress: bool = False,
        **overrides: Any,
    ) -> Tensor:
        """Optimise an image towards ``content``'s structure and ``style``'s Gram statistics.

        Args:
            content: (B, 3, H, W) in [0, 1]; the output has this shape and device.
            style: (1 or B, 3, H_s, W_s) in [0, 1]; any size (resized with the content to ``image_size``).
            callback: called at every loss evaluation with ``(index, {"content", "style", "tv", "total"})``, the
                weighted loss terms (floats); see :func:`methods.optimise.optimise_image` for how many there are.
            progress: show a tqdm bar that advances with every loss evaluation.
            **overrides: any :class:`GatysParams` field for this call only.
        """
        p = self.params.replace(**overrides) if overrides else self.params
        for name, img in (("content", content), ("style", style)):
            if img.ndim != 4 or img.shape[1] != 3:
                raise NstError(f"gatys: {name} must have shape (B, 3, H, W), got {tuple(img.shape)}")
        if style.shape[0] not in (1, content.shape[0]):
            raise NstError(f"gatys: style batch {style.shape[0]} must be 1 or the content batch {content.shape[0]}")
        precision = Precision.resolve(p.amp, p.channels_last, content.device)
        work_content, work_style = self._working_images(content, style, p)
        loss = self._objective(work_content, work_style, p, precision)
        start = _start_image(work_content, work_style, p)
        image, _ = optimise_image(
            start, loss, p.optimizer, p.iterations, p.effective_lr, callback=callback, progress=progress, name="gatys"
        )
        out = image.clamp(0, 1)
        if out.shape[-2:] != content.shape[-2:]:
            out = F.interpolate(out, size=content.shape[-2:], mode="bicubic", antialias=True, align_corners=False)
        return out.clamp(0, 1).to(content.dtype)
