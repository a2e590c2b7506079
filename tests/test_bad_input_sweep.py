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
def app(database_url, tmp_path, monkeypatch):
    monkeypatch.setenv("CQAFACE_DATA_DIR", str(tmp_path / "data"))
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
