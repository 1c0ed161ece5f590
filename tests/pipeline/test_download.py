"""pipeline.download against a real HTTP server on 127.0.0.1: retries, resume, checksums, atomic placement."""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import os
import random
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from pipeline.download import DownloadError, RetryPolicy, download, get_json, git_blob_oid

FAST = RetryPolicy(retries=3, backoff_s=0.0, timeout_s=5.0)
CHUNK = 1 << 16  # download() writes the body in chunks of this size
# Four chunks, so that half the body is a whole number of chunks: requests drops the partial chunk it was reading
# when the connection breaks, so what reaches ``.part`` (and the resume offset) is a multiple of CHUNK.
DATA = random.Random(0).randbytes(4 * CHUNK)
DATA_SHA = hashlib.sha256(DATA).hexdigest()
HALF = len(DATA) // 2


def no_sleep(_: float) -> None:
    pass


def truncated(srv, sent: int = HALF):
    """A route whose Content-Length says the whole file, but only ``sent`` bytes arrive before the connection
    closes."""
    return lambda req: srv.Reply(200, DATA, {"Content-Type": "application/octet-stream"}, send_bytes=sent)


def full(srv, *, honour_range: bool = True):
    """A route serving DATA (a 206 with the tail for ``Range: bytes=N-`` when ``honour_range``)."""
    return lambda req: srv.bytes_reply(DATA, req, honour_range=honour_range)


def part_of(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


# ----------------------------------------------------------------------------------------- download


def test_plain_download_is_verified_and_leaves_no_part(local_server, tmp_path: Path):
    local_server.serve_bytes("/f.bin", DATA)
    dest = tmp_path / "sub" / "f.bin"
    got = download(f"{local_server.url}/f.bin", dest, sha256=DATA_SHA.upper(), policy=FAST, sleep=no_sleep)
    assert got == dest
    assert dest.read_bytes() == DATA
    assert not part_of(dest).exists()
    [req] = local_server.requests("/f.bin")
    assert "range" not in req.headers
    assert req.headers["user-agent"].startswith("nst-bench/")


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_the_downloaded_file_gets_the_ordinary_mode(local_server, tmp_path: Path, umask: int):
    local_server.serve_bytes("/f.bin", DATA)
    dest = tmp_path / "f.bin"
    part_of(dest).write_bytes(DATA[:HALF])  # a private leftover .part from an earlier attempt: resumed
    part_of(dest).chmod(0o600)
    old = os.umask(umask)
    try:
        download(f"{local_server.url}/f.bin", dest, sha256=DATA_SHA, policy=FAST, sleep=no_sleep)
    finally:
        os.umask(old)
    assert dest.read_bytes() == DATA
    assert stat.S_IMODE(dest.stat().st_mode) == 0o666 & ~umask
    assert not part_of(dest).exists()


def test_503_twice_then_success_retries_with_exponential_backoff(local_server, tmp_path: Path):
    local_server.route(
        "/f.bin", local_server.sequence(local_server.Reply(503), local_server.Reply(503), full(local_server))
    )
    waits: list[float] = []
    dest = tmp_path / "f.bin"
    policy = RetryPolicy(retries=4, backoff_s=0.5, timeout_s=5.0)
    download(f"{local_server.url}/f.bin", dest, sha256=DATA_SHA, policy=policy, sleep=waits.append)
    assert dest.read_bytes() == DATA
    assert local_server.count("/f.bin") == 3
    assert waits == [0.5, 1.0]  # backoff_s * 2**attempt, recorded instead of slept


def test_503_twice_with_one_retry_fails_and_creates_nothing(local_server, tmp_path: Path):
    local_server.route(
        "/f.bin", local_server.sequence(local_server.Reply(503), local_server.Reply(503), full(local_server))
    )
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match=r"after 2 attempt\(s\).*503"):
        download(
            f"{local_server.url}/f.bin", dest, policy=RetryPolicy(retries=1, backoff_s=0, timeout_s=5), sleep=no_sleep
        )
    assert local_server.count("/f.bin") == 2
    assert not dest.exists()


