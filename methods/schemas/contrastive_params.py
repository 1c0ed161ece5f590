"""``methods.contrastive``: IEContraAST-style (Chen et al., NeurIPS 2021; methods/contrastive.py).

Defaults cite HalbertCH/IEContraAST ``train.py`` unless said otherwise.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from methods.objectives import MEANSTD, VGG19, Objective
from methods.schemas.fields import EncoderNormalise, Fraction, Seed, Setting, Weight
from methods.schemas.schedule import TrainParams
from methods.spec import MethodParams, MethodSpec, ReferenceSchedule

MODEL_FILE = "generator.pt"
LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")  # net.py encode_with_intermediate
CONTENT_LAYERS = ("relu4_1", "relu5_1")  # net.py: loss_c on normalised relu4_1 and relu5_1 features (paper eq. 9)


class ContrastiveTrain(TrainParams):
    """``methods.contrastive.train``: everything that changes the trained networks (loss weights, temperature,
    initialisation, the encoder they are trained on, the schedule); the train and tune stages read this section alone.
    Defaults cite HalbertCH/IEContraAST train.py unless said otherwise."""

    batch_size: Annotated[int, Field(ge=1, le=1024)] = 12  # train.py --batch_size 12 (6 contents x 6 styles -> 12)
    content_weight: Weight = 1.0  # --content_weight 1.0
    style_weight: Weight = 1.0  # --style_weight 1.0
    identity_pixel_weight: Weight = 50.0  # loss = ... + l_identity1 * 50 (paper eq. 9: lambda_id1 = 50)
    identity_feature_weight: Weight = 1.0  # ... + l_identity2 * 1 (paper eq. 9: lambda_id2 = 1)
    # --contrastive_weight_s / _c 0.3 on a loss the reference *sums* over the 12 anchors of its batch; info_nce here
    # averages over anchors (batch-size independent), so the same effective weight is 0.3 x 12 = 3.6.
    style_contrastive_weight: Weight = 3.6
    content_contrastive_weight: Weight = 3.6
    gan_weight: Weight = 5.0  # --gan_weight 5.0
    tau: Annotated[float, Field(gt=0.0, le=10.0)] = 0.2  # paper sec. 4; net.py compute_contrastive_loss(..., 0.2, ...)
    init_seed: Seed = 0  # generator, heads and discriminator initialisation
    # The reference's encoder is vgg_normalised (net.py `vgg`, models/vgg_normalised.pth, as pytorch-AdaIN's):
    # the per-filter-normalised VGG-19 (Gatys et al. 2016 sec. 2), methods/encoder.py normalise="per_filter".
    encoder_normalise: EncoderNormalise = "per_filter"

    @model_validator(mode="after")
    def _pairs(self) -> ContrastiveTrain:
        if self.batch_size < 4 or self.batch_size % 2:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be even and >= 4: k contents x k styles give 2k stylizations"
            )
        if self.crop < 32:
            raise ValueError(f"crop ({self.crop}) must be >= 32 px (the discriminator's smallest input)")
        return self


class ContrastiveParams(MethodParams):
    """Inference settings, then the ``train`` section; each default cites its source."""

    alpha: Fraction = 1.0  # content-style trade-off at inference: alpha T(c, s) + (1 - alpha) T(c, c) (SANet's eval)
    amp: Setting = False  # inference precision (methods/precision.py); the reference runs float32
    channels_last: Setting = False
    train: ContrastiveTrain = Field(default_factory=ContrastiveTrain)

    @property
    def encoder_normalise(self) -> str:
        """The encoder the networks were trained on (``train.encoder_normalise``)."""
        return self.train.encoder_normalise

    def objectives(self) -> tuple[Objective, ...]:
        """Paper eq. 9's content term (MSE of mean/variance-normalised relu4_1 and relu5_1 features: no metric
        normalises so) and its mean/std style term on relu1_1..relu5_1; identity, contrastive and GAN terms compare
        other images or learned heads, which no metric shares."""
        return (
            Objective("feature_mse_normalised", CONTENT_LAYERS, VGG19, "trained", "content"),
            Objective(MEANSTD, LAYERS, VGG19, "trained", "style"),
        )


SPEC = MethodSpec(
    name="contrastive",
    params=ContrastiveParams,
    implementation="methods.contrastive:Contrastive",
    trains=True,
    tuned=True,
    model_file=MODEL_FILE,
    reference_schedule=ReferenceSchedule(  # HalbertCH/IEContraAST train.py defaults (6 contents x 6 styles -> 12)
        iterations=160_000,
        batch_size=12,
        crop=256,
        source="IEContraAST train.py: --max_iter 160000 --batch_size 12",
    ),
)
