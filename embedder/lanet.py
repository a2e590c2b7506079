"""Local attention branches (LANet, Wang & Guo 2019) and their pooled part features.

The b branches run as one conv1x1 (c -> b*c/r) and one grouped conv1x1 (b*c/r -> b, b groups):
the same arithmetic as b separate two-layer LANets, in two kernel launches instead of 2b.
Parts are pooled by GAP, as in the paper, or by a module that all branches share: a global
depthwise conv (`gdc_pool`) or the stem's own head up to its flatten.
"""

from __future__ import annotations

import torch
from torch import nn


def gdc_pool(channels: int, size: int, eps: float = 1e-5) -> nn.Sequential:
    """MobileFaceNet's GDC: a size x size depthwise conv and its batch norm (the layout of the
    pretrained networks' own, so that their weights copy over as they are)."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, size, groups=channels, bias=False),
        nn.BatchNorm2d(channels, eps=eps),
    )


class LANet(nn.Module):
    def __init__(
        self,
        channels: int,
        branches: int,
        reduction: int,
        dropout: float = 0.0,
        pool: nn.Module | None = None,
        partition: bool = False,
    ) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.branches = branches
        self.reduce = nn.Conv2d(channels, branches * hidden, 1)
        self.score = nn.Conv2d(branches * hidden, branches, 1, groups=branches)
        # The paper's "dropout instead of CAL" ablation drops attention positions in training.
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.pool = pool
        self.partition = partition

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """X (N,c,h,w) -> attention maps M (N,b,h,w) in [0,1], part features P (N,b,c).

        P_i = GAP(X * M_i), computed as one contraction rather than b masked copies of X; with a
        pool, P_i = pool(X * M_i), the b masked copies pooled as one batch. Partitioned maps sum
        to 1 over the branches and pool as b * M_i.
        """
        scores = self.score(torch.relu(self.reduce(x)))
        if self.partition:
            maps = torch.softmax(scores, dim=1)
            weights = self.dropout(maps * self.branches)
        else:
            maps = torch.sigmoid(scores)
            weights = self.dropout(maps)
        n, c, h, w = x.shape
        if self.pool is None:
            return maps, torch.einsum("nchw,nbhw->nbc", x, weights) / (h * w)
        attended = (x.unsqueeze(1) * weights.unsqueeze(2)).reshape(-1, c, h, w)
        return maps, self.pool(attended).reshape(n, self.branches, -1)
