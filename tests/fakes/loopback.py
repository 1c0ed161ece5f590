"""The life cycle the loopback fakes share: a threading HTTP server on 127.0.0.1, an ephemeral port, a daemon thread."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class LoopbackServer:
    """Mixin for a fake service (a dataclass with ``_server`` / ``_thread`` fields, both None until started).

    A subclass gives its request handler class (:meth:`handler`) and may act before starting and stopping
    (:meth:`before_start`, :meth:`before_stop`: e.g. waking requests it holds). ``url`` is the service's own origin,
    ``cdn`` the same port under ``localhost``: another origin, as the real services' CDNs are.
    """

    _server: ThreadingHTTPServer | None
    _thread: threading.Thread | None
    poll_interval_s: float = 0.5  # serve_forever's shutdown poll (socketserver's default)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    def before_start(self) -> None:
        """Called before the server starts (nothing by default)."""

    def before_stop(self) -> None:
        """Called before the server shuts down (nothing by default)."""

    @property
    def port(self) -> int:
        assert self._server is not None, f"{type(self).__name__} not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def cdn(self) -> str:
        return f"http://localhost:{self.port}"

    def start(self) -> Self:
        self.before_start()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": self.poll_interval_s},
            name=type(self).__name__,
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.before_stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(timeout=10)
            self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
