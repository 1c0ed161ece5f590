"""The study's web page: FastAPI, Jinja2 templates, its own CSS/JS (no CDN), votes stored by :mod:`.storage`.

Routes, all behind a gate (:class:`Gate`) that answers 403 to anything else:

- voters, under the study's secret link ``/s/<secret>/``: ``GET /s/<secret>/`` (the current question, or "done"),
  ``GET /s/<secret>/img/<id>`` (an image of one of *this voter's* questions, by an opaque id),
  ``GET /s/<secret>/static/...``, ``POST /s/<secret>/answer`` (JSON, with the voter's CSRF token in a header);
- admins, with ``Authorization: Bearer <admin token>``: ``GET /admin/progress`` (counts only),
  ``GET /admin/export`` (the votes as CSV).

The page uses relative URLs only, so it works unchanged behind a reverse proxy under any path prefix. The secret and
the admin token are compared as sha256 digests in constant time; the server never holds them in clear when it is
given their digests (``"sha256:<hex>"``, as ``nst judge serve`` does after the first start).

A voter is a random cookie (HttpOnly, SameSite=Strict, no Path: the browser scopes it to the secret link). Answers are
checked in this order, each failure leaving the database unchanged: JSON content type (415), body size (413, by
Content-Length and by the bytes actually received), a known voter (403), the CSRF token (403), the voter's rate
limit (429), the body's shape (400/422), an assignment issued to this voter (404), not answered before (409).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import hmac
import io
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from pipeline.judging import storage as st
from pipeline.judging.study import DECEPTION, PREFERENCE, Study, build_study, questions_for_voter
from pipeline.tracking import git_sha as repo_git_sha

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
ANSWERS = {PREFERENCE: ("left", "right", "tie"), DECEPTION: ("painting", "photo")}
CSRF_HEADER = "x-csrf-token"
# Security headers on every response: no third-party anything (the page loads only its own files), no framing, and
# no Referer: the secret link must not leak to another site (OWASP Secure Headers Project's recommended values).
SECURITY_HEADERS = {
    b"content-security-policy": b"default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; "
    b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    b"referrer-policy": b"no-referrer",
    b"x-content-type-options": b"nosniff",
    b"x-frame-options": b"DENY",
}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Limits:
    """Request limits. An answer's JSON is under 200 bytes; 4 KB leaves room for headers' worth of slack, and a
    person answers at most a few questions a second (each shows two to four images)."""

    max_body_bytes: int = 4096  # the issue: "a body over a few KB" is refused
    votes_per_second: float = 2.0  # sustained answers per voter
    vote_burst: int = 10  # answers a voter may send at once before the rate applies
    new_voters_per_second: float = 5.0  # new voters (cookies) per second, over all clients
    new_voter_burst: int = 100
    max_buckets: int = 10_000  # voters whose buckets are kept; the least recently seen are forgotten (bounded memory)
    secure_cookies: bool = False  # set behind an HTTPS proxy: the cookie is then sent over HTTPS only


def credential_digest(value: str) -> str:
    """The sha256 hex digest of a secret, or the digest itself when given as ``"sha256:<hex>"``."""
    if value.startswith("sha256:"):
        return value.removeprefix("sha256:")
    return hashlib.sha256(value.encode()).hexdigest()


def _matches(candidate: str, digest: str) -> bool:
    return hmac.compare_digest(hashlib.sha256(candidate.encode()).hexdigest(), digest)


class RateLimiter:
    """Token buckets per key (``rate`` tokens a second, at most ``burst``), for at most ``max_keys`` keys (LRU)."""

    def __init__(self, rate: float, burst: int, max_keys: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.max_keys, self.clock = rate, burst, max_keys, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        """Take one token from ``key``'s bucket; False (nothing taken) when it is empty."""
        with self._lock:
            t = self.clock()
            tokens, last = self._buckets.pop(key, (float(self.burst), t))
            tokens = min(float(self.burst), tokens + (t - last) * self.rate)
            ok = tokens >= 1.0
            self._buckets[key] = (tokens - 1.0 if ok else tokens, t)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return ok

    def __len__(self) -> int:
        return len(self._buckets)


