"""The people's study (pipeline/judging): the study and its scheduler, the database, every refused request (4xx and
the database unchanged), the command line, and a bounded load test on a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import socket
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from bench import judge_load
from methods.errors import NstError
from pipeline.judging import storage as st
from pipeline.judging.server import Limits, RateLimiter, create_app
from pipeline.judging.study import (
    DECEPTION,
    PREFERENCE,
    build_study,
    questions_for_voter,
    schedule,
    voter_rng,
)
from pipeline.tools import collect_votes as commands

pytestmark = pytest.mark.timeout(60)

SECRET, ADMIN = "voters-secret-link", "admin-token-value"
BODY_ATTR = re.compile(r'data-(csrf|assignment|kind)="([^"]*)"')
IMG = re.compile(r'src="(img/[^"]+)"')


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """3 methods x 2 contents x 2 paintings of 32 x 32 PNGs, timing.csv in stylize's format."""
    return judge_load.write_synthetic_study(tmp_path / "run", methods=3)


def _study(tree: Path, **kw):
    return build_study("s1", tree / "outputs", tree / "test" / "style", **kw)


@pytest.fixture
def app_db(tree: Path, tmp_path: Path):
    db = f"sqlite:///{tmp_path / 'votes.db'}"
    limits = Limits(votes_per_second=1000.0, vote_burst=1000)  # the limiter has tests of its own
    app = create_app(
        "s1", db, tree / "outputs", tree / "test" / "style", SECRET, ADMIN, git_sha="abc123", limits=limits
    )
    yield app, app.state.judge.store
    app.state.judge.store.close()


def _client(app) -> TestClient:
    return TestClient(app, base_url="http://127.0.0.1")


def _open(client: TestClient) -> dict[str, str]:
    """Open the link; the page's CSRF token, assignment id, kind and image URLs."""
    r = client.get(f"/s/{SECRET}/")
    assert r.status_code == 200
    attrs = dict(BODY_ATTR.findall(r.text))
    attrs["images"] = IMG.findall(r.text)
    attrs["html"] = r.text
    return attrs


def _vote(client: TestClient, page: dict, answer: str | None = None, **kw):
    body = {"assignment": page["assignment"], "answer": answer or ("left" if page["kind"] == PREFERENCE else "photo")}
    headers = {"X-CSRF-Token": page["csrf"], **kw.pop("headers", {})}
    return client.post(f"/s/{SECRET}/answer", json=body, headers=headers, **kw)


# ------------------------------------------------------------------------------------------------ study, scheduler


def test_study_items_and_sha256_from_the_files(tree):
    study = _study(tree)
    assert study.methods == ("method0", "method1", "method2")
    assert len(study.preference) == 4 * 3  # 4 pairs x C(3, 2) method pairs
    assert len(study.deception) == 2 + 12  # 2 paintings + 12 outputs
    out = study.outputs[("method1", "photo0.png", "painting1.png")]
    assert out.image.sha256 == hashlib.sha256(out.image.path.read_bytes()).hexdigest()
    assert all(i.method_a < i.method_b for i in study.preference)
    assert _study(tree).fingerprint == study.fingerprint
    (tree / "outputs" / "method0" / "photo0__painting0.png").write_bytes(b"changed")
    assert _study(tree).fingerprint != study.fingerprint


def test_study_bad_inputs_name_the_file(tree):
    timing = tree / "outputs" / "method0" / "timing.csv"
    text = timing.read_text()
    timing.write_text(text.replace("file,", "name,", 1))
    with pytest.raises(NstError, match=r"method0/timing.csv lacks the column\(s\) file"):
        _study(tree)
    timing.write_text(text.replace("photo0__painting0.png", "gone.png", 1))
    with pytest.raises(NstError, match=r"names 'gone\.png'"):
        _study(tree)
    timing.write_text(text)
    with pytest.raises(NstError, match=r"no .*timing\.csv for nope"):
        _study(tree, methods=["method0", "nope"])
    with pytest.raises(NstError, match="study name"):
        build_study("../x", tree / "outputs", tree / "test" / "style")


