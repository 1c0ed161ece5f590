"""methods.utils' one atomic writer: every kind of file the project writes gets the ordinary mode (0666 & ~umask,
folders 0777 & ~umask), and a failure leaves the previous file in place with no temporary behind."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from methods import training
from methods.adain import AdaIN, AdaINParams
from methods.encoder import random_encoder
from methods.schemas.adain_params import AdaINTrain
from methods.schemas.schedule import TrainParams
from methods.training import RandomCrops, checkpoints
from methods.utils import (
    atomic_dir,
    atomic_path,
    dir_mode,
    file_mode,
    replace_file,
    save_torch_atomic,
    write_bytes_atomic,
    write_text_atomic,
)

CPU = torch.device("cpu")


@pytest.fixture(params=[0o022, 0o002, 0o077], ids=lambda m: f"umask{m:03o}")
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_file_and_dir_mode_follow_the_umask(umask: int) -> None:
    assert file_mode() == 0o666 & ~umask
    assert dir_mode() == 0o777 & ~umask
    assert os.umask(umask) == umask  # reading the umask left it as it was


def test_model_checkpoint_text_bytes_and_folder_get_the_ordinary_mode(umask: int, tmp_path: Path) -> None:
    encoder = random_encoder(seed=0, last_layer="relu4_1")
    model = AdaIN(AdaINParams(train=AdaINTrain(init_seed=0)), encoder=encoder)
    images = [torch.rand(1, 3, 40, 48, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    crops = RandomCrops(lambda i: images[i], 3, 32)
    cfg = TrainParams(iterations=1, batch_size=2, lr=1e-3, lr_decay=0.0, checkpoint_every=1, keep_checkpoints=1, seed=0)
    training.train(model, crops, crops, cfg, tmp_path / "ckpt", device=CPU, progress=False)
    model_file = model.save(tmp_path / "model")
    write_text_atomic(tmp_path / "text" / "metrics.json", "{}\n")
    write_bytes_atomic(tmp_path / "raw.bin", b"\x00\x01")
    with atomic_dir(tmp_path / "folder") as tmp:
        (tmp / "inside.txt").write_text("x", encoding="utf-8")

    [checkpoint] = checkpoints(tmp_path / "ckpt")
    for path in (model_file, checkpoint, tmp_path / "text" / "metrics.json", tmp_path / "raw.bin"):
        assert mode(path) == 0o666 & ~umask, path
    assert mode(tmp_path / "folder") == 0o777 & ~umask
    assert mode(tmp_path / "folder" / "inside.txt") == 0o666 & ~umask
    assert (
        AdaIN(AdaINParams(train=AdaINTrain(init_seed=1)), encoder=encoder).load(model_file) is not None
    )  # a real, loadable model
    assert not [p for p in tmp_path.rglob(".*")]  # no temporaries left anywhere


def test_replace_file_gives_a_private_file_the_ordinary_mode(umask: int, tmp_path: Path) -> None:
    part = tmp_path / "f.bin.part"
    part.write_bytes(b"body")
    part.chmod(0o600)
    replace_file(part, tmp_path / "f.bin")
    assert (tmp_path / "f.bin").read_bytes() == b"body"
    assert mode(tmp_path / "f.bin") == 0o666 & ~umask
    assert not part.exists()


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("old", encoding="utf-8")

    def half_write() -> None:
        with atomic_path(path) as tmp:
            tmp.write_text("half-written", encoding="utf-8")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        half_write()
    assert path.read_text(encoding="utf-8") == "old"
    assert os.listdir(tmp_path) == ["data.txt"]


def test_a_failed_torch_save_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch) -> None:
    path = tmp_path / "model.pt"
    save_torch_atomic({"w": torch.ones(2)}, path)

    def dying_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError, match="disk full"):
        save_torch_atomic({"w": torch.zeros(2)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(2))
    assert os.listdir(tmp_path) == ["model.pt"]


def test_a_failed_folder_keeps_the_previous_folder_and_leaves_no_temporary(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old", encoding="utf-8")

    def half_fill() -> None:
        with atomic_dir(out) as tmp:
            (tmp / "new.txt").write_text("new", encoding="utf-8")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        half_fill()
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    assert os.listdir(tmp_path) == ["out"]
