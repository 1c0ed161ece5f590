"""The training loop shared by the feed-forward methods: seeded random crops, Adam with inverse-time decay,
bf16 autocast / channels_last (methods/precision.py: CUDA and bf16-capable CPUs), atomic checkpoints and exact resume.

A method plugs in a :class:`TrainableModel`: its trainable modules, and ``losses(content, style)`` returning the
weighted loss terms (a dict of scalar tensors, ``"total"`` included). Optionally it also declares

- ``batch_split(batch_size) -> (n_content, n_style)``: how many content and style crops one step draws (default
  ``batch_size`` of each; the contrastive method draws ``batch_size / 2`` of each and pairs them up itself);
- ``distinct_batches = True``: a batch must hold distinct images (its loss compares the items of a batch, e.g.
  InfoNCE); a batch larger than the image set is then an error instead of a wrap-around;
- ``adversary() -> dict[str, nn.Module]``, ``generator_losses(content, style) -> (terms, fakes)``,
  ``adversary_losses(real, fakes)`` and ``adversarial_losses(fakes)``: modules trained by a second Adam optimiser (a
  GAN discriminator). Each iteration runs the generator's forward pass (``generator_losses``: its terms and its
  fakes, handed on explicitly: a model keeps nothing between calls), then steps the adversary first on
  ``adversary_losses`` (the style batch as the real images against the detached fakes of this pass), then adds
  ``adversarial_losses(fakes)`` (the generator's terms against the just-stepped adversary, whose parameters are
  frozen meanwhile) and steps the generator — the order of HalbertCH/IEContraAST train.py. The adversary's terms
  are logged as ``d_<name>``.

The model's frozen encoder (a ``model.encoder`` module), possibly shared with other methods, is never changed: the
trainer gives the model its own copy on the device in the precision's memory format when the encoder is not already
so (:meth:`Precision.module_on`).

Batches (:meth:`RandomCrops.sample`): each batch takes the first images of a fresh random permutation of the image
set, as IEContraAST's ``sampler.py`` (``InfiniteSamplerWrapper``) walks permutations, so within a batch contents are
distinct and styles are distinct whenever the batch is no larger than the set; a larger batch continues with the next
permutation (wrap-around: every image once before any repeats), which ``distinct_batches`` models refuse.

Everything random during training comes from one ``torch.Generator`` (batch indices and crop offsets) whose state is
checkpointed together with every module, both optimisers and the iteration, so ``resume`` continues exactly where
an interrupted run stopped. A checkpoint also carries the training wall time summed over every run that led to it
(``elapsed_s``) and the last iteration's loss terms (``last_losses``), which a pretrained model's card reports.

A caller follows a run through a :class:`TrainCallbacks` object: every iteration's loss terms, a hook every
``interval`` iterations (a sample grid, a validation score) and the end.
"""

from __future__ import annotations

import contextlib
import logging
import math
import platform
import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from methods.errors import NstError
from methods.precision import Precision
from methods.schemas.schedule import TrainParams
from methods.utils import save_torch_atomic

log = logging.getLogger(__name__)

CKPT_PATTERN = re.compile(r"^ckpt-(\d{8})\.pt$")


class CheckpointError(NstError):
    """No usable checkpoint where one is required, or a checkpoint that does not fit the model."""


# HalbertCH/IEContraAST train.py optimizer_D: Adam(lr, betas=(0.5, 0.999)) for the discriminator
ADVERSARY_BETAS = (0.5, 0.999)
# TrainParams.log_every: loss terms stay on the device and are read back (one sync: TrainCallbacks.on_losses, the
# divergence check, the progress bar) every log_every iterations, before each checkpoint and at the end; on_losses
# still sees every one.


Crop = tuple[int, int, int]  # (image index, top, left) of one crop


