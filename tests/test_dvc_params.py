"""What a stage writes as ``effective_params.yaml`` is exactly what dvc.yaml declares as its params: an output must not
change when a params section changes that DVC does not rerun the stage for (and must change when one it does)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_dvc_deps import expand_stages

from methods.registry import list_methods, trained_methods
from pipeline.stages import fetch, prepare
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


@pytest.mark.parametrize("method", trained_methods())
def test_train_writes_what_it_declares(method):
    assert set(method_stage_params(method)) == set(declared("train", method))


@pytest.mark.parametrize("method", list_methods())
def test_stylize_writes_what_it_declares(method):
    assert {*method_stage_params(method), "stylize"} == set(declared("stylize", method))


def test_every_param_read_from_the_full_profile_is_in_it():
    """DVC fails a stage (``Parameters 'methods.<m>' are missing from 'profiles/full.yaml'``) whose params list a key
    of profiles/full.yaml that the file lacks, so every such key must exist there (a new method needs its section)."""
    full = yaml.safe_load((DVC_YAML.parent / "profiles" / "full.yaml").read_text())
    missing = []
    for label, stage in expand_stages(yaml.safe_load(DVC_YAML.read_text())).items():
        for entry in stage.get("params") or []:
            for key in (entry.get("profiles/full.yaml") or []) if isinstance(entry, dict) else []:
                node = full
                for part in key.split("."):
                    node = node.get(part) if isinstance(node, dict) else None
                if node is None:
                    missing.append(f"{label}: {key}")
    assert not missing, missing
