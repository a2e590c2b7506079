"""Synthetic masks: they hide the nose, mouth and chin, never the eyes, and are reproducible."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embedder.align import REFERENCE_112, similarity_transform
from embedder.masks import STYLES, apply_mask

LANDMARKS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@pytest.fixture(scope="module")
def frontal_faces(celeba_aligned_dir: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """40 near-frontal real crops with their landmarks in crop pixels, from landmarks.csv."""
    faces = []
    with open(celeba_aligned_dir / "landmarks.csv", newline="") as f:
        for row in itertools.islice(csv.DictReader(f), 200):
            source = np.array([[float(row[f"{k}_x"]), float(row[f"{k}_y"])] for k in LANDMARKS])
            matrix = similarity_transform(source, REFERENCE_112)  # as alignment maps them
            landmarks = source @ matrix[:, :2].T + matrix[:, 2]
            if np.abs(landmarks - REFERENCE_112).max() > 8:  # a turned head: skip
                continue
            path = celeba_aligned_dir / row["identity"] / f"{row['image']}.webp"
            faces.append((np.asarray(Image.open(path).convert("RGB")), landmarks))
            if len(faces) == 40:
                break
    return faces


def _covers(coverage: np.ndarray, point: np.ndarray) -> bool:
    x, y = np.round(point).astype(int)
    return bool(coverage[min(y, coverage.shape[0] - 1), x])


def _eye_clearance(coverage: np.ndarray, landmarks: np.ndarray) -> float:
    """Distance in pixels from either eye to the nearest covered pixel."""
    ys, xs = np.nonzero(coverage)
    return min(float(np.hypot(xs - x, ys - y).min()) for x, y in landmarks[:2])


@pytest.mark.parametrize("style", STYLES)
def test_mask_covers_nose_mouth_and_chin_and_leaves_the_eyes_visible(
    frontal_faces: list[tuple[np.ndarray, np.ndarray]], style: str
) -> None:
    for seed, (crop, landmarks) in enumerate(frontal_faces):
        for given in (None, landmarks):  # aligned crops default to the template's landmarks
            where = REFERENCE_112 if given is None else landmarks
            coverage = apply_mask(crop, rng=seed, style=style, landmarks=given).coverage
            nose, mouth = where[2], where[3:].mean(0)
            chin = mouth + 0.5 * (mouth - nose)
            for point in (nose, where[3], where[4], chin):
                assert _covers(coverage, point), (style, seed, given is None, point)
            assert _eye_clearance(coverage, where) >= (5 if given is None else 3)


def test_mask_reaches_the_sides_of_the_lower_face() -> None:
    crop = np.full((112, 112, 3), 128, np.uint8)
    for style, seed in itertools.product(STYLES, range(10)):
        coverage = apply_mask(crop, rng=seed, style=style).coverage
        assert coverage[80, 25:88].all(), (style, seed)  # cheek to cheek under the nose
        assert not coverage[:52].any(), (style, seed)  # nothing at eye level or above


def test_same_seed_gives_the_same_mask_and_different_seeds_vary_style_and_colour(
    frontal_faces: list[tuple[np.ndarray, np.ndarray]],
) -> None:
    crop = frontal_faces[0][0]
    first, again = apply_mask(crop, rng=7), apply_mask(crop, rng=7)
    assert first.style == again.style
    assert np.array_equal(first.image, again.image)
    assert np.array_equal(first.coverage, again.coverage)
    generated = [apply_mask(crop, rng=np.random.default_rng(seed)) for seed in range(40)]
    assert {m.style for m in generated} == set(STYLES)
    colours = {tuple(m.image[m.coverage].mean(0).round()) for m in generated}
    assert len(colours) > 30


def test_the_input_crop_is_never_modified(
    frontal_faces: list[tuple[np.ndarray, np.ndarray]],
) -> None:
    crop = frontal_faces[1][0]
    before = crop.copy()
    for style in STYLES:
        masked = apply_mask(crop, rng=0, style=style)
        assert not np.shares_memory(masked.image, crop)
    assert np.array_equal(crop, before)


@pytest.mark.parametrize("style", STYLES)
def test_each_style_draws_a_shaded_mask_not_a_flat_patch(
    frontal_faces: list[tuple[np.ndarray, np.ndarray]], style: str
) -> None:
    crop = frontal_faces[2][0]
    masked = apply_mask(crop, rng=3, style=style)
    assert masked.style == style
    assert masked.image.shape == crop.shape and masked.image.dtype == np.uint8
    inside = masked.image[masked.coverage].astype(float)
    assert inside.std(0).max() > 4  # shading and texture, not one colour
    untouched = ~masked.coverage
    untouched[50:] = False  # above the mask, rows that no style's rim shadow reaches
    assert np.array_equal(masked.image[untouched], crop[untouched])


def test_bad_input_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="unknown mask style"):
        apply_mask(np.zeros((112, 112, 3), np.uint8), rng=0, style="balaclava")
    with pytest.raises(ValueError, match="uint8 RGB"):
        apply_mask(np.zeros((112, 112), np.uint8), rng=0)
