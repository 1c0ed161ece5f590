"""WikiArt paintings from a Hugging Face parquet mirror (default ``huggan/wikiart``), pinned by commit.

The Hub is reached through ``huggingface_hub`` (its ``HfApi`` and ``hf_hub_download``: revision lookup, paginated
tree listing, ``/resolve/`` with its redirect, retries with ``Retry-After``, the download cache) and the shards are
read with pyarrow. Steps:

1. resolve ``revision`` to a commit sha (``HfApi.dataset_info``) and list the parquet shards under ``data_dir`` with
   their LFS sha256 (``HfApi.list_repo_tree``, which follows the listing's ``Link: rel="next"`` pages);
2. download ``shards`` of them (``hf_hub_download`` into ``<cache_dir>/huggingface``, the library's cache layout),
   each checked against the listing's sha256 (a cached copy too): spread evenly over the listing
   (``shard_order: spread``; huggan/wikiart's rows seem grouped by artist, so its first shards miss whole styles) or
   the first by path (``first``); then, while a class that ``class_by``'s own filter lists has fewer than
   ``per_class`` matching rows, one more shard at a time in the same order, up to ``max_shards`` in all;
3. find the class names of the label columns (artist, genre, style hold integers): from a shard's ``huggingface``
   schema metadata where it has them (``datasets`` >= 2.10 writes it), otherwise from the repository's
   ``dataset_infos.json`` at the same commit, laid out as ``{config: {"features": {column: {"names": [...]}}}}``
   (huggan/wikiart, pushed in 2022 with an older ``datasets``: config ``huggan--wikiart``, 129 artists, 11 genres,
   27 styles), downloaded the same way and checked against the git blob id the listing gives;
4. count the matching rows per class in the label columns of the shards read: a listed class short of ``per_class``
   by more than ``shortfall_tolerance`` (a fraction of ``per_class``) is one error naming the class, its rows and the
   shards read; a smaller shortfall is a warning;
5. choose ``per_class`` rows per class of ``class_by`` (after the style/artist/genre filters) with a seeded RNG, read
   only the chosen rows' image bytes (``image.bytes``) out of each shard, row group by row group in small batches,
   and write them unchanged, with the artist, style and genre names in the manifest.

The fetch's HTTP client (``huggingface_hub.set_client_factory``) bounds every request by ``fetch.download.timeout_s``
(the library leaves listings unbounded) and ends the fetch at once when a 429/503 asks to wait longer than
``fetch.download.max_retry_after_s`` (the library would sleep as long as asked).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pyarrow as pa
import pyarrow.parquet as pq
from huggingface_hub import HfApi, hf_hub_download, hf_hub_url, set_client_factory, try_to_load_from_cache
from huggingface_hub.errors import (
    EntryNotFoundError,
    FileMetadataError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils._http import default_client_factory
from huggingface_hub.utils.sha import git_hash

from methods.utils import sha256_file
from pipeline.config import DownloadSection, WikiArtSource
from pipeline.download import DownloadError, retry_after_s
from pipeline.io import sniff_image_suffix, write_bytes_atomic
from pipeline.sources import FetchError, Record, make_record, safe_id

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"  # huggingface_hub constants._HF_DEFAULT_ENDPOINT, when HF_ENDPOINT is unset
LABEL_COLUMNS = ("style", "artist", "genre")
INFOS_FILE = "dataset_infos.json"  # datasets' config.DATASETDICT_INFOS_FILENAME
IMAGE_COLUMN = "image.bytes"  # a datasets Image feature is stored as struct<bytes: binary, path: string>
BATCH_ROWS = 16  # image cells decoded at a time: 16 x huggan/wikiart's ~0.46 MB JPEGs = ~7 MB per batch
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def hub_endpoint(cfg: WikiArtSource) -> str:
    """``fetch.wikiart.endpoint``, else ``$HF_ENDPOINT`` (as huggingface_hub reads it), else the public Hub."""
    return (cfg.endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def class_names(pf: pq.ParquetFile) -> dict[str, list[str]]:
    """ClassLabel names per label column from the shard's ``huggingface`` metadata (empty if absent)."""
    meta = pf.schema_arrow.metadata or {}
    raw = meta.get(b"huggingface")
    if not raw:
        return {}
    try:
        features: dict[str, Any] = json.loads(raw)["info"]["features"]
    except (ValueError, KeyError, TypeError):
        return {}
    return {k: list(v["names"]) for k, v in features.items() if isinstance(v, dict) and "names" in v}


