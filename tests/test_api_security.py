"""The API refuses what it must: missing, wrong, revoked and under-scoped keys on every route,
rate limits, oversized bodies, decompression bombs, non-images and zip-slip archives; each
refusal is the one JSON error shape with the right status, never a traceback."""

from __future__ import annotations

import pytest
from web_helpers import (
    add_key,
    bearer,
    bomb_png,
    hold_rate_limit_clock,
    make_app,
    png_bytes,
    zip_of,
)

from identify.web.api import PUBLIC, documented_routes


@pytest.fixture
def app(database_url, tmp_path):
    return make_app(database_url, tmp_path, MAX_CONTENT_LENGTH=2 * 2**20)


def _api_routes(app) -> list[tuple[str, str, str, str | None]]:
    """(method, url with ids filled, OpenAPI path, scope) of every /api/v1 route."""
    routes = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1"):
            continue
        view = app.view_functions[rule.endpoint]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            url = rule.rule
            spec_path = rule.rule.removeprefix("/api/v1")
            for argument in rule.arguments:
                url = url.replace(f"<int:{argument}>", "1")
                spec_path = spec_path.replace(f"<int:{argument}>", f"{{{argument}}}")
            scope = None if rule.endpoint in PUBLIC else getattr(view, "scope", "?")
            routes.append((method, url, spec_path, scope))
    return routes


def _assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.data[:500]
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"} and {"code", "message", "details"} <= set(body["error"])
    assert "Traceback" not in response.get_data(as_text=True)
    if code is not None:
        assert body["error"]["code"] == code
    return body


def test_every_route_is_documented_and_every_documented_route_exists(app):
    routes = {(m, p) for m, _, p, _ in _api_routes(app)}
    assert routes == documented_routes()
    response = app.test_client().get("/api/v1/openapi.json")
    assert response.status_code == 200 and response.get_json()["openapi"].startswith("3.1")


def test_every_protected_route_refuses_missing_wrong_revoked_and_under_scoped_keys(app):
    from identify.web import auth
    from identify.web.common import db

    client = app.test_client()
    lacking = {
        "identify": add_key(app, "ops@x.org", "operator", "enrol"),
        "enrol": add_key(app, "analyst@x.org", "analyst", "identify"),
        "admin": add_key(app, "ops@x.org", "operator", "identify,enrol"),
    }
    revoked = add_key(app, "admin@x.org", "admin", "identify,enrol,admin")
    with app.app_context(), db() as session:
        auth.revoke_key(session, revoked.split("_")[1])
    protected = [r for r in _api_routes(app) if r[3] is not None]
    assert len(protected) >= 14
    for method, url, _, scope in protected:
        assert scope in lacking, f"{method} {url} declares no scope"
        _assert_error(client.open(url, method=method), 401, "unauthorized")
        wrong = "cqf_000000000000_not-a-key"
        _assert_error(client.open(url, method=method, headers=bearer(wrong)), 401)
        _assert_error(client.open(url, method=method, headers={"X-API-Key": "garbage"}), 401)
        _assert_error(client.open(url, method=method, headers=bearer(revoked)), 401)
        response = client.open(url, method=method, headers=bearer(lacking[scope]))
        _assert_error(response, 403, "forbidden")


def test_public_routes_need_no_key(app):
    client = app.test_client()
    health = client.get("/api/v1/health")
    assert health.status_code == 200 and health.get_json()["database"]["ok"] is True
    assert client.get("/api/v1/openapi.json").status_code == 200


def test_a_keys_scopes_shrink_with_its_users_role(app):
    from sqlalchemy import update

    from identify.gallery.tables import Role, User
    from identify.web.common import db

    key = add_key(app, "boss@x.org", "admin", "identify,enrol,admin")
    client = app.test_client()
    assert client.get("/api/v1/audit", headers=bearer(key)).status_code == 200
    with app.app_context(), db() as session:
        session.execute(update(User).values(role=Role.ANALYST))
    _assert_error(client.get("/api/v1/audit", headers=bearer(key)), 403)
    _assert_error(client.delete("/api/v1/subjects/1", headers=bearer(key)), 403)
    assert client.get("/api/v1/subjects", headers=bearer(key)).status_code == 200
    with app.app_context(), db() as session:
        session.execute(update(User).values(disabled=True))
    _assert_error(client.get("/api/v1/subjects", headers=bearer(key)), 401)


def test_an_analyst_cannot_hold_enrol_or_admin_keys(app):
    from identify.web.auth import AuthError

    with pytest.raises(AuthError):
        add_key(app, "a@x.org", "analyst", "identify,enrol")


def test_keys_are_stored_hashed(app):
    from sqlalchemy import select

    from identify.gallery.tables import ApiKey
    from identify.web.common import db

    key = add_key(app, "a@x.org", "admin", "admin")
    with app.app_context(), db() as session:
        stored = session.scalars(select(ApiKey)).one()
        assert key not in (stored.key_hash, stored.prefix) and len(stored.key_hash) == 64
        secret = key.split("_", 2)[2]  # the secret itself may contain "_"
        assert secret and secret not in stored.key_hash


