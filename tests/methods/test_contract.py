"""One contract for every registered method (as timm tests every registered model)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch

from methods import get_method, list_methods
from methods.encoder import random_encoder
from methods.schemas.schedule import TrainParams
from methods.training import RandomCrops, train

SMALL = {
    "gatys": {
        "iterations": 3,
        "image_size": None,
        "optimizer": "adam",
        "style_layers": ("relu1_1", "relu2_1"),
        "content_layers": ("relu2_1",),
    },
    "adain": {},
}


@pytest.fixture(scope="module")
def encoder():
    return random_encoder(seed=0)


@pytest.mark.parametrize("name", list_methods())
def test_every_method_keeps_shape_range_and_is_finite(name, encoder):
    cls = get_method(name)
    method = cls(encoder=encoder)
    content = torch.rand(1, 3, 37, 45, generator=torch.Generator().manual_seed(0))
    style = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    out = method.stylize(content, style, **SMALL.get(name, {}))
    assert out.shape == content.shape
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert out.min() >= 0
    assert out.max() <= 1


@pytest.mark.parametrize("name", [n for n in list_methods() if hasattr(get_method(n), "trainable")])
def test_every_trainable_parameter_gets_a_gradient(name, encoder):
    method = get_method(name)(encoder=encoder)
    content, style = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    method.losses(content, style)["total"].backward()
    for module_name, module in method.trainable().items():
        for param_name, param in module.named_parameters():
            assert param.grad is not None, f"{module_name}.{param_name}"
            assert param.grad.abs().sum() > 0, f"{module_name}.{param_name}"
    assert all(p.grad is None for p in encoder.parameters())  # the encoder stays frozen


def _encoder_state(encoder: torch.nn.Module) -> dict[str, tuple]:
    """Everything of the encoder's tensors that an in-place ``.to(device / memory_format)`` would change."""
    tensors = {**dict(encoder.state_dict(keep_vars=True)), **dict(encoder.named_buffers())}
    return {
        name: (t.data_ptr(), t.stride(), t.device, t.dtype, t.is_contiguous(), t.detach().clone())
        for name, t in tensors.items()
    }


def _assert_same_state(before: dict[str, tuple], after: dict[str, tuple]) -> None:
    assert before.keys() == after.keys()
    for name, (ptr, stride, device, dtype, contiguous, values) in before.items():
        assert after[name][:5] == (ptr, stride, device, dtype, contiguous), name
        assert torch.equal(after[name][5], values), name


ENCODER_METHODS = [n for n in list_methods() if n in ("gatys", "adain", "contrastive")]


@pytest.mark.parametrize("name", ENCODER_METHODS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_no_method_changes_the_shared_encoder(name, channels_last):
    """Issue 27: adain's stylize converted the shared encoder to channels_last in place (and gatys converted it back).
    Stylizing, scoring and training with channels_last (bf16 for the feed-forward methods) leave every encoder tensor
    where it was: same storage, strides, device, dtype and values."""
    encoder = random_encoder(seed=0, last_layer="relu5_1")
    before = _encoder_state(encoder)
    method = get_method(name)(encoder=encoder)
    gen = torch.Generator().manual_seed(0)
    content, style = torch.rand(1, 3, 32, 32, generator=gen), torch.rand(1, 3, 32, 32, generator=gen)
    precision = {"channels_last": channels_last, "amp": channels_last and name != "gatys"}
    method.stylize(content, style, **SMALL.get(name, {}), **precision)
    if name == "gatys":
        method.loss_terms(content, content, style, **SMALL["gatys"])
    else:
        method.losses(torch.rand(2, 3, 32, 32, generator=gen), torch.rand(2, 3, 32, 32, generator=gen))
        images = [torch.rand(1, 3, 40, 40, generator=gen) for _ in range(4)]
        crops = RandomCrops(lambda i: images[i], 4, 32)
        cfg = TrainParams(iterations=1, batch_size=4, checkpoint_every=1, seed=0, **precision)
        with tempfile.TemporaryDirectory() as tmp:
            train(method, crops, crops, cfg, Path(tmp), device=torch.device("cpu"), progress=False)
        method.stylize(content, style, **precision)  # after training, on the model's own copy
    _assert_same_state(before, _encoder_state(encoder))


@pytest.mark.parametrize("name", ENCODER_METHODS)
def test_loss_values_do_not_depend_on_the_calls_before(name, encoder):
    """Issue 27: no loss keeps state between calls: two inputs scored in either order give the same values."""
    method = get_method(name)(encoder=encoder)
    gen = torch.Generator().manual_seed(1)
    a = [torch.rand(2, 3, 32, 32, generator=gen) for _ in range(3)]
    b = [torch.rand(2, 3, 32, 32, generator=gen) for _ in range(3)]

    def score(batch):
        if name == "gatys":
            return method.loss_terms(batch[0], batch[1], batch[2], **SMALL["gatys"])
        with torch.no_grad():
            return {k: v.item() for k, v in method.losses(batch[1], batch[2]).items()}

    first_a, first_b = score(a), score(b)
    second_b, second_a = score(b), score(a)
    assert (first_a, first_b) == (second_a, second_b)
    assert first_a != first_b
