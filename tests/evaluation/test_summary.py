"""Two-way bootstrap, paired differences (p-values, Holm), the ★ rule and the compact DVC metrics
(evaluation.summary)."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest

from evaluation import summary as S


def frame(grids: dict[str, np.ndarray], metric: str = "m") -> pd.DataFrame:
    """per_pair rows for ``{method: contents x styles grid}``; NaN cells become rows with a NaN score."""
    rows = []
    for method, grid in grids.items():
        for i, j in np.ndindex(grid.shape):
            rows.append({"method": method, "content": f"c{i}.png", "style": f"s{j}.png", metric: float(grid[i, j])})
    return pd.DataFrame(rows)


def naive_two_way_means(grid: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Reference: the same draws as the implementation, then a plain double loop over the crossed product."""
    n_c, n_s = grid.shape
    rng = np.random.default_rng(seed)
    ci = rng.integers(0, n_c, size=(n_boot, n_c))
    si = rng.integers(0, n_s, size=(n_boot, n_s))
    out = np.empty(n_boot)
    for b in range(n_boot):
        cells = [grid[i, j] for i in ci[b] for j in si[b]]
        cells = [v for v in cells if not math.isnan(v)]
        out[b] = sum(cells) / len(cells) if cells else math.nan
    return out


# ------------------------------------------------------------------------------------------------ two-way bootstrap


@pytest.mark.parametrize("shape", [(3, 4), (5, 2), (1, 6), (6, 1)])
def test_two_way_matches_naive_double_loop(shape):
    grid = np.random.default_rng(1).normal(size=shape) * 3 + 1
    fast = S.two_way_bootstrap_means(grid, n_boot=300, seed=7)
    np.testing.assert_allclose(fast, naive_two_way_means(grid, 300, 7), rtol=1e-12, atol=1e-12)


def test_two_way_with_missing_cells_matches_naive_double_loop():
    grid = np.random.default_rng(2).normal(size=(4, 5))
    grid[0, 1] = grid[2, 3] = grid[3, 0] = grid[3, 4] = math.nan  # every row/column keeps a finite cell
    fast = S.two_way_bootstrap_means(grid, n_boot=500, seed=3)
    naive = naive_two_way_means(grid, 500, 3)
    np.testing.assert_allclose(fast, naive, rtol=1e-12, atol=1e-12)
    assert np.isfinite(fast).all()


def test_sparse_grid_gives_nan_replicates_that_the_ci_skips():
    grid = np.array([[1.0, math.nan], [math.nan, 3.0]])  # a replicate drawing c0,c0 and s1,s1 has no finite cell
    means = S.two_way_bootstrap_means(grid, n_boot=400, seed=0)
    np.testing.assert_allclose(means, naive_two_way_means(grid, 400, 0), rtol=1e-12)
    assert np.isnan(means).any()
    assert np.isfinite(means).any()
    low, high = S.two_way_bootstrap_ci(grid, n_boot=400, seed=0)
    assert 1.0 <= low <= high <= 3.0


def test_empty_contents_and_styles_are_dropped_before_resampling():
    grid = np.random.default_rng(4).normal(size=(3, 3))
    padded = np.full((4, 5), math.nan)
    padded[np.ix_([0, 1, 3], [0, 2, 4])] = grid
    np.testing.assert_array_equal(
        S.two_way_bootstrap_means(padded, n_boot=200, seed=5), S.two_way_bootstrap_means(grid, n_boot=200, seed=5)
    )
    assert all(math.isnan(v) for v in S.two_way_bootstrap_ci(np.full((2, 2), math.nan)))


def test_constant_grid_gives_a_point_interval():
    low, high = S.two_way_bootstrap_ci(np.full((5, 7), 2.5), n_boot=1000, seed=0)
    assert low == high == 2.5


