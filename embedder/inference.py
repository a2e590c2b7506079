"""Batched inference: aligned 112x112 RGB crops in, unit-length embeddings out.

The batching, the input scaling and the flip test live in one base class; backends (PyTorch,
ONNX Runtime) only map a float32 batch to (embedding, attention, quality) arrays, so that both
paths give the same vectors for the same faces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embedder import checkpoint as ckpt
from embedder import settings
from embedder.config import ModelConfig
from embedder.mask_classifier import MaskClassifier, features
from embedder.model import CQAFace
from embedder.quality import QualityFit

INPUT_SIZE = 112


@dataclass
class Embeddings:
    vectors: np.ndarray  # (N, D) float32, L2-normalised
    attention: np.ndarray  # (N, b, h, w) attention maps in [0, 1], on the crop's grid
    quality: np.ndarray  # (N, b) part qualities in (0, 1); b = 0 for a global-head model
    # (N,) cosine between the embeddings of each face and of its mirror image, from the flip
    # test's own pass (NaN without it): a face the network sees the same way both ways round
    # is one it reads reliably, a feature of embedder.quality.
    agreement: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.vectors)


def preprocess(crops: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """uint8 (N,112,112,3) RGB -> float32 (N,3,112,112) scaled to [-1, 1] as in training."""
    batch = np.asarray(crops if isinstance(crops, np.ndarray) else np.stack(crops))
    if batch.ndim == 3:
        batch = batch[None]
    if batch.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3) or batch.dtype != np.uint8:
        raise ValueError(
            f"expected uint8 RGB crops of shape (N, {INPUT_SIZE}, {INPUT_SIZE}, 3), "
            f"got {batch.dtype} {batch.shape}: align faces first"
        )
    return ((batch.transpose(0, 3, 1, 2).astype(np.float32) / 255.0) - 0.5) / 0.5


def l2_normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class EmbedderBase:
    """Common batching and flip test; subclasses implement `_run` on one float32 batch."""

    version: str
    config: ModelConfig
    metadata: dict[str, Any]

    def __init__(self, *, flip: bool = True, batch_size: int = 64) -> None:
        self.flip = flip
        self.batch_size = batch_size

    def embed(self, crops: np.ndarray | Sequence[np.ndarray]) -> Embeddings:
        if len(crops) == 0:
            raise ValueError("no faces to embed")
        batch = preprocess(crops)
        parts = [
            self._embed_batch(batch[i : i + self.batch_size])
            for i in range(0, len(batch), self.batch_size)
        ]
        return Embeddings(*(np.concatenate(arrays) for arrays in zip(*parts, strict=True)))

    def _embed_batch(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if not self.flip:
            emb, att, qual = self._run(x)
            return l2_normalise(emb), att, qual, np.full(len(x), np.nan, np.float32)
        # Flip test: the embedding of a face plus that of its mirror, in one forward pass.
        emb, att, qual = self._run(np.concatenate([x, x[..., ::-1]]))
        n = len(x)
        agreement = (l2_normalise(emb[:n]) * l2_normalise(emb[n:])).sum(1)
        return l2_normalise(emb[:n] + emb[n:]), att[:n], qual[:n], agreement.astype(np.float32)

    @cached_property
    def mask_classifier(self) -> MaskClassifier | None:
        """Parsed once from the metadata, not on every probe."""
        return MaskClassifier.from_metadata(self.metadata)

    @cached_property
    def quality_fit(self) -> QualityFit | None:
        """The checkpoint's face quality fit (embedder.quality); None for one never fitted."""
        return QualityFit.from_metadata(self.metadata)

    def mask_probability(self, embeddings: Embeddings) -> np.ndarray | None:
        """P(masked) per face from the checkpoint's mask classifier; None if it has none."""
        if self.mask_classifier is None:
            return None
        return self.mask_classifier.probability(features(embeddings))

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError


class Embedder(EmbedderBase):
    """PyTorch inference on CPU or CUDA (chosen automatically unless told)."""

    def __init__(
        self,
        model: CQAFace,
        *,
        version: str = "unversioned",
        metadata: dict[str, Any] | None = None,
        device: str | None = None,
        threads: int | None = None,
        flip: bool = True,
        batch_size: int = 64,
    ) -> None:
        super().__init__(flip=flip, batch_size=batch_size)
        threads = threads or settings.threads()
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device or settings.device())
        # channels-last runs the convolutions about 1.5x faster on CPU (oneDNN) and on GPUs.
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()
        self.config = model.config
        self.version = version
        self.metadata = metadata or {}

    @classmethod
    def from_checkpoint(cls, checkpoint: ckpt.Checkpoint, **kwargs: Any) -> Embedder:
        return cls(
            checkpoint.build(), version=checkpoint.version, metadata=checkpoint.metadata, **kwargs
        )

    @classmethod
    def load(cls, path: str | Path | None = None, **kwargs: Any) -> Embedder:
        """From a checkpoint file (default: CQAFACE_MODEL, else the shipped model)."""
        return cls.from_checkpoint(ckpt.load(path or settings.model_path()), **kwargs)

    @torch.inference_mode()
    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self.model.eval()
        batch = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        out = self.model(batch.contiguous(memory_format=torch.channels_last))
        return tuple(t.float().cpu().numpy() for t in out)  # type: ignore[return-value]
