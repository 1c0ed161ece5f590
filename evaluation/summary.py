"""Statistics over per-pair scores: two-way bootstrap CIs, paired method differences, a cautious ranking rule.

Every score belongs to one cell of a content x style grid, and both the contents and the styles are samples: a
benchmark on other photos or other paintings would give other numbers. Resampling the cells (rows of
``per_pair``) as if they were independent ignores that, and with a strong content effect (some photos are simply
harder) it gives intervals far too narrow: with 2 contents x 2 styles, about half a t-interval. So every interval
here is a *two-way* ("pigeonhole") bootstrap: each replicate draws the contents with replacement and, independently,
the styles with replacement, and averages the metric over the crossed product of the drawn contents and the drawn
styles (a content drawn twice counts twice) -- Owen, "The pigeonhole bootstrap", Ann. Appl. Stat. 1(2):386-411,
2007 (doi:10.1214/07-AOAS122). No bootstrap is exact for crossed random effects (McCullagh, "Resampling and
exchangeable arrays", Bernoulli 6:285-301, 2000); this one is mildly conservative (it slightly overestimates the
variance; Owen & Eckles, Ann. Appl. Stat. 6(3), 2012), which is the safe side for deciding a winner.

Missing cells (NaN scores) are left out: a replicate averages over the finite cells among its resampled ones, a
content or style without any finite cell is dropped before resampling, and a replicate with no finite cell at all
is left out of the percentiles.

Marks ("≠ 0" in the paired table, ★ in the comparison table) are tests, not intervals: a two-sided p-value per
method pair from the same two-way bootstrap replicates (the larger of :func:`bootstrap_p_value` and
:func:`cluster_t_p_value`), Holm-adjusted over the method pairs of each metric (:func:`holm`; Holm, "A simple
sequentially rejective multiple test procedure", Scand. J. Statist. 6:65-70, 1979), and only where the pair shares
at least ``min_contents`` distinct contents and ``min_styles`` distinct styles. Counting cells is not enough: 1
content x 8 styles has 8 cells but says nothing about other photos. bench/null_simulation.py and
tests/evaluation/test_null_simulation.py measure the rule's false-mark rate under no true difference.

Pure functions over a DataFrame ``per_pair`` with columns ``method``, ``content``, ``style`` and one column per
metric (pipeline/stages/evaluate.py writes it); no IO.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from evaluation.references import REFERENCE_ROWS

CONTENT, STYLE = "content", "style"
# The smallest grid on which a ★ or a "≠ 0" may be shown: this project's rule (issue 26), not a published threshold.
# Our null simulation supports it (bench/null_simulation.py -> bench/results/null_simulation.json: 4 methods, no
# true difference, 2,000 tables per grid): with it the rule marks at most 2 % of tables on 5 x 5 and 8 x 8, where the
# old rule (CIs, 8 cells, no correction) marked 2-33 %, and 1 x 8 and 2 x 4 get no mark. The simulation does not
# single out 5: without the minimum, the t-calibrated test alone marked 0 of 500 tables on 3 x 3 and 4 x 4. The
# minimum is a margin for effects the simulation does not model, and says what fewer photos or paintings can claim.
MIN_CONTENTS = 5
MIN_STYLES = 5
# Calibration rows (evaluation.references): never competitors, never starred.
REFERENCE_METHODS = REFERENCE_ROWS
RANKED, NO_CLEAR_BEST, TOO_FEW, NOTHING_TO_COMPARE = (
    "ranked",
    "no clear best",
    "too few pairs to rank",
    "nothing to compare",
)
DIFF_COLUMNS = (
    "metric",
    "method_a",
    "method_b",
    "mean_diff",
    "ci_low",
    "ci_high",
    "n",
    "contents",
    "styles",
    "excludes_zero",
    "p_value",
    "p_holm",
    "significant",
)

Summary = dict[str, dict[str, dict[str, float | int | None]]]


# ------------------------------------------------------------------------------------------------ bootstrap


def bootstrap_ci(
    values: Iterable[float], *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """One-way percentile bootstrap CI of the mean (Efron & Tibshirani 1993, ch. 13): resample values.

    Only right for independent values; per-pair scores on a content x style grid are not (use
    :func:`two_way_bootstrap_ci`). NaNs are dropped; one value gives (v, v); none gives (nan, nan).
    """
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if arr.size == 0:
        return math.nan, math.nan
    if arr.size == 1:
        return float(arr[0]), float(arr[0])
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, arr.size, size=(n_boot, arr.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def _drop_empty(grid: np.ndarray) -> np.ndarray:
    """The grid without contents (rows) or styles (columns) that have no finite cell."""
    finite = np.isfinite(grid)
    return grid[finite.any(axis=1)][:, finite.any(axis=0)]


def _counts(draws: np.ndarray, size: int) -> np.ndarray:
    """``(n_boot, size)`` multiplicities: how often each index was drawn in each replicate."""
    n_boot = draws.shape[0]
    flat = draws + size * np.arange(n_boot)[:, None]
    return np.bincount(flat.ravel(), minlength=n_boot * size).reshape(n_boot, size).astype(np.float64)


def two_way_bootstrap_means(grid: np.ndarray, *, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """``n_boot`` two-way bootstrap replicates of the mean of a contents x styles ``grid`` (NaN = missing cell).

    Contents and styles without any finite cell are dropped first; then, with ``rng = default_rng(seed)``, the
    draws are ``rng.integers(0, C, (n_boot, C))`` (contents) followed by ``rng.integers(0, S, (n_boot, S))``
    (styles). Replicate b is the mean of ``grid[i, j]`` over the finite cells of the crossed product of its drawn
    contents i and drawn styles j, duplicates counted with their multiplicity; NaN where none is finite. Computed
    as weighted sums with the draw counts (no loop): 10^5 replicates of a 10 x 10 grid take a few tens of ms.
    """
    return _two_way_means(grid, n_boot, seed, {})


_Draws = dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]


def _two_way_means(grid: np.ndarray, n_boot: int, seed: int, draws: _Draws) -> np.ndarray:
    """:func:`two_way_bootstrap_means`, reusing the draw counts in ``draws`` (keyed by the grid's shape after the
    empty contents and styles are dropped; the same seed gives the same draws for the same shape), so that the
    paired differences of one table draw once per shape, not once per method pair."""
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim != 2:
        raise ValueError(f"grid must be 2-D (contents x styles), got shape {grid.shape}")
    grid = _drop_empty(grid) if grid.size else grid
    if grid.size == 0:
        return np.full(n_boot, math.nan)
    n_c, n_s = grid.shape
    if (n_c, n_s) not in draws:
        rng = np.random.default_rng(seed)
        content_counts = _counts(rng.integers(0, n_c, size=(n_boot, n_c)), n_c)
        draws[(n_c, n_s)] = (content_counts, _counts(rng.integers(0, n_s, size=(n_boot, n_s)), n_s))
    content_counts, style_counts = draws[(n_c, n_s)]
    finite = np.isfinite(grid)
    values = np.where(finite, grid, 0.0)
    total = ((content_counts @ values) * style_counts).sum(axis=1)
    weight = ((content_counts @ finite.astype(np.float64)) * style_counts).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weight > 0, total / np.where(weight > 0, weight, 1.0), math.nan)


def _percentile_ci(means: np.ndarray, level: float) -> tuple[float, float]:
    means = means[np.isfinite(means)]
    if means.size == 0:
        return math.nan, math.nan
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def two_way_bootstrap_ci(
    grid: np.ndarray, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile CI at ``level`` of the mean of a contents x styles grid from :func:`two_way_bootstrap_means`.

    Replicates without a finite cell are left out; no finite cell at all gives (nan, nan).
    """
    return _percentile_ci(two_way_bootstrap_means(grid, n_boot=n_boot, seed=seed), level)


