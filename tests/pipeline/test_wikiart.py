"""The WikiArt source against a Hugging-Face-shaped HTTP server on 127.0.0.1: parquet shards, class names, the
shard order and top-up."""

from __future__ import annotations

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

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.config import DownloadSection, Params, WikiArtSource, load_params
from pipeline.download import DownloadError
from pipeline.sources import FetchError
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
