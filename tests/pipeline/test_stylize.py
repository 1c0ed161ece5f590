"""stylize stage: grid outputs, timing, resume, invalidation, MLflow logging, and the one-off command."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from methods.cpu import cpu_facts, cpu_summary
from methods.encoder import load_encoder, random_encoder
from pipeline import cli
from pipeline.config import Params, effective_params, load_params
from pipeline.stages import stylize


def write_rgb(path: Path, size: tuple[int, int], seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def grid(tmp_path: Path) -> tuple[Path, Path]:
    content, style = tmp_path / "content", tmp_path / "style"
    write_rgb(content / "street_a.png", (41, 30), 1)
    write_rgb(content / "street_b.png", (32, 45), 2)
    write_rgb(style / "paint_x.png", (36, 36), 3)
    write_rgb(style / "paint_y.png", (40, 28), 4)
    return content, style


@pytest.fixture
def params(repo_root: Path) -> Params:
    base = load_params(repo_root / "params.yaml")
    return effective_params(base, "gatys", changes={"iterations": 2, "image_size": None, "optimizer": "adam"})


@pytest.fixture(scope="module")
def encoder():
    return random_encoder(seed=0)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_grid_outputs_and_timing(tmp_path, grid, params, encoder):
    out = tmp_path / "out"
    rows = stylize.run(params, "gatys", *grid, out, encoder=encoder)
    assert len(rows) == 4
    for content in ("street_a", "street_b"):
        with Image.open(grid[0] / f"{content}.png") as img:
            size = img.size
        for style in ("paint_x", "paint_y"):
            with Image.open(out / f"{content}__{style}.png") as img:
                assert img.size == size  # the content's W x H
    with (out / "timing.csv").open(newline="") as fh:
        timing = list(csv.DictReader(fh))
    assert tuple(timing[0]) == stylize.TIMING_FIELDS
    assert sorted(r["file"] for r in timing) == sorted(p.name for p in out.glob("*.png"))
    with (out / "losses.csv").open(newline="") as fh:
        losses = list(csv.DictReader(fh))
    assert {r["pair"] for r in losses} == {Path(r["file"]).stem for r in timing}
    assert sorted(int(r["step"]) for r in losses if r["pair"] == "street_a__paint_x") == [0, 1]  # 2 Adam steps
    for row in timing:
        assert float(row["seconds"]) > 0
        assert float(row["peak_mem_mb"]) > 0
        assert row["device"] == "cpu"
        assert row["content_sha256"] == digest(grid[0] / row["content"])
        assert float(row["loss_total"]) > 0


def test_interrupted_run_resumes_without_redoing_pairs(tmp_path, grid, params, encoder, monkeypatch):
    out = tmp_path / "out"
    real = stylize.stylize_pair
    calls: list[str] = []

    def flaky(method, content_path, style_path, device):
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user pressed Ctrl-C during the third pair
        calls.append(f"{content_path.stem}__{style_path.stem}")
        return real(method, content_path, style_path, device)

    monkeypatch.setattr(stylize, "stylize_pair", flaky)
    with pytest.raises(KeyboardInterrupt):
        stylize.run(params, "gatys", *grid, out, encoder=encoder)
    finished = {p.name: digest(p) for p in out.glob("*.png")}
    assert len(finished) == 2

    redone: list[str] = []

    def counting(method, content_path, style_path, device):
        redone.append(f"{content_path.stem}__{style_path.stem}")
        return real(method, content_path, style_path, device)

    monkeypatch.setattr(stylize, "stylize_pair", counting)
    rows = stylize.run(params, "gatys", *grid, out, encoder=encoder)
    assert len(rows) == 4
    assert len(redone) == 2
    assert not set(redone) & set(calls)
    assert {name: digest(out / name) for name in finished} == finished


def test_changes_invalidate_what_they_must(tmp_path, grid, params, encoder, monkeypatch):
    out = tmp_path / "out"
    stylize.run(params, "gatys", *grid, out, encoder=encoder)
    real = stylize.stylize_pair
    redone: list[str] = []

    def counting(method, content_path, style_path, device):
        redone.append(f"{content_path.stem}__{style_path.stem}")
        return real(method, content_path, style_path, device)

    monkeypatch.setattr(stylize, "stylize_pair", counting)
    stylize.run(params, "gatys", *grid, out, encoder=encoder)
    assert redone == []  # nothing changed

    write_rgb(grid[1] / "paint_x.png", (36, 36), 99)  # one style image changed -> its two pairs
    stylize.run(params, "gatys", *grid, out, encoder=encoder)
    assert sorted(redone) == ["street_a__paint_x", "street_b__paint_x"]

    redone.clear()
    changed = effective_params(params, "gatys", changes={"iterations": 3})
    stylize.run(changed, "gatys", *grid, out, encoder=encoder)
    assert len(redone) == 4  # a parameter change starts afresh

    (grid[0] / "street_b.png").unlink()  # a content left the test split -> its outputs go too
    rows = stylize.run(changed, "gatys", *grid, out, encoder=encoder)
    assert sorted(p.name for p in out.glob("*.png")) == ["street_a__paint_x.png", "street_a__paint_y.png"]
    assert len(rows) == 2


def test_stage_logs_to_mlflow(tmp_path, grid, repo_root, monkeypatch):
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["methods"]["gatys"].update(iterations=3, image_size=32, optimizer="adam")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    store = tmp_path / "store.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    code = cli.main(
        [
            "stylize-stage",
            "--method",
            "gatys",
            "--params",
            str(tmp_path / "params.yaml"),
            "--content",
            str(grid[0]),
            "--style",
            str(grid[1]),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiment = client.get_experiment_by_name(params["tracking"]["experiment"])
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["stage"] == "stylize"
    assert tags["method"] == "gatys"
    assert tags["encoder_sha256"] == load_encoder("caffe").weights_sha256
    assert len(tags["params_hash"]) == 16
    assert tags["git_sha"]
    assert run.data.params["methods.gatys.iterations"] == "3"
    assert run.data.params["encoder.weights"] == "caffe"
    assert run.data.metrics["pairs"] == 4
    history = client.get_metric_history(run.info.run_id, "street_a__paint_x/total")
    assert [m.step for m in history] == [0, 1, 2]
    grids = [a.path for a in client.list_artifacts(run.info.run_id, "grids")]
    assert len(grids) == 4
    assert "grids/street_a__paint_x.png" in grids
    assert "timing.csv" in [a.path for a in client.list_artifacts(run.info.run_id)]
    # issue 24: what decided the numbers, on the run and in every timing row
    assert tags["precision"] == "fp32"  # gatys: amp false in params.yaml
    assert tags["cpu.bf16"] in ("native", "none")
    assert tags["cpu.isa"] != "unknown"  # torch is imported by now
    rows = list(csv.DictReader((tmp_path / "out" / "timing.csv").open()))
    assert {r["precision"] for r in rows} == {"fp32"}
    assert {r["cpu"] for r in rows} == {cpu_summary(cpu_facts())}


def test_one_off_command(tmp_path, grid, repo_root, capsys):
    out = tmp_path / "one.png"
    argv = [
        "stylize",
        "--method",
        "gatys",
        str(grid[0] / "street_b.png"),
        str(grid[1] / "paint_y.png"),
        "-o",
        str(out),
        "--params",
        str(repo_root / "params.yaml"),
        "--set",
        "iterations=2",
        "--set",
        "image_size=32",
    ]
    assert cli.main(argv) == 0
    with Image.open(out) as img:
        assert img.size == (32, 45)
    assert '"seconds"' in capsys.readouterr().out


NST = Path(sys.executable).parent / "nst"


def run_nst(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    return subprocess.run([str(NST), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_one_off_command_works_from_a_folder_without_params_yaml(tmp_path, grid):
    """The real `nst stylize` in a folder with no params.yaml: the method's defaults, said once on stderr."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    proc = run_nst(
        [
            "stylize",
            str(grid[0] / "street_b.png"),
            str(grid[1] / "paint_y.png"),
            "-o",
            "one.png",
            "--set",
            "iterations=2",
            "--set",
            "image_size=32",
        ],
        work,
    )
    assert proc.returncode == 0, proc.stderr
    with Image.open(work / "one.png") as img:
        assert img.size == (32, 45)
    assert json.loads(proc.stdout.strip().splitlines()[-1])["out"] == "one.png"
    said = [line for line in proc.stderr.splitlines() if "params.yaml" in line]
    assert said == [
        f"INFO pipeline.stages.stylize: no params.yaml in {work}: using gatys's defaults "
        "(encoder caffe, pool max, device auto)"
    ]
    assert sorted(p.name for p in work.iterdir()) == ["one.png"]  # nothing else written where it ran


