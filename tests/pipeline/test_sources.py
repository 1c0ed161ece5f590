"""The fetch sources against real files and a real HTTP server on 127.0.0.1: WikiArt parquet shards from a
Hugging-Face-shaped API, Mapillary street photos, local folders, and the fetch stage end to end."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
import json
import logging
import math
import re
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlencode

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline import fetch, prepare
from pipeline.config import DownloadSection, Params, StreetsSource, WikiArtSource, load_params
from pipeline.download import DownloadError, retry_policy
from pipeline.sources import FIELDS, FetchError, read_manifest, write_manifest
from pipeline.sources.local import fetch_folder, fetch_sample
from pipeline.sources.streets import PUBLIC_URL, fetch_streets, search
from pipeline.sources.wikiart import fetch_wikiart, infos_class_names, shard_order


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


# ----------------------------------------------------------------------------------------- wikiart

REPO = "test-org/wikiart-mini"
SHA = "0123456789abcdef0123456789abcdef01234567"
# huggan/wikiart's dataset_infos.json as the Hub serves it (one line, config "huggan--wikiart"), with its real class
# names: 129 artists, 11 genres, 27 styles. Its shards carry no class names of their own.
INFOS_BYTES = (Path(__file__).parent / "fixtures" / "huggan_wikiart_dataset_infos.json").read_bytes()
FEATURES = json.loads(INFOS_BYTES)["huggan--wikiart"]["features"]
ARTISTS, GENRES, STYLES = (FEATURES[c]["names"] for c in ("artist", "genre", "style"))
SHARD_PATHS = [f"data/train-0000{i}-of-00003.parquet" for i in range(3)]
ROWS_PER_SHARD = 12
ROW_STYLES = ["Impressionism", "Cubism", "Post_Impressionism", "Ukiyo_e"]  # row i has ROW_STYLES[i % 4], ...
ROW_ARTISTS = ["claude-monet", "vincent-van-gogh", "pablo-picasso"]
ROW_GENRES = ["landscape", "portrait"]


def git_oid(data: bytes) -> str:
    """The git blob id a Hugging Face tree listing gives for a file that is not in LFS."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def hf_metadata() -> bytes:
    """The schema metadata ``datasets`` >= 2.10 writes into each parquet shard."""
    features = {"image": {"_type": "Image"}, **{c: FEATURES[c] for c in ("artist", "genre", "style")}}
    return json.dumps({"info": {"features": features}}).encode()


def build_shard(shard: int, *, metadata: bool, style: str | None = None) -> tuple[bytes, list[dict]]:
    """A parquet shard of ROWS_PER_SHARD tiny images (PNG and JPEG alternating); the label columns hold indices into
    the real class-name lists (every row ``style`` when given). Without ``metadata``: written as huggan/wikiart's
    shards were (no class names, one ``write_table`` call, so one row group whose images share a page); with it: in
    row groups of 5 rows."""
    rows = []
    for i in range(ROWS_PER_SHARD):
        fmt = "PNG" if i % 2 == 0 else "JPEG"
        size = (8 + i, 6 + shard)
        data = encode_image(size, (40 * shard, 20 * i, 200 - 10 * i), fmt)
        rows.append(
            {
                "image": {"bytes": data, "path": f"img{shard}_{i}.{fmt.lower()}"},
                "artist": ARTISTS.index(ROW_ARTISTS[i % 3]),
                "genre": GENRES.index(ROW_GENRES[i % 2]),
                "style": STYLES.index(style or ROW_STYLES[i % 4]),
                "size": size,
                "suffix": ".png" if fmt == "PNG" else ".jpg",
            }
        )
    schema = pa.schema(
        [
            ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            ("artist", pa.int64()),
            ("genre", pa.int64()),
            ("style", pa.int64()),
        ],
        metadata={b"huggingface": hf_metadata()} if metadata else None,
    )
    table = pa.Table.from_pylist([{k: r[k] for k in ("image", "artist", "genre", "style")} for r in rows], schema)
    buf = io.BytesIO()
    pq.write_table(table, buf, **({"row_group_size": 5} if metadata else {}))
    return buf.getvalue(), rows