def test_schedule_takes_least_issued_first_with_a_seeded_tie_break():
    keys = ["a", "b", "c", "d"]
    assert schedule(keys, {"a": 1, "b": 0, "c": 1, "d": 0}, 2, voter_rng(0, 0)) in (["b", "d"], ["d", "b"])
    assert schedule(keys, {}, 3, voter_rng(0, 5)) == schedule(keys, {}, 3, voter_rng(0, 5))
    assert len({tuple(schedule(keys, {}, 4, voter_rng(0, v))) for v in range(20)}) > 1  # the order varies
    assert schedule(keys, {}, 10, voter_rng(0, 0)) != []  # at most len(keys), no repeats
    assert sorted(schedule(keys, {}, 10, voter_rng(0, 0))) == keys


@pytest.mark.parametrize(("n_pref", "n_dec"), [(5, 3), (10, 5), (12, 14)])
def test_issued_counts_stay_even_over_voters(tree, n_pref, n_dec):
    study = _study(tree, per_voter={PREFERENCE: n_pref, DECEPTION: n_dec})
    issued: dict[str, int] = {}
    sides = set()
    for v in range(60):
        questions = questions_for_voter(study, issued, v)
        keys = [q.item.key for q in questions]
        assert len(keys) == len(set(keys))  # no item twice to one voter
        for q in questions:
            issued[q.item.key] = issued.get(q.item.key, 0) + 1
            if q.kind == PREFERENCE:
                sides.add((q.item.key, q.sides))
        pools = {
            "preference": [i.key for i in study.preference],
            "paintings": [i.key for i in study.deception if i.is_painting],
            "outputs": [i.key for i in study.deception if not i.is_painting],
        }
        for name, pool in pools.items():
            counts = [issued.get(k, 0) for k in pool]
            assert max(counts) - min(counts) <= 1, (name, v, counts)
    # both orders of every item were shown (sides drawn per voter)
    assert len(sides) == 2 * len(study.preference)
    assert questions_for_voter(study, {}, 7) == questions_for_voter(study, {}, 7)  # seeded


# ------------------------------------------------------------------------------------------------ storage


def test_storage_wal_unique_vote_and_atomic_export(tree, tmp_path):
    study = _study(tree)
    store = st.Storage(f"sqlite:///{tmp_path / 'db' / 'v.db'}")
    store.ensure_study(study, "sha1")
    store.ensure_study(study, "sha1")  # the same study again: accepted
    voter = store.create_voter(study, lambda counts, n: questions_for_voter(study, counts, n))
    todo = store.voter_assignments(store.voter_by_token("s1", voter.token)["id"])
    assert len(todo) == 15
    assert store.record_vote(todo[0], "left", todo[0]["method_left"], "sha1", 1234)
    before = store.dump()
    assert not store.record_vote(todo[0], "right", todo[0]["method_right"], "sha1", 10)  # a replay: not stored
    assert store.dump() == before
    with sqlite3.connect(tmp_path / "db" / "v.db") as con:
        assert con.execute("pragma journal_mode").fetchone()[0] == "wal"
    out = tmp_path / "data" / "judgements" / "s1.csv"
    assert store.export("s1", out) == 1
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert list(rows[0]) == list(st.EXPORT_COLUMNS)
    row = rows[0]
    assert (row["answer"], row["chosen"], row["git_sha"], row["response_ms"]) == (
        "left",
        todo[0]["method_left"],
        "sha1",
        "1234",
    )
    left = study.outputs[(row["method_left"], row["content"], row["style"])].image
    assert row["sha256_left"] == left.sha256
    assert list(out.parent.iterdir()) == [out]  # no temporary file left
    with pytest.raises(NstError, match="no study 'other'"):
        store.export("other", tmp_path / "x.csv")
    (tree / "outputs" / "method0" / "photo0__painting0.png").write_bytes(b"changed")
    with pytest.raises(NstError, match="built from other images"):
        store.ensure_study(_study(tree), "sha2")
    store.close()


def test_rate_limiter_refills_and_keeps_bounded_memory():
    now = [0.0]
    rl = RateLimiter(rate=2.0, burst=3, max_keys=5, clock=lambda: now[0])
    assert [rl.allow("a") for _ in range(4)] == [True, True, True, False]
    now[0] += 0.5  # one token back
    assert [rl.allow("a") for _ in range(2)] == [True, False]
    for i in range(100):
        rl.allow(f"v{i}")
    assert len(rl) == 5