def test_truncated_body_resumes_with_range(local_server, tmp_path: Path):
    local_server.route("/f.bin", local_server.sequence(truncated(local_server), full(local_server)))
    dest = tmp_path / "f.bin"
    download(f"{local_server.url}/f.bin", dest, sha256=DATA_SHA, policy=FAST, sleep=no_sleep)
    first, second = local_server.requests("/f.bin")
    assert "range" not in first.headers
    assert second.headers["range"] == f"bytes={HALF}-"
    assert dest.read_bytes() == DATA
    assert not part_of(dest).exists()


def test_unaligned_truncation_resumes_from_the_bytes_kept(local_server, tmp_path: Path):
    sent = CHUNK + 12_345
    local_server.route("/f.bin", local_server.sequence(truncated(local_server, sent), full(local_server)))
    dest = tmp_path / "f.bin"
    download(f"{local_server.url}/f.bin", dest, sha256=DATA_SHA, policy=FAST, sleep=no_sleep)
    _, second = local_server.requests("/f.bin")
    start = int(second.headers["range"].removeprefix("bytes=").removesuffix("-"))
    assert 0 < start <= sent  # resumed from a prefix of what was received, never past it
    assert dest.read_bytes() == DATA


def test_always_truncated_fails_after_retries_without_dest(local_server, tmp_path: Path):
    local_server.route("/f.bin", truncated(local_server))
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match=r"after 3 attempt\(s\)"):
        download(
            f"{local_server.url}/f.bin",
            dest,
            sha256=DATA_SHA,
            policy=RetryPolicy(retries=2, backoff_s=0, timeout_s=5),
            sleep=no_sleep,
        )
    assert local_server.count("/f.bin") == 3
    assert not dest.exists()


def test_server_ignoring_range_still_gives_the_right_file(local_server, tmp_path: Path):
    local_server.route("/f.bin", local_server.sequence(truncated(local_server), full(local_server, honour_range=False)))
    dest = tmp_path / "f.bin"
    download(f"{local_server.url}/f.bin", dest, sha256=DATA_SHA, policy=FAST, sleep=no_sleep)
    _, second = local_server.requests("/f.bin")
    assert second.headers["range"] == f"bytes={HALF}-"  # it asked to resume; the 200 made it start over
    assert dest.read_bytes() == DATA  # not the first half followed by the whole file


def test_resume_answered_with_wrong_content_range_restarts(local_server, tmp_path: Path):
    def wrong_range(req):
        return local_server.Reply(206, DATA[:1000], {"Content-Range": f"bytes 0-999/{len(DATA)}"})

    local_server.route("/f.bin", local_server.sequence(truncated(local_server), wrong_range, full(local_server)))
    dest = tmp_path / "f.bin"
    download(f"{local_server.url}/f.bin", dest, sha256=DATA_SHA, policy=FAST, sleep=no_sleep)
    reqs = local_server.requests("/f.bin")
    assert [r.headers.get("range") for r in reqs] == [None, f"bytes={HALF}-", None]
    assert dest.read_bytes() == DATA


def test_complete_leftover_part_gets_416_and_restarts(local_server, tmp_path: Path):
    local_server.serve_bytes("/f.bin", DATA)
    dest = tmp_path / "f.bin"
    part_of(dest).write_bytes(DATA)  # e.g. a run killed between the last byte and the rename
    download(f"{local_server.url}/f.bin", dest, sha256=DATA_SHA, policy=FAST, sleep=no_sleep)
    assert [r.headers.get("range") for r in local_server.requests("/f.bin")] == [f"bytes={len(DATA)}-", None]
    assert dest.read_bytes() == DATA
    assert not part_of(dest).exists()


