"""Metrics: pure functions over (B, 3, H, W) RGB tensors in [0, 1], one value per image, plus their metadata.

One fixed scorer for every method (DESIGN.md "Evaluation"): the default caffe VGG-19, whatever the method used.

=============  ====================================================================  ========  ==========
metric         definition                                                            compares  better
=============  ====================================================================  ========  ==========
content_loss   MSE of relu4_2 features, output vs content (methods.losses)           content   lower
style_loss     sum over relu1_1..relu5_1 of MSE of C*H*W-normalised Gram matrices    style     lower
lpips          LPIPS v0.1, AlexNet trunk + the package's linear heads, inputs in     content   lower
               [-1, 1]; NaN when the AlexNet ImageNet weights are not available
ssim           piq.ssim, data_range 1, 11x11 Gaussian window (sigma 1.5), on RGB     content   higher
cfsd           content feature structural distance (StyleID, Chung et al. CVPR       content   lower
               2024): see :func:`cfsd`
=============  ====================================================================  ========  ==========
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import piq
import torch
import torch.nn.functional as F
from torch import Tensor

from methods.encoder import VGGEncoder
from methods.errors import NstError
from methods.image import resize_to_edge
from methods.losses import content_loss as _content_loss
from methods.losses import gram_matrix, gram_style_loss

log = logging.getLogger(__name__)

CONTENT_LAYER = "relu4_2"
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
CFSD_LAYER = "relu3_1"
# torchvision's AlexNet ImageNet weights, the trunk LPIPS v0.1 was calibrated on (lpips/pretrained_networks.py).
ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
ALEXNET_FILE = os.path.basename(ALEXNET_URL)


@dataclass(frozen=True)
class MetricInfo:
    name: str
    higher_is_better: bool
    compares_to: Literal["content", "style"]
    description: str


METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo("content_loss", False, "content", "MSE of relu4_2 features, output vs content"),
        MetricInfo("style_loss", False, "style", "Gram-matrix MSE over relu1_1..relu5_1, output vs style"),
        MetricInfo("lpips", False, "content", "LPIPS (AlexNet), output vs content"),
        MetricInfo("ssim", True, "content", "SSIM (piq, data_range 1), output vs content"),
        MetricInfo("cfsd", False, "content", "KL between relu3_1 patch self-similarity distributions, vs content"),
    )
}


def _check(x: Tensor, name: str) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise NstError(f"{name} must have shape (B, 3, H, W), got {tuple(x.shape)}")


def _check_pair(output: Tensor, reference: Tensor, what: str) -> None:
    _check(output, "output")
    _check(reference, what)
    if output.shape != reference.shape:
        raise NstError(f"output {tuple(output.shape)} and {what} {tuple(reference.shape)} differ in shape")


@torch.no_grad()
def content_loss(output: Tensor, content: Tensor, encoder: VGGEncoder) -> Tensor:
    """MSE of relu4_2 features (methods.losses.content_loss): (B,)."""
    _check_pair(output, content, "content")
    feats = encoder(torch.cat([output, content]), [CONTENT_LAYER])[CONTENT_LAYER].float()
    b = output.shape[0]
    return _content_loss(feats[:b], feats[b:])


@torch.no_grad()
def style_loss(output: Tensor, style: Tensor, encoder: VGGEncoder) -> Tensor:
    """Sum over relu1_1..relu5_1 of the MSE between Gram matrices (methods.losses.gram_style_loss): (B,).

    ``style`` may have any size (Gram matrices are C x C) and a batch of 1 or B.
    """
    _check(output, "output")
    _check(style, "style")
    feats = {k: v.float() for k, v in encoder(output, STYLE_LAYERS).items()}
    targets = {k: gram_matrix(v.float()) for k, v in encoder(style, STYLE_LAYERS).items()}
    return gram_style_loss(feats, targets)


@torch.no_grad()
def ssim(output: Tensor, content: Tensor) -> Tensor:
    """SSIM by piq (11x11 Gaussian window, sigma 1.5, data_range 1, RGB averaged): (B,). Needs H, W >= 11."""
    _check_pair(output, content, "content")
    return piq.ssim(output.float().clamp(0, 1), content.float().clamp(0, 1), data_range=1.0, reduction="none")


@torch.no_grad()
def cfsd(output: Tensor, content: Tensor, encoder: VGGEncoder, max_side: int = 256) -> Tensor:
    """Content feature structural distance (StyleID protocol): (B,), 0 for identical images, > 0 otherwise.

    Both images are resized (antialiased) so their long side is at most ``max_side``, encoded to relu3_1
    features ``F`` (C x N, N positions), each position's feature vector L2-normalised; the patch self-similarity
    ``S = F^T F`` (N x N cosine similarities) is turned into one distribution per position by a row softmax
    ``P = softmax(S, dim=-1)``. CFSD = (1/N) sum_i KL(P_content[i] || P_output[i]).
    """
    _check_pair(output, content, "content")
    both = resize_to_edge(torch.cat([output, content]).float(), max_side)
    feats = encoder(both, [CFSD_LAYER])[CFSD_LAYER].float().flatten(2)  # (2B, C, N)
    feats = F.normalize(feats, dim=1)
    log_p = torch.log_softmax(torch.bmm(feats.transpose(1, 2), feats), dim=-1)  # (2B, N, N)
    b = output.shape[0]
    log_out, log_con = log_p[:b], log_p[b:]
    kl = (log_con.exp() * (log_con - log_out)).sum(dim=-1)  # (B, N)
    return kl.mean(dim=-1).clamp_min(0)


# --------------------------------------------------------------------------------------------------- LPIPS


class LpipsUnavailable(NstError):
    """The AlexNet ImageNet weights LPIPS needs are not on this machine."""


def alexnet_weights_path(explicit: str | Path | None = None) -> Path:
    """Where the AlexNet weights are: ``explicit``, else ``$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth``."""
    if explicit is not None:
        return Path(explicit).expanduser()
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE


def load_lpips(weights: str | Path | None = None, *, download: bool = True) -> torch.nn.Module:
    """LPIPS v0.1 (AlexNet) with its published linear heads and the real ImageNet AlexNet trunk.

    The trunk comes from ``weights`` (a torchvision AlexNet state_dict) or torch hub's cache; when absent and
    ``download`` is true, torch hub downloads it. Never falls back to a random trunk.

    Raises:
        LpipsUnavailable: naming the file that is missing and where to put it.
    """
    import lpips

    path = alexnet_weights_path(weights)
    if not path.is_file():
        if weights is None and download:
            try:
                torch.hub.load_state_dict_from_url(ALEXNET_URL, progress=False, check_hash=True)
            except Exception as exc:  # offline: URLError; a proxy: HTTPError; ...
                log.debug("alexnet download failed: %s", exc)
        if not path.is_file():
            raise LpipsUnavailable(
                f"LPIPS needs torchvision's AlexNet ImageNet weights ({ALEXNET_FILE}, from {ALEXNET_URL}); "
                f"not found at {path}. Put the file there (or set evaluate.lpips_weights to its path)"
            )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise LpipsUnavailable(f"{path}: not a readable AlexNet state_dict ({exc})") from exc
    model = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    load_alexnet_trunk(model, state, str(path))
    return model.eval().requires_grad_(False)


def load_alexnet_trunk(model: torch.nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Copy torchvision ``features.N.*`` AlexNet weights into an ``lpips.LPIPS`` model's ``slice{k}.N`` modules."""
    net = model.net
    target: dict[str, Tensor] = {}
    for k in range(1, net.N_slices + 1):
        for idx, module in getattr(net, f"slice{k}").named_children():
            if isinstance(module, torch.nn.Conv2d):
                for part in ("weight", "bias"):
                    key = f"features.{idx}.{part}"
                    if key not in state:
                        raise LpipsUnavailable(f"{source}: no {key}; is this torchvision's AlexNet?")
                    target[f"slice{k}.{idx}.{part}"] = state[key]
    net.load_state_dict(target, strict=True)


