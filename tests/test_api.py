"""The JSON API on the real model and real databases (SQLite and PostgreSQL): subjects and
photos in, probes identified and verified, renames and deletions audited, health and metrics."""

from __future__ import annotations

import base64
import io
import re
import time

import numpy as np
import pytest
from quality_gate import blurred, minimum_between
from web_helpers import add_key, bearer, make_app

SUBJECTS = ("s1", "s2", "s3", "s4", "s5")


@pytest.fixture(scope="module")
def gate_minimum(orl_dir) -> float:
    """The app's minimum quality to enrol: under the sharp gallery photos' scores, over the
    blurred probe's (tests/quality_gate.py)."""
    from embedder.imageio import load_image
    from identify.search.encode import FaceEncoder

    sharp = [load_image(orl_dir / name / f"{i}.pgm") for name in SUBJECTS for i in (1, 2, 3)]
    bad = blurred(load_image(orl_dir / "s5" / "4.pgm"), 4.0)
    return minimum_between(FaceEncoder.load(), sharp, bad)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request, tmp_path_factory, orl_dir, gate_minimum):
    """An app whose gallery holds photos 1-3 of five ORL subjects, and an admin key."""
    from identify.gallery import migrate

    tmp = tmp_path_factory.mktemp("api")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'gallery.db'}"
    else:
        url = request.getfixturevalue("postgres_database")()
    migrate.upgrade(url)
    # uploads extracted under tmp/data
    app = make_app(url, tmp, {"CQAFACE_ENROL_MIN_QUALITY": str(gate_minimum)})
    key = add_key(app, "admin@x.org", "admin", "identify,enrol,admin")
    client = app.test_client()
    ids = {}
    for name in SUBJECTS:
        response = client.post("/api/v1/subjects", json={"name": name}, headers=bearer(key))
        assert response.status_code == 201
        ids[name] = response.get_json()["id"]
        photos = [
            (io.BytesIO((orl_dir / name / f"{i}.pgm").read_bytes()), f"{i}.pgm") for i in (1, 2, 3)
        ]
        response = client.post(
            f"/api/v1/subjects/{ids[name]}/images", data={"image": photos}, headers=bearer(key)
        )
        assert response.status_code == 201, response.get_json()
        statuses = [r["status"] for r in response.get_json()["results"]]
        assert statuses.count("enrolled") >= 2, statuses
    return app, key, ids


def _probe(orl_dir, name: str, i: int):
    return (io.BytesIO((orl_dir / name / f"{i}.pgm").read_bytes()), f"{name}-{i}.pgm")