@pytest.fixture(scope="module")
def shards() -> dict[str, tuple[bytes, list[dict]]]:
    return {path: build_shard(i, metadata=False) for i, path in enumerate(SHARD_PATHS)}


@pytest.fixture(scope="module")
def shards_with_metadata() -> dict[str, tuple[bytes, list[dict]]]:
    return {path: build_shard(i, metadata=True) for i, path in enumerate(SHARD_PATHS)}


def serve_hub(server, shards, *, infos: bytes | None = INFOS_BYTES) -> SimpleNamespace:
    """The Hugging Face endpoints fetch_wikiart uses, serving ``shards`` (and ``infos`` as dataset_infos.json, unless
    None) at commit SHA, as the Hub does: ``/resolve/`` of an LFS file answers 302 to a CDN URL, and the CDN (like the
    Hub itself) gzips its answers unless the request asks for ``Accept-Encoding: identity``."""
    api = f"/api/datasets/{REPO}"
    server.serve_json(f"{api}/revision/main", {"id": REPO, "sha": SHA})
    entries = [
        {"type": "file", "oid": git_oid(b), "path": p, "size": len(b), "lfs": {"oid": sha256(b), "size": len(b)}}
        for p, (b, _) in shards.items()
    ]
    # Unsorted, with a folder and a non-parquet file that must be ignored.
    tree = [
        entries[2],
        {"type": "directory", "oid": "1" * 40, "path": "data/extra.parquet"},
        entries[1],
        {"type": "file", "oid": git_oid(b"abc"), "path": "data/README.md", "size": 3},
        entries[0],
        *entries[3:],
    ]
    server.serve_json(f"{api}/tree/{SHA}/data", tree)
    root = [{"type": "directory", "oid": "2" * 40, "path": "data"}, {"type": "file", "path": ".gitattributes"}]
    if infos is not None:
        root.append({"type": "file", "oid": git_oid(infos), "size": len(infos), "path": "dataset_infos.json"})
        server.serve_like_a_cdn(f"/datasets/{REPO}/resolve/{SHA}/dataset_infos.json", infos)
    server.serve_json(f"{api}/tree/{SHA}", root)
    for path, (data, _) in shards.items():
        server.redirect(f"/datasets/{REPO}/resolve/{SHA}/{path}", f"{server.url}/cdn/{sha256(data)}?Expires=1")
        server.serve_like_a_cdn(f"/cdn/{sha256(data)}", data)

    def corrupt(path: str) -> None:
        if path.endswith(".parquet"):
            data = shards[path][0]
            server.serve_like_a_cdn(f"/cdn/{sha256(data)}", data[:-10] + b"\x00" * 10)
        else:
            server.serve_like_a_cdn(f"/datasets/{REPO}/resolve/{SHA}/{path}", infos[:-10] + b"\x00" * 10)

    return SimpleNamespace(
        server=server,
        shards=shards,
        resolve_prefix=f"{server.url}/datasets/{REPO}/resolve/{SHA}/",
        corrupt=corrupt,
        shard_requests=lambda: [r.path for r in server.requests() if "/resolve/" in r.path and ".parquet" in r.path],
        infos_requests=lambda: [r.path for r in server.requests() if r.path.endswith("/dataset_infos.json")],
    )


@pytest.fixture
def hub(local_server, shards):
    return serve_hub(local_server, shards)


@pytest.fixture
def wikiart_cfg(base_params: Params, local_server) -> WikiArtSource:
    return base_params.fetch.wikiart.model_copy(
        update={
            "endpoint": local_server.url + "/",
            "repo": REPO,
            "revision": "main",
            "data_dir": "data",
            "shards": 2,
            "shard_order": "first",
            "max_shards": 2,
            "class_by": "style",
            "styles": ["Impressionism", "Cubism"],
            "artists": [],
            "genres": [],
            "per_class": 2,
            "seed": 0,
        }
    )


