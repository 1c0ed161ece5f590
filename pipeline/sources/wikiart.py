"""WikiArt paintings from a Hugging Face parquet mirror (default ``huggan/wikiart``), pinned by commit.

Steps: resolve ``revision`` to a commit sha (``/api/datasets/<repo>/revision/<rev>``), list the parquet shards
with their LFS sha256 (``/api/datasets/<repo>/tree/<sha>/<data_dir>``), download the first ``shards`` of them
(sorted by path) into the download cache with checksum verification, then choose ``per_class`` rows per class
of ``class_by`` (after the style/artist/genre filters) with a seeded RNG and write their image bytes unchanged.
Class names come from the ``huggingface`` schema metadata that the ``datasets`` library writes into each shard.
"""

from __future__ import annotations

import json
import logging
import random
from collections import defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow.parquet as pq

from pipeline.config import DownloadSection, WikiArtSource
from pipeline.download import RetryPolicy, download, get_json
from pipeline.io import sniff_image_suffix, write_bytes_atomic
from pipeline.sources import FetchError, Record, make_record, safe_id

log = logging.getLogger(__name__)

LABEL_COLUMNS = ("style", "artist", "genre")


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


def _label(value: int, names: list[str] | None) -> str:
    return names[value] if names is not None and 0 <= value < len(names) else str(value)


def _select(
    shard_files: list[Path], cfg: WikiArtSource
) -> list[tuple[int, int, str]]:  # (shard index, row index, class label)
    filters = {"style": cfg.styles, "artist": cfg.artists, "genre": cfg.genres}
    by_class: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for s, path in enumerate(shard_files):
        pf = pq.ParquetFile(path)
        names = class_names(pf)
        needed = sorted({cfg.class_by, *(k for k, v in filters.items() if v)})
        missing = [c for c in needed if c not in pf.schema_arrow.names]
        if missing:
            raise FetchError(f"{path}: shard has no column(s) {', '.join(missing)} (columns: {pf.schema_arrow.names})")
        table = pf.read(columns=needed)
        columns = {c: table.column(c).to_pylist() for c in needed}
        for col, wanted in filters.items():
            if not wanted:
                continue
            valid = names.get(col)
            unknown = [w for w in wanted if valid is not None and w not in valid]
            if unknown:
                raise FetchError(
                    f"fetch.wikiart.{col}s: unknown {col} name(s) {', '.join(unknown)}; valid: {', '.join(valid or [])}"
                )
        for row in range(table.num_rows):
            keep = all(
                not wanted or _label(columns[col][row], names.get(col)) in wanted for col, wanted in filters.items()
            )
            if keep:
                by_class[_label(columns[cfg.class_by][row], names.get(cfg.class_by))].append((s, row))
    rng = random.Random(cfg.seed)
    chosen: list[tuple[int, int, str]] = []
    for label in sorted(by_class):
        rows = by_class[label]
        if len(rows) < cfg.per_class:
            log.warning(
                "wikiart: class %s has only %d matching rows (per_class = %d)",
                label,
                len(rows),
                cfg.per_class,
            )
        for s, row in sorted(rng.sample(rows, min(cfg.per_class, len(rows)))):
            chosen.append((s, row, label))
    if not chosen:
        raise FetchError(
            f"fetch.wikiart: no rows match styles={cfg.styles} artists={cfg.artists} genres={cfg.genres} "
            f"in {len(shard_files)} shard(s)"
        )
    return sorted(chosen)


def _row_image_bytes(pf: pq.ParquetFile, rows: list[int]) -> dict[int, bytes]:
    """Image bytes of ``rows`` (sorted), reading only the row groups that contain them."""
    out: dict[int, bytes] = {}
    start = 0
    wanted = set(rows)
    for rg in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(rg).num_rows
        hits = [r for r in range(start, start + n) if r in wanted]
        if hits:
            column = pf.read_row_group(rg, columns=["image"]).column("image").to_pylist()
            for r in hits:
                cell = column[r - start]
                data = cell.get("bytes") if isinstance(cell, dict) else cell
                if data:
                    out[r] = data
        start += n
    return out


def fetch_wikiart(cfg: WikiArtSource, dl: DownloadSection, raw_dir: Path, role: str) -> list[Record]:
    """Download the configured shards (cached, verified) and write the chosen paintings to ``raw_dir/role``."""
    policy = RetryPolicy(retries=dl.retries, backoff_s=dl.backoff_s, timeout_s=dl.timeout_s)
    api = f"{cfg.endpoint.rstrip('/')}/api/datasets/{cfg.repo}"
    info = get_json(f"{api}/revision/{quote(cfg.revision, safe='')}", policy=policy)
    sha = info.get("sha") if isinstance(info, dict) else None
    if not sha:
        raise FetchError(f"fetch.wikiart: {api}/revision/{cfg.revision} gave no commit sha")
    tree = get_json(f"{api}/tree/{sha}/{cfg.data_dir}".rstrip("/"), policy=policy)
    shards = sorted(
        (e for e in tree if e.get("type") == "file" and str(e.get("path", "")).endswith(".parquet")),
        key=lambda e: e["path"],
    )[: cfg.shards]
    if not shards:
        raise FetchError(f"fetch.wikiart: no parquet files under {cfg.repo}@{sha}/{cfg.data_dir}")
    cache = Path(dl.cache_dir) / "wikiart" / safe_id(cfg.repo) / sha
    urls, files = [], []
    for entry in shards:
        url = f"{cfg.endpoint.rstrip('/')}/datasets/{cfg.repo}/resolve/{sha}/{entry['path']}"
        checksum = (entry.get("lfs") or {}).get("oid") or (entry.get("lfs") or {}).get("sha256")
        log.info("wikiart: shard %s", entry["path"])
        files.append(download(url, cache / entry["path"], sha256=checksum, policy=policy))
        urls.append(url)
    chosen = _select(files, cfg)
    records = []
    (raw_dir / role).mkdir(parents=True, exist_ok=True)
    for s, path in enumerate(files):
        rows = [row for shard, row, _ in chosen if shard == s]
        if not rows:
            continue
        images = _row_image_bytes(pq.ParquetFile(path), rows)
        for shard, row, label in chosen:
            if shard != s:
                continue
            data = images.get(row)
            suffix = sniff_image_suffix(data) if data else None
            if suffix is None:
                log.warning("wikiart: %s row %d has no decodable image; skipped", path.name, row)
                continue
            ident = safe_id(f"{label}-{Path(shards[s]['path']).stem}-{row}")
            dest = raw_dir / role / f"{ident}{suffix}"
            write_bytes_atomic(dest, data)
            records.append(
                make_record(raw_dir, role, "wikiart", ident, dest, f"{urls[s]}#row={row}", cfg.license, label)
            )
    log.info("wikiart: %d paintings from %s@%s", len(records), cfg.repo, sha[:12])
    return records
