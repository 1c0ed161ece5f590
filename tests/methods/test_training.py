"""The shared training loop: the loss falls, resume is exact, checkpoints are atomic and failures are clear."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from methods import training
from methods.adain import AdaIN, AdaINParams
from methods.encoder import random_encoder
from methods.schemas.adain_params import AdaINTrain
from methods.schemas.schedule import TrainParams
from methods.training import CheckpointError, LossHistory, RandomCrops, TrainCallbacks, checkpoints, train

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def encoder():
    return random_encoder(seed=0, last_layer="relu4_1")


def crops(seed: int, n: int = 3, crop: int = 32) -> RandomCrops:
    images = [torch.rand(1, 3, 40, 48, generator=torch.Generator().manual_seed(seed + i)) for i in range(n)]
    return RandomCrops(lambda i: images[i], n, crop)


def config(**changes) -> TrainParams:
    base = {
        "iterations": 6,
        "batch_size": 2,
        "lr": 1e-3,
        "lr_decay": 5e-5,
        "checkpoint_every": 2,
        "keep_checkpoints": 2,
        "seed": 0,
    }
    return TrainParams(**{**base, **changes})


def model(encoder, seed: int = 0) -> AdaIN:
    return AdaIN(AdaINParams(train=AdaINTrain(init_seed=seed)), encoder=encoder)


def test_random_crops_are_reproducible():
    source = crops(0)
    a = source.sample(4, torch.Generator().manual_seed(1))
    b = source.sample(4, torch.Generator().manual_seed(1))
    assert a.shape == (4, 3, 32, 32)
    assert torch.equal(a, b)
    assert not torch.equal(a, source.sample(4, torch.Generator().manual_seed(2)))


def test_batches_hold_distinct_contents_and_distinct_styles():
    """Each batch is the start of a fresh permutation (IEContraAST sampler.py): distinct images whenever the batch
    fits the set; a larger batch wraps around, every image once before any repeats."""
    source = crops(0, n=4)
    gen = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(50):
        idx = source.indices(4, gen)
        assert sorted(idx) == [0, 1, 2, 3]
        idx = source.indices(3, gen)
        assert len(set(idx)) == 3
        seen.update(idx)
    assert seen == {0, 1, 2, 3}
    wrapped = crops(0, n=3).indices(5, gen)
    assert sorted(wrapped[:3]) == [0, 1, 2]
    assert len(set(wrapped[3:])) == 2
    # the crops of a batch come from distinct images: no two crops of the 4-image batch are from the same image
    images = [torch.full((1, 3, 40, 48), float(i)) for i in range(4)]
    batch = RandomCrops(lambda i: images[i], 4, 32).sample(4, torch.Generator().manual_seed(3))
    assert sorted(batch.flatten(1)[:, 0].tolist()) == [0.0, 1.0, 2.0, 3.0]


def test_training_batches_are_distinct_in_contents_and_styles(encoder, tmp_path, monkeypatch):
    """What the loop feeds the model: every step's contents are distinct and its styles are distinct."""
    images = [torch.full((1, 3, 40, 48), i / 10) for i in range(5)]
    batches: list[tuple[list[float], list[float]]] = []
    m = model(encoder)
    real = m.losses

    def spy(content, style):
        batches.append((content[:, 0, 0, 0].tolist(), style[:, 0, 0, 0].tolist()))
        return real(content, style)

    monkeypatch.setattr(m, "losses", spy)
    train(
        m,
        RandomCrops(lambda i: images[i], 5, 32),
        RandomCrops(lambda i: images[i], 4, 32),
        config(iterations=3, batch_size=4),
        tmp_path,
        device=CPU,
        progress=False,
    )
    assert len(batches) == 3
    for contents, styles in batches:
        assert len(set(contents)) == 4
        assert len(set(styles)) == 4


