"""Street-level photos from the Mapillary Graph API v4 (https://www.mapillary.com/developer/api-documentation).

Images are CC BY-SA 4.0 (Mapillary terms); each manifest row credits the contributor. Set-up: create a client
at https://www.mapillary.com/dashboard/developers and export its access token in the environment variable named
by ``fetch.streets.token_env`` (default ``MAPILLARY_TOKEN``). The token travels in the Authorization header, so
it never appears in logged URLs or the manifest (an ``access_token`` in a paging link is dropped before use).

Selection, seeded and independent of the order the API answers in:
1. Candidates: every image the ``images`` search finds inside ``bbox``. One answer holds at most ``page_size`` images;
   a ``paging.next`` link is followed when the answer has one, and a full answer without one means the box may hold
   more, so it is split into quadrants that are searched in turn. A box whose search keeps failing (no answer within
   ``fetch.download.timeout_s``, or a 5xx, through all of ``fetch.download.retries``: a box too dense for the API to
   answer in time) is split too. At most ``max_requests`` searches in all (each with its retries); the budget spent
   with a failed box's area unsearched is one error naming the box, its failure and the key.
2. Only ``camera_type == "perspective"`` photos stay: spherical / equirectangular panoramas arrive as flattened
   360-degree thumbnails, fisheye frames as circles; neither is a street photo to stylize.
3. At most ``per_sequence`` photos of one sequence (one capture drive; consecutive frames are near-duplicates), drawn
   with the seed; then a seeded shuffle of what is left, downloaded in that order until ``photos`` succeed.
Each photo's sequence id goes into the manifest, and ``prepare`` keeps a sequence within one split.

The API's refusals are one error each, at once: a 401 (or Graph API code 190/104) names the token's variable, a 400
the ``fetch.streets`` key behind the parameter its message names. A 429 is waited out as its ``Retry-After`` asks,
within ``fetch.download.max_retry_after_s``.

Thumbnail URLs are signed and expire: a 403 or 410 for one asks the API for that image's current URL once and tries
again; a photo that still fails is skipped with a warning and the next one in the shuffled order taken instead.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import shutil
from collections import Counter, defaultdict, deque
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pipeline.config import DownloadSection, StreetsSource
from pipeline.download import DownloadError, RetryPolicy, download, get_json, retry_policy
from pipeline.sources import FetchError, Record, make_record, safe_id

log = logging.getLogger(__name__)

PUBLIC_URL = "https://www.mapillary.com/app/?pKey={id}"
PERSPECTIVE = "perspective"  # camera_type values: perspective, fisheye, equirectangular, spherical
EXPIRED = frozenset({403, 410})  # what the CDN answers for a signed thumbnail URL past its expiry
MIN_BOX_DEG = 1e-5  # about a metre: a box this small is not split further, however full its answer


Box = tuple[float, float, float, float]  # west, south, east, north


def _quadrants(box: Box) -> list[Box]:
    west, south, east, north = box
    mid_x, mid_y = (west + east) / 2, (south + north) / 2
    return [
        (west, south, mid_x, mid_y),
        (mid_x, south, east, mid_y),
        (west, mid_y, mid_x, north),
        (mid_x, mid_y, east, north),
    ]


def _without_token(url: str) -> str:
    """``url`` without an ``access_token`` query parameter (the token goes in the header, never in a URL)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "access_token"]
    return urlunsplit(parts._replace(query=urlencode(query, safe=",")))


def _sequence(item: dict[str, Any]) -> str:
    seq = item.get("sequence")
    if isinstance(seq, dict):  # expanded as an object when asked for sub-fields
        seq = seq.get("id")
    return str(seq) if seq else ""


def _bbox_text(box: Box) -> str:
    return ",".join(f"{v:.8f}".rstrip("0").rstrip(".") for v in box)  # 1e-8 degrees: about a millimetre


# The images search's parameters, as a Graph API error message names them, and the fetch.streets keys they come from.
_PARAMETER_KEYS = {"bbox": "bbox", "limit": "page_size", "fields": "image_field", "field": "image_field"}


