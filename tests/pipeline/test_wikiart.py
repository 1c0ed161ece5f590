"""The WikiArt source, the real fetch code (huggingface_hub + pyarrow) against the loopback Hub of tests/fakes/hub.py:
paginated listings, the /resolve/ redirect, gzip, one 429, checksums, the cache, the spread + top-up, the targets."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import logging
import math
import re
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import httpx2
import pyarrow.parquet as pq
import pytest
from huggingface_hub import get_session

from pipeline.config import DownloadSection, Params, WikiArtSource
from pipeline.download import DownloadError
from pipeline.sources import FetchError
from pipeline.sources.wikiart import bounded_hub_client, fetch_wikiart, infos_class_names, read_images, shard_order
from tests.fakes.hub import ARTISTS, DEFAULT_SHA, GENRES, INFOS_BYTES, STYLES, FakeHub, wikiart_shards

SHA = DEFAULT_SHA
REPO = "huggan/wikiart"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def download_cfg(base_params: Params, tmp_path: Path) -> DownloadSection:
    return base_params.fetch.download.model_copy(
        update={"cache_dir": str(tmp_path / "cache"), "retries": 1, "backoff_s": 0.0, "timeout_s": 5.0}
    )


@pytest.fixture(scope="module")
def shards():
    """12 shards of 1,100 rows in huggan/wikiart's layout (rows grouped by artist, styles spread unevenly)."""
    return wikiart_shards()


@pytest.fixture(scope="module")
def small_shards():
    """3 shards of 24 rows: enough for the class-name and selection tests."""
    return wikiart_shards(3, 24, seed=1)


@pytest.fixture
def hub(shards):
    with FakeHub(shards, rate_limit=None) as running:
        yield running


@pytest.fixture
def small_hub(small_shards):
    with FakeHub(small_shards, rate_limit=None) as running:
        yield running


def config(base: Params, hub: FakeHub, **changes) -> WikiArtSource:
    settings = {
        "endpoint": hub.url,
        "repo": REPO,
        "revision": "main",
        "data_dir": "data",
        "shards": 2,
        "shard_order": "first",
        "max_shards": 2,
        "class_by": "style",
        "styles": [],
        "artists": [],
        "genres": [],
        "per_class": 2,
        "shortfall_tolerance": 0.1,
        "seed": 0,
    }
    return base.fetch.wikiart.model_copy(update={**settings, **changes})


def rows_of(data: bytes) -> list[dict]:
    """A shard's rows as pyarrow reads them whole (the independent reference)."""
    return pq.read_table(io.BytesIO(data)).to_pylist()


def source_row(url: str, hub: FakeHub) -> dict:
    """The row a record's url points at (``<endpoint>/datasets/<repo>/resolve/<sha>/<shard>#row=<n>``)."""
    prefix = f"{hub.url}/datasets/{REPO}/resolve/{SHA}/"
    assert url.startswith(prefix), url
    path, _, row = url.removeprefix(prefix).partition("#row=")
    return rows_of(hub.files[path].data)[int(row)]


def names_of(row: dict) -> dict[str, str]:
    return {"artist": ARTISTS[row["artist"]], "genre": GENRES[row["genre"]], "style": STYLES[row["style"]]}


def expected_downloads(shards, cfg: WikiArtSource) -> list[str]:
    """The shards a spread + top-up fetch takes, worked out from the shards' own style counts."""
    paths = sorted(shards)
    order = shard_order(len(paths), cfg.shards, cfg.shard_order)[: cfg.max_shards]
    counts: Counter = Counter()
    taken = []
    for k, index in enumerate(order):
        if k >= cfg.shards and all(counts[s] >= cfg.per_class for s in cfg.styles):
            break
        taken.append(paths[index])
        counts.update(shards[paths[index]].style_counts())
    return taken


# ----------------------------------------------------------------------------------------- the fake's own shapes


