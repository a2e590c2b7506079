"""The masked-face O-Net's check in `mtcnn-retry`, before and after, side by side in one run.

"Before" is `RetryMTCNN.looks` (MTCNN's first pass and its two looks), "after" is
`RetryMTCNN.detect` (the same faces, with the masked-face O-Net's points where they disagree):
- masked40: the 40 masked photos of tests/test_scrfd.py (each of the first 40 identities'
  first photo, mask seed = its index): photos whose eyes are found, by the test's rule (both
  eyes within 0.25 eye distances of celeba-112/landmarks.csv);
- masked: every ``--step``-th celeba photo with a synthetic mask (seed = the photo's index in
  the full sorted list), the same rule;
- bare: every celeba photo as it is: faces lost and gained (matched by box overlap), faces
  whose points changed, and how far the points of every face moved (largest point distance
  over the face's eye distance; median, 95th percentile, largest);
- rwmfd: the held-out half of rwmfd-photos (`compare_detectors.py --half test`): photos with a
  face, faces, and faces whose points changed.

    .venv/bin/python benchmarks/masked_eyes.py --out var/masked-eyes.json [--step 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.compare_detectors import DATA, references, rwmfd_photos  # noqa: E402
from embedder.imageio import load_image  # noqa: E402
from embedder.masks import apply_mask  # noqa: E402
from embedder.mtcnn import Detection  # noqa: E402
from embedder.mtcnn_onnx import onnx_mtcnn  # noqa: E402
from embedder.mtcnn_retry import RetryMTCNN  # noqa: E402

BOUND = 0.25  # eye distances, as POINT_BOUND in tests/test_scrfd.py
TEST_PHOTOS = 40  # as PHOTOS in tests/test_scrfd.py


def eyes_found(found: list[Detection], marks: np.ndarray) -> bool:
    """tests/test_scrfd.py's `_matches` with points=2."""
    ocular = np.linalg.norm(marks[1] - marks[0])
    return any(
        np.linalg.norm(face.landmarks[:2] - marks[:2], axis=1).max() < BOUND * ocular
        for face in found
    )


def moved(before: Detection, after: Detection) -> float:
    """The largest point movement over the face's eye distance (MTCNN's points)."""
    ocular = float(np.linalg.norm(before.landmarks[1] - before.landmarks[0]))
    return float(np.linalg.norm(after.landmarks - before.landmarks, axis=1).max()) / ocular


def masked_rate(retry: RetryMTCNN, paths: list[tuple[int, Path]], marks_of: dict) -> dict:
    hits = {"before": 0, "after": 0}
    for seed, path in paths:
        marks = marks_of[(path.parent.name, path.stem)]
        image = apply_mask(load_image(path), rng=seed, landmarks=marks.astype(np.float32)).image
        looks = retry.looks(image)
        hits["before"] += eyes_found(looks, marks)
        hits["after"] += eyes_found(retry.detect(image), marks)
    return {"photos": len(paths), **{k: v / len(paths) for k, v in hits.items()}}


def changes(retry: RetryMTCNN, paths: list[Path]) -> dict:
    """Faces lost, gained and moved by the check, and photos with a face before and after."""
    movement, lost, gained, with_face = [], 0, 0, {"before": 0, "after": 0}
    for path in paths:
        image = load_image(path)
        before, after = retry.looks(image), retry.detect(image)
        with_face["before"] += bool(before)
        with_face["after"] += bool(after)
        pairs = {b.box: b for b in before}
        lost += sum(b.box not in {a.box for a in after} for b in before)
        gained += sum(a.box not in pairs for a in after)
        movement += [moved(pairs[a.box], a) for a in after if a.box in pairs]
    values = np.array(movement)
    return {
        "photos": len(paths),
        "with_face": {k: v / len(paths) for k, v in with_face.items()},
        "faces": len(values),
        "faces_lost": lost,
        "faces_gained": gained,
        "faces_changed": int((values > 0).sum()),
        "movement_median": float(np.median(values)) if len(values) else 0.0,
        "movement_p95": float(np.percentile(values, 95)) if len(values) else 0.0,
        "movement_max": float(values.max()) if len(values) else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--step", type=int, default=2, help="of the masked celeba photos")
    parser.add_argument("--skip", nargs="*", default=[], choices=("masked", "bare", "rwmfd"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    retry = RetryMTCNN(onnx_mtcnn(threads=1))
    marks_of = references()
    photos = sorted((DATA / "celeba-photos").glob("*/*.jpg"))
    folders = sorted({path.parent for path in photos})[:TEST_PHOTOS]
    first = [(i, sorted(folder.glob("*.jpg"))[0]) for i, folder in enumerate(folders)]
    start = time.time()
    result: dict = {"masked40": masked_rate(retry, first, marks_of)}
    print("masked40", result["masked40"], flush=True)
    if "masked" not in args.skip:
        chosen = list(enumerate(photos))[:: args.step]
        result["masked"] = masked_rate(retry, chosen, marks_of)
        print("masked", result["masked"], flush=True)
    if "bare" not in args.skip:
        result["bare"] = changes(retry, photos)
        print("bare", result["bare"], flush=True)
    if "rwmfd" not in args.skip:
        result["rwmfd_test_half"] = changes(retry, rwmfd_photos("test"))
        print("rwmfd", result["rwmfd_test_half"], flush=True)
    result["seconds"] = round(time.time() - start)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
