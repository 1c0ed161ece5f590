"""Gatys optimisation: convergence, fixed points, output geometry, determinism, registry."""

from __future__ import annotations

import io

import pytest
import torch
from tqdm import tqdm

import methods.optimise
from methods import get_method, list_methods
from methods.encoder import random_encoder
from methods.errors import NstError
from methods.gatys import Gatys, GatysParams
from methods.registry import build_method

SMALL = {"style_layers": ("relu1_1", "relu2_1", "relu3_1"), "content_layers": ("relu3_1",), "image_size": None}


@pytest.fixture(scope="module")
def encoder():
    return random_encoder(seed=0, last_layer="relu3_1")


def images(seed: int, h: int = 32, w: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    content = torch.rand(1, 3, h, w, generator=gen)
    style = torch.rand(1, 3, 24, 24, generator=gen)
    return content, style


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_total_loss_falls(encoder, optimizer):
    content, style = images(0)
    history: list[dict[str, float]] = []
    method = Gatys(GatysParams(**SMALL, optimizer=optimizer, iterations=25, init="noise"), encoder=encoder)
    out = method.stylize(content, style, callback=lambda _s, t: history.append(t))
    assert 25 <= len(history) <= (25 if optimizer == "adam" else 31)  # L-BFGS: at most 1.25 x iterations
    assert set(history[0]) == {"content", "style", "tv", "total"}
    assert history[-1]["total"] < 0.5 * history[0]["total"]
    assert out.min() >= 0
    assert out.max() <= 1


@pytest.fixture
def bars(monkeypatch) -> list[tqdm]:
    """The progress bars Gatys opens (its loop: methods/optimise.py), enabled (written to a buffer) even though the test
    output is no terminal."""
    opened: list[tqdm] = []

    class Recording(tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "disable": False, "file": io.StringIO()})
            opened.append(self)

    monkeypatch.setattr(methods.optimise, "tqdm", Recording)
    return opened


@pytest.mark.parametrize(("optimizer", "iterations"), [("lbfgs", 25), ("lbfgs", 7), ("lbfgs", 1), ("adam", 6)])
def test_progress_bar_advances_with_every_loss_evaluation(encoder, bars, optimizer, iterations):
    content, style = images(0)
    seen: list[tuple[int, int]] = []  # (evaluation index, bar position) at each callback
    method = Gatys(GatysParams(**SMALL, optimizer=optimizer, iterations=iterations), encoder=encoder)
    out = method.stylize(content, style, progress=True, callback=lambda i, _t: seen.append((i, bars[0].n)))
    [bar] = bars
    assert [n for _, n in seen] == [i + 1 for i, _ in seen] == list(range(1, len(seen) + 1))  # one per evaluation
    assert bar.n == bar.total == len(seen)  # ends complete, whether L-BFGS stopped early or ran a little over
    if optimizer == "lbfgs":
        assert len(seen) >= 2  # the bar moved inside L-BFGS's single step(), not only after it
    else:
        assert len(seen) == iterations
    plain = Gatys(GatysParams(**SMALL, optimizer=optimizer, iterations=iterations), encoder=encoder)
    assert torch.equal(out, plain.stylize(content, style))  # the bar changes nothing about the result


def test_progress_bar_completes_when_lbfgs_converges_early(encoder, bars):
    content, _ = images(1)
    seen: list[int] = []
    Gatys(GatysParams(**SMALL, init="content", iterations=10), encoder=encoder).stylize(
        content, content, progress=True, callback=lambda _i, _t: seen.append(bars[0].n)
    )  # already at the optimum: L-BFGS stops after its first evaluation, well inside its budget of 12
    assert seen == [1]
    assert bars[0].n == bars[0].total == 1


def test_style_equal_content_from_content_stays_put(encoder):
    content, _ = images(1)
    method = Gatys(GatysParams(**SMALL, init="content", iterations=10), encoder=encoder)
    out = method.stylize(content, content)
    assert (out - content).abs().max() < 1e-3


@pytest.mark.parametrize(("h", "w"), [(67, 45), (64, 64)])
@pytest.mark.parametrize("image_size", [None, 48])
def test_output_has_the_content_size(encoder, h, w, image_size):
    content, style = images(2, h, w)
    out = Gatys(GatysParams(**{**SMALL, "image_size": image_size}, iterations=2), encoder=encoder).stylize(
        content, style
    )
    assert out.shape == (1, 3, h, w)
    assert out.dtype == torch.float32


def test_same_seed_same_output(encoder):
    content, style = images(3)
    params = GatysParams(**SMALL, init="noise", iterations=5, seed=7)
    a = Gatys(params, encoder=encoder).stylize(content, style)
    b = Gatys(params, encoder=encoder).stylize(content, style)
    assert torch.equal(a, b)
    c = Gatys(params, encoder=encoder).stylize(content, style, seed=8)
    assert not torch.equal(a, c)