def infos_class_names(doc: Any, repo: str, where: str) -> tuple[str, dict[str, list[str]]]:
    """``(config, {column: names})`` from a parsed ``dataset_infos.json``.

    The config is the only one, else ``<owner>--<name>`` (how ``push_to_hub`` named it: ``huggan--wikiart``), else
    ``default``. ``where`` names the file in error messages.
    """
    if not isinstance(doc, dict) or not doc:
        raise FetchError(f'{where}: expected an object of configs, {{config: {{"features": ...}}}}')
    preferred = repo.replace("/", "--")
    config = next(iter(doc)) if len(doc) == 1 else preferred if preferred in doc else "default"
    if config not in doc:
        raise FetchError(f"{where}: several configs ({', '.join(doc)}) and none named {preferred!r} or 'default'")
    features = doc[config].get("features") if isinstance(doc[config], dict) else None
    if not isinstance(features, dict):
        raise FetchError(f'{where}: no ["{config}"]["features"] object')
    names = {
        col: [str(n) for n in spec["names"]]
        for col, spec in features.items()
        if isinstance(spec, dict) and isinstance(spec.get("names"), list)
    }
    return config, names


# ----------------------------------------------------------------------------------------- the Hub


@contextlib.contextmanager
def bounded_hub_client(timeout_s: float, max_retry_after_s: float) -> Iterator[None]:
    """Within the block, huggingface_hub's shared HTTP client gives every request a ``timeout_s`` limit where the
    library set none, and raises :class:`DownloadError` on a 429/503 that asks to wait more than
    ``max_retry_after_s`` (``Retry-After``, or the ``t=`` of the Hub's ``RateLimit`` header)."""

    def bound(request: httpx2.Request) -> None:
        limits = request.extensions.get("timeout") or httpx2.Timeout(None).as_dict()
        if None in limits.values():
            request.extensions = {**request.extensions, "timeout": {k: v or timeout_s for k, v in limits.items()}}

    def refuse_long_waits(response: httpx2.Response) -> None:
        asked = retry_after_s(response.headers) if response.status_code in (429, 503) else None
        if asked is not None and asked > max_retry_after_s:
            raise DownloadError(
                f"{response.request.url}: HTTP {response.status_code}, and the server asks to wait {asked:.0f} s "
                f"before retrying (Retry-After), more than fetch.download.max_retry_after_s = {max_retry_after_s:g} s;"
                " try again later or raise that bound",
                response.status_code,
            )

    def factory() -> httpx2.Client:
        client = default_client_factory()
        hooks = client.event_hooks
        client.event_hooks = {
            "request": [*hooks["request"], bound],
            "response": [*hooks["response"], refuse_long_waits],
        }
        return client

    set_client_factory(factory)
    try:
        yield
    finally:
        set_client_factory(default_client_factory)


@contextlib.contextmanager
def _hub_errors(what: str) -> Iterator[None]:
    """huggingface_hub's and httpx's failures as one :class:`DownloadError` naming what was being fetched."""
    try:
        yield
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise FetchError(f"fetch.wikiart: {what}: {str(exc).splitlines()[0]}") from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        raise DownloadError(f"fetch.wikiart: {what}: {str(exc).splitlines()[0]}", status) from exc
    except (httpx2.HTTPError, FileMetadataError, EntryNotFoundError, OSError) as exc:
        raise DownloadError(f"fetch.wikiart: {what}: {exc}") from exc


def _mismatch(path: Path, entry: RepoFile) -> str | None:
    """Why ``path`` is not the file the listing describes (None: it is). LFS files by sha256, others (a few kB: the
    Hub keeps files over 10 MB in LFS) by git blob id."""
    if entry.lfs is not None:
        actual = sha256_file(path)
        return None if actual == entry.lfs.sha256 else f"sha256 mismatch (expected {entry.lfs.sha256}, got {actual})"
    actual = git_hash(path.read_bytes())
    return None if actual == entry.blob_id else f"git blob id mismatch (expected {entry.blob_id}, got {actual})"


def _evict(path: Path) -> None:
    """Remove a cached file: the snapshot's link and the blob it points at."""
    blob = path.resolve()
    path.unlink(missing_ok=True)
    blob.unlink(missing_ok=True)


