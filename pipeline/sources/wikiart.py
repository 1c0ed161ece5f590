"""WikiArt paintings from a Hugging Face parquet mirror (default ``huggan/wikiart``), pinned by commit.

Steps:
1. resolve ``revision`` to a commit sha (``/api/datasets/<repo>/revision/<rev>``) and list the parquet shards with
   their LFS sha256 (``/api/datasets/<repo>/tree/<sha>/<data_dir>``);
2. download ``shards`` of them into the download cache, checksum-verified: spread evenly over the listing
   (``shard_order: spread``; huggan/wikiart's rows seem grouped by artist, so its first shards miss whole styles) or
   the first by path (``first``); then, while a class that ``class_by``'s own filter lists has fewer than
   ``per_class`` matching rows, one more shard at a time in the same order, up to ``max_shards`` in all;
3. find the class names of the label columns (artist, genre, style hold integers): from a shard's ``huggingface``
   schema metadata where it has them (``datasets`` >= 2.10 writes it), otherwise from the repository's
   ``dataset_infos.json`` at the same commit, laid out as ``{config: {"features": {column: {"names": [...]}}}}``
   (huggan/wikiart, pushed in 2022 with an older ``datasets``: config ``huggan--wikiart``, 129 artists, 11 genres,
   27 styles), downloaded into the same cache and checked against the git blob id the tree listing gives;
4. choose ``per_class`` rows per class of ``class_by`` (after the style/artist/genre filters) with a seeded RNG;
5. stream only the chosen rows' image bytes out of the shard (:mod:`pipeline.sources.parquet_cells`: about one image
   in memory at a time) and write them unchanged, with the artist, style and genre names in the manifest.
"""

from __future__ import annotations

import json
import logging
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow.parquet as pq

from pipeline.config import DownloadSection, WikiArtSource
from pipeline.download import RetryPolicy, download, get_json, retry_policy
from pipeline.io import sniff_image_suffix, write_bytes_atomic
from pipeline.sources import FetchError, Record, make_record, safe_id
from pipeline.sources.parquet_cells import read_cells

log = logging.getLogger(__name__)

LABEL_COLUMNS = ("style", "artist", "genre")
INFOS_FILE = "dataset_infos.json"  # datasets' config.DATASETDICT_INFOS_FILENAME
IMAGE_COLUMN = "image.bytes"  # a datasets Image feature is stored as struct<bytes: binary, path: string>


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


@dataclass
class _Hub:
    """The dataset repository at one commit: API listings and cached, verified file downloads."""

    endpoint: str
    repo: str
    sha: str
    policy: RetryPolicy
    cache: Path
    _infos: tuple[str, dict[str, list[str]]] | None = field(default=None, init=False)
    _infos_problem: str = field(default="", init=False)

    @property
    def api(self) -> str:
        return f"{self.endpoint}/api/datasets/{self.repo}"

    def tree(self, folder: str) -> list[dict[str, Any]]:
        listing = get_json(f"{self.api}/tree/{self.sha}/{folder}".rstrip("/"), policy=self.policy)
        if not isinstance(listing, list):
            raise FetchError(f"fetch.wikiart: {self.api}/tree/{self.sha}/{folder} did not answer with a list of files")
        return [e for e in listing if isinstance(e, dict)]

    def resolve_url(self, path: str) -> str:
        return f"{self.endpoint}/datasets/{self.repo}/resolve/{self.sha}/{path}"

    def infos_names(self) -> tuple[str, dict[str, list[str]]] | None:
        """``dataset_infos.json``'s (config, class names), downloaded once; None when the repository has none."""
        if self._infos is None and not self._infos_problem:
            entry = next((e for e in self.tree("") if e.get("path") == INFOS_FILE and e.get("type") == "file"), None)
            if entry is None:
                self._infos_problem = f"{self.repo}@{self.sha[:12]} has no {INFOS_FILE}"
                return None
            lfs = entry.get("lfs") or {}
            path = download(
                self.resolve_url(INFOS_FILE),
                self.cache / INFOS_FILE,
                sha256=lfs.get("oid") or lfs.get("sha256"),
                git_oid=None if lfs else entry.get("oid"),
                policy=self.policy,
            )
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


