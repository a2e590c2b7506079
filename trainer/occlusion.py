"""Supervising QAN with where the synthetic mask lies.

The paper asks QAN to learn, from CosFace alone, to trust the parts that are visible. Trained
that way here its qualities *rose* on masked faces (docs/cal-diagnosis.md): nothing told it a
part was hidden. The mask renderer knows which pixels it covered, so each part's visible share
is known exactly: 1 - (attention on covered cells) / (attention on all cells). This term pulls
each part's quality towards that share (binary cross-entropy), so that a part looking at the
mouth scores low on a masked face and its features weigh less in the embedding.

The target is computed from the attention maps without gradient: the maps are shaped by CAL
and CosFace, not bent to make the target easy.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def cell_cover(coverage: np.ndarray, size: int) -> np.ndarray:
    """A crop's boolean mask cover (H, W) -> the share of each cell of a size x size map."""
    h, w = coverage.shape
    cells = coverage.astype(np.float32).reshape(size, h // size, size, w // size)
    return cells.mean((1, 3))


def visible_share(maps: torch.Tensor, occlusion: torch.Tensor) -> torch.Tensor:
    """Attention maps (N,b,h,w) and the occluded share of each cell (N,h,w) -> (N,b) in [0,1]:
    the part of each branch's attention that falls on visible cells."""
    weight = maps.flatten(2)
    hidden = (weight * occlusion.flatten(1).unsqueeze(1)).sum(-1)
    return 1 - hidden / weight.sum(-1).clamp_min(1e-6)


def occlusion_loss(
    maps: torch.Tensor, quality: torch.Tensor, occlusion: torch.Tensor
) -> torch.Tensor:
    """Mean binary cross-entropy of the part qualities (N,b) against their visible shares."""
    target = visible_share(maps.detach().float(), occlusion.float())
    return F.binary_cross_entropy(quality.float().clamp(1e-6, 1 - 1e-6), target)
