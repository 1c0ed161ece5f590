"""report stage: the method comparison -> ``reports/index.html``, ``reports/report.md``, ``reports/figures/``.

Reads the evaluate stage's ``statistics.json`` (means, two-way bootstrap CIs, ranking), ``summary.json`` (FID/ArtFID),
``paired.csv`` (paired differences), ``scoring.json`` (what each metric measures, its network) and ``per_pair.csv``;
what ran: each method's ``outputs/<m>/effective_params.yaml`` (tuned weights applied), each trained method's
``models/<m>/train_metrics.json`` and ``effective_params.yaml`` against its reference schedule, the tuning results
(``reports/tuning/<m>/best.yaml``, ``trials.csv``); each method's ``losses.csv``, the prepared data's ``stats.json``
and the test images. Builds the report in five steps, each a function: :func:`load_inputs`, :func:`compute_tables` and
:func:`render_figures` (with :mod:`evaluation.rendering`), :func:`render_templates` (its Jinja2 templates) and
:func:`write`: everything under ``reports/`` (the HTML opens from disk, with no network). Logs it to MLflow as a
``report`` run.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import yaml
from matplotlib.figure import Figure

from evaluation import rendering as rep
from evaluation.metric_info import METRICS
from methods.errors import NstError
from methods.image import resize_to_edge
from methods.registry import get_spec, list_methods
from pipeline import tracking
from pipeline.commands import add_command
from pipeline.config import Params, load_params
from pipeline.io import atomic_dir, list_images, read_image, write_text_atomic
from pipeline.stage_params import declared_tree

log = logging.getLogger(__name__)

THUMB_PX = 192
SIDE_BY_SIDE_PAIRS = 3
GRID_MAX = 8  # contents and styles shown in a method's image grid: the full profile's 20 x 40 would be 861 panels
# Headline metrics when scoring.json does not list them: the aggregates (no per-layer style distances).
DEFAULT_HEADLINE = tuple(k for k in METRICS if not any(k.startswith(f"style_{kind}_") for kind in rep.STYLE_KINDS))


class ReportError(NstError):
    """The report's inputs are missing or malformed."""


def _load_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ReportError(f"{path}: not found (run the evaluate stage first)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ReportError(f"{path}: not valid JSON ({exc})") from exc


def _load_yaml(path: Path) -> dict[str, Any] | None:
    """A YAML mapping, or None when the file is absent or not a mapping."""
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ReportError(f"{path}: not valid YAML ({exc})") from exc
    return data if isinstance(data, dict) else None


def _load_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ReportError(f"{path}: not found (run the evaluate stage first)")
    return pd.read_csv(path)


RUNTIME_COLUMNS = ("device", "precision", "cpu")


def _runtime(outputs: Path, methods: list[str]) -> dict[str, dict[str, list[str]]]:
    """What each method ran on: the distinct values of ``outputs/<m>/timing.csv``'s device, precision and cpu columns
    (a column absent or blank: no values)."""
    out: dict[str, dict[str, list[str]]] = {}
    for method in methods:
        path = outputs / method / "timing.csv"
        frame = pd.read_csv(path, dtype=str, keep_default_na=False) if path.is_file() else pd.DataFrame()
        out[method] = {c: sorted({v for v in frame[c] if v}) if c in frame.columns else [] for c in RUNTIME_COLUMNS}
    return out


def _thumb(path: Path) -> np.ndarray:
    return resize_to_edge(read_image(path), THUMB_PX)[0].permute(1, 2, 0).numpy()


def _losses(outputs: Path, models: Path | None, methods: list[str]) -> pd.DataFrame:
    """Loss per step: a trained method's training curve (models/<m>/losses.csv), else its optimisation curves."""
    frames = []
    for method in methods:
        candidates = [outputs / method / "losses.csv"]
        if models is not None:
            candidates.insert(0, models / method / "losses.csv")
        for path in candidates:
            if path.is_file():
                frame = pd.read_csv(path)
                if not frame.empty:
                    frames.append(frame.assign(method=method))
                    break
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["method", "step", "total"])


