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
    if not value:
        return None
    if not (value.strip().isascii() and value.strip().isdigit() and int(value) >= 1):
        raise ValueError(f"CQAFACE_THREADS={value!r}: expected a number of threads, 1 or more")
    return int(value)


RUNTIMES = ("auto", "torch", "onnx")


def runtime() -> str:
    """CQAFACE_RUNTIME: what runs the networks when serving. `auto` (default): ONNX Runtime
    on CPU, where it is faster, and PyTorch on CUDA; `torch` or `onnx` force one."""
    value = os.environ.get("CQAFACE_RUNTIME") or "auto"
    if value not in RUNTIMES:
        raise ValueError(f"CQAFACE_RUNTIME={value!r}: expected one of {', '.join(RUNTIMES)}")
    return value


def onnx_cache_dir() -> Path:
    """CQAFACE_ONNX_CACHE: where exported ONNX graphs are kept, else the user's cache folder
    ($XDG_CACHE_HOME/cqaface/onnx, default ~/.cache/cqaface/onnx)."""
    chosen = os.environ.get("CQAFACE_ONNX_CACHE")
    if chosen:
        return Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cqaface" / "onnx"
