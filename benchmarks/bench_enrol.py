"""Bulk enrolment throughput by photo size and detector: photos/s of detect+align+embed alone
in one process (one photo at a time, and batched as the workers do), next to the same photos
enrolled as a job in that process (the embedded mode: job rows -> database rows and
templates), as a zip through the HTTP API of `cqaface serve` in the embedded mode (no broker:
a thread of the server runs the job), and through the full path (job rows -> Redis queue ->
worker processes -> database -> saved index) with 1 and 2 worker processes. (Peak memory by
photo size is measured by `profile_detect.py`, a fresh process per size: a long-lived worker
keeps what one job mapped for the next.)

Photo sizes (--sizes): celeba photos as they are (about 190 px), and the same photos placed
in 1 MP and 12 MP canvases (`large_photos.py`: the face at the same relative size, JPEG q90).
Every set-up runs once per size and configuration (--configs), all in the same interleaved
rounds, so that ratios are measured side by side. A configuration is `NAME:VAR=VALUE,...`
(CQAFACE_* settings; a variable another configuration sets is unset in this one), or `torch`
/ `onnx` for CQAFACE_RUNTIME alone. The default compares the detectors: MTCNN and SCRFD (the
latter only where its file is, see CQAFACE_SCRFD_MODEL).

Where the time goes: after the rounds, one more in-process job per size and configuration
runs under cProfile, its CPU time split by stage (read, decode, detect, align, embed, the
database's duplicate check and face rows, the index save; the rest is the job's own rows).

The in-process job prices the database in the process that measures the standalone rate; the
worker figures also carry the difference between two processes running the same code, which
on this shared machine has reached 15-20% (a forked and a freshly started process measured
17.0 and 14.4 photos/s side by side on 2026-11-29; on 2026-12-04 a forked and a fresh one ran
within 3% of the measuring process, 67.3 and 67.8 against 69.6).

Model loading is kept out of every figure (each worker and the server first run a warm-up
job), and the set-ups are timed in interleaved rounds on the same photos (the machine's load
drifts; the medians are reported). Masked templates are off (CQAFACE_MASKED_TEMPLATES=0) so
that both sides embed each face once. A job goes to the workers in tasks of the product's
default size (CQAFACE_ENROL_CHUNK, 50 photos; --chunk), each embedded 16 photos at a time
(CQAFACE_ENROL_BATCH), the standalone batch. A worker's clock stops when the job is marked
done in the database; the index file is saved after that, once per job, not per photo.

    .venv/bin/python benchmarks/bench_enrol.py --out var/bench-enrol.json [--sizes celeba 12mp]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the tests' server process and HTTP client

from server_process import cli, request, start_server  # noqa: E402

from benchmarks.large_photos import SIZES, canvas, jpeg  # noqa: E402

DATA = Path(os.environ.get("CQAFACE_SHARED_DATA", ROOT.parent / "shared" / "data"))
ADMIN_URL = os.environ.get("CQAFACE_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1/test")
REDIS = os.environ.get("CQAFACE_BENCH_REDIS", "redis://127.0.0.1:6379/0")
BATCH = 16  # photos embedded at once: the workers' default (CQAFACE_ENROL_BATCH)
DETECTORS = ["mtcnn:CQAFACE_DETECTOR=mtcnn", "scrfd:CQAFACE_DETECTOR=scrfd"]


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


def default_configs() -> list[str]:
    """The detectors: MTCNN, and SCRFD where its file is."""
    from embedder import settings

    if settings.scrfd_model().is_file():
        return DETECTORS
    print(f"no SCRFD: {settings.scrfd_model()} is absent; MTCNN only", flush=True)
    return DETECTORS[:1]


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
    from identify.search.encode import FaceEncoder

    encoder = FaceEncoder.load(None)
    _, faces = encoder.read(first.read_bytes(), "largest", gallery=True)
    encoder.encode(faces, "no")  # warm
    return encoder


def standalone(encoder, items: list[tuple[str, Path]], batch: int) -> float:
    """photos/s of read + decode + detect + align + embed in this process."""
    from embedder.errors import FaceInputError

    start = time.perf_counter()
    for k in range(0, len(items), batch):
        faces = []
        for _, path in items[k : k + batch]:
            with suppress(FaceInputError):  # no usable face: counted, as in the full path
                faces += encoder.read(path.read_bytes(), "largest", gallery=True)[1]
        encoder.encode(faces, "no")
    return len(items) / (time.perf_counter() - start)


class FullPath:
    """A gallery database of its own, a queue of its own, and ``workers`` worker processes
    that have loaded the model; :meth:`rate` times one job from submit to done. With no
    worker (``encoder`` given), the job runs in this process, as in the embedded mode: the
    database's cost measured in the very process that measures the standalone rate. With
    ``http``, `cqaface serve` in the embedded mode (no broker) is sent each job as a zip
    through the API and runs it in a thread of its own process."""

    def __init__(
        self,
        workers: int,
        config: dict[str, str | None],
        chunk: int,
        encoder: object = None,
        *,
        http: bool = False,
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
            "CQAFACE_BROKER_URL": "" if http else REDIS,
            "CQAFACE_QUEUE": f"cqaface-bench-{uuid.uuid4().hex[:8]}",
            "CQAFACE_DATA_DIR": str(tmp),
            "CQAFACE_MASKED_TEMPLATES": "0",
            "CQAFACE_WORKER_CONCURRENCY": str(workers),
            "CQAFACE_ENROL_CHUNK": str(chunk),
        }
        if http:  # this process only reads the job's rows; the server runs it
            with environment(self.env):
                migrate.upgrade(url)
                self.app = create_app()
        else:
            os.environ.update(self.env)  # this app's queue and database
            migrate.upgrade(url)
            self.app = create_app()
        self.engine = self.app.extensions["cqaface"].engine
        self.encoder = encoder
        child_env = {
            **{k: v for k, v in os.environ.items() if k not in config},
            **{k: v for k, v in config.items() if v is not None},
            **self.env,
        }
        self.worker = self.server = None
        if http:
            child_env.update(CQAFACE_SECRET_KEY=uuid.uuid4().hex, CQAFACE_RATE_LIMIT="0")
            name = f"bench-{uuid.uuid4().hex[:6]}"
            self.key = cli(child_env, "apikey", "create", "--name", name, "--scopes", "enrol")
            self.key = self.key.strip()
            self.server, self.base = start_server(child_env, tmp)
        elif encoder is None:
            self.worker = subprocess.Popen(
                [str(Path(sys.executable).parent / "cqaface"), "worker", "--loglevel", "WARNING"],
                env=child_env,
                cwd=ROOT,
                start_new_session=True,
                stdout=open(tmp / "worker.log", "wb"),  # noqa: SIM115
                stderr=subprocess.STDOUT,
            )

    def rate(self, items: list[tuple[str, Path]]) -> float:
        """photos/s from submit to the moment the job was marked done, as the database
        recorded it: the poll can then be slow (4 Hz) and still not blur the figure, and it
        takes no CPU from the worker being measured."""
        from workers import enrolment

        if self.server is not None:
            start, job_id = datetime.now(UTC), self._post_zip(items)
        else:
            job_id = enrolment.create_job(self.engine, items, source="bench", kind="files")
            if self.encoder is not None:
                return len(items) / self._run_here(job_id)
            start = datetime.now(UTC)
            enrolment.submit(job_id, self.app)
        while (finished := self.finished_at(job_id)) is None:
            time.sleep(0.25)
        return len(items) / (finished - start).total_seconds()

    def _post_zip(self, items: list[tuple[str, Path]]) -> int:
        """Send ``items`` to the server as one zip (a folder per subject): the job's id."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # JPEGs: no gain
            for subject, path in items:
                archive.write(path, f"{subject}/{path.name}")
        status, body = request(
            "POST",
            f"{self.base}/api/v1/enrolments",
            key=self.key,
            files={"archive": ("bench.zip", buffer.getvalue())},
        )
        if status != 202 or not isinstance(body, dict):
            raise RuntimeError(f"POST /api/v1/enrolments: {status} {body}")
        return int(body["id"])

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
        if self.server is not None:
            self.server.stop()
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
    ("HTTP API: a zip -> `cqaface serve` (embedded) -> DB -> index", "http_zip_embedded"),
    ("full path: queue -> 1 worker process -> DB -> index", "full_path_1"),
    ("full path: queue -> 2 worker processes -> DB -> index", "full_path_2"),
)
STACKS = {"in_process_job": 0, "http_zip_embedded": "http", "full_path_1": 1, "full_path_2": 2}