def bootstrap_p_value(replicates: np.ndarray) -> float:
    """Two-sided p-value of "the mean is 0" from bootstrap replicates of the mean (NaNs left out).

    ``p = min(1, 2 * min(1 + #{d* <= 0}, 1 + #{d* >= 0}) / (B + 1))`` over the B finite replicates ``d*``. It is the
    p-value that inverts the equal-tailed percentile interval (p < 1 - level implies that the interval at ``level``
    lies on one side of 0; the converse fails only within 4 / (B + 1) of the threshold, through the +1), with the
    +1 of a Monte Carlo p-value (Davison & Hinkley, "Bootstrap Methods and their Application", 1997, ch. 4; North,
    Curtis & Sham, Am. J. Hum. Genet. 71:439-441, 2002), so it is never 0: with B replicates the smallest p is
    2 / (B + 1), and a family of m pairs needs 2 m / (B + 1) < 1 - level before Holm can mark anything (m = 6,
    level 0.95: B >= 240). No finite replicate: NaN.
    """
    d = np.asarray(replicates, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return math.nan
    below, above = int((d <= 0).sum()), int((d >= 0).sum())
    return min(1.0, 2.0 * (1 + min(below, above)) / (d.size + 1))


def cluster_t_p_value(estimate: float, replicates: np.ndarray, df: int) -> float:
    """Two-sided p-value of "the mean is 0" from ``t = estimate / sd(replicates)`` against Student's t with ``df``
    degrees of freedom (NaN replicates left out).

    The two-way bootstrap's spread estimates the mean's standard error, but from few contents (or styles) that
    estimate is itself noisy, and treating it as exact, as percentiles do, is anti-conservative: with 5 contents and
    methods that suit different photos, our null simulation gave 11 % false marks at a nominal 5 % after Holm
    (bench/null_simulation.py). Cameron, Gelbach & Miller ("Robust inference with multiway clustering", J. Bus.
    Econ. Stat. 29(2):238-249, 2011) recommend t critical values with min(G1, G2) - 1 degrees of freedom for
    two-way clustered errors; :func:`paired_differences` passes ``df = min(contents, styles) - 1``. ``df < 1``:
    no test (1.0). A zero spread gives 1.0 for a zero estimate, else 0.0.
    """
    d = np.asarray(replicates, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size < 2 or not math.isfinite(estimate):
        return math.nan
    if df < 1:
        return 1.0
    se = float(d.std(ddof=1))
    if se == 0.0:
        return 1.0 if estimate == 0.0 else 0.0
    return float(2.0 * stats.t.sf(abs(estimate) / se, df))


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979) over the finite entries of ``p_values``; NaN stays NaN.

    With the m finite p-values sorted, p_(1) <= ... <= p_(m), the adjusted value of p_(i) is
    ``min(1, max_{j <= i} (m - j + 1) p_(j))``; rejecting where the adjusted value is below alpha controls the
    family-wise error rate at alpha under any dependence. (statsmodels' ``multipletests(method="holm")`` computes the
    same; statsmodels is not a dependency here and scipy has no Holm, hence these lines.)
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, math.nan)
    idx = np.flatnonzero(np.isfinite(p))
    if idx.size == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    m = order.size
    scaled = (m - np.arange(m)) * p[order]
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out


