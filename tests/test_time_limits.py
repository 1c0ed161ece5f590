"""No test can hang CI: the suite runs under per-test time limits (pytest-timeout), larger only for `slow` tests."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_every_test_has_a_time_limit(request):
    limit = float(request.config.getini("timeout"))
    assert 0 < limit <= 300
    assert request.node.get_closest_marker("timeout") is None  # this test runs under the default limit


@pytest.mark.slow
def test_slow_tests_get_the_larger_limit(request):
    (mark,) = [m for m in request.node.iter_markers("timeout")]
    assert mark.args[0] > float(request.config.getini("timeout"))


def test_a_hanging_test_is_stopped(tmp_path):
    (tmp_path / "test_hang.py").write_text("import time\n\ndef test_hang():\n    time.sleep(120)\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "timeout=1",
            "--rootdir",
            str(tmp_path),
            str(tmp_path / "test_hang.py"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert "Timeout (>1.0s)" in done.stdout
