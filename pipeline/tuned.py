"""Changing a method's parameters: tuned weights from ``best.yaml`` and ``--set key=value`` overrides, re-validated.

Shared by the stages that apply tuned weights (tune, train, stylize) and the one-off ``nst stylize``; params.yaml is
never rewritten.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from methods.errors import NstError
from methods.registry import describe_errors
from pipeline.config import ConfigError, Params, YamlLoader


class TuneError(NstError):
    """A tuning problem with one clear message (bad best.yaml, no trial finished, ...)."""


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["iterations=10", "init=noise"]`` -> ``{"iterations": 10, "init": "noise"}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {pair!r}: expected key=value")
        out[key.strip()] = yaml.load(value, Loader=YamlLoader)
    return out


def override_method(params: Params, method_name: str, overrides: Mapping[str, Any]) -> Params:
    """``params`` with ``methods.<method_name>`` updated and re-validated (strict: unknown keys, types, ranges)."""
    section = getattr(params.methods, method_name)
    merged = {**section.model_dump(), **overrides}
    try:
        new_section = type(section).model_validate(merged)
    except ValidationError as exc:
        problems = describe_errors(exc, type(section), f"methods.{method_name}")
        raise ConfigError("--set: " + "; ".join(problems)) from None
    methods = params.methods.model_copy(update={method_name: new_section})
    return params.model_copy(update={"methods": methods})


def section_with(params: Params, method: str, changes: Mapping[str, Any]) -> Params:
    """``params`` with ``methods.<method>`` updated by ``changes`` (nested ``train`` merged key by key), validated."""
    section = getattr(params.methods, method).model_dump()
    merged = dict(changes)
    if isinstance(changes.get("train"), Mapping):
        merged["train"] = {**section.get("train", {}), **changes["train"]}
    return override_method(params, method, merged)


def read_best(path: Path, method: str) -> dict[str, float]:
    """The tuned weights in ``best.yaml``, checked: it must be for ``method`` and hold only numbers."""
    if not path.is_file():
        raise TuneError(f"{path}: not found (run the tune@{method} stage, or set tune.use_tuned: false)")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=YamlLoader)
    except yaml.YAMLError as exc:
        raise TuneError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict) or data.get("method") != method or not isinstance(data.get("weights"), dict):
        raise TuneError(f"{path}: not a best.yaml for {method} (needs method: {method} and a weights mapping)")
    weights = data["weights"]
    bad = [k for k, v in weights.items() if not isinstance(v, int | float) or not math.isfinite(v)]
    if bad:
        raise TuneError(f"{path}: weights {', '.join(bad)} are not finite numbers")
    return {k: float(v) for k, v in weights.items()}


def apply_tuned(params: Params, method: str, best: Path | None) -> Params:
    """``params`` with ``best.yaml``'s weights over ``methods.<method>`` when ``tune.use_tuned`` (else unchanged)."""
    if best is None or not params.tune.use_tuned:
        return params
    try:
        return section_with(params, method, read_best(best, method))
    except ConfigError as exc:
        raise TuneError(f"{best}: {exc}") from None
