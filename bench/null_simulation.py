"""How often does the report mark something that is not there? The false-mark rate of the ★ / "≠ 0" rule -> JSON.

    python bench/null_simulation.py                    # -> stdout; --out FILE also writes it there

A simulated benchmark with NO true difference between 4 methods: every method's score on (content c, style s) is

    score = u_c + v_s + w_cs + g_mc + e_mcs,   u ~ N(0, content_sd), v ~ N(0, style_sd), e ~ N(0, residual_sd),

crossed random effects (a photo is harder for every method, a painting too), w a content x style interaction that
every method shares, g a content x method interaction with mean 0 (some methods suit some photos; over the population
of photos no method is better). Each simulated table is one metric, scored with the project's own decision
functions -- evaluation.summary.paired_differences ("≠ 0": its ``significant``) and rank_methods (★), which is what
the report shows -- and counts as a false mark when it has at least one ★ or one "≠ 0". The same tables are also
judged by the rule this replaces (reimplemented here: :func:`old_rule_marks`), so before and after come from the same
data. Variants and grids: :data:`VARIANTS`, :data:`GRIDS`; tests/evaluation/test_null_simulation.py runs the same
simulation with fewer replicates.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from evaluation.summary import (  # noqa: E402
    MIN_CONTENTS,
    MIN_STYLES,
    RANKED,
    paired_differences,
    rank_methods,
)

METHODS = ("m0", "m1", "m2", "m3")
GRIDS = ((1, 8), (2, 4), (5, 5), (8, 8))  # contents x styles: issue 26's four grids
OLD_MIN_PAIRS = 8  # the rule this replaces: params.yaml's evaluate.min_pairs before issue 26, counted in cells
LEVEL = 0.95  # params.yaml evaluate.ci_level


@dataclass(frozen=True)
class Variant:
    """Standard deviations of the simulated effects (issue 26's brief: content 1, style 1, residual 0.5)."""

    content_sd: float = 1.0
    style_sd: float = 1.0
    residual_sd: float = 0.5
    content_style_sd: float = 0.0  # shared by every method: cancels in every paired difference
    content_method_sd: float = 0.0  # per method and content, mean 0: the hard case for a small grid


VARIANTS = {
    "crossed": Variant(),
    "crossed + content x style": Variant(content_style_sd=0.5),
    "crossed + content x method": Variant(content_method_sd=0.5),
}


def simulate(rng: np.random.Generator, n_contents: int, n_styles: int, variant: Variant) -> pd.DataFrame:
    """per_pair rows (method, content, style, m) for 4 methods with no true difference (module docstring)."""
    shape = (len(METHODS), n_contents, n_styles)
    u = rng.normal(0.0, variant.content_sd, (1, n_contents, 1))
    v = rng.normal(0.0, variant.style_sd, (1, 1, n_styles))
    w = rng.normal(0.0, variant.content_style_sd, (1, n_contents, n_styles))
    g = rng.normal(0.0, variant.content_method_sd, (len(METHODS), n_contents, 1))
    e = rng.normal(0.0, variant.residual_sd, shape)
    scores = u + v + w + g + e
    m, c, s = np.indices(shape).reshape(3, -1)
    return pd.DataFrame(
        {
            "method": np.asarray(METHODS)[m],
            "content": [f"c{i}" for i in c],
            "style": [f"s{j}" for j in s],
            "m": scores.ravel(),
        }
    )


def judge(per_pair: pd.DataFrame, n_boot: int, seed: int = 0) -> dict[str, bool]:
    """Whether each rule marks anything on one simulated table: ``new``, ``old``, and ``old_star`` (the old ★ alone).

    New: the project's functions with their defaults (minimum grid evaluation.summary.MIN_CONTENTS x MIN_STYLES,
    Holm), called as pipeline/stages/evaluate.py calls them; a mark is a ``significant`` row (the report's "≠ 0") or a
    "ranked" metric (its ★). Old: :func:`old_rule_marks` on the same table's CIs.
    """
    boot = {"n_boot": n_boot, "level": LEVEL, "seed": seed}
    paired = paired_differences(per_pair, ["m"], **boot)
    ranking = rank_methods(per_pair, {"m": True}, differences=paired, **boot)
    new = bool(paired["significant"].any() or ranking["m"]["status"] == RANKED)
    return {"new": new, "old": old_rule_marks(paired), "old_star": old_rule_star(paired)}


def old_rule_marks(paired: pd.DataFrame) -> bool:
    """The rule before issue 26, reimplemented from a paired_differences table (its CIs are unchanged): "≠ 0"
    wherever the paired 95 % two-way bootstrap CI excludes 0 (the paired table applied no minimum at all), and ★
    for a method whose CI lies above 0 against every other (higher is better) when every two methods share at least
    ``OLD_MIN_PAIRS`` cells. No multiplicity correction."""
    return bool(paired["excludes_zero"].any() or old_rule_star(paired))


def old_rule_star(paired: pd.DataFrame) -> bool:
    """The old ★ alone."""
    if paired["n"].min() < OLD_MIN_PAIRS:
        return False
    above = {}
    for a, b, low, high in zip(
        *(paired[c].tolist() for c in ("method_a", "method_b", "ci_low", "ci_high")), strict=True
    ):
        above[(a, b)], above[(b, a)] = low > 0, high < 0
    return any(all(above[(a, b)] for b in METHODS if b != a) for a in METHODS)


def binomial_halfwidth(rate: float, reps: int) -> float:
    """95 % normal half-width of an estimated rate (at least that of 1 mark in ``reps``, so 0 is not 'exact')."""
    p = max(rate, 1.0 / reps)
    return 1.96 * math.sqrt(p * (1.0 - p) / reps)


def rates(variant: Variant, grid: tuple[int, int], reps: int, n_boot: int, seed: int) -> dict[str, float]:
    """False-mark rates of both rules over ``reps`` simulated tables, plus the old ★ alone."""
    rng = np.random.default_rng(seed)
    counts = dict.fromkeys(("old", "old_star", "new"), 0)
    for _ in range(reps):
        for key, marked in judge(simulate(rng, *grid, variant), n_boot).items():
            counts[key] += marked
    return {
        "old_rule": counts["old"] / reps,
        "old_rule_star_only": counts["old_star"] / reps,
        "new_rule": counts["new"] / reps,
        "new_rule_95ci_halfwidth": round(binomial_halfwidth(counts["new"] / reps, reps), 4),
    }


def run(reps: int, n_boot: int, seed: int) -> dict:
    results: dict = {}
    for v, (name, variant) in enumerate(VARIANTS.items()):
        per_grid = {
            f"{c}x{s}": rates(variant, (c, s), reps, n_boot, seed + 1000 * v + g) for g, (c, s) in enumerate(GRIDS)
        }
        results[name] = {"effects_sd": asdict(variant), "false_mark_rate": per_grid}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=2000, help="simulated tables per grid and variant")
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap replicates (params.yaml's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    report = {
        "benchmark": "null_simulation",
        "methods": len(METHODS),
        "reps_per_grid": args.reps,
        "n_boot": args.n_boot,
        "level": LEVEL,
        "new_rule": f"Holm-adjusted p < {1 - LEVEL:.2g} (p: the larger of the percentile p and the t p with "
        f"min(contents, styles) - 1 df, from the two-way bootstrap), >= {MIN_CONTENTS} contents and "
        f">= {MIN_STYLES} styles",
        "old_rule": f"CI excludes 0 (≠ 0, no minimum); ★ with >= {OLD_MIN_PAIRS} cells; no correction",
        "false_mark": "a simulated table with at least one ★ or ≠ 0 (4 methods, no true difference)",
        "variants": run(args.reps, args.n_boot, args.seed),
    }
    report["seconds"] = round(time.perf_counter() - start, 1)
    text = json.dumps(report, indent=2, ensure_ascii=False)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
