"""params.yaml -> typed, strictly validated config objects.

Every key must be present and of the right type; unknown keys, missing keys, wrong types and out-of-range
values raise one :class:`ConfigError` whose message names the file, the dotted key, the value and what is
allowed. Nothing here rewrites params.yaml.

Profiles: ``profile: sample`` (committed; the embedded sample on a 2-core CPU) uses params.yaml as it is.
``profile: full`` deep-merges ``profiles/full.yaml`` (next to params.yaml) over it: WikiArt + street sources,
paper-scale sizes and schedules, CUDA. ``profile: pretrain`` merges ``profiles/pretrain.yaml``: the embedded sample
with the feed-forward methods' longer schedule that produced ``models/pretrained/`` (``make pretrain``).
``profile: rehearsal`` merges ``profiles/full.yaml`` then ``profiles/rehearsal.yaml`` (sizes only): the full profile
in minutes on a CPU, against loopback fakes of its services (``make rehearse``). The profile
files are DVC params of the stages, and each stage writes the effective parameters it ran with next to its outputs.
"""

from __future__ import annotations

import copy
import functools
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, create_model, field_validator, model_validator

from evaluation.metric_names import COSTS, PAIR_METRICS
from methods.errors import NstError
from methods.registry import (
    STRICT,
    ParamsError,
    describe_errors,
    get_spec,
    list_methods,
    merged,
    trained_methods,
    tuned_methods,
    unset_keys,
    with_changes,
)
from methods.schemas.fields import Fraction, Seed

PROFILES_DIR = "profiles"
PROFILES = ("sample", "full", "pretrain", "rehearsal")  # pretrain: the longer schedule behind models/pretrained/
# A profile merged over another profile rather than over params.yaml alone: the rehearsal is the full profile with
# only sizes shrunk (profiles/rehearsal.yaml holds nothing else; tests/test_rehearsal.py checks it), so no switch that
# selects a code path can drift between the two.
PROFILE_BASES = {"rehearsal": "full"}


class ConfigError(NstError):
    """params.yaml (or a profile) is invalid; the message names the key and what is allowed."""


class Strict(BaseModel):
    """Base for every config section: no unknown keys, no type coercion, no NaN/inf, immutable."""

    model_config = STRICT


PositiveInt = Annotated[int, Field(ge=1)]


class BaseSection(Strict):
    seed: Seed
    device: Literal["auto", "cpu", "cuda"]
    tf32: bool  # CUDA only: TF32 matmuls and convolutions (pipeline/resources.py pick_device)


class EncoderSection(Strict):
    """The VGG-19 every method runs on; each method picks its normalisation (``methods.<m>.encoder_normalise``)."""

    # "caffe" | "torchvision" | a path to a torchvision-layout VGG-19 state_dict (see methods/encoder.py).
    weights: Annotated[str, Field(min_length=1)]
    pool: Literal["max", "avg"]


class RoleSource(Strict):
    source: Literal["sample", "folder", "streets", "wikiart"]


class SampleSource(Strict):
    dir: Annotated[str, Field(min_length=1)]


class FolderSource(Strict):
    content_dir: str | None
    style_dir: str | None
    license: Annotated[str, Field(min_length=1)]


class WikiArtSource(Strict):
    endpoint: Annotated[str, Field(pattern=r"^https?://")] | None  # null: $HF_ENDPOINT, else https://huggingface.co
    repo: Annotated[str, Field(pattern=r"^[\w.-]+/[\w.-]+$")]
    revision: Annotated[str, Field(min_length=1)]
    data_dir: str
    shards: PositiveInt  # shards downloaded first
    shard_order: Literal["spread", "first"]  # which: spread over the whole listing, or the first by name
    max_shards: PositiveInt  # more, one at a time, while a listed class of class_by has < per_class rows
    class_by: Literal["style", "artist", "genre"]
    styles: list[str]
    artists: list[str]
    genres: list[str]
    per_class: PositiveInt
    # a listed class with fewer than per_class rows in the shards read: a warning up to this fraction of per_class
    # short, one error beyond it
    shortfall_tolerance: Fraction
    seed: Seed
    license: Annotated[str, Field(min_length=1)]

    @model_validator(mode="after")
    def _max_not_below_start(self) -> WikiArtSource:
        if self.max_shards < self.shards:
            raise ValueError(f"max_shards ({self.max_shards}) must be >= shards ({self.shards})")
        return self


