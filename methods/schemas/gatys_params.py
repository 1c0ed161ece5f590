"""``methods.gatys``: Gatys, Ecker & Bethge, CVPR 2016 (methods/gatys.py); loss scales as jcjohnson/neural-style."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from methods.objectives import FEATURE_MSE, GRAM, VGG19, Objective
from methods.schemas.fields import EncoderNormalise, Layers, Seed, Setting, Weight
from methods.spec import MethodParams, MethodSpec


class GatysParams(MethodParams):
    """Hyper-parameters; each default cites its source."""

    # Gatys et al. 2016 sec. 3: content on "conv4_2" (its rectified response, i.e. relu4_2 in pystiche naming).
    content_layers: Layers = ("relu4_2",)
    # Gatys et al. 2016 sec. 3: style on conv1_1, conv2_1, conv3_1, conv4_1, conv5_1 (rectified), equal weights.
    style_layers: Layers = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    content_weight: Weight = 5.0  # neural-style `-content_weight 5e0`
    style_weight: Weight = 100.0  # neural-style `-style_weight 1e2`
    # Gatys et al. 2016 use no TV term; neural-style's `-tv_weight 1e-3` is on an unnormalised 0..255 sum, so it
    # does not carry over to methods.losses.total_variation (a mean on [0, 1]); off by default, tuned by Optuna.
    tv_weight: Weight = 0.0
    # Gatys et al. 2016 sec. 3 start from white noise; neural-style `-init random` = mean colour + 0.001 * N(0, 1)
    # on the 0..255 scale, which is what "noise" does here.
    init: Literal["content", "noise", "style"] = "noise"
    optimizer: Literal["lbfgs", "adam"] = "lbfgs"  # neural-style `-optimizer lbfgs` (Gatys et al. 2016 sec. 3)
    iterations: Annotated[int, Field(ge=0, le=1_000_000)] = 1000  # neural-style `-num_iterations 1000`
    # None = per optimiser: L-BFGS 1.0 (neural-style's optim.lbfgs learningRate); Adam 10/255 (neural-style
    # `-learning_rate 1e1` on the 0..255 scale, our images are in [0, 1]).
    lr: Annotated[float, Field(gt=0.0)] | None = None
    # neural-style `-image_size 512`: the long side the optimisation runs at; None = the content's own size.
    # The output is always resized back to the content's H x W.
    image_size: Annotated[int, Field(ge=16, le=8192)] | None = 512
    seed: Seed = 0  # noise init
    amp: Setting = False  # bf16 autocast for the encoder passes (losses stay float32): True | False | "auto"
    channels_last: Setting = False  # channels_last for the encoder passes: True | False | "auto" (= with bf16)
    # The raw caffe VGG-19, on which neural-style's weights (above) are defined; "per_filter" is the normalised
    # network of Gatys et al. 2016 sec. 2 (methods/encoder.py).
    encoder_normalise: EncoderNormalise = "none"

    @property
    def effective_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return 1.0 if self.optimizer == "lbfgs" else 10.0 / 255.0

    def objectives(self) -> tuple[Objective, ...]:
        """Gatys et al. 2016 eq. 7: content MSE on ``content_layers``, Gram style loss on ``style_layers``."""
        return (
            Objective(FEATURE_MSE, self.content_layers, VGG19, "optimised", "content"),
            Objective(GRAM, self.style_layers, VGG19, "optimised", "style"),
        )


SPEC = MethodSpec(name="gatys", params=GatysParams, implementation="methods.gatys:Gatys", tuned=True)
