"""Where an enrolled photo's time goes, and what a larger minimum face would change.

Profile: every celeba photo, one at a time, in one process on ``--threads`` threads (1: a
worker process's setting), for each runtime interleaved photo by photo: decode; the
detector's summed-area table; P-Net per pyramid level (resampling the level, the net, the
numpy after it); R-Net and O-Net (resampling the candidates, the net, the numpy after it);
alignment; then the embedding of the photos' faces in batches of 16. Milliseconds per photo.

Face sizes: the box side of every face found with the 20 px minimum, and of each photo's
largest face.

Outcomes: for each ``--min-faces`` value and runtime, each photo's enrolment outcome as the
serving encoder gives it (a face, ``no_face``, ``face_too_small``; the faces at or above the
minimum, which ``single`` counts)
against the reference (PyTorch eager, 20 px: the old path), the larger minimums skipping
the 20 px pyramid's finer levels (and, for comparison, a pyramid anchored anew at the
minimum, which shifts every level); for photos that keep their face,
whether the aligned crop is byte-identical, and the cosine between the old path's embedding
and the new one's.

By size: the serving path (`FaceEncoder.read`: the decode the working size allows, detection
at the working size, alignment from a decode large enough for the crop; then the embedding)
on every ``--size-step``-th photo as it is and placed in 1 MP and 12 MP canvases
(`large_photos.py`, JPEG q90), for each detector (MTCNN; SCRFD where its file is), interleaved
photo by photo: CPU milliseconds per photo of each stage (all threads), photos per CPU second,
and the resident memory of a fresh process per size and detector serving those photos.

    .venv/bin/python benchmarks/profile_detect.py --out var/profile-detect.json
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.large_photos import SIZES, canvas, jpeg  # noqa: E402
from embedder import checkpoint as ckpt  # noqa: E402
from embedder import mtcnn, settings  # noqa: E402
from embedder.errors import FaceInputError  # noqa: E402
from embedder.faces import (  # noqa: E402
    align_faces,
    choose_faces,
    decode_for,
    detect_photo,
    select_faces,
)
from embedder.imageio import load_image  # noqa: E402
from embedder.inference import Embedder  # noqa: E402
from embedder.mtcnn import MTCNN, Networks, torch_networks  # noqa: E402
from embedder.mtcnn_onnx import onnx_networks  # noqa: E402
from embedder.onnx_export import OnnxEmbedder  # noqa: E402
from identify.search.encode import FaceEncoder  # noqa: E402

DATA = Path(os.environ.get("CQAFACE_SHARED_DATA", ROOT.parent / "shared" / "data"))
BATCH = 16  # faces per embedding call, as the workers do
SIZE_BINS = (0, 20, 30, 40, 50, 60, 80, 100, 120, 150, 10_000)


class Clock:
    """Seconds accumulated per key, and the stage the detector is in."""

    def __init__(self, timer: Callable[[], float] = time.perf_counter) -> None:
        self.timer = timer
        self.seconds: dict[str, float] = defaultdict(float)
        self.stage = "table"
        self.level = 0

    def timed(self, key: Callable[[], str], call: Callable) -> Callable:
        def run(*args, **kwargs):
            start = self.timer()
            try:
                return call(*args, **kwargs)
            finally:
                self.seconds[key()] += self.timer() - start

        return run


def instrumented(networks: Networks, clock: Clock, min_face: float) -> MTCNN:
    """A detector whose nets and stages add their time to ``clock``."""

    def pnet_key() -> str:
        clock.level += 1
        return f"pnet.level{clock.level - 1}.net"

    nets = Networks(
        clock.timed(pnet_key, networks.pnet),
        clock.timed(lambda: "rnet.net", networks.rnet),
        clock.timed(lambda: "onet.net", networks.onet),
    )
    detector = _skipping(MTCNN(networks=nets), min_face)
    for stage in ("propose", "refine", "output"):
        method = getattr(detector, f"_{stage}")

        def enter(*args, _stage=stage, _method=method):
            clock.stage, clock.level = _stage, 0
            try:
                return _method(*args)
            finally:
                clock.stage = "table"

        detector.__dict__[f"_{stage}"] = clock.timed(lambda s=stage: f"{s}.total", enter)
    return detector


def resample_key(clock: Clock) -> str:
    if clock.stage == "propose":
        return f"pnet.level{clock.level}.resample"
    return {"refine": "rnet.resample", "output": "onet.resample"}.get(clock.stage, "table")


def profile(paths: list[Path], runtimes: dict, embedders: dict, min_face: float) -> dict:
    """Milliseconds per photo of each step, per runtime, interleaved photo by photo."""
    clocks = {name: Clock() for name in runtimes}
    detectors = {name: instrumented(n, clocks[name], min_face) for name, n in runtimes.items()}
    original = mtcnn._Integral.resample
    current: list[Clock] = []

    def resample(self, *args):
        clock = current[0]
        return clock.timed(lambda: resample_key(clock), original)(self, *args)

    mtcnn._Integral.resample = resample
    faces: dict[str, list[np.ndarray]] = {name: [] for name in runtimes}
    level_sides: dict[int, list[int]] = defaultdict(list)
    try:
        for path in paths:
            for name, detector in detectors.items():
                current[:] = [clocks[name]]
                clock = clocks[name]
                start = time.perf_counter()
                image = load_image(path.read_bytes())
                clock.seconds["decode"] += time.perf_counter() - start
                start = time.perf_counter()
                found = detector.detect(image)
                clock.seconds["detect.total"] += time.perf_counter() - start
                start = time.perf_counter()
                with contextlib.suppress(FaceInputError):  # counted as enrolment counts it
                    faces[name] += [f.crop for f in select_faces(image, found, policy="largest")]
                clock.seconds["align"] += time.perf_counter() - start
            scales = mtcnn._pyramid(*image.shape[:2], 20, 0.709)
            for level, scale in enumerate(mtcnn._from_level_for(scales, min_face)):
                level_sides[level].append(int(min(image.shape[:2]) * scale + 1))
    finally:
        mtcnn._Integral.resample = original
    for name, embedder in embedders.items():
        crops = faces[name]
        start = time.perf_counter()
        for k in range(0, len(crops), BATCH):
            embedder.embed(np.stack(crops[k : k + BATCH]))
        clocks[name].seconds["embed_batched_16"] += time.perf_counter() - start
    return {
        "photos": len(paths),
        "pnet_level_side_median": {
            str(k): statistics.median(v) for k, v in sorted(level_sides.items())
        },
        "ms_per_photo": {name: summarise(clock, len(paths)) for name, clock in clocks.items()},
    }


def summarise(clock: Clock, photos: int) -> dict:
    """Per-photo milliseconds; each stage split into resample, net and the numpy rest."""
    s = clock.seconds
    ms = {k: 1000 * v / photos for k, v in s.items()}
    levels = sorted({k.split(".")[1] for k in s if k.startswith("pnet.level")})
    out: dict = {"decode": ms.get("decode", 0.0)}
    stage_parts = {"propose": "pnet", "refine": "rnet", "output": "onet"}
    inside = 0.0
    for stage, net in stage_parts.items():
        total = ms.get(f"{stage}.total", 0.0)
        if net == "pnet":
            resample = sum(ms.get(f"pnet.{lv}.resample", 0.0) for lv in levels)
            run = sum(ms.get(f"pnet.{lv}.net", 0.0) for lv in levels)
            out["pnet_levels"] = {
                lv: {
                    "resample": round(ms.get(f"pnet.{lv}.resample", 0.0), 3),
                    "net": round(ms.get(f"pnet.{lv}.net", 0.0), 3),
                }
                for lv in levels
            }
        else:
            resample, run = ms.get(f"{net}.resample", 0.0), ms.get(f"{net}.net", 0.0)
        out[net] = {
            "resample": resample,
            "net": run,
            "numpy_rest": total - resample - run,
            "total": total,
        }
        inside += total
    out["table_and_split"] = ms["detect.total"] - inside
    out["detect_total"] = ms["detect.total"]
    out["align"] = ms["align"]
    out["embed_batched_16"] = ms.get("embed_batched_16", 0.0)
    steps = ("decode", "detect_total", "align", "embed_batched_16")
    out["photo_total"] = sum(out[step] for step in steps)
    return _rounded(out)


def _rounded(value):
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return round(value, 3) if isinstance(value, float) else value


def face_sizes(paths: list[Path], networks: Networks) -> dict:
    """Box sides (px) of every face found at 20 px, and of each photo's largest face."""
    detector = MTCNN(networks=networks)
    every, largest = [], []
    for path in paths:
        found = detector.detect(load_image(path.read_bytes()))
        every += [d.size for d in found]
        if found:
            largest.append(max(d.size for d in found))

    def histogram(sizes: list[float]) -> dict:
        counts = np.histogram(sizes, bins=SIZE_BINS)[0]
        return {
            f"{lo}-{hi}": int(c)
            for lo, hi, c in zip(SIZE_BINS[:-1], SIZE_BINS[1:], counts, strict=True)
        }

    def quantiles(sizes: list[float]) -> dict:
        return {f"p{q}": round(float(np.percentile(sizes, q)), 1) for q in (0, 1, 5, 50, 95, 100)}

    return {
        "faces": len(every),
        "photos_with_a_face": len(largest),
        "every_face": {"histogram": histogram(every), "quantiles": quantiles(every)},
        "largest_face": {"histogram": histogram(largest), "quantiles": quantiles(largest)},
    }


