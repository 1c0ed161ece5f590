"""Huang & Belongie, "Arbitrary Style Transfer in Real-time with Adaptive Instance Normalization", ICCV 2017.

Encoder: the shared VGG-19 up to relu4_1 (frozen; by default the per-filter-normalised caffe network). AdaIN aligns
the content features' per-channel mean and std with the style's; a decoder that mirrors the encoder (nearest
upsampling for pooling, reflection padding, no normalisation layers) maps them back to an image. Training loss (paper
eqs. 11-12): content MSE between the decoded image's relu4_1 features and the AdaIN target, plus ``style_weight`` x
mean/std MSE on relu1_1..relu4_1.

Encoder scale: the reference trains on ``vgg_normalised`` (naoto0804/pytorch-AdaIN models/vgg_normalised.pth, the Lua
release's VGG-19 with every filter's mean activation rescaled to 1, as Gatys et al. 2016 sec. 2), which
``encoder_normalise = "per_filter"`` (the default) reproduces on the caffe weights (methods/encoder.py). On it each of
relu1_1..relu4_1 carries 16-32 % of the mean/std style loss at initialisation on the sample; on the raw caffe network
(``"none"``, activations growing with depth) relu4_1 alone carries about 90 %, which no ``style_weight`` repairs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from methods.encoder import VGGEncoder, load_encoder
from methods.feedforward import load_modules, save_modules, style_mixture
from methods.image import pad_to_multiple
from methods.losses import content_loss, mean_std, mean_std_loss, weighted_terms
from methods.precision import Precision
from methods.schemas.adain_params import CONTENT_LAYER, MODEL_FILE, STYLE_LAYERS, AdaINParams


def adain(content: Tensor, style: Tensor, eps: float = 1e-5) -> Tensor:
    """Adaptive instance normalisation (paper eq. 8): content features with the style's channel mean and std.

    ``(content - mean(content)) / std(content) * std(style) + mean(style)`` per sample and channel, over space.
    Shapes (B, C, H, W) and (B or 1, C, H', W').
    """
    c_mean, c_std = mean_std(content, eps)
    s_mean, s_std = mean_std(style, eps)
    return (content - c_mean) / c_std * s_std + s_mean


def adain_transfer(content: Tensor, styles: Sequence[tuple[Tensor, float]], alpha: float = 1.0) -> Tensor:
    """The decoder's input for ``content`` features in the style of ``styles``: a pure function of features.

    ``styles``: (style features, weight) pairs; the AdaIN targets (:func:`adain`) are mixed with these weights in
    order (paper sec. 7.2: style interpolation; weights that sum to 1), then interpolated with the content features:
    ``alpha * mixed + (1 - alpha) * content`` (paper eq. 14: the content-style trade-off).
    """
    target = torch.zeros_like(content)
    for feats, weight in styles:
        target += weight * adain(content, feats)
    return alpha * target + (1 - alpha) * content


def match_color(style: Tensor, content: Tensor, eps: float = 1e-5) -> Tensor:
    """Colour preservation (paper sec. 7.3, after Gatys et al. 2017): a linear map of the style image's RGB so its
    mean and covariance equal the content's: ``x' = C_c^1/2 C_s^-1/2 (x - mu_s) + mu_c``, clamped to [0, 1]."""

    def stats(img: Tensor) -> tuple[Tensor, Tensor]:
        flat = img.reshape(3, -1).double()
        mu = flat.mean(dim=1, keepdim=True)
        centred = flat - mu
        cov = centred @ centred.T / flat.shape[1] + eps * torch.eye(3, dtype=flat.dtype, device=flat.device)
        return mu, cov

    def sqrtm(m: Tensor, inverse: bool = False) -> Tensor:
        vals, vecs = torch.linalg.eigh(m)
        vals = vals.clamp_min(eps)
        return vecs @ torch.diag(vals.rsqrt() if inverse else vals.sqrt()) @ vecs.T

    out = []
    for s, c in zip(style, content.expand(style.shape[0], *content.shape[1:]), strict=True):
        mu_s, cov_s = stats(s)
        mu_c, cov_c = stats(c)
        mapped = sqrtm(cov_c) @ sqrtm(cov_s, inverse=True) @ (s.reshape(3, -1).double() - mu_s) + mu_c
        out.append(mapped.reshape(s.shape).to(style.dtype))
    return torch.stack(out).clamp(0, 1)


def _conv(cin: int, cout: int, relu: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3)]
    return [*layers, nn.ReLU()] if relu else layers


class Decoder(nn.Sequential):
    """Mirror of VGG-19 up to relu4_1: relu4_1 (512 ch, 1/8 size) -> RGB at full size (paper sec. 6)."""

    def __init__(self) -> None:
        up = nn.Upsample(scale_factor=2, mode="nearest")
        # One row per resolution, mirroring the encoder's blocks (the formatter would put one layer per line).
        super().__init__(
            *_conv(512, 256), up,
            *_conv(256, 256), *_conv(256, 256), *_conv(256, 256), *_conv(256, 128), nn.Upsample(scale_factor=2),
            *_conv(128, 128), *_conv(128, 64), nn.Upsample(scale_factor=2),
            *_conv(64, 64), *_conv(64, 3, relu=False),
        )  # fmt: skip


class AdaIN(nn.Module):
    """AdaIN style transfer: ``stylize(content, style)`` with alpha, colour preservation and style interpolation."""

    name = "adain"
    model_file = MODEL_FILE

    def __init__(self, params: AdaINParams | None = None, *, encoder: VGGEncoder | None = None) -> None:
        super().__init__()
        self.params = params or AdaINParams()
        if encoder is None:
            encoder = load_encoder("caffe", last_layer=CONTENT_LAYER, normalise=self.params.encoder_normalise)
        self.encoder = encoder
        torch.manual_seed(self.params.train.init_seed)
        self.decoder = Decoder()

    # ------------------------------------------------------------------------------------------ construction

    def save(self, path: str | Path, extra: Mapping[str, Any] | None = None) -> Path:
        """Write the decoder weights (+ metadata) to ``path`` (a folder -> ``<folder>/decoder.pt``), atomically."""
        return save_modules({"decoder": self.decoder}, path, MODEL_FILE, self.encoder.weights_sha256, extra)

    def load(self, path: str | Path) -> AdaIN:
        """Load decoder weights written by :meth:`save` (a folder or the .pt file)."""
        load_modules(
            {"decoder": self.decoder},
            path,
            MODEL_FILE,
            label="AdaIN",
            stage="train@adain",
            encoder_sha256=self.encoder.weights_sha256,
        )
        return self

    # ------------------------------------------------------------------------------------------ model

    def encode(self, image: Tensor, layers: Sequence[str] = (CONTENT_LAYER,)) -> dict[str, Tensor]:
        return self.encoder(image, layers)

    def decode(self, feats: Tensor) -> Tensor:
        return self.decoder(feats)

    def reconstruct(self, image: Tensor) -> Tensor:
        """decoder(encoder(x)) at x's exact size (inputs padded to a multiple of 8, output cropped)."""
        padded, (h, w) = pad_to_multiple(image, 8)
        return self.decode(self.encode(padded)[CONTENT_LAYER])[..., :h, :w]

    def trainable(self) -> dict[str, nn.Module]:
        return {"decoder": self.decoder}

    def losses(self, content: Tensor, style: Tensor) -> dict[str, Tensor]:
        """Weighted training loss terms for a batch (paper eqs. 11-12): ``content``, ``style``, ``total``."""
        with torch.no_grad():  # statistics and targets in float32, also under bf16 autocast
            c_feat = self.encode(content)[CONTENT_LAYER].float()
            s_feats = {k: v.float() for k, v in self.encode(style, STYLE_LAYERS).items()}
            target = adain(c_feat, s_feats[CONTENT_LAYER])
        decoded = self.decode(target)
        out_feats = self.encode(decoded, STYLE_LAYERS)
        out_feats = {k: v.float() for k, v in out_feats.items()}
        c = content_loss(out_feats[CONTENT_LAYER], target.float()).mean()
        s = mean_std_loss(out_feats, s_feats).mean()
        train = self.params.train
        return weighted_terms(
            {"content": c, "style": s}, {"content": train.content_weight, "style": train.style_weight}
        )

    # ------------------------------------------------------------------------------------------ inference

    @torch.no_grad()
    def stylize(
        self,
        content: Tensor,
        style: Tensor | Sequence[Tensor],
        *,
        style_weights: Sequence[float] | None = None,
        callback: Any = None,
        **overrides: Any,
    ) -> Tensor:
        """Stylize ``content`` (B, 3, H, W) in [0, 1]; output has its shape.

        Args:
            style: one style image (1 or B, 3, H', W'), or a list of styles to interpolate (paper sec. 7.2).
            style_weights: interpolation weights for a list of styles (normalised to sum 1; default equal).
            callback: accepted for interface compatibility with optimisation methods; never called (no steps).
            **overrides: ``alpha``, ``preserve_color`` (and the other :class:`AdaINParams`) for this call.
        """
        p = self.params.replace(**overrides) if overrides else self.params
        mixture = style_mixture(style, style_weights, "adain")
        device = content.device
        precision = Precision.resolve(p.amp, p.channels_last, device)
        encoder = precision.module_on(self.encoder, device)  # the shared encoder itself stays as it is
        precision.module(self.decoder.to(device))
        self.decoder.eval()
        padded, (h, w) = pad_to_multiple(content.float(), 8)

        def features(image: Tensor) -> Tensor:
            return encoder(precision.image(image), (CONTENT_LAYER,))[CONTENT_LAYER].float()

        with precision.autocast():
            c_feat = features(padded)
            styles = []
            for s, weight in mixture:
                s = s.to(device).float()
                styles.append((features(match_color(s, content.float()) if p.preserve_color else s), weight))
            out = self.decode(adain_transfer(c_feat, styles, p.alpha))
        return out.float()[..., :h, :w].contiguous().clamp(0, 1).to(content.dtype)
