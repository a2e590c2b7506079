"""Bulk enrolment jobs: every photo gets an item with its outcome, progress can be read at any
time, and a job cut short resumes without redoing or losing anything."""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass

import pytest
from sqlalchemy import select, update

from identify.gallery.db import make_engine
from identify.gallery.enroller import Enroller
from identify.gallery.jobs import (
    cancel_job,
    create_job,
    finish_job,
    job_progress,
    publish_running,
    run_job,
    start_job,
)
from identify.gallery.store import GalleryStore
from identify.gallery.tables import ItemStatus, JobItem, JobStatus
from identify.search.live_index import LiveIndex
from identify.settings import Settings


@pytest.fixture
def folder(orl_dir, tmp_path):
    """Two people with two photos each, and a broken file in the first one's folder."""
    root = tmp_path / "photos"
    for person in ("s1", "s2"):
        (root / person).mkdir(parents=True)
        for k in (1, 2):
            shutil.copy(orl_dir / person / f"{k}.pgm", root / person / f"{k}.pgm")
    (root / "s1" / "3.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    return root


@dataclass
class Served:
    """What a process running jobs holds: the enroller (with its store) and the live index."""

    enroller: Enroller
    index: LiveIndex

    @property
    def store(self) -> GalleryStore:
        return self.enroller.store


@pytest.fixture
def gallery(database_url, encoder, tmp_path):
    engine = make_engine(database_url)
    store = GalleryStore.for_encoder(engine, encoder)
    index = LiveIndex(
        engine, model_version=store.model_version, dim=store.dim, index_dir=tmp_path / "index"
    )
    store.on_commit.append(index.sync)
    # The attempts a photo gets, named here because a test counts them.
    settings = Settings.from_env(
        {"CQAFACE_DATA_DIR": str(tmp_path / "data"), "CQAFACE_ITEM_ATTEMPTS": "3"}
    )
    enroller = Enroller(store, encoder, settings=settings, keep="crops", masked_templates=False)
    yield Served(enroller, index)
    engine.dispose()


def run(gallery: Served, job_id: int, **options):
    return run_job(gallery.enroller, job_id, save_indexes=gallery.index.save, **options)


def test_a_job_reports_every_photo_with_a_status_and_reason(gallery, folder):
    job_id = create_job(gallery.store, folder)
    before = job_progress(gallery.store, job_id)
    assert (before.status, before.total, before.done) == (JobStatus.QUEUED, 5, 0)
    seen = []
    after = run(gallery, job_id, progress=seen.append)
    assert after.status == JobStatus.DONE and after.done == 5 and len(seen) == 5
    assert after.counts == {"enrolled": 4, "unreadable": 1}
    with gallery.store.sessions() as session:
        bad = session.scalars(select(JobItem).where(JobItem.status == ItemStatus.UNREADABLE)).one()
    assert bad.path.endswith("3.jpg") and bad.reason and bad.image_id is None
    assert sorted(gallery.store.names(gallery.index.index().ids()).values()) == ["s1", "s2"]


def test_an_interrupted_job_resumes_where_it_stopped(gallery, folder):
    job_id = create_job(gallery.store, folder)
    run(gallery, job_id)
    # A worker died after enrolling the last two photos but before recording them.
    with gallery.store.sessions() as session, session.begin():
        last_two = session.scalars(
            select(JobItem.id).where(JobItem.job_id == job_id).order_by(JobItem.id.desc()).limit(2)
        ).all()
        session.execute(
            update(JobItem).where(JobItem.id.in_(last_two)).values(status=ItemStatus.PENDING)
        )
    redone = []
    progress = run(gallery, job_id, progress=redone.append)
    assert len(redone) == 2  # only what was pending
    assert progress.done == 5 and progress.counts.get("pending", 0) == 0
    # The photos that the dead worker enrolled count as this job's, not as duplicates.
    assert progress.counts == {"enrolled": 4, "unreadable": 1}
    assert len(gallery.index.index()) == 2  # nothing enrolled twice


def test_an_unknown_job_is_a_lookup_error(gallery):
    with pytest.raises(LookupError):
        job_progress(gallery.store, 12345)


def test_enrol_many_embeds_a_batch_like_one_by_one_and_reports_bad_photos(
    gallery, folder, encoder, database_url, tmp_path
):
    photos = [
        ("s1", folder / "s1" / "1.pgm", None),
        ("s1", folder / "s1" / "3.jpg", None),  # truncated
        ("s2", folder / "s2" / "1.pgm", None),
        ("s2", folder / "s2" / "1.pgm", "again"),  # the same content twice in one batch
    ]
    results = gallery.enroller.enrol_many(photos)
    assert [r.status for r in results] == [
        ItemStatus.ENROLLED,
        ItemStatus.UNREADABLE,
        ItemStatus.ENROLLED,
        ItemStatus.DUPLICATE,
    ]
    engine = make_engine(f"sqlite:///{tmp_path / 'single.db'}")
    from identify.gallery import migrate

    migrate.upgrade(str(engine.url))
    single = Enroller(
        GalleryStore.for_encoder(engine, encoder), encoder, keep="none", masked_templates=False
    )
    for subject, path, _ in photos[::2]:
        single.enrol(subject, path)
    for result, subject_id in ((results[0], 1), (results[2], 2)):
        assert gallery.store.template(result.subject_id) == pytest.approx(
            single.store.template(subject_id), abs=1e-4
        )
    engine.dispose()


def test_a_photo_that_killed_its_worker_too_often_ends_failed(gallery, folder):
    job_id = create_job(gallery.store, folder)
    with gallery.store.sessions() as session, session.begin():
        first = session.scalars(select(JobItem).where(JobItem.job_id == job_id)).first()
        first.attempts = 3  # three workers died on it
    progress = run(gallery, job_id)
    assert progress.status == JobStatus.DONE and progress.counts["failed"] == 1
    assert progress.to_json()["failed"][0]["reason"] == (
        "failed after 3 attempts: the worker stopped while processing it"
    )


def test_progress_is_a_json_report_with_rate_and_reasons(gallery, folder):
    job_id = create_job(
        gallery.store, [("s1", folder / "s1" / "1.pgm"), ("s1", folder / "s1" / "3.jpg")]
    )
    report = run(gallery, job_id).to_json()
    assert report["id"] == job_id and report["status"] == "done" and report["kind"] == "folder"
    assert (report["total"], report["done"], report["eta_s"]) == (2, 2, 0.0)
    assert report["rate_per_s"] > 0 and report["started_at"] <= report["finished_at"]
    [bad] = report["failed"]
    assert bad["status"] == "unreadable" and bad["subject"] == "s1" and bad["reason"]


def test_a_cancelled_job_is_not_run(gallery, folder):
    job_id = create_job(gallery.store, folder)
    uploads = gallery.enroller.settings.uploads_dir
    assert cancel_job(gallery.store, job_id, uploads=uploads)
    progress = run(gallery, job_id)
    assert progress.status == JobStatus.CANCELLED and progress.done == 0
    assert not cancel_job(gallery.store, job_id, uploads=uploads)  # already over


def _all_enrolled(gallery: Served, job_id: int) -> None:
    with gallery.store.sessions() as session, session.begin():
        session.execute(
            update(JobItem).where(JobItem.job_id == job_id).values(status=ItemStatus.ENROLLED)
        )


def test_progress_is_published_only_while_the_job_runs(gallery, folder):
    job_id = create_job(gallery.store, folder)
    published = []
    assert not publish_running(gallery.store, job_id, published.append)  # queued
    assert start_job(gallery.store, job_id, task_id="t-1")
    assert publish_running(gallery.store, job_id, published.append)
    _all_enrolled(gallery, job_id)
    assert finish_job(gallery.store, job_id)
    assert not publish_running(gallery.store, job_id, published.append)  # done
    [running] = published
    assert (running.status, running.task_id, running.done) == (JobStatus.RUNNING, "t-1", 0)


def test_a_job_cannot_finish_while_its_progress_is_being_published(gallery, database_url, folder):
    """A worker's PROGRESS must never land after the SUCCESS of the worker finishing the job:
    finish_job waits until the report being published is out."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite galleries have one writing process (the embedded mode)")
    job_id = create_job(gallery.store, folder)
    start_job(gallery.store, job_id)
    _all_enrolled(gallery, job_id)
    inside, release, events = threading.Event(), threading.Event(), []

    def slow_publish(progress) -> None:
        inside.set()
        release.wait(60)
        events.append(("published", progress.status))

    publisher = threading.Thread(target=publish_running, args=(gallery.store, job_id, slow_publish))
    publisher.start()
    assert inside.wait(60)
    finisher = threading.Thread(
        target=lambda: events.append(("finished", finish_job(gallery.store, job_id)))
    )
    finisher.start()
    finisher.join(1.0)
    assert finisher.is_alive(), "finish_job did not wait for the report being published"
    release.set()
    publisher.join(60)
    finisher.join(60)
    assert events == [("published", JobStatus.RUNNING), ("finished", True)]
