"""judge stage: people's verdict beside the metrics, from the votes a study collected.

``nst judge serve`` collects votes on the run's outputs and ``nst judge export`` writes them to
``data/judgements/<study>.csv`` (one row per vote, with its provenance); this stage reads every such file, with the
evaluate stage's ``per_pair.csv``, and writes ``reports/judging/people.json``:

- Bradley-Terry strengths per method with bootstrap intervals over voters (evaluation/people.py);
- the deception rate per method (how often its output passed for a painting) with Wilson intervals, and the real
  paintings' recognition rate as the calibration;
- per automatic metric, the share of decided preference votes where it prefers the same output as the voter (Wilson
  interval), and Kendall's tau between people's order of the methods and the metric's.

Without votes the file says so and how to collect them, and the report shows that instead of a verdict. Logged to
MLflow as one ``judge`` run.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd

from evaluation import people
from evaluation.metric_names import HIGHER_IS_BETTER
from methods.errors import NstError
from pipeline import tracking
from pipeline.commands import add_command
from pipeline.config import Params, load_params
from pipeline.io import write_text_atomic
from pipeline.stage_params import declared_tree

log = logging.getLogger(__name__)

RESULT_FILE = "people.json"
HOW_TO_COLLECT = (
    "No votes yet. Collect them on this run's outputs: `nst judge serve --study NAME` prints a link for voters (a "
    "preference and a deception task, on any browser); when enough are in, `nst judge export --study NAME` writes "
    "data/judgements/NAME.csv, and `dvc repro` adds people's verdict here."
)


def read_votes(folder: Path) -> pd.DataFrame:
    """Every ``*.csv`` export in ``folder`` as one frame (empty when there is none); a file that is not an export is
    one error naming it."""
    frames = []
    for path in sorted(folder.glob("*.csv")) if folder.is_dir() else []:
        try:
            frame = pd.read_csv(path, dtype={"voter_id": str, "content": str, "style": str})
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise NstError(f"{path}: not a readable votes export ({exc})") from None
        missing = [c for c in ("voter_id", "kind", "content", "style", "method_left", "answer") if c not in frame]
        if missing:
            raise NstError(f"{path}: not a votes export of `nst judge export` (no column {', '.join(missing)})")
        frames.append(frame.assign(source=path.name))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-safe rows: NaN -> None, numpy scalars -> Python."""
    rows = frame.to_dict(orient="records")
    return [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()} for r in rows]


def verdict(votes: pd.DataFrame, per_pair: pd.DataFrame, params: Params) -> dict[str, Any]:
    """What people.json holds for ``votes`` (see the module docstring)."""
    cfg = params.judge
    if votes.empty:
        return {"votes": 0, "how_to_collect": HOW_TO_COLLECT}
    kinds = votes["kind"].value_counts().to_dict()
    out: dict[str, Any] = {
        "votes": len(votes),
        "voters": int(votes["voter_id"].nunique()),
        "studies": sorted(votes["source"].unique()),
        "by_kind": {k: int(v) for k, v in kinds.items()},
        "ties": cfg.ties,
        "confidence": cfg.ci_level,
    }
    if kinds.get(people.PREFERENCE, 0):
        strengths = people.strengths(
            votes, ties=cfg.ties, bootstrap=cfg.bootstrap, seed=cfg.seed, confidence=cfg.ci_level
        )
        out["strengths"] = _records(strengths)
        out["agreement"] = _records(people.metric_agreement(votes, per_pair, HIGHER_IS_BETTER, cfg.ci_level))
        out["rank_agreement"] = _records(people.rank_agreement(strengths, per_pair, HIGHER_IS_BETTER))
    if kinds.get(people.DECEPTION, 0):
        out["deception"] = _records(people.deception_rates(votes, cfg.ci_level))
    return out


def run(params: Params, votes_dir: Path, metrics_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Read the exports and the per-pair metrics, write ``out_dir/people.json``; returns its content."""
    per_pair_path = metrics_dir / "per_pair.csv"
    if not per_pair_path.is_file():
        raise NstError(f"{per_pair_path}: not found (run the evaluate stage first)")
    result = verdict(read_votes(votes_dir), pd.read_csv(per_pair_path), params)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / RESULT_FILE, json.dumps(result, indent=2, sort_keys=False) + "\n")
    return result


def summary_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The numbers a ``judge`` MLflow run logs: vote counts, each method's strength and deception rate, each
    metric's agreement share."""
    metrics: dict[str, float] = {"votes": float(result["votes"]), "voters": float(result.get("voters", 0))}
    for row in result.get("strengths", []):
        metrics[f"strength/{row['method']}"] = row["strength"]
    for row in result.get("deception", []):
        metrics[f"deception/{row['method']}"] = row["rate"]
    for row in result.get("agreement", []):
        if row["share"] is not None:
            metrics[f"agreement/{row['metric']}"] = row["share"]
    return metrics


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "judge-stage", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--votes", type=Path, default=Path("data/judgements"), help="folder of `nst judge export` files")
    p.add_argument("--metrics", type=Path, default=Path("reports/metrics"), help="the evaluate stage's folder")
    p.add_argument("--out", type=Path, default=Path("reports/judging"))
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    with tracking.stage_run(
        "judge", None, declared_tree(params, "judge"), uri=params.tracking.uri, experiment=params.tracking.experiment
    ) as logger:
        result = run(params, args.votes, args.metrics, args.out)
        logger.log_metrics(summary_metrics(result))
        logger.log_artifact(args.out / RESULT_FILE)
    log.info("judge: %d votes from %d voters", result["votes"], result.get("voters", 0))
    return 0