def _skipping(detector: MTCNN, min_face: float) -> MTCNN:
    """``detector`` (its 20 px pyramid) skipping the levels finer than ``min_face`` needs."""
    detector.detect = functools.partial(detector.detect, min_face_size=min_face)
    return detector


def outcome(encoder: FaceEncoder, image: np.ndarray, minimum: int) -> tuple:
    """A gallery photo's outcome as enrolment sees it (the faces of ``minimum`` px or more,
    largest first, the short pyramid then the whole one): its code, the faces that a
    ``single`` policy counts, and the largest face's crop."""
    os.environ["CQAFACE_ENROL_MIN_FACE_SIZE"] = str(minimum)
    try:
        faces = encoder.faces(image, "all", gallery=True)
    except FaceInputError as error:
        return error.code, 0, None
    return "face", len(faces), faces[0].crop


def outcomes(paths: list[Path], runtimes: dict, embedders: dict, minimums: list[int]) -> dict:
    """Each (runtime, minimum) against PyTorch eager at 20 px, photo by photo."""
    os.environ["CQAFACE_MIN_FACE_SIZE"] = "20"
    reference = FaceEncoder(None, detector=MTCNN(networks=runtimes["torch"]))
    candidates = {
        f"{name}@{m}": (FaceEncoder(None, detector=MTCNN(networks=nets)), m, name)
        for name, nets in runtimes.items()
        for m in minimums
    }
    for m in minimums:  # a pyramid anchored anew at the minimum, for comparison
        if m != 20:
            detector = MTCNN(min_face_size=m, networks=runtimes["torch"])
            candidates[f"torch@{m}_anchored_anew"] = (
                FaceEncoder(None, detector=detector),
                m,
                "torch",
            )
    changes = {key: Counter() for key in candidates}
    identical = Counter()
    kept = Counter()
    cosines: dict[str, list[float]] = defaultdict(list)
    examples: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        image = load_image(path.read_bytes())
        before = outcome(reference, image, 20)
        vectors: dict[tuple[str, bytes], np.ndarray] = {}

        def vector(name: str, crop: np.ndarray, cache: dict = vectors) -> np.ndarray:
            key = (name, crop.tobytes())
            if key not in cache:
                cache[key] = embedders[name].embed(crop[None]).vectors[0]
            return cache[key]

        for key, (encoder, m, name) in candidates.items():
            after = outcome(encoder, image, m)
            if (before[0], before[1]) != (after[0], after[1]):
                changes[key][f"{before[0]}/{before[1]} -> {after[0]}/{after[1]}"] += 1
                if len(examples[key]) < 10:
                    examples[key].append(str(path.relative_to(DATA)))
            if before[2] is not None and after[2] is not None:
                kept[key] += 1
                identical[key] += bool(np.array_equal(before[2], after[2]))
                old, new = vector("torch", before[2]), vector(name, after[2])
                cosines[key].append(float(np.dot(old, new)))
    return {
        key: {
            "photos_with_a_changed_outcome": sum(changes[key].values()),
            "changes": dict(changes[key]),
            "examples": examples[key],
            "photos_keeping_their_face": kept[key],
            "identical_crops": identical[key],
            "min_cosine_old_path": round(min(cosines[key]), 7) if cosines[key] else None,
        }
        for key in candidates
    }


