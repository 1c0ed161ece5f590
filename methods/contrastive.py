"""IEContraAST-style arbitrary style transfer (Chen et al., "Artistic Style Transfer with Internal-external Learning
and Contrastive Learning", NeurIPS 2021; reference code HalbertCH/IEContraAST ``net.py`` / ``train.py``).

Generator: the shared VGG-19 (frozen; by default the per-filter-normalised caffe network, as the reference's
``vgg_normalised``) to relu5_1; SANet attention (Park & Lee 2019) at relu4_1 and at relu5_1;
the relu5_1 result upsampled to relu4_1's size, added, merged by a 3x3 conv; the AdaIN decoder back to RGB.

Training (paper sec. 3, eq. 9): content loss on mean/variance-normalised relu4_1 and relu5_1; mean/std style loss on
relu1_1..relu5_1; two identity losses (stylizing an image with itself must give it back, in pixels and in features);
*internal-external* learning: an LSGAN multi-scale discriminator that sees real artworks from the style training set;
*contrastive* learning: a batch of k contents x k styles gives 2k stylizations in which every stylization shares its
style with exactly one other and its content with exactly one other (:func:`contrastive_batch`); InfoNCE pulls the
style embeddings (relu3_1 -> projection head) of same-style stylizations together and the content embeddings
(relu4_1 -> head) of same-content stylizations together.

Differences from the reference, on purpose:
- the contrastive losses come from masks over the whole batch (any k >= 2), not a hand-indexed loop that only works
  for one layout; they average over anchors where the reference sums, so their weights carry the factor (below);
- the heads pool features by their spatial mean (the reference sums: a size-dependent scale);
- everything needed to resume (heads, discriminator, both optimisers, RNG) is checkpointed (methods/training.py).

As in train.py, each iteration steps the discriminator first (on the detached fakes of the generator's forward pass),
then the generator against the updated discriminator (methods/training.py :func:`train_step`). Batches hold distinct
contents and distinct styles (``distinct_batches``): a shared image would be an InfoNCE negative of itself.

Encoder scale: the reference's loss weights are made for ``vgg_normalised`` (every filter's mean activation about 1),
which ``encoder_normalise = "per_filter"`` reproduces (methods/encoder.py). With ``"none"`` (the raw caffe network,
activations growing with depth to hundreds) the features are used as they are: no hidden rescaling, and the
feature-space terms then outweigh the others at the reference's weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.adain import Decoder
from methods.encoder import VGGEncoder, load_encoder
from methods.errors import NstError
from methods.feedforward import load_modules, save_modules, style_mixture
from methods.image import pad_to_multiple
from methods.losses import content_loss, mean_std, mean_std_loss, mse_per_item, weighted_terms
from methods.precision import Precision
from methods.schemas.contrastive_params import CONTENT_LAYERS, LAYERS, MODEL_FILE, ContrastiveParams

STYLE_EMBED_LAYER = "relu3_1"  # net.py: style_feature_contrastive(g_t_feats[2])
CONTENT_EMBED_LAYER = "relu4_1"  # net.py: content_feature_contrastive(g_t_feats[3])


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
    """Spatial-mean-pooled features -> 2-layer MLP -> L2-normalised embedding (B, out_dim).

    Sizes as the reference's heads (net.py): style 256 -> 128 -> 128 on relu3_1, content 512 -> 256 -> 128 on relu4_1.
    """

    def __init__(self, in_channels: int, hidden: int = 128, out_dim: int = 128) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_channels, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

    def forward(self, feats: Tensor) -> Tensor:
        return F.normalize(self.mlp(feats.float().mean(dim=(2, 3))), dim=1)


class MultiScaleDiscriminator(nn.Module):
    """PatchGAN discriminators at ``scales`` resolutions, each 2x average-pooled from the previous.

    Each: ``depth`` stride-2 4x4 conv blocks (``width``, 2x per block; instance norm after all but the first;
    LeakyReLU 0.2) and a 3x3 conv to one channel — the reference's ``MultiDiscriminator`` (net.py: 3 scales, 64..512).
    Returns one (B, 1, h_s, w_s) patch map per scale; trained with the LSGAN objective (:func:`lsgan_loss`).
    """

    def __init__(self, scales: int = 3, width: int = 64, depth: int = 4) -> None:
        super().__init__()
        if scales < 1 or depth < 1:
            raise NstError("the discriminator needs at least one scale and one block")
        self.nets = nn.ModuleList()
        for _ in range(scales):
            layers: list[nn.Module] = []
            cin, cout = 3, width
            for block in range(depth):
                layers.append(nn.Conv2d(cin, cout, 4, stride=2, padding=1))
                if block:
                    layers.append(nn.InstanceNorm2d(cout))
                layers.append(nn.LeakyReLU(0.2))
                cin, cout = cout, cout * 2
            layers.append(nn.Conv2d(cin, 1, 3, padding=1))
            self.nets.append(nn.Sequential(*layers))

        self.min_side = 2 ** (depth + 1)  # the last block's instance norm needs >= 2 x 2 positions

    def input_sides(self, side: int) -> list[int]:
        """The input side each scale sees for ``side`` x ``side`` images; scales below ``min_side`` are left out."""
        sides = []
        for i in range(len(self.nets)):
            if i:
                side = (side - 1) // 2 + 1  # avg_pool2d(3, stride 2, padding 1)
            if side < self.min_side:
                break
            sides.append(side)
        return sides

    def forward(self, image: Tensor) -> list[Tensor]:
        """Patch maps per scale; scales whose input is below ``min_side`` px are skipped (small training crops)."""
        if min(image.shape[-2:]) < self.min_side:
            raise NstError(f"discriminator input {tuple(image.shape[-2:])} is below its {self.min_side} px minimum")
        outputs = []
        for i, net in enumerate(self.nets):
            if i:
                image = F.avg_pool2d(image, 3, stride=2, padding=1, count_include_pad=False)
                if min(image.shape[-2:]) < self.min_side:
                    break
            outputs.append(net(image))
        return outputs


def lsgan_loss(outputs: list[Tensor], target_real: bool) -> Tensor:
    """Least-squares GAN loss (Mao et al. 2017): sum over scales of ``mean((D - t)^2)``, t = 1 real / 0 fake
    (the reference's ``MultiDiscriminator.compute_loss`` sums over its scales, which its GAN weight 5 assumes)."""
    target = 1.0 if target_real else 0.0
    return torch.stack([(o.float() - target).pow(2).mean() for o in outputs]).sum()


class Transform(nn.Module):
    """SANet at relu4_1 and relu5_1; the relu5_1 output upsampled (nearest) to relu4_1's size, added, 3x3-merged."""

    def __init__(self, channels: int = 512) -> None:
        super().__init__()
        self.sanet4_1 = SANet(channels)
        self.sanet5_1 = SANet(channels)
        self.merge = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3))

    def forward(self, content: Mapping[str, Tensor], style: Mapping[str, Tensor]) -> Tensor:
        deep = self.sanet5_1(content["relu5_1"], style["relu5_1"])
        deep = F.interpolate(deep, size=content["relu4_1"].shape[-2:], mode="nearest")
        return self.merge(self.sanet4_1(content["relu4_1"], style["relu4_1"]) + deep)