class StreetsSource(Strict):
    provider: Literal["mapillary"]
    api_url: Annotated[str, Field(pattern=r"^https?://")]
    token_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
    bbox: Annotated[list[float], Field(min_length=4, max_length=4)]
    photos: Annotated[int, Field(ge=1, le=100_000)]
    page_size: Annotated[int, Field(ge=1, le=2000)]  # the images search's `limit`: 2000 at most per answer
    max_requests: Annotated[int, Field(ge=1, le=100_000)]
    per_sequence: Annotated[int, Field(ge=1, le=100_000)]
    image_field: Literal["thumb_256_url", "thumb_1024_url", "thumb_2048_url", "thumb_original_url"]
    seed: Seed
    license: Annotated[str, Field(min_length=1)]

    @field_validator("bbox")
    @classmethod
    def _bbox_order(cls, v: list[float]) -> list[float]:
        west, south, east, north = v
        if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
            raise ValueError(
                "must be [west, south, east, north] with west < east in [-180, 180], south < north in [-90, 90]"
            )
        return v


class DownloadSection(Strict):
    cache_dir: Annotated[str, Field(min_length=1)]
    retries: Annotated[int, Field(ge=0, le=20)]
    backoff_s: Annotated[float, Field(ge=0.0, le=600.0)]
    timeout_s: Annotated[float, Field(gt=0.0, le=3600.0)]
    max_retry_after_s: Annotated[float, Field(ge=0.0, le=86400.0)]


class FetchSection(Strict):
    content: RoleSource
    style: RoleSource
    sample: SampleSource
    folder: FolderSource
    wikiart: WikiArtSource
    streets: StreetsSource
    download: DownloadSection

    @model_validator(mode="after")
    def _sources_fit_roles(self) -> FetchSection:
        if self.content.source == "wikiart":
            raise ValueError("fetch.content.source = 'wikiart' is not allowed: WikiArt provides style images")
        if self.style.source == "streets":
            raise ValueError("fetch.style.source = 'streets' is not allowed: street views are content images")
        for role in ("content", "style"):
            if getattr(self, role).source == "folder" and getattr(self.folder, f"{role}_dir") is None:
                raise ValueError(f"fetch.{role}.source = 'folder' needs fetch.folder.{role}_dir (a directory path)")
        return self


class ResizeSection(Strict):
    edge: Literal["long", "short"]
    side_px: Annotated[int, Field(ge=16, le=8192)]
    upscale: bool


class GridCap(Strict):
    content: PositiveInt | None  # at most this many test images of the role; null = the whole test split
    style: PositiveInt | None


class SplitSection(Strict):
    train: Fraction
    val: Fraction
    test: Fraction
    test_max: GridCap  # the test grid: beyond it, test images are kept out of every split ("spare")
    # manifest columns whose shared (non-empty) values keep images together in one split (pipeline/stages/prepare.py)
    group_by: list[Literal["sequence", "artist"]]

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitSection:
        total = self.train + self.val + self.test
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"train + val + test must sum to 1, got {total:g}")
        if min(self.train, self.val, self.test) <= 0:
            raise ValueError("every split fraction must be > 0 (each split needs at least one image)")
        return self


class PrepareSection(Strict):
    seed: Seed
    max_pixels: Annotated[int, Field(ge=1, le=1_000_000_000)]
    min_side: Annotated[int, Field(ge=1, le=4096)]
    resize: ResizeSection
    split: SplitSection


class TrackingSection(Strict):
    uri: Annotated[str, Field(min_length=1)]  # MLFLOW_TRACKING_URI, when set, wins
    experiment: Annotated[str, Field(min_length=1)]
    max_step_points: Annotated[int, Field(ge=10, le=100_000)]


def encoder_settings(params: Params, method: str) -> dict[str, Any]:
    """``load_encoder`` keyword arguments for ``method``: the shared ``encoder`` section with the method's own
    ``encoder_normalise`` (per_filter for AdaIN and the contrastive method, none for Gatys by default)."""
    section = getattr(params.methods, method)
    return {"weights": params.encoder.weights, "pool": params.encoder.pool, "normalise": section.encoder_normalise}


