"""The admin UI's guards: sign-in, roles, CSRF on every form, escaping of names, upload limits,
and the pages people use (subjects, rename, delete with confirmation, audit log)."""

from __future__ import annotations

import io
from datetime import UTC, date, timedelta

import pytest
from web_helpers import (
    PASSWORD,
    add_user,
    app_with_three_roles,
    csrf_token,
    hold_rate_limit_clock,
    make_app,
    sign_in,
    zip_of,
)

from identify.gallery.tables import AuditEntry, Subject
from identify.web.common import db

MARKUP = '<script>alert("x")</script><b>Eve</b>'


@pytest.fixture
def app(database_url, tmp_path):
    return app_with_three_roles(database_url, tmp_path, MAX_CONTENT_LENGTH=2**20)


def _subject(app, name: str) -> int:
    with app.app_context(), db() as session:
        subject = Subject(name=name, details={})
        session.add(subject)
        session.flush()
        return subject.id


def _exists(app, subject_id: int) -> bool:
    with app.app_context(), db() as session:
        return session.get(Subject, subject_id) is not None


def test_pages_need_a_login_and_wrong_passwords_are_refused(app):
    client = app.test_client()
    for path in ("/", "/search", "/subjects", "/enrol", "/audit", "/jobs/1", "/faces/1.png"):
        response = client.get(path)
        assert response.status_code == 302 and "/login" in response.headers["Location"], path
    token = csrf_token(client.get("/login").get_data(as_text=True))
    response = client.post(
        "/login", data={"email": "admin@x.org", "password": "wrong password!", "csrf_token": token}
    )
    assert response.status_code == 401 and "Wrong e-mail or password" in response.get_data(
        as_text=True
    )
    assert client.get("/").status_code == 302
    response = client.post(
        "/login", data={"email": "nobody@x.org", "password": PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 401


def test_login_never_redirects_off_site(app):
    client = app.test_client()
    token = csrf_token(client.get("/login").get_data(as_text=True))
    response = client.post(
        "/login?next=//evil.example/x",
        data={"email": "admin@x.org", "password": PASSWORD, "csrf_token": token},
    )
    assert response.headers["Location"] == "/"


def test_every_form_needs_the_csrf_token(app):
    client = app.test_client()
    client.get("/login")  # a session with a token exists, but the form does not send it
    response = client.post("/login", data={"email": "admin@x.org", "password": PASSWORD})
    assert response.status_code == 400 and "security token" in response.get_data(as_text=True)
    client, token = sign_in(app, "admin@x.org")
    subject_id = _subject(app, "Ada")
    for data in ({"name": "Mallory"}, {"name": "Mallory", "csrf_token": "forged"}):
        response = client.post(f"/subjects/{subject_id}/rename", data=data)
        assert response.status_code == 400
        response = client.post(f"/subjects/{subject_id}/delete", data=data)
        assert response.status_code == 400
        assert client.post("/logout", data=data).status_code == 400
        assert client.post("/enrol", data=data).status_code == 400
        assert client.post("/search", data=data).status_code == 400
    with app.app_context(), db() as session:
        assert session.get(Subject, subject_id).name == "Ada"
    # Another session's token does not work either.
    _, other_token = sign_in(app, "ops@x.org")
    assert other_token != token
    response = client.post(
        f"/subjects/{subject_id}/rename", data={"name": "M", "csrf_token": other_token}
    )
    assert response.status_code == 400
    response = client.post(
        f"/subjects/{subject_id}/rename", data={"name": "Ada L.", "csrf_token": token}
    )
    assert response.status_code == 302


def test_an_analyst_can_search_but_not_enrol_delete_rename_or_read_the_audit_log(app):
    client, token = sign_in(app, "ana@x.org")
    subject_id = _subject(app, "Ada")
    assert client.get("/search").status_code == 200
    assert client.get("/subjects").status_code == 200
    page = client.get(f"/subjects/{subject_id}").get_data(as_text=True)
    assert "Delete subject" not in page and "Rename" not in page
    assert client.get("/enrol").status_code == 403
    archive = (io.BytesIO(zip_of({"a/1.png": b"x"})), "a.zip")
    assert client.post("/enrol", data={"csrf_token": token, "archive": archive}).status_code == 403
    assert client.get(f"/subjects/{subject_id}/delete").status_code == 403
    assert (
        client.post(f"/subjects/{subject_id}/delete", data={"csrf_token": token}).status_code == 403
    )
    response = client.post(
        f"/subjects/{subject_id}/rename", data={"csrf_token": token, "name": "X"}
    )
    assert response.status_code == 403
    assert (
        client.post(
            f"/subjects/{subject_id}/images/1/delete", data={"csrf_token": token}
        ).status_code
        == 403
    )
    assert client.get("/audit").status_code == 403
    assert _exists(app, subject_id)


def test_an_operator_manages_subjects_but_cannot_read_the_audit_log(app):
    client, _ = sign_in(app, "ops@x.org")
    assert client.get("/enrol").status_code == 200
    assert client.get("/audit").status_code == 403


def test_names_with_markup_are_escaped_in_every_page(app):
    subject_id = _subject(app, MARKUP)
    client, token = sign_in(app, "admin@x.org")
    client.post(f"/subjects/{subject_id}/rename", data={"csrf_token": token, "name": MARKUP + "!"})
    for path in (
        "/subjects",
        f"/subjects/{subject_id}",
        f"/subjects/{subject_id}/delete",
        "/audit",
        f"/subjects?q={MARKUP}",
    ):
        page = client.get(path).get_data(as_text=True)
        assert "<script>alert" not in page and "<b>Eve" not in page, path
        assert "&lt;script&gt;" in page or "\\u003cscript\\u003e" in page, path
    headers = client.get("/subjects").headers
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"


def test_uploads_over_the_limit_get_a_413_page(app):
    client, token = sign_in(app, "ops@x.org")
    big = (io.BytesIO(b"\0" * (2 * 2**20)), "big.zip")
    response = client.post("/enrol", data={"csrf_token": token, "archive": big})
    assert response.status_code == 413
    assert response.mimetype == "text/html" and "Traceback" not in response.get_data(as_text=True)


def test_a_zip_slip_archive_is_refused_with_a_page(app):
    client, token = sign_in(app, "ops@x.org")
    archive = (io.BytesIO(zip_of({"../../evil/1.png": b"x"})), "evil.zip")
    response = client.post("/enrol", data={"csrf_token": token, "archive": archive})
    assert response.status_code == 400 and "zip" in response.get_data(as_text=True).lower()


def test_subjects_search_and_pagination(app):
    for i in range(30):
        _subject(app, f"person {i:02d}")
    _subject(app, "Grace Hopper")
    client, _ = sign_in(app, "ana@x.org")
    first = client.get("/subjects").get_data(as_text=True)
    assert "page 1 of 2" in first and "person 00" in first and "person 29" not in first
    second = client.get("/subjects?page=2").get_data(as_text=True)
    assert "person 29" in second
    found = client.get("/subjects?q=hopper").get_data(as_text=True)
    assert "Grace Hopper" in found and "person 00" not in found


def test_rename_and_delete_with_confirmation_are_audited(app):
    subject_id = _subject(app, "Ada")
    client, token = sign_in(app, "ops@x.org")
    response = client.post(
        f"/subjects/{subject_id}/rename", data={"csrf_token": token, "name": "Ada Lovelace"}
    )
    assert response.status_code == 302
    confirm = client.get(f"/subjects/{subject_id}/delete").get_data(as_text=True)
    assert "Delete “Ada Lovelace”?" in confirm and _exists(app, subject_id)
    response = client.post(f"/subjects/{subject_id}/delete", data={"csrf_token": token})
    assert response.status_code == 302 and not _exists(app, subject_id)
    assert "Deleted subject Ada Lovelace" in client.get("/subjects").get_data(as_text=True)
    admin, _ = sign_in(app, "admin@x.org")
    log = admin.get("/audit?action=delete_subject").get_data(as_text=True)
    assert "ops@x.org" in log and "Ada Lovelace" in log
    log = admin.get("/audit?user=ops@x.org").get_data(as_text=True)
    assert "rename_subject" in log and "delete_subject" in log
    today = _utc_day_of(app, "delete_subject")  # not the clock's: midnight may have passed
    log = admin.get(f"/audit?action=delete_subject&since={today}&until={today}")
    assert "Ada Lovelace" in log.get_data(as_text=True)
    log = admin.get(f"/audit?action=delete_subject&until={today - timedelta(days=1)}")
    assert "Ada Lovelace" not in log.get_data(as_text=True)
    with app.app_context(), db() as session:
        actions = [e.action for e in session.query(AuditEntry).order_by(AuditEntry.id)]
    assert {"login", "rename_subject", "delete_subject"} <= set(actions)


def _utc_day_of(app, action: str) -> date:
    """The UTC day of the audit entry, as the audit filters read a date."""
    with app.app_context(), db() as session:
        at = session.query(AuditEntry).filter_by(action=action).one().at
    return (at.astimezone(UTC) if at.tzinfo else at).date()  # SQLite keeps UTC, naive


def test_folder_imports_must_lie_under_the_import_roots(database_url, tmp_path):
    roots = tmp_path / "imports"
    (roots / "batch").mkdir(parents=True)
    env = {"CQAFACE_IMPORT_ROOTS": str(roots)}
    app = app_with_three_roles(database_url, tmp_path, env, MAX_CONTENT_LENGTH=2**20)
    client, token = sign_in(app, "ops@x.org")
    for folder in ("/etc", str(roots / ".." / "data"), str(roots / "batch" / ".." / "..")):
        response = client.post("/enrol", data={"csrf_token": token, "folder": folder})
        assert response.status_code == 403, folder
        assert "import roots" in response.get_data(as_text=True)
    response = client.post("/enrol", data={"csrf_token": token, "folder": str(roots / "batch")})
    assert response.status_code == 422  # inside the roots, but holds no photo


def test_sign_in_attempts_are_limited_and_failures_audited(database_url, tmp_path, monkeypatch):
    hold_rate_limit_clock(monkeypatch)
    app = make_app(database_url, tmp_path, LOGIN_RATE_LIMIT=3)
    add_user(app, "admin@x.org", "admin", PASSWORD)
    client = app.test_client()
    token = csrf_token(client.get("/login").get_data(as_text=True))
    wrong = {"email": "admin@x.org", "password": "guess guess guess", "csrf_token": token}
    assert [client.post("/login", data=wrong).status_code for _ in range(3)] == [401] * 3
    response = client.post("/login", data={**wrong, "password": PASSWORD})
    assert response.status_code == 429 and response.headers["Retry-After"] == "30"
    with app.app_context(), db() as session:
        failed = session.query(AuditEntry).filter_by(action="login_failed").all()
    assert len(failed) == 3 and failed[0].details == {"email": "admin@x.org"}


def test_the_enrol_forms_take_a_jobs_minimum_quality_and_refuse_a_bad_one(app):
    client, token = sign_in(app, "ops@x.org")
    page = client.get("/enrol").get_data(as_text=True)
    assert page.count('name="min_quality"') == 2  # the zip form and the folder form
    assert 'placeholder="0.2"' in page  # the setting's default, shown
    archive = (io.BytesIO(zip_of({"a/1.png": b"x"})), "a.zip")
    response = client.post(
        "/enrol", data={"csrf_token": token, "archive": archive, "min_quality": "1.5"}
    )
    assert response.status_code == 400
    assert "min_quality=&#39;1.5&#39; must be a number from 0 to 1" in response.get_data(
        as_text=True
    )
