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

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from methods.encoder import CAFFE_MEAN_BGR, VGGEncoder, load_encoder
from methods.errors import NstError
from methods.image import resize_to_edge
from methods.losses import content_loss, gram_matrix, gram_style_loss, total_variation
from methods.precision import Precision
from methods.schemas.gatys_params import GatysParams

StepCallback = Callable[[int, dict[str, float]], None]


def _noise_init(like: Tensor, seed: int) -> Tensor:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    mean_rgb = torch.tensor(CAFFE_MEAN_BGR[::-1]).view(1, 3, 1, 1) / 255.0
    noise = torch.randn(like.shape, generator=gen) * (0.001 / 255.0)
    return (mean_rgb + noise).to(device=like.device, dtype=like.dtype)


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
        encoder passes in ``precision`` (Gram matrices and losses in float32)."""
        encoder = precision.module(self.encoder.to(work_content.device))

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
            weighted = {"content": p.content_weight * c, "style": p.style_weight * s, "tv": p.tv_weight * tv}
            total = weighted["content"] + weighted["style"] + weighted["tv"]
            terms = {k: float(v.detach()) for k, v in weighted.items()}
            terms["total"] = float(total.detach())
            return total, terms

        return loss

    @torch.no_grad()
    def loss_terms(self, image: Tensor, content: Tensor, style: Tensor, **overrides: Any) -> dict[str, float]:
        """The weighted loss terms of ``image`` (at the working size, e.g. a :meth:`stylize` output when ``image_size``
        is null) in float32 NCHW: the reference against which a bf16 / channels_last optimisation is rescored."""
        p = self.params.replace(**overrides) if overrides else self.params
        self.encoder.to(memory_format=torch.contiguous_format)  # undo an earlier channels_last call
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
                weighted loss terms (floats). Adam evaluates once per iteration; L-BFGS about 1.25 x iterations at
                most (line-search trials included; torch checks its max_eval between iterations, so the last one
                may go a few past it).
            progress: show a tqdm bar that advances with every loss evaluation (Adam: one per iteration; L-BFGS: out
                of its evaluation budget max_eval = 1.25 x iterations, line-search trials included, and completed
                when L-BFGS stops earlier).
            **overrides: any :class:`GatysParams` field for this call only.
        """
        p = self.params.replace(**overrides) if overrides else self.params
        for name, img in (("content", content), ("style", style)):
            if img.ndim != 4 or img.shape[1] != 3:
                raise NstError(f"gatys: {name} must have shape (B, 3, H, W), got {tuple(img.shape)}")
        if style.shape[0] not in (1, content.shape[0]):
            raise NstError(f"gatys: style batch {style.shape[0]} must be 1 or the content batch {content.shape[0]}")
        device = content.device
        precision = Precision.resolve(p.amp, p.channels_last, device)
        height, width = content.shape[-2:]
        work_content, work_style = self._working_images(content, style, p)
        loss = self._objective(work_content, work_style, p, precision)
        if p.init == "content":
            start = work_content.clone()
        elif p.init == "style":
            start = F.interpolate(work_style, size=work_content.shape[-2:], mode="bilinear", align_corners=False)
            start = start.expand_as(work_content).clone()
        else:
            start = _noise_init(work_content, p.seed)
        image = start.contiguous().requires_grad_(True)  # NCHW-contiguous: L-BFGS flattens with view(-1)
        lbfgs = p.optimizer == "lbfgs"
        max_eval = p.iterations * 5 // 4  # torch's LBFGS default (max_iter * 5 // 4), passed explicitly below
        bar = tqdm(
            total=max_eval if lbfgs else p.iterations,
            desc="gatys",
            unit="eval" if lbfgs else "it",
            disable=None if progress else True,
            leave=False,
        )
        evaluations = 0

        def closure() -> Tensor:
            nonlocal evaluations
            opt.zero_grad(set_to_none=True)
            total, terms = loss(image)
            if not math.isfinite(terms["total"]):
                raise NstError(
                    f"gatys: loss became non-finite at evaluation {evaluations} ({terms}); lower lr or weights"
                )
            total.backward()
            if image.grad is not None and not image.grad.is_contiguous():  # a channels_last encoder's gradient
                image.grad = image.grad.contiguous()
            if bar.total is not None and bar.n >= bar.total:  # L-BFGS checks max_eval only between iterations
                bar.total = bar.n + 1
            bar.set_postfix(loss=f"{terms['total']:.4g}", refresh=False)
            bar.update(1)  # every evaluation, so L-BFGS's single step() shows its progress too
            if callback is not None:
                callback(evaluations, terms)
            evaluations += 1
            return total

        if lbfgs:
            # One step() runs all iterations, as neural-style's optim.lbfgs(maxIter = num_iterations) does, keeping the
            # curvature history (100 pairs, optim.lbfgs's default). With a strong-Wolfe line search: Gatys et al. used
            # scipy's L-BFGS-B, which line-searches, and without one a noise start overshoots badly. Evaluations
            # (and callbacks) are capped at 1.25 x iterations, torch's default max_eval.
            opt: torch.optim.Optimizer = torch.optim.LBFGS(
                [image],
                lr=p.effective_lr,
                max_iter=p.iterations,
                max_eval=max_eval,
                history_size=100,
                line_search_fn="strong_wolfe",
            )
            if p.iterations > 0:
                opt.step(closure)
            if not bar.disable and bar.n < bar.total:  # stopped within the evaluation budget (max_iter, or converged)
                bar.total = bar.n
                bar.refresh()
        else:
            opt = torch.optim.Adam([image], lr=p.effective_lr)
            for _ in range(p.iterations):
                opt.step(closure)
        bar.close()
        out = image.detach().clamp(0, 1)
        if out.shape[-2:] != (height, width):
            out = F.interpolate(out, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
        return out.clamp(0, 1).to(content.dtype)
