"""Identification settings, read from CQAFACE_* environment variables at call time.

One place for every knob of the gallery, the index and the search, so that the embedded default
(a SQLite file, in-process tasks, faiss-cpu) and the full stack (PostgreSQL, Redis, GPU) differ
by configuration only.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Literal

from embedder import settings as embedder_settings

KeepPolicy = Literal["crops", "images", "none"]
MaskFusion = Literal["normal", "masked", "max", "mean"]
KEEP_POLICIES: tuple[KeepPolicy, ...] = ("crops", "images", "none")
MASK_FUSIONS: tuple[MaskFusion, ...] = ("normal", "masked", "max", "mean")


def _get(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else None


def _choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = _get(name) or default
    if value not in choices:
        raise ValueError(f"{name}={value!r}: expected one of {', '.join(choices)}")
    return value


def _number(name: str, default: float, kind: type = float) -> float:
    """A finite number: NaN would pass no comparison (a limit that never trips), and int()
    alone also reads "1_000" and other scripts' digits."""
    value = _get(name)
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


def data_dir() -> Path:
    """CQAFACE_DATA_DIR: where the embedded default keeps its database and index (./var)."""
    return Path(_get("CQAFACE_DATA_DIR") or Path.cwd() / "var")


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


def database_url() -> str:
    """CQAFACE_DATABASE_URL, else a SQLite file in the data directory; see supported_url."""
    return supported_url(_get("CQAFACE_DATABASE_URL") or f"sqlite:///{data_dir() / 'cqaface.db'}")


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


def index_dir() -> Path:
    """CQAFACE_INDEX_DIR: persisted FAISS indexes (default: DATA_DIR/index)."""
    return Path(_get("CQAFACE_INDEX_DIR") or data_dir() / "index")


def broker_url() -> str | None:
    """CQAFACE_BROKER_URL: the Celery broker; unset means tasks run in-process."""
    return _get("CQAFACE_BROKER_URL")


def model_path() -> Path:
    """CQAFACE_MODEL: the checkpoint that embeds probes and gallery faces."""
    return embedder_settings.model_path()


def index_exact_max() -> int:
    """CQAFACE_INDEX_EXACT_MAX: above this many templates the index is approximate.

    Exact search over 30K 512-d templates is about 3 ms per probe on two cores, 10 ms at 100K
    and 90 ms at 1M (linear); the approximate index stays under 5 ms at 1M with recall@1 0.9998
    against exact search on real face templates (var/bench-search.json).
    """
    return int(_number("CQAFACE_INDEX_EXACT_MAX", 30_000, int))


def index_approximate() -> Literal["pq", "hnsw"]:
    """CQAFACE_INDEX_APPROX (pq|hnsw): the approximate index above CQAFACE_INDEX_EXACT_MAX.

    `pq`: a rotated (OPQ), product-quantised fast scan whose shortlist is re-scored exactly;
    `hnsw`: a graph. On real face templates at 100K the PQ scan reaches recall@1 1.0 in 0.5 ms
    where HNSW needs efSearch 512 and 5 ms for 0.998, and HNSW takes 20 minutes to build at 1M
    (var/bench-search.json).
    """
    return _choice("CQAFACE_INDEX_APPROX", "pq", ("pq", "hnsw"))  # type: ignore[return-value]


def pq_shortlist() -> int:
    """CQAFACE_PQ_SHORTLIST: PQ candidates re-scored exactly per probe (more: better recall)."""
    return int(_number("CQAFACE_PQ_SHORTLIST", 300, int))


def pq_bytes() -> int:
    """CQAFACE_PQ_BYTES: bytes of PQ code a template (4-bit fast scan: two sub-quantisers a
    byte). At 1M real face templates, 16 bytes miss the best match for 1.7% of probes at a
    300-candidate shortlist, 32 bytes for 0.02% (var/bench-search.json)."""
    return int(_number("CQAFACE_PQ_BYTES", 32, int))


