"""A minimum face quality that separates a blurred photo from sharp ones under the served model,
for the tests of the enrolment gate: the gate's behaviour is asserted exactly whatever the
model's fit makes of a given blur."""

from __future__ import annotations

import cv2
import numpy as np

from identify.search.encode import FaceEncoder


def blurred(photo: np.ndarray, sigma: float = 6.0) -> np.ndarray:
    return cv2.GaussianBlur(photo, (0, 0), sigma)


def face_quality_of(encoder: FaceEncoder, image: np.ndarray) -> float:
    [encoded] = encoder.encode(encoder.faces(image, "largest", gallery=True), "no")
    return encoded.face_quality


def minimum_between(encoder: FaceEncoder, sharp: list[np.ndarray], bad: np.ndarray) -> float:
    """Halfway between the bad photo's score and the sharp photos' lowest, after checking that
    the model scores the bad one lower."""
    low = min(face_quality_of(encoder, photo) for photo in sharp)
    worst = face_quality_of(encoder, bad)
    assert worst < low, (worst, low)
    return round((worst + low) / 2, 4)
