"""Detection at a working size: the cost of finding faces stops growing with the photo.

MTCNN's pyramid starts at its minimum face in photo pixels, so on a 12 MP photo P-Net ran over
0.6 of each side and the detector cost 5.6x a 1 MP photo. Here a photo above the working size
is detected on a copy scaled down to it (area resampling, the kind that keeps small faces
sharp) and the boxes and landmarks are mapped back, so the caller aligns from the photo itself.
"""

from __future__ import annotations

import math
from typing import Protocol

import cv2
import numpy as np

from embedder.mtcnn import Detection


class Detector(Protocol):
    """What the project asks of a face detector (MTCNN, SCRFD)."""

    name: str
    min_face_size: float

    def detect(
        self, image: np.ndarray, *, min_face_size: float | None = None
    ) -> list[Detection]: ...


class ScaledDetector:
    """``detector`` run on a copy of at most ``working_pixels`` pixels of each photo."""

    def __init__(self, detector: Detector, working_pixels: int) -> None:
        self.detector = detector
        self.working_pixels = working_pixels

    @property
    def name(self) -> str:
        return self.detector.name

    @property
    def min_face_size(self) -> float:
        return self.detector.min_face_size

    def detect(self, image: np.ndarray, *, min_face_size: float | None = None) -> list[Detection]:
        """Faces in an HxWx3 uint8 RGB photo, in its own pixels, most confident first.

        ``min_face_size`` is in the photo's pixels; the detector's own minimum holds in the
        working copy, so it grows with the photo (see ``settings.detect_pixels``)."""
        height, width = image.shape[:2]
        scale = math.sqrt(self.working_pixels / max(height * width, 1))
        if scale >= 1:
            return self.detector.detect(image, min_face_size=min_face_size)
        size = (max(1, int(width * scale)), max(1, int(height * scale)))  # within the budget
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        sx, sy = size[0] / width, size[1] / height
        minimum = None if min_face_size is None else min_face_size * min(sx, sy)
        found = self.detector.detect(small, min_face_size=minimum)
        return [face.scaled(1 / sx, 1 / sy) for face in found]