def test_tv_term_smooths(encoder):
    content, style = images(4)
    base = GatysParams(**SMALL, init="noise", iterations=20, optimizer="adam", lr=0.05)
    rough = Gatys(base, encoder=encoder).stylize(content, style)
    smooth = Gatys(base.replace(tv_weight=1e4), encoder=encoder).stylize(content, style)
    from methods.losses import total_variation

    assert total_variation(smooth) < total_variation(rough)


def test_bad_parameters_are_named(encoder):
    with pytest.raises(NstError, match=r"unknown key 'gatys\.colour'"):
        Gatys(GatysParams(**SMALL), encoder=encoder).stylize(*images(0), colour=True)
    with pytest.raises(ValueError, match="relu9_1"):  # the params class validates (pydantic ValidationError)
        GatysParams(style_layers=("relu9_1",))
    with pytest.raises(ValueError, match="init"):
        GatysParams(init="zeros")  # type: ignore[arg-type]
    with pytest.raises(NstError, match="style batch"):
        Gatys(GatysParams(**SMALL), encoder=encoder).stylize(torch.rand(2, 3, 8, 8), torch.rand(3, 3, 8, 8))


def test_registry():
    assert "gatys" in list_methods()
    assert get_method("gatys") is Gatys
    with pytest.raises(NstError, match=r"unknown method 'nope'; known: .*gatys"):
        get_method("nope")


def test_from_config_round_trip(encoder):
    method = build_method("gatys", {"iterations": 3, "style_layers": ["relu1_1"], "init": "style"}, encoder=encoder)
    assert method.params.iterations == 3
    assert method.params.style_layers == ("relu1_1",)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_channels_last_runs():
    enc = random_encoder(last_layer="relu3_1")
    content, style = images(5)
    params = GatysParams(**SMALL, iterations=5, amp=True, channels_last=True)
    out = Gatys(params, encoder=enc).stylize(content.cuda(), style.cuda())
    assert out.device.type == "cuda"
    assert out.shape == content.shape


@pytest.mark.parametrize("init", ["content", "style", "noise"])
@pytest.mark.parametrize("amp", [pytest.param(False, marks=pytest.mark.float_sensitive), True])  # fp32 compares
def test_lbfgs_with_channels_last_on_the_cpu(init, amp):
    """Issue 17: a channels_last encoder made L-BFGS's grad.view(-1) fail for init content|style; the optimised
    image and its gradient stay NCHW-contiguous. In float32, channels_last changes no number that matters."""
    enc = random_encoder(last_layer="relu3_1")
    content, style = images(6)
    params = GatysParams(**SMALL, iterations=4, init=init, amp=amp, channels_last=True)
    out = Gatys(params, encoder=enc).stylize(content, style)
    assert out.shape == content.shape
    assert torch.isfinite(out).all()
    if not amp:
        plain = Gatys(params.replace(channels_last=False), encoder=random_encoder(last_layer="relu3_1"))
        # not a rounding bound: L-BFGS's curvature pairs and line search amplify the layouts' kernel differences
        # (~1e-6 in the loss) from step to step; 1e-3 of the [0, 1] pixel range, 1/4 of an 8-bit level
        torch.testing.assert_close(out, plain.stylize(content, style), rtol=1e-3, atol=1e-3)


def test_precision_settings_resolve_per_device(monkeypatch):
    from methods import precision

    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: False)
    assert precision.Precision.resolve("auto", "auto", cpu) == precision.Precision(False, False, "cpu")
    assert precision.Precision.resolve(True, "auto", cpu) == precision.Precision(True, True, "cpu")
    assert precision.Precision.resolve(False, True, cpu) == precision.Precision(False, True, "cpu")
    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: True)
    assert precision.Precision.resolve("auto", "auto", cpu).label == "bf16+channels_last"
    with pytest.raises(NstError, match="amp must be"):
        precision.Precision.resolve("yes", "auto", cpu)  # type: ignore[arg-type]


def test_loss_terms_rescore_an_image_in_float32(encoder):
    """loss_terms evaluates the objective stylize optimises, in float32 NCHW whatever the method's precision: at the
    content start it equals stylize's first evaluation, and the content term of the content image itself is 0."""
    content, style = images(7)
    method = Gatys(GatysParams(**SMALL, iterations=2, init="content", tv_weight=1.0), encoder=encoder)
    seen: list[dict[str, float]] = []
    method.stylize(content, style, callback=lambda _i, t: seen.append(t))
    terms = method.loss_terms(content, content, style)
    assert terms["content"] == 0.0
    assert terms["style"] > 0
    assert terms["tv"] > 0
    assert terms == pytest.approx(seen[0], rel=1e-5)
    method.stylize(content, style, amp=True, channels_last=True)  # (before issue 27: left the encoder channels_last)
    assert method.loss_terms(content, content, style) == pytest.approx(terms, rel=1e-6)
