"""Votes in a real database: SQLAlchemy 2 Core on any URL (default ``sqlite:///reports/judging/votes.db``).

Four tables:

- ``studies``: one row per study: its seed, the fingerprint of the images it shows (:attr:`Study.fingerprint`), the
  git sha of the code that made the outputs, a JSON summary;
- ``voters``: a public random id, the arrival number (seeds the voter's questions), the sha256 of the cookie token
  (the token itself is never stored) and the voter's CSRF token;
- ``assignments``: every question issued to a voter: kind, item, the methods on each side and their files and
  sha256s, the opaque ids its images are served by, when it was issued and first shown;
- ``votes``: append-only (no code path updates or deletes a row): the answer, a copy of the assignment's provenance,
  the voter, the time and the voter's response time. ``assignment_id`` is unique, so a replayed vote cannot be
  stored twice, whatever the server's own checks.

On sqlite every connection runs in WAL mode with a busy timeout (readers never block the writer; writers wait
instead of failing), set by a ``connect`` event.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from methods.errors import NstError
from methods.utils import atomic_path
from pipeline.judging.study import DECEPTION, PREFERENCE, Question, Study

DEFAULT_DB_URL = "sqlite:///reports/judging/votes.db"  # the issue's default (reports/judging/ is the judge stage's)
# Connections: every one of anyio's 40 worker threads (its default thread limiter, which runs FastAPI's sync routes)
# can hold one at once, so none waits for the pool (10 kept + 40 on demand).
POOL_SIZE, POOL_OVERFLOW = 10, 40
SQLITE_BUSY_TIMEOUT_MS = 10_000  # writers wait up to 10 s for the lock (sqlite's default is 0: fail at once)

metadata = MetaData()

studies = Table(
    "studies",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("created_at", String(32), nullable=False),
    Column("seed", Integer, nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("git_sha", String(64), nullable=False),
    Column("config", Text, nullable=False),
    Column("link_sha256", String(64)),  # sha256 of the voters' secret (the link is printed once, never stored)
    Column("admin_sha256", String(64)),  # sha256 of the admin token
)

voters = Table(
    "voters",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("study", String(64), ForeignKey("studies.name"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("csrf", String(64), nullable=False),
    Column("created_at", String(32), nullable=False),
    UniqueConstraint("study", "number", name="uq_voter_number"),
)


def _provenance() -> list[Column]:
    """What an assignment shows and a vote copies (fresh columns for each table)."""
    return [
        Column("kind", String(16), nullable=False),
        Column("item_key", String(512), nullable=False),
        Column("content", String(255), nullable=False),
        Column("style", String(255), nullable=False),
        Column("method_left", String(64), nullable=False),  # deception: the one image ("painting" for a real one)
        Column("method_right", String(64), nullable=False),  # deception: empty
        Column("file_left", String(512), nullable=False),
        Column("file_right", String(512), nullable=False),
        Column("sha256_left", String(64), nullable=False),
        Column("sha256_right", String(64), nullable=False),
    ]


PROVENANCE = tuple(c.name for c in _provenance())

assignments = Table(
    "assignments",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("study", String(64), ForeignKey("studies.name"), nullable=False),
    Column("voter_id", String(32), ForeignKey("voters.id"), nullable=False, index=True),
    Column("seq", Integer, nullable=False),
    *_provenance(),
    Column("images", Text, nullable=False),  # JSON {opaque id: role}; roles: content, style, left, right, image
    Column("issued_at", String(32), nullable=False),
    Column("shown_at", String(32)),
    UniqueConstraint("voter_id", "seq", name="uq_assignment_seq"),
)

votes = Table(
    "votes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study", String(64), ForeignKey("studies.name"), nullable=False),
    Column("assignment_id", String(32), ForeignKey("assignments.id"), nullable=False),
    Column("voter_id", String(32), ForeignKey("voters.id"), nullable=False),
    *_provenance(),
    Column("answer", String(16), nullable=False),
    Column("chosen", String(64), nullable=False),  # preference: a method or "tie"; deception: "painting" or "photo"
    Column("git_sha", String(64), nullable=False),
    Column("issued_at", String(32), nullable=False),
    Column("answered_at", String(32), nullable=False),
    Column("response_ms", Integer),
    UniqueConstraint("assignment_id", name="uq_vote_assignment"),  # a replay cannot be stored twice
)

EXPORT_COLUMNS = (
    "study",
    "vote_id",
    "voter_id",
    "assignment_id",
    "kind",
    "item_key",
    "content",
    "style",
    "method_left",
    "method_right",
    "file_left",
    "file_right",
    "sha256_left",
    "sha256_right",
    "answer",
    "chosen",
    "git_sha",
    "issued_at",
    "answered_at",
    "response_ms",
)


def now() -> str:
    """UTC now, ISO 8601 with milliseconds (sorts as text, reads back with ``datetime.fromisoformat``)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine on ``url``; for a sqlite file its folder is created and every connection gets WAL + busy timeout."""
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy raises ArgumentError; the message is what matters
        raise NstError(f"database URL {url!r} cannot be parsed: {exc}") from exc
    sqlite = parsed.get_backend_name() == "sqlite"
    in_memory = sqlite and parsed.database in (None, "", ":memory:")  # one connection per thread: no pool to size
    if sqlite and not in_memory:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    try:
        pool = {} if in_memory else {"pool_size": POOL_SIZE, "max_overflow": POOL_OVERFLOW}
        engine = create_engine(parsed, **pool)
    except (SQLAlchemyError, ImportError) as exc:
        raise NstError(f"database URL {url!r}: {exc}") from exc
    if sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


@dataclass(frozen=True)
class NewVoter:
    """A voter just created: the public id, the cookie token (only the voter gets it) and the CSRF token."""

    id: str
    token: str
    csrf: str


class Storage:
    """The study database. Thread-safe: each call takes its own connection; creating a voter (which reads the
    issued counts and writes that voter's assignments) is serialised in this process by a lock."""

    def __init__(self, url: str = DEFAULT_DB_URL) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._issue_lock = threading.Lock()
        try:
            metadata.create_all(self.engine)
        except SQLAlchemyError as exc:
            raise NstError(f"database {url!r}: cannot create the tables: {exc}") from exc

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    # ------------------------------------------------------------------------------------------ studies, voters

    def ensure_study(self, study: Study, git_sha: str) -> dict[str, Any]:
        """Register ``study`` (first serve) or check that it shows the same images as when it was registered."""
        with self._begin() as conn:
            row = conn.execute(select(studies).where(studies.c.name == study.name)).mappings().first()
            if row is None:
                values = {
                    "name": study.name,
                    "created_at": now(),
                    "seed": study.seed,
                    "fingerprint": study.fingerprint,
                    "git_sha": git_sha,
                    "config": study.describe(),
                }
                conn.execute(insert(studies).values(**values))
                return values
        if row["fingerprint"] != study.fingerprint or row["seed"] != study.seed:
            raise NstError(
                f"study {study.name!r} in {self.url} was built from other images or another seed "
                f"(fingerprint {row['fingerprint'][:12]}, seed {row['seed']}; now {study.fingerprint[:12]}, "
                f"seed {study.seed}): start a new study with another --study name"
            )
        return dict(row)

    def set_credentials(self, study: str, link_sha256: str, admin_sha256: str) -> None:
        """Store the digests of a study's (new) voter link secret and admin token; the old ones stop working."""
        with self._begin() as conn:
            conn.execute(
                update(studies)
                .where(studies.c.name == study)
                .values(link_sha256=link_sha256, admin_sha256=admin_sha256)
            )

    def study_row(self, name: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(select(studies).where(studies.c.name == name)).mappings().first()
        if row is None:
            raise NstError(f"no study {name!r} in {self.url}")
        return dict(row)

    def issued_counts(self, study: str, conn: Connection | None = None) -> dict[str, int]:
        """How often each item key was issued to a voter of ``study``."""
        query = (
            select(assignments.c.item_key, func.count())
            .where(assignments.c.study == study)
            .group_by(assignments.c.item_key)
        )
        if conn is None:
            with self.engine.connect() as c:
                return dict(c.execute(query).all())
        return dict(conn.execute(query).all())

    def create_voter(self, study: Study, plan: Callable[[dict[str, int], int], list[Question]]) -> NewVoter:
        """A new voter of ``study`` with the questions ``plan(issued_counts, voter_number)`` returns, all issued."""
        voter = NewVoter(secrets.token_hex(8), secrets.token_urlsafe(32), secrets.token_urlsafe(32))
        with self._issue_lock, self._begin() as conn:
            number = conn.execute(select(func.count()).where(voters.c.study == study.name)).scalar_one()
            questions = plan(self.issued_counts(study.name, conn), number)
            issued = now()
            conn.execute(
                insert(voters).values(
                    id=voter.id,
                    study=study.name,
                    number=number,
                    token_sha256=token_sha256(voter.token),
                    csrf=voter.csrf,
                    created_at=issued,
                )
            )
            rows = [_assignment_row(study, voter.id, seq, q, issued) for seq, q in enumerate(questions)]
            if rows:
                conn.execute(insert(assignments), rows)
        return voter

    def voter_by_token(self, study: str, token: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    select(voters).where(voters.c.token_sha256 == token_sha256(token), voters.c.study == study)
                )
                .mappings()
                .first()
            )
        return dict(row) if row else None

    # ------------------------------------------------------------------------------------------ assignments

    def voter_assignments(self, voter_id: str) -> list[dict[str, Any]]:
        """The voter's assignments in order, each with ``voted`` (bool)."""
        query = (
            select(assignments, votes.c.id.is_not(None).label("voted"))
            .outerjoin(votes, votes.c.assignment_id == assignments.c.id)
            .where(assignments.c.voter_id == voter_id)
            .order_by(assignments.c.seq)
        )
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def mark_shown(self, assignment_id: str) -> None:
        with self._begin() as conn:
            conn.execute(
                update(assignments)
                .where(assignments.c.id == assignment_id, assignments.c.shown_at.is_(None))
                .values(shown_at=now())
            )

    def record_vote(
        self, assignment: dict[str, Any], answer: str, chosen: str, git_sha: str, response_ms: int | None
    ) -> bool:
        """Append the vote on ``assignment``; False (nothing written) when that assignment already has one."""
        values = {name: assignment[name] for name in PROVENANCE}
        values.update(
            study=assignment["study"],
            assignment_id=assignment["id"],
            voter_id=assignment["voter_id"],
            answer=answer,
            chosen=chosen,
            git_sha=git_sha,
            issued_at=assignment["issued_at"],
            answered_at=now(),
            response_ms=response_ms,
        )
        try:
            with self._begin() as conn:
                conn.execute(insert(votes).values(**values))
        except IntegrityError:
            return False
        return True

    # ------------------------------------------------------------------------------------------ reading back

    def row_counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            count = select(func.count())
            return {t.name: conn.execute(count.select_from(t)).scalar_one() for t in metadata.sorted_tables}

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table (tests compare the database before and after a request)."""
        with self.engine.connect() as conn:
            return {t.name: [tuple(r) for r in conn.execute(select(t))] for t in metadata.sorted_tables}

    def progress(self, study: str) -> dict[str, Any]:
        """Counts only (no voter's data): voters, questions issued and answered per task, spread of the items."""
        with self.engine.connect() as conn:
            n_voters = conn.execute(select(func.count()).where(voters.c.study == study)).scalar_one()
            issued = dict(
                conn.execute(
                    select(assignments.c.kind, func.count()).where(assignments.c.study == study).group_by("kind")
                ).all()
            )
            answered = dict(
                conn.execute(select(votes.c.kind, func.count()).where(votes.c.study == study).group_by("kind")).all()
            )
        counts = self.issued_counts(study)
        spread = {}
        for kind in (PREFERENCE, DECEPTION):
            values = [n for k, n in counts.items() if k.startswith(f"{kind}|")]
            spread[kind] = {"items": len(values), "min": min(values, default=0), "max": max(values, default=0)}
        return {
            "study": study,
            "voters": n_voters,
            "issued": {k: issued.get(k, 0) for k in (PREFERENCE, DECEPTION)},
            "answered": {k: answered.get(k, 0) for k in (PREFERENCE, DECEPTION)},
            "items_issued": spread,
        }

    def vote_rows(self, study: str) -> list[dict[str, Any]]:
        """Every vote of ``study`` with its provenance, in the order stored (:data:`EXPORT_COLUMNS`)."""
        query = select(votes).where(votes.c.study == study).order_by(votes.c.id)
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(query).mappings()]
        for r in rows:
            r["vote_id"] = r.pop("id")
        return [{c: r[c] for c in EXPORT_COLUMNS} for r in rows]

    def export(self, study: str, path: str | Path) -> int:
        """Write ``study``'s votes to the CSV ``path`` atomically (one row per vote); the number of votes."""
        self.study_row(study)  # an unknown study is an error, not an empty file
        rows = self.vote_rows(study)
        with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        return len(rows)


def _assignment_row(study: Study, voter_id: str, seq: int, q: Question, issued: str) -> dict[str, Any]:
    """The assignments row of question ``q``: provenance (files relative to their folders' parents) and the opaque
    ids of its images."""
    item = q.item
    if q.kind == PREFERENCE:
        left, right = q.sides
        images = [study.image_of(m, item.content, item.style) for m in (left, right)]
        roles = ("content", "style", "left", "right")
    else:
        left, right = item.method, ""
        images = [study.image_of(item.method, item.content, item.style)]
        roles = ("image",)
    files = [f"{im.path.parent.name}/{im.path.name}" for im in images] + [""]
    shas = [im.sha256 for im in images] + [""]
    return {
        "id": secrets.token_hex(16),
        "study": study.name,
        "voter_id": voter_id,
        "seq": seq,
        "kind": q.kind,
        "item_key": item.key,
        "content": item.content,
        "style": item.style,
        "method_left": left,
        "method_right": right,
        "file_left": files[0],
        "file_right": files[1],
        "sha256_left": shas[0],
        "sha256_right": shas[1],
        "images": json.dumps({secrets.token_urlsafe(18): role for role in roles}),
        "issued_at": issued,
    }
