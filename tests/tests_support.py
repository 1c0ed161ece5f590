"""Helpers shared by test modules (not fixtures): a real `mlflow server` on 127.0.0.1, Debian's Chromium with
offline-safe flags, and a copy of this checkout as a fresh clone holds it."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_mlflow_server(store_uri: str, artifacts: Path) -> Iterator[str]:
    """Start `mlflow server` (backend ``store_uri``, artifacts proxied into ``artifacts``); yield its base URL."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        store_uri,
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited: {proc.stdout.read() if proc.stdout else ''}")
            try:
                if requests.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not answer /health within 120 s")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


# Debian's Chromium (`.ci/run` installs it) for the Playwright tests; None skips them with the reason.
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Offline-safe flags: no background connections, no sandbox (CI runs as root).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NEEDS_CHROMIUM = pytest.mark.skipif(CHROMIUM is None, reason="Chromium not found (Debian: apt-get install chromium)")
ARTIFACTS = Path(__file__).parent / ".artifacts"  # the browser tests' screenshots, for people to look at (git-ignored)


def copy_checkout(src: Path, dest: Path) -> Path:
    """What a fresh clone of ``src`` holds, working-tree edits included: its tracked and untracked-but-not-ignored
    files, copied into ``dest``, a new git repository."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=src, capture_output=True, check=True
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        if (src / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, dest / rel)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True, timeout=60)
    return dest
