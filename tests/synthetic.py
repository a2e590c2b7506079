"""Synthetic gallery faces for the identification tests: unit vectors, no model needed."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import Engine

from identify.gallery.store import FaceRecord, GalleryStore
from identify.search.live_index import LiveIndex

DIM = 32
MODEL = "synthetic-v1"


def unit(rng: np.random.Generator, n: int | None = None, dim: int = DIM) -> np.ndarray:
    x = rng.normal(size=(n or 1, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x if n else x[0]


def near(vector: np.ndarray, rng: np.random.Generator, noise: float = 0.3) -> np.ndarray:
    """Another 'photo' of the same person: the vector plus noise, renormalised."""
    x = vector + noise * unit(rng, dim=len(vector))
    return (x / np.linalg.norm(x)).astype(np.float32)


def face(vector: np.ndarray, *, masked: bool = False, masked_vector=None) -> FaceRecord:
    return FaceRecord(
        box=(10.0, 10.0, 60.0, 70.0),
        landmarks=np.zeros((5, 2), np.float32),
        score=0.99,
        vector=vector,
        quality=np.array([0.9, 0.8, 0.7, 0.6], np.float32),
        masked=masked,
        masked_vector=masked_vector,
    )


def sha(tag: str) -> str:
    return hashlib.sha256(tag.encode()).hexdigest()


@dataclass
class Live:
    """A searching process's gallery without a model: the store, and the index following it."""

    store: GalleryStore
    index: LiveIndex


def live(engine: Engine, index_dir: Path, *, model: str = MODEL, dim: int = DIM) -> Live:
    store = GalleryStore(engine, model_version=model, dim=dim)
    index = LiveIndex(engine, model_version=model, dim=dim, index_dir=index_dir)
    store.on_commit.append(index.sync)
    return Live(store, index)


def add(store: GalleryStore, subject, tag: str, *faces: FaceRecord):
    """Enrol one 'photo' (identified by ``tag``) with the given faces."""
    return store.add_image(subject, sha256=sha(tag), size_bytes=100, source=tag, faces=list(faces))
