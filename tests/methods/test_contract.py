"""One contract for every registered method (as timm tests every registered model)."""

from __future__ import annotations

import pytest
import torch

from methods import get_method, list_methods
from methods.encoder import random_encoder

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
