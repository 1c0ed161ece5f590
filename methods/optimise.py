"""The image-optimisation loop (Gatys et al. 2016): a start image, a loss, an optimiser, a number of iterations.

``loss_fn(image) -> (total, terms)``: the scalar to minimise and its terms as floats (logged, passed to the callback,
returned). L-BFGS runs as neural-style's ``optim.lbfgs(maxIter = num_iterations)``: one ``step()`` for every
iteration, keeping its curvature history (100 pairs, optim.lbfgs's default), with a strong-Wolfe line search (Gatys
et al. used scipy's L-BFGS-B, which line-searches; without one a noise start overshoots badly) and at most
``iterations * 5 // 4`` loss evaluations (torch's LBFGS default max_eval, passed explicitly). Adam takes one step,
one evaluation, per iteration.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from methods.errors import NstError

LossFn = Callable[[Tensor], tuple[Tensor, dict[str, float]]]
StepCallback = Callable[[int, dict[str, float]], None]


def optimise_image(
    start: Tensor,
    loss_fn: LossFn,
    optimizer: Literal["lbfgs", "adam"],
    iterations: int,
    lr: float,
    *,
    callback: StepCallback | None = None,
    progress: bool = False,
    name: str = "optimise",
) -> tuple[Tensor, list[dict[str, float]]]:
    """Minimise ``loss_fn`` over the pixels of a copy of ``start``; returns the (detached, unclamped) image and the
    terms of every loss evaluation in order.

    Args:
        start: the initial image, float32; optimised as an NCHW-contiguous copy (L-BFGS flattens with ``view(-1)``; a
            channels_last encoder's gradient is made contiguous before the step).
        loss_fn: ``image -> (total, terms)``; ``terms["total"]`` is checked to be finite at every evaluation.
        optimizer: ``"lbfgs"`` or ``"adam"`` (see the module docstring).
        iterations, lr: the optimiser's iterations and learning rate.
        callback: called at every loss evaluation with ``(index, terms)`` (L-BFGS: line-search trials included, up to
            its max_eval; torch checks it between iterations, so the last iteration may go a few past it).
        progress: a tqdm bar advancing with every evaluation (L-BFGS: out of max_eval, completed when it stops early).
        name: the method's name, in the bar and in errors.

    Raises:
        NstError: the loss became non-finite (naming the evaluation and its terms).
    """
    image = start.detach().clone(memory_format=torch.contiguous_format).requires_grad_(True)  # start stays as it is
    lbfgs = optimizer == "lbfgs"
    max_eval = iterations * 5 // 4  # torch's LBFGS default (max_iter * 5 // 4), passed explicitly below
    bar = tqdm(
        total=max_eval if lbfgs else iterations,
        desc=name,
        unit="eval" if lbfgs else "it",
        disable=None if progress else True,
        leave=False,
    )
    records: list[dict[str, float]] = []

    def closure() -> Tensor:
        opt.zero_grad(set_to_none=True)
        total, terms = loss_fn(image)
        if not math.isfinite(terms["total"]):
            raise NstError(
                f"{name}: loss became non-finite at evaluation {len(records)} ({terms}); lower lr or weights"
            )
        total.backward()
        if image.grad is not None and not image.grad.is_contiguous():  # a channels_last encoder's gradient
            image.grad = image.grad.contiguous()
        if bar.total is not None and bar.n >= bar.total:  # L-BFGS checks max_eval only between iterations
            bar.total = bar.n + 1
        bar.set_postfix(loss=f"{terms['total']:.4g}", refresh=False)
        bar.update(1)  # every evaluation, so L-BFGS's single step() shows its progress too
        if callback is not None:
            callback(len(records), terms)
        records.append(terms)
        return total

    if lbfgs:
        opt: torch.optim.Optimizer = torch.optim.LBFGS(
            [image], lr=lr, max_iter=iterations, max_eval=max_eval, history_size=100, line_search_fn="strong_wolfe"
        )
        if iterations > 0:
            opt.step(closure)
        if not bar.disable and bar.n < bar.total:  # stopped within the evaluation budget (max_iter, or converged)
            bar.total = bar.n
            bar.refresh()
    else:
        opt = torch.optim.Adam([image], lr=lr)
        for _ in range(iterations):
            opt.step(closure)
    bar.close()
    return image.detach(), records