def test_one_content_resamples_the_styles_only():
    row = np.array([[1.0, 4.0, 2.0, 8.0, 5.0]])
    rng = np.random.default_rng(11)
    rng.integers(0, 1, size=(600, 1))  # the content draw, whatever it consumes
    styles = rng.integers(0, 5, size=(600, 5))
    np.testing.assert_allclose(S.two_way_bootstrap_means(row, n_boot=600, seed=11), row[0][styles].mean(axis=1))


def test_seeded():
    grid = np.random.default_rng(0).normal(size=(4, 4))
    a = S.two_way_bootstrap_ci(grid, n_boot=500, seed=1)
    assert a == S.two_way_bootstrap_ci(grid, n_boot=500, seed=1)
    assert a != S.two_way_bootstrap_ci(grid, n_boot=500, seed=2)


def test_two_way_ci_is_wider_than_row_resampling_with_a_strong_content_effect():
    rng = np.random.default_rng(0)
    content_effect = np.array([0.0, 5.0, 10.0, 15.0])[:, None]
    grid = content_effect + rng.normal(0.0, 0.5, size=(4, 10))
    row_low, row_high = S.bootstrap_ci(grid.ravel().tolist(), n_boot=4000, seed=0)
    low, high = S.two_way_bootstrap_ci(grid, n_boot=4000, seed=0)
    assert low < grid.mean() < high
    assert high - low > 2.5 * (row_high - row_low)


def test_fast_enough_for_1e5_replicates():
    grid = np.random.default_rng(0).normal(size=(10, 10))
    grid[3, 4] = math.nan
    start = time.perf_counter()
    S.two_way_bootstrap_ci(grid, n_boot=100_000, seed=0)
    assert time.perf_counter() - start < 1.0


# ------------------------------------------------------------------------------------------------ summarize


def test_summarize_uses_the_two_way_bootstrap_and_keeps_its_shape():
    grid = np.arange(12.0).reshape(3, 4)
    grid[1, 2] = math.nan
    df = frame({"b": grid, "a": grid + 1})
    out = S.summarize(df, ["m"], n_boot=500, seed=3)
    assert list(out) == ["a", "b"]
    stats = out["b"]["m"]
    assert set(stats) == {"mean", "std", "ci_low", "ci_high", "n"}
    finite = grid[np.isfinite(grid)]
    assert stats["n"] == 11
    assert stats["mean"] == pytest.approx(finite.mean())
    assert stats["std"] == pytest.approx(finite.std(ddof=1))
    assert (stats["ci_low"], stats["ci_high"]) == S.two_way_bootstrap_ci(grid, n_boot=500, seed=3)


def test_summarize_without_content_style_columns_resamples_rows():
    df = pd.DataFrame({"method": ["a", "a", "a", "b", "b"], "m": [1.0, 2.0, 3.0, math.nan, math.nan]})
    out = S.summarize(df, ["m"], n_boot=200)
    assert out["a"]["m"]["mean"] == 2.0
    assert 1.0 <= out["a"]["m"]["ci_low"] < 2.0 < out["a"]["m"]["ci_high"] <= 3.0
    assert out["b"]["m"] == {"mean": None, "std": None, "ci_low": None, "ci_high": None, "n": 0}


def test_duplicate_cells_are_an_error():
    df = pd.DataFrame({"method": ["a", "a"], "content": ["c", "c"], "style": ["s", "s"], "m": [1.0, 2.0]})
    with pytest.raises(ValueError, match="more than once"):
        S.summarize(df, ["m"])


# ------------------------------------------------------------------------------------------------ paired differences