def measure(encoder, stacks: dict, part: list[tuple[str, Path]]) -> dict[str, float]:
    """One round of the set-ups of one configuration on the same photos, photos/s each."""
    rates = {
        "standalone_one_by_one": standalone(encoder, part, 1),
        "standalone_batched_16": standalone(encoder, part, BATCH),
    }
    for key, stack in STACKS.items():
        rates[key] = stacks[stack].rate(part)
    return rates


# Where the in-process job's time goes: functions that do not call one another, by stage.
STAGES = {
    "read": ("identify/gallery/enroller.py", "_read"),
    "decode": ("embedder/faces.py", "decode_for"),
    "detect": ("embedder/faces.py", "detect_photo"),
    "align (finer decode included)": ("embedder/faces.py", "align_faces"),
    "embed": ("identify/search/encode.py", "encode"),
    "db: duplicates": ("identify/gallery/store.py", "known"),
    "db: store faces": ("identify/gallery/store.py", "add_images"),
    "index: save": ("identify/search/live_index.py", "open"),
}


def stages(stack: FullPath, part: list[tuple[str, Path]]) -> dict[str, float]:
    """CPU milliseconds per photo (this process's, all threads: on a machine whose cores other
    jobs hold, waiting is not cost) of each stage of one in-process job under cProfile (its
    overhead included), the rest being the job's own rows."""
    from workers import enrolment

    job_id = enrolment.create_job(stack.engine, part, source="bench", kind="files")
    profiler = cProfile.Profile(time.process_time)
    start = time.process_time()
    profiler.enable()
    stack._run_here(job_id)
    profiler.disable()
    seconds = time.process_time() - start
    table = pstats.Stats(profiler, stream=io.StringIO()).stats  # type: ignore[attr-defined]
    out = {
        stage: sum(
            row[3] for (path, _, name), row in table.items() if path.endswith(file) and name == fn
        )
        for stage, (file, fn) in STAGES.items()
    }
    out["job rows and the rest"] = seconds - sum(out.values())
    out["total"] = seconds
    return {stage: round(1000 * value / len(part), 1) for stage, value in out.items()}


