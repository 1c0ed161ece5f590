"""Robust HTTP downloads: streamed to a temp file, retried with exponential backoff (or as long as the server's
``Retry-After`` says, within a bound), resumed with HTTP Range where the server allows it, checksum-verified, and
renamed into place atomically. A file at ``dest`` is therefore always complete (and verified when a checksum is
known); a partial body only ever lives in ``dest.part``.

Downloads ask for ``Accept-Encoding: identity`` (as huggingface_hub does): a body the server compresses on the fly
no longer matches its Content-Length once ``requests`` decodes it, and Range offsets count the encoded bytes.
Redirects (the Hub's ``/resolve/`` answers 302 to a CDN) are followed, Range header included.
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import requests
from tqdm.auto import tqdm

from methods.errors import NstError
from methods.utils import replace_file, sha256_file
from pipeline.config import DownloadSection

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_USER_AGENT = "nst-bench/0.1 (+https://github.com/; research benchmark)"


class DownloadError(NstError):
    """A download failed for good (after retries, a non-retryable status, or a checksum mismatch). ``status`` is
    the HTTP status of the last answer: a non-retryable one, or the 429/5xx the retries ended on (None when no answer
    came: timeouts, connection failures; and for checksum failures). ``body``: the start of a non-retryable answer's
    body (an API's error document), else ""."""

    def __init__(self, message: str, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class _Retryable(Exception):
    """A transient failure: worth another attempt, after ``retry_after`` seconds when the server said so."""

    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. Waits are ``backoff_s * 2**attempt`` seconds between attempts, or what a 429/503 answer's
    ``Retry-After`` asks for; an answer asking for more than ``max_retry_after_s`` ends the download at once."""

    retries: int = 4
    backoff_s: float = 1.0
    timeout_s: float = 60.0
    max_retry_after_s: float = 300.0


def retry_policy(cfg: DownloadSection) -> RetryPolicy:
    """The policy ``fetch.download`` describes."""
    return RetryPolicy(
        retries=cfg.retries, backoff_s=cfg.backoff_s, timeout_s=cfg.timeout_s, max_retry_after_s=cfg.max_retry_after_s
    )


_RATELIMIT_RESET = re.compile(r"(?:^|;)\s*t=(\d+(?:\.\d+)?)")


def retry_after_s(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait before retrying, from ``Retry-After`` (delta-seconds or an HTTP date, RFC 9110 sec. 10.2.3),
    else from the ``t=`` of a ``RateLimit`` header (draft-ietf-httpapi-ratelimit-headers, which the Hugging Face Hub
    sends with its 429s); None when neither is there or parses."""
    value = (headers.get("Retry-After") or "").strip()
    if value:
        if value.isdigit():
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            return max(0.0, when.timestamp() - (time.time() if now is None else now))
    match = _RATELIMIT_RESET.search(headers.get("RateLimit") or "")
    return float(match[1]) if match else None


def with_retries(
    what: str, attempt_fn: Callable[[], T], policy: RetryPolicy, sleep: Callable[[float], None] = time.sleep
) -> T:
    """Run ``attempt_fn`` until it succeeds, retrying transient errors ``policy.retries`` times.

    A rate-limit answer that says when to come back (a 429/503 with ``Retry-After`` within ``max_retry_after_s``) is
    waited out without spending one of those retries — the server asked for patience, nothing failed — up to
    ``retries + 1`` such waits in all (so at most ``(retries + 1) * max_retry_after_s`` of them). Otherwise a 429
    that lands on the last of a search's retries (found by the rehearsal: a dense Mapillary box timing out twice,
    then rate-limited) would end the whole fetch."""
    failures = limited = 0
    while True:
        try:
            return attempt_fn()
        except (
            _Retryable,
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
        ) as exc:
            asked = getattr(exc, "retry_after", None)
            status = getattr(exc, "status", None)
            if asked is not None and asked > policy.max_retry_after_s:
                raise DownloadError(
                    f"{what}: {exc}, and the server asks to wait {asked:.0f} s before retrying (Retry-After), more "
                    f"than fetch.download.max_retry_after_s = {policy.max_retry_after_s:g} s; try again later or "
                    "raise that bound",
                    status,
                ) from exc
            attempts = failures + limited + 1
            if asked is not None and limited <= policy.retries:
                limited += 1
                log.warning("%s: attempt %d rate-limited (%s); waiting %.1f s as asked", what, attempts, exc, asked)
                sleep(asked)
                continue
            if failures == policy.retries:
                raise DownloadError(f"{what}: failed after {attempts} attempt(s): {exc}", status) from exc
            wait = asked if asked is not None else policy.backoff_s * 2**failures
            log.warning("%s: attempt %d failed (%s); retrying in %.1f s", what, attempts, exc, wait)
            failures += 1
            sleep(wait)


def _check_status(response: requests.Response, url: str) -> None:
    if response.status_code in RETRYABLE_STATUS:
        raise _Retryable(f"HTTP {response.status_code}", retry_after_s(response.headers), response.status_code)
    if response.status_code >= 400:
        body = response.text[:4096]  # an error document is small; a CDN's error page too
        raise DownloadError(f"{url}: HTTP {response.status_code} {response.reason}", response.status_code, body)


def get_json(
    url: str,
    *,
    policy: RetryPolicy = RetryPolicy(),
    headers: dict[str, str] | None = None,
    session: requests.Session | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """GET a JSON document with the same retry policy as downloads."""
    http = session or requests.Session()
    hdrs = {"User-Agent": _USER_AGENT, **(headers or {})}

    def attempt() -> Any:
        with http.get(url, headers=hdrs, timeout=policy.timeout_s) as response:
            _check_status(response, url)
            try:
                return response.json()
            except ValueError as exc:
                raise DownloadError(f"{url}: response is not JSON ({exc})") from exc

    return with_retries(url, attempt, policy, sleep)


def _fetch_into(url: str, part: Path, http: requests.Session, headers: dict[str, str], policy: RetryPolicy) -> None:
    offset = part.stat().st_size if part.exists() else 0
    hdrs = dict(headers)
    if offset:
        hdrs["Range"] = f"bytes={offset}-"
    with http.get(url, headers=hdrs, stream=True, timeout=policy.timeout_s) as response:
        if response.status_code == 416:  # our partial file is no prefix the server recognises: start over
            part.unlink(missing_ok=True)
            raise _Retryable("HTTP 416 for the resume range; restarting from byte 0")
        _check_status(response, url)
        # A server may compress anyway: requests then decodes the body, so neither Content-Length nor a Range
        # offset describes what lands in the file. Take the whole body again and let the checksum judge it.
        encoded = response.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity")
        if encoded and response.status_code == 206:
            part.unlink(missing_ok=True)
            raise _Retryable(f"a {response.headers['Content-Encoding']}-encoded answer to a Range request; restarting")
        resumed = offset > 0 and response.status_code == 206
        if resumed:
            content_range = response.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {offset}-"):
                part.unlink(missing_ok=True)
                raise _Retryable(f"server answered the resume with Content-Range {content_range!r}; restarting")
        else:
            offset = 0
        length = None if encoded else response.headers.get("Content-Length")
        expected = offset + int(length) if length is not None else None
        with (
            open(part, "ab" if resumed else "wb") as fh,
            tqdm(
                total=expected,
                initial=offset,
                unit="B",
                unit_scale=True,
                desc=part.name[:-5],
                disable=None,
                leave=False,
            ) as bar,
        ):
            for chunk in response.iter_content(chunk_size=1 << 16):
                fh.write(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    if expected is not None and size != expected:
        raise _Retryable(f"incomplete body: {size} of {expected} bytes")


def git_blob_oid(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """The git object id of a file's bytes (sha1 of ``"blob <size>\\0"`` + content): what a Hugging Face tree listing
    gives as ``oid`` for a file that is not in LFS."""
    path = Path(path)
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def _mismatch(path: Path, sha256: str | None, git_oid: str | None) -> str | None:
    """Why ``path`` fails its checksums (None: it passes, or there is nothing to check)."""
    if sha256 is not None and (actual := sha256_file(path)) != sha256.lower():
        return f"sha256 mismatch (expected {sha256.lower()}, got {actual})"
    if git_oid is not None and (actual := git_blob_oid(path)) != git_oid.lower():
        return f"git blob id mismatch (expected {git_oid.lower()}, got {actual})"
    return None


def download(
    url: str,
    dest: str | Path,
    *,
    sha256: str | None = None,
    git_oid: str | None = None,
    policy: RetryPolicy = RetryPolicy(),
    headers: dict[str, str] | None = None,
    session: requests.Session | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Path:
    """Download ``url`` to ``dest`` and return ``dest``.

    A ``dest`` already present is kept when it matches ``sha256`` and ``git_oid`` (see :func:`git_blob_oid`; either
    may be None, and with neither the file is kept as it is).
    The body streams into ``dest.part``; transient failures (connection errors, timeouts, HTTP 408/429/5xx,
    a body shorter than Content-Length) are retried, resuming with a Range request; the finished file is
    checked against ``sha256`` and only then renamed to ``dest``.

    Raises:
        DownloadError: retries exhausted, a non-retryable HTTP status, or a checksum mismatch (the partial
            file is deleted; ``dest`` is never created from a bad body).
    """
    dest = Path(dest)
    checked = sha256 is not None or git_oid is not None
    if dest.is_file():
        if (problem := _mismatch(dest, sha256, git_oid)) is None:
            log.debug("%s: already present%s", dest, " and verified" if checked else "")
            return dest
        log.warning("%s: present but fails its checksum (%s); downloading again", dest, problem)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if not checked:
        # Without a checksum a leftover .part (perhaps of an older version of the file) cannot be trusted to be a
        # prefix of this body: resume only within this call's retries.
        part.unlink(missing_ok=True)
    http = session or requests.Session()
    hdrs = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity", **(headers or {})}
    with_retries(url, lambda: _fetch_into(url, part, http, hdrs, policy), policy, sleep)
    if (problem := _mismatch(part, sha256, git_oid)) is not None:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url}: {problem}; file discarded")
    replace_file(part, dest)  # one rename, with the ordinary file mode
    return dest
