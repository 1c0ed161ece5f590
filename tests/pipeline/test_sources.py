"""The fetch sources against real files and a real HTTP server on 127.0.0.1: Mapillary street photos, local
folders, and the fetch stage end to end (WikiArt: tests/pipeline/test_wikiart.py)."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import logging
import re
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlencode

import pytest
from PIL import Image

from pipeline import fetch, prepare
from pipeline.config import DownloadSection, Params, StreetsSource, load_params
from pipeline.download import retry_policy
from pipeline.sources import FIELDS, FetchError, read_manifest, write_manifest
from pipeline.sources.local import fetch_folder, fetch_sample
from pipeline.sources.streets import PUBLIC_URL, fetch_streets, search


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def encode_image(size: tuple[int, int], colour: tuple[int, int, int], fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def base_params(repo_root: Path) -> Params:
    return load_params(repo_root / "params.yaml")


@pytest.fixture
def download_cfg(base_params: Params, tmp_path: Path) -> DownloadSection:
    return base_params.fetch.download.model_copy(
        update={"cache_dir": str(tmp_path / "cache"), "retries": 1, "backoff_s": 0.0, "timeout_s": 5.0}
    )


def with_(cfg, **changes):
    return cfg.model_copy(update=changes)


# ----------------------------------------------------------------------------------------- streets

TOKEN = "MLY|1234|s3cr3t-t0ken"
TOKEN_ENV = "NST_TEST_MAPILLARY_TOKEN"
BBOX = [4.695, 50.872, 4.712, 50.884]
DRIVES, FRAMES = 6, 5  # capture drives (sequences) of consecutive perspective frames


def street_items() -> list[dict]:
    """What Mapillary holds in and around BBOX: six drives of five frames each, three 360-degree or fisheye captures
    (to be dropped), a frame without a thumbnail, and frames just outside the box (never returned)."""
    west, south, east, north = BBOX
    dx, dy = east - west, north - south
    items = []
    for s in range(DRIVES):
        for f in range(FRAMES):  # each drive runs east along its own street, a few metres between frames
            items.append(
                {
                    "id": f"10{s}{f}",
                    "camera_type": "perspective",
                    "sequence": f"seq{s}",
                    "at": (west + (0.1 + 0.18 * f) * dx, south + (0.08 + 0.16 * s) * dy),
                    "creator": {"username": f"driver{s}", "id": f"9{s}"},
                }
            )
    items += [
        {"id": "2001", "camera_type": "equirectangular", "sequence": "pano0", "at": (west + dx / 3, south + dy / 3)},
        {"id": "2002", "camera_type": "spherical", "sequence": "pano0", "at": (west + 0.6 * dx, south + 0.6 * dy)},
        {"id": "2003", "camera_type": "fisheye", "sequence": "fish0", "at": (west + 0.7 * dx, south + 0.2 * dy)},
        {
            "id": "3001",
            "camera_type": "perspective",
            "sequence": "seq9",
            "at": (west + 0.5 * dx, south + 0.9 * dy),
            "thumb": False,
        },  # no thumbnail (still processing)
        {"id": "4001", "camera_type": "perspective", "sequence": "far", "at": (east + 0.01, north + 0.01)},
        {"id": "4002", "camera_type": "perspective", "sequence": "far", "at": (west - 0.01, south)},
    ]
    return items


def serve_mapillary(server, items: list[dict], *, paging: bool = False, expired: dict[str, str] | None = None):
    """A Graph API v4 images search over ``items`` as the service behaves: only the requested fields; the images in
    the bbox in an order of its own, cut at ``limit``; with ``paging``, a ``paging.next`` link (carrying an
    access_token, as Graph API links do) instead of the cut. ``/<id>?fields=...`` answers one image. Thumbnail links
    are signed (``?sig=v1``); ``expired`` maps an id to "once" (its v1 link answers 403; the API hands out a working
    v2) or "always" (every link answers 410)."""
    expired = expired or {}
    photos = {
        it["id"]: encode_image((96 + int(it["id"]) % 7, 72), (int(it["id"]) % 250, 80, 160), "JPEG") for it in items
    }

    def public(item: dict, fields: list[str], version: str) -> dict:
        full = {**item, "thumb_1024_url": f"{server.url}/img/{item['id']}.jpg?sig={version}"}
        if item.get("thumb") is False:
            del full["thumb_1024_url"]
        return {k: full[k] for k in ["id", *fields] if k in full}

    def images(req):
        fields = req.query["fields"][0].split(",")
        limit = int(req.query["limit"][0])
        west, south, east, north = (float(v) for v in req.query["bbox"][0].split(","))
        inside = [it for it in items if west <= it["at"][0] <= east and south <= it["at"][1] <= north]
        inside.sort(key=lambda it: it["id"][::-1])  # the service's own order, not the ids'
        start = int(req.query.get("after", ["0"])[0])
        page = inside[start : start + limit] if paging else inside[:limit]
        answer: dict = {"data": [public(it, fields, "v1") for it in page]}
        if paging and start + limit < len(inside):
            query = {k: v[0] for k, v in req.query.items()} | {"after": start + limit, "access_token": "MLY|leaked"}
            answer["paging"] = {"next": f"{server.url}/images?{urlencode(query)}"}
        return server.json_reply(answer)

    def entity(item):
        return lambda req: server.json_reply(public(item, req.query["fields"][0].split(","), "v2"))

    def thumbnail(item):
        def route(req):
            state = expired.get(item["id"])
            if state == "always":
                return server.Reply(410, b"URL signature expired")
            if state == "once" and req.query.get("sig") == ["v1"]:
                return server.Reply(403, b"URL signature expired")
            return server.bytes_reply(photos[item["id"]], req)

        return route

    server.route("/images", images)
    for item in items:
        server.route(f"/{item['id']}", entity(item))
        server.route(f"/img/{item['id']}.jpg", thumbnail(item))
    by_id = {it["id"]: it for it in items}
    return SimpleNamespace(server=server, photos=photos, by_id=by_id)


@pytest.fixture
def streets_cfg(base_params: Params, local_server) -> StreetsSource:
    return base_params.fetch.streets.model_copy(
        update={
            "api_url": local_server.url,
            "token_env": TOKEN_ENV,
            "bbox": BBOX,
            "image_field": "thumb_1024_url",
            "photos": 8,
            "page_size": 2000,
            "max_requests": 50,
            "per_sequence": 2,
            "seed": 0,
        }
    )


@pytest.fixture
def mapillary(local_server, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    return serve_mapillary(local_server, street_items())


def chosen_ids(records) -> list[str]:
    return sorted(r.id.removeprefix("mapillary-") for r in records)


def test_streets_sends_the_token_in_the_header_only_and_credits_creators(
    tmp_path, mapillary, streets_cfg, download_cfg
):
    raw = tmp_path / "raw"
    records = fetch_streets(streets_cfg, download_cfg, raw, "content")

    [api] = mapillary.server.requests("/images")  # 34 images in the box, under page_size: one request
    assert api.headers["authorization"] == f"OAuth {TOKEN}"
    assert api.query["fields"] == ["id,thumb_1024_url,camera_type,sequence,creator"]
    assert [float(v) for v in api.query["bbox"][0].split(",")] == BBOX
    assert api.query["limit"] == ["2000"]
    image_requests = [r for r in mapillary.server.requests() if r.path.startswith("/img/")]
    assert len(image_requests) == len(records) == streets_cfg.photos
    assert all("authorization" not in r.headers for r in image_requests)  # the token stays with the API
    assert all(TOKEN not in r.path and TOKEN not in json.dumps(r.query) for r in mapillary.server.requests())

    for rec in records:
        item = mapillary.by_id[rec.id.removeprefix("mapillary-")]
        assert rec.role == "content"
        assert rec.source == "streets"
        assert rec.url == PUBLIC_URL.format(id=item["id"])
        assert rec.license == f"{streets_cfg.license}; photo by {item['creator']['username']}"
        assert rec.sequence == item["sequence"]
        assert (raw / rec.file).read_bytes() == mapillary.photos[item["id"]]
        assert rec.sha256 == sha256(mapillary.photos[item["id"]])

    manifest = tmp_path / "manifest.csv"
    write_manifest(records, manifest)
    assert TOKEN not in manifest.read_text(encoding="utf-8")
    assert "s3cr3t" not in manifest.read_text(encoding="utf-8")
    assert all(TOKEN not in str(v) for rec in records for v in dataclasses.astuple(rec))


def test_streets_drops_panoramas_and_caps_each_sequence(tmp_path, mapillary, streets_cfg, download_cfg):
    cfg = with_(streets_cfg, photos=50)  # more than there are: every drive gives per_sequence frames
    records = fetch_streets(cfg, download_cfg, tmp_path / "raw", "content")
    items = [mapillary.by_id[i] for i in chosen_ids(records)]
    assert {it["camera_type"] for it in items} == {"perspective"}  # no equirectangular, spherical or fisheye
    assert Counter(it["sequence"] for it in items) == {f"seq{s}": 2 for s in range(DRIVES)}
    assert not any(it["id"].startswith(("3", "4")) for it in items)  # no thumbnail / outside the bbox


def test_streets_choice_is_seeded_and_ignores_the_answer_order(
    tmp_path, local_server, streets_cfg, download_cfg, monkeypatch
):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    serve_mapillary(local_server, street_items())
    first = chosen_ids(fetch_streets(streets_cfg, download_cfg, tmp_path / "a", "content"))
    assert chosen_ids(fetch_streets(streets_cfg, download_cfg, tmp_path / "b", "content")) == first
    serve_mapillary(local_server, list(reversed(street_items())), paging=True)  # the same images, served otherwise
    cfg = with_(streets_cfg, page_size=7)
    assert chosen_ids(fetch_streets(cfg, download_cfg, tmp_path / "c", "content")) == first
    others = {
        tuple(chosen_ids(fetch_streets(with_(streets_cfg, seed=s), download_cfg, tmp_path / f"s{s}", "content")))
        for s in range(1, 5)
    }
    assert others - {tuple(first)}  # the seed matters


def test_streets_splits_a_full_answer_into_quadrants(mapillary, streets_cfg, download_cfg):
    cfg = with_(streets_cfg, page_size=10)  # the box holds 34: the first answer is cut at 10
    found = search(cfg, {"Authorization": f"OAuth {TOKEN}"}, retry_policy(download_cfg))
    inside = {i for i, it in mapillary.by_id.items() if not i.startswith("4")}
    assert set(found) == inside  # every image in the box, none outside
    boxes = [[float(v) for v in r.query["bbox"][0].split(",")] for r in mapillary.server.requests("/images")]
    assert boxes[0] == BBOX
    assert len(boxes) > 1
    assert all(BBOX[0] <= b[0] < b[2] <= BBOX[2] and BBOX[1] <= b[1] < b[3] <= BBOX[3] for b in boxes)


def test_streets_follows_paging_links_without_the_token_in_them(local_server, streets_cfg, download_cfg, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    fake = serve_mapillary(local_server, street_items(), paging=True)
    found = search(with_(streets_cfg, page_size=10), {"Authorization": f"OAuth {TOKEN}"}, retry_policy(download_cfg))
    assert set(found) == {i for i in fake.by_id if not i.startswith("4")}
    requests = local_server.requests("/images")
    assert [r.query.get("after") for r in requests] == [None, ["10"], ["20"], ["30"]]
    assert all("access_token" not in r.query and r.headers["authorization"] == f"OAuth {TOKEN}" for r in requests)


def test_streets_max_requests_bounds_the_search(mapillary, streets_cfg, download_cfg, caplog):
    cfg = with_(streets_cfg, page_size=5, max_requests=3)
    found = search(cfg, {"Authorization": f"OAuth {TOKEN}"}, retry_policy(download_cfg))
    assert mapillary.server.count("/images") == 3
    assert 5 <= len(found) <= 15
    assert "fetch.streets.max_requests = 3" in caplog.text


def test_an_expired_thumbnail_link_is_refreshed_once(
    tmp_path, local_server, streets_cfg, download_cfg, monkeypatch, caplog
):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    plain = serve_mapillary(local_server, street_items())
    order = chosen_ids(fetch_streets(streets_cfg, download_cfg, tmp_path / "a", "content"))
    stale, gone = order[0], order[1]
    seen = len(local_server.requests(f"/img/{stale}.jpg"))
    fake = serve_mapillary(local_server, street_items(), expired={stale: "once", gone: "always"})
    fresh_cache = download_cfg.model_copy(update={"cache_dir": str(tmp_path / "fresh-cache")})
    records = fetch_streets(streets_cfg, fresh_cache, tmp_path / "b", "content")
    ids = chosen_ids(records)
    assert len(ids) == streets_cfg.photos
    assert stale in ids  # downloaded from the fresh link
    assert gone not in ids  # still expired after one refresh: skipped, the next candidate taken instead
    assert (tmp_path / "b" / "content" / f"mapillary-{stale}.jpg").read_bytes() == plain.photos[stale]
    assert [r.query["sig"] for r in local_server.requests(f"/img/{stale}.jpg")[seen:]] == [["v1"], ["v2"]]
    assert local_server.count(f"/{stale}") == 1  # the API was asked once for the fresh link
    assert local_server.count(f"/{gone}") == 1
    assert local_server.requests(f"/{stale}")[0].headers["authorization"] == f"OAuth {TOKEN}"
    assert f"image {gone} skipped" in caplog.text
    assert fake.by_id[stale]["camera_type"] == "perspective"


@pytest.mark.parametrize("value", [None, "   "])
def test_streets_without_a_token_names_the_variable(tmp_path, mapillary, streets_cfg, download_cfg, monkeypatch, value):
    if value is None:
        monkeypatch.delenv(TOKEN_ENV, raising=False)
    else:
        monkeypatch.setenv(TOKEN_ENV, value)
    with pytest.raises(FetchError, match=TOKEN_ENV):
        fetch_streets(streets_cfg, download_cfg, tmp_path / "raw", "content")
    assert mapillary.server.count() == 0


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


def test_prepare_keeps_each_sequence_in_one_split(tmp_path, sample_params, mapillary, streets_cfg, download_cfg):
    fetch_cfg = sample_params.fetch.model_copy(
        update={
            "content": sample_params.fetch.content.model_copy(update={"source": "streets"}),
            "streets": with_(streets_cfg, photos=12),  # 2 frames of each of the 6 drives
            "download": download_cfg,
        }
    )
    params = sample_params.model_copy(update={"fetch": fetch_cfg})
    fetch.run(params, tmp_path / "raw")
    sequence = {r.id: r.sequence for r in read_manifest(tmp_path / "raw" / "manifest.csv") if r.role == "content"}
    assert Counter(sequence.values()) == {f"seq{s}": 2 for s in range(DRIVES)}

    def splits_per_sequence(p) -> dict[str, set[str]]:
        prepare.run(p, tmp_path / "raw", tmp_path / "prepared")
        with (tmp_path / "prepared" / "manifest.csv").open(newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.DictReader(fh) if r["role"] == "content"]
        assert len(rows) == 12
        assert all(r["status"] == "ok" for r in rows)
        out: dict[str, set[str]] = {}
        for r in rows:
            out.setdefault(sequence[r["id"]], set()).add(r["split"])
        return out

    grouped = splits_per_sequence(params)
    assert all(len(s) == 1 for s in grouped.values()), grouped  # no drive in two splits
    assert set().union(*grouped.values()) == {"train", "val", "test"}
    # The same photos split image by image would put a drive's frames on both sides (the test can fail):
    split = params.prepare.split.model_copy(update={"group_by": []})
    ungrouped = splits_per_sequence(
        params.model_copy(update={"prepare": params.prepare.model_copy(update={"split": split})})
    )
    assert any(len(s) > 1 for s in ungrouped.values())
