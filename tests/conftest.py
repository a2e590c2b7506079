"""Shared fixtures: where the real data lives, and skips with a reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CQAFACE_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _data(name: str) -> Path:
    path = DATA / name
    if not path.is_dir():
        pytest.skip(f"real data set {name!r} not found at {path} (set CQAFACE_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def orl_dir() -> Path:
    """40 subjects x 10 grey 92x112 photos: `orl/s<N>/<k>.pgm`."""
    return _data("orl")


@pytest.fixture(scope="session")
def celeba_photos_dir() -> Path:
    """100 subjects, 2,356 unaligned face-centred photos: `<identity>/<image>.jpg`."""
    return _data("celeba-photos")


@pytest.fixture(scope="session")
def celeba_aligned_dir() -> Path:
    """The reference 112x112 crops and `landmarks.csv`, aligned the way training saw them."""
    return _data("celeba-112")