def test_the_adversary_steps_before_the_generator(tmp_path, monkeypatch):
    """IEContraAST train.py: the discriminator is stepped on the detached fakes first, then the generator's
    adversarial term is computed against the updated discriminator."""
    calls: list[str] = []

    class Toy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gen, self.disc = torch.nn.Conv2d(3, 3, 1), torch.nn.Conv2d(3, 1, 1)

        def trainable(self):
            return {"gen": self.gen}

        def adversary(self):
            return {"disc": self.disc}

        def losses(self, content, style):
            return self.generator_losses(content, style)[0]

        def generator_losses(self, content, style):
            calls.append("generator_losses")
            fakes = self.gen(content)
            loss = (fakes - content).pow(2).mean()
            return {"rec": loss, "total": loss}, fakes

        def adversary_losses(self, real, fakes):
            calls.append(f"adversary_losses (real is the style batch: {real is seen_style[-1]})")
            d = self.disc(real).pow(2).mean() + (self.disc(fakes.detach()) - 1).pow(2).mean()
            return {"total": d}

        def adversarial_losses(self, fakes):
            calls.append(f"adversarial_losses (disc stepped: {self.disc.weight._version > 0})")
            return {"gan": (self.disc(fakes) - 1).pow(2).mean()}

    seen_style: list[torch.Tensor] = []
    real_step = training.train_step

    def spy_step(model, content, style, *args):
        seen_style.append(style)
        return real_step(model, content, style, *args)

    monkeypatch.setattr(training, "train_step", spy_step)
    history = LossHistory()
    train(Toy(), crops(0), crops(10), config(iterations=1), tmp_path, device=CPU, callbacks=history, progress=False)
    seen = history.terms
    assert calls == [
        "generator_losses",
        "adversary_losses (real is the style batch: True)",
        "adversarial_losses (disc stepped: True)",
    ]
    assert set(seen[0]) == {"rec", "gan", "total", "d_total"}
    assert seen[0]["total"] == pytest.approx(seen[0]["rec"] + seen[0]["gan"], rel=1e-6)


def test_loss_falls(encoder, tmp_path):
    history = LossHistory()
    train(
        model(encoder),
        crops(0),
        crops(10),
        config(iterations=40, checkpoint_every=100),
        tmp_path,
        device=CPU,
        callbacks=history,
        progress=False,
    )
    totals = [t["total"] for t in history.terms]
    assert len(totals) == 40
    assert sum(totals[-5:]) / 5 < 0.7 * sum(totals[:5]) / 5


def test_resume_equals_uninterrupted(encoder, tmp_path):
    straight = model(encoder)
    train(straight, crops(0), crops(10), config(), tmp_path / "a", device=CPU, progress=False)

    interrupted = model(encoder)
    reached = train(
        interrupted, crops(0), crops(10), config(), tmp_path / "b", device=CPU, stop_after=3, progress=False
    )
    assert reached == 3
    resumed = model(encoder, seed=123)  # a fresh process: different init, everything comes from the checkpoint
    assert train(resumed, crops(0), crops(10), config(), tmp_path / "b", device=CPU, resume=True, progress=False) == 6
    for key, value in straight.decoder.state_dict().items():
        assert torch.equal(value, resumed.decoder.state_dict()[key]), key
    assert [p.name for p in checkpoints(tmp_path / "b")] == ["ckpt-00000004.pt", "ckpt-00000006.pt"]  # keep 2