def _graph_error(exc: DownloadError) -> str:
    """``HTTP <status>, <type> <code>: <message>`` from a Graph API error document ({"error": {"message", "type",
    "code", "fbtrace_id"}}), or the HTTP status and the start of the body when it is not one."""
    try:
        error = json.loads(exc.body).get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    if isinstance(error, dict) and error.get("message"):
        return f"HTTP {exc.status}, {error.get('type', 'error')} {error.get('code', '?')}: {error['message']}"
    return f"HTTP {exc.status}" + (f": {exc.body.strip()[:200]}" if exc.body.strip() else "")


def _refused(exc: DownloadError, cfg: StreetsSource, what: str) -> FetchError:
    """One clear error for an API answer that no retry or split can change (4xx other than 429)."""
    detail = _graph_error(exc)
    code = None
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        code = int(json.loads(exc.body)["error"]["code"])
    if exc.status == 401 or code in (102, 104, 190):  # Graph API: 190 invalid/expired token, 104 none, 102 session
        return FetchError(
            f"fetch.streets: Mapillary refused the access token in ${cfg.token_env} ({detail}); create a client token "
            "at https://www.mapillary.com/dashboard/developers and export it in that variable"
        )
    if exc.status == 400:
        keys = sorted({f"fetch.streets.{k}" for p, k in _PARAMETER_KEYS.items() if re.search(rf"\b{p}\b", detail)})
        keys = keys or [f"fetch.streets.{k}" for k in ("bbox", "page_size", "image_field")]
        return FetchError(f"fetch.streets: Mapillary rejected {what} ({detail}); check {' / '.join(keys)}")
    return FetchError(f"fetch.streets: Mapillary refused {what} ({detail})")


def _split_or_raise(exc: DownloadError, cfg: StreetsSource, box: Box, url: str) -> str:
    """Why the search of ``box`` failed, when splitting the box may help (no answer in time, a 5xx, through all the
    retries); one :class:`FetchError` when it cannot: a refusal (4xx), a 429 that outlasted the retries, a box too
    small to split."""
    if exc.status == 429:  # still rate-limited after the retries: a split would only ask more often
        raise FetchError(f"fetch.streets: Mapillary is rate-limiting the search: {exc}") from exc
    if exc.status is not None and exc.status < 500:
        raise _refused(exc, cfg, f"the images search of box [{_bbox_text(box)}]") from exc
    why = str(exc).removeprefix(f"{url}: ")
    if box[2] - box[0] <= MIN_BOX_DEG or box[3] - box[1] <= MIN_BOX_DEG:
        raise FetchError(
            f"fetch.streets: the search of box [{_bbox_text(box)}] failed ({why}) and the box is too small to split "
            f"further (under {MIN_BOX_DEG:g} degrees): the API is failing, not the box's density"
        ) from exc
    return why


def _search_url(cfg: StreetsSource, box: Box) -> str:
    """The URL of the images search's first page for ``box``: the fields the fetch reads, ``page_size`` images."""
    fields = f"id,{cfg.image_field},camera_type,sequence,creator"
    return f"{cfg.api_url.rstrip('/')}/images?fields={fields}&bbox={_bbox_text(box)}&limit={cfg.page_size}"


def _page(answer: Any, cfg: StreetsSource) -> tuple[list[Any], str | None]:
    """A search answer's items and the URL of its next page (without the token), None on the last page; raises
    :class:`FetchError` when the answer holds no ``data`` list."""
    items = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(items, list):
        raise FetchError(f"fetch.streets: unexpected answer from {cfg.api_url}/images (no 'data' list)")
    following = (answer.get("paging") or {}).get("next")
    return items, _without_token(following) if isinstance(following, str) and following else None