def _tuning(tuning: Path) -> tuple[pd.DataFrame | None, dict[str, dict[str, Any]]]:
    """Every method's trials.csv (with a ``method`` column) and parsed best.yaml, for methods that were tuned."""
    frames, best = [], {}
    if tuning.is_dir():
        for folder in sorted(p for p in tuning.iterdir() if p.is_dir()):
            trials = folder / "trials.csv"
            if trials.is_file():
                frame = pd.read_csv(trials)
                if not frame.empty:
                    frames.append(frame.assign(method=folder.name))
            parsed = _load_yaml(folder / "best.yaml")
            if parsed is not None:
                best[folder.name] = parsed
    return (pd.concat(frames, ignore_index=True) if frames else None), best


def _objectives(best: Mapping[str, Mapping[str, Any]], params: Params) -> list[str]:
    """The tuning objectives as best.yaml records them (what the tuning ran with), else tune.objectives."""
    for b in best.values():
        keys = list((b.get("objectives") or {}).keys())
        if len(keys) == 2:
            return keys
    return list(params.tune.objectives)


def _schedule(method: str) -> Any:
    """The method's reference training schedule (trained methods), None for optimisation methods / unknown names."""
    try:
        return get_spec(method).reference_schedule
    except NstError:
        return None


def _pretrained(method: str) -> str | None:
    """The citation of a method pretrained by its authors (its spec's ``pretrained_by``); None for our own methods."""
    try:
        return get_spec(method).pretrained_by
    except NstError:
        return None


@dataclass(frozen=True)
class TrainingRecord:
    """What a trained method's training run left: ``models/<m>/train_metrics.json`` and the ``train`` section of
    ``models/<m>/effective_params.yaml`` (None where absent)."""

    schedule: Any  # the method's reference schedule (methods.registry.ReferenceSchedule)
    metrics: dict[str, Any] | None
    train: dict[str, Any] | None


@dataclass(frozen=True)
class Inputs:
    """Everything the report reads, loaded and checked (:func:`load_inputs`)."""

    statistics: dict[str, Any]  # statistics.json
    summary: dict[str, Any]  # summary.json
    scoring: dict[str, Any]  # scoring.json
    per_pair: pd.DataFrame  # per_pair.csv
    paired: pd.DataFrame  # paired.csv
    headline: list[str]  # the headline metrics (scoring.json, else DEFAULT_HEADLINE)
    methods: list[str]  # the competing methods (statistics.json's order)
    order: list[str]  # the methods, then the reference rows that were scored
    columns: list[str]  # the comparison table's columns
    effective: dict[str, dict[str, Any] | None]  # method -> outputs/<m>/effective_params.yaml (None: absent)
    trials: pd.DataFrame | None  # every tuned method's trials.csv, with a ``method`` column
    best: dict[str, dict[str, Any]]  # method -> its best.yaml
    objectives: list[str]  # the tuning's two objectives
    training: dict[str, TrainingRecord]  # each trained method's training record (methods with a reference schedule)
    pretrained: dict[str, str]  # method -> the citation of a method pretrained by its authors
    stats: dict[str, Any]  # the prepared data's stats.json ({} when absent)
    contents: list[Path]  # the test contents
    styles: list[Path]  # the test styles
    losses: pd.DataFrame  # loss per step (:func:`_losses`)
    runtime: dict[str, dict[str, list[str]]]  # method -> timing.csv's distinct device / precision / cpu values
    people: dict[str, Any] | None = None  # the judge stage's people.json (None: absent)


def _training(methods: list[str], models: Path | None, pretrained: Mapping[str, str]) -> dict[str, TrainingRecord]:
    """The training records of the methods with a reference schedule (pretrained ones are not trained here)."""
    out = {}
    for method in methods:
        schedule = None if method in pretrained else _schedule(method)
        if schedule is None:
            continue
        folder = models / method if models is not None else None
        record = None
        if folder is not None and (folder / "train_metrics.json").is_file():
            record = _load_json(folder / "train_metrics.json")
        effective = _load_yaml(folder / "effective_params.yaml") if folder is not None else None
        train = (((effective or {}).get("methods") or {}).get(method) or {}).get("train")
        out[method] = TrainingRecord(schedule, record, train)
    return out


