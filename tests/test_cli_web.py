"""The commands that make the first accounts: users with a role and a password, API keys shown
once and stored hashed, revocation; and the rate limit shared through Redis."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import select
from web_helpers import bearer, hold_rate_limit_clock, make_app

from identify.cli.main import main
from identify.gallery.tables import AuditEntry
from identify.web.common import db


@pytest.fixture
def url(database_url, monkeypatch):
    monkeypatch.setenv("CQAFACE_DATABASE_URL", database_url)
    return database_url


def test_create_user_reads_the_password_from_stdin_and_refuses_weak_ones(url, monkeypatch, capsys):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse battery\n"))
    assert (
        main(
            [
                "admin",
                "create-user",
                "--email",
                "Ada@X.org",
                "--role",
                "operator",
                "--password-stdin",
            ]
        )
        == 0
    )
    created = json.loads(capsys.readouterr().out)
    assert created["email"] == "ada@x.org" and created["role"] == "operator"
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert (
        main(["admin", "create-user", "--email", "b@x.org", "--role", "admin", "--password-stdin"])
        == 2
    )
    assert "at least 10" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse battery\n"))
    assert (
        main(
            ["admin", "create-user", "--email", "ada@x.org", "--role", "admin", "--password-stdin"]
        )
        == 2
    )
    assert "exists already" in capsys.readouterr().err


def test_apikey_create_prints_a_working_key_once_and_revoke_disables_it(url, tmp_path, capsys):
    assert main(["apikey", "create", "--name", "scanner", "--scopes", "identify"]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("cqf_") and len(key) > 40
    assert main(["apikey", "list"]) == 0
    listed = capsys.readouterr().out
    assert key not in listed and key.split("_", 2)[2] not in listed
    (row,) = [json.loads(line) for line in listed.splitlines()]
    assert row["scopes"] == ["identify"] and row["revoked"] is False
    app = make_app(url, tmp_path)
    client = app.test_client()
    assert client.get("/api/v1/subjects", headers={"X-API-Key": key}).status_code == 200
    assert client.get("/api/v1/subjects", headers=bearer(key)).status_code == 200
    assert (
        client.post("/api/v1/subjects", json={"name": "x"}, headers=bearer(key)).status_code == 403
    )
    assert main(["apikey", "revoke", row["prefix"]]) == 0
    assert client.get("/api/v1/subjects", headers=bearer(key)).status_code == 401
    assert main(["apikey", "revoke", "nosuchprefix"]) == 2
    with app.app_context(), db() as session:  # the CLI's changes are audited as the UI's are
        actions = session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)).all()
    assert actions == ["create_user", "create_key", "revoke_key"]
    assert row["request_count"] == 0


def test_apikey_scopes_are_checked_against_the_owners_role(url, monkeypatch, capsys):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse battery\n"))
    main(["admin", "create-user", "--email", "ana@x.org", "--role", "analyst", "--password-stdin"])
    capsys.readouterr()
    assert (
        main(
            ["apikey", "create", "--name", "k", "--scopes", "identify,enrol", "--user", "ana@x.org"]
        )
        == 2
    )
    assert "analyst may hold only" in capsys.readouterr().err
    assert main(["apikey", "create", "--name", "k", "--scopes", "identify,delete"]) == 2
    assert (
        main(["apikey", "create", "--name", "k", "--scopes", "identify", "--user", "ana@x.org"])
        == 0
    )


def test_the_rate_limit_is_shared_through_redis(monkeypatch):
    import redis

    from identify.web.ratelimit import RateLimiter

    url = "redis://127.0.0.1:6379/13"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as error:
        pytest.skip(f"no Redis: {error}")
    key = f"test-{uuid.uuid4().hex}"
    hold_rate_limit_clock(monkeypatch)
    first, second = RateLimiter(3, url), RateLimiter(3, url)  # two server processes
    assert [first.hit(key), second.hit(key), first.hit(key)] == [None, None, None]
    wait = second.hit(key)
    assert wait == 30  # the seconds left of the minute the clock is held in
    assert RateLimiter(3, url).hit(f"other-{key}") is None
