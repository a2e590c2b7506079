"""`cqaface worker`, `cqaface enrol SOURCE` and `cqaface job show|list|cancel`. Handlers
import their heavy modules lazily: `cqaface --help` loads neither torch nor Celery."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from identify.integers import argument, id_argument

if TYPE_CHECKING:
    from identify.settings import Settings


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("worker", help="start a Celery worker (needs CQAFACE_BROKER_URL)")
    p.add_argument(
        "--concurrency",
        type=argument("--concurrency", minimum=1),
        help="processes (CQAFACE_WORKER_CONCURRENCY)",
    )
    p.add_argument("--loglevel", default="INFO")
    p.set_defaults(handler=worker)

    p = commands.add_parser(
        "enrol", help="enrol a folder, a zip or a list of photos as a job, with a progress bar"
    )
    p.add_argument(
        "source",
        type=Path,
        help="a folder SUBJECT/PHOTO, a .zip of the same, or a .csv/.jsonl of subject,path",
    )
    p.add_argument("--detach", action="store_true", help="print the job id and return")
    p.add_argument(
        "--min-quality",
        type=_min_quality,
        help="this job's minimum face quality, 0 to 1 (default: CQAFACE_ENROL_MIN_QUALITY)",
    )
    p.set_defaults(handler=enrol)

    job = commands.add_parser("job", help="enrolment jobs")
    job_commands = job.add_subparsers(dest="job_command", required=True, metavar="ACTION")
    p = job_commands.add_parser("show", help="a job's progress (JSON)")
    p.add_argument("job_id", type=id_argument("job_id"))
    p.set_defaults(handler=job_show)
    p = job_commands.add_parser("list", help="the latest jobs (JSON lines)")
    p.add_argument("--limit", type=argument("--limit", minimum=1), default=20)
    p.set_defaults(handler=job_list)
    p = job_commands.add_parser("cancel", help="cancel a queued or running job")
    p.add_argument("job_id", type=id_argument("job_id"))
    p.set_defaults(handler=job_cancel)


def _min_quality(text: str) -> float:
    from identify.settings import min_quality

    try:
        return min_quality(float(text), "--min-quality")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 0 to 1") from None


def _app(settings: Settings) -> Any:
    from identify.app import create_app
    from identify.gallery import migrate

    app = create_app(settings=settings)
    if migrate.current(app.extensions["cqaface"].engine) is None:
        raise ValueError("the database has no gallery tables yet: run `cqaface db upgrade`")
    return app


def worker(args: argparse.Namespace) -> int:
    from workers.celery_app import check_broker

    settings: Settings = args.settings
    if settings.broker_url is None:
        print("cqaface worker: no broker: set CQAFACE_BROKER_URL (redis://...)", file=sys.stderr)
        return 2
    concurrency = args.concurrency or settings.worker_concurrency
    app = _app(dataclasses.replace(settings, worker_concurrency=concurrency))
    check_broker(app.extensions["celery"])  # then a broker restart is waited for, for ever
    app.extensions["cqaface"].engine.dispose()  # no connection of ours goes into the forks
    threading.Thread(target=_watchdog, args=(app,), name="watchdog", daemon=True).start()
    app.extensions["celery"].worker_main(
        [
            "worker",
            f"--concurrency={concurrency}",
            "--pool=prefork",
            f"--queues={settings.queue}",
            f"--loglevel={args.loglevel}",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )
    return 0


def _watchdog(app: Any) -> None:
    """Dispatch again the jobs whose tasks were lost (see redispatch_stalled), forever. Its own
    short-lived engine: the pool processes forked from this one must not share connections."""
    import logging

    from identify.gallery.db import make_engine
    from workers.enrolment import redispatch_stalled

    settings = app.extensions["cqaface"].settings
    period = max(2.0, settings.job_stall_seconds / 3)
    while True:
        time.sleep(period)
        engine = make_engine(settings.database_url)
        try:
            redispatch_stalled(app, engine)
        except Exception as error:  # the broker or the database away: try again later
            logging.getLogger(__name__).warning("watchdog: %s", error)
        finally:
            engine.dispose()


def enrol(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from identify.gallery import jobs
    from identify.gallery.sources import SourceError, make_job
    from workers import enrolment
    from workers.celery_app import check_broker

    app = _app(args.settings)
    held = app.extensions["cqaface"]
    engine, broker = held.engine, held.settings.broker_url
    if args.detach and not broker:
        print(
            "cqaface enrol: --detach needs a broker (CQAFACE_BROKER_URL): without one the job "
            "runs in this process and would stop with it",
            file=sys.stderr,
        )
        return 2
    if broker:
        check_broker(app.extensions["celery"])  # before a job that no task would run
    try:
        job = make_job(
            engine,
            args.source,
            settings=held.settings,
            restricted=False,
            name=str(args.source.resolve()),
            min_quality=args.min_quality,
        )
    except SourceError as error:
        print(f"cqaface enrol: {error.code}: {error.message}", file=sys.stderr)
        return 2
    job_id = job.id
    if args.detach:
        held.submit(job_id)
        print(json.dumps({"job_id": job_id, "total": job.items}))
        return 0
    bar = tqdm(total=job.items, unit="photo", file=sys.stderr, desc=f"job {job_id}")
    if broker:
        held.submit(job_id)
        while True:
            report = jobs.job_progress(engine, job_id)
            bar.update(report.done - bar.n)
            if report.status.value in ("done", "failed", "cancelled"):
                break
            time.sleep(0.5)
    else:
        with app.app_context():
            jobs.run_job(
                held.enroller,
                job_id,
                save_indexes=held.save_indexes,
                progress=lambda _: bar.update(1),
            )
    bar.close()
    report = enrolment.progress(engine, job_id)
    print(json.dumps(report))
    return 0 if report["status"] == "done" else 1


def job_show(args: argparse.Namespace) -> int:
    from workers.enrolment import progress

    print(json.dumps(progress(_app(args.settings).extensions["cqaface"].engine, args.job_id)))
    return 0


def job_list(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from identify.gallery.tables import EnrolmentJob
    from workers.enrolment import progress

    engine = _app(args.settings).extensions["cqaface"].engine
    from identify.gallery.db import session_factory

    with session_factory(engine)() as session:
        ids = session.scalars(
            select(EnrolmentJob.id).order_by(EnrolmentJob.id.desc()).limit(args.limit)
        ).all()
    for job_id in ids:
        report = progress(engine, job_id)
        report.pop("failed")
        print(json.dumps(report))
    return 0


def job_cancel(args: argparse.Namespace) -> int:
    from workers.enrolment import cancel

    cancelled = cancel(args.job_id, _app(args.settings).extensions["cqaface"])
    print(json.dumps({"job_id": args.job_id, "cancelled": cancelled}))
    return 0