def test_paired_difference_by_hand_on_2x2():
    a = np.array([[3.0, 5.0], [4.0, math.nan]])
    b = np.array([[1.0, 2.0], [4.0, 0.0]])
    diffs = S.paired_differences(frame({"A": a, "B": b}), ["m"], n_boot=2000, seed=0)
    assert list(diffs.columns) == list(S.DIFF_COLUMNS)
    (row,) = diffs.to_dict("records")
    # shared cells: (c0,s0) 2, (c0,s1) 3, (c1,s0) 0 -> mean 5/3; (c1,s1) is missing for A and left out.
    assert (row["metric"], row["method_a"], row["method_b"], row["n"]) == ("m", "A", "B", 3)
    assert row["mean_diff"] == pytest.approx(5 / 3)
    # Every replicate averages some of {2, 3, 0} (content 0 gives 2, 3; content 1 gives 0 only at style 0).
    d = np.array([[2.0, 3.0], [0.0, math.nan]])
    assert (row["ci_low"], row["ci_high"]) == S.two_way_bootstrap_ci(d, n_boot=2000, seed=0)
    assert 0.0 <= row["ci_low"] < 5 / 3 < row["ci_high"] <= 3.0
    assert row["excludes_zero"] is (row["ci_low"] > 0)
    assert (row["contents"], row["styles"]) == (2, 2)
    reps = S.two_way_bootstrap_means(d, n_boot=2000, seed=0)
    assert row["p_value"] == max(S.bootstrap_p_value(reps), S.cluster_t_p_value(5 / 3, reps, df=1))
    assert row["p_holm"] == row["p_value"]  # one pair: Holm changes nothing
    assert row["significant"] is False  # 2 contents x 2 styles: below the minimum grid, whatever the test says


def test_paired_ci_is_narrower_than_the_unpaired_one_when_methods_share_the_content_effect():
    rng = np.random.default_rng(0)
    shared = np.array([0.0, 10.0, 20.0, 30.0])[:, None] + rng.normal(0, 1, size=(4, 5))
    a, b = shared + 1.0 + rng.normal(0, 0.1, size=(4, 5)), shared
    (row,) = S.paired_differences(frame({"a": a, "b": b}), ["m"], n_boot=2000).to_dict("records")
    assert row["excludes_zero"]
    assert row["ci_low"] > 0.5
    low_a, high_a = S.two_way_bootstrap_ci(a, n_boot=2000)
    assert low_a < b.mean() < high_a  # the unpaired CIs overlap completely


def test_paired_difference_without_shared_cells():
    a = np.array([[1.0, math.nan]])
    b = np.array([[math.nan, 2.0]])
    (row,) = S.paired_differences(frame({"a": a, "b": b}), ["m"], n_boot=100).to_dict("records")
    assert row["n"] == 0
    assert math.isnan(row["mean_diff"])
    assert math.isnan(row["ci_low"])
    assert row["excludes_zero"] is False
    assert (row["contents"], row["styles"]) == (0, 0)
    assert math.isnan(row["p_value"])
    assert math.isnan(row["p_holm"])
    assert row["significant"] is False


# ------------------------------------------------------------------------------------------------ tests, Holm


def test_bootstrap_p_value_by_hand():
    # 1 of 4 replicates <= 0, 3 >= 0: p = 2 * (1 + 1) / (4 + 1)
    assert S.bootstrap_p_value(np.array([1.0, 2.0, -1.0, 3.0])) == pytest.approx(0.8)
    # none <= 0: the +1 keeps p above 0 -- 2 * 1 / (3 + 1)
    assert S.bootstrap_p_value(np.array([1.0, 2.0, 3.0, math.nan])) == pytest.approx(0.5)
    assert S.bootstrap_p_value(np.zeros(10)) == 1.0  # capped at 1
    assert S.bootstrap_p_value(-np.arange(1.0, 2000.0)) == pytest.approx(2 / 2000)
    assert math.isnan(S.bootstrap_p_value(np.array([math.nan])))


