"""NST methods and what they share (the VGG-19 encoder, the loss functions).

No MLflow, Optuna or DVC imports in this package: methods are pure PyTorch.
"""

from methods.errors import EncoderWeightsError, NstError

__all__ = ["EncoderWeightsError", "NstError"]