def test_identify_answers_every_face_with_top_k_and_a_decision(served, orl_dir):
    app, key, _ = served
    client = app.test_client()
    response = client.post(
        "/api/v1/identify",
        data={"image": _probe(orl_dir, "s2", 7), "k": "3", "mask": "no"},
        headers=bearer(key),
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["k"] == 3 and body["mask"] == "no" and len(body["probe_sha256"]) == 64
    (face,) = body["faces"]
    assert len(face["box"]) == 4 and face["masked"] is False
    assert len(face["part_qualities"]) >= 1
    assert isinstance(face["face_quality"], float) and 0 <= face["face_quality"] <= 1
    scores = [m["score"] for m in face["matches"]]
    assert 1 <= len(scores) <= 3 and scores == sorted(scores, reverse=True)
    assert {m["name"] for m in face["matches"]} <= set(SUBJECTS)
    decision = face["decision"]
    assert decision == "unknown" or decision["subject_id"] == face["matches"][0]["subject_id"]
    assert isinstance(face["threshold"], float)
    # A threshold of the caller's: -1 accepts the Rank-1 answer, 1 refuses everything.
    accepted = client.post(
        "/api/v1/identify",
        data={"image": _probe(orl_dir, "s2", 7), "threshold": "-1"},
        headers=bearer(key),
    ).get_json()["faces"][0]
    assert accepted["decision"]["subject_id"] == accepted["matches"][0]["subject_id"]
    assert accepted["threshold"] == -1
    refused = client.post(
        "/api/v1/identify",
        json={
            "image": base64.b64encode((orl_dir / "s2" / "7.pgm").read_bytes()).decode(),
            "threshold": 1.0,
        },
        headers=bearer(key),
    ).get_json()["faces"][0]
    assert refused["decision"] == "unknown" and refused["threshold"] == 1.0


def test_held_back_photos_find_their_subject_at_rank_1(served, orl_dir):
    app, key, ids = served
    client = app.test_client()
    hits = 0
    for name in SUBJECTS:
        face = client.post(
            "/api/v1/identify", data={"image": _probe(orl_dir, name, 8)}, headers=bearer(key)
        ).get_json()["faces"][0]
        hits += face["matches"][0]["subject_id"] == ids[name]
    assert hits >= 4, f"Rank-1 {hits}/5 among 5 subjects"


def test_verify_scores_the_same_person_above_another(served, orl_dir):
    app, key, ids = served
    client = app.test_client()

    def verify(probe: str, subject: str) -> dict:
        response = client.post(
            "/api/v1/verify",
            data={"image": _probe(orl_dir, probe, 9), "subject_id": str(ids[subject])},
            headers=bearer(key),
        )
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    people = ("s1", "s3", "s5")
    scores = {(p, s): verify(p, s)["score"] for p in people for s in people}
    same = [scores[p, p] for p in people]
    other = [scores[p, s] for p in people for s in people if p != s]
    assert sum(same) / len(same) > sum(other) / len(other), scores
    answer = verify("s1", "s1")
    assert set(answer) >= {"subject_id", "score", "threshold", "same", "masked", "face_quality"}
    assert 0 <= answer["face_quality"] <= 1
    missing = client.post(
        "/api/v1/verify",
        data={"image": _probe(orl_dir, "s3", 9), "subject_id": "99999"},
        headers=bearer(key),
    )
    assert missing.status_code == 404


def test_subjects_list_search_get_rename_and_audit(served):
    app, key, ids = served
    client = app.test_client()
    page = client.get("/api/v1/subjects?per_page=2", headers=bearer(key)).get_json()
    assert page["total"] >= len(SUBJECTS) and len(page["items"]) == 2
    found = client.get("/api/v1/subjects?q=s4", headers=bearer(key)).get_json()
    assert [s["name"] for s in found["items"]] == ["s4"]
    detail = client.get(f"/api/v1/subjects/{ids['s4']}", headers=bearer(key)).get_json()
    assert detail["image_count"] == len(detail["images"]) >= 2
    assert all(len(image["faces"]) == 1 for image in detail["images"])
    assert all(0 <= image["faces"][0]["face_quality"] <= 1 for image in detail["images"])
    assert {t["kind"] for t in detail["templates"]} >= {"normal"}
    renamed = client.patch(
        f"/api/v1/subjects/{ids['s4']}", json={"name": "Subject Four"}, headers=bearer(key)
    )
    assert renamed.status_code == 200 and renamed.get_json()["name"] == "Subject Four"
    log = client.get("/api/v1/audit?action=rename_subject", headers=bearer(key)).get_json()
    assert log["items"][0]["details"] == {"old": "s4", "new": "Subject Four"}
    assert log["items"][0]["user"] == "admin@x.org"
    searches = client.get("/api/v1/audit?action=identify", headers=bearer(key)).get_json()
    assert searches["total"] >= 1
    assert len(searches["items"][0]["details"]["probe_sha256"]) == 64


def test_duplicate_photo_gets_409_and_images_can_be_deleted(served, orl_dir):
    app, key, ids = served
    client = app.test_client()
    again = client.post(
        f"/api/v1/subjects/{ids['s5']}/images",
        data={"image": [_probe(orl_dir, "s5", 1)]},
        headers=bearer(key),
    )
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "duplicate"
    detail = client.get(f"/api/v1/subjects/{ids['s5']}", headers=bearer(key)).get_json()
    image_id = detail["images"][0]["id"]
    assert (
        client.delete(
            f"/api/v1/subjects/{ids['s1']}/images/{image_id}", headers=bearer(key)
        ).status_code
        == 404
    )  # not this subject's image
    response = client.delete(f"/api/v1/subjects/{ids['s5']}/images/{image_id}", headers=bearer(key))
    assert response.status_code == 204
    after = client.get(f"/api/v1/subjects/{ids['s5']}", headers=bearer(key)).get_json()
    assert image_id not in [i["id"] for i in after["images"]]


def test_deleted_subject_is_no_longer_an_answer(served, orl_dir):
    app, key, _ = served
    client = app.test_client()
    subject = client.post("/api/v1/subjects", json={"name": "temp"}, headers=bearer(key))
    temp = subject.get_json()["id"]
    client.post(
        f"/api/v1/subjects/{temp}/images",
        data={"image": [_probe(orl_dir, "s9", 1), _probe(orl_dir, "s9", 2)]},
        headers=bearer(key),
    )
    before = client.post(
        "/api/v1/identify", data={"image": _probe(orl_dir, "s9", 1)}, headers=bearer(key)
    ).get_json()["faces"][0]
    assert before["matches"][0]["subject_id"] == temp
    assert client.delete(f"/api/v1/subjects/{temp}", headers=bearer(key)).status_code == 204
    assert client.delete(f"/api/v1/subjects/{temp}", headers=bearer(key)).status_code == 404
    after = client.post(
        "/api/v1/identify", data={"image": _probe(orl_dir, "s9", 1)}, headers=bearer(key)
    ).get_json()["faces"][0]
    assert temp not in [m["subject_id"] for m in after["matches"]]
    log = client.get("/api/v1/audit?action=delete_subject", headers=bearer(key)).get_json()
    assert log["items"][0]["target_id"] == str(temp)


def test_no_face_gets_422(served):
    from web_helpers import png_bytes

    app, key, _ = served
    response = app.test_client().post(
        "/api/v1/identify",
        data={"image": (io.BytesIO(png_bytes(200, 200)), "wall.png")},
        headers=bearer(key),
    )
    assert response.status_code == 422 and response.get_json()["error"]["code"] == "no_face"


def test_health_and_metrics_describe_the_running_service(served):
    app, key, _ = served
    client = app.test_client()
    health = client.get("/api/v1/health").get_json()
    assert health["status"] == "ok" and health["database"]["ok"]
    assert health["index"]["loaded"] and health["index"]["templates"] >= 4
    assert health["model_version"].startswith("cqaface-")
    metrics = client.get("/api/v1/metrics", headers=bearer(key))
    text = metrics.get_data(as_text=True)
    assert metrics.status_code == 200 and metrics.mimetype == "text/plain"
    assert (
        'cqaface_http_requests_total{method="POST",endpoint="/api/v1/identify",status="200"}'
        in text
    )
    assert "cqaface_http_request_duration_seconds_bucket" in text
    assert "cqaface_gallery_subjects " in text and "cqaface_queue_depth " in text


def test_a_zip_enrolment_job_runs_and_reports_its_failures(served, orl_dir):
    from web_helpers import zip_of

    app, key, _ = served
    client = app.test_client()
    members = {
        f"s{n}/{i}.pgm": (orl_dir / f"s{n}" / f"{i}.pgm").read_bytes()
        for n in (11, 12)
        for i in (1, 2)
    }
    members["s12/broken.png"] = b"this is no photo"
    response = client.post(
        "/api/v1/enrolments",
        data={"archive": (io.BytesIO(zip_of(members)), "two people.zip")},
        headers=bearer(key),
    )
    assert response.status_code == 202, response.get_json()
    job_id = response.get_json()["id"]
    job = _finished_job(client, job_id, key)
    assert job["status"] == "done" and job["total"] == 5 and job["done"] == 5
    assert job["counts"].get("enrolled") == 4
    (failed,) = job["failed"]
    assert failed["path"] == "s12/broken.png" and failed["subject"] == "s12" and failed["reason"]
    listed = client.get("/api/v1/jobs", headers=bearer(key)).get_json()
    assert listed["items"][0]["id"] == job_id
    names = {
        s["name"]
        for s in client.get("/api/v1/subjects?q=s1", headers=bearer(key)).get_json()["items"]
    }
    assert {"s11", "s12"} <= names
    log = client.get("/api/v1/audit?action=enrolment", headers=bearer(key)).get_json()
    assert log["items"][0]["target_id"] == str(job_id)


def test_the_ui_search_shows_rank_1_candidates_overlay_and_is_audited(served, orl_dir):
    import re

    from web_helpers import add_user

    app, key, ids = served
    email = f"analyst-{len(ids)}-{id(app)}@x.org"
    add_user(app, email, "analyst", "a long enough password")
    client = app.test_client()
    token = re.search(
        r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True)
    )[1]
    client.post(
        "/login", data={"email": email, "password": "a long enough password", "csrf_token": token}
    )
    token = re.search(
        r'name="csrf_token" value="([^"]+)"', client.get("/search").get_data(as_text=True)
    )[1]
    page = client.post(
        "/search",
        data={"csrf_token": token, "mask": "yes", "k": "3", "image": _probe(orl_dir, "s1", 10)},
    )
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert 'id="attention-overlay" src="data:image/png;base64,' in text
    assert re.search(r'id="face-quality-1"><span>face</span><meter min="0" max="1" value="', text)
    assert 'id="rank1-1"' in text and 'id="masked-1"' in text  # the caller said: masked
    assert text.count('class="branch"') >= 2 and "Top 3 candidates" in text
    assert "/faces/" in text  # candidates' gallery photos
    face_url = re.search(r'src="(/faces/\d+\.png)"', text)[1]
    photo = client.get(face_url)
    assert photo.status_code == 200 and photo.data[:4] == b"\x89PNG"
    log = client.get("/api/v1/audit?action=identify", headers=bearer(key)).get_json()
    assert log["items"][0]["user"] == email and log["items"][0]["details"]["via"] == "ui"


