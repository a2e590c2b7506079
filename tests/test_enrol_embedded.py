"""With no broker configured, bulk enrolment runs in the process that asks for it: the CLI
shows a progress bar and prints the job's summary, a web request gets its job id at once
while a thread of its process does the work, and an uploaded archive's files go with it."""

from __future__ import annotations

import json
import shutil
import zipfile

import pytest

from identify.app import create_app
from identify.cli.main import main
from identify.gallery import migrate
from identify.gallery.sources import folder_items, new_upload_dir, zip_items
from identify.settings import Settings
from workers import enrolment


@pytest.fixture
def embedded(tmp_path, monkeypatch):
    """The embedded default: a SQLite gallery in the data dir, no broker."""
    monkeypatch.delenv("CQAFACE_BROKER_URL", raising=False)
    monkeypatch.setenv("CQAFACE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("CQAFACE_DATABASE_URL", raising=False)
    monkeypatch.delenv("CQAFACE_INDEX_DIR", raising=False)
    monkeypatch.setenv("CQAFACE_MASKED_TEMPLATES", "0")
    migrate.upgrade(Settings.from_env().database_url)
    return tmp_path


@pytest.fixture
def photos(orl_dir, tmp_path):
    root = tmp_path / "photos"
    for person in ("s1", "s2"):
        (root / person).mkdir(parents=True)
        for k in (1, 2):
            shutil.copy(orl_dir / person / f"{k}.pgm", root / person / f"{k}.pgm")
    (root / "s2" / "notes.jpg").write_text("not a photo")
    return root


def test_cli_enrol_runs_in_process_and_prints_the_summary(embedded, photos, capsys):
    assert main(["enrol", str(photos)]) == 0
    out = capsys.readouterr()
    report = json.loads(out.out.strip().splitlines()[-1])
    assert report["status"] == "done" and report["total"] == 5 and report["task_id"] is None
    assert report["counts"] == {"enrolled": 4, "unreadable": 1}
    assert report["failed"][0]["path"].endswith("notes.jpg")
    assert "5/5" in out.err  # the progress bar
    assert main(["enrol", str(photos)]) == 0  # again: nothing new
    assert json.loads(capsys.readouterr().out)["counts"] == {"duplicate": 4, "unreadable": 1}


def test_cli_enrol_takes_the_jobs_own_minimum_quality(embedded, photos, capsys):
    assert main(["enrol", "--min-quality", "1", str(photos)]) == 0  # the job ran to its end
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["counts"] == {"low_quality": 4, "unreadable": 1}
    refused = [f for f in report["failed"] if f["status"] == "low_quality"]
    assert all(f["reason"].endswith("is under the minimum 1 to enrol") for f in refused)


def test_cli_enrol_cannot_detach_without_a_broker(embedded, photos, capsys):
    assert main(["enrol", "--detach", str(photos)]) == 2
    assert "needs a broker" in capsys.readouterr().err


def test_a_submitted_job_runs_in_a_thread_and_its_upload_is_removed(embedded, photos):
    archive = embedded / "photos.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for subject, path in folder_items(photos, restricted=False):
            bundle.write(path, f"upload/{subject}/{path.name}")
    app = create_app()
    work_dir = new_upload_dir(app.extensions["cqaface"].settings.uploads_dir)
    items = zip_items(archive, work_dir)
    job_id = enrolment.create_job(
        app.extensions["cqaface"].engine,
        items,
        source="photos.zip",
        kind="zip",
        user_id=None,
        options={"work_dir": str(work_dir)},
    )
    enrolment.submit(job_id, app)  # returns at once
    enrolment.wait(job_id, timeout=300)
    report = enrolment.progress(app.extensions["cqaface"].engine, job_id)
    assert report["status"] == "done" and report["kind"] == "zip"
    assert report["counts"] == {"enrolled": 4, "unreadable": 1}
    assert not work_dir.exists()
