"""NST methods and what they share (the VGG-19 encoder, the loss functions).

No MLflow, Optuna or DVC imports in this package: methods are pure PyTorch.
"""

from methods.errors import EncoderWeightsError, NstError
from methods.registry import Method, get_method, list_methods, register

__all__ = ["EncoderWeightsError", "Method", "NstError", "get_method", "list_methods", "register"]
