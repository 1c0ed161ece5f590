"""Every metric against an independent computation (reference_ports.py); bootstrap CIs; honesty about weights."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from unittest import mock

import lpips
import numpy as np
import piq
import pytest
import torch
import torch.nn.functional as F
from reference_ports import (
    ChannelStats,
    low_rank_frechet,
    naive_cfsd,
    naive_frechet,
    naive_gram_distance,
    naive_hellinger,
    naive_luma,
    naive_meanstd_distance,
    naive_rgb_uv_hist,
    naive_ssim,
    port_art_fid,
    port_art_inception_features,
    port_patch_simi,
)
from tolerances import U32, conv_stack_tol, gamma_prob, mse_rtol, propagated_error

from evaluation import metrics
from evaluation.metric_info import METRICS, SUMMARY_METRICS
from evaluation.summary import bootstrap_ci, summarize
from methods.encoder import random_encoder
from methods.errors import NstError


@pytest.fixture(scope="module")
def encoder():
    return random_encoder(seed=0)


@pytest.fixture(scope="module")
def cfsd_encoder():
    """Random VGG-19 with torchvision preprocessing, as StyleID's PatchSimi feeds its network."""
    return random_encoder(seed=1, preprocessing="torchvision", last_layer="relu3_1")


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def np64(x: torch.Tensor) -> np.ndarray:
    return x.detach().double().numpy()


def _gram_distance64(g: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return (g - t).pow(2).sum() / (g.pow(2).sum() + t.pow(2).sum())


def _meanstd_distance64(m, s, tm, ts) -> torch.Tensor:
    num = (m - tm).pow(2).sum() + (s - ts).pow(2).sum()
    return num / (m.pow(2).sum() + s.pow(2).sum() + tm.pow(2).sum() + ts.pow(2).sum())


def style_error_bounds(fx: torch.Tensor, fs: torch.Tensor, feat_err: float = 0.0, sides: tuple[int, int] = (1, 1)):
    """Bounds on |computed - exact| of one layer's gram and meanstd distances, and on the distance itself when the
    exact one is 0 (x = s): ``{kind: (bound, zero_bound)}``. ``fx``, ``fs``: (C, H, W) ReLU features (>= 0), the
    output's known within ``feat_err`` (absolute, elementwise); ``sides``: how many float32 evaluations, of the
    output's and of the style's statistics, differ in rounding (1 each against float64, 2 for two kernels).
    """
    out = {}
    c = fx.shape[0]
    fx, fs = fx.double().flatten(1), fs.double().flatten(1)
    n_x, n_s = fx.shape[1], fs.shape[1]
    # G = F F^T / (C H W): a dot product of HW non-negative terms, relative gamma_prob(HW), and one division
    g, t = fx @ fx.T / fx.numel(), fs @ fs.T / fs.numel()
    rows = fx.abs().sum(1)
    err_g = sides[0] * (gamma_prob(n_x) + U32) * g + feat_err * (rows[:, None] + rows[None, :]) / fx.numel()
    err_t = sides[1] * (gamma_prob(n_s) + U32) * t
    # the distance's own sums: C^2 squared differences (2 roundings each), 2 C^2 squares, one division
    own = sides[0] * (gamma_prob(c * c) + gamma_prob(2 * c * c) + 4 * U32)
    dist = float(_gram_distance64(g, t))
    zero = float(err_g.pow(2).sum() / (g.pow(2).sum() + t.pow(2).sum())) * (1 + own)  # x = s: first order is 0
    out["gram"] = (propagated_error(_gram_distance64, [g, t], [err_g, err_t]) + own * dist, zero)
    # mean of HW non-negative terms; unbiased var of HW squared deviations (3 roundings each); std = sqrt(var + 1e-5)
    m, v, tm, tv = fx.mean(1), fx.var(1), fs.mean(1), fs.var(1)
    s, ts = (v + 1e-5).sqrt(), (tv + 1e-5).sqrt()
    dev = (fx - m[:, None]).abs().sum(1) / (n_x - 1)
    err_m = sides[0] * (gamma_prob(n_x) + U32) * m + feat_err
    err_s = sides[0] * ((gamma_prob(n_x) + 3 * U32) / 2 + 2 * U32) * s + feat_err * dev / s
    err_tm = sides[1] * (gamma_prob(n_s) + U32) * tm
    err_ts = sides[1] * ((gamma_prob(n_s) + 3 * U32) / 2 + 2 * U32) * ts
    own = sides[0] * (gamma_prob(2 * c) + gamma_prob(4 * c) + 4 * U32)
    dist = float(_meanstd_distance64(m, s, tm, ts))
    zero = float((err_m.pow(2).sum() + err_s.pow(2).sum()) / (2 * (m.pow(2).sum() + s.pow(2).sum()))) * (1 + own)
    out["meanstd"] = (
        propagated_error(_meanstd_distance64, [m, s, tm, ts], [err_m, err_s, err_tm, err_ts]) + own * dist,
        zero,
    )
    return out


def ssim_error_bound(x: torch.Tensor, y: torch.Tensor) -> float:
    """Bound on |piq's float32 SSIM - exact| for one (3, H, W) pair in [0, 1].

    piq's local statistics are Gaussian-weighted sums of 11 x 11 = 121 terms (weights >= 0 summing to 1) of values in
    [0, 1] (x, y, x^2, y^2, xy): each within a = gamma_prob(121) + 2u (the rounded weight, the product), and
    sigma^2 = E[x^2] - mu^2 within 3a + u. Propagated through the SSIM formula at this pair's own statistics (float64),
    plus the mean over positions and channels.
    """
    ax = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(ax**2) / (2 * 1.5**2))
    w = (torch.outer(g, g) / torch.outer(g, g).sum()).view(1, 1, 11, 11).expand(3, 1, 11, 11)
    x, y = x.double()[None], y.double()[None]

    def local(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w, groups=3)

    stats = [local(x), local(y), local(x * x), local(y * y), local(x * y)]

    def ssim64(mx, my, exx, eyy, exy):
        c1, c2 = 0.01**2, 0.03**2
        sxx, syy, sxy = exx - mx**2, eyy - my**2, exy - mx * my
        return ((2 * mx * my + c1) * (2 * sxy + c2) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))).mean()

    a = gamma_prob(121) + 2 * U32
    value = float(ssim64(*stats))
    return propagated_error(ssim64, stats, [a, a, a, a, a]) + gamma_prob(stats[0].numel()) * abs(value)