def test_resume_without_checkpoint_is_a_clear_error(encoder, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
        train(model(encoder), crops(0), crops(10), config(), tmp_path, device=CPU, resume=True, progress=False)


def test_corrupt_latest_falls_back_to_the_previous(encoder, tmp_path, caplog):
    train(model(encoder), crops(0), crops(10), config(iterations=4), tmp_path, device=CPU, progress=False)
    latest = checkpoints(tmp_path)[-1]
    latest.write_bytes(latest.read_bytes()[:100])  # truncated
    with caplog.at_level(logging.WARNING):
        state, path = training.load_latest(tmp_path)
    assert path.name == "ckpt-00000002.pt"
    assert state["iteration"] == 2
    assert "ckpt-00000004.pt is unreadable" in caplog.text
    for p in checkpoints(tmp_path):
        p.write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        training.load_latest(tmp_path)


def test_a_failed_save_never_replaces_the_last_good_checkpoint(encoder, tmp_path, monkeypatch):
    train(model(encoder), crops(0), crops(10), config(iterations=2), tmp_path, device=CPU, progress=False)
    good = checkpoints(tmp_path)[-1].read_bytes()
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        f.write(b"partial")  # the process dies half-way through writing
        raise OSError("disk full")

    monkeypatch.setattr(training.torch, "save", dying_save)
    with pytest.raises(OSError, match="disk full"):
        train(
            model(encoder), crops(0), crops(10), config(iterations=4), tmp_path, device=CPU, resume=True, progress=False
        )
    monkeypatch.setattr(training.torch, "save", real_save)
    assert [p.name for p in checkpoints(tmp_path)] == ["ckpt-00000002.pt"]
    assert checkpoints(tmp_path)[-1].read_bytes() == good
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_checkpoint_of_another_configuration_is_refused(encoder, tmp_path):
    train(
        model(encoder), crops(0), crops(10), config(iterations=2), tmp_path, device=CPU, fingerprint="a", progress=False
    )
    with pytest.raises(CheckpointError, match="another configuration"):
        train(
            model(encoder),
            crops(0),
            crops(10),
            config(iterations=4),
            tmp_path,
            device=CPU,
            fingerprint="b",
            resume=True,
            progress=False,
        )


class Recorder(torch.nn.Module):
    """A tiny trainable model that records the content batches the loop gives it."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))
        self.seen: list[torch.Tensor] = []

    def trainable(self) -> dict[str, torch.nn.Module]:
        return {"recorder": self}

    def losses(self, content, style):
        self.seen.append(content.clone())
        total = (self.scale * content.mean() - style.mean()).pow(2)
        return {"total": total}


def _rank_main(rank: int, world: int, init: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    model = Recorder()
    train(
        model,
        crops(0),
        crops(10),
        config(iterations=3, batch_size=4, checkpoint_every=100),
        Path(out) / "ckpt",
        device=CPU,
        progress=False,
    )
    torch.save({"seen": model.seen, "scale": model.scale.detach()}, Path(out) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_each_rank_gets_its_slice_of_the_single_process_batch(tmp_path):
    single = Recorder()
    train(
        single,
        crops(0),
        crops(10),
        config(iterations=3, batch_size=4, checkpoint_every=100),
        tmp_path / "s",
        device=CPU,
        progress=False,
    )
    torch.multiprocessing.spawn(_rank_main, args=(2, f"file://{tmp_path / 'rendezvous'}", str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for step, batch in enumerate(single.seen):
        halves = [r["seen"][step] for r in ranks]
        assert all(h.shape[0] == 2 for h in halves)
        assert torch.equal(torch.cat(halves), batch)  # rank 0 the first half, rank 1 the second
    for r in ranks:  # averaged gradients: every rank took the single process's steps
        torch.testing.assert_close(r["scale"], single.scale.detach())


@pytest.mark.parametrize("method", ["adain", "contrastive"])
def test_the_whole_model_encoder_included_goes_to_the_training_device(method, tmp_path, monkeypatch):
    """Issue 17: train() moved only the trainable and adversary modules, so on CUDA the frozen encoder stayed on the
    CPU and the first step failed ("Expected all tensors to be on the same device"). On the CPU the same omission shows
    twice: the encoder is never sent ``.to(device)``, and under channels_last its convolutions keep the NCHW format."""
    from methods.contrastive import Contrastive

    enc = random_encoder(seed=0, last_layer="relu5_1" if method == "contrastive" else "relu4_1")
    net = Contrastive(encoder=enc) if method == "contrastive" else AdaIN(AdaINParams(), encoder=enc)
    moved: list[torch.nn.Module] = []
    real_to = torch.nn.Module.to

    def spy(self, *args, **kwargs):
        if CPU in args or kwargs.get("device") == CPU:
            moved.append(self)
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", spy)
    n = 4 if method == "contrastive" else 3
    train(
        net,
        crops(0, n=n),
        crops(10, n=n),
        config(iterations=1, batch_size=4, channels_last=True),
        tmp_path,
        device=CPU,
        progress=False,
    )
    sent = {id(sub) for m in moved for sub in m.modules()}
    missing = [name for name, sub in net.named_modules() if name and id(sub) not in sent]
    assert not missing, f"never moved to the training device: {missing[:5]}"
    flat = [
        name
        for name, t in [*net.named_parameters(), *net.named_buffers()]
        if t.ndim == 4 and not t.is_contiguous(memory_format=torch.channels_last)
    ]
    assert not flat, f"not in the training memory format: {flat[:5]}"
    assert any(name.startswith("encoder.") for name, _ in net.named_parameters())  # the encoder was checked too
    # ... on the model's own copy: the encoder passed in (shared with other methods) keeps its NCHW format
    assert net.encoder is not enc
    assert all(t.is_contiguous() for t in [*enc.parameters(), *enc.buffers()])


def legacy_sample(images: list[torch.Tensor], batch: int, crop: int, gen: torch.Generator) -> torch.Tensor:
    """RandomCrops.sample before the DataLoader (issue 17), verbatim: a permutation's start, then per image its top
    and left offset, cut as drawn."""
    idx: list[int] = []
    while len(idx) < batch:
        idx += torch.randperm(len(images), generator=gen).tolist()[: batch - len(idx)]
    out = []
    for i in idx:
        h, w = images[i].shape[-2:]
        top = int(torch.randint(h - crop + 1, (1,), generator=gen))
        left = int(torch.randint(w - crop + 1, (1,), generator=gen))
        out.append(images[i][..., top : top + crop, left : left + crop])
    return torch.cat(out)


@pytest.mark.parametrize("workers", [0, 2])
def test_the_dataloader_yields_the_crops_of_the_single_process_draws(workers):
    """Issue 17: the DataLoader (workers cut, the main process draws) gives the crops the generator gave before, in
    order, for every rank's slice; uint8 images (a decoded-array cache) give the same floats as their float32 copy."""
    floats = [torch.rand(1, 3, 40 + 2 * i, 48, generator=torch.Generator().manual_seed(i)) for i in range(5)]
    as_uint8 = [(f * 255).round().to(torch.uint8) for f in floats]
    floats = [u.float() / 255 for u in as_uint8]  # values a uint8 cache holds exactly
    gen = torch.Generator().manual_seed(7)
    expected = [(legacy_sample(floats, 6, 32, gen), legacy_sample(floats, 4, 32, gen)) for _ in range(5)]
    for rank in range(2):
        content = RandomCrops(lambda i: as_uint8[i], 5, 32, cache=False)
        style = RandomCrops(lambda i: floats[i], 5, 32)
        plans = training.StepPlans(content, style, torch.Generator().manual_seed(7), 1, 5, 3, 2, rank, 2)
        got = list(training.batch_loader(plans, workers, pin_memory=False))
        assert [g[0] for g in got] == [1, 2, 3, 4, 5]
        for (_, c, s), (c_all, s_all) in zip(got, expected, strict=True):
            assert torch.equal(c, c_all[rank * 3 : rank * 3 + 3])
            assert torch.equal(s, s_all[rank * 2 : rank * 2 + 2])
        replay = torch.Generator().manual_seed(7)  # states[k]: the generator after iteration k's draws
        for k in range(1, 6):
            content.plan(6, replay), style.plan(4, replay)
            assert torch.equal(plans.states[k], replay.get_state())


def test_resume_with_prefetching_workers_equals_one_uninterrupted_process(tmp_path):
    """Workers draw ahead of training; a checkpoint must still hold the generator as of its own iteration."""
    straight = Recorder()
    train(
        straight,
        crops(0),
        crops(10),
        config(iterations=8, checkpoint_every=3),
        tmp_path / "a",
        device=CPU,
        progress=False,
    )
    first = Recorder()
    cfg = config(iterations=8, checkpoint_every=3, workers=2)
    assert train(first, crops(0), crops(10), cfg, tmp_path / "b", device=CPU, stop_after=4, progress=False) == 4
    assert [p.name for p in checkpoints(tmp_path / "b")] == ["ckpt-00000003.pt", "ckpt-00000004.pt"]
    (tmp_path / "b" / "ckpt-00000004.pt").unlink()  # resume from iteration 3, while the workers had drawn further
    second = Recorder()
    assert train(second, crops(0), crops(10), cfg, tmp_path / "b", device=CPU, resume=True, progress=False) == 8
    seen = first.seen[:3] + second.seen
    assert len(seen) == len(straight.seen) == 8
    for a, b in zip(seen, straight.seen, strict=True):
        assert torch.equal(a, b)
    torch.testing.assert_close(second.scale.detach(), straight.scale.detach(), rtol=0, atol=0)


def test_loss_terms_are_read_back_every_log_every_steps(tmp_path, monkeypatch):
    """One device sync per ``log_every`` iterations (and before checkpoints), yet on_losses sees every iteration and a
    non-finite loss still stops training, naming its iteration, before any checkpoint holds it."""
    syncs: list[int] = []
    real = training.terms_to_floats
    monkeypatch.setattr(training, "terms_to_floats", lambda steps: syncs.append(len(steps)) or real(steps))
    history = LossHistory()
    train(
        Recorder(),
        crops(0),
        crops(10),
        config(iterations=10, checkpoint_every=10, log_every=4),
        tmp_path / "a",
        device=CPU,
        callbacks=history,
        progress=False,
    )
    assert history.steps == list(range(1, 11))
    assert syncs == [4, 4, 2, 0]  # iterations 4, 8, 10 (the checkpoint), then nothing left at the end

    class Diverging(Recorder):
        def losses(self, content, style):
            terms = super().losses(content, style)
            return {"total": terms["total"] * (float("nan") if len(self.seen) == 6 else 1.0)}

    with pytest.raises(training.NstError, match="diverged at iteration 6"):
        train(
            Diverging(),
            crops(0),
            crops(10),
            config(iterations=10, checkpoint_every=8, log_every=4),
            tmp_path / "b",
            device=CPU,
            progress=False,
        )
    assert not checkpoints(tmp_path / "b")


def test_callbacks_hear_losses_then_the_interval_hook_then_the_checkpoint_then_the_end(tmp_path):
    """Every iteration's losses before the interval hook of that iteration (a sync comes first), the hook before the
    iteration's checkpoint, ``on_end`` once after the last checkpoint; a resumed run goes on from its checkpoint."""
    events: list[tuple] = []

    class Spy(TrainCallbacks):
        interval = 3

        def on_losses(self, iteration, terms):
            events.append(("losses", iteration))

        def on_interval(self, iteration):
            events.append(("interval", iteration, [p.name for p in checkpoints(tmp_path)]))

        def on_end(self, iteration):
            events.append(("end", iteration, [p.name for p in checkpoints(tmp_path)]))

    cfg = config(iterations=6, checkpoint_every=4, keep_checkpoints=5, log_every=5)
    assert (
        train(Recorder(), crops(0), crops(10), cfg, tmp_path, device=CPU, stop_after=4, callbacks=Spy(), progress=False)
        == 4
    )
    assert events == [
        ("losses", 1),
        ("losses", 2),
        ("losses", 3),
        ("interval", 3, []),
        ("losses", 4),
        ("end", 4, ["ckpt-00000004.pt"]),
    ]
    events.clear()
    assert (
        train(Recorder(), crops(0), crops(10), cfg, tmp_path, device=CPU, resume=True, callbacks=Spy(), progress=False)
        == 6
    )
    assert events == [
        ("losses", 5),
        ("losses", 6),
        ("interval", 6, ["ckpt-00000004.pt"]),
        ("end", 6, ["ckpt-00000004.pt", "ckpt-00000006.pt"]),
    ]


def test_the_fp32_budget_applies_only_where_training_computes_in_fp32():
    """Issue 24: the embedded sample trains min(iterations, fp32_iterations) where bf16 is not native (amp auto ->
    fp32), its whole schedule in bf16, and always the whole schedule without an fp32 budget (the references, full)."""
    from methods.precision import Precision
    from methods.training import scheduled_iterations

    fp32, bf16 = Precision(False, False, "cpu"), Precision(True, True, "cpu")
    assert scheduled_iterations(config(iterations=160, fp32_iterations=64), fp32) == 64
    assert scheduled_iterations(config(iterations=160, fp32_iterations=64), bf16) == 160
    assert scheduled_iterations(config(iterations=160), fp32) == 160
    assert scheduled_iterations(config(iterations=3, fp32_iterations=64), fp32) == 3  # never more than the schedule


def test_training_in_fp32_stops_at_the_fp32_budget(encoder, tmp_path):
    history = LossHistory()
    reached = train(
        model(encoder),
        crops(0),
        crops(10),
        config(iterations=6, fp32_iterations=2, amp=False, checkpoint_every=100),
        tmp_path,
        device=CPU,
        callbacks=history,
        progress=False,
    )
    assert reached == 2
    assert len(history.terms) == 2
    assert [p.name for p in sorted(tmp_path.glob("ckpt-*.pt"))] == ["ckpt-00000002.pt"]
