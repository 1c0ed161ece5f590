"""Benchmark: the study server under load on 127.0.0.1 -> JSON (issue 28: 50 concurrent voters casting 1,000 votes in
all; 0 lost, 0 answers of 5xx, p50/p95 latency).

    python bench/judge_load.py                        # 50 voters x 20 votes -> bench/results/judge_load.json
    python bench/judge_load.py --voters 5 --votes 4 --out /tmp/j.json

A real uvicorn server (one process, the app of ``nst judge serve``) runs in a thread on a free port with a fresh sqlite
database (WAL) in a temporary folder, serving a synthetic study (``--methods`` methods x 4 pairs of 32 x 32 PNGs with
a timing.csv in stylize's format) unless ``--outputs``/``--paintings``/``--content`` name real ones. Each voter is
its own HTTP client with its own cookie: it opens the link, then repeatedly answers the question on the page (a
seeded random answer) and loads the next page, until it has cast ``--votes`` votes. All voters run at once (asyncio).
The voters' rate limit is raised out of the way: this measures the server and the database, not the limiter.

Reported: votes sent, accepted (200), stored (rows in the database afterwards), lost (accepted but not stored, or
sent without an answer), every status code seen, latency of the answer POSTs and of the page GETs (p50, p95, max in
ms), wall time, votes per second, the machine and its load average.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import platform
import random
import re
import secrets
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx2
import numpy as np
import uvicorn
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.judging import storage as st  # noqa: E402  (this checkout first on the path)
from pipeline.judging.server import Limits, create_app  # noqa: E402
from pipeline.judging.study import DECEPTION, PREFERENCE  # noqa: E402

BODY_ATTR = re.compile(r'data-(csrf|assignment|kind)="([^"]*)"')
ANSWERS = {PREFERENCE: ("left", "right", "tie"), DECEPTION: ("painting", "photo")}
TIMING_HEADER = (
    "content,style,file,seconds,peak_mem_mb,device,precision,cpu,content_sha256,style_sha256,"
    "loss_content,loss_style,loss_tv,loss_total"
)  # pipeline/stylize.py's TIMING_FIELDS
REQUEST_TIMEOUT_S = 60  # no request of the benchmark waits longer
SERVER_START_S = 30


def write_synthetic_study(root: Path, methods: int = 4, contents: int = 2, styles: int = 2, size: int = 32) -> Path:
    """``root/outputs/<m>/`` (PNGs + timing.csv) and ``root/test/{content,style}/``; returns ``root``."""
    rng = np.random.default_rng(0)

    def png(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)

    names_c = [f"photo{i}.png" for i in range(contents)]
    names_s = [f"painting{i}.png" for i in range(styles)]
    for name in names_c:
        png(root / "test" / "content" / name)
    for name in names_s:
        png(root / "test" / "style" / name)
    for k in range(methods):
        folder = root / "outputs" / f"method{k}"
        rows = []
        for c in names_c:
            for s in names_s:
                file = f"{Path(c).stem}__{Path(s).stem}.png"
                png(folder / file)
                rows.append(f"{c},{s},{file},0.1,100.0,cpu,fp32,test,{'0' * 64},{'1' * 64},,,,")
        (folder / "timing.csv").write_text(TIMING_HEADER + "\n" + "\n".join(rows) + "\n")
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(app: object, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread on a free port; yield its base URL; stop it (bounded) afterwards."""
    port = free_port()
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5, limit_concurrency=256
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + SERVER_START_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start within {SERVER_START_S} s")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