def cfsd_error_bound(fo: torch.Tensor, fc: torch.Tensor, feat_err: float, sides: int = 1) -> float:
    """Bound on |cfsd's value - exact| for one image's (C, H, W) relu3_1 features (>= 0), known within ``feat_err``.

    cfsd rounds only S = (F / C)(F / C)^T in float32 (softmax and KL run in float64): a dot product of C non-negative
    terms, relative gamma_prob(C), after two roundings of F / C and one of the product; ``feat_err`` adds
    ``(feat_err / C)(|F_i|_1 + |F_j|_1)``. Propagated through sum_i KL(P_c[i] || P_o[i]) at these features (float64).
    ``sides``: float32 evaluations of S that differ in rounding.
    """
    c = fo.shape[0]
    fo, fc = (f.double().flatten(1).T / c for f in (fo, fc))  # (N, C)
    so, sc = fo @ fo.T, fc @ fc.T
    g = sides * (gamma_prob(c) + 3 * U32)
    ro, rc = fo.abs().sum(1), fc.abs().sum(1)
    err_o = g * so + feat_err / c * (ro[:, None] + ro[None, :])
    err_c = g * sc + feat_err / c * (rc[:, None] + rc[None, :])

    def cfsd64(s_o, s_c):
        log_o, log_c = torch.log_softmax(s_o, dim=-1), torch.log_softmax(s_c, dim=-1)
        return (log_c.exp() * (log_c - log_o)).sum()

    return propagated_error(cfsd64, [so, sc], [err_o, err_c]) + U32 * float(cfsd64(so, sc))  # the final .float()


# ------------------------------------------------------------------------------------------------ style


@pytest.mark.float_sensitive
def test_style_distances_match_naive_loops_per_layer(encoder):
    x, s = rand(1, 3, 32, 40, seed=5), rand(1, 3, 48, 44, seed=6)  # the style may have another size
    got = metrics.style_distances(x, s, encoder)
    fx, fs = encoder(x, metrics.STYLE_LAYERS), encoder(s, metrics.STYLE_LAYERS)
    naive: dict[str, list[float]] = {"gram": [], "meanstd": []}
    bounds: dict[str, list[float]] = {"gram": [], "meanstd": []}
    for layer in metrics.STYLE_LAYERS:
        a, b = np64(fx[layer][0]), np64(fs[layer][0])
        naive["gram"].append(naive_gram_distance(a, b))
        naive["meanstd"].append(naive_meanstd_distance(a, b))
        # the same float32 features on both sides: only ours rounds (its Gram, statistics and sums in float32)
        for kind, (bound, _) in style_error_bounds(fx[layer][0], fs[layer][0]).items():
            bounds[kind].append(bound)
            assert got[f"style_{kind}_{layer}"].item() == pytest.approx(naive[kind][-1], abs=bound), (kind, layer)
    for kind in ("gram", "meanstd"):  # aggregates: each layer weighs 1/5; the mean's own sum of 5 terms
        mean = sum(naive[kind]) / 5
        assert got[f"style_{kind}"].item() == pytest.approx(mean, abs=sum(bounds[kind]) / 5 + gamma_prob(5) * mean)
    assert list(got) == [name for name in METRICS if name.startswith(("style_gram", "style_meanstd"))]


@pytest.mark.float_sensitive
def test_style_distances_zero_for_the_style_itself_and_batch_broadcast(encoder):
    s = rand(1, 3, 32, 32, seed=7)
    zero = metrics.style_distances(s, s, encoder)
    assert all(v.item() == 0.0 for v in zero.values())  # the same features through the same kernels
    batch = torch.cat([rand(1, 3, 32, 32, seed=8), s])
    both = metrics.style_distances(batch, s, encoder)
    first = metrics.style_distances(batch[:1], s, encoder)
    # a batch of 2 may run other conv and bmm kernels than a batch of 1: the output's features differ within
    # conv_stack_tol (relu5_1 is 13 convs deep, the widest fan_in 512 x 3 x 3), its statistics round twice
    f_one, f_two = encoder(batch[:1], metrics.STYLE_LAYERS), encoder(batch, metrics.STYLE_LAYERS)
    f_s = encoder(s, metrics.STYLE_LAYERS)
    assert all(value.shape == (2,) for value in both.values())
    depth = {"relu1_1": 1, "relu2_1": 3, "relu3_1": 5, "relu4_1": 9, "relu5_1": 13}
    totals = {"gram": 0.0, "meanstd": 0.0}
    zeros = {"gram": 0.0, "meanstd": 0.0}
    for layer in metrics.STYLE_LAYERS:
        feat_tol = conv_stack_tol(depth[layer], fan_in=512 * 9) * float(f_one[layer].abs().max())
        first_bounds = style_error_bounds(f_one[layer][0], f_s[layer][0], feat_tol, sides=(2, 0))
        self_bounds = style_error_bounds(f_two[layer][1], f_s[layer][0], feat_tol, sides=(2, 0))
        for kind in ("gram", "meanstd"):
            name = f"style_{kind}_{layer}"
            assert both[name][0].item() == pytest.approx(first[name].item(), abs=first_bounds[kind][0]), name
            assert 0.0 <= both[name][1].item() <= self_bounds[kind][1], name  # s against itself: 0 up to rounding
            totals[kind] += first_bounds[kind][0] / 5
            zeros[kind] += self_bounds[kind][1] / 5
    for kind in ("gram", "meanstd"):
        name = f"style_{kind}"
        bound = totals[kind] + 2 * gamma_prob(5) * first[name].item()
        assert both[name][0].item() == pytest.approx(first[name].item(), abs=bound), name
        assert 0.0 <= both[name][1].item() <= zeros[kind] * (1 + gamma_prob(5)), name


