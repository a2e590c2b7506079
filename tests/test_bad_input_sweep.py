"""A sweep of bad input through every writing and searching route of the JSON API: broken,
empty and enormous photos, giant and malformed JSON, wrong types, unknown ids. Every answer is
a clean 4xx in the one error shape, and afterwards the gallery holds exactly what it held."""

# ruff: noqa: E501  (the table of cases reads best one case a line)
from __future__ import annotations

import io
import json

import pytest
from sqlalchemy import func, select
from web_helpers import add_key, bearer, bomb_png, make_app, png_bytes, zip_of

from identify.gallery.tables import AuditEntry, EnrolmentJob, Face, Image, Subject
from identify.web.common import db

LIMIT = 2 * 2**20


@pytest.fixture
def app(database_url, tmp_path):
    return make_app(database_url, tmp_path, MAX_CONTENT_LENGTH=LIMIT)


@pytest.fixture
def photo(celeba_photos_dir) -> bytes:
    return sorted(sorted(celeba_photos_dir.iterdir())[0].glob("*.jpg"))[0].read_bytes()


def counts(app) -> dict[str, int]:
    with app.app_context(), db() as session:
        return {
            model.__tablename__: session.scalar(select(func.count()).select_from(model))
            for model in (Subject, Image, Face, EnrolmentJob)
        }


def files(data: bytes, name: str = "photo.jpg", **fields: str) -> dict:
    return {"image": (io.BytesIO(data), name), **fields}


