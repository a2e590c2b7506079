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


def detect_pixels() -> int:
    """CQAFACE_DETECT_PIXELS: the working size of face detection, in pixels (default 1 MP).

    A larger photo is detected on a copy scaled down to this many pixels, so detection costs
    the same whatever the photo's size; faces are aligned from the photo itself. The detector's
    minimum face (MTCNN: 20 px) holds in the copy, so in a photo of P pixels the smallest face
    found is 20 * sqrt(P / CQAFACE_DETECT_PIXELS) px (12 MP: 69 px)."""
    text = (os.environ.get("CQAFACE_DETECT_PIXELS") or "1000000").strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 12 and int(text) >= 10_000):
        raise ValueError(
            f"CQAFACE_DETECT_PIXELS={text!r}: expected a number of pixels, 10000 or more"
        )
    return int(text)


DETECTORS = ("mtcnn", "mtcnn-retry", "scrfd")


def detector() -> str:
    """CQAFACE_DETECTOR: `mtcnn-retry` (the default: MTCNN, then a second look at tight crops
    and at photos where it found nothing, with MTCNN's own weights, and the points of an O-Net
    fine-tuned on masked faces where it sees a mask; `embedder.mtcnn_retry`),
    `mtcnn` (the cascade alone, the reference alignment of the training crops) or `scrfd`
    (insightface's SCRFD-500MF, read from CQAFACE_SCRFD_MODEL; research-only weights)."""
    value = os.environ.get("CQAFACE_DETECTOR") or "mtcnn-retry"
    if value not in DETECTORS:
        raise ValueError(f"CQAFACE_DETECTOR={value!r}: expected one of {', '.join(DETECTORS)}")
    return value


def scrfd_model() -> Path:
    """CQAFACE_SCRFD_MODEL, else scrfd_500m_bnkps.onnx under CQAFACE_SHARED_MODELS (default
    ../shared/models): the file is insightface's, read in place, never shipped."""
    chosen = os.environ.get("CQAFACE_SCRFD_MODEL")
    if chosen:
        return Path(chosen)
    shared = os.environ.get("CQAFACE_SHARED_MODELS") or PACKAGE_DIR.parents[1] / "shared/models"
    return Path(shared) / "insightface-scrfd-500m" / "scrfd_500m_bnkps.onnx"
