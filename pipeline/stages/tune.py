"""tune stage (``tune@<method>``): multi-objective Optuna search of a method's loss weights on the val split.

Each trial samples the weights in ``tune.<method>.space``, applies the short per-trial ``budget`` (fewer Gatys
iterations / a short training schedule), stylizes every val content x val style pair and scores the outputs with the
evaluation stage's fixed :class:`~evaluation.metrics.Scorer`; the two ``tune.objectives`` (means over pairs) are the
trial's values. Feed-forward trials score the val pairs every ``prune_every`` training iterations too: Optuna's
pruners are single-objective only, so a trial is pruned when its intermediate scores are Pareto-dominated by
``prune_dominated_by`` other trials' scores at the same step.

The study lives in an Optuna RDB storage (``tune.storage``; default a sqlite file in the output folder), named after
everything that defines it (search space, budget, objectives, method settings, encoder, data), so:

- several workers share one study: ``nst tune --workers N`` starts N processes; more machines run the same command
  against the same storage URL. Together they finish exactly ``trials`` trials (complete + pruned);
- an interrupted run, restarted, keeps its finished trials and runs only the missing ones. A killed worker's trial
  stays RUNNING until its last heartbeat (or, killed before its first heartbeat, its start) is ``grace_s`` old; then
  it is marked FAIL and its slot is run again. No wait is unbounded: a worker waiting on other workers' live trials
  gives up with an error after ``tune.wait_s`` seconds without a finished trial.

Outputs in ``reports/tuning/<method>/``: ``trials.csv`` (every trial), ``pareto.csv`` (the front), ``best.yaml``
(the point picked by ``tune.selection``: weights + objective values) and the study database. Train and stylize
stages apply ``best.yaml`` over ``methods.<method>`` when ``tune.use_tuned`` is true; params.yaml is never rewritten.
MLflow: one ``tune@<method>`` run with one nested run per trial; the chosen trial is tagged ``best``.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import logging
import multiprocessing
import random
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
import torch
import yaml

from evaluation.metrics import Scorer
from methods.encoder import VGGEncoder, load_encoder
from methods.precision import Precision
from methods.pretrained import warm_start
from methods.registry import build_method, get_spec, merged, tuned_methods
from methods.training import TrainCallbacks, scheduled_iterations, train
from methods.utils import sha256_file
from pipeline import tracking
from pipeline.builders import build_model, init_file
from pipeline.code_deps import fingerprint as code_fingerprint
from pipeline.code_deps import method_module
from pipeline.commands import add_command
from pipeline.config import (
    Params,
    TuneError,
    YamlDumper,
    effective_params,
    encoder_settings,
    load_params,
    weight_changes,
)
from pipeline.io import list_images, read_image, write_csv, write_text_atomic
from pipeline.pareto import directions_for, select, times_dominated
from pipeline.resources import pick_device, tf32_label
from pipeline.scoring import build_scorer
from pipeline.stage_params import as_trained, declared_tree
from pipeline.training_data import crops

log = logging.getLogger(__name__)

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
RUNNING = optuna.trial.TrialState.RUNNING


class OverBudget(Exception):
    """Raised inside a trial that another worker's trial already made surplus; the trial is discarded (FAIL)."""


# ------------------------------------------------------------------------------------------------ pure helpers


def storage_url(params: Params, method: str, out_dir: Path) -> str:
    if params.tune.storage:
        return params.tune.storage.replace("{method}", method)
    return f"sqlite:///{(out_dir / 'study.db').resolve()}"


def make_storage(url: str, params: Params) -> optuna.storages.RDBStorage:
    """RDB storage with heartbeats (a killed worker's trial is failed after ``grace_s``); sqlite waits on locks."""
    engine_kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.9; we rely on them knowingly
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=params.tune.heartbeat_s,
            grace_period=params.tune.grace_s,
        )


def make_sampler(params: Params, budget: int, worker: int, existing: int) -> optuna.samplers.BaseSampler:
    """A sampler seeded from ``tune.seed``, the worker and the trials already in the study: two workers (or a resumed
    run) never replay the same random proposals."""
    seed = int.from_bytes(hashlib.sha256(f"{params.tune.seed}:{worker}:{existing}".encode()).digest()[:4], "big")
    if params.tune.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, budget)))
    if params.tune.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=5)