# ------------------------------------------------------------------------------------------------ colour


def test_rgb_uv_histogram_matches_a_per_pixel_per_bin_loop():
    img = rand(2, 3, 3, 4, seed=20)
    img[0, :, 0, 0] = 0.0  # a black pixel (log(eps)) and a saturated one
    img[0, :, 1, 1] = 1.0
    ours = metrics.rgb_uv_histogram(img)
    assert ours.shape == (2, 3, 64, 64)
    for b in range(2):
        expected = naive_rgb_uv_hist(np64(img[b]))
        np.testing.assert_allclose(np64(ours[b]), expected, rtol=1e-4, atol=1e-9)
    assert ours.sum(dim=(1, 2, 3)).sub(1).abs().max() < 1e-4


def test_color_hist_matches_the_naive_hellinger_and_its_invariants():
    x, s = rand(1, 3, 4, 3, seed=21), rand(1, 3, 5, 4, seed=22)  # the style may have another size
    expected = naive_hellinger(naive_rgb_uv_hist(np64(x[0])), naive_rgb_uv_hist(np64(s[0])))
    assert metrics.color_hist(x, s).item() == pytest.approx(expected, rel=1e-4)
    assert metrics.color_hist(s, s).item() == pytest.approx(0.0, abs=1e-6)
    # symmetric, in [0, 1]; disjoint colours are nearly 1, a colour shift scores above a tiny perturbation
    assert metrics.color_hist(s, x).item() == pytest.approx(metrics.color_hist(x, s).item(), rel=1e-5)
    red = torch.tensor([0.8, 0.2, 0.2]).view(1, 3, 1, 1).expand(1, 3, 8, 8)  # log-chroma within the bins' +-3
    assert 0.99 < metrics.color_hist(red, red.flip(1)).item() <= 1.0
    big = rand(1, 3, 40, 40, seed=23)
    near = metrics.color_hist((big + 0.01 * rand(1, 3, 40, 40, seed=24)).clamp(0, 1), big).item()
    assert near < metrics.color_hist(big.flip(1), big).item()


def test_rgb_uv_histogram_squashes_larger_images_to_a_square_as_the_reference():
    assert (metrics.HIST_BINS, metrics.HIST_MAX_SIDE, metrics.HIST_SIGMA) == (64, 256, 0.02)  # eval_histogan.py
    img = rand(1, 3, 20, 17, seed=25)  # a side above max_side: bilinear resize to max_side x max_side
    squashed = F.interpolate(img, size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(
        metrics.rgb_uv_histogram(img, max_side=16), metrics.rgb_uv_histogram(squashed, max_side=16)
    )
    small = rand(1, 3, 16, 12, seed=26)  # no side above max_side: used as is
    expected = naive_rgb_uv_hist(np64(small[0]), bins=8)
    np.testing.assert_allclose(np64(metrics.rgb_uv_histogram(small, bins=8, max_side=16)[0]), expected, rtol=1e-4)


# ------------------------------------------------------------------------------------------------ SSIM


@pytest.mark.float_sensitive
def test_ssim_matches_a_naive_loop_and_piq_without_downsampling():
    x, y = rand(2, 3, 18, 16, seed=1), rand(2, 3, 18, 16, seed=2)
    y = (0.6 * x + 0.4 * y).clamp(0, 1)  # correlated, so SSIM is far from 0
    ours = metrics.ssim(x, y)
    for b in range(2):
        bound = ssim_error_bound(x[b], y[b])  # float32 against a float64 loop: only ours rounds
        assert ours[b].item() == pytest.approx(naive_ssim(np64(x[b]), np64(y[b])), abs=bound)
    assert metrics.ssim(x, x).sub(1).abs().max() <= ssim_error_bound(x[0], x[0])


def test_ssim_does_not_downsample_large_images():
    x = rand(1, 3, 400, 400, seed=3)
    y = (x + 0.2 * rand(1, 3, 400, 400, seed=4)).clamp(0, 1)
    full = piq.ssim(x, y, data_range=1.0, reduction="none", downsample=False)
    torch.testing.assert_close(metrics.ssim(x, y), full)
    assert not torch.allclose(full, piq.ssim(x, y, data_range=1.0, reduction="none", downsample=True))


def test_ssim_lum_is_ssim_of_bt601_luma():
    x, y = rand(1, 3, 16, 17, seed=30), rand(1, 3, 16, 17, seed=31)
    y = (0.5 * x + 0.5 * y).clamp(0, 1)
    expected = naive_ssim(naive_luma(np64(x[0])), naive_luma(np64(y[0])))
    assert metrics.ssim_lum(x, y).item() == pytest.approx(expected, abs=1e-5)
    np.testing.assert_allclose(np64(metrics.luminance(x)[0]), naive_luma(np64(x[0])), rtol=1e-6)
    grey = x.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)  # a colour change that keeps the luma scores 1
    recoloured = grey + torch.tensor([0.587, -0.299, 0.0]).view(1, 3, 1, 1) * 0.1
    assert metrics.ssim_lum(recoloured, grey).item() == pytest.approx(1.0, abs=1e-5)


