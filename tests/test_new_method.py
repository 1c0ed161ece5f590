"""A new trained method, added by the README's recipe ("Adding a method") and nothing else, runs its stages.

In a copy of the repository the test writes exactly what the recipe lists: ``methods/toy.py`` (a one-layer colour
transform conditioned on the painting's mean colour, trained with a relu1_1 content term and a channel-mean style
term), ``methods/schemas/toy_params.py``, the ``methods.toy`` / ``tune.toy`` / ``method_stages`` entries of
params.yaml, and ``methods.toy.train`` / ``tune.toy`` in profiles/full.yaml. Then ``dvc repro stylize@toy`` must tune,
train and stylize it (no dvc.yaml, Makefile or pipeline/ edit), every file it touched is one the recipe names, and the
stages are up to date afterwards.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.config import YamlDumper
from tests.test_cli_and_dvc import BIN, repo_copy, run  # noqa: F401  (repo_copy: the fixture, reused)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

RECIPE = {  # the README's list, for a method called toy
    "methods/toy.py",
    "methods/schemas/toy_params.py",
    "params.yaml",
    "profiles/full.yaml",
}

TOY_SCHEMA = '''"""``methods.toy``: a test's trained method (methods/toy.py)."""

from __future__ import annotations

from pydantic import Field

from methods.schemas.fields import EncoderNormalise, Fraction, Seed, Weight
from methods.schemas.schedule import TrainParams
from methods.spec import MethodParams, MethodSpec, ReferenceSchedule


class ToyTrain(TrainParams):
    content_weight: Weight = 1.0  # the test's choice
    style_weight: Weight = 1.0  # the test's choice
    init_seed: Seed = 0
    encoder_normalise: EncoderNormalise = "per_filter"


class ToyParams(MethodParams):
    strength: Fraction = 1.0  # share of the transformed image in the output
    train: ToyTrain = Field(default_factory=ToyTrain)

    @property
    def encoder_normalise(self) -> str:
        return self.train.encoder_normalise


