"""A real HTTP server on 127.0.0.1 for the download and source tests (no mocking of ``requests``).

``local_server`` starts a :class:`http.server.ThreadingHTTPServer` on an ephemeral port in a background
thread. Tests register routes (exact path, query ignored) that map a :class:`Request` to a :class:`Reply`;
every request is logged so tests can count requests and inspect their headers.
"""

from __future__ import annotations

import gzip
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from pipeline.config import Params, load_params


@dataclass(frozen=True)
class Request:
    """One request the server saw. Header names are lower-cased."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


@dataclass
class Reply:
    """What to answer. ``send_bytes`` < len(body) sends the full Content-Length but only that many bytes, then
    closes the connection (a truncated body)."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    send_bytes: int | None = None


Route = Callable[[Request], Reply]
_RANGE = re.compile(r"^bytes=(\d+)-$")


def bytes_reply(data: bytes, request: Request, *, honour_range: bool = True, content_type: str = "") -> Reply:
    """``data`` as the body; a ``Range: bytes=N-`` request gets a 206 with the tail when ``honour_range``."""
    headers = {"Content-Type": content_type or "application/octet-stream"}
    match = _RANGE.match(request.headers.get("range", ""))
    if honour_range and match:
        start = int(match[1])
        if start >= len(data):
            return Reply(416, b"", {"Content-Range": f"bytes */{len(data)}"})
        headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        return Reply(206, data[start:], headers)
    return Reply(200, data, headers)


def gzip_unless_identity(data: bytes, request: Request) -> Reply:
    """What a server with on-the-fly compression (a CDN, nginx ``gzip on``) answers: ``data`` gzip-encoded when the
    request's Accept-Encoding lists gzip (``requests`` sends ``gzip, deflate`` unless told otherwise), else as
    :func:`bytes_reply` (Range honoured)."""
    accepted = {e.split(";")[0].strip().lower() for e in request.headers.get("accept-encoding", "").split(",")}
    if "gzip" in accepted:
        headers = {"Content-Type": "application/octet-stream", "Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
        return Reply(200, gzip.compress(data, mtime=0), headers)
    return bytes_reply(data, request)


def json_reply(obj: Any, status: int = 200) -> Reply:
    return Reply(status, json.dumps(obj).encode(), {"Content-Type": "application/json"})


class LocalServer:
    """Routes, a request log and the base URL of the running server.

    The reply helpers hang off this object (``local_server.Reply(...)``, ``local_server.bytes_reply(...)``) so
    that test modules need no import from this conftest.
    """

    Reply = Reply
    bytes_reply = staticmethod(bytes_reply)
    json_reply = staticmethod(json_reply)
    gzip_unless_identity = staticmethod(gzip_unless_identity)

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.log: list[Request] = []
        self._lock = threading.Lock()
        self.url = ""

    def route(self, path: str, fn: Route) -> None:
        self.routes[path] = fn

    def serve_bytes(self, path: str, data: bytes, *, honour_range: bool = True) -> None:
        self.route(path, lambda req: bytes_reply(data, req, honour_range=honour_range))

    def serve_json(self, path: str, obj: Any) -> None:
        self.route(path, lambda req: json_reply(obj))

    def serve_like_a_cdn(self, path: str, data: bytes) -> None:
        """``data`` at ``path``, gzip-encoded unless the request asks for identity (:func:`gzip_unless_identity`)."""
        self.route(path, lambda req: gzip_unless_identity(data, req))

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        """``path`` answers ``status`` with ``Location: location`` (as the Hub's ``/resolve/`` does for LFS files)."""
        self.route(path, lambda req: Reply(status, b"", {"Location": location}))

    @staticmethod
    def sequence(*replies: Reply | Route) -> Route:
        """A route answering the i-th request with ``replies[i]`` (the last one repeats); each item is a Reply or a
        route."""
        lock = threading.Lock()
        state = {"n": 0}

        def route(req: Request) -> Reply:
            with lock:
                item = replies[min(state["n"], len(replies) - 1)]
                state["n"] += 1
            return item(req) if callable(item) else item

        return route

    def requests(self, path: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self.log if path is None or r.path == path]

    def count(self, path: str | None = None) -> int:
        return len(self.requests(path))

    def _record(self, request: Request) -> None:
        with self._lock:
            self.log.append(request)


def _handler_for(server: LocalServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection: a truncated body ends with the connection

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            request = Request(
                method="GET",
                path=parts.path,
                query=parse_qs(parts.query),
                headers={k.lower(): v for k, v in self.headers.items()},
            )
            server._record(request)
            fn = server.routes.get(parts.path)
            reply = fn(request) if fn is not None else Reply(404, b"not found")
            self.send_response(reply.status)
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            body = reply.body if reply.send_bytes is None else reply.body[: reply.send_bytes]
            try:
                self.wfile.write(body)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):  # the client gave up: fine for these tests
                pass
            self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

    return Handler


@pytest.fixture
def local_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalServer]:
    """A running HTTP server on 127.0.0.1 (ephemeral port); ``.url`` is its base URL without a trailing slash."""
    for var in ("NO_PROXY", "no_proxy"):  # never route 127.0.0.1 through a proxy from the environment
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    state = LocalServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def base_params(repo_root: Path) -> Params:
    """params.yaml as committed (the sources' tests derive their configurations from it)."""
    return load_params(repo_root / "params.yaml")