class StylizeSection(Strict):
    grids: Annotated[int, Field(ge=0, le=10_000)]  # content | style | output grids logged to MLflow per method


class EvaluateSection(Strict):
    # The scorer's third-party weights come from the scorer-weights stage's folder (evaluate --weights models/scorer).
    cfsd_weights: Literal["auto", "torchvision", "caffe"]  # auto: torchvision when that folder has it, else caffe
    bootstrap: Annotated[int, Field(ge=100, le=1_000_000)]
    ci_level: Annotated[float, Field(gt=0.5, lt=1.0)]
    # a ★ or "≠ 0" needs this many distinct test contents and styles (evaluation.summary.MIN_CONTENTS: this project's
    # rule, 5 each, checked by its null simulation); at least 2: one content or style leaves nothing to resample
    min_contents: Annotated[int, Field(ge=2, le=100_000)]
    min_styles: Annotated[int, Field(ge=2, le=100_000)]
    seed: Seed


class JudgeSection(Strict):
    """The judge stage (pipeline/stages/judge.py): people's verdict from the exported votes."""

    bootstrap: Annotated[int, Field(ge=0, le=1_000_000)]  # resamples of voters for the strengths' intervals
    ci_level: Annotated[float, Field(gt=0.5, lt=1.0)]
    seed: Seed
    ties: Literal["half", "drop"]  # "can't tell": half a win for each side, or no vote (evaluation/people.py)


class WeightSource(Strict):
    """Where one scorer weight is downloaded from and what its bytes must hash to."""

    url: Annotated[str, Field(pattern=r"^https?://[^/]+/.*[^/]$")]  # the file name is the URL path's last part
    # The sha256 of the file as 64 hex digits, or its first 8 or more (what a torch hub file name publishes and
    # torch.hub's check_hash checks); null: nothing published, the stage records the sha256 it finds.
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{8,64}$")] | None


class ScorerWeightsSection(Strict):
    """The scorer-weights stage (pipeline/stages/scorer_weights.py): one :class:`WeightSource` per weight of
    evaluation.weights.WEIGHTS, and how long to try."""

    timeout_s: Annotated[float, Field(gt=0.0, le=600.0)]  # per connection attempt and per read
    retries: Annotated[int, Field(ge=0, le=20)]  # of a transfer that started; a failed connection is not retried
    backoff_s: Annotated[float, Field(ge=0.0, le=600.0)]
    max_retry_after_s: Annotated[float, Field(ge=0.0, le=86400.0)]
    lpips_alexnet: WeightSource
    cfsd_vgg19: WeightSource
    fid_inception: WeightSource
    art_inception: WeightSource


class SearchDim(Strict):
    """One tuned weight: a float range, sampled on a log scale by default (weights span decades)."""

    low: Annotated[float, Field(ge=0.0)]
    high: Annotated[float, Field(gt=0.0)]
    log: bool

    @model_validator(mode="after")
    def _range(self) -> SearchDim:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be < high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale range needs low > 0, got {self.low}")
        return self


class TuneMethodSection(Strict):
    trials: Annotated[int, Field(ge=1, le=100_000)]  # finished (complete + pruned) trials the study reaches
    space: Annotated[dict[str, SearchDim], Field(min_length=1)]  # methods.<m> key -> range
    budget: dict[str, Any]  # per-trial overrides of methods.<m> (a short schedule), e.g. {train: {iterations: 30}}
    prune_every: Annotated[int, Field(ge=0)]  # feed-forward: score val every N training iterations (0 = never prune)
    val_pairs: Annotated[int, Field(ge=1)] | None  # at most this many val pairs per trial (seeded subset); null = all