def test_a_blurred_photo_is_refused_low_quality_with_422_and_a_probe_is_answered(served, orl_dir):
    from PIL import Image as PILImage

    app, key, ids = served
    client = app.test_client()
    grey = np.asarray(PILImage.open(orl_dir / "s5" / "4.pgm").convert("RGB"))
    buffer = io.BytesIO()
    PILImage.fromarray(blurred(grey, 4.0)).save(buffer, format="PNG")
    photo = buffer.getvalue()
    refused = client.post(
        f"/api/v1/subjects/{ids['s5']}/images",
        data={"image": (io.BytesIO(photo), "blurred.png")},
        headers=bearer(key),
    )
    assert refused.status_code == 422, refused.get_json()
    error = refused.get_json()["error"]
    assert error["code"] == "low_quality"
    assert re.fullmatch(
        r"face quality 0\.\d{4} is under the minimum 0\.\d+ to enrol", error["message"]
    )
    # The same photo as a probe is answered, with its quality for the caller to judge.
    probe = client.post(
        "/api/v1/identify", data={"image": (io.BytesIO(photo), "b.png")}, headers=bearer(key)
    )
    assert probe.status_code == 200
    assert probe.get_json()["faces"][0]["face_quality"] == pytest.approx(
        float(re.search(r"quality (0\.\d{4})", error["message"])[1]), abs=1e-4
    )