# ------------------------------------------------------------------------------------------------ grids


def _axes(per_pair: pd.DataFrame, content_col: str, style_col: str) -> tuple[pd.DataFrame, str, str]:
    """``per_pair`` with a content and a style column; without them each row is its own content (one style),
    so the two-way bootstrap reduces to resampling rows."""
    if content_col in per_pair.columns and style_col in per_pair.columns:
        return per_pair, content_col, style_col
    if content_col in per_pair.columns or style_col in per_pair.columns:
        raise ValueError(f"per_pair has only one of the columns {content_col!r}, {style_col!r}")
    df = per_pair.assign(_row=np.arange(len(per_pair)), _one=0)
    return df, "_row", "_one"


def metric_grid(
    rows: pd.DataFrame,
    metric: str,
    *,
    content_col: str = CONTENT,
    style_col: str = STYLE,
    contents: Sequence[Any] | None = None,
    styles: Sequence[Any] | None = None,
) -> np.ndarray:
    """One method's ``metric`` as a contents x styles array (NaN where missing), on the given axes if any.

    Raises ValueError when a (content, style) cell appears twice.
    """
    dup = rows.duplicated([content_col, style_col])
    if dup.any():
        first = rows.loc[dup, [content_col, style_col]].iloc[0].tolist()
        raise ValueError(f"{metric}: cell {first} appears more than once for one method")
    # pivot, not pivot_table: duplicates must not be aggregated silently (checked above)
    table = rows.pivot(index=content_col, columns=style_col, values=metric).astype(np.float64)  # noqa: PD010
    if contents is not None or styles is not None:
        table = table.reindex(index=contents, columns=styles)
    return table.to_numpy(dtype=np.float64)


