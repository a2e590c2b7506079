"""Bulk enrolment throughput: photos/s of detect+align+embed alone in one process (one photo
at a time, and batched as the workers do), next to the full path (job rows -> Redis queue ->
worker processes -> database rows and templates -> saved index) with 1 and 2 worker
processes. The target: the queue and the database add at most 15% to the standalone cost.

Model loading is kept out of every figure: each worker first runs a warm-up job. Masked
templates are off (CQAFACE_MASKED_TEMPLATES=0) so that both sides embed each face once.

    .venv/bin/python benchmarks/bench_enrol.py --out var/bench-enrol.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import suppress
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("CQAFACE_SHARED_DATA", ROOT.parent / "shared" / "data"))
ADMIN_URL = os.environ.get("CQAFACE_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1/test")
REDIS = os.environ.get("CQAFACE_BENCH_REDIS", "redis://127.0.0.1:6379/0")


def photos(n: int) -> list[tuple[str, Path]]:
    chosen = []
    for folder in sorted((DATA / "celeba-photos").iterdir()):
        chosen += [(folder.name, p) for p in sorted(folder.glob("*.jpg"))]
        if len(chosen) >= n:
            return chosen[:n]
    return chosen


def standalone(items: list[tuple[str, Path]], batch: int) -> float:
    """photos/s of read + decode + detect + align + embed in this process."""
    from embedder.errors import FaceInputError
    from embedder.imageio import load_image
    from embedder.inference import Embedder
    from identify.encode import FaceEncoder

    encoder = FaceEncoder(Embedder.load(None))
    encoder.encode(encoder.faces(load_image(items[0][1].read_bytes()), "largest"), "no")
    start = time.perf_counter()
    for k in range(0, len(items), batch):
        faces = []
        for _, path in items[k : k + batch]:
            with suppress(FaceInputError):  # no usable face: counted, as in the full path
                faces += encoder.faces(load_image(path.read_bytes()), "largest")
        encoder.encode(faces, "no")
    return len(items) / (time.perf_counter() - start)


def full_path(items: list[tuple[str, Path]], warmup: list[tuple[str, Path]], workers: int) -> float:
    """photos/s from submitting a job to its end (done, index saved), with ``workers``
    worker processes that have already loaded the model."""
    from sqlalchemy import create_engine, text

    from identify import migrate
    from identify.app import create_app
    from workers import enrolment

    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"cqaface_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    tmp = Path(tempfile.mkdtemp(prefix="bench-enrol-"))
    env = {
        "CQAFACE_DATABASE_URL": url,
        "CQAFACE_BROKER_URL": REDIS,
        "CQAFACE_QUEUE": f"cqaface-bench-{uuid.uuid4().hex[:8]}",
        "CQAFACE_DATA_DIR": str(tmp),
        "CQAFACE_MASKED_TEMPLATES": "0",
        "CQAFACE_WORKER_CONCURRENCY": str(workers),
        "CQAFACE_ENROL_CHUNK": "25",  # the warm-up's 50 photos: one chunk per process
    }
    os.environ.update(env)
    worker = None
    try:
        migrate.upgrade(url)
        app = create_app()
        engine = app.extensions["cqaface"].engine
        worker = subprocess.Popen(
            [str(Path(sys.executable).parent / "cqaface"), "worker", "--loglevel", "WARNING"],
            env={**os.environ, **env},
            cwd=ROOT,
            start_new_session=True,
            stdout=open(tmp / "worker.log", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )

        def run(job_items: list[tuple[str, Path]]) -> float:
            job_id = enrolment.create_job(engine, job_items, source="bench", kind="files")
            start = time.perf_counter()
            enrolment.submit(job_id, app)
            while enrolment.progress(engine, job_id)["status"] not in ("done", "failed"):
                time.sleep(0.05)
            return time.perf_counter() - start

        run(warmup)  # each process loads the model
        return len(items) / run(items)
    finally:
        if worker is not None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(60)
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        import redis

        client = redis.Redis.from_url(REDIS)
        keys = list(client.scan_iter(f"{env['CQAFACE_QUEUE']}:*"))
        if keys:
            client.delete(*keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench-enrol.json")
    args = parser.parse_args()
    os.environ["CQAFACE_MASKED_TEMPLATES"] = "0"
    items = photos(args.photos)
    warmup = [(f"warmup-{p.parent.name}", p) for p in sorted((DATA / "orl").glob("s[1-5]/*"))]
    figures = {
        "photos": len(items),
        "standalone_one_by_one": standalone(items, 1),
        "standalone_batched_16": standalone(items, 16),
        "full_path_1_worker": full_path(items, warmup, 1),
        "full_path_2_workers": full_path(items, warmup, 2),
    }
    figures["overhead_1_worker"] = (
        figures["standalone_batched_16"] / figures["full_path_1_worker"] - 1
    )
    rows = [
        ("standalone detect+align+embed, one photo at a time", "standalone_one_by_one"),
        ("standalone detect+align+embed, embedding batched by 16", "standalone_batched_16"),
        ("full path: queue -> 1 worker process -> DB -> index", "full_path_1_worker"),
        ("full path: queue -> 2 worker processes -> DB -> index", "full_path_2_workers"),
    ]
    print(f"{len(items)} celeba photos, photos/s")
    for label, key in rows:
        print(f"  {label:58s} {figures[key]:7.2f}")
    overhead = figures["overhead_1_worker"]
    print(f"  queue + DB overhead, 1 worker vs batched standalone: {overhead:+.1%}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
