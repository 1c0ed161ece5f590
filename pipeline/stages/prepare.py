"""prepare stage: validate, resize and split the raw images -> ``<out>/{train,val,test}/{content,style}/``.

- Validation: every manifest row is read with :func:`pipeline.io.read_image` and checked against its sha256;
  unreadable, corrupt, over-``max_pixels`` and under-``min_side`` images are skipped with a warning and counted
  (``status``/``reason`` columns of the prepared manifest, totals in ``stats.json``). A role with fewer usable
  images than splits is an error.
- Resizing: the ``resize.edge`` side (long or short) is scaled to ``resize.side_px`` px, aspect ratio kept,
  antialiased bicubic, never enlarged unless ``resize.upscale``. Saved as 8-bit RGB PNG ``<id>.png``.
- Splitting: per role, images sharing a value of a ``split.group_by`` manifest column (a Mapillary ``sequence``, a
  WikiArt ``artist``) form one group; the groups (an image with no such value is a group of its own) are sorted by
  their first id, shuffled with ``Random(f"{seed}:{role}")`` and dealt in that order: a group goes to the split its
  first image falls in when the images are cut into train/val/test by the fractions (largest-remainder rounding,
  at least one each). So no group spans two splits, and with single-image groups this is a plain shuffle-and-cut.
  Same inputs + seed -> same split.
- Test grid: with ``split.test_max.<role>`` set, at most that many of the role's test images stay in the test split,
  taken one group at a time (groups shuffled with ``Random(f"{seed}:{role}:test_max")``, then the first image of
  each group, then the second, ...), so the grid spans as many capture drives or artists as it can. The others are
  "spare": in no split, never written, so no group spans test and train.
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

import torch
from tqdm.auto import tqdm

from methods.errors import NstError
from methods.image import resize_to_edge
from methods.utils import sha256_file
from pipeline import tracking
from pipeline.commands import add_command
from pipeline.config import Params, PrepareSection, SplitSection, load_params
from pipeline.io import ImageError, atomic_dir, read_image, write_csv, write_image, write_text_atomic
from pipeline.sources import ROLES, Record, read_manifest
from pipeline.stage_params import declared_tree, dump_declared

log = logging.getLogger(__name__)


SPLITS = ("train", "val", "test")
MANIFEST_FIELDS = (
    "role",
    "id",
    "split",
    "file",
    "status",
    "reason",
    "width",
    "height",
    "src_file",
    "src_width",
    "src_height",
    "src_sha256",
    "source",
    "license",
    "label",
)


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


def split_groups(values: dict[str, dict[str, str]]) -> list[list[str]]:
    """Ids linked by a shared non-empty value of any column (``values``: id -> {column: value}), as groups (sorted
    ids, groups sorted by their first id); an id with no value is a group of its own."""
    parent = {ident: ident for ident in values}

    def root(ident: str) -> str:
        while parent[ident] != ident:
            parent[ident] = parent[parent[ident]]
            ident = parent[ident]
        return ident

    first_with: dict[tuple[str, str], str] = {}
    for ident in sorted(values):
        for column, value in sorted(values[ident].items()):
            if value:
                other = first_with.setdefault((column, value), ident)
                a, b = sorted((root(ident), root(other)))
                parent[b] = a
    groups: dict[str, list[str]] = {}
    for ident in sorted(values):
        groups.setdefault(root(ident), []).append(ident)
    return sorted(groups.values())


def assign_splits(
    ids: list[str], split: SplitSection, seed: int, role: str, groups: list[list[str]] | None = None
) -> dict[str, str]:
    """Map each id to "train" | "val" | "test", keeping each of ``groups`` (lists of ids; default: every id alone)
    in one split; deterministic for the same ids and groups (in any order) and seed."""
    units = sorted(sorted(g) for g in groups) if groups is not None else [[ident] for ident in sorted(ids)]
    if sorted(i for g in units for i in g) != sorted(ids):
        raise ValueError("groups must partition the ids")
    random.Random(f"{seed}:{role}").shuffle(units)
    n_train, n_val, _ = split_counts(len(ids), split, role)
    if len(units) < len(SPLITS):
        raise PrepareError(
            f"{len(ids)} usable {role} image(s) in {len(units)} group(s) of shared {' / '.join(split.group_by)}, "
            "but train/val/test need one group each (prepare.split.group_by)"
        )
    dealt: list[list[list[str]]] = [[], [], []]
    start = 0
    for unit in units:
        dealt[0 if start < n_train else 1 if start < n_train + n_val else 2].append(unit)
        start += len(unit)
    for s in range(len(SPLITS)):  # a group bigger than its share can leave a later split without any
        if not dealt[s]:
            donor = max(range(len(SPLITS)), key=lambda t: (len(dealt[t]), -t))
            dealt[s].append(dealt[donor].pop())
    return {ident: SPLITS[s] for s in range(len(SPLITS)) for unit in dealt[s] for ident in unit}


def cap_test(assignment: dict[str, str], groups: list[list[str]], cap: int | None, seed: int, role: str) -> set[str]:
    """The test ids beyond ``cap`` (empty when ``cap`` is None or not exceeded): every group with a test image keeps
    one before any keeps two, in a seeded order."""
    units = [sorted(i for i in g if assignment[i] == "test") for g in sorted(sorted(g) for g in groups)]
    units = [u for u in units if u]
    if cap is None or sum(map(len, units)) <= cap:
        return set()
    rng = random.Random(f"{seed}:{role}:test_max")
    rng.shuffle(units)
    for unit in units:
        rng.shuffle(unit)
    kept = [unit[depth] for depth in range(max(map(len, units))) for unit in units if depth < len(unit)][:cap]
    return {i for unit in units for i in unit} - set(kept)


def manifest_row(rec: Record) -> dict[str, object]:
    """The prepared manifest's row for ``rec`` before validation: status "ok", no split, file or size yet."""
    return {
        "role": rec.role,
        "id": rec.id,
        "split": "",
        "file": "",
        "status": "ok",
        "reason": "",
        "width": "",
        "height": "",
        "src_file": rec.file,
        "src_width": rec.width or "",
        "src_height": rec.height or "",
        "src_sha256": rec.sha256,
        "source": rec.source,
        "license": rec.license,
        "label": rec.label,
    }


