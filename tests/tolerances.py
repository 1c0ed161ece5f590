"""float32 tolerances that follow from the arithmetic, not from the machine a test first passed on.

Two float32 evaluations of one formula that run different kernels (another ISA, another batch size, a reference port
against our code) differ by their rounding errors only, and those are bounded by how many terms each result sums.
Every tolerance here is *relative to a scale*, the quantity the bound is relative to: the sum of |terms| of a sum,
or a feature tensor's largest magnitude for a stack of convolutions. Relative to an element's own value it would be
meaningless: an element near 0 results from cancellation and carries the error of its large terms.

References:
    Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., SIAM 2002, sec. 3.1 (Lemma 3.1, eq. 3.4-3.5).
    Higham & Mary, A New Approach to Probabilistic Rounding Error Analysis, SIAM J. Sci. Comput. 41(5), A2815-A2835,
    2019 (the rule of thumb: the constant n u of a bound may be replaced by lambda sqrt(n) u, lambda a small constant).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

U32 = 2.0**-24  # unit roundoff of IEEE float32 (24-bit significand, round to nearest): Higham sec. 2.1
LAMBDA = 1.0  # Higham & Mary 2019's "small constant"; the measured kernel differences here sit 25x or more below


def gamma(n: int, u: float = U32) -> float:
    """Deterministic constant ``gamma_n = n u / (1 - n u)`` (Higham sec. 3.1, Lemma 3.1).

    A sum of ``n`` floating-point terms, computed in ANY order, has ``|s_hat - s| <= gamma_{n-1} * sum |x_i|``
    (Higham eq. 3.4-3.5); a dot product of ``n`` terms ``gamma_n * sum |x_i y_i|``. A worst case: every rounding
    error of the same sign and of the largest size.
    """
    if n * u >= 1:
        raise ValueError(f"gamma_n needs n u < 1, got n = {n}")
    return n * u / (1 - n * u)


def gamma_prob(n: int, lam: float = LAMBDA, u: float = U32) -> float:
    """Probabilistic constant ``lambda sqrt(n) u`` (Higham & Mary 2019): rounding errors of independent sign add like
    a random walk, so the ``n u`` of :func:`gamma` becomes ``lambda sqrt(n) u`` (their ``gamma~_n(lambda) =
    exp(lambda sqrt(n) u + n u^2 / (1 - u)) - 1``, first order). This is what blocked SIMD summation (every kernel
    here) stays within; :func:`gamma` is the bound for any order however adversarial.
    """
    return math.expm1(lam * math.sqrt(n) * u + n * u * u / (1 - u))


def sum_rtol(n: int, lam: float = LAMBDA, sides: int = 2) -> float:
    """|s1 - s2| / sum |x_i| for two float32 evaluations of one sum of ``n`` terms in two orders (two kernels).

    Each is within ``gamma_prob(n) * sum |x_i|`` of the exact sum (Higham sec. 3.1 with Higham & Mary's constant), so
    the two are within twice that. For terms of one sign (a mean of squares, a Gram diagonal) ``sum |x_i|`` is the
    value itself and this is a plain relative tolerance. ``sides=1``: a float32 result against a float64 reference,
    which carries only the float32 side's error.
    """
    return sides * gamma_prob(n, lam)


def conv_stack_tol(depth: int, fan_in: int, lam: float = LAMBDA) -> float:
    """|f1 - f2| / max |f| for two float32 evaluations of a stack of ``depth`` convolutions (+ ReLU, pooling).

    Each conv output is a dot product of ``fan_in = C_in * k * k`` terms plus the bias, so it carries
    :func:`sum_rtol` ``(fan_in + 1)`` of its sum of |terms| (the widest layer's fan_in bounds every layer's). ReLU and
    max pooling are exact and 1-Lipschitz, average pooling adds one rounding; a layer passes on its input's error at
    the scale of its activations (the weights of VGG, trained or He-initialised, keep activations' magnitude from
    layer to layer: He et al. 2015, sec. 2.2), so the errors of the ``depth`` layers add (Higham sec. 3.5: the errors
    of a product of matrices add over its factors). Relative to the compared tensor's largest magnitude.
    """
    return depth * sum_rtol(fan_in + 1, lam)


def mse_rtol(feats_tol: float, feats_scale: float, diff: torch.Tensor, lam: float = LAMBDA, sides: int = 2) -> float:
    """Relative tolerance of ``mean(d^2)``, ``d = f_x - f_y``, when each feature is within ``feats_tol * feats_scale``.

    With ``|delta d_i| <= e = 2 feats_tol feats_scale`` (both features' errors), ``delta sum(d^2) = sum(2 d_i delta
    d_i + delta d_i^2)``. The ``delta d_i`` are rounding errors of independent sign, so the first sum adds like a
    random walk: ``|sum 2 d_i delta d_i| <= lambda 2 e sqrt(sum d_i^2)`` (Hoeffding's inequality, the tool of
    Higham & Mary 2019, sec. 2), against ``sum 2 |d_i| e`` in the worst case. Plus the mean's own sum of ``N``
    non-negative terms, :func:`sum_rtol` ``(N)`` (``sides`` as there).
    """
    e = 2.0 * feats_tol * feats_scale
    d2 = diff.detach().double().pow(2)
    total = float(d2.sum())
    return (lam * 2.0 * e * math.sqrt(total) + d2.numel() * e * e) / total + sum_rtol(d2.numel(), lam, sides)


def propagated_error(
    fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor], errors: Sequence[torch.Tensor | float]
) -> float:
    """First-order bound on ``|fn(x + dx) - fn(x)|`` when every ``|dx_k| <= errors[k]`` elementwise, ``fn`` scalar:
    ``sum_k sum |d fn / d x_k| * errors[k]`` (Higham sec. 3.5 and 3.7: an input's error times the result's
    sensitivity to it), the gradient taken in float64 at ``inputs``. Worst case over the signs of the ``dx``: the
    elementwise bounds passed in are the probabilistic ones already, and neighbouring errors are correlated (two Gram
    entries share a row of features), so they are not assumed to cancel a second time.
    """
    xs = [x.detach().double().requires_grad_(True) for x in inputs]
    grads = torch.autograd.grad(fn(*xs), xs)
    return float(
        sum((g.abs() * torch.as_tensor(e, dtype=torch.float64)).sum() for g, e in zip(grads, errors, strict=True))
    )


def assert_close_scaled(
    actual: torch.Tensor, expected: torch.Tensor, tol: float, scale: float | None = None, msg: str = ""
) -> None:
    """Assert ``|actual - expected| <= tol * scale`` elementwise; ``scale`` defaults to ``max |expected|``.

    On failure, say how many elements are out, the worst ``|a - e| / scale`` against ``tol`` and where it is.
    """
    a, e = actual.detach().double(), expected.detach().double()
    assert a.shape == e.shape, f"{msg} shapes differ: {tuple(a.shape)} vs {tuple(e.shape)}"
    if scale is None:
        scale = float(e.abs().max()) if e.numel() else 0.0
    ratio = (a - e).abs() / scale if scale > 0 else (a - e).abs()
    bad = int((ratio > tol).sum())
    if bad or not bool(torch.isfinite(a).all()):
        worst = int(ratio.flatten().nan_to_num(math.inf).argmax())
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), ratio.shape))
        raise AssertionError(
            f"{msg + ': ' if msg else ''}{bad} of {ratio.numel()} elements differ by more than {tol:.3g} x scale "
            f"{scale:.6g}; worst |a - e| / scale = {float(ratio.flatten()[worst]):.3g} at {index} "
            f"(actual {float(a.flatten()[worst]):.8g}, expected {float(e.flatten()[worst]):.8g})"
        )