def cases(photo: bytes, subject: int) -> list[tuple[str, str, str, dict, int]]:
    """(label, method, url, request keywords, status) for the test client."""
    truncated_jpeg = photo[: len(photo) // 3]
    giant_json = json.dumps({"image": "A" * (LIMIT + 1000)})
    return [
        ("zero-byte photo", "POST", "/api/v1/identify", {"data": files(b"")}, 400),
        ("truncated JPEG", "POST", "/api/v1/identify", {"data": files(truncated_jpeg)}, 415),
        ("text as photo", "POST", "/api/v1/identify", {"data": files(b"hello\n" * 50)}, 415),
        ("50,000 x 50,000 PNG", "POST", "/api/v1/identify", {"data": files(bomb_png(50_000))}, 413),
        ("giant JSON", "POST", "/api/v1/identify", {"data": giant_json, "content_type": "application/json"}, 413),
        ("JSON not an object", "POST", "/api/v1/identify", {"json": [1, 2, 3]}, 400),
        ("malformed JSON", "POST", "/api/v1/identify", {"data": "{nope", "content_type": "application/json"}, 400),
        ("image a number", "POST", "/api/v1/identify", {"json": {"image": 123}}, 400),
        ("k a list", "POST", "/api/v1/identify", {"json": {"image": "", "k": [1]}}, 400),
        ("k zero", "POST", "/api/v1/identify", {"data": files(photo, k="0")}, 400),
        ("threshold a word", "POST", "/api/v1/identify", {"data": files(photo, threshold="high")}, 400),
        ("verify: id a word", "POST", "/api/v1/verify", {"data": files(photo, subject_id="x")}, 400),
        ("verify: unknown id", "POST", "/api/v1/verify", {"data": files(photo, subject_id="99999")}, 404),
        ("verify: no photo", "POST", "/api/v1/verify", {"json": {"subject_id": subject}}, 400),
        ("subject: name a number", "POST", "/api/v1/subjects", {"json": {"name": 12}}, 400),
        ("subject: name too long", "POST", "/api/v1/subjects", {"json": {"name": "x" * 300}}, 400),
        ("subject: external id a dict", "POST", "/api/v1/subjects", {"json": {"name": "a", "external_id": {}}}, 400),
        ("rename: unknown id", "PATCH", "/api/v1/subjects/99999", {"json": {"name": "b"}}, 404),
        ("rename: name null", "PATCH", f"/api/v1/subjects/{subject}", {"json": {"name": None}}, 400),
        ("add photo: unknown subject", "POST", "/api/v1/subjects/99999/images", {"data": files(photo)}, 404),
        ("add photo: empty file", "POST", f"/api/v1/subjects/{subject}/images", {"data": files(b"")}, 415),
        ("add photo: text", "POST", f"/api/v1/subjects/{subject}/images", {"data": files(b"just text")}, 415),
        ("add photo: truncated", "POST", f"/api/v1/subjects/{subject}/images", {"data": files(truncated_jpeg)}, 415),
        ("add photo: no face", "POST", f"/api/v1/subjects/{subject}/images", {"data": files(png_bytes(300, 300), "flat.png")}, 422),
        ("delete: unknown subject", "DELETE", "/api/v1/subjects/99999", {}, 404),
        ("delete: unknown image", "DELETE", f"/api/v1/subjects/{subject}/images/99999", {}, 404),
        ("job: unknown id", "GET", "/api/v1/jobs/99999", {}, 404),
        ("enrol: folder a list", "POST", "/api/v1/enrolments", {"json": {"folder": ["/etc"]}}, 400),
        ("enrol: zip of junk", "POST", "/api/v1/enrolments", {"data": {"archive": (io.BytesIO(b"PK\x03\x04junk"), "a.zip")}}, 415),
        ("enrol: zip slip", "POST", "/api/v1/enrolments", {"data": {"archive": (io.BytesIO(zip_of({"../../evil/x.jpg": photo})), "a.zip")}}, 400),
    ]  # fmt: skip


def test_every_bad_request_gets_a_clean_4xx_and_changes_nothing(app, photo):
    key = add_key(app, "admin@x.org", "admin", "identify,enrol,admin")
    client = app.test_client()
    subject = client.post("/api/v1/subjects", json={"name": "kept"}, headers=bearer(key))
    subject_id = subject.get_json()["id"]
    before = counts(app)

    wrong = []
    for label, method, url, kwargs, status in cases(photo, subject_id):
        response = client.open(url, method=method, headers=bearer(key), **kwargs)
        body = response.get_json(silent=True) or {}
        shaped = set(body) == {"error"} and {"code", "message"} <= set(body["error"])
        if response.status_code != status or not shaped or b"Traceback" in response.data:
            wrong.append(f"{label}: {response.status_code} {response.data[:160]!r}")
    assert not wrong, "\n".join(wrong)
    assert counts(app) == before


def test_sql_and_markup_in_names_are_stored_as_written(app):
    key = add_key(app, "admin@x.org", "admin", "identify,enrol,admin")
    client = app.test_client()
    names = ["Robert'); DROP TABLE subjects;--", '<img src=x onerror="alert(1)">', "O'Brien"]
    ids = [
        client.post("/api/v1/subjects", json={"name": n}, headers=bearer(key)).get_json()["id"]
        for n in names
    ]
    for subject_id, name in zip(ids, names, strict=True):
        assert (
            client.get(f"/api/v1/subjects/{subject_id}", headers=bearer(key)).json["name"] == name
        )
    found = client.get("/api/v1/subjects?q=DROP TABLE", headers=bearer(key)).get_json()
    assert [s["name"] for s in found["items"]] == [names[0]]
    with app.app_context(), db() as session:
        assert session.scalar(select(func.count()).select_from(Subject)) == 3
        assert session.scalar(select(func.count()).select_from(AuditEntry)) >= 3


# ----- the admin UI's account forms ---------------------------------------------------------

ADMIN_PASSWORD = "a long enough password"


def _signed_in_admin(app):
    import re

    from web_helpers import add_user

    add_user(app, "admin@x.org", "admin", ADMIN_PASSWORD)
    add_user(app, "ops@x.org", "operator", ADMIN_PASSWORD)
    client = app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    login = {"email": "admin@x.org", "password": ADMIN_PASSWORD, "csrf_token": token}
    assert client.post("/login", data=login).status_code == 302
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/users").text).group(1)
    return client, token


def account_cases(token: str, ops: int, prefix: str) -> list[tuple[str, str, dict, int]]:
    """(label, url, form, status) of a POST by a signed-in admin."""
    user = {"email": "new@x.org", "role": "analyst", "csrf_token": token}
    key = {"name": "k", "scopes": "identify", "csrf_token": token}
    return [
        ("user: no CSRF token", "/users", {**user, "csrf_token": ""}, 400),
        ("user: a stale CSRF token", "/users", {**user, "csrf_token": "x" * 43}, 400),
        ("user: role that does not exist", "/users", {**user, "role": "owner"}, 400),
        ("user: no role", "/users", {**user, "role": ""}, 400),
        ("user: e-mail given twice in one form", "/users", {**user, "email": ["a@x.org", "b@x.org"]}, 400),
        ("user: e-mail of an existing user", "/users", {**user, "email": " OPS@x.org "}, 409),
        ("user: not an e-mail", "/users", {**user, "email": "nobody"}, 400),
        ("user: name too long", "/users", {**user, "name": "x" * 300}, 400),
        ("user: unknown first sign-in", "/users", {**user, "first_sign_in": "sms"}, 400),
        ("role: no CSRF token", f"/users/{ops}/role", {"role": "admin"}, 400),
        ("role: role that does not exist", f"/users/{ops}/role", {"role": "root", "csrf_token": token}, 400),
        ("role: unknown user", "/users/99999/role", {"role": "admin", "csrf_token": token}, 404),
        ("disable: no CSRF token", f"/users/{ops}/disable", {}, 400),
        ("disable: unknown user", "/users/99999/disable", {"csrf_token": token}, 404),
        ("reset: unknown mode", f"/users/{ops}/password", {"mode": "email", "csrf_token": token}, 400),
        ("reset: no CSRF token", f"/users/{ops}/password", {"mode": "link"}, 400),
        ("key: no CSRF token", "/keys", {**key, "csrf_token": ""}, 400),
        ("key: scope that does not exist", "/keys", {**key, "scopes": "delete"}, 400),
        ("key: one good scope, one unknown", "/keys", {**key, "scopes": ["identify", "root"]}, 400),
        ("key: no scope", "/keys", {"name": "k", "csrf_token": token}, 400),
        ("key: no name", "/keys", {**key, "name": ""}, 400),
        ("key: name too long", "/keys", {**key, "name": "k" * 300}, 400),
        ("key: owner a word", "/keys", {**key, "owner": "me"}, 400),
        ("key: unknown owner", "/keys", {**key, "owner": "99999"}, 404),
        ("key: name given twice", "/keys", {**key, "name": ["a", "b"]}, 400),
        ("revoke: no CSRF token", f"/keys/{prefix}/revoke", {}, 400),
        ("revoke: unknown prefix", "/keys/nosuchprefix/revoke", {"csrf_token": token}, 404),
        ("link: unknown token", "/password/not-a-token", {"password": "x" * 12, "again": "x" * 12, "csrf_token": token}, 404),
    ]  # fmt: skip


def _accounts(app) -> dict[str, object]:
    from identify.gallery.tables import ApiKey, User

    with app.app_context(), db() as session:
        return {
            "users": session.execute(
                select(User.email, User.role, User.disabled, User.password_hash).order_by(User.id)
            ).all(),
            "keys": session.execute(
                select(ApiKey.prefix, ApiKey.revoked_at).order_by(ApiKey.id)
            ).all(),
            "audit": session.scalar(
                select(func.count()).select_from(AuditEntry).where(AuditEntry.action != "login")
            ),
        }


def test_every_bad_account_form_gets_a_clean_4xx_and_changes_nothing(app):
    from web_helpers import add_key

    client, token = _signed_in_admin(app)
    prefix = add_key(app, "ops@x.org", "operator", "identify").split("_")[1]
    with app.app_context(), db() as session:
        from identify.gallery.tables import User

        ops = session.scalar(select(User.id).where(User.email == "ops@x.org"))
    before = _accounts(app)

    wrong = []
    for label, url, form, status in account_cases(token, ops, prefix):
        response = client.post(url, data=form)
        page = response.get_data(as_text=True)
        if (
            response.status_code != status
            or "Traceback" in page
            or 'id="error-message"' not in page
        ):
            wrong.append(f"{label}: {response.status_code} {page[:160]!r}")
    assert not wrong, "\n".join(wrong)
    assert _accounts(app) == before


def test_markup_in_user_and_key_names_is_stored_as_written_and_shown_as_text(app):
    from identify.gallery.tables import ApiKey, User

    client, token = _signed_in_admin(app)
    markup = '<script>alert("x")</script><b>Eve</b>'
    form = {"email": "eve@x.org", "name": markup, "role": "operator", "csrf_token": token}
    assert client.post("/users", data=form).status_code == 200
    key = {"name": markup, "scopes": "identify", "csrf_token": token}
    assert markup not in client.post("/keys", data=key).text  # the secret's page escapes it
    with app.app_context(), db() as session:
        assert session.scalar(select(User.name).where(User.email == "eve@x.org")) == markup
        assert session.scalar(select(ApiKey.name)) == markup
    for page in (client.get("/users").text, client.get("/keys").text):
        assert markup not in page and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