class ContrastiveBatch(NamedTuple):
    """Which stylizations a batch holds and how they relate (see :func:`contrastive_batch`)."""

    content_idx: Tensor  # (2k,) index into the k content images
    style_idx: Tensor  # (2k,) index into the k style images
    style_pos: Tensor  # (2k, 2k) bool: two different stylizations sharing a style
    content_pos: Tensor  # (2k, 2k) bool: two different stylizations sharing a content
    unrelated: Tensor  # (2k, 2k) bool: sharing neither — the negatives of both losses


def contrastive_batch(k: int) -> ContrastiveBatch:
    """Stylization pairs and masks for ``k`` content and ``k`` style images (a batch of ``2k`` stylizations).

    Pairs ``i < k`` stylize content ``i`` with style ``i``; pairs ``k + i`` stylize content ``i`` with style
    ``(i + 1) mod k``. So every content and every style appears in exactly two stylizations, and each
    stylization has exactly one positive for each loss: the other one sharing its style (style-contrastive) or
    sharing its content (content-contrastive). Negatives are the stylizations sharing neither: the one sharing
    the anchor's *content* is left out of the style loss (and vice versa), as the reference's comparison lists do —
    pushing it away would push on content, not style.
    """
    if k < 2:
        raise NstError(f"contrastive batches need k >= 2 content and style images (batch 2k >= 4), got k = {k}")
    idx = torch.arange(k)
    content_idx = torch.cat([idx, idx])
    style_idx = torch.cat([idx, (idx + 1) % k])
    eye = torch.eye(2 * k, dtype=torch.bool)
    same_style = style_idx[:, None] == style_idx[None, :]
    same_content = content_idx[:, None] == content_idx[None, :]
    return ContrastiveBatch(content_idx, style_idx, same_style & ~eye, same_content & ~eye, ~same_style & ~same_content)


