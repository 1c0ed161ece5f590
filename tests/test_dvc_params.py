"""What a stage writes as ``effective_params.yaml`` is exactly what dvc.yaml declares as its params: an output must not
change when a params section changes that DVC does not rerun the stage for (and must change when one it does)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline import fetch, prepare
from pipeline.config import method_stage_params

DVC_YAML = Path(__file__).resolve().parents[1] / "dvc.yaml"


def declared(stage: str, item: str | None = None) -> tuple[str, ...]:
    """The ``params.yaml`` keys a stage lists in dvc.yaml (``${item}``/``${key}`` filled in for foreach stages)."""
    spec = yaml.safe_load(DVC_YAML.read_text())["stages"][stage]
    if "foreach" in spec:
        spec = spec["do"]
    keys = [p for p in spec["params"] if isinstance(p, str)]
    return tuple(k.replace("${item}", item or "").replace("${key}", item or "") for k in keys)


def test_fetch_and_prepare_write_what_they_declare():
    assert declared("fetch") == fetch.PARAMS
    assert declared("prepare") == prepare.PARAMS


@pytest.mark.parametrize("method", ["adain", "contrastive"])
def test_train_writes_what_it_declares(method):
    assert set(method_stage_params(method)) == set(declared("train", method))


@pytest.mark.parametrize("method", ["gatys", "adain", "contrastive"])
def test_stylize_writes_what_it_declares(method):
    assert {*method_stage_params(method), "stylize"} == set(declared("stylize", method))
