"""MTCNN's retry (`CQAFACE_DETECTOR=mtcnn-retry`): MTCNN's own faces where it sees them whole, a
second look with a border where a box was cut by the photo's edge, and a relaxed look where it
found nothing. Tight and masked faces on real photos are in tests/test_scrfd.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedder import runtime
from embedder.imageio import load_image
from embedder.mtcnn import Detection, default_detector
from embedder.mtcnn_retry import RetryMTCNN, _in_context

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


def test_the_setting_chooses_the_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CQAFACE_DETECTOR", "mtcnn-retry")
    assert runtime.load_detector().name == "mtcnn-retry"
