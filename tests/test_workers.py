"""Bulk enrolment through real Celery workers on Redis and a PostgreSQL gallery: a job of the
whole ORL set completes with progress readable throughout; a worker killed with SIGKILL
mid-job and Redis stopped and restarted mid-job both leave every photo enrolled exactly once;
bad photos end with their reasons without stopping the job.

Each test works in a Redis key space and queue of its own (CQAFACE_QUEUE prefixes every
broker key), so runs sharing the Redis server never meet; the Redis that is restarted is one
this test starts on a free port.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import func, select
from web_helpers import make_app

from identify.app import create_app
from identify.gallery import migrate
from identify.gallery.db import make_engine, session_factory
from identify.gallery.sources import folder_items
from identify.gallery.tables import Face, Image, JobItem, Template
from identify.settings import Settings
from workers import enrolment

ROOT = Path(__file__).resolve().parents[1]
CQAFACE = Path(sys.executable).parent / "cqaface"
SHARED_REDIS = os.environ.get("CQAFACE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
DEADLINE_S = 420  # generous: the machine is shared and slow tests must not be flaky


def _redis_up(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=2).ping())
    except redis.RedisError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """A gallery database, a broker, and worker processes started and killed at will."""

    def __init__(self, database_url: str, broker: str, tmp: Path) -> None:
        self.database_url = database_url
        self.broker = broker
        self.tmp = tmp
        self.env = {
            "CQAFACE_DATABASE_URL": database_url,
            "CQAFACE_BROKER_URL": broker,
            "CQAFACE_QUEUE": f"cqaface-test-{uuid.uuid4().hex[:10]}",
            "CQAFACE_DATA_DIR": str(tmp / "data"),
            "CQAFACE_INDEX_DIR": str(tmp / "data" / "index"),
            "CQAFACE_MASKED_TEMPLATES": "0",
            "CQAFACE_KEEP": "none",
            "CQAFACE_ENROL_CHUNK": "10",
            "CQAFACE_ENROL_BATCH": "8",
            "CQAFACE_VISIBILITY_TIMEOUT": "15",
            "CQAFACE_JOB_STALL_S": "15",
            "CQAFACE_TASK_RETRIES": "20",
            "CQAFACE_MAX_PHOTO_BYTES": "200000",
        }
        self.engine = make_engine(database_url)
        self.workers: list[subprocess.Popen] = []

    def app(self):
        """This process's app: it makes the tasks, on the workers' queue and keys."""
        return create_app(settings=Settings.from_env(self.env))

    def start_worker(self, concurrency: int) -> subprocess.Popen:
        env = {**os.environ, **self.env, "CQAFACE_WORKER_CONCURRENCY": str(concurrency)}
        log = open(self.tmp / f"worker-{len(self.workers)}.log", "wb")  # noqa: SIM115
        worker = subprocess.Popen(
            [str(CQAFACE), "worker", "--loglevel", "INFO"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: SIGKILL takes the pool too
        )
        self.workers.append(worker)
        return worker

    def kill(self, worker: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        with suppress(ProcessLookupError):
            os.killpg(worker.pid, sig)
        worker.wait(60)

    def enrol(self, items: list[tuple[str, Path]]) -> int:
        job_id = enrolment.create_job(self.engine, items, source="test", kind="files")
        enrolment.submit(job_id, self.app())
        return job_id

    def progress(self, job_id: int) -> dict:
        return enrolment.progress(self.engine, job_id)

    def wait(self, job_id: int, until: Callable[[dict], bool] | None = None, *, seen=None) -> dict:
        until = until or (lambda report: report["status"] in ("done", "failed", "cancelled"))
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            report = self.progress(job_id)
            if seen is not None:
                seen.append(report)
            if until(report):
                return report
            for worker in self.workers:
                if worker.poll() not in (None, -signal.SIGKILL, -signal.SIGTERM, 0):
                    pytest.fail(f"a worker exited with {worker.returncode}: {self.logs()}")
            time.sleep(0.5)
        pytest.fail(f"job {job_id} not there after {DEADLINE_S} s: {report}\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in self.tmp.glob("*.log"))

    def count(self, model) -> int:
        with session_factory(self.engine)() as session:
            return session.scalar(select(func.count()).select_from(model))

    def close(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                self.kill(worker)
        self.engine.dispose()
        if _redis_up(self.broker):
            import redis

            client = redis.Redis.from_url(self.broker)
            keys = list(client.scan_iter(f"{self.env['CQAFACE_QUEUE']}:*"))
            if keys:
                client.delete(*keys)


@contextmanager
def stack(postgres_database, tmp: Path, broker: str = SHARED_REDIS) -> Iterator[Stack]:
    if not _redis_up(broker):
        pytest.skip(f"no Redis at {broker}")
    url = postgres_database()
    migrate.upgrade(url)
    result = Stack(url, broker, tmp)
    try:
        yield result
    finally:
        result.close()


@pytest.fixture(scope="module")
def shared_stack(postgres_database, tmp_path_factory):
    """Two worker processes, shared by the tests that do not kill anything."""
    with stack(postgres_database, tmp_path_factory.mktemp("stack")) as running:
        running.start_worker(concurrency=2)
        yield running


def subset(orl_dir: Path, subjects: int) -> list[tuple[str, Path]]:
    return [(s, p) for s, p in folder_items(orl_dir, restricted=False)][: subjects * 10]


def assert_enrolled_exactly_once(s: Stack, job_id: int, total: int) -> None:
    report = s.progress(job_id)
    assert report["status"] == "done", report
    assert report["counts"] == {"enrolled": total}, report
    with session_factory(s.engine)() as session:
        images = session.scalars(select(JobItem.image_id).where(JobItem.job_id == job_id)).all()
        face_total = session.scalar(select(func.sum(Template.face_count)))
    assert len(set(images)) == total and None not in images
    assert s.count(Image) == s.count(Face) == total == face_total


@pytest.mark.slow
def test_a_worker_enrols_all_of_orl_with_progress_readable_throughout(shared_stack, orl_dir):
    from celery.result import AsyncResult

    items = folder_items(orl_dir, restricted=False)
    assert len(items) == 400
    job_id = shared_stack.enrol(items)
    task_id = shared_stack.progress(job_id)["task_id"]
    app = shared_stack.app()
    states = []

    def finished(report: dict) -> bool:
        states.append(AsyncResult(task_id, app=app.extensions["celery"]).state)
        return report["status"] == "done"

    seen: list[dict] = []
    report = shared_stack.wait(job_id, finished, seen=seen)
    assert report["counts"] == {"enrolled": 400} and report["done"] == report["total"] == 400
    assert report["rate_per_s"] > 0 and report["eta_s"] == 0.0
    assert any(0 < r["done"] < 400 and r["eta_s"] for r in seen), "no progress seen mid-job"
    assert "PROGRESS" in states
    # The database says done first; the worker that finished the job then saves the indexes
    # and only then stores SUCCESS, so a Celery client waits for it as for any task.
    final = AsyncResult(task_id, app=app.extensions["celery"])
    assert final.get(timeout=DEADLINE_S)["counts"] == {"enrolled": 400}
    assert final.state == "SUCCESS"
    # The worker saved the indexes: a process starting now loads them, 40 subjects.
    index_files = list(Path(shared_stack.env["CQAFACE_INDEX_DIR"]).glob("*normal*"))
    assert index_files
    with app.app_context():
        live = app.extensions["cqaface"].index
        assert len(live.index()) == 40
        assert all(o.how == "loaded" for o in live.open().values())


def _bad_photos(folder: Path, good: Path, celeba_photo: Path) -> dict[str, str]:
    """Photos that must each end with their status; returns name -> expected status."""
    person = folder / "bad"
    person.mkdir(parents=True)
    data = celeba_photo.read_bytes()
    (person / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (person / "text.jpg").write_text("this is not a photo\n")
    (person / "empty.jpg").write_bytes(b"")
    grey = io.BytesIO()
    PILImage.fromarray(np.full((160, 160, 3), 128, np.uint8)).save(grey, format="PNG")
    (person / "no-face.png").write_bytes(grey.getvalue())
    noise = np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)
    PILImage.fromarray(noise).save(person / "too-large.png")  # 270 KB > 200 KB
    shutil.copy(good, person / "copy-of-a-good-one.pgm")
    return {
        "truncated.jpg": "unreadable",
        "text.jpg": "unreadable",
        "empty.jpg": "unreadable",
        "no-face.png": "no_face",
        "too-large.png": "too_large",
        "copy-of-a-good-one.pgm": "duplicate",
    }


def test_bad_photos_end_with_their_reasons_and_do_not_stop_the_job(
    shared_stack, orl_dir, celeba_photos_dir, tmp_path
):
    good = sorted((orl_dir / "s1").glob("*.pgm"))[:3]
    celeba = next(iter(sorted(celeba_photos_dir.glob("*/*.jpg"))))
    expected = _bad_photos(tmp_path / "photos", good[0], celeba)
    # The good photos first, so that the copy is the duplicate whatever the order of work.
    job_id = shared_stack.enrol(
        [("s1", p) for p in good] + folder_items(tmp_path / "photos", restricted=False)
    )
    shared_stack.wait(job_id)
    report = shared_stack.progress(job_id)
    if report["counts"].get("enrolled", 0) < 3:  # ORL s1 may already be in from the ORL job
        assert report["counts"]["duplicate"] >= 1
    assert report["status"] == "done" and report["done"] == len(expected) + 3
    outcome = {Path(f["path"]).name: f for f in report["failed"]}
    for name, status in expected.items():
        assert outcome[name]["status"] == status, outcome[name]
        assert outcome[name]["reason"], name


@pytest.mark.slow
def test_a_worker_killed_mid_job_leaves_every_photo_enrolled_exactly_once(
    postgres_database, orl_dir, tmp_path
):
    items = subset(orl_dir, 8)
    with stack(postgres_database, tmp_path) as s:
        first = s.start_worker(concurrency=1)
        job_id = s.enrol(items)
        s.wait(job_id, lambda r: r["done"] >= 25)
        s.kill(first)  # SIGKILL to the worker and its pool: tasks in flight are never acked
        assert s.progress(job_id)["status"] == "running"
        s.start_worker(concurrency=1)
        s.wait(job_id)
        assert_enrolled_exactly_once(s, job_id, len(items))


@pytest.mark.slow
def test_redis_stopped_and_restarted_mid_job_the_job_completes(
    postgres_database, orl_dir, tmp_path
):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed")
    port = _free_port()
    command = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"]

    def start_redis() -> subprocess.Popen:
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, cwd=tmp_path)
        deadline = time.monotonic() + 30
        while not _redis_up(f"redis://127.0.0.1:{port}/0"):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.1)
        return server

    redis_server = start_redis()
    try:
        items = subset(orl_dir, 8)
        with stack(postgres_database, tmp_path, f"redis://127.0.0.1:{port}/0") as s:
            s.start_worker(concurrency=1)
            job_id = s.enrol(items)
            s.wait(job_id, lambda r: r["done"] >= 20)
            redis_server.terminate()  # nothing saved: the queued tasks are lost with it
            redis_server.wait(30)
            time.sleep(3)
            redis_server = start_redis()
            s.wait(job_id)
            assert_enrolled_exactly_once(s, job_id, len(items))
    finally:
        redis_server.kill()
        redis_server.wait(30)


def test_the_celery_app_is_configured_for_safe_at_least_once_delivery(tmp_path):
    from workers.celery_app import TASKS, celery_config

    env = {
        "CQAFACE_DATA_DIR": str(tmp_path),
        "CQAFACE_QUEUE": "site-a",
        "CQAFACE_VISIBILITY_TIMEOUT": "7200",
        "CQAFACE_BROKER_URL": "redis://127.0.0.1:6379/0",
        "CQAFACE_TASK_RETRIES": "5",
    }
    settings = Settings.from_env(env)
    config = celery_config(settings)
    assert config["task_acks_late"] and config["task_reject_on_worker_lost"]
    assert config["worker_prefetch_multiplier"] == 1 and config["accept_content"] == ["json"]
    assert config["result_backend"] == "redis://127.0.0.1:6379/0"
    assert config["broker_transport_options"] == {
        "visibility_timeout": 7200,
        "global_keyprefix": "site-a:",
    }
    assert config["broker_transport_options"]["visibility_timeout"] > config["task_time_limit"]
    assert config["task_default_queue"] == "site-a" and not config["task_always_eager"]
    assert config["task_annotations"] == {name: {"max_retries": 5} for name in TASKS}
    assert celery_config(Settings.from_env({}))["task_always_eager"]  # no broker: in-process
    backend = Settings.from_env({**env, "CQAFACE_RESULT_BACKEND": "redis://127.0.0.1:6379/5"})
    app = create_app(settings=backend)
    assert app.extensions["celery"].conf.result_backend == "redis://127.0.0.1:6379/5"
    celery = app.extensions["celery"]
    assert {name: celery.tasks[name].max_retries for name in TASKS} == dict.fromkeys(TASKS, 5)


def test_a_forked_worker_process_drops_the_database_connections_it_inherited(tmp_path):
    from celery.signals import worker_process_init

    app = make_app(f"sqlite:///{tmp_path / 'a.db'}", tmp_path)
    engine = app.extensions["cqaface"].engine
    inherited = engine.pool
    worker_process_init.send(sender=None)
    assert engine.pool is not inherited


def test_an_app_that_is_dropped_is_freed_with_its_database_connections(tmp_path):
    """A process that makes apps one after another (tests, a long-lived tool) must not keep
    every one of them, each with its connection pool, to the end."""
    import gc
    import weakref

    dropped = weakref.ref(make_app(f"sqlite:///{tmp_path / 'a.db'}", tmp_path))
    # The newest app's Celery app is the process's default, and held as such.
    kept = make_app(f"sqlite:///{tmp_path / 'b.db'}", tmp_path)
    gc.collect()
    assert dropped() is None and kept.extensions["cqaface"]


def test_cli_enrol_through_the_workers_waits_or_detaches(shared_stack, orl_dir, tmp_path):
    folder = tmp_path / "photos"
    for person in ("s39", "s40"):
        shutil.copytree(orl_dir / person, folder / person)
    env = {**os.environ, **shared_stack.env}

    def cqaface(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(CQAFACE), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
        )

    out = cqaface("enrol", "--detach", str(folder / "s39"))  # photos, not subject folders
    assert out.returncode == 2 and "empty_source" in out.stderr
    out = cqaface("enrol", "--detach", str(folder))
    assert out.returncode == 0, out.stderr
    job_id = json.loads(out.stdout)["job_id"]
    report = shared_stack.wait(job_id)
    assert report["total"] == 20 and report["status"] == "done"
    shown = json.loads(cqaface("job", "show", str(job_id)).stdout)
    assert shown["counts"] == report["counts"]
    out = cqaface("enrol", str(folder))  # the same photos again, waiting with a progress bar
    assert out.returncode == 0, out.stderr
    again = json.loads(out.stdout.strip().splitlines()[-1])
    assert again["status"] == "done" and again["counts"] == {"duplicate": 20}
    assert "20/20" in out.stderr


def test_a_job_goes_to_the_queue_of_its_own_app_whichever_app_came_last(tmp_path):
    """Tests and servers make several apps, and Celery's current app is the last one made: a
    job is sent by the Celery app of the app that made it, under the kept task name."""
    import redis

    if not _redis_up(SHARED_REDIS):
        pytest.skip(f"no Redis at {SHARED_REDIS}")
    url = f"sqlite:///{tmp_path / 'gallery.db'}"
    migrate.upgrade(url)
    queues = [f"cqaface-test-{uuid.uuid4().hex[:10]}" for _ in range(2)]
    first, last = (
        create_app(
            settings=Settings.from_env(
                {
                    "CQAFACE_DATABASE_URL": url,
                    "CQAFACE_BROKER_URL": SHARED_REDIS,
                    "CQAFACE_QUEUE": queue,
                    "CQAFACE_DATA_DIR": str(tmp_path / queue),
                }
            )
        )
        for queue in queues
    )
    engine = first.extensions["cqaface"].engine
    job_id = enrolment.create_job(engine, [("ada", tmp_path / "1.jpg")], source="t", kind="files")
    client = redis.Redis.from_url(SHARED_REDIS)
    try:
        enrolment.submit(job_id, first)
        [message] = client.lrange(f"{queues[0]}:{queues[0]}", 0, -1)
        headers = json.loads(message)["headers"]
        assert (headers["task"], headers["argsrepr"]) == ("cqaface.enrol_job", f"({job_id},)")
        assert headers["id"] == enrolment.progress(engine, job_id)["task_id"]
        assert list(client.scan_iter(f"{queues[1]}:*")) == []
    finally:
        for queue in queues:
            keys = list(client.scan_iter(f"{queue}:*"))
            if keys:
                client.delete(*keys)
        engine.dispose()
        last.extensions["cqaface"].engine.dispose()