def by_size(paths: list[Path], sizes: list[str]) -> dict:
    """The serving path per photo size and detector, interleaved photo by photo; then the
    peak memory of each in a fresh process (a process keeps what one photo mapped for the
    next, so one process cannot tell the sizes apart)."""
    detectors = ["mtcnn"]
    if settings.scrfd_model().is_file():
        detectors.append("scrfd")
    else:
        print(f"no SCRFD: {settings.scrfd_model()} is absent", flush=True)
    encoders = {name: _serving(name) for name in detectors}
    # CPU time (all threads): on a machine whose cores other jobs hold, waiting is not cost
    clocks = {(name, size): Clock(time.process_time) for name in encoders for size in sizes}
    with tempfile.TemporaryDirectory() as folder:
        files: dict[str, list[str]] = defaultdict(list)
        for path in paths:
            original = load_image(path)
            for size in sizes:
                if size == "celeba":
                    data = path.read_bytes()
                else:
                    data = jpeg(canvas(original, SIZES[size])[0])
                files[size].append(str(Path(folder) / f"{size}-{len(files[size])}.jpg"))
                Path(files[size][-1]).write_bytes(data)
                for name, encoder in encoders.items():
                    serve(encoder, data, clocks[name, size].timed)
        peaks = {(name, size): _peak_mb(name, files[size]) for size in sizes for name in detectors}
    result: dict = {"photos": len(paths), "sizes": {z: SIZES.get(z, "as is") for z in sizes}}
    for (name, size), clock in clocks.items():
        result.setdefault(name, {})[size] = {
            "ms_per_photo": {k: round(1000 * v / len(paths), 1) for k, v in clock.seconds.items()},
            "photos_per_cpu_s": round(len(paths) / sum(clock.seconds.values()), 2),
            **peaks[name, size],
        }
    return result


