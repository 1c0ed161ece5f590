"""Benchmark: start-up time of the `nst` command line -> JSON (issue 18: `nst --help` should take under 1.5 s; a
one-off `nst stylize` spent about 6 s before it started work).

    python bench/startup.py                                        # 5 runs each -> bench/results/startup.json
    python bench/startup.py --runs 10 --out bench/results/startup_after.json

Every run is a fresh process of this interpreter, timed from spawn to exit (wall clock, and the CPU seconds it used),
after ``--warmup`` untimed runs of each command (default 1: byte-code written, the OS file cache warm, for every run
alike). The machine's load average before and after is recorded: other processes slow start-up down.

  help     `nst --help`
  import   `python -c "import pipeline.stages.stylize"`: what the one-off stylize imports before it does anything
  stylize  `nst stylize --method gatys --set iterations=0 CONTENT STYLE -o <tmp>.png` from the repository root (so
           params.yaml is read): a real one-off run that optimises nothing. Its wall time is start-up (imports,
           config, encoder load, image IO) plus the seconds the command itself reports for stylizing the pair (with 0
           iterations: one encoder pass each over content and style for the targets); both parts are reported.

Reported per command: median and min over the runs (and max, all runs, CPU seconds). `nst` is run as its console
script does (`from pipeline.cli import main; sys.exit(main())`) with this repository first on sys.path, so the code
measured is this checkout's, whichever one `.venv` is installed from. Also, from one `python -X importtime` run each:
the top modules by cumulative import time for `import pipeline.stages.stylize`, the top-level packages by their own
import time, and which heavy packages `nst --help` and `import pipeline.stages.stylize` load.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline.tracking import git_sha  # noqa: E402  (light: mlflow loads only when a run is opened)

NST = "import sys; from pipeline.cli import main; sys.argv[0] = 'nst'; sys.exit(main())"  # the console script
HEAVY = (
    "torch",
    "torchvision",
    "mlflow",
    "optuna",
    "pandas",
    "matplotlib",
    "seaborn",
    "pyarrow",
    "scipy",
    "sklearn",
    "onnxruntime",
    "lpips",
    "piq",
    "dvc",
    "PIL",
    "numpy",
    "pydantic",
    "yaml",
)
IMPORTTIME = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)\s*$")


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.update(MLFLOW_DISABLE_TELEMETRY="true", TQDM_DISABLE="1")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """Wall and CPU (user + system) seconds of one child process run to its end."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr[-4000:]}")
    return wall, cpu, done


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median_s": round(statistics.median(values), 4),
        "min_s": round(min(values), 4),
        "max_s": round(max(values), 4),
    }


def measure(name: str, shown: str, argv: list[str], runs: int, warmup: int, env: dict[str, str], check=None) -> dict:
    for _ in range(warmup):  # untimed
        run_once(argv, env)
    walls, cpus, extras = [], [], []
    for _ in range(runs):
        wall, cpu, done = run_once(argv, env)
        walls.append(wall)
        cpus.append(cpu)
        if check is not None and (extra := check(done, wall)) is not None:
            extras.append(extra)
    row = {
        "name": name,
        "command": shown,
        "runs": runs,
        **summary(walls),
        "cpu_median_s": round(statistics.median(cpus), 4),
        "all_s": [round(w, 4) for w in walls],
    }
    print(f"{name:8s} median {row['median_s']:.3f} s  min {row['min_s']:.3f} s  ({shown})", flush=True)
    return row | ({"per_run": extras} if extras else {})


