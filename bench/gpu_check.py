"""Full-scale settings on a CUDA machine, in minutes: a short slice of every stage, then the benchmarks -> JSON.

    python bench/gpu_check.py                      # on a CUDA machine (H100/H200 class: about 6 minutes)
    python bench/gpu_check.py --device cpu --tiny  # a smoke test of this script on a CPU (about 3 minutes)

The GPU machine has no internet, so the data is the embedded sample; everything else is ``profiles/full.yaml``:
512 px short side, bf16 autocast + channels_last, the paper batch sizes (AdaIN 8, contrastive 6 x 6 -> 12) and crops
(256 px), Gatys from noise at 512 px. Only the lengths are cut: a few hundred training iterations, 2 tuning trials per
method, 100 Gatys iterations. Each stage runs through the real `nst` command in a scratch copy of the repository; the
per-stage seconds, the training it/s and the benchmark results land in ``--out`` (default
bench/results/gpu_check.json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def settings(raw: dict, device: str, tiny: bool) -> tuple[dict, dict]:
    """params.yaml switched to ``profile: full`` and the full overlay with the short lengths of the module docstring."""
    raw["profile"] = "full"
    raw["base"]["device"] = device
    full = yaml.safe_load((ROOT / "profiles/full.yaml").read_text())
    full["base"]["device"] = device
    full["fetch"]["content"]["source"] = full["fetch"]["style"]["source"] = "sample"  # no internet on the machine
    full["prepare"]["split"] = {"train": 0.5, "val": 0.25, "test": 0.25}  # 15 sample images: every split gets some
    full["methods"]["gatys"]["iterations"] = 5 if tiny else 100
    for method, its in (("adain", 400), ("contrastive", 200)):
        full["methods"][method]["train"].update(iterations=3 if tiny else its, checkpoint_every=100, sample_every=100,
                                                log_every=10)  # fmt: skip
    full["tune"]["gatys"].update(trials=2, budget={"iterations": 2 if tiny else 20, "image_size": 256})
    for method in ("adain", "contrastive"):
        full["tune"][method].update(trials=2, budget={"train": {"iterations": 2 if tiny else 50}}, prune_every=0)
    if tiny:  # CPU smoke test: small images, small batches
        full["prepare"]["resize"]["side_px"] = 96
        full["methods"]["gatys"]["image_size"] = 64
        full["tune"]["gatys"]["budget"]["image_size"] = 64
        full["methods"]["adain"]["train"].update(batch_size=2, resize_short=64, crop=64)
        full["methods"]["contrastive"]["train"].update(batch_size=4, resize_short=64, crop=64)
    return raw, full


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--tiny", action="store_true", help="smoke-test sizes (for checking the script on a CPU)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/gpu_check.json")
    parser.add_argument("--skip-bench", action="store_true")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (use --device cpu --tiny to smoke-test the script)", file=sys.stderr)
        return 2
    report: dict = {"device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu", "stages": {},
                    "torch": torch.__version__, "tiny": args.tiny}  # fmt: skip
    nst = str(Path(sys.executable).parent / "nst")
    with tempfile.TemporaryDirectory(prefix="nst-gpu-check-") as tmp:
        work = Path(tmp) / "repo"
        skip = shutil.ignore_patterns(
            ".venv",
            ".git",
            "raw",
            "prepared",
            "cache",
            ".cache",
            "outputs",
            "models",
            "mlflow.db",
            "mlartifacts",
            "reports",
            ".artifacts",
        )
        shutil.copytree(ROOT, work, ignore=skip)
        raw, full = settings(yaml.safe_load((work / "params.yaml").read_text()), args.device, args.tiny)
        (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        (work / "profiles/full.yaml").write_text(yaml.safe_dump(full, sort_keys=False))
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
        p = ["--params", "params.yaml"]
        val = ["--val-content", "data/prepared/val/content", "--val-style", "data/prepared/val/style"]
        train = ["--content", "data/prepared/train/content", "--style", "data/prepared/train/style"]
        test = ["--content", "data/prepared/test/content", "--style", "data/prepared/test/style"]
        stages = [
            ("fetch", ["fetch", *p, "--out", "data/raw"]),
            ("prepare", ["prepare", *p, "--raw", "data/raw", "--out", "data/prepared"]),
            *[(f"tune@{m}", ["tune", "--method", m, *p, *val, "--out", f"reports/tuning/{m}"])
              for m in ("gatys", "adain", "contrastive")],
            *[(f"train@{m}", ["train", "--method", m, *p, "--tuned", f"reports/tuning/{m}/best.yaml", *train, "--out",
                              f"models/{m}"]) for m in ("adain", "contrastive")],
            ("stylize@gatys", ["stylize-stage", "--method", "gatys", *p, "--tuned", "reports/tuning/gatys/best.yaml",
                               *test, "--out", "outputs/gatys"]),
            *[(f"stylize@{m}", ["stylize-stage", "--method", m, *p, "--model", f"models/{m}", "--tuned",
                                f"reports/tuning/{m}/best.yaml", *test, "--out", f"outputs/{m}"])
              for m in ("adain", "contrastive")],
            ("evaluate", ["evaluate", *p, "--outputs", "outputs", *test, "--out", "reports/metrics"]),
            ("report", ["report", *p, "--out", "reports"]),
        ]  # fmt: skip
        for name, argv_stage in stages:
            started = time.perf_counter()
            proc = subprocess.run([nst, *argv_stage], cwd=work, env=env, capture_output=True, text=True)
            report["stages"][name] = {"seconds": round(time.perf_counter() - started, 2), "rc": proc.returncode}
            print(json.dumps({name: report["stages"][name]}), flush=True)
            if proc.returncode != 0:
                report["stages"][name]["stderr"] = proc.stderr[-4000:]
                break
        for m in ("adain", "contrastive"):
            metrics = work / "models" / m / "train_metrics.json"
            if metrics.is_file():
                report[f"train_{m}"] = json.loads(metrics.read_text())
        summary = work / "reports/metrics/summary.json"
        if summary.is_file():
            report["summary"] = json.loads(summary.read_text())
    if not args.skip_bench:
        sizes = ["256"] if args.tiny else ["512"]
        for script, extra in (("gatys.py", []), ("feedforward.py", ["--method", "adain"]),
                              ("feedforward.py", ["--method", "contrastive"])):  # fmt: skip
            out = Path(tempfile.mkdtemp()) / "bench.json"
            cmd = [sys.executable, str(ROOT / "bench" / script), *extra, "--sizes", *sizes, "--devices", args.device,
                   "--out", str(out)]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True)
            key = f"bench_{script.removesuffix('.py')}" + (f"_{extra[1]}" if extra else "")
            report[key] = json.loads(out.read_text())["results"] if proc.returncode == 0 else proc.stderr[-2000:]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if all(s["rc"] == 0 for s in report["stages"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