def _serving(detector: str) -> FaceEncoder:
    """The serving encoder with ``detector``, its detector made now, under that setting."""
    os.environ["CQAFACE_DETECTOR"] = detector
    try:
        encoder = FaceEncoder.load(None)
        assert encoder.detector_name == detector
    finally:
        os.environ.pop("CQAFACE_DETECTOR")
    return encoder


def serve(encoder: FaceEncoder, data: bytes, timed: Callable = lambda _, call: call) -> None:
    """One photo through the serving path, each stage through ``timed`` (a Clock's)."""
    with contextlib.suppress(FaceInputError):  # counted, as enrolment counts it
        photo = timed(lambda: "decode", decode_for)(encoder.detector, data)
        found = timed(lambda: "detect", detect_photo)(encoder.detector, photo)
        chosen = choose_faces(found, photo.size, policy="largest")
        faces = timed(lambda: "align (finer decode included)", align_faces)(photo, chosen, data)
        timed(lambda: "embed", encoder.encode)(faces, "no")


def _peak_mb(detector: str, files: list[str]) -> dict[str, float]:
    """Resident MB of a fresh process that serves ``files`` with ``detector``: its peak (the
    model's loading included), once loaded and warm, and its peak while serving them."""
    command = [sys.executable, __file__, "--serve", detector, *files]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE)
    out = process.stdout.read() if process.stdout else b""
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise RuntimeError(f"{command[:4]} failed with status {status}")
    figures = {k: round(v, 1) for k, v in json.loads(out).items()}
    return {"process_peak_mb": round(usage.ru_maxrss / 1024, 1), **figures}  # Linux: KiB


