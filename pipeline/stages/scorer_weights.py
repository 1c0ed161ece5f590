"""scorer-weights stage: the scorer's third-party weights into one folder DVC tracks -> ``models/scorer/``.

For each weight of :data:`evaluation.weights.WEIGHTS` (URL and sha256 pinned in params.yaml ``scorer_weights``),
the file named as the URL's last path part comes from, in order:

1. the folder itself, when the copy there matches its pin (nothing is fetched twice; the folder persists);
2. a local copy: torch hub's cache (``$TORCH_HOME/hub/checkpoints``, where torchvision, lpips and pytorch-fid keep
   them) and, for the art Inception, art-fid's own cache (``<tempdir>/art_fid``, art_fid/utils.py:7-12); checked
   against its pin, then hard-linked (copied across file systems);
3. a download (pipeline.download: streamed to a temporary file, retried with backoff, then checked and renamed into
   place). A connection that cannot be made (refused, name not resolved, connect timeout: offline) is not retried,
   and no later weight is asked of that host; a transfer that started and broke off is retried ``retries`` times.

A downloaded file that fails its pin is an error naming the key (``scorer_weights.<name>.sha256``) and nothing of it
stays in the folder: a pin that no longer matches its URL needs a person. A weight that cannot be had (offline, HTTP
404) is recorded absent with the reason, and the stage succeeds: evaluate reports the metrics that need it as n/a.

``found.json`` (format: evaluation/weights.py) records per weight the file, its sha256 and how it was checked, or
why it is absent. It holds nothing that changes between runs with the same files (no times, no paths of this
machine, no ports), so DVC sees the folder change exactly when a weight appears, changes or goes: then evaluate and
the report rerun, and nothing upstream. The stage is ``always_changed`` in dvc.yaml: the network and torch hub's cache
are inputs DVC cannot hash.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3.exceptions

from evaluation.weights import FOUND_FILE, WEIGHTS
from methods.errors import NstError
from methods.utils import sha256_file, write_text_atomic
from pipeline.commands import add_command
from pipeline.config import ScorerWeightsSection, WeightSource, load_params
from pipeline.download import DownloadError, RetryPolicy, download

log = logging.getLogger(__name__)

INCOMING = ".incoming"  # downloads land here (inside the folder: one file system for the rename), removed after


class ScorerWeightsError(NstError):
    """A weight's bytes do not match their pin in params.yaml."""


class Unreachable(DownloadError):
    """No connection could be made to the host (offline, refused, name not resolved, connect timeout)."""


class _FailFastSession(requests.Session):
    """A session whose failure to connect is final: pipeline.download retries a transfer that broke off, but retrying
    an absent network only multiplies the wait (offline, the stage must end within seconds)."""

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        try:
            return super().request(method, url, *args, **kwargs)
        except requests.ConnectionError as exc:
            reason = getattr(exc.args[0], "reason", None) if exc.args else None
            if isinstance(exc, requests.ConnectTimeout | requests.exceptions.ProxyError) or isinstance(
                reason,
                urllib3.exceptions.NewConnectionError,  # refused, no route; NameResolutionError is one
            ):
                raise Unreachable(f"cannot connect to {urlsplit(str(url)).netloc}: {exc}") from exc
            raise


@dataclass(frozen=True)
class Found:
    """One weight's line in found.json."""

    file: str | None
    sha256: str | None
    checked: str | None = None
    reason: str | None = None

    def record(self) -> dict[str, str | None]:
        if self.file is None:
            return {"file": None, "sha256": None, "reason": self.reason}
        return {"file": self.file, "sha256": self.sha256, "checked": self.checked}


def file_name(url: str) -> str:
    """The weight's file name: the last part of the URL's path (as torch.hub names its cache files)."""
    return os.path.basename(urlsplit(url).path)


def matches(sha256: str, pin: str | None) -> bool:
    """Whether a file's full ``sha256`` fits its pin (a full hash, a prefix, or None: anything fits)."""
    return pin is None or sha256.lower().startswith(pin.lower())


def how_checked(pin: str | None) -> str:
    if pin is None:
        return "nothing pinned: sha256 recorded as found"
    if len(pin) == 64:
        return "sha256 pinned"
    return f"sha256 prefix {pin} pinned (the part the file name publishes)"


