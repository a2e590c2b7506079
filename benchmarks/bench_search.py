"""Search benchmark: the gallery index at 10K, 100K and 1M templates.

Galleries that look like faces (`--data real`, the default; benchmarks/real_gallery.py): the
shipped model's templates of the ~9,100 celeba-112 people, each person's next crop as a genuine
probe, and past them a crowd drawn from a Gaussian fitted to those templates. `--data random`
gives the earlier galleries: random unit templates with probes planted at cosine 0.6, which
every method finds, since random 512-d vectors are nearly orthogonal. Searched by:

- `faiss_exact`: identify.search.index.TemplateIndex, IndexIDMap2 over IndexFlatIP (the default),
- `faiss_pq`: the same class above CQAFACE_INDEX_EXACT_MAX with CQAFACE_INDEX_APPROX=pq (the
  default): a 4-bit PQ fast scan whose shortlist is re-scored exactly (code size x shortlist),
- `faiss_hnsw`: the same with CQAFACE_INDEX_APPROX=hnsw (efSearch sweep; up to --hnsw-max
  templates, since building it at 1M takes 20 minutes on two cores),
- `numpy_f64`: brute force in float64, what CompreFace does (the status quo to beat),
- `numpy_f32`: a plain float32 matrix-vector scan, the memory-bandwidth floor for exact search.

Reported per size: single-probe latency p50/p99, batch throughput, build time, recall@1 of the
approximate index against exact search (over every probe), Rank-1 (the probe's own person
first), bytes per template. Prints a table and writes everything to a JSON file. The machine is
shared: figures are what this run saw, with the thread count recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from real_gallery import RealFaces
from real_gallery import load as load_real_faces

from identify.search.index import TemplateIndex

DIM = 512
GENUINE_COSINE = 0.6
TARGETS = {"approx_p50_ms_at_1m": 5.0, "approx_recall_at_1": 0.99, "exact_vs_f32_scan": 1.5}


def unit_rows(rng: np.random.Generator, n: int, dim: int = DIM, chunk: int = 100_000) -> np.ndarray:
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, chunk):
        block = rng.standard_normal((min(chunk, n - start), dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + len(block)] = block
    return out


def planted_probes(
    rng: np.random.Generator, gallery: np.ndarray, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """Probes at cosine GENUINE_COSINE to ``count`` random templates, and those templates."""
    targets = rng.choice(len(gallery), count, replace=False)
    noise = unit_rows(rng, count)
    noise -= (noise * gallery[targets]).sum(1, keepdims=True) * gallery[targets]
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    a = GENUINE_COSINE
    probes = a * gallery[targets] + np.sqrt(1 - a * a) * noise
    return probes.astype(np.float32), targets.astype(np.int64)


def numpy_top1(matrix: np.ndarray, probes: np.ndarray, chunk: int = 64) -> np.ndarray:
    """Exact top-1 by matrix product in the matrix's dtype, in chunks of probes."""
    out = np.empty(len(probes), np.int64)
    for start in range(0, len(probes), chunk):
        scores = matrix @ probes[start : start + chunk].T.astype(matrix.dtype)
        out[start : start + chunk] = scores.argmax(0)
    return out


def numpy_topk(matrix: np.ndarray, probe: np.ndarray, k: int) -> np.ndarray:
    scores = matrix @ probe.astype(matrix.dtype)
    top = np.argpartition(-scores, k)[:k]
    return top[np.argsort(-scores[top])]


def latencies(fn, probes: np.ndarray, budget_s: float, max_queries: int) -> dict[str, float]:
    """Per-probe wall time over as many probes as fit the budget (at least 10)."""
    fn(probes[0])  # warm-up
    times = []
    start = time.perf_counter()
    for probe in probes[:max_queries]:
        t0 = time.perf_counter_ns()
        fn(probe)
        times.append((time.perf_counter_ns() - t0) / 1e6)
        if len(times) >= 10 and time.perf_counter() - start > budget_s:
            break
    return summary(times)


def interleaved(fns: dict[str, Any], probes: np.ndarray, budget_s: float) -> dict[str, Any]:
    """Per-probe latency of several methods, taking turns on each probe (fair under noise)."""
    for fn in fns.values():
        fn(probes[0])  # warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    for probe in probes:
        for name, fn in fns.items():
            t0 = time.perf_counter_ns()
            fn(probe)
            times[name].append((time.perf_counter_ns() - t0) / 1e6)
        if len(times[name]) >= 10 and time.perf_counter() - start > budget_s * len(fns):
            break
    return {name: summary(ms) for name, ms in times.items()}


