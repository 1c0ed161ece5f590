"""Reference rows, each against a direct computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from evaluation import references as ref
from evaluation import rendering as report
from evaluation import summary
from pipeline.stages import evaluate


def rand(h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_identity_and_grey():
    c = rand(20, 30)
    assert torch.equal(ref.identity(c, rand(5, 5)), c)
    g = ref.grey(c, rand(5, 5))
    assert g.shape == c.shape
    for ch in range(3):
        assert torch.allclose(g[0, ch], torch.full((20, 30), c[0, ch].mean().item()), atol=1e-6)


@pytest.mark.parametrize(("content_hw", "style_hw"), [((40, 60), (60, 60)), ((60, 40), (30, 90)), ((32, 32), (64, 64))])
def test_style_copy_keeps_the_paintings_aspect_ratio(content_hw, style_hw):
    # a painting whose red channel is its column position and green channel its row position (0..1): a centre crop
    # shows only the middle part of that ramp, a stretch would show all of it
    sh, sw = style_hw
    style = torch.zeros(1, 3, sh, sw)
    style[0, 0] = (torch.arange(sw, dtype=torch.float32) + 0.5).div(sw).expand(sh, sw)
    style[0, 1] = (torch.arange(sh, dtype=torch.float32) + 0.5).div(sh).view(-1, 1).expand(sh, sw)
    out = ref.style_copy(torch.zeros(1, 3, *content_hw), style)
    assert out.shape[-2:] == content_hw
    h, w = content_hw
    if sw / sh > w / h:  # the painting is wider: its central columns are kept, all rows
        keep = round(sh * w / h) / sw
        span_x, span_y = ((1 - keep) / 2, (1 + keep) / 2), (0.0, 1.0)
    else:
        keep = round(sw * h / w) / sh
        span_x, span_y = (0.0, 1.0), ((1 - keep) / 2, (1 + keep) / 2)
    red, green = out[0, 0, h // 2], out[0, 1, :, w // 2]
    for ramp, (lo, hi) in ((red, span_x), (green, span_y)):
        assert float(ramp.min()) == pytest.approx(lo, abs=0.04)
        assert float(ramp.max()) == pytest.approx(hi, abs=0.04)


def test_blur_matches_a_naive_gaussian_convolution():
    c = rand(24, 32, seed=3)
    out = ref.blur(c, c)
    sigma = ref.blur_sigma(24, 32)
    assert sigma == pytest.approx(4.0 * 32 / 256)
    radius = max(1, math.ceil(3 * sigma))
    xs = np.arange(-radius, radius + 1)
    k1 = np.exp(-(xs**2) / (2 * sigma**2))
    img = c[0].double().numpy()
    expected = np.zeros_like(img)
    h, w = img.shape[1:]

    def reflect(i: int, n: int) -> int:
        return -i if i < 0 else (2 * (n - 1) - i if i >= n else i)

    for y in range(h):
        for x in range(w):
            acc = np.zeros(3)
            norm = 0.0
            for dy, ky in zip(xs, k1, strict=True):
                for dx, kx in zip(xs, k1, strict=True):
                    acc += ky * kx * img[:, reflect(y + dy, h), reflect(x + dx, w)]
                    norm += ky * kx
            expected[:, y, x] = acc / norm
    np.testing.assert_allclose(out[0].double().numpy(), expected, atol=1e-5)


def test_blur_sigma_scales_with_the_long_side():
    assert ref.blur_sigma(256, 192) == pytest.approx(4.0)
    assert ref.blur_sigma(384, 512) == pytest.approx(8.0)


def test_every_reference_row_has_the_contents_shape():
    c, s = rand(33, 47), rand(60, 20)
    outs = ref.reference_outputs(c, s)
    assert list(outs) == list(ref.REFERENCE_ROWS) == ["identity", "style_copy", "grey", "blur"]
    for out in outs.values():
        assert out.shape == c.shape
        assert float(out.min()) >= 0.0
        assert float(out.max()) <= 1.0


def test_every_consumer_uses_the_one_list_of_reference_rows():
    """evaluation.references owns the rows (names and order); the evaluate stage (which writes them into
    statistics.json and scoring.json), the ranking and the report use that very tuple, not a copy of it."""
    assert ref.REFERENCE_ROWS == tuple(ref.REFERENCES) == ("identity", "style_copy", "grey", "blur")
    assert evaluate.REFERENCE_ROWS is ref.REFERENCE_ROWS
    assert report.REFERENCE_ROWS is ref.REFERENCE_ROWS
    assert summary.REFERENCE_METHODS is ref.REFERENCE_ROWS
    # a statistics.json without its own list falls back to the same rows, in the same order
    assert report.references_of({}) == ref.REFERENCE_ROWS
    stats = {"methods": {m: {} for m in ["gatys", *reversed(ref.REFERENCE_ROWS)]}}
    assert report.row_order(stats) == ["gatys", *ref.REFERENCE_ROWS]
