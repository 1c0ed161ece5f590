"""AdaIN: the AdaIN operation by hand, geometry, alpha, colour preservation, interpolation, saving/loading."""

from __future__ import annotations

import math

import pytest
import torch

from methods.adain import AdaIN, AdaINParams, adain, adain_transfer, match_color
from methods.encoder import random_encoder
from methods.errors import NstError
from methods.losses import mean_std
from methods.registry import build_method
from methods.schemas.adain_params import AdaINTrain


@pytest.fixture(scope="module")
def model() -> AdaIN:
    return AdaIN(AdaINParams(train=AdaINTrain(init_seed=0)), encoder=random_encoder(seed=0, last_layer="relu4_1"))


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def test_adain_by_hand():
    content = torch.tensor([0.0, 2.0]).view(1, 1, 1, 2)  # mean 1, unbiased std sqrt(2)
    style = torch.tensor([5.0, 5.0, 7.0, 7.0]).view(1, 1, 2, 2)  # mean 6, unbiased std sqrt(4/3)
    out = adain(content, style, eps=0.0)
    d = math.sqrt(2.0 / 3.0)  # (x - 1) / sqrt(2) * sqrt(4/3)
    torch.testing.assert_close(out.flatten(), torch.tensor([6.0 - d, 6.0 + d]))


def test_adain_output_has_the_style_statistics():
    content, style = rand(2, 8, 5, 7, seed=1) * 3, rand(2, 8, 4, 4, seed=2) * 10 + 2
    out = adain(content, style, eps=1e-8)
    for got, want in zip(mean_std(out, eps=0.0), mean_std(style, eps=0.0), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(1, 3, 37, 53), (2, 3, 64, 40), (1, 3, 15, 9)])
def test_reconstruct_keeps_the_input_size(model, shape):
    assert model.reconstruct(rand(*shape)).shape == shape


def test_alpha_zero_is_the_decoded_content(model):
    content, style = rand(1, 3, 45, 38, seed=3), rand(1, 3, 30, 30, seed=4)
    with torch.no_grad():
        expected = model.reconstruct(content).clamp(0, 1)
    torch.testing.assert_close(model.stylize(content, style, alpha=0.0), expected)
    assert not torch.allclose(model.stylize(content, style, alpha=1.0), expected)


def test_interpolation_weights(model):
    content, s1, s2 = rand(1, 3, 32, 32, seed=5), rand(1, 3, 24, 24, seed=6), rand(1, 3, 40, 28, seed=7)
    torch.testing.assert_close(model.stylize(content, [s1, s2], style_weights=[1.0, 0.0]), model.stylize(content, s1))
    mixed = model.stylize(content, [s1, s2], style_weights=[0.5, 0.5])
    assert not torch.allclose(mixed, model.stylize(content, s1))
    with pytest.raises(NstError, match="style_weights"):
        model.stylize(content, [s1, s2], style_weights=[1.0])


def test_match_color_gives_the_content_colour_statistics():
    style = rand(1, 3, 20, 20, seed=8) * 0.5 + torch.tensor([0.4, 0.1, 0.0]).view(1, 3, 1, 1)
    content = rand(1, 3, 16, 24, seed=9) * 0.6 + 0.2
    out = match_color(style, content)
    flat_o, flat_c = out[0].reshape(3, -1).double(), content[0].reshape(3, -1).double()
    torch.testing.assert_close(flat_o.mean(1), flat_c.mean(1), atol=2e-3, rtol=0)
    torch.testing.assert_close(torch.cov(flat_o, correction=0), torch.cov(flat_c, correction=0), atol=2e-3, rtol=0)


def test_preserve_color_changes_the_output(model):
    content, style = rand(1, 3, 32, 32, seed=10), rand(1, 3, 32, 32, seed=11)
    assert not torch.allclose(model.stylize(content, style, preserve_color=True), model.stylize(content, style))


def test_save_load_round_trip(model, tmp_path):
    path = model.save(tmp_path / "adain")
    assert path.name == "decoder.pt"
    fresh = AdaIN(AdaINParams(train=AdaINTrain(init_seed=1)), encoder=model.encoder)
    content, style = rand(1, 3, 24, 24, seed=12), rand(1, 3, 24, 24, seed=13)
    assert not torch.allclose(fresh.stylize(content, style), model.stylize(content, style))
    fresh.load(tmp_path / "adain")
    torch.testing.assert_close(fresh.stylize(content, style), model.stylize(content, style))


def test_missing_and_corrupt_models_are_named(model, tmp_path):
    with pytest.raises(NstError, match=r"decoder\.pt: no AdaIN model"):
        model.load(tmp_path)
    (tmp_path / "decoder.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(NstError, match=r"decoder\.pt: not a readable AdaIN model"):
        model.load(tmp_path)
    with pytest.raises(NstError, match="needs a trained model"):
        build_method("adain", {}, encoder=model.encoder, model=None)


def test_bad_alpha():
    with pytest.raises(ValueError, match="alpha"):
        AdaINParams(alpha=1.5)


def test_adain_transfer_is_a_pure_function_of_features():
    """Issue 27: the AdaIN step apart from any module: features in, features out, alpha and style weights included."""
    gen = torch.Generator().manual_seed(0)
    content, s1, s2 = (torch.randn(1, 4, 5, 6, generator=gen) for _ in range(3))
    kept = [t.clone() for t in (content, s1, s2)]
    torch.testing.assert_close(adain_transfer(content, [(s1, 1.0)]), adain(content, s1), rtol=0, atol=0)
    torch.testing.assert_close(adain_transfer(content, [(s1, 1.0)], alpha=0.0), content, rtol=0, atol=1e-7)
    mixed = adain_transfer(content, [(s1, 0.25), (s2, 0.75)], alpha=0.5)
    expected = 0.5 * (0.25 * adain(content, s1) + 0.75 * adain(content, s2)) + 0.5 * content
    torch.testing.assert_close(mixed, expected)
    assert all(torch.equal(a, b) for a, b in zip(kept, (content, s1, s2), strict=True))  # inputs untouched
