"""A people's study built from a run's outputs, and the seeded scheduler that hands its items to voters.

Two tasks, as in the user studies of the papers this benchmark measures against (issue 28):

- **preference**: one content photo, one painting and the stylizations of that pair by two methods; "which renders
  this photo in this painting's style better?", or "can't tell". An item is one (content, style) pair x one unordered
  pair of methods.
- **deception** (IEContraAST's deception rate, Chen et al., NeurIPS 2021): one image, "a painting, or a photo made
  to look like one?"; the items are the real test paintings and every method's outputs.

Pure functions (no web, no database): :func:`build_study` reads ``outputs/<method>/timing.csv`` (the columns
``content``, ``style``, ``file`` of pipeline/stylize.py) and the test paintings; :func:`schedule` picks a voter's
items, least issued first, so that after any number of voters the issued counts of a task's items differ by at most
one; :func:`voter_rng` seeds the tie-break and the sides from the study's seed and the voter's arrival number.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from methods.errors import NstError
from methods.utils import sha256_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")  # what pipeline/prepare.py writes (PNG) and what a folder source may hold
TIMING_COLUMNS = ("content", "style", "file")  # pipeline/stylize.py's TIMING_FIELDS that name an output
PREFERENCE = "preference"
DECEPTION = "deception"
PAINTING = "painting"  # the "method" of a real test painting in a deception item
# Per voter: 10 preference + 5 deception questions, what issue 28's acceptance test answers; a few minutes of a
# person's time (our estimate, not a published protocol's number).
DEFAULT_PER_VOTER = {PREFERENCE: 10, DECEPTION: 5}
# Half of a voter's deception items are real paintings, so a judge who always answers "painting" scores chance (50 %)
# (IEContraAST's protocol mixes the two; the share is ours).
DEFAULT_PAINTING_SHARE = 0.5


@dataclass(frozen=True)
class Image:
    """One image a voter may be shown: its path on disk (never sent to the browser) and its sha256."""

    path: Path
    sha256: str


@dataclass(frozen=True)
class Output:
    """One stylized output of ``method`` for the (``content``, ``style``) pair (file names of the test images)."""

    method: str
    content: str
    style: str
    image: Image


@dataclass(frozen=True)
class PreferenceItem:
    """(content, style) x two methods, ``method_a < method_b``; the voter's sides are drawn per voter."""

    content: str
    style: str
    method_a: str
    method_b: str

    @property
    def key(self) -> str:
        return f"{PREFERENCE}|{self.content}|{self.style}|{self.method_a}|{self.method_b}"


@dataclass(frozen=True)
class DeceptionItem:
    """One image: a real painting (``method == "painting"``, ``content`` empty) or one method's output."""

    method: str
    content: str
    style: str

    @property
    def key(self) -> str:
        return f"{DECEPTION}|{self.method}|{self.content}|{self.style}"

    @property
    def is_painting(self) -> bool:
        return self.method == PAINTING


@dataclass(frozen=True)
class Study:
    """Everything a study shows, keyed by file name; ``fingerprint`` identifies the images (their sha256s)."""

    name: str
    seed: int
    methods: tuple[str, ...]
    contents: Mapping[str, Image]
    paintings: Mapping[str, Image]
    outputs: Mapping[tuple[str, str, str], Output]  # (method, content, style) -> output
    preference: tuple[PreferenceItem, ...]
    deception: tuple[DeceptionItem, ...]
    per_voter: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_PER_VOTER))
    painting_share: float = DEFAULT_PAINTING_SHARE

    @property
    def fingerprint(self) -> str:
        """sha256 over every image the study can show (sorted), so a study's votes never mix two sets of outputs."""
        rows = sorted(
            [f"content|{k}|{v.sha256}" for k, v in self.contents.items()]
            + [f"painting|{k}|{v.sha256}" for k, v in self.paintings.items()]
            + [f"{m}|{c}|{s}|{o.image.sha256}" for (m, c, s), o in self.outputs.items()]
        )
        return hashlib.sha256("\n".join(rows).encode()).hexdigest()

    def describe(self) -> str:
        """A JSON summary of the study (what ``studies.config`` stores)."""
        return json.dumps(
            {
                "methods": list(self.methods),
                "contents": sorted(self.contents),
                "paintings": sorted(self.paintings),
                "preference_items": len(self.preference),
                "deception_items": len(self.deception),
                "per_voter": dict(self.per_voter),
                "painting_share": self.painting_share,
            },
            sort_keys=True,
        )

    def image_of(self, method: str, content: str, style: str) -> Image:
        """The image a (method, content, style) names: a painting for ``method == "painting"``, else an output."""
        if method == PAINTING:
            return self.paintings[style]
        return self.outputs[(method, content, style)].image


