"""The method registry: the single list of NST methods every stage, the config and the CLI derive from.

A method is registered by a :class:`MethodSpec`: its name, its params class (a pydantic model: the schema that
``params.yaml``'s ``methods.<name>`` is validated against, whose defaults cite their sources), whether it trains and
is tuned, its model file, and where its implementation lives (``"module:Class"``, imported on first use). Specs are
torch-free, so validating ``params.yaml`` or listing the methods (``nst --help``, ``nst fetch``) imports no torch.

The built-in specs live in ``methods/schemas/<name>.py``; ``methods/schemas/__init__.py`` imports every module in that
folder, so a new method is its implementation module plus its schema module (and its ``params.yaml`` section and
``dvc.yaml`` entries). Plugins and tests call :func:`register` with a spec of their own.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

from pydantic import BaseModel, ConfigDict, ValidationError

from methods.errors import NstError
from methods.objectives import Objective


class ParamsError(NstError):
    """A method's parameters are invalid; the message names the method, the key and what is allowed."""


# Every params.yaml section, the methods' and pipeline/config.py's alike: no unknown keys, no type coercion, no
# NaN/inf, immutable.
STRICT = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class MethodParams(BaseModel):
    """Base of every method's params class (:data:`STRICT`), with a validated :meth:`replace`."""

    model_config = STRICT

    def replace(self, **changes: Any) -> MethodParams:
        """A validated copy with ``changes`` (nested sections replaced whole); bad keys or values raise ParamsError."""
        where = next((n for n, spec in _REGISTRY.items() if spec.params is type(self)), type(self).__name__)
        return parse_params(type(self), {**self.model_dump(), **changes}, where=where)

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
        implementation: ``"module:Class"`` (imported on first use) or the class itself.
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
        if self.trains and (self.model_file is None or "train" not in self.params.model_fields):
            raise ValueError(f"method {self.name!r}: a trained method needs model_file and a params 'train' section")

    def load_class(self) -> type[Method]:
        """The implementation class (imports its module on first use)."""
        if not isinstance(self.implementation, str):
            return self.implementation
        module, _, attr = self.implementation.partition(":")
        return getattr(importlib.import_module(module), attr)

    def parse(self, data: Mapping[str, Any]) -> Any:
        """The params class validated from ``data`` (absent keys take the defaults); :class:`ParamsError` otherwise."""
        return parse_params(self.params, data, where=self.name)


_REGISTRY: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` to the registry (a name registers once)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"method {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a method (tests and plugins that registered one for a while)."""
    _REGISTRY.pop(name, None)


def _specs() -> dict[str, MethodSpec]:
    importlib.import_module("methods.schemas")  # registers the built-in methods (torch-free)
    return _REGISTRY


def get_spec(name: str) -> MethodSpec:
    """The spec registered as ``name``; an unknown name raises with the known ones."""
    specs = _specs()
    if name not in specs:
        raise NstError(f"unknown method {name!r}; known: {', '.join(sorted(specs))}")
    return specs[name]


def list_methods() -> list[str]:
    """Every registered method's name, in registration order (the built-ins: gatys, adain, contrastive, ghiasi)."""
    return list(_specs())


def trained_methods() -> list[str]:
    """The methods the train stage trains."""
    return [n for n, s in _specs().items() if s.trains]


def tuned_methods() -> list[str]:
    """The methods the tune stage tunes."""
    return [n for n, s in _specs().items() if s.tuned]


def get_method(name: str) -> type[Method]:
    """The implementation class of ``name`` (imports it); an unknown name raises with the known ones."""
    return get_spec(name).load_class()


def build_method(
    name: str,
    config: Mapping[str, Any] | MethodParams | None = None,
    *,
    encoder: Any = None,
    model: str | Path | None = None,
) -> Any:
    """``name`` built from its params (a ``methods.<name>`` mapping, partial ones take the defaults) on ``encoder``
    (None: the method loads its own), with ``model`` loaded for a trained method.

    Raises:
        ParamsError: a bad key or value; NstError: a trained method without ``model``, or a model for one without.
    """
    spec = get_spec(name)
    params = config if isinstance(config, spec.params) else spec.parse(config or {})
    if not spec.trains and model is not None:
        raise NstError(f"{name} has no trained model and takes no --model (got {model})")
    if spec.trains and model is None:
        raise NstError(f"{name} needs a trained model: pass --model models/{name} (run the train@{name} stage first)")
    method = spec.load_class()(params, encoder=encoder)
    if model is not None:
        cast(TrainedMethod, method).load(model)
    return method