def summary(rates: dict) -> dict:
    """Medians per configuration, photo size and set-up; the queue+DB overheads; each
    configuration's speed-up over the first one at the same size, as the median of the
    rounds' ratios (both measured in the same round)."""

    def ratio_median(a: list[float], b: list[float]) -> float:
        return round(statistics.median(x / y for x, y in zip(a, b, strict=True)), 3)

    figures: dict[str, dict] = {}
    first = next(iter(rates))
    for name, by_size in rates.items():
        figures[name] = {}
        for size, series in by_size.items():
            standalone = series["standalone_batched_16"]
            mine = figures[name][size] = {
                "photos_per_s": {k: round(statistics.median(v), 2) for k, v in series.items()},
                "spread": {k: [round(min(v), 2), round(max(v), 2)] for k, v in series.items()},
                "overhead_in_process_median": ratio_median(standalone, series["in_process_job"])
                - 1,
                "overhead_1_worker_median": ratio_median(standalone, series["full_path_1"]) - 1,
            }
            if name != first:
                mine[f"over_{first}"] = {
                    key: ratio_median(v, rates[first][size][key]) for key, v in series.items()
                }
    return figures


def report(figures: dict, photos: int, rounds: int) -> None:
    print(f"{photos} photos a size in {rounds} interleaved rounds, median photos/s")
    columns = [(name, size) for name in figures for size in figures[name]]
    print(f"  {'':62s} " + " ".join(f"{name + ' ' + size:>20s}" for name, size in columns))
    for label, key in SETUPS:
        cells = " ".join(f"{figures[n][z]['photos_per_s'][key]:20.2f}" for n, z in columns)
        print(f"  {label:62s} {cells}")
    for name, size in columns:
        mine = figures[name][size]
        print(
            f"  {name} {size}: queue + DB overhead (1 worker)"
            f" {mine['overhead_1_worker_median']:+.1%},"
            f" DB in process {mine['overhead_in_process_median']:+.1%}"
        )
        for other, ratios in mine.items():
            if other.startswith("over_"):
                print(
                    f"  {name} {size} {other.replace('_', ' ')}: "
                    + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items())
                )