# ------------------------------------------------------------------------------------------------ content, CFSD


@pytest.mark.float_sensitive
def test_content_loss_is_feature_mse(encoder):
    x, y = rand(1, 3, 32, 32, seed=3), rand(1, 3, 32, 32, seed=4)
    fx, fy = encoder(x, ["relu4_2"])["relu4_2"], encoder(y, ["relu4_2"])["relu4_2"]
    expected = ((fx - fy) ** 2).mean()
    torch.testing.assert_close(metrics.content_loss(x, y, encoder), expected.view(1))
    torch.testing.assert_close(metrics.content_loss(x, x, encoder), torch.zeros(1))


@pytest.mark.float_sensitive
def test_cfsd_matches_the_styleid_port_and_a_position_loop(cfsd_encoder):
    out, con = rand(2, 3, 16, 20, seed=9), rand(2, 3, 16, 20, seed=10)
    ours = metrics.cfsd(out, con, cfsd_encoder)
    chunked = metrics.cfsd(out, con, cfsd_encoder, chunk=3)
    for b in range(2):
        fo = cfsd_encoder(out[b : b + 1], ["relu3_1"])["relu3_1"]
        fc = cfsd_encoder(con[b : b + 1], ["relu3_1"])["relu3_1"]
        # cfsd encodes the 2B images in one batch, which may run other conv kernels than one image: relu3_1 is 5
        # convs deep, the widest fan_in 128 x 3 x 3
        feat_err = conv_stack_tol(depth=5, fan_in=128 * 9) * float(torch.maximum(fo.abs().max(), fc.abs().max()))
        bound = cfsd_error_bound(fo[0], fc[0], feat_err)
        # PatchSimi.forward(input=stylized, target=content), one image per batch (eval_artfid.py:374, 435), run in
        # float64: the reference's float32 softmax is itself off by several % on such near-uniform rows
        assert ours[b].item() == pytest.approx(port_patch_simi(fo.double(), fc.double()).item(), abs=bound)
        assert ours[b].item() == pytest.approx(naive_cfsd(np64(fo[0]), np64(fc[0])), abs=bound)
        # chunking changes only the rows per bmm (maybe the kernel): S rounds twice, the features are the same
        assert chunked[b].item() == pytest.approx(ours[b].item(), abs=cfsd_error_bound(fo[0], fc[0], 0.0, sides=2))


def test_cfsd_zero_for_identical_direction_and_structure(cfsd_encoder, encoder):
    x, noise = rand(1, 3, 40, 48, seed=7), rand(1, 3, 40, 48, seed=8)
    assert metrics.cfsd(x, x, cfsd_encoder).item() == pytest.approx(0.0, abs=1e-7)
    assert metrics.cfsd(noise, x, cfsd_encoder).item() > 1e-6
    # KL(content || output), not the reverse: visible where the rows are peaked (unscaled caffe features, input
    # 0..255); on a caffe encoder cfsd first brings the features to torchvision's range (x CFSD_CAFFE_SCALE)
    small, other = rand(1, 3, 16, 16, seed=7), rand(1, 3, 16, 16, seed=8)
    fo, fc = (encoder(t, ["relu3_1"])["relu3_1"] for t in (other, small))
    forward, reverse = naive_cfsd(np64(fo[0]), np64(fc[0])), naive_cfsd(np64(fc[0]), np64(fo[0]))
    assert forward != pytest.approx(reverse, rel=0.05)
    with mock.patch.object(metrics, "CFSD_CAFFE_SCALE", 1.0):
        assert metrics.cfsd(other, small, encoder).item() == pytest.approx(forward, rel=1e-4)
    scaled = naive_cfsd(np64(fo[0] * metrics.CFSD_CAFFE_SCALE), np64(fc[0] * metrics.CFSD_CAFFE_SCALE))
    assert metrics.cfsd(other, small, encoder).item() == pytest.approx(scaled, rel=1e-4)
    # a structure-preserving change (slight darkening) scores lower than unrelated noise
    assert metrics.cfsd((x * 0.9).clamp(0, 1), x, cfsd_encoder) < metrics.cfsd(noise, x, cfsd_encoder)


def test_cfsd_caffe_scale_is_255_times_the_imagenet_std():
    from methods.encoder import IMAGENET_STD

    # derivation in evaluation/metric_info.py: caffe input = 255 * sigma * torchvision input, sigma averaged
    assert pytest.approx(1 / (255 * float(np.mean(IMAGENET_STD))), rel=1e-12) == metrics.CFSD_CAFFE_SCALE
    assert pytest.approx(57.63, abs=0.01) == 1 / metrics.CFSD_CAFFE_SCALE
    assert metrics.cfsd_feature_scale(random_encoder(seed=0)) == metrics.CFSD_CAFFE_SCALE
    assert metrics.cfsd_feature_scale(random_encoder(seed=0, preprocessing="torchvision")) == 1.0


def _naive_saturated(fo: np.ndarray, fc: np.ndarray, scale: float) -> float:
    """Fraction of softmax rows (output's and content's) whose maximum exceeds 0.99, row by row in float64."""
    count, total = 0, 0
    for f in (fo, fc):
        x = f.reshape(f.shape[0], -1).T * scale / f.shape[0]  # (N, C), / C as StyleID
        for row in x @ x.T:
            p = np.exp(row - row.max())
            count += int(p.max() / p.sum() > 0.99)
            total += 1
    return count / total


