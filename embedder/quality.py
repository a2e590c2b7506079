"""One number per face in [0, 1]: how far the face can be trusted for recognition.

It combines what the model and the detector already know about a face: the mean of QAN's part
qualities, how closely the face's embedding agrees with its mirror image's (the flip test's
own pass), the detector's score, the face's size in the photo (shorter side of the box) and the
sharpness of the aligned crop (variance of its Laplacian). The combination is a logistic model
fitted on held-out validation people (``python -m trainer.quality_fit``): the score is the
fitted probability that the face's cosine to its own subject's template (made from the subject's
other faces) passes the model's same-person threshold at FAR 1e-3. The fit belongs to one
checkpoint's outputs (QAN qualities and flip agreement move with the weights), so it is a
:class:`QualityFit` stored in that checkpoint's metadata, like its thresholds; a checkpoint
without one scores no face (None). docs/quality.md says how it was fitted and what its
error-versus-reject curve shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

METADATA_KEY = "quality_fit"
# The raw features :func:`features` computes, in order; a fit must be over exactly these.
FEATURES = ("part_quality", "flip_agreement", "detection", "size", "sharpness")

# Faces larger than this add nothing: every face is aligned down to the 112x112 crop.
SIZE_CAP = 224.0
# The Laplacian is taken inside this margin of the crop, away from the black borders that
# alignment leaves where a face sits at a photo's edge.
MARGIN = 16


@dataclass(frozen=True)
class QualityFit:
    """A logistic model over the standardised features ((x - mean) / std), fitted by
    ``python -m trainer.quality_fit`` for one checkpoint and stored in its metadata."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    features: tuple[str, ...] = FEATURES

    def __post_init__(self) -> None:
        if tuple(self.features) != FEATURES:
            raise ValueError(f"a quality fit over {self.features} cannot score {FEATURES}")
        for name in ("mean", "std", "coef"):
            values = tuple(float(v) for v in getattr(self, name))
            if len(values) != len(FEATURES):
                raise ValueError(
                    f"quality fit {name} has {len(values)} values, not {len(FEATURES)}"
                )
            object.__setattr__(self, name, values)
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "intercept", float(self.intercept))

    def to_metadata(self, **report: Any) -> dict[str, Any]:
        """Plain numbers (a checkpoint loads with weights_only), with what the fit reports."""
        return {
            "features": list(self.features),
            "mean": list(self.mean),
            "std": list(self.std),
            "coef": list(self.coef),
            "intercept": self.intercept,
            **report,
        }

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> QualityFit:
        return cls(
            tuple(saved["mean"]),
            tuple(saved["std"]),
            tuple(saved["coef"]),
            saved["intercept"],
            tuple(saved.get("features", FEATURES)),
        )

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> QualityFit | None:
        """The fit a checkpoint carries, or None for one never fitted (its faces get no
        quality: a fit made for another model's outputs would score them wrongly)."""
        saved = metadata.get(METADATA_KEY)
        return cls.from_dict(saved) if saved else None


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
    flip test there is no ``agreement`` (None or NaN): it is NaN here, and counts as the fit's
    mean when scored."""
    parts = np.asarray(part_qualities, np.float64).reshape(-1)
    score = float(np.clip(detection_score, 1e-6, 1 - 1e-6))
    flip = np.nan if agreement is None or not np.isfinite(agreement) else float(agreement)
    return np.array(
        [
            float(parts.mean()) if parts.size else np.nan,
            flip,
            np.log(score / (1 - score)),
            np.log2(float(np.clip(face_size, 1.0, SIZE_CAP))),
            np.log1p(max(crop_sharpness, 0.0)),
        ]
    )


def score_features(x: np.ndarray, fit: QualityFit) -> np.ndarray:
    """Quality in [0, 1] of rows of raw features (N, len(FEATURES)) under ``fit``; a missing
    feature (NaN) counts as the fit's mean."""
    z = (np.asarray(x, np.float64) - np.asarray(fit.mean)) / np.asarray(fit.std)
    z = np.where(np.isnan(z), 0.0, z)
    return 1.0 / (1.0 + np.exp(-(z @ np.asarray(fit.coef) + fit.intercept)))


def face_quality(
    fit: QualityFit | None,
    part_qualities: Sequence[float] | np.ndarray,
    agreement: float | None,
    detection_score: float,
    face_size: float,
    crop: np.ndarray,
) -> float | None:
    """The quality of one face under its model's ``fit``: its part qualities, flip agreement
    (Embeddings.agreement), detection score, size (pixels, shorter side of the box) and
    aligned crop. Rounded to 4 places: what is stored and answered. None when the model has
    no fit (stored NULL; the enrolment gate lets such faces through)."""
    if fit is None:
        return None
    x = features(part_qualities, agreement, detection_score, face_size, sharpness(crop))
    return round(float(score_features(x[None], fit)[0]), 4)


def box_size(box: Sequence[float]) -> float:
    """A face's size as the detectors measure it: the shorter side of its box."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return min(x2 - x1, y2 - y1)
