"""End to end over HTTP: `cqaface serve` and `cqaface worker` as real processes with PostgreSQL
and Redis. ORL photos 1-5 of all 40 subjects are enrolled as a zip through the API, the worker
runs the job, and the held-back photos 6-10 are identified; a face from outside the gallery
must come back unknown."""

from __future__ import annotations

import io
import time
import zipfile

import pytest
from server_process import (
    CQAFACE,
    REDIS_URL,
    Process,
    cli,
    request,
    require_redis,
    stack_env,
    start_server,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(postgres_database, tmp_path_factory):
    from identify.gallery import migrate

    require_redis()
    tmp = tmp_path_factory.mktemp("stack")
    url = postgres_database()
    migrate.upgrade(url)
    env = stack_env(url, tmp)
    key = cli(env, "apikey", "create", "--name", "e2e", "--scopes", "identify,enrol,admin").strip()
    worker = Process([*CQAFACE, "worker"], env, tmp / "worker.log")
    server, base = start_server(env, tmp)
    yield base, key, worker, server
    server.stop()
    worker.stop()
    _remove_redis_keys(env["CQAFACE_QUEUE"])


def _remove_redis_keys(queue: str) -> None:
    """This run's broker and result keys only (all carry its queue's unique prefix)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    for name in client.scan_iter(match=f"{queue}:*", count=1000):
        client.delete(name)


def _orl_zip(orl_dir, photos) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for folder in sorted(p for p in orl_dir.iterdir() if p.is_dir()):
            for i in photos:
                archive.write(folder / f"{i}.pgm", f"{folder.name}/{i}.pgm")
    return out.getvalue()


def test_enrol_orl_by_zip_then_identify_held_back_photos(stack, orl_dir, celeba_photos_dir):
    base, key, worker, _ = stack
    status, body = request("GET", f"{base}/api/v1/subjects", key="cqf_x_wrong")
    assert status == 401 and body["error"]["code"] == "unauthorized"

    started = time.monotonic()
    status, body = request(
        "POST",
        f"{base}/api/v1/enrolments",
        key=key,
        files={"archive": ("orl.zip", _orl_zip(orl_dir, range(1, 6)))},
    )
    assert status == 202, body
    job_id = body["id"]
    seen_running = False
    while True:
        status, job = request("GET", f"{base}/api/v1/jobs/{job_id}", key=key)
        assert status == 200, job
        seen_running |= job["status"] == "running"
        if job["status"] not in ("queued", "running"):
            break
        assert time.monotonic() - started < 900, f"job stuck: {job}\n{worker.tail()}"
        assert worker.alive(), worker.tail()
        time.sleep(1)
    enrol_s = time.monotonic() - started
    if job.get("task_id"):  # its result key carries no queue prefix: remove it here
        __import__("redis").Redis.from_url(REDIS_URL).delete(f"celery-task-meta-{job['task_id']}")
    assert job["status"] == "done", (job, worker.tail())
    assert job["total"] == 200 and job["done"] == 200
    assert job["counts"].get("enrolled", 0) >= 195, job["counts"]
    print(f"\nenrolled {job['counts']} in {enrol_s:.1f} s ({job.get('rate_per_s')} photos/s)")

    status, subjects = request("GET", f"{base}/api/v1/subjects?per_page=100", key=key)
    ids = {s["name"]: s["id"] for s in subjects["items"]}
    assert len(ids) == 40

    hits = accepted = correct_accepts = 0
    started = time.monotonic()
    probes = [(name, i) for name in sorted(ids) for i in range(6, 11)]
    for name, i in probes:
        status, body = request(
            "POST",
            f"{base}/api/v1/identify",
            key=key,
            files={"image": (f"{i}.pgm", (orl_dir / name / f"{i}.pgm").read_bytes())},
            fields={"k": "5", "mask": "no"},
        )
        assert status == 200, body
        face = body["faces"][0]
        hits += face["matches"][0]["subject_id"] == ids[name]
        if face["decision"] != "unknown":
            accepted += 1
            correct_accepts += face["decision"]["subject_id"] == ids[name]
    rank1 = hits / len(probes)
    print(
        f"Rank-1 {rank1:.3f} over {len(probes)} probes ({time.monotonic() - started:.1f} s); "
        f"accepted at the threshold {accepted}, of which correct {correct_accepts}"
    )
    assert rank1 >= 0.7

    stranger = sorted(
        next(d for d in sorted(celeba_photos_dir.iterdir()) if d.is_dir()).glob("*.jpg")
    )[0]
    status, body = request(
        "POST",
        f"{base}/api/v1/identify",
        key=key,
        files={"image": (stranger.name, stranger.read_bytes())},
    )
    assert status == 200, body
    assert body["faces"] and all(face["decision"] == "unknown" for face in body["faces"]), body

    status, health = request("GET", f"{base}/api/v1/health")
    assert status == 200 and health["redis"]["ok"] and health["database"]["ok"]
    assert health["index"]["templates"] == 40
    status, metrics = request("GET", f"{base}/api/v1/metrics", key=key)
    assert status == 200 and "cqaface_gallery_subjects 40" in metrics
    assert "cqaface_queue_depth 0" in metrics
    status, log = request("GET", f"{base}/api/v1/audit?action=identify&per_page=500", key=key)
    assert log["total"] == len(probes) + 1