def test_the_fake_shards_are_laid_out_as_huggan_wikiart(shards):
    assert len(shards) == 12
    for path, shard in shards.items():
        meta = pq.ParquetFile(io.BytesIO(shard.data)).metadata
        assert meta.num_rows == 1100
        assert meta.num_row_groups == 1
        image = next(meta.row_group(0).column(i) for i in range(meta.num_columns))
        assert image.path_in_schema == "image.bytes"
        # a dictionary page of the first 1024 images, then the writer's fallback to plain pages for the other 76, as
        # in the real ~1,130-row shards (dictionary indices alone would take ~1.5 kB; each image is ~1 kB)
        assert "RLE_DICTIONARY" in image.encodings
        data_pages = image.total_compressed_size - (image.data_page_offset - image.dictionary_page_offset)
        assert data_pages > (1100 - 1024) * 500, path
        assert str(pq.read_schema(io.BytesIO(shard.data)).field("image").type) == "struct<bytes: binary, path: string>"
    artists = [a for s in shards.values() for a in s.artists]
    blocks = sum(1 for a, b in itertools.pairwise(artists) if a != b) + 1
    assert blocks == len(set(artists))  # rows grouped by artist: each artist is one block
    per_shard = [shards[p].style_counts()["Ukiyo_e"] for p in sorted(shards)]
    assert sum(1 for n in per_shard if n) == 1  # the rare style lives in one shard only


# ----------------------------------------------------------------------------------------- the protocol


def test_fetch_follows_the_pages_the_redirect_and_gzip_and_writes_the_rows_unchanged(
    tmp_path, hub, base_params, download_cfg
):
    cfg = config(base_params, hub, styles=["Impressionism"], shards=2, max_shards=2, per_class=5)
    raw = tmp_path / "raw"
    records = fetch_wikiart(cfg, download_cfg, raw, "style")

    # 12 shards at 5 per page: three pages, the later two reached through the Link header's cursor
    tree = [r for r in hub.seen("tree") if r.path.endswith("/data")]
    assert [r.query.get("cursor") for r in tree] == [None, ["5"], ["10"]]
    # every /resolve/ of a shard answered 302 (metadata from its headers), the body came from the CDN path, gzipped
    assert {r.status for r in hub.seen("resolve") if r.path.endswith(".parquet")} == {302}
    cdn = hub.seen("cdn", "GET")
    assert cdn
    assert all(r.encoding == "gzip" and r.status == 200 for r in cdn)
    assert hub.shard_downloads() == ["data/train-00000-of-00012.parquet", "data/train-00001-of-00012.parquet"]

    assert Counter(r.label for r in records) == {"Impressionism": 5}
    for rec in records:
        row = source_row(rec.url, hub)
        assert (raw / rec.file).read_bytes() == row["image"]["bytes"]  # the image bytes unchanged
        assert rec.sha256 == sha256(row["image"]["bytes"])
        assert {"artist": rec.artist, "genre": rec.genre, "style": rec.style} == names_of(row)
        assert (rec.width, rec.height) == (64, 48)
        assert rec.file.endswith(".jpg")
        assert rec.license == "Data files © Original Authors"
    # the downloaded files are the served ones, byte for byte, in huggingface_hub's cache under the commit
    snapshot = Path(download_cfg.cache_dir) / "huggingface" / "datasets--huggan--wikiart" / "snapshots" / SHA
    for path in hub.shard_downloads():
        assert (snapshot / path).read_bytes() == hub.files[path].data


def test_a_second_fetch_downloads_nothing(tmp_path, hub, base_params, download_cfg):
    cfg = config(base_params, hub, styles=["Impressionism"], per_class=3)
    first = fetch_wikiart(cfg, download_cfg, tmp_path / "raw1", "style")
    before = len(hub.requests)
    second = fetch_wikiart(cfg, download_cfg, tmp_path / "raw2", "style")
    again = hub.requests[before:]
    assert [(r.id, r.url, r.sha256) for r in second] == [(r.id, r.url, r.sha256) for r in first]
    assert {(r.method, r.path.split("/")[5]) for r in again} == {("GET", "revision"), ("GET", "tree")}
    assert not [r for r in again if r.path.startswith("/cdn/") or "/resolve/" in r.path]


