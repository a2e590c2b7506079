"""Identification settings: one typed, frozen object read once from the CQAFACE_* environment
variables when a process starts (the web app's factory, a worker, a CLI command), then handed
to the services, the gallery, the searcher and Celery. A bad value fails at start-up, in one
line naming the variable, instead of at the first request that reads it.

One place for every knob of the gallery, the index and the search, so that the embedded default
(a SQLite file, in-process tasks, faiss-cpu) and the full stack (PostgreSQL, Redis, GPU) differ
by configuration only. Tests build their own: ``Settings.from_env({...})`` or
``dataclasses.replace(settings, ...)``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

KeepPolicy = Literal["crops", "images", "none"]
MaskFusion = Literal["normal", "masked", "max", "mean"]
KEEP_POLICIES: tuple[KeepPolicy, ...] = ("crops", "images", "none")
MASK_FUSIONS: tuple[MaskFusion, ...] = ("normal", "masked", "max", "mean")


class _Env:
    """The CQAFACE_* variables of one mapping, parsed with the errors every setting shares."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def get(self, name: str) -> str | None:
        value = self.environ.get(name)
        return value if value not in (None, "") else None

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> Any:
        value = self.get(name) or default
        if value not in choices:
            raise ValueError(f"{name}={value!r}: expected one of {', '.join(choices)}")
        return value

    def number(self, name: str, default: float, kind: type = float) -> Any:
        """A finite number: NaN would pass no comparison (a limit that never trips), and
        int() alone also reads "1_000" and other scripts' digits."""
        value = self.get(name)
        if value is None:
            return default
        try:
            if kind is int and not re.fullmatch(r"\s*[+-]?[0-9]+\s*", value):
                raise ValueError
            number = kind(value)
        except ValueError:
            raise ValueError(f"{name}={value!r} is not a {kind.__name__}") from None
        if not math.isfinite(number):
            raise ValueError(f"{name}={value!r} is not a finite number")
        return number

    def integer(self, name: str, default: int) -> int:
        return int(self.number(name, default, int))

    def count(self, name: str, default: int) -> int:
        """An integer of at least 1 (a smaller one means 1)."""
        return max(1, self.integer(name, default))


SUPPORTED_DATABASES = (
    "sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DATABASE "
    "(postgresql+psycopg:// and postgresql+psycopg2:// are the same: psycopg 3 drives both)"
)
# One PostgreSQL driver, psycopg 3: the scheme users copy from SQLAlchemy's docs names
# psycopg2, which is not installed; both spellings, and the bare one, mean psycopg 3 here.
_DRIVERS = {
    "sqlite": "sqlite",
    "sqlite+pysqlite": "sqlite+pysqlite",
    "postgresql": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
    "postgresql+psycopg2": "postgresql+psycopg",
}


