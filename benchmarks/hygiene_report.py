"""Hygiene report benchmark: the report (identify.search.hygiene_report) on synthetic galleries
of 25K, 50K and 100K subjects, to show its cost grows like n log n, not n^2.

Each size runs in a fresh process: it builds a SQLite gallery through GalleryStore (subjects,
images, faces, embeddings, templates, as enrolment stores them), the index the serving process
would hold (identify.search.index.TemplateIndex with the process's settings, but exact only up
to --exact-max, 10,000 by default, so that every size is searched approximately,
by HNSW unless --approximate pq), then times the report alone.

The gallery: each subject a random unit centre in 512-d; --faces unit embeddings per subject,
centre + Gaussian noise of norm --noise (cosine about 0.71 to the centre at 1.0). Planted:
1% of subjects share another's centre (a likely same-person pair each) and 1% of subjects hold
one face of another subject's centre (an outlier each). Random centres are near orthogonal: no
pair but the planted ones crosses the threshold, so the findings are counted against the plant.

Reported per size: report seconds, subjects per second, the ratio of time to n log n and to n^2
against the smallest size, the Python heap's peak during the report (tracemalloc: numpy arrays
included, faiss's own buffers not) and the process's peak RSS (gallery and index included);
recall of the planted faults. Prints a table and writes JSON (--out).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DIM = 512
THRESHOLD = 0.31672  # the shipped model's same-person threshold at FAR 1e-3


def _gallery(n: int, faces: int, noise: float, seed: int) -> tuple[list[Any], set, set]:
    """PhotoRecords of the synthetic gallery, the planted pairs (subject names) and outliers
    (photo sources)."""
    from identify.gallery.store import FaceRecord, PhotoRecord

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    planted = max(1, n // 100)
    twins = rng.choice(n, 2 * planted, replace=False)
    pairs = set()
    for a, b in zip(twins[:planted], twins[planted:], strict=True):
        centres[b] = centres[a]
        pairs.add(tuple(sorted((f"s{a:07d}", f"s{b:07d}"))))
    hosts = rng.choice(n, planted, replace=False)
    strangers = (hosts + 1 + rng.integers(0, n - 1, planted)) % n
    foreign = dict(zip(hosts.tolist(), strangers.tolist(), strict=True))
    photos, outliers = [], set()
    for subject in range(n):
        for face in range(faces + (subject in foreign)):
            centre = centres[foreign[subject]] if face == faces else centres[subject]
            noise_vector = rng.standard_normal(DIM).astype(np.float32) * (noise / math.sqrt(DIM))
            vector = centre + noise_vector
            source = f"s{subject:07d}/{face}"
            if face == faces:
                outliers.add(source)
            photos.append(
                PhotoRecord(
                    f"s{subject:07d}",
                    sha256=hashlib.sha256(source.encode()).hexdigest(),
                    size_bytes=1,
                    faces=[
                        FaceRecord(
                            box=(0.0, 0.0, 1.0, 1.0),
                            landmarks=np.zeros((5, 2)),
                            score=1.0,
                            vector=vector / np.linalg.norm(vector),
                        )
                    ],
                    source=source,
                )
            )
    return photos, pairs, outliers


def one_size(
    n: int, faces: int, noise: float, seed: int, exact_max: int, approximate: str, folder: Path
) -> dict[str, Any]:
    """Build a gallery of ``n`` subjects and time its report (run in a child process)."""
    from sqlalchemy import select

    from identify.gallery import hygiene, migrate
    from identify.gallery import vectors as vec
    from identify.gallery.db import make_engine
    from identify.gallery.store import GalleryStore
    from identify.gallery.tables import Face, HygieneFinding, Image, Subject, Template
    from identify.search.hygiene_report import run_report
    from identify.search.index import TemplateIndex
    from identify.settings import Settings

    url = f"sqlite:///{folder / f'gallery-{n}.db'}"
    migrate.upgrade(url)
    store = GalleryStore(make_engine(url), model_version="synthetic", dim=DIM)
    started = time.perf_counter()
    photos, pairs, outliers = _gallery(n, faces, noise, seed)
    for first in range(0, len(photos), 5_000):
        store.add_images(photos[first : first + 5_000])
    del photos
    build_s = time.perf_counter() - started
    with store.sessions() as session:
        rows = session.execute(select(Template.subject_id, Template.vector)).all()
    ids = np.array([r.subject_id for r in rows], np.int64)
    vectors = np.stack([vec.from_bytes(r.vector, DIM) for r in rows])
    del rows
    started = time.perf_counter()
    options = {**Settings.from_env().index_options(), "exact_max": exact_max}
    options["approximate"] = approximate
    index = TemplateIndex.build(ids, vectors, **options)
    index_s = time.perf_counter() - started
    del vectors
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report_id = hygiene.create_report(store, THRESHOLD)
    tracemalloc.start()
    started = time.perf_counter()
    assert run_report(store, index, report_id)
    report_s = time.perf_counter() - started
    _, heap_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with store.sessions() as session:
        names = dict(session.execute(select(Subject.id, Subject.name)).all())
        found_pairs = {
            tuple(sorted((names[a], names[b])))
            for a, b in session.execute(
                select(HygieneFinding.subject_id, HygieneFinding.other_subject_id).where(
                    HygieneFinding.kind == "same_person"
                )
            )
        }
        outlier_rows = session.execute(
            select(Image.source, HygieneFinding.subject_id, HygieneFinding.other_subject_id)
            .join(Face, Face.image_id == Image.id)
            .join(HygieneFinding, HygieneFinding.face_id == Face.id)
            .where(HygieneFinding.kind == "outlier")
        ).all()
    found_outliers = {source for source, _, _ in outlier_rows}
    # A face nearer the subject found as its own's twin: that pair's symptom (shown with it).
    with_pair = {
        source
        for source, own, other in outlier_rows
        if other is not None and tuple(sorted((names[own], names[other]))) in found_pairs
    }
    return {
        "subjects": n,
        "faces": n * faces + len(outliers),
        "index": index.kind,
        "gallery_build_s": round(build_s, 1),
        "index_build_s": round(index_s, 1),
        "report_s": round(report_s, 2),
        "subjects_per_s": round(n / report_s),
        "heap_peak_mib": round(heap_peak / 2**20, 1),
        "rss_peak_mib": round(rss_after, 1),
        "rss_before_report_mib": round(rss_before, 1),
        "planted_pairs": len(pairs),
        "pairs_found": len(found_pairs & pairs),
        "other_pairs": len(found_pairs - pairs),
        "planted_outliers": len(outliers),
        "outliers_found": len(found_outliers & outliers),
        "outliers_with_pair": len(with_pair - outliers),
        "other_outliers": len(found_outliers - outliers - with_pair),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[25_000, 50_000, 100_000])
    parser.add_argument("--faces", type=int, default=2, help="faces per subject (default 2)")
    parser.add_argument("--noise", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--approximate",
        choices=["hnsw", "pq"],
        default="hnsw",
        help="the approximate index (default hnsw, whose search is sublinear; pq scans every "
        "code, a linear search with a small constant)",
    )
    parser.add_argument(
        "--exact-max",
        type=int,
        default=10_000,
        help="the index is approximate above this many templates (default 10,000: every size "
        "is searched the way a large gallery is)",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/hygiene-report.json"))
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child's size
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(
            json.dumps(
                one_size(
                    args.one,
                    args.faces,
                    args.noise,
                    args.seed,
                    args.exact_max,
                    args.approximate,
                    args.folder,
                )
            )
        )
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="hygiene-bench-") as folder:
        for n in args.sizes:
            child = [sys.executable, __file__, "--one", str(n), "--folder", folder]
            child += ["--faces", str(args.faces), "--noise", str(args.noise)]
            child += ["--exact-max", str(args.exact_max), "--approximate", args.approximate]
            done = subprocess.run(
                [*child, "--seed", str(args.seed)], capture_output=True, text=True
            )
            if done.returncode:
                sys.stderr.write(done.stderr)
                return done.returncode
            results.append(json.loads(done.stdout.splitlines()[-1]))
            Path(folder, f"gallery-{n}.db").unlink()
            print(json.dumps(results[-1]), flush=True)
    base = results[0]
    for row in results:
        scale = row["subjects"] / base["subjects"]
        nlogn = scale * math.log(row["subjects"]) / math.log(base["subjects"])
        row["time_vs_smallest"] = round(row["report_s"] / base["report_s"], 2)
        row["n_log_n_vs_smallest"] = round(nlogn, 2)
        row["n_squared_vs_smallest"] = round(scale**2, 2)
    header = (
        "subjects",
        "index",
        "report_s",
        "time_vs_smallest",
        "n_log_n_vs_smallest",
        "n_squared_vs_smallest",
        "heap_peak_mib",
        "rss_peak_mib",
        "pairs_found",
        "outliers_found",
        "other_pairs",
        "outliers_with_pair",
        "other_outliers",
    )
    print(" | ".join(header))
    for row in results:
        print(" | ".join(str(row[h]) for h in header))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": "hygiene_report",
        "threads": os.cpu_count(),
        "omp_threads": os.environ.get("OMP_NUM_THREADS"),
        "machine": platform.machine(),
        "index_approximate": args.approximate,
        "exact_max": args.exact_max,
        "faces_per_subject": args.faces,
        "noise": args.noise,
        "results": results,
    }
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
