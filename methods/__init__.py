"""NST methods and what they share (the VGG-19 encoder, the loss functions).

No MLflow, Optuna or DVC imports in this package: methods are pure PyTorch. Importing the package, the registry or the
methods' params classes (``methods.schemas``) does not import torch; a method's implementation loads on first use.
"""

from methods.errors import EncoderWeightsError, NstError
from methods.registry import (
    Method,
    MethodParams,
    MethodSpec,
    ParamsError,
    build_method,
    get_method,
    get_spec,
    list_methods,
    register,
    trained_methods,
    tuned_methods,
)

__all__ = [
    "EncoderWeightsError",
    "Method",
    "MethodParams",
    "MethodSpec",
    "NstError",
    "ParamsError",
    "build_method",
    "get_method",
    "get_spec",
    "list_methods",
    "register",
    "trained_methods",
    "tuned_methods",
]