def with_(cfg, **changes):
    return cfg.model_copy(update=changes)


def source_row(url: str, hub, shards=None) -> dict:
    """The fixture row a record's url points at (``<resolve prefix><shard path>#row=<n>``)."""
    assert url.startswith(hub.resolve_prefix), url
    path, _, row = url.removeprefix(hub.resolve_prefix).partition("#row=")
    return (shards or hub.shards)[path][1][int(row)]


def names_of(row: dict) -> dict[str, str]:
    return {"artist": ARTISTS[row["artist"]], "genre": GENRES[row["genre"]], "style": STYLES[row["style"]]}


def matching_rows(shards, cfg: WikiArtSource) -> Counter:
    """How many rows of the first ``cfg.shards`` shards pass the filters, per class label."""
    counts: Counter = Counter()
    for path in SHARD_PATHS[: cfg.shards]:
        for r in shards[path][1]:
            labels = names_of(r)
            wanted = {"style": cfg.styles, "artist": cfg.artists, "genre": cfg.genres}
            if all(not w or labels[k] in w for k, w in wanted.items()):
                counts[labels[cfg.class_by]] += 1
    return counts


def test_wikiart_picks_per_class_rows_of_the_filtered_styles(tmp_path, hub, shards, wikiart_cfg, download_cfg):
    raw = tmp_path / "raw"
    records = fetch_wikiart(wikiart_cfg, download_cfg, raw, "style")

    assert Counter(r.label for r in records) == {"Impressionism": 2, "Cubism": 2}
    assert len({r.id for r in records}) == len(records)
    for rec in records:
        written = (raw / rec.file).read_bytes()
        row = source_row(rec.url, hub)
        assert rec.role == "style"
        assert rec.source == "wikiart"
        assert rec.file.startswith("style/")
        assert rec.file.endswith(row["suffix"])
        assert f"/resolve/{SHA}/" in rec.url
        assert "#row=" in rec.url
        assert rec.label == STYLES[row["style"]]
        assert (rec.artist, rec.genre, rec.style) == (ARTISTS[row["artist"]], GENRES[row["genre"]], rec.label)
        assert written == row["image"]["bytes"]  # the image bytes unchanged
        assert rec.sha256 == sha256(written)
        assert (rec.width, rec.height) == row["size"]
        assert rec.license == wikiart_cfg.license == "Data files © Original Authors"  # the dataset card's words
    assert sorted(p.name for p in (raw / "style").iterdir()) == sorted(Path(r.file).name for r in records)

    # Only the first two shards (sorted by path) were downloaded, once each, into the cache by commit sha.
    assert hub.shard_requests() == [f"/datasets/{REPO}/resolve/{SHA}/{p}" for p in SHARD_PATHS[:2]]
    assert hub.server.count(f"/api/datasets/{REPO}/revision/main") == 1
    cached = sorted(
        p.relative_to(download_cfg.cache_dir).as_posix() for p in Path(download_cfg.cache_dir).rglob("*.parquet")
    )
    assert cached == [f"wikiart/test-org_wikiart-mini/{SHA}/{p}" for p in SHARD_PATHS[:2]]


def test_wikiart_shards_come_through_the_redirect_uncompressed(tmp_path, hub, shards, wikiart_cfg, download_cfg):
    fetch_wikiart(wikiart_cfg, download_cfg, tmp_path / "raw", "style")
    cdn = [r for r in hub.server.requests() if r.path.startswith("/cdn/")]
    assert sorted(r.path for r in cdn) == sorted(f"/cdn/{sha256(shards[p][0])}" for p in SHARD_PATHS[:2])
    assert all(r.headers["accept-encoding"] == "identity" for r in cdn)
    cache = Path(download_cfg.cache_dir) / "wikiart" / "test-org_wikiart-mini" / SHA
    assert all((cache / p).read_bytes() == shards[p][0] for p in SHARD_PATHS[:2])