# ------------------------------------------------------------------------------------------------ the app


def test_a_voter_answers_every_question_and_the_page_never_names_methods_or_files(app_db, tree):
    app, store = app_db
    client = _client(app)
    names = ["method0", "method1", "method2", "photo0", "photo1", "painting0", "painting1", ".png", "outputs"]
    kinds = []
    for i in range(15):
        page = _open(client)
        assert f"Question {i + 1} of 15" in page["html"]
        assert not [n for n in names if n in page["html"]]
        kinds.append(page["kind"])
        for src in page["images"]:
            img = client.get(f"/s/{SECRET}/{src}")
            assert img.status_code == 200
            assert img.content.startswith(b"\x89PNG")
        assert len(page["images"]) == (4 if page["kind"] == PREFERENCE else 1)
        r = _vote(client, page, "tie" if page["kind"] == PREFERENCE else "painting")
        assert r.status_code == 200, r.text
        assert r.json()["done"] == i + 1
    assert kinds == [PREFERENCE] * 10 + [DECEPTION] * 5
    assert "You have answered every question" in client.get(f"/s/{SECRET}/").text
    rows = store.vote_rows("s1")
    assert len(rows) == 15
    assert {r["git_sha"] for r in rows} == {"abc123"}
    assert all(len(r["sha256_left"]) == 64 for r in rows)
    # the cookie: HttpOnly, SameSite=Strict, no Path (scoped to the link by the browser)
    cookie = _client(app).get(f"/s/{SECRET}/").headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path" not in cookie
    progress = client.get("/admin/progress", headers={"Authorization": f"Bearer {ADMIN}"})
    assert progress.status_code == 200
    data = progress.json()
    assert data["answered"] == {PREFERENCE: 10, DECEPTION: 5}
    assert data["voters"] == 2
    assert "voter_id" not in progress.text
    export = client.get("/admin/export", headers={"Authorization": f"Bearer {ADMIN}"})
    assert export.status_code == 200
    assert len(list(csv.DictReader(export.text.splitlines()))) == 15


def test_security_headers_and_the_link_without_a_slash(app_db):
    app, _ = app_db
    client = _client(app)
    r = client.get(f"/s/{SECRET}/")
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["cache-control"] == "no-store"
    r = client.get(f"/s/{SECRET}", follow_redirects=False)
    assert r.status_code == 307
    assert r.headers["location"] == f"{SECRET}/"  # relative: works behind a proxy prefix