class RandomCrops:
    """Batches of random square crops from ``n`` images, drawn with a caller-supplied generator (reproducible).

    Drawing and cutting are apart: :meth:`plan` takes every random number of a batch from the generator (image indices,
    then each crop's offsets), :meth:`cut` only reads pixels. So the training loop draws in its own process while
    DataLoader workers cut (:class:`CropBatches`), and the crops are those of :meth:`sample` = ``cut(plan(...))``.

    Args:
        load: ``load(i)`` returns image ``i`` as (1, 3, H, W) in [0, 1] (already resized by the caller's policy):
            float32, or uint8 holding ``round(255 x value)`` exactly (a decoded-array cache: converted per crop, to the
            same floats).
        n: number of images.
        crop: crop side in pixels; images smaller than that are upscaled to fit (rare: policy sizes them above).
        cache: keep loaded images in memory (the embedded sample); False when ``load`` is cheap itself (memory-mapped
            decoded arrays) or the set is large. Image sizes are always remembered (a plan needs them).
    """

    def __init__(self, load: Callable[[int], Tensor], n: int, crop: int, cache: bool = True) -> None:
        if n < 1:
            raise NstError("RandomCrops needs at least one image")
        self.load, self.n, self.crop = load, n, crop
        self._cache: dict[int, Tensor] | None = {} if cache else None
        self._shapes: dict[int, tuple[int, int]] = {}

    def _image(self, i: int) -> Tensor:
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        img = self.load(i)
        h, w = img.shape[-2:]
        if min(h, w) < self.crop:
            scale = self.crop / min(h, w)
            img = img.float() / 255 if img.dtype == torch.uint8 else img
            img = torch.nn.functional.interpolate(
                img, size=(max(self.crop, round(h * scale)), max(self.crop, round(w * scale))), mode="bilinear"
            )
        if self._cache is not None:
            self._cache[i] = img
        self._shapes[i] = (int(img.shape[-2]), int(img.shape[-1]))
        return img

    def shape(self, i: int) -> tuple[int, int]:
        """(H, W) of image ``i`` as crops are cut from it."""
        if i not in self._shapes:
            self._image(i)
        return self._shapes[i]

    def preload(self) -> None:
        """Load every image now (into the memory cache, when on): DataLoader workers forked afterwards share them."""
        for i in range(self.n):
            self.shape(i)

    def indices(self, batch: int, gen: torch.Generator) -> list[int]:
        """``batch`` image indices: the start of a random permutation of the ``n`` images, continued with further
        permutations when ``batch > n`` (distinct within a batch whenever ``batch <= n``)."""
        out: list[int] = []
        while len(out) < batch:
            out += torch.randperm(self.n, generator=gen).tolist()[: batch - len(out)]
        return out

    def plan(self, batch: int, gen: torch.Generator) -> list[Crop]:
        """``batch`` crops ``(image, top, left)``: image indices (:meth:`indices`), then each crop's top and left
        offsets, all from ``gen`` in that order."""
        out = []
        for i in self.indices(batch, gen):
            h, w = self.shape(i)
            top = int(torch.randint(h - self.crop + 1, (1,), generator=gen))
            left = int(torch.randint(w - self.crop + 1, (1,), generator=gen))
            out.append((i, top, left))
        return out

    def cut(self, plan: Sequence[Crop]) -> Tensor:
        """(len(plan), 3, crop, crop) float32: the planned crops (no random numbers drawn)."""
        pieces = [self._image(i)[..., top : top + self.crop, left : left + self.crop] for i, top, left in plan]
        if all(p.dtype == torch.uint8 for p in pieces):  # one conversion for the batch (elementwise: the same floats)
            return torch.cat(pieces).float().div_(255)
        return torch.cat([p.float() / 255 if p.dtype == torch.uint8 else p for p in pieces])

    def sample(self, batch: int, gen: torch.Generator) -> Tensor:
        """(batch, 3, crop, crop): :meth:`cut` of :meth:`plan`."""
        return self.cut(self.plan(batch, gen))


