"""Mask presence from what the embedder already computes: a logistic regression over the unit
embedding, the part qualities and the attention maps, stored in the checkpoint's metadata.

The system needs to know whether a probe is masked (masked probes get their own threshold);
a second network would double the cost per face, while occlusion of the lower face already
shows in what the model computes. Not in the embedding alone: a model taught to map a masked
face onto its bare face hides the mask there (validation accuracy 82.8% with the embedding and
qualities, 97.1% with the attention maps added; 1,500 + 500 faces, the shipped y1 model).
Plain numbers in the metadata keep the checkpoint loadable with weights_only and the ONNX
graph unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from embedder.inference import Embeddings

METADATA_KEY = "mask_classifier"


def features(embeddings: Embeddings) -> np.ndarray:
    """(N, D + b + b*h*w) float64: the unit embeddings, the part qualities, the attention maps.

    In this order, so that a classifier fitted on the first D + b columns alone (checkpoints
    from before the maps were added) reads the same columns."""
    n = len(embeddings.vectors)
    parts = [embeddings.vectors, embeddings.quality, embeddings.attention.reshape(n, -1)]
    return np.concatenate(parts, axis=1).astype(np.float64)


@dataclass(frozen=True)
class MaskClassifier:
    weight: np.ndarray  # (D + b,)
    bias: float
    threshold: float = 0.5

    def probability(self, x: np.ndarray) -> np.ndarray:
        """P(masked) per face, from its `features`."""
        logits = x[:, : len(self.weight)] @ self.weight + self.bias
        return 1.0 / (1.0 + np.exp(-logits))

    def is_masked(self, x: np.ndarray) -> np.ndarray:
        return self.probability(x) >= self.threshold

    def to_metadata(self, **report: Any) -> dict[str, Any]:
        return {
            "weight": [float(w) for w in self.weight],
            "bias": float(self.bias),
            "threshold": float(self.threshold),
            **report,
        }

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> MaskClassifier | None:
        """The classifier a checkpoint carries, or None for one trained without it."""
        saved = metadata.get(METADATA_KEY)
        if not saved:
            return None
        return cls(np.asarray(saved["weight"], np.float64), saved["bias"], saved["threshold"])
