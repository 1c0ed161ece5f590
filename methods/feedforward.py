"""What the feed-forward methods (AdaIN, contrastive) share around their networks: the model file and style mixes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from methods.errors import NstError
from methods.utils import load_torch, save_torch_atomic


def model_target(path: str | Path, model_file: str, *, saving: bool) -> Path:
    """The model file for ``path``: a folder means ``<folder>/<model_file>``, a ``.pt`` path is the file itself."""
    path = Path(path)
    is_folder = path.suffix != ".pt" if saving else path.is_dir()
    return path / model_file if is_folder else path


def save_modules(
    modules: Mapping[str, nn.Module],
    path: str | Path,
    model_file: str,
    encoder_sha256: str,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write the modules' weights, the encoder's sha256 and ``extra`` metadata to the model file, atomically."""
    target = model_target(path, model_file, saving=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    save_torch_atomic(
        {**{k: m.state_dict() for k, m in modules.items()}, "encoder_sha256": encoder_sha256, **(extra or {})}, target
    )
    return target


def load_modules(
    modules: Mapping[str, nn.Module],
    path: str | Path,
    model_file: str,
    *,
    label: str,
    stage: str,
    encoder_sha256: str,
) -> None:
    """Load weights written by :func:`save_modules`; a missing or unreadable file, or one trained on another encoder
    (its recorded ``encoder_sha256`` differs from this model's encoder's), is one clear :class:`NstError` (``label``
    names the model kind, ``stage`` the stage that makes it)."""
    target = model_target(path, model_file, saving=False)
    missing = f"{target}: no {label} model (run the {stage} stage, or pass the right --model)"
    state = load_torch(target, NstError, missing, f"{target}: not a readable {label} model")
    trained_on = state.get("encoder_sha256") if isinstance(state, dict) else None
    if trained_on is not None and trained_on != encoder_sha256:
        raise NstError(
            f"{target}: this {label} model was trained on the encoder {str(trained_on)[:12]}, not on the one in use "
            f"({encoder_sha256[:12]}): encoder.weights, encoder.pool and methods.<method>.encoder_normalise must be "
            f"those it was trained with (or retrain it: the {stage} stage)"
        )
    try:
        for name, module in modules.items():
            module.load_state_dict(state[name])
    except Exception as exc:
        raise NstError(f"{target}: not a readable {label} model ({type(exc).__name__}: {exc})") from exc


def style_mixture(
    style: Tensor | Sequence[Tensor], style_weights: Sequence[float] | None, method: str
) -> list[tuple[Tensor, float]]:
    """One style or a list of styles with their weights normalised to sum 1 (default equal)."""
    styles = list(style) if isinstance(style, list | tuple) else [style]
    if style_weights is None:
        style_weights = [1.0 / len(styles)] * len(styles)
    if len(style_weights) != len(styles) or min(style_weights) < 0 or sum(style_weights) <= 0:
        raise NstError(f"{method}: style_weights must be non-negative, one per style, with a positive sum")
    total = float(sum(style_weights))
    return [(s, w / total) for s, w in zip(styles, style_weights, strict=True)]
