"""Pretrained weights: export a pretraining run, warm-start a fine-tune from it, and refuse files that do not fit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from methods.pretrained import PretrainedError, warm_start
from methods.training import load_latest
from pipeline import builders, cli
from pipeline.config import Params, load_params
from pipeline.stages import train
from tests.pipeline.test_train import images


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path]:
    return images(tmp_path / "content", 3, 0), images(tmp_path / "style", 2, 10)


def small(params: Params, method: str, **update) -> Params:
    section = getattr(params.methods, method)
    tcfg = section.train.model_copy(
        update={
            "iterations": 4,
            "batch_size": 2,
            "resize_short": 40,
            "crop": 32,
            "checkpoint_every": 2,
            "sample_every": 0,
            "log_every": 1,
            "init_from": None,
            **update,
        }
    )
    methods = params.methods.model_copy(update={method: section.model_copy(update={"train": tcfg})})
    return params.model_copy(update={"methods": methods})


def pretrain_params(tmp_path: Path, repo_root: Path) -> Path:
    """A params.yaml + profiles/ copy whose pretrain profile is tiny (4 iterations at 32 px)."""
    (tmp_path / "profiles").mkdir()
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    for name in ("full.yaml",):
        (tmp_path / "profiles" / name).write_text((repo_root / "profiles" / name).read_text())
    tiny = {
        "iterations": 4,
        "batch_size": 2,
        "resize_short": 40,
        "crop": 32,
        "checkpoint_every": 2,
        "log_every": 1,
        "sample_every": 0,
        "init_from": None,
    }
    (tmp_path / "profiles" / "pretrain.yaml").write_text(yaml.safe_dump({"methods": {"adain": {"train": tiny}}}))
    return tmp_path / "params.yaml"


def test_export_then_warm_start_carries_the_weights_and_the_card(tmp_path, data, repo_root, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store.db'}")
    params_path = pretrain_params(tmp_path, repo_root)
    run_dir, out = tmp_path / "models" / "pretrain" / "adain", tmp_path / "models" / "pretrained" / "adain.pt"
    argv = ["--method", "adain", "--params", str(params_path), "--profile", "pretrain"]
    assert cli.main(["train", *argv, "--content", str(data[0]), "--style", str(data[1]), "--out", str(run_dir)]) == 0
    assert (
        cli.main(
            [
                "pretrained",
                *argv,
                "--run",
                str(run_dir),
                "--out",
                str(out),
                "--content",
                str(data[0]),
                "--style",
                str(data[1]),
            ]
        )
        == 0
    )

    state = torch.load(out, map_location="cpu", weights_only=True)
    ckpt, _ = load_latest(run_dir / "checkpoints")
    assert set(state["modules"]) == {"decoder"}  # no optimiser state, no adversary
    for key, value in ckpt["modules"]["decoder"].items():
        assert state["modules"]["decoder"][key].dtype == torch.float16
        torch.testing.assert_close(state["modules"]["decoder"][key], value.half())
    card = state["card"]
    assert card["iterations"] == 4
    assert card["schedule"]["batch_size"] == 2
    assert card["schedule"]["crop"] == 32
    assert card["reference_schedule"]["iterations"] == 160_000
    assert card["wall_time_s"] > 0
    assert set(card["final_losses"]) == {"content", "style", "total"}
    assert [d["id"] for d in card["data"]["content"]] == ["img0.png", "img1.png", "img2.png"]
    assert len(card["data"]["style"][0]["sha256"]) == 64
    assert card["git_sha"]
    assert "| iterations | 4 (reference schedule: 160000" in out.with_suffix(".md").read_text()

    # A fine-tune from the file: its weights are the fp16 weights, cast back to fp32; its record counts both budgets.
    params = small(load_params(params_path, "sample"), "adain", init_from=str(out), iterations=2)
    model = builders.build_model(params, "adain", train.load_encoder(**train.encoder_settings(params, "adain")))
    warm_start("adain", model.trainable(), model.encoder.weights_sha256, out)
    for key, value in model.decoder.state_dict().items():
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, ckpt["modules"]["decoder"][key].half().float())
    metrics = train.run(params, "adain", *data, tmp_path / "finetune")
    assert metrics["pretrained_iterations"] == 4
    assert metrics["iterations"] == 2
    assert metrics["total_iterations"] == 6
    assert json.loads((tmp_path / "finetune" / "train_metrics.json").read_text())["init_from"] == str(out)


def test_fine_tune_starts_from_the_pretrained_weights(tmp_path, data, repo_root):
    """The first fine-tuning step's loss is the pretrained model's, not a fresh decoder's."""
    base = load_params(repo_root / "params.yaml")
    scratch = train.run(small(base, "adain", iterations=3), "adain", *data, tmp_path / "a")
    model = builders.build_model(base, "adain", train.load_encoder(**train.encoder_settings(base, "adain")))
    model.load(tmp_path / "a")
    from methods.pretrained import export

    ckpt, _ = load_latest(tmp_path / "a" / "checkpoints")
    export("adain", model.trainable(), model.encoder.weights_sha256, ckpt, tmp_path / "p.pt", {"iterations": 3})
    warm = train.run(
        small(base, "adain", iterations=1, init_from=str(tmp_path / "p.pt")), "adain", *data, tmp_path / "b"
    )
    fresh = train.run(small(base, "adain", iterations=1), "adain", *data, tmp_path / "c")
    first = [json.loads((tmp_path / d / "train_metrics.json").read_text()) for d in ("b", "c")]
    assert warm["pretrained_iterations"] == 3
    assert fresh["pretrained_iterations"] == 0
    assert first[0]["final_total"] != pytest.approx(first[1]["final_total"], rel=1e-3)
    assert scratch["iterations"] == 3


