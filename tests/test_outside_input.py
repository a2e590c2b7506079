"""Issue 33's hostile requests, on SQLite and PostgreSQL: integers past 64 bits in paths,
queries and bodies, a zip whose subject folder name no file system can hold, and a subject
name with a right-to-left override. Each gets a clear 4xx (or a per-item status in its job);
none reaches the database or the file system as it came."""

from __future__ import annotations

import io
import json

import pytest
from sqlalchemy import select
from web_helpers import add_key, bearer, make_app, zip_of

from identify.cli.main import main
from identify.gallery.tables import Subject
from identify.web.common import db
from workers import enrolment

HUGE = str(2**64)  # past the signed 64-bit range: SQLite's OverflowError
PAST_ID = str(2**31)  # past PostgreSQL's integer, the id columns' type
BIDI = "Bob\u202eevil"


@pytest.fixture
def app(database_url, tmp_path):
    return make_app(database_url, tmp_path)


@pytest.fixture
def key(app) -> str:
    return add_key(app, "admin@x.org", "admin", "identify,enrol,admin")


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    body = response.get_json()["error"]
    assert body["code"] == code, body
    return body


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", f"/api/v1/subjects/{HUGE}"),
        ("DELETE", f"/api/v1/subjects/{HUGE}"),
        ("GET", f"/api/v1/jobs/{HUGE}"),
        ("PATCH", f"/api/v1/subjects/{HUGE}"),
        ("DELETE", f"/api/v1/subjects/1/images/{HUGE}"),
        ("POST", f"/api/v1/jobs/{HUGE}/cancel"),
    ],
)
def test_an_id_past_64_bits_in_a_path_is_no_such_thing(app, key, method, url):
    client = app.test_client()
    for too_big in (HUGE, PAST_ID):
        response = client.open(
            url.replace(HUGE, too_big), method=method, headers=bearer(key), json={}
        )
        _error(response, 404, "not_found")


def test_the_largest_id_is_an_ordinary_missing_one(app, key):
    client = app.test_client()
    _error(client.get(f"/api/v1/subjects/{2**31 - 1}", headers=bearer(key)), 404, "not_found")
    _error(client.get(f"/api/v1/jobs/{2**31 - 1}", headers=bearer(key)), 404, "not_found")
    body = {"subject_id": 2**31 - 1, "image": "AAAA"}
    _error(client.post("/api/v1/verify", json=body, headers=bearer(key)), 404, "not_found")


def test_verify_with_a_subject_id_past_64_bits_names_the_field(app, key):
    client = app.test_client()
    for body in (
        {"subject_id": int(HUGE), "image": "AAAA"},
        {"subject_id": HUGE},
        {"subject_id": int(PAST_ID), "image": "AAAA"},
        {"subject_id": 1.5, "image": "AAAA"},
        {"subject_id": True, "image": "AAAA"},
    ):
        error = _error(
            client.post("/api/v1/verify", json=body, headers=bearer(key)), 400, "bad_parameter"
        )
        assert error["details"] == {"field": "subject_id"} and "subject_id" in error["message"]
    form = {"subject_id": HUGE, "image": (io.BytesIO(b"x"), "a.jpg")}
    error = _error(
        client.post("/api/v1/verify", data=form, headers=bearer(key)), 400, "bad_parameter"
    )
    assert error["details"] == {"field": "subject_id"}


@pytest.mark.parametrize("route", ["/api/v1/subjects", "/api/v1/audit", "/api/v1/jobs"])
@pytest.mark.parametrize("page", [HUGE, str(2**62), "١٢", "1_0", "-1"])
def test_a_page_past_what_an_offset_can_hold_names_the_field(app, key, route, page):
    error = _error(
        app.test_client().get(f"{route}?page={page}", headers=bearer(key)), 400, "bad_parameter"
    )
    assert error["details"] == {"field": "page"}


def test_the_audit_user_filter_past_64_bits_names_the_field(app, key):
    for user_id in (HUGE, PAST_ID):
        response = app.test_client().get(f"/api/v1/audit?user_id={user_id}", headers=bearer(key))
        assert _error(response, 400, "bad_parameter")["details"] == {"field": "user_id"}