def test_checksum_mismatch_discards_the_body(local_server, tmp_path: Path):
    local_server.serve_bytes("/f.bin", DATA)
    dest = tmp_path / "f.bin"
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(DownloadError, match="sha256 mismatch") as info:
        download(f"{local_server.url}/f.bin", dest, sha256=wrong, policy=FAST, sleep=no_sleep)
    assert wrong in str(info.value)
    assert DATA_SHA in str(info.value)
    assert not dest.exists()
    assert not part_of(dest).exists()
    assert local_server.count("/f.bin") == 1  # a bad checksum is not retried


def test_404_is_not_retried(local_server, tmp_path: Path):
    waits: list[float] = []
    dest = tmp_path / "missing.bin"
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(f"{local_server.url}/missing.bin", dest, policy=FAST, sleep=waits.append)
    assert local_server.count("/missing.bin") == 1
    assert waits == []
    assert not dest.exists()


def test_connection_refused_is_retried_then_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    waits: list[float] = []
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match=r"after 3 attempt\(s\)"):
        download(
            f"http://127.0.0.1:{port}/f.bin",
            dest,
            policy=RetryPolicy(retries=2, backoff_s=0.25, timeout_s=2),
            sleep=waits.append,
        )
    assert waits == [0.25, 0.5]
    assert not dest.exists()


def test_present_and_verified_makes_no_request(local_server, tmp_path: Path):
    local_server.serve_bytes("/f.bin", DATA)
    dest = tmp_path / "f.bin"
    dest.write_bytes(DATA)
    assert download(f"{local_server.url}/f.bin", dest, sha256=DATA_SHA, policy=FAST, sleep=no_sleep) == dest
    assert local_server.count() == 0
    assert dest.read_bytes() == DATA


def test_present_without_checksum_is_kept(local_server, tmp_path: Path):
    local_server.serve_bytes("/f.bin", DATA)
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"whatever was there")
    download(f"{local_server.url}/f.bin", dest, policy=FAST, sleep=no_sleep)
    assert local_server.count() == 0
    assert dest.read_bytes() == b"whatever was there"


def test_present_with_wrong_checksum_is_downloaded_again(local_server, tmp_path: Path):
    local_server.serve_bytes("/f.bin", DATA)
    dest = tmp_path / "f.bin"
    dest.write_bytes(DATA[:-1] + b"\x00")
    download(f"{local_server.url}/f.bin", dest, sha256=DATA_SHA, policy=FAST, sleep=no_sleep)
    assert local_server.count("/f.bin") == 1
    assert dest.read_bytes() == DATA


def test_git_blob_oid_is_the_id_git_gives(tmp_path: Path):
    path = tmp_path / "f.bin"
    path.write_bytes(DATA)
    done = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True, check=True)
    assert git_blob_oid(path) == done.stdout.strip()


def test_git_oid_mismatch_discards_the_body(local_server, tmp_path: Path):
    local_server.serve_bytes("/f.bin", DATA)
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match="git blob id mismatch"):
        download(f"{local_server.url}/f.bin", dest, git_oid="0" * 40, policy=FAST, sleep=no_sleep)
    assert not dest.exists()
    assert not part_of(dest).exists()
    (tmp_path / "ok.bin").write_bytes(DATA)
    download(f"{local_server.url}/f.bin", dest, git_oid=git_blob_oid(tmp_path / "ok.bin"), policy=FAST, sleep=no_sleep)
    assert dest.read_bytes() == DATA


# ----------------------------------------------------------------------------------------- servers as they are


def test_identity_is_asked_for_so_a_compressing_server_sends_the_bytes(local_server, tmp_path: Path):
    local_server.serve_like_a_cdn("/f.bin", DATA)
    dest = tmp_path / "f.bin"
    download(f"{local_server.url}/f.bin", dest, sha256=DATA_SHA, policy=FAST, sleep=no_sleep)
    assert dest.read_bytes() == DATA
    [req] = local_server.requests("/f.bin")
    assert req.headers["accept-encoding"] == "identity"


