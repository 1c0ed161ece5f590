"""The method registry every stage goes through (a decorator registry, as in timm's ``register_model``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from torch import Tensor

from methods.errors import NstError


class Method(Protocol):
    """What every NST method offers: RGB (B, 3, H, W) in [0, 1] in, the content's H x W out."""

    name: str

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], *, encoder: Any = None, model: Any = None) -> Method: ...

    def stylize(self, content: Tensor, style: Tensor, **overrides: Any) -> Tensor: ...


F = TypeVar("F", bound=type)
_REGISTRY: dict[str, type[Method]] = {}


def register(name: str) -> Callable[[F], F]:
    """Class decorator adding a method class (with ``from_config`` and ``stylize``) under ``name``."""

    def deco(factory: F) -> F:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} registered twice")
        _REGISTRY[name] = factory
        return factory

    return deco


def _load_builtin() -> None:
    # Importing the modules registers them; done lazily so `import methods` stays cheap and cycle-free.
    import methods.adain
    import methods.contrastive
    import methods.gatys
    import methods.ghiasi  # noqa: F401


def list_methods() -> list[str]:
    """Registered method names, sorted."""
    _load_builtin()
    return sorted(_REGISTRY)


def get_method(name: str) -> type[Method]:
    """The class registered as ``name``; an unknown name raises with the known ones."""
    _load_builtin()
    if name not in _REGISTRY:
        raise NstError(f"unknown method {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]
