"""The own-objective table (evaluation/own_objectives.py): which metric cells are a method's own objective, derived from
the methods' params and the tuner's settings, so that the marks follow a change of layers in params.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from evaluation.metric_constants import STYLE_LAYERS
from evaluation.metric_info import METRICS
from evaluation.own_objectives import metric_statistics, own_objectives
from methods.schemas.adain_params import AdaINParams
from methods.schemas.contrastive_params import ContrastiveParams
from methods.schemas.gatys_params import GatysParams
from methods.schemas.ghiasi_params import GhiasiParams
from pipeline.config import load_params
from pipeline.stages.evaluate import method_objectives

ROOT = Path(__file__).resolve().parents[2]
GRAM_LAYERS = {f"style_gram_{layer}" for layer in STYLE_LAYERS}


def marked(table, method):
    return set(table.get(method, {}))


def test_defaults_mark_gatys_gram_and_content_and_the_feedforward_meanstd():
    terms = {
        "gatys": GatysParams().objectives(),
        "adain": AdaINParams().objectives(),
        "contrastive": ContrastiveParams().objectives(),
        "ghiasi": GhiasiParams().objectives(),
    }
    table = own_objectives(terms)
    # Gatys: content MSE on relu4_2 and Gram on the five style layers of the same caffe network
    assert marked(table, "gatys") == {"content_loss", "style_gram", *GRAM_LAYERS}
    # AdaIN: mean/std on relu1_1..relu4_1 (paper sec. 6): relu5_1 is not its objective; its content term compares
    # with the AdaIN target at relu4_1, which no metric does
    assert marked(table, "adain") == {"style_meanstd", *(f"style_meanstd_relu{i}_1" for i in range(1, 5))}
    assert marked(table, "contrastive") == {"style_meanstd", *(f"style_meanstd_relu{i}_1" for i in range(1, 6))}
    # ghiasi runs its style predictor: style_embed (where the scorer has it) and nothing on VGG
    assert marked(table, "ghiasi") == ({"style_embed"} if "style_embed" in METRICS else set())
    assert "relu4_2" in table["gatys"]["content_loss"]
    assert "optimises" in table["gatys"]["content_loss"]


def test_marks_follow_gatys_style_layers_and_the_encoder_weights():
    only_two = GatysParams(style_layers=("relu2_1", "relu3_1")).objectives()
    table = own_objectives({"gatys": only_two})
    assert marked(table, "gatys") == {"content_loss", "style_gram", "style_gram_relu2_1", "style_gram_relu3_1"}
    # methods on another VGG-19 than the scorer's caffe network share no features with it
    assert own_objectives({"gatys": only_two}, method_vgg_weights="torchvision") == {}
    # tuning on two metrics marks them whatever the network
    tuned = own_objectives({"gatys": only_two}, {"gatys": ["content_loss", "style_gram"]}, method_vgg_weights="x.pth")
    assert marked(tuned, "gatys") == {"content_loss", "style_gram"}
    assert "tune.objectives" in tuned["gatys"]["style_gram"]


def test_every_vgg_metric_is_described():
    stats = metric_statistics()
    vgg_metrics = {
        m for m in METRICS if m == "content_loss" or m.startswith("style_gram") or m.startswith("style_meanstd")
    }
    assert vgg_metrics <= set(stats)
    assert stats["style_gram_relu3_1"].layers == ("relu3_1",)


def test_the_evaluate_stage_derives_the_table_from_params_yaml(tmp_path):
    """Editing methods.gatys.style_layers (and tune.use_tuned) in a params file moves the marks."""
    doc = yaml.safe_load((ROOT / "params.yaml").read_text())
    base = load_params(ROOT / "params.yaml")
    default = method_objectives(base, ["gatys", "adain", "contrastive", "ghiasi"])
    for m in ("gatys", "adain", "contrastive"):  # tuned on tune.objectives
        assert {"content_loss", "style_gram"} <= marked(default, m)
    assert "style_gram_relu1_1" in default["gatys"]
    doc["methods"]["gatys"]["style_layers"] = ["relu5_1"]
    doc["tune"]["use_tuned"] = False
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    changed = method_objectives(load_params(path), ["gatys", "adain"])
    assert marked(changed, "gatys") == {"content_loss", "style_gram", "style_gram_relu5_1"}
    assert "content_loss" not in marked(changed, "adain")


@pytest.mark.parametrize("method", ["gatys", "adain", "contrastive"])
def test_objectives_name_real_layers(method):
    from methods.registry import get_spec
    from methods.vgg_layers import LAYER_NAMES

    for term in get_spec(method).params().objectives():
        assert set(term.layers) <= set(LAYER_NAMES), term