def test_rate_limit_answers_429_with_retry_after(database_url, tmp_path, monkeypatch):
    hold_rate_limit_clock(monkeypatch, seconds_into_minute=20)
    app = make_app(database_url, tmp_path, RATE_LIMIT=3)
    key = add_key(app, "a@x.org", "analyst", "identify")
    client = app.test_client()
    for _ in range(3):
        assert client.get("/api/v1/subjects", headers=bearer(key)).status_code == 200
    response = client.get("/api/v1/subjects", headers=bearer(key))
    _assert_error(response, 429, "rate_limited")
    assert response.headers["Retry-After"] == "40"  # the rest of the minute
    other = add_key(app, "b@x.org", "analyst", "identify")  # another key has its own budget
    assert client.get("/api/v1/subjects", headers=bearer(other)).status_code == 200


def test_oversized_bodies_get_413_before_being_stored(app):
    key = add_key(app, "a@x.org", "admin", "identify,enrol,admin")
    client = app.test_client()
    big = b"\0" * (3 * 2**20)
    response = client.post(
        "/api/v1/identify",
        data={"image": (__import__("io").BytesIO(big), "x.jpg")},
        headers=bearer(key),
    )
    _assert_error(response, 413, "too_large")
    response = client.post(
        "/api/v1/enrolments",
        data={"archive": (__import__("io").BytesIO(big), "a.zip")},
        headers=bearer(key),
    )
    _assert_error(response, 413)
    assert client.get("/api/v1/jobs", headers=bearer(key)).get_json()["total"] == 0


def _upload(data: bytes, name: str):
    import io

    return (io.BytesIO(data), name)


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        (bomb_png(), 413, "image_too_large"),
        (b"%PDF-1.4 not a photo at all" * 10, 415, "not_an_image"),
        (png_bytes(200, 200)[:-30], 415, "unreadable_image"),
    ],
    ids=["decompression-bomb", "not-an-image", "truncated-png"],
)
def test_bad_probe_photos_are_refused_cleanly(app, payload, status, code):
    key = add_key(app, "a@x.org", "analyst", "identify")
    client = app.test_client()
    response = client.post(
        "/api/v1/identify", data={"image": _upload(payload, "probe.png")}, headers=bearer(key)
    )
    _assert_error(response, status, code)


def test_bad_requests_get_400(app):
    key = add_key(app, "a@x.org", "admin", "identify,enrol,admin")
    client = app.test_client()
    h = bearer(key)
    _assert_error(client.post("/api/v1/identify", headers=h), 400, "missing_image")
    _assert_error(client.post("/api/v1/identify", json={"image": "@@@"}, headers=h), 400)
    _assert_error(client.post("/api/v1/identify", json={"image": "", "k": 1}, headers=h), 400)
    image = {"image": _upload(png_bytes(), "a.png"), "k": "many"}
    _assert_error(client.post("/api/v1/identify", data=image, headers=h), 400, "bad_parameter")
    image = {"image": _upload(png_bytes(), "a.png"), "mask": "maybe"}
    _assert_error(client.post("/api/v1/identify", data=image, headers=h), 400, "bad_parameter")
    _assert_error(client.post("/api/v1/subjects", json={"name": "  "}, headers=h), 400)
    _assert_error(client.get("/api/v1/subjects?page=0", headers=h), 400)
    _assert_error(client.get("/api/v1/audit?since=yesterday", headers=h), 400)
    _assert_error(client.get("/api/v1/subjects/999", headers=h), 404, "not_found")
    _assert_error(client.get("/api/v1/no-such-thing", headers=h), 404)
    _assert_error(client.put("/api/v1/subjects", headers=h), 405)


def test_conflicting_external_id_gets_409(app):
    key = add_key(app, "a@x.org", "operator", "identify,enrol")
    client = app.test_client()
    body = {"name": "Ada", "external_id": "E-1"}
    assert client.post("/api/v1/subjects", json=body, headers=bearer(key)).status_code == 201
    _assert_error(client.post("/api/v1/subjects", json=body, headers=bearer(key)), 409)


@pytest.mark.parametrize(
    ("members", "status", "code"),
    [
        ({"../evil/1.png": png_bytes(), "ok/1.png": png_bytes()}, 400, "zip_slip"),
        ({"/etc/cqaface-evil.png": png_bytes()}, 400, "zip_slip"),
        ({"readme.txt": b"no photos here"}, 422, "empty_source"),
    ],
    ids=["dot-dot", "absolute", "no-photos"],
)
def test_bad_archives_are_refused_and_start_no_job(app, members, status, code, tmp_path):
    key = add_key(app, "a@x.org", "operator", "identify,enrol")
    client = app.test_client()
    response = client.post(
        "/api/v1/enrolments",
        data={"archive": _upload(zip_of(members), "people.zip")},
        headers=bearer(key),
    )
    _assert_error(response, status, code)
    assert client.get("/api/v1/jobs", headers=bearer(key)).get_json()["total"] == 0
    assert not (tmp_path / "evil").exists()
    uploads = tmp_path / "data" / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir()), "partial extraction left behind"


