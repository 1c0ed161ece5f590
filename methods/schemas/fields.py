"""Field types the methods' params classes share (pydantic, torch-free)."""

from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field

from methods.vgg_layers import LAYER_NAMES

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Weight = Annotated[float, Field(ge=0.0)]  # a loss weight: finite (MethodParams forbids inf/NaN), >= 0
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
# methods/precision.py: true | false | auto (bf16 on CUDA and on CPUs with native bf16; channels_last with bf16)
Setting = bool | Literal["auto"]
# methods/encoder.py load_encoder(normalise=...): the raw network or the per-filter-normalised one
EncoderNormalise = Literal["none", "per_filter"]


def _check_layers(names: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [n for n in names if n not in LAYER_NAMES]
    if unknown:
        raise ValueError(f"unknown VGG-19 layer(s) {', '.join(unknown)}; valid: {', '.join(LAYER_NAMES)}")
    return names


def _as_tuple(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


# VGG-19 layer names (pystiche naming); a YAML list becomes a tuple (hashable params), dumped back as a list
Layers = Annotated[tuple[str, ...], BeforeValidator(_as_tuple), Field(min_length=1), AfterValidator(_check_layers)]
