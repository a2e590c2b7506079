"""Aligned 112x112 crops for evaluation, from aligned files or from raw photos.

Benchmarks ship either way: insightface's sets as aligned crops, LFW and real photos raw. An
image that is already 112x112 is taken as aligned; anything else goes through detection and
alignment, so that evaluation sees faces exactly as serving does. Which face of a photo with
several is the caller's choice (`FaceChoice`): the largest, as enrolment takes, or the one
nearest the centre, as LFW's protocol defines its subject.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np

from embedder.faces import faces_from_file
from embedder.imageio import load_image
from embedder.inference import INPUT_SIZE
from embedder.masks import MaskedFace, apply_mask

FaceChoice = Literal["largest", "centre"]
FACE_CHOICES: tuple[FaceChoice, ...] = ("largest", "centre")


@lru_cache(maxsize=20_000)
def load_crop(path: Path, face: FaceChoice = "largest") -> np.ndarray:
    """The aligned crop of `path`; raises the embedder's typed errors for a photo with no face.

    Remembered (read-only) for the process: a report measures the same photos several times
    (bare and masked probes, several models), and detection costs more than embedding."""
    image = load_image(path)
    if image.shape[:2] != (INPUT_SIZE, INPUT_SIZE):
        image = faces_from_file(path, policy=face)[0].crop
    image.flags.writeable = False
    return image


def masked(crop: np.ndarray, key: str, seed: int = 0) -> np.ndarray:
    """A synthetic mask drawn deterministically for this image (same key, same mask)."""
    return masked_face(crop, key, seed).image


def masked_face(crop: np.ndarray, key: str, seed: int = 0) -> MaskedFace:
    """As `masked`, with the pixels the mask covers."""
    return apply_mask(crop, rng=np.random.default_rng([seed, zlib.crc32(key.encode())]))


def load_crops(
    paths: Iterable[Path], face: FaceChoice = "largest"
) -> tuple[dict[Path, np.ndarray], dict[Path, str]]:
    """Crops by path, and the paths that gave none with the reason (error code)."""
    crops: dict[Path, np.ndarray] = {}
    failures: dict[Path, str] = {}
    for path in paths:
        try:
            crops[path] = load_crop(path, face)
        except (ValueError, OSError) as error:
            failures[path] = getattr(error, "code", type(error).__name__)
    return crops, failures
