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
    batch = contrastive_batch(k)
    content_idx, style_idx, style_pos, content_pos = (
        batch.content_idx,
        batch.style_idx,
        batch.style_pos,
        batch.content_pos,
    )
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
            assert bool(batch.unrelated[a, b]) == (a != b and not same_style and not same_content)
    assert (style_pos.sum(1) == 1).all()
    assert (content_pos.sum(1) == 1).all()
    assert sorted(content_idx.tolist()) == sorted(list(range(k)) * 2)
    assert sorted(style_idx.tolist()) == sorted(list(range(k)) * 2)


def test_batch_needs_two():
    with pytest.raises(NstError, match="k >= 2"):
        contrastive_batch(1)


def naive_info_nce(z: torch.Tensor, pos: torch.Tensor, tau: float, neg: torch.Tensor | None = None) -> float:
    losses = []
    for a in range(z.shape[0]):
        sims = {b: math.exp(float(z[a] @ z[b]) / tau) for b in range(z.shape[0]) if b != a}
        positives = [b for b in sims if pos[a, b]]
        negatives = [b for b in sims if not pos[a, b] and (neg is None or neg[a, b])]
        if positives:
            num = sum(sims[b] for b in positives)
            losses.append(-math.log(num / (num + sum(sims[b] for b in negatives))))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("with_negatives", [False, True])
def test_info_nce_matches_a_naive_loop(with_negatives):
    batch = contrastive_batch(3)
    neg = batch.unrelated if with_negatives else None
    z = F.normalize(torch.randn(6, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    expected = naive_info_nce(z, batch.style_pos, 0.2, neg)
    assert info_nce(z, batch.style_pos, tau=0.2, negatives=neg).item() == pytest.approx(expected, rel=1e-5)


def test_left_out_samples_do_not_change_the_loss():
    # the stylization sharing the anchor's content is neither positive nor negative for the style loss
    batch = contrastive_batch(3)
    z = F.normalize(torch.randn(6, 8, generator=torch.Generator().manual_seed(3)), dim=1)
    moved = z.clone()
    moved[3] = F.normalize(torch.randn(8, generator=torch.Generator().manual_seed(4)), dim=0)  # (c0, s1)
    # anchor 0 = (c0, s0): sample 3 shares its content -> excluded; a changed sample 3 leaves anchor 0's term alone
    row = torch.zeros(6, 6, dtype=torch.bool)
    row[0] = batch.style_pos[0]
    a = info_nce(z, row, negatives=batch.unrelated)
    b = info_nce(moved, row, negatives=batch.unrelated)
    assert not batch.unrelated[0, 3]
    assert a.item() == pytest.approx(b.item(), rel=1e-6)
    assert info_nce(z, row).item() != pytest.approx(info_nce(moved, row).item(), rel=1e-3)  # default: it counts


def test_aligned_embeddings_score_lower_than_random():
    batch = contrastive_batch(6)
    style_idx, style_pos = batch.style_idx, batch.style_pos
    prototypes = F.normalize(torch.randn(6, 16, generator=torch.Generator().manual_seed(1)), dim=1)
    aligned = prototypes[style_idx]  # stylizations sharing a style get the same embedding
    random = F.normalize(torch.randn(12, 16, generator=torch.Generator().manual_seed(2)), dim=1)
    assert info_nce(aligned, style_pos) < info_nce(random, style_pos)


def test_info_nce_gradients_flow():
    content_pos = contrastive_batch(2).content_pos
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
    assert lsgan_loss(zeros, target_real=True).item() == 2.0  # summed over the two scales, 1 each
    halves = [torch.full((1, 1, 2, 2), 0.5)]
    assert lsgan_loss(halves, target_real=True).item() == pytest.approx(0.25)


def test_discriminator_skips_scales_too_small_and_rejects_tiny_inputs():
    disc = MultiScaleDiscriminator(scales=3, width=8, depth=4)  # needs >= 32 px per scale
    assert len(disc(torch.rand(1, 3, 64, 64))) == 2  # 64 -> 32 -> (16: skipped)
    assert len(disc(torch.rand(1, 3, 128, 128))) == 3
    with pytest.raises(NstError, match="32 px minimum"):
        disc(torch.rand(1, 3, 24, 64))


def test_info_nce_logits_stay_float32_under_bf16_autocast():
    """Issue 17: the logits are computed with autocast off. Under bf16 autocast a bf16 matmul would round the cosine
    similarities to 8 mantissa bits (errors of ~1e-3 relative in the loss); here the result is float32 and equals the
    float32 loop on the same embeddings."""
    batch = contrastive_batch(3)
    z = F.normalize(torch.randn(6, 64, generator=torch.Generator().manual_seed(4)), dim=1)
    z = z.bfloat16().float()  # embeddings a bf16 network could produce, so only the logits' precision differs
    expected = naive_info_nce(z, batch.style_pos, 0.2, batch.unrelated)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = info_nce(z, batch.style_pos, tau=0.2, negatives=batch.unrelated)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected, rel=1e-6)
