"""Losses that push the b attention maps apart: CAL (the paper, Eq. 2) and HPDA's L_D (Eq. 3).

Both average a pairwise term over the b(b-1)/2 branch pairs and over the batch.
"""

from __future__ import annotations

from itertools import combinations

import torch


def _pairwise_squared_diff(maps: torch.Tensor) -> torch.Tensor:
    """(N,b,h,w) -> (N, P, h*w): (M_i - M_j)^2 for the P = b(b-1)/2 pairs i < j."""
    b = maps.shape[1]
    if b < 2:
        raise ValueError("attention losses compare branches: need b >= 2 maps")
    flat = maps.flatten(2)
    # Static slices, not an index tensor: with an index tensor, torch 2.13's inductor (CPU)
    # writes the backward of a single pair (b=2) out of bounds on channels-last maps.
    pairs = [flat[:, i] - flat[:, j] for i, j in combinations(range(b), 2)]
    return torch.stack(pairs, dim=1).pow(2)


def contrastive_attention_loss(
    maps: torch.Tensor,
    margin: float = 0.2,
    sigma: float = 0.01,
    reduction: str = "mean",
    normalise: str = "none",
) -> torch.Tensor:
    """L_CAL = mean over pairs and samples of max(0, exp(-d_ij / sigma) - t).

    d_ij is the per-position mean of (M_i - M_j)^2 (`mean`, default: keeps the loss active at
    the paper's sigma) or its sum over positions (`sum`, the literal reading).
    `normalise="positions"` divides each map by its mean over positions first, so that only
    where a branch looks counts: on raw sigmoid maps a fresh head meets the margin within a few
    steps by moving whole maps up or down (docs/cal-diagnosis.md), and the hinge is then 0.
    """
    if normalise == "positions":
        maps = maps / maps.flatten(2).mean(-1)[..., None, None].clamp_min(1e-6)
    elif normalise != "none":
        raise ValueError(f"normalise must be 'none' or 'positions', not {normalise!r}")
    diff = _pairwise_squared_diff(maps)
    if reduction == "mean":
        d = diff.mean(-1)
    elif reduction == "sum":
        d = diff.sum(-1)
    else:
        raise ValueError(f"reduction must be 'mean' or 'sum', not {reduction!r}")
    return torch.clamp(torch.exp(-d / sigma) - margin, min=0).mean()


def diversity_loss(maps: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    """HPDA's L_D = mean over pairs and samples of max(0, t - ||M_i - M_j||_2)."""
    distance = _pairwise_squared_diff(maps).sum(-1).clamp_min(1e-12).sqrt()
    return torch.clamp(margin - distance, min=0).mean()
