"""What people said about the outputs, and which automatic metric agrees with them (pure: numpy, scipy, pandas).

Input: the votes ``nst judge export`` writes (one row per vote: ``voter_id``, ``kind``, ``content``, ``style``,
``method_left``, ``method_right``, ``answer``; see pipeline/judging/storage.py's ``EXPORT_COLUMNS``) and, for the
agreement, the evaluate stage's ``per_pair.csv`` (``method``, ``content``, ``style``, one column per metric).

- :func:`bradley_terry`: strengths from a win matrix by Hunter's MM algorithm (Hunter 2004, "MM algorithms for
  generalized Bradley-Terry models", Ann. Statist. 32(1), eq. 3; Zermelo's 1929 iteration). "Can't tell" counts as
  half a win for each side (``ties="half"``, the default: a tie is a draw, scored as chess scores one; Davidson 1970,
  J. Am. Stat. Assoc. 65(329), models ties explicitly instead), or is left out (``ties="drop"``). The
  maximum-likelihood strengths exist only when every split of the methods into two groups has a win across it both
  ways (Hunter 2004, Assumption 1, after Ford 1957); ``pseudo_ties`` adds that many virtual ties to every compared
  pair, a shrinkage towards equal strengths that makes them exist on every bootstrap resample and is negligible
  once a pair has tens of votes.
- :func:`strengths`: those strengths per method with percentile bootstrap intervals over voters (voters resampled
  with replacement, seeded: a voter's votes are not independent of each other).
- :func:`deception_rates`: per method, the share of its outputs judged "a painting", with Wilson score intervals
  (Wilson 1927; scipy's ``binomtest(...).proportion_ci(method="wilson")``); the real paintings' row is the
  calibration (how often a painting is recognised as one).
- :func:`metric_agreement`: per metric, the share of decided preference votes (not "can't tell") where the metric,
  read in its direction (``higher_is_better``), prefers the output the voter chose; a metric tie or a missing value
  on either side is not a preference (counted in ``n`` as a disagreement; missing values are left out of ``n``).
  Wilson intervals; they treat votes as independent, which votes of one voter are not quite.
- :func:`rank_agreement`: Kendall's tau-b (``scipy.stats.kendalltau``) between people's Bradley-Terry strengths and
  each metric's per-method mean, signed so that larger is better for both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd
from scipy.sparse.csgraph import connected_components
from scipy.stats import binomtest, kendalltau

from methods.errors import NstError

PREFERENCE = "preference"
DECEPTION = "deception"
PAINTING = "painting"  # the method of a real painting in a deception vote
DECIDED = ("left", "right")
CONFIDENCE = 0.95  # the report's intervals are 95 % throughout (evaluation/summary.py)
BOOTSTRAP = 2000  # resamples, as params.yaml's evaluate.bootstrap
PSEUDO_TIES = 1.0  # virtual ties per compared pair in :func:`strengths` (see the module docstring)
MM_TOL = 1e-10  # stop when no log-strength moves more than this
MM_MAX_ITER = 100_000  # MM converges linearly; slow only for nearly separated data, which pseudo-ties prevent

Ties = Literal["half", "drop"]


def _require(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise NstError(f"{what} lacks the column(s) {', '.join(missing)}")


def preference_votes(votes: pd.DataFrame) -> pd.DataFrame:
    """The preference rows of an export, checked."""
    _require(votes, ("kind", "voter_id", "method_left", "method_right", "answer"), "the votes")
    pref = votes[votes["kind"] == PREFERENCE]
    bad = sorted(set(pref["answer"]) - {"left", "right", "tie"})
    if bad:
        raise NstError(f"preference answers must be left, right or tie; found {bad}")
    return pref


def win_matrix(votes: pd.DataFrame, methods: Sequence[str], ties: Ties = "half") -> np.ndarray:
    """(m, m) matrix: ``wins[i, j]`` = how often ``methods[i]`` was preferred to ``methods[j]`` (+ 1/2 per tie)."""
    index = {m: i for i, m in enumerate(methods)}
    wins = np.zeros((len(methods), len(methods)))
    for left, right, answer in zip(votes["method_left"], votes["method_right"], votes["answer"], strict=True):
        i, j = index[left], index[right]
        if answer == "left":
            wins[i, j] += 1
        elif answer == "right":
            wins[j, i] += 1
        elif ties == "half":
            wins[i, j] += 0.5
            wins[j, i] += 0.5
    return wins


def bradley_terry(
    wins: np.ndarray, pseudo_ties: float = 0.0, tol: float = MM_TOL, start: np.ndarray | None = None
) -> np.ndarray:
    """Log-strengths (mean 0) maximising the Bradley-Terry likelihood of ``wins`` (m, m), by MM (Hunter 2004 eq. 3):
    ``p_i <- W_i / sum_j n_ij / (p_i + p_j)``, ``W_i`` the wins of i, ``n_ij`` the comparisons of i and j.

    ``start``: log-strengths to start from (the bootstrap starts from the full data's). Raises NstError when the
    strengths do not exist (some group of methods never beats the rest)."""
    wins = np.asarray(wins, dtype=float)
    m = wins.shape[0]
    if wins.shape != (m, m) or m < 2:
        raise NstError(f"a win matrix is square with two methods at least; got shape {wins.shape}")
    compared = (wins + wins.T) > 0
    np.fill_diagonal(compared, False)
    wins = wins + pseudo_ties / 2 * compared
    np.fill_diagonal(wins, 0.0)
    n_strong, _ = connected_components(wins > 0, directed=True, connection="strong")
    if n_strong > 1:
        raise NstError(
            "the Bradley-Terry strengths do not exist: some methods never beat the others "
            "(more votes, or pseudo_ties > 0, make them exist)"
        )
    n = wins + wins.T
    total = wins.sum(axis=1)
    p = np.ones(m) if start is None else np.exp(np.asarray(start, dtype=float))
    for _ in range(MM_MAX_ITER):
        denom = (n / (p[:, None] + p[None, :])).sum(axis=1)
        new = total / denom
        new /= np.exp(np.log(new).mean())
        if np.max(np.abs(np.log(new) - np.log(p))) < tol:
            p = new
            break
        p = new
    else:
        raise NstError(f"Bradley-Terry MM did not converge in {MM_MAX_ITER} iterations")
    theta = np.log(p)
    return theta - theta.mean()


def strengths(
    votes: pd.DataFrame,
    methods: Sequence[str] | None = None,
    *,
    ties: Ties = "half",
    pseudo_ties: float = PSEUDO_TIES,
    bootstrap: int = BOOTSTRAP,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> pd.DataFrame:
    """Per method: Bradley-Terry log-strength (mean 0 over methods), its percentile bootstrap interval over voters,
    the votes it took part in and its wins (ties as ``ties``), sorted strongest first."""
    pref = preference_votes(votes)
    if pref.empty:
        raise NstError("no preference votes")
    methods = list(methods) if methods is not None else sorted(set(pref["method_left"]) | set(pref["method_right"]))
    theta = bradley_terry(win_matrix(pref, methods, ties), pseudo_ties)
    voters = sorted(set(pref["voter_id"]))
    per_voter = np.stack([win_matrix(pref[pref["voter_id"] == v], methods, ties) for v in voters])
    rng = np.random.default_rng(seed)
    draws = np.empty((bootstrap, len(methods)))
    for b in range(bootstrap):
        counts = np.bincount(rng.integers(0, len(voters), len(voters)), minlength=len(voters))
        draws[b] = bradley_terry(np.tensordot(counts, per_voter, axes=1), pseudo_ties, start=theta)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(draws, [alpha, 1 - alpha], axis=0) if bootstrap else (np.nan, np.nan)
    wins = win_matrix(pref, methods, ties)
    out = pd.DataFrame(
        {
            "method": methods,
            "strength": theta,
            "low": low,
            "high": high,
            "votes": [int(((pref["method_left"] == m) | (pref["method_right"] == m)).sum()) for m in methods],
            "wins": wins.sum(axis=1),
        }
    )
    return out.sort_values("strength", ascending=False, kind="stable").reset_index(drop=True)


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a proportion (scipy's); (nan, nan) for ``n == 0``."""
    if n == 0:
        return float("nan"), float("nan")
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def deception_rates(votes: pd.DataFrame, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Per method (and ``painting``, the real ones): images shown, judged "a painting", that share, Wilson interval.
    For a method that share is its deception rate; for ``painting`` it is how often a real painting is recognised."""
    _require(votes, ("kind", "method_left", "answer"), "the votes")
    dec = votes[votes["kind"] == DECEPTION]
    bad = sorted(set(dec["answer"]) - {"painting", "photo"})
    if bad:
        raise NstError(f"deception answers must be painting or photo; found {bad}")
    rows = []
    for method, group in dec.groupby("method_left", sort=True):
        n, k = len(group), int((group["answer"] == "painting").sum())
        low, high = wilson_interval(k, n, confidence)
        rows.append({"method": method, "n": n, "judged_painting": k, "rate": k / n, "low": low, "high": high})
    return pd.DataFrame(rows, columns=["method", "n", "judged_painting", "rate", "low", "high"])


def _metric_lookup(per_pair: pd.DataFrame) -> pd.DataFrame:
    _require(per_pair, ("method", "content", "style"), "per_pair")
    if per_pair.duplicated(["method", "content", "style"]).any():
        raise NstError("per_pair has more than one row for some (method, content, style)")
    return per_pair.set_index(["method", "content", "style"])


def metric_agreement(
    votes: pd.DataFrame,
    per_pair: pd.DataFrame,
    higher_is_better: Mapping[str, bool],
    confidence: float = CONFIDENCE,
) -> pd.DataFrame:
    """Per metric (those of ``higher_is_better`` that ``per_pair`` has): decided votes with both values present
    (``n``), votes where the metric prefers the chosen output (``agree``), the share and its Wilson interval."""
    pref = preference_votes(votes)
    _require(pref, ("content", "style"), "the votes")
    decided = pref[pref["answer"].isin(DECIDED)]
    table = _metric_lookup(per_pair)
    rows = []
    for metric, higher in higher_is_better.items():
        if metric not in table.columns:
            continue
        values = table[metric]
        left = values.reindex(list(zip(decided["method_left"], decided["content"], decided["style"], strict=True)))
        right = values.reindex(list(zip(decided["method_right"], decided["content"], decided["style"], strict=True)))
        left, right = left.to_numpy(dtype=float), right.to_numpy(dtype=float)
        ok = np.isfinite(left) & np.isfinite(right)
        sign = 1.0 if higher else -1.0
        prefers_left = sign * (left - right) > 0
        prefers_right = sign * (right - left) > 0
        chose_left = (decided["answer"] == "left").to_numpy()
        agree = np.where(chose_left, prefers_left, prefers_right) & ok
        n, k = int(ok.sum()), int(agree.sum())
        low, high = wilson_interval(k, n, confidence)
        share = k / n if n else float("nan")
        rows.append(
            {"metric": metric, "higher_is_better": higher, "n": n, "agree": k, "share": share, "low": low, "high": high}
        )
    return pd.DataFrame(rows, columns=["metric", "higher_is_better", "n", "agree", "share", "low", "high"])


def rank_agreement(people: pd.DataFrame, per_pair: pd.DataFrame, higher_is_better: Mapping[str, bool]) -> pd.DataFrame:
    """Per metric: Kendall's tau-b between people's strengths (``people``: :func:`strengths`' frame) and the
    metric's per-method mean over ``per_pair`` (negated where lower is better), over the methods both have."""
    _require(per_pair, ("method",), "per_pair")
    strength = people.set_index("method")["strength"]
    rows = []
    for metric, higher in higher_is_better.items():
        if metric not in per_pair.columns:
            continue
        means = per_pair.groupby("method")[metric].mean() * (1.0 if higher else -1.0)
        both = [m for m in strength.index if m in means.index and np.isfinite(means[m])]
        if len(both) < 2:
            tau = p = float("nan")
        else:
            result = kendalltau(strength[both].to_numpy(), means[both].to_numpy())
            tau, p = float(result.statistic), float(result.pvalue)
        rows.append({"metric": metric, "methods": len(both), "tau": tau, "p_value": p})
    return pd.DataFrame(rows, columns=["metric", "methods", "tau", "p_value"])
