"""From a photo to aligned faces: detect, apply the caller's policy, align.

Policies: "all" (probes: every face, largest first), "largest" (enrolment: the main subject
of a photo that may show bystanders), "single" (enrolment that must refuse group photos) and
"centre" (the face nearest the photo's centre: LFW's protocol, whose subject is centred).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from embedder.align import align
from embedder.errors import FaceTooSmall, NoFace, SeveralFaces
from embedder.imageio import load_image
from embedder.mtcnn import MTCNN, Detection, default_detector

Policy = Literal["all", "largest", "single", "centre"]
POLICIES: tuple[Policy, ...] = ("all", "largest", "single", "centre")


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face with its aligned crop, ready for the embedder."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in photo pixels
    score: float
    landmarks: np.ndarray  # 5x2 float32 photo pixels: eyes, nose, mouth corners
    crop: np.ndarray  # 112x112x3 uint8 RGB, aligned like the training crops
    matrix: np.ndarray  # 2x3 float64, photo -> crop


def find_faces(
    image: np.ndarray,
    *,
    detector: MTCNN | None = None,
    policy: Policy = "all",
    min_face_size: float | None = None,
) -> list[Face]:
    """Faces in an HxWx3 uint8 RGB photo per ``policy``, largest first.

    ``min_face_size`` (pixels, shorter side of the box) refuses faces too small to identify
    reliably; it is applied after detection so that "no face at all" (:class:`NoFace`) and
    "only faces too small" (:class:`FaceTooSmall`) stay distinct for the user.
    """
    detections = (detector or default_detector()).detect(image)
    return select_faces(image, detections, policy=policy, min_face_size=min_face_size)


def faces_from_file(
    source: bytes | str | os.PathLike[str],
    *,
    detector: MTCNN | None = None,
    policy: Policy = "all",
    min_face_size: float | None = None,
) -> list[Face]:
    """:func:`load_image` then :func:`find_faces`; raises only typed input errors."""
    image = load_image(source)
    return find_faces(image, detector=detector, policy=policy, min_face_size=min_face_size)


def select_faces(
    image: np.ndarray,
    detections: Sequence[Detection],
    *,
    policy: Policy = "all",
    min_face_size: float | None = None,
) -> list[Face]:
    """The policy and alignment half of :func:`find_faces`, for detections made elsewhere
    (e.g. by ``MTCNN.detect_batch`` over many photos)."""
    if policy not in POLICIES:
        raise ValueError(f"unknown face policy {policy!r}; expected one of {POLICIES}")
    if not detections:
        raise NoFace("no face was found in the photo")
    big_enough = [d for d in detections if min_face_size is None or d.size >= min_face_size]
    if not big_enough:
        largest = max(d.size for d in detections)
        raise FaceTooSmall(
            f"the largest face is {largest:.0f} px, below the minimum of {min_face_size:.0f} px"
        )
    ranked = sorted(big_enough, key=lambda d: d.area, reverse=True)
    if policy == "single" and len(ranked) > 1:
        raise SeveralFaces(f"the photo shows {len(ranked)} faces where exactly one is needed")
    if policy == "centre":
        ranked = [min(ranked, key=lambda d: _off_centre(d, image.shape))]
    elif policy != "all":
        ranked = ranked[:1]
    return [_aligned(image, detection) for detection in ranked]


def _off_centre(detection: Detection, shape: tuple[int, ...]) -> float:
    """Squared distance of the box's centre from the photo's."""
    x1, y1, x2, y2 = detection.box
    return ((x1 + x2) / 2 - shape[1] / 2) ** 2 + ((y1 + y2) / 2 - shape[0] / 2) ** 2


def _aligned(image: np.ndarray, detection: Detection) -> Face:
    aligned = align(image, detection.landmarks)
    return Face(
        box=detection.box,
        score=detection.score,
        landmarks=detection.landmarks,
        crop=aligned.crop,
        matrix=aligned.matrix,
    )