def test_one_429_is_waited_out_as_retry_after_asks(tmp_path, shards, base_params, download_cfg):
    with FakeHub(shards, rate_limit="cdn", retry_after=1) as hub:
        cfg = config(base_params, hub, styles=["Impressionism"], per_class=3, shards=1, max_shards=1)
        start = time.monotonic()
        records = fetch_wikiart(cfg, download_cfg, tmp_path / "raw", "style")
        waited = time.monotonic() - start
        statuses = [r.status for r in hub.seen("cdn", "GET")]
    assert statuses == [429, 200]
    assert waited >= 1.0  # the second try came after the second the server asked for
    assert len(records) == 3


def test_a_retry_after_beyond_the_bound_is_one_clear_error(tmp_path, shards, base_params, download_cfg):
    with FakeHub(shards, rate_limit="cdn", retry_after=3600) as hub:
        cfg = config(base_params, hub, styles=["Impressionism"], shards=1, max_shards=1)
        start = time.monotonic()
        with pytest.raises(DownloadError, match=r"wait 3600 s .* fetch\.download\.max_retry_after_s = 300 s"):
            fetch_wikiart(cfg, download_cfg, tmp_path / "raw", "style")
    assert time.monotonic() - start < 5


def test_a_corrupted_shard_on_the_server_is_rejected(tmp_path, hub, base_params, download_cfg):
    bad = "data/train-00001-of-00012.parquet"
    hub.corrupt(bad)
    cfg = config(base_params, hub, styles=["Impressionism"])
    with pytest.raises(DownloadError, match=f"{re.escape(bad)}: sha256 mismatch .*file discarded"):
        fetch_wikiart(cfg, download_cfg, tmp_path / "raw", "style")
    cache = Path(download_cfg.cache_dir) / "huggingface" / "datasets--huggan--wikiart"
    kept = sorted(p.name for p in (cache / "blobs").iterdir() if len(p.name) == 64)  # LFS blobs: by sha256
    assert kept == [sha256(hub.files["data/train-00000-of-00012.parquet"].data)]  # the good one stays
    assert not (cache / "snapshots" / SHA / bad).exists()


def test_a_damaged_cached_shard_is_downloaded_again(tmp_path, hub, base_params, download_cfg):
    cfg = config(base_params, hub, styles=["Impressionism"], shards=1, max_shards=1)
    fetch_wikiart(cfg, download_cfg, tmp_path / "raw1", "style")
    path = "data/train-00000-of-00012.parquet"
    blob = (
        Path(download_cfg.cache_dir)
        / "huggingface"
        / "datasets--huggan--wikiart"
        / "blobs"
        / sha256(hub.files[path].data)
    )
    blob.write_bytes(blob.read_bytes()[:-10] + b"\0" * 10)
    fetch_wikiart(cfg, download_cfg, tmp_path / "raw2", "style")
    assert hub.shard_downloads() == [path, path]
    assert blob.read_bytes() == hub.files[path].data


