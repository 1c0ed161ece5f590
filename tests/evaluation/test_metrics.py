"""Every metric against an independent computation; bootstrap CIs; LPIPS honesty."""

from __future__ import annotations

import math

import lpips
import numpy as np
import piq
import pytest
import torch

from evaluation import metrics
from evaluation.summary import bootstrap_ci, summarize
from methods.encoder import random_encoder
from methods.losses import gram_matrix


@pytest.fixture(scope="module")
def encoder():
    return random_encoder(seed=0)


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


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


def test_ssim_matches_piq_and_a_naive_loop():
    x, y = rand(2, 3, 18, 16, seed=1), rand(2, 3, 18, 16, seed=2)
    y = (0.6 * x + 0.4 * y).clamp(0, 1)  # correlated, so SSIM is far from 0
    ours = metrics.ssim(x, y)
    torch.testing.assert_close(ours, piq.ssim(x, y, data_range=1.0, reduction="none"))
    for b in range(2):
        assert ours[b].item() == pytest.approx(naive_ssim(x[b].double().numpy(), y[b].double().numpy()), abs=1e-5)


def test_content_loss_is_feature_mse(encoder):
    x, y = rand(1, 3, 32, 32, seed=3), rand(1, 3, 32, 32, seed=4)
    fx, fy = encoder(x, ["relu4_2"])["relu4_2"], encoder(y, ["relu4_2"])["relu4_2"]
    expected = ((fx - fy) ** 2).mean()
    torch.testing.assert_close(metrics.content_loss(x, y, encoder), expected.view(1))
    torch.testing.assert_close(metrics.content_loss(x, x, encoder), torch.zeros(1))


def test_style_loss_is_gram_mse_over_five_layers(encoder):
    x, s = rand(1, 3, 32, 40, seed=5), rand(1, 3, 48, 48, seed=6)  # the style may have another size
    fx = encoder(x, metrics.STYLE_LAYERS)
    fs = encoder(s, metrics.STYLE_LAYERS)
    expected = sum(((gram_matrix(fx[k]) - gram_matrix(fs[k])) ** 2).mean() for k in metrics.STYLE_LAYERS)
    torch.testing.assert_close(metrics.style_loss(x, s, encoder), expected.view(1))


def test_cfsd_zero_for_identical_and_positive_otherwise(encoder):
    x = rand(1, 3, 40, 48, seed=7)
    assert metrics.cfsd(x, x, encoder).item() == pytest.approx(0.0, abs=1e-7)
    assert metrics.cfsd(rand(1, 3, 40, 48, seed=8), x, encoder).item() > 1e-6
    # structure-preserving change (slight brightness) scores lower than unrelated noise
    assert metrics.cfsd((x * 0.9).clamp(0, 1), x, encoder) < metrics.cfsd(rand(1, 3, 40, 48, seed=8), x, encoder)


def test_cfsd_matches_its_definition(encoder):
    x, y = rand(1, 3, 24, 24, seed=9), rand(1, 3, 24, 24, seed=10)
    fo = encoder(x, ["relu3_1"])["relu3_1"][0].flatten(1)
    fc = encoder(y, ["relu3_1"])["relu3_1"][0].flatten(1)
    fo, fc = fo / fo.norm(dim=0, keepdim=True), fc / fc.norm(dim=0, keepdim=True)
    po, pc = torch.softmax(fo.T @ fo, dim=-1), torch.softmax(fc.T @ fc, dim=-1)
    expected = (pc * (pc.log() - po.log())).sum(dim=1).mean()
    assert metrics.cfsd(x, y, encoder).item() == pytest.approx(expected.item(), rel=1e-3)


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
    ours = metrics.load_lpips(tmp_path / "alexnet_random.pth", download=False)
    x, y = rand(2, 3, 64, 64, seed=11), rand(2, 3, 64, 64, seed=12)
    with torch.no_grad():
        expected = reference(x * 2 - 1, y * 2 - 1).flatten()
    torch.testing.assert_close(metrics.lpips_distance(x, y, ours), expected)
    assert metrics.lpips_distance(x, x, ours).abs().max() < 1e-6


def test_missing_lpips_weights_are_named(tmp_path):
    with pytest.raises(metrics.LpipsUnavailable, match=r"alexnet-owt-7be5be79\.pth.*not found at .*nope\.pth"):
        metrics.load_lpips(tmp_path / "nope.pth", download=False)


def test_scorer_identity_and_nan_lpips(encoder):
    scorer = metrics.Scorer(encoder, lpips_model=None, cfsd_max_side=64)
    content, style = rand(1, 3, 40, 52, seed=13), rand(1, 3, 30, 30, seed=14)
    scores = scorer.score(content, content, style)
    assert list(scores) == list(metrics.METRICS)
    assert scores["content_loss"] == 0.0
    assert scores["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert scores["cfsd"] == pytest.approx(0.0, abs=1e-7)
    assert math.isnan(scores["lpips"])
    assert metrics.METRICS["ssim"].higher_is_better
    assert not metrics.METRICS["style_loss"].higher_is_better
    assert metrics.METRICS["style_loss"].compares_to == "style"


def test_size_mismatch_is_an_error(encoder):
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.content_loss(rand(1, 3, 16, 16), rand(1, 3, 16, 18), encoder)


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