def validated_image(rec: Record, path: Path, cfg: PrepareSection) -> torch.Tensor:
    """The image at ``path`` (``rec``'s raw file) as read by :func:`pipeline.io.read_image`; raises ImageError when
    its role is unknown, it is missing, its sha256 differs from the manifest, or it is over ``max_pixels`` or under
    ``min_side``."""
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
    return image


def stage_images(
    records: list[Record], raw_dir: Path, cfg: PrepareSection, tmp: Path
) -> tuple[list[dict[str, object]], dict[str, list[dict[str, object]]]]:
    """Validate and resize every record into ``tmp/_staging/<role>/<id>.png``; return every manifest row (in
    manifest order, the skipped ones with their reason) and, per role, the rows of the usable images."""
    rows: list[dict[str, object]] = []
    staged: dict[str, list[dict[str, object]]] = {role: [] for role in ROLES}
    for rec in tqdm(records, desc="prepare", unit="img", disable=None):
        path = raw_dir / rec.file
        row = manifest_row(rec)
        try:
            image = validated_image(rec, path, cfg)
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
    return rows, staged


def split_role(
    role: str,
    usable: list[dict[str, object]],
    group_values: dict[tuple[str, str], dict[str, str]],
    cfg: PrepareSection,
    tmp: Path,
) -> None:
    """Assign ``role``'s usable rows to their splits (or "spare", beyond the test cap), moving each kept image from
    ``tmp/_staging`` to ``tmp/<split>/<role>/``; updates the rows' ``split``, ``file`` and ``reason`` in place."""
    ids = [str(r["id"]) for r in usable]
    groups = split_groups({ident: group_values[role, ident] for ident in ids})
    if len(groups) < len(ids):
        log.info("prepare: %d %s images in %d groups (%s)", len(ids), role, len(groups), cfg.split.group_by)
    assignment = assign_splits(ids, cfg.split, cfg.seed, role, groups)
    cap = getattr(cfg.split.test_max, role)
    spare = cap_test(assignment, groups, cap, cfg.seed, role)
    for row in usable:
        split = assignment[str(row["id"])]
        if row["id"] in spare:
            row.update(split="spare", reason=f"test image beyond prepare.split.test_max.{role} = {cap}")
            continue
        dest = tmp / split / role / f"{row['id']}.png"
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / "_staging" / role / f"{row['id']}.png", dest)
        row.update(split=split, file=dest.relative_to(tmp).as_posix())


def run(params: Params, raw_dir: Path, out_dir: Path) -> dict[str, object]:
    """Prepare ``raw_dir`` into ``out_dir`` (replaced atomically); return the stats written to stats.json."""
    cfg = params.prepare
    records = read_manifest(raw_dir / "manifest.csv")
    with atomic_dir(out_dir) as tmp:
        group_values = {  # (role, id) -> the group_by columns' values
            (rec.role, rec.id): {c: getattr(rec, c) for c in cfg.split.group_by} for rec in records
        }
        rows, staged = stage_images(records, raw_dir, cfg, tmp)
        stats: dict[str, object] = {"skipped": sum(1 for r in rows if r["status"] == "skipped")}
        for role in ROLES:
            usable = staged[role]
            skipped = sum(1 for r in rows if r["role"] == role and r["status"] == "skipped")
            if len(usable) < len(SPLITS):
                raise PrepareError(
                    f"{raw_dir}: {len(usable)} usable {role} image(s) ({skipped} skipped), "
                    "but train/val/test need at least one each"
                )
            split_role(role, usable, group_values, cfg, tmp)
            per_split = Counter(str(row["split"]) for row in usable)
            stats[role] = {
                "usable": len(usable),
                "skipped": skipped,
                **{s: per_split.get(s, 0) for s in (*SPLITS, "spare")},
            }
        shutil.rmtree(tmp / "_staging", ignore_errors=True)
        rows.sort(key=lambda r: (str(r["role"]), str(r["split"]), str(r["id"])))
        write_csv(rows, MANIFEST_FIELDS, tmp / "manifest.csv")
        write_text_atomic(tmp / "stats.json", json.dumps(stats, indent=2) + "\n")
        write_text_atomic(tmp / "effective_params.yaml", dump_declared(params, "prepare"))
    log.info("prepare: %s", json.dumps(stats))
    return stats


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "prepare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    p.add_argument("--raw", type=Path, default=Path("data/raw"), help="fetch output (default: data/raw)")
    p.add_argument("--out", type=Path, default=Path("data/prepared"), help="output folder (default: data/prepared)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    with tracking.stage_run(
        "prepare",
        None,
        declared_tree(params, "prepare"),
        uri=params.tracking.uri,
        experiment=params.tracking.experiment,
    ) as logger:
        stats = run(params, args.raw, args.out)
        flat = {"skipped": stats["skipped"]}
        for role in ROLES:
            flat.update({f"{role}_{k}": v for k, v in stats[role].items()})  # type: ignore[union-attr]
        logger.log_metrics(flat)
        logger.log_artifact(args.out / "manifest.csv")
    return 0
