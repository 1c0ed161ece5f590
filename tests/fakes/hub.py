"""A loopback fake of the Hugging Face Hub that ``huggingface_hub`` talks to unchanged (``endpoint=hub.url``).

It answers the calls ``huggingface_hub`` 2.x makes for a dataset repository (read from its source:
``hf_api.py`` ``dataset_info`` / ``resolve_revision`` / ``_iter_repo_tree_pages``, ``utils/_pagination.py``,
``file_download.py`` ``get_hf_file_metadata`` / ``http_get``) with the shapes the real Hub gives them:

- ``GET /api/datasets/<repo>/revision/<rev>``: ``{"id", "sha", ...}``: a branch or the commit itself -> the commit sha;
  an unknown revision -> 404 with ``X-Error-Code: RevisionNotFound``;
- ``GET /api/datasets/<repo>/tree/<rev>[/<folder>]``: ``page_size`` entries per answer, the rest behind a
  ``Link: <...>; rel="next"`` header (the Hub pages its listings by 1000, 50 with ``expand``); files carry their git
  blob id (``oid``), size and, for LFS files (the parquet shards), ``lfs: {oid: <sha256>, size, pointerSize}``;
- ``HEAD|GET /datasets/<repo>/resolve/<rev>/<path>``: an LFS file answers ``302`` to ``/cdn/<sha256>`` on the same
  server under the host name ``localhost`` (another origin, as the real CDN is: ``huggingface_hub`` then reads the
  file's metadata off the 302 itself: ``X-Repo-Commit``, ``X-Linked-Etag`` (the sha256), ``X-Linked-Size``); a
  small file (``dataset_infos.json``) answers 200 with ``ETag`` (its git blob id) and ``X-Repo-Commit``;
- every body is gzip-encoded unless the request's ``Accept-Encoding`` leaves gzip out (``huggingface_hub`` sends
  ``identity`` for its HEAD calls only, so shards come gzip-encoded and are decoded by httpx), and a
  ``Range: bytes=N-`` request with ``identity`` gets a 206;
- exactly one ``429`` with ``Retry-After: <retry_after>`` on the first request of the kind ``rate_limit`` names
  (``cdn``: a shard's body; ``tree``: a listing; ``resolve``: a file's metadata; None: no 429).

:func:`wikiart_shards` writes parquet shards in huggan/wikiart's layout: rows grouped by artist, an ``image`` column
of ``struct<bytes: binary, path: string>``, integer ``artist`` / ``genre`` / ``style`` labels indexing the real class
names (``tests/pipeline/fixtures/huggan_wikiart_dataset_infos.json``, served as ``dataset_infos.json``), one row
group per shard written in one ``pq.write_table`` call, and enough rows per shard (1,100, as the real ~1,130) that
pyarrow's writer falls back from dictionary to plain pages (its dictionary page limit, 1 MiB, is checked after each
batch of 1024 rows). Styles are spread unevenly: a rare one lives in a few artists' blocks only.

Use as a context manager (``with FakeHub(shards) as hub: ...``) or ``hub.start()`` / ``hub.stop()``; it binds
127.0.0.1 on an ephemeral port and serves from a daemon thread.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from fakes.loopback import LoopbackServer

INFOS_PATH = Path(__file__).resolve().parents[1] / "pipeline" / "fixtures" / "huggan_wikiart_dataset_infos.json"
INFOS_BYTES = INFOS_PATH.read_bytes()
FEATURES = json.loads(INFOS_BYTES)["huggan--wikiart"]["features"]
ARTISTS, GENRES, STYLES = (FEATURES[c]["names"] for c in ("artist", "genre", "style"))
DEFAULT_SHA = "d559852d2b232e0fcf195e775866964f0564f2b5"  # huggan/wikiart's commit pinned in profiles/full.yaml
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # datasets' Image feature in parquet

# (style, share of all rows, artists painting it): huggan/wikiart's own proportions, roughly (Impressionism 13,060
# of 81,444 rows; Ukiyo_e 1,167), so that a rare style sits in a few artists' blocks of a few shards.
STYLE_MIX = [
    ("Impressionism", 0.28, ["claude-monet", "pierre-auguste-renoir", "camille-pissarro"]),
    ("Realism", 0.20, ["ivan-shishkin", "gustave-courbet"]),
    ("Post_Impressionism", 0.14, ["vincent-van-gogh", "paul-cezanne"]),
    ("Expressionism", 0.14, ["ernst-ludwig-kirchner", "edvard-munch"]),
    ("Baroque", 0.10, ["rembrandt", "peter-paul-rubens"]),
    ("Art_Nouveau", 0.08, ["raphael-kirchner"]),
    ("Cubism", 0.04, ["pablo-picasso"]),
    ("Ukiyo_e", 0.02, ["katsushika-hokusai"]),
]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def git_oid(data: bytes) -> str:
    """The git blob id a Hub tree listing gives as ``oid`` (sha1 of ``blob <size>\\0`` + content)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class Shard:
    """One parquet file: its bytes and, per row, the label names it holds (for tests' expectations)."""

    data: bytes
    styles: list[str]
    artists: list[str]

    def style_counts(self) -> Counter:
        return Counter(self.styles)


