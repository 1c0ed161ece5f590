"""Same declared inputs, same bytes: fetch and prepare run in two different directories produce outputs with the same
DVC hashes, and those are the hashes the committed dvc.lock records (a fresh clone's `dvc repro` leaves them as they
are)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def dvc_dir_hash(folder: Path) -> str:
    """DVC 3's ``md5`` of a directory: md5 of the JSON list of ``{md5, relpath}`` of its files, sorted by path."""
    entries = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        entries.append(
            {"md5": hashlib.md5(path.read_bytes()).hexdigest(), "relpath": path.relative_to(folder).as_posix()}
        )
    entries.sort(key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def locked(stage: str, path: str, kind: str = "outs") -> str:
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())
    return next(e["md5"] for e in lock["stages"][stage][kind] if e["path"] == path)


def nst(args: list[str], cwd: Path) -> None:
    exe = Path(sys.executable).with_name("nst")
    env = {**os.environ, "TQDM_DISABLE": "1"}
    done = subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_hash_function_is_dvcs():
    assert dvc_dir_hash(REPO / "data/sample") == locked("fetch", "data/sample", "deps")


@pytest.mark.slow
def test_fetch_and_prepare_give_the_same_bytes_anywhere_and_match_dvc_lock(tmp_path):
    hashes = []
    for where in (tmp_path / "a", tmp_path / "b" / "deeper" / "checkout"):
        where.mkdir(parents=True)
        shutil.copy(REPO / "params.yaml", where / "params.yaml")
        shutil.copytree(REPO / "profiles", where / "profiles")
        shutil.copytree(REPO / "data/sample", where / "data/sample")
        nst(["fetch", "--params", "params.yaml", "--out", "data/raw"], where)
        nst(["prepare", "--params", "params.yaml", "--raw", "data/raw", "--out", "data/prepared"], where)
        hashes.append((dvc_dir_hash(where / "data/raw"), dvc_dir_hash(where / "data/prepared")))
    assert hashes[0] == hashes[1]
    assert hashes[0] == (locked("fetch", "data/raw"), locked("prepare", "data/prepared"))
