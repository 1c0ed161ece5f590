"""Shared fixtures: repository paths, tiny seeded images, a small random encoder."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Under pytest-xdist (`make test`: 2 workers on 2 cores) OpenMP threads that wait sleep instead of spinning, so two
# workers' threads do not burn each other's cores (set before any test module imports torch). The thread count stays
# the default: fewer threads change the kernels' summation order, and chaotic comparisons (L-BFGS from noise, short
# training) then differ from the single-process run's (measured: 2 tests failed with OMP_NUM_THREADS=1).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO_ROOT = Path(__file__).resolve().parents[1]
SLOW_TIMEOUT_S = 1200  # tests marked slow (real `dvc repro`, servers, several processes); the rest: pyproject's timeout


# A full `make test` peaked at 734 MB under the temporary folder (2026-12-03, passed tests' folders deleted as they
# end); twice that is asked for. A CI run on a nearly full disk failed 62 tests with ENOSPC instead of saying so.
MIN_FREE_MB = int(os.environ.get("NST_TEST_MIN_FREE_MB", "1500"))


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to start, in one line, where the disk that holds the tests' temporary folders has too little room."""
    if hasattr(session.config, "workerinput"):  # pytest-xdist workers: the controller has checked
        return
    folder = Path(session.config.option.basetemp or tempfile.gettempdir()).resolve()
    while not folder.exists():
        folder = folder.parent
    free_mb = shutil.disk_usage(folder).free // 2**20
    if free_mb < MIN_FREE_MB:
        raise pytest.UsageError(
            f"{folder}: {free_mb} MB free, the tests need {MIN_FREE_MB} MB there (a full run peaks at about 734 MB); "
            "free some space or point TMPDIR (or --basetemp) at a larger disk"
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` get the larger time limit, unless they set their own ``timeout`` mark."""
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def make_image(tmp_path: Path):
    """Factory: write a seeded random RGB image of ``size`` (w, h) to ``tmp_path/<name>`` and return its path."""

    def _make(name: str, size: tuple[int, int] = (96, 72), seed: int = 0, folder: Path | None = None) -> Path:
        rng = np.random.default_rng(seed)
        arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        path = (folder or tmp_path) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(path)
        return path

    return _make


@pytest.fixture
def sample_copy(tmp_path: Path, repo_root: Path, make_image) -> Path:
    """A small sample folder (content/, style/) of seeded images with an ATTRIBUTION.md, in tmp_path/sample."""
    root = tmp_path / "sample"
    for role, n in (("content", 5), ("style", 4)):
        lines = ["# Sources", ""]
        for i in range(n):
            name = f"{role}{i}.png"
            make_image(name, size=(120 + 10 * i, 90), seed=100 * (role == "style") + i, folder=root / role)
            lines.append(f"- {name}: made by the test; licence: CC0-1.0")
        (root / role / "ATTRIBUTION.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def _mlflow_template(tmp_path_factory) -> Path:
    """One empty MLflow sqlite store with its tables created and migrated, made once per session: creating them
    takes about 1.3 s (alembic's migrations), which every test that logs (or starts a stage that logs) paid again;
    a copy of this file takes milliseconds (issue 24: measured with tests/pipeline/test_stylize.py)."""
    from mlflow.tracking import MlflowClient

    store = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{store}").search_experiments()  # creates and migrates the tables
    return store


@pytest.fixture(autouse=True)
def _isolated_mlflow(tmp_path_factory, monkeypatch, _mlflow_template):
    """Every test logs to its own throwaway sqlite store (a copy of the migrated empty template), never to the
    repository's mlflow.db. The store is removed after the test: 800 tests' copies held 400 MB of the disk until
    the session ended (a CI run on a nearly full disk failed with ENOSPC while copying it)."""
    folder = tmp_path_factory.mktemp("mlflow")
    store = folder / "mlflow.db"
    shutil.copyfile(_mlflow_template, store)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    yield
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium driven by Playwright with the offline flags (tests_support.CHROMIUM_ARGS), one per
    test module; the browser test modules skip first where either is missing."""
    from playwright.sync_api import sync_playwright
    from tests_support import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()
