"""scorer-weights stage against a real HTTP server on 127.0.0.1 serving small stand-in files (their sha256 pinned by
the test), offline behaviour on a refused port, local copies in torch hub's cache, and the real DVC graph: a weight
that appears or changes makes evaluate and the report out of date, and nothing upstream."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from evaluation.weights import FOUND_FILE, WEIGHTS, read_found
from methods.errors import NstError
from pipeline import cli
from pipeline.config import ScorerWeightsSection, WeightSource, load_params
from pipeline.stage_params import declared
from pipeline.stages import scorer_weights
from tests.test_cli_and_dvc import BIN, out_of_date, repo_copy, run  # noqa: F401  (repo_copy: the fixture, reused)
from tests.test_dvc_deps import resolved

STAND_IN = b"stand-in AlexNet weights: not a network, only bytes with a known hash\n" * 50
STAND_IN_SHA = hashlib.sha256(STAND_IN).hexdigest()
OTHER = b"a second version of the stand-in\n" * 40
OTHER_SHA = hashlib.sha256(OTHER).hexdigest()
ALEXNET = "alexnet-owt-7be5be79.pth"


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on: connecting is refused at once (what offline looks like, fast)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache and temp dir (no real weights of this machine leak in); loopback never proxied."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def write_params(
    repo_root: Path,
    path: Path,
    sources: dict[str, tuple[str, str | None]],
    refused: str | None = None,
    **settings: Any,
) -> ScorerWeightsSection:
    """params.yaml with ``scorer_weights.<name> = {url, sha256}`` from ``sources``; every other weight on a refused
    port (``refused``, an origin; default a new one). Returns the validated section."""
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    refused = refused or f"http://127.0.0.1:{closed_port()}"
    for name in WEIGHTS:
        url = raw["scorer_weights"][name]["url"]
        raw["scorer_weights"][name] = {"url": f"{refused}/{url.rsplit('/', 1)[1]}", "sha256": None}
    for name, (url, sha) in sources.items():
        raw["scorer_weights"][name] = {"url": url, "sha256": sha}
    raw["scorer_weights"].update(settings)
    path.write_text(yaml.safe_dump(raw))
    return load_params(path).scorer_weights


def found(out: Path) -> dict[str, Any]:
    return json.loads((out / FOUND_FILE).read_text())["weights"]


def test_the_section_names_every_weight_the_scorer_reads():
    sources = {k for k, f in ScorerWeightsSection.model_fields.items() if f.annotation is WeightSource}
    assert sources == set(WEIGHTS)
    assert declared("scorer-weights") == ("scorer_weights",)  # its params, and nobody else's
    assert all("scorer_weights" not in declared(stage) for stage in ("evaluate", "report"))
    stages = resolved()
    assert stages["scorer-weights"]["always_changed"] is True
    assert "models/scorer" in stages["evaluate"]["deps"]
    assert "--weights models/scorer" in stages["evaluate"]["cmd"]
    assert not any("models/scorer" in stage["deps"] for name, stage in stages.items() if name != "evaluate")


def test_downloads_the_pinned_file_and_records_its_sha256(tmp_path, repo_root, local_server, isolated):
    local_server.serve_bytes(f"/{ALEXNET}", STAND_IN)
    cfg = write_params(
        repo_root, tmp_path / "params.yaml", {"lpips_alexnet": (f"{local_server.url}/{ALEXNET}", STAND_IN_SHA)}
    )
    out = tmp_path / "models" / "scorer"
    scorer_weights.run(cfg, out)
    assert (out / ALEXNET).read_bytes() == STAND_IN
    doc = found(out)
    assert doc["lpips_alexnet"] == {"file": ALEXNET, "sha256": STAND_IN_SHA, "checked": "sha256 pinned"}
    host = cfg.cfsd_vgg19.url.split("/")[2]
    for name in ("cfsd_vgg19", "fid_inception", "art_inception"):
        assert doc[name] == {
            "file": None,
            "sha256": None,
            "reason": f"not on this machine; cannot connect to {host} (offline?)",
        }
    assert sorted(p.name for p in out.iterdir()) == [ALEXNET, FOUND_FILE]  # no .incoming, no .part left
    weights = read_found(out)
    assert weights.path("lpips_alexnet") == out / ALEXNET
    assert weights.path("art_inception") is None
    assert "cannot connect" in weights.why_absent("art_inception")
    # a second run keeps the file (no request) and writes the same bytes: DVC sees no change, evaluate stays current
    before = (out / FOUND_FILE).read_bytes()
    scorer_weights.run(cfg, out)
    assert local_server.count(f"/{ALEXNET}") == 1
    assert (out / FOUND_FILE).read_bytes() == before


def test_a_wrong_sha256_is_refused_with_one_error_naming_the_key(tmp_path, repo_root, local_server, isolated, capsys):
    local_server.serve_bytes(f"/{ALEXNET}", STAND_IN)
    write_params(repo_root, tmp_path / "params.yaml", {"lpips_alexnet": (f"{local_server.url}/{ALEXNET}", OTHER_SHA)})
    out = tmp_path / "scorer"
    code = cli.main(["scorer-weights", "--params", str(tmp_path / "params.yaml"), "--out", str(out)])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("nst scorer-weights: error: scorer_weights.lpips_alexnet.sha256: ")
    assert f"sha256 {STAND_IN_SHA}, but {OTHER_SHA} is pinned; the file is discarded" in lines[0]
    assert not any(out.rglob("*.pth*"))  # neither the file nor a partial one
    assert not (out / scorer_weights.INCOMING).exists()
    # a prefix pin is checked as a prefix: the right one passes, a wrong one fails
    prefix = {"lpips_alexnet": (f"{local_server.url}/{ALEXNET}", STAND_IN_SHA[:8])}
    scorer_weights.run(write_params(repo_root, tmp_path / "params.yaml", prefix), out)
    assert (
        found(out)["lpips_alexnet"]["checked"] == f"sha256 prefix {STAND_IN_SHA[:8]} pinned (the part the file "
        "name publishes)"
    )
    (out / ALEXNET).unlink()
    wrong = {"lpips_alexnet": (f"{local_server.url}/{ALEXNET}", OTHER_SHA[:8])}
    with pytest.raises(scorer_weights.ScorerWeightsError, match=r"^scorer_weights\.lpips_alexnet\.sha256: "):
        scorer_weights.run(write_params(repo_root, tmp_path / "params.yaml", wrong), out)
    assert not (out / ALEXNET).exists()


def test_offline_the_stage_ends_at_once_and_records_why(tmp_path, repo_root, isolated):
    """Connection refused is not retried (retries 2 with backoff 1 s would take 3 s per weight) and a host that
    refused is not asked again; the stage succeeds with every weight absent."""
    write_params(repo_root, tmp_path / "params.yaml", {}, retries=2, backoff_s=1.0)
    out = tmp_path / "scorer"
    start = time.monotonic()
    code = cli.main(["scorer-weights", "--params", str(tmp_path / "params.yaml"), "--out", str(out)])
    elapsed = time.monotonic() - start
    assert code == 0
    assert elapsed < 2.5, f"{elapsed:.1f} s offline"
    doc = found(out)
    assert all(entry["file"] is None and "cannot connect to 127.0.0.1:" in entry["reason"] for entry in doc.values())
    weights = read_found(out)
    assert all(weights.path(name) is None for name in WEIGHTS)


def test_transfer_failures_are_retried_then_recorded(tmp_path, repo_root, local_server, isolated):
    local_server.route("/busy/" + ALEXNET, lambda req: local_server.Reply(503))
    local_server.route("/gone/art_inception.pth", lambda req: local_server.Reply(404))
    sources = {
        "lpips_alexnet": (f"{local_server.url}/busy/{ALEXNET}", STAND_IN_SHA),
        "art_inception": (f"{local_server.url}/gone/art_inception.pth", None),
    }
    cfg = write_params(repo_root, tmp_path / "params.yaml", sources, retries=2, backoff_s=0.0)
    out = tmp_path / "scorer"
    scorer_weights.run(cfg, out, sleep=lambda s: None)
    assert local_server.count(f"/busy/{ALEXNET}") == 3  # the first attempt and 2 retries
    assert local_server.count("/gone/art_inception.pth") == 1  # a 404 is final
    doc = found(out)
    host = local_server.url.split("//")[1]
    assert doc["lpips_alexnet"]["reason"] == f"not on this machine; download from {host} failed: HTTP 503"
    assert doc["art_inception"]["reason"] == f"not on this machine; download from {host} failed: HTTP 404"


def test_a_local_copy_is_linked_and_a_bad_one_is_not_used(tmp_path, repo_root, local_server, isolated):
    isolated.mkdir(parents=True)
    (isolated / ALEXNET).write_bytes(STAND_IN)
    art_cache = Path(tempfile.gettempdir()) / "art_fid"  # art-fid's own download folder
    art_cache.mkdir()
    (art_cache / "art_inception.pth").write_bytes(OTHER)
    sources = {
        "lpips_alexnet": (f"{local_server.url}/{ALEXNET}", STAND_IN_SHA),
        "art_inception": (f"{local_server.url}/art_inception.pth", None),
    }
    out = tmp_path / "scorer"
    scorer_weights.run(write_params(repo_root, tmp_path / "params.yaml", sources), out)
    assert local_server.count() == 0  # nothing downloaded
    assert (out / ALEXNET).read_bytes() == STAND_IN
    assert os.path.samefile(out / ALEXNET, isolated / ALEXNET)  # a hard link: no second copy of the bytes
    assert found(out)["art_inception"] == {
        "file": "art_inception.pth",
        "sha256": OTHER_SHA,
        "checked": ("nothing pinned: sha256 recorded as found"),
    }
    # a cached copy that fails its pin is passed over for the download
    (out / ALEXNET).unlink()
    (isolated / ALEXNET).write_bytes(b"corrupt")
    local_server.serve_bytes(f"/{ALEXNET}", STAND_IN)
    scorer_weights.run(write_params(repo_root, tmp_path / "params.yaml", sources), out)
    assert (out / ALEXNET).read_bytes() == STAND_IN
    assert local_server.count(f"/{ALEXNET}") == 1


def test_a_changed_pin_replaces_the_file_and_a_broken_found_json_is_named(tmp_path, repo_root, local_server, isolated):
    local_server.serve_bytes(f"/{ALEXNET}", STAND_IN)
    url = f"{local_server.url}/{ALEXNET}"
    out = tmp_path / "scorer"
    scorer_weights.run(write_params(repo_root, tmp_path / "params.yaml", {"lpips_alexnet": (url, STAND_IN_SHA)}), out)
    local_server.serve_bytes(f"/{ALEXNET}", OTHER)  # a new version, pinned anew
    scorer_weights.run(write_params(repo_root, tmp_path / "params.yaml", {"lpips_alexnet": (url, OTHER_SHA)}), out)
    assert (out / ALEXNET).read_bytes() == OTHER
    assert found(out)["lpips_alexnet"]["sha256"] == OTHER_SHA
    (out / FOUND_FILE).write_text("{not json")
    with pytest.raises(NstError, match=r"found\.json: not readable JSON"):
        read_found(out)
    assert (
        read_found(tmp_path / "nowhere")
        .why_absent("lpips_alexnet")
        .endswith("(run the scorer-weights stage: nst scorer-weights)")
    )


# ------------------------------------------------------------------------------------------------ real DVC


def _placeholders(repo: Path) -> None:
    """Stand-ins for every stage's outputs and missing deps (a file where the path has a suffix, else a folder with
    one file), so that `dvc commit` can record a complete, consistent dvc.lock without running the pipeline."""
    paths = []
    for label, stage in resolved(repo).items():
        if label != "scorer-weights":
            paths += [*stage["outs"], *stage["deps"]]
    for rel in paths:
        path = repo / rel
        if path.exists():
            continue
        if path.suffix:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("{}\n" if path.suffix == ".json" else "placeholder\n")
        else:
            path.mkdir(parents=True, exist_ok=True)
            (path / "placeholder.txt").write_text(f"{rel}\n")


@pytest.mark.slow
def test_a_weight_that_appears_or_changes_reruns_evaluate_and_report_only(repo_copy, local_server, monkeypatch):  # noqa: F811
    """The lock is crafted with `dvc commit` over placeholder outputs (a real repro of every stage takes minutes and
    shows nothing more about this edge of the graph); the scorer-weights stage itself runs for real under DVC."""
    monkeypatch.setenv("TORCH_HOME", str(repo_copy.parent / "torch_home"))  # no weights of this machine
    monkeypatch.setenv("TMPDIR", str(repo_copy.parent))
    dvc = str(BIN / "dvc")
    params = repo_copy / "params.yaml"
    refused = f"http://127.0.0.1:{closed_port()}"  # one origin for the absent weights: their reasons stay the same
    write_params(repo_copy, params, {}, refused)  # offline: every weight absent
    shutil.rmtree(repo_copy / "models" / "scorer", ignore_errors=True)
    run([dvc, "repro", "scorer-weights"], repo_copy)
    assert all(e["file"] is None for e in found(repo_copy / "models" / "scorer").values())
    _placeholders(repo_copy)
    run([dvc, "commit", "--force"], repo_copy)
    assert out_of_date(repo_copy) == {"scorer-weights"}  # always changed, by design; everything else current

    # the weight appears: served on loopback, its sha256 pinned
    local_server.serve_bytes(f"/{ALEXNET}", STAND_IN)
    url = f"{local_server.url}/{ALEXNET}"
    write_params(repo_copy, params, {"lpips_alexnet": (url, STAND_IN_SHA)}, refused)
    assert out_of_date(repo_copy) == {"scorer-weights"}  # its params are no one else's
    first = run([dvc, "repro", "scorer-weights"], repo_copy)
    assert re.findall(r"Running stage '([^']+)'", first.stdout) == ["scorer-weights"]
    assert found(repo_copy / "models" / "scorer")["lpips_alexnet"]["sha256"] == STAND_IN_SHA
    assert out_of_date(repo_copy) == {"scorer-weights", "evaluate", "report"}

    # unchanged on a second run: nothing else goes out of date
    run([dvc, "commit", "--force", "evaluate", "report"], repo_copy)
    run([dvc, "repro", "scorer-weights"], repo_copy)
    assert local_server.count(f"/{ALEXNET}") == 1
    assert out_of_date(repo_copy) == {"scorer-weights"}

    # the weight changes (a new version, pinned anew)
    local_server.serve_bytes(f"/{ALEXNET}", OTHER)
    write_params(repo_copy, params, {"lpips_alexnet": (url, OTHER_SHA)}, refused)
    run([dvc, "repro", "scorer-weights"], repo_copy)
    assert (repo_copy / "models" / "scorer" / ALEXNET).read_bytes() == OTHER
    assert out_of_date(repo_copy) == {"scorer-weights", "evaluate", "report"}
    status = json.loads(run([dvc, "status", "--json"], repo_copy).stdout)
    assert {"changed deps": {"models/scorer": "modified"}} in status["evaluate"]
