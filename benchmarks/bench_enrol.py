"""Bulk enrolment throughput: photos/s of detect+align+embed alone in one process (one photo
at a time, and batched as the workers do), next to the same photos enrolled as a job in that
process (the embedded mode: job rows -> database rows and templates) and through the full path
(job rows -> Redis queue -> worker processes -> database -> saved index) with 1 and 2 worker
processes. The target: the queue and the database add at most 15% to the standalone cost.

Every set-up runs once per configuration named by --configs, all in the same interleaved
rounds, so that the speed-up of issue #18 (>= 1.5x the photos/s of the PyTorch eager path on
the same two cores) is a ratio measured side by side. A configuration is `NAME:VAR=VALUE,...`
(CQAFACE_* settings; a variable another configuration sets is unset in this one), or `torch` /
`onnx` for CQAFACE_RUNTIME alone. The default compares the path before issue #18's detector
changes (PyTorch eager, every gallery face from 20 px: `before`) with the current defaults
(`default`).

The in-process job prices the database in the process that measures the standalone rate; the
worker figures also carry the difference between two processes running the same code, which
on this shared machine has reached 15-20% (a forked and a freshly started process measured
17.0 and 14.4 photos/s side by side on 2026-11-29; on 2026-12-04 a forked and a fresh one ran
within 3% of the measuring process, 67.3 and 67.8 against 69.6).

Model loading is kept out of every figure (each worker first runs a warm-up job), and the five
set-ups are timed in interleaved rounds on the same photos (the machine's load drifts; the
medians are reported). Masked templates are off (CQAFACE_MASKED_TEMPLATES=0) so that both sides
embed each face once. A job goes to the workers in tasks of the product's default size
(CQAFACE_ENROL_CHUNK, 50 photos; --chunk), each embedded 16 photos at a time
(CQAFACE_ENROL_BATCH), the standalone batch; a round is 96 photos by default (10 rounds),
which 2 processes share as a task each. A worker's clock stops when the job is marked done
in the database; the index file is saved after that, once per job, not per photo.

    .venv/bin/python benchmarks/bench_enrol.py --out var/bench-enrol.json [--configs torch onnx]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("CQAFACE_SHARED_DATA", ROOT.parent / "shared" / "data"))
ADMIN_URL = os.environ.get("CQAFACE_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1/test")
REDIS = os.environ.get("CQAFACE_BENCH_REDIS", "redis://127.0.0.1:6379/0")
BATCH = 16  # photos embedded at once: the workers' default (CQAFACE_ENROL_BATCH)
BEFORE = "before:CQAFACE_RUNTIME=torch,CQAFACE_ENROL_MIN_FACE_SIZE=20"


def parse_configs(specs: list[str]) -> dict[str, dict[str, str | None]]:
    """NAME -> the environment it runs in: its own variables, the others' unset."""
    configs: dict[str, dict[str, str]] = {}
    for spec in specs:
        name, _, assignments = spec.partition(":")
        if name in ("torch", "onnx") and not assignments:
            assignments = f"CQAFACE_RUNTIME={name}"
        pairs = [item.split("=", 1) for item in assignments.split(",") if item]
        if any(len(pair) != 2 or not pair[0].startswith("CQAFACE_") for pair in pairs):
            raise SystemExit(f"--configs {spec!r}: expected NAME:CQAFACE_VAR=VALUE,...")
        configs[name] = dict(pairs)
    names = {var for config in configs.values() for var in config}
    return {name: {var: config.get(var) for var in names} for name, config in configs.items()}


@contextmanager
def environment(values: dict[str, str | None]) -> Iterator[None]:
    """This process's environment with ``values`` set (None: unset), restored after."""
    saved = {var: os.environ.get(var) for var in values}

    def apply(mapping: dict[str, str | None]) -> None:
        for var, value in mapping.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value

    apply(values)
    try:
        yield
    finally:
        apply(saved)