def probe_threads() -> int:
    """CQAFACE_PROBE_THREADS: faiss threads for one probe's approximate search (default 1).

    A single probe's PQ scan takes a few ms; splitting it over threads saves little and, on a
    loaded machine, waiting for a descheduled thread costs a whole scheduler slice (the p50 rose
    from 0.1 to 8 ms at 100K templates in var/bench-search.json runs). Batches use every thread.
    """
    return int(_number("CQAFACE_PROBE_THREADS", 1, int))


def hnsw_m() -> int:
    """CQAFACE_HNSW_M: graph degree of the approximate index."""
    return int(_number("CQAFACE_HNSW_M", 32, int))


def hnsw_ef_search() -> int:
    """CQAFACE_HNSW_EF_SEARCH: search breadth; higher is slower with better recall."""
    return int(_number("CQAFACE_HNSW_EF_SEARCH", 64, int))


def use_gpu() -> bool:
    """CQAFACE_INDEX_GPU (auto|on|off): clone the index to a GPU when faiss sees one."""
    return _choice("CQAFACE_INDEX_GPU", "auto", ("auto", "on", "off")) != "off"


def far() -> float:
    """CQAFACE_FAR: the false-accept rate the open-set threshold is taken at (1e-3)."""
    value = _number("CQAFACE_FAR", 1e-3)
    if not 0 < value < 1:
        raise ValueError(f"CQAFACE_FAR={value} must lie strictly between 0 and 1")
    return value


def threshold_override(masked: bool) -> float | None:
    """CQAFACE_THRESHOLD / CQAFACE_MASKED_THRESHOLD: cosine thresholds that replace the
    checkpoint's calibration (for a model without one, or a site's own calibration)."""
    name = "CQAFACE_MASKED_THRESHOLD" if masked else "CQAFACE_THRESHOLD"
    return None if _get(name) is None else _number(name, 0.0)


def keep() -> KeepPolicy:
    """CQAFACE_KEEP (crops|images|none): what enrolment keeps so that `cqaface reembed` can
    re-embed for a new model: the aligned 112x112 crops (PNG, default, about 20 KB a face),
    the original photos (bigger, but a new aligner could use them), or nothing."""
    return _choice("CQAFACE_KEEP", "crops", KEEP_POLICIES)  # type: ignore[return-value]


def masked_templates() -> bool:
    """CQAFACE_MASKED_TEMPLATES (1|0): also embed a synthetic-masked copy of every gallery
    face, giving each subject a masked template for masked probes (one more embedding a face)."""
    return _choice("CQAFACE_MASKED_TEMPLATES", "1", ("0", "1")) == "1"


def mask_fusion() -> MaskFusion:
    """CQAFACE_MASK_FUSION: how a masked probe is scored. `normal` against the normal template
    only, `masked` against the masked template only, `max` or `mean` of both.

    `normal` is the default because the masked threshold is calibrated on masked probes
    against bare faces: only under `normal` does it hold the FAR it names. Measured on the
    shipped model (benchmarks/bench_mask_fusion.py, BENCHMARKS.md: 100 held-out celeba
    identities, 500 synthetic-masked probes), at the FAR 1e-3 threshold impostors pass at
    0.0012 under `normal`, 0.0042 under `mean`, 0.0116 under `masked` and `max`, while Rank-1
    differs by at most 4 probes (0.942 / 0.944 / 0.950 / 0.950)."""
    return _choice("CQAFACE_MASK_FUSION", "normal", MASK_FUSIONS)  # type: ignore[return-value]


def enrol_policy() -> Literal["largest", "single"]:
    """CQAFACE_ENROL_FACES (largest|single): a gallery photo showing several faces gives its
    largest face, or is refused (`several_faces`)."""
    return _choice("CQAFACE_ENROL_FACES", "largest", ("largest", "single"))  # type: ignore[return-value]