def _out_of_budget(
    cfg: StreetsSource, box: Box, why: str, pending: int, failures: int, requests: int, candidates: int
) -> FetchError:
    """The error for a search of ``box`` that failed (``why``) with ``max_requests`` spent before the ``pending``
    boxes of its area were searched; ``failures``, ``requests``, ``candidates``: the search's totals so far."""
    return FetchError(
        f"fetch.streets: the search of box [{_bbox_text(box)}] failed ({why}) and fetch.streets.max_requests = "
        f"{cfg.max_requests} is spent with {pending} box(es) of its area unsearched ({failures} failed "
        f"search(es) in all, {requests} request(s), {candidates} candidates so far); raise "
        "fetch.streets.max_requests, or take a smaller fetch.streets.bbox"
    )


def search(cfg: StreetsSource, headers: dict[str, str], policy: RetryPolicy) -> dict[str, dict[str, Any]]:
    """Every image the API finds inside ``cfg.bbox`` (id -> item), as far as ``cfg.max_requests`` searches reach.

    A box is split into quadrants, searched in turn, when its answer is full (``page_size`` images and no
    ``paging.next``: it may hold more) and when its search keeps failing (a timeout, a connection failure or a 5xx
    through all of ``fetch.download.retries``: a box too dense for the API to answer in time). Each search counts once
    against ``max_requests``, its retries included. Running out of requests with full boxes unsearched is a warning
    (the candidates are a sample of the bbox); with a failed box's area unsearched, or a failing box too small to split,
    it is one :class:`FetchError` naming the box, the failures and the key. A 401/400 (token, parameters) is one
    :class:`FetchError` at once; a 429 is waited out as its ``Retry-After`` asks (``fetch.download``).
    """
    found: dict[str, dict[str, Any]] = {}
    # (box, None) or, for a quadrant of a box whose search failed, (box, (that box, why it failed))
    boxes: deque[tuple[Box, tuple[Box, str] | None]] = deque([(tuple(cfg.bbox), None)])  # type: ignore[arg-type]
    failures: list[str] = []
    requests = 0
    while boxes:
        box, because = boxes.popleft()
        url: str | None = _search_url(cfg, box)
        full = False
        while url:
            if requests == cfg.max_requests:
                unsearched = [w for _, w in [(box, because), *boxes] if w is not None]
                if unsearched:
                    pending = sum(w == unsearched[0] for w in unsearched)
                    raise _out_of_budget(cfg, *unsearched[0], pending, len(failures), requests, len(found))
                log.warning(
                    "streets: stopped after fetch.streets.max_requests = %d API requests with %d candidates; the "
                    "bbox holds more (a smaller bbox, or more requests, samples from all of it)",
                    cfg.max_requests,
                    len(found),
                )
                return found
            requests += 1
            try:
                answer = get_json(url, policy=policy, headers=headers)
            except DownloadError as exc:
                why = _split_or_raise(exc, cfg, box, url)
                failures.append(why)
                if requests + 4 > cfg.max_requests:
                    raise _out_of_budget(cfg, box, why, 4, len(failures), requests, len(found)) from exc
                log.warning(
                    "streets: the search of box [%s] failed (%s); searching its quadrants", _bbox_text(box), why
                )
                boxes.extend((quadrant, (box, why)) for quadrant in _quadrants(box))
                break
            items, url = _page(answer, cfg)
            found.update((str(i["id"]), i) for i in items if isinstance(i, dict) and i.get("id"))
            full = url is None and len(items) >= cfg.page_size
        if full and box[2] - box[0] > MIN_BOX_DEG:  # the answer may have been cut at page_size: look closer
            boxes.extend((quadrant, None) for quadrant in _quadrants(box))
    log.info(
        "streets: %d candidate images in %d API request(s)%s",
        len(found),
        requests,
        f"; {len(failures)} failed search(es) split into quadrants" if failures else "",
    )
    return found


