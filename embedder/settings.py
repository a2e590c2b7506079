"""Embedder settings, read from CQAFACE_* environment variables at call time."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL = PACKAGE_DIR / "weights" / "cqaface.pt"


def model_path() -> Path:
    """CQAFACE_MODEL, or the checkpoint shipped with the package."""
    return Path(os.environ.get("CQAFACE_MODEL", DEFAULT_MODEL))


def device() -> str:
    """CQAFACE_DEVICE (`cpu`, `cuda`, `cuda:1`), else CUDA when present, else CPU."""
    import torch

    chosen = os.environ.get("CQAFACE_DEVICE")
    if chosen:
        return chosen
    return "cuda" if torch.cuda.is_available() else "cpu"


def threads() -> int | None:
    """CQAFACE_THREADS: intra-op threads for CPU inference (unset: torch's default)."""
    value = os.environ.get("CQAFACE_THREADS")
    return int(value) if value else None
