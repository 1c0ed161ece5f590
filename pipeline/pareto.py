"""Multi-objective maths of the tune stage, apart from Optuna: objective directions, Pareto dominance, and the choice of
one operating point on a front. Pure functions over sequences of floats (no Optuna, no torch).

A point is one value per objective; ``directions`` says per objective whether lower (``"minimize"``) or higher
(``"maximize"``) is better, as Optuna's study directions do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from evaluation.metric_names import HIGHER_IS_BETTER
from methods.errors import NstError


class ParetoError(NstError):
    """No point to choose from, or an unknown selection rule."""


def directions_for(objectives: Sequence[str]) -> list[str]:
    """Optuna's study directions for the scorer metrics ``objectives`` (each metric declares ``higher_is_better``)."""
    return ["maximize" if HIGHER_IS_BETTER[name] else "minimize" for name in objectives]


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """``a`` is at least as good as ``b`` in every objective and better in one."""
    sign = [1.0 if d == "minimize" else -1.0 for d in directions]
    a2, b2 = [s * x for s, x in zip(sign, a, strict=True)], [s * x for s, x in zip(sign, b, strict=True)]
    return all(x <= y for x, y in zip(a2, b2, strict=True)) and any(x < y for x, y in zip(a2, b2, strict=True))


def times_dominated(point: Sequence[float], others: Sequence[Sequence[float]], directions: Sequence[str]) -> int:
    """How many of ``others`` dominate ``point``."""
    return sum(1 for other in others if dominates(other, point, directions))


def normalised_front(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[list[float]]:
    """Min-max normalise each objective over ``points`` to [0, 1] with 0 = best (maximised objectives flipped)."""
    out = [list(map(float, p)) for p in points]
    for j, direction in enumerate(directions):
        column = [p[j] for p in out]
        lo, hi = min(column), max(column)
        for p in out:
            v = 0.0 if hi == lo else (p[j] - lo) / (hi - lo)
            p[j] = 1.0 - v if direction == "maximize" else v
    return out


def select(points: Sequence[Sequence[float]], directions: Sequence[str], rule: str, weight: float = 0.5) -> int:
    """Index of the operating point on a Pareto front (ties: the first).

    ``knee``: nearest (Euclidean) to the ideal point (0, 0) after :func:`normalised_front` — the balanced compromise.
    ``weighted``: minimum of ``weight * n1 + (1 - weight) * n2`` on the normalised objectives.
    """
    if not points:
        raise ParetoError("no finished trial on the Pareto front to choose from")
    norm = normalised_front(points, directions)
    if rule == "knee":
        scores = [math.hypot(*p) for p in norm]
    elif rule == "weighted":
        scores = [weight * p[0] + (1 - weight) * p[1] for p in norm]
    else:
        raise ParetoError(f"unknown selection rule {rule!r} (knee | weighted)")
    return min(range(len(scores)), key=lambda i: (scores[i], i))
