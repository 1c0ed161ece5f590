"""report stage: the method comparison -> ``reports/index.html``, ``reports/report.md``, ``reports/figures/``.

Reads the evaluate stage's ``per_pair.csv``/``summary.json``/``scoring.json``, each method's ``losses.csv`` and
``timing.csv``, the prepared data's ``stats.json`` and the test images; builds the figures and text with
:mod:`evaluation.report`; writes everything under ``reports/`` (the HTML opens from disk, with no network) and logs it
to MLflow as a ``report`` run.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import time
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import yaml

from evaluation import report as rep
from evaluation.metrics import METRICS
from methods.errors import NstError
from methods.image import resize_to_edge
from pipeline import tracking
from pipeline.config import Params, load_params
from pipeline.io import atomic_dir, list_images, read_image, write_text_atomic

log = logging.getLogger(__name__)

THUMB_PX = 192
SIDE_BY_SIDE_PAIRS = 3


class ReportError(NstError):
    """The report's inputs are missing or malformed."""


def _load_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ReportError(f"{path}: not found (run the evaluate stage first)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ReportError(f"{path}: not valid JSON ({exc})") from exc


def _thumb(path: Path) -> np.ndarray:
    return resize_to_edge(read_image(path), THUMB_PX)[0].permute(1, 2, 0).numpy()


def _losses(outputs: Path, models: Path, methods: list[str]) -> pd.DataFrame:
    """Loss per step: a trained method's training curve (models/<m>/losses.csv), else its optimisation curves."""
    frames = []
    for method in methods:
        for path in (models / method / "losses.csv", outputs / method / "losses.csv"):
            if path.is_file():
                frame = pd.read_csv(path)
                if not frame.empty:
                    frames.append(frame.assign(method=method))
                    break
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["method", "step", "total"])


def _tuning(tuning: Path) -> tuple[pd.DataFrame | None, dict[str, dict[str, Any]]]:
    """Every method's trials.csv (with a ``method`` column) and parsed best.yaml, for methods that were tuned."""
    frames, best = [], {}
    for path in sorted(tuning.glob("*/trials.csv")):
        frame = pd.read_csv(path)
        if not frame.empty:
            frames.append(frame.assign(method=path.parent.name))
        best_path = path.parent / "best.yaml"
        if best_path.is_file():
            best[path.parent.name] = yaml.safe_load(best_path.read_text(encoding="utf-8"))
    return (pd.concat(frames, ignore_index=True) if frames else None), best


def build(
    params: Params,
    metrics_dir: Path,
    outputs: Path,
    prepared: Path,
    tuning: Path,
    out: Path,
    models: Path | None = None,
) -> dict[str, Any]:
    """Write the report into ``out`` (replaced as a whole); returns a small description of what was written."""
    summary = _load_json(metrics_dir / "summary.json")
    scoring = _load_json(metrics_dir / "scoring.json")
    per_pair_path = metrics_dir / "per_pair.csv"
    if not per_pair_path.is_file():
        raise ReportError(f"{per_pair_path}: not found (run the evaluate stage first)")
    per_pair = pd.read_csv(per_pair_path)
    missing = [c for c in ("method", "content", "style", *METRICS) if c not in per_pair.columns]
    if missing:
        raise ReportError(f"{per_pair_path}: missing column(s) {', '.join(missing)}")
    methods = [m for m in summary["methods"] if m not in rep.REFERENCE_ROWS]
    order = [*methods, *[r for r in rep.REFERENCE_ROWS if r in summary["methods"]]]
    stats = _load_json(prepared / "stats.json") if (prepared / "stats.json").is_file() else {}
    rows = rep.comparison_rows(summary, methods)

    contents = list_images(prepared / "test" / "content")
    styles = list_images(prepared / "test" / "style")
    figures: dict[str, plt.Figure] = {
        "metrics": rep.fig_metric_distributions(per_pair, order),
        "tradeoff": rep.fig_tradeoff(per_pair, order),
        "losses": rep.fig_loss_curves(_losses(outputs, models if models is not None else outputs / ".none", methods)),
        "speed_memory": rep.fig_speed_memory(per_pair, order),
    }
    trials, best = _tuning(tuning)
    if trials is not None:
        figures["tuning"] = rep.fig_tuning(trials, params.tune.objectives, methods)
    content_thumbs = {p.stem: _thumb(p) for p in contents}
    style_thumbs = {p.stem: _thumb(p) for p in styles}
    for method in methods:
        images = {
            (c.stem, s.stem): _thumb(outputs / method / f"{c.stem}__{s.stem}.png") for c in contents for s in styles
        }
        figures[f"grid_{method}"] = rep.fig_image_grid(
            images, [c.stem for c in contents], [s.stem for s in styles], content_thumbs, style_thumbs,
            title=f"{method}: content (rows) x style (columns)",
        )  # fmt: skip
    pairs = [(c.stem, s.stem) for c in contents for s in styles][:SIDE_BY_SIDE_PAIRS]
    side = {(f"{c} x {s}", "content"): content_thumbs[c] for c, s in pairs}
    side.update({(f"{c} x {s}", "style"): style_thumbs[s] for c, s in pairs})
    for method in methods:
        side.update({(f"{c} x {s}", method): _thumb(outputs / method / f"{c}__{s}.png") for c, s in pairs})
    figures["side_by_side"] = rep.fig_image_grid(
        side, [f"{c} x {s}" for c, s in pairs], ["content", "style", *methods], title="side by side"
    )
    for name in ("content", "style", *methods):
        figures["side_by_side"].axes[list(["content", "style", *methods]).index(name)].set_title(name, fontsize=9)

    context = {
        "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "git_sha": tracking.git_sha(),
        "params": params,
        "stats": stats,
        "scoring": scoring,
        "summary": summary,
        "methods": methods,
        "rows": rows,
        "figures": list(figures),
        "tuning": rep.tuning_table({m: best[m] for m in methods if m in best}),
        "use_tuned": params.tune.use_tuned,
    }
    with atomic_dir(out / "figures") as fig_dir:
        for name, fig in figures.items():
            fig.savefig(fig_dir / f"{name}.png", dpi=110)
            plt.close(fig)
    write_text_atomic(out / "report.md", render_markdown(context))
    write_text_atomic(out / "index.html", render_html(context))
    return {"methods": methods, "figures": list(figures), "pairs": summary.get("pairs")}