def test_a_server_that_compresses_anyway_still_gives_the_file(local_server, tmp_path: Path):
    body = gzip.compress(DATA, mtime=0)
    local_server.route("/f.bin", lambda req: local_server.Reply(200, body, {"Content-Encoding": "gzip"}))
    dest = tmp_path / "f.bin"
    download(f"{local_server.url}/f.bin", dest, sha256=DATA_SHA, policy=FAST, sleep=no_sleep)
    assert dest.read_bytes() == DATA  # decoded; the Content-Length of the encoded body is not held against it
    assert local_server.count("/f.bin") == 1


def test_a_redirect_is_followed_and_a_resume_goes_through_it(local_server, tmp_path: Path):
    local_server.redirect("/resolve/f.bin", f"{local_server.url}/cdn/f.bin?signed=1")
    local_server.route("/cdn/f.bin", local_server.sequence(truncated(local_server), full(local_server)))
    dest = tmp_path / "f.bin"
    download(f"{local_server.url}/resolve/f.bin", dest, sha256=DATA_SHA, policy=FAST, sleep=no_sleep)
    assert dest.read_bytes() == DATA
    assert local_server.count("/resolve/f.bin") == 2
    first, second = local_server.requests("/cdn/f.bin")
    assert "range" not in first.headers
    assert second.headers["range"] == f"bytes={HALF}-"  # the Range header survived the redirect


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"RateLimit": '"api";r=0;t=55'}, 55.0),  # the Hub's form (draft-ietf-httpapi-ratelimit-headers)
        ({}, 0.5),  # no hint: the exponential backoff
    ],
)
def test_429_waits_as_long_as_the_server_asks(local_server, tmp_path: Path, headers, wait):
    local_server.route("/f.bin", local_server.sequence(local_server.Reply(429, b"", headers), full(local_server)))
    waits: list[float] = []
    policy = RetryPolicy(retries=2, backoff_s=0.5, timeout_s=5.0, max_retry_after_s=60.0)
    download(f"{local_server.url}/f.bin", tmp_path / "f.bin", sha256=DATA_SHA, policy=policy, sleep=waits.append)
    assert waits == [wait]
    assert (tmp_path / "f.bin").read_bytes() == DATA


def test_retry_after_as_an_http_date(local_server, tmp_path: Path):
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    local_server.route(
        "/api", local_server.sequence(local_server.Reply(503, b"", {"Retry-After": when}), full(local_server))
    )
    waits: list[float] = []
    policy = RetryPolicy(retries=1, backoff_s=0.5, timeout_s=5.0, max_retry_after_s=60.0)
    with pytest.raises(DownloadError, match="not JSON"):  # the second answer is the binary file: waited, then read it
        get_json(f"{local_server.url}/api", policy=policy, sleep=waits.append)
    [wait] = waits
    assert 27 <= wait <= 30


def test_retry_after_beyond_the_bound_stops_at_once_with_a_clear_error(local_server, tmp_path: Path):
    local_server.route("/f.bin", lambda req: local_server.Reply(429, b"", {"Retry-After": "3600"}))
    waits: list[float] = []
    policy = RetryPolicy(retries=4, backoff_s=0.5, timeout_s=5.0, max_retry_after_s=300.0)
    with pytest.raises(DownloadError) as info:
        download(f"{local_server.url}/f.bin", tmp_path / "f.bin", policy=policy, sleep=waits.append)
    message = str(info.value)
    assert "HTTP 429" in message
    assert "wait 3600 s" in message
    assert "fetch.download.max_retry_after_s = 300 s" in message
    assert waits == []
    assert local_server.count("/f.bin") == 1


def test_a_client_error_carries_its_status(local_server, tmp_path: Path):
    local_server.route("/f.bin", lambda req: local_server.Reply(410, b"gone"))
    with pytest.raises(DownloadError) as info:
        download(f"{local_server.url}/f.bin", tmp_path / "f.bin", policy=FAST, sleep=no_sleep)
    assert info.value.status == 410