def test_missing_file_trains_from_scratch_or_fails_as_configured(tmp_path, data, repo_root, caplog):
    base = load_params(repo_root / "params.yaml")
    missing = str(tmp_path / "nowhere.pt")
    metrics = train.run(small(base, "adain", iterations=1, init_from=missing), "adain", *data, tmp_path / "a")
    assert metrics["init_from"] is None
    assert metrics["pretrained_iterations"] == 0
    assert "nowhere.pt not found; training from scratch" in caplog.text
    with pytest.raises(PretrainedError, match=r"init_from = .*nowhere\.pt.*no such file"):
        train.run(
            small(base, "adain", iterations=1, init_from=missing, init_missing="error"), "adain", *data, tmp_path / "b"
        )


def test_files_that_do_not_fit_are_refused_with_one_clear_error(tmp_path, repo_root):
    base = load_params(repo_root / "params.yaml")
    encoder = train.load_encoder(**train.encoder_settings(base, "adain"))
    model = builders.build_model(base, "adain", encoder)
    from methods.pretrained import export

    ckpt = {"modules": {"decoder": model.decoder.state_dict()}}
    good = export("adain", model.trainable(), encoder.weights_sha256, ckpt, tmp_path / "good.pt", {"iterations": 1})
    with pytest.raises(PretrainedError, match="pretrained for 'adain', not for 'contrastive'"):
        warm_start("contrastive", model.trainable(), encoder.weights_sha256, good)
    with pytest.raises(PretrainedError, match=r"good\.pt: trained on the encoder .* not on the one in use"):
        warm_start("adain", model.trainable(), "0" * 64, good)
    state = torch.load(good, weights_only=True)
    key = next(iter(state["architecture"]["decoder"]))
    state["architecture"]["decoder"][key] = [1, 2, 3]
    torch.save(state, tmp_path / "other.pt")
    with pytest.raises(PretrainedError, match=rf"other\.pt: another architecture than adain's: decoder\.{key}"):
        warm_start("adain", model.trainable(), encoder.weights_sha256, tmp_path / "other.pt")
    torch.save(ckpt, tmp_path / "ckpt.pt")
    with pytest.raises(PretrainedError, match=r"ckpt\.pt: not a pretrained model file"):
        warm_start("adain", model.trainable(), encoder.weights_sha256, tmp_path / "ckpt.pt")
    before = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    for bad in ("other.pt", "ckpt.pt"):  # a refused file changes nothing
        with pytest.raises(PretrainedError):
            warm_start("adain", model.trainable(), encoder.weights_sha256, tmp_path / bad)
    assert all(torch.equal(v, before[k]) for k, v in model.decoder.state_dict().items())


def test_the_committed_checkpoints_fit_the_sample_profile(repo_root):
    """models/pretrained/<m>.pt (committed) loads into the sample profile's models, and stays within 20 MB."""
    params = load_params(repo_root / "params.yaml")
    for method in ("adain", "contrastive"):
        path = repo_root / getattr(params.methods, method).train.init_from
        if not path.is_file():
            pytest.skip(f"{path} not committed yet")
        assert path.stat().st_size <= 20 * 2**20
        model = builders.build_model(params, method, train.load_encoder(**train.encoder_settings(params, method)))
        card = warm_start(method, model.trainable(), model.encoder.weights_sha256, path)
        assert card["iterations"] > 0
        assert card["data"]["content"]
        assert path.with_suffix(".md").is_file()
