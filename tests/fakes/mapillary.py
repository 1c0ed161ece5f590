"""A loopback fake of the Mapillary Graph API v4 that ``pipeline/sources/streets.py`` talks to unchanged
(``fetch.streets.api_url: <fake.url>``).

It answers what the streets source asks, with the shapes of https://www.mapillary.com/developer/api-documentation and
of the Graph API it runs on:

- ``GET /images?fields=...&bbox=w,s,e,n&limit=N``: the images inside the box, only the fields asked for (``id``
  always): ``camera_type`` (perspective / fisheye / spherical / equirectangular), ``sequence`` (the sequence's id),
  ``captured_at`` (ms since the epoch), ``creator`` ``{"username", "id"}``, ``geometry`` (a GeoJSON point), ``is_pano``
  and the ``thumb_*_url`` links; an image still being processed has no thumbnail fields. One answer holds at most
  ``limit`` images (``max_limit``, 2000, at most: more is a 400), in the service's own order; while the search has
  more, within ``pages`` answers, the answer carries ``paging.next``, a link with an ``after`` cursor and the
  ``access_token`` (as Graph API links do). Past ``pages`` answers there is no link: the search is cut, and the client
  must split the box to see the rest;
- ``GET /<image id>?fields=...``: one image, with freshly signed thumbnail links;
- the token as ``Authorization: OAuth <token>`` or ``?access_token=``: a missing or wrong one is a 401 with the Graph
  API's error document ``{"error": {"message", "type", "code", "fbtrace_id"}}`` (``OAuthException``, code 190 / 104);
  bad parameters (a malformed or inverted ``bbox``, ``limit`` out of range, an unknown field) are a 400 with code 100
  and a message naming the parameter;
- exactly one 429 (``Retry-After: retry_after``, Graph code 4 "Application request limit reached") on the
  ``rate_limit_at``-th API request;
- one dense box (``dense_box``, by default the whole scene's bbox: a city centre too dense to search at once): a search
  whose box covers it stalls for ``stall_s`` seconds (past the client's timeout; bounded, and cut short when the fake
  stops) and then answers ``dense_status`` (504), every time, until the client searches smaller boxes;
- thumbnails under ``/thumbs/`` on another origin (``localhost`` instead of ``127.0.0.1``, as the real CDN is another
  host): small JPEGs (``thumb_size``, 96 x 72) made here, distinct per image. Links are signed per issue; the links a
  search hands out for every ``stale_every``-th image have expired already (403 "URL signature expired"); asking the
  API for the image again issues a fresh link, and the expired one then answers 410 on reuse. The images in ``gone``
  never get a working link (a photo that fails after its renewal).

:func:`street_scene` is the default world: ``drives`` capture drives of ``frames`` perspective frames each (a
sequence, a few metres between frames, one creator per drive), half of them crowded into the scene's south-west
quarter (the centre), plus 360-degree and fisheye sequences, a frame still processing, and images just outside the bbox.

Use as a context manager (``with FakeMapillary(token="t") as api: ...``) or ``api.start()`` / ``api.stop()``; it binds
127.0.0.1 on an ephemeral port and serves from daemon threads. ``api.requests`` logs what it answered.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import random
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from PIL import Image

from fakes.loopback import LoopbackServer

Box = tuple[float, float, float, float]  # west, south, east, north
LEUVEN: Box = (4.695, 50.872, 4.712, 50.884)  # params.yaml's fetch.streets.bbox (central Leuven)
FIELDS = frozenset(
    {
        "id",
        "altitude",
        "camera_type",
        "captured_at",
        "compass_angle",
        "creator",
        "geometry",
        "height",
        "is_pano",
        "make",
        "model",
        "sequence",
        "thumb_256_url",
        "thumb_1024_url",
        "thumb_2048_url",
        "thumb_original_url",
        "width",
    }
)  # a subset of the v4 Image node's fields (the API documentation's "Image" entity)
THUMB_FIELDS = ("thumb_256_url", "thumb_1024_url", "thumb_2048_url", "thumb_original_url")
MAX_STALL_S = 30.0  # no request is held longer, whatever stall_s asks


@dataclass(frozen=True)
class Photo:
    """One image in the fake's world."""

    id: str
    lon: float
    lat: float
    sequence: str
    creator: str
    captured_at: int  # ms since the epoch, as the API gives it
    camera_type: str = "perspective"
    processed: bool = True  # False: still processing, no thumbnail fields yet

    def inside(self, box: Box) -> bool:
        west, south, east, north = box
        return west <= self.lon <= east and south <= self.lat <= north


