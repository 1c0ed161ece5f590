"""`make rehearse`: the full profile, rehearsed end to end on this machine (issue 25).

Copies the repository (what a fresh clone holds) to a temporary folder, starts loopback fakes of the Hugging Face Hub
(tests/fakes/hub.py: parquet shards in huggan/wikiart's layout) and of Mapillary's Graph API (tests/fakes/mapillary.py),
points the copy's params.yaml at them with ``profile: rehearsal`` (profiles/full.yaml + profiles/rehearsal.yaml: the
full profile with only sizes shrunk), runs ``dvc repro`` there, prints each stage's time and checks that every stage of
dvc.yaml ran. Everything it started (the fakes, dvc and its stages) is stopped when it ends, also on Ctrl-C or SIGTERM.

    python tests/rehearse.py [--keep DIR] [--json FILE] [--timeout-s 1200] [--stop-after STAGE]

Exit status 0 when every stage ran; 1 when one failed (its output is printed); 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))

from fakes.hub import FakeHub, wikiart_shards  # noqa: E402
from fakes.mapillary import FakeMapillary  # noqa: E402

BIN = Path(sys.executable).parent
TOKEN = "rehearsal-token"  # the fake Mapillary's access token (MAPILLARY_TOKEN in the stages' environment)
STAGE_LINE = re.compile(r"^Running stage '([^']+)'")
# The fake Hub's shards: 12 of 1,100 rows, as huggan/wikiart's 72 of ~1,130 (the writer falls back to plain pages);
# 96 x 72 px paintings, above prepare.min_side (64) as real paintings are.
HUB_SHARDS, HUB_ROWS, HUB_IMAGE = 12, 1100, (96, 72)
# The fake Mapillary's dense box (params.yaml's bbox) stalls past profiles/rehearsal.yaml's fetch.download.timeout_s
# (5 s), so the fetch must split it after its retries, as a real dense city centre would make it.
MAPILLARY_STALL_S = 6.0


def dvc_stages(repo: Path) -> list[str]:
    """Every stage instance of ``repo``'s dvc.yaml (``foreach`` expanded: ``tune@gatys``, ...)."""
    doc = yaml.safe_load((repo / "dvc.yaml").read_text(encoding="utf-8"))
    names = []
    for name, stage in doc["stages"].items():
        items = stage.get("foreach")
        names += [f"{name}@{item}" for item in items] if items else [name]
    return names


