"""MTCNN, SCRFD-500MF and YuNet side by side on the same photos, in one run (issue #32).

Data (read in place from ../shared/data):
- rwmfd-photos: real masked faces, no labels: photos where a face is found, faces per photo,
  and photos where a face is found that SCRFD also finds (at a score of 0.3 or more, boxes
  overlapping by IoU 0.3: "confirmed", since a face found anywhere may be a false one);
  `--half test` keeps the held-out half of a split by file (seed 0) that tuning never saw;
- celeba-photos bare, with a synthetic mask drawn on the photo before detection (placed by the
  reference landmarks of celeba-112/landmarks.csv, seeded per photo), and cut to ID-style
  tight crops: recall (a detection whose points lie within a quarter of the eye distance of the
  reference: all 5 points bare and tight, the eyes under a mask), other detections (false),
  landmark error of the found face (mean distance / eye distance; the reference points are
  MTCNN's, so on bare photos this is how far each detector's points sit from MTCNN's);
- ORL: recall (a face found), detections beyond the one face (false);
- time: milliseconds per photo, detectors interleaved photo by photo;
- Rank-1 (bare probes) and M2N (masked probes, bare gallery) on celeba-photos through each
  detector's crops with the shipped model: gallery = each identity's first photo, probes =
  the rest; a probe without a face is a miss.

    .venv/bin/python benchmarks/compare_detectors.py --out var/compare-detectors.json [--step 2]
        [--half test] [--detectors mtcnn,mtcnn-retry]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from embedder import runtime, settings  # noqa: E402
from embedder.errors import FaceInputError  # noqa: E402
from embedder.faces import select_faces  # noqa: E402
from embedder.imageio import load_image  # noqa: E402
from embedder.masks import apply_mask  # noqa: E402
from embedder.mtcnn import Detection  # noqa: E402
from embedder.mtcnn_onnx import onnx_mtcnn  # noqa: E402
from embedder.mtcnn_retry import RetryMTCNN  # noqa: E402
from embedder.scrfd import SCRFD  # noqa: E402

DATA = Path(os.environ.get("CQAFACE_SHARED_DATA", ROOT.parent / "shared" / "data"))
FOUND_BOUND = 0.25  # eye distances: the point is on the right feature (as in tests/test_scrfd)
POINTS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
CONFIRM_SCORE, CONFIRM_IOU = 0.3, 0.3  # an rwmfd face that SCRFD also sees


class YuNet:
    """libfacedetection's YuNet through `yuface` (BGR input, integer outputs)."""

    def __init__(self) -> None:
        # Its bundled OpenMP spins idle threads: on a busy machine that made it 30x slower
        # (390 vs 14 ms a celeba photo). One thread, set before the library loads.
        os.environ["OMP_NUM_THREADS"] = "1"
        import yuface

        self._detect = yuface.detect

    def detect(self, image: np.ndarray) -> list[Detection]:
        scores, boxes, marks = self._detect(np.ascontiguousarray(image[:, :, ::-1]))
        return [
            Detection(
                (float(x), float(y), float(x + w), float(y + h)),
                float(score) / 100,
                np.asarray(mark, np.float32).reshape(5, 2),
            )
            for score, (x, y, w, h), mark in zip(scores, boxes, marks, strict=True)
        ]


def detectors(names: list[str]) -> dict:
    mtcnn = onnx_mtcnn()
    makers = {
        "mtcnn": lambda: mtcnn,
        "mtcnn-retry": lambda: RetryMTCNN(mtcnn),
        "scrfd": lambda: SCRFD(settings.scrfd_model()),
        "yunet": YuNet,
    }
    found = {}
    for name in names:
        try:
            found[name] = makers[name]()
        except ImportError:
            print("yuface is not installed: YuNet left out", file=sys.stderr)
    return found