def test_a_bidi_override_in_a_name_is_refused_naming_the_character_and_its_position(app, key):
    client = app.test_client()
    for response in (
        client.post("/api/v1/subjects", json={"name": BIDI}, headers=bearer(key)),
        client.post("/api/v1/subjects", json={"name": "a\x00b"}, headers=bearer(key)),
        client.post("/api/v1/subjects", json={"name": "x\u2066y"}, headers=bearer(key)),
        client.post("/api/v1/subjects", json={"name": "n" * 256}, headers=bearer(key)),
    ):
        _error(response, 400, "bad_name")
    message = client.post("/api/v1/subjects", json={"name": BIDI}, headers=bearer(key))
    assert "U+202E (RIGHT-TO-LEFT OVERRIDE) at position 4" in message.get_json()["error"]["message"]
    created = client.post("/api/v1/subjects", json={"name": "Zoe\u0301"}, headers=bearer(key))
    assert created.status_code == 201 and created.get_json()["name"] == "Zo\u00e9"  # NFC
    renamed = client.patch(
        f"/api/v1/subjects/{created.get_json()['id']}", json={"name": BIDI}, headers=bearer(key)
    )
    _error(renamed, 400, "bad_name")
    with app.app_context(), db() as session:
        assert session.scalars(select(Subject.name)).all() == ["Zo\u00e9"]


def test_a_zip_with_an_unholdable_folder_name_and_a_bidi_one_fails_those_items_only(
    app, key, orl_dir, tmp_path
):
    """The 5,000-character folder name was an OSError (500) while unpacking; now every photo
    is stored under a generated name, the refused names fail their items with the reason, the
    rest of the job goes on, and nothing is left in the uploads folder."""
    photo = (orl_dir / "s1" / "1.pgm").read_bytes()
    long_name = "A" * 5000
    members = {
        f"{long_name}/1.pgm": photo,
        f"{BIDI}/1.pgm": photo,
        "s2/1.pgm": (orl_dir / "s2" / "1.pgm").read_bytes(),
    }
    client = app.test_client()
    response = client.post(
        "/api/v1/enrolments",
        data={"archive": (io.BytesIO(zip_of(members)), "hostile.zip")},
        headers=bearer(key),
    )
    assert response.status_code == 202, response.get_json()
    job_id = response.get_json()["id"]
    enrolment.wait(job_id, timeout=300)  # the job's thread, to its end (its files removed)
    job = client.get(f"/api/v1/jobs/{job_id}", headers=bearer(key)).get_json()
    assert job["status"] == "done" and job["total"] == 3
    assert job["counts"] == {"enrolled": 1, "failed": 2}
    failed = {item["subject"][:10]: item for item in job["failed"]}
    assert set(failed) == {"A" * 10, "Bob<U+202E"}
    assert failed["A" * 10]["reason"] == "a subject name has at most 255 characters, not 5000"
    assert failed["Bob<U+202E"]["subject"] == "Bob<U+202E>evil"
    assert failed["Bob<U+202E"]["path"] == "Bob<U+202E>evil/1.pgm"
    assert "U+202E (RIGHT-TO-LEFT OVERRIDE) at position 4" in failed["Bob<U+202E"]["reason"]
    assert len(failed["A" * 10]["path"]) <= 1024
    with app.app_context(), db() as session:
        assert session.scalars(select(Subject.name)).all() == ["s2"]
    uploads = tmp_path / "data" / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir()), "the upload was left behind"


# ----- the command line ---------------------------------------------------------------------


def _one_line_status_2(capsys, argv: list[str]) -> str:
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    "argv",
    [
        ["gallery", "remove", "--subject", HUGE],
        ["gallery", "remove", "--image", "-3"],
        ["gallery", "remove", "--face", "x"],
        ["verify", "photo.jpg", HUGE],
        ["verify", "photo.jpg", PAST_ID],
        ["identify", "photo.jpg", "--k", "0"],
        ["identify", "photo.jpg", "--k", HUGE],
        ["job", "show", HUGE],
        ["job", "cancel", "١٢"],
        ["job", "list", "--limit", "0"],
        ["enrol", "photos", "--min-quality", "2"],
        ["enrol", "photos", "--min-quality", "nan"],
        ["reembed", "--batch-size", HUGE],
    ],
)
def test_cli_ids_out_of_range_are_one_line_and_status_2(capsys, argv):
    err = _one_line_status_2(capsys, argv)
    assert err.startswith("cqaface ") and "error:" in err


def test_cli_gallery_add_refuses_a_bidi_name_in_one_line(capsys, tmp_path):
    err = _one_line_status_2(capsys, ["gallery", "add", BIDI, str(tmp_path / "x.jpg")])
    assert "U+202E (RIGHT-TO-LEFT OVERRIDE) at position 4" in err


def test_cli_job_show_of_the_largest_id_is_one_line_and_status_2(database_url, monkeypatch, capsys):
    monkeypatch.setenv("CQAFACE_DATABASE_URL", database_url)
    monkeypatch.setenv("CQAFACE_BROKER_URL", "")
    err = _one_line_status_2(capsys, ["job", "show", str(2**31 - 1)])
    assert f"no enrolment job {2**31 - 1}" in err
    err = _one_line_status_2(capsys, ["job", "cancel", PAST_ID])
    assert "job_id must lie between 1 and 2147483647" in err