def at_size(items: list[tuple[str, Path]], size: str, folder: Path) -> list[tuple[str, Path]]:
    """``items`` as they are (``celeba``), or each placed in a canvas of ``size``
    (`large_photos.py`) and written as a JPEG."""
    if size == "celeba":
        return items
    from embedder.imageio import load_image

    placed = []
    for subject, path in items:
        target = folder / size / subject / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(jpeg(canvas(load_image(path), SIZES[size])[0]))
        placed.append((subject, target))
    return placed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=96, help="photos a size, all rounds")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--configs", nargs="+", help="default: MTCNN and SCRFD (if its file is)")
    parser.add_argument(
        "--sizes", nargs="+", default=["celeba", "1mp", "12mp"], choices=["celeba", *SIZES]
    )
    parser.add_argument("--chunk", type=int, help="photos per task (default: the product's)")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench-enrol.json")
    args = parser.parse_args()
    from identify.settings import Settings

    chunk = args.chunk or Settings.from_env().enrol_chunk
    os.environ["CQAFACE_MASKED_TEMPLATES"] = "0"
    part_size = args.photos // args.rounds
    chosen = photos(part_size * (args.rounds + 1))  # the last part: the profiled job
    folder = Path(tempfile.mkdtemp(prefix="bench-enrol-photos-"))
    warmup = [(f"warmup-{p.parent.name}", p) for p in sorted((DATA / "orl").glob("s[1-5]/*"))]
    configs = parse_configs(args.configs or default_configs())
    encoders, stacks = {}, {}
    load_before = os.getloadavg()
    try:
        sets = {size: at_size(chosen, size, folder) for size in args.sizes}
        for name, config in configs.items():
            with environment(config):
                encoders[name] = load_encoder(chosen[0][1])
                stacks[name] = {
                    0: FullPath(0, config, chunk, encoders[name]),
                    1: FullPath(1, config, chunk),
                    2: FullPath(2, config, chunk),
                    "http": FullPath(0, config, chunk, http=True),
                }
                for stack in stacks[name].values():
                    stack.rate(warmup)  # each process loads the model (and exports it once)
        rates = {n: {z: {k: [] for _, k in SETUPS} for z in sets} for n in configs}
        for r in range(args.rounds):  # interleaved: the machine's load drifts
            for size, items in sets.items():
                part = items[r * part_size : (r + 1) * part_size]
                for name, config in configs.items():
                    with environment(config):
                        for key, rate in measure(encoders[name], stacks[name], part).items():
                            rates[name][size][key].append(rate)
                    print(
                        f"round {r + 1} {size} {name}: "
                        + ", ".join(f"{k} {v[-1]:.2f}" for k, v in rates[name][size].items()),
                        flush=True,
                    )
        profiled = {
            name: {
                size: stages(stacks[name][0], items[-part_size:]) for size, items in sets.items()
            }
            for name in configs
        }
    finally:
        for config_stacks in stacks.values():
            for stack in config_stacks.values():
                stack.close()
        shutil.rmtree(folder, ignore_errors=True)
    figures = summary(rates)
    report(figures, part_size * args.rounds, args.rounds)
    print("CPU ms a photo by stage (one in-process job under cProfile):")
    print(json.dumps(profiled, indent=1))
    result = {
        "photos_per_size": part_size * args.rounds,
        "rounds": args.rounds,
        "sizes": {size: list(SIZES.get(size, ())) or "as is" for size in args.sizes},
        "chunk": chunk,
        "batch": BATCH,
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "configs": {name: {k: v for k, v in c.items() if v} for name, c in configs.items()},
        "figures": figures,
        "stages_clock": "CPU time of the measuring process (all threads)",
        "stages_ms_per_photo": profiled,
        "per_round": rates,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
