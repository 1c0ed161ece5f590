"""The feed-forward methods' shared training schedule (methods/training.py) and warm start (methods/pretrained.py).

Defaults are the reference schedule of naoto0804/pytorch-AdaIN ``train.py`` (the contrastive method overrides the batch
size with IEContraAST's); params.yaml sets every key for the embedded sample and profiles/full.yaml restores these.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from methods.schemas.fields import Seed, Setting
from methods.spec import MethodParams


class TrainParams(MethodParams):
    """``methods.<m>.train``: schedule, data crops, checkpoints, logging, precision, warm start."""

    init_from: str | None = None  # a pretrained file (nst pretrained) to start from; None: from scratch (the papers)
    init_missing: Literal["scratch", "error"] = "error"  # what a missing init_from file means
    iterations: Annotated[int, Field(ge=0, le=10_000_000)] = 160_000  # train.py --max_iter 160000
    # The budget where training computes in fp32 because bf16 is not native (amp "auto" on a CPU without AVX512-BF16 /
    # AMX): min(iterations, fp32_iterations). None: iterations, as the references (which train in fp32) and every
    # full-scale profile. For the embedded sample on a 2-core CPU, where fp32 trains 1.75-2.3x slower (bench/results)
    # and the quick start must stay within minutes; train_metrics.json and the report say what ran.
    fp32_iterations: Annotated[int, Field(ge=0, le=10_000_000)] | None = None
    batch_size: Annotated[int, Field(ge=1, le=1024)] = 8  # train.py --batch_size 8
    lr: Annotated[float, Field(gt=0.0, le=1.0)] = 1e-4  # train.py --lr 1e-4 (Adam)
    lr_decay: Annotated[float, Field(ge=0.0)] = 5e-5  # train.py --lr_decay 5e-5: lr / (1 + decay * iteration)
    # paper sec. 6: images resized so their smallest side is 512, then random 256 x 256 crops
    resize_short: Annotated[int, Field(ge=16, le=8192)] = 512
    crop: Annotated[int, Field(ge=16, le=8192)] = 256
    checkpoint_every: Annotated[int, Field(ge=1)] = 10_000  # train.py --save_model_interval 10000
    keep_checkpoints: Annotated[int, Field(ge=1, le=1000)] = 3
    log_every: Annotated[int, Field(ge=1)] = 1  # train.py logs every iteration (tensorboard add_scalar)
    sample_every: Annotated[int, Field(ge=0)] = 0  # content | style | output grid to MLflow every N iterations
    seed: Seed = 0  # batch order and crop positions
    amp: Setting = False  # the references train in float32
    channels_last: Setting = False
    workers: Annotated[int, Field(ge=0, le=64)] = 0  # DataLoader processes cutting crops (train.py --n_threads 16)

    @model_validator(mode="after")
    def _crop_fits(self) -> TrainParams:
        if self.crop > self.resize_short:
            raise ValueError(f"crop ({self.crop}) must be <= resize_short ({self.resize_short})")
        return self
