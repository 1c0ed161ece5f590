"""tune stage: best.yaml into the config, shared studies across processes, resume after a kill, nested MLflow runs,
and a real end-to-end tuning of a trained and an optimisation method on tiny images (the Pareto maths: test_pareto)."""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import sqlalchemy
import torch
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from pipeline import cli, tracking
from pipeline.code_deps import closure
from pipeline.config import TuneError, effective_params, load_params
from pipeline.pareto import dominates
from pipeline.stages import tune
from pipeline.stages.tune import make_sampler, make_storage, optimize

optuna.logging.set_verbosity(optuna.logging.WARNING)


# ------------------------------------------------------------------------------------------------ fixtures


def write_images(folder: Path, n: int, seed: int, side: int = 48) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rng = np.random.default_rng(seed + i)
        small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        Image.fromarray(small).resize((side, side + 4 * i), Image.Resampling.BILINEAR).save(folder / f"img{i}.png")
    return folder


@pytest.fixture
def dirs(tmp_path):
    val = (write_images(tmp_path / "val/content", 1, 0), write_images(tmp_path / "val/style", 2, 10))
    train = (write_images(tmp_path / "train/content", 2, 20), write_images(tmp_path / "train/style", 2, 30))
    return val, train


def tiny_params(repo_root: Path, tmp_path: Path, **tune_changes) -> Path:
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    raw["tune"].update({"heartbeat_s": 1, "grace_s": 3, **tune_changes})
    raw["tune"]["gatys"].update(trials=3, budget={"iterations": 2, "image_size": 32})
    raw["tune"]["adain"].update(
        trials=3, budget={"train": {"iterations": 4, "batch_size": 2, "resize_short": 40, "crop": 32}}, prune_every=2
    )
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


# ------------------------------------------------------------------------------------------------ best.yaml


def test_best_yaml_round_trips_into_the_method_config(repo_root, tmp_path):
    params = load_params(repo_root / "params.yaml")
    best = tmp_path / "best.yaml"
    best.write_text(yaml.safe_dump({"method": "contrastive", "weights": {"style_weight": 0.25, "gan_weight": 12.5}}))
    tuned = effective_params(params, "contrastive", tuned=best)
    assert tuned.methods.contrastive.train.style_weight == 0.25  # a trained method's weights: its train section
    assert tuned.methods.contrastive.train.gan_weight == 12.5
    unchanged = {"style_weight", "gan_weight"}
    assert tuned.methods.contrastive.train.model_dump(exclude=unchanged) == params.methods.contrastive.train.model_dump(
        exclude=unchanged
    )  # nothing else moves
    assert tuned.methods.contrastive.alpha == params.methods.contrastive.alpha
    assert tuned.methods.adain == params.methods.adain

    off = params.model_copy(update={"tune": params.tune.model_copy(update={"use_tuned": False})})
    assert effective_params(off, "contrastive", tuned=best).methods == off.methods


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"method": "adain", "weights": {"style_weight": 1.0}}, "not a best.yaml for contrastive"),
        ({"method": "contrastive", "weights": {"style_weight": float("nan")}}, "not finite numbers"),
        ({"method": "contrastive", "weights": {"colour": 1.0}}, "unknown key 'methods.contrastive.train.colour'"),
        ({"method": "contrastive", "weights": {"style_weight": -1.0}}, "methods.contrastive.train.style_weight"),
    ],
)
def test_bad_best_yaml_names_the_file_and_the_problem(repo_root, tmp_path, content, message):
    best = tmp_path / "best.yaml"
    best.write_text(yaml.safe_dump(content))
    with pytest.raises(TuneError, match=message) as info:
        effective_params(load_params(repo_root / "params.yaml"), "contrastive", tuned=best)
    assert str(best) in str(info.value)


def test_missing_best_yaml_says_which_stage_to_run(repo_root, tmp_path):
    with pytest.raises(TuneError, match="run the tune@adain stage"):
        effective_params(load_params(repo_root / "params.yaml"), "adain", tuned=tmp_path / "none.yaml")