class _Scan:
    """The label columns of the downloaded shards, with the matching rows grouped by their class of ``class_by``."""

    def __init__(self, cfg: WikiArtSource, hub: _Hub) -> None:
        self.cfg, self.hub = cfg, hub
        self.filters = {"style": cfg.styles, "artist": cfg.artists, "genre": cfg.genres}
        self.by_class: dict[str, list[_Row]] = defaultdict(list)
        self.unnamed: dict[str, str] = {}  # label column without names -> where they were sought
        self.shards = 0

    def add(self, path: Path, shard_path: str) -> None:
        """Read one shard's label columns (integers, a few kB) and file its matching rows by class."""
        cfg = self.cfg
        pf = pq.ParquetFile(path)
        needed = sorted({cfg.class_by, *(k for k, v in self.filters.items() if v)})
        missing = [c for c in needed if c not in pf.schema_arrow.names]
        if missing:
            raise FetchError(f"{path}: shard has no column(s) {', '.join(missing)} (columns: {pf.schema_arrow.names})")
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
        table = pf.read(columns=present)
        columns = {c: table.column(c).to_pylist() for c in present}
        for row in range(table.num_rows):
            labels = {c: _label(columns[c][row], names.get(c)) if c in columns else "" for c in LABEL_COLUMNS}
            if all(not wanted or labels[col] in wanted for col, wanted in self.filters.items()):
                self.by_class[labels[cfg.class_by]].append(_Row(self.shards, row, labels))
        self.shards += 1

    def short(self) -> dict[str, int]:
        """The classes listed in ``class_by``'s own filter that have fewer than ``per_class`` rows so far, with their
        counts. Without such a filter the classes are not known in advance, and none is short."""
        counts = {c: len(self.by_class.get(c, ())) for c in self.filters[self.cfg.class_by]}
        return {c: n for c, n in counts.items() if n < self.cfg.per_class}

    def choose(self) -> list[_Row]:
        """``per_class`` rows of every class, drawn with the seed; a warning for each class that has fewer."""
        cfg = self.cfg
        for col, where in sorted(self.unnamed.items()):
            log.warning("wikiart: no %s names (%s); the manifest records their numbers instead", col, where)
        rng = random.Random(cfg.seed)
        chosen: list[_Row] = []
        short = [(label, len(rows)) for label, rows in sorted(self.by_class.items()) if len(rows) < cfg.per_class]
        short += [(label, 0) for label, n in sorted(self.short().items()) if n == 0]
        for label, n in short:
            log.warning(
                "wikiart: class %s has only %d matching rows (per_class = %d) in %d shard(s); "
                "raise fetch.wikiart.max_shards to search more of them",
                label,
                n,
                cfg.per_class,
                self.shards,
            )
        for label in sorted(self.by_class):
            chosen.extend(rng.sample(self.by_class[label], min(cfg.per_class, len(self.by_class[label]))))
        if not chosen:
            raise FetchError(
                f"fetch.wikiart: no rows match styles={cfg.styles} artists={cfg.artists} genres={cfg.genres} "
                f"in {self.shards} shard(s)"
            )
        return sorted(chosen, key=lambda r: (r.shard, r.row))


def fetch_wikiart(cfg: WikiArtSource, dl: DownloadSection, raw_dir: Path, role: str) -> list[Record]:
    """Download shards (cached, verified) until every listed class has its rows, and write the chosen paintings to
    ``raw_dir/role``."""
    policy = retry_policy(dl)
    endpoint = cfg.endpoint.rstrip("/")
    api = f"{endpoint}/api/datasets/{cfg.repo}"
    info = get_json(f"{api}/revision/{quote(cfg.revision, safe='')}", policy=policy)
    sha = info.get("sha") if isinstance(info, dict) else None
    if not sha:
        raise FetchError(f"fetch.wikiart: {api}/revision/{cfg.revision} gave no commit sha")
    hub = _Hub(endpoint, cfg.repo, sha, policy, Path(dl.cache_dir) / "wikiart" / safe_id(cfg.repo) / sha)
    listing = sorted(
        (e for e in hub.tree(cfg.data_dir) if e.get("type") == "file" and str(e.get("path", "")).endswith(".parquet")),
        key=lambda e: e["path"],
    )
    if not listing:
        raise FetchError(f"fetch.wikiart: no parquet files under {cfg.repo}@{sha}/{cfg.data_dir}")
    scan = _Scan(cfg, hub)
    shards: list[dict[str, Any]] = []  # listing entries in download order
    urls, files = [], []
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
        url = hub.resolve_url(entry["path"])
        checksum = (entry.get("lfs") or {}).get("oid") or (entry.get("lfs") or {}).get("sha256")
        log.info("wikiart: shard %s (%d of %d)", entry["path"], index + 1, len(listing))
        files.append(download(url, hub.cache / entry["path"], sha256=checksum, policy=policy))
        urls.append(url)
        shards.append(entry)
        scan.add(files[-1], entry["path"])
    chosen = scan.choose()
    records = []
    (raw_dir / role).mkdir(parents=True, exist_ok=True)
    for s in sorted(range(len(files)), key=lambda i: shards[i]["path"]):  # the manifest in shard-name order
        path = files[s]
        rows = {c.row: c for c in chosen if c.shard == s}
        if not rows:
            continue
        try:
            cells = read_cells(path, IMAGE_COLUMN, rows)
        except ValueError as exc:
            raise FetchError(f"fetch.wikiart: {exc}") from None
        written: dict[int, Record | None] = dict.fromkeys(rows)  # row -> its record, in row order
        for row, data in cells:
            suffix = sniff_image_suffix(data) if data else None
            if suffix is None:
                log.warning("wikiart: %s row %d has no decodable image; skipped", path.name, row)
                continue
            pick = rows[row]
            ident = safe_id(f"{pick.labels[cfg.class_by]}-{Path(shards[s]['path']).stem}-{row}")
            dest = raw_dir / role / f"{ident}{suffix}"
            write_bytes_atomic(dest, data)
            written[row] = make_record(
                raw_dir,
                role,
                "wikiart",
                ident,
                dest,
                f"{urls[s]}#row={row}",
                cfg.license,
                pick.labels[cfg.class_by],
                **pick.labels,
            )
        records.extend(rec for rec in written.values() if rec is not None)
    log.info("wikiart: %d paintings from %s@%s", len(records), cfg.repo, sha[:12])
    return records
