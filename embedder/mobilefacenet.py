"""MobileFaceNet (Chen et al. 2018), the compact stem that trains and serves on a CPU.

Depthwise-separable bottlenecks, 112x112 in, 512x7x7 out of the last stage, about 1 M
parameters; its own head is a global depthwise conv (GDC) then a linear layer.
"""

from __future__ import annotations

import torch
from torch import nn

from embedder.stem import InputNorm, Stem


class ConvBlock(nn.Sequential):
    def __init__(
        self,
        cin: int,
        cout: int,
        k: int = 1,
        s: int = 1,
        p: int = 0,
        groups: int = 1,
        act: bool = True,
        eps: float = 1e-5,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, k, s, p, groups=groups, bias=False),
            nn.BatchNorm2d(cout, eps=eps),
        ]
        if act:
            layers.append(nn.PReLU(cout))
        super().__init__(*layers)


class DepthWise(nn.Module):
    """Expand (1x1) -> depthwise 3x3 -> project (1x1, linear); a residual when shapes allow."""

    def __init__(
        self, cin: int, cout: int, stride: int, hidden: int, residual: bool, eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.residual = residual
        self.body = nn.Sequential(
            ConvBlock(cin, hidden, eps=eps),
            ConvBlock(hidden, hidden, 3, stride, 1, groups=hidden, eps=eps),
            ConvBlock(hidden, cout, act=False, eps=eps),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.residual else out


def _residuals(c: int, blocks: int, hidden: int, eps: float) -> nn.Sequential:
    return nn.Sequential(
        *(DepthWise(c, c, 1, hidden, residual=True, eps=eps) for _ in range(blocks))
    )


class MobileFaceNet(Stem):
    """`bn_eps`/`head_eps` and `input_norm` let the same layers carry weights trained elsewhere
    (MXNet's batch norm uses eps 1e-3; insightface scales pixels by 1/128, not 1/127.5)."""

    def __init__(
        self,
        bn_eps: float = 1e-5,
        head_eps: float = 1e-5,
        input_norm: InputNorm | None = None,
    ) -> None:
        e = bn_eps
        stages = [
            nn.Sequential(  # 112 -> 56 -> 28
                ConvBlock(3, 64, 3, 2, 1, eps=e),
                ConvBlock(64, 64, 3, 1, 1, groups=64, eps=e),
                DepthWise(64, 64, 2, 128, residual=False, eps=e),
                _residuals(64, 4, 128, e),
            ),
            nn.Sequential(  # 28 -> 14
                DepthWise(64, 128, 2, 256, residual=False, eps=e),
                _residuals(128, 6, 256, e),
            ),
            nn.Sequential(  # 14 -> 7, then widen to 512 channels as the IResNets end
                DepthWise(128, 128, 2, 512, residual=False, eps=e),
                _residuals(128, 2, 256, e),
                ConvBlock(128, 512, eps=e),
            ),
        ]
        super().__init__(stages, channels=(64, 128, 512), sizes=(28, 14, 7), input_norm=input_norm)
        self.bn_eps, self.head_eps = bn_eps, head_eps
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def global_head(self, embedding_size: int, dropout: float = 0.0) -> nn.Module:
        c, s = self.channels[-1], self.sizes[-1]
        return nn.Sequential(
            ConvBlock(c, c, s, 1, 0, groups=c, act=False, eps=self.bn_eps),  # GDC
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(c, embedding_size, bias=False),
            nn.BatchNorm1d(embedding_size, eps=self.head_eps),
        )


def insightface_y1() -> MobileFaceNet:
    """The layout of insightface's MobileFaceNet "y1" (MS1M), to load its weights into
    (embedder/pretrained.py): MXNet's eps, and its (x - 127.5) / 128 input scaling."""
    return MobileFaceNet(bn_eps=1e-3, head_eps=2e-5, input_norm=InputNorm.scaled(127.5 / 128))