# ----------------------------------------------------------------------------------------- get_json


def test_get_json_retries_503_and_sends_headers(local_server):
    payload = {"sha": "a" * 40, "list": [1, 2, 3]}
    local_server.route(
        "/api",
        local_server.sequence(local_server.Reply(503), local_server.Reply(503), local_server.json_reply(payload)),
    )
    got = get_json(f"{local_server.url}/api", policy=FAST, headers={"Authorization": "OAuth t"}, sleep=no_sleep)
    assert got == payload
    reqs = local_server.requests("/api")
    assert len(reqs) == 3
    assert all(r.headers["authorization"] == "OAuth t" for r in reqs)


def test_get_json_gives_up_after_retries(local_server):
    local_server.route("/api", lambda req: local_server.Reply(503))
    with pytest.raises(DownloadError, match=r"after 2 attempt\(s\)"):
        get_json(f"{local_server.url}/api", policy=RetryPolicy(retries=1, backoff_s=0, timeout_s=5), sleep=no_sleep)
    assert local_server.count("/api") == 2


def test_get_json_non_json_is_a_clear_error_without_retry(local_server):
    local_server.route(
        "/api", lambda req: local_server.Reply(200, b"<html>maintenance</html>", {"Content-Type": "text/html"})
    )
    with pytest.raises(DownloadError, match="not JSON") as info:
        get_json(f"{local_server.url}/api", policy=FAST, sleep=no_sleep)
    assert f"{local_server.url}/api" in str(info.value)
    assert local_server.count("/api") == 1


def test_get_json_404_is_not_retried(local_server):
    with pytest.raises(DownloadError, match="HTTP 404"):
        get_json(f"{local_server.url}/nothing", policy=FAST, sleep=no_sleep)
    assert local_server.count("/nothing") == 1


def _scripted(answers: list):
    """An attempt function that raises the scripted transient errors in turn, then returns "ok"."""
    from pipeline.download import _Retryable

    calls = []

    def attempt():
        calls.append(len(calls))
        if len(calls) <= len(answers):
            status, retry_after = answers[len(calls) - 1]
            raise _Retryable(f"HTTP {status}", retry_after, status)
        return "ok"

    return attempt, calls


def test_a_rate_limit_on_the_last_retry_is_waited_out_not_fatal():
    """The rehearsal's find: a dense box timing out twice, then a 429 with Retry-After, ended the whole fetch
    (retries: 2). A rate limit that says when to come back is waited out without spending a retry."""
    from pipeline.download import with_retries

    attempt, calls = _scripted([(504, None), (504, None), (429, 1.0)])
    waits: list[float] = []
    policy = RetryPolicy(retries=2, backoff_s=0.1, timeout_s=1.0, max_retry_after_s=10.0)
    assert with_retries("search", attempt, policy, sleep=waits.append) == "ok"
    assert len(calls) == 4
    assert waits == [0.1, 0.2, 1.0]  # two backoffs, then the wait the 429 asked for


def test_rate_limit_waits_are_bounded_and_failures_still_count():
    from pipeline.download import with_retries

    attempt, calls = _scripted([(429, 2.0)] * 100)
    waits: list[float] = []
    policy = RetryPolicy(retries=2, backoff_s=0.1, timeout_s=1.0, max_retry_after_s=10.0)
    with pytest.raises(DownloadError, match=r"failed after 6 attempt\(s\): HTTP 429") as info:
        with_retries("search", attempt, policy, sleep=waits.append)
    assert info.value.status == 429
    assert waits == [2.0] * 5  # retries + 1 = 3 free waits, then the 2 retries (each waiting as asked)
    attempt, calls = _scripted([(503, None)] * 100)
    with pytest.raises(DownloadError, match=r"failed after 3 attempt\(s\)"):
        with_retries("search", attempt, policy, sleep=lambda s: None)
    assert len(calls) == 3