def init_sha(section: Mapping[str, Any]) -> str | None:
    """sha256 of the pretrained file a trained method's trials warm-start from (``init_from`` of its train section
    ``section``); None: from scratch, missing, or an untrained method's section."""
    init = section.get("init_from")
    return sha256_file(init) if init and Path(init).is_file() else None


def study_name(params: Params, method: str, data_shas: Mapping[str, str], encoder_sha: str) -> str:
    """``<method>-<hash>``: the hash covers everything that makes trials comparable (code included)."""
    tune = getattr(params.tune, method)
    section = getattr(params.methods, method)
    # what a trial reads of the method's params: a trained method's train section, all of an untrained one's
    section = (section.train if get_spec(method).trains else section).model_dump(mode="json")
    for key in tune.space:
        section.pop(key, None)
    identity = {
        "space": tune.model_dump(mode="json", exclude={"trials"}),
        "objectives": params.tune.objectives,
        "section": section,
        "encoder": encoder_sha,
        "pool": params.encoder.pool,
        "data": dict(data_shas),
        "prune_dominated_by": params.tune.prune_dominated_by,
        "init": init_sha(section),
        "code": code_fingerprint([__name__, method_module(get_spec(method).implementation)]),
    }  # new code (methods, the scorer, the stages a trial runs) -> a new study, as train and stylize restart
    return f"{method}-{tracking.params_hash(identity)[:12]}"


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if t.state in FINISHED]


# ------------------------------------------------------------------------------------------------ worker loop


def stale_trials(study: optuna.Study, storage: optuna.storages.RDBStorage, grace_s: float) -> list[int]:
    """Fail the study's RUNNING trials whose worker is gone; return their numbers.

    A trial is stale when its last heartbeat is older than ``grace_s`` (by the database's clock, which writes the
    heartbeats) or, when it has no heartbeat at all, when it started more than ``grace_s`` ago (by the local clock,
    which is how Optuna writes ``datetime_start``). The second case is a worker killed after its trial was created
    but before the first heartbeat was recorded; Optuna's own ``fail_stale_trials`` never fails such a trial, and a
    study waiting on it would wait forever.
    """
    study_id = storage.get_study_id_from_name(study.study_name)
    query = sqlalchemy.text(
        "SELECT t.trial_id, t.number, t.datetime_start, h.heartbeat FROM trials t "
        "LEFT JOIN trial_heartbeats h ON h.trial_id = t.trial_id WHERE t.study_id = :sid AND t.state = 'RUNNING'"
    )
    with storage.engine.connect() as conn:
        db_now = conn.execute(sqlalchemy.text("SELECT CURRENT_TIMESTAMP")).scalar()
        rows = conn.execute(query, {"sid": study_id}).all()
    db_now = _as_datetime(db_now)
    local_now = datetime.datetime.now()
    grace = datetime.timedelta(seconds=grace_s)
    failed = []
    for trial_id, number, started, heartbeat in rows:
        if heartbeat is not None:
            age, what = db_now - _as_datetime(heartbeat), "since its last heartbeat"
        elif started is not None:
            age, what = local_now - _as_datetime(started), "since it started, without a heartbeat"
        else:
            continue  # not started yet (a WAITING trial turned RUNNING this instant)
        if age <= grace:
            continue
        reason = f"stale: {age.total_seconds():.0f} s {what} (grace {grace_s:g} s); its worker is gone"
        try:
            storage.set_trial_user_attr(trial_id, "failed", reason)
            if storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.FAIL):
                failed.append(int(number))
                log.warning("study %s: trial %d failed as %s", study.study_name, number, reason)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # it finished, or another worker failed it, meanwhile
    return failed


def _as_datetime(value: Any) -> datetime.datetime:
    """A naive datetime from what the database returns (sqlite gives ISO strings for raw queries)."""
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value)
    return value.replace(tzinfo=None)


