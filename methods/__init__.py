"""NST methods and what they share (the VGG-19 encoder, the loss functions).

No MLflow, Optuna or DVC imports in this package: methods are pure PyTorch. Importing the package (or
``methods.errors`` / ``methods.utils``) does not import torch; the registry's names load it on first use.
"""

from typing import Any

from methods.errors import EncoderWeightsError, NstError

__all__ = ["EncoderWeightsError", "Method", "NstError", "get_method", "list_methods", "register"]
_REGISTRY_NAMES = ("Method", "get_method", "list_methods", "register")


def __getattr__(name: str) -> Any:
    if name in _REGISTRY_NAMES:
        from methods import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'methods' has no attribute {name!r}")