def info_nce(embeddings: Tensor, positives: Tensor, tau: float = 0.2, negatives: Tensor | None = None) -> Tensor:
    """Masked InfoNCE (supervised-contrastive form) over a batch of L2-normalised embeddings (N, D).

    For anchor ``a`` with positives ``P(a)`` and negatives ``N(a)`` (rows of (N, N) boolean masks; the diagonal is
    ignored; ``negatives`` defaults to every sample that is not a positive):
    ``-log( sum_P exp(s_ap / tau) / sum_{P + N} exp(s_ab / tau) )`` with cosine similarities ``s``; the mean over
    anchors that have a positive. tau = 0.2 (paper sec. 4; net.py ``compute_contrastive_loss(..., 0.2, ...)``).
    """
    n = embeddings.shape[0]
    for name, mask in (("positives", positives), ("negatives", negatives)):
        if mask is not None and mask.shape != (n, n):
            raise NstError(f"{name} mask must be ({n}, {n}), got {tuple(mask.shape)}")
    # Which anchors have a positive is read on the mask's own device (the CPU in training): no GPU sync per step.
    has_pos = (positives & ~torch.eye(n, dtype=torch.bool, device=positives.device)).any(dim=1)
    if not has_pos.any():
        raise NstError("info_nce: no anchor has a positive")
    eye = torch.eye(n, dtype=torch.bool, device=embeddings.device)
    pos = positives.to(embeddings.device) & ~eye
    neg = ~pos & ~eye if negatives is None else negatives.to(embeddings.device) & ~eye & ~pos
    # Logits, their logsumexps and the loss in float32 with autocast off: under bf16 autocast the matmul would run in
    # bf16 (8 mantissa bits), and exp(s / tau) amplifies its rounding (tau = 0.2).
    with torch.autocast(embeddings.device.type, enabled=False):
        logits = embeddings.float() @ embeddings.float().T / tau
        log_denominator = torch.logsumexp(logits.masked_fill(~(pos | neg), float("-inf")), dim=1)
        log_numerator = torch.logsumexp(logits.masked_fill(~pos, float("-inf")), dim=1)
        per_anchor = log_denominator - log_numerator
        if bool(has_pos.all()):
            return per_anchor.mean()
        return per_anchor[has_pos.to(embeddings.device)].mean()


# ------------------------------------------------------------------------------------------------ the method