def supported_url(url: str) -> str:
    """``url`` with its PostgreSQL driver mapped to psycopg 3, or a ValueError that says which
    URLs are supported (never echoing a password) instead of a driver's import traceback."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        scheme = make_url(url).drivername
    except ArgumentError:
        raise ValueError(
            f"CQAFACE_DATABASE_URL is not a database URL: use {SUPPORTED_DATABASES}"
        ) from None
    if scheme not in _DRIVERS:
        raise ValueError(
            f"CQAFACE_DATABASE_URL: unsupported database {scheme}://: use {SUPPORTED_DATABASES}"
        )
    return _DRIVERS[scheme] + url[url.index("://") :]


@dataclass(frozen=True)
class Settings:
    """Every CQAFACE_* setting of identification, the web server and the workers, with its
    default. ``Settings()`` is the defaults alone; ``Settings.from_env()`` what a process runs
    with. The model (CQAFACE_MODEL, CQAFACE_RUNTIME, ...) is the embedder's: embedder.settings."""

    data_dir: Path = field(default_factory=lambda: Path.cwd() / "var")
    """CQAFACE_DATA_DIR: where the embedded default keeps its database and index (./var)."""
    database_url: str = ""
    """CQAFACE_DATABASE_URL, else a SQLite file in the data directory; see supported_url."""
    index_dir: Path | None = None
    """CQAFACE_INDEX_DIR: persisted FAISS indexes (default: DATA_DIR/index)."""
    broker_url: str | None = None
    """CQAFACE_BROKER_URL: the Celery broker; unset means tasks run in-process."""

    # ----- the index and the search ---------------------------------------------------------
    index_exact_max: int = 30_000
    """CQAFACE_INDEX_EXACT_MAX: above this many templates the index is approximate.

    Exact search over 30K 512-d templates is about 3 ms per probe on two cores, 10 ms at 100K
    and 90 ms at 1M (linear); the approximate index stays under 5 ms at 1M with recall@1 0.9998
    against exact search on real face templates (var/bench-search.json)."""
    index_approximate: Literal["pq", "hnsw"] = "pq"
    """CQAFACE_INDEX_APPROX (pq|hnsw): the approximate index above CQAFACE_INDEX_EXACT_MAX.

    `pq`: a rotated (OPQ), product-quantised fast scan whose shortlist is re-scored exactly;
    `hnsw`: a graph. On real face templates at 100K the PQ scan reaches recall@1 1.0 in 0.5 ms
    where HNSW needs efSearch 512 and 5 ms for 0.998, and HNSW takes 20 minutes to build at 1M
    (var/bench-search.json)."""
    pq_shortlist: int = 300
    """CQAFACE_PQ_SHORTLIST: PQ candidates re-scored exactly per probe (more: better recall)."""
    pq_bytes: int = 32
    """CQAFACE_PQ_BYTES: bytes of PQ code a template (4-bit fast scan: two sub-quantisers a
    byte). At 1M real face templates, 16 bytes miss the best match for 1.7% of probes at a
    300-candidate shortlist, 32 bytes for 0.02% (var/bench-search.json)."""
    probe_threads: int = 1
    """CQAFACE_PROBE_THREADS: faiss threads for one probe's approximate search (default 1).

    A single probe's PQ scan takes a few ms; splitting it over threads saves little and, on a
    loaded machine, waiting for a descheduled thread costs a whole scheduler slice (the p50 rose
    from 0.1 to 8 ms at 100K templates in var/bench-search.json runs). Batches use every thread.
    """
    hnsw_m: int = 32
    """CQAFACE_HNSW_M: graph degree of the approximate index."""
    hnsw_ef_search: int = 64
    """CQAFACE_HNSW_EF_SEARCH: search breadth; higher is slower with better recall."""
    use_gpu: bool = True
    """CQAFACE_INDEX_GPU (auto|on|off): clone the index to a GPU when faiss sees one."""
    far: float = 1e-3
    """CQAFACE_FAR: the false-accept rate the open-set threshold is taken at (1e-3)."""
    threshold: float | None = None
    """CQAFACE_THRESHOLD: a cosine threshold that replaces the checkpoint's calibration (for a
    model without one, or a site's own calibration)."""
    masked_threshold: float | None = None
    """CQAFACE_MASKED_THRESHOLD: the same for masked probes."""
    mask_fusion: MaskFusion = "normal"
    """CQAFACE_MASK_FUSION: how a masked probe is scored. `normal` against the normal template
    only, `masked` against the masked template only, `max` or `mean` of both.

    `normal` is the default because the masked threshold is calibrated on masked probes
    against bare faces: only under `normal` does it hold the FAR it names. Measured on the
    shipped model (benchmarks/bench_mask_fusion.py, BENCHMARKS.md: 100 held-out celeba
    identities, 500 synthetic-masked probes), at the FAR 1e-3 threshold impostors pass at
    0.0012 under `normal`, 0.0042 under `mean`, 0.0116 under `masked` and `max`, while Rank-1
    differs by at most 4 probes (0.942 / 0.944 / 0.950 / 0.950)."""

    # ----- photos and enrolment -------------------------------------------------------------
    keep: KeepPolicy = "crops"
    """CQAFACE_KEEP (crops|images|none): what enrolment keeps so that `cqaface reembed` can
    re-embed for a new model: the aligned 112x112 crops (PNG, default, about 20 KB a face),
    the original photos (bigger, but a new aligner could use them), or nothing."""
    masked_templates: bool = True
    """CQAFACE_MASKED_TEMPLATES (1|0): also embed a synthetic-masked copy of every gallery
    face, giving each subject a masked template for masked probes (one more embedding a face)."""
    enrol_policy: Literal["largest", "single"] = "largest"
    """CQAFACE_ENROL_FACES (largest|single): a gallery photo showing several faces gives its
    largest face, or is refused (`several_faces`)."""
    enrol_mask: Literal["auto", "yes", "no"] = "no"
    """CQAFACE_ENROL_MASK (no|auto|yes): whether gallery photos count as masked. Default `no`:
    galleries are enrolled bare (masked probes meet an unmasked gallery), and the shipped mask
    classifier calls about one bare face in ten masked (more on grey photos), which would keep
    those photos out of the normal templates. `auto` trusts the classifier."""
    max_photo_bytes: int = 50 * 2**20
    """CQAFACE_MAX_PHOTO_BYTES: bigger uploads are refused (`too_large`) before being read."""
    min_face_size: int = 20
    """CQAFACE_MIN_FACE_SIZE: faces smaller than this (pixels) are not identified."""
    enrol_min_face_size: int = 40
    """CQAFACE_ENROL_MIN_FACE_SIZE: gallery faces smaller than this (pixels) are refused
    (`no_face`, with the size in the reason); CQAFACE_MIN_FACE_SIZE still applies if larger.
    A template is the face scaled to 112x112, so a gallery face under 40 px gives a poor one,
    and probes stay free to be small. Enrolment detects only faces this large, from the
    probes' own pyramid without its finer levels, so a face found both ways keeps its
    landmarks. `benchmarks/profile_detect.py` measures the time saved and the outcomes that
    change."""
    enrol_min_quality: float = 0.2
    """CQAFACE_ENROL_MIN_QUALITY (0 to 1): gallery faces whose quality (embedder.quality) is
    under this are refused (`low_quality`, the score and the minimum in the reason); 0 admits
    every face. Probes are never refused for quality. An enrolment job may set its own.
    DEFAULT_WHY"""
    import_roots: tuple[Path, ...] = ()
    """CQAFACE_IMPORT_ROOTS (paths separated by os.pathsep): the only server folders that a
    web or API user may import from. Unset: server-side folder imports are refused."""
    zip_max_members: int = 200_000
    """CQAFACE_ZIP_MAX_MEMBERS: members of an uploaded archive (more: refused, zip_bomb)."""
    zip_max_bytes: int = 20 * 2**30
    """CQAFACE_ZIP_MAX_BYTES: total uncompressed bytes of an uploaded archive (20 GiB)."""
    zip_max_ratio: float = 100.0
    """CQAFACE_ZIP_MAX_RATIO: a member above 1 MiB compressed more than this is a bomb (JPEG
    barely compresses; 100x is text or zeros)."""

    # ----- web server -----------------------------------------------------------------------
    secret_key: str | None = None
    """CQAFACE_SECRET_KEY: signs web sessions and CSRF tokens; see :meth:`signing_key`."""
    max_upload_bytes: int = 2 * 2**30
    """CQAFACE_MAX_UPLOAD_BYTES: the largest HTTP request body (a zip of gallery photos)."""
    host: str = "127.0.0.1"
    """CQAFACE_HOST: the address `cqaface serve` listens on (loopback unless told)."""
    port: int = 8000
    """CQAFACE_PORT: the port of `cqaface serve`."""
    rate_limit: int = 600
    """CQAFACE_RATE_LIMIT: API requests per minute per key (0: no limit); 429 beyond it."""
    secure_cookies: bool = False
    """CQAFACE_SECURE_COOKIES (0|1): session cookies only over HTTPS (set 1 behind TLS)."""
    password_link_hours: float = 72.0
    """CQAFACE_PASSWORD_LINK_HOURS: how long an invitation or password-reset link stays
    valid."""
    event_streams: int = 4
    """CQAFACE_EVENT_STREAMS: live job-progress streams this process serves at once (each holds
    a request thread); beyond them the page polls instead."""
    event_stream_seconds: float = 300.0
    """CQAFACE_EVENT_STREAM_S: a progress stream ends after this long and the browser opens a
    new one, signed in again (a user disabled meanwhile gets no more events)."""

    # ----- workers and bulk enrolment -------------------------------------------------------
    result_backend_url: str | None = None
    """CQAFACE_RESULT_BACKEND: where Celery keeps task states (PROGRESS); None: the broker."""
    queue: str = "cqaface"
    """CQAFACE_QUEUE: the Celery queue of enrolment tasks, also the prefix of the broker's
    Redis keys, so that several deployments (or test runs) can share one Redis server."""
    worker_concurrency: int = field(default_factory=lambda: os.cpu_count() or 1)
    """CQAFACE_WORKER_CONCURRENCY: worker processes of `cqaface worker` (default: the cores).
    Each process runs torch on one thread: processes scale better than threads here."""
    enrol_chunk: int = 50
    """CQAFACE_ENROL_CHUNK: photos per enrolment task (a job of 100,000 photos is 2,000
    tasks of 50): small enough to spread over workers and to redo cheaply after a crash."""
    enrol_batch: int = 16
    """CQAFACE_ENROL_BATCH: photos whose faces are embedded in one forward pass."""
    task_time_limit: int = 3600
    """CQAFACE_TASK_TIME_LIMIT: seconds after which a task's process is killed (one chunk)."""
    visibility_timeout: int = 6 * 3600
    """CQAFACE_VISIBILITY_TIMEOUT: seconds before Redis hands a task that a (dead) worker
    took but never acknowledged to another worker. Must exceed the longest task (default 6 h,
    against a 1 h task limit), or a slow task would run twice; short in tests."""
    task_retries: int = 8
    """CQAFACE_TASK_RETRIES: retries (exponential backoff) of a task that met a transient error
    (the database or Redis gone for a moment). Bad photos are never retried."""
    item_attempts: int = 3
    """CQAFACE_ITEM_ATTEMPTS: tries of one photo (a worker died on it, or an unexpected error)
    before it ends as `failed`: a photo that kills its worker cannot stall a job for ever."""
    job_stall_seconds: int = 300
    """CQAFACE_JOB_STALL_S: a running job with pending photos, no progress for this long and
    an empty queue is dispatched again by a worker (tasks lost with a Redis restart)."""

    def __post_init__(self) -> None:
        """The defaults that follow the data directory (a frozen object sets them once)."""
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{self.data_dir / 'cqaface.db'}")
        object.__setattr__(self, "database_url", supported_url(self.database_url))
        if self.index_dir is None:
            object.__setattr__(self, "index_dir", self.data_dir / "index")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings of ``environ`` (default: this process's environment), every value
        checked now: a bad one is a ValueError naming its variable."""
        env = _Env(os.environ if environ is None else environ)
        data_dir = Path(env.get("CQAFACE_DATA_DIR") or Path.cwd() / "var")
        roots = env.get("CQAFACE_IMPORT_ROOTS")
        far = env.number("CQAFACE_FAR", cls.far)
        if not 0 < far < 1:
            raise ValueError(f"CQAFACE_FAR={far} must lie strictly between 0 and 1")
        return cls(
            data_dir=data_dir,
            database_url=env.get("CQAFACE_DATABASE_URL") or "",
            index_dir=Path(env.get("CQAFACE_INDEX_DIR") or data_dir / "index"),
            broker_url=env.get("CQAFACE_BROKER_URL"),
            index_exact_max=env.integer("CQAFACE_INDEX_EXACT_MAX", cls.index_exact_max),
            index_approximate=env.choice("CQAFACE_INDEX_APPROX", "pq", ("pq", "hnsw")),
            pq_shortlist=env.integer("CQAFACE_PQ_SHORTLIST", cls.pq_shortlist),
            pq_bytes=env.integer("CQAFACE_PQ_BYTES", cls.pq_bytes),
            probe_threads=env.integer("CQAFACE_PROBE_THREADS", cls.probe_threads),
            hnsw_m=env.integer("CQAFACE_HNSW_M", cls.hnsw_m),
            hnsw_ef_search=env.integer("CQAFACE_HNSW_EF_SEARCH", cls.hnsw_ef_search),
            use_gpu=env.choice("CQAFACE_INDEX_GPU", "auto", ("auto", "on", "off")) != "off",
            far=far,
            threshold=_override(env, "CQAFACE_THRESHOLD"),
            masked_threshold=_override(env, "CQAFACE_MASKED_THRESHOLD"),
            mask_fusion=env.choice("CQAFACE_MASK_FUSION", cls.mask_fusion, MASK_FUSIONS),
            keep=env.choice("CQAFACE_KEEP", cls.keep, KEEP_POLICIES),
            masked_templates=env.choice("CQAFACE_MASKED_TEMPLATES", "1", ("0", "1")) == "1",
            enrol_policy=env.choice("CQAFACE_ENROL_FACES", "largest", ("largest", "single")),
            enrol_mask=env.choice("CQAFACE_ENROL_MASK", "no", ("no", "auto", "yes")),
            max_photo_bytes=env.integer("CQAFACE_MAX_PHOTO_BYTES", cls.max_photo_bytes),
            min_face_size=env.integer("CQAFACE_MIN_FACE_SIZE", cls.min_face_size),
            enrol_min_face_size=env.integer("CQAFACE_ENROL_MIN_FACE_SIZE", cls.enrol_min_face_size),
            enrol_min_quality=min_quality(
                env.number("CQAFACE_ENROL_MIN_QUALITY", cls.enrol_min_quality),
                "CQAFACE_ENROL_MIN_QUALITY",
            ),
            import_roots=tuple(Path(p).resolve() for p in (roots or "").split(os.pathsep) if p),
            zip_max_members=env.integer("CQAFACE_ZIP_MAX_MEMBERS", cls.zip_max_members),
            zip_max_bytes=env.integer("CQAFACE_ZIP_MAX_BYTES", cls.zip_max_bytes),
            zip_max_ratio=env.number("CQAFACE_ZIP_MAX_RATIO", cls.zip_max_ratio),
            secret_key=env.get("CQAFACE_SECRET_KEY"),
            max_upload_bytes=env.integer("CQAFACE_MAX_UPLOAD_BYTES", cls.max_upload_bytes),
            host=env.get("CQAFACE_HOST") or cls.host,
            port=env.integer("CQAFACE_PORT", cls.port),
            rate_limit=env.integer("CQAFACE_RATE_LIMIT", cls.rate_limit),
            secure_cookies=env.choice("CQAFACE_SECURE_COOKIES", "0", ("0", "1")) == "1",
            password_link_hours=env.number("CQAFACE_PASSWORD_LINK_HOURS", cls.password_link_hours),
            event_streams=env.integer("CQAFACE_EVENT_STREAMS", cls.event_streams),
            event_stream_seconds=env.number("CQAFACE_EVENT_STREAM_S", cls.event_stream_seconds),
            result_backend_url=env.get("CQAFACE_RESULT_BACKEND"),
            queue=env.get("CQAFACE_QUEUE") or cls.queue,
            worker_concurrency=env.count("CQAFACE_WORKER_CONCURRENCY", os.cpu_count() or 1),
            enrol_chunk=env.count("CQAFACE_ENROL_CHUNK", cls.enrol_chunk),
            enrol_batch=env.count("CQAFACE_ENROL_BATCH", cls.enrol_batch),
            task_time_limit=env.integer("CQAFACE_TASK_TIME_LIMIT", cls.task_time_limit),
            visibility_timeout=env.integer("CQAFACE_VISIBILITY_TIMEOUT", cls.visibility_timeout),
            task_retries=env.integer("CQAFACE_TASK_RETRIES", cls.task_retries),
            item_attempts=env.count("CQAFACE_ITEM_ATTEMPTS", cls.item_attempts),
            job_stall_seconds=env.integer("CQAFACE_JOB_STALL_S", cls.job_stall_seconds),
        )

    def threshold_override(self, masked: bool) -> float | None:
        """CQAFACE_MASKED_THRESHOLD for masked probes, else CQAFACE_THRESHOLD (None: unset)."""
        return self.masked_threshold if masked else self.threshold

    def index_options(self) -> dict[str, Any]:
        """The TemplateIndex options these settings choose."""
        return {
            "exact_max": self.index_exact_max,
            "approximate": self.index_approximate,
            "hnsw_m": self.hnsw_m,
            "ef_search": self.hnsw_ef_search,
            "shortlist": self.pq_shortlist,
            "pq_bytes": self.pq_bytes,
            "probe_threads": self.probe_threads,
            "gpu": self.use_gpu,
        }

    @property
    def uploads_dir(self) -> Path:
        """DATA_DIR/uploads: extracted archives, removed with their job."""
        return self.data_dir / "uploads"

    def signing_key(self) -> str:
        """CQAFACE_SECRET_KEY, or (unset) a random key made once and kept in
        DATA_DIR/secret_key (mode 0600), so that no default secret exists anywhere."""
        if self.secret_key is not None:
            return self.secret_key
        path = self.data_dir / "secret_key"
        if not path.exists():
            import secrets

            path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as out:
                out.write(secrets.token_hex(32))
        return path.read_text().strip()


def min_quality(value: float, name: str) -> float:
    """A minimum face quality, a number from 0 to 1; else a ValueError naming ``name`` (the
    setting, or a job's field)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{name}={value!r} must be a number from 0 to 1")
    return float(value)


def _override(env: _Env, name: str) -> float | None:
    return None if env.get(name) is None else env.number(name, 0.0)
