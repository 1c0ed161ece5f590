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
    weighted_sum,
    weighted_terms,
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


def test_gram_style_loss_sums_the_layers():
    gen = torch.Generator().manual_seed(1)
    feats = {"a": torch.randn(1, 2, 3, 3, generator=gen), "b": torch.randn(1, 4, 2, 2, generator=gen)}
    targets = {"a": torch.randn(1, 2, 2, generator=gen), "b": torch.randn(1, 4, 4, generator=gen)}
    expected = ((gram_matrix(feats["a"]) - targets["a"]) ** 2).mean() + (
        (gram_matrix(feats["b"]) - targets["b"]) ** 2
    ).mean()
    torch.testing.assert_close(gram_style_loss(feats, targets), expected.view(1))


def test_weighted_terms_by_hand_in_the_weights_order():
    terms = {"style": torch.tensor(3.0), "content": torch.tensor(2.0)}
    got = weighted_terms(terms, {"content": 5.0, "style": 100.0})
    assert list(got) == ["content", "style", "total"]
    assert [v.item() for v in got.values()] == [10.0, 300.0, 310.0]
    assert weighted_sum(terms, {"content": 5.0, "style": 100.0}).item() == 310.0
    per_item = weighted_terms({"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([3.0, 4.0])}, {"a": 1.0, "b": 2.0})
    torch.testing.assert_close(per_item["total"], torch.tensor([7.0, 10.0]), rtol=0, atol=0)


@pytest.mark.parametrize("n", [2, 3])
def test_weighted_sum_is_the_left_fold_bit_for_bit(n):
    """Gatys (three terms) and AdaIN (two) added ``a * x + b * y (+ c * z)`` left to right before the shared sum:
    the stacked sum must round exactly as that, over values spread across many magnitudes."""
    gen = torch.Generator().manual_seed(n)
    names = [f"t{i}" for i in range(n)]
    for _ in range(2000):
        values = (torch.randn(n, generator=gen) * torch.exp(torch.randn(n, generator=gen) * 4)).unbind()
        weights = (torch.exp(torch.randn(n, generator=gen) * 3)).tolist()
        fold = weights[0] * values[0]
        for w, v in zip(weights[1:], values[1:], strict=True):
            fold = fold + w * v
        total = weighted_sum(dict(zip(names, values, strict=True)), dict(zip(names, weights, strict=True)))
        assert torch.equal(total, fold)


def test_weighted_sum_of_six_is_the_stacked_sum_the_contrastive_method_used():
    gen = torch.Generator().manual_seed(6)
    names = [f"t{i}" for i in range(6)]
    for _ in range(500):
        values = (torch.randn(6, generator=gen) * torch.exp(torch.randn(6, generator=gen) * 4)).unbind()
        weights = (torch.exp(torch.randn(6, generator=gen) * 3)).tolist()
        before = torch.stack([w * v for w, v in zip(weights, values, strict=True)]).sum()
        total = weighted_sum(dict(zip(names, values, strict=True)), dict(zip(names, weights, strict=True)))
        assert torch.equal(total, before)


def test_weighted_terms_gradients_are_the_weights():
    x, y = torch.tensor(2.0, requires_grad=True), torch.tensor(-1.0, requires_grad=True)
    weighted_sum({"x": x, "y": y}, {"x": 0.5, "y": 7.0}).backward()
    assert (x.grad.item(), y.grad.item()) == (0.5, 7.0)


@pytest.mark.parametrize(
    ("terms", "weights"),
    [
        ({"a": 1.0}, {"a": 1.0, "b": 2.0}),
        ({"a": 1.0, "b": 1.0}, {"a": 1.0}),
        ({}, {}),
        ({"total": 1.0}, {"total": 1.0}),
    ],
)
def test_weighted_terms_need_the_same_names(terms, weights):
    with pytest.raises(ValueError, match="must name the same terms"):
        weighted_terms({k: torch.tensor(v) for k, v in terms.items()}, weights)


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