def test_cluster_t_p_value_by_hand():
    reps = np.array([0.0, 2.0, math.nan])  # sd (ddof 1) sqrt(2): t = 1 / sqrt(2) for an estimate of 1
    t = 1 / math.sqrt(2)
    # closed forms: t with 1 df is Cauchy, p = 1 - 2 atan|t| / pi; with 2 df, p = 1 - |t| / sqrt(2 + t^2)
    assert S.cluster_t_p_value(1.0, reps, df=1) == pytest.approx(1 - 2 * math.atan(t) / math.pi, rel=1e-12)
    assert S.cluster_t_p_value(-1.0, reps, df=2) == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-12)
    assert S.cluster_t_p_value(1.0, reps, df=0) == 1.0  # one content or style: no test
    assert S.cluster_t_p_value(0.5, np.full(5, 0.5), df=3) == 0.0  # no spread, nonzero estimate
    assert S.cluster_t_p_value(0.0, np.zeros(5), df=3) == 1.0
    assert math.isnan(S.cluster_t_p_value(1.0, np.array([1.0]), df=3))


def test_holm_by_hand():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> max(0.06, 0.04) = 0.06
    np.testing.assert_allclose(S.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    # NaN is no test: m = 2; and the adjusted values are capped at 1
    np.testing.assert_allclose(S.holm([0.01, math.nan, 0.04]), [0.02, math.nan, 0.04])
    # 0.3 x 3 = 0.9; 0.6 x 2 = 1.2 -> 1; 0.9 x 1, but never below the step before -> 1
    np.testing.assert_allclose(S.holm([0.6, 0.3, 0.9]), [1.0, 0.9, 1.0])
    assert S.holm([]).size == 0


@pytest.mark.parametrize("seed", range(6))
def test_p_value_below_alpha_means_the_percentile_ci_excludes_zero(seed):
    """p < 0.05 puts at most 2.5 % of the replicates on the far side of 0, so the 95 % percentile CI excludes 0; the
    converse holds up to the +1: an interval that excludes 0 has p < 0.05 + 4 / (B + 1)."""
    rng = np.random.default_rng(seed)
    grid = rng.normal(0.6 * seed / 5, 1.0, size=(6, 5))
    reps = S.two_way_bootstrap_means(grid, n_boot=2000, seed=seed)
    low, high = S.two_way_bootstrap_ci(grid, n_boot=2000, seed=seed)
    p = S.bootstrap_p_value(reps)
    excludes = low > 0 or high < 0
    assert excludes if p < 0.05 else p < 0.05 + 4 / 2001 or not excludes


def four_methods(gaps: dict[str, float], n_c: int = 5, n_s: int = 5, seed: int = 0) -> pd.DataFrame:
    """Methods that differ from a shared base (strong content effect) by ``gaps``, plus independent noise."""
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 5, n_c)[:, None] + rng.normal(0, 1, size=(n_c, n_s))
    return frame({m: base + gap + rng.normal(0, 0.3, size=(n_c, n_s)) for m, gap in gaps.items()})


def test_p_holm_is_holm_over_the_competing_pairs_of_each_metric():
    df = four_methods({"a": 0.3, "b": 0.0, "c": 0.1, "identity": 5.0})
    df["m2"] = df["m"] * 2
    diffs = S.paired_differences(df, ["m", "m2"], n_boot=1000)
    assert len(diffs) == 2 * 6
    for _, part in diffs.groupby("metric"):
        refs = part["method_a"].eq("identity") | part["method_b"].eq("identity")
        assert part.loc[refs, "p_holm"].isna().all()  # reference rows never compete: outside the family
        assert not part.loc[refs, "significant"].any()
        np.testing.assert_allclose(part.loc[~refs, "p_holm"], S.holm(part.loc[~refs, "p_value"].to_numpy()))
        expected = (part["p_holm"] < 0.05) & (part["contents"] >= 5) & (part["styles"] >= 5)
        assert part["significant"].tolist() == expected.tolist()


def test_holm_removes_a_mark_that_the_unadjusted_test_would_make():
    """Among 4 methods (6 pairs), some pair's unadjusted p is below 0.05 (so its CI excludes 0) while its
    Holm-adjusted p is not: the old rule marked it, the new one does not."""
    found = []
    for seed in range(40):
        diffs = S.paired_differences(
            four_methods({"a": 0.3, "b": 0.0, "c": 0.0, "d": 0.0}, seed=seed), ["m"], n_boot=1000
        )
        found += [r for r in diffs.to_dict("records") if r["p_value"] < 0.05 <= r["p_holm"]]
    assert found
    assert all(r["excludes_zero"] for r in found)
    assert not any(r["significant"] for r in found)


