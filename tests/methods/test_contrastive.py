"""Contrastive-method building blocks: batch masks, InfoNCE vs a naive loop, SANet, discriminator, LSGAN."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from methods.contrastive import (
    MultiScaleDiscriminator,
    ProjectionHead,
    SANet,
    contrastive_batch,
    info_nce,
    lsgan_loss,
)
from methods.errors import NstError


@pytest.mark.parametrize("k", [2, 3, 6])
def test_masks_mark_exactly_the_pairs_sharing_a_style_or_content(k):
    content_idx, style_idx, style_pos, content_pos = contrastive_batch(k)
    n = 2 * k
    assert content_idx.shape == style_idx.shape == (n,)
    pairs = list(zip(content_idx.tolist(), style_idx.tolist(), strict=True))
    assert len(set(pairs)) == n  # every stylization is a different (content, style) pair
    for a in range(n):
        for b in range(n):
            same_style = a != b and pairs[a][1] == pairs[b][1]
            same_content = a != b and pairs[a][0] == pairs[b][0]
            assert bool(style_pos[a, b]) == same_style
            assert bool(content_pos[a, b]) == same_content
    assert (style_pos.sum(1) == 1).all()
    assert (content_pos.sum(1) == 1).all()
    assert sorted(content_idx.tolist()) == sorted(list(range(k)) * 2)
    assert sorted(style_idx.tolist()) == sorted(list(range(k)) * 2)


def test_batch_needs_two():
    with pytest.raises(NstError, match="k >= 2"):
        contrastive_batch(1)


def naive_info_nce(z: torch.Tensor, pos: torch.Tensor, tau: float) -> float:
    losses = []
    for a in range(z.shape[0]):
        sims = {b: math.exp(float(z[a] @ z[b]) / tau) for b in range(z.shape[0]) if b != a}
        positives = [b for b in sims if pos[a, b]]
        if positives:
            losses.append(-math.log(sum(sims[b] for b in positives) / sum(sims.values())))
    return sum(losses) / len(losses)


def test_info_nce_matches_a_naive_loop():
    _, _, style_pos, _ = contrastive_batch(3)
    z = F.normalize(torch.randn(6, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    assert info_nce(z, style_pos, tau=0.2).item() == pytest.approx(naive_info_nce(z, style_pos, 0.2), rel=1e-5)


def test_aligned_embeddings_score_lower_than_random():
    _, style_idx, style_pos, _ = contrastive_batch(6)
    prototypes = F.normalize(torch.randn(6, 16, generator=torch.Generator().manual_seed(1)), dim=1)
    aligned = prototypes[style_idx]  # stylizations sharing a style get the same embedding
    random = F.normalize(torch.randn(12, 16, generator=torch.Generator().manual_seed(2)), dim=1)
    assert info_nce(aligned, style_pos) < info_nce(random, style_pos)


def test_info_nce_gradients_flow():
    _, _, _, content_pos = contrastive_batch(2)
    z = torch.randn(4, 8, requires_grad=True)
    info_nce(F.normalize(z, dim=1), content_pos).backward()
    assert z.grad is not None
    assert z.grad.abs().sum() > 0


def test_sanet_keeps_the_content_shape_and_attends_to_style():
    net = SANet(16)
    content, style = torch.randn(2, 16, 5, 7), torch.randn(2, 16, 3, 4)
    out = net(content, style)
    assert out.shape == content.shape
    assert not torch.allclose(out, net(content, torch.randn(2, 16, 3, 4)))


def test_projection_head_is_normalised():
    z = ProjectionHead(32, hidden=16, out_dim=8)(torch.randn(3, 32, 4, 4))
    assert z.shape == (3, 8)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(3))


def test_discriminator_outputs_per_scale_and_lsgan_targets():
    disc = MultiScaleDiscriminator(scales=3, width=8, depth=2)
    outs = disc(torch.rand(2, 3, 64, 48))
    assert [tuple(o.shape) for o in outs] == [(2, 1, 16, 12), (2, 1, 8, 6), (2, 1, 4, 3)]
    ones = [torch.ones(2, 1, 4, 4), torch.ones(2, 1, 2, 2)]
    zeros = [torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 2, 2)]
    assert lsgan_loss(ones, target_real=True).item() == 0.0
    assert lsgan_loss(zeros, target_real=False).item() == 0.0
    assert lsgan_loss(zeros, target_real=True).item() == 1.0
    halves = [torch.full((1, 1, 2, 2), 0.5)]
    assert lsgan_loss(halves, target_real=True).item() == pytest.approx(0.25)
