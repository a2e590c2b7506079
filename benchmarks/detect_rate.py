"""Photos per second for load + detect + align, in one process and in N processes.

Each worker runs one torch thread and loads its detector once, the way a serving worker does;
the clock starts only when every worker is ready. The throughput target is quoted for
250x250 photos (>= 30 photos/s on two processes), so photos are resized to that in memory by
default; ``--native`` adds a run at the photos' own size.

    python benchmarks/detect_rate.py --out var/detect-rate.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from multiprocessing.synchronize import Barrier
from pathlib import Path

import cv2
import numpy as np
import torch

from embedder.errors import FaceInputError
from embedder.faces import find_faces
from embedder.imageio import load_image
from embedder.mtcnn import default_detector
from trainer.config import shared_data

DATA = Path(shared_data())


def detect_align_rate(paths: list[Path], processes: int, *, size: int | None = 250) -> dict:
    """Photos/s for load (+ resize to size x size) + detect + align, with 1 and N processes."""
    rates, found = {}, 0.0
    for count in sorted({1, processes}):
        elapsed, found = _timed_run(paths, count, size)
        rates[str(count)] = round(len(paths) / elapsed, 1)
    return {
        "photos": len(paths),
        "size": f"{size}x{size}" if size else "native",
        "faces_found": round(found, 4),
        "photos_per_s": rates,
    }


def _timed_run(paths: list[Path], processes: int, size: int | None) -> tuple[float, float]:
    """Seconds to process all photos, and the fraction where a face was found."""
    context = mp.get_context("spawn")  # forking a process that already ran torch can hang
    ready = context.Barrier(processes + 1)
    with context.Pool(processes, initializer=_start_worker, initargs=(ready,)) as pool:
        ready.wait()
        start = time.perf_counter()
        results = list(pool.imap_unordered(_process, [(p, size) for p in paths], chunksize=4))
        elapsed = time.perf_counter() - start
    return elapsed, sum(results) / max(len(results), 1)


def _start_worker(ready: Barrier) -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    default_detector().detect(np.zeros((64, 64, 3), np.uint8))  # load weights, warm up
    ready.wait()


def _process(task: tuple[Path, int | None]) -> bool:
    """Load, resize, detect and align one photo; whether it gave a face."""
    path, size = task
    try:
        image = load_image(path)
        if size:
            image = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
        return bool(find_faces(image, policy="largest"))
    except FaceInputError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the figures")
    parser.add_argument("--photos", type=int, default=600, help="celeba-photos to time")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--native", action="store_true", help="also time at the native size")
    args = parser.parse_args()
    paths = sorted((DATA / "celeba-photos").glob("*/*.jpg"))[: args.photos]
    if not paths:
        parser.error(f"no photos under {DATA / 'celeba-photos'} (set CQAFACE_SHARED_DATA)")
    results = {"250x250": detect_align_rate(paths, args.processes, size=250)}
    if args.native:
        results["native"] = detect_align_rate(paths, args.processes, size=None)
    for name, figures in results.items():
        print(f"{name}: {figures}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