@dataclass
class _Hub:
    """The dataset repository at one commit: listings and cached, verified downloads through huggingface_hub."""

    api: HfApi
    endpoint: str
    repo: str
    sha: str
    cache: Path
    timeout_s: float
    _infos: tuple[str, dict[str, list[str]]] | None = field(default=None, init=False)
    _infos_problem: str = field(default="", init=False)

    @classmethod
    def open(cls, cfg: WikiArtSource, dl: DownloadSection) -> _Hub:
        """Resolve ``cfg.revision`` to its commit once; every later call is pinned to that sha."""
        endpoint = hub_endpoint(cfg)
        api = HfApi(endpoint=endpoint, library_name="nst-bench")
        with _hub_errors(f"{endpoint}: revision {cfg.revision!r} of {cfg.repo}"):
            info = api.dataset_info(cfg.repo, revision=cfg.revision, timeout=dl.timeout_s)
        if not info.sha:
            raise FetchError(f"fetch.wikiart: {endpoint}: revision {cfg.revision!r} of {cfg.repo} gave no commit sha")
        if not _COMMIT.match(cfg.revision):
            log.warning(
                "wikiart: fetch.wikiart.revision = %r is a branch or tag; it resolved to commit %s (recorded in every "
                "manifest URL); pin that sha for a fetch that cannot change",
                cfg.revision,
                info.sha,
            )
        return cls(api, endpoint, cfg.repo, info.sha, Path(dl.cache_dir) / "huggingface", dl.timeout_s)

    def files(self, folder: str) -> list[RepoFile]:
        """The files directly under ``folder`` ("" for the root), every page of the listing."""
        with _hub_errors(f"listing {self.repo}@{self.sha[:12]}/{folder}"):
            entries = self.api.list_repo_tree(self.repo, folder or None, revision=self.sha, repo_type="dataset")
            return [e for e in entries if isinstance(e, RepoFile)]

    def url(self, path: str) -> str:
        return hf_hub_url(self.repo, path, repo_type="dataset", revision=self.sha, endpoint=self.endpoint)

    def _download(self, path: str) -> Path:
        with _hub_errors(self.url(path)):
            local = hf_hub_download(
                self.repo,
                path,
                repo_type="dataset",
                revision=self.sha,
                cache_dir=self.cache,
                endpoint=self.endpoint,
                etag_timeout=self.timeout_s,
            )
        return Path(str(local))

    def fetch(self, entry: RepoFile) -> Path:
        """``entry`` from the cache or the Hub, checked against the listing; a cached copy that fails is fetched
        again, a fresh one that fails is deleted and the fetch ends."""
        cached = try_to_load_from_cache(self.repo, entry.path, self.cache, self.sha, repo_type="dataset")
        path = self._download(entry.path)
        problem = _mismatch(path, entry)
        if problem is not None and isinstance(cached, str):
            log.warning("wikiart: cached %s fails its checksum (%s); downloading it again", entry.path, problem)
            _evict(path)
            path = self._download(entry.path)
            problem = _mismatch(path, entry)
        if problem is not None:
            _evict(path)
            raise DownloadError(f"fetch.wikiart: {self.url(entry.path)}: {problem}; file discarded")
        return path

    def infos_names(self) -> tuple[str, dict[str, list[str]]] | None:
        """``dataset_infos.json``'s (config, class names), downloaded once; None when the repository has none."""
        if self._infos is None and not self._infos_problem:
            entry = next((e for e in self.files("") if e.path == INFOS_FILE), None)
            if entry is None:
                self._infos_problem = f"{self.repo}@{self.sha[:12]} has no {INFOS_FILE}"
                return None
            path = self.fetch(entry)
            where = f"{self.repo}@{self.sha[:12]}/{INFOS_FILE}"
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                raise FetchError(f"{where}: not valid JSON ({exc})") from None
            self._infos = infos_class_names(doc, self.repo, where)
        return self._infos

    def names_for(self, pf: pq.ParquetFile) -> dict[str, list[str]]:
        """Class names of the label columns in ``pf``: the shard's own metadata first, then dataset_infos.json."""
        names = {c: n for c, n in class_names(pf).items() if c in LABEL_COLUMNS}
        if any(c in pf.schema_arrow.names and c not in names for c in LABEL_COLUMNS):
            infos = self.infos_names()
            if infos is not None:
                names = {**infos[1], **names}
        return names

    def where_names_were_sought(self, shard: str, column: str) -> str:
        """For error messages: every place the class names of ``column`` were looked for."""
        if self._infos is not None:
            key = f'["{self._infos[0]}"]["features"]["{column}"]["names"]'
            infos = f"{self.repo}@{self.sha[:12]}/{INFOS_FILE} has no {key}"
        else:
            infos = self._infos_problem
        return f"{shard} has no 'huggingface' schema metadata with them, and {infos}"