def test_one_off_command_without_params_yaml_still_checks_overrides(tmp_path, grid):
    argv = [
        "stylize",
        str(grid[0] / "street_b.png"),
        str(grid[1] / "paint_y.png"),
        "-o",
        str(tmp_path / "x.png"),
        "--set",
        "colour=1",
    ]
    for bad, message in (("colour=1", "--set: gatys: unknown key 'colour'"), ("iterations=many", "--set: ")):
        argv[-1] = bad
        proc = run_nst(argv, tmp_path)
        assert proc.returncode == 2
        assert message in proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x.png").exists()


def test_one_off_command_with_a_missing_explicit_params_file_is_an_error(tmp_path, grid):
    proc = run_nst(
        [
            "stylize",
            str(grid[0] / "street_b.png"),
            str(grid[1] / "paint_y.png"),
            "-o",
            "x.png",
            "--params",
            "nowhere.yaml",
        ],
        tmp_path,
    )
    assert proc.returncode == 2
    assert "nst stylize: error: nowhere.yaml: file not found" in proc.stderr
    assert "using gatys's defaults" not in proc.stderr
    assert not (tmp_path / "x.png").exists()


def test_one_off_command_reads_params_yaml_in_the_current_folder(tmp_path, grid, repo_root):
    work = tmp_path / "project"
    work.mkdir()
    raw = yaml.safe_load((repo_root / "params.yaml").read_text(encoding="utf-8"))
    raw["encoder"]["weights"] = "no-such-weights.pt"  # proves this file is read (the defaults would use caffe)
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    proc = run_nst(
        [
            "stylize",
            str(grid[0] / "street_b.png"),
            str(grid[1] / "paint_y.png"),
            "-o",
            "one.png",
            "--set",
            "iterations=1",
        ],
        work,
    )
    assert proc.returncode == 2
    assert "no-such-weights.pt" in proc.stderr
    assert "defaults" not in proc.stderr