def test_cfsd_saturated_fraction_matches_a_row_loop_and_saturated_images_are_nan(cfsd_encoder):
    out, con = rand(1, 3, 24, 20, seed=3), rand(1, 3, 24, 20, seed=4)
    loud = random_encoder(seed=1, preprocessing="torchvision", last_layer="relu3_1")
    with torch.no_grad():
        loud.layers["conv1_1"].weight.mul_(300.0)  # features ~300x larger: the softmax rows become one-hot
    for enc, expect_nan in ((cfsd_encoder, False), (loud, True)):
        value, saturated = metrics.cfsd_terms(out, con, enc)
        fo, fc = (np64(enc(t, ["relu3_1"])["relu3_1"][0]) for t in (out, con))
        assert saturated.item() == pytest.approx(_naive_saturated(fo, fc, metrics.cfsd_feature_scale(enc)), abs=1e-6)
        scorer = metrics.Scorer(random_encoder(seed=0), random_encoder(seed=0), enc, lpips_model=None)
        found: dict[str, float] = {}
        score = scorer.score(out, con, rand(1, 3, 16, 16, seed=5), only=["cfsd"], diagnostics=found)
        assert found["cfsd_saturated"] == pytest.approx(saturated.item())
        assert (saturated.item() > metrics.CFSD_SATURATED_LIMIT) == expect_nan
        assert math.isnan(score["cfsd"]) == expect_nan
        if not expect_nan:
            assert score["cfsd"] == pytest.approx(value.item())


@pytest.mark.slow
def test_cfsd_on_the_caffe_network_does_not_saturate_on_a_sample_photo_and_grey_is_worse_than_blur():
    """Issue 26: unscaled caffe features saturate most rows of a photo and then a flat grey image scores best."""
    from evaluation.references import reference_outputs
    from methods.encoder import load_encoder
    from pipeline.io import read_image

    enc = load_encoder("caffe", last_layer="relu3_1")
    photo = read_image(Path(__file__).parents[2] / "data" / "sample" / "content" / "building.jpg")
    photo = F.interpolate(photo, size=(144, 192), mode="area")  # the sample's working size (long side 192)
    refs = reference_outputs(photo, photo)
    _, saturated = metrics.cfsd_terms(refs["blur"], photo, enc)
    assert saturated.item() < metrics.CFSD_SATURATED_LIMIT
    with mock.patch.object(metrics, "CFSD_CAFFE_SCALE", 1.0):  # the old, unscaled similarity
        _, raw = metrics.cfsd_terms(refs["blur"], photo, enc)
    assert raw.item() > 0.5
    assert metrics.cfsd(refs["grey"], photo, enc).item() > metrics.cfsd(refs["blur"], photo, enc).item()


# ------------------------------------------------------------------------------------------------ FID


def test_frechet_distance_matches_a_symmetric_eigen_computation():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 6)), rng.normal(size=(50, 6)) @ rng.normal(size=(6, 6)) + 0.5
    mu1, s1 = a.mean(0), np.cov(a, rowvar=False)
    mu2, s2 = b.mean(0), np.cov(b, rowvar=False)
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(naive_frechet(mu1, s1, mu2, s2), rel=1e-8)
    assert metrics.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)
    # closed forms: 1-D Gaussians (m1 - m2)^2 + (s1 - s2)^2; diagonal covariances sum_i (sqrt v1_i - sqrt v2_i)^2
    assert metrics.frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]])) == (
        pytest.approx(4.0 + 1.0)
    )
    v1, v2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = float(np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2))
    assert metrics.frechet_distance(np.zeros(3), np.diag(v1), np.zeros(3), np.diag(v2)) == pytest.approx(expected)


def test_frechet_distance_with_fewer_samples_than_dimensions_is_the_exact_low_rank_value():
    rng = np.random.default_rng(1)
    f1, f2 = np.abs(rng.normal(size=(4, 64))), np.abs(rng.normal(size=(5, 64))) + 0.2
    mu1, s1 = metrics.activation_statistics(f1)
    mu2, s2 = metrics.activation_statistics(f2)
    assert np.linalg.matrix_rank(s1) == 3
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(low_rank_frechet(f1, f2), rel=1e-5)
    assert metrics.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-5)


def test_frechet_distance_adds_eps_when_the_root_is_not_finite(caplog):
    s = np.eye(2)
    calls = []

    def fake_sqrtm(m):
        calls.append(m.copy())
        return np.full((2, 2), np.nan) if len(calls) == 1 else np.eye(2) * 1.5

    with mock.patch.object(metrics.linalg, "sqrtm", side_effect=fake_sqrtm), caplog.at_level(logging.WARNING):
        value = metrics.frechet_distance(np.zeros(2), s, np.zeros(2), s, eps=0.5)
    np.testing.assert_allclose(calls[1], (s + 0.5 * np.eye(2)) @ (s + 0.5 * np.eye(2)))
    assert value == pytest.approx(2 + 2 - 2 * 3.0)
    assert "singular" in caplog.text