class Contrastive(nn.Module):
    """SANet generator trained with internal-external (GAN) and contrastive learning; ``stylize(content, style)``."""

    name = "contrastive"
    model_file = MODEL_FILE
    distinct_batches = True  # a shared content or style would be an InfoNCE negative of itself

    def __init__(self, params: ContrastiveParams | None = None, *, encoder: VGGEncoder | None = None) -> None:
        super().__init__()
        self.params = params or ContrastiveParams()
        if encoder is None:
            encoder = load_encoder("caffe", last_layer="relu5_1", normalise=self.params.encoder_normalise)
        self.encoder = encoder
        torch.manual_seed(self.params.train.init_seed)
        self.transform = Transform(512)
        self.decoder = Decoder()
        self.style_head = ProjectionHead(256, hidden=128, out_dim=128)  # net.py projection_style
        self.content_head = ProjectionHead(512, hidden=256, out_dim=128)  # net.py projection_content
        self.discriminator = MultiScaleDiscriminator(scales=3, width=64, depth=4)  # net.py MultiDiscriminator

    # ------------------------------------------------------------------------------------------ construction

    def save(self, path: str | Path, extra: Mapping[str, Any] | None = None) -> Path:
        """Write the generator (transform + decoder) and metadata to ``path`` (a folder -> ``generator.pt``).

        Heads and discriminator are needed only to continue training; they live in the training checkpoints.
        """
        return save_modules(self._generator(), path, MODEL_FILE, self.encoder.weights_sha256, extra)

    def load(self, path: str | Path) -> Contrastive:
        load_modules(
            self._generator(),
            path,
            MODEL_FILE,
            label="contrastive",
            stage="train@contrastive",
            encoder_sha256=self.encoder.weights_sha256,
        )
        return self

    def _generator(self) -> dict[str, nn.Module]:
        return {"transform": self.transform, "decoder": self.decoder}

    # ------------------------------------------------------------------------------------------ training

    def trainable(self) -> dict[str, nn.Module]:
        # One Adam over generator and heads, as train.py's `optimizer` (decoder, transform, proj_style, proj_content).
        return {
            "transform": self.transform,
            "decoder": self.decoder,
            "style_head": self.style_head,
            "content_head": self.content_head,
        }

    def adversary(self) -> dict[str, nn.Module]:
        return {"discriminator": self.discriminator}

    @staticmethod
    def batch_split(batch_size: int) -> tuple[int, int]:
        """``batch_size`` stylizations come from ``batch_size / 2`` contents and as many styles (train.py)."""
        if batch_size < 4 or batch_size % 2:
            raise NstError(
                f"contrastive: batch_size must be even and >= 4 (k contents x k styles -> 2k), got {batch_size}"
            )
        return batch_size // 2, batch_size // 2

    def encode(self, image: Tensor, layers: Sequence[str] = LAYERS) -> dict[str, Tensor]:
        """The encoder's features, as they are (training and inference)."""
        return self.encoder(image, layers)

    def train_info(self, crop: int) -> dict[str, Any]:
        """What training at ``crop`` px uses of the architecture: the discriminator scales that see the crops (the
        others would get inputs below their minimum side and are left out)."""
        sides = self.discriminator.input_sides(crop)
        return {
            "discriminator_scales": len(self.discriminator.nets),
            "discriminator_scales_used": len(sides),
            "discriminator_input_px": sides,
        }

    def losses(self, content: Tensor, style: Tensor) -> dict[str, Tensor]:
        """:meth:`generator_losses`' terms alone."""
        return self.generator_losses(content, style)[0]

    def generator_losses(self, content: Tensor, style: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """Weighted generator loss terms for k contents and k styles (paper eq. 9), ``"total"`` included — all but the
        adversarial one, which :meth:`adversarial_losses` adds after the discriminator's step (train.py's order) —
        and the 2k stylizations, which the caller hands to :meth:`adversary_losses` and :meth:`adversarial_losses`
        (nothing is kept between calls)."""
        k = content.shape[0]
        if style.shape[0] != k:
            raise NstError(f"contrastive: needs as many styles as contents, got {k} and {style.shape[0]}")
        batch = contrastive_batch(k)
        ci, si = batch.content_idx.to(content.device), batch.style_idx.to(content.device)
        inputs = torch.cat([content, style])  # also the targets of the identity reconstructions, in this order
        with torch.no_grad():
            both = self.encode(inputs)
        c_feats = {name: f[:k] for name, f in both.items()}
        s_feats = {name: f[k:] for name, f in both.items()}
        pair_c = {name: f[ci] for name, f in c_feats.items()}
        pair_s = {name: f[si] for name, f in s_feats.items()}
        # One decoder pass over the 2k stylizations and the 2k identity reconstructions (content-content, style-style).
        feats = torch.cat(
            [self.transform(pair_c, pair_s), self.transform(c_feats, c_feats), self.transform(s_feats, s_feats)]
        )
        images = self.decoder(feats)
        stylized, identity = images[: 2 * k], images[2 * k :]
        out = {name: f.float() for name, f in self.encode(images).items()}
        g_feats = {name: f[: 2 * k] for name, f in out.items()}
        i_feats = {name: f[2 * k :] for name, f in out.items()}
        target = {name: f.float() for name, f in both.items()}  # contents then styles, as the identity images

        p = self.params
        loss_c = sum(
            content_loss(mean_variance_norm(g_feats[n]), mean_variance_norm(pair_c[n].float())) for n in CONTENT_LAYERS
        ).mean()
        loss_s = mean_std_loss(g_feats, {n: f.float() for n, f in pair_s.items()}).mean()
        id_pixel = 2 * mse_per_item(identity.float(), inputs.float()).mean()
        id_feature = 2 * sum(mse_per_item(i_feats[n], target[n]) for n in LAYERS).mean()
        style_nce = info_nce(self.style_head(g_feats[STYLE_EMBED_LAYER]), batch.style_pos, p.train.tau, batch.unrelated)
        content_nce = info_nce(
            self.content_head(g_feats[CONTENT_EMBED_LAYER]), batch.content_pos, p.train.tau, batch.unrelated
        )
        raw = {
            "content": loss_c,
            "style": loss_s,
            "identity_pixel": id_pixel,
            "identity_feature": id_feature,
            "style_contrastive": style_nce,
            "content_contrastive": content_nce,
        }
        weights = {
            "content": p.train.content_weight,
            "style": p.train.style_weight,
            "identity_pixel": p.train.identity_pixel_weight,
            "identity_feature": p.train.identity_feature_weight,
            "style_contrastive": p.train.style_contrastive_weight,
            "content_contrastive": p.train.content_contrastive_weight,
        }
        return weighted_terms(raw, weights), stylized

    def adversary_losses(self, real: Tensor, fakes: Tensor) -> dict[str, Tensor]:
        """Discriminator LSGAN loss: ``real`` (the style batch: real artworks) -> 1, ``fakes`` (a generator pass's
        stylizations, detached here) -> 0."""
        real_loss = lsgan_loss(self.discriminator(real), target_real=True)
        fake_loss = lsgan_loss(self.discriminator(fakes.detach()), target_real=False)
        return {"real": real_loss, "fake": fake_loss, "total": real_loss + fake_loss}

    def adversarial_losses(self, fakes: Tensor) -> dict[str, Tensor]:
        """The generator's weighted LSGAN term ``gan``: ``fakes`` (a generator pass's stylizations) judged real (-> 1)
        by the discriminator as it is now; gradients reach the generator through them."""
        gan = lsgan_loss(self.discriminator(fakes), target_real=True)
        return {"gan": self.params.train.gan_weight * gan}

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
            style: one style image (1 or B, 3, H', W'), or a list of styles mixed in feature space by ``style_weights``.
            callback: accepted for interface compatibility with optimisation methods; never called.
            **overrides: ``alpha`` (and the other :class:`ContrastiveParams`) for this call.
        """
        p = self.params.replace(**overrides) if overrides else self.params
        mixture = style_mixture(style, style_weights, "contrastive")
        device = content.device
        precision = Precision.resolve(p.amp, p.channels_last, device)
        encoder = precision.module_on(self.encoder, device)  # the shared encoder itself stays as it is
        for module in (self.transform, self.decoder):
            precision.module(module.to(device))
        self.transform.eval()
        self.decoder.eval()
        padded, (h, w) = pad_to_multiple(content.float(), 16)  # relu5_1 is 1/16 of the input
        with precision.autocast():
            c_feats = encoder(precision.image(padded), ("relu4_1", "relu5_1"))
            feat: Tensor | None = None
            for s, weight in mixture:
                s_padded, _ = pad_to_multiple(s.to(device).float(), 16)
                s_feats = encoder(precision.image(s_padded), ("relu4_1", "relu5_1"))
                if s_feats["relu4_1"].shape[0] != c_feats["relu4_1"].shape[0]:
                    s_feats = {n: f.expand(c_feats[n].shape[0], *f.shape[1:]) for n, f in s_feats.items()}
                term = weight * self.transform(c_feats, s_feats).float()
                feat = term if feat is None else feat + term
            assert feat is not None
            if p.alpha < 1.0:
                feat = p.alpha * feat + (1.0 - p.alpha) * self.transform(c_feats, c_feats).float()
            out = self.decoder(feat)
        return out.float()[..., :h, :w].contiguous().clamp(0, 1).to(content.dtype)
