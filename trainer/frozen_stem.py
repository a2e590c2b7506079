"""Measuring many heads that share one frozen stem: each distinct input's stem map is computed
once per table, then every head runs on it.

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

# A map is 512x7x7 float32 (100 KB): 4 GiB keeps about 40,000 faces, a whole validation table.
LIMIT_BYTES = 4 << 30


class StemMaps:
    """Stem maps by (stem weights, input), up to `limit_bytes`. Past the limit new maps are
    computed and not kept: heads measured one after another on the same faces, in the same
    order, still reuse the first ones (where a least-recently-used store would keep none)."""

    def __init__(self, limit_bytes: int = LIMIT_BYTES) -> None:
        self.limit_bytes, self.used_bytes = limit_bytes, 0
        self._maps: dict[tuple[str, bytes], torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._maps)

    def get(self, key: tuple[str, bytes]) -> torch.Tensor | None:
        return self._maps.get(key)

    def put(self, key: tuple[str, bytes], value: torch.Tensor) -> None:
        size = value.numel() * value.element_size()
        if key not in self._maps and self.used_bytes + size <= self.limit_bytes:
            self._maps[key] = value.clone()  # not a view that pins its whole batch
            self.used_bytes += size


def stem_digest(model: torch.nn.Module) -> str:
    """The identity of a stem's weights (buffers included)."""
    return ckpt.weights_digest(model.state_dict())


class SharedStemEmbedder(Embedder):
    """An Embedder that reads and fills `maps`, which other embedders of the same table share."""

    def __init__(self, *args: Any, maps: StemMaps, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.maps = maps
        self.stem_key = stem_digest(self.model.stem)
        self.last = len(self.model.stem.stages) - 1

    @torch.inference_mode()
    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        keys = [(self.stem_key, _digest(row)) for row in x]
        found = [self.maps.get(key) for key in keys]
        todo = [i for i, value in enumerate(found) if value is None]
        if todo:
            batch = torch.from_numpy(np.ascontiguousarray(x[todo])).to(self.device)
            for i, value in zip(todo, self.model.stem.forward_to(batch, self.last), strict=True):
                found[i] = value
                self.maps.put(keys[i], value)
        out = self.model.eval().forward_head(torch.stack(found))  # type: ignore[arg-type]
        return tuple(t.float().cpu().numpy() for t in out)  # type: ignore[return-value]


def _digest(row: np.ndarray) -> bytes:
    return hashlib.blake2b(row.tobytes(), digest_size=16).digest()
