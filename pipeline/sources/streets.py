"""Street-level photos from the Mapillary Graph API v4 (https://www.mapillary.com/developer/api-documentation).

Images are CC BY-SA 4.0 (Mapillary terms); each manifest row credits the contributor. Set-up: create a client
at https://www.mapillary.com/dashboard/developers and export its access token in the environment variable named
by ``fetch.streets.token_env`` (default ``MAPILLARY_TOKEN``). The token travels in the Authorization header, so
it never appears in logged URLs or the manifest.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from pathlib import Path

from pipeline.config import DownloadSection, StreetsSource
from pipeline.download import download, get_json, retry_policy
from pipeline.sources import FetchError, Record, make_record, safe_id

log = logging.getLogger(__name__)

PUBLIC_URL = "https://www.mapillary.com/app/?pKey={id}"


def fetch_streets(cfg: StreetsSource, dl: DownloadSection, raw_dir: Path, role: str) -> list[Record]:
    """Query images inside ``cfg.bbox`` and download their thumbnails (cached) into ``raw_dir/role``."""
    token = os.environ.get(cfg.token_env, "").strip()
    if not token:
        raise FetchError(
            f"fetch.streets: set the environment variable {cfg.token_env} to a Mapillary access token "
            "(create one at https://www.mapillary.com/dashboard/developers), or use fetch.content.source: sample"
        )
    policy = retry_policy(dl)
    headers = {"Authorization": f"OAuth {token}"}
    bbox = ",".join(f"{v:g}" for v in cfg.bbox)
    url = f"{cfg.api_url.rstrip('/')}/images?fields=id,{cfg.image_field},creator&bbox={bbox}&limit={cfg.limit}"
    answer = get_json(url, policy=policy, headers=headers)
    items = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(items, list):
        raise FetchError(f"fetch.streets: unexpected answer from {cfg.api_url}/images (no 'data' list)")
    items = sorted((i for i in items if i.get("id") and i.get(cfg.image_field)), key=lambda i: str(i["id"]))
    if len(items) > cfg.limit:
        items = sorted(random.Random(cfg.seed).sample(items, cfg.limit), key=lambda i: str(i["id"]))
    if not items:
        raise FetchError(f"fetch.streets: no images with {cfg.image_field} inside bbox {cfg.bbox}")
    cache = Path(dl.cache_dir) / "mapillary"
    (raw_dir / role).mkdir(parents=True, exist_ok=True)
    records = []
    for item in items:
        ident = safe_id(f"mapillary-{item['id']}")
        cached = download(item[cfg.image_field], cache / f"{ident}.jpg", policy=policy)
        dest = raw_dir / role / f"{ident}.jpg"
        shutil.copyfile(cached, dest)
        creator = (item.get("creator") or {}).get("username") or "unknown contributor"
        license = f"{cfg.license}; photo by {creator}"
        records.append(make_record(raw_dir, role, "streets", ident, dest, PUBLIC_URL.format(id=item["id"]), license))
    log.info("streets: %d photos from Mapillary", len(records))
    return records
