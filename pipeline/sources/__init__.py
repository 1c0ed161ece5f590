"""Data sources for the fetch stage. Each writes images into ``<raw>/<role>/`` and returns manifest records.

``sample``  the embedded set in data/sample (offline, the default)
``folder``  the user's own directories
``wikiart`` parquet shards of a pinned revision of a Hugging Face WikiArt mirror (style only)
``streets`` street-level photos from the Mapillary Graph API (content only; CC BY-SA 4.0; needs a token)
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from methods.errors import NstError
from methods.utils import sha256_file
from pipeline.io import ImageError, image_size, write_csv

log = logging.getLogger(__name__)

ROLES = ("content", "style")


class FetchError(NstError):
    """A source cannot deliver (bad folder, missing token, empty selection, ...)."""


@dataclass(frozen=True)
class Record:
    """One row of ``data/raw/manifest.csv``."""

    role: str  # content | style
    source: str  # sample | folder | wikiart | streets
    id: str  # unique within its role; the prepared file is named after it
    file: str  # path relative to the raw folder, e.g. "content/dog.jpg"
    url: str  # where it came from: a URL, or a path for local sources
    license: str
    sha256: str
    width: int | None  # None when the header cannot be read (prepare then skips and counts it)
    height: int | None
    label: str  # class label (e.g. the WikiArt style) or ""
    artist: str = ""  # WikiArt: the painting's artist, style and genre names ("" where the source has none)
    style: str = ""
    genre: str = ""
    sequence: str = ""  # Mapillary: the sequence (one capture drive) the photo belongs to; prepare keeps one together


FIELDS = tuple(f.name for f in dataclasses.fields(Record))


def safe_id(text: str) -> str:
    """A filesystem- and DVC-friendly id: letters, digits, '-', '_' and '.' only."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return cleaned or "image"


def unique_id(base: str, taken: set[str]) -> str:
    """``base``, or ``base_2``, ``base_3``, ... whichever is not yet in ``taken`` (which is updated)."""
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}_{n}"
    taken.add(candidate)
    return candidate


def make_record(
    raw_dir: Path, role: str, source: str, ident: str, path: Path, url: str, license: str, label: str = "", **extra: str
) -> Record:
    """Build the manifest row for an image already written to ``path`` (inside ``raw_dir``); ``extra`` fills the
    optional columns (``artist``, ``style``, ``genre``, ``sequence``)."""
    try:
        width, height = image_size(path)
    except ImageError as exc:
        log.warning("%s (kept for prepare to report): %s", path.name, exc)
        width = height = None
    return Record(
        role=role,
        source=source,
        id=ident,
        file=path.relative_to(raw_dir).as_posix(),
        url=url,
        license=license,
        sha256=sha256_file(path),
        width=width,
        height=height,
        label=label,
        **extra,
    )


def copy_into(src: Path, raw_dir: Path, role: str, ident: str) -> Path:
    """Copy ``src`` to ``<raw_dir>/<role>/<ident><suffix>`` and return the new path."""
    dest = raw_dir / role / f"{ident}{src.suffix.lower()}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return dest


def write_manifest(records: list[Record], path: Path) -> None:
    """Write ``records`` as CSV (columns = :data:`FIELDS`)."""
    write_csv([dataclasses.asdict(rec) for rec in records], FIELDS, path)


def read_manifest(path: Path) -> list[Record]:
    """Read a manifest written by :func:`write_manifest`; one clear error for a missing or malformed file."""
    if not path.is_file():
        raise FetchError(f"{path}: manifest not found (run the fetch stage first)")
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or set(FIELDS) - set(reader.fieldnames):
            missing = sorted(set(FIELDS) - set(reader.fieldnames or []))
            raise FetchError(f"{path}: manifest lacks column(s) {', '.join(missing)}")
        out = []
        for line, row in enumerate(reader, start=2):
            try:
                out.append(
                    Record(
                        **{
                            **{k: row[k] for k in FIELDS},
                            "width": int(row["width"]) if row["width"] else None,
                            "height": int(row["height"]) if row["height"] else None,
                        }
                    )
                )
            except ValueError as exc:
                raise FetchError(f"{path}:{line}: malformed row ({exc})") from exc
    return out


SourceFn = Callable[..., list[Record]]
