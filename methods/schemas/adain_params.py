"""``methods.adain``: Huang & Belongie, ICCV 2017 (methods/adain.py); reference naoto0804/pytorch-AdaIN."""

from __future__ import annotations

from pydantic import Field

from methods.objectives import MEANSTD, VGG19, Objective
from methods.schemas.fields import EncoderNormalise, Fraction, Seed, Setting, Weight
from methods.schemas.schedule import TrainParams
from methods.spec import MethodParams, MethodSpec, ReferenceSchedule

MODEL_FILE = "decoder.pt"
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")  # paper sec. 6
CONTENT_LAYER = "relu4_1"  # paper sec. 5: AdaIN at relu4_1


class AdaINTrain(TrainParams):
    """``methods.adain.train``: everything that changes the trained decoder (the loss, the initialisation, the encoder
    it is trained on, the schedule); the train and tune stages read this section alone."""

    content_weight: Weight = 1.0  # naoto0804/pytorch-AdaIN train.py --content_weight 1.0
    style_weight: Weight = 10.0  # naoto0804/pytorch-AdaIN train.py --style_weight 10.0 (on vgg_normalised)
    init_seed: Seed = 0  # decoder initialisation
    # naoto0804/pytorch-AdaIN train.py --vgg models/vgg_normalised.pth: the per-filter-normalised VGG-19
    # (Gatys et al. 2016 sec. 2), methods/encoder.py normalise="per_filter". Inference runs on the same network.
    encoder_normalise: EncoderNormalise = "per_filter"


class AdaINParams(MethodParams):
    """Inference settings, then the ``train`` section; each default cites its source."""

    alpha: Fraction = 1.0  # paper eq. 14: 1 = full stylization, 0 = reconstruct the content
    preserve_color: bool = False  # paper sec. 7.3
    amp: Setting = False  # inference precision (methods/precision.py); the reference runs float32
    channels_last: Setting = False
    train: AdaINTrain = Field(default_factory=AdaINTrain)  # pytorch-AdaIN train.py's schedule

    @property
    def encoder_normalise(self) -> str:
        """The encoder the decoder was trained on (``train.encoder_normalise``)."""
        return self.train.encoder_normalise

    def objectives(self) -> tuple[Objective, ...]:
        """Paper eq. 11-12: content MSE to the AdaIN target at relu4_1 (no metric compares with that target), mean/std
        style loss on relu1_1..relu4_1."""
        return (
            Objective("feature_mse_adain_target", (CONTENT_LAYER,), VGG19, "trained", "content"),
            Objective(MEANSTD, STYLE_LAYERS, VGG19, "trained", "style"),
        )


SPEC = MethodSpec(
    name="adain",
    params=AdaINParams,
    implementation="methods.adain:AdaIN",
    trains=True,
    tuned=True,
    model_file=MODEL_FILE,
    reference_schedule=ReferenceSchedule(  # paper sec. 6; naoto0804/pytorch-AdaIN train.py defaults
        iterations=160_000,
        batch_size=8,
        crop=256,
        source="pytorch-AdaIN train.py: --max_iter 160000 --batch_size 8",
    ),
)