def rwmfd_photos(half: str) -> list[Path]:
    """rwmfd's photos, or one half of a split by file with a fixed seed (train: for tuning;
    test: held out)."""
    paths = sorted(p for p in (DATA / "rwmfd-photos").glob("*/*") if p.is_file())
    if half == "all":
        return paths
    order = list(range(len(paths)))
    random.Random(0).shuffle(order)
    chosen = order[: len(paths) // 2] if half == "train" else order[len(paths) // 2 :]
    return [paths[i] for i in sorted(chosen)]


def iou(one: Detection, other: Detection) -> float:
    a, b = np.array(one.box), np.array(other.box)
    inter = float(np.prod(np.maximum(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0)))
    return inter / (one.area + other.area - inter)


def references() -> dict[tuple[str, str], np.ndarray]:
    with open(DATA / "celeba-112" / "landmarks.csv", newline="") as table:
        rows = list(csv.DictReader(table))
    columns = [f"{p}_{a}" for p in POINTS for a in "xy"]
    return {
        (r["identity"], r["image"]): np.array([float(r[c]) for c in columns]).reshape(5, 2)
        for r in rows
    }


def tight(image: np.ndarray, marks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The photo cut to the face (brows to chin), as tests/test_scrfd does; marks moved."""
    ocular = np.linalg.norm(marks[1] - marks[0])
    x0, x1 = marks[:, 0].min() - 0.6 * ocular, marks[:, 0].max() + 0.6 * ocular
    y0, y1 = marks[:2, 1].mean() - 0.6 * ocular, marks[3:, 1].mean() + 0.7 * ocular
    left, top = max(0, round(x0)), max(0, round(y0))
    crop = np.ascontiguousarray(image[top : round(y1), left : round(x1)])
    return crop, marks - [left, top]


def match(found: list[Detection], marks: np.ndarray, points: int) -> tuple[int | None, float]:
    """Index of the detection on the reference face (None) and its landmark error."""
    ocular = np.linalg.norm(marks[1] - marks[0])
    best, error = None, float("inf")
    for i, face in enumerate(found):
        distance = np.linalg.norm(face.landmarks[:points] - marks[:points], axis=1)
        if distance.max() < FOUND_BOUND * ocular and distance.mean() / ocular < error:
            best, error = i, float(distance.mean() / ocular)
    return best, error


class Tally:
    """Per detector and data set: photos, found, false detections, errors, seconds."""

    def __init__(self) -> None:
        self.counts: dict = defaultdict(lambda: defaultdict(float))
        self.errors: dict = defaultdict(list)

    def add(self, key: tuple[str, str], **values: float) -> None:
        for name, value in values.items():
            self.counts[key][name] += value

    def summary(self) -> dict:
        out: dict = defaultdict(dict)
        for (detector, data), c in self.counts.items():
            row = {
                "photos": int(c["photos"]),
                "recall": c["found"] / c["photos"],
                "false_detections": int(c["false"]),
                "ms_per_photo": 1000 * c["seconds"] / c["photos"],
            }
            if "faces" in c:
                row["faces"] = int(c["faces"])
            if "confirmed" in c:
                row["confirmed_recall"] = c["confirmed"] / c["photos"]
                row["unconfirmed_faces"] = int(c["unconfirmed_faces"])
            errors = self.errors.get((detector, data))
            if errors:
                row["landmark_nme_median"] = float(np.median(errors))
                row["landmark_nme_p90"] = float(np.percentile(errors, 90))
            out[data][detector] = row
        return out


def timed(detector, image: np.ndarray) -> tuple[list[Detection], float]:
    start = time.perf_counter()
    found = detector.detect(image)
    return found, time.perf_counter() - start


def celeba(nets: dict, step: int, tally: Tally) -> dict:
    """The three celeba variants; returns each detector's largest-face crops for Rank-1."""
    marks_of = references()
    crops: dict = defaultdict(dict)
    paths = sorted((DATA / "celeba-photos").glob("*/*.jpg"))[::step]
    for index, path in enumerate(paths):
        key = (path.parent.name, path.stem)
        image, marks = load_image(path), marks_of[key]
        masked = apply_mask(image, rng=index, landmarks=marks.astype(np.float32)).image
        cut, cut_marks = tight(image, marks)
        variants = {
            "celeba-bare": (image, marks, 5),
            "celeba-masked": (masked, marks, 2),
            "celeba-tight": (cut, cut_marks, 5),
        }
        for name, net in nets.items():
            for data, (pixels, reference, points) in variants.items():
                found, seconds = timed(net, pixels)
                hit, error = match(found, reference, points)
                tally.add((name, data), photos=1, found=hit is not None, seconds=seconds)
                tally.add((name, data), false=len(found) - (hit is not None))
                if hit is not None:
                    tally.errors[(name, data)].append(error)
                if data != "celeba-tight":
                    crops[name][(data, key)] = _crop(pixels, found)
    return crops


def _crop(image: np.ndarray, found: list[Detection]) -> np.ndarray | None:
    try:
        return select_faces(image, found, policy="largest")[0].crop
    except FaceInputError:
        return None


def unlabelled(nets: dict, tally: Tally, data: str, paths: list[Path], referee=None) -> None:
    """rwmfd (faces found, no truth; confirmed by ``referee``) and ORL (one face per photo)."""
    for path in paths:
        image = load_image(path)
        seen = [] if referee is None else referee.detect(image)
        for name, net in nets.items():
            found, seconds = timed(net, image)
            tally.add((name, data), photos=1, found=bool(found), seconds=seconds)
            tally.add((name, data), faces=len(found))
            tally.add((name, data), false=max(0, len(found) - 1) if data == "orl" else 0)
            if referee is not None:
                confirmed = [f for f in found if any(iou(f, s) > CONFIRM_IOU for s in seen)]
                tally.add((name, data), confirmed=bool(confirmed))
                tally.add((name, data), unconfirmed_faces=len(found) - len(confirmed))


def identification(crops: dict) -> dict:
    """Rank-1 (bare probes) and M2N (masked probes) against each identity's first photo."""
    embedder = runtime.load_embedder()
    result = {}
    for name, by_key in crops.items():
        keys = sorted({key for _, key in by_key})
        first = {}
        for identity, image in keys:
            first.setdefault(identity, image)
        gallery = {i: by_key.get(("celeba-bare", (i, im))) for i, im in first.items()}
        gallery = {i: c for i, c in gallery.items() if c is not None}
        ids = sorted(gallery)
        vectors = np.asarray(embedder.embed([gallery[i] for i in ids]).vectors)
        row = {"gallery": len(ids)}
        for data, label in (("celeba-bare", "rank1"), ("celeba-masked", "m2n")):
            probes = [k for k in keys if first[k[0]] != k[1]]
            have = [(k, by_key.get((data, k))) for k in probes]
            usable = [(k, c) for k, c in have if c is not None]
            row[f"{label}_probes"] = len(probes)
            if not usable:
                row[label] = 0.0
                continue
            probe_vectors = np.asarray(embedder.embed([c for _, c in usable]).vectors)
            best = np.argmax(probe_vectors @ vectors.T, axis=1)
            right = sum(ids[b] == k[0] for b, (k, _) in zip(best, usable, strict=True))
            row[label] = right / len(probes)
        result[name] = row
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--step", type=int, default=1, help="every n-th photo of each set")
    parser.add_argument("--half", choices=("all", "train", "test"), default="all", help="of rwmfd")
    parser.add_argument("--detectors", default="mtcnn,mtcnn-retry,scrfd,yunet")
    args = parser.parse_args()
    nets, tally = detectors(args.detectors.split(",")), Tally()
    referee = SCRFD(settings.scrfd_model(), threshold=CONFIRM_SCORE)
    unlabelled(nets, tally, "rwmfd", rwmfd_photos(args.half)[:: args.step], referee)
    unlabelled(nets, tally, "orl", sorted((DATA / "orl").glob("s*/*.pgm"))[:: args.step])
    crops = celeba(nets, args.step, tally)
    report = {
        "step": args.step,
        "rwmfd_half": args.half,
        "sets": tally.summary(),
        "identification": identification(crops),
    }
    print(json.dumps(report, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
