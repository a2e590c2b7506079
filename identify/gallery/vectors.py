"""Vectors as compact bytes in the database (float32 little-endian), never JSON text."""

from __future__ import annotations

import numpy as np

DTYPE = np.dtype("<f4")
SUM_DTYPE = np.dtype("<f8")


def to_bytes(vector: np.ndarray, dtype: np.dtype = DTYPE) -> bytes:
    """One 1-d vector as raw little-endian bytes."""
    array = np.asarray(vector, dtype=dtype)
    if array.ndim != 1:
        raise ValueError(f"expected a 1-d vector, got shape {array.shape}")
    return array.tobytes()


def from_bytes(data: bytes, dim: int | None = None, dtype: np.dtype = DTYPE) -> np.ndarray:
    """The vector stored by :func:`to_bytes`; checks the length when ``dim`` is given."""
    array = np.frombuffer(data, dtype=dtype)
    if dim is not None and array.shape[0] != dim:
        raise ValueError(f"stored vector has {array.shape[0]} values, expected {dim}")
    return array.astype(np.float32 if dtype == DTYPE else np.float64)


def normalise(x: np.ndarray) -> np.ndarray:
    """Unit L2 length along the last axis (zero vectors stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)