class TuneSection(Strict):
    use_tuned: bool  # train/stylize use reports/tuning/<m>/best.yaml over methods.<m>
    storage: str | None  # Optuna RDB URL ("{method}" is replaced); null = sqlite:///reports/tuning/<m>/study.db
    sampler: Literal["tpe", "nsga2", "random"]
    seed: Seed
    objectives: Annotated[list[str], Field(min_length=2, max_length=2)]  # evaluation metric names
    selection: Literal["knee", "weighted"]
    selection_weight: Fraction  # "weighted": weight of the first objective (normalised on the front)
    prune_dominated_by: Annotated[int, Field(ge=1)]
    heartbeat_s: Annotated[int, Field(ge=1, le=3600)]
    grace_s: Annotated[int, Field(ge=2, le=36_000)]
    wait_s: Annotated[int, Field(ge=1, le=7 * 86_400)]  # longest wait for other workers' trials with no trial finishing
    # + one TuneMethodSection per tuned method of the registry (tune.<method>), added by params_model()

    @field_validator("objectives")
    @classmethod
    def _metrics(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in PAIR_METRICS or n in COSTS]
        if unknown:
            raise ValueError(f"unknown objective(s) {', '.join(unknown)}; choose from the scored metrics")
        if names[0] == names[1]:
            raise ValueError("the two objectives must differ")
        return names

    @model_validator(mode="after")
    def _spaces(self) -> TuneSection:
        if self.heartbeat_s >= self.grace_s:
            raise ValueError(f"grace_s ({self.grace_s}) must exceed heartbeat_s ({self.heartbeat_s})")
        for method in tuned_methods():
            section = getattr(self, method)
            spec = get_spec(method)
            # a trained method's loss weights are in its train section (what tuning changes), Gatys's at the top
            model, where = (
                (spec.params.model_fields["train"].annotation, "train.") if spec.trains else (spec.params, "")
            )
            allowed = [k for k, f in model.model_fields.items() if f.annotation is float]
            bad = [k for k in section.space if k not in allowed]
            if bad:
                raise ValueError(
                    f"{method}.space: {', '.join(bad)} cannot be tuned (float keys of methods.{method}.{where}: "
                    f"{', '.join(allowed)})"
                )
        return self


def tuned_section(method: str) -> str:
    """The section whose change reruns ``tune@<method>``: a trained method's ``train`` (its trials train with it and
    score the trained network at its inference defaults, pipeline/stage_params.py ``as_trained``), all of an untrained
    method's."""
    return f"methods.{method}.train" if get_spec(method).trains else f"methods.{method}"


class StylizeInputs(Strict):
    """What stylize@<m> reads besides the code and the test images (dvc.yaml deps and arguments)."""

    model_dep: Annotated[str, Field(min_length=1)]  # models/<m> for a trained method; else a file it reads anyway
    model_arg: str  # "--model models/<m>" or ""
    tuned_dep: Annotated[str, Field(min_length=1)]  # reports/tuning/<m>/best.yaml for a tuned method; else as model_dep
    tuned_arg: str  # "--tuned reports/tuning/<m>/best.yaml" or ""


class MethodStagesSection(Strict):
    """``method_stages``: the lists dvc.yaml's per-method stages iterate over (``foreach``), checked against
    methods.registry here, so a method added to the registry without its stages (or the reverse) is one clear error."""

    tune: dict[str, str]  # tuned method -> the section whose change reruns its tuning (pipeline/stage_params.py)
    train: list[str]
    stylize: dict[str, StylizeInputs]

    @model_validator(mode="after")
    def _match_registry(self) -> MethodStagesSection:
        expected_tune = {m: tuned_section(m) for m in tuned_methods()}
        problems = []
        if self.tune != expected_tune:
            problems.append(f"tune must be {expected_tune} (methods.registry's tuned methods), got {self.tune}")
        if set(self.train) != set(trained_methods()) or len(self.train) != len(set(self.train)):
            problems.append(f"train must be {trained_methods()} (methods.registry's trained methods), got {self.train}")
        if set(self.stylize) != set(list_methods()):
            problems.append(f"stylize must list {list_methods()} (every registered method), got {list(self.stylize)}")
        for name in trained_methods():
            inputs = self.stylize.get(name)
            if inputs is not None and (inputs.model_dep, inputs.model_arg) != (
                f"models/{name}",
                f"--model models/{name}",
            ):
                problems.append(f"stylize.{name}: a trained method reads models/{name} (--model models/{name})")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class Params(Strict):
    profile: Literal["sample", "full", "pretrain", "rehearsal"]
    method_stages: MethodStagesSection
    base: BaseSection
    encoder: EncoderSection
    tracking: TrackingSection
    fetch: FetchSection
    prepare: PrepareSection
    methods: BaseModel  # one section per registered method, validated against its params class (params_model())
    tune: TuneSection
    stylize: StylizeSection
    evaluate: EvaluateSection
    scorer_weights: ScorerWeightsSection
    judge: JudgeSection