def copy_repository(dest: Path) -> Path:
    """What a fresh clone holds (tracked and untracked-but-not-ignored files) in ``dest``, a new git repository."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True, timeout=60)
    return dest


def point_at(repo: Path, hub: str, mapillary: str) -> None:
    """``profile: rehearsal`` and the fakes' addresses in the copy's params.yaml (not the profiles: the rehearsal and
    full profiles stay identical but for sizes)."""
    path = repo / "params.yaml"
    text = path.read_text(encoding="utf-8")
    edits = [
        (r"(?m)^profile: \w+", "profile: rehearsal"),
        (r"(?m)^(    endpoint: )null", rf"\g<1>{hub}"),
        (r"(?m)^(    api_url: )\S+", rf"\g<1>{mapillary}"),
    ]
    for pattern, replacement in edits:
        text, n = re.subn(pattern, replacement, text, count=1)
        if n != 1:
            raise SystemExit(f"rehearse: {path}: no line matches {pattern!r} (params.yaml changed shape?)")
    # The scorer's weights (scorer_weights.<name>.url, hundreds of MB from the real hosts) on a refused loopback port:
    # the scorer-weights stage records them absent at once, as offline.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{sock.getsockname()[1]}"
    text, n = re.subn(r"(?m)^(    url: )https://\S+/([^/\s]+\.pth)", rf"\g<1>{refused}/\g<2>", text)
    if n != 4:
        raise SystemExit(f"rehearse: {path}: {n} scorer_weights URLs, expected 4 (params.yaml changed shape?)")
    path.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def services(stall_s: float = MAPILLARY_STALL_S) -> Iterator[tuple[FakeHub, FakeMapillary]]:
    shards = wikiart_shards(HUB_SHARDS, HUB_ROWS, image_size=HUB_IMAGE)
    with FakeHub(dict(shards.items())) as hub, FakeMapillary(token=TOKEN, stall_s=stall_s) as mapillary:
        yield hub, mapillary


def run_dvc(repo: Path, env: dict[str, str], timeout_s: float, stop_after: str | None) -> tuple[int, dict[str, float]]:
    """``dvc repro`` (``stop_after``: up to that stage) in ``repo`` in its own process group, echoing its output;
    returns the exit status and each stage's seconds (from its "Running stage" line to the next one or the end)."""
    cmd = [str(BIN / "dvc"), "repro", *([stop_after] if stop_after else [])]
    proc = subprocess.Popen(
        cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    times: dict[str, float] = {}
    current: list[tuple[str, float]] = []
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        _kill(proc)

    killer = threading.Timer(timeout_s, expire)
    killer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            match = STAGE_LINE.match(line)
            if match:
                now = time.monotonic()
                if current:
                    times[current[-1][0]] = now - current[-1][1]
                current.append((match.group(1), now))
        rc = proc.wait()
    finally:
        killer.cancel()
        _kill(proc)
    if current and current[-1][0] not in times:
        times[current[-1][0]] = time.monotonic() - current[-1][1]
    if timed_out.is_set():
        print(f"rehearse: dvc repro ran past {timeout_s:.0f} s and was stopped", file=sys.stderr)
        rc = 124
    return rc, times


def _kill(proc: subprocess.Popen) -> None:
    """Stop ``proc``'s whole process group (dvc and the stage it runs): SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def rehearse(
    work: Path, timeout_s: float = 1200.0, stop_after: str | None = None, stall_s: float = MAPILLARY_STALL_S
) -> dict:
    """The whole rehearsal in ``work`` (created); returns its summary (also written to ``work/rehearsal.json``).
    ``stall_s``: how long the fake Mapillary holds its dense box's searches (past the 5 s timeout by default; shorter,
    the box answers 504 after the stall instead, and is split just the same)."""
    repo = copy_repository(work / "repo")
    started = time.monotonic()
    with services(stall_s) as (hub, mapillary):
        point_at(repo, hub.url, mapillary.url)
        env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(repo),  # the copy's code, not the editable install's
            "MAPILLARY_TOKEN": TOKEN,
            "DVC_NO_ANALYTICS": "1",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }
        env.pop("HF_ENDPOINT", None)  # params.yaml names the fake
        env.pop("MLFLOW_TRACKING_URI", None)  # the copy's own mlflow.db
        rc, times = run_dvc(repo, env, timeout_s, stop_after)
    # up to a stage: it and what it depends on (dvc decides which); the whole rehearsal: every stage of dvc.yaml
    expected = [stop_after] if stop_after else dvc_stages(repo)
    summary = {
        "returncode": rc,
        "seconds": round(time.monotonic() - started, 1),
        "stages": {name: round(s, 1) for name, s in times.items()},
        "missing": [s for s in expected if s not in times],
        "failed_at": next(reversed(times), None) if rc != 0 else None,  # the stage dvc was running when it stopped
        "title": _report_title(repo),
        "repo": str(repo),
    }
    (work / "rehearsal.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def _report_title(repo: Path) -> str | None:
    index = repo / "reports" / "index.html"
    if not index.is_file():
        return None
    match = re.search(r"<title>(.*?)</title>", index.read_text(encoding="utf-8"))
    return match.group(1) if match else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keep", type=Path, default=None, help="rehearse in this folder and keep it (default: a temp dir)")
    p.add_argument("--json", type=Path, default=None, help="also write the summary here")
    p.add_argument("--timeout-s", type=float, default=1200.0, help="stop dvc repro after this long (default 1200)")
    p.add_argument("--stop-after", default=None, help="reproduce only up to this stage (e.g. tune@adain)")
    args = p.parse_args(argv)
    # SIGTERM ends like Ctrl-C: the context managers stop the fakes and _kill stops dvc's process group.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    tmp = None
    if args.keep is None:
        tmp = Path(tempfile.mkdtemp(prefix="nst-rehearsal-"))
    work = args.keep or tmp
    assert work is not None
    work.mkdir(parents=True, exist_ok=True)
    try:
        summary = rehearse(work, args.timeout_s, args.stop_after)
    except KeyboardInterrupt:
        print("rehearse: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print("\nrehearsal: stage times (s)")
    for name, seconds in summary["stages"].items():
        print(f"  {name:<22} {seconds:8.1f}")
    print(f"  {'total':<22} {summary['seconds']:8.1f}")
    ok = summary["returncode"] == 0 and not summary["missing"]
    if not ok:
        print(
            f"rehearsal FAILED at {summary['failed_at']}: dvc repro exit {summary['returncode']}; stages not run: "
            f"{summary['missing']}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