async def _voter(base: str, link: str, votes: int, seed: int, stats: dict) -> None:
    rng = random.Random(seed)
    async with httpx2.AsyncClient(base_url=base, timeout=REQUEST_TIMEOUT_S) as client:
        for _ in range(votes):
            t = time.perf_counter()
            page = await client.get(link)
            stats["page_ms"].append(1000 * (time.perf_counter() - t))
            stats["status"][f"GET {page.status_code}"] += 1
            attrs = dict(BODY_ATTR.findall(page.text))
            if page.status_code != 200 or "assignment" not in attrs:
                stats["unanswered"] += 1
                continue
            body = {"assignment": attrs["assignment"], "answer": rng.choice(ANSWERS[attrs["kind"]]), "response_ms": 1}
            t = time.perf_counter()
            r = await client.post(f"{link}answer", json=body, headers={"X-CSRF-Token": attrs["csrf"]})
            stats["answer_ms"].append(1000 * (time.perf_counter() - t))
            stats["status"][f"POST {r.status_code}"] += 1
            stats["sent"] += 1
            stats["accepted"] += r.status_code == 200


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "max": None, "n": 0}
    q = np.percentile(values, [50, 95])
    return {"p50": round(float(q[0]), 2), "p95": round(float(q[1]), 2), "max": round(max(values), 2), "n": len(values)}


def run(
    voters: int = 50,
    votes: int = 20,
    methods: int = 4,
    outputs: Path | None = None,
    paintings: Path | None = None,
    content: Path | None = None,
    workdir: Path | None = None,
) -> dict:
    """Run the load and return the results (see the module docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(workdir or tmp)
        if outputs is None:
            write_synthetic_study(root, methods=methods)
            outputs, paintings, content = root / "outputs", root / "test" / "style", root / "test" / "content"
        per_voter = {PREFERENCE: votes - votes // 4, DECEPTION: votes // 4}  # the default page's 2 : 1 mix, roughly
        db = f"sqlite:///{root / 'votes.db'}"
        secret = secrets.token_urlsafe(16)
        limits = Limits(votes_per_second=1e6, vote_burst=10**6, new_voters_per_second=1e6, new_voter_burst=10**6)
        app = create_app(
            "load", db, outputs, paintings, secret, "admin", content_dir=content, per_voter=per_voter, limits=limits
        )
        stats: dict = {"page_ms": [], "answer_ms": [], "status": Counter(), "sent": 0, "accepted": 0, "unanswered": 0}
        load_before = os.getloadavg()
        with running_server(app) as base:
            link = f"/s/{secret}/"

            async def everyone() -> None:
                await asyncio.gather(*(_voter(base, link, votes, i, stats) for i in range(voters)))

            t0 = time.perf_counter()
            asyncio.run(everyone())
            wall = time.perf_counter() - t0
        store = st.Storage(db)
        stored = store.row_counts()["votes"]
        exported = root / "votes.csv"
        store.export("load", exported)
        store.close()
        with exported.open(newline="") as f:
            complete = sum(
                all(row[c] for c in ("voter_id", "sha256_left", "git_sha", "answered_at")) for row in csv.DictReader(f)
            )
    status = dict(sorted(stats["status"].items()))
    return {
        "benchmark": "judge_load",
        "voters": voters,
        "votes_per_voter": votes,
        "votes_sent": stats["sent"],
        "votes_accepted": stats["accepted"],
        "votes_stored": stored,
        "votes_with_provenance": complete,
        "lost": voters * votes - stored,
        "server_errors_5xx": sum(n for k, n in status.items() if k.split()[1].startswith("5")),
        "status": status,
        "answer_latency_ms": _percentiles(stats["answer_ms"]),
        "page_latency_ms": _percentiles(stats["page_ms"]),
        "wall_s": round(wall, 3),
        "votes_per_s": round(stored / wall, 1) if wall else None,
        "server": "uvicorn, 1 process, asyncio loop; sqlite WAL in a temporary folder",
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "median_answer_ms": round(statistics.median(stats["answer_ms"]), 2) if stats["answer_ms"] else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--voters", type=int, default=50)
    p.add_argument("--votes", type=int, default=20, help="votes per voter")
    p.add_argument("--methods", type=int, default=4, help="methods of the synthetic study")
    p.add_argument("--outputs", type=Path, default=None, help="a real outputs/ folder instead of the synthetic study")
    p.add_argument("--paintings", type=Path, default=None)
    p.add_argument("--content", type=Path, default=None)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "judge_load.json")
    args = p.parse_args(argv)
    result = run(args.voters, args.votes, args.methods, args.outputs, args.paintings, args.content)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["lost"] == 0 and result["server_errors_5xx"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
