"""The scorer's third-party weights: their names, and what the scorer-weights stage found (``found.json``).

The scorer-weights stage (pipeline/stages/scorer_weights.py) resolves each weight of :data:`WEIGHTS` into one folder
(``models/scorer``, a DVC output) and writes ``found.json`` beside them; the evaluate stage depends on that folder and
reads every weight from it through :func:`read_found`, so weights that appear or change rerun evaluate (and the
report) and nothing upstream. Torch-free: validating params.yaml (pipeline/config.py) must not import torch.

``found.json``::

    {"weights": {"<name>": {"file": "<file name>", "sha256": "<64 hex>", "checked": "<how>"}
                 | {"file": null, "sha256": null, "reason": "<why it is absent>"}}}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from methods.errors import NstError

# name (the key under params.yaml ``scorer_weights`` and in found.json) -> what it is and which metric needs it
WEIGHTS: dict[str, str] = {
    "lpips_alexnet": "torchvision's AlexNet ImageNet weights, LPIPS v0.1's trunk (lpips, artfid)",
    "cfsd_vgg19": "torchvision's VGG-19 ImageNet weights, StyleID's CFSD network (cfsd)",
    "fid_inception": "pytorch-fid's ImageNet Inception-v3 (fid_imagenet)",
    "art_inception": "Wright & Ommer's Inception-v3 trained on art (artfid)",
}
FOUND_FILE = "found.json"


@dataclass(frozen=True)
class ScorerWeights:
    """Which scorer weights are on disk (``paths``) and why the others are not (``absent``); ``record`` is the
    found.json document (it goes into scoring.json)."""

    paths: Mapping[str, Path] = field(default_factory=dict)
    absent: Mapping[str, str] = field(default_factory=dict)
    record: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def none(cls, reason: str) -> ScorerWeights:
        """No weight at all, each absent for ``reason``."""
        return cls({}, dict.fromkeys(WEIGHTS, reason), {"weights": {}, "note": reason})

    def path(self, name: str) -> Path | None:
        """The file of weight ``name``, or None when it is absent."""
        if name not in WEIGHTS:
            raise NstError(f"unknown scorer weight {name!r}; known: {', '.join(WEIGHTS)}")
        return self.paths.get(name)

    def why_absent(self, name: str) -> str:
        """Why weight ``name`` is absent ("" when it is there)."""
        return "" if self.path(name) is not None else self.absent.get(name, "not recorded in found.json")


def read_found(folder: str | Path | None) -> ScorerWeights:
    """What the scorer-weights stage left in ``folder``: every weight that found.json lists with a file that exists.

    A missing folder or found.json makes every weight absent (with that reason): the scorer then reports the metrics
    that need them as n/a, never a network with other weights.

    Raises:
        NstError: found.json exists but is not a JSON object with a ``weights`` mapping.
    """
    if folder is None:
        return ScorerWeights.none("no scorer weights folder given")
    folder = Path(folder)
    doc_path = folder / FOUND_FILE
    if not doc_path.is_file():
        return ScorerWeights.none(f"{doc_path} does not exist (run the scorer-weights stage: nst scorer-weights)")
    try:
        doc = json.loads(doc_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NstError(f"{doc_path}: not readable JSON ({exc}); rerun the scorer-weights stage") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("weights"), dict):
        raise NstError(f"{doc_path}: expected an object with a 'weights' mapping; rerun the scorer-weights stage")
    paths: dict[str, Path] = {}
    absent: dict[str, str] = {}
    for name in WEIGHTS:
        entry = doc["weights"].get(name)
        if not isinstance(entry, dict):
            absent[name] = f"{doc_path} does not list it"
        elif not entry.get("file"):
            absent[name] = str(entry.get("reason") or "absent (no reason recorded)")
        elif not (folder / str(entry["file"])).is_file():
            absent[name] = f"{folder / str(entry['file'])} is listed in {FOUND_FILE} but missing"
        else:
            paths[name] = folder / str(entry["file"])
    return ScorerWeights(paths, absent, doc)
