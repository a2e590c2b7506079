"""Load on a running server: a large gallery seeded straight into the database, and many
concurrent clients identifying real photos through the HTTP API. Shared by tests/test_load.py
(no errors under load) and benchmarks/bench_load.py (latency figures)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from server_process import request
from sqlalchemy import insert

from identify.gallery.db import make_engine
from identify.gallery.tables import Subject, Template, TemplateKind, utcnow


def seed_templates(url: str, model_version: str, subjects: int, dim: int = 512) -> None:
    """``subjects`` subjects with one random unit template each, in bulk: the index and the
    search see a gallery of that size without hours of enrolment."""
    rng = np.random.default_rng(0)
    engine = make_engine(url)
    now = utcnow()
    with engine.begin() as connection:
        for start in range(1, subjects + 1, 2000):
            ids = range(start, min(start + 2000, subjects + 1))
            vectors = rng.normal(size=(len(ids), dim)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            connection.execute(
                insert(Subject),
                [{"id": i, "name": f"seeded {i}", "details": {}} for i in ids],
            )
            connection.execute(
                insert(Template),
                [
                    {
                        "subject_id": i,
                        "model_version": model_version,
                        "kind": TemplateKind.NORMAL,
                        "dim": dim,
                        "vector": v.tobytes(),
                        "total": v.astype(np.float64).tobytes(),
                        "face_count": 1,
                        "version": 1,
                        "updated_at": now,
                    }
                    for i, v in zip(ids, vectors, strict=True)
                ],
            )
        if engine.dialect.name == "postgresql":
            connection.exec_driver_sql(
                "SELECT setval(pg_get_serial_sequence('subjects', 'id'), max(id)) FROM subjects"
            )
    engine.dispose()


@dataclass
class LoadReport:
    clients: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    per_client: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        lat = np.asarray(self.latencies) if self.latencies else np.zeros(1)
        return {
            "clients": self.clients,
            "seconds": round(self.seconds, 1),
            "requests": len(self.latencies),
            "requests_per_s": round(len(self.latencies) / self.seconds, 2),
            "p50_s": round(float(np.percentile(lat, 50)), 3),
            "p99_s": round(float(np.percentile(lat, 99)), 3),
            "max_s": round(float(lat.max()), 3),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": self.errors[:20],
            "fewest_requests_of_a_client": min(self.per_client) if self.per_client else 0,
        }


def hammer(base: str, key: str, probes: list[Path], clients: int, seconds: float) -> LoadReport:
    """``clients`` threads, each identifying probes in turn until ``seconds`` have passed (a
    request started before the end is waited for)."""
    photos = [(p.name, p.read_bytes()) for p in probes]
    report = LoadReport(clients, seconds, per_client=[0] * clients)
    lock = threading.Lock()
    start = time.monotonic()

    def client(n: int) -> None:
        i = n
        while time.monotonic() - start < seconds:
            name, data = photos[i % len(photos)]
            i += 1
            began = time.monotonic()
            try:
                status, body = request(
                    "POST", f"{base}/api/v1/identify", key=key, files={"image": (name, data)}
                )
                problem = None if status == 200 else f"{status}: {str(body)[:200]}"
            except OSError as error:
                status, problem = -1, f"{type(error).__name__}: {error}"
            with lock:
                report.latencies.append(time.monotonic() - began)
                report.statuses[status] = report.statuses.get(status, 0) + 1
                report.per_client[n] += 1
                if problem:
                    report.errors.append(problem)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report.seconds = time.monotonic() - start
    return report
