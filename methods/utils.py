"""Small helpers shared across packages."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from methods.errors import NstError

P = TypeVar("P")


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


def replace_params(params: P, method: str, changes: dict[str, Any]) -> P:
    """``dataclasses.replace`` for a method's frozen params dataclass; unknown keys raise one clear error."""
    names = [f.name for f in dataclasses.fields(params)]  # type: ignore[arg-type]
    unknown = sorted(set(changes) - set(names))
    if unknown:
        raise NstError(f"{method}: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    return dataclasses.replace(params, **changes)  # type: ignore[type-var]
