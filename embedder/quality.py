"""One number per face in [0, 1]: how far the face can be trusted for recognition.

It combines what the model and the detector already know about a face: the mean of QAN's part
qualities, how closely the face's embedding agrees with its mirror image's (the flip test's
own pass), the detector's score, the face's size in the photo (shorter side of the box) and the
sharpness of the aligned crop (variance of its Laplacian). The combination is a logistic model
fitted on held-out validation people (``python -m trainer.quality_fit``): the score is the
fitted probability that the face's cosine to its own subject's template (made from the subject's
other faces) passes the model's same-person threshold at FAR 1e-3. The constants below are the
fit; docs/quality.md says how it was fitted and what its error-versus-reject curve shows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Written by `python -m trainer.quality_fit --write` (standardised features: (x - mean) / std).
FEATURES = ("part_quality", "flip_agreement", "detection", "size", "sharpness")
MEAN = (0.366133, 0.975833, 9.394355, 6.024088, 4.363304)
STD = (0.096823, 0.012135, 2.485592, 0.814775, 1.728843)
COEF = (-1.268222, 0.259255, 0.010665, 0.357677, 0.761855)
INTERCEPT = 2.555929

# Faces larger than this add nothing: every face is aligned down to the 112x112 crop.
SIZE_CAP = 224.0
# The Laplacian is taken inside this margin of the crop, away from the black borders that
# alignment leaves where a face sits at a photo's edge.
MARGIN = 16


def sharpness(crop: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of an aligned crop's grey levels, inside MARGIN:
    blur removes fine detail, and with it the Laplacian's spread."""
    grey = np.asarray(crop, np.float64)
    if grey.ndim == 3:
        grey = grey @ np.array([0.299, 0.587, 0.114])
    g = grey[MARGIN:-MARGIN, MARGIN:-MARGIN]
    lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4 * g[1:-1, 1:-1]
    return float(lap.var())


def features(
    part_qualities: Sequence[float] | np.ndarray,
    agreement: float | None,
    detection_score: float,
    face_size: float,
    crop_sharpness: float,
) -> np.ndarray:
    """The raw features of one face, in FEATURES' order (before standardising). Without a
    flip test there is no ``agreement`` (None or NaN): it then counts as the fit's mean."""
    parts = np.asarray(part_qualities, np.float64).reshape(-1)
    score = float(np.clip(detection_score, 1e-6, 1 - 1e-6))
    flip = MEAN[1] if agreement is None or not np.isfinite(agreement) else float(agreement)
    return np.array(
        [
            float(parts.mean()) if parts.size else MEAN[0],
            flip,
            np.log(score / (1 - score)),
            np.log2(float(np.clip(face_size, 1.0, SIZE_CAP))),
            np.log1p(max(crop_sharpness, 0.0)),
        ]
    )


def score_features(x: np.ndarray) -> np.ndarray:
    """Quality in [0, 1] of rows of raw features (N, len(FEATURES))."""
    z = (np.asarray(x, np.float64) - np.asarray(MEAN)) / np.asarray(STD)
    return 1.0 / (1.0 + np.exp(-(z @ np.asarray(COEF) + INTERCEPT)))


def face_quality(
    part_qualities: Sequence[float] | np.ndarray,
    agreement: float | None,
    detection_score: float,
    face_size: float,
    crop: np.ndarray,
) -> float:
    """The quality of one face: its part qualities, flip agreement (Embeddings.agreement),
    detection score, size (pixels, shorter side of the box) and aligned crop. Rounded to 4
    places: what is stored and answered."""
    x = features(part_qualities, agreement, detection_score, face_size, sharpness(crop))
    return round(float(score_features(x[None])[0]), 4)


def box_size(box: Sequence[float]) -> float:
    """A face's size as the detectors measure it: the shorter side of its box."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return min(x2 - x1, y2 - y1)
