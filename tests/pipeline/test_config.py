"""pipeline.config.load_params: the committed params.yaml, the full profile, strict validation errors, YAML 1.2
floats and dump_params round trips. Variants of params.yaml are written to tmp_path from the committed file."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.config import ConfigError, Params, dump_params, effective_params, encoder_settings, load_params
from pipeline.stage_params import dump_declared

REPO_ROOT = Path(__file__).resolve().parents[2]
PARAMS = REPO_ROOT / "params.yaml"
DELETE = object()  # marker: remove the key


def committed() -> dict[str, Any]:
    return yaml.safe_load(PARAMS.read_text(encoding="utf-8"))


def set_key(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        node = node[part]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value


def write_params(folder: Path, changes: dict[str, Any] | None = None, *, profiles: bool = False) -> Path:
    """params.yaml from the committed one with ``changes`` (dotted key -> value or DELETE) applied, in ``folder``;
    ``profiles`` copies the committed profiles/ folder next to it."""
    data = committed()
    for dotted, value in (changes or {}).items():
        set_key(data, dotted, value)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    if profiles:
        shutil.copytree(REPO_ROOT / "profiles", folder / "profiles")
    return path


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted key: leaf value} of nested mappings (lists are leaves)."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_params(path)
    return str(info.value)


# ----------------------------------------------------------------------------------------- valid files


def test_committed_params_load() -> None:
    params = load_params(PARAMS)
    assert isinstance(params, Params)
    raw = committed()
    assert params.profile == raw["profile"] == "sample"
    # The typed object carries exactly the committed values.
    assert flatten(params.model_dump(mode="json")) == flatten(raw)


def test_unchanged_copy_loads_equal(tmp_path: Path) -> None:
    assert load_params(write_params(tmp_path)) == load_params(PARAMS)


def test_full_profile_workloads_are_bounded(tmp_path: Path) -> None:
    """What the full profile asks of one GPU, from its own numbers: the test grid per method and the val pairs a
    tuning check scores (null would mean every val pair: about 200 x 240)."""
    full = load_params(write_params(tmp_path, {"profile": "full"}, profiles=True))
    photos = full.fetch.streets.photos
    paintings = full.fetch.wikiart.per_class * len(full.fetch.wikiart.styles)
    split = full.prepare.split
    tests = [round(n * split.test) for n in (photos, paintings)]  # about 200 and 240
    caps = [split.test_max.content, split.test_max.style]
    grid = math.prod(min(n, c or n) for n, c in zip(tests, caps, strict=True))
    assert grid == 20 * 40  # StyleID's 800-pair protocol, not 48 000
    for method in ("gatys", "adain", "contrastive"):
        val_pairs = getattr(full.tune, method).val_pairs
        assert val_pairs is not None
        assert val_pairs <= 64


def test_full_profile_merges_the_overlay(tmp_path: Path) -> None:
    path = write_params(tmp_path, {"profile": "full"}, profiles=True)
    sample = load_params(PARAMS)

    full = load_params(path)

    assert full.profile == "full"
    assert full.fetch.style.source == "wikiart"
    assert full.fetch.content.source == "streets"
    assert full.prepare.resize.side_px == 512
    assert full.prepare.resize.edge == "short"
    assert full.base.device == "cuda"
    # Keys the overlay does not mention keep the params.yaml values.
    assert full.prepare.max_pixels == sample.prepare.max_pixels
    assert full.prepare.resize.upscale == sample.prepare.resize.upscale
    assert full.fetch.wikiart.class_by == sample.fetch.wikiart.class_by
    assert full.fetch.download.backoff_s == sample.fetch.download.backoff_s

    # Every key: the overlay value where the overlay has one, otherwise the params.yaml value.
    overlay = flatten(yaml.safe_load((REPO_ROOT / "profiles" / "full.yaml").read_text(encoding="utf-8")))
    base = flatten(sample.model_dump(mode="json"))
    merged = flatten(full.model_dump(mode="json"))
    assert set(merged) == set(base)
    assert set(overlay) <= set(base)
    for key, value in merged.items():
        if key == "profile":
            assert value == "full"
        else:
            assert value == overlay.get(key, base[key]), key


def test_sample_profile_ignores_profiles_folder(tmp_path: Path) -> None:
    path = write_params(tmp_path, profiles=True)
    (tmp_path / "profiles" / "full.yaml").write_text("not: [valid\n", encoding="utf-8")  # never read
    assert load_params(path) == load_params(PARAMS)


NO_CAP = {"content": None, "style": None}


@pytest.mark.parametrize(
    "changes",
    [
        {"fetch.content.source": "streets"},
        {"fetch.style.source": "wikiart"},
        {"fetch.content.source": "folder", "fetch.folder.content_dir": "my/photos"},
        {"fetch.style.source": "folder", "fetch.folder.style_dir": "my/paintings"},
        {"fetch.download.backoff_s": 2},  # an int where a float is expected is fine
        {
            "prepare.split": {"train": 0.6, "val": 0.2, "test": 0.2, "group_by": [], "test_max": NO_CAP}
        },  # sums to 1 within rounding
        {"prepare.split.group_by": ["sequence", "artist"]},
        {"prepare.resize.side_px": 16},  # lower bound inclusive
    ],
)
def test_valid_variants_load(tmp_path: Path, changes: dict[str, Any]) -> None:
    params = load_params(write_params(tmp_path, changes))
    dumped = flatten(params.model_dump(mode="json"))
    for dotted, value in flatten(changes).items():
        assert dumped[dotted] == value


# ----------------------------------------------------------------------------------------- invalid values


SPLIT_SUMS_1_5 = {"train": 0.5, "val": 0.5, "test": 0.5, "group_by": [], "test_max": NO_CAP}
SPLIT_ZERO = {"train": 0.75, "val": 0.25, "test": 0.0, "group_by": [], "test_max": NO_CAP}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({"bogus": 1}, ["unknown key 'bogus'", "allowed", "base", "fetch", "prepare"], id="unknown-top"),
        pytest.param(
            {"fetch.download.extra": 1},
            ["unknown key 'fetch.download.extra'", "allowed", "cache_dir", "retries", "backoff_s", "timeout_s"],
            id="unknown-nested",
        ),
        pytest.param({"prepare.min_side": DELETE}, ["missing key 'prepare.min_side'"], id="missing-key"),
        pytest.param({"base": DELETE}, ["missing key 'base'"], id="missing-section"),
        pytest.param(
            {"prepare.resize.side_px": "256"}, ["prepare.resize.side_px = '256'", "integer"], id="string-for-int"
        ),
        pytest.param({"prepare.resize.side_px": 256.0}, ["prepare.resize.side_px = 256.0", "integer"], id="float-int"),
        pytest.param({"fetch.download.retries": 3.0}, ["fetch.download.retries = 3.0", "integer"], id="float-int-2"),
        pytest.param({"prepare.resize.upscale": 1}, ["prepare.resize.upscale = 1", "boolean"], id="int-for-bool"),
        pytest.param({"base.seed": True}, ["base.seed = True", "integer"], id="bool-for-int"),
        pytest.param(
            {"fetch.download.backoff_s": "1.0"}, ["fetch.download.backoff_s = '1.0'", "number"], id="string-for-float"
        ),
        pytest.param(
            {"prepare.resize.side_px": 3}, ["prepare.resize.side_px = 3", "greater than or equal to 16"], id="too-small"
        ),
        pytest.param({"base.seed": -1}, ["base.seed = -1", "greater than or equal to 0"], id="negative-seed"),
        pytest.param({"prepare.split": SPLIT_SUMS_1_5}, ["prepare.split", "sum to 1", "1.5"], id="split-sum"),
        pytest.param({"prepare.split": SPLIT_ZERO}, ["prepare.split", "> 0", "'test': 0.0"], id="split-zero"),
        pytest.param(
            {"prepare.split.group_by": ["creator"]},
            ["prepare.split.group_by.0 = 'creator'", "'sequence'", "'artist'"],
            id="group-by-unknown",
        ),
        pytest.param(
            {"fetch.streets.page_size": 5000},
            ["fetch.streets.page_size = 5000", "less than or equal to 2000"],
            id="page",
        ),
        pytest.param(
            {"fetch.download.backoff_s": math.nan}, ["fetch.download.backoff_s = nan", "finite"], id="nan-float"
        ),
        pytest.param(
            {"fetch.download.timeout_s": math.inf}, ["fetch.download.timeout_s = inf", "finite"], id="inf-float"
        ),
        pytest.param(
            {"fetch.content.source": "flickr"},
            ["fetch.content.source = 'flickr'", "'sample'", "'folder'", "'streets'"],
            id="unknown-choice",
        ),
        pytest.param(
            {"fetch.content.source": "wikiart"},
            ["fetch.content.source = 'wikiart'", "not allowed"],
            id="wikiart-content",
        ),
        pytest.param(
            {"fetch.style.source": "streets"}, ["fetch.style.source = 'streets'", "not allowed"], id="streets-style"
        ),
        pytest.param(
            {"fetch.wikiart.shards": 8, "fetch.wikiart.max_shards": 4},
            ["fetch.wikiart", "max_shards (4) must be >= shards (8)"],
            id="max-shards-below-shards",
        ),
        pytest.param(
            {"prepare.split.test_max.content": 0},
            ["prepare.split.test_max.content = 0", "greater than or equal to 1"],
            id="cap-0",
        ),
        pytest.param(
            {"fetch.wikiart.shard_order": "random"},
            ["fetch.wikiart.shard_order = 'random'", "'spread'", "'first'"],
            id="unknown-shard-order",
        ),
        pytest.param(
            {"fetch.content.source": "folder", "fetch.folder.content_dir": None},
            ["fetch.content.source = 'folder'", "fetch.folder.content_dir"],
            id="folder-without-dir",
        ),
        pytest.param(
            {"fetch.style.source": "folder", "fetch.folder.style_dir": None},
            ["fetch.style.source = 'folder'", "fetch.folder.style_dir"],
            id="folder-without-style-dir",
        ),
        pytest.param(
            {"fetch.streets.bbox": [4.712, 50.872, 4.695, 50.884]},  # west > east
            ["fetch.streets.bbox = [4.712, 50.872, 4.695, 50.884]", "west < east"],
            id="bbox-east-west",
        ),
        pytest.param(
            {"fetch.streets.bbox": [4.695, 50.884, 4.712, 50.872]},  # south > north
            ["fetch.streets.bbox", "south < north"],
            id="bbox-south-north",
        ),
        pytest.param({"fetch.streets.bbox": [4.695, 50.872, 4.712]}, ["fetch.streets.bbox"], id="bbox-three"),
    ],
)
def test_invalid_values_raise_one_config_error(tmp_path: Path, changes: dict[str, Any], expected: list[str]) -> None:
    path = write_params(tmp_path, changes)

    message = config_error(path)

    assert message.startswith(f"{path}: ")  # names the file
    for text in expected:
        assert text in message, (text, message)


def test_several_problems_are_reported_in_one_error(tmp_path: Path) -> None:
    message = config_error(write_params(tmp_path, {"base.seed": "zero", "prepare.resize.side_px": 3, "typo": 1}))
    assert "base.seed = 'zero'" in message
    assert "prepare.resize.side_px = 3" in message
    assert "unknown key 'typo'" in message


# ----------------------------------------------------------------------------------------- invalid files


def test_invalid_yaml_syntax(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("base:\n  seed: [0, 1\n", encoding="utf-8")
    message = config_error(path)
    assert str(path) in message
    assert "not valid YAML" in message


@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "list"), ("just words\n", "str"), ("", "NoneType")])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    message = config_error(path)
    assert str(path) in message
    assert "mapping" in message
    assert kind in message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    message = config_error(path)
    assert str(path) in message
    assert "not found" in message


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_bytes(b"profile: sample\nbase: \xff\xfe\n")
    assert str(path) in config_error(path)


def test_profile_overlay_with_unknown_key_names_the_overlay(tmp_path: Path) -> None:
    path = write_params(tmp_path, {"profile": "full"}, profiles=True)
    overlay_path = tmp_path / "profiles" / "full.yaml"
    overlay = yaml.safe_load(overlay_path.read_text(encoding="utf-8"))
    overlay["prepare"]["resize"]["size"] = 512  # params.yaml has no prepare.resize.size
    overlay_path.write_text(yaml.safe_dump(overlay), encoding="utf-8")

    message = config_error(path)

    assert str(overlay_path) in message
    assert "prepare.resize.size" in message


def test_profile_overlay_missing(tmp_path: Path) -> None:
    path = write_params(tmp_path, {"profile": "full"})  # no profiles/ folder next to it
    message = config_error(path)
    assert str(tmp_path / "profiles" / "full.yaml") in message
    assert "not found" in message


def test_profile_overlay_values_are_validated(tmp_path: Path) -> None:
    path = write_params(tmp_path, {"profile": "full"}, profiles=True)
    overlay_path = tmp_path / "profiles" / "full.yaml"
    overlay = yaml.safe_load(overlay_path.read_text(encoding="utf-8"))
    overlay["prepare"]["resize"]["side_px"] = 3
    overlay_path.write_text(yaml.safe_dump(overlay), encoding="utf-8")
    message = config_error(path)
    assert "full.yaml" in message
    assert "prepare.resize.side_px = 3" in message


def test_unknown_profile_name(tmp_path: Path) -> None:
    path = write_params(tmp_path, {"profile": "huge"}, profiles=True)
    message = config_error(path)
    assert str(path) in message
    assert "'huge'" in message
    assert "'sample'" in message
    assert "'full'" in message


# ----------------------------------------------------------------------------------------- YAML 1.2 floats


def _with_raw_values(tmp_path: Path, raw: dict[str, str]) -> Path:
    """params.yaml with the given dotted keys set to literal YAML text (placeholders replaced after dumping)."""
    path = write_params(tmp_path, {key: f"__RAW_{i}__" for i, key in enumerate(raw)})
    text = path.read_text(encoding="utf-8")
    for i, literal in enumerate(raw.values()):
        assert text.count(f"__RAW_{i}__") == 1
        text = text.replace(f"__RAW_{i}__", literal)
    path.write_text(text, encoding="utf-8")
    return path


def test_yaml_1_2_exponent_floats_are_floats(tmp_path: Path) -> None:
    assert isinstance(yaml.safe_load("x: 1e-4")["x"], str)  # PyYAML's YAML 1.1 rules alone: a string
    path = _with_raw_values(
        tmp_path, {"fetch.download.backoff_s": "1e-4", "fetch.download.timeout_s": "6E+1", "prepare.split.val": "25e-2"}
    )

    params = load_params(path)

    assert params.fetch.download.backoff_s == pytest.approx(1e-4)
    assert isinstance(params.fetch.download.backoff_s, float)
    assert params.fetch.download.timeout_s == 60.0
    assert params.prepare.split.val == 0.25


def test_yaml_nan_literal_is_rejected(tmp_path: Path) -> None:
    path = _with_raw_values(tmp_path, {"fetch.download.backoff_s": ".nan"})
    message = config_error(path)
    assert "fetch.download.backoff_s = nan" in message


def test_quoted_exponent_string_stays_a_string(tmp_path: Path) -> None:
    path = _with_raw_values(tmp_path, {"fetch.wikiart.revision": '"1e5"'})
    assert load_params(path).fetch.wikiart.revision == "1e5"


# ----------------------------------------------------------------------------------------- dump_params


def test_dump_params_reloads_equal(tmp_path: Path) -> None:
    params = load_params(PARAMS)
    path = tmp_path / "effective.yaml"
    path.write_text(dump_params(params), encoding="utf-8")
    assert load_params(path) == params


def test_dump_params_of_full_profile_reloads_equal(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    full = load_params(write_params(src, {"profile": "full"}, profiles=True))
    dst = tmp_path / "dst"
    shutil.copytree(src / "profiles", dst / "profiles")  # re-applying the overlay to merged values is a no-op
    (dst / "params.yaml").write_text(dump_params(full), encoding="utf-8")

    reloaded = load_params(dst / "params.yaml")

    assert reloaded == full
    assert reloaded.prepare.resize.side_px == 512


def test_dump_params_quotes_strings_that_look_like_floats(tmp_path: Path) -> None:
    # "1e5" is a string in YAML 1.1 (PyYAML's dumper leaves it plain) but a float to the YAML 1.2 loader.
    path = _with_raw_values(tmp_path, {"fetch.wikiart.revision": '"1e5"', "fetch.download.backoff_s": "1e-4"})
    params = load_params(path)
    out = tmp_path / "effective.yaml"
    out.write_text(dump_params(params), encoding="utf-8")

    reloaded = load_params(out)

    assert reloaded == params
    assert reloaded.fetch.wikiart.revision == "1e5"
    assert reloaded.fetch.download.backoff_s == pytest.approx(1e-4)


def test_dump_params_keeps_only_the_declared_sections() -> None:
    params = load_params(PARAMS)
    dumped = yaml.safe_load(dump_params(params, ("profile", "tune.use_tuned", "methods.adain")))
    assert dumped == {
        "profile": params.profile,
        "tune": {"use_tuned": params.tune.use_tuned},
        "methods": {"adain": params.methods.adain.model_dump(mode="json")},
    }
    changed = params.model_copy(update={"evaluate": params.evaluate.model_copy(update={"bootstrap": 123})})
    # a section the stage does not declare does not change what it writes
    assert dump_params(changed, ("profile", "fetch")) == dump_params(params, ("profile", "fetch"))


def test_a_trained_methods_train_and_tune_stages_write_its_train_section_only() -> None:
    params = load_params(PARAMS)
    alpha = effective_params(params, "adain", changes={"alpha": 0.5})
    for stage in ("train", "tune"):
        assert dump_declared(alpha, stage, "adain") == dump_declared(params, stage, "adain")
    assert dump_declared(alpha, "stylize", "adain") != dump_declared(params, "stylize", "adain")
    weight = effective_params(params, "adain", changes={"train": {"style_weight": 3.0}})
    assert dump_declared(weight, "train", "adain") != dump_declared(params, "train", "adain")


def test_each_method_picks_its_encoder_normalisation(tmp_path: Path) -> None:
    """AdaIN and the contrastive method on the per-filter-normalised VGG (their references' vgg_normalised), Gatys on
    the raw one (neural-style's loss scales) unless it selects per_filter; one shared weights/pool section."""
    params = load_params(PARAMS)
    assert {m: encoder_settings(params, m)["normalise"] for m in ("gatys", "adain", "contrastive")} == {
        "gatys": "none",
        "adain": "per_filter",
        "contrastive": "per_filter",
    }
    assert encoder_settings(params, "adain")["weights"] == params.encoder.weights
    changed = load_params(
        write_params(tmp_path, {"methods.gatys.encoder_normalise": "per_filter", "methods.adain.train.amp": True})
    )
    assert encoder_settings(changed, "gatys")["normalise"] == "per_filter"
    (tmp_path / "bad").mkdir()
    bad = write_params(
        tmp_path / "bad", {"methods.adain.train.encoder_normalise": "per_layer", "methods.contrastive.amp": "yes"}
    )
    message = config_error(bad)
    assert "methods.adain.train.encoder_normalise" in message
    assert "methods.contrastive.amp" in message
