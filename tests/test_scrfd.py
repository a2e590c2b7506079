"""SCRFD-500MF decoded from its raw ONNX outputs, and the two faces every detector must find on
real photos: one that fills the photo (an ID-style crop) and one with its lower half covered.

The model is insightface's file, read in place from ../shared/models (CQAFACE_SHARED_MODELS or
CQAFACE_SCRFD_MODEL override it); the tests that need it skip with the reason when it is absent.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from embedder import runtime, settings
from embedder.align import similarity_transform, template
from embedder.imageio import load_image
from embedder.masks import apply_mask
from embedder.mtcnn import default_detector
from embedder.mtcnn_retry import RetryMTCNN
from embedder.scrfd import SCRFD, DetectorModelMissing

# A face counts as found where each point lies within a quarter of the eye distance of the
# reference: on the right feature (an eye is about a third of that distance wide), whatever
# each detector's own idea of where on the feature its point goes (SCRFD's points sit up to
# 0.18 eye distances from MTCNN's on bare celeba photos); a box on the wrong part of the face
# or a second face is further.
POINT_BOUND = 0.25
PHOTOS = 40  # every photo of this many identities' first photo


@pytest.fixture(scope="module")
def scrfd() -> SCRFD:
    path = settings.scrfd_model()
    if not path.is_file():
        pytest.skip(f"SCRFD model not found at {path} (set CQAFACE_SHARED_MODELS)")
    return SCRFD(path)


# MTCNN, the paper's detector, misses both (issue #32): on an ID-style crop it returns boxes on
# part of the face (points half an eye distance off), and it loses 7 of the 40 masked photos.
_MTCNN_MISSES = pytest.mark.xfail(strict=True, reason="MTCNN misses tight and masked faces")
# Its retry (embedder.mtcnn_retry) finds the tight crops in context, and takes a masked face's
# points from an O-Net fine-tuned on masks (O-Net's own eyes are up to half an eye distance off
# on 5 of the 40 masked photos).


@pytest.fixture(
    scope="module", params=[pytest.param("mtcnn", marks=_MTCNN_MISSES), "mtcnn-retry", "scrfd"]
)
def detector(request: pytest.FixtureRequest):
    """The detector a test is parametrised with; only SCRFD needs (and skips without) its file."""
    if request.param == "scrfd":
        return request.getfixturevalue("scrfd")
    return default_detector() if request.param == "mtcnn" else RetryMTCNN(default_detector())


@pytest.fixture(scope="module")
def references(celeba_photos_dir: Path, celeba_aligned_dir: Path) -> list[tuple[Path, np.ndarray]]:
    """The first photo of each of the first PHOTOS identities with its reference landmarks."""
    with open(celeba_aligned_dir / "landmarks.csv", newline="") as table:
        rows = {(r["identity"], r["image"]): r for r in csv.DictReader(table)}
    columns = [f"{p}_{a}" for p in ("left_eye", "right_eye", "nose", "mouth_left",
                                    "mouth_right") for a in "xy"]  # fmt: skip
    chosen = []
    for folder in sorted(p for p in celeba_photos_dir.iterdir() if p.is_dir())[:PHOTOS]:
        path = sorted(folder.glob("*.jpg"))[0]
        row = rows[(folder.name, path.stem)]
        chosen.append((path, np.array([float(row[c]) for c in columns]).reshape(5, 2)))
    return chosen


def _matches(found: list, expected: np.ndarray, points: int = 5) -> bool:
    """Some face has its first ``points`` points within POINT_BOUND eye distances of the
    reference's."""
    ocular = np.linalg.norm(expected[1] - expected[0])
    return any(
        np.linalg.norm(face.landmarks[:points] - expected[:points], axis=1).max()
        < POINT_BOUND * ocular
        for face in found
    )


def test_scrfd_finds_the_reference_faces_with_their_landmarks(
    scrfd: SCRFD, references: list[tuple[Path, np.ndarray]]
) -> None:
    assert all(_matches(scrfd.detect(load_image(path)), marks) for path, marks in references)


def test_a_face_that_fills_the_photo_is_found(
    detector, references: list[tuple[Path, np.ndarray]]
) -> None:
    """An ID-style crop: the photo cut to the face, from the eyebrows' height to the chin."""
    for path, marks in references:
        image = load_image(path)
        ocular = np.linalg.norm(marks[1] - marks[0])
        x0, x1 = marks[:, 0].min() - 0.6 * ocular, marks[:, 0].max() + 0.6 * ocular
        y0, y1 = marks[:2, 1].mean() - 0.6 * ocular, marks[3:, 1].mean() + 0.7 * ocular
        left, top = max(0, round(x0)), max(0, round(y0))
        crop = np.ascontiguousarray(image[top : round(y1), left : round(x1)])
        assert _matches(detector.detect(crop), marks - [left, top]), path