def test_fid_score_wiring_with_a_small_extractor():
    outputs = [rand(1, 3, 20, 24, seed=40 + i) * (0.5 + 0.1 * i) for i in range(8)]
    styles = [rand(1, 3, 30, 18, seed=60 + i) * (0.5 + 0.1 * i) for i in range(8)]  # sizes may differ
    extractor = ChannelStats()
    assert metrics.fid_score(outputs, outputs, extractor) == pytest.approx(0.0, abs=1e-6)
    feats_o = metrics.image_features(outputs, extractor)
    feats_s = metrics.image_features(styles, extractor)
    assert feats_o.shape == (8, 6)
    expected = naive_frechet(*metrics.activation_statistics(feats_o), *metrics.activation_statistics(feats_s))
    assert metrics.fid_score(outputs, styles, extractor) == pytest.approx(expected, rel=1e-6)
    shifted = [(o + 0.3).clamp(0, 1) for o in outputs]
    assert metrics.fid_score(shifted, outputs, extractor) > 0.05
    assert math.isnan(metrics.fid_score(outputs[:1], styles, extractor))  # one image: no covariance
    assert math.isnan(metrics.fid_score(outputs, styles, None))  # no Inception weights
    assert metrics.artfid_score(2.0, 0.5) == pytest.approx(1.5 * 3.0)
    assert math.isnan(metrics.artfid_score(math.nan, 0.5))


def _random_fid_inception_state(seed: int) -> dict[str, torch.Tensor]:
    """A randomly initialised pytorch-fid FID Inception's state_dict, built without fetching any weights."""
    pfi = pytest.importorskip("pytorch_fid.inception")
    torch.manual_seed(seed)
    with (
        mock.patch.object(pfi, "load_state_dict_from_url", return_value=None),
        mock.patch("torchvision.models.inception.Inception3.load_state_dict"),
    ):
        net = pfi.fid_inception_v3()
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_load_inception_reads_a_state_dict_into_pytorch_fids_network(tmp_path):
    pfi = pytest.importorskip("pytorch_fid.inception")
    state = _random_fid_inception_state(0)
    torch.save(state, tmp_path / "inception_random.pth")
    ours = metrics.load_inception(tmp_path / "inception_random.pth")
    assert ours is not None
    net = ours.inception
    assert isinstance(net, pfi.InceptionV3)
    assert (net.output_blocks, net.resize_input, net.normalize_input) == ([3], True, True)  # pool3, 299 px, [-1, 1]
    loaded = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(loaded) > 100
    by_shape_and_sum = sorted((tuple(v.shape), round(v.double().sum().item(), 4)) for v in loaded.values())
    expected = sorted(
        (tuple(v.shape), round(v.double().sum().item(), 4))
        for k, v in state.items()
        if not k.endswith("num_batches_tracked") and not k.startswith(("fc.", "AuxLogits"))
    )
    assert by_shape_and_sum == expected  # every tensor of pool3's blocks came from the file
    x = rand(1, 3, 40, 50, seed=50)
    with torch.no_grad():
        expected_feats = net(x)[0].squeeze(3).squeeze(2)  # pytorch-fid's get_activations
    got = metrics.image_features([x], ours)
    assert got.shape == (1, 2048)
    np.testing.assert_array_equal(got, np64(expected_feats))  # the same network on the same batch: the same kernels


@pytest.mark.slow
def test_fid_with_a_random_inception_end_to_end(tmp_path):
    """2048-d features of 4 images: rank-deficient covariances, scipy's sqrtm on 2048 x 2048 (tens of seconds)."""
    pytest.importorskip("pytorch_fid")
    torch.save(_random_fid_inception_state(1), tmp_path / "inception_random.pth")
    model = metrics.load_inception(tmp_path / "inception_random.pth")
    outputs = [rand(1, 3, 64, 64, seed=70 + i) for i in range(4)]
    styles = [rand(1, 3, 48, 80, seed=80 + i).pow(3) for i in range(4)]
    f_out, f_sty = metrics.image_features(outputs, model), metrics.image_features(styles, model)
    same = metrics.fid_score(outputs, outputs, model)
    other = metrics.fid_score(outputs, styles, model)
    assert abs(same) < 1e-3 * other
    assert other == pytest.approx(low_rank_frechet(f_out, f_sty), rel=1e-4)


def test_missing_inception_weights_are_named(tmp_path):
    with pytest.raises(metrics.WeightsUnavailable, match=r"pt_inception-2015-12-05-6726825d\.pth.*not found at .*nope"):
        metrics.load_inception(tmp_path / "nope.pth")  # n/a with the reason, never a random network


def test_unreadable_inception_weights_are_named(tmp_path):
    (tmp_path / "bad.pth").write_bytes(b"not a state dict")
    with pytest.raises(metrics.WeightsUnavailable, match=r"bad\.pth: not a readable state_dict"):
        metrics.load_inception(tmp_path / "bad.pth")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(metrics.WeightsUnavailable, match=r"other\.pth is not pytorch-fid's Inception"):
        metrics.load_inception(tmp_path / "other.pth")


# ------------------------------------------------------------------------------------------------ ArtFID


def _random_art_inception_state(seed: int) -> dict[str, torch.Tensor]:
    """A random state_dict in the layout of Wright & Ommer's art Inception (art_fid/inception.py: torchvision's
    Inception3 with two 1000-way heads fc1/fc2 and two auxiliary heads AuxLogits1/2), built without any download."""
    from torchvision.models.inception import Inception3

    torch.manual_seed(seed)
    net = Inception3(aux_logits=True, init_weights=False)
    with torch.no_grad():  # BatchNorm statistics that are not the identity, so they must be loaded to match
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    state = {}
    for k, v in net.state_dict().items():
        if k.startswith("fc."):
            state["fc1." + k[3:]], state["fc2." + k[3:]] = v.clone(), v.clone() + 1
        elif k.startswith("AuxLogits."):
            state["AuxLogits1." + k[10:]], state["AuxLogits2." + k[10:]] = v.clone(), v.clone()
        else:
            state[k] = v.clone()
    return state