def enrol_mask() -> Literal["auto", "yes", "no"]:
    """CQAFACE_ENROL_MASK (no|auto|yes): whether gallery photos count as masked. Default `no`:
    galleries are enrolled bare (masked probes meet an unmasked gallery), and the shipped mask
    classifier calls about one bare face in ten masked (more on grey photos), which would keep
    those photos out of the normal templates. `auto` trusts the classifier."""
    return _choice("CQAFACE_ENROL_MASK", "no", ("no", "auto", "yes"))  # type: ignore[return-value]


def max_photo_bytes() -> int:
    """CQAFACE_MAX_PHOTO_BYTES: bigger uploads are refused (`too_large`) before being read."""
    return int(_number("CQAFACE_MAX_PHOTO_BYTES", 50 * 2**20, int))


def min_face_size() -> int:
    """CQAFACE_MIN_FACE_SIZE: faces smaller than this (pixels) are not identified."""
    return int(_number("CQAFACE_MIN_FACE_SIZE", 20, int))


def enrol_min_face_size() -> int:
    """CQAFACE_ENROL_MIN_FACE_SIZE: gallery faces smaller than this (pixels) are refused
    (`no_face`, with the size in the reason); CQAFACE_MIN_FACE_SIZE still applies if larger.
    A template is the face scaled to 112x112, so a gallery face under 40 px gives a poor one,
    and probes stay free to be small. Enrolment detects only faces this large, from the
    probes' own pyramid without its finer levels, so a face found both ways keeps its
    landmarks. `benchmarks/profile_detect.py` measures the time saved and the outcomes that
    change."""
    return int(_number("CQAFACE_ENROL_MIN_FACE_SIZE", 40, int))


def secret_key() -> str:
    """CQAFACE_SECRET_KEY: signs web sessions and CSRF tokens. Unset, a random key is made once
    and kept in DATA_DIR/secret_key (mode 0600), so that no default secret exists anywhere."""
    value = _get("CQAFACE_SECRET_KEY")
    if value is not None:
        return value
    path = data_dir() / "secret_key"
    if not path.exists():
        import secrets

        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(secrets.token_hex(32))
    return path.read_text().strip()


def import_roots() -> list[Path]:
    """CQAFACE_IMPORT_ROOTS (paths separated by os.pathsep): the only server folders that a
    web or API user may import from. Unset: server-side folder imports are refused."""
    value = _get("CQAFACE_IMPORT_ROOTS")
    return [Path(p).resolve() for p in value.split(os.pathsep) if p] if value else []


def max_upload_bytes() -> int:
    """CQAFACE_MAX_UPLOAD_BYTES: the largest HTTP request body (a zip of gallery photos)."""
    return int(_number("CQAFACE_MAX_UPLOAD_BYTES", 2 * 2**30, int))


# ----- web server --------------------------------------------------------------------------


def host() -> str:
    """CQAFACE_HOST: the address `cqaface serve` listens on (loopback unless told)."""
    return _get("CQAFACE_HOST") or "127.0.0.1"


def port() -> int:
    """CQAFACE_PORT: the port of `cqaface serve`."""
    return int(_number("CQAFACE_PORT", 8000, int))


def rate_limit() -> int:
    """CQAFACE_RATE_LIMIT: API requests per minute per key (0: no limit); 429 beyond it."""
    return int(_number("CQAFACE_RATE_LIMIT", 600, int))


def secure_cookies() -> bool:
    """CQAFACE_SECURE_COOKIES (0|1): session cookies only over HTTPS (set 1 behind TLS)."""
    return _choice("CQAFACE_SECURE_COOKIES", "0", ("0", "1")) == "1"


def password_link_hours() -> float:
    """CQAFACE_PASSWORD_LINK_HOURS: how long an invitation or password-reset link stays valid."""
    return _number("CQAFACE_PASSWORD_LINK_HOURS", 72.0)


def event_streams() -> int:
    """CQAFACE_EVENT_STREAMS: live job-progress streams this process serves at once (each holds
    a request thread); beyond them the page polls instead."""
    return int(_number("CQAFACE_EVENT_STREAMS", 4, int))