def test_wikiart_rate_limited_download_waits_as_asked(tmp_path, hub, shards, wikiart_cfg, download_cfg):
    resolve = f"/datasets/{REPO}/resolve/{SHA}/{SHARD_PATHS[1]}"
    redirect = hub.server.Reply(302, b"", {"Location": f"{hub.server.url}/cdn/{sha256(shards[SHARD_PATHS[1]][0])}"})
    hub.server.route(resolve, hub.server.sequence(hub.server.Reply(429, b"", {"Retry-After": "1"}), redirect))
    start = time.monotonic()
    records = fetch_wikiart(wikiart_cfg, download_cfg, tmp_path / "raw", "style")  # download_cfg.backoff_s = 0
    assert time.monotonic() - start >= 1.0  # the second try came after the second the server asked for
    assert len(records) == 4
    assert hub.server.count(resolve) == 2


def test_wikiart_rate_limit_longer_than_the_bound_is_a_clear_error(tmp_path, hub, wikiart_cfg, download_cfg):
    resolve = f"/datasets/{REPO}/resolve/{SHA}/{SHARD_PATHS[0]}"
    hub.server.route(resolve, lambda req: hub.server.Reply(429, b"", {"Retry-After": "3600"}))
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"wait 3600 s .* fetch\.download\.max_retry_after_s = 300 s"):
        fetch_wikiart(wikiart_cfg, download_cfg, tmp_path / "raw", "style")
    assert time.monotonic() - start < 5
    assert hub.server.count(resolve) == 1


def test_wikiart_names_from_dataset_infos_select_the_right_rows(tmp_path, hub, shards, wikiart_cfg, download_cfg):
    """The shards hold only label numbers (as huggan/wikiart's do): the names come from dataset_infos.json."""
    assert all(b"huggingface" not in (pq.read_schema(io.BytesIO(b)).metadata or {}) for b, _ in shards.values())
    cfg = with_(wikiart_cfg, styles=["Impressionism", "Post_Impressionism"], per_class=3)
    records = fetch_wikiart(cfg, download_cfg, tmp_path / "raw", "style")

    assert Counter(r.label for r in records) == {"Impressionism": 3, "Post_Impressionism": 3}
    for rec in records:
        row = source_row(rec.url, hub)
        assert {"artist": rec.artist, "genre": rec.genre, "style": rec.style} == names_of(row)
        assert rec.label == rec.style
    cached = Path(download_cfg.cache_dir) / "wikiart" / "test-org_wikiart-mini" / SHA / "dataset_infos.json"
    assert cached.read_bytes() == INFOS_BYTES
    assert hub.infos_requests() == [f"/datasets/{REPO}/resolve/{SHA}/dataset_infos.json"]  # pinned, fetched once

    again = fetch_wikiart(cfg, download_cfg, tmp_path / "raw2", "style")
    assert [r.url for r in again] == [r.url for r in records]
    assert len(hub.infos_requests()) == 1  # the cached copy was verified against its git blob id, not fetched again


def test_wikiart_names_from_shard_metadata_need_no_dataset_infos(
    tmp_path, local_server, shards_with_metadata, wikiart_cfg, download_cfg
):
    hub = serve_hub(local_server, shards_with_metadata, infos=None)
    cfg = with_(wikiart_cfg, styles=["Impressionism", "Post_Impressionism"], per_class=3)
    records = fetch_wikiart(cfg, download_cfg, tmp_path / "raw", "style")
    assert Counter(r.label for r in records) == {"Impressionism": 3, "Post_Impressionism": 3}
    assert all(
        {"artist": r.artist, "genre": r.genre, "style": r.style} == names_of(source_row(r.url, hub)) for r in records
    )
    assert hub.infos_requests() == []
    assert local_server.count(f"/api/datasets/{REPO}/tree/{SHA}") == 0