# ------------------------------------------------------------------------------------------------ ranking


def three_methods(gap: float, n_c: int = 5, n_s: int = 5, seed: int = 0) -> pd.DataFrame:
    """a beats b by ``gap``, b beats c by ``gap`` (higher values), plus a strong shared content effect."""
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 5, n_c)[:, None] + rng.normal(0, 1, size=(n_c, n_s))
    noise = lambda: rng.normal(0, 0.2, size=(n_c, n_s))  # noqa: E731
    grids = {"a": base + 2 * gap + noise(), "b": base + gap + noise(), "c": base + noise()}
    # references: style_copy far better than everything, identity far worse
    grids["style_copy"], grids["identity"] = base + 100, base - 100
    return frame(grids)


def test_clear_winner_gets_the_star():
    df = three_methods(gap=2.0)
    out = S.rank_methods(df, {"m": True}, n_boot=1000)
    assert out == {"m": {"best": "a", "status": "ranked"}}


def test_direction_is_respected():
    out = S.rank_methods(three_methods(gap=2.0), {"m": False}, n_boot=1000)
    assert out == {"m": {"best": "c", "status": "ranked"}}


def test_references_are_never_competitors():
    df = three_methods(gap=2.0)
    assert S.rank_methods(df, {"m": True}, references=("identity",), n_boot=500)["m"]["best"] == "style_copy"
    assert S.rank_methods(df, {"m": True}, n_boot=500)["m"]["best"] == "a"  # default references
    assert S.rank_methods(df, {"m": False}, n_boot=500)["m"]["best"] == "c"


def test_overlapping_methods_have_no_clear_best():
    out = S.rank_methods(three_methods(gap=0.0), {"m": True}, n_boot=1000)
    assert out == {"m": {"best": None, "status": "no clear best"}}


def test_a_tie_at_the_top_has_no_clear_best():
    df = three_methods(gap=2.0)
    tie = df[df["method"] == "a"].assign(method="a2")
    tie["m"] += np.random.default_rng(9).normal(0, 0.01, size=len(tie))
    out = S.rank_methods(pd.concat([df, tie]), {"m": True}, n_boot=1000)
    assert out == {"m": {"best": None, "status": "no clear best"}}


def test_a_small_grid_is_too_few_to_rank_even_with_a_huge_gap():
    df = three_methods(gap=50.0, n_c=2, n_s=2)
    assert S.rank_methods(df, {"m": True}, n_boot=500) == {"m": {"best": None, "status": "too few pairs to rank"}}
    # ...and min_contents / min_styles are the threshold: 2 x 2 is enough when allowed
    assert S.rank_methods(df, {"m": True}, n_boot=500, min_contents=2, min_styles=2)["m"]["status"] == "ranked"


@pytest.mark.parametrize(("n_c", "n_s"), [(1, 30), (30, 1), (4, 10), (10, 4)])
def test_cells_do_not_count_contents_and_styles_do(n_c, n_s):
    """30 or 40 cells, a huge gap, but fewer than 5 contents or 5 styles: no ★ and no "≠ 0"."""
    df = three_methods(gap=50.0, n_c=n_c, n_s=n_s)
    assert S.rank_methods(df, {"m": True}, n_boot=500)["m"] == {"best": None, "status": "too few pairs to rank"}
    diffs = S.paired_differences(df, ["m"], n_boot=500)
    assert not diffs["significant"].any()
    assert diffs["excludes_zero"].any()  # the test alone would have marked them