@pytest.mark.parametrize("bad", ["1.5", "-0.1", "high", "nan", ""])
def test_a_bad_job_minimum_quality_is_a_400_naming_the_field(served, bad):
    from web_helpers import zip_of

    app, key, _ = served
    client = app.test_client()
    archive = (io.BytesIO(zip_of({"s1/1.png": b"x"})), "a.zip")
    response = client.post(
        "/api/v1/enrolments",
        data={"archive": archive, "min_quality": bad},
        headers=bearer(key),
    )
    if bad == "":  # an empty field is no override
        assert response.status_code == 202
        return
    assert response.status_code == 400, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == "bad_parameter" and error["details"] == {"field": "min_quality"}
    assert error["message"].startswith("min_quality=")
    json_body = client.post(
        "/api/v1/enrolments", json={"folder": "/x", "min_quality": True}, headers=bearer(key)
    )
    assert (
        json_body.status_code == 400 and "min_quality" in json_body.get_json()["error"]["message"]
    )


def test_a_jobs_own_minimum_quality_applies_to_its_photos(served, orl_dir):
    from web_helpers import zip_of

    app, key, _ = served
    client = app.test_client()
    members = {f"s21/{i}.pgm": (orl_dir / "s21" / f"{i}.pgm").read_bytes() for i in (1, 2)}
    response = client.post(
        "/api/v1/enrolments",
        data={"archive": (io.BytesIO(zip_of(members)), "strict.zip"), "min_quality": "1"},
        headers=bearer(key),
    )
    assert response.status_code == 202, response.get_json()
    job = _finished_job(client, response.get_json()["id"], key)
    assert job["status"] == "done" and job["counts"] == {"low_quality": 2}
    assert all(item["reason"].endswith("under the minimum 1 to enrol") for item in job["failed"])


def _finished_job(client, job_id: int, key: str) -> dict:
    """The job's answer once it has left the queue (or after two minutes, as it stands)."""
    deadline = time.monotonic() + 120
    while True:
        job = client.get(f"/api/v1/jobs/{job_id}", headers=bearer(key)).get_json()
        if job["status"] not in ("queued", "running") or time.monotonic() > deadline:
            return job
        time.sleep(0.5)