def test_art_inception_is_their_trunk_on_unresized_unnormalised_images(tmp_path):
    """The features are art-fid's ``model(batch, return_features=True)`` (ported line by line from their _forward):
    the image goes in at its own size and in [0, 1], with no resize and no mean/std."""
    from torchvision.models.inception import Inception3

    state = _random_art_inception_state(0)
    torch.save(state, tmp_path / "art_inception.pth")
    ours = metrics.load_art_inception(tmp_path / "art_inception.pth")
    reference = Inception3(aux_logits=False, init_weights=False).eval()
    loaded = reference.load_state_dict(
        {k: v for k, v in state.items() if not k.startswith(("fc", "Aux"))}, strict=False
    )
    assert (sorted(loaded.missing_keys), loaded.unexpected_keys) == (["fc.bias", "fc.weight"], [])
    x = rand(1, 3, 80, 96, seed=90)  # >= 75 px: the smallest input the Inception takes
    with torch.no_grad():
        expected = port_art_inception_features(reference, x)
    got = metrics.image_features([x], ours)
    assert got.shape == (1, 2048)
    np.testing.assert_allclose(got, np64(expected), rtol=0, atol=1e-6)
    resized = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    assert not np.allclose(metrics.image_features([resized], ours), got, atol=1e-3)  # the size matters: not resized


def test_art_inception_refuses_a_file_of_another_network(tmp_path):
    state = _random_art_inception_state(1)
    del state["Mixed_7c.branch_pool.conv.weight"]
    torch.save(state, tmp_path / "art_inception.pth")
    with pytest.raises(metrics.WeightsUnavailable, match=r"(?s)not Wright & Ommer's art Inception.*Mixed_7c"):
        metrics.load_art_inception(tmp_path / "art_inception.pth")  # art-fid's strict=False would run it half-random
    with pytest.raises(metrics.WeightsUnavailable, match=r"art_inception\.pth.*not found at .*nope"):
        metrics.load_art_inception(tmp_path / "nope.pth")


def test_artfid_is_art_fids_formula():
    """(1 + mean LPIPS)(1 + FID) as art-fid's compute_art_fid (mode 'art_fid') computes it, from the same features."""
    rng = np.random.default_rng(5)
    f_out, f_sty = np.abs(rng.normal(size=(12, 6))), np.abs(rng.normal(size=(12, 6))) + 0.3
    lpips_values = rng.uniform(0.2, 0.7, size=12)
    fid = metrics.fid_from_features(f_out, f_sty)
    ours = metrics.artfid_score(fid, float(lpips_values.mean()))
    assert ours == pytest.approx(port_art_fid(f_out, f_sty, lpips_values), rel=1e-9)
    assert metrics.artfid_score(0.0, 0.0) == 1.0  # identical distributions, identical content: the minimum
    assert math.isnan(metrics.artfid_score(fid, math.nan))  # LPIPS n/a -> ArtFID n/a


# ------------------------------------------------------------------------------------------------ LPIPS


def test_lpips_wiring_matches_the_package(tmp_path):
    torch.manual_seed(0)
    reference = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()
    state = {}
    for k in range(1, 6):
        for idx, module in getattr(reference.net, f"slice{k}").named_children():
            if isinstance(module, torch.nn.Conv2d):
                state[f"features.{idx}.weight"] = module.weight.detach().clone()
                state[f"features.{idx}.bias"] = module.bias.detach().clone()
    torch.save(state, tmp_path / "alexnet_random.pth")
    ours = metrics.load_lpips(tmp_path / "alexnet_random.pth")
    x, y = rand(2, 3, 64, 64, seed=11), rand(2, 3, 64, 64, seed=12)
    with torch.no_grad():
        expected = reference(x * 2 - 1, y * 2 - 1).flatten()
    torch.testing.assert_close(metrics.lpips_distance(x, y, ours), expected, rtol=0, atol=0)  # the same kernels
    assert metrics.lpips_distance(x, x, ours).abs().max() == 0.0


def test_missing_lpips_weights_are_named(tmp_path):
    with pytest.raises(metrics.LpipsUnavailable, match=r"alexnet-owt-7be5be79\.pth.*not found at .*nope\.pth"):
        metrics.load_lpips(tmp_path / "nope.pth")


# ------------------------------------------------------------------------------------------------ scorer, registry


def test_registries_declare_direction_network_and_normalisation():
    expected = ["content_loss"]
    for kind in ("gram", "meanstd"):
        expected += [f"style_{kind}_{layer}" for layer in metrics.STYLE_LAYERS] + [f"style_{kind}"]
    expected += ["style_embed", "color_hist", "lpips", "ssim", "ssim_lum", "cfsd"]
    assert list(METRICS) == expected
    assert list(SUMMARY_METRICS) == ["fid_imagenet", "artfid"]
    assert "style_loss" not in METRICS
    for info in (*METRICS.values(), *SUMMARY_METRICS.values()):
        assert all((info.network, info.normalisation, info.description)), info.name
        assert info.higher_is_better == (info.name in ("ssim", "ssim_lum"))
    assert METRICS["style_gram"].compares_to == "style"
    assert METRICS["color_hist"].compares_to == "style"
    assert METRICS["cfsd"].compares_to == "content"