def summary(times_ms: list[float]) -> dict[str, float]:
    ms = np.asarray(times_ms)
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "queries": len(ms),
    }


def throughput(fn, probes: np.ndarray) -> dict[str, float]:
    fn(probes[:8])  # warm-up
    t0 = time.perf_counter()
    fn(probes)
    seconds = time.perf_counter() - t0
    return {"queries_per_s": round(len(probes) / seconds, 1), "batch": len(probes)}


def real_data(
    n: int, faces: RealFaces, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The real templates at random positions among a synthetic crowd, and their probes."""
    people = min(n, len(faces.templates))
    gallery = faces.crowd(n, rng)
    targets = np.sort(rng.choice(n, people, replace=False)).astype(np.int64)
    gallery[targets] = faces.templates[:people]
    return gallery, faces.probes[:people], targets


def random_data(
    n: int, args: argparse.Namespace, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    gallery = unit_rows(rng, n)
    probes, targets = planted_probes(rng, gallery, args.queries)
    return gallery, probes, targets


def bench_size(
    n: int, args: argparse.Namespace, rng: np.random.Generator, faces: RealFaces | None
) -> dict[str, Any]:
    print(f"\n== {n:,} templates ==", flush=True)
    t0 = time.perf_counter()
    gallery, probes, targets = (
        real_data(n, faces, rng) if faces is not None else random_data(n, args, rng)
    )
    timed = probes[rng.permutation(len(probes))[: args.queries]]
    batch = timed[: args.batch]
    ids = np.arange(n, dtype=np.int64) * 7 + 1  # subject ids need not be positions
    print(f"  data: {time.perf_counter() - t0:.1f} s, {len(probes):,} probes", flush=True)
    result: dict[str, Any] = {
        "templates": n,
        "probes": len(probes),
        "build_s": {},
        "single": {},
        "batch": {},
        "recall_at_1_vs_exact": {},
        "rank1": {},
        "bytes_per_template": {},
    }
    k = args.k

    # Exact methods, timed interleaved probe by probe: the machine is shared and noisy, so
    # their ratio is what to quote. numpy float32 is the memory-bandwidth floor; numpy
    # float64 is CompreFace's way (float8[] rows scored by brute force).
    t0 = time.perf_counter()
    gallery64 = gallery.astype(np.float64)
    result["build_s"]["numpy_f64"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    exact = TemplateIndex.build(ids, gallery, exact_max=n, gpu=args.gpu)
    result["build_s"]["faiss_exact"] = round(time.perf_counter() - t0, 3)
    result["device"] = exact.device
    result["single"].update(
        interleaved(
            {
                "numpy_f32": lambda q: numpy_topk(gallery, q, k),
                "numpy_f64": lambda q: numpy_topk(gallery64, q, k),
                "faiss_exact": lambda q: exact.search(q, k),
            },
            timed,
            args.budget,
        )
    )
    result["batch"]["numpy_f32"] = throughput(lambda q: numpy_top1(gallery, q), batch)
    result["batch"]["numpy_f64"] = throughput(
        lambda q: numpy_top1(gallery64, q), batch[: max(16, len(batch) // 4)]
    )
    result["batch"]["faiss_exact"] = throughput(lambda q: exact.search(q, k), batch)
    gallery64 = None  # free 8 bytes x 512 x n before the approximate index is built
    exact_top1 = exact.search(probes, 1)[1][:, 0]
    result["rank1"]["faiss_exact"] = float((exact_top1 == ids[targets]).mean())
    result["bytes_per_template"].update(
        numpy_f32=4 * DIM,
        numpy_f64=8 * DIM,
        faiss_exact=round(len(faiss.serialize_index(exact._cpu)) / n, 1),
    )
    exact = None
    for name in ("numpy_f32", "numpy_f64", "faiss_exact"):
        print(f"  {name:<11} {result['single'][name]}", flush=True)

    approximate = [(f"pq{b}", {"pq_bytes": b}, args.pq_shortlist) for b in args.pq_bytes]
    if args.hnsw_min <= n <= args.hnsw_max:
        approximate.append(("hnsw", {"approximate": "hnsw"}, args.ef_search))
    for label, options, sweep in approximate:
        t0 = time.perf_counter()
        index = TemplateIndex.build(
            ids,
            gallery,
            exact_max=0,
            hnsw_m=args.hnsw_m,
            ef_construction=args.ef_construction,
            **{"approximate": "pq", **options},
        )
        result["build_s"][f"faiss_{label}"] = round(time.perf_counter() - t0, 3)
        result["bytes_per_template"][f"faiss_{label}"] = round(
            len(faiss.serialize_index(index._cpu)) / n, 1
        )
        print(f"  faiss_{label} build {result['build_s'][f'faiss_{label}']} s", flush=True)
        for value in sweep:
            if label == "hnsw":
                index.ef_search = value
                name = f"faiss_hnsw_ef{value}"
            else:
                index.shortlist = value
                name = f"faiss_{label}_shortlist{value}"
            result["single"][name] = latencies(
                lambda q, index=index: index.search(q, k), timed, args.budget, args.queries
            )
            result["batch"][name] = throughput(lambda q, index=index: index.search(q, k), batch)
            top1 = index.search(probes, 1)[1][:, 0]
            result["recall_at_1_vs_exact"][name] = float((top1 == exact_top1).mean())
            result["rank1"][name] = float((top1 == ids[targets]).mean())
            print(
                f"  {name:<24} {result['single'][name]} recall@1 "
                f"{result['recall_at_1_vs_exact'][name]:.4f}",
                flush=True,
            )
        index = None
    return result


def machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "python": platform.python_version(),
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "cpus": os.cpu_count(),
        "faiss_threads": faiss.omp_get_max_threads(),
        "faiss_gpus": faiss.get_num_gpus(),
        "load_average_at_start": load,
    }


def pgvector() -> dict[str, Any]:
    """pgvector's HNSW is compared only where the extension is installed."""
    try:
        found = subprocess.run(
            ["dpkg", "-s", "postgresql-15-pgvector"], capture_output=True, text=True, check=False
        )
        installed = found.returncode == 0
    except FileNotFoundError:
        installed = False
    if installed:
        return {"available": True, "measured": False, "note": "installed; not yet measured"}
    return {
        "available": False,
        "note": "apt-get install postgresql-15-pgvector: 'Unable to locate package' in this "
        "machine's Debian 12 sources, so pgvector's HNSW is not compared",
    }


def checks(results: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for r in results:
        n = r["templates"]
        f32 = r["single"]["numpy_f32"]["p50_ms"]
        out[f"exact_over_f32_scan_p50_at_{n}"] = round(
            r["single"]["faiss_exact"]["p50_ms"] / f32, 3
        )
        approx = list(r["recall_at_1_vs_exact"])
        good = [a for a in approx if r["recall_at_1_vs_exact"][a] >= TARGETS["approx_recall_at_1"]]
        if good:
            best = min(good, key=lambda h: r["single"][h]["p50_ms"])
            out[f"fastest_approximate_with_recall_target_at_{n}"] = {
                "setting": best,
                "p50_ms": r["single"][best]["p50_ms"],
                "recall_at_1": r["recall_at_1_vs_exact"][best],
            }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--data", choices=("real", "random"), default="real")
    parser.add_argument("--queries", type=int, default=300, help="probes timed one by one")
    parser.add_argument("--batch", type=int, default=256, help="probes per batch call")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--budget", type=float, default=15.0, help="seconds per latency run")
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-construction", type=int, default=64)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--pq-bytes", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--pq-shortlist", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--hnsw-min", type=int, default=10_000, help="smallest size for HNSW")
    parser.add_argument("--hnsw-max", type=int, default=100_000, help="largest size for HNSW")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--gpu", action="store_true", help="clone the exact index to a GPU")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("var/bench-search.json"))
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    faces = load_real_faces() if args.data == "real" else None
    report: dict[str, Any] = {
        "machine": machine(),
        "data": args.data,
        "model": faces.version if faces is not None else None,
        "real_people": len(faces.templates) if faces is not None else 0,
        "dim": DIM,
        "k": args.k,
        "genuine_cosine": GENUINE_COSINE if faces is None else None,
        "hnsw": {"M": args.hnsw_m, "efConstruction": args.ef_construction},
        "targets": TARGETS,
        "pgvector": pgvector(),
        "sizes": [],
    }
    started = time.perf_counter()
    for n in args.sizes:
        report["sizes"].append(bench_size(n, args, rng, faces))
        report["checks"] = checks(report["sizes"])
        report["seconds"] = round(time.perf_counter() - started, 1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")  # partial results survive
    print(json.dumps(report["checks"], indent=2))
    print(f"pgvector: {report['pgvector']['note']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