def load_inputs(
    params: Params,
    metrics_dir: Path,
    outputs: Path,
    prepared: Path,
    tuning: Path,
    models: Path | None = None,
    judging: Path | None = None,
) -> Inputs:
    """Read the evaluate stage's files (checked: present, well-formed, with the columns the report needs), what ran
    (effective parameters, tuning results, training records) and the prepared data's test images and stats."""
    statistics = _load_json(metrics_dir / "statistics.json")
    summary = _load_json(metrics_dir / "summary.json")
    scoring = _load_json(metrics_dir / "scoring.json")
    per_pair_path = metrics_dir / "per_pair.csv"
    per_pair = _load_csv(per_pair_path)
    missing = [c for c in ("method", "content", "style", *METRICS) if c not in per_pair.columns]
    if missing:
        raise ReportError(f"{per_pair_path}: missing column(s) {', '.join(missing)}")
    paired = _load_csv(metrics_dir / "paired.csv")
    if "methods" not in statistics:
        raise ReportError(f"{metrics_dir / 'statistics.json'}: no 'methods' (rerun the evaluate stage)")
    headline = [m for m in scoring.get("headline") or DEFAULT_HEADLINE if m in METRICS]
    methods = rep.competitors(statistics)
    trials, best = _tuning(tuning)
    pretrained = {m: c for m in methods if (c := _pretrained(m)) is not None}
    return Inputs(
        statistics=statistics,
        summary=summary,
        scoring=scoring,
        per_pair=per_pair,
        paired=paired,
        headline=headline,
        methods=methods,
        order=rep.row_order(statistics),
        columns=rep.table_columns(headline),
        effective={m: _load_yaml(outputs / m / "effective_params.yaml") for m in methods},
        trials=trials,
        best=best,
        objectives=_objectives(best, params),
        training=_training(methods, models, pretrained),
        runtime=_runtime(outputs, methods),
        pretrained=pretrained,
        stats=_load_json(prepared / "stats.json") if (prepared / "stats.json").is_file() else {},
        contents=list_images(prepared / "test" / "content"),
        styles=list_images(prepared / "test" / "style"),
        losses=_losses(outputs, models, methods),
        people=_load_json(judging / "people.json") if judging and (judging / "people.json").is_file() else None,
    )


# Where an optimisation method's reference budget (its params class's defaults of iterations and init) comes from.
OPTIMISATION_REFERENCE = {"gatys": "jcjohnson/neural-style -num_iterations 1000 -init random; Gatys et al. 2016 sec. 3"}


def _budgets(inputs: Inputs) -> dict[str, rep.Budget]:
    """Each trained method's training budget against its reference schedule; a pretrained method says so."""
    out = {}
    for method in inputs.methods:
        citation = inputs.pretrained.get(method)
        if citation is not None:
            out[method] = rep.Budget(method, f"{rep.PRETRAINED} ({citation}); not trained or tuned here", None)
        elif method in inputs.training:
            record = inputs.training[method]
            out[method] = rep.training_budget(method, record.schedule, record.metrics, record.train)
        elif method in list_methods() and {"iterations", "init"} <= set(get_spec(method).params.model_fields):
            # an image-optimisation method (Gatys): its params class's defaults are the reference optimisation
            fields = get_spec(method).params.model_fields
            out[method] = rep.optimisation_budget(
                method,
                ((inputs.effective.get(method) or {}).get("methods") or {}).get(method),
                int(fields["iterations"].default),
                str(fields["init"].default),
                OPTIMISATION_REFERENCE.get(method, f"methods.{method} defaults"),
            )
    return out


