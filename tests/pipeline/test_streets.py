"""The streets source, the real fetch code against the loopback Mapillary Graph API of tests/fakes/mapillary.py: the
token in the header only, the search split on a full answer and on a box that times out or answers 5xx, the budget,
paging links, the filters, expired thumbnail links, the API's refusals (401 / 400), 429, and prepare's sequence split.

Every test runs in seconds: the client's timeout is 0.5 s where a box stalls (the fake holds it 2 s), retries 1."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import re
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from pipeline.config import DownloadSection, Params, StreetsSource, load_params
from pipeline.download import retry_policy
from pipeline.sources import FetchError, read_manifest, write_manifest
from pipeline.sources.streets import MIN_BOX_DEG, PUBLIC_URL, fetch_streets, search
from pipeline.stages import fetch, prepare
from tests.fakes.mapillary import LEUVEN, FakeMapillary, Photo, street_scene

pytestmark = pytest.mark.timeout(90)

TOKEN = "MLY|1234|s3cr3t-t0ken"
TOKEN_ENV = "NST_TEST_MAPILLARY_TOKEN"
BBOX = list(LEUVEN)
DRIVES, FRAMES = 6, 5  # capture drives (sequences) of consecutive perspective frames
HEADERS = {"Authorization": f"OAuth {TOKEN}"}


def small_scene() -> list[Photo]:
    """Six drives of five perspective frames each inside BBOX, three 360-degree or fisheye captures (to be dropped), a
    frame still processing (no thumbnail), and two frames just outside the box (never returned)."""
    west, south, east, north = BBOX
    dx, dy = east - west, north - south
    photos = [
        Photo(f"10{s}{f}", west + (0.1 + 0.18 * f) * dx, south + (0.08 + 0.16 * s) * dy, f"seq{s}", f"driver{s}", f)
        for s in range(DRIVES)
        for f in range(FRAMES)
    ]  # each drive runs east along its own street
    return [
        *photos,
        Photo("2001", west + dx / 3, south + dy / 3, "pano0", "p", 0, "equirectangular"),
        Photo("2002", west + 0.6 * dx, south + 0.6 * dy, "pano0", "p", 1, "spherical"),
        Photo("2003", west + 0.7 * dx, south + 0.2 * dy, "fish0", "c", 0, "fisheye"),
        Photo("3001", west + 0.5 * dx, south + 0.9 * dy, "seq9", "late", 0, processed=False),
        Photo("4001", east + 0.01, north + 0.01, "far", "x", 0),
        Photo("4002", west - 0.01, south, "far", "x", 1),
    ]


INSIDE = {p.id for p in small_scene() if not p.id.startswith("4")}


def quiet(photos: list[Photo] | None = None, **changes) -> FakeMapillary:
    """The fake with every trouble switched off unless asked for: no dense box, no 429, no expired links."""
    settings = {"dense_box": None, "rate_limit_at": None, "stale_every": 0, "pages": 1, "stall_s": 2.0}
    return FakeMapillary(small_scene() if photos is None else photos, token=TOKEN, **{**settings, **changes})


@pytest.fixture
def serve(monkeypatch):
    """Start fakes (``serve(fake)``); each is stopped after the test. The token is in TOKEN_ENV."""
    for var in ("NO_PROXY", "no_proxy"):  # never route 127.0.0.1 / localhost through a proxy from the environment
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    started: list[FakeMapillary] = []

    def start(fake: FakeMapillary) -> FakeMapillary:
        started.append(fake.start())
        return fake

    yield start
    for fake in started:
        fake.stop()


@pytest.fixture
def download_cfg(base_params: Params, tmp_path: Path) -> DownloadSection:
    return base_params.fetch.download.model_copy(
        update={"cache_dir": str(tmp_path / "cache"), "retries": 1, "backoff_s": 0.0, "timeout_s": 0.5}
    )


@pytest.fixture
def streets(base_params: Params):
    """``streets(fake, **changes)``: fetch.streets pointed at ``fake``, small sizes."""

    def make(fake: FakeMapillary, **changes) -> StreetsSource:
        settings = {
            "api_url": fake.url,
            "token_env": TOKEN_ENV,
            "bbox": BBOX,
            "image_field": "thumb_1024_url",
            "photos": 8,
            "page_size": 2000,
            "max_requests": 50,
            "per_sequence": 2,
            "seed": 0,
        }
        return base_params.fetch.streets.model_copy(update={**settings, **changes})

    return make


def chosen_ids(records) -> list[str]:
    return sorted(r.id.removeprefix("mapillary-") for r in records)


def fetched(cfg, download_cfg, folder: Path) -> list[str]:
    return chosen_ids(fetch_streets(cfg, download_cfg, folder, "content"))


# ----------------------------------------------------------------------------------------- what is sent and kept


def test_streets_sends_the_token_in_the_header_only_and_credits_creators(tmp_path, serve, streets, download_cfg):
    api = serve(quiet())
    cfg = streets(api)
    raw = tmp_path / "raw"
    records = fetch_streets(cfg, download_cfg, raw, "content")

    [search_request] = api.searches()  # 34 images in the box, under page_size: one request
    assert search_request.headers["authorization"] == f"OAuth {TOKEN}"
    assert search_request.query["fields"] == ["id,thumb_1024_url,camera_type,sequence,creator"]
    assert [float(v) for v in search_request.query["bbox"][0].split(",")] == BBOX
    assert search_request.query["limit"] == ["2000"]
    thumbs = api.thumbs()
    assert len(thumbs) == len(records) == cfg.photos
    assert all("authorization" not in r.headers for r in thumbs)  # the token stays with the API
    assert all(TOKEN not in r.path and TOKEN not in json.dumps(r.query) for r in api.requests)

    for rec in records:
        photo = api.photo(rec.id.removeprefix("mapillary-"))
        assert rec.role == "content"
        assert rec.source == "streets"
        assert rec.url == PUBLIC_URL.format(id=photo.id)
        assert rec.license == f"{cfg.license}; photo by {photo.creator}"
        assert rec.sequence == photo.sequence
        assert (raw / rec.file).read_bytes() == api.jpeg(photo.id)
        assert rec.sha256 == hashlib.sha256(api.jpeg(photo.id)).hexdigest()
        assert (rec.width, rec.height) == api.thumb_size

    manifest = tmp_path / "manifest.csv"
    write_manifest(records, manifest)
    assert "s3cr3t" not in manifest.read_text(encoding="utf-8")
    assert all(TOKEN not in str(v) for rec in records for v in dataclasses.astuple(rec))


def test_streets_drops_panoramas_and_fisheye_and_caps_each_sequence(tmp_path, serve, streets, download_cfg, caplog):
    api = serve(quiet())
    caplog.set_level(logging.INFO, logger="pipeline.sources.streets")
    records = fetch_streets(streets(api, photos=50), download_cfg, tmp_path / "raw", "content")  # more than there are
    photos = [api.photo(i) for i in chosen_ids(records)]
    assert {p.camera_type for p in photos} == {"perspective"}  # no equirectangular, spherical or fisheye
    assert Counter(p.sequence for p in photos) == {f"seq{s}": 2 for s in range(DRIVES)}  # per_sequence = 2 of 5
    assert not any(p.id.startswith(("3", "4")) for p in photos)  # no thumbnail yet / outside the bbox
    expected = "1 (camera_type equirectangular), 1 (camera_type fisheye), 1 (camera_type spherical), 1 (no thumbnail)"
    assert f"streets: dropped {expected}" in caplog.text


def test_streets_choice_is_seeded_and_ignores_the_answer_order(tmp_path, serve, streets, download_cfg):
    api = serve(quiet())
    first = fetched(streets(api), download_cfg, tmp_path / "a")
    assert fetched(streets(api), download_cfg, tmp_path / "b") == first
    paged = serve(quiet(list(reversed(small_scene())), pages=10))  # the same images, in pages of 7
    assert fetched(streets(paged, page_size=7), download_cfg, tmp_path / "c") == first
    assert len(paged.searches()) == 5  # 34 images: 7 + 7 + 7 + 7 + 6
    others = {tuple(fetched(streets(api, seed=s), download_cfg, tmp_path / f"s{s}")) for s in range(1, 5)}
    assert others - {tuple(first)}  # the seed matters


# ----------------------------------------------------------------------------------------- search: split, paging


def boxes_of(api: FakeMapillary) -> list[tuple[float, ...]]:
    return [r.bbox for r in api.searches()]


def test_streets_splits_a_full_answer_into_quadrants(serve, streets, download_cfg):
    api = serve(quiet())  # pages = 1: an answer is cut at `limit`, with no paging link
    found = search(streets(api, page_size=10), HEADERS, retry_policy(download_cfg))
    assert set(found) == INSIDE  # every image in the box, none outside
    boxes = boxes_of(api)
    assert boxes[0] == tuple(BBOX)
    assert len(boxes) > 1
    assert all(BBOX[0] <= b[0] < b[2] <= BBOX[2] and BBOX[1] <= b[1] < b[3] <= BBOX[3] for b in boxes)
    full = {b for b in boxes if len(api.inside(b)) >= 10}  # the boxes whose answer was cut at 10
    assert all(any(b in _quadrants(parent) for parent in full) for b in boxes[1:])  # only those were split
    assert all(set(_quadrants(parent)) <= set(boxes) for parent in full)  # and each of them was
    assert all("after" not in r.query for r in api.searches())


def test_streets_follows_paging_links_without_the_token_in_them(serve, streets, download_cfg):
    api = serve(quiet(pages=10))
    found = search(streets(api, page_size=10), HEADERS, retry_policy(download_cfg))
    assert set(found) == INSIDE
    requests_seen = api.searches()
    assert len(requests_seen) == 4  # 34 images: 10 + 10 + 10 + 4, one box
    assert requests_seen[0].query.get("after") is None
    assert all(r.query.get("after") for r in requests_seen[1:])  # the cursor of each answer's paging.next
    assert len({r.bbox for r in requests_seen}) == 1
    assert all("access_token" not in r.query for r in requests_seen)  # the link's token is dropped ...
    assert all(r.headers["authorization"] == f"OAuth {TOKEN}" for r in requests_seen)  # ... the header carries it


def test_streets_max_requests_bounds_the_search(serve, streets, download_cfg, caplog):
    api = serve(quiet())
    found = search(streets(api, page_size=5, max_requests=3), HEADERS, retry_policy(download_cfg))
    assert len(api.searches()) == 3
    assert 5 <= len(found) <= 15
    assert "fetch.streets.max_requests = 3" in caplog.text


# ----------------------------------------------------------------------------------------- search: a box that fails


@pytest.mark.parametrize(("failure", "stall_s", "status"), [("timeout", 2.0, 504), ("5xx", 0.0, 500)])
def test_a_box_that_keeps_failing_is_split_and_the_fetch_completes(
    tmp_path, serve, streets, download_cfg, caplog, failure, stall_s, status
):
    api = serve(quiet(dense_box=tuple(BBOX), stall_s=stall_s, dense_status=status))
    cfg = streets(api, photos=DRIVES * FRAMES, per_sequence=FRAMES)  # every perspective photo with a thumbnail
    records = fetch_streets(cfg, download_cfg, tmp_path / "raw", "content")

    assert len(records) == DRIVES * FRAMES  # nothing lost with the failed box
    assert chosen_ids(records) == sorted(i for i in INSIDE if i.startswith("10"))
    boxes = boxes_of(api)
    attempts = download_cfg.retries + 1
    assert boxes[:attempts] == [tuple(BBOX)] * attempts  # the whole box, retried, then ...
    assert sorted(boxes[attempts:]) == sorted(_quadrants(BBOX))  # ... its four quadrants, once each
    assert f"the search of box [{','.join(map(str, BBOX))}] failed" in caplog.text
    if failure == "timeout":
        assert "Read timed out" in caplog.text
        waited = api.searches()[attempts].at - api.searches()[0].at
        assert waited < attempts * 2.0  # the client gave up at its timeout (0.5 s), not at the stall's end (2 s)
    else:
        assert "HTTP 500" in caplog.text


def _quadrants(box) -> list[tuple[float, ...]]:
    """The four quadrants of ``box``, as the client sends them (8 decimals)."""
    w, s, e, n = box
    mx, my = (w + e) / 2, (s + n) / 2
    return [tuple(round(v, 8) for v in q) for q in [(w, s, mx, my), (mx, s, e, my), (w, my, mx, n), (mx, my, e, n)]]


def test_a_dense_box_inside_the_bbox_is_split_until_it_answers(serve, streets, download_cfg):
    south_west = _quadrants(BBOX)[0]
    api = serve(quiet(dense_box=south_west, stall_s=0.0, dense_status=503))  # the root and the SW quadrant fail
    found = search(streets(api), HEADERS, retry_policy(download_cfg))
    assert set(found) == INSIDE
    failed = [r.bbox for r in api.searches() if r.status == 503]
    assert failed == [tuple(BBOX)] * 2 + [south_west] * 2
    assert len(api.searches()) == 2 + (2 + 3) + 4  # root x2, its quadrants (SW x2), SW's quadrants


@pytest.mark.parametrize(
    ("dense", "max_requests", "page_size", "pages", "box", "unsearched"),
    [
        ("root", 3, 2000, 1, BBOX, 4),  # the root fails; its 4 quadrants do not fit in 3 requests
        ("sw", 5, 2000, 1, _quadrants(BBOX)[0], 4),  # root + 4 quadrants fit; the SW quadrant fails at request 2
        ("root", 5, 5, 2, BBOX, 2),  # the quadrants' paged answers spend the budget: 2 quadrants never searched
    ],
)
def test_a_failing_box_that_the_budget_cannot_split_is_one_clear_error(
    serve, streets, download_cfg, dense, max_requests, page_size, pages, box, unsearched
):
    dense_box = tuple(BBOX) if dense == "root" else _quadrants(BBOX)[0]
    api = serve(quiet(dense_box=dense_box, stall_s=0.0, dense_status=502, pages=pages))
    cfg = streets(api, max_requests=max_requests, page_size=page_size)
    with pytest.raises(FetchError) as info:
        search(cfg, HEADERS, retry_policy(download_cfg))
    message = str(info.value)
    assert f"the search of box [{','.join(f'{v:g}' for v in box)}] failed" in message
    assert "failed after 2 attempt(s): HTTP 502" in message
    assert f"fetch.streets.max_requests = {max_requests} is spent with {unsearched} box(es) of its area unsearched" in (
        message
    )
    assert len(api.searches()) <= max_requests * (download_cfg.retries + 1)


def test_a_failing_box_too_small_to_split_is_one_clear_error(serve, streets, download_cfg):
    tiny = (4.7, 50.88, 4.7 + MIN_BOX_DEG / 2, 50.88 + MIN_BOX_DEG / 2)
    api = serve(quiet(dense_box=tiny, stall_s=0.0))
    with pytest.raises(FetchError, match=r"too small to split further") as info:
        search(streets(api, bbox=list(tiny)), HEADERS, retry_policy(download_cfg))
    assert "HTTP 504" in str(info.value)
    assert len(api.searches()) == 2


# ----------------------------------------------------------------------------------------- refusals and rate limits


def test_a_bad_token_is_one_error_naming_the_variable(tmp_path, serve, streets, download_cfg, monkeypatch):
    api = serve(quiet())
    monkeypatch.setenv(TOKEN_ENV, "MLY|1234|revoked")
    with pytest.raises(FetchError) as info:
        fetch_streets(streets(api), download_cfg, tmp_path / "raw", "content")
    message = str(info.value)
    assert f"refused the access token in ${TOKEN_ENV}" in message
    assert "HTTP 401, OAuthException 190: Invalid OAuth access token" in message
    assert "revoked" not in message
    assert len(api.searches()) == 1  # a refusal is not retried or split
    assert not (tmp_path / "raw").exists() or not any((tmp_path / "raw").rglob("*.jpg"))


def test_a_bad_parameter_is_one_error_naming_its_key(tmp_path, serve, streets, download_cfg):
    api = serve(quiet(max_limit=500))  # an API that allows less than the documented 2000 per answer
    with pytest.raises(FetchError) as info:
        fetch_streets(streets(api, page_size=2000), download_cfg, tmp_path / "raw", "content")
    message = str(info.value)
    assert "rejected the images search" in message
    assert "HTTP 400, OAuthException 100: (#100) Param limit must be an integer between 1 and 500" in message
    assert message.endswith("check fetch.streets.page_size")
    assert len(api.searches()) == 1


@pytest.mark.parametrize("value", [None, "   "])
def test_streets_without_a_token_names_the_variable(tmp_path, serve, streets, download_cfg, monkeypatch, value):
    api = serve(quiet())
    if value is None:
        monkeypatch.delenv(TOKEN_ENV, raising=False)
    else:
        monkeypatch.setenv(TOKEN_ENV, value)
    with pytest.raises(FetchError, match=TOKEN_ENV):
        fetch_streets(streets(api), download_cfg, tmp_path / "raw", "content")
    assert api.requests == []


def test_a_429_is_waited_out_as_retry_after_asks(serve, streets, download_cfg):
    api = serve(quiet(rate_limit_at=1, retry_after=1))
    found = search(streets(api), HEADERS, retry_policy(download_cfg))
    assert set(found) == INSIDE
    first, second = api.searches()
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 1.0  # Retry-After: 1


def test_a_429_asking_too_long_a_wait_is_one_error(serve, streets, download_cfg):
    api = serve(quiet(rate_limit_at=1, retry_after=3600))
    started = time.monotonic()
    with pytest.raises(
        FetchError, match=r"rate-limiting the search: .* wait 3600 s .* fetch\.download\.max_retry_after_s"
    ):
        search(streets(api), HEADERS, retry_policy(download_cfg.model_copy(update={"max_retry_after_s": 5.0})))
    assert time.monotonic() - started < 5  # no wait, no split
    assert len(api.searches()) == 1


# ----------------------------------------------------------------------------------------- thumbnails


def test_an_expired_thumbnail_link_is_renewed_once(tmp_path, serve, streets, download_cfg, caplog):
    plain = serve(quiet())
    order = fetched(streets(plain), download_cfg, tmp_path / "a")
    stale, gone = order[0], order[1]
    api = serve(quiet())
    api.stale, api.gone = frozenset({stale}), frozenset({gone})
    fresh_cache = download_cfg.model_copy(update={"cache_dir": str(tmp_path / "fresh-cache")})
    ids = fetched(streets(api), fresh_cache, tmp_path / "b")

    assert len(ids) == 8
    assert stale in ids  # downloaded from the renewed link
    assert gone not in ids  # still expired after one renewal: skipped, the next one drawn instead
    assert (tmp_path / "b" / "content" / f"mapillary-{stale}.jpg").read_bytes() == plain.jpeg(stale)
    first, renewed = api.thumbs(stale)
    assert (first.path, first.status) == (f"/thumbs/{stale}/1.jpg", 403)
    assert (renewed.path, renewed.status) == (f"/thumbs/{stale}/2.jpg", 200)
    entity = [r for r in api.requests if r.path == f"/{stale}"]
    assert len(entity) == 1  # the API was asked once for the fresh link, with the token
    assert entity[0].headers["authorization"] == f"OAuth {TOKEN}"
    assert [r.status for r in api.thumbs(gone)] == [403, 403]
    assert len([r for r in api.requests if r.path == f"/{gone}"]) == 1
    assert f"image {gone} skipped" in caplog.text
    # the expired link, reused after its renewal, is gone (410)
    old = f"{api.cdn}{first.path}?" + "&".join(f"{k}={v[0]}" for k, v in first.query.items())
    assert requests.get(old, timeout=5).status_code == 410


# ----------------------------------------------------------------------------------------- the default world


def test_the_default_fake_with_the_rehearsal_sizes(tmp_path, serve, streets, download_cfg, repo_root):
    """What the rehearsal meets (profiles/rehearsal.yaml's streets sizes): the whole bbox times out and is split, a
    crowded quadrant answers full and is split again, the others page once, one 429, expired links renewed."""
    assert load_params(repo_root / "params.yaml").fetch.streets.bbox == list(LEUVEN)  # the fake's default world
    api = serve(FakeMapillary(token=TOKEN, stall_s=2.0))
    cfg = streets(api, photos=60, max_requests=60, page_size=50, per_sequence=3)  # profiles/rehearsal.yaml's sizes
    records = fetch_streets(cfg, download_cfg, tmp_path / "raw", "content")

    assert len(records) == 60
    sequences = Counter(r.sequence for r in records)
    assert max(sequences.values()) <= 3
    assert len(sequences) >= 20
    statuses = Counter(r.status for r in api.searches())
    assert statuses[504] == download_cfg.retries + 1  # the whole box, stalled
    assert statuses[429] == 1
    searches = [r for r in api.searches() if r.status == 200]
    assert len(searches) <= 60
    assert any(r.query.get("after") for r in searches)  # paging.next followed
    assert any(r.bbox[2] - r.bbox[0] < (BBOX[2] - BBOX[0]) / 3 for r in searches)  # a full quadrant split again
    perspective = {p.id for p in street_scene() if p.camera_type == "perspective" and p.processed}
    assert {r.id.removeprefix("mapillary-") for r in records} <= perspective
    assert any(r.status == 403 for r in api.thumbs())  # expired links met ...
    renewed = {r.path.split("/")[2] for r in api.thumbs() if r.status == 200 and r.path.endswith("/2.jpg")}
    assert renewed  # ... and renewed
    assert renewed <= {r.id.removeprefix("mapillary-") for r in records}


# ----------------------------------------------------------------------------------------- fetch + prepare


def test_prepare_keeps_each_sequence_in_one_split(tmp_path, base_params, sample_copy, serve, streets, download_cfg):
    api = serve(quiet())
    fetch_cfg = base_params.fetch.model_copy(
        update={
            "sample": base_params.fetch.sample.model_copy(update={"dir": str(sample_copy)}),
            "content": base_params.fetch.content.model_copy(update={"source": "streets"}),
            "style": base_params.fetch.style.model_copy(update={"source": "sample"}),
            "streets": streets(api, photos=12),  # 2 frames of each of the 6 drives
            "download": download_cfg.model_copy(update={"timeout_s": 5.0}),
        }
    )
    params = base_params.model_copy(update={"fetch": fetch_cfg})
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


def test_error_messages_keep_the_token_out(tmp_path, serve, streets, download_cfg):
    api = serve(quiet(dense_box=tuple(BBOX), stall_s=0.0, pages=10))
    with pytest.raises(FetchError) as info:
        search(streets(api, max_requests=1), HEADERS, retry_policy(download_cfg))
    assert not re.search(r"s3cr3t|access_token", str(info.value))