# ------------------------------------------------------------------------------------------------ text


def _setup_lines(ctx: dict[str, Any]) -> list[tuple[str, str]]:
    p: Params = ctx["params"]
    stats = ctx["stats"]
    data = []
    for role in ("content", "style"):
        s = stats.get(role, {})
        source = getattr(p.fetch, role).source
        counts = f"{s.get('train', '?')} train / {s.get('val', '?')} val / {s.get('test', '?')} test"
        data.append(
            (
                f"{role} images",
                f"{s.get('usable', '?')} usable from `{source}` ({s.get('skipped', 0)} skipped): {counts}",
            )
        )
    scorer = ctx["scoring"].get("scorer", {})
    lines = [
        ("profile", p.profile),
        *data,
        ("image size", f"{p.prepare.resize.edge} side scaled to {p.prepare.resize.side_px} px"),
        ("test pairs", f"{ctx['summary'].get('pairs')} (every test content x every test style)"),
        ("scorer", f"VGG-19 `{scorer.get('encoder', 'caffe')}` weights, sha256 `{scorer.get('encoder_sha256', '?')}`"),
        ("method encoder", f"`{p.encoder.weights}` ({p.encoder.pool} pooling)"),
        ("git", f"`{ctx['git_sha']}`"),
        ("created", ctx["created"]),
    ]
    for method in ctx["methods"]:
        section = getattr(p.methods, method, None)
        if section is not None:
            shown = ", ".join(f"{k}={v}" for k, v in section.model_dump().items())
            lines.append((f"{method} parameters", shown))
    return lines


def _caveats(ctx: dict[str, Any]) -> list[str]:
    notes = []
    lpips = ctx["scoring"].get("lpips", "")
    if not lpips.startswith("available"):
        notes.append(f"LPIPS is n/a: {lpips.removeprefix('n/a: ')}")
    pairs = ctx["summary"].get("pairs") or 0
    if pairs < 30:
        notes.append(f"Only {pairs} test pairs: confidence intervals are wide and rankings can flip; use the full "
                     "profile (`profile: full`) for conclusions.")  # fmt: skip
    notes.append("Seconds and memory depend on the machine and device (see timing.csv per method); peak memory on the "
                 "CPU is the process's resident set size, on CUDA the allocator's peak.")  # fmt: skip
    notes.append("Loss values are on the caffe VGG-19's scale (0..255 inputs), so compare them between rows, not "
                 "with numbers from other papers.")  # fmt: skip
    return notes


def render_markdown(ctx: dict[str, Any]) -> str:
    out = ["# nst-bench: method comparison", "", "## Set-up", ""]
    out += [f"- **{k}**: {v}" for k, v in _setup_lines(ctx)]
    out += ["", "## Comparison (mean [95% bootstrap CI] over test pairs; ★ = best method)", ""]
    out += [rep.markdown_table(ctx["rows"]), ""]
    if ctx["tuning"]:
        used = "used by train/stylize" if ctx["use_tuned"] else "NOT used: tune.use_tuned is false"
        out += [f"## Tuned weights (Optuna on the val split; {used})", ""]
        cols = list(ctx["tuning"][0])
        out += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        out += ["| " + " | ".join(r[c] for c in cols) + " |" for r in ctx["tuning"]] + [""]
    out += ["## Figures", ""]
    out += [f"![{name}](figures/{name}.png)" for name in ctx["figures"]]
    out += ["", "## How to read this", ""]
    out += [f"- **{m}** ({'higher' if METRICS[m].higher_is_better else 'lower'} is better): {rep.HOW_TO_READ[m]}"
            for m in METRICS]  # fmt: skip
    out += ["", "## Caveats", ""] + [f"- {c}" for c in _caveats(ctx)] + [""]
    return "\n".join(out)


CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #1d2330; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 1px solid #d8dde6; padding-bottom: 0.2rem; margin-top: 2rem; }
.sub { color: #5b6475; margin-top: 0; }
dl.setup { display: grid; grid-template-columns: max-content 1fr; gap: 0.2rem 1rem; }
dl.setup dt { font-weight: 600; } dl.setup dd { margin: 0; overflow-wrap: anywhere; }
table.comparison, table.tuned { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums;
  font-size: 14px; }
table.comparison th, table.comparison td, table.tuned th, table.tuned td { border: 1px solid #d8dde6;
  padding: 0.35rem 0.5rem; text-align: right; }
table.comparison thead th, table.tuned thead th { background: #f1f4f9; }
table.comparison tbody th, table.tuned td { text-align: left; }
td.best { background: #e3f6e8; font-weight: 600; } td.na { color: #98a1b3; }
tr.reference { color: #5b6475; font-style: italic; background: #fafbfc; }
figure { margin: 1rem 0; } figure img { max-width: 100%; border: 1px solid #e4e8ef; }
figcaption { color: #5b6475; font-size: 13px; }
ul.read li { margin-bottom: 0.3rem; }
"""

CAPTIONS = {
    "metrics": "Per-pair values of every metric by method (arrows: better direction).",
    "tradeoff": "Content vs style loss, one point per pair; lower-left is better. Crosses are the reference rows.",
    "losses": "Optimisation / training loss per step, mean over pairs.",
    "speed_memory": "Seconds and peak memory per image.",
    "side_by_side": "A few pairs side by side: content, style, then every method.",
    "tuning": "Tuning on the val split: every trial (grey), the Pareto front (line) and the chosen weights (star).",
}


def render_html(ctx: dict[str, Any]) -> str:
    e = html.escape

    def md_code(text: str) -> str:  # the setup lines use `code` spans
        parts = e(text).split("`")
        return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))

    setup = "".join(f"<dt>{e(k)}</dt><dd>{md_code(v)}</dd>" for k, v in _setup_lines(ctx))
    figures = "".join(
        f'<figure><img src="figures/{e(n)}.png" alt="{e(n)}"><figcaption>'
        f"{e(CAPTIONS.get(n, n.replace('grid_', '') + ': every test content (rows) x test style (columns)'))}"
        "</figcaption></figure>"
        for n in ctx["figures"]
    )
    read = "".join(
        f"<li><b>{e(m)}</b> ({'higher' if METRICS[m].higher_is_better else 'lower'} is better): "
        f"{e(rep.HOW_TO_READ[m])}</li>"
        for m in METRICS
    )
    caveats = "".join(f"<li>{e(c)}</li>" for c in _caveats(ctx))
    tuning = ""
    if ctx["tuning"]:
        cols = list(ctx["tuning"][0])
        used = "used by train and stylize" if ctx["use_tuned"] else "<b>not</b> used: tune.use_tuned is false"
        tuning = (f"<h2>Tuned weights</h2><p>Optuna, two objectives on the val split; {used}.</p>"
                  '<table class="tuned"><thead><tr>' + "".join(f"<th>{e(c)}</th>" for c in cols)
                  + "</tr></thead><tbody>"
                  + "".join("<tr>" + "".join(f"<td>{e(r[c])}</td>" for c in cols) + "</tr>" for r in ctx["tuning"])
                  + "</tbody></table>")  # fmt: skip
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>nst-bench report</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>
<body>
<h1>nst-bench: method comparison</h1>
<p class="sub">Which neural-style-transfer method renders street photos in the style of paintings best, and at what
cost. Generated {e(ctx["created"])}.</p>
<h2>Comparison</h2>
<p>Mean [95% bootstrap CI] over the test pairs; ★ marks the best method per metric; reference rows calibrate each
metric's range.</p>
{rep.html_table(ctx["rows"])}
{tuning}
<h2>Figures</h2>
{figures}
<h2>How to read this</h2>
<ul class="read">{read}</ul>
<h2>Caveats</h2>
<ul>{caveats}</ul>
<h2>Set-up</h2>
<dl class="setup">{setup}</dl>
</body></html>
"""


# ------------------------------------------------------------------------------------------------ CLI


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="render the method comparison report (stage)", description=__doc__)
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
        "report", None, {"profile": params.profile}, uri=params.tracking.uri, experiment=params.tracking.experiment
    ) as logger:
        info = build(params, args.metrics, args.outputs, args.prepared, args.tuning, args.out, args.models)
        logger.log_artifact(args.out / "index.html", "report")
        logger.log_artifact(args.out / "report.md", "report")
        for fig in sorted((args.out / "figures").glob("*.png")):
            logger.log_artifact(fig, "report/figures")
    log.info("report: %s (%d figures)", args.out / "index.html", len(info["figures"]))
    return 0