@pytest.mark.parametrize("infos", ["absent", "no style names"])
def test_wikiart_filter_without_class_names_is_one_clear_error(
    tmp_path, local_server, shards, wikiart_cfg, download_cfg, infos
):
    doc = json.loads(INFOS_BYTES)
    del doc["huggan--wikiart"]["features"]["style"]
    serve_hub(local_server, shards, infos=None if infos == "absent" else json.dumps(doc).encode())
    with pytest.raises(FetchError) as info:
        fetch_wikiart(wikiart_cfg, download_cfg, tmp_path / "raw", "style")
    message = str(info.value)
    assert message.startswith("fetch.wikiart.styles selects styles by name, but no style names were found: ")
    assert f"{SHARD_PATHS[0]} has no 'huggingface' schema metadata" in message
    if infos == "absent":
        assert f"{REPO}@{SHA[:12]} has no dataset_infos.json" in message
    else:
        assert (
            f'{REPO}@{SHA[:12]}/dataset_infos.json has no ["huggan--wikiart"]["features"]["style"]["names"]' in message
        )


def test_wikiart_without_filters_or_names_records_the_numbers(
    tmp_path, local_server, shards, wikiart_cfg, download_cfg, caplog
):
    serve_hub(local_server, shards, infos=None)
    cfg = with_(wikiart_cfg, styles=[], per_class=1)
    records = fetch_wikiart(cfg, download_cfg, tmp_path / "raw", "style")
    assert sorted(r.label for r in records) == sorted(str(STYLES.index(s)) for s in ROW_STYLES)
    assert all(r.artist.isdigit() and r.genre.isdigit() for r in records)
    assert "no style names" in caplog.text
    assert "the manifest records their numbers instead" in caplog.text


def test_wikiart_dataset_infos_with_a_wrong_blob_id_is_rejected(tmp_path, hub, wikiart_cfg, download_cfg):
    hub.corrupt("dataset_infos.json")
    with pytest.raises(DownloadError, match="git blob id mismatch"):
        fetch_wikiart(wikiart_cfg, download_cfg, tmp_path / "raw", "style")
    assert not list(Path(download_cfg.cache_dir).rglob("dataset_infos.json*"))


@pytest.mark.parametrize(
    ("configs", "expected"),
    [
        (["whatever"], "whatever"),  # the only one
        (["default", "test-org--wikiart-mini"], "test-org--wikiart-mini"),  # how push_to_hub named it
        (["other", "default"], "default"),
    ],
)
def test_dataset_infos_config_choice(configs, expected):
    doc = {c: {"features": {"style": {"names": [c]}}} for c in configs}
    assert infos_class_names(doc, REPO, "f.json") == (expected, {"style": [expected]})


def test_dataset_infos_errors_name_the_file_and_key():
    with pytest.raises(FetchError, match=r"f\.json: several configs \(a, b\) and none named 'test-org--wikiart-mini'"):
        infos_class_names({"a": {}, "b": {}}, REPO, "f.json")
    with pytest.raises(FetchError, match=re.escape('f.json: no ["a"]["features"] object')):
        infos_class_names({"a": {"features": []}}, REPO, "f.json")
    with pytest.raises(FetchError, match=r"f\.json: expected an object of configs"):
        infos_class_names([], REPO, "f.json")


def test_wikiart_same_seed_same_files_and_cache_hit(tmp_path, hub, wikiart_cfg, download_cfg):
    first = fetch_wikiart(wikiart_cfg, download_cfg, tmp_path / "raw1", "style")
    downloads = len(hub.shard_requests())
    assert downloads == 2
    second = fetch_wikiart(wikiart_cfg, download_cfg, tmp_path / "raw2", "style")
    assert [(r.id, r.url, r.sha256) for r in second] == [(r.id, r.url, r.sha256) for r in first]
    assert len(hub.shard_requests()) == downloads  # the cached shards were verified, not downloaded again