def test_a_face_with_its_lower_half_covered_is_found(
    detector, references: list[tuple[Path, np.ndarray]]
) -> None:
    """A synthetic mask drawn on the real photo, placed by the reference landmarks; the nose
    tip and mouth corners under the mask are guesses, so only the eyes are held to the bound."""
    for seed, (path, marks) in enumerate(references):
        masked = apply_mask(load_image(path), rng=seed, landmarks=marks.astype(np.float32))
        assert masked.coverage.sum() > 0
        assert _matches(detector.detect(masked.image), marks, points=2), path


def test_scrfd_landmarks_align_onto_the_template(scrfd: SCRFD, references) -> None:
    """Its 5 points are insightface's: mapped onto the template, none lands far from its slot."""
    for path, _ in references:
        face = max(scrfd.detect(load_image(path)), key=lambda f: f.area)
        matrix = similarity_transform(face.landmarks, template())
        placed = face.landmarks @ matrix[:, :2].T + matrix[:, 2]
        assert np.abs(placed - template()).max() < 0.1 * 112, path


def test_a_missing_scrfd_model_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CQAFACE_DETECTOR", "scrfd")
    monkeypatch.setenv("CQAFACE_SCRFD_MODEL", str(tmp_path / "absent.onnx"))
    with pytest.raises(DetectorModelMissing, match=r"absent\.onnx not found") as error:
        runtime.load_detector()
    assert isinstance(error.value, LookupError) and "\n" not in str(error.value)


def test_an_unknown_detector_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CQAFACE_DETECTOR", "haar")
    with pytest.raises(ValueError, match="CQAFACE_DETECTOR='haar'"):
        runtime.load_detector()


def test_cqaface_detect_without_the_scrfd_model_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from identify.cli.main import EXIT_USAGE, main

    monkeypatch.setenv("CQAFACE_DETECTOR", "scrfd")
    monkeypatch.setenv("CQAFACE_SCRFD_MODEL", str(tmp_path / "absent.onnx"))
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"never read")
    assert main(["detect", str(photo)]) == EXIT_USAGE
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith(f"cqaface detect: error: SCRFD model {tmp_path / 'absent.onnx'}")


def test_anchor_outputs_decode_into_photo_pixels() -> None:
    """One anchor over the threshold: stride 16, cell (row 1, column 2), second anchor of the
    cell: centre (32, 16); distances and point offsets are in units of the stride."""
    from embedder.scrfd import _centres, _decode

    assert _centres(2, 3, 8)[:6].tolist() == [[0, 0], [0, 0], [8, 0], [8, 0], [16, 0], [16, 0]]
    height = width = 64
    outputs = {}
    for stride in (8, 16, 32):
        anchors = (height // stride) * (width // stride) * 2
        outputs[f"score_{stride}"] = np.zeros((1, anchors, 1), np.float32)
        outputs[f"bbox_{stride}"] = np.zeros((1, anchors, 4), np.float32)
        outputs[f"kps_{stride}"] = np.zeros((1, anchors, 10), np.float32)
    index = (1 * (width // 16) + 2) * 2 + 1
    outputs["score_16"][0, index, 0] = 0.9
    outputs["bbox_16"][0, index] = [1.0, 0.5, 2.0, 1.5]
    outputs["kps_16"][0, index] = [-0.5, -0.25, 0.5, -0.25, 0, 0.25, -0.25, 0.5, 0.25, 0.5]
    boxes, scores, points = _decode(outputs, height, width, 0.5)
    assert boxes.tolist() == [[16.0, 8.0, 64.0, 40.0]]
    assert scores.tolist() == [pytest.approx(0.9)]
    assert points[0].tolist() == [[24, 12], [40, 12], [32, 20], [28, 24], [36, 24]]


def test_a_small_face_in_a_small_web_photo_is_found_by_the_scaled_up_pass(
    scrfd: SCRFD, celeba_photos_dir: Path
) -> None:
    """Real photos shrunk to 28 px on a 256 x 192 grey canvas, as tiny faces in web photos:
    the photo as it is shows them to SCRFD too small (it found 2 of these 10 in one pass)."""
    import cv2

    for path in sorted(celeba_photos_dir.glob("*/*.jpg"))[:10]:
        canvas = np.full((192, 256, 3), 128, np.uint8)
        small = cv2.resize(load_image(path), (28, 28), interpolation=cv2.INTER_AREA)
        canvas[80:108, 100:128] = small
        centres = [
            ((f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2) for f in scrfd.detect(canvas)
        ]
        assert any(100 <= x <= 128 and 80 <= y <= 108 for x, y in centres), path