def street_scene(bbox: Box = LEUVEN, drives: int = 30, frames: int = 8, seed: int = 0) -> list[Photo]:
    """The default world (module doc): ``drives`` x ``frames`` perspective photos inside ``bbox``, half the drives in
    its south-west quarter; 2 spherical and 1 equirectangular sequence of 4, a fisheye one of 4, a frame still
    processing, and 3 images just outside ``bbox``. Seeded; ids are 16-digit numbers as the real ones."""
    rng = random.Random(seed)
    west, south, east, north = bbox
    dx, dy = east - west, north - south
    start = 1_600_000_000_000  # 2020-09-13, ms
    photos: list[Photo] = []
    ident = iter(range(1_000_000_000_000_000, 2_000_000_000_000_000, 7919))

    def drive(sequence: str, n: int, camera: str, crowded: bool, creator: str) -> None:
        span = 0.5 if crowded else 1.0
        x, y = rng.uniform(0.02, span - 0.02), rng.uniform(0.02, span - 0.02)
        heading = rng.uniform(0, 2 * math.pi)
        when = start + rng.randrange(0, 3 * 365 * 86_400_000)
        for f in range(n):  # a few metres apart (mapillary_tools samples every 3 m): 1e-4 of a 0.017-degree box
            fx = min(max(x + f * 0.004 * math.cos(heading), 0.0), span)
            fy = min(max(y + f * 0.004 * math.sin(heading), 0.0), span)
            photos.append(
                Photo(str(next(ident)), west + fx * dx, south + fy * dy, sequence, creator, when + f * 2000, camera)
            )

    for d in range(drives):
        drive(f"seq{d:03d}", frames, "perspective", d % 2 == 0, f"driver{d % 11}")
    drive("pano000", 4, "spherical", False, "panoramist")
    drive("pano001", 4, "spherical", True, "panoramist")
    drive("pano002", 4, "equirectangular", False, "panoramist")
    drive("fish000", 4, "fisheye", False, "cyclist")
    last = photos[-1]
    photos.append(Photo(str(next(ident)), last.lon, last.lat, "seq999", "late", last.captured_at + 1, processed=False))
    for i, (fx, fy) in enumerate([(1.02, 0.5), (-0.03, 0.2), (0.5, 1.05)]):
        photos.append(Photo(str(next(ident)), west + fx * dx, south + fy * dy, "far", "elsewhere", start + i))
    return photos


@dataclass
class Seen:
    """One request the fake received, logged on arrival. Header names are lower-cased; ``at`` is ``time.monotonic()``
    at arrival; ``status`` is set as soon as the answer is decided (a stalled search's before its stall)."""

    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    at: float
    status: int | None = None

    @property
    def bbox(self) -> Box | None:
        text = self.query.get("bbox", [""])[0]
        return tuple(float(v) for v in text.split(",")) if text else None  # type: ignore[return-value]


class GraphError(Exception):
    def __init__(self, status: int, message: str, code: int, type_: str = "OAuthException") -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.type = status, message, code, type_


