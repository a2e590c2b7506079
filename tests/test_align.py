"""Alignment: the exact similarity transform, crops that put the landmarks on the template,
and the way back from crop to photo for overlays."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from embedder.align import (
    REFERENCE_112,
    align,
    invert_affine,
    similarity_transform,
    template,
    warp_to_photo,
)


def _similarity(angle_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    angle = np.deg2rad(angle_deg)
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return np.hstack([rotation, np.array(shift)[:, None]])


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def _photo_with_dots(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A dark photo with a small bright disc centred (sub-pixel) on each landmark."""
    photo = np.zeros((*shape, 3), np.uint8)
    for x, y in landmarks:
        centre = (round(x * 16), round(y * 16))  # 4 fractional bits
        cv2.circle(photo, centre, 3 * 16, (255, 255, 255), -1, cv2.LINE_AA, shift=4)
    return photo


def _centroids(crop: np.ndarray, near: np.ndarray) -> np.ndarray:
    """Intensity centroid of the crop around each expected point."""
    grey = crop[..., 0].astype(np.float64)
    ys, xs = np.mgrid[: grey.shape[0], : grey.shape[1]]
    found = []
    for x, y in near:
        window = grey * ((xs - x) ** 2 + (ys - y) ** 2 < 8**2)
        found.append([(window * xs).sum() / window.sum(), (window * ys).sum() / window.sum()])
    return np.array(found)


def test_similarity_transform_recovers_a_known_transform_exactly() -> None:
    truth = _similarity(23.0, 1.7, (-12.5, 40.25))
    estimated = similarity_transform(REFERENCE_112, _apply(truth, REFERENCE_112))
    assert estimated.shape == (2, 3) and estimated.dtype == np.float64
    np.testing.assert_allclose(estimated, truth, atol=1e-9)


def test_similarity_transform_never_returns_a_reflection() -> None:
    mirrored = REFERENCE_112 * np.array([-1.0, 1.0])
    estimated = similarity_transform(REFERENCE_112, mirrored)
    assert np.linalg.det(estimated[:, :2]) > 0


def test_similarity_transform_is_the_least_squares_fit_on_noisy_points() -> None:
    noise = np.random.default_rng(0).normal(0, 0.5, REFERENCE_112.shape)
    noisy = _apply(_similarity(-8.0, 0.6, (30.0, -4.0)), REFERENCE_112) + noise
    estimated = similarity_transform(REFERENCE_112, noisy)

    def error(matrix: np.ndarray) -> float:
        return float(((_apply(matrix, REFERENCE_112) - noisy) ** 2).sum())

    # The similarity's four degrees of freedom: scale*cos, scale*sin, shift x, shift y.
    directions = [
        [[1, 0, 0], [0, 1, 0]],
        [[0, -1, 0], [1, 0, 0]],
        [[0, 0, 1], [0, 0, 0]],
        [[0, 0, 0], [0, 0, 1]],
    ]
    for direction in np.array(directions, np.float64) * 1e-3:
        assert error(estimated + direction) > error(estimated)
        assert error(estimated - direction) > error(estimated)


def test_the_template_lands_where_it_should_in_the_crop() -> None:
    landmarks = _apply(_similarity(15.0, 2.3, (70.0, 20.0)), REFERENCE_112)
    photo = _photo_with_dots(landmarks, (400, 360))
    face = align(photo, landmarks)
    assert face.crop.shape == (112, 112, 3) and face.crop.dtype == np.uint8
    np.testing.assert_allclose(_apply(face.matrix, landmarks), REFERENCE_112, atol=1e-4)
    np.testing.assert_allclose(_centroids(face.crop, REFERENCE_112), REFERENCE_112, atol=0.3)


def test_other_crop_sizes_scale_the_template() -> None:
    landmarks = _apply(_similarity(-5.0, 3.0, (40.0, 10.0)), REFERENCE_112)
    face = align(_photo_with_dots(landmarks, (400, 400)), landmarks, size=224)
    assert face.crop.shape == (224, 224, 3)
    np.testing.assert_allclose(template(224), REFERENCE_112 * 2, rtol=1e-6)
    np.testing.assert_allclose(_apply(face.matrix, landmarks), template(224), atol=1e-4)


def test_outside_the_photo_the_crop_is_black() -> None:
    landmarks = REFERENCE_112 * 0.5 - 20  # a small face cut by the photo's top-left corner
    face = align(np.full((200, 200, 3), 200, np.uint8), landmarks)
    assert (face.crop[:10, :10] == 0).all()
    assert (face.crop[-10:, -10:] == 200).all()


def test_invert_affine_undoes_the_alignment() -> None:
    matrix = _similarity(31.0, 0.4, (5.0, -7.0))
    points = np.random.default_rng(1).uniform(0, 200, (10, 2))
    np.testing.assert_allclose(_apply(invert_affine(matrix), _apply(matrix, points)), points)


def test_a_crop_warped_back_onto_the_photo_matches_the_photo() -> None:
    ys, xs = np.mgrid[:300, :260]
    photo_grey = (127 + 100 * np.sin(xs / 9.0) * np.cos(ys / 13.0)).astype(np.float32)
    photo = np.repeat(photo_grey.astype(np.uint8)[..., None], 3, axis=2)
    landmarks = _apply(_similarity(12.0, 1.4, (60.0, 50.0)), REFERENCE_112)
    face = align(photo, landmarks)
    back = warp_to_photo(face.crop[..., 0], face.matrix, photo.shape)
    assert back.shape == photo.shape[:2] and back.dtype == np.float32
    reach = warp_to_photo(np.ones((112, 112)), face.matrix, photo.shape)
    inside = reach > 0.999
    assert inside.sum() > 0.9 * (112 / 1.4) ** 2  # the crop's whole footprint, bar its rim
    assert np.abs(back[inside] - photo_grey[inside]).mean() < 1.5  # two bilinear resamplings
    assert (back[reach == 0] == 0).all()


@pytest.mark.parametrize("resolution", [7, 112])
def test_a_coarse_map_lands_on_the_same_photo_region_as_a_fine_one(resolution: int) -> None:
    landmarks = _apply(_similarity(-20.0, 2.0, (100.0, 80.0)), REFERENCE_112)
    matrix = similarity_transform(landmarks, REFERENCE_112)
    attention = np.zeros((resolution, resolution), np.float32)
    attention[: resolution * 4 // 7] = 1.0  # the upper 4/7 of the crop: the eyes, not the mouth
    overlay = warp_to_photo(attention, matrix, (500, 500))
    eyes, mouth = landmarks[:2], landmarks[3:]
    for x, y in eyes:
        assert overlay[round(y), round(x)] > 0.99
    for x, y in mouth:
        assert overlay[round(y), round(x)] < 0.01
