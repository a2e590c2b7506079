"""Bulk enrolment throughput: photos/s of detect+align+embed alone in one process (one photo
at a time, and batched as the workers do), next to the same photos enrolled as a job in that
process (the embedded mode: job rows -> database rows and templates) and through the full path
(job rows -> Redis queue -> worker processes -> database -> saved index) with 1 and 2 worker
processes. The target: the queue and the database add at most 15% to the standalone cost.

The in-process job prices the database in the process that measures the standalone rate; the
worker figures also carry the difference between two processes running the same code, which
on this shared machine alone reaches 15-20% (a forked and a freshly started process measured
17.0 and 14.4 photos/s side by side).

Model loading is kept out of every figure (each worker first runs a warm-up job), and the five
set-ups are timed in interleaved rounds on the same photos (the machine's load drifts; the
medians are reported). Masked templates are off (CQAFACE_MASKED_TEMPLATES=0) so that both sides
embed each face once. A job goes in chunks of 16 photos, the standalone batch, and a round is
6 chunks (96 photos; 10 rounds by default), so that 2 processes share it evenly. A worker's
clock stops when the job is marked done in the database; the index file is saved after that,
once per job, not per photo.

    .venv/bin/python benchmarks/bench_enrol.py --out var/bench-enrol.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("CQAFACE_SHARED_DATA", ROOT.parent / "shared" / "data"))
ADMIN_URL = os.environ.get("CQAFACE_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1/test")
REDIS = os.environ.get("CQAFACE_BENCH_REDIS", "redis://127.0.0.1:6379/0")
CHUNK = 16  # photos per task: the standalone batch


def photos(n: int) -> list[tuple[str, Path]]:
    chosen = []
    for folder in sorted((DATA / "celeba-photos").iterdir()):
        chosen += [(folder.name, p) for p in sorted(folder.glob("*.jpg"))]
        if len(chosen) >= n:
            return chosen[:n]
    return chosen


def load_encoder(first: Path):
    from embedder.imageio import load_image
    from embedder.inference import Embedder
    from identify.search.encode import FaceEncoder

    encoder = FaceEncoder(Embedder.load(None))
    encoder.encode(encoder.faces(load_image(first.read_bytes()), "largest"), "no")  # warm
    return encoder


def standalone(encoder, items: list[tuple[str, Path]], batch: int) -> float:
    """photos/s of read + decode + detect + align + embed in this process."""
    from embedder.errors import FaceInputError
    from embedder.imageio import load_image

    start = time.perf_counter()
    for k in range(0, len(items), batch):
        faces = []
        for _, path in items[k : k + batch]:
            with suppress(FaceInputError):  # no usable face: counted, as in the full path
                faces += encoder.faces(load_image(path.read_bytes()), "largest")
        encoder.encode(faces, "no")
    return len(items) / (time.perf_counter() - start)


class FullPath:
    """A gallery database of its own, a queue of its own, and ``workers`` worker processes
    that have loaded the model; :meth:`rate` times one job from submit to done. With no
    worker (``encoder`` given), the job runs in this process, as in the embedded mode: the
    database's cost measured in the very process that measures the standalone rate."""

    def __init__(self, workers: int, encoder: object = None) -> None:
        from sqlalchemy import create_engine, text

        from identify.gallery import migrate
        from identify.web.factory import create_app

        self.admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
        self.name = f"cqaface_bench_{uuid.uuid4().hex[:10]}"
        with self.admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{self.name}"'))
        url = self.admin.url.set(database=self.name).render_as_string(hide_password=False)
        tmp = Path(tempfile.mkdtemp(prefix="bench-enrol-"))
        self.env = {
            "CQAFACE_DATABASE_URL": url,
            "CQAFACE_BROKER_URL": REDIS,
            "CQAFACE_QUEUE": f"cqaface-bench-{uuid.uuid4().hex[:8]}",
            "CQAFACE_DATA_DIR": str(tmp),
            "CQAFACE_MASKED_TEMPLATES": "0",
            "CQAFACE_WORKER_CONCURRENCY": str(workers),
            "CQAFACE_ENROL_CHUNK": str(CHUNK),
        }
        os.environ.update(self.env)  # this app's queue and database
        migrate.upgrade(url)
        self.app = create_app()
        self.engine = self.app.extensions["cqaface"].engine
        self.encoder = encoder
        self.worker = (
            None
            if encoder is not None
            else subprocess.Popen(
                [str(Path(sys.executable).parent / "cqaface"), "worker", "--loglevel", "WARNING"],
                env={**os.environ, **self.env},
                cwd=ROOT,
                start_new_session=True,
                stdout=open(tmp / "worker.log", "wb"),  # noqa: SIM115
                stderr=subprocess.STDOUT,
            )
        )

    def rate(self, items: list[tuple[str, Path]]) -> float:
        """photos/s from submit to the moment the job was marked done, as the database
        recorded it: the poll can then be slow (4 Hz) and still not blur the figure, and it
        takes no CPU from the worker being measured."""
        from workers import enrolment

        job_id = enrolment.create_job(self.engine, items, source="bench", kind="files")
        if self.encoder is not None:
            return len(items) / self._run_here(job_id)
        start = datetime.now(UTC)
        enrolment.submit(job_id, self.app)
        while (finished := self.finished_at(job_id)) is None:
            time.sleep(0.25)
        return len(items) / (finished - start).total_seconds()

    def _run_here(self, job_id: int) -> float:
        from identify.gallery import jobs
        from identify.gallery.enrolment import Gallery

        gallery = Gallery.for_encoder(
            self.engine, self.encoder, index_dir=Path(self.env["CQAFACE_DATA_DIR"])
        )
        start = time.perf_counter()
        jobs.run_job(gallery, job_id)
        return time.perf_counter() - start

    def finished_at(self, job_id: int) -> datetime | None:
        from sqlalchemy import select

        from identify.gallery.tables import EnrolmentJob, JobStatus

        with self.engine.connect() as connection:
            status, finished = connection.execute(
                select(EnrolmentJob.status, EnrolmentJob.finished_at).where(
                    EnrolmentJob.id == job_id
                )
            ).one()
        if status == JobStatus.FAILED:
            raise RuntimeError(f"enrolment job {job_id} failed")
        if status != JobStatus.DONE:
            return None
        return finished if finished.tzinfo else finished.replace(tzinfo=UTC)

    def close(self) -> None:
        import redis
        from sqlalchemy import text

        if self.worker is not None:
            os.killpg(self.worker.pid, signal.SIGTERM)
            self.worker.wait(60)
        self.engine.dispose()
        with self.admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self.admin.dispose()
        client = redis.Redis.from_url(REDIS)
        keys = list(client.scan_iter(f"{self.env['CQAFACE_QUEUE']}:*"))
        if keys:
            client.delete(*keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=960)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench-enrol.json")
    args = parser.parse_args()
    os.environ["CQAFACE_MASKED_TEMPLATES"] = "0"
    items = photos(args.photos)
    warmup = [(f"warmup-{p.parent.name}", p) for p in sorted((DATA / "orl").glob("s[1-5]/*"))]
    encoder = load_encoder(items[0][1])
    stacks = {0: FullPath(0, encoder), 1: FullPath(1), 2: FullPath(2)}
    keys = (
        "standalone_one_by_one",
        "standalone_batched_16",
        "in_process_job",
        "full_path_1",
        "full_path_2",
    )
    rates: dict[str, list[float]] = {key: [] for key in keys}
    try:
        for stack in stacks.values():
            stack.rate(warmup)  # each process loads the model
        size = len(items) // args.rounds
        for r in range(args.rounds):  # interleaved: the machine's load drifts
            part = items[r * size : (r + 1) * size]
            rates["standalone_one_by_one"].append(standalone(encoder, part, 1))
            rates["standalone_batched_16"].append(standalone(encoder, part, CHUNK))
            rates["in_process_job"].append(stacks[0].rate(part))
            rates["full_path_1"].append(stacks[1].rate(part))
            rates["full_path_2"].append(stacks[2].rate(part))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in rates.items()))
    finally:
        for stack in stacks.values():
            stack.close()
    figures: dict[str, object] = {
        "photos": size * args.rounds,
        "rounds": args.rounds,
        "chunk": CHUNK,
        "photos_per_s": {key: statistics.median(v) for key, v in rates.items()},
        "per_round": rates,
    }

    def overhead(key: str) -> float:
        pairs = zip(rates["standalone_batched_16"], rates[key], strict=True)
        return statistics.median(s / f - 1 for s, f in pairs)

    figures["overhead_in_process_median"] = overhead("in_process_job")
    figures["overhead_1_worker_median"] = overhead("full_path_1")
    rows = [
        ("standalone detect+align+embed, one photo at a time", "standalone_one_by_one"),
        ("standalone detect+align+embed, embedding batched by 16", "standalone_batched_16"),
        ("job in this process -> DB -> index (embedded mode)", "in_process_job"),
        ("full path: queue -> 1 worker process -> DB -> index", "full_path_1"),
        ("full path: queue -> 2 worker processes -> DB -> index", "full_path_2"),
    ]
    print(f"{figures['photos']} celeba photos in {args.rounds} interleaved rounds, median photos/s")
    for label, key in rows:
        print(f"  {label:58s} {figures['photos_per_s'][key]:7.2f}")
    print(
        "  overhead against the batched standalone rate (median of the rounds' ratios):\n"
        f"    DB, same process (in-process job)   {figures['overhead_in_process_median']:+.1%}\n"
        f"    queue + DB (1 worker process)       {figures['overhead_1_worker_median']:+.1%}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
