"""The contrastive method as a whole: generator wiring, loss terms, training with the discriminator, resume, I/O."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from methods import contrastive
from methods.contrastive import LAYERS, Contrastive, ContrastiveParams, MultiScaleDiscriminator, Transform
from methods.encoder import load_encoder, random_encoder
from methods.errors import NstError
from methods.registry import build_method
from methods.schemas.contrastive_params import ContrastiveTrain
from methods.schemas.schedule import TrainParams
from methods.training import LossHistory, RandomCrops, checkpoints, load_latest, train

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def encoder():
    return random_encoder(seed=0, last_layer="relu5_1")


def smooth_images(seed: int, n: int = 4, side: int = 48) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [F.interpolate(torch.rand(1, 3, 6, 6, generator=gen), size=(side, side), mode="bilinear") for _ in range(n)]


def crops(seed: int, n: int = 4, crop: int = 32) -> RandomCrops:
    images = smooth_images(seed, n)
    return RandomCrops(lambda i: images[i], n, crop)


def config(**changes) -> TrainParams:
    base = {
        "iterations": 6,
        "batch_size": 4,
        "lr": 1e-3,
        "lr_decay": 5e-5,
        "checkpoint_every": 2,
        "keep_checkpoints": 2,
        "seed": 0,
    }
    return TrainParams(**{**base, **changes})


def test_transform_keeps_the_relu4_1_shape_for_odd_sizes():
    t = Transform(8)
    content = {"relu4_1": torch.randn(2, 8, 5, 7), "relu5_1": torch.randn(2, 8, 3, 4)}
    style = {"relu4_1": torch.randn(2, 8, 4, 4), "relu5_1": torch.randn(2, 8, 2, 2)}
    assert t(content, style).shape == (2, 8, 5, 7)


def test_alpha_zero_is_the_content_through_the_identity_path(encoder):
    model = Contrastive(encoder=encoder)
    content = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(0))
    style = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        feats = model.encode(content, ("relu4_1", "relu5_1"))
        expected = model.decoder(model.transform(feats, feats)).clamp(0, 1)
    torch.testing.assert_close(model.stylize(content, style, alpha=0.0), expected)
    assert not torch.allclose(model.stylize(content, style, alpha=1.0), expected)


def test_loss_terms_are_finite_weighted_and_sum_to_total(encoder):
    model = Contrastive(ContrastiveParams(train=ContrastiveTrain(gan_weight=0.0)), encoder=encoder)
    terms = model.losses(torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32))  # k = 3 -> 6 stylizations
    assert set(terms) == {
        "content",
        "style",
        "identity_pixel",
        "identity_feature",
        "style_contrastive",
        "content_contrastive",
        "total",
    }
    assert all(torch.isfinite(v) for v in terms.values())
    total = sum(v for k, v in terms.items() if k != "total")
    assert terms["total"].item() == pytest.approx(total.item(), rel=1e-6)
    # the generator's adversarial term comes after the discriminator's step (train.py), on the same pass's fakes
    _, fakes = model.generator_losses(torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32))
    assert fakes.shape == (6, 3, 32, 32)
    assert set(model.adversarial_losses(fakes)) == {"gan"}


def test_losses_keep_nothing_between_calls(encoder):
    """Issue 27: the fakes went from one call to the next through the model (``self._fakes``). Now every term depends
    on its arguments alone: two passes in either order, and the adversary's terms on either pass's fakes, give the
    same values."""
    model = Contrastive(encoder=encoder)
    gen = torch.Generator().manual_seed(3)
    a = torch.rand(2, 3, 32, 32, generator=gen), torch.rand(2, 3, 32, 32, generator=gen)
    b = torch.rand(2, 3, 32, 32, generator=gen), torch.rand(2, 3, 32, 32, generator=gen)

    def values(batch):
        terms, fakes = model.generator_losses(*batch)
        adversary = model.adversary_losses(batch[1], fakes)
        adversarial = model.adversarial_losses(fakes)
        return {k: v.item() for k, v in {**terms, **adversarial, **{f"d_{k}": v for k, v in adversary.items()}}.items()}

    with torch.no_grad():
        first_a, first_b = values(a), values(b)
        second_b, second_a = values(b), values(a)
        _, fakes_a = model.generator_losses(*a)
        model.generator_losses(*b)  # a later pass changes nothing for a's fakes
        late = model.adversarial_losses(fakes_a)["gan"].item()
    assert first_a == second_a
    assert first_b == second_b
    assert first_a != first_b
    assert late == first_a["gan"]
    assert not hasattr(model, "_fakes")


def test_weights_scale_their_terms(encoder):
    content, style = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    one = Contrastive(encoder=encoder).losses(content, style)
    doubled = Contrastive(
        ContrastiveParams(train=ContrastiveTrain(style_weight=2.0, style_contrastive_weight=7.2)), encoder=encoder
    )
    two = doubled.losses(content, style)
    assert two["style"].item() == pytest.approx(2 * one["style"].item(), rel=1e-5)
    assert two["style_contrastive"].item() == pytest.approx(2 * one["style_contrastive"].item(), rel=1e-5)
    assert two["content"].item() == pytest.approx(one["content"].item(), rel=1e-5)


def test_discriminator_learns_to_separate_real_from_fake(encoder):
    torch.manual_seed(0)
    model = Contrastive(encoder=encoder)
    content, style = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    _, fakes = model.generator_losses(content, style)
    opt = torch.optim.Adam(model.discriminator.parameters(), lr=1e-3, betas=(0.5, 0.999))
    first = model.adversary_losses(style, fakes)["total"].item()
    for _ in range(30):
        loss = model.adversary_losses(style, fakes)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert model.adversary_losses(style, fakes)["total"].item() < 0.5 * first


@pytest.mark.parametrize("batch_size", [3, 2, 5])
def test_batch_size_must_be_even_and_at_least_four(batch_size, encoder):
    with pytest.raises(NstError, match="even and >= 4"):
        Contrastive.batch_split(batch_size)


def test_resume_equals_uninterrupted_for_every_module_and_optimiser(encoder, tmp_path):
    straight = Contrastive(encoder=encoder)
    train(straight, crops(0), crops(10), config(), tmp_path / "a", device=CPU, progress=False)

    interrupted = Contrastive(encoder=encoder)
    assert (
        train(interrupted, crops(0), crops(10), config(), tmp_path / "b", device=CPU, stop_after=3, progress=False) == 3
    )
    state, _ = load_latest(tmp_path / "b")
    assert set(state["modules"]) == {"transform", "decoder", "style_head", "content_head", "discriminator"}
    assert set(state["optimizers"]) == {"main", "adversary"}
    assert state["optimizers"]["adversary"]["param_groups"][0]["betas"] == (0.5, 0.999)

    resumed = Contrastive(
        ContrastiveParams(train=ContrastiveTrain(init_seed=7)), encoder=encoder
    )  # different init: all comes from the checkpoint
    assert train(resumed, crops(0), crops(10), config(), tmp_path / "b", device=CPU, resume=True, progress=False) == 6
    for name in ("transform", "decoder", "style_head", "content_head", "discriminator"):
        a, b = getattr(straight, name).state_dict(), getattr(resumed, name).state_dict()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}.{key}"
    assert [p.name for p in checkpoints(tmp_path / "b")] == ["ckpt-00000004.pt", "ckpt-00000006.pt"]


def test_training_logs_generator_and_discriminator_terms(encoder, tmp_path):
    history = LossHistory()
    train(
        Contrastive(encoder=encoder),
        crops(0),
        crops(10),
        config(iterations=2),
        tmp_path,
        device=CPU,
        callbacks=history,
        progress=False,
    )
    seen = history.terms
    assert len(seen) == 2
    assert {"total", "gan", "style_contrastive", "d_real", "d_fake", "d_total"} <= set(seen[0])


def test_save_load_round_trip_and_clear_errors(encoder, tmp_path):
    model = Contrastive(ContrastiveParams(train=ContrastiveTrain(init_seed=3)), encoder=encoder)
    path = model.save(tmp_path / "m")
    assert path.name == "generator.pt"
    loaded = build_method("contrastive", {"alpha": 1.0, "train": {}}, encoder=encoder, model=tmp_path / "m")
    content, style = torch.rand(1, 3, 40, 40), torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(loaded.stylize(content, style), model.stylize(content, style))
    with pytest.raises(NstError, match="needs a trained model"):
        build_method("contrastive", {}, encoder=encoder)
    with pytest.raises(NstError, match="no contrastive model"):
        build_method("contrastive", {}, encoder=encoder, model=tmp_path / "missing")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(NstError, match="not a readable contrastive model"):
        build_method("contrastive", {}, encoder=encoder, model=tmp_path / "bad.pt")


def test_style_mixture_with_one_weight_equals_that_style(encoder):
    model = Contrastive(encoder=encoder)
    content = torch.rand(1, 3, 32, 48)
    a, b = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 48, 32)
    torch.testing.assert_close(model.stylize(content, [a, b], style_weights=[1.0, 0.0]), model.stylize(content, a))
    with pytest.raises(NstError, match="style_weights"):
        model.stylize(content, [a, b], style_weights=[1.0])


def test_features_are_the_encoders_own_with_no_hidden_rescaling():
    """The default encoder is the per-filter-normalised VGG (the reference's vgg_normalised); with the raw network
    selected, the features are used as they are (no per-layer CAFFE_LAYER_SCALE any more)."""
    assert not hasattr(contrastive, "CAFFE_LAYER_SCALE")
    assert Contrastive().encoder.normalisation == "per_filter"
    raw = load_encoder("caffe", last_layer="relu5_1", normalise="none")
    model = Contrastive(ContrastiveParams(train=ContrastiveTrain(encoder_normalise="none")), encoder=raw)
    image = torch.rand(1, 3, 32, 32)
    expected, got = raw(image, LAYERS), model.encode(image)
    for name in LAYERS:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0)


def test_bad_encoder_normalise_is_named():
    with pytest.raises(ValueError, match="encoder_normalise"):
        ContrastiveParams(train=ContrastiveTrain(encoder_normalise="per_layer"))


def test_a_model_trained_on_another_encoder_is_refused(encoder, tmp_path):
    Contrastive(encoder=encoder).save(tmp_path / "m")
    other = random_encoder(seed=1, last_layer="relu5_1")
    other.weights_sha256 = "f" * 64
    with pytest.raises(NstError, match="trained on the encoder"):
        build_method("contrastive", {}, encoder=other, model=tmp_path / "m")


@pytest.mark.parametrize(("crop", "sides"), [(32, [32]), (64, [64, 32]), (96, [96, 48]), (128, [128, 64, 32])])
def test_discriminator_scales_used_at_a_crop_size(encoder, crop, sides):
    disc = MultiScaleDiscriminator(scales=3, width=4, depth=4)
    assert disc.input_sides(crop) == sides
    assert len(disc(torch.rand(1, 3, crop, crop))) == len(sides)  # what forward really uses
    info = Contrastive(encoder=encoder).train_info(crop)
    assert info == {"discriminator_scales": 3, "discriminator_scales_used": len(sides), "discriminator_input_px": sides}


def test_a_batch_larger_than_the_image_set_is_a_clear_error(encoder, tmp_path):
    """k contents x k styles need k distinct images of each (a duplicate would be its own InfoNCE negative)."""
    with pytest.raises(NstError, match="distinct style images"):
        train(
            Contrastive(encoder=encoder),
            crops(0),
            crops(10, n=2),
            config(batch_size=6),
            tmp_path,
            device=CPU,
            progress=False,
        )


def test_bf16_training_on_the_cpu_is_deterministic(encoder, tmp_path):
    runs = []
    for name in ("a", "b"):
        model = Contrastive(encoder=encoder)
        history = LossHistory()
        train(
            model,
            crops(0),
            crops(10),
            config(iterations=1, amp=True, channels_last=True),
            tmp_path / name,
            device=CPU,
            callbacks=history,
            progress=False,
        )
        runs.append((history.terms, model.decoder.state_dict()))
    assert runs[0][0] == runs[1][0]
    assert all(torch.isfinite(torch.tensor(v)) for v in runs[0][0][-1].values())
    for key, value in runs[0][1].items():
        assert torch.equal(value, runs[1][1][key]), key


def test_identity_stylization_keeps_the_content_after_short_training(tmp_path):
    """Stylizing an image with itself must give it back (paper sec. 3.3): the identity losses teach that fast.

    Only the identity terms are on, at the reference's lr 1e-4: with every term on at lr 1e-3 the 60-step outcome
    depended on the CPU thread count (summation order; after/before 0.23 with 2 threads, 0.51 with 1). Here it is
    0.24 with 1 or 2 threads, against the bound 0.5."""
    only_identity = ContrastiveParams(
        train=ContrastiveTrain(
            content_weight=0.0,
            style_weight=0.0,
            style_contrastive_weight=0.0,
            content_contrastive_weight=0.0,
            gan_weight=0.0,
        )
    )
    model = Contrastive(only_identity, encoder=load_encoder("caffe", last_layer="relu5_1"))
    content_images = smooth_images(0)
    x = content_images[0][..., :32, :32]
    before = F.mse_loss(model.stylize(x, x), x).item()
    train(
        model,
        RandomCrops(lambda i: content_images[i], 4, 32),
        crops(100),
        config(iterations=40, lr=1e-4, lr_decay=0.0, checkpoint_every=1000),
        tmp_path,
        device=CPU,
        progress=False,
    )
    after = F.mse_loss(model.stylize(x, x), x).item()
    assert after < 0.5 * before