class Gate:
    """ASGI middleware: only the secret link (rewritten to the app's own paths) and admin routes with the admin token
    get through; request bodies are refused above ``max_body`` bytes, by header and by bytes received; every
    response gets :data:`SECURITY_HEADERS`."""

    def __init__(self, app: ASGIApp, link_sha256: str, admin_sha256: str, max_body: int) -> None:
        self.app, self.link_sha256, self.admin_sha256, self.max_body = app, link_sha256, admin_sha256, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # no websockets
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        send = self._with_headers(send)
        role, path = self._route(scope)
        if role is None:
            await PlainTextResponse("forbidden", status_code=403)(scope, receive, send)
            return
        if role == "redirect":
            location = path
            await Response(status_code=307, headers={"location": location})(scope, receive, send)
            return
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await PlainTextResponse("request body too large", status_code=413)(scope, receive, send)
            return
        body, too_large = await self._read_body(receive)
        if too_large:
            await PlainTextResponse("request body too large", status_code=413)(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        scope = dict(scope, path=path, raw_path=path.encode(), state={**scope.get("state", {}), "role": role})
        await self.app(scope, replay, send)

    def _route(self, scope: Scope) -> tuple[str | None, str]:
        path: str = scope["path"]
        if path.startswith("/admin/"):
            auth = dict(scope.get("headers", [])).get(b"authorization", b"").decode("latin-1")
            scheme, _, token = auth.partition(" ")
            if scheme.lower() == "bearer" and token and _matches(token.strip(), self.admin_sha256):
                return "admin", path
            return None, path
        if path.startswith("/s/"):
            secret, slash, rest = path[3:].partition("/")
            if not _matches(secret, self.link_sha256):
                return None, path
            if not slash:  # /s/<secret> -> /s/<secret>/ so that the page's relative URLs resolve under the link
                return "redirect", f"{secret}/"
            return "voter", "/" + rest
        return None, path

    async def _read_body(self, receive: Receive) -> tuple[bytes, bool]:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"", False
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return b"", True
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), False

    @staticmethod
    def _with_headers(send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS.items() if k not in present]
                if b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        return wrapped


class Answer(BaseModel):
    """The JSON body of ``POST answer``."""

    model_config = ConfigDict(extra="forbid")

    assignment: str = Field(min_length=1, max_length=64)
    answer: Literal["left", "right", "tie", "painting", "photo"]
    response_ms: int | None = Field(default=None, ge=0, le=86_400_000)  # a day at most


def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )


class JudgeApp:
    """The study's request handlers over one :class:`Storage` (kept apart from the routes for readability)."""

    def __init__(self, study: Study, store: st.Storage, git_sha: str, limits: Limits) -> None:
        self.study, self.store, self.git_sha, self.limits = study, store, git_sha, limits
        self.cookie = f"nst_voter_{study.name}"
        self.votes = RateLimiter(limits.votes_per_second, limits.vote_burst, limits.max_buckets)
        self.new_voters = RateLimiter(limits.new_voters_per_second, limits.new_voter_burst, 1)
        self.env = _templates()

    def voter(self, request: Request) -> dict[str, Any] | None:
        token = request.cookies.get(self.cookie)
        if not token or len(token) > 128:
            return None
        return self.store.voter_by_token(self.study.name, token)

    def page(self, request: Request) -> Response:
        voter = self.voter(request)
        new = None
        if voter is None:
            if not self.new_voters.allow("new"):
                return PlainTextResponse("too many new voters; try again in a minute", status_code=429)
            new = self.store.create_voter(self.study, lambda counts, n: questions_for_voter(self.study, counts, n))
            voter = self.store.voter_by_token(self.study.name, new.token)
            assert voter is not None
        todo = self.store.voter_assignments(voter["id"])
        done = sum(a["voted"] for a in todo)
        current = next((a for a in todo if not a["voted"]), None)
        context: dict[str, Any] = {"done": done, "total": len(todo), "csrf": voter["csrf"], "question": None}
        if current is not None:
            if current["shown_at"] is None:  # a write only the first time (reloads take no write lock)
                self.store.mark_shown(current["id"])
            images = {role: f"img/{token}" for token, role in json.loads(current["images"]).items()}
            context["question"] = {"id": current["id"], "kind": current["kind"], "images": images}
        html = self.env.get_template("page.html.j2").render(**context)
        response = HTMLResponse(html)
        if new is not None:
            response.set_cookie(
                self.cookie,
                new.token,
                max_age=30 * 24 * 3600,  # a month: a voter may come back to finish
                path=None,  # the browser scopes it to the link's folder, behind any proxy prefix
                httponly=True,
                samesite="strict",
                secure=self.limits.secure_cookies,
            )
        return response

    def image(self, request: Request, token: str) -> Response:
        voter = self.voter(request)
        if voter is None:
            return PlainTextResponse("forbidden", status_code=403)
        for a in self.store.voter_assignments(voter["id"]):
            role = json.loads(a["images"]).get(token)
            if role is not None:
                path = self._image_path(a, role)
                return FileResponse(path, headers={"cache-control": "private, max-age=3600"})
        return PlainTextResponse("not found", status_code=404)

    def _image_path(self, a: dict[str, Any], role: str) -> Path:
        if role == "content":
            return self.study.contents[a["content"]].path
        if role == "style":
            return self.study.paintings[a["style"]].path
        method = a["method_right"] if role == "right" else a["method_left"]
        return self.study.image_of(method, a["content"], a["style"]).path

    def answer(self, request: Request, body: bytes) -> Response:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            return _error(415, "send the answer as application/json")
        voter = self.voter(request)
        if voter is None:
            return _error(403, "no voter: open the study's link first")
        if not hmac.compare_digest(request.headers.get(CSRF_HEADER, ""), voter["csrf"]):
            return _error(403, "missing or wrong CSRF token")
        if not self.votes.allow(voter["id"]):
            return _error(429, "too many answers; slow down", headers={"retry-after": "1"})
        try:
            data = Answer.model_validate_json(body)
        except ValidationError as exc:
            return _error(422, exc.errors(include_url=False, include_context=False, include_input=False))
        todo = self.store.voter_assignments(voter["id"])
        a = next((x for x in todo if hmac.compare_digest(x["id"], data.assignment)), None)
        if a is None:
            return _error(404, "no such question for this voter")
        if a["voted"]:
            return _error(409, "this question has been answered")
        if data.answer not in ANSWERS[a["kind"]]:
            return _error(422, f"a {a['kind']} answer is one of {', '.join(ANSWERS[a['kind']])}")
        chosen = {"left": a["method_left"], "right": a["method_right"]}.get(data.answer, data.answer)
        if not self.store.record_vote(a, data.answer, chosen, self.git_sha, data.response_ms):
            return _error(409, "this question has been answered")
        return JSONResponse({"ok": True, "done": sum(x["voted"] for x in todo) + 1, "total": len(todo)})