def _tuning_rows(
    inputs: Inputs, tuned_weights: Mapping[str, Mapping[str, float]], params_rows: list[rep.ParamsRow]
) -> list[dict[str, str]]:
    """The tuned-weights table, with the reference-weights trial and whether stylize ran with the tuned weights."""
    methods, trials, best = inputs.methods, inputs.trials, inputs.best
    references = {}
    if trials is not None:
        for m in methods:
            part = trials[trials["method"] == m]
            if part.empty:
                continue
            ref = rep.reference_trial(part, list(tuned_weights.get(m, {})), inputs.objectives)
            if ref is not None:
                references[m] = ref
    rows = rep.tuning_table(
        {m: best[m] for m in methods if m in best},
        references if trials is not None and "reference" in trials.columns else None,
    )
    for row in rows:
        applied = any(t for p in params_rows if p.method == row["method"] for _, _, t in p.items)
        row["applied"] = "yes" if applied else "no (stylize ran without these weights)"
    return rows


def compute_tables(params: Params, inputs: Inputs, created: str, git_sha: str) -> rep.ReportView:
    """Every table and text of the report, from the loaded inputs (nothing read or written here)."""
    statistics, scoring = inputs.statistics, inputs.scoring
    tuned_weights = {m: (inputs.best[m].get("weights") or {}) for m in inputs.methods if m in inputs.best}
    params_rows = rep.params_rows(inputs.effective, tuned_weights)
    budgets = _budgets(inputs)
    badges = {m: [b.badge] for m, b in budgets.items() if b.under_trained}
    badge_titles = {m: {b.badge: b.title} for m, b in budgets.items() if b.under_trained}
    for m, citation in inputs.pretrained.items():
        badges.setdefault(m, []).append(rep.PRETRAINED)
        badge_titles.setdefault(m, {})[rep.PRETRAINED] = citation
    paired = rep.paired_rows(inputs.paired, inputs.headline, inputs.methods, scoring)
    rows = rep.comparison_rows(statistics, inputs.summary, inputs.columns, badges, scoring)
    return rep.ReportView(
        created=created,
        ci_level=statistics.get("ci_level") or 0.95,
        pairs=statistics.get("pairs"),
        references=rep.references_of(statistics),
        rows=rows,
        legend=rep.mark_legend(rows),
        titles=rep.column_titles(inputs.columns, scoring),
        notes=rep.ranking_notes(statistics, inputs.columns),
        badge_titles=badge_titles,
        paired=rep.paired_grid(paired, scoring) if paired else None,
        style_tables=[rep.StyleTable(kind, rep.style_share_rows(statistics, kind)) for kind in rep.STYLE_KINDS],
        params_rows=params_rows,
        tuning=_tuning_rows(inputs, tuned_weights, params_rows),
        budgets=list(budgets.values()),
        scorer=rep.scorer_lines(scoring),
        metric_rows=rep.metric_rows(scoring, inputs.headline),
        setup=setup_lines(params, inputs, git_sha, created),
        read=rep.read_items(inputs.columns, scoring),
        caveats=rep.caveats(scoring, list(budgets.values()), statistics.get("pairs"), inputs.pretrained),
        people=rep.people_view(inputs.people),
        **({"title": rep.REHEARSAL_TITLE, "subtitle": rep.REHEARSAL_SUBTITLE} if params.profile == "rehearsal" else {}),
    )


