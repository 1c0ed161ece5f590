"""Independent computations the metrics are pinned to: line-by-line ports of the reference code and naive loops.

Written from the papers' formulas and the reference files cited in evaluation/metrics.py (read, not copied); slow on
purpose (explicit loops, float64) and only ever run on tiny inputs.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# ------------------------------------------------------------------------------------------- style (loops)


def naive_gram(feat: np.ndarray) -> np.ndarray:
    """G[i, j] = sum_p F[i, p] F[j, p] / (C H W) for one (C, H, W) feature map, entry by entry."""
    c, h, w = feat.shape
    flat = feat.reshape(c, h * w)
    gram = np.zeros((c, c))
    for i in range(c):
        for j in range(i, c):
            gram[i, j] = gram[j, i] = float(np.dot(flat[i], flat[j])) / (c * h * w)
    return gram


def naive_gram_distance(feat: np.ndarray, target: np.ndarray) -> float:
    """Sum over the C x C entries of the squared Gram difference over the sum of both Grams' squared entries."""
    g1, g2 = naive_gram(feat), naive_gram(target)
    c = g1.shape[0]
    diff = sum((g1[i, j] - g2[i, j]) ** 2 for i in range(c) for j in range(c))
    norm = sum(g1[i, j] ** 2 + g2[i, j] ** 2 for i in range(c) for j in range(c))
    return diff / norm


def naive_meanstd_distance(feat: np.ndarray, target: np.ndarray, eps: float = 1e-5) -> float:
    """(sum of squared mean and std differences) / (sum of the four squared statistics) over the channels, std =
    sqrt(unbiased var + eps) (pytorch-AdaIN calc_mean_std)."""

    def stats(x: np.ndarray) -> tuple[list[float], list[float]]:
        means, stds = [], []
        for ch in x:
            values = ch.ravel().tolist()
            n = len(values)
            m = sum(values) / n
            var = sum((v - m) ** 2 for v in values) / (n - 1 if n > 1 else 1)
            means.append(m)
            stds.append(math.sqrt(var + eps))
        return means, stds

    m1, s1 = stats(feat)
    m2, s2 = stats(target)
    diff = sum((a - b) ** 2 for a, b in zip(m1 + s1, m2 + s2, strict=True))
    norm = sum(a * a for a in m1 + s1 + m2 + s2)
    return diff / norm


# ------------------------------------------------------------------------------- RGB-uv histogram (loops)

HIST_EPS = 1e-6


def naive_rgb_uv_hist(image: np.ndarray, bins: int = 64, sigma: float = 0.02) -> np.ndarray:
    """StyleID eval_histogan.py RGBuvHistBlock (inverse-quadratic, intensity scale) pixel by pixel, bin by bin.

    ``image``: (3, H, W) float64 in [0, 1], at most 256 px a side (the reference's resize is not ported here).
    """
    img = np.clip(image, 0.0, 1.0)
    centres = np.linspace(-3, 3, num=bins)
    others = {0: (1, 2), 1: (0, 2), 2: (0, 1)}
    hist = np.zeros((3, bins, bins))
    for y in range(img.shape[1]):
        for x in range(img.shape[2]):
            rgb = img[:, y, x]
            iy = math.sqrt(rgb[0] ** 2 + rgb[1] ** 2 + rgb[2] ** 2 + HIST_EPS)
            for c in range(3):
                a, b = others[c]
                u = math.log(rgb[c] + HIST_EPS) - math.log(rgb[a] + HIST_EPS)
                v = math.log(rgb[c] + HIST_EPS) - math.log(rgb[b] + HIST_EPS)
                ku = [1 / (1 + (abs(u - t) ** 2) / sigma**2) for t in centres]
                kv = [1 / (1 + (abs(v - t) ** 2) / sigma**2) for t in centres]
                for i in range(bins):
                    for j in range(bins):
                        hist[c, i, j] += iy * ku[i] * kv[j]
    total = 0.0
    for value in hist.ravel():
        total += value
    return hist / (total + HIST_EPS)


