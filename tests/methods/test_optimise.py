"""The image-optimisation loop on losses whose minimum is known by hand."""

from __future__ import annotations

import pytest
import torch

from methods.errors import NstError
from methods.optimise import optimise_image

TARGET = torch.linspace(0, 1, 2 * 3 * 4 * 5).view(2, 3, 4, 5)


def quadratic(image: torch.Tensor):
    """``sum (x - t)^2``: minimum 0 at the target image."""
    total = (image - TARGET).pow(2).sum()
    return total, {"total": float(total.detach())}


@pytest.mark.parametrize(("optimizer", "iterations", "lr"), [("lbfgs", 20, 1.0), ("adam", 300, 0.05)])
def test_both_optimisers_reach_the_known_minimum(optimizer, iterations, lr):
    start = torch.zeros(2, 3, 4, 5)
    image, records = optimise_image(start, quadratic, optimizer, iterations, lr)
    torch.testing.assert_close(image, TARGET, atol=2e-3, rtol=0)
    assert records[-1]["total"] < 1e-4 < records[0]["total"]
    assert not image.requires_grad
    assert torch.equal(start, torch.zeros(2, 3, 4, 5))  # the start image is not optimised in place


def test_records_and_callbacks_count_the_evaluations():
    seen: list[tuple[int, float]] = []
    _, records = optimise_image(
        torch.zeros(2, 3, 4, 5), quadratic, "adam", 7, 0.1, callback=lambda i, t: seen.append((i, t["total"]))
    )
    assert [i for i, _ in seen] == list(range(7))  # Adam: one evaluation per iteration
    assert [t for _, t in seen] == [r["total"] for r in records]
    _, lbfgs = optimise_image(torch.zeros(2, 3, 4, 5), quadratic, "lbfgs", 8, 1.0)
    assert 1 <= len(lbfgs) <= 8 * 5 // 4 + 3  # max_eval, checked by torch between iterations
    _, none = optimise_image(torch.zeros(2, 3, 4, 5), quadratic, "lbfgs", 0, 1.0)
    assert none == []


def test_a_channels_last_start_is_optimised_as_nchw():
    """L-BFGS flattens image and gradient with ``view(-1)``: both must be NCHW-contiguous, whatever the start's
    format and however the loss lays out its gradient."""
    start = torch.zeros(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)
    seen: list[bool] = []

    def channels_last_loss(image):
        seen.append(image.is_contiguous())
        return quadratic(image.contiguous(memory_format=torch.channels_last))

    image, _ = optimise_image(start, channels_last_loss, "lbfgs", 5, 1.0)
    assert image.is_contiguous()
    assert all(seen)
    torch.testing.assert_close(image, TARGET, atol=2e-3, rtol=0)


def test_a_non_finite_loss_is_named():
    def exploding(image):
        total = image.sum() * float("inf")
        return total, {"total": float(total.detach())}

    with pytest.raises(NstError, match="gatys: loss became non-finite at evaluation 0"):
        optimise_image(torch.ones(1, 3, 2, 2), exploding, "lbfgs", 3, 1.0, name="gatys")
