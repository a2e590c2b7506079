"""The account pages of the admin UI: users (admins only; the last active admin kept; one-time
passwords and links), API keys (shown once, stored hashed, scopes within the owner's role,
revoked after a confirmation, counted), every change audited; and a job's progress as
server-sent events behind the same sign-in."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select
from web_helpers import (
    PASSWORD,
    app_with_three_roles,
    bearer,
    csrf_token,
    sign_in,
)

from identify.gallery.tables import ApiKey, AuditEntry, ItemStatus, JobItem, User
from identify.web.common import db
from identify.web.state import web_state


@pytest.fixture
def app(database_url, tmp_path):
    return app_with_three_roles(database_url, tmp_path, RATE_LIMIT=0)


def _secret(page: str) -> str:
    return re.search(r'id="secret" value="([^"]+)"', page).group(1)


def _user_id(app, email: str) -> int:
    with app.app_context(), db() as session:
        return session.scalar(select(User.id).where(User.email == email))


def _actions(app) -> list[str]:
    with app.app_context(), db() as session:
        return list(session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))


def test_only_admins_see_the_user_pages(app):
    for email in ("ops@x.org", "ana@x.org"):
        client, token = sign_in(app, email)
        assert client.get("/users").status_code == 403
        response = client.post(
            "/users", data={"email": "e@x.org", "role": "admin", "csrf_token": token}
        )
        assert response.status_code == 403
    assert app.test_client().get("/users").status_code == 302  # signed out: to the login


def test_a_generated_password_is_shown_once_and_signs_in(app):
    client, token = sign_in(app, "admin@x.org")
    page = client.post(
        "/users",
        data={
            "email": " New@X.org ",
            "name": "New",
            "role": "operator",
            "first_sign_in": "password",
            "csrf_token": token,
        },
    ).get_data(as_text=True)
    password = _secret(page)
    assert "shown only now" in page and len(password) == 16
    listing = client.get("/users").get_data(as_text=True)
    assert "new@x.org" in listing and password not in listing
    with app.app_context(), db() as session:
        stored = session.scalars(select(User).where(User.email == "new@x.org")).one()
        assert stored.role.value == "operator" and password not in stored.password_hash
    sign_in(app, "new@x.org", password)
    assert "create_user" in _actions(app)


def test_an_invitation_link_sets_the_password_once(app):
    client, token = sign_in(app, "admin@x.org")
    page = client.post(
        "/users",
        data={"email": "inv@x.org", "role": "analyst", "csrf_token": token},
    ).get_data(as_text=True)
    link = _secret(page)
    path = link.split("localhost", 1)[1]
    assert path.startswith("/password/")
    visitor = app.test_client()
    form = visitor.get(path).get_data(as_text=True)
    assert "inv@x.org" in form
    token2 = csrf_token(form)
    short = visitor.post(path, data={"password": "short", "again": "short", "csrf_token": token2})
    assert short.status_code == 400
    differ = {"password": PASSWORD, "again": PASSWORD + "!", "csrf_token": token2}
    assert visitor.post(path, data=differ).status_code == 400
    same = {"password": PASSWORD, "again": PASSWORD, "csrf_token": token2}
    assert visitor.post(path, data=same).status_code == 302
    sign_in(app, "inv@x.org")
    assert visitor.get(path).status_code == 404  # used: gone
    assert visitor.post(path, data=same).status_code == 404
    assert {"create_user", "set_password"} <= set(_actions(app))


def test_a_reset_stops_the_old_password_and_its_sessions_at_once(app):
    client, token = sign_in(app, "admin@x.org")
    ops = _user_id(app, "ops@x.org")
    signed_in, _ = sign_in(app, "ops@x.org")
    page = client.post(
        f"/users/{ops}/password", data={"mode": "password", "csrf_token": token}
    ).get_data(as_text=True)
    new = _secret(page)
    assert signed_in.get("/").status_code == 302  # the old password's session is over
    refused = app.test_client()
    login_token = csrf_token(refused.get("/login").get_data(as_text=True))
    old = {"email": "ops@x.org", "password": PASSWORD, "csrf_token": login_token}
    assert refused.post("/login", data=old).status_code == 401
    sign_in(app, "ops@x.org", new)
    link = _secret(
        client.post(f"/users/{ops}/password", data={"csrf_token": token}).get_data(as_text=True)
    )
    second = _secret(
        client.post(f"/users/{ops}/password", data={"csrf_token": token}).get_data(as_text=True)
    )
    visitor = app.test_client()
    assert visitor.get(link.split("localhost", 1)[1]).status_code == 404  # replaced
    assert visitor.get(second.split("localhost", 1)[1]).status_code == 200
    assert _actions(app).count("reset_password") == 3


def test_roles_change_and_disabled_users_lose_sessions_and_keys(app):
    admin, token = sign_in(app, "admin@x.org")
    ops_client, _ = sign_in(app, "ops@x.org")
    ops = _user_id(app, "ops@x.org")
    with app.app_context(), db() as session:
        from identify.web import auth

        user = session.get(User, ops)
        key = auth.create_key(session, user, "ops key", auth.parse_scopes("identify,enrol"))
    api = app.test_client()
    assert api.get("/api/v1/subjects", headers=bearer(key)).status_code == 200
    response = admin.post(f"/users/{ops}/role", data={"role": "analyst", "csrf_token": token})
    assert response.status_code == 302
    assert ops_client.get("/enrol").status_code == 403  # the new role, at the next request
    assert api.post("/api/v1/subjects", json={"name": "x"}, headers=bearer(key)).status_code == 403
    assert admin.post(f"/users/{ops}/disable", data={"csrf_token": token}).status_code == 302
    assert ops_client.get("/").status_code == 302  # signed out
    assert api.get("/api/v1/subjects", headers=bearer(key)).status_code == 401
    assert admin.post(f"/users/{ops}/enable", data={"csrf_token": token}).status_code == 302
    assert api.get("/api/v1/subjects", headers=bearer(key)).status_code == 200
    page = admin.get("/users").get_data(as_text=True)
    assert re.search(r'data-email="ops@x.org">.*?user-role">analyst<', page, re.S)
    changes = ("set_role", "disable_user", "enable_user")
    assert [a for a in _actions(app) if a in changes] == list(changes)


def test_the_last_active_admin_cannot_be_demoted_or_disabled(app):
    client, token = sign_in(app, "admin@x.org")
    me = _user_id(app, "admin@x.org")
    for path, data in ((f"/users/{me}/role", {"role": "operator"}), (f"/users/{me}/disable", {})):
        response = client.post(path, data={**data, "csrf_token": token})
        assert response.status_code == 409, path
        assert "last active admin" in response.get_data(as_text=True)
    ops = _user_id(app, "ops@x.org")
    client.post(f"/users/{ops}/role", data={"role": "admin", "csrf_token": token})
    client.post(f"/users/{ops}/disable", data={"csrf_token": token})  # a disabled admin
    assert client.post(f"/users/{me}/disable", data={"csrf_token": token}).status_code == 409
    client.post(f"/users/{ops}/enable", data={"csrf_token": token})
    assert (
        client.post(f"/users/{me}/role", data={"role": "operator", "csrf_token": token})
    ).status_code == 302  # another active admin exists now
    with app.app_context(), db() as session:
        admins = session.scalar(select(func.count()).select_from(User).where(User.role == "admin"))
    assert admins == 1


def test_a_key_is_shown_once_listed_without_its_secret_and_counted(app):
    client, token = sign_in(app, "ops@x.org")
    page = client.post(
        "/keys",
        data={"name": "scanner", "scopes": ["identify", "enrol"], "csrf_token": token},
    ).get_data(as_text=True)
    key = _secret(page)
    _, prefix, secret = key.split("_", 2)  # the secret itself may hold "_"
    assert key.startswith("cqf_") and "shown only now" in page
    api = app.test_client()
    for _ in range(3):
        assert api.get("/api/v1/subjects", headers=bearer(key)).status_code == 200
    listing = client.get("/keys").get_data(as_text=True)
    assert secret not in listing and prefix in listing
    row = re.search(rf'id="key-{prefix}".*?</tr>', listing, re.S).group(0)
    assert '<td class="key-requests">3</td>' in row and "identify, enrol" in row
    with app.app_context(), db() as session:
        stored = session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).one()
        assert secret not in stored.key_hash and stored.request_count == 3


def test_key_scopes_stay_within_roles_and_analysts_create_none(app):
    ops, token = sign_in(app, "ops@x.org")
    page = ops.get("/keys").get_data(as_text=True)
    assert 'value="enrol"' in page and 'value="admin"' not in page  # not offered
    forged = ops.post("/keys", data={"name": "k", "scopes": ["admin"], "csrf_token": token})
    assert forged.status_code == 403 and "may hold only" in forged.get_data(as_text=True)
    admin_id = _user_id(app, "admin@x.org")
    other = ops.post(
        "/keys", data={"name": "k", "scopes": ["identify"], "owner": admin_id, "csrf_token": token}
    )
    assert other.status_code == 403  # an operator's keys are their own
    ana, ana_token = sign_in(app, "ana@x.org")
    assert 'id="no-create"' in ana.get("/keys").get_data(as_text=True)
    refused = ana.post("/keys", data={"name": "k", "scopes": ["identify"], "csrf_token": ana_token})
    assert refused.status_code == 403
    admin, admin_token = sign_in(app, "admin@x.org")
    ana_id = _user_id(app, "ana@x.org")
    beyond = admin.post(
        "/keys",
        data={"name": "k", "scopes": ["enrol"], "owner": ana_id, "csrf_token": admin_token},
    )
    assert beyond.status_code == 403 and "analyst may hold only" in beyond.get_data(as_text=True)
    given = admin.post(
        "/keys",
        data={"name": "k", "scopes": ["identify"], "owner": ana_id, "csrf_token": admin_token},
    )
    assert given.status_code == 200 and "ana@x.org" in given.get_data(as_text=True)
    with app.app_context(), db() as session:
        assert session.scalar(select(func.count()).select_from(ApiKey)) == 1


def test_revoking_asks_first_and_only_for_keys_one_may_manage(app):
    ops, token = sign_in(app, "ops@x.org")
    key = _secret(
        ops.post(
            "/keys", data={"name": "mine", "scopes": ["identify"], "csrf_token": token}
        ).get_data(as_text=True)
    )
    prefix = key.split("_")[1]
    ana, ana_token = sign_in(app, "ana@x.org")
    assert ana.get(f"/keys/{prefix}/revoke").status_code == 404  # not theirs: not there
    assert ana.post(f"/keys/{prefix}/revoke", data={"csrf_token": ana_token}).status_code == 404
    confirm = ops.get(f"/keys/{prefix}/revoke").get_data(as_text=True)
    assert "Revoke “mine”?" in confirm
    api = app.test_client()
    assert api.get("/api/v1/subjects", headers=bearer(key)).status_code == 200  # not yet
    assert ops.post(f"/keys/{prefix}/revoke", data={"csrf_token": token}).status_code == 302
    assert api.get("/api/v1/subjects", headers=bearer(key)).status_code == 401
    assert "revoked" in ops.get("/keys").get_data(as_text=True)
    assert _actions(app).count("revoke_key") == 1
    admin, _ = sign_in(app, "admin@x.org")
    assert prefix in admin.get("/keys").get_data(as_text=True)  # an admin sees every key


# ----- live job progress --------------------------------------------------------------------


def _job(app, statuses: list[ItemStatus]) -> int:
    """A job of len(statuses) items, its items set to ``statuses`` in order (nobody runs it)."""
    from identify.services import services
    from workers import enrolment

    with app.app_context():
        job_id = enrolment.create_job(
            services().engine,
            [(f"s{i}", f"/photos/s{i}/{i}.jpg") for i in range(len(statuses))],
            source="test",
            kind="files",
        )
        with db() as session:
            items = session.scalars(
                select(JobItem).where(JobItem.job_id == job_id).order_by(JobItem.id)
            ).all()
            for item, status in zip(items, statuses, strict=True):
                item.status = status
                item.reason = f"reason {item.id}" if status != ItemStatus.PENDING else None
    return job_id


def _events(body: str) -> list[tuple[str, str]]:
    import json

    found = []
    for block in body.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            found.append((lines["event"], json.loads(lines["data"])))
    return found


def test_a_finished_jobs_events_carry_its_report_then_end(app):
    job_id = _job(app, [ItemStatus.NO_FACE, ItemStatus.ENROLLED, ItemStatus.UNREADABLE])
    with app.app_context():
        from identify.gallery import jobs
        from identify.services import services

        held = services()
        jobs.cancel_job(held.engine, job_id, uploads=held.settings.uploads_dir)
    client, _ = sign_in(app, "ops@x.org")
    response = client.get(f"/jobs/{job_id}/events")
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    body = response.get_data(as_text=True)
    assert body.startswith("retry: ")
    (name, report), (end, last) = _events(body)
    assert (name, end, last) == ("progress", "end", {"status": report["status"]})
    assert report["counts"] == {"no_face": 1, "enrolled": 1, "unreadable": 1}
    assert [f["status"] for f in report["failed"]] == ["unreadable", "no_face"]  # latest first
    assert web_state(app).event_streams.open == 0
    head = client.head(f"/jobs/{job_id}/events")  # a body never read frees its slot too
    assert head.status_code == 200 and head.data == b""
    head.close()
    assert web_state(app).event_streams.open == 0


def test_events_need_the_pages_sign_in_and_role(app, monkeypatch):
    job_id = _job(app, [ItemStatus.PENDING])
    anonymous = app.test_client().get(f"/jobs/{job_id}/events")
    assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]
    analyst, _ = sign_in(app, "ana@x.org")
    assert analyst.get(f"/jobs/{job_id}/events").status_code == 403
    ops, _ = sign_in(app, "ops@x.org")
    assert ops.get("/jobs/99999/events").status_code == 404


def test_a_stream_of_a_running_job_ends_at_its_time_limit(database_url, tmp_path):
    env = {"CQAFACE_EVENT_STREAM_S": "0"}
    app = app_with_three_roles(database_url, tmp_path, env, RATE_LIMIT=0)
    job_id = _job(app, [ItemStatus.PENDING, ItemStatus.NO_FACE])
    client, _ = sign_in(app, "ops@x.org")
    events = _events(client.get(f"/jobs/{job_id}/events").get_data(as_text=True))
    assert [name for name, _ in events] == ["progress"]  # no `end`: the browser reconnects
    assert events[0][1]["status"] == "queued" and events[0][1]["done"] == 1


def test_when_every_stream_is_taken_the_page_is_told_to_poll(app):
    job_id = _job(app, [ItemStatus.PENDING])
    slots = web_state(app).event_streams
    slots.limit = 0
    client, _ = sign_in(app, "ops@x.org")
    response = client.get(f"/jobs/{job_id}/events")
    assert response.status_code == 503 and response.headers["Retry-After"] == "10"
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert f'data-events-url="/jobs/{job_id}/events"' in page  # the script falls back
    assert f'data-job-url="/jobs/{job_id}.json"' in page
