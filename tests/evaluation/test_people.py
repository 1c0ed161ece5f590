"""evaluation/people.py against values worked by hand, a naive maximum-likelihood Bradley-Terry fit and simulated
voters with a known order."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize

from evaluation import people
from methods.errors import NstError

pytestmark = pytest.mark.timeout(60)


def _votes(rows: list[tuple]) -> pd.DataFrame:
    """Preference rows (voter, left, right, answer[, content, style])."""
    out = []
    for r in rows:
        voter, left, right, answer, *pair = r
        content, style = pair or ("c.png", "s.png")
        out.append(
            {
                "voter_id": voter,
                "kind": "preference",
                "method_left": left,
                "method_right": right,
                "answer": answer,
                "content": content,
                "style": style,
            }
        )
    return pd.DataFrame(out)


def _naive_bt(wins: np.ndarray) -> np.ndarray:
    """Maximum likelihood by a general-purpose optimiser: minimise -sum w_ij log sigmoid(t_i - t_j), t_0 fixed at 0."""
    m = wins.shape[0]

    def nll(free: np.ndarray) -> float:
        t = np.concatenate([[0.0], free])
        diff = t[:, None] - t[None, :]
        return float(np.sum(wins * np.logaddexp(0.0, -diff)))

    res = minimize(nll, np.zeros(m - 1), method="BFGS", options={"gtol": 1e-10})
    t = np.concatenate([[0.0], res.x])
    return t - t.mean()


def test_two_methods_by_hand():
    # 3 wins to 1: p_a / p_b = 3, so log-strengths +-log(3)/2 around their mean 0
    theta = people.bradley_terry(np.array([[0.0, 3.0], [1.0, 0.0]]))
    assert theta == pytest.approx([math.log(3) / 2, -math.log(3) / 2], abs=1e-9)


def test_mm_equals_a_naive_maximum_likelihood_fit():
    wins = np.array([[0, 7, 3, 5], [4, 0, 6, 2], [2, 3, 0, 8], [1, 5, 2, 0]], dtype=float)
    assert people.bradley_terry(wins) == pytest.approx(_naive_bt(wins), abs=1e-5)
    # pseudo-ties: the same as the naive fit on the table with half a win added each way per compared pair
    compared = (wins + wins.T > 0) & ~np.eye(4, dtype=bool)
    assert people.bradley_terry(wins, pseudo_ties=1.0) == pytest.approx(_naive_bt(wins + 0.5 * compared), abs=1e-5)


def test_ties_count_half_a_win_or_are_dropped():
    votes = _votes(
        [("v1", "a", "b", "left"), ("v1", "a", "b", "tie"), ("v2", "b", "a", "tie"), ("v2", "a", "b", "right")]
    )
    assert people.win_matrix(votes, ["a", "b"], "half").tolist() == [[0, 2.0], [2.0, 0]]
    assert people.win_matrix(votes, ["a", "b"], "drop").tolist() == [[0, 1.0], [1.0, 0]]


def test_strengths_do_not_exist_when_a_method_never_wins():
    with pytest.raises(NstError, match="do not exist"):
        people.bradley_terry(np.array([[0.0, 4.0], [0.0, 0.0]]))
    theta = people.bradley_terry(np.array([[0.0, 4.0], [0.0, 0.0]]), pseudo_ties=1.0)  # 4.5 : 0.5
    assert theta[0] - theta[1] == pytest.approx(math.log(9))


def test_bt_recovers_a_known_order_from_simulated_voters():
    truth = {"ghiasi": 1.0, "adain": 0.4, "gatys": -0.3, "contrastive": -1.1}
    methods = list(truth)
    rng = np.random.default_rng(7)
    rows = []
    for v in range(40):
        for _ in range(15):
            a, b = rng.choice(4, size=2, replace=False)
            ta, tb = truth[methods[a]], truth[methods[b]]
            p_left = 1 / (1 + math.exp(tb - ta))
            rows.append((f"v{v}", methods[a], methods[b], "left" if rng.random() < p_left else "right"))
    result = people.strengths(_votes(rows), bootstrap=300, seed=1)
    assert list(result["method"]) == methods  # strongest first = the true order
    true = np.array([truth[m] for m in result["method"]])
    true -= true.mean()
    # 600 votes: each log-strength within 0.25 of the truth (its bootstrap interval is about +-0.2 wide), and inside
    # its own interval
    assert np.max(np.abs(result["strength"] - true)) < 0.25
    assert np.all((result["low"] < result["strength"]) & (result["strength"] < result["high"]))
    again = people.strengths(_votes(rows), bootstrap=300, seed=1)
    pd.testing.assert_frame_equal(result, again)  # seeded
    assert result["votes"].sum() == 2 * len(rows)


def test_wilson_interval_by_hand():
    # 8 of 10, z = 1.959964: centre (0.8 + z^2/20) / (1 + z^2/10) = 0.716740,
    # half-width z / (1 + z^2/10) * sqrt(0.8 * 0.2 / 10 + z^2 / 400) = 0.226578
    low, high = people.wilson_interval(8, 10)
    assert (low, high) == pytest.approx((0.490162, 0.943318), abs=1e-5)
    assert people.wilson_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-12)
    assert all(math.isnan(x) for x in people.wilson_interval(0, 0))


def test_deception_rates_by_hand():
    answers = {
        "adain": ["painting", "photo", "photo", "photo"],  # fooled 1 of 4
        "gatys": ["painting", "painting", "photo"],  # 2 of 3
        "painting": ["painting"] * 4 + ["photo"],  # real paintings recognised 4 of 5
    }
    votes = pd.DataFrame(
        [{"kind": "deception", "method_left": m, "answer": a} for m, ans in answers.items() for a in ans]
        + [{"kind": "preference", "method_left": "adain", "answer": "left"}]  # ignored
    )
    rates = people.deception_rates(votes).set_index("method")
    assert rates.loc["adain", ["n", "judged_painting"]].tolist() == [4, 1]
    assert rates.loc["adain", "rate"] == pytest.approx(0.25)
    assert rates.loc["gatys", "rate"] == pytest.approx(2 / 3)
    assert rates.loc["painting", "rate"] == pytest.approx(0.8)
    # Wilson 1 of 4 by hand: centre (0.25 + z^2/8) / (1 + z^2/4) = 0.372473, half-width 0.326885
    assert (rates.loc["adain", "low"], rates.loc["adain", "high"]) == pytest.approx((0.045587, 0.699358), abs=1e-5)


def test_metric_agreement_by_hand():
    per_pair = pd.DataFrame(
        {
            "method": ["a", "b", "a", "b"],
            "content": ["c1", "c1", "c2", "c2"],
            "style": ["s", "s", "s", "s"],
            "up": [2.0, 1.0, 1.0, 1.0],  # higher is better: prefers a on c1, ties on c2
            "down": [0.1, 0.5, 0.3, 0.2],  # lower is better: prefers a on c1, b on c2
            "gappy": [np.nan, 1.0, 1.0, 0.0],  # higher is better, missing for a on c1
        }
    )
    votes = _votes(
        [
            ("v1", "a", "b", "left", "c1", "s"),  # chose a
            ("v2", "b", "a", "left", "c1", "s"),  # chose b
            ("v3", "a", "b", "right", "c2", "s"),  # chose b
            ("v4", "b", "a", "tie", "c2", "s"),  # not decided: left out
            ("v5", "b", "a", "right", "c2", "s"),  # chose a
        ]
    )
    table = people.metric_agreement(votes, per_pair, {"up": True, "down": False, "gappy": True, "absent": True})
    got = table.set_index("metric")
    assert list(got.index) == ["up", "down", "gappy"]
    # up: v1 agree (a), v2 disagree, v3 tie -> disagree, v5 tie -> disagree: 1 of 4
    assert got.loc["up", ["n", "agree"]].tolist() == [4, 1]
    # down: v1 agree, v2 disagree, v3 agree (b: 0.2 < 0.3), v5 disagree: 2 of 4
    assert got.loc["down", ["n", "agree"]].tolist() == [4, 2]
    # gappy: v1, v2 missing; v3 prefers a (1 > 0): disagree; v5 prefers a: agree: 1 of 2
    assert got.loc["gappy", ["n", "agree"]].tolist() == [2, 1]
    assert got.loc["down", "share"] == pytest.approx(0.5)
    assert (got.loc["down", "low"], got.loc["down", "high"]) == pytest.approx(people.wilson_interval(2, 4))


def test_rank_agreement_signs_lower_is_better_metrics():
    strengths = pd.DataFrame({"method": ["a", "b", "c"], "strength": [1.0, 0.0, -1.0]})
    per_pair = pd.DataFrame({"method": ["a", "a", "b", "c"], "up": [3.0, 3.0, 2.0, 1.0], "down": [3.0, 3.0, 2.0, 1.0]})
    tau = people.rank_agreement(strengths, per_pair, {"up": True, "down": False}).set_index("metric")["tau"]
    assert tau["up"] == pytest.approx(1.0)
    assert tau["down"] == pytest.approx(-1.0)


def test_bad_votes_are_named():
    with pytest.raises(NstError, match="lacks the column"):
        people.strengths(pd.DataFrame({"kind": ["preference"]}))
    with pytest.raises(NstError, match="left, right or tie"):
        people.strengths(_votes([("v", "a", "b", "maybe")]))
    with pytest.raises(NstError, match="no preference votes"):
        people.strengths(_votes([]).reindex(columns=["voter_id", "kind", "method_left", "method_right", "answer"]))
