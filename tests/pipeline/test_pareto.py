"""Pareto maths of the tune stage: operating-point selection on hand-made fronts, dominance, directions; no Optuna."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline.pareto import ParetoError, directions_for, dominates, normalised_front, select, times_dominated


def test_knee_picks_the_balanced_point_of_a_hand_made_front():
    front = [(0.0, 10.0), (1.0, 4.0), (2.0, 2.5), (6.0, 1.0), (10.0, 0.0)]
    # normalised: (0, 1), (.1, .4), (.2, .25), (.6, .1), (1, 0) -> distances 1, .412, .320, .608, 1
    assert select(front, ["minimize", "minimize"], "knee") == 2


def test_weighted_rule_follows_its_weight():
    front = [(0.0, 10.0), (1.0, 4.0), (2.0, 2.5), (6.0, 1.0), (10.0, 0.0)]
    assert select(front, ["minimize", "minimize"], "weighted", weight=1.0) == 0  # only objective 1 counts
    assert select(front, ["minimize", "minimize"], "weighted", weight=0.0) == 4
    assert select(front, ["minimize", "minimize"], "weighted", weight=0.5) == 2  # .5*(.2)+.5*(.25) = .225 is least


def test_maximised_objectives_are_flipped():
    front = [(0.9, 10.0), (0.5, 2.0), (0.1, 0.0)]  # e.g. SSIM (higher better) vs style loss
    assert select(front, ["maximize", "minimize"], "weighted", weight=1.0) == 0
    assert select(front, ["maximize", "minimize"], "knee") == 1


def test_normalised_front_maps_best_to_0_and_worst_to_1():
    front = [(0.9, 10.0), (0.5, 2.0), (0.1, 0.0)]
    flat = [v for point in normalised_front(front, ["maximize", "minimize"]) for v in point]
    assert flat == pytest.approx([0, 1, 0.5, 0.2, 1, 0])
    assert normalised_front([(3.0, 1.0), (3.0, 2.0)], ["minimize", "minimize"]) == [[0, 0], [0, 1]]  # flat column


def test_single_point_and_empty_fronts_and_unknown_rules():
    assert select([(3.0, 4.0)], ["minimize", "minimize"], "knee") == 0
    with pytest.raises(ParetoError, match="no finished trial"):
        select([], ["minimize", "minimize"], "knee")
    with pytest.raises(ParetoError, match="unknown selection rule 'median'"):
        select([(3.0, 4.0)], ["minimize", "minimize"], "median")


def test_dominance():
    assert dominates((1, 1), (2, 2), ["minimize", "minimize"])
    assert not dominates((1, 3), (2, 2), ["minimize", "minimize"])
    assert not dominates((1, 1), (1, 1), ["minimize", "minimize"])
    assert dominates((0.9, 1), (0.5, 1), ["maximize", "minimize"])


def test_times_dominated_counts_the_points_that_beat_it():
    others = [(1, 1), (1, 3), (2, 2), (0, 5)]
    assert times_dominated((2, 2), others, ["minimize", "minimize"]) == 1  # (1, 1); not itself, not the trade-offs
    assert times_dominated((0, 0), others, ["minimize", "minimize"]) == 0
    assert times_dominated((0, 0), others, ["maximize", "maximize"]) == 4


def test_directions_follow_each_metrics_declaration():
    assert directions_for(["content_loss", "ssim"]) == ["minimize", "maximize"]


def test_the_module_imports_neither_optuna_nor_torch():
    code = "import sys, pipeline.pareto; print(sorted({'optuna', 'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