def choose(items: dict[str, dict[str, Any]], cfg: StreetsSource) -> list[dict[str, Any]]:
    """The candidates in the order they are to be downloaded: perspective photos with a thumbnail, at most
    ``per_sequence`` per sequence, shuffled; all seeded and independent of the order the API answered in."""
    kept, dropped = [], Counter()
    for ident in sorted(items):
        item = items[ident]
        if not item.get(cfg.image_field):
            dropped["no thumbnail"] += 1
        elif item.get("camera_type") != PERSPECTIVE:
            dropped[f"camera_type {item.get('camera_type') or 'unknown'}"] += 1
        else:
            kept.append(item)
    if dropped:
        log.info("streets: dropped %s", ", ".join(f"{n} ({why})" for why, n in sorted(dropped.items())))
    rng = random.Random(cfg.seed)
    by_sequence: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in kept:
        by_sequence[_sequence(item) or f"image:{item['id']}"].append(item)
    pool = []
    for seq in sorted(by_sequence):
        members = by_sequence[seq]
        pool.extend(members if len(members) <= cfg.per_sequence else rng.sample(members, cfg.per_sequence))
    pool.sort(key=lambda i: str(i["id"]))
    return rng.sample(pool, len(pool))


def _thumbnail(
    item: dict[str, Any], cfg: StreetsSource, dest: Path, headers: dict[str, str], policy: RetryPolicy
) -> Path:
    """Download ``item``'s thumbnail to ``dest``, asking the API once for a fresh URL when the CDN says it expired."""
    try:
        return download(item[cfg.image_field], dest, policy=policy)
    except DownloadError as exc:
        if exc.status not in EXPIRED:
            raise
    fresh = get_json(f"{cfg.api_url.rstrip('/')}/{item['id']}?fields={cfg.image_field}", policy=policy, headers=headers)
    url = fresh.get(cfg.image_field) if isinstance(fresh, dict) else None
    if not url:
        raise DownloadError(f"mapillary image {item['id']}: its thumbnail link expired and the API gave no new one")
    log.info("streets: image %s: the thumbnail link had expired; downloading from a fresh one", item["id"])
    return download(url, dest, policy=policy)


def fetch_streets(cfg: StreetsSource, dl: DownloadSection, raw_dir: Path, role: str) -> list[Record]:
    """Search ``cfg.bbox``, choose ``cfg.photos`` photos (see the module docstring) and copy their thumbnails
    (cached) into ``raw_dir/role``."""
    token = os.environ.get(cfg.token_env, "").strip()
    if not token:
        raise FetchError(
            f"fetch.streets: set the environment variable {cfg.token_env} to a Mapillary access token "
            "(create one at https://www.mapillary.com/dashboard/developers), or use fetch.content.source: sample"
        )
    policy = retry_policy(dl)
    headers = {"Authorization": f"OAuth {token}"}
    order = choose(search(cfg, headers, policy), cfg)
    if not order:
        raise FetchError(f"fetch.streets: no perspective photos with {cfg.image_field} inside bbox {cfg.bbox}")
    cache = Path(dl.cache_dir) / "mapillary"
    (raw_dir / role).mkdir(parents=True, exist_ok=True)
    records: list[Record] = []
    failed = 0
    for item in order:
        if len(records) == cfg.photos:
            break
        ident = safe_id(f"mapillary-{item['id']}")
        try:
            cached = _thumbnail(item, cfg, cache / f"{ident}.jpg", headers, policy)
        except DownloadError as exc:
            failed += 1
            log.warning("streets: image %s skipped: %s", item["id"], exc)
            continue
        dest = raw_dir / role / f"{ident}.jpg"
        shutil.copyfile(cached, dest)
        creator = (item.get("creator") or {}).get("username") or "unknown contributor"
        license = f"{cfg.license}; photo by {creator}"
        url = PUBLIC_URL.format(id=item["id"])
        records.append(make_record(raw_dir, role, "streets", ident, dest, url, license, sequence=_sequence(item)))
    if len(records) < cfg.photos:
        log.warning(
            "streets: %d of fetch.streets.photos = %d photos (%d candidates after the filters, %d failed)",
            len(records),
            cfg.photos,
            len(order),
            failed,
        )
    if not records:
        raise FetchError(f"fetch.streets: none of the {len(order)} chosen photos could be downloaded")
    records.sort(key=lambda r: r.id)
    log.info("streets: %d photos from %d sequences", len(records), len({r.sequence for r in records}))
    return records