def _error(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def create_app(
    study: str | Study,
    db_url: str,
    outputs_dir: Path,
    paintings_dir: Path,
    secret: str,
    admin_token: str,
    *,
    content_dir: Path | None = None,
    seed: int = 0,
    per_voter: dict[str, int] | None = None,
    limits: Limits | None = None,
    git_sha: str | None = None,
) -> FastAPI:
    """The study's app (its :class:`JudgeApp` at ``app.state.judge``). ``study``: a name (built from
    ``outputs_dir``, ``paintings_dir``, ``content_dir``) or a built :class:`Study`. ``secret`` (the link's) and
    ``admin_token``: in clear or as ``"sha256:<hex>"``. ``git_sha``: of the code that made the outputs
    (default: the repository holding ``outputs_dir``)."""
    if isinstance(study, str):
        study = build_study(study, outputs_dir, paintings_dir, content_dir, seed=seed, per_voter=per_voter)
    limits = limits or Limits()
    store = st.Storage(db_url)
    row = store.ensure_study(study, git_sha or repo_git_sha(outputs_dir))
    judge = JudgeApp(study, store, row["git_sha"], limits)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        store.close()  # the server stopped: return the database connections

    app = FastAPI(
        title=f"nst-bench study {study.name}", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    app.state.judge = judge

    def admin_only(request: Request) -> bool:
        return request.scope.get("state", {}).get("role") == "admin"

    def voter_only(request: Request) -> bool:
        return request.scope.get("state", {}).get("role") == "voter"

    @app.get("/", response_class=HTMLResponse)
    def page(request: Request) -> Response:
        if not voter_only(request):
            return PlainTextResponse("forbidden", status_code=403)
        return judge.page(request)

    @app.get("/img/{token}")
    def image(request: Request, token: str) -> Response:
        if not voter_only(request):
            return PlainTextResponse("forbidden", status_code=403)
        return judge.image(request, token)

    @app.post("/answer")
    async def answer(request: Request) -> Response:
        if not voter_only(request):
            return PlainTextResponse("forbidden", status_code=403)
        body = await request.body()
        return await run_in_threadpool(judge.answer, request, body)

    @app.get("/admin/progress")
    def progress(request: Request) -> Response:
        if not admin_only(request):
            return PlainTextResponse("forbidden", status_code=403)
        return JSONResponse(store.progress(study.name))

    @app.get("/admin/export")
    def export(request: Request) -> Response:
        if not admin_only(request):
            return PlainTextResponse("forbidden", status_code=403)
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=st.EXPORT_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(store.vote_rows(study.name))
        return Response(out.getvalue(), media_type="text/csv")

    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.add_middleware(
        Gate,
        link_sha256=credential_digest(secret),
        admin_sha256=credential_digest(admin_token),
        max_body=limits.max_body_bytes,
    )
    return app
