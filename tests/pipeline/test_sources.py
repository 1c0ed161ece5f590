"""The local fetch sources against real files, and the fetch stage end to end (WikiArt:
tests/pipeline/test_wikiart.py; Mapillary street photos, and prepare's sequence-grouped split of them:
tests/pipeline/test_streets.py)."""

from __future__ import annotations

import csv
import hashlib
import logging
import re
from collections import Counter
from pathlib import Path

import pytest

from pipeline.config import Params, load_params
from pipeline.sources import FIELDS, FetchError, read_manifest
from pipeline.sources.local import fetch_folder, fetch_sample
from pipeline.stages import fetch


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def base_params(repo_root: Path) -> Params:
    return load_params(repo_root / "params.yaml")


# ----------------------------------------------------------------------------------------- local folders


def test_fetch_sample_reads_licences_from_attribution(tmp_path, make_image):
    sample = tmp_path / "sample"
    make_image("a.png", seed=1, folder=sample / "content")
    make_image("b.jpg", size=(64, 48), seed=2, folder=sample / "content")
    (sample / "content" / "ATTRIBUTION.md").write_text(
        "# Sources\n\n- a.png: painted by the test, 2024; licence: CC0-1.0\n", encoding="utf-8"
    )
    raw = tmp_path / "raw"
    records = fetch_sample(str(sample), raw, "content")
    by_id = {r.id: r for r in records}
    assert sorted(by_id) == ["a", "b"]
    assert by_id["a"].license == "CC0-1.0"
    assert by_id["b"].license.startswith("unknown")
    assert by_id["b"].file == "content/b.jpg"
    assert (by_id["b"].width, by_id["b"].height) == (64, 48)
    for rec in records:
        assert rec.source == "sample"
        assert (raw / rec.file).read_bytes() == (sample / "content" / Path(rec.file).name).read_bytes()
        assert rec.sha256 == sha256((raw / rec.file).read_bytes())


def test_missing_attribution_lines_are_reported_once_per_folder(tmp_path, make_image, caplog):
    sample = tmp_path / "sample"
    names = [f"img{i}.png" for i in range(8)]
    for i, name in enumerate(names):
        make_image(name, size=(20, 16), seed=i, folder=sample / "style")
    (sample / "style" / "ATTRIBUTION.md").write_text("- img3.png: by the test; licence: CC0-1.0\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="pipeline.sources"):
        records = fetch_sample(str(sample), tmp_path / "raw", "style")
    [warning] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    message = warning.getMessage()
    assert message.startswith(f"7 of 8 images have no line in {sample / 'style' / 'ATTRIBUTION.md'}: ")
    assert "img0.png, img1.png, img2.png, img4.png, img5.png and 2 more" in message  # the first five, then a count
    assert "img6.png" not in message
    assert "'unknown (not in ATTRIBUTION.md)'" in message
    by_file = {Path(r.file).name: r.license for r in records}
    assert by_file.pop("img3.png") == "CC0-1.0"
    assert set(by_file.values()) == {"unknown (not in ATTRIBUTION.md)"}  # still recorded in the manifest


def test_a_user_folder_without_attribution_warns_once(tmp_path, make_image, caplog):
    mine = tmp_path / "mine"
    for i in range(3):
        make_image(f"p{i}.jpg", size=(20, 16), seed=i, folder=mine)
    with caplog.at_level(logging.WARNING, logger="pipeline.sources"):
        records = fetch_folder(str(mine), tmp_path / "raw", "content", "my licence")
    [warning] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    expected = f"3 of 3 images have no line in {mine / 'ATTRIBUTION.md'} (there is no such file): p0.jpg, p1.jpg, "
    assert warning.getMessage() == expected + "p2.jpg; their licence is recorded as 'my licence'"
    assert {r.license for r in records} == {"my licence"}


def test_fetch_sample_empty_folder(tmp_path):
    folder = tmp_path / "sample" / "style"
    folder.mkdir(parents=True)
    (folder / "ATTRIBUTION.md").write_text("nothing here\n", encoding="utf-8")
    with pytest.raises(FetchError, match="no image files") as info:
        fetch_sample(str(tmp_path / "sample"), tmp_path / "raw", "style")
    assert str(folder) in str(info.value)
    assert "fetch.sample.dir" in str(info.value)


def test_fetch_sample_missing_folder(tmp_path):
    with pytest.raises(FetchError, match="does not exist") as info:
        fetch_sample(str(tmp_path / "nowhere"), tmp_path / "raw", "content")
    assert str(tmp_path / "nowhere" / "content") in str(info.value)


def test_fetch_folder_errors_name_the_key(tmp_path):
    empty = tmp_path / "mine"
    empty.mkdir()
    with pytest.raises(FetchError, match=re.escape(f"fetch.folder.style_dir: {empty} holds no image files")):
        fetch_folder(str(empty), tmp_path / "raw", "style", "user-supplied")
    with pytest.raises(FetchError, match=re.escape("fetch.folder.content_dir")) as info:
        fetch_folder(str(tmp_path / "absent"), tmp_path / "raw", "content", "user-supplied")
    assert str(tmp_path / "absent") in str(info.value)


def test_fetch_folder_same_stem_gets_distinct_ids(tmp_path, make_image):
    mine = tmp_path / "mine"
    make_image("a.jpg", seed=1, folder=mine)
    make_image("a.png", seed=2, folder=mine)
    make_image("a b!.png", seed=3, folder=mine)
    raw = tmp_path / "raw"
    records = fetch_folder(str(mine), raw, "content", "my licence")
    assert len({r.id for r in records}) == 3
    assert len({r.file for r in records}) == 3
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", r.id) for r in records)
    assert all(r.license == "my licence" and r.source == "folder" for r in records)
    for rec in records:
        src = Path(rec.url)
        assert (raw / rec.file).read_bytes() == src.read_bytes()
    assert len({r.sha256 for r in records}) == 3


# ----------------------------------------------------------------------------------------- fetch stage


@pytest.fixture
def sample_params(base_params: Params, sample_copy: Path) -> Params:
    sample = base_params.fetch.sample.model_copy(update={"dir": str(sample_copy)})
    fetch_cfg = base_params.fetch.model_copy(
        update={
            "sample": sample,
            "content": base_params.fetch.content.model_copy(update={"source": "sample"}),
            "style": base_params.fetch.style.model_copy(update={"source": "sample"}),
        }
    )
    return base_params.model_copy(update={"fetch": fetch_cfg})


def tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256(p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()}


def test_fetch_run_writes_the_manifest_and_keeps_it_on_failure(tmp_path, sample_params, sample_copy):
    out = tmp_path / "data" / "raw"
    records = fetch.run(sample_params, out)

    with (out / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert tuple(reader.fieldnames) == FIELDS
    n_content = len(list((sample_copy / "content").glob("*.png")))
    n_style = len(list((sample_copy / "style").glob("*.png")))
    assert Counter(r["role"] for r in rows) == {"content": n_content, "style": n_style}
    assert read_manifest(out / "manifest.csv") == records
    assert all((out / r["file"]).is_file() and r["license"] == "CC0-1.0" for r in rows)
    assert (out / "effective_params.yaml").is_file()
    before = tree(out)

    for image in (sample_copy / "style").glob("*.png"):
        image.unlink()
    with pytest.raises(FetchError, match="no image files"):
        fetch.run(sample_params, out)
    assert tree(out) == before  # the previous output survives a failed run untouched
    assert sorted(p.name for p in out.parent.iterdir()) == ["raw"]  # no temporary folders left behind