class StepPlans(torch.utils.data.Sampler):
    """The crops of training iterations ``first..last``: per iteration, this rank's slice of the global content batch,
    then of the global style batch, drawn from ``gen`` in the main process in the single-process order (so one or
    several processes, any number of workers, and a resumed run all see the same crops).

    A DataLoader draws ahead of the step it hands out (prefetch), so the generator runs ahead of training; the
    generator state after each iteration's draws is kept in :attr:`states` for that iteration's checkpoint.
    """

    def __init__(
        self,
        content: RandomCrops,
        style: RandomCrops,
        gen: torch.Generator,
        first: int,
        last: int,
        n_content: int,
        n_style: int,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.content, self.style, self.gen = content, style, gen
        self.first, self.last = first, last
        self.n_content, self.n_style, self.rank, self.world = n_content, n_style, rank, world
        self.states: dict[int, Tensor] = {}

    def __len__(self) -> int:
        return max(0, self.last - self.first + 1)

    def __iter__(self) -> Iterator[tuple[int, list[Crop], list[Crop]]]:
        nc, ns, r = self.n_content, self.n_style, self.rank
        for iteration in range(self.first, self.last + 1):
            c = self.content.plan(nc * self.world, self.gen)[r * nc : (r + 1) * nc]
            s = self.style.plan(ns * self.world, self.gen)[r * ns : (r + 1) * ns]
            self.states[iteration] = self.gen.get_state()
            yield iteration, c, s


class CropBatches(torch.utils.data.Dataset):
    """Map-style dataset whose "index" is one :class:`StepPlans` item: ``(iteration, content crops, style crops)``.
    Workers only cut (decode from their cache, slice, convert); they draw no random numbers."""

    def __init__(self, content: RandomCrops, style: RandomCrops) -> None:
        self.content, self.style = content, style

    def __getitem__(self, step: tuple[int, list[Crop], list[Crop]]) -> tuple[int, Tensor, Tensor]:  # type: ignore[override]
        iteration, c, s = step
        return iteration, self.content.cut(c), self.style.cut(s)


def batch_loader(plans: StepPlans, workers: int, pin_memory: bool) -> torch.utils.data.DataLoader:
    """A DataLoader over ``plans``: ``workers`` processes cut the crops (0 = in this process), ``pin_memory`` page-locks
    the batches for asynchronous host-to-GPU copies. Its own (unused) generator keeps the loader from drawing its base
    seed from torch's global RNG, which the checkpoint records."""
    if workers:
        plans.content.preload()  # in memory before the fork: workers share the decoded images instead of decoding
        plans.style.preload()
    return torch.utils.data.DataLoader(
        CropBatches(plans.content, plans.style),
        batch_size=None,
        sampler=plans,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers else None,
        generator=torch.Generator(),
    )


class TrainableModel(Protocol):
    def trainable(self) -> dict[str, nn.Module]: ...

    def losses(self, content: Tensor, style: Tensor) -> dict[str, Tensor]: ...


def batch_split(model: TrainableModel, batch_size: int) -> tuple[int, int]:
    """How many content and style crops one step of ``model`` draws for ``batch_size``."""
    split = getattr(model, "batch_split", None)
    return split(batch_size) if split is not None else (batch_size, batch_size)


def dist_info() -> tuple[int, int]:
    """(rank, world size) of the torch.distributed process group; (0, 1) when there is none."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def barrier() -> None:
    if dist_info()[1] > 1:
        torch.distributed.barrier()


def _average_gradients(optimizer: torch.optim.Optimizer) -> None:
    """Data parallelism: average every gradient over the ranks (one flat all-reduce), as DistributedDataParallel
    does, so each rank takes the same step as one process on the whole batch. A no-op in a single process.

    (DDP's module wrapper does not fit here: a step runs the model's own ``losses`` and, for GAN methods, a second
    optimiser over modules whose ``requires_grad`` flips between the two phases.)
    """
    world = dist_info()[1]
    if world == 1:
        return
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def _mean_over_ranks(terms: dict[str, Tensor]) -> dict[str, Tensor]:
    """Loss terms averaged over the ranks (each rank's terms are means over its equal share), as 0-d float32 tensors
    on the device: no host sync (:func:`train` reads them back every ``log_every`` iterations)."""
    names = list(terms)
    stacked = torch.stack([terms[k].reshape(()) for k in names])  # every term is one number
    world = dist_info()[1]
    if world > 1:
        torch.distributed.all_reduce(stacked)
        stacked /= world
    return dict(zip(names, stacked.unbind(), strict=True))


def terms_to_floats(steps: Sequence[dict[str, Tensor]]) -> list[dict[str, float]]:
    """Several iterations' loss terms (0-d tensors, one device) as floats with a single device-to-host copy."""
    if not steps:
        return []
    flat = torch.cat([torch.stack(list(t.values())) for t in steps]).tolist()
    out, offset = [], 0
    for t in steps:
        out.append(dict(zip(t, flat[offset : offset + len(t)], strict=True)))
        offset += len(t)
    return out


def _set_requires_grad(modules: dict[str, nn.Module], flag: bool) -> None:
    for module in modules.values():
        module.requires_grad_(flag)


def make_optimizers(
    model: TrainableModel, lr: float, adversary_betas: tuple[float, float] = ADVERSARY_BETAS
) -> tuple[dict[str, nn.Module], dict[str, nn.Module], dict[str, torch.optim.Optimizer]]:
    """The model's trainable and adversary modules and their Adam optimisers (``main``, and ``adversary`` if any)."""
    modules = model.trainable()
    adversary: dict[str, nn.Module] = model.adversary() if hasattr(model, "adversary") else {}  # type: ignore[attr-defined]
    if set(modules) & set(adversary):
        raise NstError(f"module names used twice: {sorted(set(modules) & set(adversary))}")
    optimizers: dict[str, torch.optim.Optimizer] = {
        "main": torch.optim.Adam([p for m in modules.values() for p in m.parameters()], lr=lr)
    }
    if adversary:
        params = [p for m in adversary.values() for p in m.parameters()]
        optimizers["adversary"] = torch.optim.Adam(params, lr=lr, betas=adversary_betas)
    return modules, adversary, optimizers


def train_step(
    model: TrainableModel,
    content: Tensor,
    style: Tensor,
    optimizers: dict[str, torch.optim.Optimizer],
    adversary: dict[str, nn.Module],
    autocast: contextlib.AbstractContextManager[Any],
) -> dict[str, Tensor]:
    """One iteration; returns the loss terms (averaged over ranks; 0-d tensors on the device, not synced).

    Without an adversary: a step on ``losses``. With one (IEContraAST train.py's order): the generator's forward pass
    (``generator_losses``: terms and fakes), an adversary step on ``adversary_losses`` (the style batch against the
    detached fakes of this pass), then a generator step on the terms + ``adversarial_losses(fakes)`` against the
    updated adversary (its parameters frozen).
    """
    _set_requires_grad(adversary, False)
    with autocast:
        if adversary:
            terms, fakes = model.generator_losses(content, style)  # type: ignore[attr-defined]
        else:
            terms = model.losses(content, style)
    detached: dict[str, Tensor] = {}
    if adversary:
        _set_requires_grad(adversary, True)
        with autocast:
            d_terms = model.adversary_losses(style, fakes)  # type: ignore[attr-defined]
        optimizers["adversary"].zero_grad(set_to_none=True)
        d_terms["total"].backward()
        _average_gradients(optimizers["adversary"])
        optimizers["adversary"].step()
        _set_requires_grad(adversary, False)
        detached.update({f"d_{k}": v.detach().float() for k, v in d_terms.items()})
        with autocast:
            g_terms = model.adversarial_losses(fakes)  # type: ignore[attr-defined]
        total = terms.pop("total") + sum(g_terms.values())
        terms = {**terms, **g_terms, "total": total}
    optimizers["main"].zero_grad(set_to_none=True)
    terms["total"].backward()
    _average_gradients(optimizers["main"])
    optimizers["main"].step()
    detached = {**{k: v.detach().float() for k, v in terms.items()}, **detached}
    return _mean_over_ranks(detached)


def checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if CKPT_PATTERN.match(p.name))


def load_latest(directory: Path) -> tuple[dict[str, Any], Path] | None:
    """The newest checkpoint that loads; a corrupt newer one is skipped with a warning. None when there is none."""
    bad = []
    for path in reversed(checkpoints(directory)):
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
            if not isinstance(state, dict) or "iteration" not in state:
                raise ValueError("not a training checkpoint")
        except Exception as exc:  # truncated zip, pickle error, wrong content
            log.warning("checkpoint %s is unreadable (%s); trying the previous one", path, exc)
            bad.append(path)
            continue
        return state, path
    if bad:
        raise CheckpointError(f"{directory}: no readable checkpoint ({', '.join(p.name for p in bad)} are corrupt)")
    return None


def hardware(device: torch.device, world: int = 1) -> str:
    """The machine a run trains on, in words (a checkpoint records it for the model card)."""
    if device.type == "cuda":
        what = torch.cuda.get_device_name(device)
    else:
        model_name = platform.processor() or platform.machine()
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    model_name = line.split(":", 1)[1].strip()
                    break
        what = f"{model_name}, {torch.get_num_threads()} torch threads"
    return f"{world} x {what}" if world > 1 else what


class TrainCallbacks:
    """What a caller hears of a :func:`train` run: hooks that do nothing here; subclass and override the ones you need.

    The loop calls them on rank 0 only (other ranks train silently), in this order within an iteration: the losses of
    the iterations read back so far, then :meth:`on_interval`, then the checkpoint; :meth:`on_end` once at the end.

    Attributes:
        interval: :meth:`on_interval` runs after every ``interval``-th iteration (0: never).
    """

    interval: int = 0

    def on_losses(self, iteration: int, terms: dict[str, float]) -> None:
        """Iteration ``iteration``'s loss terms (floats, ``"total"`` included; ``d_<name>`` for an adversary).

        Called for every iteration, in order, in bursts: the terms stay on the device until the loop reads them back
        (every ``cfg.log_every`` iterations, before :meth:`on_interval` or a checkpoint, and at the end).
        """

    def on_interval(self, iteration: int) -> None:
        """After every ``interval``-th iteration (its step taken, its losses reported, its checkpoint not yet written):
        e.g. stylize a sample, or score a validation set. The trainable modules are in training mode; a hook that
        changes that must restore it. Raising stops training (no checkpoint of this iteration is written)."""

    def on_end(self, iteration: int) -> None:
        """Once, when training has ended normally at ``iteration`` (every loss reported, the last checkpoint written):
        e.g. flush metrics still buffered."""


class LossHistory(TrainCallbacks):
    """Callbacks that keep every iteration's loss terms: ``terms[i]`` of iteration ``steps[i]``."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.terms: list[dict[str, float]] = []

    def on_losses(self, iteration: int, terms: dict[str, float]) -> None:
        self.steps.append(iteration)
        self.terms.append(terms)


def train(
    model: TrainableModel,
    content: RandomCrops,
    style: RandomCrops,
    cfg: TrainParams,
    checkpoint_dir: Path,
    *,
    device: torch.device,
    resume: bool = False,
    fingerprint: str = "",
    callbacks: TrainCallbacks | None = None,
    stop_after: int | None = None,
    progress: bool = True,
) -> int:
    """Train ``model`` up to :func:`scheduled_iterations` (``cfg.iterations``, or its fp32 budget); returns the
    iteration reached.

    Args:
        checkpoint_dir: ``ckpt-<iteration>.pt`` files are written here every ``cfg.checkpoint_every`` iterations and
            at the end (atomically: temp file + rename; the newest ``keep_checkpoints`` are kept).
        resume: continue from the newest readable checkpoint (its ``fingerprint`` must match); raises
            :class:`CheckpointError` when there is none.
        fingerprint: identifies the model/config a checkpoint belongs to (refuses to resume a different one).
        callbacks: told every iteration's losses, every ``callbacks.interval`` iterations, and the end
            (:class:`TrainCallbacks`; default: nothing).
        stop_after: stop (with a checkpoint) after this many iterations of this call — for tests of resume.
    """
    n_content, n_style = batch_shares(model, cfg, content.n, style.n)
    run = _Training(model, cfg, checkpoint_dir, device, fingerprint, callbacks or TrainCallbacks())
    run.to_device()
    run.make_checkpoint_dir()
    if resume:
        run.resume()
    end = run.iterations if stop_after is None else min(run.iterations, run.start + stop_after)
    plans = StepPlans(content, style, run.gen, run.start + 1, end, n_content, n_style, run.rank, run.world)
    reached = run.iterate(plans, end, progress)
    if end == run.start == 0 and run.iterations == 0:  # an empty schedule still leaves its (initial) checkpoint
        run.save(0, run.gen.get_state())
    if run.rank == 0:
        run.callbacks.on_end(reached)
    return reached


def scheduled_iterations(cfg: TrainParams, precision: Precision) -> int:
    """The iterations a run trains for: ``cfg.iterations``, or ``min(iterations, fp32_iterations)`` when
    ``precision`` computes in fp32 and ``fp32_iterations`` is set (the embedded sample's budget on a CPU without
    native bf16: methods/schemas/schedule.py)."""
    if precision.bf16 or cfg.fp32_iterations is None:
        return cfg.iterations
    return min(cfg.iterations, cfg.fp32_iterations)


def batch_shares(model: TrainableModel, cfg: TrainParams, n_content: int, n_style: int) -> tuple[int, int]:
    """How many content and style crops this rank draws per step (its share of the global batch), checked: the batch
    must split evenly over the ranks and, for a ``distinct_batches`` model, fit the ``n_content`` / ``n_style``
    images of the training set."""
    world = dist_info()[1]
    if cfg.batch_size % world:
        raise NstError(f"batch_size {cfg.batch_size} does not split evenly over {world} processes")
    shares = batch_split(model, cfg.batch_size // world)
    if getattr(model, "distinct_batches", False):
        for role, per_rank, n in (("content", shares[0], n_content), ("style", shares[1], n_style)):
            if per_rank * world > n:
                raise NstError(
                    f"a batch needs {per_rank * world} distinct {role} images (batch_size "
                    f"{cfg.batch_size}), but the training set has {n}: lower train.batch_size or add "
                    f"{role} images"
                )
    return shares


class _Training:
    """One call of :func:`train`: the model's modules and optimisers, the data generator, the progress so far (restored
    by :meth:`resume`), the loss terms not yet read back from the device; and the steps of the loop."""

    def __init__(
        self,
        model: TrainableModel,
        cfg: TrainParams,
        checkpoint_dir: Path,
        device: torch.device,
        fingerprint: str,
        callbacks: TrainCallbacks,
    ) -> None:
        self.model, self.cfg, self.checkpoint_dir, self.device = model, cfg, checkpoint_dir, device
        self.fingerprint, self.callbacks = fingerprint, callbacks
        self.modules, self.adversary, self.optimizers = make_optimizers(model, cfg.lr, ADVERSARY_BETAS)
        self.everything = {**self.modules, **self.adversary}
        self.rank, self.world = dist_info()
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.start = 0
        self.elapsed = 0.0  # training wall time over every run that led to this state (checkpointed: resume adds to it)
        self.last: dict[str, float] = {}  # the newest loss terms read back
        self.pending: list[tuple[int, dict[str, Tensor]]] = []  # loss terms still on the device
        self.started = time.perf_counter()  # reset when the loop starts
        self.bar: tqdm | None = None  # the progress bar, while the loop runs
        self.precision = Precision.resolve(cfg.amp, cfg.channels_last, device)
        log.info("training precision on %s: %s", device.type, self.precision.label)
        self.autocast = self.precision.autocast()
        self.iterations = scheduled_iterations(cfg, self.precision)
        if self.iterations != cfg.iterations:
            log.info(
                "training in fp32 (no native bf16): %d of %d iterations (fp32_iterations)",
                self.iterations,
                cfg.iterations,
            )

    def to_device(self) -> None:
        """The whole model (its frozen encoder included; issue 17: it stayed on the CPU), then every trained module in
        training mode, on the device in the precision's memory format — before any optimiser state is loaded (it
        follows the parameters). The encoder passed in stays as it is: the model gets a converted copy if need be."""
        encoder = getattr(self.model, "encoder", None)
        if isinstance(encoder, nn.Module):
            self.model.encoder = self.precision.module_on(encoder, self.device)  # type: ignore[attr-defined]
        if isinstance(self.model, nn.Module):
            self.precision.module(self.model.to(self.device))
        for module in self.everything.values():
            self.precision.module(module.to(self.device).train())

    def make_checkpoint_dir(self) -> None:
        if self.rank == 0:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        barrier()

    def resume(self) -> None:
        """Restore every module, optimiser, both random generators, the iteration, the wall time and the last losses
        from the newest readable checkpoint, which must have been written for this fingerprint and model."""
        found = load_latest(self.checkpoint_dir)
        if found is None:
            raise CheckpointError(f"{self.checkpoint_dir}: no checkpoint to resume from")
        state, path = found
        if state.get("fingerprint") != self.fingerprint:
            raise CheckpointError(f"{path}: written for another configuration; remove it or train from scratch")
        missing = sorted(
            (set(self.everything) - set(state["modules"])) | (set(self.optimizers) - set(state["optimizers"]))
        )
        if missing:
            raise CheckpointError(f"{path}: lacks {', '.join(missing)}; it was written by another model")
        for name, module in self.everything.items():
            module.load_state_dict(state["modules"][name])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        self.gen.set_state(state["rng"]["data"])
        torch.set_rng_state(state["rng"]["torch"])
        self.start = int(state["iteration"])
        self.elapsed, self.last = float(state.get("elapsed_s", 0.0)), dict(state.get("last_losses", {}))
        log.info("resumed from %s (iteration %d)", path, self.start)

    def iterate(self, plans: StepPlans, end: int, progress: bool) -> int:
        """Run the iterations ``plans`` hands out (up to ``end``), then read back the last losses; returns the
        iteration reached."""
        self.bar = bar = tqdm(
            total=self.iterations,
            initial=self.start,
            desc="train",
            unit="it",
            disable=None if progress and self.rank == 0 else True,
        )
        loader = batch_loader(plans, self.cfg.workers, pin_memory=self.device.type == "cuda")
        # Fixed crop sizes: cuDNN may time its convolution algorithms once per shape and keep the fastest (CUDA results
        # are not bitwise repeatable anyway: several backward kernels accumulate with atomics).
        benchmark = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = benchmark or self.device.type == "cuda"
        iteration = self.start
        self.started = time.perf_counter()
        try:
            for iteration, content, style in loader:
                self.step(iteration, content, style)
                self.report_and_checkpoint(iteration, end, plans)
                bar.update(1)
            self.sync()
        finally:
            torch.backends.cudnn.benchmark = benchmark
            del loader  # persistent workers end with their DataLoader
        bar.close()
        return iteration

    def step(self, iteration: int, content: Tensor, style: Tensor) -> None:
        """One optimisation step on this rank's crops, at the iteration's learning rate; its loss terms stay pending.

        Every rank draws the whole global batch from the same generator and keeps its slice (StepPlans): the data
        order is the single-process one, whatever the number of processes.
        """
        for opt in self.optimizers.values():  # both optimisers share the schedule (IEContraAST train.py)
            for group in opt.param_groups:
                group["lr"] = self.cfg.lr / (1.0 + self.cfg.lr_decay * (iteration - 1))
        content = self.precision.image(content.to(self.device, non_blocking=True))
        style = self.precision.image(style.to(self.device, non_blocking=True))
        terms = train_step(self.model, content, style, self.optimizers, self.adversary, self.autocast)
        self.pending.append((iteration, terms))

    def report_and_checkpoint(self, iteration: int, end: int, plans: StepPlans) -> None:
        """After a step: read the losses back when due (always before the interval hook or a checkpoint, so a diverged
        state is never saved), run the interval hook, write the checkpoint when due."""
        interval = self.callbacks.interval
        hook = bool(interval) and iteration % interval == 0 and self.rank == 0
        saving = iteration % self.cfg.checkpoint_every == 0 or iteration == end
        if iteration % self.cfg.log_every == 0 or hook or saving:
            self.sync()
        if hook:
            self.callbacks.on_interval(iteration)
        if saving:
            self.save(iteration, plans.states[iteration])  # the generator as it was after this iteration's draws
        for old in [k for k in plans.states if k <= iteration]:
            del plans.states[old]

    def sync(self) -> None:
        """Read the pending iterations' loss terms back (one device sync), check them, report them."""
        for (it, _), values in zip(self.pending, terms_to_floats([t for _, t in self.pending]), strict=True):
            if not all(math.isfinite(v) for v in values.values()):
                raise NstError(f"training diverged at iteration {it}: {values}")
            self.last = values
            if self.rank == 0:
                self.callbacks.on_losses(it, values)
        if self.pending and self.bar is not None:
            self.bar.set_postfix(loss=f"{self.last['total']:.4g}")
        self.pending.clear()

    def save(self, iteration: int, gen_state: Tensor) -> None:
        """Checkpoint everything :meth:`resume` restores (rank 0 writes, atomically); keep the newest
        ``keep_checkpoints``."""
        state = {
            "iteration": iteration,
            "fingerprint": self.fingerprint,
            "config": self.cfg.model_dump(mode="json"),
            "modules": {k: m.state_dict() for k, m in self.everything.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "rng": {"data": gen_state, "torch": torch.get_rng_state()},
            "elapsed_s": self.elapsed + time.perf_counter() - self.started,
            "last_losses": self.last,
            "hardware": hardware(self.device, self.world),
        }
        if self.rank == 0:  # every rank holds the same weights: one writes
            save_torch_atomic(state, self.checkpoint_dir / f"ckpt-{iteration:08d}.pt")
            for old in checkpoints(self.checkpoint_dir)[: -self.cfg.keep_checkpoints]:
                old.unlink(missing_ok=True)
        barrier()