def test_wikiart_seed_changes_the_choice(tmp_path, hub, wikiart_cfg, download_cfg):
    # 6 matching rows per style, 2 chosen: 15 x 15 possible choices. A selection that ignored the seed would give
    # one choice for all eight seeds.
    choices = {
        seed: frozenset(
            r.url for r in fetch_wikiart(with_(wikiart_cfg, seed=seed), download_cfg, tmp_path / f"r{seed}", "style")
        )
        for seed in range(8)
    }
    assert len(set(choices.values())) > 1
    assert all(len(c) == 4 for c in choices.values())


def test_wikiart_per_class_above_the_available_rows_takes_all(tmp_path, hub, shards, wikiart_cfg, download_cfg, caplog):
    cfg = with_(wikiart_cfg, per_class=50)
    expected = matching_rows(shards, cfg)
    assert expected == {"Impressionism": 6, "Cubism": 6}
    by_seed = [
        sorted(r.url for r in fetch_wikiart(with_(cfg, seed=seed), download_cfg, tmp_path / f"r{seed}", "style"))
        for seed in (0, 1)
    ]
    assert by_seed[0] == by_seed[1]  # every matching row, whatever the seed
    assert len(by_seed[0]) == sum(expected.values())
    assert "has only 6 matching rows" in caplog.text


def test_wikiart_artist_filter(tmp_path, hub, shards, wikiart_cfg, download_cfg):
    cfg = with_(wikiart_cfg, styles=[], artists=["claude-monet"], per_class=1)
    records = fetch_wikiart(cfg, download_cfg, tmp_path / "raw", "style")
    expected = matching_rows(shards, cfg)
    assert Counter(r.label for r in records) == {label: min(1, n) for label, n in expected.items()}
    assert all(r.artist == "claude-monet" == ARTISTS[source_row(r.url, hub)["artist"]] for r in records)


def test_wikiart_unknown_style_lists_the_valid_names(tmp_path, hub, wikiart_cfg, download_cfg):
    cfg = with_(wikiart_cfg, styles=["Impressionism", "Rococco"])
    with pytest.raises(FetchError, match="unknown style name") as info:
        fetch_wikiart(cfg, download_cfg, tmp_path / "raw", "style")
    message = str(info.value)
    assert "Rococco" in message
    assert all(name in message for name in STYLES)
    assert not (tmp_path / "raw" / "style").exists() or not any((tmp_path / "raw" / "style").iterdir())


def test_wikiart_shard_with_a_wrong_checksum_is_rejected(tmp_path, hub, wikiart_cfg, download_cfg):
    hub.corrupt(SHARD_PATHS[1])
    with pytest.raises(DownloadError, match="sha256"):
        fetch_wikiart(wikiart_cfg, download_cfg, tmp_path / "raw", "style")
    cache = Path(download_cfg.cache_dir) / "wikiart" / "test-org_wikiart-mini" / SHA
    assert (cache / SHARD_PATHS[0]).is_file()
    assert not (cache / SHARD_PATHS[1]).exists()
    assert not (cache / (SHARD_PATHS[1] + ".part")).exists()


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


# Six shards whose rows are grouped by style, as huggan/wikiart's seem grouped by artist.
GROUPED_STYLES = ["Impressionism", "Impressionism", "Cubism", "Cubism", "Post_Impressionism", "Ukiyo_e"]
GROUPED_PATHS = [f"data/train-0000{i}-of-00006.parquet" for i in range(6)]


@pytest.fixture(scope="module")
def grouped_shards() -> dict[str, tuple[bytes, list[dict]]]:
    return {path: build_shard(i, metadata=True, style=GROUPED_STYLES[i]) for i, path in enumerate(GROUPED_PATHS)}