def event_stream_seconds() -> float:
    """CQAFACE_EVENT_STREAM_S: a progress stream ends after this long and the browser opens a
    new one, signed in again (a user disabled meanwhile gets no more events)."""
    return _number("CQAFACE_EVENT_STREAM_S", 300.0)


# ----- workers and bulk enrolment ----------------------------------------------------------


def result_backend_url() -> str | None:
    """CQAFACE_RESULT_BACKEND: where Celery keeps task states (PROGRESS); None: the broker."""
    return _get("CQAFACE_RESULT_BACKEND")


def queue() -> str:
    """CQAFACE_QUEUE: the Celery queue of enrolment tasks, also the prefix of the broker's
    Redis keys, so that several deployments (or test runs) can share one Redis server."""
    return _get("CQAFACE_QUEUE") or "cqaface"


def worker_concurrency() -> int:
    """CQAFACE_WORKER_CONCURRENCY: worker processes of `cqaface worker` (default: the cores).
    Each process runs torch on one thread: processes scale better than threads here."""
    return max(1, int(_number("CQAFACE_WORKER_CONCURRENCY", os.cpu_count() or 1, int)))


def enrol_chunk() -> int:
    """CQAFACE_ENROL_CHUNK: photos per enrolment task (a job of 100,000 photos is 2,000
    tasks of 50): small enough to spread over workers and to redo cheaply after a crash."""
    return max(1, int(_number("CQAFACE_ENROL_CHUNK", 50, int)))


def enrol_batch() -> int:
    """CQAFACE_ENROL_BATCH: photos whose faces are embedded in one forward pass."""
    return max(1, int(_number("CQAFACE_ENROL_BATCH", 16, int)))


def task_time_limit() -> int:
    """CQAFACE_TASK_TIME_LIMIT: seconds after which a task's process is killed (one chunk)."""
    return int(_number("CQAFACE_TASK_TIME_LIMIT", 3600, int))


def visibility_timeout() -> int:
    """CQAFACE_VISIBILITY_TIMEOUT: seconds before Redis hands a task that a (dead) worker
    took but never acknowledged to another worker. Must exceed the longest task (default 6 h,
    against a 1 h task limit), or a slow task would run twice; short in tests."""
    return int(_number("CQAFACE_VISIBILITY_TIMEOUT", 6 * 3600, int))


def task_retries() -> int:
    """CQAFACE_TASK_RETRIES: retries (exponential backoff) of a task that met a transient error
    (the database or Redis gone for a moment). Bad photos are never retried."""
    return int(_number("CQAFACE_TASK_RETRIES", 8, int))


def item_attempts() -> int:
    """CQAFACE_ITEM_ATTEMPTS: tries of one photo (a worker died on it, or an unexpected error)
    before it ends as `failed`: a photo that kills its worker cannot stall a job for ever."""
    return max(1, int(_number("CQAFACE_ITEM_ATTEMPTS", 3, int)))


def job_stall_seconds() -> int:
    """CQAFACE_JOB_STALL_S: a running job with pending photos, no progress for this long and
    an empty queue is dispatched again by a worker (tasks lost with a Redis restart)."""
    return int(_number("CQAFACE_JOB_STALL_S", 300, int))


def zip_max_members() -> int:
    """CQAFACE_ZIP_MAX_MEMBERS: members of an uploaded archive (more: refused, zip_bomb)."""
    return int(_number("CQAFACE_ZIP_MAX_MEMBERS", 200_000, int))


def zip_max_bytes() -> int:
    """CQAFACE_ZIP_MAX_BYTES: total uncompressed bytes of an uploaded archive (20 GiB)."""
    return int(_number("CQAFACE_ZIP_MAX_BYTES", 20 * 2**30, int))


def zip_max_ratio() -> float:
    """CQAFACE_ZIP_MAX_RATIO: a member above 1 MiB compressed more than this is a bomb (JPEG
    barely compresses; 100x is text or zeros)."""
    return _number("CQAFACE_ZIP_MAX_RATIO", 100.0)
