"""``nst judge serve`` and ``nst judge export``: collect people's votes on the run's outputs, and write them out.

``serve`` builds the study from ``--outputs`` (every ``<method>/timing.csv``), ``--paintings`` and ``--content``,
registers it in the database on its first start and prints, once, the voters' secret link and the admin token (the
database keeps only their sha256; ``--new-link`` replaces both, and the old link stops working). It binds 127.0.0.1
unless ``--host`` says otherwise; put a TLS reverse proxy in front to reach people elsewhere (README).

``export`` writes ``data/judgements/<study>.csv`` (one row per vote with its provenance) atomically, straight from
the database: whoever can read the database is an admin already.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import secrets
import sys
from pathlib import Path

from fastapi import FastAPI

from pipeline.commands import add_command
from pipeline.judging import storage as st
from pipeline.judging.server import Limits, create_app, credential_digest
from pipeline.judging.study import DECEPTION, DEFAULT_PER_VOTER, PREFERENCE, build_study
from pipeline.tracking import git_sha

log = logging.getLogger(__name__)

DEFAULT_PORT = 8765  # any free unprivileged port; not a well-known service's
GRACEFUL_SHUTDOWN_S = 10  # after Ctrl-C, open requests get 10 s to finish, then the server stops regardless


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "judge")
    judge = p.add_subparsers(dest="judge_command", metavar="COMMAND", required=True)

    serve = judge.add_parser("serve", help="serve the study's page; prints its secret link once", description=__doc__)
    serve.add_argument("--study", required=True, help="the study's name (letters, digits, - and _)")
    serve.add_argument("--db", default=st.DEFAULT_DB_URL, help=f"SQLAlchemy URL (default {st.DEFAULT_DB_URL})")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.add_argument("--outputs", type=Path, default=Path("outputs"))
    serve.add_argument("--paintings", type=Path, default=Path("data/prepared/test/style"))
    serve.add_argument("--content", type=Path, default=Path("data/prepared/test/content"))
    serve.add_argument("--seed", type=int, default=0, help="seeds each voter's questions and sides")
    serve.add_argument("--preference", type=int, default=DEFAULT_PER_VOTER[PREFERENCE], help="questions per voter")
    serve.add_argument("--deception", type=int, default=DEFAULT_PER_VOTER[DECEPTION], help="questions per voter")
    serve.add_argument("--new-link", action="store_true", help="replace the secret link and the admin token")
    serve.add_argument("--secure-cookies", action="store_true", help="behind an HTTPS proxy: HTTPS-only cookie")
    serve.set_defaults(func=main_serve)

    export = judge.add_parser("export", help="write the study's votes to a CSV (admin)")
    export.add_argument("--study", required=True)
    export.add_argument("--db", default=st.DEFAULT_DB_URL)
    export.add_argument("--out", type=Path, default=None, help="default: data/judgements/<study>.csv")
    export.set_defaults(func=main_export)


def prepare(args: argparse.Namespace) -> tuple[FastAPI, str | None, str | None]:
    """Build the study and its app; the new link secret and admin token when they were just made (else None)."""
    per_voter = {PREFERENCE: args.preference, DECEPTION: args.deception}
    study = build_study(args.study, args.outputs, args.paintings, args.content, seed=args.seed, per_voter=per_voter)
    store = st.Storage(args.db)
    row = store.ensure_study(study, git_sha(args.outputs))
    secret = admin = None
    if args.new_link or not row.get("link_sha256"):
        secret, admin = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        store.set_credentials(study.name, credential_digest(secret), credential_digest(admin))
        row = store.study_row(study.name)
    store.close()
    app = create_app(
        study,
        args.db,
        args.outputs,
        args.paintings,
        f"sha256:{row['link_sha256']}",
        f"sha256:{row['admin_sha256']}",
        limits=Limits(secure_cookies=args.secure_cookies),
        git_sha=row["git_sha"],
    )
    return app, secret, admin


def main_serve(args: argparse.Namespace) -> int:
    import uvicorn  # deferred: `nst judge export` and `nst --help` do not need the server

    app, secret, admin = prepare(args)
    host = f"[{args.host}]" if ":" in args.host else args.host
    if secret is not None:
        print(f"voters' link (shown once; share it privately): http://{host}:{args.port}/s/{secret}/", file=sys.stderr)
        print(f"admin token (shown once): {admin}", file=sys.stderr)
        print(f"  curl -H 'Authorization: Bearer {admin}' http://{host}:{args.port}/admin/progress", file=sys.stderr)
    else:
        print(
            f"study {args.study!r}: its link was printed when it was created (the database keeps only its sha256); "
            "--new-link makes a new one",
            file=sys.stderr,
        )
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        limit_concurrency=256,  # beyond that, 503 at once rather than an unbounded queue
        server_header=False,
        log_level="info",
    )
    # Ctrl-C / SIGTERM: open requests get GRACEFUL_SHUTDOWN_S, then run() returns; uvicorn then re-raises the
    # signal it handled (KeyboardInterrupt for SIGINT), which here is a normal stop, not an interruption
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run()
    log.info("judge serve: stopped; votes are in %s", args.db)
    return 0


def main_export(args: argparse.Namespace) -> int:
    out = args.out or Path("data/judgements") / f"{args.study}.csv"
    store = st.Storage(args.db)
    try:
        n = store.export(args.study, out)
    finally:
        store.close()
    log.info("judge export: %d votes of study %s -> %s", n, args.study, out)
    return 0