def optimize(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], Sequence[float]],
    budget: int,
    *,
    storage: optuna.storages.RDBStorage,
    wait_s: float,
    worker: int = 0,
    poll_s: float = 0.5,
) -> int:
    """Run trials until the study holds ``budget`` finished (complete + pruned) trials; returns how many this
    worker finished. Safe with other workers on the same storage: a trial that would exceed the budget (two workers
    asking at once) is discarded before it does any work.

    When the remaining slots are all held by other workers' RUNNING trials, this worker waits: trials whose worker
    is gone (see :func:`stale_trials`, ``storage.grace_period``) are failed and their slots run again; a wait in which
    no trial finishes for ``wait_s`` seconds ends with a :class:`TuneError` naming the study and the trials.
    """
    done_here = 0
    grace_s = float(storage.grace_period or 2 * (storage.heartbeat_interval or 1))

    def wrapped(trial: optuna.Trial) -> Sequence[float]:
        nonlocal done_here
        trials = study.get_trials(deepcopy=False, states=(*FINISHED, RUNNING))
        ahead = sum(1 for t in trials if t.state in FINISHED or (t.state == RUNNING and t.number < trial.number))
        if ahead >= budget:
            trial.set_user_attr("discarded", "over budget: other workers filled the study")
            raise OverBudget
        trial.set_user_attr("worker", worker)
        started = time.perf_counter()
        try:
            values = objective(trial)
        except optuna.TrialPruned:
            done_here += 1
            raise
        trial.set_user_attr("seconds", round(time.perf_counter() - started, 3))
        done_here += 1
        return values

    waiting_since, done_before = None, -1
    while True:
        stale_trials(study, storage, grace_s)
        trials = study.get_trials(deepcopy=False)
        done = sum(1 for t in trials if t.state in FINISHED)
        running = [t.number for t in trials if t.state == RUNNING]
        if done >= budget:
            return done_here
        if done + len(running) >= budget:  # the rest is being run elsewhere (or by a dead worker, until its grace ends)
            now = time.monotonic()
            if waiting_since is None or done != done_before:
                waiting_since, done_before = now, done
            elif now - waiting_since > wait_s:
                raise TuneError(
                    f"study {study.study_name}: waited {wait_s:g} s for trial(s) {running} of other workers, which "
                    f"still send heartbeats but finish nothing; stop those workers or raise tune.wait_s"
                )
            time.sleep(poll_s)
            continue
        waiting_since = None
        study.optimize(wrapped, n_trials=1, catch=(OverBudget,), gc_after_trial=False)


