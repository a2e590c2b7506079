"""Local attention branches (LANet, Wang & Guo 2019) and their pooled part features.

The b branches run as one conv1x1 (c -> b*c/r) and one grouped conv1x1 (b*c/r -> b, b groups):
the same arithmetic as b separate two-layer LANets, in two kernel launches instead of 2b.
"""

from __future__ import annotations

import torch
from torch import nn


class LANet(nn.Module):
    def __init__(self, channels: int, branches: int, reduction: int, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.branches = branches
        self.reduce = nn.Conv2d(channels, branches * hidden, 1)
        self.score = nn.Conv2d(branches * hidden, branches, 1, groups=branches)
        # The paper's "dropout instead of CAL" ablation drops attention positions in training.
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """X (N,c,h,w) -> attention maps M (N,b,h,w) in [0,1], part features P (N,b,c).

        P_i = GAP(X * M_i), computed as one contraction rather than b masked copies of X.
        """
        maps = torch.sigmoid(self.score(torch.relu(self.reduce(x))))
        weights = self.dropout(maps)
        h, w = x.shape[-2:]
        parts = torch.einsum("nchw,nbhw->nbc", x, weights) / (h * w)
        return maps, parts
