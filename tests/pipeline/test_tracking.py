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
    assert {"cpu.model", "cpu.flags", "cpu.bf16", "cpu.isa", "cpu.forced"} <= set(tags)
    assert tags["cpu.bf16"] in ("native", "none")


def _open_run_at(uri: str, start_at: float) -> None:
    import time

    time.sleep(max(0.0, start_at - time.time()))
    with tracking.stage_run("fetch", None, {"a": 1}, uri=uri, experiment="race"):
        pass


def test_stages_started_together_on_a_new_store_all_log(tmp_path, monkeypatch):
    """Two stages opening a new sqlite store at the same moment race to create MLflow's tables and the experiment;
    every one of them must still log its run (the loser retries and finds what the winner made)."""
    import multiprocessing
    import time

    uri = f"sqlite:///{tmp_path / 'new.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # the environment wins over uri=; the children inherit it
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 8  # every child has imported mlflow by then, so they hit the empty store together
    procs = [ctx.Process(target=_open_run_at, args=(uri, start_at)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    client = MlflowClient(tracking_uri=uri)
    (exp,) = [e for e in client.search_experiments() if e.name == "race"]
    assert len(client.search_runs([exp.experiment_id])) == 3