def _registry_key() -> tuple[tuple[str, int], ...]:
    return tuple((name, id(get_spec(name))) for name in list_methods())


@functools.lru_cache(maxsize=8)
def _params_model(key: tuple[tuple[str, int], ...]) -> type[Params]:
    names = [name for name, _ in key]
    methods_model = create_model(  # type: ignore[call-overload]
        "MethodsSection", __base__=Strict, **{name: (get_spec(name).params, ...) for name in names}
    )
    tune_model = create_model(  # type: ignore[call-overload]
        "TuneSection", __base__=TuneSection, **{name: (TuneMethodSection, ...) for name in tuned_methods()}
    )
    return create_model("Params", __base__=Params, methods=(methods_model, ...), tune=(tune_model, ...))


def params_model() -> type[Params]:
    """The :class:`Params` schema for the methods registered now: ``methods.<m>`` is each method's own params class
    (methods/schemas/), ``tune.<m>`` a :class:`TuneMethodSection` per tuned method."""
    return _params_model(_registry_key())


# ----------------------------------------------------------------------------------------- loading


class YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads YAML 1.2 floats such as ``1e-4`` (PyYAML's 1.1 rules make them strings)."""


_YAML12_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
YamlLoader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+0123456789."))


class YamlDumper(yaml.SafeDumper):
    """SafeDumper that quotes strings :class:`YamlLoader` would read as floats (``"1e5"``), so dumps re-load equal."""


YamlDumper.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+0123456789."))


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse a YAML mapping, with one clear error for a missing, unparsable or non-mapping file."""
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=YamlLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {type(data).__name__}")
    return data


def _check_overlay(base: dict[str, Any], overlay: dict[str, Any], where: str = "") -> None:
    """An overlay key absent from ``base`` is an error: a profile may only change existing parameters."""
    for key, value in overlay.items():
        dotted = f"{where}.{key}" if where else str(key)
        if key not in base:
            raise ConfigError(f"unknown key {dotted!r} in profile (params.yaml has no such key)")
        if isinstance(value, dict) and isinstance(base[key], dict):
            _check_overlay(base[key], value, dotted)


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``base`` with a profile's ``overlay`` :func:`~methods.spec.merged` in (the project's one merge rule: mappings
    merge key by key, anything else replaces); the overlay may only change keys ``base`` has."""
    _check_overlay(base, overlay)
    return copy.deepcopy(merged(base, overlay))


def validate(data: dict[str, Any], source: str) -> Params:
    """Validate a merged params mapping; raise one ConfigError naming every bad key."""
    model = params_model()
    try:
        params = model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: " + "; ".join(describe_errors(exc, model, ""))) from None
    # The params classes have defaults (for code and one-off runs); params.yaml must still set every key.
    missing = [key for name in list_methods() for key in unset_keys(getattr(params.methods, name), f"methods.{name}")]
    if missing:
        raise ConfigError(f"{source}: " + "; ".join(f"missing key {key!r}" for key in missing))
    return params


class TuneError(NstError):
    """A tuning problem with one clear message (bad best.yaml, no trial finished, ...)."""


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["iterations=10", "train.lr=1e-3"]`` -> ``{"iterations": 10, "train": {"lr": 0.001}}`` (values as YAML;
    a dotted key names a nested section)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected key=value")
        *parents, last = key.strip().split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = yaml.load(value, Loader=YamlLoader)
    return out


def read_best(path: Path, method: str) -> dict[str, float]:
    """The tuned weights in ``best.yaml``, checked: it must be for ``method`` and hold only numbers."""
    if not path.is_file():
        raise TuneError(f"{path}: not found (run the tune@{method} stage, or set tune.use_tuned: false)")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=YamlLoader)
    except yaml.YAMLError as exc:
        raise TuneError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict) or data.get("method") != method or not isinstance(data.get("weights"), dict):
        raise TuneError(f"{path}: not a best.yaml for {method} (needs method: {method} and a weights mapping)")
    weights = data["weights"]
    bad = [k for k, v in weights.items() if not isinstance(v, int | float) or not math.isfinite(v)]
    if bad:
        raise TuneError(f"{path}: weights {', '.join(bad)} are not finite numbers")
    return {k: float(v) for k, v in weights.items()}