def shard_indices(hub) -> list[int]:
    return [GROUPED_PATHS.index(p.split(f"/resolve/{SHA}/")[1]) for p in hub.shard_requests()]


def test_wikiart_spread_shards_and_tops_up_until_every_listed_style_has_its_rows(
    tmp_path, local_server, grouped_shards, wikiart_cfg, download_cfg, caplog
):
    hub = serve_hub(local_server, grouped_shards)
    cfg = with_(wikiart_cfg, styles=["Impressionism", "Cubism"], shard_order="spread", shards=2, max_shards=6)
    with caplog.at_level(logging.INFO, logger="pipeline.sources.wikiart"):
        records = fetch_wikiart(cfg, download_cfg, tmp_path / "raw", "style")
    # strata centres 1 and 4 (Impressionism, Post_Impressionism); Cubism short: 0 (farthest, lowest), then 2: enough
    assert shard_indices(hub) == [1, 4, 0, 2]
    assert Counter(r.label for r in records) == {"Impressionism": 2, "Cubism": 2}
    assert all(r.style == STYLES[source_row(r.url, hub)["style"]] for r in records)
    assert "Cubism (0) below per_class = 2 in 2 shard(s); one more" in caplog.text
    assert "has only" not in caplog.text
    # the manifest lists the records in shard-name order, whatever the download order
    assert [r.url.split("#")[0] for r in records] == sorted(r.url.split("#")[0] for r in records)


def test_wikiart_top_up_stops_at_max_shards_with_a_warning_naming_the_key(
    tmp_path, local_server, grouped_shards, wikiart_cfg, download_cfg, caplog
):
    hub = serve_hub(local_server, grouped_shards)
    cfg = with_(wikiart_cfg, styles=["Impressionism", "Ukiyo_e"], shard_order="spread", shards=2, max_shards=5)
    records = fetch_wikiart(cfg, download_cfg, tmp_path / "raw", "style")
    assert shard_indices(hub) == [1, 4, 0, 2, 3]  # Ukiyo_e lives in shard 5 only
    assert Counter(r.label for r in records) == {"Impressionism": 2}
    assert "class Ukiyo_e has only 0 matching rows (per_class = 2) in 5 shard(s)" in caplog.text
    assert "fetch.wikiart.max_shards" in caplog.text


def test_wikiart_first_order_misses_the_styles_of_later_shards(
    tmp_path, local_server, grouped_shards, wikiart_cfg, download_cfg, caplog
):
    hub = serve_hub(local_server, grouped_shards)
    cfg = with_(wikiart_cfg, styles=["Impressionism", "Ukiyo_e"], shard_order="first", shards=2, max_shards=2)
    records = fetch_wikiart(cfg, download_cfg, tmp_path / "raw", "style")
    assert shard_indices(hub) == [0, 1]
    assert {r.label for r in records} == {"Impressionism"}
    assert "class Ukiyo_e has only 0 matching rows" in caplog.text


def test_wikiart_without_a_class_filter_never_tops_up(
    tmp_path, local_server, grouped_shards, wikiart_cfg, download_cfg
):
    hub = serve_hub(local_server, grouped_shards)
    cfg = with_(wikiart_cfg, styles=[], shard_order="spread", shards=1, max_shards=6, per_class=50)
    records = fetch_wikiart(cfg, download_cfg, tmp_path / "raw", "style")
    assert shard_indices(hub) == [3]  # the one stratum's centre; no listed class can be short
    assert Counter(r.label for r in records) == {"Cubism": ROWS_PER_SHARD}


def test_wikiart_revision_without_sha(tmp_path, local_server, wikiart_cfg, download_cfg):
    local_server.serve_json(f"/api/datasets/{REPO}/revision/main", {"error": "Revision not found"})
    with pytest.raises(FetchError, match="no commit sha"):
        fetch_wikiart(wikiart_cfg, download_cfg, tmp_path / "raw", "style")


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