SPEC = MethodSpec(
    name="toy",
    params=ToyParams,
    implementation="methods.toy:Toy",
    trains=True,
    tuned=True,
    model_file="toy.pt",
    reference_schedule=ReferenceSchedule(iterations=100, batch_size=2, crop=32, source="the test"),
)
'''

TOY_METHOD = '''"""A test's trained method: a 1x1 convolution of the photo and the painting's mean colour."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from methods.encoder import VGGEncoder, load_encoder
from methods.feedforward import load_modules, save_modules
from methods.losses import weighted_terms
from methods.schemas.toy_params import ToyParams

MODEL_FILE = "toy.pt"
LAYER = "relu1_1"


class Toy(nn.Module):
    name = "toy"
    model_file = MODEL_FILE

    def __init__(self, params: ToyParams | None = None, *, encoder: VGGEncoder | None = None) -> None:
        super().__init__()
        self.params = params or ToyParams()
        self.encoder = encoder or load_encoder("caffe", last_layer=LAYER, normalise=self.params.encoder_normalise)
        torch.manual_seed(self.params.train.init_seed)
        self.net = nn.Conv2d(6, 3, 1)

    def transform(self, content: Tensor, style: Tensor) -> Tensor:
        mean = style.mean(dim=(2, 3), keepdim=True).expand(content.shape[0], -1, *content.shape[-2:])
        return torch.sigmoid(self.net(torch.cat([content, mean], dim=1)))

    def trainable(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    def losses(self, content: Tensor, style: Tensor) -> dict[str, Tensor]:
        out = self.transform(content, style)
        f_out, f_content, f_style = (self.encoder(x, [LAYER])[LAYER].float() for x in (out, content, style))
        terms = {
            "content": (f_out - f_content).pow(2).mean(),
            "style": (f_out.mean(dim=(2, 3)) - f_style.mean(dim=(2, 3))).pow(2).mean(),
        }
        p = self.params.train
        return weighted_terms(terms, {"content": p.content_weight, "style": p.style_weight})

    @torch.no_grad()
    def stylize(self, content: Tensor, style: Tensor, callback: Any = None, **overrides: Any) -> Tensor:
        p = self.params.replace(**overrides) if overrides else self.params
        self.to(content.device)
        out = self.transform(content.float(), style.to(content.device).float())
        return (p.strength * out + (1 - p.strength) * content.float()).clamp(0, 1).to(content.dtype)

    def save(self, path: str | Path, extra: Any = None) -> Path:
        return save_modules(self.trainable(), path, MODEL_FILE, self.encoder.weights_sha256, extra)

    def load(self, path: str | Path) -> "Toy":
        load_modules(self.trainable(), path, MODEL_FILE, label="toy", stage="train@toy",
                     encoder_sha256=self.encoder.weights_sha256)
        return self
'''

TRAIN = {  # every key of methods.toy.train (params.yaml sets every key)
    "content_weight": 1.0,
    "style_weight": 1.0,
    "init_seed": 0,
    "encoder_normalise": "per_filter",
    "init_from": None,
    "init_missing": "scratch",
    "iterations": 4,
    "fp32_iterations": None,
    "batch_size": 2,
    "lr": 1.0e-3,
    "lr_decay": 0.0,
    "resize_short": 48,
    "crop": 32,
    "checkpoint_every": 2,
    "keep_checkpoints": 1,
    "log_every": 1,
    "sample_every": 0,
    "seed": 0,
    "amp": False,
    "channels_last": False,
    "workers": 0,
}
TUNE = {
    "trials": 2,
    "space": {"style_weight": {"low": 0.1, "high": 10.0, "log": True}},
    "budget": {"train": {"iterations": 2}},
    "prune_every": 0,
    "val_pairs": 1,
}


def follow_the_recipe(repo: Path) -> None:
    (repo / "methods" / "toy.py").write_text(TOY_METHOD)
    (repo / "methods" / "schemas" / "toy_params.py").write_text(TOY_SCHEMA)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["methods"]["toy"] = {"strength": 1.0, "train": TRAIN}
    params["tune"]["toy"] = TUNE
    stages = params["method_stages"]
    stages["tune"]["toy"] = "methods.toy.train"
    stages["train"].append("toy")
    stages["stylize"]["toy"] = {
        "model_dep": "models/toy",
        "model_arg": "--model models/toy",
        "tuned_dep": "reports/tuning/toy/best.yaml",
        "tuned_arg": "--tuned reports/tuning/toy/best.yaml",
    }
    (repo / "params.yaml").write_text(yaml.dump(params, Dumper=YamlDumper, sort_keys=False))
    full = yaml.safe_load((repo / "profiles" / "full.yaml").read_text())
    full["methods"]["toy"] = {"train": {"iterations": 100, "batch_size": 2}}
    full["tune"]["toy"] = {"trials": 2}
    (repo / "profiles" / "full.yaml").write_text(yaml.dump(full, Dumper=YamlDumper, sort_keys=False))


def test_a_trained_method_added_by_the_readme_recipe_runs_its_stages(repo_copy):  # noqa: F811
    repo = repo_copy
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"], repo)
    follow_the_recipe(repo)
    touched = set(run(["git", "status", "--porcelain", "--untracked-files=all"], repo).stdout.split()[1::2])
    assert touched == RECIPE

    dvc = str(BIN / "dvc")
    listed = run([dvc, "stage", "list"], repo).stdout
    assert {"tune@toy", "train@toy", "stylize@toy"} <= {line.split()[0] for line in listed.splitlines() if line}
    run([dvc, "repro", "stylize@toy"], repo)  # fetch, prepare, then the toy's tune, train and stylize
    best = yaml.safe_load((repo / "reports/tuning/toy/best.yaml").read_text())
    assert best["method"] == "toy"
    assert set(best["weights"]) == {"style_weight"}
    assert (repo / "models/toy/toy.pt").is_file()
    effective = yaml.safe_load((repo / "models/toy/effective_params.yaml").read_text())
    assert set(effective["methods"]["toy"]) == {"train"}  # train@toy ran on its train section only
    outputs = sorted(p.name for p in (repo / "outputs/toy").glob("*.png"))
    assert len(outputs) == 4  # the sample's 2 x 2 test grid
    status = run([dvc, "status", "tune@toy", "train@toy", "stylize@toy"], repo).stdout
    assert "up to date" in status.lower() or not status.strip(), status
    # the recipe's files, and only those, are what a contributor commits
    assert (
        subprocess.run(["git", "diff", "--quiet", "--", "dvc.yaml", "Makefile", "pipeline"], cwd=repo).returncode == 0
    )
