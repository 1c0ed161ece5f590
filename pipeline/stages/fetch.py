"""fetch stage: content and style images -> ``<out>/{content,style}/`` + ``manifest.csv``.

The output folder is built aside and swapped in whole, so a failed fetch leaves the previous one intact.
Downloads are cached under ``fetch.download.cache_dir`` and skipped when present and verified.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from pathlib import Path

from pipeline import tracking
from pipeline.commands import add_command
from pipeline.config import FetchSection, Params, load_params
from pipeline.io import atomic_dir, write_text_atomic
from pipeline.sources import ROLES, Record, write_manifest
from pipeline.sources.local import fetch_folder, fetch_sample
from pipeline.sources.streets import fetch_streets
from pipeline.sources.wikiart import fetch_wikiart
from pipeline.stage_params import declared_tree, dump_declared

log = logging.getLogger(__name__)


def fetch_role(cfg: FetchSection, role: str, raw_dir: Path) -> list[Record]:
    """Fetch the images of one role from the source chosen for it."""
    source = getattr(cfg, role).source
    if source == "sample":
        return fetch_sample(cfg.sample.dir, raw_dir, role)
    if source == "folder":
        return fetch_folder(getattr(cfg.folder, f"{role}_dir"), raw_dir, role, cfg.folder.license)
    if source == "wikiart":
        return fetch_wikiart(cfg.wikiart, cfg.download, raw_dir, role)
    return fetch_streets(cfg.streets, cfg.download, raw_dir, role)


def run(params: Params, out_dir: Path) -> list[Record]:
    """Fetch both roles into ``out_dir`` (replaced atomically) and write its manifest."""
    with atomic_dir(out_dir) as tmp:
        records = [rec for role in ROLES for rec in fetch_role(params.fetch, role, tmp)]
        write_manifest(records, tmp / "manifest.csv")
        write_text_atomic(tmp / "effective_params.yaml", dump_declared(params, "fetch"))
    counts = Counter((r.role, r.source) for r in records)
    for (role, source), n in sorted(counts.items()):
        log.info("fetch: %d %s images from %s", n, role, source)
    return records


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "fetch", description=__doc__)
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    p.add_argument("--out", type=Path, default=Path("data/raw"), help="output folder (default: data/raw)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    with tracking.stage_run(
        "fetch",
        None,
        declared_tree(params, "fetch"),
        uri=params.tracking.uri,
        experiment=params.tracking.experiment,
    ) as logger:
        records = run(params, args.out)
        counts = Counter(f"{r.role}_{r.source}" for r in records)
        logger.log_metrics({"images": len(records), **{f"images_{k}": v for k, v in counts.items()}})
        logger.log_artifact(args.out / "manifest.csv")
    return 0