def _bad_requests(client: TestClient, other: TestClient, page: dict, other_page: dict, answered: dict):
    """(name, callable) for each refused request of the issue's list, and the status expected."""
    post = f"/s/{SECRET}/answer"
    ok_body = {"assignment": page["assignment"], "answer": "left"}
    csrf = {"X-CSRF-Token": page["csrf"]}
    json_csrf = {**csrf, "Content-Type": "application/json"}
    other_csrf = {"X-CSRF-Token": other_page["csrf"]}
    voter_bearer = {"Authorization": f"Bearer {SECRET}"}
    raw = _client(client.app)  # no cookie at all
    return [
        ("no token: page", lambda: raw.get("/"), 403),
        ("no token: answer", lambda: client.post("/answer", json=ok_body, headers=csrf), 403),
        ("no token: image", lambda: client.get(f"/{page['images'][0]}"), 403),
        ("no token: static", lambda: raw.get("/static/judge.js"), 403),
        ("no token: admin", lambda: raw.get("/admin/progress"), 403),
        ("wrong token: page", lambda: raw.get("/s/not-the-secret/"), 403),
        ("wrong token: answer", lambda: client.post("/s/x/answer", json=ok_body, headers=csrf), 403),
        ("wrong admin token", lambda: raw.get("/admin/export", headers={"Authorization": "Bearer nope"}), 403),
        (
            "voter link on admin route",
            lambda: raw.get("/admin/export", headers=voter_bearer),
            403,
        ),
        ("admin route under the link", lambda: client.get(f"/s/{SECRET}/admin/progress"), 403),
        ("no voter cookie", lambda: raw.post(f"/s/{SECRET}/answer", json=ok_body, headers=csrf), 403),
        ("no CSRF token", lambda: client.post(post, json=ok_body), 403),
        (
            "wrong CSRF token",
            lambda: client.post(post, json=ok_body, headers=other_csrf),
            403,
        ),
        (
            "another voter's assignment",
            lambda: client.post(post, json={"assignment": other_page["assignment"], "answer": "left"}, headers=csrf),
            404,
        ),
        (
            "forged assignment",
            lambda: client.post(post, json={"assignment": "0" * 32, "answer": "left"}, headers=csrf),
            404,
        ),
        (
            "replay",
            lambda: client.post(
                post, json={"assignment": answered["assignment"], "answer": "right"}, headers=answered["headers"]
            ),
            409,
        ),
        ("forged image id", lambda: client.get(f"/s/{SECRET}/img/AAAAAAAAAAAAAAAAAAAAAAAA"), 404),
        ("another voter's image", lambda: client.get(f"/s/{SECRET}/{other_page['images'][0]}"), 404),
        (
            "oversized body (Content-Length)",
            lambda: client.post(post, content=b"{" + b" " * 5000 + b"}", headers=json_csrf),
            413,
        ),
        (
            "oversized body (streamed, no Content-Length)",
            lambda: client.post(post, content=iter([b" " * 1024] * 6), headers=json_csrf),
            413,
        ),
        (
            "wrong content type",
            lambda: client.post(post, content=json.dumps(ok_body), headers={**csrf, "Content-Type": "text/plain"}),
            415,
        ),
        (
            "form instead of JSON",
            lambda: client.post(post, data={"assignment": page["assignment"], "answer": "left"}, headers=csrf),
            415,
        ),
        (
            "bad JSON",
            lambda: client.post(post, content=b"{nope", headers=json_csrf),
            422,
        ),
        ("unknown field", lambda: client.post(post, json={**ok_body, "voter_id": "x"}, headers=csrf), 422),
        (
            "answer of the other task",
            lambda: client.post(post, json={**ok_body, "answer": "painting"}, headers=csrf),
            422,
        ),
        ("negative response time", lambda: client.post(post, json={**ok_body, "response_ms": -5}, headers=csrf), 422),
        ("unknown route", lambda: client.get(f"/s/{SECRET}/nothing"), 404),
    ]


def test_every_bad_request_is_refused_and_changes_nothing(app_db):
    app, store = app_db
    client, other = _client(app), _client(app)
    first = _open(client)
    assert first["kind"] == PREFERENCE
    assert _vote(client, first).status_code == 200
    answered = {"assignment": first["assignment"], "headers": {"X-CSRF-Token": first["csrf"]}}
    page, other_page = _open(client), _open(other)
    cases = _bad_requests(client, other, page, other_page, answered)
    before = store.dump()
    assert len(before["votes"]) == 1
    for name, request, status in cases:
        r = request()
        assert r.status_code == status, (name, r.status_code, r.text[:200])
        assert store.dump() == before, name
    # and the voter's own question is still answerable
    assert _vote(client, page).status_code == 200
    assert store.row_counts()["votes"] == 2


def test_rate_limit_per_voter_refuses_with_429_and_writes_nothing(tree, tmp_path):
    limits = Limits(votes_per_second=0.001, vote_burst=2)
    app = create_app(
        "s1", f"sqlite:///{tmp_path / 'r.db'}", tree / "outputs", tree / "test" / "style", SECRET, ADMIN, limits=limits
    )
    store = app.state.judge.store
    client, other = _client(app), _client(app)
    for _ in range(2):
        assert _vote(client, _open(client)).status_code == 200
    page = _open(client)
    before = store.dump()
    r = _vote(client, page)
    assert r.status_code == 429
    assert r.headers["retry-after"] == "1"
    assert store.dump() == before
    assert _vote(other, _open(other)).status_code == 200  # another voter has a bucket of its own