# ----------------------------------------------------------------------------------------- the shards


def _label(value: int | None, names: list[str] | None) -> str:
    if value is None:
        return ""
    return names[value] if names is not None and 0 <= value < len(names) else str(value)


@dataclass(frozen=True)
class _Row:
    shard: int  # position in the download order
    row: int
    labels: dict[str, str]  # column -> name ("" when the shard has no such column)


def shard_order(n: int, start: int, how: str) -> list[int]:
    """Every shard index of a listing of ``n`` in the order they are downloaded; the first ``start`` always are.

    ``first``: by name. ``spread``: the first ``start`` are the centres of ``start`` equal strata of the listing
    (``floor((i + 1/2) n / start)``), then each next one is the shard farthest from every shard taken so far (ties:
    the lower index), so any prefix covers the listing evenly. A listing whose rows are grouped (huggan/wikiart's seem
    ordered by artist) then yields every group's classes, which its first shards may not hold.
    """
    if how == "first":
        return list(range(n))
    start = min(start, n)
    taken = sorted({(2 * i + 1) * n // (2 * start) for i in range(start)})
    rest = [i for i in range(n) if i not in taken]
    while rest:
        nxt = max(rest, key=lambda i: (min(abs(i - t) for t in taken), -i))
        taken.append(nxt)
        rest.remove(nxt)
    return taken


def _open_parquet(path: Path, shard: str) -> pq.ParquetFile:
    try:
        # pre_buffer off: column chunks stream through a 1 MiB buffer instead of being read whole (a shard's image
        # column is one ~0.5 GB chunk)
        return pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
    except (pa.ArrowException, OSError) as exc:
        raise FetchError(f"fetch.wikiart: {shard} ({path}) is not a readable parquet file: {exc}") from None


def read_images(path: Path, rows: Iterable[int], shard: str = "") -> Iterator[tuple[int, bytes | None]]:
    """``(row, image bytes)`` for each of ``rows`` (0-based over the whole file), in row order.

    Only the ``image.bytes`` column is read, row group by row group, in batches of :data:`BATCH_ROWS` rows, and only
    the row groups holding a wanted row; a batch keeps its wanted cells only. pyarrow still reads and decodes a
    dictionary page whole: huggan/wikiart's writer dictionary-encoded each shard's first 1024 images (one page of
    ~0.5 GB) before falling back to plain pages, so that page, held as read and as decoded, bounds the memory:
    about 1.2 GB peak for a real-layout shard (bench/results/fetch_memory.json).
    """
    wanted = sorted(set(rows))
    pf = _open_parquet(path, shard or path.name)
    start = 0
    try:
        for group in range(pf.metadata.num_row_groups):
            size = pf.metadata.row_group(group).num_rows
            hits = [r for r in wanted if start <= r < start + size]
            offset = start
            batches = pf.iter_batches(batch_size=BATCH_ROWS, row_groups=[group], columns=[IMAGE_COLUMN]) if hits else []
            for batch in batches:
                here = [r for r in hits if offset <= r < offset + batch.num_rows]
                if here:
                    cells = batch.column(0).field("bytes").take([r - offset for r in here]).to_pylist()
                    yield from zip(here, cells, strict=True)
                offset += batch.num_rows
                if offset > hits[-1]:
                    break
            start += size
    except (pa.ArrowException, OSError, KeyError) as exc:
        raise FetchError(f"fetch.wikiart: {shard or path.name}: cannot read column {IMAGE_COLUMN}: {exc}") from None


class _Scan:
    """The label columns of the downloaded shards, with the matching rows grouped by their class of ``class_by``."""

    def __init__(self, cfg: WikiArtSource, hub: _Hub) -> None:
        self.cfg, self.hub = cfg, hub
        self.filters = {"style": cfg.styles, "artist": cfg.artists, "genre": cfg.genres}
        self.by_class: dict[str, list[_Row]] = defaultdict(list)
        self.unnamed: dict[str, str] = {}  # label column without names -> where they were sought
        self.read: list[str] = []  # shard paths, in download order

    def add(self, path: Path, shard_path: str) -> None:
        """Read one shard's label columns (integers, a few kB) and file its matching rows by class."""
        cfg = self.cfg
        pf = _open_parquet(path, shard_path)
        needed = sorted({cfg.class_by, *(k for k, v in self.filters.items() if v)})
        missing = [c for c in needed if c not in pf.schema_arrow.names]
        if missing:
            raise FetchError(
                f"{shard_path}: shard has no column(s) {', '.join(missing)} (columns: {pf.schema_arrow.names})"
            )
        names = self.hub.names_for(pf)
        present = [c for c in LABEL_COLUMNS if c in pf.schema_arrow.names]
        for col, wanted in self.filters.items():
            if not wanted:
                continue
            valid = names.get(col)
            if valid is None:
                raise FetchError(
                    f"fetch.wikiart.{col}s selects {col}s by name, but no {col} names were found: "
                    + self.hub.where_names_were_sought(shard_path, col)
                )
            unknown = [w for w in wanted if w not in valid]
            if unknown:
                raise FetchError(
                    f"fetch.wikiart.{col}s: unknown {col} name(s) {', '.join(unknown)}; valid: {', '.join(valid)}"
                )
        self.unnamed.update({c: self.hub.where_names_were_sought(shard_path, c) for c in present if c not in names})
        try:
            table = pf.read(columns=present)
        except (pa.ArrowException, OSError) as exc:
            raise FetchError(f"fetch.wikiart: {shard_path}: cannot read its label columns: {exc}") from None
        columns = {c: table.column(c).to_pylist() for c in present}
        for row in range(table.num_rows):
            labels = {c: _label(columns[c][row], names.get(c)) if c in columns else "" for c in LABEL_COLUMNS}
            if all(not wanted or labels[col] in wanted for col, wanted in self.filters.items()):
                self.by_class[labels[cfg.class_by]].append(_Row(len(self.read), row, labels))
        self.read.append(shard_path)

    def available(self) -> dict[str, int]:
        """Matching rows per class of ``class_by`` in the shards read: every class ``class_by``'s own filter lists
        (0 when absent), else every class seen."""
        listed = self.filters[self.cfg.class_by]
        classes = listed or sorted(self.by_class)
        return {c: len(self.by_class.get(c, ())) for c in classes}

    def short(self) -> dict[str, int]:
        """The classes listed in ``class_by``'s own filter that have fewer than ``per_class`` rows so far, with their
        counts. Without such a filter the classes are not known in advance, and none is short."""
        if not self.filters[self.cfg.class_by]:
            return {}
        return {c: n for c, n in self.available().items() if n < self.cfg.per_class}

    def check_targets(self, listed: int) -> None:
        """One error for the listed classes short of ``per_class`` by more than ``shortfall_tolerance``; a warning
        for the others that have fewer rows than ``per_class``."""
        cfg = self.cfg
        col = cfg.class_by
        log.info(
            "wikiart: matching rows per %s in %d of %d shard(s): %s",
            col,
            len(self.read),
            listed,
            ", ".join(f"{c} {n}" for c, n in self.available().items()),
        )
        gaps = {c: (cfg.per_class - n) / cfg.per_class for c, n in self.short().items()}
        over = {c: g for c, g in gaps.items() if g > cfg.shortfall_tolerance}
        if over:
            counts = self.available()
            shards = ", ".join(Path(p).stem for p in self.read)
            raise FetchError(
                f"fetch.wikiart: per_class = {cfg.per_class} cannot be met: "
                + "; ".join(f"{col} {c} has {counts[c]} matching rows ({g:.0%} short)" for c, g in over.items())
                + f" in the {len(self.read)} of {listed} shard(s) read (max_shards = {cfg.max_shards}: {shards}); "
                f"fetch.wikiart.shortfall_tolerance = {cfg.shortfall_tolerance:g} allows {cfg.shortfall_tolerance:.0%}."
                f" Raise fetch.wikiart.max_shards, lower fetch.wikiart.per_class or drop the {col} from "
                f"fetch.wikiart.{col}s"
            )
        within = f", within fetch.wikiart.shortfall_tolerance = {cfg.shortfall_tolerance:g}"
        for label, n in self.available().items():
            if n < cfg.per_class:
                log.warning(
                    "wikiart: class %s has only %d matching rows (per_class = %d) in %d shard(s)%s; raise "
                    "fetch.wikiart.max_shards to search more of them",
                    label,
                    n,
                    cfg.per_class,
                    len(self.read),
                    within if label in gaps else "",
                )

    def choose(self) -> list[_Row]:
        """``per_class`` rows of every class (all of a class that has fewer), drawn with the seed."""
        cfg = self.cfg
        for col, where in sorted(self.unnamed.items()):
            log.warning("wikiart: no %s names (%s); the manifest records their numbers instead", col, where)
        rng = random.Random(cfg.seed)
        chosen: list[_Row] = []
        for label in sorted(self.by_class):
            chosen.extend(rng.sample(self.by_class[label], min(cfg.per_class, len(self.by_class[label]))))
        if not chosen:
            raise FetchError(
                f"fetch.wikiart: no rows match styles={cfg.styles} artists={cfg.artists} genres={cfg.genres} "
                f"in {len(self.read)} shard(s)"
            )
        return sorted(chosen, key=lambda r: (r.shard, r.row))


# ----------------------------------------------------------------------------------------- the fetch


def _download_shards(cfg: WikiArtSource, hub: _Hub, listing: list[RepoFile]) -> tuple[_Scan, list[Path]]:
    """Download and scan ``shards`` shards, then one more at a time while a listed class is short."""
    scan = _Scan(cfg, hub)
    files: list[Path] = []
    for k, index in enumerate(shard_order(len(listing), cfg.shards, cfg.shard_order)[: cfg.max_shards]):
        if k >= cfg.shards:
            short = scan.short()
            if not short:
                break
            log.info(
                "wikiart: %s below per_class = %d in %d shard(s); one more",
                ", ".join(f"{c} ({n})" for c, n in sorted(short.items())),
                cfg.per_class,
                k,
            )
        entry = listing[index]
        log.info("wikiart: shard %s (%d of %d)", entry.path, index + 1, len(listing))
        files.append(hub.fetch(entry))
        scan.add(files[-1], entry.path)
    return scan, files


def _write_rows(
    cfg: WikiArtSource, hub: _Hub, shard: str, path: Path, rows: dict[int, _Row], out: Path, record: Callable
) -> list[Record]:
    """Write the chosen rows of one shard to ``out``; their records in row order (undecodable cells skipped)."""
    records = []
    for row, data in read_images(path, rows, shard):
        suffix = sniff_image_suffix(data) if data else None
        if suffix is None:
            log.warning("wikiart: %s row %d has no decodable image; skipped", shard, row)
            continue
        pick = rows[row]
        ident = safe_id(f"{pick.labels[cfg.class_by]}-{Path(shard).stem}-{row}")
        dest = out / f"{ident}{suffix}"
        write_bytes_atomic(dest, data)
        records.append(record(ident, dest, f"{hub.url(shard)}#row={row}", pick))
    return records


def fetch_wikiart(cfg: WikiArtSource, dl: DownloadSection, raw_dir: Path, role: str) -> list[Record]:
    """Download shards (cached, verified) until every listed class has its rows, check that the data meets the
    targets, and write the chosen paintings to ``raw_dir/role``."""
    with bounded_hub_client(dl.timeout_s, dl.max_retry_after_s):
        hub = _Hub.open(cfg, dl)
        listing = sorted((e for e in hub.files(cfg.data_dir) if e.path.endswith(".parquet")), key=lambda e: e.path)
        if not listing:
            raise FetchError(f"fetch.wikiart: no parquet files under {cfg.repo}@{hub.sha}/{cfg.data_dir}")
        scan, files = _download_shards(cfg, hub, listing)
    scan.check_targets(len(listing))
    chosen = scan.choose()

    def record(ident: str, dest: Path, url: str, pick: _Row) -> Record:
        label = pick.labels[cfg.class_by]
        return make_record(raw_dir, role, "wikiart", ident, dest, url, cfg.license, label, **pick.labels)

    (raw_dir / role).mkdir(parents=True, exist_ok=True)
    records: list[Record] = []
    for s in sorted(range(len(files)), key=lambda i: scan.read[i]):  # the manifest in shard-name order
        rows = {c.row: c for c in chosen if c.shard == s}
        if rows:
            records += _write_rows(cfg, hub, scan.read[s], files[s], rows, raw_dir / role, record)
    log.info("wikiart: %d paintings from %s@%s", len(records), cfg.repo, hub.sha[:12])
    return records