def naive_hellinger(h1: np.ndarray, h2: np.ndarray) -> float:
    """(1 / sqrt 2) sqrt(sum (sqrt h2 - sqrt h1)^2) (eval_histogan.py:264-266, one pair)."""
    total = 0.0
    for a, b in zip(h1.ravel(), h2.ravel(), strict=True):
        total += (math.sqrt(b) - math.sqrt(a)) ** 2
    return 1 / math.sqrt(2.0) * math.sqrt(total)


# ----------------------------------------------------------------------------------------------- CFSD


def port_patch_simi(feat_input: torch.Tensor, feat_target: torch.Tensor) -> torch.Tensor:
    """StyleID image_metrics.py PatchSimi.forward on relu3_1 features, line by line (patch_simi_cnt/out, kl_div)."""

    def patch_simi(x: torch.Tensor, log: bool) -> torch.Tensor:
        b, c, h, w = x.size()
        x = torch.transpose(x, 1, 3)
        features = x.reshape(b, h * w, c).div(c)
        feature_t = torch.transpose(features, 1, 2)
        fn = F.log_softmax if log else F.softmax
        return fn(torch.bmm(features, feature_t), dim=-1).reshape(b, -1)

    return F.kl_div(patch_simi(feat_input, True), patch_simi(feat_target, False), reduction="batchmean")


def naive_cfsd(feat_output: np.ndarray, feat_content: np.ndarray) -> float:
    """sum_i KL(P_content[i] || P_output[i]) with P[i, j] = softmax_j(<f_i, f_j> / C^2), position by position.

    ``feat_*``: one (C, H, W) relu3_1 feature map, float64.
    """
    c = feat_output.shape[0]
    fo = feat_output.reshape(c, -1).T / c  # (N, C)
    fc = feat_content.reshape(c, -1).T / c
    n = fo.shape[0]
    total = 0.0
    for i in range(n):
        so = [float(np.dot(fo[i], fo[j])) for j in range(n)]
        sc = [float(np.dot(fc[i], fc[j])) for j in range(n)]
        mo, mc = max(so), max(sc)
        zo = sum(math.exp(s - mo) for s in so)
        zc = sum(math.exp(s - mc) for s in sc)
        for j in range(n):
            log_po = so[j] - mo - math.log(zo)
            log_pc = sc[j] - mc - math.log(zc)
            total += math.exp(log_pc) * (log_pc - log_po)
    return total


# ------------------------------------------------------------------------------------------------ SSIM