@torch.no_grad()
def lpips_distance(output: Tensor, content: Tensor, model: torch.nn.Module) -> Tensor:
    """LPIPS between output and content (inputs mapped from [0, 1] to [-1, 1] as the package expects): (B,)."""
    _check_pair(output, content, "content")
    return model(output.float() * 2 - 1, content.float() * 2 - 1).flatten()


# --------------------------------------------------------------------------------------------------- scorer


class Scorer:
    """Every metric for (output, content, style) triples with one fixed encoder (and LPIPS model, when available).

    Args:
        encoder: the scorer's VGG-19 (the default caffe weights in the pipeline).
        lpips_model: from :func:`load_lpips`, or None -> ``lpips`` is NaN.
        cfsd_max_side: long side CFSD is computed at (bounds its N x N similarity matrices).
    """

    def __init__(self, encoder: VGGEncoder, lpips_model: torch.nn.Module | None, cfsd_max_side: int = 256) -> None:
        self.encoder = encoder
        self.lpips_model = lpips_model
        self.cfsd_max_side = cfsd_max_side

    def to(self, device: torch.device) -> Scorer:
        self.encoder.to(device)
        if self.lpips_model is not None:
            self.lpips_model.to(device)
        return self

    def score(self, output: Tensor, content: Tensor, style: Tensor) -> dict[str, float]:
        """All metrics for one triple (batch 1): ``{name: value}`` in :data:`METRICS` order."""
        if output.shape[0] != 1:
            raise NstError("Scorer.score takes one triple (batch 1)")
        fns: dict[str, Callable[[], Tensor]] = {
            "content_loss": lambda: content_loss(output, content, self.encoder),
            "style_loss": lambda: style_loss(output, style, self.encoder),
            "lpips": lambda: (
                lpips_distance(output, content, self.lpips_model)
                if self.lpips_model is not None
                else torch.tensor([math.nan])
            ),
            "ssim": lambda: ssim(output, content),
            "cfsd": lambda: cfsd(output, content, self.encoder, self.cfsd_max_side),
        }
        return {name: float(fns[name]()[0]) for name in METRICS}
