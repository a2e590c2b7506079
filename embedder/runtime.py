"""What runs the networks when serving: ONNX Runtime on CPU, PyTorch on CUDA.

On the CPU ONNX Runtime gives the same embeddings and detections as PyTorch eager (cosine
>= 0.9999 on real crops, the same faces in the 2,356 celeba photos) and is faster once its
graphs hold no PRelu (`onnx_export.split_prelu`; `make bench-runtime`, two threads: embedder
1.6x at batch 1 and 2.0x at batch 16, detector 1.2x; `make bench-enrol`: enrolment 1.8-1.9x
with gallery faces from 40 px), so `auto` (CQAFACE_RUNTIME's default) picks it on CPU and keeps
PyTorch on CUDA. Training always uses PyTorch. The web app, the CLI and the workers all build
their networks here, so they cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from embedder import checkpoint as ckpt
from embedder import settings
from embedder.inference import Embedder, EmbedderBase
from embedder.mtcnn import MTCNN
from embedder.scaled import Detector, ScaledDetector


def choose(device: str | None = None) -> str:
    """`onnx` or `torch` for ``device`` (default: CQAFACE_DEVICE, else CUDA when present)."""
    chosen = settings.runtime()
    if chosen != "auto":
        return chosen
    return "onnx" if torch.device(device or settings.device()).type == "cpu" else "torch"


def load_embedder(path: str | Path | None = None, **kwargs: Any) -> EmbedderBase:
    """The embedder of a checkpoint (default: CQAFACE_MODEL, else the shipped model) on the
    chosen runtime; ``kwargs`` go to its constructor (flip, batch_size, threads)."""
    chosen = choose()  # a bad setting is reported before the checkpoint is read
    checkpoint = ckpt.load(path or settings.model_path())
    if chosen == "onnx":
        from embedder.onnx_export import OnnxEmbedder

        return OnnxEmbedder.from_checkpoint(checkpoint, **kwargs)
    return Embedder.from_checkpoint(checkpoint, **kwargs)


def load_detector(min_face_size: float = 20) -> ScaledDetector:
    """The detector CQAFACE_DETECTOR names, at the working size CQAFACE_DETECT_PIXELS."""
    pixels = settings.detect_pixels()  # a bad setting is reported before a model loads
    return ScaledDetector(base_detector(min_face_size), pixels)


def base_detector(min_face_size: float = 20) -> Detector:
    """SCRFD (ONNX Runtime), or the MTCNN cascade (with its retries, or alone) with its nets on
    the chosen runtime (PyTorch's on the CPU when PyTorch is chosen: its nets are too small to
    gain from a GPU)."""
    chosen = settings.detector()
    if chosen == "scrfd":
        from embedder.scrfd import SCRFD

        return SCRFD(settings.scrfd_model(), min_face_size=min_face_size)
    if choose() == "onnx":
        from embedder.mtcnn_onnx import onnx_mtcnn

        mtcnn = onnx_mtcnn(min_face_size)
    else:
        mtcnn = MTCNN(min_face_size=min_face_size)
    if chosen == "mtcnn-retry":
        from embedder.mtcnn_retry import RetryMTCNN

        return RetryMTCNN(mtcnn)
    return mtcnn