def _images(folder: Path, role: str) -> dict[str, Image]:
    if not folder.is_dir():
        raise NstError(f"{role} folder {folder} does not exist")
    found = {p.name: Image(p, sha256_file(p)) for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    if not found:
        raise NstError(f"{role} folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return found


def read_outputs(method_dir: Path) -> list[Output]:
    """The outputs ``method_dir/timing.csv`` lists; each file must exist. Its sha256 is the file's own: timing.csv
    records the inputs' sha256s (``content_sha256``, ``style_sha256``), not the output's; an ``output_sha256``
    column, where present, is checked against the file."""
    timing = method_dir / "timing.csv"
    try:
        with timing.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise NstError(f"cannot read {timing}: {exc}") from exc
    if not rows:
        raise NstError(f"{timing} lists no outputs")
    missing = [c for c in TIMING_COLUMNS if c not in rows[0]]
    if missing:
        raise NstError(f"{timing} lacks the column(s) {', '.join(missing)} (pipeline/stylize.py writes them)")
    outputs = []
    for row in rows:
        path = method_dir / row["file"]
        if Path(row["file"]).name != row["file"] or not path.is_file():
            raise NstError(f"{timing} names {row['file']!r}, which is not a file in {method_dir}")
        sha = sha256_file(path)
        if row.get("output_sha256") and row["output_sha256"] != sha:
            raise NstError(f"{path}: sha256 {sha} differs from {timing}'s output_sha256 {row['output_sha256']}")
        outputs.append(Output(method_dir.name, row["content"], row["style"], Image(path, sha)))
    return outputs


def build_study(
    name: str,
    outputs_dir: Path,
    paintings_dir: Path,
    content_dir: Path | None = None,
    *,
    seed: int = 0,
    methods: Sequence[str] | None = None,
    per_voter: Mapping[str, int] | None = None,
    painting_share: float = DEFAULT_PAINTING_SHARE,
) -> Study:
    """The study of the outputs under ``outputs_dir`` (every ``<method>/timing.csv``, or only ``methods``).

    A preference item needs both methods' outputs of a pair whose content photo (``content_dir``, by default
    ``paintings_dir``'s sibling ``content``) and painting are present; a deception item is a painting or an output.
    """
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise NstError(f"study name {name!r}: use letters, digits, '-' and '_' only")
    content_dir = content_dir if content_dir is not None else paintings_dir.parent / "content"
    paintings = _images(paintings_dir, "paintings")
    contents = _images(content_dir, "content")
    if not outputs_dir.is_dir():
        raise NstError(f"outputs folder {outputs_dir} does not exist")
    found = sorted(p.name for p in outputs_dir.iterdir() if (p / "timing.csv").is_file())
    chosen = sorted(methods) if methods else found
    absent = [m for m in chosen if m not in found]
    if absent:
        raise NstError(f"no {outputs_dir}/<method>/timing.csv for {', '.join(absent)}; found: {', '.join(found)}")
    if len(chosen) < 2:
        raise NstError(f"a preference study needs outputs of two methods at least; {outputs_dir} has {chosen}")
    if PAINTING in chosen:
        raise NstError(f"{outputs_dir}/{PAINTING}: the name is reserved for the real paintings")
    outputs = {
        (o.method, o.content, o.style): o
        for m in chosen
        for o in read_outputs(outputs_dir / m)
        if o.content in contents and o.style in paintings
    }
    pairs = sorted({(c, s) for _, c, s in outputs})
    preference = tuple(
        PreferenceItem(c, s, a, b)
        for c, s in pairs
        for a, b in itertools.combinations(chosen, 2)
        if (a, c, s) in outputs and (b, c, s) in outputs
    )
    if not preference:
        raise NstError(f"no (content, style) pair under {outputs_dir} has outputs of two methods")
    deception = tuple(DeceptionItem(PAINTING, "", s) for s in sorted(paintings)) + tuple(
        DeceptionItem(m, c, s) for m, c, s in sorted(outputs)
    )
    counts = dict(DEFAULT_PER_VOTER if per_voter is None else per_voter)
    if set(counts) != {PREFERENCE, DECEPTION} or any(v < 0 for v in counts.values()) or sum(counts.values()) == 0:
        raise NstError(f"per_voter {counts}: give {PREFERENCE} and {DECEPTION}, counts >= 0, not both 0")
    if not 0.0 <= painting_share <= 1.0:
        raise NstError(f"painting_share {painting_share} is outside [0, 1]")
    return Study(name, seed, tuple(chosen), contents, paintings, outputs, preference, deception, counts, painting_share)


def voter_rng(seed: int, voter_number: int) -> np.random.Generator:
    """The generator of the ``voter_number``-th voter (0-based arrival order) of a study seeded ``seed``."""
    return np.random.default_rng([seed, voter_number])


def schedule(keys: Sequence[str], issued: Mapping[str, int], n: int, rng: np.random.Generator) -> list[str]:
    """``n`` distinct keys (at most ``len(keys)``), those issued least first, ties broken by ``rng``'s permutation.

    If the counts in ``issued`` differ by at most one before, they still do after the returned keys are counted once
    more each: the least-issued keys are taken first.
    """
    order = rng.permutation(len(keys))
    ranked = sorted(order, key=lambda i: issued.get(keys[i], 0))  # sorted() is stable: the permutation breaks ties
    return [keys[i] for i in ranked[: min(n, len(keys))]]


@dataclass(frozen=True)
class Question:
    """One question issued to a voter: a preference item with its sides, or a deception item."""

    kind: str
    item: PreferenceItem | DeceptionItem
    swapped: bool = False  # preference: method_b is shown on the left

    @property
    def sides(self) -> tuple[str, str]:
        """(left, right) methods of a preference question."""
        assert isinstance(self.item, PreferenceItem)
        a, b = self.item.method_a, self.item.method_b
        return (b, a) if self.swapped else (a, b)


def questions_for_voter(study: Study, issued: Mapping[str, int], voter_number: int) -> list[Question]:
    """The questions of the ``voter_number``-th voter, given how often each item key was issued before.

    Preference questions come first, then deception; within each, the scheduler's order. Sides are drawn per question
    from the voter's generator, so two voters shown one item see it either way round.
    """
    rng = voter_rng(study.seed, voter_number)
    by_key = {i.key: i for i in (*study.preference, *study.deception)}
    picked = schedule([i.key for i in study.preference], issued, study.per_voter[PREFERENCE], rng)
    questions = [Question(PREFERENCE, by_key[k], bool(rng.integers(2))) for k in picked]
    n = study.per_voter[DECEPTION]
    paintings = [i.key for i in study.deception if i.is_painting]
    made = [i.key for i in study.deception if not i.is_painting]
    n_paint = min(round(n * study.painting_share), len(paintings))
    chosen = schedule(paintings, issued, n_paint, rng) + schedule(made, issued, n - n_paint, rng)
    questions += [Question(DECEPTION, by_key[chosen[i]]) for i in rng.permutation(len(chosen))]
    return questions
