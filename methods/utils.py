"""Small helpers shared across packages, including the project's one atomic file writer.

Every file the project writes (images, CSV/JSON/YAML, models, checkpoints, downloads, whole output folders) goes
through :func:`atomic_path` / :func:`atomic_dir` (or the ``write_*_atomic`` / :func:`save_torch_atomic` /
:func:`replace_file` helpers built on them): it is written under a temporary name next to its destination and
renamed into place in one step, so readers only ever see a complete file, and a failure leaves the previous file
(or folder) untouched and no temporary behind. Files get the mode an ordinary ``open(path, "w")`` would give them
(``0o666 & ~umask``), folders that of ``mkdir`` (``0o777 & ~umask``) -- not ``mkstemp``'s / ``mkdtemp``'s private
0600 / 0700.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks (works for multi-GB files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------- atomic files


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (``os.umask`` is a set-and-restore race)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode of a newly created ordinary file: ``0o666 & ~umask``."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """The mode of a newly created ordinary folder: ``0o777 & ~umask``."""
    return 0o777 & ~_umask()


def _temp_name(path: Path, suffix: str) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}{suffix}")


def _new_temp_file(path: Path) -> Path:
    """Create an empty file next to ``path`` with a fresh name; the kernel applies the umask to 0666."""
    while True:
        tmp = _temp_name(path, ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp


def _new_temp_dir(path: Path, suffix: str) -> Path:
    """Create an empty folder next to ``path`` with a fresh name; the kernel applies the umask to 0777."""
    while True:
        tmp = _temp_name(path, suffix)
        try:
            tmp.mkdir(0o777)
        except FileExistsError:
            continue
        return tmp


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path next to ``path`` (parents created); on success it replaces ``path`` in one
    rename, with the ordinary file mode ``0o666 & ~umask``.

    On error the temporary file is removed and ``path`` (if it existed) is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp_file(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder (mode ``0o777 & ~umask``) that replaces ``path`` as a whole on success.

    The old ``path`` survives any failure inside the block (it is only moved aside, then deleted, after the new
    folder is complete); no temporary folder is left behind either way.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp_dir(path, ".tmp")
    try:
        yield tmp
        old = None
        if path.exists():
            old = _new_temp_dir(path, ".old")
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def load_torch(path: Path, error: type[Exception], missing: str, unreadable: str) -> Any:
    """``torch.load`` (CPU, weights only) with one clear ``error``: ``missing`` when there is no file, ``unreadable``
    plus the cause when torch cannot read it (torch raises many types for a corrupt file: pickle, zip, EOF, runtime)."""
    import torch

    if not path.is_file():
        raise error(missing)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise error(f"{unreadable} ({type(exc).__name__}: {exc})") from exc


def save_torch_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save(obj)`` to ``path`` atomically (models, checkpoints)."""
    import torch  # here, not at the top: the file helpers of fetch and prepare run without torch

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)  # a file object: torch then names the archive "archive", not after the temp file


def replace_file(src: str | Path, path: str | Path) -> None:
    """Move a finished file ``src`` (e.g. a download's ``.part``, written over several attempts) onto ``path`` in one
    rename, giving it the ordinary file mode ``0o666 & ~umask`` whatever it was created with."""
    os.chmod(src, file_mode())
    os.replace(src, path)


# ----------------------------------------------------------------------------------------- fingerprints
