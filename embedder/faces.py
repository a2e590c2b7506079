"""From a photo to aligned faces: detect, apply the caller's policy, align.

Policies: "all" (probes: every face, largest first), "largest" (enrolment: the main subject
of a photo that may show bystanders) and "single" (enrolment that must refuse group photos).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from embedder.align import align
from embedder.errors import FaceTooSmall, NoFace, SeveralFaces
from embedder.imageio import MAX_BYTES, Photo, load_photo
from embedder.mtcnn import Detection, default_detector
from embedder.scaled import Detector

Policy = Literal["all", "largest", "single", "centre"]
POLICIES: tuple[Policy, ...] = ("all", "largest", "single", "centre")
# A face is aligned from a decode in which it is at least as large as the crop: smaller, the
# crop would be blown up from fewer pixels than the photo holds.
ALIGN_FACE_PIXELS = 112


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
    detector: Detector | None = None,
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
    detector: Detector | None = None,
    policy: Policy = "all",
    min_face_size: float | None = None,
) -> list[Face]:
    """:func:`find_faces` on a photo file or its bytes; raises only typed input errors.

    A detector with a working size (``ScaledDetector``) gets a JPEG decoded no larger than
    that size needs (libjpeg's DCT scaling), and each face is aligned from a decode in which
    it is at least as large as the crop: a 12 MP photo is never decoded in full only to be
    shrunk. Boxes and landmarks are in the photo's own pixels whatever the decode."""
    detector = detector or default_detector()
    photo = decode_for(detector, source)
    found = detect_photo(detector, photo)
    chosen = choose_faces(found, photo.size, policy=policy, min_face_size=min_face_size)
    return align_faces(photo, chosen, source)


def decode_for(
    detector: Detector, source: bytes | str | os.PathLike[str], *, max_bytes: int | None = MAX_BYTES
) -> Photo:
    """``source`` decoded as small as ``detector``'s working size allows (a full decode for a
    detector without one); sizes are checked before any pixel is decoded."""
    keep = getattr(detector, "working_pixels", None)
    return load_photo(source, keep_pixels=keep, max_bytes=max_bytes)


def detect_photo(
    detector: Detector, photo: Photo, *, min_face_size: float | None = None
) -> list[Detection]:
    """``detector``'s faces in a decode, boxes and landmarks in the photo's own pixels;
    ``min_face_size`` is in the photo's pixels too."""
    sx, sy = photo.scale
    minimum = None if min_face_size is None else min_face_size * min(sx, sy)
    found = detector.detect(photo.pixels, min_face_size=minimum)
    return [face.scaled(1 / sx, 1 / sy) for face in found]


def align_faces(
    photo: Photo,
    detections: Sequence[Detection],
    source: bytes | str | os.PathLike[str] | None = None,
    *,
    max_bytes: int | None = MAX_BYTES,
) -> list[Face]:
    """Each detection aligned from ``photo``, or from a finer decode of ``source`` where
    the smallest face is below the crop's size in ``photo`` (at most the full photo)."""
    if source is not None and detections:
        photo = _decode_for(source, photo, detections, max_bytes)
    return [_aligned(photo, detection) for detection in detections]


def select_faces(
    image: np.ndarray,
    detections: Sequence[Detection],
    *,
    policy: Policy = "all",
    min_face_size: float | None = None,
) -> list[Face]:
    """The policy and alignment half of :func:`find_faces`, for detections made elsewhere
    (e.g. by ``MTCNN.detect_batch`` over many photos)."""
    size = (image.shape[1], image.shape[0])
    chosen = choose_faces(detections, size, policy=policy, min_face_size=min_face_size)
    return align_faces(Photo(image, size), chosen)


def choose_faces(
    detections: Sequence[Detection],
    size: tuple[int, int],
    *,
    policy: Policy = "all",
    min_face_size: float | None = None,
) -> list[Detection]:
    """The detections ``policy`` keeps, largest first (``centre``: the one nearest the centre
    of a photo of ``size``, width by height); typed errors for none or too small."""
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
        return [min(ranked, key=lambda d: _off_centre(d, size))]
    return ranked if policy == "all" else ranked[:1]


def _off_centre(detection: Detection, size: tuple[int, int]) -> float:
    """Squared distance of the box's centre from the photo's."""
    x1, y1, x2, y2 = detection.box
    return ((x1 + x2) / 2 - size[0] / 2) ** 2 + ((y1 + y2) / 2 - size[1] / 2) ** 2


def _decode_for(
    source: bytes | str | os.PathLike[str],
    photo: Photo,
    faces: Sequence[Detection],
    max_bytes: int | None,
) -> Photo:
    """``photo``, or a larger decode of it where its smallest face would be below the crop's
    size (at most the full photo)."""
    needed = min(1.0, ALIGN_FACE_PIXELS / max(min(face.size for face in faces), 1.0))
    if min(photo.scale) >= needed:
        return photo
    width, height = photo.size
    keep = math.ceil(needed * needed * width * height)
    return load_photo(source, keep_pixels=keep, max_bytes=max_bytes)


def _aligned(photo: Photo, detection: Detection) -> Face:
    """Align from the decode; the matrix maps the photo's own pixels onto the crop."""
    sx, sy = photo.scale
    aligned = align(photo.pixels, detection.scaled(sx, sy).landmarks)
    return Face(
        box=detection.box,
        score=detection.score,
        landmarks=detection.landmarks,
        crop=aligned.crop,
        matrix=aligned.matrix * np.array([sx, sy, 1.0]),
    )