def weight_changes(method: str, weights: Mapping[str, float]) -> dict[str, Any]:
    """Tuned weights (``tune.<m>.space`` keys) as changes of ``methods.<m>``: in its ``train`` section for a trained
    method, at the top for an untrained one."""
    return {"train": dict(weights)} if get_spec(method).trains else dict(weights)


def effective_params(
    params: Params,
    method: str,
    *,
    tuned: Path | None = None,
    changes: Mapping[str, Any] | None = None,
) -> Params:
    """``params`` with ``methods.<method>`` as the stage runs it: ``best.yaml``'s weights (when ``tuned`` is given and
    ``tune.use_tuned``), then ``changes`` (``--set``, a trial's budget and weights), merged and validated once.

    Raises:
        TuneError: a bad ``best.yaml`` or tuned weights the params class refuses; ConfigError: a bad change.
    """
    section = getattr(params.methods, method)
    if tuned is not None and params.tune.use_tuned:
        try:
            section = with_changes(section, weight_changes(method, read_best(tuned, method)), where=f"methods.{method}")
        except ParamsError as exc:
            raise TuneError(f"{tuned}: {exc}") from None
    if changes:
        try:
            section = with_changes(section, changes, where=f"methods.{method}")
        except ParamsError as exc:
            raise ConfigError(str(exc)) from None
    return params.model_copy(update={"methods": params.methods.model_copy(update={method: section})})


def profile_chain(profile: str) -> list[str]:
    """The profile files merged over params.yaml for ``profile``, in order: ``rehearsal`` -> ``[full, rehearsal]``."""
    chain = [profile]
    while chain[0] in PROFILE_BASES:
        chain.insert(0, PROFILE_BASES[chain[0]])
    return chain


def effective_dict(path: str | Path = "params.yaml", profile: str | None = None) -> dict[str, Any]:
    """The params mapping after applying the selected profile (``profile`` overrides the file's; not yet validated)."""
    path = Path(path)
    data = read_yaml(path)
    profile = profile or data.get("profile", "sample")
    if profile != "sample":
        if profile not in PROFILES:
            raise ConfigError(f"{path}: profile = {profile!r}: must be one of {', '.join(map(repr, PROFILES))}")
        for name in profile_chain(profile):
            overlay_path = path.parent / PROFILES_DIR / f"{name}.yaml"
            overlay = read_yaml(overlay_path)
            try:
                data = deep_merge(data, overlay)
            except ConfigError as exc:
                raise ConfigError(f"{overlay_path}: {exc}") from None
    data["profile"] = profile
    return data


def load_params(
    path: str | Path = "params.yaml",
    profile: str | None = None,
    *,
    method: str | None = None,
    tuned: Path | None = None,
    changes: Mapping[str, Any] | None = None,
) -> Params:
    """Read params.yaml, apply its profile (or ``profile``: ``nst train --profile pretrain``) and validate strictly:
    the one place a stage gets its parameters from. With ``method``, its section as the stage runs it
    (:func:`effective_params`: ``tuned``'s best.yaml weights, then ``changes``).

    Raises:
        ConfigError: naming the file, the dotted key, the value and what is allowed; TuneError: a bad best.yaml.
    """
    path = Path(path)
    data = effective_dict(path, profile)
    chain = [] if data.get("profile", "sample") == "sample" else profile_chain(data["profile"])
    source = " + ".join([str(path), *(f"profiles/{name}.yaml" for name in chain)])
    params = validate(data, source)
    return params if method is None else effective_params(params, method, tuned=tuned, changes=changes)


def pick_sections(params: Params, sections: Sequence[str] | None = None) -> dict[str, Any]:
    """The values under ``sections`` (dotted keys) as one nested mapping (None: every section)."""
    tree = params.model_dump(mode="json")
    if sections is None:
        return tree
    picked: dict[str, Any] = {}
    for dotted in sections:
        src, dst = tree, picked
        *parents, last = dotted.split(".")
        for key in parents:
            src, dst = src[key], dst.setdefault(key, {})
        dst[last] = src[last]
    return picked


def dump_params(params: Params, sections: Sequence[str] | None = None) -> str:
    """YAML text of :func:`pick_sections` that :func:`load_params` reads back equal (floats and look-alike strings
    kept apart)."""
    return yaml.dump(pick_sections(params, sections), Dumper=YamlDumper, sort_keys=False)
