"""The comparison table's marks: a method's own objective (◆), a content metric worse than a degraded reference
(▼), and the budget of an optimisation method (Gatys) against its reference, in the HTML and the Markdown."""

from __future__ import annotations

from evaluation import rendering as rep


def stat(mean: float) -> dict:
    return {"mean": mean, "std": 0.0, "ci_low": mean, "ci_high": mean, "n": 4}


STATISTICS = {
    "pairs": 4,
    "references": ["identity", "style_copy", "grey", "blur"],
    "methods_order": ["gatys", "adain", "identity", "style_copy", "grey", "blur"],
    "ci_level": 0.95,
    "methods": {
        # ssim higher is better: adain (0.30) is below grey (0.35); content_loss lower is better: adain above blur
        "gatys": {"ssim": stat(0.70), "content_loss": stat(1.0), "style_gram": stat(0.2)},
        "adain": {"ssim": stat(0.30), "content_loss": stat(9.0), "style_gram": stat(0.3)},
        "identity": {"ssim": stat(1.0), "content_loss": stat(0.0), "style_gram": stat(0.9)},
        "style_copy": {"ssim": stat(0.1), "content_loss": stat(20.0), "style_gram": stat(0.05)},
        "grey": {"ssim": stat(0.35), "content_loss": stat(10.0), "style_gram": stat(0.95)},
        "blur": {"ssim": stat(0.5), "content_loss": stat(5.0), "style_gram": stat(0.9)},
    },
    "ranking": {},
}
SCORING = {
    "own_objectives": {
        "gatys": {"content_loss": "optimises its content term: feature_mse on relu4_2 (vgg19)", "style_gram": "x"},
    },
    "metrics": {
        "ssim": {"higher_is_better": True, "compares_to": "content"},
        "content_loss": {"higher_is_better": False, "compares_to": "content"},
        "style_gram": {"higher_is_better": False, "compares_to": "style"},
    },
}
COLUMNS = ["content_loss", "style_gram", "ssim"]


def test_own_objective_and_below_reference_marks():
    rows = {r.method: r for r in rep.comparison_rows(STATISTICS, {}, COLUMNS, scoring=SCORING)}
    assert set(rows["gatys"].cells["content_loss"].marks) == {rep.OWN_OBJECTIVE}
    assert set(rows["gatys"].cells["style_gram"].marks) == {rep.OWN_OBJECTIVE}
    assert not rows["gatys"].cells["ssim"].marks
    # adain: SSIM 0.30 < grey's 0.35 (and < blur's 0.5); content_loss 9 > blur's 5 but < grey's 10
    assert "worse than grey: 0.3 vs 0.35" in rows["adain"].cells["ssim"].marks[rep.BELOW_REFERENCE]
    assert "worse than blur" in rows["adain"].cells["ssim"].marks[rep.BELOW_REFERENCE]
    assert rows["adain"].cells["content_loss"].marks[rep.BELOW_REFERENCE] == "worse than blur: 9 vs 5"
    assert not rows["adain"].cells["style_gram"].marks  # a style metric: no degraded-photo bound
    assert not any(c.marks for r in rows.values() if r.reference for c in r.cells.values())  # references: none
    legend = rep.mark_legend(list(rows.values()))
    assert len(legend) == 2
    assert legend[0].startswith("◆ optimised by this method: not evidence")


def test_optimisation_budget_counts_iterations_and_the_initialisation():
    b = rep.optimisation_budget("gatys", {"iterations": 30, "init": "content"}, 1000, "noise", "neural-style")
    assert b.fraction == 0.03
    assert b.under_trained
    assert b.badge == rep.UNDER_OPTIMISED
    assert b.text.startswith("30 of 1 000 iterations (3.0 %)") or b.text.startswith("30 of 1,000 iterations")
    assert "initialised from the content photo (reference: noise)" in b.text
    full = rep.optimisation_budget("gatys", {"iterations": 1000, "init": "noise"}, 1000, "noise", "neural-style")
    assert not full.under_trained
    assert rep.optimisation_budget("gatys", None, 1000, "noise", "x").fraction is None