def _memory_mb(field: str) -> float:
    """This process's VmRSS or VmHWM, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise LookupError(field)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "profile-detect.json")
    parser.add_argument("--threads", type=int, default=1, help="1: a worker process's setting")
    parser.add_argument("--photos", type=int, default=0, help="0: all photos")
    parser.add_argument("--data", default="celeba-photos", help="a folder of shared/data")
    parser.add_argument("--min-faces", type=int, nargs="+", default=[20, 30, 40])
    parser.add_argument("--profile-min-faces", type=int, nargs="+", default=[20, 40])
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["profile", "sizes", "outcomes", "by_size"]
    )
    parser.add_argument("--size-step", type=int, default=100, help="by size: every n-th photo")
    parser.add_argument(
        "--by-sizes", nargs="+", default=["celeba", "1mp", "12mp"], choices=["celeba", *SIZES]
    )
    parser.add_argument("--serve", nargs="+", help=argparse.SUPPRESS)  # DETECTOR FILE...: a child
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.serve:  # by size's child: the serving path over the files, for its peak memory
        encoder = _serving(args.serve[0])
        serve(encoder, Path(args.serve[1]).read_bytes())  # warm: the runtimes' first buffers
        loaded = _memory_mb("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here: the photos' own
        for path in args.serve[1:]:
            serve(encoder, Path(path).read_bytes())
        print(json.dumps({"loaded_mb": loaded, "serving_peak_mb": _memory_mb("VmHWM")}))
        return
    paths = sorted(path for path in (DATA / args.data).glob("*/*") if path.is_file())
    if args.photos:
        paths = paths[:: max(1, len(paths) // args.photos)][: args.photos]
    checkpoint = ckpt.load(settings.model_path())
    embedders = {
        "torch": Embedder.from_checkpoint(checkpoint, device="cpu", threads=args.threads),
        "onnx": OnnxEmbedder.from_checkpoint(checkpoint, threads=args.threads),
    }
    runtimes = {"torch": torch_networks("cpu"), "onnx": onnx_networks(args.threads)}
    result: dict = {"data": args.data, "threads": args.threads, "photos": len(paths)}
    if "profile" not in args.skip:
        for m in args.profile_min_faces:  # the embedding is timed once, with the first
            key = "profile" if m == args.profile_min_faces[0] else f"profile_min{m}"
            result[key] = profile(paths, runtimes, embedders if key == "profile" else {}, m)
        print(json.dumps(result, indent=1), flush=True)
    if "sizes" not in args.skip:
        result["face_sizes"] = face_sizes(paths, runtimes["torch"])
        print("face sizes:", json.dumps(result["face_sizes"]), flush=True)
    if "outcomes" not in args.skip:
        result["outcomes"] = outcomes(paths, runtimes, embedders, args.min_faces)
        print("outcomes:", json.dumps(result["outcomes"], indent=1), flush=True)
    if "by_size" not in args.skip:
        result["by_size"] = by_size(paths[:: args.size_step], args.by_sizes)
        print("by size:", json.dumps(result["by_size"], indent=1), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
