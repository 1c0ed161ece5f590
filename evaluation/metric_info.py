"""What each metric means, for people: the description, network and normalisation the report and scoring.json print.

Names and directions come from evaluation/metric_names.py, the numbers quoted from evaluation/metric_constants.py;
only the stages that print these words (evaluate, report) import this module, so editing a description reruns
nothing else. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from evaluation.metric_constants import (
    LPIPS_NETWORK,
    NO_NETWORK,
    STYLE_EMBED_DIM,
    STYLE_EMBED_FILE,
    STYLE_EMBED_PACKAGE,
    STYLE_EMBED_SHA256,
    STYLE_LAYERS,
)
from evaluation.metric_names import HIGHER_IS_BETTER, SUMMARY_HIGHER_IS_BETTER

STYLE_NETWORK = "VGG-19 caffe, per-filter normalised (filters rescaled to mean activation 1)"

STYLE_EMBED_NETWORK = (
    f"Ghiasi et al. 2017 style predictor as deployed by Magenta: int8 MobileNet-v2 (distilled from the paper's "
    f"Inception-v3), {STYLE_EMBED_FILE} sha256 {STYLE_EMBED_SHA256} ({STYLE_EMBED_PACKAGE} 0.1.0, onnxruntime CPU)"
)


@dataclass(frozen=True)
class MetricInfo:
    """What a metric compares, which way is better, and which network / normalisation it uses."""

    name: str
    compares_to: Literal["content", "style", "content+style"]
    description: str
    network: str
    normalisation: str

    @property
    def higher_is_better(self) -> bool:
        """evaluation/metric_names.py's direction (the one place it is stated)."""
        return {**HIGHER_IS_BETTER, **SUMMARY_HIGHER_IS_BETTER}[self.name]


def _style_infos() -> list[MetricInfo]:
    infos = []
    for kind, what, norm in (
        (
            "gram",
            "relative squared Gram distance |G_o - G_s|^2 / (|G_o|^2 + |G_s|^2), in [0, 1]",
            "G = F F^T / (C*H*W), F the (C, H*W) features; Frobenius norms (the ratio is free of the Gram scale)",
        ),
        (
            "meanstd",
            "relative squared distance of channel means and stds "
            "(|dmu|^2 + |dsigma|^2) / (|mu_o|^2 + |sigma_o|^2 + |mu_s|^2 + |sigma_s|^2), in [0, 1]",
            "per-channel mean and std over positions, std = sqrt(unbiased var + 1e-5); norms over the C channels",
        ),
    ):
        for layer in STYLE_LAYERS:
            infos.append(
                MetricInfo(f"style_{kind}_{layer}", "style", f"{what} at {layer}, output vs style", STYLE_NETWORK, norm)
            )
        infos.append(
            MetricInfo(
                f"style_{kind}",
                "style",
                f"{what}, mean over {', '.join(STYLE_LAYERS)}, output vs style",
                STYLE_NETWORK,
                f"{norm}; each layer weighs 1/{len(STYLE_LAYERS)}",
            )
        )
    return infos


METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo(
            "content_loss",
            "content",
            "MSE of relu4_2 features, output vs content",
            "VGG-19 caffe, raw (not per-filter normalised)",
            "mean over C*H*W of squared differences",
        ),
        *_style_infos(),
        MetricInfo(
            "style_embed",
            "style",
            f"Euclidean distance between the {STYLE_EMBED_DIM}-d style embeddings of Ghiasi et al.'s style-prediction "
            "network, output vs style",
            STYLE_EMBED_NETWORK,
            "each image as the package embeds a style image: centred square crop, Lanczos resize to 256 x 256, RGB / "
            "255; L2 norm of the difference of the two vectors (float64)",
        ),
        MetricInfo(
            "color_hist",
            "style",
            "Hellinger distance of RGB-uv histograms (HistoGAN), output vs style",
            NO_NETWORK,
            "3 x 64 x 64 log-chroma histograms, intensity-weighted, inverse-quadratic kernel sigma "
            "0.02, summing to 1; images above 256 px resized to 256 x 256; ||sqrt h1 - sqrt h2||_2 / sqrt 2",
        ),
        MetricInfo(
            "lpips",
            "content",
            "LPIPS (AlexNet), output vs content",
            LPIPS_NETWORK,
            "inputs scaled to [-1, 1]; unit-normalised channels, learned linear heads, spatial mean",
        ),
        MetricInfo(
            "ssim",
            "content",
            "SSIM on RGB (mean over channels), output vs content",
            NO_NETWORK,
            "data_range 1, 11x11 Gaussian window sigma 1.5, K = (0.01, 0.03), no downsampling",
        ),
        MetricInfo(
            "ssim_lum",
            "content",
            "SSIM on luma Y (BT.601), output vs content",
            NO_NETWORK,
            "Y = 0.299 R + 0.587 G + 0.114 B; data_range 1, 11x11 Gaussian sigma 1.5, no downsampling",
        ),
        MetricInfo(
            "cfsd",
            "content",
            "KL between relu3_1 patch self-similarity distributions, vs content (StyleID's formula); n/a for an "
            "image whose softmax rows saturate (more than 1 % with max > 0.99)",
            "VGG-19 torchvision (ImageNet) if present else caffe (features scaled by 1/57.63 to torchvision's "
            "range; caffe values are not comparable to published ones)",
            "features / C (no L2 normalisation), row softmax, KL summed over positions ('batchmean', one "
            "image per batch), full resolution",
        ),
    )
}

SUMMARY_METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo(
            "fid_imagenet",
            "style",
            "FID of a method's outputs vs the style images on pytorch-fid's ImageNet Inception (not ArtFID's)",
            "Inception-v3 (pytorch-fid, TF 2015-12-05 ImageNet weights)",
            "pool3 2048-d features of inputs resized to 299 x 299 and scaled to [-1, 1]; sample covariance; "
            "one style image per output (the pair's own)",
        ),
        MetricInfo(
            "artfid",
            "content+style",
            "ArtFID (Wright & Ommer 2022) = (1 + mean LPIPS vs content) * (1 + FID vs style on their art Inception)",
            "Inception-v3 trained on art (Wright & Ommer, art_inception.pth) and AlexNet (LPIPS v0.1)",
            "as art-fid: images at their own size (not resized), RGB in [0, 1], no mean/std; 2048-d average-pooled "
            "features, sample covariance, one style image per output; LPIPS inputs in [-1, 1]",
        ),
    )
}

assert tuple(METRICS) == tuple(HIGHER_IS_BETTER), "evaluation/metric_names.py and METRICS list different metrics"
assert tuple(SUMMARY_METRICS) == tuple(SUMMARY_HIGHER_IS_BETTER)
