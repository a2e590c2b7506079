"""The MTCNN detector: its output contract, batching, weights discovery, and its NMS."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from embedder.imageio import load_image
from embedder.mtcnn import (
    _MEAN,
    _SCALE,
    MTCNN,
    WEIGHTS_ENV,
    Detection,
    _Integral,
    default_detector,
    nms,
    weights_dir,
)


@pytest.fixture(scope="module")
def photos(celeba_photos_dir: Path) -> list[np.ndarray]:
    """Four real photos of different sizes."""
    paths = sorted(celeba_photos_dir.glob("*/*.jpg"))[::500][:4]
    return [load_image(path) for path in paths]


def test_a_face_comes_with_box_score_and_landmarks_in_anatomical_order(
    photos: list[np.ndarray],
) -> None:
    [face] = default_detector().detect(photos[0])
    assert isinstance(face, Detection)
    x1, y1, x2, y2 = face.box
    assert all(isinstance(v, float) for v in face.box)
    assert 0.7 < face.score <= 1.0
    assert face.landmarks.shape == (5, 2) and face.landmarks.dtype == np.float32
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = face.landmarks
    assert lx < nx < rx and mlx < mrx  # left/right as seen in the photo
    assert max(ly, ry) < ny < min(mly, mry)  # eyes above nose above mouth
    assert (x1 < face.landmarks[:, 0]).all() and (face.landmarks[:, 0] < x2).all()
    assert (y1 < face.landmarks[:, 1]).all() and (face.landmarks[:, 1] < y2).all()


def test_batching_photos_of_different_sizes_changes_no_result(photos: list[np.ndarray]) -> None:
    assert len({photo.shape for photo in photos}) > 1
    detector = default_detector()
    batched = detector.detect_batch(photos)
    assert len(batched) == len(photos)
    for photo, faces in zip(photos, batched, strict=True):
        alone = detector.detect(photo)
        assert len(alone) == len(faces) >= 1
        for a, b in zip(alone, faces, strict=True):
            np.testing.assert_allclose(a.box, b.box, atol=1e-3)
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)
            assert a.score == pytest.approx(b.score, abs=1e-5)
    assert detector.detect_batch([]) == []


def test_no_face_in_a_flat_or_tiny_photo_gives_an_empty_list() -> None:
    detector = default_detector()
    assert detector.detect(np.full((240, 320, 3), 128, np.uint8)) == []
    assert detector.detect(np.full((10, 10, 3), 128, np.uint8)) == []  # below the minimum face


def test_min_face_size_bounds_the_faces_searched_for(photos: list[np.ndarray]) -> None:
    face_side = default_detector().detect(photos[0])[0].size
    assert MTCNN(min_face_size=int(face_side * 0.8)).detect(photos[0])
    assert not MTCNN(min_face_size=int(face_side * 2.5)).detect(photos[0])


def test_a_photo_must_be_hxwx3_uint8() -> None:
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        default_detector().detect(np.zeros((100, 100), np.uint8))
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        default_detector().detect(np.zeros((100, 100, 3), np.float32))


def test_the_default_detector_is_created_once() -> None:
    assert default_detector() is default_detector()


def test_weights_come_from_the_facenet_wheel_without_importing_it() -> None:
    default_detector()
    assert {p.name for p in weights_dir().glob("*.pt")} >= {"pnet.pt", "rnet.pt", "onet.pt"}
    assert "facenet_pytorch" not in sys.modules  # it would drag in torchvision


def test_weights_folder_can_be_overridden_and_a_missing_file_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = weights_dir()
    monkeypatch.setenv(WEIGHTS_ENV, str(real))
    assert weights_dir() == real
    MTCNN()
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    install = re.escape("pip install --no-deps facenet-pytorch==2.6.0")
    with pytest.raises(FileNotFoundError, match=install):
        MTCNN()


def test_nms_is_greedy_by_score() -> None:
    # a overlaps b, b overlaps c, a does not overlap c: b falls to a, so c survives.
    boxes = np.array([[0, 0, 10, 10], [6, 0, 16, 10], [12, 0, 22, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    assert nms(boxes, scores, 0.2).tolist() == [0, 2]
    assert nms(boxes, scores[::-1].copy(), 0.2).tolist() == [2, 0]
    assert nms(boxes, scores, 0.9).tolist() == [0, 1, 2]


def test_nms_min_mode_removes_a_box_inside_a_bigger_one() -> None:
    boxes = np.array([[0, 0, 100, 100], [10, 10, 40, 40]], np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    assert nms(boxes, scores, 0.7).tolist() == [0, 1]  # IoU 0.09
    assert nms(boxes, scores, 0.7, mode="min").tolist() == [0]  # inside: overlap 1.0


def _textbook_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    kept: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        for k in kept:
            low = np.maximum(boxes[i, :2], boxes[k, :2])
            high = np.minimum(boxes[i, 2:], boxes[k, 2:])
            inter = np.prod(np.clip(high - low, 0, None))
            areas = np.prod(boxes[i, 2:] - boxes[i, :2]) + np.prod(boxes[k, 2:] - boxes[k, :2])
            if inter / (areas - inter) > threshold:
                break
        else:
            kept.append(int(i))
    return kept


def test_nms_agrees_with_the_textbook_loop_on_many_boxes_and_on_none() -> None:
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 300, (600, 2)).astype(np.float32)
    boxes = np.hstack([corners, corners + rng.uniform(10, 40, (600, 2)).astype(np.float32)])
    scores = rng.uniform(size=600).astype(np.float32)
    assert nms(boxes, scores, 0.3).tolist() == _textbook_nms(boxes, scores, 0.3)
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5).size == 0


def test_candidate_crops_are_exact_area_resampling_even_on_huge_photos() -> None:
    # 4,200 x 4,200 near-white pixels: the summed-area table wraps past 2**32 several times.
    photo = np.full((4200, 4200, 3), 250, np.uint8)
    rng = np.random.default_rng(0)
    photo[-300:, -400:] = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    x0, y0, x1, y1 = 3850, 3950, 4163, 4197  # a box in the far corner: the largest sums
    expected = F.adaptive_avg_pool2d(
        torch.from_numpy(photo[y0:y1, x0:x1]).permute(2, 0, 1)[None].float(), (48, 48)
    )
    crops = _Integral.of(photo).resample(np.array([[x0, y0, x1, y1]]), 48, 48)
    got = torch.from_numpy(crops / _SCALE + _MEAN).permute(0, 3, 1, 2)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-3)
