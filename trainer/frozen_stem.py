"""Measuring many heads that share one frozen stem: each distinct input's stem map is computed
once per process, then every head runs on it.

Stage 1 trains heads on a frozen pretrained stem, and its table measures several of them (the
pretrained network itself, baselines, seeds) on the same faces. The stem is nearly all of an
embedding's cost on a CPU; with this, a seven-row table costs about one stem pass per face.
The result is exactly the full model's: the same stem weights on the same input give the same
map, and the head runs as in `CQAFace.forward`.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

from embedder import checkpoint as ckpt
from embedder.inference import Embedder

_MAPS: dict[tuple[str, bytes], torch.Tensor] = {}


def stem_digest(model: torch.nn.Module) -> str:
    """The identity of a stem's weights (buffers included)."""
    return ckpt.weights_digest(model.state_dict())


class SharedStemEmbedder(Embedder):
    """An Embedder that memoises stem maps by (stem weights, input) across instances."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stem_key = stem_digest(self.model.stem)
        self.last = len(self.model.stem.stages) - 1

    @torch.inference_mode()
    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        keys = [(self.stem_key, _digest(row)) for row in x]
        todo = [i for i, key in enumerate(keys) if key not in _MAPS]
        if todo:
            batch = torch.from_numpy(np.ascontiguousarray(x[todo])).to(self.device)
            maps = self.model.stem.forward_to(batch, self.last)
            for i, value in zip(todo, maps, strict=True):
                _MAPS[keys[i]] = value
        features = torch.stack([_MAPS[key] for key in keys])
        out = self.model.eval().forward_head(features)
        return tuple(t.float().cpu().numpy() for t in out)  # type: ignore[return-value]


def _digest(row: np.ndarray) -> bytes:
    return hashlib.blake2b(row.tobytes(), digest_size=16).digest()
