"""Embedding distillation: an optional loss term that pulls the student's embedding, through a
training-only linear projection, towards a teacher's embedding of the same crop.

The teacher's vectors are computed once (trainer/teacher.py) and stored beside the data;
training only reads them. They are centred on their mean before use: a component that all of a
teacher's vectors share (dlib's descriptors had one with impostor cosines near 0.8) would
otherwise dominate the cosine the student is asked to match. The projection is not part of
the served model; the served embedding stays the model's own 512-d output.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Teacher:
    """Teacher vectors aligned to a dataset's samples, and which samples have one."""

    def __init__(self, vectors: np.ndarray, present: np.ndarray) -> None:
        self.vectors, self.present = vectors, present

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    @classmethod
    def for_paths(cls, file: Path, root: Path, paths: Sequence[Path]) -> Teacher:
        """Matches the file's `paths` (relative to `root`) to a dataset's absolute paths."""
        with np.load(file) as saved:
            names, embeddings = saved["paths"], saved["embeddings"].astype(np.float32)
        embeddings = embeddings - embeddings.mean(axis=0)
        embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
        row = {str(name): i for i, name in enumerate(names)}
        index = np.array([row.get(str(Path(p).relative_to(root)), -1) for p in paths])
        present = index >= 0
        if not present.any():
            raise ValueError(f"{file} has no vector for any image under {root}")
        vectors = np.zeros((len(paths), embeddings.shape[1]), np.float32)
        vectors[present] = embeddings[index[present]]
        return cls(vectors, present)

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = indices.numpy()
        return torch.from_numpy(self.vectors[rows]), torch.from_numpy(self.present[rows])


class Distillation(nn.Module):
    """1 - cos(P e, t), averaged over the samples that have a teacher vector."""

    def __init__(self, embedding_size: int, teacher_dim: int) -> None:
        super().__init__()
        self.projection = nn.Linear(embedding_size, teacher_dim, bias=False)

    def forward(
        self, embeddings: torch.Tensor, targets: torch.Tensor, present: torch.Tensor
    ) -> torch.Tensor:
        with torch.autocast(embeddings.device.type, enabled=False):
            projected = self.projection(embeddings.float())
            distance = 1 - F.cosine_similarity(projected, targets.float(), dim=1)
        weight = present.to(distance.dtype)
        return (distance * weight).sum() / weight.sum().clamp(min=1)