def test_cli_check_names_lists_stored_names_that_break_the_policy(
    database_url, monkeypatch, capsys
):
    """Names stored before the policy are listed, not changed."""
    from identify.gallery.db import make_engine, session_factory

    monkeypatch.setenv("CQAFACE_DATABASE_URL", database_url)
    engine = make_engine(database_url)
    with session_factory(engine)() as session, session.begin():
        session.add_all(
            [
                Subject(name="Ada", details={}),
                Subject(name=BIDI, details={}),
                Subject(name="Zoe\u0301", details={}),
            ]
        )
    assert main(["gallery", "check-names"]) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["name"], line["problem"][:39]) for line in lines] == [
        ("Bob<U+202E>evil", "the subject name holds U+202E (RIGHT-TO"),
        ("Zoe\u0301", "the subject name is not NFC-normalised"),
    ]
    with session_factory(engine)() as session:
        assert sorted(session.scalars(select(Subject.name))) == sorted(["Ada", BIDI, "Zoe\u0301"])
    engine.dispose()


def test_an_uploaded_photo_name_is_kept_as_printable_data(app, key, orl_dir):
    """A photo's file name of 5,000 characters with a bidi override is its source, escaped and
    cut to 255 characters, never a path (nor a value too long for the column)."""
    client = app.test_client()
    subject = client.post("/api/v1/subjects", json={"name": "Ada"}, headers=bearer(key))
    subject_id = subject.get_json()["id"]
    photo = (orl_dir / "s1" / "1.pgm").read_bytes()
    name = "x" * 5000 + "\u202e.pgm"
    response = client.post(
        f"/api/v1/subjects/{subject_id}/images",
        data={"image": (io.BytesIO(photo), name)},
        headers=bearer(key),
    )
    assert response.status_code == 201, response.get_json()
    (result,) = response.get_json()["results"]
    assert result["status"] == "enrolled" and result["source"] == "x" * 254 + "\u2026"
    detail = client.get(f"/api/v1/subjects/{subject_id}", headers=bearer(key)).get_json()
    assert [image["source"] for image in detail["images"]] == ["x" * 254 + "\u2026"]


def test_the_admin_ui_refuses_a_bidi_rename_and_a_page_past_the_range(app, key):
    from web_helpers import add_user, sign_in

    subject_id = (
        app.test_client()
        .post("/api/v1/subjects", json={"name": "Ada"}, headers=bearer(key))
        .get_json()["id"]
    )
    add_user(app, "ops@x.org", "operator")
    client, token = sign_in(app, "ops@x.org")
    page = client.post(f"/subjects/{subject_id}/rename", data={"name": BIDI, "csrf_token": token})
    assert page.status_code == 400
    assert "U+202E (RIGHT-TO-LEFT OVERRIDE) at position 4" in page.get_data(as_text=True)
    assert client.get(f"/subjects?page={HUGE}").status_code == 400
    assert client.get(f"/subjects/{HUGE}").status_code == 404
    with app.app_context(), db() as session:
        assert session.scalars(select(Subject.name)).all() == ["Ada"]


def test_a_job_fails_only_the_items_whose_name_or_path_it_cannot_hold(database_url):
    """create_job applies the name policy to every source (zip, folder, CSV, JSON lines): a
    refused name or a path longer than its column fails its item, named safely; the others are
    pending, their names NFC."""
    from identify.gallery import jobs
    from identify.gallery.db import make_engine

    engine = make_engine(database_url)
    long_path = "ok/" + "p" * 1100 + ".jpg"
    job_id = jobs.create_job(
        engine,
        [("ok", long_path), (BIDI, "b/1.jpg"), ("  Zoe\u0301 ", "z/1.jpg"), ("x\x00", "n/1.jpg")],
    )
    report = jobs.job_progress(engine, job_id)
    engine.dispose()
    assert report.total == 4 and report.counts == {"failed": 3, "pending": 1}
    failed = {item["subject"]: item for item in report.failed}
    assert set(failed) == {"ok", "Bob<U+202E>evil", "x<U+0000>"}
    assert failed["ok"]["reason"] == "the photo's path has 1107 characters, more than 1024"
    assert len(failed["ok"]["path"]) == 1024 and failed["ok"]["path"].startswith("ok/ppp")
    assert "U+0000 (Cc) at position 2" in failed["x<U+0000>"]["reason"]