@dataclass
class FakeMapillary(LoopbackServer):
    """The fake Graph API over ``photos`` (None: :func:`street_scene`); see the module doc for each knob."""

    photos: list[Photo] | None = None
    token: str = "fake-token"
    max_limit: int = 2000  # the images search's `limit` maximum (API documentation)
    pages: int = 2  # answers one search pages through before it is cut
    dense_box: Box | None = LEUVEN
    stall_s: float = 3.0
    dense_status: int = 504
    rate_limit_at: int | None = 3
    retry_after: int = 1
    stale_every: int = 7  # every n-th image (by id) gets an expired link from searches; 0: none
    gone: frozenset[str] = frozenset()
    thumb_size: tuple[int, int] = (96, 72)
    requests: list[Seen] = field(default_factory=list, init=False)
    _by_id: dict[str, Photo] = field(default_factory=dict, init=False)
    _issued: dict[str, int] = field(default_factory=dict, init=False)  # image id -> newest link version handed out
    _api_calls: int = field(default=0, init=False)
    _jpegs: dict[str, bytes] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _stopping: threading.Event = field(default_factory=threading.Event, init=False)
    _server: ThreadingHTTPServer | None = field(default=None, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.photos is None:
            self.photos = street_scene()
        self._by_id = {p.id: p for p in self.photos}
        ids = sorted(self._by_id)
        self.stale = frozenset(ids[:: self.stale_every]) if self.stale_every else frozenset()

    # ------------------------------------------------------------------------------------------ life cycle

    poll_interval_s = 0.05  # a stop wakes stalled requests at once; the server should follow as fast

    def handler(self) -> type[BaseHTTPRequestHandler]:
        return _handler(self)

    def before_start(self) -> None:
        self._stopping.clear()

    def before_stop(self) -> None:
        self._stopping.set()  # wakes a stalled dense-box request

    # ------------------------------------------------------------------------------------------ for tests

    def photo(self, ident: str) -> Photo:
        return self._by_id[ident]

    def jpeg(self, ident: str) -> bytes:
        """The thumbnail's bytes (the same for every link version of the image)."""
        with self._lock:
            if ident not in self._jpegs:
                rng = random.Random(ident)
                small = Image.frombytes("RGB", (8, 6), rng.randbytes(8 * 6 * 3))
                buf = io.BytesIO()
                small.resize(self.thumb_size, Image.Resampling.BILINEAR).save(buf, format="JPEG", quality=85)
                self._jpegs[ident] = buf.getvalue()
            return self._jpegs[ident]

    def inside(self, box: Iterable[float]) -> list[Photo]:
        b = tuple(box)
        return [p for p in self.photos or [] if p.inside(b)]  # type: ignore[arg-type]

    def searches(self) -> list[Seen]:
        return [r for r in self.requests if r.path == "/images"]

    def thumbs(self, ident: str | None = None) -> list[Seen]:
        prefix = f"/thumbs/{ident}/" if ident else "/thumbs/"
        return [r for r in self.requests if r.path.startswith(prefix)]

    # ------------------------------------------------------------------------------------------ answers

    def answer(self, seen: Seen) -> tuple[int, dict[str, str], bytes]:
        path, query, headers = seen.path, seen.query, seen.headers
        if path.startswith("/thumbs/"):
            return self._thumbnail(path, query)
        try:
            self._authorise(query, headers)
            with self._lock:
                self._api_calls += 1
                limited = self._api_calls == self.rate_limit_at
            if limited:
                raise GraphError(429, "(#4) Application request limit reached", 4)
            if path == "/images":
                return _json(self._search(query, seen))
            ident = path.strip("/")
            if ident in self._by_id:
                return _json(self._public(self._by_id[ident], self._fields(query), renew=True))
            raise GraphError(
                400,
                f"Unsupported get request. Object with ID '{ident}' does not exist, cannot be loaded due to missing "
                "permissions, or does not support this operation",
                100,
                "GraphMethodException",
            )
        except GraphError as exc:
            extra = {"Retry-After": str(self.retry_after)} if exc.status == 429 else {}
            if exc.status == 401:
                extra["WWW-Authenticate"] = 'OAuth "Facebook Platform" "invalid_token" "' + exc.message + '"'
            body = {"error": {"message": exc.message, "type": exc.type, "code": exc.code, "fbtrace_id": _trace()}}
            return exc.status, {"Content-Type": "application/json; charset=UTF-8", **extra}, json.dumps(body).encode()

    def _authorise(self, query: dict[str, list[str]], headers: dict[str, str]) -> None:
        given = query.get("access_token", [None])[0]
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() in ("oauth", "bearer"):
            given = value.strip()
        if not given:
            raise GraphError(401, "An access token is required to request this resource.", 104)
        if given != self.token:
            raise GraphError(401, "Invalid OAuth access token - Cannot parse access token", 190)

    def _fields(self, query: dict[str, list[str]]) -> list[str]:
        fields = [f.strip() for f in query.get("fields", ["id"])[0].split(",") if f.strip()]
        for name in fields:
            if name not in FIELDS:
                raise GraphError(400, f"(#100) Tried accessing nonexisting field ({name}) on node type (Image)", 100)
        return fields

    def _search(self, query: dict[str, list[str]], seen: Seen) -> dict[str, Any]:
        fields = self._fields(query)
        try:
            box = tuple(float(v) for v in query["bbox"][0].split(","))
            if len(box) != 4:
                raise ValueError
        except (KeyError, ValueError):
            raise GraphError(400, "(#100) Param bbox must be four numbers: minLon,minLat,maxLon,maxLat", 100) from None
        west, south, east, north = box
        if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
            raise GraphError(400, "(#100) Param bbox must have minLon < maxLon and minLat < maxLat", 100)
        try:
            limit = int(query.get("limit", ["2000"])[0])
        except ValueError:
            limit = -1
        if not 1 <= limit <= self.max_limit:
            raise GraphError(400, f"(#100) Param limit must be an integer between 1 and {self.max_limit}", 100)
        if self.dense_box is not None and _covers(box, self.dense_box):  # type: ignore[arg-type]
            seen.status = self.dense_status
            self._stopping.wait(min(self.stall_s, MAX_STALL_S))
            raise GraphError(
                self.dense_status,
                "Please reduce the amount of data you're asking for, then retry your request",
                1,
            )
        found = sorted(self.inside(box), key=lambda p: hashlib.sha256(p.id.encode()).digest())  # its own order
        after = _decode(query.get("after", [""])[0])
        page = found[after : after + limit]
        answer: dict[str, Any] = {"data": [self._public(p, fields, renew=False) for p in page]}
        end = after + limit
        if end < len(found) and end < self.pages * limit:
            cursor = _encode(end)
            link = {k: v[0] for k, v in query.items() if k not in ("after", "access_token")}
            link |= {"after": cursor, "access_token": self.token}
            answer["paging"] = {
                "cursors": {"before": _encode(after), "after": cursor},
                "next": f"{self.url}/images?{urlencode(link, safe=',|')}",
            }
        return answer

    def _public(self, photo: Photo, fields: list[str], *, renew: bool) -> dict[str, Any]:
        full: dict[str, Any] = {
            "id": photo.id,
            "camera_type": photo.camera_type,
            "captured_at": photo.captured_at,
            "creator": {
                "username": photo.creator,
                "id": str(int(hashlib.sha256(photo.creator.encode()).hexdigest()[:12], 16)),
            },
            "geometry": {"type": "Point", "coordinates": [photo.lon, photo.lat]},
            "is_pano": photo.camera_type in ("spherical", "equirectangular"),
            "sequence": photo.sequence,
            "width": 1024,
            "height": 768,
            "make": "fake",
            "model": "loopback",
        }
        if photo.processed and any(f in THUMB_FIELDS for f in fields):
            with self._lock:
                if renew or photo.id not in self._issued:
                    self._issued[photo.id] = self._issued.get(photo.id, 0) + 1
                version = self._issued[photo.id]
            for name in THUMB_FIELDS:
                full[name] = self._link(photo.id, version)
        return {k: full[k] for k in ["id", *fields] if k in full}

    def _link(self, ident: str, version: int) -> str:
        """A signed CDN link (``oe``: expiry, hex seconds; ``oh``: signature), as Mapillary's fbcdn links are."""
        expired = ident in self.gone or (version == 1 and ident in self.stale)
        expiry = int(time.time()) + (-3600 if expired else 3600)
        return f"{self.cdn}/thumbs/{ident}/{version}.jpg?oe={expiry:X}&oh={_signature(ident, version, expiry)}"

    def _thumbnail(self, path: str, query: dict[str, list[str]]) -> tuple[int, dict[str, str], bytes]:
        try:
            ident, name = path.removeprefix("/thumbs/").split("/")
            version = int(name.removesuffix(".jpg"))
            expiry = int(query["oe"][0], 16)
            signature = query["oh"][0]
        except (ValueError, KeyError):
            return 404, {"Content-Type": "text/plain"}, b"Not Found"
        if ident not in self._by_id or signature != _signature(ident, version, expiry):
            return 403, {"Content-Type": "text/plain"}, b"Bad URL hash"
        if expiry < time.time():  # 403 while it is the newest link; 410 (gone) once a fresh one was handed out
            with self._lock:
                superseded = self._issued.get(ident, 0) > version
            return 410 if superseded else 403, {"Content-Type": "text/plain"}, b"URL signature expired"
        return 200, {"Content-Type": "image/jpeg"}, self.jpeg(ident)


def _covers(outer: Box, inner: Box, eps: float = 1e-9) -> bool:
    return (
        outer[0] <= inner[0] + eps
        and outer[1] <= inner[1] + eps
        and outer[2] >= inner[2] - eps
        and outer[3] >= inner[3] - eps
    )


def _signature(ident: str, version: int, expiry: int) -> str:
    return hashlib.sha256(f"fake-cdn:{ident}:{version}:{expiry}".encode()).hexdigest()[:32]


def _encode(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode().rstrip("=")


def _decode(cursor: str) -> int:
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        return int(text.removeprefix("offset:"))
    except ValueError:
        raise GraphError(400, "(#100) Param after is not a valid cursor", 100) from None


def _trace() -> str:
    return base64.b64encode(random.randbytes(8)).decode().rstrip("=")


def _json(obj: Any) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/json; charset=UTF-8"}, json.dumps(obj).encode()


def _handler(api: FakeMapillary) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            split = urlsplit(self.path)
            headers = {k.lower(): v for k, v in self.headers.items()}
            seen = Seen(split.path, parse_qs(split.query), headers, time.monotonic())
            with api._lock:
                api.requests.append(seen)
            status, out, body = api.answer(seen)
            seen.status = status
            try:
                self.send_response(status)
                for k, v in {**out, "Content-Length": str(len(body))}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting (a stalled search)
                self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    return Handler
