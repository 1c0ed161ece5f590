"""What a method is, apart from which methods exist: its params base class and their one merge rule, its spec (the
registry entry a schema module declares) and the protocols its implementation follows. Torch-free.

methods/schemas/<name>_params.py declare ``SPEC = MethodSpec(...)`` with this module alone; methods/registry.py finds
them. So no schema imports the registry and the registry imports no implementation until asked for one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from methods.errors import NstError
from methods.objectives import Objective

# params class -> the name of the method it configures (filled by MethodSpec): error messages say "methods.gatys"
METHOD_OF: dict[type, str] = {}


class ParamsError(NstError):
    """A method's parameters are invalid; the message names the method, the key and what is allowed."""


# Every params.yaml section, the methods' and pipeline/config.py's alike: no unknown keys, no type coercion, no
# NaN/inf, immutable.
STRICT = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class MethodParams(BaseModel):
    """Base of every method's params class (:data:`STRICT`), with a validated :meth:`replace`."""

    model_config = STRICT

    def replace(self, **changes: Any) -> MethodParams:
        """:func:`with_changes` of ``changes`` (a method's ``stylize(**overrides)``), errors naming the method."""
        return with_changes(self, changes, where=METHOD_OF.get(type(self), type(self).__name__))

    def objectives(self) -> tuple[Objective, ...]:
        """The loss terms this method minimises (methods/objectives.py), derived from these params; () for none."""
        return ()


def describe_errors(exc: ValidationError, model: type[BaseModel], prefix: str) -> list[str]:
    """One phrase per problem of a pydantic error: ``prefix.key = value: what is allowed`` / unknown / missing key."""
    problems = []
    for err in exc.errors(include_url=False):
        key = ".".join([prefix, *map(str, err["loc"])]) if prefix else ".".join(map(str, err["loc"]))
        if err["type"] == "missing":
            problems.append(f"missing key {key!r}")
        elif err["type"] == "extra_forbidden":
            allowed = allowed_keys(model, err["loc"][:-1])
            problems.append(f"unknown key {key!r}" + (f" (allowed here: {', '.join(allowed)})" if allowed else ""))
        else:
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{key} = {err.get('input')!r}: {msg}" if key else msg)
    return problems


def allowed_keys(model: Any, loc: tuple[Any, ...]) -> list[str]:
    """The field names of the (nested) model at ``loc``; [] when ``loc`` leads to no model."""
    current = model
    for part in loc:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = field.annotation
    return list(getattr(current, "model_fields", {}))


def parse_params(model: type[BaseModel], data: Mapping[str, Any], *, where: str) -> Any:
    """``model`` validated from ``data`` (absent keys take the class defaults); one :class:`ParamsError` otherwise."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise ParamsError(f"{where}: " + "; ".join(describe_errors(exc, model, ""))) from None


def merged(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes``: mappings merge key by key at every depth, anything else replaces. The one rule for
    "parameters with changes" (tuned weights, a profile's overlay of a section, ``--set``, per-trial budgets)."""
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def with_changes(params: Any, changes: Mapping[str, Any], *, where: str) -> Any:
    """A validated copy of the params object ``params`` with ``changes`` :func:`merged` in; otherwise one
    :class:`ParamsError` naming each key dotted under ``where`` (``methods.gatys.colour``). Unchanged params come back
    as they are."""
    if not changes:
        return params
    try:
        return type(params).model_validate(merged(params.model_dump(), changes))
    except ValidationError as exc:
        raise ParamsError("; ".join(describe_errors(exc, type(params), where))) from None


def unset_keys(params: BaseModel, prefix: str = "") -> list[str]:
    """Dotted names of the fields (nested sections included) that took their default instead of a given value."""
    missing = []
    for name in type(params).model_fields:
        dotted = f"{prefix}.{name}" if prefix else name
        if name not in params.model_fields_set:
            missing.append(dotted)
            continue
        value = getattr(params, name)
        if isinstance(value, BaseModel):
            missing.extend(unset_keys(value, dotted))
    return missing


@dataclass(frozen=True)
class ReferenceSchedule:
    """How the method's paper / reference code trains it: what the report measures our training budget against."""

    iterations: int
    batch_size: int
    crop: int
    source: str

    def fraction(self, iterations: int) -> float:
        """Our training budget as a fraction of the reference's, in iterations (batch sizes are reported apart)."""
        return iterations / self.iterations


class Method(Protocol):
    """What every NST method offers: RGB (B, 3, H, W) in [0, 1] in, the content's H x W out."""

    name: str
    params: Any

    def __init__(self, params: Any = None, *, encoder: Any = None) -> None: ...

    def stylize(self, content: Any, style: Any, **overrides: Any) -> Any: ...


class TrainedMethod(Method, Protocol):
    """A feed-forward method: trainable modules, loss terms, and its model file written/read by ``save``/``load``."""

    def trainable(self) -> dict[str, Any]: ...

    def losses(self, content: Any, style: Any) -> dict[str, Any]: ...

    def save(self, path: str | Path, extra: Mapping[str, Any] | None = None) -> Path: ...

    def load(self, path: str | Path) -> TrainedMethod: ...


@dataclass(frozen=True)
class MethodSpec:
    """One registered method (see the module docstring).

    Attributes:
        name: the method's name in params.yaml, dvc.yaml, outputs/ and the report.
        params: its params class (a :class:`MethodParams`); a trained method's has a ``train`` section.
        implementation: ``"module:Class"`` (methods/registry.py imports it on first use) or the class itself.
        trains: a feed-forward method trained by the train stage (``models/<name>/<model_file>``).
        tuned: its loss weights are tuned by the tune stage (``tune.<name>`` in params.yaml).
        uses_encoder: runs on the shared VGG-19 (False: networks of its own, e.g. ghiasi).
        model_file: the trained model's file name inside ``models/<name>/``.
        reference_schedule: the paper's training schedule (trained methods).
        pretrained_by: for a method pretrained by its authors, the citation the report shows.
    """

    name: str
    params: type[MethodParams]
    implementation: str | type
    trains: bool = False
    tuned: bool = False
    uses_encoder: bool = True
    model_file: str | None = None
    reference_schedule: ReferenceSchedule | None = None
    pretrained_by: str | None = None

    def __post_init__(self) -> None:
        METHOD_OF.setdefault(self.params, self.name)
        if self.trains and (self.model_file is None or "train" not in self.params.model_fields):
            raise ValueError(f"method {self.name!r}: a trained method needs model_file and a params 'train' section")

    def parse(self, data: Mapping[str, Any]) -> Any:
        """The params class validated from ``data`` (absent keys take the defaults); :class:`ParamsError` otherwise."""
        return parse_params(self.params, data, where=self.name)