def naive_ssim(x: np.ndarray, y: np.ndarray, win: int = 11, sigma: float = 1.5) -> float:
    """Wang et al. 2004 SSIM by explicit loops: Gaussian window, valid positions, mean over positions and channels."""
    ax = np.arange(win) - (win - 1) / 2
    g = np.exp(-(ax**2) / (2 * sigma**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for ch in range(x.shape[0]):
        for i in range(x.shape[1] - win + 1):
            for j in range(x.shape[2] - win + 1):
                a, b = x[ch, i : i + win, j : j + win], y[ch, i : i + win, j : j + win]
                mu_a, mu_b = (w * a).sum(), (w * b).sum()
                var_a, var_b = (w * (a - mu_a) ** 2).sum(), (w * (b - mu_b) ** 2).sum()
                cov = (w * (a - mu_a) * (b - mu_b)).sum()
                values.append(
                    ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
                )
    return float(np.mean(values))


def naive_luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma, pixel by pixel: (3, H, W) -> (1, H, W)."""
    out = np.zeros((1, *rgb.shape[1:]))
    for i in range(rgb.shape[1]):
        for j in range(rgb.shape[2]):
            out[0, i, j] = 0.299 * rgb[0, i, j] + 0.587 * rgb[1, i, j] + 0.114 * rgb[2, i, j]
    return out


# ------------------------------------------------------------------------------------------------- FID


class ChannelStats(torch.nn.Module):
    """A tiny real extractor for FID wiring tests, in place of the Inception network (whose weights cannot be
    obtained here): per-channel mean and std, 6 features."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


def naive_frechet(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2)), the trace term from the symmetric PSD matrix
    S1^(1/2) S2 S1^(1/2), which has the eigenvalues of S1 S2 (no non-symmetric square root)."""
    w, v = np.linalg.eigh(sigma1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = root1 @ sigma2 @ root1
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)
    tr_covmean = float(np.sum(np.sqrt(np.clip(eig, 0, None))))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def low_rank_frechet(feats1: np.ndarray, feats2: np.ndarray) -> float:
    """FID of two feature sets with fewer samples than dimensions, exactly: with A_k the centred (n_k, D) features,
    S_k = A_k^T A_k / (n_k - 1) and Tr((S1 S2)^(1/2)) = ||A1 A2^T||_* / sqrt((n1 - 1)(n2 - 1)) (nuclear norm)."""
    a1, a2 = feats1 - feats1.mean(0), feats2 - feats2.mean(0)
    n1, n2 = len(feats1), len(feats2)
    tr_covmean = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum() / math.sqrt((n1 - 1) * (n2 - 1))
    diff = feats1.mean(0) - feats2.mean(0)
    tr1 = (a1**2).sum() / (n1 - 1)
    tr2 = (a2**2).sum() / (n2 - 1)
    return float(diff @ diff + tr1 + tr2 - 2 * tr_covmean)


# ------------------------------------------------------------------------------------------------- ArtFID
# matthias-wright/art-fid at 37ce02e (Wright & Ommer, GCPR 2022), ported line by line.


def port_art_inception_features(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """art_fid/inception.py ``Inception3._forward(x, return_features=True)`` on torchvision's Inception3 modules of
    the same names: no ``transform_input`` (their default False), no resize (art_fid.py:57 feeds ``ToTensor()``
    images), then the blocks in order, adaptive average pooling, dropout (identity in eval) and flatten."""
    for name in (
        "Conv2d_1a_3x3",
        "Conv2d_2a_3x3",
        "Conv2d_2b_3x3",
        "maxpool1",
        "Conv2d_3b_1x1",
        "Conv2d_4a_3x3",
        "maxpool2",
        "Mixed_5b",
        "Mixed_5c",
        "Mixed_5d",
        "Mixed_6a",
        "Mixed_6b",
        "Mixed_6c",
        "Mixed_6d",
        "Mixed_6e",
        "Mixed_7a",
        "Mixed_7b",
        "Mixed_7c",
        "avgpool",
        "dropout",
    ):
        x = getattr(net, name)(x)
    return torch.flatten(x, 1)


def port_art_fid(act_stylized: np.ndarray, act_style: np.ndarray, lpips_values: np.ndarray) -> float:
    """art_fid.py ``compute_art_fid(..., mode='art_fid', content_metric='lpips')`` from the activations and the
    per-pair LPIPS values: compute_activation_statistics (lines 147-149: np.mean, np.cov rowvar False),
    compute_frechet_distance (lines 85-130; its sqrtm trace here by :func:`naive_frechet`'s symmetric form),
    compute_content_distance (dist_sum / N, lines 314-327) and ``(content_dist + 1) * (fid_value + 1)`` (line 354)."""
    mu1, sigma1 = np.mean(act_stylized, axis=0), np.cov(act_stylized, rowvar=False)
    mu2, sigma2 = np.mean(act_style, axis=0), np.cov(act_style, rowvar=False)
    fid_value = naive_frechet(mu1, sigma1, mu2, sigma2)
    dist_sum, n = 0.0, 0
    for value in lpips_values:
        dist_sum += float(value)
        n += 1
    content_dist = dist_sum / n
    return (content_dist + 1) * (fid_value + 1)