# ------------------------------------------------------------------------------------------------ shared study


def quadratic(trial: optuna.Trial) -> tuple[float, float]:
    x = trial.suggest_float("x", 0.0, 1.0)
    time.sleep(float(os.environ.get("NST_TEST_TRIAL_SLEEP", "0.3")))
    return x, (1 - x) ** 2


def shared_worker(spec: dict) -> None:
    """A worker process on the real storage + optimize loop, with a cheap objective in place of stylize + score."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    params = load_params(spec["params"])
    storage = make_storage(spec["storage"], params)
    study = optuna.load_study(study_name=spec["study"], storage=storage)
    study.sampler = make_sampler(params, spec["budget"], spec["worker"], len(study.get_trials()))
    optimize(study, quadratic, spec["budget"], storage=storage, wait_s=60, worker=spec["worker"])


def worker_killed_before_its_first_heartbeat(spec: dict) -> None:
    """A worker that dies (SIGKILL) right after its first trial is created, when that trial's heartbeat thread
    tries to record the first heartbeat: the trial is RUNNING with no heartbeat row, deterministically."""

    def die(self, trial_id):
        os.kill(os.getpid(), signal.SIGKILL)

    optuna.storages.RDBStorage.record_heartbeat = die
    shared_worker(spec)


def new_study(params_path: Path, tmp_path: Path) -> tuple[str, str]:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(
        study_name="shared", storage=make_storage(url, load_params(params_path)), directions=["minimize", "minimize"]
    )
    return url, "shared"


def test_two_processes_share_one_study_exactly(repo_root, tmp_path):
    params_path = tiny_params(repo_root, tmp_path)
    url, name = new_study(params_path, tmp_path)
    spec = {"params": str(params_path), "storage": url, "study": name, "budget": 12}
    tune.run_workers(spec, 2, target=shared_worker)
    study = optuna.load_study(study_name=name, storage=url)
    done = tune.finished(study)
    assert len(done) == 12
    assert len({t.number for t in done}) == 12
    assert len({t.params["x"] for t in done}) == 12  # no duplicated proposals (each worker seeds its own sampler)
    assert {t.user_attrs["worker"] for t in done} == {0, 1}  # both contributed
    extra = [t for t in study.trials if t.state not in tune.FINISHED]
    assert all("discarded" in t.user_attrs for t in extra)  # anything else was discarded before doing work


def test_killed_study_resumes_with_its_finished_trials(repo_root, tmp_path, monkeypatch):
    params_path = tiny_params(repo_root, tmp_path)
    url, name = new_study(params_path, tmp_path)
    spec = {"params": str(params_path), "storage": url, "study": name, "budget": 6, "worker": 0}
    proc = multiprocessing.get_context("spawn").Process(target=shared_worker, args=(spec,))
    proc.start()
    storage = make_storage(url, load_params(params_path))
    deadline = time.monotonic() + 120
    while len(tune.finished(optuna.load_study(study_name=name, storage=storage))) < 2:
        assert time.monotonic() < deadline, "the worker did not finish two trials"
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    study = optuna.load_study(study_name=name, storage=storage)
    kept = {t.number: t.values for t in tune.finished(study)}  # noqa: PD011 (optuna trials, not pandas)
    assert 2 <= len(kept) < 6

    monkeypatch.setenv("NST_TEST_TRIAL_SLEEP", "0")
    study.sampler = make_sampler(load_params(params_path), 6, 0, len(study.trials))
    optimize(study, quadratic, 6, storage=storage, wait_s=60)  # waits for the killed trial to go stale, then fills
    study = optuna.load_study(study_name=name, storage=storage)
    done = tune.finished(study)
    assert len(done) == 6
    assert {t.number: t.values for t in done if t.number in kept} == kept  # noqa: PD011 (kept as they were)
    states = [t.state for t in study.trials]
    assert optuna.trial.TrialState.RUNNING not in states  # the killed worker's trial was failed, not left hanging


def test_worker_killed_before_its_first_heartbeat_does_not_block_the_study(repo_root, tmp_path, monkeypatch):
    params_path = tiny_params(repo_root, tmp_path)  # grace_s 3
    url, name = new_study(params_path, tmp_path)
    spec = {"params": str(params_path), "storage": url, "study": name, "budget": 3, "worker": 0}
    proc = multiprocessing.get_context("spawn").Process(target=worker_killed_before_its_first_heartbeat, args=(spec,))
    proc.start()
    proc.join(timeout=120)
    assert proc.exitcode == -signal.SIGKILL, "the worker should have died at its first heartbeat"
    storage = make_storage(url, load_params(params_path))
    study = optuna.load_study(study_name=name, storage=storage)
    (orphan,) = study.get_trials(deepcopy=False)
    assert orphan.state == optuna.trial.TrialState.RUNNING
    with storage.engine.connect() as conn:  # the race of the hang: a RUNNING trial that never sent a heartbeat
        assert conn.execute(sqlalchemy.text("SELECT COUNT(*) FROM trial_heartbeats")).scalar() == 0

    monkeypatch.setenv("NST_TEST_TRIAL_SLEEP", "0")
    study.sampler = make_sampler(load_params(params_path), 3, 0, 1)
    started = time.monotonic()
    optimize(study, quadratic, 2, storage=storage, wait_s=60, poll_s=0.1)
    assert time.monotonic() - started < 30  # grace_s 3 after the orphan's start, not the 60 s wait bound
    study = optuna.load_study(study_name=name, storage=storage)
    assert len(tune.finished(study)) == 2
    failed = study.trials[orphan.number]
    assert failed.state == optuna.trial.TrialState.FAIL
    assert "without a heartbeat" in failed.user_attrs["failed"]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_waiting_on_a_live_but_silent_worker_ends_with_a_clear_error(repo_root, tmp_path):
    params_path = tiny_params(repo_root, tmp_path, grace_s=3600)  # the other worker's trial never goes stale
    url, name = new_study(params_path, tmp_path)
    storage = make_storage(url, load_params(params_path))
    study = optuna.load_study(study_name=name, storage=storage)
    held = study.ask()  # a RUNNING trial that another (live) worker holds
    started = time.monotonic()
    with pytest.raises(TuneError, match=rf"study {name}: waited 1 s for trial\(s\) \[{held.number}\]"):
        optimize(study, quadratic, 1, storage=storage, wait_s=1, poll_s=0.1)
    assert time.monotonic() - started < 10


# ------------------------------------------------------------------------------------------------ end to end


def test_tune_gatys_end_to_end_with_nested_mlflow_runs(repo_root, tmp_path, dirs, monkeypatch):
    params_path = tiny_params(repo_root, tmp_path)
    params = load_params(params_path)
    out = tmp_path / "tuning" / "gatys"
    uri = tracking.resolve_uri()  # the suite's per-test sqlite store (conftest)
    with tracking.stage_run("tune", "gatys", {"x": 1}, experiment="tune-test") as logger:
        result = tune.run(params, "gatys", *dirs, out, params_path=params_path, logger=logger)
        parent = logger.run_id
    assert result["trials_finished"] == 3
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert set(best["weights"]) == {"style_weight"}
    assert set(best["objectives"]) == {"content_loss", "style_gram"}
    # the reference weights (Gatys's params defaults) ran first, as trial 0, and are reported beside the choice
    assert best["reference"]["weights"] == {"style_weight": 100.0}
    assert best["reference"]["trial"] == 0
    assert set(best["reference"]["objectives"]) == {"content_loss", "style_gram"}
    trials = pd.read_csv(out / "trials.csv")
    assert trials.loc[trials["number"] == 0, "style_weight"].item() == 100.0
    assert trials["reference"].tolist() == [1, 0, 0]
    rows = (out / "trials.csv").read_text().splitlines()
    assert len(rows) == 1 + 3
    assert sum(line.endswith(",1") for line in rows[1:]) == 1  # exactly one chosen trial
    pareto = (out / "pareto.csv").read_text().splitlines()
    assert 2 <= len(pareto) <= 4
    low, high = params.tune.gatys.space["style_weight"].low, params.tune.gatys.space["style_weight"].high
    assert low <= best["weights"]["style_weight"] <= high

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("tune-test")
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")
    assert len(children) == 3
    assert sorted(int(r.data.tags["trial"]) for r in children) == [0, 1, 2]
    assert [r.data.tags["best"] for r in children].count("true") == 1
    chosen = next(r for r in children if r.data.tags["best"] == "true")
    assert int(chosen.data.tags["trial"]) == best["trial"]
    assert math.isclose(chosen.data.metrics["content_loss"], best["objectives"]["content_loss"], rel_tol=1e-9)

    again = tune.run(params, "gatys", *dirs, out, params_path=params_path)  # a finished study: nothing to do
    assert again["trials_this_run"] == 0
    assert yaml.safe_load((out / "best.yaml").read_text()) == best


def test_tune_trained_method_reports_intermediates_and_can_prune(repo_root, tmp_path, dirs):
    params_path = tiny_params(repo_root, tmp_path, prune_dominated_by=1)
    params = load_params(params_path)
    out = tmp_path / "tuning" / "adain"
    result = tune.run(params, "adain", *dirs, out, params_path=params_path)
    assert result["trials_finished"] == 3
    study = optuna.load_study(study_name=result["best"]["study"], storage=f"sqlite:///{out / 'study.db'}")
    for trial in study.trials:
        assert "intermediate_2" in trial.user_attrs  # scored on val after 2 of 4 iterations
    # with prune_dominated_by = 1 a trial is pruned as soon as one other trial's intermediate point dominates it
    for trial in study.trials:
        dominated = [
            o
            for o in study.trials
            if o.number < trial.number
            and dominates(o.user_attrs["intermediate_2"], trial.user_attrs["intermediate_2"], ["minimize", "minimize"])
        ]
        expected = optuna.trial.TrialState.PRUNED if dominated else optuna.trial.TrialState.COMPLETE
        assert trial.state == expected, trial.number


@pytest.mark.parametrize("method", ["adain", "contrastive"])
def test_tune_trained_method_from_scratch(repo_root, tmp_path, dirs, method):
    """``train.init_from: null`` (the full profile's setting for both feed-forward methods): every trial trains from
    scratch and still scores and prunes at ``prune_every`` (the hook was built only for a warm start, and the first
    trial raised UnboundLocalError)."""
    raw = yaml.safe_load(tiny_params(repo_root, tmp_path).read_text())
    raw["methods"][method]["train"]["init_from"] = None
    budget = {"train": {"iterations": 2, "batch_size": 4, "resize_short": 40, "crop": 32}}
    raw["tune"][method].update(trials=2, budget=budget, prune_every=1)
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(raw))
    params = load_params(params_path)
    assert getattr(params.methods, method).train.init_from is None
    out = tmp_path / "tuning" / method
    result = tune.run(params, method, *dirs, out, params_path=params_path)
    assert result["trials_finished"] == 2
    study = optuna.load_study(study_name=result["best"]["study"], storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == 2
    for trial in study.trials:
        assert trial.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        assert len(trial.user_attrs["intermediate_1"]) == 2  # scored on val after 1 of 2 iterations: the hook ran
    assert (out / "best.yaml").is_file()


def test_cli_tune_with_two_workers(repo_root, tmp_path, dirs, monkeypatch):
    params_path = tiny_params(repo_root, tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    (vc, vs), (tc, ts) = dirs
    out = tmp_path / "tuning" / "gatys"
    argv = [
        "tune",
        "--method",
        "gatys",
        "--params",
        str(params_path),
        "--val-content",
        str(vc),
        "--val-style",
        str(vs),
        "--train-content",
        str(tc),
        "--train-style",
        str(ts),
        "--out",
        str(out),
        "--workers",
        "2",
    ]
    assert cli.main(argv) == 0
    rows = (out / "trials.csv").read_text().splitlines()
    assert len(rows) == 1 + 3
    assert not (out / ".work").exists()


# ------------------------------------------------------------------------------------------------ reference trial


def test_the_reference_weights_must_lie_in_the_space(repo_root):
    params = load_params(repo_root / "params.yaml")
    assert tune.reference_weights("adain", params.tune.adain.space) == {"style_weight": 10.0}
    narrow = {"style_weight": params.tune.adain.space["style_weight"].model_copy(update={"low": 20.0})}
    with pytest.raises(TuneError, match=r"tune.adain.space must contain .* style_weight = 10 not in \[20, 100\]"):
        tune.reference_weights("adain", narrow)


def test_a_failed_reference_trial_is_queued_again():
    study = optuna.create_study(directions=["minimize", "minimize"])
    assert tune.enqueue_reference(study, {"x": 0.5})
    assert not tune.enqueue_reference(study, {"x": 0.5})  # already waiting
    trial = study.ask()
    assert trial.params == {}
    assert trial.user_attrs["reference"] == 1
    assert trial.suggest_float("x", 0.0, 1.0) == 0.5
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    assert tune.enqueue_reference(study, {"x": 0.5})  # the failed one does not count


def test_the_study_is_named_after_the_scorer_code_too():
    # a changed metric must not reuse trials scored by the old one (they share the study name otherwise): the study
    # fingerprints the code a trial imports (pipeline/code_deps.py), the scorer's included
    names = set(closure([tune.__name__, "methods.adain"]))
    shared = {"pipeline/builders.py", "pipeline/training_data.py", "pipeline/scoring.py", "pipeline/stage_params.py"}
    assert {"pipeline/stages/tune.py", "evaluation/metrics.py", "methods/adain.py", *shared} <= names
    assert "methods/contrastive.py" not in names


def test_the_val_grid_reads_each_image_once(repo_root, tmp_path):
    """A full-scale val split (about 200 contents x 240 styles) gives 48 000 pairs: holding two decoded copies per
    pair would need hundreds of GB, so the pairs share one tensor per image."""
    val = (write_images(tmp_path / "val/content", 3, 0), write_images(tmp_path / "val/style", 4, 10))
    train = (write_images(tmp_path / "train/content", 2, 20), write_images(tmp_path / "train/style", 2, 30))
    _, objective = tune._load_for_worker(tiny_params(repo_root, tmp_path), "adain", val, train, tmp_path / "work")
    assert len(objective.pairs) == 12  # val_pairs: null = every val pair
    assert len({id(t) for pair in objective.pairs for t in pair}) == 3 + 4
    for i, (content, style) in enumerate(objective.pairs):  # content-major order, each image its own pixels
        assert torch.equal(content, tune.read_image(val[0] / f"img{i // 4}.png"))
        assert torch.equal(style, tune.read_image(val[1] / f"img{i % 4}.png"))


def test_the_tune_run_is_tagged_with_the_precision_its_trials_compute_in(repo_root):
    """Issue 24: a trained method's trials train in its train section's precision; Gatys optimises in its own."""
    params = load_params(repo_root / "params.yaml")
    assert tune.trial_precision(params, "gatys") == "fp32"  # amp: false in params.yaml

    def with_train_amp(amp: bool):
        adain = params.methods.adain
        train = adain.train.model_copy(update={"amp": amp})
        methods = params.methods.model_copy(update={"adain": adain.model_copy(update={"train": train})})
        return params.model_copy(update={"methods": methods, "base": params.base.model_copy(update={"device": "cpu"})})

    assert tune.trial_precision(with_train_amp(True), "adain") == "bf16+channels_last"  # channels_last auto: with bf16
    assert tune.trial_precision(with_train_amp(False), "adain") == "fp32"
