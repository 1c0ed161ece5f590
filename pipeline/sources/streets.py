"""Street-level photos from the Mapillary Graph API v4 (https://www.mapillary.com/developer/api-documentation).

Images are CC BY-SA 4.0 (Mapillary terms); each manifest row credits the contributor. Set-up: create a client
at https://www.mapillary.com/dashboard/developers and export its access token in the environment variable named
by ``fetch.streets.token_env`` (default ``MAPILLARY_TOKEN``). The token travels in the Authorization header, so
it never appears in logged URLs or the manifest (an ``access_token`` in a paging link is dropped before use).

Selection, seeded and independent of the order the API answers in:
1. Candidates: every image the ``images`` search finds inside ``bbox``. One answer holds at most ``page_size`` images;
   a ``paging.next`` link is followed when the answer has one, and a full answer without one means the box may hold
   more, so it is split into quadrants that are searched in turn (at most ``max_requests`` requests in all).
2. Only ``camera_type == "perspective"`` photos stay: spherical / equirectangular panoramas arrive as flattened
   360-degree thumbnails, fisheye frames as circles; neither is a street photo to stylize.
3. At most ``per_sequence`` photos of one sequence (one capture drive; consecutive frames are near-duplicates), drawn
   with the seed; then a seeded shuffle of what is left, downloaded in that order until ``photos`` succeed.
Each photo's sequence id goes into the manifest, and ``prepare`` keeps a sequence within one split.

Thumbnail URLs are signed and expire: a 403 or 410 for one asks the API for that image's current URL once and tries
again; a photo that still fails is skipped with a warning and the next one in the shuffled order taken instead.
"""

from __future__ import annotations

import logging
import os
import random
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


def search(cfg: StreetsSource, headers: dict[str, str], policy: RetryPolicy) -> dict[str, dict[str, Any]]:
    """Every image the API finds inside ``cfg.bbox`` (id -> item), as far as ``cfg.max_requests`` requests reach."""
    fields = f"id,{cfg.image_field},camera_type,sequence,creator"
    found: dict[str, dict[str, Any]] = {}
    boxes: deque[Box] = deque([tuple(cfg.bbox)])  # type: ignore[arg-type]
    requests = 0
    while boxes:
        box = boxes.popleft()
        bbox = ",".join(f"{v:.8f}".rstrip("0").rstrip(".") for v in box)  # 1e-8 degrees: about a millimetre
        url: str | None = f"{cfg.api_url.rstrip('/')}/images?fields={fields}&bbox={bbox}&limit={cfg.page_size}"
        full = False
        while url:
            if requests == cfg.max_requests:
                log.warning(
                    "streets: stopped after fetch.streets.max_requests = %d API requests with %d candidates; the "
                    "bbox holds more (a smaller bbox, or more requests, samples from all of it)",
                    cfg.max_requests,
                    len(found),
                )
                return found
            answer = get_json(url, policy=policy, headers=headers)
            requests += 1
            items = answer.get("data") if isinstance(answer, dict) else None
            if not isinstance(items, list):
                raise FetchError(f"fetch.streets: unexpected answer from {cfg.api_url}/images (no 'data' list)")
            found.update((str(i["id"]), i) for i in items if isinstance(i, dict) and i.get("id"))
            following = (answer.get("paging") or {}).get("next")
            url = _without_token(following) if isinstance(following, str) and following else None
            full = url is None and len(items) >= cfg.page_size
        if full and box[2] - box[0] > MIN_BOX_DEG:  # the answer may have been cut at page_size: look closer
            boxes.extend(_quadrants(box))
    log.info("streets: %d candidate images in %d API request(s)", len(found), requests)
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