def test_one_off_bad_override_names_the_key(tmp_path, grid, repo_root, capsys):
    argv = [
        "stylize",
        str(grid[0] / "street_b.png"),
        str(grid[1] / "paint_y.png"),
        "-o",
        str(tmp_path / "x.png"),
        "--params",
        str(repo_root / "params.yaml"),
        "--set",
        "colour=1",
    ]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "unknown key 'methods.gatys.colour'" in err
    assert not (tmp_path / "x.png").exists()
    argv[-1] = "iterations=many"
    assert cli.main(argv) == 2
    assert "methods.gatys.iterations = 'many'" in capsys.readouterr().err


def test_override_is_validated_strictly(params):
    with pytest.raises(Exception, match=r"methods\.gatys\.style_layers"):
        effective_params(params, "gatys", changes={"style_layers": ["relu9_9"]})


def test_a_shipped_model_says_what_it_was_trained_on(repo_root, tmp_path):
    """`nst stylize --model` with a trained method: one line on the images and iterations its model has seen,
    read from the training record and the pretrained file's card (issue 26), and where the converged network is."""
    from pipeline.builders import trained_model_note

    shipped = repo_root / "models" / "pretrained" / "adain.pt"
    note = trained_model_note("adain", shipped)
    assert note is not None
    assert "7 images (4 photos, 3 paintings)" in note
    assert "for 4,000 of the reference's 160,000 iterations" in note
    assert "--method ghiasi" in note
    # a fine-tuned model folder: its own iterations plus the pretrained ones, the data from the card it started from
    folder = tmp_path / "adain"
    folder.mkdir()
    record = {"iterations": 160, "total_iterations": 4160, "init_from": str(shipped)}
    (folder / "train_metrics.json").write_text(json.dumps(record))
    assert "7 images" in trained_model_note("adain", folder)
    assert "4,160 of the reference's 160,000" in trained_model_note("adain", folder)
    assert trained_model_note("gatys", shipped) is None  # not a trained method
    assert trained_model_note("adain", None) is None
