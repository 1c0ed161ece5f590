"""prepare stage: validation with counted skips, resize policy, deterministic disjoint splits, atomic output."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import random
from pathlib import Path

import pytest
from PIL import Image

from methods.image import resize_to_edge
from pipeline.config import GridCap, Params, SplitSection, load_params
from pipeline.sources import FetchError, read_manifest, write_manifest
from pipeline.stages import fetch, prepare
from pipeline.stages.prepare import PrepareError, assign_splits, cap_test, split_counts, split_groups

NO_CAP = GridCap(content=None, style=None)
HALVES = SplitSection(train=0.5, val=0.25, test=0.25, group_by=["sequence"], test_max=NO_CAP)


@pytest.fixture
def params(repo_root: Path, sample_copy: Path) -> Params:
    base = load_params(repo_root / "params.yaml")
    fetch_cfg = base.fetch.model_copy(update={"sample": base.fetch.sample.model_copy(update={"dir": str(sample_copy)})})
    return base.model_copy(update={"fetch": fetch_cfg})


def with_prepare(params: Params, **changes) -> Params:
    return params.model_copy(update={"prepare": params.prepare.model_copy(update=changes)})


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


@pytest.mark.parametrize(
    ("n", "split", "expected"),
    [
        (8, HALVES, (4, 2, 2)),  # exact
        (7, HALVES, (3, 2, 2)),  # 3.5/1.75/1.75: floors 3/1/1, remainders .5/.75/.75 -> val, test
        (3, HALVES, (1, 1, 1)),
        (10, SplitSection(train=0.8, val=0.1, test=0.1, group_by=["sequence"], test_max=NO_CAP), (8, 1, 1)),
        (
            5,
            SplitSection(train=0.8, val=0.1, test=0.1, group_by=["sequence"], test_max=NO_CAP),
            (3, 1, 1),
        ),  # 4/0.5/0.5 -> 4/1/1 = 6 -> train gives one
    ],
)
def test_split_counts_by_hand(n, split, expected):
    assert split_counts(n, split) == expected


def test_split_counts_invariants():
    for n in range(3, 60):
        counts = split_counts(n, SplitSection(train=0.7, val=0.2, test=0.1, group_by=["sequence"], test_max=NO_CAP))
        assert sum(counts) == n
        assert min(counts) >= 1


def test_split_counts_too_few():
    with pytest.raises(PrepareError, match="2 usable style image"):
        split_counts(2, HALVES, "style")


def test_assign_splits_deterministic_disjoint_and_order_free():
    ids = [f"img{i:02d}" for i in range(30)]
    first = assign_splits(ids, HALVES, seed=3, role="content")
    again = assign_splits(list(reversed(ids)), HALVES, seed=3, role="content")
    assert first == again
    assert set(first) == set(ids)  # every id in exactly one split
    assert sorted(first.values()).count("train") == 15
    assert assign_splits(ids, HALVES, seed=4, role="content") != first
    assert assign_splits(ids, HALVES, seed=3, role="style") != first


def test_run_prepares_resizes_and_splits(tmp_path, params):
    fetch.run(params, tmp_path / "raw")
    stats = prepare.run(params, tmp_path / "raw", tmp_path / "prepared")
    # 5 content: 2.5/1.25/1.25 -> 2/1/1 + the largest remainder (train) = 3/1/1; 4 style: exactly 2/1/1
    assert stats["content"] == {"usable": 5, "skipped": 0, "train": 3, "val": 1, "test": 1, "spare": 0}
    assert stats["style"] == {"usable": 4, "skipped": 0, "train": 2, "val": 1, "test": 1, "spare": 0}
    rows = read_rows(tmp_path / "prepared" / "manifest.csv")
    assert len(rows) == 9
    seen: dict[str, set[str]] = {"content": set(), "style": set()}
    for row in rows:
        path = tmp_path / "prepared" / row["file"]
        assert path.parent == tmp_path / "prepared" / row["split"] / row["role"]
        with Image.open(path) as img:
            assert img.mode == "RGB"
            assert img.size == (int(row["width"]), int(row["height"]))
        # sample images are 120..160 px wide, below the 256 px bound: never upscaled
        assert (int(row["width"]), int(row["height"])) == (int(row["src_width"]), int(row["src_height"]))
        assert row["id"] not in seen[row["role"]]
        seen[row["role"]].add(row["id"])
    assert json.loads((tmp_path / "prepared" / "stats.json").read_text()) == stats


def test_resize_policy(tmp_path, params):
    fetch.run(params, tmp_path / "raw")
    small = with_prepare(params, resize=params.prepare.resize.model_copy(update={"side_px": 64, "edge": "short"}))
    prepare.run(small, tmp_path / "raw", tmp_path / "prepared")
    for row in read_rows(tmp_path / "prepared" / "manifest.csv"):
        w, h, sw, sh = (int(row[k]) for k in ("width", "height", "src_width", "src_height"))
        assert min(w, h) == 64
        assert max(w, h) == round(max(sw, sh) * 64 / min(sw, sh))


def test_resize_to_edge_upscale_flag():
    import torch

    img = torch.rand(1, 3, 30, 40)
    assert resize_to_edge(img, 80).shape[-2:] == (30, 40)  # no upscaling by default
    assert resize_to_edge(img, 80, upscale=True).shape[-2:] == (60, 80)
    out = resize_to_edge(img, 20, edge="short")
    assert out.shape[-2:] == (20, 27)
    assert out.min() >= 0
    assert out.max() <= 1


def test_run_is_deterministic(tmp_path, params):
    fetch.run(params, tmp_path / "raw")
    prepare.run(params, tmp_path / "raw", tmp_path / "a")
    prepare.run(params, tmp_path / "raw", tmp_path / "b")
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")


def test_bad_images_are_skipped_and_counted(tmp_path, params, sample_copy, make_image):
    (sample_copy / "content" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (sample_copy / "content" / "empty.png").write_bytes(b"")
    make_image("tiny.png", size=(40, 30), folder=sample_copy / "content")  # below min_side = 64
    fetch.run(params, tmp_path / "raw")
    stats = prepare.run(params, tmp_path / "raw", tmp_path / "prepared")
    assert stats["content"]["skipped"] == 3
    assert stats["content"]["usable"] == 5
    skipped = {
        r["id"]: r["reason"] for r in read_rows(tmp_path / "prepared" / "manifest.csv") if r["status"] == "skipped"
    }
    assert set(skipped) == {"broken", "empty", "tiny"}
    assert "not an image" in skipped["broken"]
    assert "0 bytes" in skipped["empty"]
    assert "min_side" in skipped["tiny"]
    assert not any((tmp_path / "prepared").rglob("tiny.png"))


def test_file_changed_after_fetch_is_skipped(tmp_path, params, make_image):
    fetch.run(params, tmp_path / "raw")
    make_image("content0.png", size=(120, 90), seed=999, folder=tmp_path / "raw" / "content")
    prepare.run(params, tmp_path / "raw", tmp_path / "prepared")
    rows = {r["id"]: r for r in read_rows(tmp_path / "prepared" / "manifest.csv") if r["role"] == "content"}
    assert rows["content0"]["status"] == "skipped"
    assert "sha256 differs" in rows["content0"]["reason"]


def test_too_few_images_errors_and_keeps_earlier_output(tmp_path, params, sample_copy):
    fetch.run(params, tmp_path / "raw")
    prepare.run(params, tmp_path / "raw", tmp_path / "prepared")
    before = tree_digest(tmp_path / "prepared")
    for path in list((sample_copy / "style").glob("style[1-3].png")):
        path.unlink()
    fetch.run(params, tmp_path / "raw")
    with pytest.raises(PrepareError, match="1 usable style image"):
        prepare.run(params, tmp_path / "raw", tmp_path / "prepared")
    assert tree_digest(tmp_path / "prepared") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared", "raw", "sample"]  # no temp dirs left


def test_missing_manifest(tmp_path, params):
    with pytest.raises(FetchError, match=r"manifest\.csv: manifest not found"):
        prepare.run(params, tmp_path / "nothing", tmp_path / "prepared")


# ----------------------------------------------------------------------------------------- grouped splits


def old_assign_splits(ids: list[str], split: SplitSection, seed: int, role: str) -> dict[str, str]:
    """The split before groups existed (per-image shuffle and cut), kept here as the reference."""
    order = sorted(ids)
    random.Random(f"{seed}:{role}").shuffle(order)
    n_train, n_val, _ = split_counts(len(order), split, role)
    return {i: "train" if k < n_train else "val" if k < n_train + n_val else "test" for k, i in enumerate(order)}


def test_split_groups_links_every_shared_value():
    values = {
        "a": {"sequence": "s1", "artist": "monet"},
        "b": {"sequence": "s1", "artist": "manet"},
        "c": {"sequence": "", "artist": "manet"},  # linked to a through b
        "d": {"sequence": "", "artist": ""},
        "e": {"sequence": "s2", "artist": ""},
        "f": {"sequence": "s2", "artist": ""},
    }
    assert split_groups(values) == [["a", "b", "c"], ["d"], ["e", "f"]]


@pytest.mark.parametrize("n", [3, 7, 20, 31])
def test_single_image_groups_split_as_before(n):
    ids = [f"img{i:02d}" for i in range(n)]
    for seed in range(5):
        expected = old_assign_splits(ids, HALVES, seed, "content")
        assert assign_splits(ids, HALVES, seed, "content") == expected
        assert assign_splits(ids, HALVES, seed, "content", [[i] for i in reversed(ids)]) == expected


def test_grouped_splits_keep_groups_whole_and_fill_every_split():
    rng = random.Random(0)
    for seed in range(40):
        sizes = [rng.randint(1, 6) for _ in range(rng.randint(3, 15))]
        groups, k = [], 0
        for size in sizes:
            groups.append([f"f{k + j:03d}" for j in range(size)])
            k += size
        ids = [i for g in groups for i in g]
        split = SplitSection(train=0.7, val=0.15, test=0.15, group_by=["sequence"], test_max=NO_CAP)
        assignment = assign_splits(ids, split, seed, "content", groups)
        assert all(len({assignment[i] for i in g}) == 1 for g in groups)
        assert set(assignment.values()) == {"train", "val", "test"}
        assert assign_splits(list(reversed(ids)), split, seed, "content", list(reversed(groups))) == assignment


def test_a_group_bigger_than_its_share_leaves_no_split_empty():
    groups = [[f"big{i}" for i in range(10)], ["x"], ["y"]]
    ids = [i for g in groups for i in g]
    for seed in range(10):
        assignment = assign_splits(ids, HALVES, seed, "content", groups)
        assert sorted({assignment[g[0]] for g in groups}) == ["test", "train", "val"]


def test_too_few_groups_is_one_clear_error():
    with pytest.raises(PrepareError, match=r"5 usable style image\(s\) in 2 group\(s\) of shared sequence") as info:
        assign_splits(list("abcde"), HALVES, 0, "style", [["a", "b", "c"], ["d", "e"]])
    assert "prepare.split.group_by" in str(info.value)


def test_prepare_groups_wikiart_paintings_by_artist_when_asked(tmp_path, params):
    fetch.run(params, tmp_path / "raw")
    records = read_manifest(tmp_path / "raw" / "manifest.csv")
    style_ids = sorted(r.id for r in records if r.role == "style")  # 4 paintings: two by each of two artists
    artist = {ident: f"artist{k // 2}" for k, ident in enumerate(style_ids)}
    write_manifest(
        [dataclasses.replace(r, artist=artist.get(r.id, "")) if r.role == "style" else r for r in records],
        tmp_path / "raw" / "manifest.csv",
    )
    split = params.prepare.split.model_copy(update={"group_by": ["sequence", "artist"]})
    with pytest.raises(PrepareError, match=r"4 usable style image.* in 2 group"):  # two artists cannot fill 3 splits
        prepare.run(with_prepare(params, split=split), tmp_path / "raw", tmp_path / "prepared")
    artist[style_ids[3]] = "artist2"  # three artists: a, a | b | c
    write_manifest(
        [dataclasses.replace(r, artist=artist.get(r.id, "")) if r.role == "style" else r for r in records],
        tmp_path / "raw" / "manifest.csv",
    )
    stats = prepare.run(with_prepare(params, split=split), tmp_path / "raw", tmp_path / "prepared")
    rows = {r["id"]: r["split"] for r in read_rows(tmp_path / "prepared" / "manifest.csv") if r["role"] == "style"}
    assert rows[style_ids[0]] == rows[style_ids[1]]  # artist0's two paintings together
    assert len({rows[style_ids[0]], rows[style_ids[2]], rows[style_ids[3]]}) == 3
    assert stats["style"]["usable"] == 4


def test_cap_test_keeps_one_image_per_group_before_a_second():
    groups = [["a1", "a2", "a3"], ["b1"], ["c1", "c2"], ["t1", "t2"]]
    assignment = {i: "test" for g in groups[:3] for i in g} | {"t1": "train", "t2": "train"}
    assert cap_test(assignment, groups, None, 0, "content") == set()
    assert cap_test(assignment, groups, 6, 0, "content") == set()  # 6 test images: nothing beyond the cap
    for seed in range(6):
        spare = cap_test(assignment, groups, 4, seed, "content")
        kept = {i for i, s in assignment.items() if s == "test"} - spare
        assert len(kept) == 4
        assert len(spare) == 2
        assert "b1" in kept
        assert kept & {"a1", "a2", "a3"}
        assert kept & {"c1", "c2"}
        assert not spare & {"t1", "t2"}
    three = cap_test(assignment, groups, 3, 0, "content")
    assert {i[0] for i in {"a1", "a2", "a3", "b1", "c1", "c2"} - three} == {"a", "b", "c"}
    assert cap_test(assignment, groups, 4, 0, "content") == cap_test(
        assignment, list(reversed(groups)), 4, 0, "content"
    )
    assert len({frozenset(cap_test(assignment, groups, 4, s, "content")) for s in range(12)}) > 1  # seeded


def test_test_max_keeps_the_grid_and_writes_no_spare_image(tmp_path, params):
    fetch.run(params, tmp_path / "raw")
    split = params.prepare.split.model_copy(
        update={"train": 0.2, "val": 0.2, "test": 0.6, "test_max": GridCap(content=2, style=None)}
    )
    stats = prepare.run(with_prepare(params, split=split), tmp_path / "raw", tmp_path / "prepared")
    # 5 contents: 1/1/3, one of the 3 test contents spare; 4 styles: 0.8/0.8/2.4 -> 1/1/2, uncapped
    assert stats["content"] == {"usable": 5, "skipped": 0, "train": 1, "val": 1, "test": 2, "spare": 1}
    assert stats["style"] == {"usable": 4, "skipped": 0, "train": 1, "val": 1, "test": 2, "spare": 0}
    rows = read_rows(tmp_path / "prepared" / "manifest.csv")
    spare = [r for r in rows if r["split"] == "spare"]
    assert len(spare) == 1
    assert spare[0]["role"] == "content"
    assert spare[0]["file"] == ""
    assert spare[0]["reason"] == "test image beyond prepare.split.test_max.content = 2"
    written = {p.stem for p in (tmp_path / "prepared").rglob("*.png")}
    assert spare[0]["id"] not in written
    assert len(written) == 8
    assert len(list((tmp_path / "prepared" / "test" / "content").iterdir())) == 2