def test_every_request_gets_a_time_limit():
    """huggingface_hub lists trees with no timeout; within the fetch the client bounds every request."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts, never answers
    try:
        with bounded_hub_client(0.5, 300.0):
            start = time.monotonic()
            with pytest.raises(httpx2.TimeoutException):
                get_session().get(f"http://127.0.0.1:{silent.getsockname()[1]}/api/x", timeout=None)
        assert time.monotonic() - start < 5
    finally:
        silent.close()


# ----------------------------------------------------------------------------------------- spread, top-up, targets


def test_spread_shards_then_top_up_until_every_listed_style_has_its_rows(tmp_path, hub, shards, base_params, caplog):
    dl = base_params.fetch.download.model_copy(update={"cache_dir": str(tmp_path / "cache")})
    cfg = config(
        base_params, hub, styles=["Impressionism", "Baroque", "Cubism"], shard_order="spread", shards=3, max_shards=12
    )
    cfg = cfg.model_copy(update={"per_class": 200})
    with caplog.at_level(logging.INFO, logger="pipeline.sources.wikiart"):
        records = fetch_wikiart(cfg, dl, tmp_path / "raw", "style")
    expected = expected_downloads(shards, cfg)
    assert len(expected) > cfg.shards  # the top-up ran ...
    assert len(expected) < cfg.max_shards  # ... and stopped once every style had its rows
    assert hub.shard_downloads() == expected
    assert Counter(r.label for r in records) == {"Impressionism": 200, "Baroque": 200, "Cubism": 200}
    assert "below per_class = 200" in caplog.text
    assert "has only" not in caplog.text
    # the manifest lists the records in shard-name order, whatever the download order
    assert [r.url.split("#")[0] for r in records] == sorted(r.url.split("#")[0] for r in records)


def test_a_shortfall_beyond_the_tolerance_is_one_error_naming_style_rows_and_shards(
    tmp_path, hub, shards, base_params, download_cfg
):
    cfg = config(base_params, hub, styles=["Impressionism", "Ukiyo_e"], shard_order="spread", shards=2, max_shards=4)
    cfg = cfg.model_copy(update={"per_class": 300})  # Ukiyo_e: 264 rows in one shard, 12 % short
    with pytest.raises(FetchError) as info:
        fetch_wikiart(cfg, download_cfg, tmp_path / "raw", "style")
    read = expected_downloads(shards, cfg)
    assert len(read) == 4
    found = sum(shards[p].style_counts()["Ukiyo_e"] for p in read)
    message = str(info.value)
    assert f"style Ukiyo_e has {found} matching rows" in message
    assert "in the 4 of 12 shard(s) read" in message
    assert all(Path(p).stem in message for p in read)
    assert "Impressionism" not in message.split("cannot be met:")[1].split(" in the ")[0]
    assert "shortfall_tolerance = 0.1" in message
    assert "fetch.wikiart.max_shards" in message
    assert not (tmp_path / "raw" / "style").exists()  # nothing written


def test_a_shortfall_within_the_tolerance_only_warns(tmp_path, hub, shards, base_params, download_cfg, caplog):
    path = sorted(shards)[9]  # the one shard holding Ukiyo_e
    have = shards[path].style_counts()["Ukiyo_e"]
    per_class = math.floor(have / 0.95)  # about 5 % short
    cfg = config(base_params, hub, styles=["Ukiyo_e"], shards=12, max_shards=12, per_class=per_class)
    records = fetch_wikiart(cfg, download_cfg, tmp_path / "raw", "style")
    assert Counter(r.label for r in records) == {"Ukiyo_e": have}  # every row there is
    assert f"class Ukiyo_e has only {have} matching rows (per_class = {per_class}) in 12 shard(s)" in caplog.text
    assert "within fetch.wikiart.shortfall_tolerance = 0.1" in caplog.text
    tolerant = cfg.model_copy(update={"shortfall_tolerance": 0.0})
    with pytest.raises(FetchError, match=f"Ukiyo_e has {have} matching rows"):
        fetch_wikiart(tolerant, download_cfg, tmp_path / "raw2", "style")


def test_first_order_misses_the_styles_of_later_shards(tmp_path, hub, base_params, download_cfg):
    cfg = config(base_params, hub, styles=["Impressionism", "Ukiyo_e"], shards=2, max_shards=2, per_class=5)
    with pytest.raises(FetchError, match=r"style Ukiyo_e has 0 matching rows \(100% short\)"):
        fetch_wikiart(cfg, download_cfg, tmp_path / "raw", "style")
    assert hub.shard_downloads() == ["data/train-00000-of-00012.parquet", "data/train-00001-of-00012.parquet"]


def test_without_a_class_filter_the_fetch_never_tops_up(tmp_path, hub, shards, base_params, download_cfg):
    cfg = config(base_params, hub, shard_order="spread", shards=1, max_shards=12, per_class=5)
    records = fetch_wikiart(cfg, download_cfg, tmp_path / "raw", "style")
    assert hub.shard_downloads() == ["data/train-00006-of-00012.parquet"]  # the one stratum's centre
    assert Counter(r.label for r in records) == dict.fromkeys(shards[sorted(shards)[6]].style_counts(), 5)


def test_shard_order_worked_by_hand():
    assert shard_order(10, 3, "first") == list(range(10))
    # strata centres floor((2i + 1) * 10 / 6) = 1, 5, 8; then 3 (2 from 1 and 5), then the ties at distance 1, lowest
    assert shard_order(10, 3, "spread") == [1, 5, 8, 3, 0, 2, 4, 6, 7, 9]
    assert shard_order(72, 8, "spread")[:8] == [4, 13, 22, 31, 40, 49, 58, 67]
    assert shard_order(3, 5, "spread") == [0, 1, 2]  # more asked than listed: every shard, each once


@pytest.mark.parametrize("n", [1, 2, 7, 72])
@pytest.mark.parametrize("start", [1, 3, 8])
def test_every_prefix_of_the_spread_order_covers_the_listing(n, start):
    order = shard_order(n, start, "spread")
    assert sorted(order) == list(range(n))
    for k in range(min(start, n), n + 1):
        taken = sorted(order[:k])
        gaps = [taken[0] + 1, *(b - a for a, b in itertools.pairwise(taken)), n - taken[-1]]
        # k shards leave no stretch of the listing longer than twice an even share untouched
        assert max(gaps) <= 2 * math.ceil(n / k), (k, taken)


def test_read_images_takes_only_the_wanted_rows_of_a_dictionary_then_plain_shard(tmp_path, shards):
    path = tmp_path / "shard.parquet"
    data = shards["data/train-00003-of-00012.parquet"].data
    path.write_bytes(data)
    wanted = [0, 15, 16, 1023, 1024, 1099]  # batch edges and both sides of the dictionary -> plain fallback
    reference = rows_of(data)
    assert list(read_images(path, reversed(wanted))) == [(r, reference[r]["image"]["bytes"]) for r in wanted]
    assert list(read_images(path, [])) == []


# ----------------------------------------------------------------------------------------- class names, selection


def test_names_from_dataset_infos_select_the_right_rows(tmp_path, small_hub, base_params, download_cfg):
    """The shards hold only label numbers (as huggan/wikiart's do): the names come from dataset_infos.json."""
    assert all(
        b"huggingface" not in (pq.read_schema(io.BytesIO(s.data)).metadata or {}) for s in small_hub.files.values()
    )
    cfg = config(base_params, small_hub, styles=["Impressionism", "Realism"], shards=3, max_shards=3, per_class=3)
    records = fetch_wikiart(cfg, download_cfg, tmp_path / "raw", "style")
    assert Counter(r.label for r in records) == {"Impressionism": 3, "Realism": 3}
    assert all(
        {"artist": r.artist, "genre": r.genre, "style": r.style} == names_of(source_row(r.url, small_hub))
        for r in records
    )
    infos = [r for r in small_hub.seen("resolve", "GET") if r.path.endswith("/dataset_infos.json")]
    assert len(infos) == 1
    assert infos[0].encoding == "gzip"
    cached = Path(download_cfg.cache_dir) / "huggingface" / "datasets--huggan--wikiart" / "snapshots" / SHA
    assert (cached / "dataset_infos.json").read_bytes() == INFOS_BYTES


def test_names_from_shard_metadata_need_no_dataset_infos(tmp_path, base_params, download_cfg):
    with FakeHub(wikiart_shards(3, 24, seed=1, metadata=True), infos=None, rate_limit=None) as hub:
        cfg = config(base_params, hub, styles=["Impressionism", "Realism"], shards=3, max_shards=3, per_class=3)
        records = fetch_wikiart(cfg, download_cfg, tmp_path / "raw", "style")
        assert Counter(r.label for r in records) == {"Impressionism": 3, "Realism": 3}
        assert all(r.style == STYLES[source_row(r.url, hub)["style"]] for r in records)
        assert [r for r in hub.seen("tree") if not r.path.endswith("/data")] == []  # the root was never listed


@pytest.mark.parametrize("infos", ["absent", "no style names"])
def test_a_filter_without_class_names_is_one_clear_error(tmp_path, small_shards, base_params, download_cfg, infos):
    doc = json.loads(INFOS_BYTES)
    del doc["huggan--wikiart"]["features"]["style"]
    served = None if infos == "absent" else json.dumps(doc).encode()
    with FakeHub(small_shards, infos=served, rate_limit=None) as hub:
        cfg = config(base_params, hub, styles=["Impressionism"])
        with pytest.raises(FetchError) as info:
            fetch_wikiart(cfg, download_cfg, tmp_path / "raw", "style")
    message = str(info.value)
    assert message.startswith("fetch.wikiart.styles selects styles by name, but no style names were found: ")
    assert "data/train-00000-of-00003.parquet has no 'huggingface' schema metadata" in message
    if infos == "absent":
        assert f"{REPO}@{SHA[:12]} has no dataset_infos.json" in message
    else:
        assert (
            f'{REPO}@{SHA[:12]}/dataset_infos.json has no ["huggan--wikiart"]["features"]["style"]["names"]' in message
        )


def test_without_filters_or_names_the_manifest_records_the_numbers(
    tmp_path, small_shards, base_params, download_cfg, caplog
):
    with FakeHub(small_shards, infos=None, rate_limit=None) as hub:
        records = fetch_wikiart(config(base_params, hub, per_class=1), download_cfg, tmp_path / "raw", "style")
    first_two = [s for p in sorted(small_shards)[:2] for s in small_shards[p].styles]
    assert sorted(r.label for r in records) == sorted(str(STYLES.index(s)) for s in set(first_two))
    assert all(r.artist.isdigit() and r.genre.isdigit() for r in records)
    assert "the manifest records their numbers instead" in caplog.text


def test_a_dataset_infos_with_a_wrong_blob_id_is_rejected(tmp_path, small_hub, base_params, download_cfg):
    small_hub.corrupt("dataset_infos.json")
    with pytest.raises(DownloadError, match=r"dataset_infos\.json: git blob id mismatch"):
        fetch_wikiart(config(base_params, small_hub, styles=["Realism"]), download_cfg, tmp_path / "raw", "style")
    assert not list(Path(download_cfg.cache_dir).rglob("dataset_infos.json"))


@pytest.mark.parametrize(
    ("configs", "expected"),
    [
        (["whatever"], "whatever"),  # the only one
        (["default", "huggan--wikiart"], "huggan--wikiart"),  # how push_to_hub named it
        (["other", "default"], "default"),
    ],
)
def test_dataset_infos_config_choice(configs, expected):
    doc = {c: {"features": {"style": {"names": [c]}}} for c in configs}
    assert infos_class_names(doc, REPO, "f.json") == (expected, {"style": [expected]})


def test_dataset_infos_errors_name_the_file_and_key():
    with pytest.raises(FetchError, match=r"f\.json: several configs \(a, b\) and none named 'huggan--wikiart'"):
        infos_class_names({"a": {}, "b": {}}, REPO, "f.json")
    with pytest.raises(FetchError, match=re.escape('f.json: no ["a"]["features"] object')):
        infos_class_names({"a": {"features": []}}, REPO, "f.json")
    with pytest.raises(FetchError, match=r"f\.json: expected an object of configs"):
        infos_class_names([], REPO, "f.json")


def test_the_seed_changes_the_choice_and_the_same_seed_repeats_it(tmp_path, small_hub, base_params, download_cfg):
    cfg = config(base_params, small_hub, styles=["Impressionism"], shards=3, max_shards=3, per_class=2)
    choices = {
        seed: tuple(
            r.url
            for r in fetch_wikiart(cfg.model_copy(update={"seed": seed}), download_cfg, tmp_path / f"r{seed}", "style")
        )
        for seed in range(6)
    }
    assert len(set(choices.values())) > 1
    again = fetch_wikiart(cfg, download_cfg, tmp_path / "again", "style")
    assert tuple(r.url for r in again) == choices[0]


def test_an_artist_filter(tmp_path, small_hub, small_shards, base_params, download_cfg):
    artist = small_shards["data/train-00000-of-00003.parquet"].artists[0]
    cfg = config(base_params, small_hub, artists=[artist], per_class=100, shortfall_tolerance=1.0)
    records = fetch_wikiart(cfg, download_cfg, tmp_path / "raw", "style")
    assert records
    assert all(r.artist == artist == ARTISTS[source_row(r.url, small_hub)["artist"]] for r in records)
    first_two = [sh for p in sorted(small_shards)[:2] for sh in [small_shards[p]]]
    assert len(records) == sum(a == artist for s in first_two for a in s.artists)


def test_an_unknown_style_lists_the_valid_names(tmp_path, small_hub, base_params, download_cfg):
    cfg = config(base_params, small_hub, styles=["Impressionism", "Rococco"])
    with pytest.raises(FetchError, match="unknown style name") as info:
        fetch_wikiart(cfg, download_cfg, tmp_path / "raw", "style")
    assert "Rococco" in str(info.value)
    assert all(name in str(info.value) for name in STYLES)


def test_an_unknown_revision_and_a_revision_without_sha(tmp_path, small_hub, base_params, download_cfg):
    with pytest.raises(FetchError, match="revision 'v9' of huggan/wikiart"):
        fetch_wikiart(config(base_params, small_hub, revision="v9"), download_cfg, tmp_path / "raw", "style")
    small_hub.sha = ""
    with pytest.raises(FetchError, match="gave no commit sha"):
        fetch_wikiart(config(base_params, small_hub), download_cfg, tmp_path / "raw", "style")


def test_a_branch_is_resolved_once_and_pinned(tmp_path, small_hub, base_params, download_cfg, caplog):
    records = fetch_wikiart(config(base_params, small_hub, styles=["Realism"]), download_cfg, tmp_path / "raw", "style")
    assert all(f"/resolve/{SHA}/" in r.url for r in records)
    assert len(small_hub.seen("revision")) == 1
    assert all(SHA in r.path for r in small_hub.requests if "/revision/" not in r.path and "/cdn/" not in r.path)
    assert f"resolved to commit {SHA}" in caplog.text


def test_the_endpoint_comes_from_hf_endpoint_when_params_leave_it_null(
    tmp_path, small_hub, base_params, download_cfg, monkeypatch
):
    monkeypatch.setenv("HF_ENDPOINT", small_hub.url)
    cfg = config(base_params, small_hub, styles=["Realism"]).model_copy(update={"endpoint": None})
    records = fetch_wikiart(cfg, download_cfg, tmp_path / "raw", "style")
    assert records
    assert all(r.url.startswith(small_hub.url) for r in records)


def test_the_fake_hub_stops_and_frees_its_port(small_shards):
    hub = FakeHub(small_shards).start()
    port = hub.port
    hub.stop()
    assert not [t for t in threading.enumerate() if t.name == "fake-hub"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # free again
