"""Building blocks of the IEContraAST-style method (Chen et al., "Artistic Style Transfer with Internal-external
Learning and Contrastive Learning", NeurIPS 2021): SANet attention, projection heads, the multi-scale LSGAN
discriminator, the contrastive batch construction and the masked InfoNCE loss.

The method itself (generator wiring, training losses, registration as ``contrastive``) builds on these in a later
change; everything here is complete and tested on its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.errors import NstError
from methods.losses import mean_std


def mean_variance_norm(feats: Tensor, eps: float = 1e-5) -> Tensor:
    """Per-sample, per-channel standardisation over space (SANet's ``mean_variance_norm``)."""
    mean, std = mean_std(feats, eps)
    return (feats - mean) / std


class SANet(nn.Module):
    """Style-attentional network (Park & Lee, CVPR 2019, sec. 3.2), as IEContraAST uses at relu4_1 and relu5_1.

    ``f = W_f norm(Fc)``, ``g = W_g norm(Fs)``, ``h = W_h Fs`` (1x1 convs); attention ``A = softmax(f^T g)`` over
    style positions; output ``Fc + W_o (h A^T)`` — the content's shape, with each content position a weighted
    mix of style features.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.f = nn.Conv2d(channels, channels, 1)
        self.g = nn.Conv2d(channels, channels, 1)
        self.h = nn.Conv2d(channels, channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, content: Tensor, style: Tensor) -> Tensor:
        b, c, h, w = content.shape
        f = self.f(mean_variance_norm(content)).flatten(2)  # (B, C, Nc)
        g = self.g(mean_variance_norm(style)).flatten(2)  # (B, C, Ns)
        v = self.h(style).flatten(2)  # (B, C, Ns)
        attention = torch.softmax(torch.bmm(f.transpose(1, 2), g), dim=-1)  # (B, Nc, Ns)
        mixed = torch.bmm(v, attention.transpose(1, 2)).view(b, c, h, w)
        return content + self.out(mixed)


class ProjectionHead(nn.Module):
    """Global-average-pooled features -> MLP -> L2-normalised embedding (B, out_dim) for the contrastive losses."""

    def __init__(self, in_channels: int, hidden: int = 256, out_dim: int = 128) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_channels, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

    def forward(self, feats: Tensor) -> Tensor:
        return F.normalize(self.mlp(feats.mean(dim=(2, 3))), dim=1)


class MultiScaleDiscriminator(nn.Module):
    """PatchGAN-style discriminators at ``scales`` resolutions (each 2x avg-pooled from the previous).

    Returns one (B, 1, h_s, w_s) patch map per scale; trained with the LSGAN objective (:func:`lsgan_loss`).
    """

    def __init__(self, scales: int = 3, width: int = 64, depth: int = 3) -> None:
        super().__init__()
        if scales < 1:
            raise NstError("the discriminator needs at least one scale")
        self.nets = nn.ModuleList()
        for _ in range(scales):
            layers: list[nn.Module] = [nn.Conv2d(3, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            ch = width
            for _ in range(depth - 1):
                layers += [nn.Conv2d(ch, ch * 2, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
                ch *= 2
            layers.append(nn.Conv2d(ch, 1, 3, padding=1))
            self.nets.append(nn.Sequential(*layers))

    def forward(self, image: Tensor) -> list[Tensor]:
        outputs = []
        for i, net in enumerate(self.nets):
            if i:
                image = F.avg_pool2d(image, 3, stride=2, padding=1, count_include_pad=False)
            outputs.append(net(image))
        return outputs


def lsgan_loss(outputs: list[Tensor], target_real: bool) -> Tensor:
    """Least-squares GAN loss (Mao et al. 2017): mean over scales of ``mean((D - t)^2)``, t = 1 real / 0 fake."""
    target = 1.0 if target_real else 0.0
    return torch.stack([(o - target).pow(2).mean() for o in outputs]).mean()


def contrastive_batch(k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Stylization pairs and positive masks for ``k`` content and ``k`` style images (batch of ``2k``).

    Pairs ``i < k`` stylize content ``i`` with style ``i``; pairs ``k + i`` stylize content ``i`` with style
    ``(i + 1) mod k``. So every content and every style appears in exactly two stylizations, and each
    stylization has exactly one positive for each loss: the other one sharing its style (style-contrastive) or
    sharing its content (content-contrastive); all other stylizations are negatives.

    Returns:
        content_idx, style_idx: (2k,) indices into the content and style batches.
        style_pos, content_pos: (2k, 2k) boolean masks, True where two *different* stylizations share a style /
        a content.
    """
    if k < 2:
        raise NstError(f"contrastive batches need k >= 2 content and style images (batch 2k >= 4), got k = {k}")
    idx = torch.arange(k)
    content_idx = torch.cat([idx, idx])
    style_idx = torch.cat([idx, (idx + 1) % k])
    eye = torch.eye(2 * k, dtype=torch.bool)
    style_pos = (style_idx[:, None] == style_idx[None, :]) & ~eye
    content_pos = (content_idx[:, None] == content_idx[None, :]) & ~eye
    return content_idx, style_idx, style_pos, content_pos


def info_nce(embeddings: Tensor, positives: Tensor, tau: float = 0.2) -> Tensor:
    """Masked InfoNCE (supervised-contrastive form) over a batch of L2-normalised embeddings (N, D).

    For anchor ``a`` with positives ``P(a)`` (a row of the (N, N) boolean mask; the diagonal is ignored) and
    negatives = every other sample: ``-log( sum_P exp(s_ap / tau) / sum_{b != a} exp(s_ab / tau) )`` with cosine
    similarities ``s``; mean over anchors that have a positive. tau = 0.2 (IEContraAST, sec. 4).
    """
    n = embeddings.shape[0]
    if positives.shape != (n, n):
        raise NstError(f"positives mask must be ({n}, {n}), got {tuple(positives.shape)}")
    eye = torch.eye(n, dtype=torch.bool, device=embeddings.device)
    logits = embeddings @ embeddings.T / tau
    logits = logits.masked_fill(eye, float("-inf"))
    log_denominator = torch.logsumexp(logits, dim=1)
    pos = positives & ~eye
    log_numerator = torch.logsumexp(logits.masked_fill(~pos, float("-inf")), dim=1)
    has_pos = pos.any(dim=1)
    if not has_pos.any():
        raise NstError("info_nce: no anchor has a positive")
    return (log_denominator - log_numerator)[has_pos].mean()
