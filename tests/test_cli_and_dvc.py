"""The `nst` command and the real DVC pipeline on a copy of this repository."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tests_support import copy_checkout

BIN = Path(sys.executable).parent


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(cwd),
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def repo_copy(tmp_path: Path, repo_root: Path) -> Path:
    """What a fresh clone holds: tracked and untracked-but-not-ignored files, in a new git repository."""
    return copy_checkout(repo_root, tmp_path / "repo")


def out_of_date(repo: Path) -> set[str]:
    """The stages `dvc status` lists (scorer-weights always: it is ``always_changed``)."""
    return set(json.loads(run([str(BIN / "dvc"), "status", "--json"], repo).stdout or "{}"))


def offline_scorer_weights(text: str) -> str:
    """params.yaml text with every ``scorer_weights`` URL on a refused loopback port: the stage records the weights
    absent at once (no test reaches beyond 127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    text, n = re.subn(r"(?m)^(    url: )https://\S+/([^/\s]+\.pth)", rf"\g<1>http://127.0.0.1:{port}/\g<2>", text)
    assert n == 4
    return text


def test_help_lists_the_stages(repo_root):
    out = run([str(BIN / "nst"), "--help"], repo_root).stdout
    assert "fetch" in out
    assert "prepare" in out


def test_bad_params_give_one_line_and_exit_2(tmp_path, repo_root):
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["prepare"]["resize"]["side_px"] = "big"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run([str(BIN / "nst"), "prepare", "--params", "params.yaml"], tmp_path, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("nst prepare: error:")
    assert "prepare.resize.side_px = 'big'" in lines[0]


def test_failed_fetch_keeps_earlier_output(tmp_path, repo_root, sample_copy):
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["fetch"]["sample"]["dir"] = str(sample_copy)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    run([str(BIN / "nst"), "fetch", "--out", "raw"], tmp_path)
    manifest = (tmp_path / "raw" / "manifest.csv").read_bytes()
    for path in (sample_copy / "style").glob("*.png"):
        path.unlink()
    proc = run([str(BIN / "nst"), "fetch", "--out", "raw"], tmp_path, check=False)
    assert proc.returncode == 2
    assert "holds no image files" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (tmp_path / "raw" / "manifest.csv").read_bytes() == manifest


@pytest.mark.slow
def test_dvc_repro_from_a_fresh_copy(repo_copy, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(repo_copy.parent / "torch_home"))  # no scorer weights of this machine
    dvc = str(BIN / "dvc")
    params = repo_copy / "params.yaml"
    text = params.read_text()
    assert "    iterations: 30 " in text
    text = text.replace("    iterations: 30 ", "    iterations: 2 ", 1)  # keep the test short: gatys
    assert "      iterations: 160 " in text
    text = text.replace("      iterations: 160 ", "      iterations: 3 ", 1)  # adain training
    assert "      iterations: 120 " in text
    text = text.replace("      iterations: 120 ", "      iterations: 2 ", 1)  # contrastive training
    # tuning: two trials per method (the reference weights + one), each a 2-iteration schedule (Gatys: its stylize
    # settings, shortened above)
    text, n = re.subn(r"(?m)^(    trials: )\d+", r"\g<1>2", text)
    assert n == 3
    for budget in ("{train: {iterations: 20, fp32_iterations: 8}}", "{train: {iterations: 16, fp32_iterations: 6}}"):
        assert f"budget: {budget}" in text
        text = text.replace(f"budget: {budget}", "budget: {train: {iterations: 2}}")
    params.write_text(offline_scorer_weights(text))
    first = run([dvc, "repro"], repo_copy)
    for stage in (
        "scorer-weights",
        "fetch",
        "prepare",
        "tune@gatys",
        "tune@adain",
        "tune@contrastive",
        "train@adain",
        "train@contrastive",
        "stylize@gatys",
        "stylize@adain",
        "stylize@contrastive",
        "stylize@ghiasi",
        "evaluate",
        "report",
    ):
        assert f"Running stage '{stage}'" in first.stdout
    assert "Running stage 'tune@ghiasi'" not in first.stdout  # pretrained by its authors: never tuned or trained
    assert "Running stage 'train@ghiasi'" not in first.stdout
    for method in ("gatys", "adain", "contrastive", "ghiasi"):
        assert len(list((repo_copy / "outputs" / method).glob("*__*.png"))) == 4  # 2 test contents x 2 test styles
    assert (repo_copy / "models/adain/decoder.pt").is_file()
    assert (repo_copy / "models/contrastive/generator.pt").is_file()
    for method in ("gatys", "adain", "contrastive"):
        trials = (repo_copy / "reports/tuning" / method / "trials.csv").read_text().splitlines()
        assert len(trials) == 1 + 2
    # the trained model used the tuned weights (use_tuned: true): the train run's params say so
    tuned = yaml.safe_load((repo_copy / "reports/tuning/adain/best.yaml").read_text())["weights"]["style_weight"]
    effective = yaml.safe_load((repo_copy / "models/adain/effective_params.yaml").read_text())
    assert effective["methods"]["adain"]["train"]["style_weight"] == pytest.approx(tuned)
    assert (repo_copy / "reports/index.html").is_file()
    for split in ("train", "val", "test"):
        for role in ("content", "style"):
            assert any((repo_copy / "data/prepared" / split / role).glob("*.png")), f"{split}/{role} is empty"
    assert out_of_date(repo_copy) == {"scorer-weights"}  # always_changed: looked at on every repro
    shown = run([dvc, "metrics", "show", "--json"], repo_copy).stdout
    assert '"style_gram"' in shown  # summary.json: one mean per method and headline metric
    assert "identity" in shown

    second = run([dvc, "repro"], repo_copy)
    assert re.findall(r"Running stage '([^']+)'", second.stdout) == ["scorer-weights"]  # the same found.json: no rerun

    text = params.read_text()
    assert "    side_px: 192" in text
    params.write_text(text.replace("    side_px: 192", "    side_px: 128", 1))
    # prepare reruns, fetch does not; then every stage that reads the prepared images is out of date. Only prepare
    # runs for real: the first repro above already ran every stage, and a second full run (half this test's time on
    # an AVX2-only CPU) would show nothing more than `dvc status` does.
    third = run([dvc, "repro", "prepare"], repo_copy)
    assert "Running stage 'prepare'" in third.stdout
    assert "Running stage 'fetch'" not in third.stdout
    status = run([dvc, "status"], repo_copy).stdout
    for stage in ("tune@gatys", "tune@adain", "train@adain", "train@contrastive", "stylize@gatys", "evaluate"):
        assert f"{stage}:" in status, stage  # its prepared inputs changed
    assert "fetch:" not in status
    assert "prepare:" not in status
    params.write_text(params.read_text().replace("    side_px: 128", "    side_px: 192", 1))
    run([dvc, "repro", "prepare"], repo_copy)  # the same bytes as the first run: every later stage is current again
    assert out_of_date(repo_copy) == {"scorer-weights"}

    # The full-scale profile's values are DVC params too: editing them marks the stages that read them.
    full = repo_copy / "profiles" / "full.yaml"
    full.write_text(full.read_text().replace("side_px: 512", "side_px: 640"))
    status = run([dvc, "status"], repo_copy).stdout
    assert "prepare:" in status
    assert "fetch:" not in status


def test_no_param_is_named_like_a_dvc_meta_field(repo_root):
    """DVC 3 drops `size`/`nfiles` keys from its run-cache key; such a param would restore stale outputs."""

    def keys(node, where=""):
        if isinstance(node, dict):
            for key, value in node.items():
                yield f"{where}.{key}".lstrip("."), key
                yield from keys(value, f"{where}.{key}")

    for name in ("params.yaml", "profiles/full.yaml"):
        bad = [
            dotted for dotted, key in keys(yaml.safe_load((repo_root / name).read_text())) if key in ("size", "nfiles")
        ]
        assert not bad, f"{name}: rename {bad}"