def test_new_voters_are_rate_limited_too(tree, tmp_path):
    limits = Limits(new_voters_per_second=0.001, new_voter_burst=2)
    app = create_app(
        "s1", f"sqlite:///{tmp_path / 'n.db'}", tree / "outputs", tree / "test" / "style", SECRET, ADMIN, limits=limits
    )
    statuses = [_client(app).get(f"/s/{SECRET}/").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert app.state.judge.store.row_counts()["voters"] == 2


# ------------------------------------------------------------------------------------------------ command line


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="nst")
    commands.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_serve_prints_the_link_once_and_export_writes_the_csv(tree, tmp_path, monkeypatch, capsys):
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    argv = ["judge", "serve", "--study", "s1", "--db", db, "--outputs", str(tree / "outputs")]
    argv += ["--paintings", str(tree / "test/style"), "--content", str(tree / "test/content")]
    args = _parse(argv)
    assert args.host == "127.0.0.1"
    assert args.func is commands.main_serve
    seen = []

    class FakeServer:  # the real uvicorn run is the load test's; here: what main_serve hands it
        def __init__(self, config):
            seen.append(config)

        def run(self):
            return None

    monkeypatch.setattr("uvicorn.Server", FakeServer)
    assert args.func(args) == 0
    err = capsys.readouterr().err
    link = re.search(r"(http://127\.0\.0\.1:\d+(/s/[^/\s]+/))", err)
    admin = re.search(r"admin token \(shown once\): (\S+)", err).group(1)
    assert seen[0].host == "127.0.0.1"
    assert seen[0].timeout_graceful_shutdown == commands.GRACEFUL_SHUTDOWN_S
    client = _client(seen[0].app)
    assert client.get(link.group(2)).status_code == 200
    assert client.get("/admin/progress", headers={"Authorization": f"Bearer {admin}"}).status_code == 200
    # a restart: the same link works, nothing secret is printed again; the database holds digests only
    assert args.func(args) == 0
    assert "/s/" not in capsys.readouterr().err
    assert _client(seen[1].app).get(link.group(2)).status_code == 200
    assert urlsplit(link.group(1)).path.split("/")[2] not in json.dumps(st.Storage(db).dump())
    # --new-link: the old link stops working
    assert _parse([*argv, "--new-link"]).func(_parse([*argv, "--new-link"])) == 0
    assert "/s/" in capsys.readouterr().err
    assert _client(seen[2].app).get(link.group(2)).status_code == 403
    # export
    out = tmp_path / "judgements" / "s1.csv"
    export = _parse(["judge", "export", "--study", "s1", "--db", db, "--out", str(out)])
    assert export.func(export) == 0
    assert out.read_text().splitlines()[0] == ",".join(st.EXPORT_COLUMNS)
    export = _parse(["judge", "export", "--study", "nope", "--db", db, "--out", str(out)])
    with pytest.raises(NstError, match="no study 'nope'"):
        export.func(export)


# ------------------------------------------------------------------------------------------------ a real server


def test_a_real_server_refuses_a_streamed_oversized_body(tree, tmp_path):
    db = f"sqlite:///{tmp_path / 'live.db'}"
    app = create_app("s1", db, tree / "outputs", tree / "test" / "style", SECRET, ADMIN)
    with judge_load.running_server(app) as base:
        host, port = urlsplit(base).hostname, urlsplit(base).port
        with socket.create_connection((host, port), timeout=10) as s:
            s.sendall(
                f"POST /s/{SECRET}/answer HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                "Transfer-Encoding: chunked\r\n\r\n".encode()
            )
            for _ in range(6):
                s.sendall(b"400\r\n" + b" " * 1024 + b"\r\n")
            s.sendall(b"0\r\n\r\n")
            reply = s.recv(4096).decode(errors="replace")
    assert reply.startswith("HTTP/1.1 413"), reply[:200]
    assert app.state.judge.store.row_counts()["votes"] == 0


def test_load_script_small_numbers(tmp_path):
    out = tmp_path / "load.json"
    assert judge_load.main(["--voters", "4", "--votes", "4", "--methods", "3", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["votes_stored"], result["lost"], result["server_errors_5xx"]) == (16, 0, 0)
    assert result["votes_with_provenance"] == 16
    assert result["answer_latency_ms"]["n"] == 16


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_load_50_voters_1000_votes_none_lost_no_5xx():
    result = judge_load.run(voters=50, votes=20)
    assert result["votes_sent"] == 1000
    assert result["votes_stored"] == 1000
    assert result["votes_with_provenance"] == 1000
    assert result["lost"] == 0
    assert result["server_errors_5xx"] == 0
    assert set(result["status"]) == {"GET 200", "POST 200"}
    assert result["answer_latency_ms"]["p95"] is not None
