"""Phone-sized photos built from celeba-photos, for what depends on a photo's pixel count.

Each celeba photo (about 190 px, one face-centred person) is scaled up by the same factor for
every canvas size and placed at its centre; the rest of the canvas is the same photo blown up
to cover it and blurred, so the background has the photo's own colours and texture and no
second detectable face. The face keeps the same relative size at every canvas size, so
anything that changes with the canvas is the cost of its pixels, not of a different face.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

SIZES = {"1mp": (1155, 866), "12mp": (4032, 3024), "40mp": (7296, 5472)}
FACE_SHARE = 0.6  # the pasted photo's height over the canvas's


def canvas(photo: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float, tuple[int, int]]:
    """The photo placed in a ``size`` (width, height) canvas: pixels, the scale applied and the
    pasted photo's top-left corner (photo pixel p lands at corner + scale * p)."""
    width, height = size
    scale = FACE_SHARE * height / photo.shape[0]
    pasted = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    blurred = cv2.GaussianBlur(photo, (0, 0), sigmaX=photo.shape[1] / 40)  # blur, then blow up:
    back = cv2.resize(blurred, (width, height), interpolation=cv2.INTER_LINEAR)  # far cheaper
    top, left = (height - pasted.shape[0]) // 2, (width - pasted.shape[1]) // 2
    back[top : top + pasted.shape[0], left : left + pasted.shape[1]] = pasted
    return back, scale, (left, top)


def jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    """The canvas as a JPEG, as a phone would store it."""
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=quality)
    return out.getvalue()
