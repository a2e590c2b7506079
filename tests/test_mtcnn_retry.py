"""MTCNN's retry (`CQAFACE_DETECTOR=mtcnn-retry`): MTCNN's own faces where it sees them whole, a
second look with a border where a box was cut by the photo's edge, a relaxed look where it
found nothing, and the masked-face O-Net's points where O-Net's disagree with them. Tight and
masked faces on real photos are in tests/test_scrfd.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedder import runtime
from embedder.imageio import load_image
from embedder.masks import apply_mask
from embedder.mtcnn import Detection, default_detector
from embedder.mtcnn_retry import RetryMTCNN, _in_context, _rechecked

PHOTOS = 40


@pytest.fixture(scope="module")
def retry() -> RetryMTCNN:
    return RetryMTCNN(default_detector())


def _same(one: list[Detection], other: list[Detection]) -> bool:
    return len(one) == len(other) and all(
        a.box == b.box and a.score == b.score and np.array_equal(a.landmarks, b.landmarks)
        for a, b in zip(one, other, strict=True)
    )


def test_faces_inside_the_photo_are_mtcnns_own(retry: RetryMTCNN, celeba_photos_dir: Path) -> None:
    """The model was trained on MTCNN's crops: where MTCNN sees every face whole, the retry
    changes nothing, to the bit."""
    folders = sorted(p for p in celeba_photos_dir.iterdir() if p.is_dir())[:PHOTOS]
    for folder in folders:
        image = load_image(sorted(folder.glob("*.jpg"))[0])
        assert _same(retry.detect(image), default_detector().detect(image)), folder


def test_a_photo_without_a_face_stays_without_one(retry: RetryMTCNN) -> None:
    flat = np.full((200, 160, 3), 128, np.uint8)
    assert retry.detect(flat) == []


def test_a_face_cut_by_the_edge_is_replaced_only_where_the_points_disagree() -> None:
    marks = np.array([[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]], np.float32)
    first = Detection((0, 0, 100, 100), 0.99, marks)
    agreeing = Detection((-5, -5, 105, 105), 0.98, marks + 2)  # 2 px of a 40 px eye distance
    elsewhere = Detection((-5, -5, 105, 105), 0.9, marks * 1.3)
    assert _in_context([first], [agreeing]) == [first]
    assert _in_context([first], [elsewhere]) == [elsewhere]
    assert _in_context([first], []) == [first]


def test_the_masked_face_onets_points_replace_mtcnns_only_where_it_sees_a_mask() -> None:
    marks = np.array([[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]], np.float32)
    face = Detection((0, 0, 100, 100), 0.99, marks)
    seen = np.stack([marks * [1.3, 1]])
    assert _rechecked([face], seen, np.array([0.49])) == [face]
    [masked] = _rechecked([face], seen, np.array([0.5]))
    assert (masked.box, masked.score) == (face.box, face.score)
    assert np.array_equal(masked.landmarks, seen[0])


def test_a_masked_face_gets_its_eyes_from_the_masked_face_onet(
    retry: RetryMTCNN, celeba_photos_dir: Path, celeba_aligned_dir: Path
) -> None:
    """The 33rd masked photo of tests/test_scrfd.py: O-Net's eyes are 0.56 eye distances off
    there; the masked-face O-Net's are within 0.25, on the same face (box and score unchanged)."""
    import csv

    folder = sorted(p for p in celeba_photos_dir.iterdir() if p.is_dir())[32]
    path = sorted(folder.glob("*.jpg"))[0]
    with open(celeba_aligned_dir / "landmarks.csv", newline="") as table:
        [row] = [r for r in csv.DictReader(table) if r["image"] == path.stem]
    points = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
    marks = np.array([[float(row[f"{p}_{a}"]) for a in "xy"] for p in points])
    eyes = marks[:2]
    image = apply_mask(load_image(path), rng=32, landmarks=marks.astype(np.float32)).image
    [before], [after] = retry.looks(image), retry.detect(image)
    ocular = np.linalg.norm(eyes[1] - eyes[0])
    assert np.linalg.norm(before.landmarks[:2] - eyes, axis=1).max() > 0.25 * ocular
    assert np.linalg.norm(after.landmarks[:2] - eyes, axis=1).max() < 0.25 * ocular
    assert (after.box, after.score) == (before.box, before.score)


def test_the_setting_chooses_the_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CQAFACE_DETECTOR", "mtcnn-retry")
    assert runtime.load_detector().name == "mtcnn-retry"
