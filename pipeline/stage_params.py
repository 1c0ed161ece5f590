"""Which parameters each stage runs with: the sections it declares, and a method's effective parameters.

Two facts live here once:

- :data:`STAGE_PARAMS`, the params.yaml sections each stage declares in dvc.yaml (tests/test_dvc_params.py checks
  dvc.yaml against it). A stage writes exactly these beside its outputs (``effective_params.yaml``), logs exactly these
  to MLflow (:func:`declared_tree`) and fingerprints exactly these, so an output never depends on a section whose
  change DVC does not rerun it for. A trained method's train and tune stages declare its ``train`` section only:
  its inference settings (``alpha``, ``preserve_color``, precision) rerun stylize, never training.
- :func:`as_trained`: how a trained method's tune trials and training see its params (inference settings at their
  defaults), so that only its ``train`` section reruns them.

A method's effective parameters (params.yaml, its profile, tuned weights, ``--set``) come from one place:
:func:`pipeline.config.load_params`.
"""

from __future__ import annotations

from typing import Any

from methods.registry import get_spec
from pipeline.config import Params, dump_params, pick_sections, tuned_section

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
    "judge": ("profile", "judge"),
    "report": ("profile", "prepare", "encoder", "methods", "tune"),
}


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


def as_trained(params: Params, method: str) -> Params:
    """``params`` with a trained method's inference settings at their defaults (the papers' ``alpha`` 1, no colour
    preservation) and in its training precision: how tune trials score a network and how train samples it, so that
    neither depends on a setting only stylize reads. Unchanged for an untrained method."""
    section = getattr(params.methods, method)
    if not get_spec(method).trains:
        return params
    train = section.train
    fresh = type(section)(
        train=train, **{k: getattr(train, k) for k in ("amp", "channels_last") if k in type(section).model_fields}
    )
    return params.model_copy(update={"methods": params.methods.model_copy(update={method: fresh})})