def test_scorer_identity_style_copy_and_nan_lpips(encoder, cfsd_encoder):
    scorer = metrics.Scorer(encoder, encoder, cfsd_encoder, lpips_model=None).to("cpu")
    content, style = rand(1, 3, 40, 52, seed=13), rand(1, 3, 30, 30, seed=14)
    scores = scorer.score(content, content, style)
    assert list(scores) == list(METRICS)
    assert scores["content_loss"] == 0.0
    assert scores["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert scores["ssim_lum"] == pytest.approx(1.0, abs=1e-6)
    assert scores["cfsd"] == pytest.approx(0.0, abs=1e-7)
    assert math.isnan(scores["lpips"])
    assert all(scores[name] > 0 for name in scores if name.startswith("style_") or name == "color_hist")
    # each value is the function's
    expected = metrics.style_distances(content, style, encoder)
    for name, value in expected.items():
        assert scores[name] == pytest.approx(value.item(), rel=1e-5)
    assert scores["color_hist"] == pytest.approx(metrics.color_hist(content, style).item(), rel=1e-6)
    # output = the style: every style distance is 0
    style_copy = scorer.score(style, style, style)
    assert all(style_copy[name] == pytest.approx(0.0, abs=1e-6) for name in expected)
    assert style_copy["color_hist"] == pytest.approx(0.0, abs=1e-6)
    assert scorer.networks()["style_gram"] == encoder.weights_source
    assert scorer.networks()["cfsd"] == cfsd_encoder.weights_source


@pytest.mark.float_sensitive
def test_scorer_with_a_separate_content_encoder(encoder, cfsd_encoder):
    other = random_encoder(seed=0)  # same weights, another object: the two-pass branch
    output, content, style = rand(1, 3, 32, 32, seed=15), rand(1, 3, 32, 32, seed=16), rand(1, 3, 24, 28, seed=17)
    shared = metrics.Scorer(encoder, encoder, cfsd_encoder, None).score(output, content, style)
    separate = metrics.Scorer(encoder, other, cfsd_encoder, None).score(output, content, style)
    for name in METRICS:
        if name not in ("lpips", "content_loss"):  # the same inputs through the same kernels: identical
            assert separate[name] == shared[name], name
    # content_loss: the shared branch encodes output and content one at a time, content_loss() both in one batch of
    # 2, which may run other kernels: relu4_2 is 10 convs deep, the widest fan_in 512 x 3 x 3
    fo, fc = (encoder(t, [metrics.CONTENT_LAYER])[metrics.CONTENT_LAYER] for t in (output, content))
    scale = float(torch.maximum(fo.abs().max(), fc.abs().max()))
    rtol = mse_rtol(conv_stack_tol(depth=10, fan_in=512 * 9), scale, fo - fc)
    assert separate["content_loss"] == pytest.approx(shared["content_loss"], rel=rtol)
    assert shared["content_loss"] == pytest.approx(metrics.content_loss(output, content, encoder).item(), rel=rtol)


def test_size_mismatch_is_an_error(encoder):
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.content_loss(rand(1, 3, 16, 16), rand(1, 3, 16, 18), encoder)
    with pytest.raises(ValueError, match="shape"):
        metrics.color_hist(rand(1, 1, 8, 8), rand(1, 3, 8, 8))


# ------------------------------------------------------------------------------------------------ summary


def test_bootstrap_ci_contains_the_mean_and_is_seeded():
    values = np.random.default_rng(0).normal(3.0, 1.0, size=40).tolist()
    low, high = bootstrap_ci(values, n_boot=1000, seed=5)
    assert low < np.mean(values) < high
    assert (low, high) == bootstrap_ci(values, n_boot=1000, seed=5)
    assert (low, high) != bootstrap_ci(values, n_boot=1000, seed=6)
    assert bootstrap_ci([2.0]) == (2.0, 2.0)
    assert all(math.isnan(v) for v in bootstrap_ci([math.nan]))


def test_summarize_per_method_with_nans():
    import pandas as pd

    df = pd.DataFrame({"method": ["a", "a", "a", "b", "b"], "m": [1.0, 2.0, 3.0, math.nan, math.nan]})
    out = summarize(df, ["m"], n_boot=200)
    assert out["a"]["m"]["mean"] == 2.0
    assert out["a"]["m"]["std"] == pytest.approx(1.0)
    assert out["a"]["m"]["n"] == 3
    assert out["b"]["m"] == {"mean": None, "std": None, "ci_low": None, "ci_high": None, "n": 0}


def test_style_distances_are_bounded_and_scale_free(encoder):
    # relative distances: in [0, 1]; scaling both feature maps of a layer by the same factor changes nothing
    x, s = rand(1, 3, 32, 40, seed=11), rand(1, 3, 36, 36, seed=12)
    fx, fs = encoder(x, metrics.STYLE_LAYERS), encoder(s, metrics.STYLE_LAYERS)
    for layer in metrics.STYLE_LAYERS:
        for fn in (metrics.gram_distance, metrics.meanstd_distance):
            d = fn(fx[layer], fs[layer]).item()
            assert 0.0 <= d <= 1.0
        assert metrics.gram_distance(7.0 * fx[layer], 7.0 * fs[layer]).item() == pytest.approx(
            metrics.gram_distance(fx[layer], fs[layer]).item(), rel=1e-5
        )
    ones = torch.ones(1, 4, 5, 5)
    assert metrics.gram_distance(ones, torch.zeros(1, 4, 5, 5)).item() == pytest.approx(1.0)  # nothing in common


def test_scorer_subset_equals_the_full_set(encoder, cfsd_encoder):
    scorer = metrics.Scorer(encoder, encoder, cfsd_encoder, None)
    output, content, style = rand(1, 3, 32, 32, seed=21), rand(1, 3, 32, 32, seed=22), rand(1, 3, 40, 40, seed=23)
    full = scorer.score(output, content, style)
    part = scorer.score(output, content, style, only=["style_gram", "content_loss", "ssim"])
    assert list(part) == ["content_loss", "style_gram", "ssim"]  # METRICS order
    assert part == {k: full[k] for k in part}
    with pytest.raises(NstError, match="unknown metric"):
        scorer.score(output, content, style, only=["style_loss"])
