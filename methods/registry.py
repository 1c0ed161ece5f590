"""The method registry: the single list of NST methods every stage, the config and the CLI derive from.

Each method is one :class:`~methods.spec.MethodSpec` (its name, params class, whether it trains and is tuned, its model
file, its implementation as ``"module:Class"``), declared as ``SPEC`` by its schema module
``methods/schemas/<name>_params.py``. This module finds those modules in that folder (the built-ins first, in the
table's order, then any other alphabetically), so a new method is its implementation module plus its schema module
(and its params.yaml sections); plugins and tests :func:`register` a spec of their own. Specs are torch-free:
validating params.yaml or listing the methods imports no torch; an implementation is imported on first use.

Imports run one way: registry -> schema modules -> methods.spec, and registry -> implementation -> its schema.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import methods.schemas
from methods.errors import NstError
from methods.spec import (  # noqa: F401  (re-exported: what callers of the registry name)
    STRICT,
    Method,
    MethodParams,
    MethodSpec,
    ParamsError,
    ReferenceSchedule,
    TrainedMethod,
    describe_errors,
    merged,
    parse_params,
    unset_keys,
    with_changes,
)

BUILTIN = ("gatys", "adain", "contrastive", "ghiasi")  # the table's, the config's and the CLI's order
SCHEMA_SUFFIX = "_params"  # methods/schemas/<name>_params.py declares SPEC; other modules there hold shared fields

_REGISTRY: dict[str, MethodSpec] = {}
_FOUND = False


def _schema_modules() -> list[str]:
    """The schema modules of methods/schemas/: the built-ins in order, then the rest alphabetically."""
    names = sorted(m.name for m in pkgutil.iter_modules(methods.schemas.__path__) if m.name.endswith(SCHEMA_SUFFIX))
    builtin = [f"{name}{SCHEMA_SUFFIX}" for name in BUILTIN]
    return [*builtin, *(n for n in names if n not in builtin)]


def _specs() -> dict[str, MethodSpec]:
    """The registry, filled from methods/schemas/ on first use (plugins :func:`register` after that)."""
    global _FOUND
    if not _FOUND:
        _FOUND = True
        for module in _schema_modules():
            spec = importlib.import_module(f"methods.schemas.{module}").SPEC
            _REGISTRY[spec.name] = spec
    return _REGISTRY


def register(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` to the registry (a name registers once)."""
    if spec.name in _specs():
        raise ValueError(f"method {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a method (tests and plugins that registered one for a while)."""
    _specs().pop(name, None)


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
    """The implementation class of ``name`` (imports its module on first use); an unknown name raises with the known
    ones."""
    implementation = get_spec(name).implementation
    if not isinstance(implementation, str):
        return implementation
    module, _, attr = implementation.partition(":")
    return getattr(importlib.import_module(module), attr)


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
    method = get_method(name)(params, encoder=encoder)
    if model is not None:
        cast(TrainedMethod, method).load(model)
    return method