def photos(n: int) -> list[tuple[str, Path]]:
    chosen = []
    for folder in sorted((DATA / "celeba-photos").iterdir()):
        chosen += [(folder.name, p) for p in sorted(folder.glob("*.jpg"))]
        if len(chosen) >= n:
            return chosen[:n]
    return chosen


def load_encoder(first: Path):
    """The serving encoder of this environment, warmed up (its detector is made on first
    use)."""
    from embedder.imageio import load_image
    from identify.search.encode import FaceEncoder

    encoder = FaceEncoder.load(None)
    faces = encoder.faces(load_image(first.read_bytes()), "largest", gallery=True)
    encoder.encode(faces, "no")  # warm
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
                faces += encoder.faces(load_image(path.read_bytes()), "largest", gallery=True)
        encoder.encode(faces, "no")
    return len(items) / (time.perf_counter() - start)


class FullPath:
    """A gallery database of its own, a queue of its own, and ``workers`` worker processes
    that have loaded the model; :meth:`rate` times one job from submit to done. With no
    worker (``encoder`` given), the job runs in this process, as in the embedded mode: the
    database's cost measured in the very process that measures the standalone rate."""

    def __init__(
        self, workers: int, config: dict[str, str | None], chunk: int, encoder: object = None
    ):
        from sqlalchemy import create_engine, text

        from identify.app import create_app
        from identify.gallery import migrate

        self.admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
        self.name = f"cqaface_bench_{uuid.uuid4().hex[:10]}"
        with self.admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{self.name}"'))
        url = self.admin.url.set(database=self.name).render_as_string(hide_password=False)
        tmp = self.tmp = Path(tempfile.mkdtemp(prefix="bench-enrol-"))
        self.env = {
            "CQAFACE_DATABASE_URL": url,
            "CQAFACE_BROKER_URL": REDIS,
            "CQAFACE_QUEUE": f"cqaface-bench-{uuid.uuid4().hex[:8]}",
            "CQAFACE_DATA_DIR": str(tmp),
            "CQAFACE_MASKED_TEMPLATES": "0",
            "CQAFACE_WORKER_CONCURRENCY": str(workers),
            "CQAFACE_ENROL_CHUNK": str(chunk),
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
                env={
                    **{k: v for k, v in os.environ.items() if k not in config},
                    **{k: v for k, v in config.items() if v is not None},
                    **self.env,
                },
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
        from identify.gallery.enroller import Enroller
        from identify.gallery.store import GalleryStore
        from identify.search.live_index import LiveIndex

        store = GalleryStore.for_encoder(self.engine, self.encoder)
        files = LiveIndex(
            self.engine,
            model_version=store.model_version,
            dim=store.dim,
            index_dir=Path(self.env["CQAFACE_DATA_DIR"]),
        )
        start = time.perf_counter()
        settings = self.app.extensions["cqaface"].settings
        enroller = Enroller(store, self.encoder, settings=settings)
        jobs.run_job(enroller, job_id, save_indexes=files.open)
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
        shutil.rmtree(self.tmp, ignore_errors=True)  # its data dir, index and worker log
        client = redis.Redis.from_url(REDIS)
        keys = list(client.scan_iter(f"{self.env['CQAFACE_QUEUE']}:*"))
        if keys:
            client.delete(*keys)


SETUPS = (
    ("standalone detect+align+embed, one photo at a time", "standalone_one_by_one"),
    ("standalone detect+align+embed, embedding batched by 16", "standalone_batched_16"),
    ("job in this process -> DB -> index (embedded mode)", "in_process_job"),
    ("full path: queue -> 1 worker process -> DB -> index", "full_path_1"),
    ("full path: queue -> 2 worker processes -> DB -> index", "full_path_2"),
)


def measure(encoder, stacks: dict[int, FullPath], part: list[tuple[str, Path]]) -> dict:
    """One round of the five set-ups of one configuration on the same photos, photos/s
    each."""
    return {
        "standalone_one_by_one": standalone(encoder, part, 1),
        "standalone_batched_16": standalone(encoder, part, BATCH),
        "in_process_job": stacks[0].rate(part),
        "full_path_1": stacks[1].rate(part),
        "full_path_2": stacks[2].rate(part),
    }


def summary(rates: dict[str, dict[str, list[float]]]) -> dict:
    """Medians per configuration and set-up; the queue+DB overheads; each configuration's
    speed-up over the first one, as the median of the rounds' ratios (both measured in the
    same round)."""

    def ratio_median(a: list[float], b: list[float]) -> float:
        return round(statistics.median(x / y for x, y in zip(a, b, strict=True)), 3)

    figures: dict[str, dict] = {}
    first = next(iter(rates))
    for name, series in rates.items():
        standalone = series["standalone_batched_16"]
        figures[name] = {
            "photos_per_s": {key: round(statistics.median(v), 2) for key, v in series.items()},
            "spread": {key: [round(min(v), 2), round(max(v), 2)] for key, v in series.items()},
            "overhead_in_process_median": ratio_median(standalone, series["in_process_job"]) - 1,
            "overhead_1_worker_median": ratio_median(standalone, series["full_path_1"]) - 1,
        }
        if name != first:
            figures[name][f"over_{first}"] = {
                key: ratio_median(v, rates[first][key]) for key, v in series.items()
            }
    return figures


def report(figures: dict, photos: int, rounds: int) -> None:
    print(f"{photos} celeba photos in {rounds} interleaved rounds, median photos/s")
    names = list(figures)
    print(f"  {'':58s} " + " ".join(f"{name:>8s}" for name in names))
    for label, key in SETUPS:
        cells = " ".join(f"{figures[n]['photos_per_s'][key]:8.2f}" for n in names)
        print(f"  {label:58s} {cells}")
    for name in names:
        mine = figures[name]
        print(
            f"  {name}: queue + DB overhead (1 worker) {mine['overhead_1_worker_median']:+.1%},"
            f" DB in process {mine['overhead_in_process_median']:+.1%}"
        )
        for other, ratios in figures[name].items():
            if other.startswith("over_"):
                print(
                    f"  {name} {other.replace('_', ' ')}: "
                    + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items())
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=960)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--configs", nargs="+", default=[BEFORE, "default:"])
    parser.add_argument("--chunk", type=int, help="photos per task (default: the product's)")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench-enrol.json")
    args = parser.parse_args()
    from identify.settings import Settings

    chunk = args.chunk or Settings.from_env().enrol_chunk
    os.environ["CQAFACE_MASKED_TEMPLATES"] = "0"
    items = photos(args.photos)
    warmup = [(f"warmup-{p.parent.name}", p) for p in sorted((DATA / "orl").glob("s[1-5]/*"))]
    configs = parse_configs(args.configs)
    encoders, stacks = {}, {}
    try:
        for name, config in configs.items():
            with environment(config):
                encoders[name] = load_encoder(items[0][1])
                stacks[name] = {
                    0: FullPath(0, config, chunk, encoders[name]),
                    1: FullPath(1, config, chunk),
                    2: FullPath(2, config, chunk),
                }
                for stack in stacks[name].values():
                    stack.rate(warmup)  # each process loads the model (and exports it once)
        rates = {name: {key: [] for _, key in SETUPS} for name in configs}
        size = len(items) // args.rounds
        for r in range(args.rounds):  # interleaved: the machine's load drifts
            part = items[r * size : (r + 1) * size]
            for name, config in configs.items():
                with environment(config):
                    for key, rate in measure(encoders[name], stacks[name], part).items():
                        rates[name][key].append(rate)
            print(
                f"round {r + 1}: "
                + "; ".join(
                    f"{name} " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in rates[name].items())
                    for name in configs
                ),
                flush=True,
            )
    finally:
        for config_stacks in stacks.values():
            for stack in config_stacks.values():
                stack.close()
    figures = summary(rates)
    report(figures, size * args.rounds, args.rounds)
    result = {
        "photos": size * args.rounds,
        "rounds": args.rounds,
        "chunk": chunk,
        "batch": BATCH,
        "configs": {name: args.configs[i] for i, name in enumerate(configs)},
        "figures": figures,
        "per_round": rates,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