class Objective:
    """Stylize + score the val grid for one trial's weights (see the module docstring)."""

    def __init__(
        self,
        params: Params,
        method: str,
        val: tuple[Path, Path],
        train_dirs: tuple[Path, Path],
        *,
        encoder: VGGEncoder,
        scorer: Scorer,
        work_dir: Path,
    ) -> None:
        self.params, self.method = params, method
        self.tune = getattr(params.tune, method)
        self.objectives = list(params.tune.objectives)
        self.directions = directions_for(self.objectives)
        self.device = pick_device(params.base.device, params.base.tf32)
        self.encoder, self.scorer = encoder, scorer.to(self.device)
        self.train_dirs, self.work_dir = train_dirs, work_dir
        contents, styles = list_images(val[0]), list_images(val[1])
        for role, found, folder in (("content", contents, val[0]), ("style", styles, val[1])):
            if not found:
                raise TuneError(f"{folder}: no val {role} images to tune on")
        grid = [(c, s) for c in contents for s in styles]
        if self.tune.val_pairs is not None and len(grid) > self.tune.val_pairs:  # a seeded subset, same every trial
            grid = sorted(random.Random(params.tune.seed).sample(grid, self.tune.val_pairs))
        images = {path: read_image(path) for path in sorted({path for pair in grid for path in pair})}  # each once
        self.pairs = [(images[c], images[s]) for c, s in grid]
        self._crops: dict[tuple[int, int], Any] = {}

    def trial_params(self, trial: optuna.Trial) -> tuple[Params, dict[str, float]]:
        weights = {k: trial.suggest_float(k, d.low, d.high, log=d.log) for k, d in self.tune.space.items()}
        changes = merged(self.tune.budget, weight_changes(self.method, weights))
        return as_trained(effective_params(self.params, self.method, changes=changes), self.method), weights

    def score(self, method: Any) -> list[float]:
        """Means over the val pairs of the objectives, for a built method (any object with ``stylize``)."""
        sums = dict.fromkeys(self.objectives, 0.0)
        for content, style in self.pairs:
            content, style = content.to(self.device), style.to(self.device)
            out = method.stylize(content, style)
            scores = self.scorer.score(out.float(), content, style, only=self.objectives)
            for name in self.objectives:
                sums[name] += float(scores[name])
        return [sums[name] / len(self.pairs) for name in self.objectives]

    def prune_check(self, trial: optuna.Trial, step: int, values: list[float]) -> None:
        trial.set_user_attr(f"intermediate_{step}", values)
        others = [
            t.user_attrs.get(f"intermediate_{step}")
            for t in trial.study.get_trials(deepcopy=False)
            if t.number != trial.number and t.state in FINISHED
        ]
        beaten_by = times_dominated(values, [o for o in others if o is not None], self.directions)
        if beaten_by >= self.params.tune.prune_dominated_by:
            raise optuna.TrialPruned(f"step {step}: dominated by {beaten_by} trials")

    def __call__(self, trial: optuna.Trial) -> list[float]:
        params, _ = self.trial_params(trial)
        if not get_spec(self.method).trains:
            return self.score(build_method(self.method, getattr(params.methods, self.method), encoder=self.encoder))
        tcfg = getattr(params.methods, self.method).train
        key = (tcfg.resize_short, tcfg.crop)
        if key not in self._crops:
            self._crops[key] = (crops(self.train_dirs[0], *key), crops(self.train_dirs[1], *key))
        model = build_model(params, self.method, self.encoder)
        init = init_file(tcfg, self.method)
        if init is not None:  # trials fine-tune from the pretrained weights, as the train stage will
            warm_start(self.method, model.trainable(), self.encoder.weights_sha256, init)
        planned = scheduled_iterations(tcfg, Precision.resolve(tcfg.amp, tcfg.channels_last, self.device))
        hook = ScoreAndPrune(self, trial, model, planned)  # from scratch (init_from: null) too
        ckpt = Path(tempfile.mkdtemp(prefix=f"trial{trial.number}-", dir=self.work_dir))
        try:
            train(
                model,
                *self._crops[key],
                tcfg,
                ckpt,
                device=self.device,
                fingerprint=f"trial{trial.number}",
                callbacks=hook,
                progress=False,
            )
            return self.score(model)
        finally:
            shutil.rmtree(ckpt, ignore_errors=True)


class ScoreAndPrune(TrainCallbacks):
    """A feed-forward trial's training callbacks: every ``tune.<method>.prune_every`` iterations before the last,
    score the val pairs with the weights so far, record the scores on the trial and prune it when enough other trials'
    scores at the same step dominate them (:meth:`Objective.prune_check`). The last iteration's score is the trial's
    value, computed after training."""

    def __init__(self, objective: Objective, trial: optuna.Trial, model: Any, iterations: int) -> None:
        self.objective, self.trial, self.model, self.iterations = objective, trial, model, iterations
        self.modules = model.trainable()
        self.interval = objective.tune.prune_every

    def on_interval(self, iteration: int) -> None:
        self.score_and_maybe_prune(iteration)

    def score_and_maybe_prune(self, iteration: int) -> None:
        """Score the val pairs at ``iteration`` (the modules' training modes kept); raises ``optuna.TrialPruned``."""
        if iteration >= self.iterations:
            return  # the final score is the trial's value
        modes = {name: m.training for name, m in self.modules.items()}
        values = self.objective.score(self.model)
        for name, m in self.modules.items():
            m.train(modes[name])
        self.objective.prune_check(self.trial, iteration, values)


def _load_for_worker(
    params_path: Path,
    method: str,
    val: tuple[Path, Path],
    train_dirs: tuple[Path, Path],
    work_dir: Path,
    encoder: VGGEncoder | None = None,
) -> tuple[Params, Objective]:
    params = load_params(params_path)
    encoder = encoder if encoder is not None else load_encoder(**encoder_settings(params, method))
    scorer, _ = build_scorer(params)
    return params, Objective(params, method, val, train_dirs, encoder=encoder, scorer=scorer, work_dir=work_dir)