def _base_jpegs(size: tuple[int, int], n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3)).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def wikiart_shards(
    n_shards: int = 12,
    rows_per_shard: int = 1100,
    *,
    seed: int = 0,
    image_size: tuple[int, int] = (64, 48),
    mix: list[tuple[str, float, list[str]]] | None = None,
    metadata: bool = False,
) -> dict[str, Shard]:
    """``n_shards`` parquet files ``data/train-0000N-of-000NN.parquet`` in huggan/wikiart's layout (module doc).

    Each row's image is one of a few seeded noise JPEGs of ``image_size`` with the row's number appended after the
    end-of-image marker (decoders ignore it), so every cell is distinct, as real paintings are, and the dictionary
    fills. Artists' blocks have seeded random lengths around their style's share and follow each other in the order
    of the real artist list, the whole sequence cut into equal-row shards as ``push_to_hub`` did. ``metadata`` adds
    the ``huggingface`` schema metadata ``datasets`` >= 2.10 writes (huggan/wikiart's shards have none).
    """
    rng = random.Random(seed)
    total = n_shards * rows_per_shard
    blocks: list[tuple[str, str, int]] = []  # (artist, style, rows)
    for style, share, artists in mix or STYLE_MIX:
        weights = [rng.uniform(0.5, 1.5) for _ in artists]
        for artist, w in zip(artists, weights, strict=True):
            blocks.append((artist, style, max(1, round(total * share * w / sum(weights)))))
    blocks.sort(key=lambda b: ARTISTS.index(b[0]))
    styles = [s for _, s, n in blocks for _ in range(n)]
    artists = [a for a, _, n in blocks for _ in range(n)]
    styles = (styles * (total // len(styles) + 1))[:total]  # rounding: repeat the head, cut the tail
    artists = (artists * (total // len(artists) + 1))[:total]
    bases = _base_jpegs(image_size, 4, seed)
    digits = len(str(n_shards)) if n_shards > 99999 else 5
    schema = pa.schema(
        [("image", IMAGE_TYPE), ("artist", pa.int64()), ("genre", pa.int64()), ("style", pa.int64())],
        metadata={b"huggingface": _hf_metadata()} if metadata else None,
    )
    out = {}
    for s in range(n_shards):
        rows = range(s * rows_per_shard, (s + 1) * rows_per_shard)
        table = pa.table(
            {
                "image": pa.array(
                    [{"bytes": bases[i % 4] + i.to_bytes(4, "little"), "path": f"{i}.jpg"} for i in rows], IMAGE_TYPE
                ),
                "artist": pa.array([ARTISTS.index(artists[i]) for i in rows], pa.int64()),
                "genre": pa.array([rng.randrange(len(GENRES)) for _ in rows], pa.int64()),
                "style": pa.array([STYLES.index(styles[i]) for i in rows], pa.int64()),
            },
            schema=schema,
        )
        buf = io.BytesIO()
        pq.write_table(table, buf)  # one call, pyarrow's defaults: one row group, dictionary pages falling back
        path = f"data/train-{s:0{digits}d}-of-{n_shards:0{digits}d}.parquet"
        out[path] = Shard(buf.getvalue(), [styles[i] for i in rows], [artists[i] for i in rows])
    return out


def _hf_metadata() -> bytes:
    features = {"image": {"_type": "Image"}, **{c: FEATURES[c] for c in ("artist", "genre", "style")}}
    return json.dumps({"info": {"features": features}}).encode()


@dataclass(frozen=True)
class Seen:
    """One request the fake answered. Header names are lower-cased; ``encoding`` is the body's Content-Encoding."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    status: int
    encoding: str


@dataclass
class _File:
    data: bytes
    lfs: bool


@dataclass
class FakeHub(LoopbackServer):
    """The fake Hub serving one dataset repository at one commit (module doc).

    ``files`` maps repository paths to bytes (or :class:`Shard`); ``.parquet`` files are served as LFS files.
    ``infos`` (None: none) is served as ``dataset_infos.json``; ``branches`` resolve to ``sha``.
    """

    files: dict[str, Any]
    repo: str = "huggan/wikiart"
    sha: str = DEFAULT_SHA
    infos: bytes | None = INFOS_BYTES
    branches: tuple[str, ...] = ("main",)
    page_size: int = 5
    rate_limit: str | None = "cdn"
    retry_after: int = 1
    requests: list[Seen] = field(default_factory=list, init=False)
    _files: dict[str, _File] = field(default_factory=dict, init=False)
    _corrupt: set[str] = field(default_factory=set, init=False)
    _limited: bool = field(default=False, init=False)
    _server: ThreadingHTTPServer | None = field(default=None, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        for path, value in self.files.items():
            data = value.data if isinstance(value, Shard) else value
            self._files[path] = _File(data, lfs=path.endswith(".parquet"))
        if self.infos is not None:
            self._files["dataset_infos.json"] = _File(self.infos, lfs=False)
        self._files[".gitattributes"] = _File(b"*.parquet filter=lfs diff=lfs merge=lfs -text\n", lfs=False)

    # ------------------------------------------------------------------------------------------ life cycle

    def handler(self) -> type[BaseHTTPRequestHandler]:
        return _handler(self)

    # ------------------------------------------------------------------------------------------ for tests

    def corrupt(self, path: str) -> None:
        """Serve ``path`` with its last 10 bytes zeroed from now on (same size, wrong checksum)."""
        self._corrupt.add(path)

    def body(self, path: str) -> bytes:
        data = self._files[path].data
        return data[:-10] + b"\0" * 10 if path in self._corrupt else data

    def seen(self, kind: str, method: str | None = None) -> list[Seen]:
        """The requests of one kind (``revision``, ``tree``, ``resolve``, ``cdn``), optionally of one method."""
        return [r for r in self.requests if _kind(r.path) == kind and (method is None or r.method == method)]

    def shard_downloads(self) -> list[str]:
        """Repository paths of the shards whose bodies were sent (200/206 GET answers on the CDN), in order."""
        by_hash = {sha256(f.data): p for p, f in self._files.items() if f.lfs}
        return [by_hash[r.path.rsplit("/", 1)[1]] for r in self.seen("cdn", "GET") if r.status in (200, 206)]

    # ------------------------------------------------------------------------------------------ answers

    def answer(self, method: str, target: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        split = urlsplit(target)
        path, query = unquote(split.path), parse_qs(split.query)
        kind = _kind(path)
        with self._lock:
            limited = self.rate_limit == kind and not self._limited and kind is not None
            self._limited = self._limited or limited
        if limited:
            return 429, {"Retry-After": str(self.retry_after), "Content-Type": "application/json"}, b'{"error":"slow"}'
        api = f"/api/datasets/{self.repo}"
        if path.startswith(f"{api}/revision/"):
            rev = path.removeprefix(f"{api}/revision/")
            if rev not in (*self.branches, self.sha):
                return _error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return _json({"id": self.repo, "sha": self.sha, "private": False, "siblings": None})
        if path.startswith(f"{api}/tree/"):
            return self._tree(path.removeprefix(f"{api}/tree/"), query)
        prefix = f"/datasets/{self.repo}/resolve/"
        if path.startswith(prefix):
            rev, _, file = path.removeprefix(prefix).partition("/")
            return self._resolve(rev, file, method, headers)
        if kind == "cdn":
            digest = path.rsplit("/", 1)[1]
            match = next((p for p, f in self._files.items() if f.lfs and sha256(f.data) == digest), None)
            if match is None:
                return 404, {}, b"no such object"
            return _body(self.body(match), headers, {"Content-Type": "application/octet-stream"})
        return _error(404, "RepoNotFound", f"no route {path}")

    def _tree(self, rest: str, query: dict[str, list[str]]) -> tuple[int, dict[str, str], bytes]:
        rev, _, folder = rest.partition("/")
        if rev not in (*self.branches, self.sha):
            return _error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        folder = folder.strip("/")
        prefix = f"{folder}/" if folder else ""
        entries: dict[str, dict[str, Any]] = {}
        for path, f in sorted(self._files.items()):
            if not path.startswith(prefix):
                continue
            head, sep, _ = path.removeprefix(prefix).partition("/")
            if sep:  # a folder below this one
                sub = prefix + head
                entries[sub] = {"type": "directory", "oid": git_oid(sub.encode()), "size": 0, "path": sub}
                continue
            entry: dict[str, Any] = {"type": "file", "oid": git_oid(f.data), "size": len(f.data), "path": path}
            if f.lfs:
                entry["lfs"] = {"oid": sha256(f.data), "size": len(f.data), "pointerSize": 134}
            entries[path] = entry
        if folder and not entries:
            return _error(404, "EntryNotFound", f"{folder} does not exist on {rev}")
        listing = list(entries.values())
        start = int(query.get("cursor", ["0"])[0])
        page = listing[start : start + self.page_size]
        headers = {"Content-Type": "application/json"}
        if start + self.page_size < len(listing):
            params = "&".join(f"{k}={v[0]}" for k, v in query.items() if k != "cursor")
            where = f"/api/datasets/{self.repo}/tree/{quote(rev, safe='')}" + (f"/{folder}" if folder else "")
            headers["Link"] = f'<{self.url}{where}?{params}&cursor={start + self.page_size}>; rel="next"'
        return 200, headers, json.dumps(page).encode()

    def _resolve(self, rev: str, file: str, method: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        if rev not in (*self.branches, self.sha):
            return _error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        f = self._files.get(file)
        if f is None:
            status, hdrs, body = _error(404, "EntryNotFound", f"{file} does not exist")
            return status, {**hdrs, "X-Repo-Commit": self.sha}, body
        hub = {"X-Repo-Commit": self.sha, "ETag": f'"{git_oid(f.data)}"'}
        if f.lfs:
            digest = sha256(f.data)
            hub |= {"X-Linked-Etag": f'"{digest}"', "X-Linked-Size": str(len(f.data))}
            hub |= {"Location": f"{self.cdn}/cdn/{digest}?Expires=9999999999&Signature=fake", "Content-Length": "0"}
            return 302, hub, b""
        return _body(self.body(file), headers, {**hub, "Content-Type": "application/octet-stream"})


def _kind(path: str) -> str | None:
    if "/revision/" in path:
        return "revision"
    if "/tree/" in path:
        return "tree"
    if "/resolve/" in path:
        return "resolve"
    if path.startswith("/cdn/"):
        return "cdn"
    return None


def _json(obj: Any) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/json"}, json.dumps(obj).encode()


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    return status, {"X-Error-Code": code, "Content-Type": "application/json"}, json.dumps({"error": message}).encode()


_RANGE = re.compile(r"^bytes=(\d+)-$")


def _body(data: bytes, request: dict[str, str], headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """``data`` gzip-encoded when the request accepts gzip (a Range is then ignored, as CloudFront does), else raw,
    a ``Range: bytes=N-`` answered with 206."""
    accepted = {e.split(";")[0].strip().lower() for e in request.get("accept-encoding", "").split(",")}
    if "gzip" in accepted:
        return 200, {**headers, "Content-Encoding": "gzip", "Vary": "Accept-Encoding"}, gzip.compress(data, mtime=0)
    match = _RANGE.match(request.get("range", ""))
    if match and int(match[1]) < len(data):
        start = int(match[1])
        return 206, {**headers, "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}, data[start:]
    return 200, headers, data


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self, method: str) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, out, body = hub.answer(method, self.path, headers)
            split = urlsplit(self.path)
            encoding = out.get("Content-Encoding", "")
            hub.requests.append(Seen(method, unquote(split.path), parse_qs(split.query), headers, status, encoding))
            self.send_response(status)
            out = {**out, "Content-Length": str(len(body))}
            for k, v in out.items():
                self.send_header(k, v)
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(body)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_HEAD(self) -> None:
            self._serve("HEAD")

        def log_message(self, *args: object) -> None:
            pass

    return Handler
