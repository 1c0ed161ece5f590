"""Small tracking helpers (the real store is exercised in test_stylize)."""

from __future__ import annotations

import importlib.metadata

from mlflow.tracking import MlflowClient

from pipeline import tracking


def test_flatten_nested_and_lists():
    flat = tracking.flatten({"a": {"b": 1, "c": [1, 2]}, "d": None, "e": "x" * 7000})
    assert flat["a.b"] == "1"
    assert flat["a.c"] == "[1, 2]"
    assert flat["d"] == "None"
    assert len(flat["e"]) == 6000


def test_params_hash_is_order_free_and_sensitive():
    assert tracking.params_hash({"a": 1, "b": 2}) == tracking.params_hash({"b": 2, "a": 1})
    assert tracking.params_hash({"a": 1}) != tracking.params_hash({"a": 2})


def test_uri_precedence(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.resolve_uri("sqlite:///x.db") == "http://127.0.0.1:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking.resolve_uri("sqlite:///x.db") == "sqlite:///x.db"
    assert tracking.resolve_uri(None) == tracking.DEFAULT_URI


def test_git_sha_outside_git(tmp_path):
    assert tracking.git_sha(tmp_path) == "unknown"


def test_thin_keeps_first_last_and_bounds_the_count():
    history = [{"total": float(i)} for i in range(1000)]
    thinned = tracking.thin(history, 200)
    steps = [s for s, _ in thinned]
    assert steps[0] == 0
    assert steps[-1] == 999
    assert len(steps) <= 201
    assert all(history[s] is t for s, t in thinned)
    assert [s for s, _ in tracking.thin(history[:5], 200)] == [0, 1, 2, 3, 4]
    assert tracking.thin([], 10) == []


def test_every_run_records_the_installed_versions_of_the_key_packages():
    with tracking.stage_run("fetch", None, {"x": 1}, experiment="versions") as logger:
        run_id = logger.run_id
    tags = MlflowClient(tracking_uri=tracking.resolve_uri()).get_run(run_id).data.tags
    assert tags["version.torch"] == importlib.metadata.version("torch")
    assert tags["version.optuna"] == importlib.metadata.version("optuna")
    assert {f"version.{name}" for name in tracking.KEY_PACKAGES} <= set(tags)
    assert tags["version.python"].count(".") == 2
