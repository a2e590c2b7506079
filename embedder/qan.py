"""Quality-aware network (QAN): a graph over the b part features that scores each part.

Relations A[i,j] = phi(P_i) . varphi(P_j); node i's relation vector is [A(i,:), A(:,i)]
(length 2b, fixed order, so it also encodes where the part sits); the quality of part i is
sigmoid(theta([mu(P_i), nu(A_i)])). Node-wise layers share weights across nodes (1x1 convs on
1x1 nodes in the paper), so they run as linear layers over all N*b nodes at once.
"""

from __future__ import annotations

import torch
from torch import nn


def _project(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(cin, cout, bias=False), nn.BatchNorm1d(cout), nn.ReLU(inplace=True)
    )


class NodeWise(nn.Module):
    """Applies a layer stack to every node of (N, b, c) as if to N*b samples."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, b, c = x.shape
        return self.body(x.reshape(n * b, c)).reshape(n, b, -1)


class QAN(nn.Module):
    def __init__(self, channels: int, branches: int, reduction: int) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.phi = NodeWise(_project(channels, hidden))
        self.varphi = NodeWise(_project(channels, hidden))
        self.mu = NodeWise(_project(channels, hidden))
        self.nu = NodeWise(_project(2 * branches, hidden))
        self.theta = NodeWise(
            nn.Sequential(
                nn.Linear(2 * hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1)
            )
        )

    def forward(self, parts: torch.Tensor) -> torch.Tensor:
        """Part features P (N,b,c) -> qualities q (N,b) in (0,1)."""
        relations = torch.bmm(self.phi(parts), self.varphi(parts).transpose(1, 2))  # (N,b,b)
        relation_vectors = torch.cat([relations, relations.transpose(1, 2)], dim=2)  # (N,b,2b)
        joint = torch.cat([self.mu(parts), self.nu(relation_vectors)], dim=2)
        return torch.sigmoid(self.theta(joint).squeeze(-1))
