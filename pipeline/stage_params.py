"""Which parameters each stage runs with: the sections it declares, and a method's effective parameters.

Two facts live here once:

- :data:`STAGE_PARAMS`, the params.yaml sections each stage declares in dvc.yaml (tests/test_dvc_params.py checks
  dvc.yaml against it). A stage writes exactly these beside its outputs (``effective_params.yaml``), logs exactly these
  to MLflow (:func:`declared_tree`) and fingerprints exactly these, so an output never depends on a section whose
  change DVC does not rerun it for. A trained method's train and tune stages declare its ``train`` section only:
  its inference settings (``alpha``, ``preserve_color``, precision) rerun stylize, never training.
- :func:`effective_params`, a method's parameters as a stage runs them: params.yaml with its profile (already merged by
  :func:`pipeline.config.load_params`), the tuned weights of ``best.yaml`` (when ``tune.use_tuned``) and any
  ``--set`` changes, merged by the one rule :func:`methods.spec.merged` and validated once. Tune, train, stylize and
  the report call it; nothing else builds changed parameters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from methods.errors import NstError
from methods.registry import ParamsError, get_spec, with_changes
from pipeline.config import ConfigError, Params, YamlLoader, dump_params, pick_sections

# stage -> the params.yaml sections its dvc.yaml entry declares; "{m}" is the stage's method, "{tuned}" the section
# whose change reruns tune@{m} (methods.{m}.train for a trained method, all of methods.{m} otherwise).
STAGE_PARAMS: dict[str, tuple[str, ...]] = {
    "fetch": ("profile", "fetch"),
    "prepare": ("profile", "prepare"),
    "tune": (
        "profile",
        "base",
        "encoder",
        "evaluate",
        "{tuned}",
        "tune.storage",
        "tune.sampler",
        "tune.seed",
        "tune.objectives",
        "tune.selection",
        "tune.selection_weight",
        "tune.prune_dominated_by",
        "tune.heartbeat_s",
        "tune.grace_s",
        "tune.{m}",
    ),
    "train": ("profile", "base", "encoder", "tune.use_tuned", "methods.{m}.train"),
    "stylize": ("profile", "base", "encoder", "stylize", "tune.use_tuned", "methods.{m}"),
    "scorer-weights": ("scorer_weights",),
    # scoring.json's own-objective table reads each method's loss terms, the encoder and what tuning selected on
    "evaluate": ("profile", "base", "evaluate", "encoder.weights", "methods", "tune.use_tuned", "tune.objectives"),
    "report": ("profile", "prepare", "encoder", "methods", "tune"),
}


class TuneError(NstError):
    """A tuning problem with one clear message (bad best.yaml, no trial finished, ...)."""


def tuned_section(method: str) -> str:
    """The section whose change reruns ``tune@<method>``: a trained method's ``train`` (its trials train with it and
    score the trained network at its inference defaults, :func:`as_trained`), all of an untrained method's."""
    return f"methods.{method}.train" if get_spec(method).trains else f"methods.{method}"


def declared(stage: str, method: str | None = None) -> tuple[str, ...]:
    """The dotted params sections ``stage`` (of ``method``) declares in dvc.yaml."""
    sections = STAGE_PARAMS[stage]
    if method is None:
        return sections
    return tuple(s.replace("{tuned}", tuned_section(method)).replace("{m}", method) for s in sections)


def declared_tree(params: Params, stage: str, method: str | None = None) -> dict[str, Any]:
    """The declared sections' values as one nested mapping: what the stage logs to MLflow, hashes and writes."""
    return pick_sections(params, declared(stage, method))


def dump_declared(params: Params, stage: str, method: str | None = None) -> str:
    """YAML text of :func:`declared_tree`: ``effective_params.yaml`` beside a stage's outputs."""
    return dump_params(params, declared(stage, method))


# ------------------------------------------------------------------------------------------------ effective params


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["iterations=10", "train.lr=1e-3"]`` -> ``{"iterations": 10, "train": {"lr": 0.001}}`` (values as YAML;
    a dotted key names a nested section)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected key=value")
        *parents, last = key.strip().split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = yaml.load(value, Loader=YamlLoader)
    return out


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


def weight_changes(method: str, weights: Mapping[str, float]) -> dict[str, Any]:
    """Tuned weights (``tune.<m>.space`` keys) as changes of ``methods.<m>``: in its ``train`` section for a trained
    method, at the top for an untrained one."""
    return {"train": dict(weights)} if get_spec(method).trains else dict(weights)


def effective_params(
    params: Params,
    method: str,
    *,
    tuned: Path | None = None,
    changes: Mapping[str, Any] | None = None,
) -> Params:
    """``params`` with ``methods.<method>`` as the stage runs it: ``best.yaml``'s weights (when ``tuned`` is given and
    ``tune.use_tuned``), then ``changes`` (``--set``, a trial's budget and weights), merged and validated once.

    Raises:
        TuneError: a bad ``best.yaml`` or tuned weights the params class refuses; ConfigError: a bad change.
    """
    section = getattr(params.methods, method)
    if tuned is not None and params.tune.use_tuned:
        try:
            section = with_changes(section, weight_changes(method, read_best(tuned, method)), where=f"methods.{method}")
        except ParamsError as exc:
            raise TuneError(f"{tuned}: {exc}") from None
    if changes:
        try:
            section = with_changes(section, changes, where=f"methods.{method}")
        except ParamsError as exc:
            raise ConfigError(str(exc)) from None
    return params.model_copy(update={"methods": params.methods.model_copy(update={method: section})})


def as_trained(params: Params, method: str) -> Params:
    """``params`` with a trained method's inference settings at their defaults (the papers' ``alpha`` 1, no colour
    preservation) and in its training precision: how tune trials score a network and how train samples it, so that
    neither depends on a setting only stylize reads. Unchanged for an untrained method."""
    section = getattr(params.methods, method)
    if not get_spec(method).trains:
        return params
    train = section.train
    fresh = type(section)(
        train=train, **{k: getattr(train, k) for k in ("amp", "channels_last") if k in section.model_fields}
    )
    return params.model_copy(update={"methods": params.methods.model_copy(update={method: fresh})})
