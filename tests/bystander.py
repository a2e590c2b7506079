"""A real photo with a larger bystander off-centre, composed from two people of celeba-photos:
the case where "the largest face" and LFW's "the face at the centre" disagree."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from embedder.faces import find_faces
from embedder.imageio import load_image

WIDTH, HEIGHT = 800, 400
SUBJECT_FACE, BYSTANDER_FACE = 90, 150  # box sides in the composed photo, pixels


def _face_patch(photo: np.ndarray, face_px: int) -> np.ndarray:
    """The photo's face with a margin of 60% of its box on each side, scaled so that the box
    is `face_px` wide; the photo's edge pixels extend it where it ends."""
    [face] = find_faces(photo, policy="largest")
    x1, y1, x2, y2 = face.box
    side = max(x2 - x1, y2 - y1)
    pad = int(side * 2)
    padded = cv2.copyMakeBorder(photo, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    cx, cy, half = (x1 + x2) / 2 + pad, (y1 + y2) / 2 + pad, side * 1.1
    patch = padded[int(cy - half) : int(cy + half), int(cx - half) : int(cx + half)]
    size = round(2.2 * face_px)
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)


def compose(subject: Path, bystander: Path) -> np.ndarray:
    """HEIGHT x WIDTH RGB: the subject's face centred, the bystander's larger at the left."""
    canvas = np.full((HEIGHT, WIDTH, 3), 128, np.uint8)
    big = _face_patch(load_image(bystander), BYSTANDER_FACE)
    top = (HEIGHT - big.shape[0]) // 2
    canvas[top : top + big.shape[0], : big.shape[1]] = big
    small = _face_patch(load_image(subject), SUBJECT_FACE)
    top, left = (HEIGHT - small.shape[0]) // 2, (WIDTH - small.shape[1]) // 2
    canvas[top : top + small.shape[0], left : left + small.shape[1]] = small
    return canvas


def two_people(celeba_photos_dir: Path) -> tuple[list[Path], list[Path]]:
    """The first two photos of each of the first two people (sorted)."""
    first, second = sorted(p for p in celeba_photos_dir.iterdir() if p.is_dir())[:2]
    return sorted(first.glob("*.jpg"))[:2], sorted(second.glob("*.jpg"))[:2]
