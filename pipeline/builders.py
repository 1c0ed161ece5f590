"""Building what the stages run from the validated params: methods, fresh models to train, their training data.

Shared by the tune, train, stylize and pretrained stages (stages import this, never each other); the scorer is built
in pipeline/scoring.py, so that a method's stages do not depend on the evaluation code.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from methods.encoder import VGGEncoder, load_encoder
from methods.errors import NstError
from methods.pretrained import PretrainedError
from methods.pretrained import read as read_pretrained
from methods.registry import get_method, get_spec, trained_methods
from methods.schemas.schedule import TrainParams
from methods.utils import sha256_file
from pipeline.config import Params, encoder_settings

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------------ methods


def method_encoder(params: Params, name: str) -> VGGEncoder | None:
    """The VGG-19 ``name`` runs on, or None when it runs none (not loaded: its memory would count as the method's)."""
    return load_encoder(**encoder_settings(params, name)) if get_spec(name).uses_encoder else None


def method_provenance(name: str) -> dict[str, str]:
    """What a pretrained method runs besides its code and params (package version, weight files' sha256); else {}."""
    provenance = getattr(get_method(name), "provenance", None)
    return dict(provenance()) if provenance is not None else {}


def trained_model_note(name: str, model: Path | None) -> str | None:
    """One line on what a trained method's model has seen, for ``nst stylize`` (None for other methods): the
    images and iterations it was trained on, from its training record (``train_metrics.json``, and the pretrained
    file it was warm-started from) or a pretrained file's card, and where a converged network is instead."""
    spec = get_spec(name)
    if not spec.trains or model is None:
        return None
    card: dict[str, Any] = {}
    record: dict[str, Any] = {}
    try:
        if model.is_dir() and (model / "train_metrics.json").is_file():
            record = json.loads((model / "train_metrics.json").read_text(encoding="utf-8"))
            init = record.get("init_from")
            if init and Path(init).is_file():
                card = dict(read_pretrained(Path(init)).get("card", {}))
        elif model.is_file():
            card = dict(read_pretrained(model).get("card", {}))
    except (OSError, ValueError, NstError) as exc:
        log.debug("no training record for %s: %s", model, exc)
    data = card.get("data") or {}
    contents, styles = len(data.get("content") or []), len(data.get("style") or [])
    iterations = record.get("total_iterations") or card.get("iterations")
    reference = spec.reference_schedule.iterations if spec.reference_schedule is not None else None
    seen = f"{contents + styles} images ({contents} photos, {styles} paintings)" if contents or styles else "few images"
    budget = f" for {iterations:,} of the reference's {reference:,} iterations" if iterations and reference else ""
    return (
        f"{name}: this model was trained by nst-bench on {seen}{budget}; on unseen photos and paintings expect a "
        "washed-out or one-palette result. For a converged arbitrary-style network use --method ghiasi "
        "(Ghiasi et al. 2017, pretrained by its authors)."
    )


def model_fingerprint(model: Path | None) -> str | None:
    """sha256 of a trained model's weight files (None for methods without one)."""
    if model is None:
        return None
    files = sorted(model.glob("*.pt")) if model.is_dir() else [model]
    digest = hashlib.sha256()
    for path in files:
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------ training


def build_model(params: Params, name: str, encoder: Any) -> Any:
    """A fresh (untrained) model of the trained method ``name`` with the weights of ``methods.<name>``."""
    spec = get_spec(name)
    if not spec.trains:
        raise NstError(f"{name} is not a trained method (trained: {', '.join(trained_methods())})")
    return get_method(name)(getattr(params.methods, name), encoder=encoder)


def init_file(tcfg: TrainParams, method_name: str) -> Path | None:
    """The pretrained file ``train.init_from`` names, or None (from scratch): a missing file is an error under
    ``init_missing: error`` and a warning (training from scratch) under ``scratch``."""
    if tcfg.init_from is None:
        return None
    path = Path(tcfg.init_from)
    if path.is_file():
        return path
    if tcfg.init_missing == "error":
        raise PretrainedError(
            f"methods.{method_name}.train.init_from = {tcfg.init_from!r}: no such file "
            "(make pretrain writes it; or set init_missing: scratch / init_from: null)"
        )
    log.warning(
        "train@%s: %s not found; training from scratch (methods.%s.train.init_missing: scratch)",
        method_name,
        path,
        method_name,
    )
    return None
