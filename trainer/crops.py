"""Aligned 112x112 crops for evaluation, from aligned files or from raw photos.

Benchmarks ship either way: insightface's sets as aligned crops, LFW and real photos raw. An
image that is already 112x112 is taken as aligned; anything else goes through detection and
alignment (the largest face), so that evaluation sees faces exactly as serving does.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import numpy as np

from embedder.faces import faces_from_file
from embedder.imageio import load_image
from embedder.inference import INPUT_SIZE
from embedder.masks import apply_mask


@lru_cache(maxsize=20_000)
def load_crop(path: Path) -> np.ndarray:
    """The aligned crop of `path`; raises the embedder's typed errors for a photo with no face.

    Remembered (read-only) for the process: a report measures the same photos several times
    (bare and masked probes, several models), and detection costs more than embedding."""
    image = load_image(path)
    if image.shape[:2] != (INPUT_SIZE, INPUT_SIZE):
        image = faces_from_file(path, policy="largest")[0].crop
    image.flags.writeable = False
    return image


def masked(crop: np.ndarray, key: str, seed: int = 0) -> np.ndarray:
    """A synthetic mask drawn deterministically for this image (same key, same mask)."""
    return apply_mask(crop, rng=np.random.default_rng([seed, zlib.crc32(key.encode())])).image


def load_crops(paths: Iterable[Path]) -> tuple[dict[Path, np.ndarray], dict[Path, str]]:
    """Crops by path, and the paths that gave none with the reason (error code)."""
    crops: dict[Path, np.ndarray] = {}
    failures: dict[Path, str] = {}
    for path in paths:
        try:
            crops[path] = load_crop(path)
        except (ValueError, OSError) as error:
            failures[path] = getattr(error, "code", type(error).__name__)
    return crops, failures
