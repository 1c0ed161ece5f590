"""Small helpers shared across packages."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks (works for multi-GB files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def code_fingerprint(extra: Iterable[str | Path] = ()) -> str:
    """sha256 over the source of the ``methods`` package plus ``extra`` files (a stage's own module).

    Stages that reuse earlier work (resumed stylize pairs, training checkpoints) compare it, so a code change
    recomputes instead of reusing results of the old code.
    """
    digest = hashlib.sha256()
    for path in [*sorted(Path(__file__).parent.rglob("*.py")), *map(Path, extra)]:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
