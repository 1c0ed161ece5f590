"""Loss functions shared by every method and by evaluation: pure functions of tensors, never written twice.

Conventions: feature maps are (B, C, H, W); every loss returns one value per batch item, shape (B,), so callers
can average for optimisation or keep per-image scores for evaluation.

Gram normalisation: ``G = F F^T / (C * H * W)`` with ``F`` the (C, H*W) feature matrix — jcjohnson/neural-style
(``GramMatrix`` followed by ``div(input:nElement())`` in ``neural_style.lua``). Gatys et al. 2016 (eq. 4) instead
scale the squared Gram difference by ``1 / (4 N^2 M^2)``; the two differ by a constant per layer, absorbed into
the style weight. The style loss of a layer is the mean squared difference of the two Gram matrices (an MSE over the
C x C entries), again as in neural-style.

Weighting (:func:`weighted_terms`): a method's objective is ``sum_i w_i * L_i`` over named terms, each with its own
weight, stated once per method as two mappings (terms, weights) — as pytorch-AdaIN's ``train.py`` writes
``loss = content_weight * loss_c + style_weight * loss_s`` and pystiche gives every loss a ``score_weight`` and adds
the weighted terms of a ``PerceptualLoss`` in one place.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor


def _check_feats(x: Tensor, name: str = "features") -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W), got {tuple(x.shape)}")


def gram_matrix(feats: Tensor) -> Tensor:
    """Size-normalised Gram matrix of (B, C, H, W) features: (B, C, C) = F F^T / (C H W)."""
    _check_feats(feats)
    b, c, h, w = feats.shape
    flat = feats.reshape(b, c, h * w)
    return torch.bmm(flat, flat.transpose(1, 2)) / (c * h * w)


def mse_per_item(a: Tensor, b: Tensor) -> Tensor:
    """Mean squared error over every dimension but the first: shape (B,)."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return (a - b).pow(2).flatten(1).mean(dim=1)


def content_loss(feats: Tensor, target: Tensor) -> Tensor:
    """Feature MSE (Gatys et al. 2016 eq. 1, up to the constant 1/2 and the mean): (B,)."""
    _check_feats(feats)
    return mse_per_item(feats, target.expand_as(feats))


def gram_style_loss(feats: Mapping[str, Tensor], target_grams: Mapping[str, Tensor]) -> Tensor:
    """Sum over layers of the MSE between Gram matrices, in ``target_grams``' order: (B,).

    Args:
        feats: layer name -> (B, C, H, W) features of the image being scored/optimised.
        target_grams: layer name -> (B or 1, C, C) Gram matrices of the style image(s) (see :func:`gram_matrix`).
    """
    total: Tensor | None = None
    for name, target in target_grams.items():
        gram = gram_matrix(feats[name])
        term = mse_per_item(gram, target.expand_as(gram))  # the former unit layer weight: x * 1.0 is x exactly
        total = term if total is None else total + term
    if total is None:
        raise ValueError("gram_style_loss needs at least one layer")
    return total


def mean_std(feats: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Per-channel mean and standard deviation over space: two (B, C, 1, 1) tensors.

    The std is ``sqrt(var + eps)`` with the unbiased variance, as in Huang & Belongie's reference
    (naoto0804/pytorch-AdaIN ``function.py`` ``calc_mean_std``, eps 1e-5).
    """
    _check_feats(feats)
    b, c = feats.shape[:2]
    flat = feats.reshape(b, c, -1)
    var = flat.var(dim=2, unbiased=flat.shape[2] > 1) + eps
    return flat.mean(dim=2).view(b, c, 1, 1), var.sqrt().view(b, c, 1, 1)


def mean_std_loss(feats: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> Tensor:
    """Sum over layers of MSE(mean) + MSE(std) between feature statistics (Huang & Belongie 2017 eq. 12): (B,)."""
    total: Tensor | None = None
    for name, target in targets.items():
        m, s = mean_std(feats[name])
        tm, ts = mean_std(target)
        term = mse_per_item(m, tm.expand_as(m)) + mse_per_item(s, ts.expand_as(s))
        total = term if total is None else total + term
    if total is None:
        raise ValueError("mean_std_loss needs at least one layer")
    return total


def total_variation(image: Tensor) -> Tensor:
    """Anisotropic squared total variation, mean over pixel differences: (B,).

    ``mean((x[i+1, j] - x[i, j])^2) + mean((x[i, j+1] - x[i, j])^2)`` over channels and positions — the smoothness
    prior of Mahendran & Vedaldi 2015 (beta = 2) that neural-style's ``TVLoss`` also regularises with.
    """
    _check_feats(image, "image")
    dh = (image[..., 1:, :] - image[..., :-1, :]).pow(2).flatten(1).mean(dim=1)
    dw = (image[..., :, 1:] - image[..., :, :-1]).pow(2).flatten(1).mean(dim=1)
    return dh + dw


def weighted_terms(terms: Mapping[str, Tensor], weights: Mapping[str, float]) -> dict[str, Tensor]:
    """Each term times its weight, and ``"total"``, their sum: what every method optimises (see the module docstring).

    The products ``weights[name] * terms[name]`` come in the order of ``weights`` (the returned dict keeps it, for
    logging); ``"total"`` is ``torch.stack(products).sum(dim=0)``, one reduction in that fixed order on every call. On
    the CPU, for two or three terms, that is exactly the left fold ``(w0 * t0 + w1 * t1) + w2 * t2`` (tests/methods/
    test_losses.py checks it bit for bit); for more terms torch's summation kernel pairs them up its own way, the same
    on every call. Terms are tensors of one shape (0-d for an optimised loss; (B,) per item also works).

    Raises:
        ValueError: the names of ``terms`` and ``weights`` differ, or there is no term, or one is named ``"total"``.
    """
    if set(terms) != set(weights) or not weights or "total" in weights:
        raise ValueError(
            f"loss terms {sorted(terms)} and weights {sorted(weights)} must name the same terms (at least one, "
            "none called 'total')"
        )
    weighted = {name: weight * terms[name] for name, weight in weights.items()}
    return {**weighted, "total": torch.stack(list(weighted.values())).sum(dim=0)}


def weighted_sum(terms: Mapping[str, Tensor], weights: Mapping[str, float]) -> Tensor:
    """``sum_i weights[i] * terms[i]``: :func:`weighted_terms`'s ``"total"`` (its order and rounding)."""
    return weighted_terms(terms, weights)["total"]