def importtime(code: str, env: dict[str, str], top: int) -> dict:
    """``python -X importtime -c code``: the top modules by cumulative time, top-level packages by own time, and which
    of HEAVY were imported (microseconds, as Python reports them; importtime itself adds some overhead)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    rows = []
    for line in done.stderr.splitlines():
        if m := IMPORTTIME.match(line):
            rows.append({"module": m[4], "self_us": int(m[1]), "cumulative_us": int(m[2]), "depth": len(m[3]) // 2})
    if done.returncode != 0 or not rows:
        raise SystemExit(f"python -X importtime -c {code!r} failed:\n{done.stderr[-4000:]}")
    packages: dict[str, int] = {}
    for r in rows:
        packages[r["module"].split(".")[0]] = packages.get(r["module"].split(".")[0], 0) + r["self_us"]
    ranked = sorted(packages.items(), key=lambda kv: -kv[1])
    return {
        "modules": len(rows),
        "total_us": sum(r["self_us"] for r in rows),
        "heavy_imported": [h for h in HEAVY if h in packages],
        "top_cumulative": sorted(rows, key=lambda r: -r["cumulative_us"])[:top],
        "top_packages_self": [{"package": p, "self_us": us} for p, us in ranked[:top]],
    }


def shown_path(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def build_parser() -> argparse.ArgumentParser:
    """The command line (the module docstring is its description)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per command (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of each command first (default 1)")
    parser.add_argument(
        "--content",
        type=Path,
        default=ROOT / "data/sample/content/building.jpg",
        help="the one-off's content image (default: the sample's building.jpg, a test content)",
    )
    parser.add_argument(
        "--style",
        type=Path,
        default=ROOT / "data/sample/style/scream.jpg",
        help="the one-off's style image (default: the sample's scream.jpg, a test style)",
    )
    parser.add_argument(
        "--commands", nargs="+", choices=["help", "import", "stylize"], default=["help", "import", "stylize"]
    )
    parser.add_argument("--top", type=int, default=10, help="modules / packages listed from -X importtime")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/startup.json")
    return parser


def help_row(py: list[str], runs: int, warmup: int, env: dict[str, str]) -> dict:
    """``nst --help`` timed (:func:`measure`); exits when its output does not list stylize."""

    def lists_stylize(done: subprocess.CompletedProcess[str], _wall: float) -> None:
        if "stylize" not in done.stdout:
            raise SystemExit(f"nst --help does not list stylize:\n{done.stdout}")

    return measure("help", "nst --help", [*py, "-c", NST, "--help"], runs, warmup, env, lists_stylize)


def stylize_row(
    py: list[str], content: Path, style: Path, out: Path, runs: int, warmup: int, env: dict[str, str]
) -> dict:
    """A one-off ``nst stylize`` (Gatys, 0 iterations, to ``out``) timed (:func:`measure`), each run's wall time
    split into the stylize seconds it reports and the start-up around them; exits when it writes no ``out``."""
    cli = ["stylize", "--method", "gatys", "--set", "iterations=0", str(content), str(style), "-o", str(out)]

    def split_wall(done: subprocess.CompletedProcess[str], wall: float) -> dict:
        reported = json.loads(done.stdout.strip().splitlines()[-1])
        if not out.is_file():
            raise SystemExit(f"nst stylize wrote no {out}")
        out.unlink()
        return {"stylize_reported_s": reported["seconds"], "startup_s": round(wall - reported["seconds"], 4)}

    shown = " ".join(["nst", *cli[:5], shown_path(content), shown_path(style), "-o", "<tmp>.png"])
    row = measure("stylize", shown, [*py, "-c", NST, *cli], runs, warmup, env, split_wall)
    row["stylize_reported_median_s"] = statistics.median(r["stylize_reported_s"] for r in row["per_run"])
    row["startup_median_s"] = round(statistics.median(r["startup_s"] for r in row["per_run"]), 4)
    row["startup_min_s"] = round(min(r["startup_s"] for r in row["per_run"]), 4)
    row["cwd"] = "repository root (params.yaml read)"
    print(f"{'':9s}start-up (wall minus its own stylize seconds): median {row['startup_median_s']:.3f} s")
    return row


def import_reports(commands: list[str], env: dict[str, str], top: int) -> dict[str, dict]:
    """:func:`importtime` reports of ``import pipeline.stages.stylize`` (for the import and stylize commands) and of
    ``nst --help`` (for help), by what was imported."""
    imports = {}
    if "import" in commands or "stylize" in commands:
        imports["import pipeline.stages.stylize"] = importtime("import pipeline.stages.stylize", env, top)
    if "help" in commands:  # the heavy packages `nst --help` loads (none, ideally)
        report = importtime(
            f"import sys; sys.argv = ['nst', '--help']\ntry:\n    {NST}\nexcept SystemExit:\n    pass", env, top
        )
        imports["nst --help"] = {k: report[k] for k in ("modules", "total_us", "heavy_imported", "top_packages_self")}
    return imports


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    env = child_env()
    py = [sys.executable]
    load_before = [round(x, 2) for x in os.getloadavg()]
    results = []
    with tempfile.TemporaryDirectory(prefix="nst-startup-") as tmp:
        if "help" in args.commands:
            results.append(help_row(py, args.runs, args.warmup, env))
        if "import" in args.commands:
            code = "import pipeline.stages.stylize"
            results.append(measure("import", f'python -c "{code}"', [*py, "-c", code], args.runs, args.warmup, env))
        if "stylize" in args.commands:
            content, style, out = args.content.resolve(), args.style.resolve(), Path(tmp) / "out.png"
            results.append(stylize_row(py, content, style, out, args.runs, args.warmup, env))
    imports = import_reports(args.commands, env, args.top)

    from _report import write_report  # bench/ is on sys.path as the script's folder; it imports torch (after the runs)

    write_report(
        "startup",
        results,
        args.out,
        git_sha=git_sha(ROOT),
        python=sys.version.split()[0],
        cpu_count=os.cpu_count(),
        load_average_before=load_before,
        load_average_after=[round(x, 2) for x in os.getloadavg()],
        importtime=imports,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
