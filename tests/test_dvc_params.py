"""What a stage declares as params in dvc.yaml is exactly pipeline/stage_params.py's STAGE_PARAMS, the sections it
writes as ``effective_params.yaml``, logs to MLflow and fingerprints: an output must not change when a params section
changes that DVC does not rerun the stage for (and must change when one it does). And a change reruns what it should:
an inference setting reruns stylize, never tune or train."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_dvc_deps import stages

from pipeline.stage_params import STAGE_PARAMS, declared

ROOT = Path(__file__).resolve().parents[1]


def dvc_params(label: str) -> dict[str, tuple[str, ...]]:
    """File -> the params keys stage ``label`` declares there, as DVC resolves them."""
    return {
        Path(dep.def_path).name: tuple(dep.params)
        for dep in stages()[label].deps
        if getattr(dep, "params", None) is not None
    }


@pytest.mark.parametrize("label", sorted(stages()))
def test_each_stage_declares_its_sections(label):
    name, _, method = label.partition("@")
    assert set(dvc_params(label)["params.yaml"]) == set(declared(name, method or None))


def test_the_table_covers_every_stage():
    assert {label.partition("@")[0] for label in stages()} == set(STAGE_PARAMS)


def test_trained_methods_train_and_tune_on_their_train_section_only():
    for method in ("adain", "contrastive"):
        for stage in ("train", "tune"):
            keys = dvc_params(f"{stage}@{method}")["params.yaml"]
            assert f"methods.{method}.train" in keys, (stage, method)
            assert f"methods.{method}" not in keys, (stage, method)
    assert "methods.gatys" in dvc_params("tune@gatys")["params.yaml"]  # every Gatys setting changes a trial


def test_every_param_read_from_the_full_profile_is_in_it():
    """DVC fails a stage (``Parameters 'methods.<m>' are missing from 'profiles/full.yaml'``) whose params list a key
    of profiles/full.yaml that the file lacks, so every such key must exist there (a new method needs its section)."""
    full = yaml.safe_load((ROOT / "profiles" / "full.yaml").read_text())
    missing = []
    for label in stages():
        for key in dvc_params(label).get("full.yaml", ()):
            node = full
            for part in key.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                missing.append(f"{label}: {key}")
    assert not missing, missing