def _finite(grid: np.ndarray) -> np.ndarray:
    return grid[np.isfinite(grid)]


def _clean(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


# ------------------------------------------------------------------------------------------------ summaries


def summarize(
    per_pair: pd.DataFrame,
    metrics: Iterable[str],
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    content_col: str = CONTENT,
    style_col: str = STYLE,
) -> Summary:
    """``{method: {metric: {mean, std, ci_low, ci_high, n}}}`` with two-way bootstrap CIs of the mean.

    mean, std (ddof 1) and n are over the finite cells; NaN scores are left out. Values that cannot be computed
    are None, so the JSON stays valid. Without content/style columns each row counts as its own content.
    """
    metrics = list(metrics)
    df, c_col, s_col = _axes(per_pair, content_col, style_col)
    out: Summary = {}
    for method, rows in df.groupby("method", sort=True):
        out[str(method)] = {}
        for metric in metrics:
            grid = metric_grid(rows, metric, content_col=c_col, style_col=s_col)
            finite = _finite(grid)
            low, high = two_way_bootstrap_ci(grid, n_boot=n_boot, level=level, seed=seed)
            out[str(method)][metric] = {
                "mean": _clean(float(finite.mean())) if finite.size else None,
                "std": _clean(float(finite.std(ddof=1))) if finite.size > 1 else None,
                "ci_low": _clean(low),
                "ci_high": _clean(high),
                "n": int(finite.size),
            }
    return out


def _method_grids(df: pd.DataFrame, metrics: Sequence[str], names: Sequence[str], axes: tuple[str, str]) -> np.ndarray:
    """``(metrics, methods, contents, styles)``: each method's scores on the shared, sorted axes (NaN where
    missing); rows of methods not in ``names`` are ignored. One scatter instead of a pivot per method and metric
    (the null simulation calls this thousands of times)."""
    contents, styles = (pd.Index(sorted(df[a].unique().tolist())) for a in axes)
    grids = np.full((len(metrics), len(names), len(contents), len(styles)), math.nan)
    m_idx = pd.Index(names).get_indexer(df["method"].astype(str))
    keep = m_idx >= 0
    at = (m_idx[keep], contents.get_indexer(df[axes[0]])[keep], styles.get_indexer(df[axes[1]])[keep])
    for k, metric in enumerate(metrics):
        grids[k][at] = df[metric].to_numpy(dtype=np.float64)[keep]
    return grids


def _difference_row(
    metric: str, a: str, b: str, diff: np.ndarray, n_boot: int, level: float, seed: int, draws: _Draws
) -> dict[str, Any]:
    """One row of the paired table for A - B (``diff``: contents x styles, NaN where either has no score), all of
    :data:`DIFF_COLUMNS` but ``p_holm`` and ``significant``."""
    finite = np.isfinite(diff)
    replicates = _two_way_means(diff, n_boot, seed, draws)
    low, high = _percentile_ci(replicates, level)
    mean = float(diff[finite].mean()) if finite.any() else math.nan
    n_c, n_s = int(finite.any(axis=1).sum()), int(finite.any(axis=0).sum())
    # the larger of two valid p-values is one: the t test guards few contents or styles, the percentile
    # one keeps every mark on a shown CI that excludes 0
    p_t = cluster_t_p_value(mean, replicates, min(n_c, n_s) - 1)
    return {
        "metric": metric,
        "method_a": a,
        "method_b": b,
        "mean_diff": mean,
        "ci_low": low,
        "ci_high": high,
        "n": int(finite.sum()),
        "contents": n_c,
        "styles": n_s,
        "excludes_zero": bool(low > 0 or high < 0),
        "p_value": max(bootstrap_p_value(replicates), p_t) if math.isfinite(p_t) else math.nan,
    }


def _mark_significant(
    rows: list[dict[str, Any]], family: np.ndarray, min_contents: int, min_styles: int, alpha: float
) -> None:
    """Add ``p_holm`` (Holm over the rows where ``family`` is True, NaN elsewhere) and ``significant`` to one
    metric's rows, in place."""
    p_holm = np.full(len(rows), math.nan)
    p_holm[family] = holm([r["p_value"] for r, f in zip(rows, family, strict=True) if f])
    for row, adjusted in zip(rows, p_holm, strict=True):
        big_enough = row["contents"] >= min_contents and row["styles"] >= min_styles
        row.update(p_holm=float(adjusted), significant=bool(big_enough and adjusted < alpha))


def paired_differences(
    per_pair: pd.DataFrame,
    metrics: Iterable[str],
    *,
    methods: Sequence[str] | None = None,
    references: Iterable[str] = REFERENCE_METHODS,
    min_contents: int = MIN_CONTENTS,
    min_styles: int = MIN_STYLES,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    content_col: str = CONTENT,
    style_col: str = STYLE,
) -> pd.DataFrame:
    """Paired comparison of every two methods: one row per metric and pair (method_a before method_b in
    ``methods``, default: all methods sorted).

    Columns :data:`DIFF_COLUMNS`: ``mean_diff`` is the mean over the cells both methods have of A - B; ``ci_low``,
    ``ci_high`` its two-way bootstrap CI -- each replicate resamples the contents and styles once and takes both
    methods on the same resampled cells, so it is a paired CI; ``n`` the number of shared cells, ``contents`` and
    ``styles`` the distinct contents and styles among them; ``excludes_zero`` whether the CI lies strictly on one
    side of 0 (unadjusted: information, never a mark). ``p_value`` is the larger of :func:`bootstrap_p_value` and
    :func:`cluster_t_p_value` (``df = min(contents, styles) - 1``) of the same replicates; ``p_holm`` its
    :func:`holm` adjustment over the pairs of that metric between methods not in ``references`` (the reference rows
    never compete: their pairs get no ``p_holm``); ``significant`` -- the "≠ 0" mark -- is ``p_holm < 1 - level``
    with at least ``min_contents`` contents and ``min_styles`` styles shared. No shared cell: NaN values, n 0,
    excludes_zero and significant False.
    """
    metrics = list(metrics)
    refs = {str(r) for r in references}
    df, c_col, s_col = _axes(per_pair, content_col, style_col)
    names = sorted(str(m) for m in df["method"].unique()) if methods is None else [str(m) for m in methods]
    dup = df.duplicated(["method", c_col, s_col])
    if dup.any():
        first = df.loc[dup, [c_col, s_col]].iloc[0].tolist()
        raise ValueError(f"{', '.join(metrics)}: cell {first} appears more than once for one method")
    pairs = list(combinations(range(len(names)), 2))
    family = np.array([names[i] not in refs and names[j] not in refs for i, j in pairs], dtype=bool)
    alpha = 1.0 - level
    records = []
    draws: _Draws = {}
    for metric, grids in zip(metrics, _method_grids(df, metrics, names, (c_col, s_col)), strict=True):
        rows = [
            _difference_row(metric, names[i], names[j], grids[i] - grids[j], n_boot, level, seed, draws)
            for i, j in pairs
        ]
        _mark_significant(rows, family, min_contents, min_styles, alpha)
        records += rows
    return pd.DataFrame.from_records(records, columns=list(DIFF_COLUMNS))


def _pair_tests(differences: pd.DataFrame, metric: str) -> dict[tuple[str, str], tuple[float, float, int, int]]:
    """From the paired table's rows of ``metric``: (a, b) -> (mean of a - b, raw p, shared contents, shared
    styles), both orientations."""
    tests: dict[tuple[str, str], tuple[float, float, int, int]] = {}
    part = differences[differences["metric"] == metric]
    columns = ("method_a", "method_b", "mean_diff", "p_value", "contents", "styles")
    for a, b, diff, p, n_c, n_s in zip(*(part[c].tolist() for c in columns), strict=True):
        tests[(str(a), str(b))] = (float(diff), float(p), int(n_c), int(n_s))
        tests[(str(b), str(a))] = (-float(diff), float(p), int(n_c), int(n_s))
    return tests


def _rank_competitors(
    metric: str,
    competitors: list[str],
    tests: dict[tuple[str, str], tuple[float, float, int, int]],
    higher_is_better: bool,
    min_contents: int,
    min_styles: int,
    level: float,
) -> dict[str, str | None]:
    """``metric``'s ranking entry among two or more ``competitors`` (:func:`rank_methods` states the rule) from
    their pairs' ``tests`` (:func:`_pair_tests`); raises ValueError when a pair is missing from them."""
    pairs = list(combinations(competitors, 2))
    missing = [p for p in pairs if p not in tests]
    if missing:
        raise ValueError(f"{metric}: differences table lacks the pair {missing[0]}")
    if any(tests[p][2] < min_contents or tests[p][3] < min_styles for p in pairs):
        return {"best": None, "status": TOO_FEW}
    adjusted = dict(zip(pairs, holm([tests[p][1] for p in pairs]), strict=True))
    adjusted.update({(b, a): v for (a, b), v in list(adjusted.items())})
    sign = 1.0 if higher_is_better else -1.0
    beats = {p: bool(adjusted[p] < 1.0 - level and sign * tests[p][0] > 0) for p in adjusted}
    best = [a for a in competitors if all(beats[(a, b)] for b in competitors if b != a)]
    return {"best": best[0], "status": RANKED} if best else {"best": None, "status": NO_CLEAR_BEST}


def rank_methods(
    per_pair: pd.DataFrame,
    higher_is_better: Mapping[str, bool],
    *,
    references: Iterable[str] = REFERENCE_METHODS,
    min_contents: int = MIN_CONTENTS,
    min_styles: int = MIN_STYLES,
    differences: pd.DataFrame | None = None,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    content_col: str = CONTENT,
    style_col: str = STYLE,
) -> dict[str, dict[str, str | None]]:
    """Per metric of ``higher_is_better``: ``{"best": method or None, "status": ...}`` -- who deserves the ★.

    Competitors are the methods not in ``references`` that have at least one finite score for the metric. If any
    two competitors share fewer than ``min_contents`` distinct contents or ``min_styles`` distinct styles: "too few
    pairs to rank" and no best; fewer than two competitors: "nothing to compare" and no best. Otherwise a method is
    best ("ranked") only if it beats every other competitor: the paired difference's p-value
    (:func:`paired_differences`), Holm-adjusted over the competitor pairs of the metric -- the paired table's
    correction and family -- is below ``1 - level`` and the mean difference lies on its side (above 0 where higher is
    better). So a ★ is shown exactly where the paired table marks all of the method's comparisons "≠ 0" in its
    favour. Else "no clear best". ``differences`` may be a precomputed :func:`paired_differences` table (it must
    cover the competitors); otherwise it is computed.
    """
    refs = {str(r) for r in references}
    metrics = list(higher_is_better)
    if differences is None:
        candidates = sorted(str(m) for m in per_pair["method"].unique() if str(m) not in refs)
        differences = paired_differences(
            per_pair[per_pair["method"].astype(str).isin(candidates)],
            metrics,
            methods=candidates,
            references=refs,
            min_contents=min_contents,
            min_styles=min_styles,
            n_boot=n_boot,
            level=level,
            seed=seed,
            content_col=content_col,
            style_col=style_col,
        )
    out: dict[str, dict[str, str | None]] = {}
    methods = per_pair["method"].astype(str)
    for metric in metrics:
        finite = np.isfinite(per_pair[metric].to_numpy(dtype=np.float64))
        competitors = sorted(set(methods[finite]) - refs)
        if len(competitors) < 2:
            out[metric] = {"best": None, "status": NOTHING_TO_COMPARE}
            continue
        tests = _pair_tests(differences, metric)
        out[metric] = _rank_competitors(
            metric, competitors, tests, higher_is_better[metric], min_contents, min_styles, level
        )
    return out


def _round_sig(x: float, digits: int) -> float:
    return float(f"{x:.{digits}g}")


def headline_metrics(
    per_pair: pd.DataFrame, metrics: Iterable[str], *, digits: int = 6
) -> dict[str, dict[str, float | None]]:
    """Compact DVC metrics: ``{method: {metric: mean}}`` over the finite scores, ``digits`` significant digits,
    None where a method has no finite score (valid JSON), so ``dvc metrics show`` fits a screen."""
    metrics = list(metrics)
    out: dict[str, dict[str, float | None]] = {}
    for method, rows in per_pair.groupby("method", sort=True):
        out[str(method)] = {}
        for metric in metrics:
            finite = rows[metric].astype(float).to_numpy()
            finite = finite[np.isfinite(finite)]
            out[str(method)][metric] = _round_sig(float(finite.mean()), digits) if finite.size else None
    return out