def test_missing_cells_count_against_the_minimum_grid():
    df = three_methods(gap=2.0)  # 5 x 5
    assert S.rank_methods(df, {"m": True}, n_boot=500)["m"]["status"] == "ranked"
    # b loses every cell of one content: b's pairs now share 4 contents (c keeps all of its own)
    df.loc[(df["method"] == "b") & (df["content"] == "c0.png"), "m"] = math.nan
    assert S.rank_methods(df, {"m": True}, n_boot=500)["m"] == {"best": None, "status": "too few pairs to rank"}
    diffs = S.paired_differences(df, ["m"], n_boot=500)
    b_pairs = diffs[(diffs["method_a"] == "b") | (diffs["method_b"] == "b")]
    assert set(b_pairs["contents"]) == {4}
    assert not b_pairs["significant"].any()
    # a scattered missing cell leaves every content and style shared: still ranked
    df = three_methods(gap=2.0)
    df.loc[(df["method"] == "b") & (df["content"] == "c0.png") & (df["style"] == "s0.png"), "m"] = math.nan
    assert S.rank_methods(df, {"m": True}, n_boot=500)["m"]["status"] == "ranked"


def test_star_exactly_where_the_paired_table_marks_every_comparison_of_that_method():
    statuses = set()
    for seed in range(12):
        gap = 0.15 * (seed % 4)
        df = four_methods({"a": 3 * gap, "b": 2 * gap, "c": gap, "d": 0.0}, seed=seed)
        diffs = S.paired_differences(df, ["m"], n_boot=1000)
        ranking = S.rank_methods(df, {"m": True}, differences=diffs)["m"]
        winners = []
        for a in "abcd":
            mine = diffs[(diffs["method_a"] == a) | (diffs["method_b"] == a)]
            won = [r["significant"] and (r["mean_diff"] > 0) == (r["method_a"] == a) for r in mine.to_dict("records")]
            winners += [a] if all(won) else []
        assert ranking["best"] == (winners[0] if winners else None)
        assert ranking == S.rank_methods(df, {"m": True}, n_boot=1000)["m"]
        statuses.add(ranking["status"])
    assert statuses == {"ranked", "no clear best"}  # both outcomes were exercised


def test_methods_without_values_do_not_compete_and_one_competitor_is_nothing_to_compare():
    df = three_methods(gap=2.0)
    df.loc[df["method"] == "a", "m"] = math.nan
    assert S.rank_methods(df, {"m": True}, n_boot=500)["m"] == {"best": "b", "status": "ranked"}
    only_b = df[df["method"].isin(["b", "identity", "style_copy"])]
    assert S.rank_methods(only_b, {"m": True}, n_boot=500)["m"] == {"best": None, "status": "nothing to compare"}


def test_rank_accepts_precomputed_differences_and_several_metrics():
    df = three_methods(gap=2.0)
    df["m2"] = -df["m"]
    diffs = S.paired_differences(df, ["m", "m2"], n_boot=800)
    assert len(diffs) == 2 * 10  # 5 methods -> 10 pairs per metric, references included
    out = S.rank_methods(df, {"m": True, "m2": False}, differences=diffs)
    assert out == {"m": {"best": "a", "status": "ranked"}, "m2": {"best": "a", "status": "ranked"}}
    assert out == S.rank_methods(df, {"m": True, "m2": False}, n_boot=800)


# ------------------------------------------------------------------------------------------------ DVC metrics


def test_headline_metrics_are_compact_means():
    df = pd.DataFrame(
        {
            "method": ["a", "a", "b", "b"],
            "content": ["c0", "c1", "c0", "c1"],
            "style": ["s", "s", "s", "s"],
            "m": [1.0, 1.0 / 3.0, math.nan, math.nan],
            "big": [123456789.0, 123456789.0, 1e-9 / 3, 1e-9 / 3],
            "other": [1.0, 1.0, 1.0, 1.0],
        }
    )
    out = S.headline_metrics(df, ["m", "big"])
    assert out == {"a": {"m": 0.666667, "big": 123457000.0}, "b": {"m": None, "big": 3.33333e-10}}
