"""prepare stage: validate, resize and split the raw images -> ``<out>/{train,val,test}/{content,style}/``.

- Validation: every manifest row is read with :func:`pipeline.io.read_image` and checked against its sha256;
  unreadable, corrupt, over-``max_pixels`` and under-``min_side`` images are skipped with a warning and counted
  (``status``/``reason`` columns of the prepared manifest, totals in ``stats.json``). A role with fewer usable
  images than splits is an error.
- Resizing: the ``resize.edge`` side (long or short) is scaled to ``resize.side_px`` px, aspect ratio kept,
  antialiased bicubic, never enlarged unless ``resize.upscale``. Saved as 8-bit RGB PNG ``<id>.png``.
- Splitting: per role, ids are sorted, shuffled with ``Random(f"{seed}:{role}")`` and cut into train/val/test by
  the fractions (largest-remainder rounding, at least one image each). Same inputs + seed -> same split.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import shutil
from collections import Counter
from pathlib import Path

from tqdm.auto import tqdm

from methods.errors import NstError
from methods.image import resize_to_edge
from methods.utils import sha256_file
from pipeline import tracking
from pipeline.config import Params, SplitSection, dump_params, load_params
from pipeline.io import ImageError, atomic_dir, read_image, write_csv, write_image, write_text_atomic
from pipeline.sources import ROLES, read_manifest

log = logging.getLogger(__name__)

PARAMS = ("profile", "prepare")  # the params sections this stage declares in dvc.yaml (tests/test_dvc_params.py)

SPLITS = ("train", "val", "test")
MANIFEST_FIELDS = (
    "role", "id", "split", "file", "status", "reason", "width", "height",
    "src_file", "src_width", "src_height", "src_sha256", "source", "license", "label",
)  # fmt: skip


class PrepareError(NstError):
    """The raw data cannot be prepared (e.g. too few usable images for the splits)."""


def split_counts(n: int, split: SplitSection, role: str = "images") -> tuple[int, int, int]:
    """Sizes of train/val/test for ``n`` items: largest-remainder rounding of the fractions, each >= 1."""
    fracs = (split.train, split.val, split.test)
    if n < len(fracs):
        raise PrepareError(f"{n} usable {role} image(s), but train/val/test need at least one each (3 in all)")
    exact = [f * n for f in fracs]
    counts = [max(1, math.floor(x)) for x in exact]
    while sum(counts) > n:
        counts[counts.index(max(counts))] -= 1
    by_remainder = sorted(range(3), key=lambda i: (-(exact[i] - math.floor(exact[i])), i))
    k = 0
    while sum(counts) < n:
        counts[by_remainder[k % 3]] += 1
        k += 1
    return counts[0], counts[1], counts[2]


def assign_splits(ids: list[str], split: SplitSection, seed: int, role: str) -> dict[str, str]:
    """Map each id to "train" | "val" | "test"; deterministic for the same ids (in any order) and seed."""
    order = sorted(ids)
    random.Random(f"{seed}:{role}").shuffle(order)
    n_train, n_val, _ = split_counts(len(order), split, role)
    return {
        ident: "train" if i < n_train else "val" if i < n_train + n_val else "test" for i, ident in enumerate(order)
    }


def run(params: Params, raw_dir: Path, out_dir: Path) -> dict[str, object]:
    """Prepare ``raw_dir`` into ``out_dir`` (replaced atomically); return the stats written to stats.json."""
    cfg = params.prepare
    records = read_manifest(raw_dir / "manifest.csv")
    rows: list[dict[str, object]] = []
    with atomic_dir(out_dir) as tmp:
        staged: dict[str, list[dict[str, object]]] = {role: [] for role in ROLES}
        for rec in tqdm(records, desc="prepare", unit="img", disable=None):
            path = raw_dir / rec.file
            row: dict[str, object] = {
                "role": rec.role, "id": rec.id, "split": "", "file": "", "status": "ok", "reason": "",
                "width": "", "height": "", "src_file": rec.file, "src_width": rec.width or "",
                "src_height": rec.height or "", "src_sha256": rec.sha256, "source": rec.source,
                "license": rec.license, "label": rec.label,
            }  # fmt: skip
            try:
                if rec.role not in ROLES:
                    raise ImageError(f"{path}: unknown role {rec.role!r} in the manifest")
                if not path.is_file():
                    raise ImageError(f"{path}: listed in the manifest but missing")
                if sha256_file(path) != rec.sha256:
                    raise ImageError(f"{path}: sha256 differs from the manifest (file changed after fetch)")
                image = read_image(path, max_pixels=cfg.max_pixels)
                h, w = image.shape[-2:]
                if min(h, w) < cfg.min_side:
                    raise ImageError(f"{path}: {w}x{h} is smaller than prepare.min_side = {cfg.min_side} px")
            except ImageError as exc:
                log.warning("skipped: %s", exc)
                row.update(status="skipped", reason=str(exc))
                rows.append(row)
                continue
            image = resize_to_edge(image, cfg.resize.side_px, cfg.resize.edge, cfg.resize.upscale)
            staging = tmp / "_staging" / rec.role / f"{rec.id}.png"
            staging.parent.mkdir(parents=True, exist_ok=True)
            write_image(image, staging)
            row.update(width=image.shape[-1], height=image.shape[-2])
            staged[rec.role].append(row)
            rows.append(row)
        stats: dict[str, object] = {"skipped": sum(1 for r in rows if r["status"] == "skipped")}
        for role in ROLES:
            usable = staged[role]
            skipped = sum(1 for r in rows if r["role"] == role and r["status"] == "skipped")
            if len(usable) < len(SPLITS):
                raise PrepareError(
                    f"{raw_dir}: {len(usable)} usable {role} image(s) ({skipped} skipped), "
                    "but train/val/test need at least one each"
                )
            assignment = assign_splits([str(r["id"]) for r in usable], cfg.split, cfg.seed, role)
            for row in usable:
                split = assignment[str(row["id"])]
                dest = tmp / split / role / f"{row['id']}.png"
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp / "_staging" / role / f"{row['id']}.png", dest)
                row.update(split=split, file=dest.relative_to(tmp).as_posix())
            per_split = Counter(assignment.values())
            stats[role] = {
                "usable": len(usable),
                "skipped": skipped,
                **{s: per_split.get(s, 0) for s in SPLITS},
            }
        shutil.rmtree(tmp / "_staging", ignore_errors=True)
        rows.sort(key=lambda r: (str(r["role"]), str(r["split"]), str(r["id"])))
        write_csv(rows, MANIFEST_FIELDS, tmp / "manifest.csv")
        write_text_atomic(tmp / "stats.json", json.dumps(stats, indent=2) + "\n")
        write_text_atomic(tmp / "effective_params.yaml", dump_params(params, PARAMS))
    log.info("prepare: %s", json.dumps(stats))
    return stats


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="validate, resize and split the images (stage 2)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    p.add_argument("--raw", type=Path, default=Path("data/raw"), help="fetch output (default: data/raw)")
    p.add_argument("--out", type=Path, default=Path("data/prepared"), help="output folder (default: data/prepared)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    tree = params.model_dump(mode="json")
    with tracking.stage_run(
        "prepare", None, {"profile": tree["profile"], "prepare": tree["prepare"]},
        uri=params.tracking.uri, experiment=params.tracking.experiment,
    ) as logger:  # fmt: skip
        stats = run(params, args.raw, args.out)
        flat = {"skipped": stats["skipped"]}
        for role in ROLES:
            flat.update({f"{role}_{k}": v for k, v in stats[role].items()})  # type: ignore[union-attr]
        logger.log_metrics(flat)
        logger.log_artifact(args.out / "manifest.csv")
    return 0