def test_not_a_zip_gets_415(app):
    key = add_key(app, "a@x.org", "operator", "identify,enrol")
    response = app.test_client().post(
        "/api/v1/enrolments",
        data={"archive": _upload(b"plain text, not a zip", "people.zip")},
        headers=bearer(key),
    )
    _assert_error(response, 415, "not_a_zip")


def test_folder_imports_outside_the_import_roots_are_refused(database_url, tmp_path):
    allowed = tmp_path / "imports"
    allowed.mkdir()
    env = {"CQAFACE_IMPORT_ROOTS": str(allowed)}
    app = make_app(database_url, tmp_path, env, MAX_CONTENT_LENGTH=2 * 2**20)
    key = add_key(app, "a@x.org", "operator", "identify,enrol")
    response = app.test_client().post(
        "/api/v1/enrolments", json={"folder": "/etc"}, headers=bearer(key)
    )
    _assert_error(response, 403, "outside_import_roots")


def test_unexpected_failures_answer_500_without_a_traceback(tmp_path):
    """A database without the tables (never migrated): every query fails inside the app."""
    app = make_app(f"sqlite:///{tmp_path / 'unmigrated.db'}", tmp_path)
    client = app.test_client()
    response = client.get("/api/v1/subjects", headers=bearer("cqf_0123456789ab_secret"))
    body = _assert_error(response, 500, "internal")
    assert body["error"]["message"] == "internal server error"
    assert "sqlite" not in response.get_data(as_text=True).lower()
    login = client.get("/login").get_data(as_text=True)
    token = login.split('name="csrf_token" value="')[1].split('"')[0]
    page = client.post(
        "/login", data={"email": "a@x.org", "password": "x" * 12, "csrf_token": token}
    )
    text = page.get_data(as_text=True)
    assert page.status_code == 500 and page.mimetype == "text/html"
    assert "Traceback" not in text and "sqlite" not in text.lower()


def test_photos_over_the_photo_limit_get_413_under_the_body_limit(database_url, tmp_path):
    env = {"CQAFACE_MAX_PHOTO_BYTES": "1000"}
    app = make_app(database_url, tmp_path, env, MAX_CONTENT_LENGTH=2 * 2**20)
    key = add_key(app, "a@x.org", "admin", "identify,enrol,admin")
    client = app.test_client()
    photo = png_bytes(400, 400) + b"\0" * 2000
    response = client.post(
        "/api/v1/identify", data={"image": _upload(photo, "big.png")}, headers=bearer(key)
    )
    _assert_error(response, 413, "image_too_large")
    response = client.post("/api/v1/subjects", json={"name": "Ada"}, headers=bearer(key))
    subject_id = response.get_json()["id"]
    response = client.post(
        f"/api/v1/subjects/{subject_id}/images",
        data={"image": _upload(photo, "big.png")},
        headers=bearer(key),
    )
    _assert_error(response, 413, "image_too_large")
    detail = client.get(f"/api/v1/subjects/{subject_id}", headers=bearer(key)).get_json()
    assert detail["images"] == []


def test_a_queued_job_can_be_cancelled_and_the_cancel_is_audited(app, tmp_path):
    from workers import enrolment

    key = add_key(app, "ops@x.org", "operator", "identify,enrol")
    photo = tmp_path / "ada.png"
    photo.write_bytes(png_bytes())
    with app.app_context():
        from identify.services import services

        job_id = enrolment.create_job(
            services().engine, [("Ada", photo)], source="test", kind="files", user_id=None
        )
    client = app.test_client()
    response = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=bearer(key))
    assert response.status_code == 200 and response.get_json()["status"] == "cancelled"
    job = client.get(f"/api/v1/jobs/{job_id}", headers=bearer(key)).get_json()
    assert job["status"] == "cancelled" and job["total"] == 1
    _assert_error(client.post("/api/v1/jobs/999/cancel", headers=bearer(key)), 404)
    _assert_error(client.get("/api/v1/jobs/999", headers=bearer(key)), 404)
    admin = add_key(app, "admin@x.org", "admin", "admin")
    log = client.get("/api/v1/audit?action=cancel_job", headers=bearer(admin)).get_json()
    assert log["items"][0]["user"] == "ops@x.org" and log["items"][0]["target_id"] == str(job_id)


def test_health_answers_503_when_redis_is_unreachable(database_url, tmp_path):
    app = make_app(database_url, tmp_path, BROKER_URL="redis://127.0.0.1:1/0")
    response = app.test_client().get("/api/v1/health")
    body = response.get_json()
    assert response.status_code == 503 and body["status"] == "degraded"
    assert body["database"]["ok"] is True and body["redis"]["ok"] is False


def test_secure_cookies_send_the_session_cookie_over_https_only(database_url, tmp_path):
    """CQAFACE_SECURE_COOKIES=1 (behind TLS) marks the session cookie Secure; 0 does not."""
    for value, secure in (("0", False), ("1", True)):
        app = make_app(database_url, tmp_path, {"CQAFACE_SECURE_COOKIES": value})
        cookie = app.test_client().get("/login").headers["Set-Cookie"]
        assert cookie.startswith("cqaface_session=")
        assert ("; Secure" in cookie) == secure, cookie
