"""Shared loss functions against hand-worked values and naive loops."""

from __future__ import annotations

import pytest
import torch

from methods.losses import (
    content_loss,
    gram_matrix,
    gram_style_loss,
    mean_std,
    mean_std_loss,
    mse_per_item,
    total_variation,
)


def test_gram_of_a_hand_worked_two_channel_tensor():
    # channel 0 = [1, 2, 3, 4], channel 1 = [0, 1, 0, 1] on a 2x2 grid; C*H*W = 8
    feats = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [0.0, 1.0]]]])
    expected = torch.tensor([[[30.0, 6.0], [6.0, 2.0]]]) / 8  # <c0,c0> = 1+4+9+16, <c0,c1> = 2+4, <c1,c1> = 2
    torch.testing.assert_close(gram_matrix(feats), expected)


def test_gram_matches_a_naive_loop():
    feats = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    naive = torch.zeros(2, 3, 3)
    for b in range(2):
        for i in range(3):
            for j in range(3):
                naive[b, i, j] = (feats[b, i] * feats[b, j]).sum() / (3 * 4 * 5)
    torch.testing.assert_close(gram_matrix(feats), naive)


def test_content_loss_zero_for_identical_and_hand_value():
    a = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(content_loss(a, a), torch.zeros(2))
    b = a.clone()
    b[1] += 2.0  # every element of item 1 off by 2 -> MSE 4
    torch.testing.assert_close(content_loss(b, a), torch.tensor([0.0, 4.0]))


def test_gram_style_loss_weighted_layers():
    gen = torch.Generator().manual_seed(1)
    feats = {"a": torch.randn(1, 2, 3, 3, generator=gen), "b": torch.randn(1, 4, 2, 2, generator=gen)}
    targets = {"a": torch.randn(1, 2, 2, generator=gen), "b": torch.randn(1, 4, 4, generator=gen)}
    expected = (
        2.0 * ((gram_matrix(feats["a"]) - targets["a"]) ** 2).mean()
        + 0.5 * ((gram_matrix(feats["b"]) - targets["b"]) ** 2).mean()
    )
    got = gram_style_loss(feats, targets, {"a": 2.0, "b": 0.5})
    torch.testing.assert_close(got, expected.view(1))


def test_total_variation_of_a_known_image():
    # one channel, rows [0, 1, 3] and [0, 1, 3]: horizontal diffs 1, 2 (x2 rows) -> mean (1+4)/2 = 2.5; vertical 0
    image = torch.tensor([[0.0, 1.0, 3.0], [0.0, 1.0, 3.0]]).view(1, 1, 2, 3)
    torch.testing.assert_close(total_variation(image), torch.tensor([2.5]))
    torch.testing.assert_close(total_variation(torch.ones(2, 3, 5, 5)), torch.zeros(2))


def test_mean_std_and_loss():
    feats = torch.tensor([1.0, 2.0, 3.0, 6.0]).view(1, 1, 2, 2)
    mean, std = mean_std(feats, eps=0.0)
    torch.testing.assert_close(mean.flatten(), torch.tensor([3.0]))
    torch.testing.assert_close(std.flatten(), torch.tensor([14.0 / 3]).sqrt())  # unbiased var = 14/3
    other = feats * 2 + 1  # mean 7, std doubled
    loss = mean_std_loss({"x": feats}, {"x": other})
    _, std_eps = mean_std(feats)
    _, std_other = mean_std(other)
    torch.testing.assert_close(loss, ((7.0 - 3.0) ** 2 + (std_other - std_eps).pow(2)).flatten())


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        gram_matrix(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="shapes differ"):
        mse_per_item(torch.zeros(1, 2), torch.zeros(1, 3))
