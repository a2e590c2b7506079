"""Align a whole tree of photos into the same tree of 112x112 crops, in parallel.

Used to prepare training data from raw photos and by `cqaface align`. Each photo gives its
largest face (the enrolment policy); every failure is kept with its reason, nothing stops the
run, and crops that already exist are skipped so that an interrupted run resumes.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".pgm", ".ppm", ".bmp", ".tif", ".tiff", ".gif"}
)
OUTPUT_SUFFIXES = (".png", ".jpg", ".webp")


@dataclass
class AlignReport:
    source: str
    destination: str
    total: int = 0
    aligned: int = 0
    skipped: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def photos_under(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            yield path


_DETECTOR = None


def _init_worker(min_face_size: int) -> None:
    import torch

    from embedder.mtcnn import MTCNN

    global _DETECTOR
    torch.set_num_threads(1)  # one process per core beats threads inside MTCNN
    _DETECTOR = MTCNN(min_face_size=min_face_size)


def _align_one(job: tuple[Path, Path]) -> tuple[str, str | None, str | None]:
    from embedder.errors import FaceInputError
    from embedder.faces import faces_from_file

    src, dst = job
    try:
        face = faces_from_file(src, detector=_DETECTOR, policy="largest")[0]
    except FaceInputError as error:
        return str(src), error.code, str(error)
    except OSError as error:
        return str(src), "unreadable_file", str(error)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.part")
    Image.fromarray(face.crop).save(tmp, format=Image.registered_extensions()[dst.suffix])
    tmp.replace(dst)
    return str(src), None, None


def align_tree(
    src: Path,
    dst: Path,
    *,
    workers: int = 1,
    suffix: str = ".png",
    min_face_size: int = 20,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> AlignReport:
    if suffix not in OUTPUT_SUFFIXES:
        raise ValueError(f"output format must be one of {OUTPUT_SUFFIXES}, not {suffix!r}")
    if not src.is_dir():
        raise NotADirectoryError(f"{src} is not a folder of photos")
    start = time.perf_counter()
    report = AlignReport(str(src), str(dst))
    jobs = []
    for photo in photos_under(src):
        report.total += 1
        target = (dst / photo.relative_to(src)).with_suffix(suffix)
        if target.exists() and not overwrite:
            report.skipped += 1
        else:
            jobs.append((photo, target))
    if progress and report.skipped:
        progress(report.skipped)
    for path, code, message in _run(jobs, workers, min_face_size):
        if code is None:
            report.aligned += 1
        else:
            report.failures.append({"path": path, "code": code, "message": message or ""})
        if progress:
            progress(1)
    report.seconds = round(time.perf_counter() - start, 3)
    return report


def _run(jobs: list[tuple[Path, Path]], workers: int, min_face_size: int) -> Iterator[tuple]:
    if workers <= 1 or len(jobs) < 2:
        _init_worker(min_face_size)
        yield from map(_align_one, jobs)
        return
    context = mp.get_context("spawn")  # fork after torch threads start can deadlock
    with context.Pool(workers, _init_worker, (min_face_size,)) as pool:
        yield from pool.imap_unordered(_align_one, jobs, chunksize=8)
