"""Local sources: the embedded sample (with its ATTRIBUTION.md licences) and the user's own folders."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from pipeline.io import ImageError, list_images
from pipeline.sources import FetchError, Record, copy_into, make_record, safe_id, unique_id

log = logging.getLogger(__name__)

# "- leuvenA.jpg: from Debian package ..., downscaled to 512x384; licence: Apache-2.0 AND BSD-3-Clause (...)"
_ATTRIBUTION_LINE = re.compile(r"^\s*[-*]\s+(?P<file>[^:]+?):\s+(?P<text>.*?licen[cs]e:\s*(?P<license>.+?))\s*$")


def read_attribution(folder: Path) -> dict[str, str]:
    """Map file name -> licence text from ``folder/ATTRIBUTION.md`` (empty when there is none)."""
    path = folder / "ATTRIBUTION.md"
    if not path.is_file():
        return {}
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _ATTRIBUTION_LINE.match(line)
        if match:
            out[match["file"].strip()] = match["license"].strip()
    return out


def _images_or_error(folder: Path, key: str) -> list[Path]:
    try:
        images = list_images(folder)
    except ImageError as exc:
        raise FetchError(f"{key}: {exc}") from None
    if not images:
        raise FetchError(f"{key}: {folder} holds no image files (.jpg, .png, .webp, ...)")
    return images


def copy_folder(
    folder: Path, raw_dir: Path, role: str, source: str, key: str, default_license: str, attribution: bool
) -> list[Record]:
    """Copy every image of ``folder`` into ``<raw_dir>/<role>/`` and describe it."""
    images = _images_or_error(folder, key)
    licences = read_attribution(folder) if attribution else {}
    taken: set[str] = set()
    records = []
    unattributed: list[str] = []
    for src in images:
        ident = unique_id(safe_id(src.stem), taken)
        license = licences.get(src.name)
        if license is None:
            unattributed.append(src.name)
            license = default_license
        dest = copy_into(src, raw_dir, role, ident)
        records.append(make_record(raw_dir, role, source, ident, dest, src.as_posix(), license))
    if attribution and unattributed:
        _warn_unattributed(folder, unattributed, len(images), default_license)
    return records


def _warn_unattributed(folder: Path, names: list[str], total: int, license: str, shown: int = 5) -> None:
    """One warning per folder for the images without an ATTRIBUTION.md line: the count and the first few names."""
    listed = ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")
    missing = "" if (folder / "ATTRIBUTION.md").is_file() else " (there is no such file)"
    log.warning(
        "%d of %d images have no line in %s%s: %s; their licence is recorded as %r",
        len(names),
        total,
        folder / "ATTRIBUTION.md",
        missing,
        listed,
        license,
    )


def fetch_sample(sample_dir: str, raw_dir: Path, role: str) -> list[Record]:
    """The embedded sample: ``<sample_dir>/<role>/`` with licences from its ATTRIBUTION.md."""
    folder = Path(sample_dir) / role
    return copy_folder(folder, raw_dir, role, "sample", "fetch.sample.dir", "unknown (not in ATTRIBUTION.md)", True)


def fetch_folder(folder: str, raw_dir: Path, role: str, license: str) -> list[Record]:
    """The user's own images (licence from ``fetch.folder.license``, or an ATTRIBUTION.md in the folder)."""
    return copy_folder(Path(folder).expanduser(), raw_dir, role, "folder", f"fetch.folder.{role}_dir", license, True)