def spread(items: list[Path], most: int) -> list[Path]:
    """At most ``most`` of ``items``, evenly spaced over the list (all of them when there are no more)."""
    if len(items) <= most:
        return list(items)
    return [items[(2 * i + 1) * len(items) // (2 * most)] for i in range(most)]


def render_figures(inputs: Inputs, outputs: Path) -> dict[str, Figure]:
    """The report's figures by name, in the order the report shows them: metric distributions, the trade-off, style
    shares per layer, loss curves, speed and memory, the tuning fronts, an image grid per method, a few pairs side by
    side. The caller saves and closes them."""
    per_pair, order, methods, pretrained = inputs.per_pair, inputs.order, inputs.methods, inputs.pretrained
    figures: dict[str, Figure] = {
        "metrics": rep.fig_metric_distributions(per_pair, order, inputs.headline),
        "tradeoff": rep.fig_tradeoff(per_pair, order),
        "style_layers": rep.fig_style_shares(inputs.statistics),
        "losses": rep.fig_loss_curves(inputs.losses),
        "speed_memory": rep.fig_speed_memory(per_pair, order),
    }
    if inputs.trials is not None:
        figures["tuning"] = rep.fig_tuning(inputs.trials, inputs.objectives, methods)
    contents, styles = spread(inputs.contents, GRID_MAX), spread(inputs.styles, GRID_MAX)
    shown = ""
    if (len(contents), len(styles)) != (len(inputs.contents), len(inputs.styles)):
        shown = f" ({len(contents)} of {len(inputs.contents)} contents, {len(styles)} of {len(inputs.styles)} styles)"
    content_thumbs = {p.stem: _thumb(p) for p in contents}
    style_thumbs = {p.stem: _thumb(p) for p in styles}
    for method in methods:
        images = {
            (c.stem, s.stem): _thumb(outputs / method / f"{c.stem}__{s.stem}.png") for c in contents for s in styles
        }
        figures[f"grid_{method}"] = rep.fig_image_grid(
            images,
            [c.stem for c in contents],
            [s.stem for s in styles],
            content_thumbs,
            style_thumbs,
            title=f"{method}: content (rows) x style (columns){shown}"
            + (f"\n{rep.PRETRAINED}: {pretrained[method]}" if method in pretrained else ""),
        )
    pairs = [(c.stem, s.stem) for c in contents for s in styles][:SIDE_BY_SIDE_PAIRS]
    side = {(f"{c} x {s}", "content"): content_thumbs[c] for c, s in pairs}
    side.update({(f"{c} x {s}", "style"): style_thumbs[s] for c, s in pairs})
    for method in methods:
        side.update({(f"{c} x {s}", method): _thumb(outputs / method / f"{c}__{s}.png") for c, s in pairs})
    figures["side_by_side"] = rep.fig_image_grid(
        side,
        [f"{c} x {s}" for c, s in pairs],
        ["content", "style", *methods],
        title="\n".join(["side by side", *(rep.pretrained_title(m, c) for m, c in pretrained.items())]),
        col_titles={n: f"{n}\n({rep.PRETRAINED})" if n in pretrained else n for n in ("content", "style", *methods)},
    )
    people = rep.fig_people(inputs.people or {})
    if people is not None:
        figures["people"] = people
    return figures


def render_templates(view: rep.ReportView, figures: list[str]) -> dict[str, str]:
    """``report.md`` and ``index.html`` (file name -> text), linking the figures by name."""
    refs = rep.figure_refs(figures)
    return {"report.md": rep.render_markdown(view, refs), "index.html": rep.render_html(view, refs)}


def write(out: Path, figures: Mapping[str, Figure], texts: Mapping[str, str]) -> None:
    """``out/figures/`` (replaced as a whole, each figure closed once saved), then the texts, each atomically."""
    with atomic_dir(out / "figures") as fig_dir:
        for name, fig in figures.items():
            fig.savefig(fig_dir / f"{name}.png", dpi=110)
            plt.close(fig)
    for name, text in texts.items():
        write_text_atomic(out / name, text)


def build(
    params: Params,
    metrics_dir: Path,
    outputs: Path,
    prepared: Path,
    tuning: Path,
    out: Path,
    models: Path | None = None,
) -> dict[str, Any]:
    """Write the report into ``out`` (figures replaced as a whole); returns a small description of what was written.
    People's verdict is read from ``out/judging/people.json`` (the judge stage's output)."""
    inputs = load_inputs(params, metrics_dir, outputs, prepared, tuning, models, out / "judging")
    created = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    view = compute_tables(params, inputs, created, tracking.git_sha())
    figures = render_figures(inputs, outputs)
    texts = render_templates(view, list(figures))
    write(out, figures, texts)
    return {"methods": inputs.methods, "figures": list(figures), "pairs": inputs.statistics.get("pairs")}


def setup_lines(params: Params, inputs: Inputs, git_sha: str, created: str) -> list[tuple[str, str]]:
    """The set-up the numbers come from: profile, data, image size, pairs, statistics, encoder, git sha, time. Text
    between backticks is code."""
    stats, st = inputs.stats, inputs.statistics
    data = []
    for role in ("content", "style"):
        s = stats.get(role, {})
        source = getattr(params.fetch, role).source
        counts = f"{s.get('train', '?')} train / {s.get('val', '?')} val / {s.get('test', '?')} test"
        if s.get("spare"):
            cap = getattr(params.prepare.split.test_max, role)
            counts += f" (+ {s['spare']} spare test images beyond `prepare.split.test_max.{role}: {cap}`, unused)"
        data.append(
            (
                f"{role} images",
                f"{s.get('usable', '?')} usable from `{source}` ({s.get('skipped', 0)} skipped): {counts}",
            )
        )
    encoder = next((e.get("encoder") for e in inputs.effective.values() if e and e.get("encoder")), None)
    level = st.get("ci_level") or 0.95
    lines = [
        ("profile", params.profile),
        *data,
        ("image size", f"{params.prepare.resize.edge} side scaled to {params.prepare.resize.side_px} px"),
        ("test pairs", f"{st.get('pairs')} (every test content x every test style)"),
        (
            "statistics",
            f"mean and {level:.0%} CI, {st.get('bootstrap', 'bootstrap')}; paired differences Holm-corrected "
            f"over the method pairs of each metric; a best method or a ≠ 0 needs at least "
            f"{st.get('min_contents')} contents and {st.get('min_styles')} styles",
        ),
    ]
    if encoder:
        lines.append(("method encoder", f"`{encoder.get('weights')}` ({encoder.get('pool')} pooling)"))
    lines += compute_lines(inputs)
    lines += [("git", f"`{git_sha}`"), ("created", created)]
    return lines


def compute_lines(inputs: Inputs) -> list[tuple[str, str]]:
    """The set-up's ``CPU`` line (the instruction-set facts that decided precision and kernels, methods/cpu.py) and
    its ``precision`` line (each method's inference precision or runtime, and its training precision), from
    timing.csv and train_metrics.json."""
    cpus = sorted({c for r in inputs.runtime.values() for c in r.get("cpu", [])})
    for record in inputs.training.values():
        if record.metrics and record.metrics.get("cpu"):
            cpus = sorted({*cpus, record.metrics["cpu"]})
    parts = []
    for method in inputs.methods:
        r = inputs.runtime.get(method, {})
        text = f"{method} {' / '.join(r.get('precision') or ['?'])}"
        devices = r.get("device") or []
        if devices and devices != ["cpu"]:
            text += f" on {' / '.join(devices)}"
        record = inputs.training.get(method)
        trained = (record.metrics or {}).get("precision") if record is not None else None
        if trained:
            text += f" (trained in {trained})"
        parts.append(text)
    cpu_text = "; ".join(f"`{c}`" for c in cpus) if cpus else "not recorded (timing.csv has no cpu column)"
    lines = [("CPU", cpu_text)]
    lines.append(
        (
            "precision",
            ", ".join(parts) + " (bytes reproduce on the same CPU family; across families numbers agree within the "
            "README's stated tolerance)",
        )
    )
    return lines


# ------------------------------------------------------------------------------------------------ CLI


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "report", description=__doc__)
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--metrics", type=Path, default=Path("reports/metrics"))
    p.add_argument("--outputs", type=Path, default=Path("outputs"))
    p.add_argument("--models", type=Path, default=Path("models"))
    p.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    p.add_argument("--tuning", type=Path, default=Path("reports/tuning"))
    p.add_argument("--out", type=Path, default=Path("reports"))
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    with tracking.stage_run(
        "report", None, declared_tree(params, "report"), uri=params.tracking.uri, experiment=params.tracking.experiment
    ) as logger:
        info = build(params, args.metrics, args.outputs, args.prepared, args.tuning, args.out, args.models)
        logger.log_artifact(args.out / "index.html", "report")
        logger.log_artifact(args.out / "report.md", "report")
        for fig in sorted((args.out / "figures").glob("*.png")):
            logger.log_artifact(fig, "report/figures")
    log.info("report: %s (%d figures)", args.out / "index.html", len(info["figures"]))
    return 0
