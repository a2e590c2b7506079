"""Mask presence from what the embedder already computes: a logistic regression over the unit
embedding and the part qualities, stored in the checkpoint's metadata.

The system needs to know whether a probe is masked (masked probes get their own threshold);
a second network would double the cost per face, while occlusion of the lower face already
shows in the embedding and in the QAN qualities of the lower parts. Plain numbers in the
metadata keep the checkpoint loadable with weights_only and the ONNX graph unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

METADATA_KEY = "mask_classifier"


def features(vectors: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """(N, D + b) float64: the unit embeddings beside the part qualities."""
    return np.concatenate([vectors, quality], axis=1).astype(np.float64)


@dataclass(frozen=True)
class MaskClassifier:
    weight: np.ndarray  # (D + b,)
    bias: float
    threshold: float = 0.5

    def probability(self, vectors: np.ndarray, quality: np.ndarray) -> np.ndarray:
        """P(masked) per face, from its embedding and part qualities."""
        logits = features(vectors, quality) @ self.weight + self.bias
        return 1.0 / (1.0 + np.exp(-logits))

    def is_masked(self, vectors: np.ndarray, quality: np.ndarray) -> np.ndarray:
        return self.probability(vectors, quality) >= self.threshold

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