def torch_hub_checkpoints() -> Path:
    """torch hub's download cache (``torch.hub.get_dir()/checkpoints``), where torchvision, lpips and pytorch-fid put
    these files. torch is imported only when a weight is not in the folder already."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def local_candidates(name: str, file: str) -> list[Path]:
    """Where a copy of weight ``name`` may already be on this machine, in the order they are tried."""
    places = [torch_hub_checkpoints() / file]
    if name == "art_inception":  # art-fid downloads to <tempdir>/art_fid/<file> (art_fid/utils.py:7-12)
        places.append(Path(tempfile.gettempdir()) / "art_fid" / file)
    return places


def place_link(src: Path, dest: Path, incoming: Path) -> None:
    """Put ``src`` at ``dest`` atomically: a hard link (no second copy of hundreds of MB), else a copy."""
    incoming.mkdir(parents=True, exist_ok=True)
    tmp = incoming / dest.name
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # another file system, or links not allowed
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def _already_here(name: str, dest: Path, pin: str | None, checked: str) -> Found | None:
    """``dest`` as found when it is already there and matches ``pin``; None otherwise (a mismatching one is
    deleted)."""
    if not dest.is_file():
        return None
    sha = sha256_file(dest)
    if matches(sha, pin):
        log.info("scorer-weights: %s: %s already here", name, dest.name)
        return Found(dest.name, sha, checked)
    log.warning("scorer-weights: %s: %s here has sha256 %s, pinned %s: replacing it", name, dest.name, sha, pin)
    dest.unlink()
    return None


def _linked_locally(name: str, file: str, dest: Path, incoming: Path, pin: str | None, checked: str) -> Found | None:
    """The first of :func:`local_candidates` that matches ``pin``, linked to ``dest``, as found; None when none
    does."""
    for candidate in local_candidates(name, file):
        if not candidate.is_file():
            continue
        sha = sha256_file(candidate)
        if not matches(sha, pin):
            log.warning("scorer-weights: %s: %s has sha256 %s, pinned %s: not used", name, candidate, sha, pin)
            continue
        place_link(candidate, dest, incoming)
        log.info("scorer-weights: %s: %s from %s", name, file, candidate.parent)
        return Found(file, sha, checked)
    return None


def _downloaded(
    name: str,
    source: WeightSource,
    dest: Path,
    incoming: Path,
    cfg: ScorerWeightsSection,
    unreachable: dict[str, str],
    sleep: Callable[[float], None],
) -> Found:
    """``source.url`` downloaded through ``incoming`` to ``dest``, as found, or not found with the reason (its host
    unreachable, now or before, or the download failed); raises ScorerWeightsError on a sha256 other than the pin."""
    file, pin = file_name(source.url), source.sha256
    host = urlsplit(source.url).netloc
    if host in unreachable:
        return Found(None, None, reason=f"not on this machine; {unreachable[host]}")
    policy = RetryPolicy(
        retries=cfg.retries, backoff_s=cfg.backoff_s, timeout_s=cfg.timeout_s, max_retry_after_s=cfg.max_retry_after_s
    )
    incoming.mkdir(parents=True, exist_ok=True)
    tmp = incoming / file
    try:
        download(source.url, tmp, policy=policy, session=_FailFastSession(), sleep=sleep)
    except Unreachable as exc:
        log.warning("scorer-weights: %s: %s", name, exc)
        unreachable[host] = f"cannot connect to {host} (offline?)"
        return Found(None, None, reason=f"not on this machine; {unreachable[host]}")
    except DownloadError as exc:
        log.warning("scorer-weights: %s: download failed: %s", name, exc)
        why = f"HTTP {exc.status}" if exc.status is not None else "the transfer failed after every retry"
        return Found(None, None, reason=f"not on this machine; download from {host} failed: {why}")
    sha = sha256_file(tmp)
    if not matches(sha, pin):
        tmp.unlink(missing_ok=True)
        raise ScorerWeightsError(
            f"scorer_weights.{name}.sha256: {source.url} gave a file with sha256 {sha}, but {pin} is pinned; the file "
            "is discarded. Check the pin and the URL in params.yaml"
        )
    os.replace(tmp, dest)
    log.info("scorer-weights: %s: %s downloaded from %s (sha256 %s)", name, file, host, sha)
    return Found(file, sha, how_checked(pin))


def resolve(
    name: str,
    source: WeightSource,
    out_dir: Path,
    cfg: ScorerWeightsSection,
    unreachable: dict[str, str],
    sleep: Callable[[float], None] = time.sleep,
) -> Found:
    """Find, link or download weight ``name`` into ``out_dir``; see the module docstring for the order.

    ``unreachable`` (host -> why) is shared between weights: a host that could not be reached is not asked again.

    Raises:
        ScorerWeightsError: a downloaded file does not match ``scorer_weights.<name>.sha256``.
    """
    file, pin = file_name(source.url), source.sha256
    dest, incoming = out_dir / file, out_dir / INCOMING
    checked = how_checked(pin)
    found = _already_here(name, dest, pin, checked)
    if found is None:
        found = _linked_locally(name, file, dest, incoming, pin, checked)
    if found is None:
        found = _downloaded(name, source, dest, incoming, cfg, unreachable, sleep)
    return found


def run(
    cfg: ScorerWeightsSection, out_dir: Path, sleep: Callable[[float], None] = time.sleep
) -> dict[str, dict[str, str | None]]:
    """Resolve every weight into ``out_dir`` and write ``found.json``; returns its ``weights`` mapping."""
    out_dir.mkdir(parents=True, exist_ok=True)
    incoming = out_dir / INCOMING
    shutil.rmtree(incoming, ignore_errors=True)  # left by a run that was killed
    unreachable: dict[str, str] = {}
    try:
        found = {name: resolve(name, getattr(cfg, name), out_dir, cfg, unreachable, sleep) for name in WEIGHTS}
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
    doc = {"weights": {name: f.record() for name, f in found.items()}}
    write_text_atomic(out_dir / FOUND_FILE, json.dumps(doc, indent=2, sort_keys=True) + "\n")
    for name, f in found.items():
        if f.file is None:
            log.warning("scorer-weights: %s (%s) is absent: %s", name, WEIGHTS[name], f.reason)
    return doc["weights"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "scorer-weights", description=__doc__)
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    p.add_argument("--out", type=Path, default=Path("models/scorer"), help="output folder (default: models/scorer)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    weights = run(params.scorer_weights, args.out)
    present = sum(1 for w in weights.values() if w["file"])
    log.info("scorer-weights: %d of %d weights in %s", present, len(weights), args.out)
    return 0
