"""train stage: checkpoints, automatic resume after an interruption, outputs, MLflow, and stylize with the model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from methods.training import checkpoints
from pipeline import cli, io, training_data
from pipeline.config import Params, effective_params, load_params
from pipeline.stages import stylize, train


def images(folder: Path, n: int, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        arr = np.random.default_rng(seed + i).integers(0, 256, (40 + 4 * i, 52, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"img{i}.png")
    return folder


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path]:
    return images(tmp_path / "content", 3, 0), images(tmp_path / "style", 2, 10)


@pytest.fixture
def params(repo_root: Path) -> Params:
    base = load_params(repo_root / "params.yaml")
    small = base.methods.adain.train.model_copy(
        update={
            "iterations": 4,
            "batch_size": 2,
            "resize_short": 40,
            "crop": 32,
            "checkpoint_every": 2,
            "sample_every": 2,
            "log_every": 1,
            "init_from": None,  # from scratch; warm starts: tests/pipeline/test_pretrained.py
        }
    )
    adain = base.methods.adain.model_copy(update={"train": small})
    return base.model_copy(update={"methods": base.methods.model_copy(update={"adain": adain})})


def test_interrupted_training_resumes_automatically(tmp_path, data, params):
    out = tmp_path / "models" / "adain"
    first = train.run(params, "adain", *data, out, stop_after=2)
    assert first["iterations"] == 2
    assert not (out / "decoder.pt").exists()  # no final model before the schedule is complete
    assert [p.name for p in checkpoints(out / "checkpoints")] == ["ckpt-00000002.pt"]
    second = train.run(params, "adain", *data, out)  # "auto": same configuration -> resume
    assert second["iterations"] == 4
    assert second["iterations_this_run"] == 2
    assert (out / "decoder.pt").is_file()
    with (out / "losses.csv").open(newline="") as fh:
        steps = [int(r["step"]) for r in csv.DictReader(fh)]
    assert steps == [1, 2, 3, 4]
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert metrics["iterations"] == 4
    assert metrics["iterations_per_second"] > 0
    model_bytes = (out / "decoder.pt").read_bytes()
    again = train.run(params, "adain", *data, out)  # finished already: nothing to do, nothing lost
    assert again["iterations_this_run"] == 0
    assert again["final_total"] == metrics["final_total"]
    assert (out / "decoder.pt").read_bytes() == model_bytes


def test_changed_configuration_starts_afresh(tmp_path, data, params):
    out = tmp_path / "adain"
    train.run(params, "adain", *data, out, stop_after=2)
    changed = params.model_copy(deep=True)
    changed = effective_params(changed, "adain", changes={"train": {"style_weight": 3.0}})
    metrics = train.run(changed, "adain", *data, out)
    assert metrics["iterations_this_run"] == 4


def test_cli_logs_and_the_model_stylizes(tmp_path, data, params, repo_root, monkeypatch):
    import yaml

    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    raw["methods"]["adain"]["train"].update(
        iterations=4, batch_size=2, resize_short=40, crop=32, checkpoint_every=2, sample_every=2, log_every=1
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store.db'}")
    out = tmp_path / "models" / "adain"
    assert (
        cli.main(
            [
                "train",
                "--method",
                "adain",
                "--params",
                str(tmp_path / "params.yaml"),
                "--content",
                str(data[0]),
                "--style",
                str(data[1]),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'store.db'}")
    exp = client.get_experiment_by_name(raw["tracking"]["experiment"])
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.tags["stage"] == "train"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/total")] == [1, 2, 3, 4]
    assert len(client.list_artifacts(run.info.run_id, "samples")) == 2
    assert [a.path for a in client.list_artifacts(run.info.run_id, "model")] == ["model/decoder.pt"]

    rows = stylize.run(load_params(tmp_path / "params.yaml"), "adain", *data, tmp_path / "outputs", model=out)
    assert len(rows) == 3 * 2
    with Image.open(tmp_path / "outputs" / "img1__img0.png") as img:
        assert img.size == (52, 44)  # the content's size


def test_resume_flag_without_checkpoints_is_an_error(tmp_path, data, repo_root, capsys):
    code = cli.main(
        [
            "train",
            "--method",
            "adain",
            "--params",
            str(repo_root / "params.yaml"),
            "--content",
            str(data[0]),
            "--style",
            str(data[1]),
            "--out",
            str(tmp_path / "m"),
            "--resume",
        ]
    )
    assert code == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err


def test_contrastive_trains_logs_every_term_and_stylizes_from_the_cli(tmp_path, data, repo_root, monkeypatch):
    import yaml

    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    raw["methods"]["contrastive"]["train"].update(
        iterations=3, batch_size=4, resize_short=40, crop=32, checkpoint_every=2, sample_every=3, log_every=1
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store.db'}")
    out = tmp_path / "models" / "contrastive"
    assert (
        cli.main(
            [
                "train",
                "--method",
                "contrastive",
                "--params",
                str(tmp_path / "params.yaml"),
                "--content",
                str(data[0]),
                "--style",
                str(data[1]),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert (out / "generator.pt").is_file()
    with (out / "losses.csv").open() as fh:
        header = next(csv.reader(fh))
    assert {
        "content",
        "style",
        "identity_pixel",
        "identity_feature",
        "style_contrastive",
        "content_contrastive",
        "gan",
        "d_real",
        "d_fake",
        "d_total",
        "total",
    } <= set(header)
    metrics = json.loads((out / "train_metrics.json").read_text())  # what the 32 px crops use of the discriminator
    assert (metrics["discriminator_scales"], metrics["discriminator_scales_used"]) == (3, 1)
    assert metrics["discriminator_input_px"] == [32]
    assert metrics["precision"] in ("fp32", "bf16+channels_last")  # amp: auto
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'store.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name(raw["tracking"]["experiment"]).experiment_id])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/d_total")] == [1, 2, 3]
    assert [a.path for a in client.list_artifacts(run.info.run_id, "model")] == ["model/generator.pt"]
    assert len(client.list_artifacts(run.info.run_id, "samples")) == 1

    result = tmp_path / "one.png"
    argv = [
        "stylize",
        "--method",
        "contrastive",
        "--params",
        str(tmp_path / "params.yaml"),
        "--model",
        str(out),
        str(data[0] / "img1.png"),
        str(data[1] / "img0.png"),
        "--out",
        str(result),
    ]
    assert cli.main(argv) == 0
    with Image.open(result) as img:
        assert img.size == (52, 44)


def test_contrastive_batch_size_must_pair_up(tmp_path, repo_root, capsys):
    import yaml

    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    raw["methods"]["contrastive"]["train"]["batch_size"] = 5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    code = cli.main(
        ["train", "--method", "contrastive", "--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "m")]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "methods.contrastive" in err
    assert "even and >= 4" in err
    assert not (tmp_path / "m").exists()


def test_large_sets_train_from_a_decoded_array_cache_with_the_same_crops(tmp_path, monkeypatch):
    """Issue 17: above ``memory_images`` images, crops come from memory-mapped arrays decoded once (uint8 when the image
    is used at its decoded size, float32 after a resize), the same crops as decoding every time; a second run decodes
    nothing."""
    folder = images(tmp_path / "content", 3, 0)
    cache = tmp_path / "cache"
    # short sides 40, 44, 48: at 40 the first image is used as decoded (stored as uint8), the others are resized
    for resize_short, stored in ((40, ["uint8", "float32", "float32"]), (36, ["float32"] * 3)):
        memory = training_data.crops(folder, resize_short, 32)
        disk = training_data.crops(folder, resize_short, 32, cache_dir=cache, memory_images=0, workers=1)
        assert isinstance(disk.load, training_data.DecodedArrays)
        assert [str(np.load(f, mmap_mode="r").dtype) for f in disk.load.files] == stored
        for seed in range(3):
            a = memory.sample(3, torch.Generator().manual_seed(seed))
            b = disk.sample(3, torch.Generator().manual_seed(seed))
            assert torch.equal(a, b)
    assert len(list(cache.glob("*.npy"))) == 6
    monkeypatch.setattr(io, "read_image", lambda _p: pytest.fail("decoded again"))
    again = training_data.crops(folder, 40, 32, cache_dir=cache, memory_images=0)
    assert again.sample(2, torch.Generator().manual_seed(0)).shape == (2, 3, 32, 32)