def worker_main(spec: dict[str, Any]) -> None:
    """Entry point of a worker process (``nst tune --workers N``): join the study and optimise until it is full."""
    logging.basicConfig(level=logging.INFO, format=f"%(levelname)s worker{spec['worker']}: %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(spec.get("threads", torch.get_num_threads()))
    params, objective = _load_for_worker(
        Path(spec["params"]),
        spec["method"],
        tuple(map(Path, spec["val"])),
        tuple(map(Path, spec["train"])),
        Path(spec["work_dir"]),
    )
    storage = make_storage(spec["storage"], params)
    study = optuna.load_study(study_name=spec["study"], storage=storage)
    study.sampler = make_sampler(params, spec["budget"], spec["worker"], len(study.get_trials(deepcopy=False)))
    optimize(study, objective, spec["budget"], storage=storage, wait_s=params.tune.wait_s, worker=spec["worker"])


def run_workers(spec: dict[str, Any], workers: int, target: Callable[[dict[str, Any]], None] = worker_main) -> None:
    """Start ``workers`` processes on one study (spawned: no CUDA/threads state is forked) and wait for them."""
    ctx = multiprocessing.get_context("spawn")
    threads = max(1, torch.get_num_threads() // workers)
    procs = [
        ctx.Process(target=target, args=({**spec, "worker": i, "threads": threads},), daemon=False)
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    failed = [i for i, p in enumerate(procs) if p.exitcode != 0]
    if failed:
        raise TuneError(f"tuning worker(s) {failed} failed (exit codes {[procs[i].exitcode for i in failed]})")


# ------------------------------------------------------------------------------------------------ stage


def trial_rows(study: optuna.Study, objectives: Sequence[str], space: Sequence[str]) -> list[dict[str, Any]]:
    front = {t.number for t in study.best_trials}
    rows = []
    for t in study.get_trials(deepcopy=False):
        if "discarded" in t.user_attrs:
            continue
        values = t.values if t.values is not None else [None] * len(objectives)
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "worker": t.user_attrs.get("worker"),
                "seconds": t.user_attrs.get("seconds"),
                **{k: t.params.get(k) for k in space},
                **dict(zip(objectives, values, strict=True)),
                "pareto": int(t.number in front),
                "reference": int(bool(t.user_attrs.get("reference"))),
            }
        )
    return rows


def reference_weights(method: str, space: Mapping[str, Any]) -> dict[str, float]:
    """The method's reference values (its params class defaults: paper / reference code) of the tuned keys; each
    must lie inside its search range, so that the reference is a point of the space the study explores."""
    spec = get_spec(method)
    defaults = spec.params().train if spec.trains else spec.params()
    weights = {k: float(getattr(defaults, k)) for k in space}
    outside = [
        f"{k} = {v:g} not in [{space[k].low:g}, {space[k].high:g}]"
        for k, v in weights.items()
        if not space[k].low <= v <= space[k].high
    ]
    if outside:
        raise TuneError(f"tune.{method}.space must contain the method's reference weights: {'; '.join(outside)}")
    return weights


def enqueue_reference(study: optuna.Study, weights: Mapping[str, float]) -> bool:
    """Queue the reference weights as the next trial unless a live or finished trial already holds them (a failed
    one is queued again); returns whether it queued."""
    live = (*FINISHED, RUNNING, optuna.trial.TrialState.WAITING)
    if any(t.user_attrs.get("reference") and t.state in live for t in study.get_trials(deepcopy=False)):
        return False
    study.enqueue_trial(dict(weights), user_attrs={"reference": 1})
    return True


def run(
    params: Params,
    method: str,
    val: tuple[Path, Path],
    train_dirs: tuple[Path, Path],
    out_dir: Path,
    *,
    params_path: Path,
    workers: int = 1,
    logger: tracking.RunLogger | None = None,
) -> dict[str, Any]:
    """Tune ``method`` until its study holds ``tune.<method>.trials`` finished trials; write the outputs."""
    if not get_spec(method).tuned:
        raise TuneError(f"{method!r} is not a tuned method; tuned: {', '.join(tuned_methods())}")
    tune = getattr(params.tune, method)
    out_dir.mkdir(parents=True, exist_ok=True)
    shas = data_shas(val, train_dirs)
    encoder = load_encoder(**encoder_settings(params, method))  # its sha names the study; reused below
    name = study_name(params, method, shas, encoder.weights_sha256)
    url = storage_url(params, method, out_dir)
    storage = make_storage(url, params)
    study = optuna.create_study(
        study_name=name, storage=storage, directions=directions_for(params.tune.objectives), load_if_exists=True
    )
    reference = reference_weights(method, tune.space)
    enqueue_reference(study, reference)
    before = len(finished(study))
    if before:
        log.info("tune@%s: study %s already holds %d finished trial(s); resuming", method, name, before)
    started = time.perf_counter()
    spec = {
        "params": str(params_path),
        "method": method,
        "val": [str(v) for v in val],
        "train": [str(t) for t in train_dirs],
        "work_dir": str(out_dir / ".work"),
        "storage": url,
        "study": name,
        "budget": tune.trials,
    }
    run_trials(study, storage, spec, params, workers, encoder)
    seconds = time.perf_counter() - started
    study = optuna.load_study(study_name=name, storage=storage)
    best = write_results(params, method, study, out_dir, reference, url)
    summary = {
        "trials_finished": len(finished(study)),
        "trials_this_run": len(finished(study)) - before,
        "seconds": round(seconds, 2),
        "chosen_trial": best["trial"],
        **best["objectives"],
    }
    if logger is not None:
        log_trials(logger, study, best["trial"], list(tune.space), params.tune.objectives)
        logger.log_metrics({k: v for k, v in summary.items() if isinstance(v, int | float)})
        logger.log_artifact(out_dir / "best.yaml")
        logger.log_artifact(out_dir / "trials.csv")
    return {**summary, "best": best}


def data_shas(val: tuple[Path, Path], train_dirs: tuple[Path, Path]) -> dict[str, str]:
    """``val/<file>`` / ``train/<file>`` -> sha256 of every image a trial reads (they name the study)."""
    return {
        f"{role}/{p.name}": sha256_file(p)
        for role, folder in (("val", val[0]), ("val", val[1]), ("train", train_dirs[0]), ("train", train_dirs[1]))
        for p in list_images(folder)
    }


def run_trials(
    study: optuna.Study,
    storage: optuna.storages.RDBStorage,
    spec: dict[str, Any],
    params: Params,
    workers: int,
    encoder: VGGEncoder,
) -> None:
    """Fill ``study`` to ``spec["budget"]`` finished trials: ``workers`` processes (:func:`worker_main`), or this one
    (reusing the loaded ``encoder``). The trials' scratch folder ``spec["work_dir"]`` is removed afterwards."""
    work_dir = Path(spec["work_dir"])
    work_dir.mkdir(exist_ok=True)
    try:
        if workers > 1:
            run_workers(spec, workers)
        else:
            _, objective = _load_for_worker(
                Path(spec["params"]),
                spec["method"],
                tuple(map(Path, spec["val"])),
                tuple(map(Path, spec["train"])),
                work_dir,
                encoder,
            )
            study.sampler = make_sampler(params, spec["budget"], 0, len(study.get_trials(deepcopy=False)))
            optimize(study, objective, spec["budget"], storage=storage, wait_s=params.tune.wait_s)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def write_results(
    params: Params, method: str, study: optuna.Study, out_dir: Path, reference: Mapping[str, float], url: str
) -> dict[str, Any]:
    """``trials.csv``, ``pareto.csv`` and ``best.yaml`` (the point of the Pareto front picked by ``tune.selection``,
    and how the reference weights did); returns best.yaml's content."""
    objectives, directions = params.tune.objectives, directions_for(params.tune.objectives)
    front = sorted(study.best_trials, key=lambda t: t.number)
    if not front:
        raise TuneError(f"tune@{method}: no trial completed (all {len(finished(study))} pruned or failed)")
    chosen = front[select([t.values for t in front], directions, params.tune.selection, params.tune.selection_weight)]
    space = list(getattr(params.tune, method).space)
    rows = trial_rows(study, objectives, space)
    for row in rows:
        row["chosen"] = int(row["number"] == chosen.number)
    fields = ["number", "state", "worker", "seconds", *space, *objectives, "pareto", "reference", "chosen"]
    write_csv(rows, fields, out_dir / "trials.csv")
    write_csv([r for r in rows if r["pareto"]], fields, out_dir / "pareto.csv")
    best = {
        "method": method,
        "weights": {k: float(chosen.params[k]) for k in space},
        "objectives": dict(zip(objectives, map(float, chosen.values), strict=True)),
        "directions": dict(zip(objectives, directions, strict=True)),
        "selection": params.tune.selection,
        "trial": chosen.number,
        "trials_finished": len(finished(study)),
        "pareto_size": len(front),
        "study": study.study_name,
        "storage": url if params.tune.storage else "sqlite:///<out>/study.db",
        "reference": reference_result(study, reference, objectives, front),
    }
    write_text_atomic(out_dir / "best.yaml", yaml.dump(best, Dumper=YamlDumper, sort_keys=False))
    return best


def reference_result(
    study: optuna.Study,
    reference: Mapping[str, float],
    objectives: Sequence[str],
    front: Sequence[optuna.trial.FrozenTrial],
) -> dict[str, Any]:
    """best.yaml's ``reference``: the reference weights, their completed trial, its values, whether it is on the front
    (trial and values None while no reference trial has completed)."""
    ref_trial = next(
        (
            t
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if t.user_attrs.get("reference")
        ),
        None,
    )
    if ref_trial is None:
        return {"weights": reference, "trial": None, "objectives": None, "on_front": False}
    return {
        "weights": reference,
        "trial": ref_trial.number,
        "objectives": dict(zip(objectives, map(float, ref_trial.values), strict=True)),
        "on_front": any(t.number == ref_trial.number for t in front),
    }


def log_trials(
    logger: tracking.RunLogger, study: optuna.Study, chosen: int, space: Sequence[str], objectives: Sequence[str]
) -> None:
    """One nested MLflow run per trial under the stage run: weights, objective values, state; ``best`` tag."""
    for t in study.get_trials(deepcopy=False):
        if "discarded" in t.user_attrs:
            continue
        metrics = dict(zip(objectives, t.values, strict=True)) if t.values is not None else {}
        logger.child_run(
            f"trial {t.number}",
            params={k: str(t.params.get(k)) for k in space},
            metrics={k: float(v) for k, v in metrics.items()},
            tags={
                "trial": str(t.number),
                "state": t.state.name,
                "best": str(t.number == chosen).lower(),
                "worker": str(t.user_attrs.get("worker", "")),
            },
        )


# ------------------------------------------------------------------------------------------------ use of best.yaml


# ------------------------------------------------------------------------------------------------ CLI


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "tune",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--method", required=True, choices=tuned_methods())
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--val-content", type=Path, default=Path("data/prepared/val/content"))
    p.add_argument("--val-style", type=Path, default=Path("data/prepared/val/style"))
    p.add_argument("--train-content", type=Path, default=Path("data/prepared/train/content"))
    p.add_argument("--train-style", type=Path, default=Path("data/prepared/train/style"))
    p.add_argument("--out", type=Path, required=True, help="e.g. reports/tuning/<method>")
    p.add_argument("--workers", type=int, default=1, help="worker processes sharing the study (default 1)")
    p.set_defaults(func=main)


def trial_precision(params: Params, method: str) -> str:
    """The precision a trial computes in (an MLflow tag): a trained method's training precision, else the method's
    own (``amp`` / ``channels_last`` resolved on ``base.device``, methods/precision.py)."""
    section = getattr(params.methods, method)
    p = getattr(section, "train", section)
    device = pick_device(params.base.device, params.base.tf32)
    label = Precision.resolve(p.amp, p.channels_last, device).label if hasattr(p, "amp") else "fp32"
    return label + tf32_label(device, params.base.tf32)


def main(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise TuneError(f"--workers must be >= 1, got {args.workers}")
    params = load_params(args.params)
    tree = declared_tree(params, "tune", args.method)
    with tracking.stage_run(
        "tune",
        args.method,
        tree,
        uri=params.tracking.uri,
        experiment=params.tracking.experiment,
        tags={"precision": trial_precision(params, args.method)},
        max_step_points=params.tracking.max_step_points,
    ) as logger:
        result = run(
            params,
            args.method,
            (args.val_content, args.val_style),
            (args.train_content, args.train_style),
            args.out,
            params_path=args.params,
            workers=args.workers,
            logger=logger,
        )
    log.info("tune@%s: %s", args.method, json.dumps({k: v for k, v in result.items() if k != "best"}))
    return 0
