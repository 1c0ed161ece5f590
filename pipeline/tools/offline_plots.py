"""``nst plots``: `dvc plots show` that works offline.

DVC's HTML loads vega, vega-lite and vega-embed from a CDN, so it renders blank without internet. This command
installs the same releases from the npm registry into a cache folder (once), inlines them into an HTML template
(without DVC's ``{scripts}`` placeholder, so no CDN tags are added) and runs ``dvc plots show --html-template``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
from pathlib import Path

from methods.errors import NstError
from pipeline.commands import add_command
from pipeline.io import write_text_atomic

log = logging.getLogger(__name__)

# The major versions dvc-render 1.x references (dvc_render/vega.py pins vega 5.20.2, vega-lite 5.2.0, vega-embed
# 6.18.2, which conflict as npm peers: vega-lite 5.2.0 wants vega >= 5.21); npm resolves the newest compatible set.
PACKAGES = {"vega": "5", "vega-lite": "5", "vega-embed": "6"}
BUNDLES = {"vega": "build/vega.min.js", "vega-lite": "build/vega-lite.min.js", "vega-embed": "build/vega-embed.min.js"}


class PlotsError(NstError):
    """npm or dvc failed."""


def ensure_vega(prefix: Path) -> dict[str, Path]:
    """Install the vega packages under ``prefix`` with npm unless present; return the bundle paths."""
    bundles = {name: prefix / "node_modules" / name / rel for name, rel in BUNDLES.items()}
    if all(p.is_file() for p in bundles.values()):
        return bundles
    npm = shutil.which("npm")
    if npm is None:
        raise PlotsError(
            "npm is not installed: it fetches vega for offline plots (apt install npm, or use a browser "
            "with internet access on `dvc plots show`)"
        )
    prefix.mkdir(parents=True, exist_ok=True)
    cmd = [
        npm,
        "install",
        "--no-audit",
        "--no-fund",
        "--silent",
        "--prefix",
        str(prefix),
        *(f"{k}@{v}" for k, v in PACKAGES.items()),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 or not all(p.is_file() for p in bundles.values()):
        raise PlotsError(f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return bundles


def template(bundles: dict[str, Path]) -> str:
    """An HTML template for `dvc plots show --html-template` with vega inlined (no network needed)."""
    scripts = "\n".join(
        f"<script>/* {name} {PACKAGES[name]} */\n{path.read_text(encoding='utf-8')}\n</script>"
        for name, path in bundles.items()
    )
    return (
        '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n<title>nst-bench DVC plots</title>\n'
        f"{scripts}\n<style>table {{ border-spacing: 15px; }}</style>\n</head>\n"
        "<body>\n{plot_divs}\n</body>\n</html>\n"
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "plots", description=__doc__)
    p.add_argument("--out", type=Path, default=Path("reports/dvc_plots"), help="output folder (index.html)")
    p.add_argument("--cache", type=Path, default=Path(".cache/vega"), help="npm prefix for the vega packages")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    bundles = ensure_vega(args.cache)
    tmpl = args.cache / "template.html"
    write_text_atomic(tmpl, template(bundles))
    dvc = shutil.which("dvc")
    if dvc is None:
        raise PlotsError("dvc is not on PATH")
    proc = subprocess.run(
        [dvc, "plots", "show", "--html-template", str(tmpl), "-o", str(args.out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        raise PlotsError(f"dvc plots show failed: {proc.stderr.strip()[-500:]}")
    log.info("plots: %s (opens offline)", args.out / "index.html")
    return 0
