"""The test suite's own guards: it refuses to start on a disk too full to hold its temporary folders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _pytest(tmp_path: Path, min_free_mb: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "NST_TEST_MIN_FREE_MB": str(min_free_mb)}
    env.pop("PYTEST_XDIST_WORKER", None)
    argv = ["-p", "no:cacheprovider", "-p", "no:xdist", "--basetemp", str(tmp_path / "bt"), "--collect-only", "-q"]
    command = [sys.executable, "-m", "pytest", *argv, "tests/test_conftest_guards.py"]
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_a_disk_without_room_stops_the_run_before_any_test_with_one_line(tmp_path):
    done = _pytest(tmp_path, min_free_mb=10**12)  # more than any disk has
    assert done.returncode == 4, done.stdout + done.stderr  # pytest's usage error
    message = [line for line in (done.stdout + done.stderr).splitlines() if "MB free" in line]
    assert len(message) == 1, done.stdout + done.stderr
    assert str(tmp_path) in message[0]
    assert "TMPDIR" in message[0]
    assert not (tmp_path / "bt").exists()  # nothing was written


def test_a_disk_with_room_starts_the_run(tmp_path):
    done = _pytest(tmp_path, min_free_mb=1)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "MB free" not in done.stdout + done.stderr
